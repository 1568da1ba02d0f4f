"""H.323 video against the target: room systems send a moving picture of their own colour and
decode what the room sends back, in H.263 (a VSX: no fast start, separate H.245) and H.264 (an
HDX: fast start, tunnelled). The room (``--video-room``) is ``cp-2x2``, filled in join order while
nobody speaks, so each must find the other's colour in the other's cell."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

RED, BLUE = (220, 30, 30), (30, 40, 220)
CELLS = [(0.0, 0.0, 0.5, 0.5), (0.5, 0.0, 0.5, 0.5)]      # cp-2x2: top left, top right


@pytest.mark.parametrize("vsx_fast_start", [False, True], ids=["VSX by OLC, HDX by fast start",
                                                             "VSX by fast start, HDX by OLC"])
def test_a_vsx_on_h263_and_an_hdx_on_h264_see_each_other(target, h323, h323_endpoint, h323_run, vsx_fast_start):
    vsx = h323_endpoint("lab-vsx-video", profile="VSX", fast_start=vsx_fast_start, tunnelling=vsx_fast_start,
                        video_colour=RED)
    hdx = h323_endpoint("lab-hdx-video", profile="HDX", fast_start=not vsx_fast_start, tunnelling=True,
                        video_colour=BLUE)

    async def scenario():
        await vsx.call(target.video_room, h323.host, h323.port)
        await vsx.wait_media()
        await asyncio.sleep(1.0)                    # the VSX joins first: the top-left cell
        await hdx.call(target.video_room, h323.host, h323.port)
        await hdx.wait_media()
        await asyncio.sleep(5.0)

    h323_run(scenario())
    channels = {ep.alias: sorted((d, m, c) for d, m, c, _ in ep.channels if m == "video") for ep in (vsx, hdx)}
    assert channels["lab-vsx-video"] == [("rx", "video", "H263"), ("tx", "video", "H263")], channels
    assert channels["lab-hdx-video"] == [("rx", "video", "H264"), ("tx", "video", "H264")], channels
    for ep, name in ((vsx, "VSX (H.263)"), (hdx, "HDX (H.264)")):
        v = ep.video
        assert v.decoded > 20, f"the {name} decoded {v.decoded} pictures of the room"
        for cell, want, who in ((CELLS[0], RED, "the VSX"), (CELLS[1], BLUE, "the HDX")):
            got = v.cell_colour(cell)
            assert np.abs(got - np.array(want)).max() < 50, \
                f"the {name} sees {got.round()} where {who} should be ({want})"
    h323_run(vsx.hangup())
    h323_run(hdx.hangup())
