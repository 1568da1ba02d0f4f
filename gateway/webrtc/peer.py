"""A browser (or any WHIP / WHEP client) in a room: one aiortc peer connection made into a Leg.

aiortc does ICE, DTLS-SRTP, RTP/RTCP and packetization; the media path is the
room's, the same as for SIP and H.323 legs (see :mod:`gateway.webrtc.hooks` for
the seams used):

* **in**: the receiver's packets are tapped before aiortc's jitter buffer and
  go to an :class:`~gateway.media.audio_stream.AudioStream` (jitter buffer, Opus
  decode at the mixer's 16 kHz, loss and jitter figures) and a
  :class:`~gateway.media.video_stream.VideoReceiver` (frames reassembled and
  decoded only while on screen, keyframes asked for by PLI);
* **out**: the mixer's encoded audio and the encoder group's whole encoded
  frames (H.264 Annex B with SPS/PPS before every IDR, or VP8) become
  ``av.Packet``\\ s with pts and time base on a :class:`PacketTrack`, sent at once
  by :class:`hooks.FastSender` (aiortc's packetizer, RTP packet and SRTP). Nothing is
  encoded per browser.
* **feedback**: a browser's PLI/FIR becomes the leg's ``keyframe_request``
  (the group's gate: at most one IDR per 500 ms), its REMB the leg's
  ``bitrate_limit`` (tier changes upwards at most every :data:`REMB_HOLD` s),
  its receiver reports the ``remote_*`` figures of the leg's stats.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from fractions import Fraction
from typing import Any, Callable

import av
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from gateway.conference.leg import Leg, MediaStream
from gateway.conference.rtp_media import rtp_stats
from gateway.media.audio_stream import AudioStream
from gateway.media.codecs import MediaFormat, rules_for
from gateway.media.rtp import RtpStats
from gateway.media.video_stream import WHOLE_FRAMES, VideoReceiver, VideoSender, tier_for
from gateway.sip.sdp import SessionDescription
from gateway.webrtc import hooks
from gateway.webrtc.offer import PreparedOffer, candidate_fields

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))

#: seconds a REMB-driven tier must wait before going up again (browsers' estimates wander)
REMB_HOLD = 4.0
#: seconds a peer connection may take to connect before the leg is given up
CONNECT_TIMEOUT = 30.0

_ids = itertools.count(1)


class PacketTrack(MediaStreamTrack):
    """Already-encoded media for one aiortc sender, pushed from the loop thread and sent at once
    by :attr:`fast` (a :class:`hooks.FastSender`, which the peer sets; aiortc's own loop, which
    would await :meth:`recv`, is replaced). Until the sender runs nothing is sent; a video track
    then waits for a keyframe (``on_start`` asks the room for one), and again after a frame could
    not be sent."""

    def __init__(self, kind: str, *, on_start: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.on_start = on_start
        self.started = False
        self.waiting_keyframe = kind == "video"
        self.pushed = 0
        self.dropped = 0
        self.fast: hooks.FastSender | None = None
        self._ended = asyncio.Event()

    def push(self, packet: av.Packet, keyframe: bool = True) -> None:
        fast = self.fast
        if fast is None or not fast.running or self.readyState != "live":
            self.dropped += 1
            self.waiting_keyframe = self.kind == "video"
            return
        if not self.started:
            self.started = True
            if self.on_start is not None:
                self.on_start()
        if self.waiting_keyframe and not keyframe:
            self.dropped += 1
            return
        if fast.push(packet):
            self.waiting_keyframe = False
            self.pushed += 1
        else:
            self.dropped += 1
            self.waiting_keyframe = self.kind == "video"

    async def recv(self) -> av.Packet:
        """Never called while :attr:`fast` stands in for aiortc's loop; ends with the track."""
        await self._ended.wait()
        raise MediaStreamError

    def stop(self) -> None:
        super().stop()
        self._ended.set()


