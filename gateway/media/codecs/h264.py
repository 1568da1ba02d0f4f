"""H.264: SDP fmtp (RFC 6184 §8.1) and the H.241 generic capability, as one typed :class:`H264Params`.

Rules (RFC 6184 §8.2.2), written once for SDP answers and H.245 channels:

* packetization-mode must be one we do (absent = 0, a distinct configuration);
* the profile is echoed; Baseline, Constrained Baseline, Main, Extended and High
  are accepted because our encoder sends Constrained Baseline, which conforms
  to all of them, and our decoder decodes them;
* the level is the lower of theirs and ours (ours: the catalogue's, capped by
  the room's max_resolution); when we receive more than that level, max-fs /
  max-mbps say so;
* the sender honours the receiver's max-fs / max-mbps / max-br (:meth:`H264Params.limits`).

H.241 (§8.3) says the same in other units: Level as H.241 level values (71 =
3.1), Profile as a booleanArray (64 Baseline, 32 Main, 16 Extended, 8 High),
CustomMaxMBPS ×500 macroblocks/s, CustomMaxFS ×256 macroblocks,
CustomMaxBRandCPB ×25 kbit/s; the packetization mode is the logical
channel's mediaPacketization OID.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from gateway.catalogue import Codec

from . import Limits, NoMatch, lower_keys, parse_int

# H.264 Table A-1: level (key; "1b" is 9) → (MaxMBPS macroblocks/s, MaxFS macroblocks)
LEVELS: dict[int, tuple[int, int]] = {
    9: (1485, 99), 10: (1485, 99), 11: (3000, 396), 12: (6000, 396), 13: (11880, 396),
    20: (11880, 396), 21: (19800, 792), 22: (20250, 1620), 30: (40500, 1620), 31: (108000, 3600),
    32: (216000, 5120), 40: (245760, 8192), 41: (245760, 8192), 42: (522240, 8704),
    50: (589824, 22080), 51: (983040, 36864), 52: (2073600, 36864),
}
#: profiles whose streams our decoder takes and to which our Constrained Baseline output conforms
PROFILES: dict[int, str] = {0x42: "Baseline", 0x4D: "Main", 0x58: "Extended", 0x64: "High"}
#: H.241 Level parameter values (Table 8-2: level × ... ) by level key
H241_LEVELS: dict[int, int] = {10: 15, 9: 19, 11: 22, 12: 29, 13: 36, 20: 43, 21: 50, 22: 57, 30: 64, 31: 71,
                               32: 78, 40: 85, 41: 92, 42: 99, 50: 106, 51: 113, 52: 120}
_LEVEL_OF_H241 = {v: k for k, v in H241_LEVELS.items()}
#: H.241 Profile booleanArray bits by profile_idc
H241_PROFILE_BITS: dict[int, int] = {0x42: 64, 0x4D: 32, 0x58: 16, 0x64: 8}
H241_PROFILE, H241_LEVEL = 41, 42
H241_CUSTOM_MAX_MBPS, H241_CUSTOM_MAX_FS, H241_CUSTOM_MAX_BR = 3, 4, 6
OID = (0, 0, 8, 241, 0, 0, 1)
#: mediaPacketization payloadDescriptor OIDs (H.241 §8.3.2)
PACKETIZATION_OIDS: dict[int, tuple[int, ...]] = {0: (0, 0, 8, 241, 0, 0, 0, 0), 1: (0, 0, 8, 241, 0, 0, 0, 1)}


@dataclass(frozen=True)
class H264Params:
    profile_idc: int = 0x42
    profile_iop: int = 0
    level_idc: int = 10                  # absent profile-level-id: 42000a, level 1
    packetization_mode: int = 0
    max_mbps: int | None = None          # macroblocks/s
    max_fs: int | None = None            # macroblocks
    max_br: int | None = None            # kbit/s (Baseline: units of 1000 bit/s)
    max_smbps: int | None = None
    max_cpb: int | None = None
    max_dpb: int | None = None
    level_asymmetry_allowed: bool = False
    sprop_parameter_sets: str | None = None
    mode_given: bool = True              # packetization-mode was in the fmtp (answered the same way)

    @property
    def level(self) -> int:
        """Comparable level: 1b (level_idc 11 + constraint_set3 in Baseline/Main/Extended, or
        level_idc 9) is keyed 9, between 1 and 1.1 (RFC 6184 §8.1)."""
        return level_key(self.profile_idc, self.profile_iop, self.level_idc)

    @property
    def profile_level_id(self) -> str:
        return f"{self.profile_idc:02x}{self.profile_iop:02x}{self.level_idc:02x}"

    def with_level(self, key: int) -> H264Params:
        """The same profile at level ``key`` (9 = 1b)."""
        iop = self.profile_iop & ~0x10                      # constraint_set3 means 1b only at 11
        if key == 9:
            if self.profile_idc in (0x42, 0x4D, 0x58):
                return replace(self, level_idc=11, profile_iop=iop | 0x10)
            return replace(self, level_idc=9, profile_iop=iop)
        return replace(self, level_idc=key, profile_iop=iop)

    def limits(self) -> tuple[int, int]:
        """(max frame size in macroblocks, max macroblocks/s) this receiver takes: its level's,
        raised by max-fs / max-mbps."""
        mbps, fs = LEVELS.get(self.level, LEVELS[10])
        return max(fs, self.max_fs or 0), max(mbps, self.max_mbps or 0)


def level_key(profile_idc: int, iop: int, level_idc: int) -> int:
    if level_idc == 11 and profile_idc in (0x42, 0x4D, 0x58) and iop & 0x10:
        return 9
    return level_idc


def macroblocks(size: tuple[int, int]) -> int:
    return math.ceil(size[0] / 16) * math.ceil(size[1] / 16)


def parse_profile_level_id(text: str) -> tuple[int, int, int]:
    t = text.strip()
    try:
        if len(t) != 6:
            raise ValueError
        v = int(t, 16)
    except ValueError:
        raise NoMatch(f"H264 profile-level-id {text!r} is not 6 hex digits") from None
    return v >> 16, (v >> 8) & 0xFF, v & 0xFF


def from_fmtp(codec: Codec | None, fmtp: Mapping[str, str]) -> H264Params:
    """Raises NoMatch for a profile-level-id that is not 6 hex digits or a bad packetization-mode."""
    p = lower_keys(fmtp)
    implied = lower_keys(codec.fmtp_implied) if codec is not None else {}
    prof, iop, lvl = parse_profile_level_id(p.get("profile-level-id", implied.get("profile-level-id", "42000a")))
    mode_text = p.get("packetization-mode", implied.get("packetization-mode", "0")).strip()
    mode = parse_int(mode_text, 0, 2)
    if mode is None:
        raise NoMatch(f"H264 packetization-mode {mode_text!r} is not 0, 1 or 2")
    return H264Params(
        profile_idc=prof, profile_iop=iop, level_idc=lvl, packetization_mode=mode,
        max_mbps=parse_int(p.get("max-mbps"), 1), max_fs=parse_int(p.get("max-fs"), 1),
        max_br=parse_int(p.get("max-br"), 1), max_smbps=parse_int(p.get("max-smbps"), 1),
        max_cpb=parse_int(p.get("max-cpb"), 1), max_dpb=parse_int(p.get("max-dpb"), 1),
        level_asymmetry_allowed=p.get("level-asymmetry-allowed", "0").strip() == "1",
        sprop_parameter_sets=p.get("sprop-parameter-sets"),
        mode_given="packetization-mode" in p,
    )


def to_fmtp(params: H264Params) -> dict[str, str]:
    out = {"profile-level-id": params.profile_level_id}
    if params.mode_given or params.packetization_mode:
        out["packetization-mode"] = str(params.packetization_mode)
    if params.level_asymmetry_allowed:
        out["level-asymmetry-allowed"] = "1"
    for key, v in (("max-mbps", params.max_mbps), ("max-fs", params.max_fs), ("max-br", params.max_br),
                   ("max-smbps", params.max_smbps), ("max-cpb", params.max_cpb), ("max-dpb", params.max_dpb)):
        if v is not None:
            out[key] = str(v)
    if params.sprop_parameter_sets:
        out["sprop-parameter-sets"] = params.sprop_parameter_sets
    return out


def our_level(codec: Codec, limits: Limits) -> int:
    """The level we receive: the catalogue's, capped by the room's max_resolution (at 30 fps)."""
    base = from_fmtp(codec, codec.fmtp).level
    if limits.max_resolution is not None:
        need = macroblocks(limits.max_resolution)
        fit = [lv for lv, (mbps, fs) in sorted(LEVELS.items()) if fs >= need and mbps >= need * 30]
        if fit and fit[0] < base:
            return fit[0]
    return base


def modes(codec: Codec) -> list[int]:
    """The packetization modes we offer (and so accept), in the catalogue's order."""
    out: list[int] = []
    for fm in (codec.fmtp, *codec.fmtp_variants):
        m = from_fmtp(codec, fm).packetization_mode
        if m not in out:
            out.append(m)
    return out


