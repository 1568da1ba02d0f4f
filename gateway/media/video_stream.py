"""One leg's video, glued: RTP in → depacketizer → (decoder in the room's job); the room's
bitstream → packetizer → RTP out.

:class:`VideoReceiver` is the room's video *source* for a leg. Every packet is
counted by the RTP session; only while the source is on screen
(:attr:`VideoReceiver.on_screen`) are its packets reassembled into frames, and
only those frames are decoded (by the room's job, in a worker thread). A source
that comes on screen starts from a fresh depacketizer and decoder and asks the
sender for a keyframe; a frame with a missing packet, a malformed frame or one
that does not decode is dropped and a keyframe is asked for again (at most one
request per :data:`KEYFRAME_ASK_INTERVAL`).

:class:`VideoSender` is the room's video *sink* for a leg: what the far end can
take (:func:`~gateway.media.video_codecs.encoder_settings` of its send format
and bitrate tier) decides which encoder group it is in; the group hands it
ready payloads for its packetization (H.264 mode 0 or 1, RFC 2190, RFC 4629,
RFC 7741, at its MTU), and the sender only writes its own RTP header: its SSRC,
its sequence numbers, and timestamps from the frame's presentation time.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.media.codecs import MediaFormat
from gateway.media.codecs.h264 import H264Params
from gateway.media.payload import h261 as h261_payload
from gateway.media.payload import h263 as h263_payload
from gateway.media.payload import h264 as h264_payload
from gateway.media.payload import vp8 as vp8_payload
from gateway.media.payload.frames import Frame, FrameAssembler
from gateway.media.rtp import RtpSession
from gateway.media.video_codecs import TIERS_KBPS, EncoderSettings, encoder_settings

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))

#: we ask one sender for a keyframe at most this often (seconds)
KEYFRAME_ASK_INTERVAL = 0.5
#: complete frames waiting for the room's next job; more means the job is behind: start over from a keyframe
MAX_PENDING_FRAMES = 8
#: the codecs we can carry (payload format + PyAV codec); others are negotiated and counted only
VIDEO_CODECS = ("H264", "VP8", "H263", "H263-1998", "H261")
#: the "packetization" of a receiver that takes whole encoded frames (a WebRTC sender packetizes them
#: itself): H.264 in Annex B with SPS/PPS before every IDR, VP8 frames as the encoder made them
WHOLE_FRAMES = -1


def supported(fmt: MediaFormat | None) -> bool:
    return fmt is not None and fmt.codec.name in VIDEO_CODECS


def depacketizer_for(fmt: MediaFormat) -> FrameAssembler:
    name = fmt.codec.name
    if name == "H264":
        sprop = fmt.params.sprop_parameter_sets if isinstance(fmt.params, H264Params) else None
        return h264_payload.H264Depacketizer(h264_payload.parse_sprop(sprop))
    if name == "VP8":
        return vp8_payload.VP8Depacketizer()
    if name == "H263":
        return h263_payload.RFC2190Depacketizer()
    if name == "H263-1998":
        return h263_payload.H263Depacketizer()
    if name == "H261":
        return h261_payload.H261Depacketizer()
    raise ValueError(f"no RTP payload format for {name}")


def packetization_of(fmt: MediaFormat) -> tuple[str, int]:
    """What a receiver's packets look like: (codec, H.264 packetization mode or 0)."""
    if fmt.codec.name == "H264":
        mode = fmt.params.packetization_mode if isinstance(fmt.params, H264Params) else 0
        return ("H264", mode)
    return (fmt.codec.name, 0)


class WholeFrames:
    """The packetizer of :data:`WHOLE_FRAMES` receivers: the frame as it is."""

    def packetize(self, data: bytes) -> bytes:
        return data


