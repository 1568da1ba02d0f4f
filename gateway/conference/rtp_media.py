"""A call's RTP media and the Leg built on it: the glue the SIP and H.323 adapters (and the test
harnesses) share.

An adapter negotiates (SDP offer/answer, H.245 logical channels) and tells
:class:`RtpMedia` what each stream came to, as a :class:`StreamPlan` per
stream id. ``RtpMedia`` opens one :class:`~gateway.media.rtp.RtpSession` per
stream (symmetric RTP: the port we receive on is the one we send from), points
it at the far end, and keeps the Leg's :class:`~gateway.conference.leg.MediaStream`
in step:

* audio: an :class:`~gateway.media.audio_stream.AudioStream` is the stream's
  source and sink; a codec change (re-INVITE) swaps it in the room in place;
  RFC 4733 digits become ``dtmf`` events;
* video: a :class:`~gateway.media.video_stream.VideoReceiver` is the stream's
  source (the far end's picture) and a :class:`~gateway.media.video_stream.VideoSender`
  its sink (the room's picture), for the codecs we carry; RTCP PLI/FIR from the
  far end become ``keyframe_request`` events, TMMBR and REMB ``bitrate_limit``; a keyframe
  request from the conference goes out as RTCP PLI/FIR where the far end
  negotiated it, else through the adapter's ``keyframe_fallback`` (H.245
  videoFastUpdatePicture, SIP INFO);
* an RTP timeout on audio hangs the leg up; hanging up closes every session
  and returns its ports.

:func:`admit` is the other shared piece: join the room, or wait in the PIN
gate first.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from gateway.conference.leg import Leg, MediaStream, StreamStats
from gateway.media.audio_stream import AudioStream
from gateway.media.codecs import MediaFormat
from gateway.media.ports import PortAllocator
from gateway.media.rtp import RtpSession, open_rtp_session
from gateway.media.video_stream import VideoReceiver, VideoSender
from gateway.media.video_stream import supported as video_supported

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))

#: RTCP feedback (RFC 4585 / RFC 5104) values we act on
FEEDBACK = ("nack", "nack pli", "ccm fir")


@dataclass(frozen=True)
class StreamPlan:
    """What one stream came to, whatever negotiated it: formats per direction, where to send."""

    kind: str
    rx: MediaFormat | None
    tx: MediaFormat | None
    direction: str = "sendrecv"
    remote: tuple[str, int] | None = None       # where we send RTP
    remote_rtcp: int | None = None              # RTCP port (None: RTP port + 1)
    dtmf_rx_pt: int | None = None               # telephone-event we receive / send
    dtmf_tx_pt: int | None = None
    feedback: frozenset[str] = frozenset()      # RTCP feedback the far end takes ("nack pli", "ccm fir")
    srtp: tuple[str, bytes, bytes] | None = None  # SDES: (suite, our key, the far end's key); None: RTP
    #: H.235.6 (H.323): ((key, cipher PT, plain PT) we send with, the same we receive with); None per
    #: direction: that direction is plain
    h235: tuple[tuple[bytes, int, int] | None, tuple[bytes, int, int] | None] | None = None


def rtp_stats(session: RtpSession, audio: AudioStream | None = None) -> StreamStats:
    rtp = session.stats
    jb = audio.jitter.stats if audio is not None else None
    return StreamStats(
        packets_received=rtp.packets_received, packets_sent=rtp.packets_sent,
        octets_received=rtp.octets_received, octets_sent=rtp.octets_sent,
        packets_lost=max(0, rtp.packets_lost), late=jb.late if jb else 0, concealed=jb.concealed if jb else 0,
        jitter_ms=rtp.jitter_ms, buffer_ms=jb.delay_ms if jb else 0.0, rtt_ms=rtp.rtt_ms,
        remote_fraction_lost=rtp.remote_fraction_lost, remote_jitter_ms=rtp.remote_jitter_ms,
    )


class RtpMedia:
    """The RTP sessions of one call and, once audio is negotiated, its Leg."""

    def __init__(self, ports: PortAllocator | None, *, bind: str = "127.0.0.1", rtp_timeout: float = 30.0,
                 reactor: Any = None, display_name: str = "", protocol: str = "rtp", remote: str = "",
                 leg_id: str | None = None, unconfirmed_budget: int | None = None) -> None:
        self.ports = ports
        #: packets each session may send before the far end is confirmed (None: no gate; see
        #: RtpSession.unconfirmed_budget): the signalling adapters set it and call confirm()
        self.unconfirmed_budget = unconfirmed_budget
        self.confirmed = False
        self.bind = bind
        self.rtp_timeout = rtp_timeout
        self.reactor = reactor
        self.sessions: dict[str, RtpSession] = {}
        self.plans: dict[str, StreamPlan] = {}
        self.leg: Leg | None = None
        # who the Leg is, once it is made (the adapter may fill these in until then)
        self.leg_id, self.display_name, self.protocol, self.remote = leg_id, display_name, protocol, remote
        #: the adapter's way to ask for a keyframe when RTCP feedback was not negotiated
        self.keyframe_fallback: Callable[[str], None] | None = None
        #: called with the Leg when it is made (the adapter subscribes to it)
        self.on_leg: Callable[[Leg], None] | None = None
        #: a swapped audio source/sink (codec change): the room swaps it in place
        self.on_replaced: Callable[[Leg, str], None] | None = None
        #: RTP payload bytes per video packet we send
        self.video_mtu = 1200
        self._video_ids: set[str] = set()
        self.closed = False

    # -- sessions -------------------------------------------------------------------------
    def open(self, stream_id: str, kind: str | None = None, session: RtpSession | None = None) -> RtpSession:
        """The RTP session for ``stream_id`` (opened on first use; PortsExhausted passes up)."""
        s = self.sessions.get(stream_id)
        if s is not None:
            return s
        kind = kind or stream_id
        if session is None:
            video = kind == "video"
            session = open_rtp_session(self.ports, bind=self.bind, clock_rate=90000 if video else 8000,
                                       timeout=0 if video else self.rtp_timeout, reactor=self.reactor)
        self.sessions[stream_id] = session
        if self.unconfirmed_budget is not None:
            session.unconfirmed_budget = self.unconfirmed_budget
        if self.confirmed:
            session.confirm()
        if kind == "video":
            self._video_ids.add(stream_id)
            session.on_rtcp_feedback = lambda what, detail, _id=stream_id: self._feedback(_id, what, detail)
        return session

    def confirm(self) -> None:
        """The signalling proved the far end (SIP ACK, H.323 CONNECT): every stream may send freely."""
        self.confirmed = True
        for s in self.sessions.values():
            s.confirm()

    def local_port(self, stream_id: str) -> int | None:
        s = self.sessions.get(stream_id)
        return s.local_port if s is not None else None

    @property
    def video_packets(self) -> int:
        """Video RTP packets received, on every video stream."""
        return sum(s.stats.packets_received for sid, s in self.sessions.items() if sid in self._video_ids)

    def _feedback(self, stream_id: str, what: str, detail: Any) -> None:
        if self.leg is None or stream_id not in self.leg.streams:
            return
        if what in ("pli", "fir"):
            self.leg.emit("keyframe_request", stream=stream_id)
        elif what == "nack" and isinstance(detail, list):
            session = self.sessions.get(stream_id)
            if session is not None:
                session.retransmit(detail)
        elif what in ("remb", "tmmbr") and isinstance(detail, dict) and isinstance(detail.get("bitrate"), (int, float)):
            self.leg.emit("bitrate_limit", stream=stream_id, kbps=max(1, int(detail["bitrate"]) // 1000))

    # -- negotiation results --------------------------------------------------------------
    def apply(self, stream_id: str, plan: StreamPlan) -> MediaStream | None:
        """Point ``stream_id``'s RTP at the far end and bring the Leg's stream in step with ``plan``.

        The Leg is made with the first audio stream. ``ValueError`` for an unusable address."""
        session = self.open(stream_id, plan.kind)
        old_plan = self.plans.get(stream_id)
        if plan.h235 is not None:
            if old_plan is None or old_plan.h235 != plan.h235 or session.srtp is None:
                from gateway.media.h235_rtp import H235MediaContext

                session.set_srtp(H235MediaContext(*plan.h235))
        elif plan.srtp is None:
            session.set_srtp(None)
        elif old_plan is None or old_plan.srtp != plan.srtp or session.srtp is None:
            from gateway.media.srtp import SrtpContext

            session.set_srtp(SrtpContext(*plan.srtp))   # new keys (a re-INVITE with the same keeps its state)
        if plan.remote is not None:
            host, port = plan.remote
            if session.remote != (host, port):
                session.set_remote(host, port, plan.remote_rtcp)
        if plan.kind == "audio" and plan.rx is not None:
            session.clock_rate = plan.rx.clock_rate
        self.plans[stream_id] = plan
        if plan.kind == "video":
            # what we sent, for the far end's NACKs (~2 s of a 2 Mbit/s stream), where it asks for them
            session.history = 512 if "nack" in plan.feedback else 0
        if self.leg is None:
            if plan.kind != "audio" or plan.rx is None or plan.tx is None:
                return None
            self.leg = Leg(self.leg_id, self.display_name, self.protocol, self.remote)
            self.leg.on("hangup", lambda reason: self.close())
            session.on_timeout = lambda s=session: self.leg.hangup(f"no media received for {s.timeout:g} s")
            for sid, p in self.plans.items():   # video negotiated before audio
                if sid != stream_id:
                    self._stream(sid, p, made=True)
            stream = self._stream(stream_id, plan, made=True)
            if self.on_leg is not None:
                self.on_leg(self.leg)
            return stream
        return self._stream(stream_id, plan)

    def _stream(self, stream_id: str, plan: StreamPlan, made: bool = False) -> MediaStream:
        """The Leg's stream for ``plan``; ``made``: the Leg is being made (nothing to replace yet)."""
        leg = self.leg
        assert leg is not None
        session = self.sessions[stream_id]
        old = leg.streams.get(stream_id)
        if plan.kind == "audio":
            audio = old.source if old is not None else None
            if plan.rx is None or plan.tx is None:
                raise ValueError(f"audio stream {stream_id} needs a format both ways")
            if not (isinstance(audio, AudioStream) and _same_audio(audio, plan)):
                audio = AudioStream(session, plan.rx, plan.tx, dtmf_pt=plan.dtmf_rx_pt)
                audio.on_dtmf = lambda digit: leg.emit("dtmf", digit=digit)
                replaced = old is not None and old.source is not None
            else:
                replaced = False
            stream = MediaStream(stream_id, "audio", plan.rx, plan.tx, plan.direction, audio, audio,
                                 stats_provider=lambda s=session, a=audio: rtp_stats(s, a))
        else:
            source, sink = self._video(stream_id, session, plan, old)
            stream = MediaStream(stream_id, plan.kind, plan.rx, plan.tx, plan.direction, source, sink,
                                 keyframe_requester=lambda sid=stream_id: self._ask_keyframe(sid),
                                 stats_provider=lambda s=session: rtp_stats(s))
            # a video stream that came (or changed) after the Leg was made: the room takes it in
            replaced = old is None or old.source is not source or old.sink is not sink
        if old is not None:   # keep the counters across a renegotiation
            stream.keyframes_requested, stream.keyframes_asked = old.keyframes_requested, old.keyframes_asked
        leg.add_stream(stream)
        if replaced and not made and self.on_replaced is not None:
            self.on_replaced(leg, stream_id)
        return stream

    def _video(self, stream_id: str, session: RtpSession, plan: StreamPlan,
               old: MediaStream | None) -> tuple[VideoReceiver | None, VideoSender | None]:
        """The stream's picture into the room and the room's picture out, for the codecs we carry;
        kept across a renegotiation that changed neither format."""
        leg = self.leg
        assert leg is not None
        source = sink = None
        if plan.direction in ("sendrecv", "recvonly") and video_supported(plan.rx):
            assert plan.rx is not None
            if old is not None and isinstance(old.source, VideoReceiver) and old.source.format == plan.rx:
                source = old.source
            else:
                source = VideoReceiver(session, plan.rx,
                                       request_keyframe=lambda sid=stream_id: leg.request_keyframe(sid),
                                       nack=session.send_nack if "nack" in plan.feedback else None)
        else:
            session.on_packet = None
        if plan.direction in ("sendrecv", "sendonly") and video_supported(plan.tx):
            assert plan.tx is not None
            if old is not None and isinstance(old.sink, VideoSender) and old.sink.format == plan.tx:
                sink = old.sink
            else:
                sink = VideoSender(session, plan.tx, mtu=self.video_mtu)
        return source, sink

    def remove(self, stream_id: str) -> None:
        """The stream was declined or removed by a renegotiation (m= line with port 0): the Leg loses
        it, the room lets go of it, and its RTP session is closed (its ports go back; a later offer
        opens a new one)."""
        self.plans.pop(stream_id, None)
        self._video_ids.discard(stream_id)
        session = self.sessions.pop(stream_id, None)
        if session is not None:
            session.on_packet = None
            session.on_timeout = None
            session.close()
        if self.leg is not None and self.leg.streams.pop(stream_id, None) is not None:
            if self.on_replaced is not None:
                self.on_replaced(self.leg, stream_id)

    def _ask_keyframe(self, stream_id: str) -> None:
        plan = self.plans.get(stream_id)
        session = self.sessions.get(stream_id)
        fb = plan.feedback if plan is not None else frozenset()
        if session is not None and "nack pli" in fb:
            session.send_pli()
        elif session is not None and "ccm fir" in fb:
            session.send_fir()
        else:
            if self.keyframe_fallback is not None:
                self.keyframe_fallback(stream_id)
            # and a PLI besides: many senders act on one without having offered rtcp-fb (baresip,
            # most SIP room systems); one that does not know it ignores it (RFC 4585 §3.4)
            if session is not None:
                session.send_pli()

    # -- teardown -------------------------------------------------------------------------
    def close(self) -> None:
        """Close every RTP session (their ports go back to the allocator). Idempotent."""
        if self.closed:
            return
        self.closed = True
        for s in self.sessions.values():
            s.on_packet = None
            s.on_timeout = None
            s.close()


