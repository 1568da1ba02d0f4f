"""Video encoders and decoders through PyAV, set up from what was negotiated.

:func:`encoder_settings` turns a send :class:`~gateway.media.codecs.MediaFormat`
(the far end's receive limits) and a bitrate tier into the picture size, frame
rate and bitrate an encoder may use: H.264 by level and max-fs / max-mbps /
max-br, H.263 and H.261 by the sizes and MPIs the receiver takes, VP8 by max-fs /
max-fr; the bitrate never above the stream's cap (b=AS/TIAS, H.245 maxBitRate).

:class:`VideoEncoder` and :class:`VideoDecoder` wrap one PyAV codec context
each, single-threaded (PyAV defaults to every CPU, which oversubscribes when
many run side by side); PyAV releases the GIL around encode and decode, so
they run in worker threads (:data:`CODEC_POOL`) without holding up the event
loop. Encoders: libx264 Constrained Baseline, ``tune=zerolatency`` (no
B-frames), slices capped below the MTU (one bitstream serves mode-0 and mode-1
receivers); h263 with ``mb_info`` (RFC 2190 mode B splits); h263p with ``ps``;
h261; libvpx VP8 realtime. ``encode(..., keyframe=True)`` forces an IDR / key
frame on that very frame.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from gateway.media.codecs import MediaFormat
from gateway.media.codecs.h261 import H261Params
from gateway.media.codecs.h263 import SIZES as H263_SIZES
from gateway.media.codecs.h263 import H263Params
from gateway.media.codecs.h264 import H264Params
from gateway.media.codecs.vp8 import VP8Params

#: worker threads for codec work (2 cores: one for the loop's Python, codecs beside it)
CODEC_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cau-codec")

#: picture sizes we encode H.264 / VP8 at, largest first (16:9 and 4:3 CIF family)
_SIZES = ((1920, 1080), (1280, 720), (1024, 576), (704, 576), (640, 360), (352, 288), (320, 180), (176, 144))
TIERS_KBPS = (256, 512, 1024, 2048)
#: without a room limit we send at most 720p: the largest picture the province's screens show well and
#: what the CPU budget is planned for (1080p VP8 costs 28 ms a frame here, bench/video_codecs.py)
DEFAULT_MAX_SIZE = (1280, 720)
#: the largest picture for a receiver at 512 kbit/s or less (the lower tiers, b=AS caps)
_LOW_BITRATE_SIZE = (640, 360)
CLOCK = 90000


class DecodeError(Exception):
    """A frame did not decode: drop it and ask the sender for a keyframe."""


@dataclass(frozen=True)
class EncoderSettings:
    codec: str                    # catalogue name
    width: int
    height: int
    fps: float
    kbps: int
    mtu: int = 1200

    @property
    def key(self) -> tuple[Any, ...]:
        """Legs with the same key can share one encoder and its bitstream."""
        return (self.codec, self.width, self.height, self.fps, self.kbps)


def _mb(size: tuple[int, int]) -> int:
    return math.ceil(size[0] / 16) * math.ceil(size[1] / 16)


def encoder_settings(fmt: MediaFormat, tier_kbps: int, *, fps: float = 30.0, mtu: int = 1200,
                     max_size: tuple[int, int] | None = None) -> EncoderSettings:
    """What we may send to a receiver with ``fmt`` (its limits) at bitrate tier ``tier_kbps``,
    no larger than ``max_size`` (the room's max_resolution; default 720p)."""
    p = fmt.params
    kbps = tier_kbps
    if fmt.bitrate_cap:
        kbps = min(kbps, max(32, fmt.bitrate_cap // 1000))
    cap = max_size or DEFAULT_MAX_SIZE
    if not isinstance(p, (H263Params, H261Params)):   # (their sizes are QCIF / CIF anyway)
        sent = min(kbps, p.max_br) if isinstance(p, H264Params) and p.max_br else kbps
        if sent <= 512:        # 360p at 512 kbit/s and below: sharper than a starved 720p, and far cheaper
            cap = (min(cap[0], _LOW_BITRATE_SIZE[0]), min(cap[1], _LOW_BITRATE_SIZE[1]))
    fits = [s for s in _SIZES if s[0] <= cap[0] and s[1] <= cap[1]]
    if isinstance(p, H264Params):
        max_fs, max_mbps = p.limits()
        if p.max_br:
            kbps = min(kbps, p.max_br)
        size = next((s for s in fits if _mb(s) <= max_fs and _mb(s) * min(fps, 15) <= max_mbps), (176, 144))
        fps = min(fps, max_mbps / _mb(size))
    elif isinstance(p, (H263Params, H261Params)):
        table = H263_SIZES if isinstance(p, H263Params) else {"QCIF": (176, 144), "CIF": (352, 288)}
        allowed = [(table[s], m) for s, m in p.mpi if table[s][0] <= cap[0] and table[s][1] <= cap[1]]
        size, mpi = max(allowed or [(table["QCIF"], 2)], key=lambda e: e[0][0] * e[0][1])
        fps = min(fps, 30000 / 1001 / mpi)
        if isinstance(p, H263Params) and p.max_br:
            kbps = min(kbps, max(32, p.max_br // 10))
    elif isinstance(p, VP8Params):
        size = next((s for s in fits if p.max_fs is None or _mb(s) <= p.max_fs), (176, 144))
        if p.max_fr:
            fps = min(fps, p.max_fr)
    else:
        size = fits[0] if fits else (352, 288)
    return EncoderSettings(fmt.codec.name, size[0], size[1], round(fps, 2), kbps, mtu)


@dataclass
class EncodedFrame:
    data: bytes
    keyframe: bool
    pts: int                      # 90 kHz
    mb_info: bytes = b""          # h263: FFmpeg's h263_mb_info side data (RFC 2190 mode B)


def _av_name(codec: str) -> str:
    return {"H264": "libx264", "H263": "h263", "H263-1998": "h263p", "H261": "h261", "VP8": "libvpx"}[codec]


class VideoEncoder:
    """One encoder for one :class:`EncoderSettings` (single-threaded codec context)."""

    def __init__(self, settings: EncoderSettings) -> None:
        self.settings = s = settings
        ctx = av.CodecContext.create(_av_name(s.codec), "w")
        ctx.width, ctx.height, ctx.pix_fmt = s.width, s.height, "yuv420p"
        ctx.time_base = Fraction(1, CLOCK)
        ctx.framerate = Fraction(round(s.fps * 1000), 1000)
        ctx.bit_rate = s.kbps * 1000
        ctx.thread_count = 1
        ctx.gop_size = 3000                      # keyframes when asked for, and every ~100 s
        payload = s.mtu - 100                    # below the MTU, after RTP and payload headers
        if s.codec == "H264":
            ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline",
                           "slice-max-size": str(payload), "forced-idr": "1", "repeat-headers": "1"}
        elif s.codec == "H263":
            ctx.options = {"mb_info": str(payload)}
        elif s.codec == "H263-1998":
            ctx.options = {"ps": str(payload)}
        elif s.codec == "H261":
            ctx.options = {}
        elif s.codec == "VP8":
            # the fastest realtime speed, and blocks that did not change (most of a composed picture)
            # skipped: 2.8 ms a 720p frame instead of 5.8 (bench/video_room.py)
            ctx.options = {"deadline": "realtime", "cpu-used": "16", "static-thresh": "100", "lag-in-frames": "0",
                           "error-resilient": "1"}
        self.ctx = ctx
        self.frames = 0
        self.keyframes = 0

    def encode(self, image: np.ndarray | av.VideoFrame, pts: int, keyframe: bool = False) -> list[EncodedFrame]:
        """Encode one picture (RGB array or VideoFrame at the encoder's size) at ``pts`` (90 kHz)."""
        s = self.settings
        frame = image if isinstance(image, av.VideoFrame) else av.VideoFrame.from_ndarray(image, format="rgb24")
        if (frame.width, frame.height) != (s.width, s.height) or frame.format.name != "yuv420p":
            frame = frame.reformat(width=s.width, height=s.height, format="yuv420p")
        frame.pts = pts
        frame.time_base = Fraction(1, CLOCK)
        frame.pict_type = av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        out = []
        for pkt in self.ctx.encode(frame):
            info = bytes(pkt.get_sidedata("h263_mb_info")) if pkt.has_sidedata("h263_mb_info") else b""
            out.append(EncodedFrame(bytes(pkt), bool(pkt.is_keyframe), int(pkt.pts or pts), info))
            self.frames += 1
            self.keyframes += bool(pkt.is_keyframe)
        return out


class VideoDecoder:
    """One decoder (single-threaded); :class:`DecodeError` for a frame that does not decode."""

    def __init__(self, codec: str) -> None:
        name = {"H264": "h264", "H263": "h263", "H263-1998": "h263", "H261": "h261", "VP8": "vp8"}[codec]
        self.ctx = av.CodecContext.create(name, "r")
        self.ctx.thread_count = 1
        self.frames = 0
        self.errors = 0

    def decode(self, data: bytes) -> list[av.VideoFrame]:
        try:
            out = self.ctx.decode(av.Packet(data))
        except (av.error.FFmpegError, ValueError) as exc:
            self.errors += 1
            raise DecodeError(str(exc)) from None
        self.frames += len(out)
        return out
