"""A Leg: one participant's connection after negotiation, whatever the protocol.

SIP, H.323, WebRTC and the test peers all turn a call into a :class:`Leg`. The
conference only ever sees Legs; it never learns which protocol is behind one.

A Leg holds its media as typed streams, :attr:`Leg.streams`, keyed by stream
id (``"audio"``, ``"video"``): each a :class:`MediaStream` with its kind,
direction, negotiated :class:`~gateway.media.codecs.MediaFormat` per
direction (``rx``: what we receive, ``tx``: what we send), the source the
room pulls from and the sink it delivers to, typed :class:`StreamStats`, and
:meth:`MediaStream.request_keyframe` to ask the far end for a keyframe.

Control events, split by direction:

*from the far end, for the conference* (the adapter emits them; ``on``/``emit``):

=================== ====================================== =================================
event               keyword arguments                      typical origin
=================== ====================================== =================================
``keyframe_request`` ``stream: str``                       the far end wants a keyframe from
                                                           us (RTCP PLI/FIR, SIP INFO
                                                           picture_fast_update, H.245
                                                           videoFastUpdatePicture)
``bitrate_limit``   ``stream: str, kbps: int | None``      the far end lowers (None: lifts)
                                                           what it receives (TMMBR, REMB,
                                                           H.245 flowControlCommand)
``dtmf``            ``digit: str``                         RFC 4733, H.245 userInput, INFO
``mute``            ``direction: str, on: bool``           either; ``"in"`` = their audio into
                                                           the room, ``"out"`` = the room's
                                                           audio to them, ``"both"``
``hangup``          ``reason: str``                        either; emitted exactly once by
                                                           :meth:`Leg.hangup`
=================== ====================================== =================================

*from the conference, for the far end*: method calls, never events —
:meth:`Leg.request_keyframe` (→ the stream's ``keyframe_requester``, which the
adapter sets: RTCP PLI/FIR where negotiated, else H.245 or SIP INFO),
:meth:`Leg.hangup`, :meth:`Leg.mute`.

Listeners are called synchronously in subscription order; a listener that
raises is logged and the others still run.
"""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal

from gateway.conference.events import Observable
from gateway.media.codecs import MediaFormat

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))

LegState = Literal["new", "joined", "left"]
MUTE_DIRECTIONS = ("in", "out", "both")
STREAM_KINDS = ("audio", "video")
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

_ids = itertools.count(1)


@dataclass(frozen=True)
class StreamStats:
    """One stream's figures at one moment (all optional: a stream without RTP has none)."""

    packets_received: int = 0
    packets_sent: int = 0
    octets_received: int = 0
    octets_sent: int = 0
    packets_lost: int = 0
    late: int = 0                         # arrived after their play-out time (jitter buffer)
    concealed: int = 0
    jitter_ms: float = 0.0
    buffer_ms: float = 0.0                # how long media waits in the jitter buffer
    rtt_ms: float | None = None
    remote_fraction_lost: float | None = None   # what the far end reports about what we send
    remote_jitter_ms: float | None = None
    keyframes_requested: int = 0          # we asked the far end
    keyframes_asked: int = 0              # the far end asked us


