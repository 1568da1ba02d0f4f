"""Names in the picture: a label under a participant's tile, and the tile of one who sends no video.

Text is drawn by Pillow with DejaVu Sans Bold (shipped in ``gateway/media/fonts``: it covers
Vietnamese, ư ơ ặ đ and the rest of Latin Extended Additional). Names are NFC-normalised first,
so a name typed with combining marks draws the same as the precomposed one. Renderings are
cached (a room redraws the same few names at the same few sizes).

* :func:`label` → the band drawn over the bottom of a cell: Y, U, V planes and an alpha plane
  (white text on a translucent dark band), sized for the cell's width;
* :func:`name_tile` → a yuv420p picture for a participant without video: their name centred on
  dark grey.
"""
from __future__ import annotations

import unicodedata
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT = Path(__file__).resolve().parent / "fonts" / "DejaVuSans-Bold.ttf"
TILE_SIZE = (640, 360)
TILE_GREY = 48               # the audio-only tile's background (RGB grey)
BAND_ALPHA = 0.55            # the label band's darkness over the picture


def clean(text: str, limit: int = 48) -> str:
    """NFC, control characters dropped, at most ``limit`` characters (a name from the network)."""
    text = unicodedata.normalize("NFC", str(text))
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C").strip()
    return text[:limit - 1] + "…" if len(text) > limit else text


@lru_cache(maxsize=32)
def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT), size)


def _fit_font(text: str, width: int, size: int) -> ImageFont.FreeTypeFont:
    while size > 8:
        f = font(size)
        if f.getlength(text) <= width:
            return f
        size -= 1
    return font(8)


def text_image(text: str, width: int, height: int, *, fill: int = 255, background: int = 0) -> Image.Image:
    """``text`` centred in a ``width`` × ``height`` greyscale image (also what the tests compare with)."""
    img = Image.new("L", (width, height), background)
    draw = ImageDraw.Draw(img)
    f = _fit_font(text, int(width * 0.92), max(8, int(height * 0.62)))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=f)
    draw.text(((width - (right - left)) / 2 - left, (height - (bottom - top)) / 2 - top), text, font=f, fill=fill)
    return img


@lru_cache(maxsize=256)
def label(text: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The band for a cell ``width`` wide: (Y, U, V, alpha at full size, alpha at chroma size);
    ``height`` is the band's height (even)."""
    text = clean(text)
    width, height = width // 2 * 2, max(2, height // 2 * 2)
    mask = np.asarray(text_image(text, width, height), np.float32) / 255.0
    y = np.full((height, width), 235.0, np.float32)
    band = np.full((height, width), BAND_ALPHA, np.float32)
    alpha = np.maximum(band, mask)
    luma = 16.0 * (1 - mask) + y * mask           # white text on black, under the band's alpha
    a2 = alpha.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
    return (luma.astype(np.float32), np.full(a2.shape, 128.0, np.float32), np.full(a2.shape, 128.0, np.float32),
            alpha, a2)


def blend(planes: tuple[np.ndarray, np.ndarray, np.ndarray], x: int, y: int, text: str, width: int,
          height: int) -> None:
    """Draw the label of ``text`` into yuv420p planes at (x, y) (even), ``width`` × ``height``."""
    ly, lu, lv, a, a2 = label(text, width, height)
    h, w = ly.shape
    Y, U, V = planes
    region = Y[y:y + h, x:x + w]
    region[:] = (region * (1 - a) + ly * a).astype(np.uint8)
    for plane, val in ((U, lu), (V, lv)):
        r = plane[y // 2:y // 2 + h // 2, x // 2:x // 2 + w // 2]
        r[:] = (r * (1 - a2) + val * a2).astype(np.uint8)


@lru_cache(maxsize=128)
def name_tile(name: str, width: int = TILE_SIZE[0], height: int = TILE_SIZE[1]) -> av.VideoFrame:
    """The picture for a participant who sends no video: the name, centred, on dark grey."""
    text = clean(name) or "?"
    img = np.asarray(text_image(text, width, height // 4, fill=235, background=TILE_GREY))
    rgb = np.full((height, width, 3), TILE_GREY, np.uint8)
    top = (height - img.shape[0]) // 2
    rgb[top:top + img.shape[0]] = img[:, :, None]
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
