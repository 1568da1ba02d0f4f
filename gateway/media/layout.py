"""Video layouts and the compositor that fills them.

A layout is a list of cells in fractions of the picture, the first the most
prominent: ``vas`` (voice-activated switching: one full-screen cell),
``cp-2x2``, ``cp-3x3``, ``cp-1+5`` (one large cell and five small ones along the
right and bottom edges), ``cp-1+7`` (one large, seven small). Cells are filled
by who spoke most recently (:func:`fill_order`).

:class:`Compositor` draws one picture: each source is scaled aspect-correct
into its cell (letterboxed or pillarboxed on black; FFmpeg's swscale through
PyAV, which releases the GIL), an empty cell stays black, and the active
speaker's cell gets a frame drawn around it; a cell may carry a name along its bottom
(:mod:`gateway.media.labels`). It works in YUV 4:2:0 throughout.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from gateway.media.labels import blend


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
    result is a yuv420p VideoFrame ready for the encoders: the same frame every time, drawn over by
    the next call (encode it, or copy it, before composing again).

    The picture is kept between calls: a cell whose tile is the same frame as last time (a source
    slower than the room, or a still one) and whose highlight did not change is not touched. Each
    cell has its own swscale context (PyAV caches one per reformatter: a frame's own would be set
    up again for every new frame), single-threaded like the codecs."""

    def __init__(self, width: int, height: int, layout: str = "cp-2x2", highlight: bool = True) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"picture size {width}x{height} must be even (4:2:0)")
        self.width, self.height = width, height
        self.highlight = highlight
        # the picture is drawn straight into one VideoFrame's planes (numpy views of them): no copy
        # per frame; every encoder copies its input before encode() returns
        self._frame = av.VideoFrame(width, height, "yuv420p")
        self._y, self._u, self._v = (
            np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width] for p in self._frame.planes)
        self.set_layout(layout)
        self.scaled = 0                  # tiles scaled (the others were the same frame as before)

    def set_layout(self, layout: str) -> None:
        self.cells = cells(layout, self.width, self.height)
        self.layout = layout
        self._y[:] = 16
        self._u[:] = 128
        self._v[:] = 128
        self._state: list[tuple[object, bool, str | None] | None] = [None] * len(self.cells)  # tile, lit, label
        self._scalers = [VideoReformatter() for _ in self.cells]

    def _clear(self, c: Rect) -> None:
        self._y[c.y:c.y + c.h, c.x:c.x + c.w] = 16
        self._u[c.y // 2:(c.y + c.h) // 2, c.x // 2:(c.x + c.w) // 2] = 128
        self._v[c.y // 2:(c.y + c.h) // 2, c.x // 2:(c.x + c.w) // 2] = 128

    def _paste(self, i: int, cell: Rect, frame: av.VideoFrame) -> None:
        r = fit(frame.width, frame.height, cell)
        arr = self._scalers[i].reformat(frame, width=r.w, height=r.h, format="yuv420p", threads=1).to_ndarray()
        q = r.h * r.w // 4
        self._y[r.y:r.y + r.h, r.x:r.x + r.w] = arr[:r.h]
        chroma = arr[r.h:].reshape(-1)
        self._u[r.y // 2:(r.y + r.h) // 2, r.x // 2:(r.x + r.w) // 2] = chroma[:q].reshape(r.h // 2, r.w // 2)
        self._v[r.y // 2:(r.y + r.h) // 2, r.x // 2:(r.x + r.w) // 2] = chroma[q:2 * q].reshape(r.h // 2, r.w // 2)
        self.scaled += 1

    def _border(self, c: Rect) -> None:
        t = max(2, self.height // 120) // 2 * 2
        for plane, val, k in ((self._y, HIGHLIGHT_YUV[0], 1), (self._u, HIGHLIGHT_YUV[1], 2),
                              (self._v, HIGHLIGHT_YUV[2], 2)):
            x0, y0, x1, y1, tt = c.x // k, c.y // k, (c.x + c.w) // k, (c.y + c.h) // k, max(1, t // k)
            plane[y0:y0 + tt, x0:x1] = val
            plane[y1 - tt:y1, x0:x1] = val
            plane[y0:y1, x0:x0 + tt] = val
            plane[y0:y1, x1 - tt:x1] = val

    def compose(self, tiles: Sequence[av.VideoFrame | np.ndarray | None], active: int | None = None,
                labels: Sequence[str | None] | None = None) -> av.VideoFrame:
        """``tiles[i]`` (a VideoFrame, or an RGB array) goes into cell i (None: black); ``active`` is
        the speaker's cell index (framed when the layout has more than one cell); ``labels[i]``, a
        name written along the bottom of cell i."""
        n = len(self.cells)
        tiles = list(tiles) + [None] * (n - len(tiles))
        names = list(labels or ()) + [None] * (n - len(labels or ()))
        mark = self.highlight and n > 1
        for i, (cell, tile, name) in enumerate(zip(self.cells, tiles, names)):
            lit = mark and i == active
            old = self._state[i]
            if old is not None and old[0] is tile and old[1:] == (lit, name) and not isinstance(tile, np.ndarray):
                continue
            self._state[i] = (tile, lit, name)   # holds the tile: an id() alone could be a new frame's
            self._clear(cell)
            if tile is not None:
                frame = tile if isinstance(tile, av.VideoFrame) else av.VideoFrame.from_ndarray(tile, format="rgb24")
                self._paste(i, cell, frame)
            if name:
                band = max(16, cell.h // 9) // 2 * 2
                blend((self._y, self._u, self._v), cell.x, cell.y + cell.h - band, name, cell.w, band)
            if lit:
                self._border(cell)
        return self._frame
