"""A video far end for the room tests and the H.323 test endpoint: sends a picture over RTP at a
frame rate, answers keyframe requests (RTCP PLI/FIR, or whatever its owner wires to
:meth:`VideoPeer.force_keyframe`), asks for one when a packet is lost, and decodes what it
receives so a test can look at the picture.

It is built from PyAV (FFmpeg's encoders and decoders) and Cầu's payload formats, which tshark
and baresip check elsewhere; the gateway under test sees it only as RTP."""
from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np
from twisted.internet import task

from gateway.catalogue import default_catalogue
from gateway.media.codecs import MediaFormat, h261, h263, h264, vp8
from gateway.media.payload.h263 import parse_mb_info
from gateway.media.ports import PortAllocator
from gateway.media.rtp import open_rtp_session
from gateway.media.video_codecs import DecodeError, EncoderSettings, VideoDecoder, VideoEncoder
from gateway.media.video_stream import GapWatch, depacketizer_for, packetization_of, packetizer_for
from interop_tests.peers.procs import free_port_block

CAT = default_catalogue()
LOOP = "127.0.0.1"
#: the picture size the H.263 and H.261 encoders take (352x288)
CIF = (352, 288)


def video_format(name: str, pt: int | None = None, mode: int = 1, level: str = "42e01f") -> MediaFormat:
    """A receive/send format as negotiation would make it (H.264 at ``level``, H.263 CIF at 30 fps)."""
    codec = CAT.get(name)
    if name == "H264":
        params = h264.from_fmtp(codec, {"profile-level-id": level, "packetization-mode": str(mode)})
        return MediaFormat(codec, pt or 96, params)
    if name == "VP8":
        return MediaFormat(codec, pt or 97, vp8.from_fmtp(codec, {}))
    if name == "H263":
        return MediaFormat(codec, 34, h263.from_fmtp(codec, {"CIF": "1", "QCIF": "1"}))
    if name == "H263-1998":
        return MediaFormat(codec, pt or 98, h263.from_fmtp(codec, {"CIF": "1", "QCIF": "1"}))
    if name == "H261":
        return MediaFormat(codec, 31, h261.from_fmtp(codec, {"CIF": "1", "QCIF": "1"}))
    raise ValueError(name)


def solid(rgb: tuple[int, int, int], width: int = 320, height: int = 240) -> Callable[[int], np.ndarray]:
    picture = np.empty((height, width, 3), np.uint8)
    picture[:] = rgb

    def draw(i: int) -> np.ndarray:
        return picture
    return draw


