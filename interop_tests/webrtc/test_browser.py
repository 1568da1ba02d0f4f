"""Headless Chromium joins a room from the join page over HTTPS, with a SIP site (baresip) and an
H.323 room system in the same cp-2x2 room: pictures and sound go every way."""
from __future__ import annotations

import asyncio
import time
import wave

import numpy as np

from interop_tests.peers.baresip import Baresip
from interop_tests.peers.baresip_video import clip
from interop_tests.peers.browser import Browser
from interop_tests.peers.rtp_participant import band_level_db, wait_for_tone

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 40), (30, 40, 220)


def _near(got, want, tol=55) -> bool:
    return got is not None and max(abs(a - b) for a, b in zip(got, want)) < tol


async def _join(b: Browser, url: str, room: str, name: str, pin: str = "") -> None:
    page = b.page
    await page.goto(url)
    await page.wait_for_function("() => document.getElementById('camera').options.length > 0", timeout=15000)
    assert await page.input_value("#room") == room, "the room number did not come from the link"
    await page.fill("#name", name)
    if pin:
        await page.fill("#pin", pin)
    await page.click("#join")


def test_chromium_joins_from_the_page_and_meets_a_sip_and_an_h323_site(
        target, https, h323, h323_endpoint, h323_run, tmp_path, evidence_dir):
    vsx = h323_endpoint("lab-vsx-browser", profile="VSX", fast_start=False, tunnelling=True, tone_hz=1000,
                        video_colour=RED)
    sip = Baresip("sip-browser", workdir=tmp_path / "baresip", audio_codecs=("opus/48000/2",), video_codecs=("H264",),
                  audio_source=("ausine", 440), video_source=("avformat", str(clip(tmp_path / "blue.avi", BLUE))))
    browser = Browser(tmp_path / "chromium", colour=GREEN, tone_hz=600)
    try:
        h323_run(vsx.call(target.video_room, h323.host, h323.port))
        h323_run(vsx.wait_media())
        sip.dial(target.uri(target.video_room))
        sip.wait_established(timeout=15)
        h323_run(browser.start())
        h323_run(_join(browser, f"{https}/join/{target.video_room}", target.video_room, "Xã Tân Lập"))

        async def flowing():
            deadline = time.monotonic() + 20
            first = None
            while time.monotonic() < deadline:
                st = await browser.stats()
                if st and st["state"] == "connected" and "video" in st["inbound"] and "audio" in st["inbound"]:
                    if first is None:
                        first = st
                    elif (st["inbound"]["video"]["frames"] > first["inbound"]["video"]["frames"] + 10
                          and st["inbound"]["audio"]["packets"] > first["inbound"]["audio"]["packets"] + 20
                          and st["outbound"].get("video", {}).get("packets", 0)
                          > first["outbound"].get("video", {}).get("packets", 0)):
                        return first, st
                await asyncio.sleep(0.5)
            return first, await browser.stats()

        first, st = h323_run(flowing(), timeout=30)
        assert h323_run(browser.page.is_visible("#remote")) and not h323_run(browser.page.is_visible("#form")), \
            "the page still shows the form, not the room"
        assert first is not None and st is not None, f"the page never connected: {st} {browser.console[-5:]}"
        assert st["inbound"]["video"]["frames"] > first["inbound"]["video"]["frames"] + 10, st
        assert st["inbound"]["audio"]["packets"] > first["inbound"]["audio"]["packets"] + 20, st
        assert st["inbound"]["video"]["keyframes"] >= 1, st

        # what the browser sees: the three other sites' colours in the cells (the order follows who spoke)
        async def seen():
            deadline = time.monotonic() + 12
            cells = None
            while time.monotonic() < deadline:
                cells = await browser.colours()
                if cells and all(any(_near(c, want) for c in cells) for want in (RED, BLUE, GREEN)):
                    return cells
                await asyncio.sleep(0.5)
            return cells

        cells = h323_run(seen(), timeout=20)
        for want, who in ((RED, "the H.323 room system"), (BLUE, "the SIP site"), (GREEN, "itself")):
            assert cells and any(_near(c, want) for c in cells), f"the browser does not see {who}: cells {cells}"

        # what the browser hears: the room system's 1000 Hz and baresip's 440 Hz, not its own 600 Hz
        tones = h323_run(browser.tones([1000, 440, 600]))
        assert tones is not None, "the page plays no sound"
        floor, (l1000, l440, l600) = tones["floor"], tones["levels"]
        assert l1000 > floor + 20 and l440 > floor + 20, f"the browser hears 1000 Hz {l1000:.0f} / 440 Hz {l440:.0f} dB (floor {floor:.0f})"
        assert l600 < max(l1000, l440) - 20, f"the browser hears itself (600 Hz {l600:.0f} dB)"

        # what the room system hears and sees from the browser
        level = h323_run(wait_for_tone(vsx.heard, vsx.rx_rate, 600, -35, within=8, window=1.0))
        assert level > -35, f"the room system does not hear the browser's 600 Hz ({level:.1f} dB)"

        def vsx_sees_green():
            from interop_tests.peers.baresip_video import cell_colour

            pic = vsx.video.last
            return pic is not None and any(_near(cell_colour(pic, c).tolist(), GREEN) for c in
                                           [(0, 0, .5, .5), (.5, 0, .5, .5), (0, .5, .5, .5), (.5, .5, .5, .5)])

        async def wait_green():
            for _ in range(40):
                if vsx_sees_green():
                    return True
                await asyncio.sleep(0.25)
            return False

        assert h323_run(wait_green(), timeout=15), "the room system does not see the browser's green"
        if target.is_local_cau:
            room = next(r for r in target.status()["rooms"] if r["id"] == "video")
            me = next(p for p in room["roster"] if p["protocol"] == "webrtc")
            assert me["name"] == "Xã Tân Lập"
            assert me["video_media"]["in"]["frames_decoded"] > 10, me["video_media"]   # into the compositor
            assert me["quality"]["rx"]["packets"] > 50, me["quality"]
        h323_run(browser.page.screenshot(path=str(evidence_dir / "join-page-in-a-room-with-sip-and-h323.png")))
        # the SIP site hears the browser (its recording, after it hangs up)
        sip.hangup()
        sip.wait_closed(timeout=10)
        wav = sip.received_audio()
        assert wav is not None, "baresip recorded nothing"
        with wave.open(str(wav)) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
            if w.getnchannels() == 2:
                pcm = pcm[::2]
        assert band_level_db(pcm[-rate * 2:], rate, 600) > -35, "the SIP site does not hear the browser's 600 Hz"
        # leaving from the page ends the session
        h323_run(browser.page.click("#leave"))
        if target.is_local_cau:
            assert target.wait_participants("video", 1, timeout=8) == 1, "the browser did not leave"
    finally:
        h323_run(browser.stop(), timeout=20)
        sip.stop()


def test_a_wrong_pin_shows_a_clear_message_in_the_page(target, https, h323_run, tmp_path):
    browser = Browser(tmp_path / "chromium", colour=GREEN, tone_hz=600)
    try:
        h323_run(browser.start())
        h323_run(_join(browser, f"{https}/join/{target.pin_room}", target.pin_room, "Sai PIN", pin="0000"))
        h323_run(browser.page.wait_for_selector("#error:not([hidden])", timeout=10000))
        text = h323_run(browser.page.inner_text("#error"))
        assert "Sai mã PIN" in text, text
        h323_run(browser.page.click("#lang"))
        assert h323_run(browser.page.inner_text("#join")) == "Join"
    finally:
        h323_run(browser.stop(), timeout=20)