def local(codec: Codec, limits: Limits) -> list[H264Params]:
    """One payload type per packetization mode, each at our (capped) level."""
    lv = our_level(codec, limits)
    out = []
    for fm in (codec.fmtp, *codec.fmtp_variants):
        p = from_fmtp(codec, fm)
        out.append(p.with_level(lv) if p.level > lv else p)
    return out


def answer(codec: Codec, offered: H264Params, limits: Limits) -> tuple[H264Params, H264Params]:
    if offered.packetization_mode not in modes(codec):
        raise NoMatch(f"H264 packetization-mode {offered.packetization_mode} "
                      f"(we do {' and '.join(map(str, modes(codec)))})")
    if offered.profile_idc not in PROFILES:
        raise NoMatch(f"H264 profile_idc 0x{offered.profile_idc:02x} (we do {', '.join(PROFILES.values())})")
    if offered.level not in LEVELS:
        raise NoMatch(f"H264 level_idc {offered.level_idc} is not an H.264 level")
    ours = our_level(codec, limits)
    ans = offered if offered.level <= ours else offered.with_level(ours)
    ours_la = from_fmtp(codec, codec.fmtp).level_asymmetry_allowed
    answered = H264Params(ans.profile_idc, ans.profile_iop, ans.level_idc, offered.packetization_mode,
                          level_asymmetry_allowed=offered.level_asymmetry_allowed and ours_la,
                          mode_given=offered.mode_given)
    # we receive more than the answered level allows: say so (RFC 6184 §8.1 max-fs, max-mbps)
    ans_mbps, ans_fs = LEVELS[answered.level]
    our_mbps, our_fs = LEVELS[ours]
    if limits.max_resolution is not None:
        our_fs = min(our_fs, macroblocks(limits.max_resolution))
        our_mbps = min(our_mbps, our_fs * 30)
    answered = replace(answered, max_mbps=our_mbps if our_mbps > ans_mbps else None,
                       max_fs=our_fs if our_fs > ans_fs else None)
    send = replace(offered, profile_idc=answered.profile_idc, profile_iop=answered.profile_iop,
                   level_idc=answered.level_idc, mode_given=True)
    return answered, send


