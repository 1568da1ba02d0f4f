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


#: four colours, one per quadrant, for the CIF pictures the H.263 and H.261 tests send
QUADRANTS = {(0, 0): (230, 40, 40), (0, 1): (40, 200, 40), (1, 0): (40, 40, 230), (1, 1): (230, 230, 40)}
CIF = (352, 288)


def quadrant_picture(i: int, size: tuple[int, int] = CIF) -> np.ndarray:
    """Frame ``i``: a colour per quadrant and a white block moving along the middle."""
    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    for (r, c), rgb in QUADRANTS.items():
        img[r * h // 2:(r + 1) * h // 2, c * w // 2:(c + 1) * w // 2] = rgb
    x = (i * 16) % (w - 16)
    img[h // 2 - 8:h // 2 + 8, x:x + 16] = 255
    return img


def quadrant_colours_right(img: np.ndarray, tol: float = 25) -> None:
    """Each quadrant of a decoded picture has its colour (the moving white block left out)."""
    h, w = img.shape[:2]
    for (r, c), rgb in QUADRANTS.items():
        tile = img[r * h // 2 + 16:(r + 1) * h // 2 - 16, c * w // 2 + 16:(c + 1) * w // 2 - 16]
        tile = tile[np.abs(tile.astype(int) - 255).sum(axis=2) > 30]
        assert np.abs(tile.mean(axis=0) - rgb).max() < tol, (r, c, tile.mean(axis=0), rgb)