def _same_audio(audio: AudioStream, plan: StreamPlan) -> bool:
    assert plan.rx is not None and plan.tx is not None
    return ((audio.rx.codec.name, audio.rx.payload_type, audio.tx.payload_type, audio.dtmf_pt)
            == (plan.rx.codec.name, plan.rx.payload_type, plan.tx.payload_type, plan.dtmf_rx_pt))


def audio_leg(session: RtpSession, rx: MediaFormat, tx: MediaFormat | None = None, *, dtmf_pt: int | None = None,
              display_name: str = "", protocol: str = "rtp", remote: str = "", leg_id: str | None = None) -> Leg:
    """A Leg whose audio is ``session`` receiving ``rx`` and sending ``tx`` (default the same):
    for test harnesses and benchmarks that set up RTP themselves."""
    media = RtpMedia(None, display_name=display_name, protocol=protocol, remote=remote, leg_id=leg_id)
    media.open("audio", "audio", session)
    media.apply("audio", StreamPlan("audio", rx, tx or rx, dtmf_rx_pt=dtmf_pt, dtmf_tx_pt=dtmf_pt))
    assert media.leg is not None
    media.leg.rtp_media = media  # type: ignore[attr-defined]
    return media.leg


#: callers that may wait at one room's PIN prompt, and from one address (over all rooms)
MAX_WAITING_PER_ROOM = 20
MAX_WAITING_PER_SOURCE = 3


