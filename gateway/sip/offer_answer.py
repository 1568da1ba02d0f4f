"""RFC 3264 offer/answer for RTP audio and video, driven by the codec catalogue and a room's policy.

:class:`OfferAnswer` answers offers from SIP endpoints, makes our own offers
(dial-out, a late-offer INVITE answered in the 200 OK, re-INVITE hold/resume)
and checks the answers to them.  Every codec fact (names, clock rates, static
payload types, fmtp we offer, what an absent fmtp parameter means) comes from
:mod:`gateway.catalogue`; the codec-specific rules live here:

* **choice** — the *offerer's* order wins: the first offered format that the
  catalogue knows, the room allows and whose parameters we can meet is taken,
  one codec per stream (plus telephone-event).  RFC 3264 §6.1 leaves the choice
  to the answerer; following the offerer's preference is what SIP stacks do in
  practice and what users expect (the phone's "preferred codec" setting works).
* **payload types** are answered with the offerer's numbers: dynamic ones are
  matched by ``a=rtpmap`` encoding/clock (channels for audio), static ones by
  number when there is no rtpmap (RFC 3264 §6.1, RFC 3551).
* **H.264** (RFC 6184 §8.1, §8.2.2) — packetization-mode must match (absent =
  0, a distinct configuration); the profile (profile_idc + profile-iop) is
  echoed; Baseline, Constrained Baseline, Main, Extended and High offers are
  accepted because our encoder sends Constrained Baseline, which conforms to all
  of them, and our decoder decodes them; the answered level is the lower of the
  offer's and ours (our catalogue level, capped by the room's max_resolution);
  when we can receive more than that level, ``max-fs``/``max-mbps`` say so.
  The offerer's ``max-fs``/``max-mbps``/``max-br`` are passed on in
  :attr:`NegotiatedStream.fmtp` for the sender to honour (:func:`h264_limits`).
* **H.263 / H263-1998** (RFC 4629 §8.1) — the picture sizes both sides support,
  MPI the slower of the two; none given means QCIF (every H.263 decoder
  supports QCIF); annex flags are not answered (we use none).
* **opus** (RFC 7587 §7) — always ``opus/48000/2``; we answer ``useinbandfec=1``.
* **rtcp-fb** (RFC 4585) — ``nack``, ``nack pli``, ``ccm fir`` answered only where offered.
* **bandwidth** — ``b=AS``/``b=TIAS`` (RFC 3890) answered with min(ours, theirs).
* **direction** (RFC 3264 §6.1) — the mirror of the offer's, limited by what we
  want; ``c=0.0.0.0`` (RFC 2543 hold, RFC 3264 §8.4) means we never send, and
  with no direction attribute it means the old "hold": inactive.
* only the first usable audio and the first usable video stream are accepted;
  further ones, ``application`` (BFCP, H.224 far-end camera control), ``image``
  (T.38) and any other media get port 0.  RTP/SAVP(F) is refused (SRTP comes with
  the security work); when nothing is left the offer is refused with 488.
"""
from __future__ import annotations

import math
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from gateway.catalogue import Catalogue, Codec

from .sdp import (
    DIRECTIONS,
    Connection,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    format_fmtp,
)

__all__ = [
    "LocalMedia",
    "NegotiatedStream",
    "OfferAnswer",
    "h264_limits",
    "H264_LEVELS",
]

# RFC 3551 §6 static payload types, for naming what was offered in reasons only.
_STATIC_NAMES = {
    0: "PCMU", 3: "GSM", 4: "G723", 5: "DVI4/8000", 6: "DVI4/16000", 7: "LPC", 8: "PCMA", 9: "G722",
    10: "L16/44100/2", 11: "L16/44100", 12: "QCELP", 13: "CN", 14: "MPA", 15: "G728", 16: "DVI4/11025",
    17: "DVI4/22050", 18: "G729", 25: "CelB", 26: "JPEG", 28: "nv", 31: "H261", 32: "MPV", 33: "MP2T",
    34: "H263",
}
_PLAIN_RTP = ("RTP/AVP", "RTP/AVPF")
_SRTP = ("RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF")
_RTP_MEDIA = ("audio", "video")
_FEEDBACK = ("nack", "nack pli", "ccm fir")        # RFC 4585 / RFC 5104 messages we act on
_DYNAMIC_FIRST = 96
_DEFAULT_AUDIO_ORDER = ("opus", "G722", "PCMU", "PCMA")
_DEFAULT_VIDEO_ORDER = ("H264", "VP8", "H263-1998", "H263")

