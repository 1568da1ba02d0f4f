"""The E-model figures behind each leg's estimated MOS."""
from __future__ import annotations

import pytest

from gateway.media.quality import mos_from_r, r_factor


@pytest.mark.parametrize("r,mos", [(93.2, 4.41), (80, 4.02), (70, 3.60), (60, 3.10), (50, 2.58)])
def test_r_to_mos_follows_g107(r, mos):
    assert mos_from_r(r) == pytest.approx(mos, abs=0.01)


def test_a_clean_short_line_is_toll_quality_and_loss_and_delay_cost_what_g107_says():
    assert r_factor(0, 0) == pytest.approx(93.2)
    # delay: 0.024 ms^-1, plus 0.11 per ms beyond 177.3 ms
    assert r_factor(150, 0) == pytest.approx(93.2 - 3.6)
    assert r_factor(300, 0) == pytest.approx(93.2 - 7.2 - 0.11 * (300 - 177.3))
    # random loss with concealment (Bpl 25.1): 5 % costs ~16 points, 20 % ~42
    assert r_factor(0, 5) == pytest.approx(93.2 - 95 * 5 / 30.1)
    assert mos_from_r(r_factor(40, 1)) > 4.2 > mos_from_r(r_factor(40, 5)) > 3.5 > mos_from_r(r_factor(40, 20))
    assert mos_from_r(-5) == 1.0 and mos_from_r(120) == 4.5


def test_the_status_page_names_the_worst_line_of_a_room():
    from gateway.api.http import _worst_line

    def p(name, mos, loss, packets=100):
        return {"id": name, "name": name, "quality": {"rx": {"packets": packets, "mos": mos,
                                                              "loss_pct": loss, "jitter_ms": 12.0}}}

    roster = [p("xa-1", 4.3, 0.0), p("xa-<7>", 3.1, 8.5), p("silent", 1.0, 0.0, packets=0),
              {"id": "x", "name": "x", "quality": None}]
    assert _worst_line(roster) == "xa-&lt;7&gt;: 3.1 (8.5 % lost, jitter 12 ms)"
    assert _worst_line([]) == "-"