class WebRtcSession:
    """One transceiver as the audio/video pipeline sees an RTP session: received packets
    (``on_packet``), sending (audio: ``send``), PLI, and RFC 3550 figures from aiortc's side."""

    def __init__(self, kind: str, clock_rate: int, receiver: Any, sender: Any, track: PacketTrack | None) -> None:
        self.kind = kind
        self.clock_rate = clock_rate
        self.receiver = receiver
        self.sender = sender
        self.track = track
        self.on_packet: Callable[..., None] | None = None
        self.on_timeout: Callable[[], None] | None = None
        self.timeout = 0
        self.time_base = Fraction(1, clock_rate)
        self._pts = 0
        self._ssrc: int | None = None
        self.report: Any = None           # the browser's last report block about what we send
        self.packets_received = 0
        self.octets_received = 0
        self.packets_sent = 0
        self.octets_sent = 0
        self.last_received: float | None = None
        self.closed = False

    # aiortc → us (the receiver's tap)
    def deliver(self, packet: Any) -> None:
        self._ssrc = packet.ssrc
        self.packets_received += 1
        self.octets_received += len(packet.payload)
        self.last_received = time.monotonic()
        cb = self.on_packet
        if cb is not None:
            cb(packet.payload_type, packet.sequence_number, packet.timestamp, bool(packet.marker),
               packet.payload, packet.ssrc, self.last_received)

    # the mixer → the browser (audio)
    def send(self, payload: bytes, pt: int, timestamp_step: int, marker: bool = False) -> None:
        pts = self._pts
        self._pts += timestamp_step
        if self.track is None or self.closed:
            return
        pkt = av.Packet(payload)
        pkt.pts = pts
        pkt.time_base = self.time_base
        self.track.push(pkt)
        self.packets_sent += 1
        self.octets_sent += len(payload)

    def send_pli(self) -> None:
        if self._ssrc is not None and self.receiver is not None and not self.closed:
            asyncio.ensure_future(hooks.send_pli(self.receiver, self._ssrc))

    @property
    def stats(self) -> RtpStats:
        st = RtpStats(packets_received=self.packets_received, octets_received=self.octets_received,
                      packets_sent=self.packets_sent, octets_sent=self.octets_sent,
                      last_received=self.last_received)
        rs = hooks.receiver_statistics(self.receiver) if self.receiver is not None else None
        if rs is not None:
            st.packets_lost = max(0, rs.packets_lost)
            st.jitter_ms = 1000.0 * rs.jitter / self.clock_rate
        if self.sender is not None:
            rtt = hooks.sender_rtt(self.sender)
            st.rtt_ms = 1000.0 * rtt if rtt is not None and rtt >= 0 else None
        r = self.report
        if r is not None:
            st.remote_fraction_lost = r.fraction_lost / 256.0
            st.remote_jitter_ms = 1000.0 * r.jitter / self.clock_rate
            st.remote_packets_lost = r.packets_lost
        return st

    def close(self) -> None:
        self.closed = True
        self.on_packet = None
        if self.track is not None:
            self.track.stop()


class WebRtcVideoSink(VideoSender):
    """The room's picture for a browser: whole encoded frames from the encoder group onto its track."""

    def __init__(self, session: WebRtcSession, fmt: MediaFormat, track: PacketTrack, **kw: Any) -> None:
        super().__init__(session, fmt, **kw)   # type: ignore[arg-type]
        self.packetization = (fmt.codec.name, WHOLE_FRAMES)
        self.track = track

    def send(self, payloads: Any, pts: int, keyframe: bool) -> None:
        pkt = av.Packet(payloads)
        pkt.pts = pts
        pkt.time_base = Fraction(1, 90000)
        self.track.push(pkt, keyframe)
        self.frames_sent += 1
        self.keyframes_sent += keyframe


def _format(catalogue: Any, m: Any, pt: int, kind: str) -> MediaFormat:
    """The MediaFormat of payload type ``pt`` of answer section ``m`` (the browser's fmtp)."""
    rm = m.rtpmap.get(pt)
    if rm is None:
        name, rate, channels = {0: ("PCMU", 8000, 1), 8: ("PCMA", 8000, 1)}[pt]
    else:
        name, rate, channels = rm.encoding, rm.clock_rate, rm.channels
    codec = catalogue.find(name, rate, channels)
    if codec is None or codec.media != kind:
        raise ValueError(f"{name}/{rate} is not in the codec catalogue")
    params = rules_for(codec).from_fmtp(codec, m.fmtp_params(pt))
    return MediaFormat(codec, pt, params, ptime_ms=m.ptime if kind == "audio" else None)