def common(ours: H264Params, theirs: H264Params) -> H264Params:
    """What we send to a receiver with ``theirs``: our profile, the lower level."""
    key = min(ours.level, theirs.level) if theirs.level in LEVELS else ours.level
    return replace(ours.with_level(key), max_mbps=None, max_fs=None, max_br=None)


# --------------------------------------------------------------------------- H.241


def level_of_h241(value: int) -> int:
    if value in _LEVEL_OF_H241:
        return _LEVEL_OF_H241[value]
    lower = [v for v in _LEVEL_OF_H241 if v <= value]
    return _LEVEL_OF_H241[max(lower)] if lower else 10


def h241_parameters(value: Mapping[str, Any]) -> dict[int, Any]:
    """Standard parameterIdentifier → value of a genericCapability (collapsing and nonCollapsing)."""
    out: dict[int, Any] = {}
    for p in list(value.get("collapsing", ())) + list(value.get("nonCollapsing", ())):
        pid = p.get("parameterIdentifier")
        pv = p.get("parameterValue")
        if isinstance(pid, tuple) and pid[0] == "standard" and isinstance(pv, tuple) and len(pv) == 2:
            out[int(pid[1])] = pv[1]
    return out


def from_h245(codec: Codec | None, value: Mapping[str, Any]) -> tuple[H264Params, int | None]:
    """A genericVideoCapability (H.241) → (params, bitrate cap in bit/s). The profile is the
    first of Baseline, Main, Extended, High that the booleanArray holds."""
    params = h241_parameters(value)
    bits = params.get(H241_PROFILE)
    prof = 0x42
    if isinstance(bits, int):
        prof = next((p for p, b in H241_PROFILE_BITS.items() if bits & b), 0x42)
    level = params.get(H241_LEVEL)
    p = H264Params(profile_idc=prof).with_level(level_of_h241(level) if isinstance(level, int) else 10)

    def scaled(pid: int, unit: int) -> int | None:
        v = params.get(pid)
        return int(v) * unit if isinstance(v, int) and v > 0 else None

    p = replace(p, max_mbps=scaled(H241_CUSTOM_MAX_MBPS, 500), max_fs=scaled(H241_CUSTOM_MAX_FS, 256),
                max_br=scaled(H241_CUSTOM_MAX_BR, 25))
    rate = value.get("maxBitRate")
    return p, int(rate) * 100 if isinstance(rate, int) and rate > 0 else None