def moving(rgb: tuple[int, int, int], width: int = 352, height: int = 288) -> Callable[[int], np.ndarray]:
    """``rgb`` with a white square running along the top edge (outside the middle half the tests
    measure), so every frame differs from the last as a camera's would."""
    base = np.empty((height, width, 3), np.uint8)
    base[:] = rgb
    side = max(8, height // 10) // 2 * 2

    def draw(i: int) -> np.ndarray:
        picture = base.copy()
        x = (i * 8) % (width - side)
        picture[height // 40:height // 40 + side, x:x + side] = 255
        return picture
    return draw


class VideoPeer:
    def __init__(self, alloc: PortAllocator | None, fmt: MediaFormat | None = None,
                 picture: Callable[[int], np.ndarray] | None = None, *, fps: float = 15,
                 size: tuple[int, int] = (320, 240), host: str = LOOP) -> None:
        if alloc is None:                      # a peer of its own (the H.323 test endpoint)
            lo = free_port_block(2)
            alloc = PortAllocator(lo, lo + 1)
        self.host = host
        self.session = open_rtp_session(alloc, host, clock_rate=90000, timeout=0)
        self.session.history = 512             # it retransmits what the room NACKs, as endpoints do
        self.session.on_packet = self._packet
        arrive = self.session.datagramReceived

        def lossy(data: bytes, addr: Any) -> None:     # loss on the way to us: before RTP sees the packet
            if len(data) >= 2 and not 192 <= data[1] <= 223 and self.drop_in is not None:
                self._in += 1
                if self.drop_in(self._in):
                    return
            arrive(data, addr)
        self.session.datagramReceived = lossy
        self.session.on_rtcp_feedback = self._feedback
        self.picture = picture
        self.fps = fps
        self.size = size
        self.format: MediaFormat | None = None
        self.rx_format: MediaFormat | None = None
        self.encoder: VideoEncoder | None = None
        self.frames_sent = 0
        self.keyframes_sent = 0
        self.keyframe_requests: list[str] = []   # PLI / FIR received, or "h245" / "info" by the owner
        self.decoded = 0
        self.keyframes_received = 0
        self.last: np.ndarray | None = None      # the last picture we decoded (RGB)
        self.frames: list[tuple[float, bool]] = []       # (arrival, keyframe) of every frame decoded
        self.on_picture: Callable[[float, np.ndarray], None] | None = None
        #: how we ask for a keyframe after a loss (default RTCP PLI; the H.323 endpoint uses H.245)
        self.ask_keyframe: Callable[[], Any] = self.session.send_pli
        self.drop: Callable[[int], bool] | None = None     # loss of what we send: drop(n) → True drops it
        self.drop_in: Callable[[int], bool] | None = None  # loss of what we receive
        self.plis_sent = 0
        self._force_key = True
        self._loop: task.LoopingCall | None = None
        self._seq = 0
        self._in = 0
        self._last_ask = 0.0
        self._gaps = GapWatch()
        #: send NACKs for gaps in what we receive (as WebRTC endpoints and many SIP devices do)
        self.nack = True
        if fmt is not None:
            self.configure(fmt, fmt)

    @property
    def port(self) -> int:
        return self.session.local_port

    def configure(self, tx: MediaFormat | None, rx: MediaFormat | None) -> None:
        """What we send (``tx``) and what we receive (``rx``), as negotiated."""
        if tx is not None and tx != self.format:
            self.format = tx
            size = CIF if tx.codec.name in ("H263", "H263-1998", "H261") else self.size
            self.encoder = VideoEncoder(EncoderSettings(tx.codec.name, size[0], size[1], self.fps, 512)) \
                if self.picture else None
            self.packetizer = packetizer_for(packetization_of(tx), 1200)
            self._force_key = True
        if rx is not None and rx != self.rx_format:
            self.rx_format = rx
            self.depacketizer = depacketizer_for(rx)
            self.decoder = VideoDecoder(rx.codec.name)

    def start(self, remote_port: int, host: str | None = None) -> None:
        self.session.set_remote(host or self.host, remote_port)
        if self.encoder is not None and self._loop is None:
            self._loop = task.LoopingCall(self._send)
            self._loop.start(1 / self.fps)

    def force_keyframe(self, why: str = "asked") -> None:
        self.keyframe_requests.append(why)
        self._force_key = True

    def _send(self) -> None:
        assert self.encoder is not None and self.picture is not None and self.format is not None
        pts = int(self.frames_sent * 90000 / self.fps)
        for ef in self.encoder.encode(self.picture(self.frames_sent), pts, self._force_key):
            self._force_key = False
            if self.format.codec.name == "H263":
                packets = self.packetizer.packetize(ef.data, parse_mb_info(ef.mb_info))
            else:
                packets = self.packetizer.packetize(ef.data)
            for payload, marker in packets:
                self._seq += 1
                if self.drop is not None and self.drop(self._seq):    # lost on the way: kept for a NACK
                    seq = self.session._seq
                    self.session._sent[seq % self.session.history] = struct.pack(
                        "!BBHII", 0x80, (0x80 if marker else 0) | self.format.payload_type, seq,
                        (self.session._ts + ef.pts) & 0xFFFFFFFF, self.session.ssrc) + payload
                    self.session._seq = (seq + 1) & 0xFFFF
                    continue
                self.session.send_at(payload, self.format.payload_type, ef.pts, marker)
            self.keyframes_sent += ef.keyframe
        self.frames_sent += 1

    def _feedback(self, what: str, detail) -> None:
        if what in ("pli", "fir"):
            self.force_keyframe(what)
        elif what == "nack":
            self.session.retransmit(detail)

    def _packet(self, pt, seq, ts, marker, payload, ssrc, arrival) -> None:
        if self.rx_format is None or pt != self.rx_format.payload_type:
            return
        if self.nack:                          # a gap: ask for it again at once (RFC 4585 generic NACK)
            lost = self._gaps.missing(seq)
            if lost:
                self.session.send_nack(lost)
        for frame in self.depacketizer.push(seq, ts, marker, payload):
            self.keyframes_received += frame.keyframe
            try:
                pictures = self.decoder.decode(frame.data)
            except DecodeError:
                continue
            for p in pictures:
                self.decoded += 1
                self.frames.append((arrival, frame.keyframe))
                self.last = p.to_ndarray(format="rgb24")
                if self.on_picture is not None:
                    self.on_picture(arrival, self.last)
        if self.depacketizer.keyframe_needed and arrival - self._last_ask > 0.3:
            self._last_ask = arrival          # a lost packet: ask for a keyframe, as endpoints do
            self.plis_sent += 1
            self.ask_keyframe()

    def cell_colour(self, rect: tuple[float, float, float, float]) -> np.ndarray:
        """Mean RGB of the middle half of a cell given in fractions (x, y, w, h) of the picture."""
        assert self.last is not None, "nothing decoded"
        h, w, _ = self.last.shape
        x, y, cw, ch = rect
        x0, y0 = int((x + cw / 4) * w), int((y + ch / 4) * h)
        x1, y1 = int((x + 3 * cw / 4) * w), int((y + 3 * ch / 4) * h)
        return self.last[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)

    def stop(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self.session.close()
