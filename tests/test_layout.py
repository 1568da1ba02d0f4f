"""Layouts as a viewer sees them: the right source in the right cell, aspect kept, the speaker marked."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.media.layout import LAYOUTS, Compositor, Rect, cells, fill_order, fit

COLOURS = [(230, 40, 40), (40, 200, 40), (40, 40, 230), (230, 230, 40), (200, 40, 200), (40, 200, 200),
           (120, 120, 120), (250, 150, 50), (90, 30, 160)]


def solid(w: int, h: int, rgb) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rgb
    return img


@pytest.mark.parametrize("layout, n", [("vas", 1), ("cp-2x2", 4), ("cp-3x3", 9), ("cp-1+5", 6), ("cp-1+7", 8)])
def test_cells_cover_the_picture_without_overlap(layout, n):
    cs = cells(layout, 1280, 720)
    assert len(cs) == n == len(LAYOUTS[layout])
    mask = np.zeros((720, 1280), np.int32)
    for c in cs:
        assert c.x % 2 == c.y % 2 == c.w % 2 == c.h % 2 == 0 and c.w > 0 and c.h > 0
        mask[c.y:c.y + c.h, c.x:c.x + c.w] += 1
    assert mask.max() == 1 and (mask == 1).all()                  # every pixel in exactly one cell
    areas = [c.w * c.h for c in cs]
    if "+" in layout:
        assert areas[0] > 3 * max(areas[1:])                      # one large cell, the rest small
    else:
        assert max(areas) / min(areas) < 1.03                     # a grid: equal cells (even-pixel rounding)


@pytest.mark.parametrize("layout", ["cp-2x2", "cp-3x3", "cp-1+5", "cp-1+7"])
def test_each_source_lands_in_its_cell_with_its_colour(layout):
    comp = Compositor(1280, 720, layout, highlight=False)
    tiles = [solid(352, 288, COLOURS[i]) for i in range(len(comp.cells))]
    pic = comp.compose(tiles).to_ndarray(format="rgb24")
    for cell, rgb in zip(comp.cells, COLOURS):
        inner = fit(352, 288, cell)
        centre = pic[inner.y + inner.h // 4:inner.y + 3 * inner.h // 4, inner.x + inner.w // 4:inner.x + 3 * inner.w // 4]
        assert np.abs(centre.reshape(-1, 3).mean(axis=0) - rgb).max() < 8


def test_aspect_is_kept_with_black_bars_and_empty_cells_stay_black():
    comp = Compositor(1280, 720, "cp-2x2", highlight=False)
    pic = comp.compose([solid(352, 288, COLOURS[0]), None, solid(1280, 720, COLOURS[2]), None]).to_ndarray(format="rgb24")
    cell = comp.cells[0]                                          # 640x360, a CIF (11:9) source
    r = fit(352, 288, cell)
    assert r.h == 360 and abs(r.w / r.h - 352 / 288) < 0.02 and r.w < 640
    assert max(pic[cell.y + 180, cell.x + 5]) < 8                 # pillarbox bar: black
    assert max(pic[comp.cells[1].y + 100, comp.cells[1].x + 100]) < 8
    c2 = comp.cells[2]
    assert np.abs(pic[c2.y + 5:c2.y + c2.h - 5, c2.x + 5:c2.x + c2.w - 5].reshape(-1, 3).mean(axis=0)
                  - COLOURS[2]).max() < 8                         # 16:9 fills its 16:9 cell


def test_the_active_speakers_cell_is_framed():
    comp = Compositor(1280, 720, "cp-2x2")
    pic = comp.compose([solid(640, 360, COLOURS[6])] * 4, active=3).to_ndarray(format="rgb24")
    c = comp.cells[3]
    assert np.abs(pic[c.y + 1, c.x + c.w // 2].astype(int) - (255, 200, 0)).max() < 12
    assert np.abs(pic[comp.cells[0].y + 1, comp.cells[0].x + 320].astype(int) - COLOURS[6]).max() < 8


def test_fill_order_is_most_recent_speaker_first_then_join_order():
    assert fill_order(["a", "b", "c", "d"], {"c": 10.0, "a": 5.0}) == ["c", "a", "b", "d"]
    with pytest.raises(ValueError, match="unknown layout"):
        cells("cp-4x4", 1280, 720)
    assert fit(1280, 720, Rect(0, 0, 352, 288)).w == 352


def test_a_vietnamese_name_label_is_drawn_as_the_font_renders_it():
    """The label along the bottom of a cell is the name as Pillow draws it with the shipped font:
    compare the cell's band with a rendering made here (white text where the mask is set)."""
    from PIL import Image, ImageDraw, ImageFont

    from gateway.media.labels import FONT, text_image

    name = "Xã Đặng Xá, Hưng Yên"
    comp = Compositor(1280, 720, "cp-2x2", highlight=False)
    grey = np.full((360, 640, 3), 90, np.uint8)
    pic = comp.compose([grey, grey, None, None], labels=[name, None, None, None]).to_ndarray()
    cell = cells("cp-2x2", 1280, 720)[0]
    band = max(16, cell.h // 9) // 2 * 2
    y = pic[:720][cell.y + cell.h - band:cell.y + cell.h, cell.x:cell.x + cell.w].astype(int)
    mask = np.asarray(text_image(name, cell.w, band)) > 128
    assert mask.sum() > 500, "the rendering has text"
    assert y[mask].mean() > 200 and y[~mask].mean() < 70, (y[mask].mean(), y[~mask].mean())
    # the diacritics are there: the rendering of the name differs from the name without them
    bare = np.asarray(text_image("Xa Dang Xa, Hung Yen", cell.w, band)) > 128
    assert (mask != bare).sum() > 100
    # and what we drew is the font's own glyphs: Pillow's direct rendering of "ặ" has a dot below
    f = ImageFont.truetype(str(FONT), 40)
    img = Image.new("L", (60, 60))
    ImageDraw.Draw(img).text((10, 0), "ặ", font=f, fill=255)
    assert np.asarray(img)[45:, :].max() > 128, "the dot below ặ is drawn"
    # the unlabelled cell has no band
    other = pic[:720][cell.y + cell.h - band:cell.y + cell.h, 640 + 40:1280 - 40].astype(int)
    assert abs(other.mean() - y[~mask].mean()) > 10


def test_a_name_given_with_combining_marks_draws_as_the_precomposed_one():
    from gateway.media.labels import clean

    assert clean("Hu\u031bng Ye\u0302n") == "Hưng Yên"
    assert clean("a\x00b\x1b[31mc") == "ab[31mc"       # control characters from the network are dropped
    assert len(clean("x" * 500)) == 48
