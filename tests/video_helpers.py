"""Real encoders for the payload-format tests: one PyAV set-up, each test gives its codec's options."""
from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av
import numpy as np


def encode_frames(av_name: str, width: int, height: int, n: int, picture: Callable[[int], np.ndarray], *,
                  options: dict[str, str], key_at: tuple[int, ...] = (), fps: int = 30,
                  codec_time_base: bool = False, bit_rate: int | None = None, gop: int | None = None,
                  side_data: str | None = None) -> list[tuple[int, bytes, Any]]:
    """Encode ``n`` pictures (``picture(i)``: RGB) → ``(pts at 90 kHz, bytes, side data or None)``.

    ``codec_time_base``: the H.263 encoders want 1/fps, the others take 1/90000; a keyframe is
    forced on every frame index in ``key_at``."""
    enc = av.CodecContext.create(av_name, "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = Fraction(1, fps) if codec_time_base else Fraction(1, 90000)
    enc.framerate = fps
    enc.thread_count = 1
    if bit_rate is not None:
        enc.bit_rate = bit_rate
    if gop is not None:
        enc.gop_size = gop
    enc.options = options
    step = 1 if codec_time_base else 90000 // fps
    out = []
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(picture(i), format="rgb24").reformat(format="yuv420p")
        frame.pts = i * step
        frame.pict_type = av.video.frame.PictureType.I if i in key_at else av.video.frame.PictureType.NONE
        for p in enc.encode(frame):
            extra = bytes(p.get_sidedata(side_data)) if side_data and p.has_sidedata(side_data) else None
            out.append((p.pts * (90000 // fps if codec_time_base else 1), bytes(p), extra))
    return out
