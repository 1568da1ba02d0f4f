"""Cầu's reason to exist: an H.323 room system and a SIP device meet in one room.

Also the operator's "invite this site": the gateway calls a registered SIP or
H.323 endpoint into a room (POST /api/rooms/<room>/dial).
"""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

from interop_tests.peers.baresip import Baresip
from interop_tests.peers.procs import wav_peak
from interop_tests.peers.rtp_participant import band_level_db, wait_for_tone


def post_dial(cau, room: str, to: str) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://{cau.host}:{cau.http_port}/api/rooms/{room}/dial",
                                 data=json.dumps({"to": to}).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=40) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_an_h323_room_system_and_a_sip_device_hear_each_other(target, h323, h323_endpoint, h323_run, tmp_path):
    vsx = h323_endpoint("lab-vsx-mixed", profile="VSX", fast_start=False, tunnelling=True, tone_hz=1000)
    b = Baresip("mixed", workdir=tmp_path / "baresip", audio_codecs=("opus/48000/2",), audio_source=("ausine", 440))
    try:
        h323_run(vsx.call(target.room, h323.host, h323.port))
        b.dial(target.uri(target.room))
        b.wait_established(timeout=15)
        h323_run(vsx.wait_media())
        level = h323_run(wait_for_tone(vsx.heard, vsx.rx_rate, 440, -30, within=8, window=1.0))
        assert level > -30, f"the H.323 system does not hear the SIP device ({level:.1f} dB)"
        h323_run(asyncio.sleep(1.5))   # baresip records a while of the VSX's tone
        assert band_level_db(vsx.heard(1.0), vsx.rx_rate, 1000) < -40, "the H.323 system hears itself"
        b.hangup()
        b.wait_closed(timeout=10)
        wav = b.received_audio()
        assert wav is not None, "baresip recorded nothing"
        freq, level = wav_peak(wav)
        assert abs(freq - 1000) < 20, f"the SIP device heard {freq:.0f} Hz at {level:.1f} dBFS, not the H.323 tone"
    finally:
        b.stop()


def test_the_operator_invites_a_registered_sip_endpoint_into_a_room(cau, tmp_path):
    b = Baresip("baresip-a", workdir=tmp_path / "baresip", auto_answer=True,
                register_to=(f"{cau.host}:{cau.sip_port}", "baresip-a", cau.users["baresip-a"]))
    try:
        assert b.registered(timeout=10), "baresip did not register"
        code, body = post_dial(cau, "open", "baresip-a")
        assert code == 200, body
        assert body["protocol"] == "sip" and body["room"] == "open"
        b.wait_established(timeout=10)
        assert cau.wait_participants("open", 1) == 1
    finally:
        b.stop()
    assert cau.wait_participants("open", 0) == 0, "the invited call did not end when baresip left"


def test_the_operator_invites_a_registered_h323_endpoint_into_a_room(cau, h323, h323_endpoint, h323_run):
    ep = h323_endpoint("lab-h323", number="5003", profile="HDX", tone_hz=700)
    h323_run(ep.register(h323.gatekeeper))

    async def invite():
        # the endpoint lives on this process's event loop: keep the loop running while the POST waits
        return await asyncio.get_event_loop().run_in_executor(None, post_dial, cau, "open", "lab-h323")

    code, body = h323_run(invite(), timeout=45)
    assert code == 200, body
    assert body["protocol"] == "h323"
    h323_run(ep.wait_media())
    h323_run(asyncio.sleep(1.0))
    assert cau.room_participants("open") == 1
    h323_run(ep.hangup())
    assert cau.wait_participants("open", 0) == 0


def test_inviting_an_unknown_site_says_why(cau):
    code, body = post_dial(cau, "open", "nobody-here")
    assert code == 400 and "neither a sip:/h323: URI nor an endpoint" in body["error"]
    code, body = post_dial(cau, "no-such-room", "sip:1@127.0.0.1")
    assert code == 400 and "no room" in body["error"]