def packetizer_for(packetization: tuple[str, int], mtu: int) -> Any:
    codec, mode = packetization
    if mode == WHOLE_FRAMES:
        return WholeFrames()
    if codec == "H264":
        return h264_payload.H264Packetizer(mode=mode, mtu=mtu)
    if codec == "VP8":
        return vp8_payload.VP8Packetizer(mtu=mtu)
    if codec == "H263":
        return h263_payload.RFC2190Packetizer(mtu=mtu)
    if codec == "H263-1998":
        return h263_payload.H263Packetizer(mtu=mtu)
    if codec == "H261":
        return h261_payload.H261Packetizer(mtu=mtu)
    raise ValueError(f"no RTP payload format for {codec}")


class GapWatch:
    """The sequence numbers a new packet shows missing since the highest one seen (at most 32 at a
    time; an old or repeated packet shows none): what a generic NACK (RFC 4585 §6.2.1) asks for."""

    MAX_GAP = 32

    def __init__(self) -> None:
        self.highest: int | None = None

    def missing(self, seq: int) -> list[int]:
        last = self.highest
        if last is not None and not 0 < (seq - last) & 0xFFFF < 0x8000:
            return []
        self.highest = seq
        gap = (seq - last - 1) & 0xFFFF if last is not None else 0
        return [(last + 1 + i) & 0xFFFF for i in range(gap)] if 0 < gap <= self.MAX_GAP else []