# H.264 Table A-1: level_idc → (MaxMBPS macroblocks/s, MaxFS macroblocks).  "1b" is keyed 9.
H264_LEVELS: dict[int, tuple[int, int]] = {
    9: (1485, 99), 10: (1485, 99), 11: (3000, 396), 12: (6000, 396), 13: (11880, 396),
    20: (11880, 396), 21: (19800, 792), 22: (20250, 1620), 30: (40500, 1620), 31: (108000, 3600),
    32: (216000, 5120), 40: (245760, 8192), 41: (245760, 8192), 42: (522240, 8704),
    50: (589824, 22080), 51: (983040, 36864), 52: (2073600, 36864),
}
# profiles whose streams our decoder takes and to which our Constrained Baseline output conforms
_H264_PROFILES = {0x42: "Baseline", 0x4D: "Main", 0x58: "Extended", 0x64: "High"}

# H.263 standard picture formats (fmtp names of RFC 4629 §8.1.1) → size
_H263_SIZES: dict[str, tuple[int, int]] = {
    "SQCIF": (128, 96), "QCIF": (176, 144), "CIF": (352, 288), "CIF4": (704, 576), "CIF16": (1408, 1152),
}


# --------------------------------------------------------------------------- data

@dataclass(frozen=True)
class LocalMedia:
    """Our RTP ports and the host the peer should send to."""

    audio_port: int
    video_port: int | None = None
    address: str = "0.0.0.0"


@dataclass
class NegotiatedStream:
    """What one ``m=`` line came to.  ``payload_type`` / ``fmtp`` are what we *send* with
    (the remote's numbers and receive limits); ``local_payload_type`` is what we receive."""

    media: str
    index: int
    accepted: bool
    codec: Codec | None = None
    payload_type: int | None = None
    fmtp: dict[str, str] = field(default_factory=dict)
    clock_rate: int = 0
    channels: int = 1
    dtmf_pt: int | None = None
    remote_host: str = ""
    remote_port: int = 0
    remote_rtcp_port: int = 0
    direction: str = "inactive"
    ptime: int | None = None
    bandwidth_kbps: int | None = None
    rtcp_fb: list[str] = field(default_factory=list)
    # extras
    proto: str = "RTP/AVP"
    local_payload_type: int | None = None
    local_dtmf_pt: int | None = None
    maxptime: int | None = None
    remote_fmtp: dict[str, str] = field(default_factory=dict)   # the remote's fmtp as given
    reason: str | None = None                                    # why a stream was rejected

    @property
    def sends(self) -> bool:
        return self.accepted and self.direction in ("sendrecv", "sendonly")

    @property
    def receives(self) -> bool:
        return self.accepted and self.direction in ("sendrecv", "recvonly")


class _NoMatch(Exception):
    """A format cannot be used; ``reason`` goes into the 488 text."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- H.264 helpers

def _parse_plid(text: str) -> tuple[int, int, int]:
    t = text.strip()
    if len(t) != 6:
        raise _NoMatch(f"H264 profile-level-id {text!r} is not 6 hex digits")
    try:
        v = int(t, 16)
    except ValueError:
        raise _NoMatch(f"H264 profile-level-id {text!r} is not 6 hex digits") from None
    return v >> 16, (v >> 8) & 0xFF, v & 0xFF


def _level_key(profile_idc: int, iop: int, level_idc: int) -> int:
    """Comparable level: level 1b (level_idc 11 + constraint_set3 in Baseline/Main/Extended,
    or level_idc 9) sorts between 1 and 1.1 and is keyed 9 (RFC 6184 §8.1)."""
    if level_idc == 11 and profile_idc in (0x42, 0x4D, 0x58) and iop & 0x10:
        return 9
    return level_idc


def h264_limits(fmtp: Mapping[str, str]) -> tuple[int, int]:
    """(max frame size in macroblocks, max macroblocks/s) a receiver with these fmtp
    parameters accepts: its level's limits raised by ``max-fs``/``max-mbps`` (RFC 6184 §8.1)."""
    params = {k.lower(): v for k, v in fmtp.items()}
    try:
        prof, iop, lvl = _parse_plid(params.get("profile-level-id", "42000a"))
    except _NoMatch:
        prof, iop, lvl = 0x42, 0, 10
    mbps, fs = H264_LEVELS.get(_level_key(prof, iop, lvl), H264_LEVELS[10])
    try:
        fs = max(fs, int(params.get("max-fs", 0)))
        mbps = max(mbps, int(params.get("max-mbps", 0)))
    except ValueError:
        pass
    return fs, mbps


def _macroblocks(size: tuple[int, int]) -> int:
    return math.ceil(size[0] / 16) * math.ceil(size[1] / 16)


def _lower(params: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in params.items()}


# --------------------------------------------------------------------------- the negotiator

