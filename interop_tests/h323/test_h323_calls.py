"""H.323 conformance cases against the target (a running Cầu, or any H.323 MCU via CAU_H323_TARGET).

Legacy room systems call the room in the ways they really do (VSX: no fast
start, separate H.245; HDX: fast start with tunnelling) and must hear each
other: the tones are the proof, not the signalling.
"""
from __future__ import annotations

import asyncio

import pytest

from interop_tests.peers.rtp_participant import band_level_db, wait_for_tone


def test_a_vsx_and_an_hdx_call_the_room_and_hear_each_other(target, h323, h323_endpoint, h323_run):
    vsx = h323_endpoint("lab-vsx", profile="VSX", fast_start=False, tunnelling=False, tone_hz=600)
    hdx = h323_endpoint("lab-hdx", profile="HDX", fast_start=True, tunnelling=True, tone_hz=1000)

    async def scenario():
        await vsx.call(target.room, h323.host, h323.port)
        await hdx.call(target.room, h323.host, h323.port)
        await asyncio.gather(vsx.wait_media(), hdx.wait_media())
        # each hears the other within a few seconds: a whole second of the other's tone
        return (await wait_for_tone(vsx.heard, vsx.rx_rate, 1000, -30, within=6, window=1.0),
                await wait_for_tone(hdx.heard, hdx.rx_rate, 600, -30, within=6, window=1.0))

    vsx_hears, hdx_hears = h323_run(scenario())
    if h323.local_cau:
        assert target.room_participants("open") >= 2
    assert vsx_hears > -30, f"the VSX does not hear the HDX ({vsx_hears:.1f} dB)"
    assert hdx_hears > -30, f"the HDX does not hear the VSX ({hdx_hears:.1f} dB)"
    assert band_level_db(vsx.heard(1.0), vsx.rx_rate, 600) < -40, "the VSX hears itself"
    h323_run(vsx.hangup())
    h323_run(hdx.hangup())
    assert vsx.release_cause == 16 and hdx.release_cause == 16


@pytest.mark.parametrize("mode", [dict(fast_start=True, tunnelling=True), dict(fast_start=False, tunnelling=True),
                                  dict(fast_start=False, tunnelling=False)],
                         ids=["fast start+tunnelling", "tunnelling", "separate H.245"])
def test_each_h245_mode_connects_with_audio_both_ways(target, h323, h323_endpoint, h323_run, mode):
    a = h323_endpoint("lab-a", profile="G711", tone_hz=800, **mode)
    b = h323_endpoint("lab-b", profile="HDX", tone_hz=1200)

    async def scenario():
        await a.call(target.room, h323.host, h323.port)
        await b.call(target.room, h323.host, h323.port)
        await asyncio.gather(a.wait_media(), b.wait_media())
        return (await wait_for_tone(a.heard, a.rx_rate, 1200, -30, within=6, window=0.8),
                await wait_for_tone(b.heard, b.rx_rate, 800, -30, within=6, window=0.8))

    a_hears, b_hears = h323_run(scenario())
    assert a_hears > -30, f"{mode}: the caller does not hear the HDX ({a_hears:.1f} dB)"
    assert b_hears > -30, f"{mode}: the HDX does not hear the caller ({b_hears:.1f} dB)"


def test_an_unknown_number_is_released_with_cause_1(target, h323, h323_endpoint, h323_run):
    ep = h323_endpoint("lab-x", profile="VSX")
    with pytest.raises(RuntimeError, match="cause 1 "):
        h323_run(ep.call("5555", h323.host, h323.port))
    assert ep.release_cause == 1


def test_the_pin_room_admits_after_the_pin_sent_as_user_input(target, h323, h323_endpoint, h323_run):
    ep = h323_endpoint("lab-pin", profile="HDX")

    async def scenario():
        await ep.call(target.pin_room, h323.host, h323.port)
        await ep.wait_media()
        await asyncio.sleep(0.5)
        ep.send_dtmf(target.pin + "#")
        await asyncio.sleep(1.5)

    h323_run(scenario())
    assert ep.connected
    if h323.local_cau:
        assert target.wait_participants("locked", 1, timeout=5) == 1


def test_a_call_through_the_gatekeeper(target, h323, h323_endpoint, h323_run):
    if h323.gatekeeper is None:
        pytest.fail("the target reports no RAS (gatekeeper) address")
    ep = h323_endpoint("lab-gk", number="7001", profile="VSX", tone_hz=1000)

    async def scenario():
        await ep.register(h323.gatekeeper)
        await ep.call(target.room)            # ARQ → ACF → SETUP to where the gatekeeper says
        await ep.wait_media()

    h323_run(scenario())
    assert ep.admission.ok and ep.connected
