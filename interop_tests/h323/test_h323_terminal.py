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
