"""Video layouts and the compositor that fills them.

A layout is a list of cells in fractions of the picture, the first the most
prominent: ``vas`` (voice-activated switching: one full-screen cell),
``cp-2x2``, ``cp-3x3``, ``cp-1+5`` (one large cell and five small ones along the
right and bottom edges), ``cp-1+7`` (one large, seven small). Cells are filled
by who spoke most recently (:func:`fill_order`).

:class:`Compositor` draws one picture: each source is scaled aspect-correct
into its cell (letterboxed or pillarboxed on black; FFmpeg's swscale through
PyAV, which releases the GIL), an empty cell stays black, and the active
speaker's cell gets a frame drawn around it. It works in YUV 4:2:0 throughout.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import av
import numpy as np


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int


def _grid(n: int) -> list[tuple[float, float, float, float]]:
    return [(c / n, r / n, 1 / n, 1 / n) for r in range(n) for c in range(n)]


def _one_plus(small_per_side: int) -> list[tuple[float, float, float, float]]:
    k = small_per_side + 1                           # the large cell spans k-1 of k columns and rows
    big = (k - 1) / k
    cells = [(0.0, 0.0, big, big)]
    cells += [(big, r / k, 1 / k, 1 / k) for r in range(k - 1)]        # down the right edge
    cells += [(c / k, big, 1 / k, 1 / k) for c in range(k)]           # along the bottom, corner included
    return cells


LAYOUTS: dict[str, list[tuple[float, float, float, float]]] = {
    "vas": [(0.0, 0.0, 1.0, 1.0)],
    "cp-2x2": _grid(2),
    "cp-3x3": _grid(3),
    "cp-1+5": _one_plus(2),
    "cp-1+7": _one_plus(3),
}


def cells(layout: str, width: int, height: int) -> list[Rect]:
    """The layout's cells in pixels (even coordinates and sizes: 4:2:0 chroma)."""
    try:
        spec = LAYOUTS[layout]
    except KeyError:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}") from None

    def even(v: float) -> int:
        return int(round(v / 2)) * 2

    out = []
    for fx, fy, fw, fh in spec:
        x, y = even(fx * width), even(fy * height)
        out.append(Rect(x, y, even((fx + fw) * width) - x, even((fy + fh) * height) - y))
    return out


def fit(src_w: int, src_h: int, cell: Rect) -> Rect:
    """The largest rectangle of the source's aspect ratio inside ``cell``, centred (even sizes)."""
    scale = min(cell.w / src_w, cell.h / src_h)
    w = max(2, int(src_w * scale) // 2 * 2)
    h = max(2, int(src_h * scale) // 2 * 2)
    return Rect(cell.x + (cell.w - w) // 2 // 2 * 2, cell.y + (cell.h - h) // 2 // 2 * 2, w, h)


def fill_order(members: Iterable[str], last_spoke: dict[str, float]) -> list[str]:
    """Members by how recently they spoke (never: after those who did, in join order)."""
    members = list(members)
    return sorted(members, key=lambda m: (-(last_spoke.get(m, float("-inf"))), members.index(m)))


#: the active speaker's frame, in BT.601 limited-range YUV (a warm yellow, RGB ≈ 255, 200, 0)
HIGHLIGHT_YUV = (182, 32, 167)


class Compositor:
    """Composes ``width`` × ``height`` pictures in ``layout``, in YUV 4:2:0 from end to end: decoders
    give yuv420p frames, swscale scales each into its cell (yuv → yuv, no RGB round trip), and the
    result is a yuv420p VideoFrame ready for the encoders."""

    def __init__(self, width: int, height: int, layout: str = "cp-2x2", highlight: bool = True) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"picture size {width}x{height} must be even (4:2:0)")
        self.width, self.height = width, height
        self.highlight = highlight
        self.set_layout(layout)

    def set_layout(self, layout: str) -> None:
        self.cells = cells(layout, self.width, self.height)
        self.layout = layout

    def compose(self, tiles: Sequence[av.VideoFrame | np.ndarray | None], active: int | None = None) -> av.VideoFrame:
        """``tiles[i]`` (a VideoFrame, or an RGB array) goes into cell i (None: black); ``active`` is
        the speaker's cell index."""
        w, h = self.width, self.height
        y = np.full((h, w), 16, np.uint8)
        u = np.full((h // 2, w // 2), 128, np.uint8)
        v = np.full((h // 2, w // 2), 128, np.uint8)
        for cell, tile in zip(self.cells, tiles):
            if tile is None:
                continue
            frame = tile if isinstance(tile, av.VideoFrame) else av.VideoFrame.from_ndarray(tile, format="rgb24")
            r = fit(frame.width, frame.height, cell)
            arr = frame.reformat(width=r.w, height=r.h, format="yuv420p").to_ndarray()
            q = r.h * r.w // 4
            y[r.y:r.y + r.h, r.x:r.x + r.w] = arr[:r.h]
            chroma = arr[r.h:].reshape(-1)
            u[r.y // 2:(r.y + r.h) // 2, r.x // 2:(r.x + r.w) // 2] = chroma[:q].reshape(r.h // 2, r.w // 2)
            v[r.y // 2:(r.y + r.h) // 2, r.x // 2:(r.x + r.w) // 2] = chroma[q:2 * q].reshape(r.h // 2, r.w // 2)
        if self.highlight and active is not None and 0 <= active < len(self.cells) and len(self.cells) > 1:
            c = self.cells[active]
            t = max(2, h // 120) // 2 * 2
            for plane, val, k in ((y, HIGHLIGHT_YUV[0], 1), (u, HIGHLIGHT_YUV[1], 2), (v, HIGHLIGHT_YUV[2], 2)):
                x0, y0, x1, y1, tt = c.x // k, c.y // k, (c.x + c.w) // k, (c.y + c.h) // k, max(1, t // k)
                plane[y0:y0 + tt, x0:x1] = val
                plane[y1 - tt:y1, x0:x1] = val
                plane[y0:y1, x0:x0 + tt] = val
                plane[y0:y1, x1 - tt:x1] = val
        return av.VideoFrame.from_ndarray(np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)])
                                          .reshape(h * 3 // 2, w), format="yuv420p")