class OfferAnswer:
    """Offers and answers for one room's policy (``RoomSpec`` fields), from the catalogue."""

    def __init__(
        self,
        catalogue: Catalogue,
        audio_codecs: Sequence[str] = (),
        video_codecs: Sequence[str] = (),
        max_resolution: tuple[int, int] | None = None,
        max_bitrate_kbps: int | None = None,
        dtmf: bool = True,
        session_name: str = "Cau",
    ) -> None:
        self.catalogue = catalogue
        self.max_resolution = max_resolution
        self.max_bitrate_kbps = max_bitrate_kbps
        self.session_name = session_name
        self.audio = self._policy(audio_codecs, "audio", _DEFAULT_AUDIO_ORDER)
        self.video = self._policy(video_codecs, "video", _DEFAULT_VIDEO_ORDER)
        self.dtmf_codec: Codec | None = None
        if dtmf and "telephone-event" in catalogue:
            self.dtmf_codec = catalogue.get("telephone-event")
        # our H.264 receive capability: the catalogue's level, capped by the room's max_resolution
        h264 = self._find("H264")
        self._h264_level = 31
        if h264 is not None:
            plid = _lower(h264.fmtp).get("profile-level-id", "42e01f")
            prof, iop, lvl = _parse_plid(plid)
            self._h264_level = _level_key(prof, iop, lvl)
        if max_resolution is not None:
            need = _macroblocks(max_resolution)
            fit = [lv for lv, (mbps, fs) in sorted(H264_LEVELS.items()) if fs >= need and mbps >= need * 30]
            if fit and fit[0] < self._h264_level:
                self._h264_level = fit[0]

    @classmethod
    def for_room(cls, catalogue: Catalogue, room: object, dtmf: bool = True,
                 session_name: str = "Cau") -> OfferAnswer:
        """The negotiator for a dial plan ``RoomSpec`` (its codec lists, max_resolution, max_bitrate_kbps)."""
        return cls(catalogue, audio_codecs=getattr(room, "audio_codecs", ()),
                   video_codecs=getattr(room, "video_codecs", ()),
                   max_resolution=getattr(room, "max_resolution", None),
                   max_bitrate_kbps=getattr(room, "max_bitrate_kbps", None),
                   dtmf=dtmf, session_name=session_name)

    # ---- policy
    def _find(self, name: str) -> Codec | None:
        return self.catalogue.get(name) if name in self.catalogue else None

    def _policy(self, names: Sequence[str], media: str, default_order: Sequence[str]) -> list[Codec]:
        """Allowed codecs in preference order (the room's order, else ours)."""
        if names:
            out: list[Codec] = []
            for n in names:
                c = self.catalogue.get(n)        # KeyError names the known codecs
                if c.media != media:
                    raise ValueError(f"{c.name} is a {c.media} codec, not {media}")
                if c.name != "telephone-event" and c not in out:
                    out.append(c)
            return out
        every = [c for c in self.catalogue if c.media == media and c.name != "telephone-event"]
        ranked = [c for n in default_order for c in every if c.name.lower() == n.lower()]
        return ranked + [c for c in every if c not in ranked]

    def allowed_names(self) -> list[str]:
        return [c.name for c in self.audio + self.video]

    # ---- identification of offered formats
    def _identify(self, m: MediaDescription, pt: int) -> Codec | None:
        rm = m.rtpmap.get(pt)
        if rm is not None:
            ch = rm.channels if m.media == "audio" else None
            c = self.catalogue.find(rm.encoding, rm.clock_rate, ch)
            if c is None and rm.encoding.lower() == "opus":
                c = self.catalogue.find(rm.encoding, rm.clock_rate, None)     # "opus/48000" without /2
            if c is None and pt < _DYNAMIC_FIRST:
                static = self.catalogue.by_static_pt(pt)                       # "G722/16000" on PT 9
                if static is not None and static.encoding_name.lower() == rm.encoding.lower():
                    c = static
            return c if c is not None and c.media == m.media else None
        if pt < _DYNAMIC_FIRST:
            c = self.catalogue.by_static_pt(pt)
            return c if c is not None and c.media == m.media else None
        return None

    @staticmethod
    def _format_name(m: MediaDescription, pt: int) -> str:
        rm = m.rtpmap.get(pt)
        if rm is not None:
            return str(rm)
        return _STATIC_NAMES.get(pt, f"payload type {pt}")

    # ---- codec-specific parameter matching: returns (fmtp we answer, agreed fmtp for the stream)
    def _match_params(self, codec: Codec, offered: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        name = codec.name.lower()
        if name == "h264":
            return self._match_h264(codec, offered)
        if name in ("h263", "h263-1998"):
            return self._match_h263(codec, offered)
        if name == "opus":
            agreed = dict(codec.fmtp_implied)
            agreed.update(_lower(offered))
            return dict(codec.fmtp), agreed
        if name == "vp8":
            ours = self._vp8_fmtp()
            agreed = {k: v for k, v in _lower(offered).items() if k in ("max-fs", "max-fr")}
            return ours, agreed
        return dict(codec.fmtp), _lower(offered)

    def _h264_modes(self, codec: Codec) -> list[str]:
        modes = []
        for fm in (codec.fmtp, *codec.fmtp_variants):
            mode = _lower(fm).get("packetization-mode", codec.fmtp_implied.get("packetization-mode", "0"))
            if mode not in modes:
                modes.append(mode)
        return modes

    def _match_h264(self, codec: Codec, offered: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        p = _lower(offered)
        implied = _lower(codec.fmtp_implied)
        mode = p.get("packetization-mode", implied.get("packetization-mode", "0")).strip()
        if mode not in self._h264_modes(codec):
            raise _NoMatch(f"H264 packetization-mode {mode} (we do {' and '.join(self._h264_modes(codec))})")
        prof, iop, lvl = _parse_plid(p.get("profile-level-id", implied.get("profile-level-id", "42000a")))
        if prof not in _H264_PROFILES:
            raise _NoMatch(f"H264 profile_idc 0x{prof:02x} (we do {', '.join(_H264_PROFILES.values())})")
        key = _level_key(prof, iop, lvl)
        if key not in H264_LEVELS:
            raise _NoMatch(f"H264 level_idc {lvl} is not an H.264 level")
        if key <= self._h264_level:
            ans_lvl, ans_iop = lvl, iop
        else:
            ans_lvl, ans_iop = self._h264_level, iop & ~0x10      # constraint_set3 means 1b only at 11
            if ans_lvl == 9:                                     # our cap is 1b
                ans_lvl, ans_iop = (11, iop | 0x10) if prof in (0x42, 0x4D, 0x58) else (9, iop)
        plid = f"{prof:02x}{ans_iop:02x}{ans_lvl:02x}"
        answer: dict[str, str] = {"profile-level-id": plid}
        if "packetization-mode" in p:
            answer["packetization-mode"] = mode
        if p.get("level-asymmetry-allowed") == "1" and _lower(codec.fmtp).get("level-asymmetry-allowed") == "1":
            answer["level-asymmetry-allowed"] = "1"
        # we receive more than the answered level allows: say so (RFC 6184 §8.1 max-fs, max-mbps)
        ans_mbps, ans_fs = H264_LEVELS[_level_key(prof, ans_iop, ans_lvl)]
        our_mbps, our_fs = H264_LEVELS[self._h264_level]
        if self.max_resolution is not None:
            our_fs = min(our_fs, _macroblocks(self.max_resolution))
            our_mbps = min(our_mbps, our_fs * 30)
        if our_mbps > ans_mbps:
            answer["max-mbps"] = str(our_mbps)
        if our_fs > ans_fs:
            answer["max-fs"] = str(our_fs)
        agreed = {"profile-level-id": plid, "packetization-mode": mode}
        for k in ("max-mbps", "max-fs", "max-br", "max-smbps", "max-cpb", "max-dpb",
                  "sprop-parameter-sets", "level-asymmetry-allowed"):
            if k in p:
                agreed[k] = p[k]
        return answer, agreed

    def _our_h263_sizes(self, codec: Codec) -> dict[str, int]:
        out: dict[str, int] = {}
        for k, v in codec.fmtp.items():
            size = _H263_SIZES.get(k.upper())
            if size is None or not v.isdigit():
                continue
            if self.max_resolution and (size[0] > self.max_resolution[0] or size[1] > self.max_resolution[1]):
                continue
            out[k.upper()] = int(v)
        return out

    def _match_h263(self, codec: Codec, offered: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        theirs: dict[str, int] = {}
        extra: dict[str, str] = {}
        for k, v in offered.items():
            ku = k.upper()
            if ku in _H263_SIZES:
                if v.strip().isdigit() and 1 <= int(v) <= 32:
                    theirs[ku] = int(v)
            elif ku == "MAXBR":
                extra["MaxBR"] = v
        if not theirs:
            theirs = {"QCIF": 2}      # no size given: QCIF, which every H.263 decoder supports
        ours = self._our_h263_sizes(codec)
        common = {k: max(mpi, theirs[k]) for k, mpi in ours.items() if k in theirs}
        if not common:
            raise _NoMatch(f"{codec.name} picture sizes {', '.join(theirs)} (we do {', '.join(ours) or 'none'})")
        answer = {k: str(v) for k, v in common.items()}
        return answer, {**answer, **extra}

    def _vp8_fmtp(self) -> dict[str, str]:
        if self.max_resolution is None:
            return {}
        return {"max-fs": str(_macroblocks(self.max_resolution)), "max-fr": "30"}

    # ---- answering
    def answer(
        self,
        offer: SessionDescription,
        local: LocalMedia,
        direction: str = "sendrecv",
        previous: SessionDescription | None = None,
    ) -> tuple[SessionDescription, list[NegotiatedStream]]:
        """Answer ``offer`` (RFC 3264 §6).  ``direction`` is what we want (``sendonly`` when
        we hold the peer); ``previous`` is the last SDP we sent in this dialog, whose o=
        line is kept (version bumped only when the SDP changed, RFC 3264 §8).

        Raises :class:`SdpError` status 488 when no stream can be accepted."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
        if not offer.media:
            raise SdpError("the offer has no media streams (m= lines)", status=488)
        answer = self._new_session(local, previous)
        streams: list[NegotiatedStream] = []
        taken: set[str] = set()
        offered_names: list[str] = []
        problems: list[str] = []
        srtp_refused = False
        for index, m in enumerate(offer.media):
            ans_m, stream, names, why = self._answer_media(offer, index, m, local, direction, taken)
            for n in names:
                if n not in offered_names:
                    offered_names.append(n)
            if why and why not in problems:
                problems.append(why)
            if stream.accepted:
                taken.add(m.media)
            elif m.proto.upper() in _SRTP:
                srtp_refused = True
            answer.media.append(ans_m)
            streams.append(stream)
        if not any(s.accepted for s in streams):
            if srtp_refused:
                raise SdpError(f"SRTP ({', '.join(sorted({m.proto for m in offer.media if m.proto.upper() in _SRTP}))}) "
                               "is not supported yet: offer RTP/AVP", status=488)
            offered = ", ".join(offered_names) or "nothing usable"
            detail = f" ({'; '.join(problems)})" if problems else ""
            raise SdpError(f"no common codec: offered {offered}; room allows "
                           f"{', '.join(self.allowed_names()) or 'nothing'}{detail}", status=488)
        return self._continue_origin(answer, previous), streams

    def _rejected(self, m: MediaDescription, index: int, reason: str) -> tuple[MediaDescription, NegotiatedStream]:
        ans = MediaDescription(media=m.media, port=0, proto=m.proto, formats=list(m.formats) or ["0"])
        return ans, NegotiatedStream(media=m.media, index=index, accepted=False, proto=m.proto, reason=reason)

    def _answer_media(
        self, offer: SessionDescription, index: int, m: MediaDescription, local: LocalMedia,
        want: str, taken: set[str],
    ) -> tuple[MediaDescription, NegotiatedStream, list[str], str | None]:
        """One m= line → (answer m=, stream, names of offered formats, why nothing matched)."""
        if m.port == 0:
            a, s = self._rejected(m, index, "disabled by the offerer (port 0)")
            return a, s, [], None
        if m.media not in _RTP_MEDIA:
            a, s = self._rejected(m, index, f"{m.media} streams ({m.proto}) are not supported")
            return a, s, [], None
        proto = m.proto.upper()
        if proto in _SRTP:
            a, s = self._rejected(m, index, f"SRTP ({m.proto}) is not supported yet")
            return a, s, [], None
        if proto not in _PLAIN_RTP:
            a, s = self._rejected(m, index, f"transport {m.proto} is not supported (RTP/AVP or RTP/AVPF)")
            return a, s, [], None
        if m.media in taken:
            a, s = self._rejected(m, index, f"only one {m.media} stream is supported")
            return a, s, [], None
        port = local.audio_port if m.media == "audio" else local.video_port
        if not port:
            a, s = self._rejected(m, index, f"no local {m.media} port")
            return a, s, [], None
        conn = offer.connection_of(m)
        if conn is None:
            raise SdpError(f"m= #{index + 1} ({m.media}) has no c= line and there is no session-level one")

        allowed = self.audio if m.media == "audio" else self.video
        names: list[str] = []
        reasons: list[str] = []
        chosen: tuple[int, Codec, dict[str, str], dict[str, str]] | None = None
        dtmf: tuple[int, Codec] | None = None
        for pt in m.payload_types:
            codec = self._identify(m, pt)
            label = codec.name if codec is not None else self._format_name(m, pt)
            if label not in names:
                names.append(label)
            if codec is None:
                continue
            if codec.name == "telephone-event":
                if self.dtmf_codec is not None and dtmf is None:
                    dtmf = (pt, codec)
                continue
            if chosen is not None or codec not in allowed:
                continue
            try:
                ans_fmtp, agreed = self._match_params(codec, m.fmtp_params(pt))
            except _NoMatch as exc:
                reasons.append(exc.reason)
                continue
            chosen = (pt, codec, ans_fmtp, agreed)
        if chosen is None:
            why = "; ".join(reasons) if reasons else None
            a, s = self._rejected(m, index, f"no common {m.media} codec" + (f": {why}" if why else ""))
            return a, s, names, why
        pt, codec, ans_fmtp, agreed = chosen

        # direction (RFC 3264 §6.1, §8.4)
        remote_dir = offer.direction_of(m)
        our = _mirror(remote_dir)
        if conn.is_hold:
            our = "inactive" if m.explicit_direction is None and remote_dir == "sendrecv" else _without_send(our)
        our = _intersect(our, want)

        ans = MediaDescription(media=m.media, port=port, proto=m.proto, formats=[str(pt)])
        ans.add("rtpmap", f"{pt} {codec.rtpmap()}")
        if ans_fmtp:
            ans.add("fmtp", f"{pt} {format_fmtp(ans_fmtp, codec.encoding_name)}")
        rtcp_fb: list[str] = []
        if m.media == "video":
            for fb in m.rtcp_fb_for(pt):
                if fb.lower() in _FEEDBACK and fb.lower() not in rtcp_fb:
                    rtcp_fb.append(fb.lower())
                    ans.add("rtcp-fb", f"{pt} {fb.lower()}")
        dtmf_pt = None
        if dtmf is not None and m.media == "audio":
            dtmf_pt = dtmf[0]
            ans.formats.append(str(dtmf_pt))
            ans.add("rtpmap", f"{dtmf_pt} {dtmf[1].rtpmap()}")
            events = dtmf[1].fmtp
            if events:
                ans.add("fmtp", f"{dtmf_pt} {format_fmtp(events, dtmf[1].encoding_name)}")
        if m.media == "audio" and codec.ptime_ms:
            ans.add("ptime", str(codec.ptime_ms))
        remote_kbps = _remote_kbps(offer, m)
        ours_kbps = self.max_bitrate_kbps if m.media == "video" else None
        as_value = _min_present(ours_kbps, m.bandwidth.get("AS"))
        if as_value is not None:
            ans.bandwidth["AS"] = as_value
        if "TIAS" in m.bandwidth:
            ans.bandwidth["TIAS"] = _min_present(ours_kbps * 1000 if ours_kbps else None, m.bandwidth["TIAS"]) or 0
        ans.set_direction(our)

        stream = NegotiatedStream(
            media=m.media, index=index, accepted=True, codec=codec, payload_type=pt, fmtp=agreed,
            clock_rate=codec.clock_rate, channels=codec.channels, dtmf_pt=dtmf_pt,
            remote_host=conn.address, remote_port=m.port, remote_rtcp_port=_rtcp_port(m),
            direction=our, ptime=m.ptime, bandwidth_kbps=remote_kbps, rtcp_fb=rtcp_fb,
            proto=m.proto, local_payload_type=pt, local_dtmf_pt=dtmf_pt, maxptime=m.maxptime,
            remote_fmtp=m.fmtp_params(pt),
        )
        return ans, stream, names, None

    # ---- offering
    def offer(self, local: LocalMedia, video: bool = True, direction: str = "sendrecv") -> SessionDescription:
        """Our offer: audio with every allowed codec and telephone-event, video (when ``video``
        and a video port) with H264 (mode 1 and mode 0), VP8, H263-1998, H263 as allowed."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
        sd = self._new_session(local, None)
        next_pt = [_DYNAMIC_FIRST]

        def dynamic() -> int:
            pt = next_pt[0]
            next_pt[0] += 1
            return pt

        audio = MediaDescription(media="audio", port=local.audio_port, proto="RTP/AVP", formats=[])
        for codec in self.audio:
            self._offer_format(audio, codec, codec.static_pt if codec.static_pt is not None else dynamic(),
                               codec.fmtp)
        if self.dtmf_codec is not None:
            self._offer_format(audio, self.dtmf_codec, dynamic(), self.dtmf_codec.fmtp)
        ptime = min((c.ptime_ms for c in self.audio if c.ptime_ms), default=None)
        if ptime:
            audio.add("ptime", str(ptime))
        audio.set_direction(direction)
        sd.media.append(audio)
        if video and local.video_port and self.video:
            vm = MediaDescription(media="video", port=local.video_port, proto="RTP/AVP", formats=[])
            for codec in self.video:
                for fm in self._offer_video_fmtps(codec):
                    pt = codec.static_pt if codec.static_pt is not None else dynamic()
                    self._offer_format(vm, codec, pt, fm)
            for fb in _FEEDBACK:
                vm.add("rtcp-fb", f"* {fb}")
            kbps = self.max_bitrate_kbps or max(c.bitrate_kbps for c in self.video)
            vm.bandwidth["AS"] = kbps
            vm.set_direction(direction)
            sd.media.append(vm)
        return sd

    def _offer_format(self, m: MediaDescription, codec: Codec, pt: int, fmtp: Mapping[str, str]) -> None:
        m.formats.append(str(pt))
        m.add("rtpmap", f"{pt} {codec.rtpmap()}")
        if fmtp:
            m.add("fmtp", f"{pt} {format_fmtp(fmtp, codec.encoding_name)}")

    def _offer_video_fmtps(self, codec: Codec) -> list[dict[str, str]]:
        name = codec.name.lower()
        if name == "h264":
            out = []
            for fm in (codec.fmtp, *codec.fmtp_variants):
                f = dict(fm)
                plid = _lower(f).get("profile-level-id")
                if plid:
                    prof, iop, lvl = _parse_plid(plid)
                    if _level_key(prof, iop, lvl) > self._h264_level:
                        lv = self._h264_level
                        key = next(k for k in f if k.lower() == "profile-level-id")
                        f[key] = (f"{prof:02x}{iop | 0x10:02x}0b" if lv == 9 else f"{prof:02x}{iop & ~0x10:02x}{lv:02x}")
                out.append(f)
            return out
        if name in ("h263", "h263-1998"):
            sizes = self._our_h263_sizes(codec)
            return [{k: str(v) for k, v in sizes.items()}] if sizes else []
        if name == "vp8":
            return [self._vp8_fmtp()]
        return [dict(codec.fmtp)]

    def reoffer(self, previous: SessionDescription, local: LocalMedia, direction: str = "sendrecv") -> SessionDescription:
        """A new offer in the same session (re-INVITE, hold/resume): same o= session id,
        version + 1, the same m= lines in the same order (RFC 3264 §8); streams we no longer
        offer stay as port 0."""
        fresh = self.offer(local, video=any(m.media == "video" and m.port for m in previous.media),
                           direction=direction)
        pool = {m.media: m for m in fresh.media}
        media: list[MediaDescription] = []
        for m in previous.media:
            new = pool.pop(m.media, None) if m.port else None
            media.append(new if new is not None else
                         MediaDescription(media=m.media, port=0, proto=m.proto, formats=list(m.formats) or ["0"]))
        fresh.media = media
        fresh.origin = replace(previous.origin, sess_version=previous.origin.sess_version + 1,
                               address=local.address, addrtype=_addrtype(local.address))
        return fresh

    # ---- checking answers to our offers
    def process_answer(self, offer: SessionDescription, answer: SessionDescription) -> list[NegotiatedStream]:
        """Check the answer to our ``offer`` and give the negotiated streams (RFC 3264 §6, §7).

        Raises :class:`SdpError` (status 488) when the answer does not fit the offer: a
        different number or kind of m= lines, another transport, a format we did not offer."""
        if len(answer.media) > len(offer.media) or not answer.media:
            raise SdpError(f"the answer has {len(answer.media)} m= lines, our offer had {len(offer.media)} "
                           "(RFC 3264 §6: one per offered stream, same order)", status=488)
        streams: list[NegotiatedStream] = []
        # Some devices (and old SIP stacks) answer a late offer's audio+video with the audio line
        # alone: RFC 3264 wants a port-0 line per refused stream; we read the missing ones as that.
        for index, om in enumerate(offer.media[len(answer.media):], start=len(answer.media)):
            streams.append(NegotiatedStream(media=om.media, index=index, accepted=False, proto=om.proto,
                                            reason="missing from the answer (taken as refused)"))
        missing, streams = streams, []
        for index, (om, am) in enumerate(zip(offer.media, answer.media)):
            if om.media != am.media:
                raise SdpError(f"answer m= #{index + 1} is {am.media}, our offer's is {om.media}", status=488)
            if om.port == 0 or am.port == 0:
                streams.append(NegotiatedStream(media=am.media, index=index, accepted=False, proto=am.proto,
                                                reason="rejected in the answer (port 0)" if am.port == 0
                                                else "not offered (port 0)"))
                continue
            if am.proto.upper() != om.proto.upper():
                raise SdpError(f"answer m= #{index + 1} uses {am.proto}, we offered {om.proto}", status=488)
            streams.append(self._answered_stream(offer, answer, index, om, am))
        return streams + missing

    def _answered_stream(self, offer: SessionDescription, answer: SessionDescription, index: int,
                         om: MediaDescription,
                         am: MediaDescription) -> NegotiatedStream:
        conn = answer.connection_of(am)
        if conn is None:
            raise SdpError(f"answer m= #{index + 1} ({am.media}) has no c= line", status=488)
        offered: dict[int, Codec] = {}
        for pt in om.payload_types:
            c = self._identify(om, pt)
            if c is not None:
                offered[pt] = c
        chosen: tuple[int, int, Codec] | None = None            # (remote pt, local pt, codec)
        dtmf: tuple[int, int] | None = None
        for pt in am.payload_types:
            codec = self._identify(am, pt)
            local_pt = self._local_pt_for(om, offered, pt, codec, am.fmtp_params(pt))
            if local_pt is None:
                raise SdpError(f"answer m= #{index + 1} ({am.media}) has {self._format_name(am, pt)} "
                               f"(payload type {pt}), which we did not offer", status=488)
            codec = offered[local_pt]
            if codec.name == "telephone-event":
                if dtmf is None:
                    dtmf = (pt, local_pt)
            elif chosen is None:
                chosen = (pt, local_pt, codec)
        if chosen is None:
            raise SdpError(f"answer m= #{index + 1} ({am.media}) accepts no codec, only "
                           f"{', '.join(self._format_name(am, p) for p in am.payload_types) or 'nothing'}",
                           status=488)
        pt, local_pt, codec = chosen
        remote_fmtp = am.fmtp_params(pt)
        agreed = _lower(remote_fmtp)
        if codec.name.lower() == "h264":
            agreed.setdefault("packetization-mode",
                              _lower(om.fmtp_params(local_pt)).get("packetization-mode",
                                                                   codec.fmtp_implied.get("packetization-mode", "0")))
            agreed.setdefault("profile-level-id", _lower(om.fmtp_params(local_pt)).get(
                "profile-level-id", codec.fmtp_implied.get("profile-level-id", "42000a")))
        elif codec.name.lower() == "opus":
            agreed = {**dict(codec.fmtp_implied), **agreed}
        our = _intersect(_mirror(answer.direction_of(am)), offer.direction_of(om))
        if conn.is_hold:
            our = _without_send(our)
        rtcp_fb = [fb.lower() for fb in am.rtcp_fb_for(pt) if fb.lower() in _FEEDBACK] if am.media == "video" else []
        return NegotiatedStream(
            media=am.media, index=index, accepted=True, codec=codec, payload_type=pt, fmtp=agreed,
            clock_rate=codec.clock_rate, channels=codec.channels, dtmf_pt=dtmf[0] if dtmf else None,
            remote_host=conn.address, remote_port=am.port, remote_rtcp_port=_rtcp_port(am),
            direction=our, ptime=am.ptime, bandwidth_kbps=_remote_kbps(answer, am), rtcp_fb=rtcp_fb,
            proto=am.proto, local_payload_type=local_pt, local_dtmf_pt=dtmf[1] if dtmf else None,
            maxptime=am.maxptime, remote_fmtp=remote_fmtp,
        )

    def _local_pt_for(self, om: MediaDescription, offered: Mapping[int, Codec], pt: int,
                      codec: Codec | None, fmtp: Mapping[str, str]) -> int | None:
        """Which of our offered payload types an answered format is (same number and codec, or
        a different number for a codec we offered: RFC 3264 §6.1 only says SHOULD keep it)."""
        def same_h264_mode(local_pt: int) -> bool:
            implied = codec.fmtp_implied.get("packetization-mode", "0") if codec else "0"
            theirs = _lower(fmtp).get("packetization-mode", implied)
            ours = _lower(om.fmtp_params(local_pt)).get("packetization-mode", implied)
            return theirs == ours

        if pt in offered and (codec is None or codec is offered[pt]):
            c = offered[pt]
            if c.name.lower() != "h264" or same_h264_mode(pt) or "packetization-mode" not in _lower(fmtp):
                return pt
        if codec is None:
            return None
        for local_pt, c in offered.items():
            if c is codec and (c.name.lower() != "h264" or same_h264_mode(local_pt)):
                return local_pt
        return None

    # ---- session helpers
    def _new_session(self, local: LocalMedia, previous: SessionDescription | None) -> SessionDescription:
        if previous is not None:
            origin = replace(previous.origin, address=local.address, addrtype=_addrtype(local.address))
        else:
            sess = str(secrets.randbelow(2**62) + 1)
            origin = Origin("cau", sess, 1, "IN", _addrtype(local.address), local.address)
        return SessionDescription(origin=origin, session_name=self.session_name,
                                  connection=Connection.for_host(local.address), timing=[(0, 0)])

    @staticmethod
    def _continue_origin(sd: SessionDescription, previous: SessionDescription | None) -> SessionDescription:
        """RFC 3264 §8: the version goes up by one when the SDP differs from the previous one."""
        if previous is None:
            return sd
        same = sd.serialize() == replace(previous, origin=sd.origin).serialize()
        if not same:
            sd.origin = replace(sd.origin, sess_version=previous.origin.sess_version + 1)
        return sd


# --------------------------------------------------------------------------- small helpers

_MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
_CAPS = {"sendrecv": {"send", "recv"}, "sendonly": {"send"}, "recvonly": {"recv"}, "inactive": set()}


def _mirror(direction: str) -> str:
    return _MIRROR.get(direction, "sendrecv")


def _from_caps(caps: Iterable[str]) -> str:
    s = set(caps)
    return next(d for d, c in _CAPS.items() if c == s)


def _intersect(a: str, b: str) -> str:
    return _from_caps(_CAPS[a] & _CAPS[b])


def _without_send(d: str) -> str:
    return _from_caps(_CAPS[d] - {"send"})


def _addrtype(host: str) -> str:
    return "IP6" if ":" in host else "IP4"


def _rtcp_port(m: MediaDescription) -> int:
    return m.rtcp if m.rtcp is not None else m.port + 1


def _min_present(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _remote_kbps(sd: SessionDescription, m: MediaDescription) -> int | None:
    """The tightest bandwidth the remote gave for this stream (b=AS, b=TIAS, session AS/CT), kbit/s."""
    tias = m.bandwidth.get("TIAS")
    s_tias = sd.bandwidth.get("TIAS")
    return _min_present(
        m.bandwidth.get("AS"),
        math.ceil(tias / 1000) if tias is not None else None,
        sd.bandwidth.get("AS"),
        sd.bandwidth.get("CT"),
        math.ceil(s_tias / 1000) if s_tias is not None else None,
    )