class WebRtcPeer:
    """One WHIP/WHEP client: its peer connection and, once answered, its :class:`Leg`."""

    def __init__(self, catalogue: Any, *, ice_servers: list[dict[str, str]] | None = None,
                 display_name: str = "", remote: str = "", viewer: bool = False,
                 public_addresses: tuple[str, ...] = ()) -> None:
        hooks.check_versions()
        self.catalogue = catalogue
        self.id = f"webrtc-{next(_ids)}"
        self.viewer = viewer
        servers = [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
                   for s in (ice_servers or [])]
        # never aiortc's default STUN server: the gateway may sit on a network without the internet
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.display_name = display_name
        self.remote = remote
        #: addresses in front of this machine (1:1 NAT): offered besides the host candidates
        self.public_addresses = public_addresses
        self.leg: Leg | None = None
        self.sessions: dict[str, WebRtcSession] = {}
        self.state = "new"
        self.connected_at: float | None = None
        self.created = time.monotonic()
        self._remb_tier: int | None = None
        self._remb_at = 0.0
        self._timeout: asyncio.TimerHandle | None = None
        self.on_closed: Callable[["WebRtcPeer"], None] | None = None
        self.closed = False
        self._closing: asyncio.Future[None] | None = None
        self.pc.on("connectionstatechange", self._state_changed)

    # -- negotiation --------------------------------------------------------------------------
    async def answer(self, offer: PreparedOffer) -> str:
        """Answer the (prepared) offer; the Leg is made. ValueError/aiortc errors pass up."""
        pc = self.pc
        await pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
        plan: dict[str, tuple[Any, PacketTrack | None, bool]] = {}
        for t in pc.getTransceivers():
            offered = next((s for s in offer.streams if s.mid == t.mid), None)
            if offered is None:
                continue
            they_send = offered.direction in ("sendrecv", "sendonly") and not self.viewer
            we_send = offered.direction in ("sendrecv", "recvonly")
            track = None
            if we_send:
                track = PacketTrack(t.kind)
                t.sender.replaceTrack(track)
            t.direction = ("sendrecv" if we_send else "recvonly") if they_send else ("sendonly" if we_send else "inactive")
            plan[t.mid] = (t, track, they_send)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        sdp = pc.localDescription.sdp
        self._make_leg(sdp, plan)
        if self.public_addresses:
            sdp = add_mapped_candidates(sdp, self.public_addresses)
        self._timeout = asyncio.get_event_loop().call_later(CONNECT_TIMEOUT, self._connect_timeout)
        return sdp

    def _make_leg(self, answer_sdp: str, plan: dict[str, tuple[Any, PacketTrack | None, bool]]) -> None:
        sd = SessionDescription.parse(answer_sdp)
        leg = Leg(self.id, self.display_name, "webrtc", self.remote)
        leg.encryption = {"signalling": "WHIP", "media": "DTLS-SRTP"}
        for m in sd.media:
            mid = m.attr("mid")
            if mid not in plan or m.port == 0 or not m.payload_types:
                continue
            t, track, they_send = plan[mid]
            if track is None and not they_send:
                continue              # an inactive section carries nothing either way
            kind = t.kind
            pts = [pt for pt in m.payload_types if (m.rtpmap.get(pt) is None or m.rtpmap[pt].encoding.lower() != "rtx")]
            fmt = _format(self.catalogue, m, pts[0], kind)
            session = WebRtcSession(kind, fmt.clock_rate, t.receiver if they_send else None,
                                    t.sender if track is not None else None, track)
            self.sessions[kind] = session
            if they_send:
                hooks.tap_receiver(t.receiver, session.deliver)
            direction = ("sendrecv" if track is not None else "recvonly") if they_send else "sendonly"
            if kind == "audio":
                audio = AudioStream(session, fmt, fmt)   # type: ignore[arg-type]
                leg.add_stream(MediaStream("audio", "audio", fmt, fmt, direction, audio, audio,
                                           stats_provider=lambda s=session, a=audio: rtp_stats(s, a)))  # type: ignore[arg-type]
            else:
                source = sink = None
                if they_send:
                    source = VideoReceiver(session, fmt, request_keyframe=lambda: leg.request_keyframe("video"))  # type: ignore[arg-type]
                if track is not None:
                    sink = WebRtcVideoSink(session, fmt, track)
                    track.on_start = lambda: leg.emit("keyframe_request", stream="video")
                leg.add_stream(MediaStream("video", "video", fmt, fmt, direction, source, sink,
                                           keyframe_requester=session.send_pli,
                                           stats_provider=lambda s=session: rtp_stats(s)))  # type: ignore[arg-type]
            if track is not None:
                track.fast = hooks.fast_sender(t.sender)
                hooks.hook_sender(t.sender,
                                  on_keyframe=lambda k=kind: k == "video" and leg.emit("keyframe_request", stream="video"),
                                  on_remb=self._remb if kind == "video" else None,
                                  on_report=lambda block, s=session: setattr(s, "report", block))
        if leg.audio is None and leg.video is None:
            raise ValueError("nothing to carry: no audio or video section was answered")
        leg.on("hangup", lambda reason="": self._hung_up(reason))
        self.leg = leg

    def _remb(self, bps: int) -> None:
        leg = self.leg
        if leg is None:
            return
        tier = tier_for(max(1, bps // 1000))
        now = time.monotonic()
        last = self._remb_tier
        if tier == last or (last is not None and tier > last and now - self._remb_at < REMB_HOLD):
            return
        self._remb_tier, self._remb_at = tier, now
        leg.emit("bitrate_limit", stream="video", kbps=max(1, bps // 1000))

    async def add_candidate(self, mid: str | None, candidate: str | None) -> None:
        """A trickled remote candidate (the text after ``a=candidate:``; ``None``: end of candidates).
        It goes to the section named and to the first one: with BUNDLE (what browsers and WHIP
        clients do) the first section's transport carries everything. ValueError when malformed."""
        from aiortc.sdp import candidate_from_sdp

        if candidate is None:
            await self.pc.addIceCandidate(None)
            return
        if candidate_fields(candidate) is None:
            raise ValueError("not foundation component transport priority address port typ TYPE")
        c = candidate_from_sdp(candidate)
        c.sdpMid = mid
        c.sdpMLineIndex = 0
        await self.pc.addIceCandidate(c)

    # -- life ------------------------------------------------------------------------------------
    async def _state_changed(self) -> None:
        state = self.pc.connectionState
        self.state = state
        if state == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()
            if self._timeout is not None:
                self._timeout.cancel()
            log.info("%s (%s, %s) connected", self.id, self.display_name, self.remote)
        elif state in ("failed", "closed") and self.leg is not None:
            self.leg.hangup("WebRTC connection " + state)

    def _connect_timeout(self) -> None:
        if self.connected_at is None and self.leg is not None:
            self.leg.hangup(f"WebRTC connection not established within {CONNECT_TIMEOUT:g} s")

    def _hung_up(self, reason: str) -> None:
        self.close()

    def close(self) -> "asyncio.Future[None]":
        """Close the peer connection (idempotent: every caller awaits the same closing); the leg
        hangs up if it has not."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        return self._closing

    async def _close(self) -> None:
        self.closed = True
        try:
            if self._timeout is not None:
                self._timeout.cancel()
            for s in self.sessions.values():
                s.close()
            if self.leg is not None and not self.leg.hung_up:
                self.leg.hangup("the WebRTC client left")
        except Exception:
            log.exception("leaving %s", self.id)
        try:
            await self.pc.close()
        except Exception:
            log.exception("closing %s", self.id)
        finally:
            if self.on_closed is not None:
                self.on_closed(self)

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "remote": self.remote, "viewer": self.viewer,
                "connected_s": round(time.monotonic() - self.connected_at, 1) if self.connected_at else None,
                "tracks": {k: {"pushed": s.track.pushed, "dropped": s.track.dropped} for k, s in self.sessions.items()
                           if s.track is not None}}


def add_mapped_candidates(sdp: str, public: tuple[str, ...]) -> str:
    """``sdp`` with, for each public address (a 1:1 NAT in front of the gateway), a copy of the
    first host candidate of each section and component at that address (same port, priority one
    lower): a browser outside reaches the gateway there, one inside by its own address."""
    out: list[str] = []
    done: set[tuple[int, str]] = set()
    section = 0
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            section += 1
        out.append(line)
        if not line.startswith("a=candidate:"):
            continue
        f = candidate_fields(line[12:])
        if f is None or f[7] != "host" or (section, f[1]) in done:
            continue
        done.add((section, f[1]))
        for i, address in enumerate(public):
            if address == f[4]:
                continue
            g = list(f)
            g[0] = f"{f[0]}n{i}"
            g[3] = str(max(1, int(f[3]) - 1 - i))
            g[4] = address
            out.append("a=candidate:" + " ".join(g))
    return "\r\n".join(out)
