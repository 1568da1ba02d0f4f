"""PCMU, PCMA, G722 (RFC 3551) and telephone-event (RFC 4733).

G.711 and G.722 have no fmtp. On H.323 their capability is a count of
"frames" per packet (``g722-64k 20``); for these codecs one frame is 1 ms of
audio, so the count is the packet time in ms (:func:`ptime_of_frames`).
telephone-event's fmtp lists the events (``0-15``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.catalogue import Codec

from . import Limits, lower_keys


@dataclass(frozen=True)
class AudioParams:
    """G.711 / G.722: nothing beyond the packet time (which is MediaFormat.ptime_ms).
    ``frames_per_packet`` is the H.245 capability's count, when it came from H.245."""

    frames_per_packet: int | None = None


@dataclass(frozen=True)
class TelephoneEventParams:
    events: str = "0-15"


def _is_te(codec: Codec) -> bool:
    return codec.name.lower() == "telephone-event"


def from_fmtp(codec: Codec, fmtp: Mapping[str, str]) -> AudioParams | TelephoneEventParams:
    if _is_te(codec):
        p = lower_keys(fmtp)
        return TelephoneEventParams(p.get("events") or "0-15")
    return AudioParams()


def to_fmtp(params: Any) -> dict[str, str]:
    if isinstance(params, TelephoneEventParams):
        return {"events": params.events}
    return {}


def local(codec: Codec, limits: Limits) -> list[Any]:
    if _is_te(codec):
        return [TelephoneEventParams(str(dict(codec.fmtp).get("events", "0-15")))]
    frames = (codec.h245 or {}).get("frames_per_packet")
    return [AudioParams(int(frames) if frames is not None else None)]


def answer(codec: Codec, offered: Any, limits: Limits) -> tuple[Any, Any]:
    return local(codec, limits)[0], offered


def common(ours: AudioParams, theirs: AudioParams) -> AudioParams:
    """Frames per packet: never above what the receiver takes."""
    a, b = ours.frames_per_packet, theirs.frames_per_packet
    if a is None or b is None:
        return AudioParams(a if b is None else b)
    return AudioParams(min(a, b))


def ptime_of_frames(frames: int | None, default: int = 20) -> int:
    """The packet time we send for an H.245 frames-per-packet limit: 20 ms, or 10 ms when
    the receiver takes less than 20 (the mixer makes 20 ms frames; encoders can split them)."""
    if frames is None or frames >= default:
        return default
    return 10


def from_h245(codec: Codec | None, value: Any) -> tuple[AudioParams, int | None]:
    """``value``: the AudioCapability's inner value (an INTEGER frames count for G.711/G.722)."""
    if isinstance(value, int):
        return AudioParams(max(1, min(256, value))), None
    return AudioParams(), None


def to_h245(codec: Codec, params: AudioParams, bitrate_cap: int | None) -> Any:
    """The AudioCapability (choice, frames) for ``codec``."""
    h = codec.h245 or {}
    if "choice" not in h:
        raise ValueError(f"{codec.name} has no H.245 audio capability ({codec.source})")
    frames = params.frames_per_packet
    if frames is None:
        frames = int(h.get("frames_per_packet", codec.ptime_ms or 20))
    return (h["choice"], max(1, min(256, int(frames))))
