"""opus (RFC 7587): always opus/48000/2; fmtp parameters with the meaning RFC 7587 §6.1
gives an absent one. We answer ``minptime=10;useinbandfec=1`` (the catalogue's fmtp)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from gateway.catalogue import Codec

from . import Limits, lower_keys, parse_int


@dataclass(frozen=True)
class OpusParams:
    """What a receiver with these parameters takes (RFC 7587 §6.1 defaults)."""

    maxplaybackrate: int = 48000
    sprop_maxcapturerate: int = 48000
    maxaveragebitrate: int | None = None
    stereo: bool = False
    sprop_stereo: bool = False
    cbr: bool = False
    useinbandfec: bool = False
    usedtx: bool = False
    minptime: int | None = None
    maxptime: int | None = None


_DEFAULTS = OpusParams()
# fmtp order we write (minptime first: what the catalogue, and so our SDP, always had)
_ORDER = ("minptime", "maxptime", "maxplaybackrate", "sprop_maxcapturerate", "maxaveragebitrate",
          "stereo", "sprop_stereo", "cbr", "useinbandfec", "usedtx")


def _flag(text: str | None, default: bool) -> bool:
    if text is None:
        return default
    return text.strip() == "1"


def from_fmtp(codec: Codec, fmtp: Mapping[str, str]) -> OpusParams:
    p = lower_keys(fmtp)
    kw: dict[str, Any] = {}
    for f in fields(OpusParams):
        key = f.name.replace("_", "-")
        if key not in p:
            continue
        if f.type in ("bool",):
            kw[f.name] = _flag(p[key], getattr(_DEFAULTS, f.name))
        else:
            hi = 510000 if f.name == "maxaveragebitrate" else 48000 if "rate" in f.name else 120
            v = parse_int(p[key], 1, hi)
            if v is not None:
                kw[f.name] = v
    return OpusParams(**kw)


def to_fmtp(params: OpusParams) -> dict[str, str]:
    """Only what differs from RFC 7587's defaults."""
    out: dict[str, str] = {}
    for name in _ORDER:
        v = getattr(params, name)
        if v == getattr(_DEFAULTS, name) or v is None:
            continue
        out[name.replace("_", "-")] = ("1" if v else "0") if isinstance(v, bool) else str(v)
    return out


def local(codec: Codec, limits: Limits) -> list[OpusParams]:
    return [from_fmtp(codec, codec.fmtp)]


def answer(codec: Codec, offered: OpusParams, limits: Limits) -> tuple[OpusParams, OpusParams]:
    return local(codec, limits)[0], offered


def common(ours: OpusParams, theirs: OpusParams) -> OpusParams:
    return theirs


def from_h245(codec: Codec | None, value: Any) -> tuple[OpusParams, int | None]:
    return OpusParams(), None


def to_h245(codec: Codec, params: OpusParams, bitrate_cap: int | None) -> Any:
    raise ValueError("opus has no H.245 capability in use by H.323 room systems")
