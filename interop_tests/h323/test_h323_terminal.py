"""Cases for an H.323 terminal (a room system on the lab's bench, ``--profile h323-terminal
--h323-target HOST:PORT``): the suite calls it, as an MCU would, in each H.245 mode, and checks that
it answers, opens its channels both ways, sends audio of the codec it agreed, and releases cleanly.
Against Cầu (``cau`` profile) the same calls go into its open room."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

MODES = [dict(fast_start=True, tunnelling=True), dict(fast_start=False, tunnelling=True),
         dict(fast_start=False, tunnelling=False)]


@pytest.mark.parametrize("mode", MODES, ids=["fast start+tunnelling", "tunnelling", "separate H.245"])
def test_the_terminal_answers_each_h245_mode_and_sends_audio(target, h323, h323_endpoint, h323_run, mode):
    ep = h323_endpoint("lab-mcu", profile="HDX", tone_hz=800, **mode)

    async def scenario():
        await ep.call(target.room, h323.host, h323.port)
        await ep.wait_media(timeout=15)
        await asyncio.sleep(2.0)
        return ep.channels, ep.heard(1.5)

    channels, heard = h323_run(scenario(), timeout=40)
    opened = {(d, m) for d, m, _c, state in channels if state in ("open", "established")}
    assert ("tx", "audio") in opened and ("rx", "audio") in opened, f"{mode}: channels {channels}"
    if heard.size:
        from interop_tests import evidence
        from interop_tests.peers.rtp_participant import spectrum_peak

        freq, level = spectrum_peak(heard, getattr(ep.audio, "rx_rate", 8000))
        evidence.measure("audio from the terminal: dominant frequency", round(freq), "Hz")
        evidence.measure("audio from the terminal: level", round(level, 1), "dBFS", "above digital silence")
    assert heard.size and np.abs(heard).max() > 0, f"{mode}: no audio came from the terminal in 1.5 s"
    h323_run(ep.hangup())
    assert ep.release_cause in (None, 16), ep.release_cause


def test_the_terminal_releases_with_release_complete_when_we_hang_up(target, h323, h323_endpoint, h323_run):
    ep = h323_endpoint("lab-mcu2", profile="G711", tone_hz=500)

    async def scenario():
        await ep.call(target.room, h323.host, h323.port)
        await ep.wait_media(timeout=15)
        await ep.hangup(16)
        return await ep.wait_released(timeout=10)

    call = h323_run(scenario(), timeout=40)
    assert call is not None and call.state == "released", call
    assert not ep.connected


def test_a_terminal_that_declares_video_sends_pictures_and_an_intra_when_asked(target, h323, h323_endpoint, h323_run):
    """Video is judged by what the terminal's own TerminalCapabilitySet declares (H.245 §8.2): when it
    lists video, its video channel must carry pictures that decode, and an H.245
    videoFastUpdatePicture must bring an intra picture (H.245 §8.11, H.323 §8.4.6) — how an MCU
    repairs a picture after loss or when someone joins. No video in its TCS: NOT APPLICABLE."""
    from interop_tests import evidence
    from interop_tests.verdicts import not_applicable

    ep = h323_endpoint("lab-mcu-video", profile="HDX", tone_hz=600, video_colour=(30, 200, 30))
    number = target.video_room if h323.local_cau else target.room

    async def scenario():
        await ep.call(number, h323.host, h323.port)
        await ep.wait_media(timeout=15)
        call = ep.call_obj
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while loop.time() < deadline and not (call.h245 is not None and call.h245.remote_tcs_received):
            await asyncio.sleep(0.05)
        caps = {m: call.h245._theirs(m) for m in ("audio", "video")} if call.h245 is not None else {}
        if not caps.get("video"):
            return caps, None, None
        deadline = loop.time() + 12
        while loop.time() < deadline and (ep.video is None or ep.video.decoded < 10):
            await asyncio.sleep(0.1)
        if ep.video is None or ep.video.decoded < 10:
            return caps, ep.video.decoded if ep.video else 0, None
        before, asked = ep.video.keyframes_received, loop.time()
        ep.video.ask_keyframe()                       # H.245 miscellaneousCommand videoFastUpdatePicture
        while loop.time() < asked + 3 and ep.video.keyframes_received == before:
            await asyncio.sleep(0.02)
        return caps, ep.video.decoded, (loop.time() - asked) if ep.video.keyframes_received > before else None

    caps, decoded, intra_after = h323_run(scenario(), timeout=60)
    evidence.identify("H.245 capabilities (its TerminalCapabilitySet)",
                      "; ".join(f"{m}: {', '.join(sorted(set(c)))}" for m, c in caps.items() if c))
    if not caps.get("video"):
        h323_run(ep.hangup())
        not_applicable(f"the terminal's TerminalCapabilitySet declares no video ({caps})")
    v = ep.video
    evidence.measure("video frames decoded", decoded, "", "≥ 10 in 12 s")
    if v is not None and v.last is not None:
        h, w = v.last.shape[:2]
        evidence.measure("picture size", f"{w}x{h}", "", "a size of its TCS")
        evidence.picture(v.last, "what-the-terminal-sent")
    evidence.measure("intra picture after videoFastUpdatePicture", round(intra_after * 1000) if intra_after else "none",
                     "ms", "within 3000")
    h323_run(ep.hangup())
    assert decoded and decoded >= 10, f"{decoded} video frames decoded in 12 s from a terminal that declares {caps['video']}"
    assert intra_after is not None, "no intra picture within 3 s of an H.245 videoFastUpdatePicture"
