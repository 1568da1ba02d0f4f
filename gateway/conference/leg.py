"""A Leg: one participant's connection after negotiation, whatever the protocol.

SIP, H.323, WebRTC and the test peers all turn a call into a :class:`Leg`. The
conference only ever sees Legs; it never learns which protocol is behind one.

Control events flow both ways through one small observer (``on``/``emit``):

=================== ============================ ====================================
event               keyword arguments            typical origin
=================== ============================ ====================================
``keyframe_request`` (none)                      conference → adapter (send FIR/PLI,
                                                 H.245 videoFastUpdatePicture)
``bitrate_limit``   ``kbps: int``                either (TMMBR/REMB, H.245 flowControl)
``dtmf``            ``digit: str``               adapter → conference (RFC 4733,
                                                 H.245 userInputIndication, SIP INFO)
``mute``            ``direction: str, on: bool`` either; direction ``"in"`` = the
                                                 participant's audio into the room,
                                                 ``"out"`` = the room's audio to them,
                                                 ``"both"``
``hangup``          ``reason: str``              either; emitted exactly once by
                                                 :meth:`Leg.hangup`
=================== ============================ ====================================

Listeners are called synchronously in subscription order; a listener that
raises is logged and the others still run.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.conference.events import Observable
from gateway.media.mixer import AudioSink, AudioSource

log = logging.getLogger(__name__)

LegState = Literal["new", "joined", "left"]
MUTE_DIRECTIONS = ("in", "out", "both")

_ids = itertools.count(1)


@dataclass
class NegotiatedCodec:
    """What offer/answer (or H.245 capability exchange) settled on for one direction."""

    codec_name: str
    payload_type: int
    clock_rate: int
    fmtp: dict[str, str] = field(default_factory=dict)
    channels: int = 1

    def __str__(self) -> str:
        return f"{self.codec_name}/{self.clock_rate} (pt {self.payload_type})"


class Leg(Observable):
    """One participant's connection. Protocol adapters create it; rooms join it."""

    EVENTS = frozenset({"keyframe_request", "bitrate_limit", "dtmf", "mute", "hangup"})

    def __init__(
        self,
        id: str | None = None,
        display_name: str = "",
        protocol: str = "rtp",
        remote: str = "",
        *,
        audio_rx: NegotiatedCodec | None = None,
        audio_tx: NegotiatedCodec | None = None,
        video_rx: NegotiatedCodec | None = None,
        video_tx: NegotiatedCodec | None = None,
        audio: tuple[AudioSource, AudioSink] | None = None,
    ) -> None:
        self.id = id or f"leg-{next(_ids)}"
        self.display_name = display_name or self.id
        self.protocol = protocol
        self.remote = remote
        self.audio_rx = audio_rx
        self.audio_tx = audio_tx
        self.video_rx = video_rx
        self.video_tx = video_tx
        self.audio = audio
        self.state: LegState = "new"
        self.hung_up = False
        self.hangup_reason: str | None = None

    def __repr__(self) -> str:
        return f"<Leg {self.id} {self.protocol} {self.display_name!r} {self.remote} {self.state}>"

    # ---------------------------------------------------------------- events
    def emit(self, event: str, **kw: Any) -> None:
        """Deliver ``event`` to every listener (``callback(**kw)``; a failing listener is logged, not fatal)."""
        self._check_event(event)
        self._notify(event, **kw)

    # -------------------------------------------------------- conveniences
    def hangup(self, reason: str = "") -> None:
        """End this leg: emits ``hangup`` exactly once; later calls do nothing."""
        if self.hung_up:
            return
        self.hung_up = True
        self.hangup_reason = reason
        self.emit("hangup", reason=reason)
        self.state = "left"

    def mute(self, direction: str, on: bool = True) -> None:
        """Emit a ``mute`` event (validated)."""
        if direction not in MUTE_DIRECTIONS:
            raise ValueError(f"mute direction must be one of {MUTE_DIRECTIONS}, got {direction!r}")
        self.emit("mute", direction=direction, on=bool(on))

    def request_keyframe(self) -> None:
        self.emit("keyframe_request")