@dataclass(eq=False)
class MediaStream:
    """One media stream of a leg: ``source`` feeds the room, ``sink`` takes the room's media."""

    id: str
    kind: str
    rx: MediaFormat | None = None
    tx: MediaFormat | None = None
    direction: str = "sendrecv"
    source: Any = None
    sink: Any = None
    #: set by the adapter: ask the far end for a keyframe (returns nothing)
    keyframe_requester: Callable[[], None] | None = None
    #: set by the adapter: the stream's figures now
    stats_provider: Callable[[], StreamStats] | None = None
    keyframes_requested: int = field(default=0)
    keyframes_asked: int = field(default=0)

    def __post_init__(self) -> None:
        if self.kind not in STREAM_KINDS:
            raise ValueError(f"stream kind {self.kind!r} is not one of {STREAM_KINDS}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"stream direction {self.direction!r} is not one of {DIRECTIONS}")
        for f in (self.rx, self.tx):
            if f is not None and f.kind != self.kind:
                raise ValueError(f"stream {self.id}: a {f.kind} format ({f}) in a {self.kind} stream")

    @property
    def sends(self) -> bool:
        """We send on it (the far end wants to receive)."""
        return self.direction in ("sendrecv", "sendonly")

    @property
    def receives(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")

    def request_keyframe(self) -> bool:
        """Ask the far end for a keyframe; False when the stream has no way to."""
        if self.keyframe_requester is None:
            return False
        self.keyframes_requested += 1
        self.keyframe_requester()
        return True

    @property
    def stats(self) -> StreamStats:
        base = self.stats_provider() if self.stats_provider is not None else StreamStats()
        return replace(base, keyframes_requested=self.keyframes_requested, keyframes_asked=self.keyframes_asked)

    def __repr__(self) -> str:
        return f"<MediaStream {self.id} {self.kind} {self.direction} rx={self.rx} tx={self.tx}>"


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
        streams: dict[str, MediaStream] | None = None,
    ) -> None:
        self.id = id or f"leg-{next(_ids)}"
        self.display_name = display_name or self.id
        self.protocol = protocol
        self.remote = remote
        self.streams: dict[str, MediaStream] = {}
        for s in (streams or {}).values():
            self.add_stream(s)
        self.state: LegState = "new"
        self.hung_up = False
        self.hangup_reason: str | None = None
        #: alias of the dial-plan endpoint this leg is proven to come from (registration, network,
        #: password); None when the caller is anonymous, whatever name it gives
        self.identity: str | None = None
        #: how the call is protected: {"signalling": "TLS"|"TCP"|"UDP"|"H.225"|"DTLS",
        #: "media": "SRTP AES_CM_128_HMAC_SHA1_80"|"DTLS-SRTP"|None (plain RTP)}, and for a call
        #: out over TLS whose certificate was checked (tls_ca), "verified": the name it carries
        self.encryption: dict[str, Any] = {}
        #: monotonic time the call began (its first message, when the protocol layer knows it):
        #: call set-up time is measured from here to joining the room
        self.started = time.monotonic()
        #: what the far end says it is (SIP User-Agent, H.323 display), for call records
        self.user_agent: str | None = None

    def __repr__(self) -> str:
        return f"<Leg {self.id} {self.protocol} {self.display_name!r} {self.remote} {self.state}>"

    # --------------------------------------------------------------- streams
    def add_stream(self, stream: MediaStream) -> MediaStream:
        """Add (or replace) the stream with ``stream.id``."""
        self.streams[stream.id] = stream
        return stream

    def stream(self, kind: str) -> MediaStream | None:
        """The first stream of ``kind`` (``"audio"`` / ``"video"``), if any."""
        s = self.streams.get(kind)
        if s is not None and s.kind == kind:
            return s
        return next((s for s in self.streams.values() if s.kind == kind), None)

    @property
    def audio(self) -> MediaStream | None:
        return self.stream("audio")

    @property
    def video(self) -> MediaStream | None:
        return self.stream("video")

    # ---------------------------------------------------------------- events
    def emit(self, event: str, **kw: Any) -> None:
        """Deliver ``event`` to every listener (``callback(**kw)``; a failing listener is logged, not fatal)."""
        self._check_event(event)
        if event == "keyframe_request":
            s = self.streams.get(kw.get("stream", "video"))
            if s is not None:
                s.keyframes_asked += 1
        self._notify(event, **kw)

    # ------------------------------------------------ conference → far end
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

    def request_keyframe(self, stream: str = "video") -> bool:
        """Ask the far end for a keyframe on ``stream``; False when it has no such stream or way."""
        s = self.streams.get(stream)
        return s.request_keyframe() if s is not None else False