def profile_bits(value: Mapping[str, Any]) -> list[str]:
    """The profiles an H.241 capability's booleanArray names (for display)."""
    bits = h241_parameters(value).get(H241_PROFILE)
    if not isinstance(bits, int):
        return []
    return [PROFILES[p].lower() for p, b in H241_PROFILE_BITS.items() if bits & b]


def to_h245(codec: Codec, params: H264Params, bitrate_cap: int | None) -> dict[str, Any]:
    """The genericVideoCapability value for ``params`` (Profile, Level, then any Custom* parameter)."""
    h = codec.h245 or {}
    oid = tuple(int(x) for x in str(h.get("capabilityIdentifier", ".".join(map(str, OID)))).split("."))
    collapsing = [
        {"parameterIdentifier": ("standard", H241_PROFILE),
         "parameterValue": ("booleanArray", H241_PROFILE_BITS.get(params.profile_idc, 64))},
        {"parameterIdentifier": ("standard", H241_LEVEL),
         "parameterValue": ("unsignedMin", H241_LEVELS.get(params.level, 15))},
    ]
    for pid, v, unit in ((H241_CUSTOM_MAX_MBPS, params.max_mbps, 500), (H241_CUSTOM_MAX_FS, params.max_fs, 256),
                         (H241_CUSTOM_MAX_BR, params.max_br, 25)):
        if v:
            collapsing.append({"parameterIdentifier": ("standard", pid),
                               "parameterValue": ("unsignedMin", max(1, v // unit))})
    rate = max(1, bitrate_cap // 100) if bitrate_cap else int(h.get("maxBitRate", 3840))
    return {"capabilityIdentifier": ("standard", oid), "maxBitRate": rate, "collapsing": collapsing}


def local_h245(codec: Codec) -> H264Params:
    """Our receive capability as the catalogue's H.245 entry states it."""
    h = codec.h245 or {}
    value = {"collapsing": [{"parameterIdentifier": ("standard", int(p["id"])),
                             "parameterValue": (str(p["type"]), int(p["value"]))}
                            for p in h.get("collapsing", ())]}
    return from_h245(codec, value)[0]


def packetization_mode_of(codec: Codec | None, oid: tuple[int, ...]) -> int:
    """The packetization mode a mediaPacketization payloadDescriptor OID names (0 if unknown)."""
    return 1 if tuple(oid) == packetization_oid(codec, 1) else 0


def packetization_oid(codec: Codec | None, mode: int) -> tuple[int, ...]:
    try:
        text = (codec.h245 or {})["packetization"][f"mode{mode}"]  # type: ignore[union-attr]
        return tuple(int(x) for x in str(text).split("."))
    except (KeyError, TypeError, ValueError, AttributeError):
        return PACKETIZATION_OIDS.get(mode, PACKETIZATION_OIDS[0])