class VideoReceiver:
    """A leg's incoming video for the room (see the module's docstring)."""

    def __init__(self, session: RtpSession, fmt: MediaFormat, *, request_keyframe: Callable[[], Any],
                 nack: Callable[[list[int]], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        #: where the sender takes NACKs (RFC 4585 generic NACK): a gap is asked for at once
        self._nack = nack
        self._gaps = GapWatch()
        self.format = fmt
        self._ask = request_keyframe
        self._clock = clock
        self.on_screen = False
        self.depacketizer = depacketizer_for(fmt)
        #: frames complete since the room last took them (loop thread only)
        self.pending: list[Frame] = []
        #: the room's job owns these two (worker thread, one job per room at a time)
        self.decoder: Any = None
        self.latest: Any = None             # last decoded av.VideoFrame
        self.latest_at = 0.0                # when it arrived (monotonic), for the latency figures
        self._last_ask: float | None = None
        self.frames_received = 0
        self.frames_dropped = 0             # by the depacketizer (loss, malformed) or the room (behind)
        self.frames_decoded = 0
        self.decode_errors = 0
        self.keyframes_asked = 0            # we asked the sender for one
        self.width = self.height = 0
        self._fps_window: list[float] = []
        self.wrong_pt = 0
        session.on_packet = self._on_packet

    # -- loop thread ---------------------------------------------------------------------
    def _on_packet(self, pt: int, seq: int, ts: int, marker: bool, payload: bytes, ssrc: int,
                   arrival: float) -> None:
        if not self.on_screen:
            return
        if pt != self.format.payload_type:
            self.wrong_pt += 1
            return
        if self._nack is not None:
            lost = self._gaps.missing(seq)
            if lost:
                self._nack(lost)
        dp = self.depacketizer
        dropped = dp.stats.dropped
        frames = dp.push(seq, ts, marker, payload)
        if dp.stats.dropped != dropped:
            self.frames_dropped += dp.stats.dropped - dropped
        if frames:
            self.frames_received += len(frames)
            self.pending.extend(frames)
            if len(self.pending) > MAX_PENDING_FRAMES:
                self.frames_dropped += len(self.pending)
                self.pending.clear()
                self.restart()
                return
        if dp.keyframe_needed:
            self.ask_keyframe()

    def ask_keyframe(self) -> bool:
        """Ask the sender for a keyframe, unless we did within KEYFRAME_ASK_INTERVAL or it has not
        sent anything yet (its first frame is a keyframe anyway)."""
        if self.session.stats.packets_received == 0:
            return False
        now = self._clock()
        if self._last_ask is not None and now - self._last_ask < KEYFRAME_ASK_INTERVAL:
            return False
        self._last_ask = now
        self.keyframes_asked += 1
        try:
            self._ask()
        except Exception:
            log.exception("asking %s for a keyframe failed", self.session)
        return True

    def show(self, on: bool) -> None:
        """The room puts this source on screen (or takes it off)."""
        if on == self.on_screen:
            return
        self.on_screen = on
        self.pending.clear()
        if on:
            self.restart()

    def restart(self) -> None:
        """Start over from the next keyframe (fresh depacketizer; the job makes a fresh decoder)."""
        self.depacketizer = depacketizer_for(self.format)
        self.decoder = None
        self._last_ask = None
        self.ask_keyframe()

    def take(self) -> list[Frame]:
        frames, self.pending = self.pending, []
        return frames

    @property
    def fps(self) -> float:
        w = self._fps_window
        if len(w) < 2:
            return 0.0
        return round((len(w) - 1) / max(1e-6, w[-1] - w[0]), 1)

    def decoded(self, frame: Any, at: float) -> None:
        """The job decoded ``frame`` (worker thread)."""
        self.latest = frame
        self.latest_at = at
        self.frames_decoded += 1
        self.width, self.height = frame.width, frame.height
        w = self._fps_window
        w.append(at)
        if len(w) > 30:
            del w[0]

    def stats(self) -> dict[str, Any]:
        return {"codec": self.format.codec.name, "on_screen": self.on_screen,
                "width": self.width, "height": self.height, "fps": self.fps,
                "frames_received": self.frames_received, "frames_decoded": self.frames_decoded,
                "frames_dropped": self.frames_dropped, "decode_errors": self.decode_errors,
                "keyframes_asked": self.keyframes_asked}


class VideoSender:
    """A leg's outgoing video: which group it takes its bitstream from, and its own RTP header."""

    def __init__(self, session: RtpSession, fmt: MediaFormat, *, mtu: int = 1200,
                 max_size: tuple[int, int] | None = None, tier_kbps: int | None = None) -> None:
        self.session = session
        self.format = fmt
        self.mtu = mtu
        self.max_size = max_size
        self.packetization = packetization_of(fmt)
        cap = fmt.bitrate_cap // 1000 if fmt.bitrate_cap else None
        top = TIERS_KBPS[-1] if tier_kbps is None else tier_kbps
        #: the tier negotiation allows; a receiver's bitrate limit moves :attr:`tier_kbps` below it
        self.ceiling_kbps = tier_for(min(top, cap) if cap else top)
        self.tier_kbps = self.ceiling_kbps
        self.limit_kbps: int | None = None
        self.frames_sent = 0
        self.keyframes_sent = 0
        self.keyframe_requests = 0         # the far end asked us for one
        self.group: Any = None             # set by the room

    def settings(self) -> EncoderSettings:
        return encoder_settings(self.format, self.tier_kbps, mtu=self.mtu, max_size=self.max_size)

    def limit(self, kbps: int | None) -> bool:
        """The far end asks for at most ``kbps`` (None: lifts it); True when the tier changed."""
        self.limit_kbps = kbps
        tier = self.ceiling_kbps if kbps is None else min(self.ceiling_kbps, tier_for(kbps))
        changed = tier != self.tier_kbps
        self.tier_kbps = tier
        return changed

    def send(self, payloads: list[tuple[bytes, bool]], pts: int, keyframe: bool) -> None:
        session = self.session
        pt = self.format.payload_type
        ts = pts & 0xFFFFFFFF
        for payload, marker in payloads:
            session.send_at(payload, pt, ts, marker)
        self.frames_sent += 1
        self.keyframes_sent += keyframe

    def stats(self) -> dict[str, Any]:
        s = self.group.settings if self.group is not None else None
        return {"codec": self.format.codec.name, "packetization": self.packetization[1],
                "width": s.width if s else 0, "height": s.height if s else 0, "fps": s.fps if s else 0,
                "tier_kbps": self.tier_kbps, "limit_kbps": self.limit_kbps,
                "frames_sent": self.frames_sent, "keyframes_sent": self.keyframes_sent,
                "keyframe_requests": self.keyframe_requests,
                "group": self.group.name if self.group is not None else None}


def tier_for(kbps: int) -> int:
    """The highest fixed tier at or below ``kbps`` (the lowest tier when below them all)."""
    fitting = [t for t in TIERS_KBPS if t <= kbps]
    return fitting[-1] if fitting else TIERS_KBPS[0]
