"""Typed codec parameters and the one description of a negotiated direction: :class:`MediaFormat`.

SIP offer/answer and H.245 capability exchange both end in a ``MediaFormat``
per direction: the catalogue codec, the RTP payload type, the codec's typed
parameters (:class:`~gateway.media.codecs.h264.H264Params`, ...), the packet
time and a bitrate cap. SDP ``a=fmtp`` text and H.245/H.241 capability
values are only ever translated to and from those parameters, by the codec's
own module:

========================= ===================================================
module                    codecs
========================= ===================================================
:mod:`.h264`              H264 (RFC 6184 fmtp, H.241 generic capability)
:mod:`.h263`              H263 (RFC 2190), H263-1998 (RFC 4629)
:mod:`.h261`              H261 (RFC 4587)
:mod:`.vp8`               VP8 (RFC 7741)
:mod:`.opus`              opus (RFC 7587)
:mod:`.audio`             PCMU, PCMA, G722 (frames per packet), telephone-event
========================= ===================================================

Each module offers the same functions (see :class:`CodecRules`), so the
adapters never branch on a codec's name:

* ``from_fmtp(codec, fmtp)`` / ``to_fmtp(params)``: SDP ``a=fmtp`` ↔ params;
  an absent parameter gets the meaning its RFC gives it;
* ``local(codec, limits)``: the parameters we receive with (catalogue, capped
  by the room's :class:`Limits`), one per payload type we offer;
* ``answer(codec, offered, limits)``: the rules that answer an offer →
  ``(answered params, params the sender must honour)``, or :class:`NoMatch`
  with the reason that goes into a 488;
* ``common(ours, theirs)``: what both ends can do (an H.245 transmit channel
  narrowed to the far end's receive capability);
* ``from_h245(codec, value)`` / ``to_h245(codec, params, bitrate_cap)``: H.245
  capability values (pycrate notation) ↔ params, bitrate caps in bit/s.

``media`` never imports an adapter: the H.245 values here are plain dicts
and tuples, the shape pycrate encodes.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

from gateway.catalogue import Codec

__all__ = [
    "CodecRules",
    "GenericParams",
    "Limits",
    "MediaFormat",
    "NoMatch",
    "rules_for",
    "parse_int",
]


class NoMatch(Exception):
    """A format cannot be used; ``reason`` says why (it goes into a 488 / OLC reject text)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    """What the room lets a leg receive: the dial plan's ``max_resolution`` and ``max_bitrate_kbps``."""

    max_resolution: tuple[int, int] | None = None
    max_bitrate_kbps: int | None = None


@dataclass(frozen=True)
class GenericParams:
    """fmtp of a codec without a module of its own: kept as given (lower-case names)."""

    values: tuple[tuple[str, str], ...] = ()

    def get(self, name: str, default: str | None = None) -> str | None:
        return dict(self.values).get(name.lower(), default)


@dataclass(frozen=True)
class MediaFormat:
    """One negotiated direction of one media stream.

    ``payload_type`` is the number on the wire in this direction (ours when we
    receive, the far end's when we send); ``params`` are the codec's typed
    parameters (for a send format: the far end's receive limits, which the
    encoder honours); ``ptime_ms`` the packet time (audio); ``bitrate_cap``
    the most this direction may carry, in bit/s (b=AS/TIAS, H.245 maxBitRate).
    """

    codec: Codec
    payload_type: int
    params: Any = field(default_factory=GenericParams)
    ptime_ms: int | None = None
    bitrate_cap: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.payload_type, int) or not 0 <= self.payload_type <= 127:
            raise ValueError(f"RTP payload type {self.payload_type!r} is not in 0..127")

    @property
    def kind(self) -> str:
        return self.codec.media

    @property
    def name(self) -> str:
        return self.codec.name

    @property
    def clock_rate(self) -> int:
        return self.codec.clock_rate

    def fmtp(self) -> dict[str, str]:
        """The params as SDP ``a=fmtp`` parameters."""
        return rules_for(self.codec).to_fmtp(self.params)

    def __str__(self) -> str:
        return f"{self.codec.name}/{self.codec.clock_rate} (pt {self.payload_type})"


class CodecRules(Protocol):
    """What every codec module offers (module-level functions)."""

    def from_fmtp(self, codec: Codec, fmtp: Mapping[str, str]) -> Any: ...
    def to_fmtp(self, params: Any) -> dict[str, str]: ...
    def local(self, codec: Codec, limits: Limits) -> list[Any]: ...
    def answer(self, codec: Codec, offered: Any, limits: Limits) -> tuple[Any, Any]: ...
    def common(self, ours: Any, theirs: Any) -> Any: ...
    def from_h245(self, codec: Codec | None, value: Any) -> tuple[Any, int | None]: ...
    def to_h245(self, codec: Codec, params: Any, bitrate_cap: int | None) -> Any: ...


def parse_int(text: Any, lo: int = 0, hi: int = 1 << 31) -> int | None:
    """A decimal parameter value in lo..hi, or None (absent, not a number, absurd)."""
    if isinstance(text, int):
        return text if lo <= text <= hi else None
    if not isinstance(text, str):
        return None
    t = text.strip()
    if not t.isdigit() or len(t) > 12:
        return None
    v = int(t)
    return v if lo <= v <= hi else None


def lower_keys(params: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in params.items()}


def _generic_module() -> ModuleType:
    from . import generic

    return generic


def rules_for(codec: Codec | str) -> Any:
    """The module holding ``codec``'s rules (a :class:`CodecRules`)."""
    from . import audio, h261, h263, h264, opus, vp8

    name = (codec if isinstance(codec, str) else codec.name).lower()
    table = {"h264": h264, "h263": h263, "h263-1998": h263, "h263-2000": h263, "h261": h261,
             "vp8": vp8, "opus": opus, "pcmu": audio, "pcma": audio, "g722": audio,
             "telephone-event": audio}
    return table.get(name) or _generic_module()