def admit(registry: Any, spec: Any, leg: Leg, *, reactor: Any = None,
          on_joined: Callable[[Any], None], on_refused: Callable[[Any], None]) -> Any:
    """Join ``spec``'s room now (``on_joined(room)``; JoinRefused passes up), or, when the room
    has a PIN, through the PIN gate first (returns the gate; after the right PIN ``on_joined``,
    or ``on_refused(JoinRefused)`` when the room is full or closed by then).

    Callers at the PIN prompt hold a seat of the room; at most :data:`MAX_WAITING_PER_ROOM` wait
    per room and :data:`MAX_WAITING_PER_SOURCE` per address; a source or room locked by the PIN
    guard (too many wrong PINs) is refused at once (``on_refused``)."""
    from gateway.conference.room import JoinRefused, RoomFull

    if getattr(spec, "pin", None):
        from gateway.conference.pin import PinGate
        from gateway.guard import source_key

        guard = getattr(registry, "pin_guard", None)
        waiting: dict[str, set[Any]] = getattr(registry, "waiting", {})
        source = source_key(leg.remote)
        problem: JoinRefused | None = None
        if guard is not None and (wait := guard.retry_after(source, spec.id)):
            problem = JoinRefused(spec.id, f"too many wrong PINs: try again in {wait:.0f} s")
        else:
            gates = waiting.get(spec.id, set())
            room = registry.get(spec.id) if hasattr(registry, "get") else None
            seats = getattr(spec, "max_participants", None)
            seats = seats if seats and seats > 0 else None
            if seats is not None and len(gates) + (len(room.legs) if room is not None else 0) >= seats:
                problem = RoomFull(spec.id, f"every seat is taken ({seats}, counting callers entering the PIN)")
            elif len(gates) >= MAX_WAITING_PER_ROOM:
                problem = JoinRefused(spec.id, f"{MAX_WAITING_PER_ROOM} callers are entering the PIN already")
            elif sum(1 for gs in waiting.values() for g in gs if g.source == source) >= MAX_WAITING_PER_SOURCE:
                problem = JoinRefused(spec.id, f"{MAX_WAITING_PER_SOURCE} calls from {source} are entering a "
                                               "PIN already")
        if problem is not None:
            log.info("leg %s from %s refused at the PIN prompt of %s: %s", leg.id, source, spec.id, problem.reason)
            on_refused(problem)
            return None

        def admitted(leg: Leg) -> None:
            try:
                room = registry.join(spec, leg)
            except JoinRefused as exc:
                on_refused(exc)
                return
            on_joined(room)

        gate = PinGate(leg, spec.pin, registry.clock, admitted, reactor=reactor, guard=guard, source=source,
                       room_id=spec.id)
        gates = waiting.setdefault(spec.id, set())
        gates.add(gate)

        def gone() -> None:
            gates.discard(gate)
            if not gates and waiting.get(spec.id) is gates:
                del waiting[spec.id]

        gate.on_done = gone
        return gate
    on_joined(registry.join(spec, leg))
    return None
