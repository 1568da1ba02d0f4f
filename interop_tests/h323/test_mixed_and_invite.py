"""Cầu's reason to exist: an H.323 room system and a SIP device meet in one room.

Also the operator's "invite this site": the gateway calls a registered SIP or
H.323 endpoint into a room (POST /api/rooms/<room>/dial).
"""
from __future__ import annotations

import asyncio
import time
import json
import urllib.error
import urllib.request

import numpy as np

from interop_tests.peers.baresip import Baresip
from interop_tests.peers.procs import wav_peak
from interop_tests.peers.rtp_participant import band_level_db, wait_for_tone


def post_dial(cau, room: str, to: str) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://{cau.host}:{cau.http_port}/api/rooms/{room}/dial",
                                 data=json.dumps({"to": to}).encode(), method="POST",
                                 headers={"content-type": "application/json",
                                          "authorization": f"Bearer {cau.api_token}"})
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


def test_four_kinds_of_site_see_each_other_in_one_cp_2x2_room(target, h323, h323_endpoint, h323_run, tmp_path):
    """A Polycom-like room system (H.263 CIF), an H.261-only one, baresip on H.264 mode 0 and baresip
    on H.263 (RFC 2190) join one cp-2x2 room in that order; each decodes the others in their cells.
    (The room systems decode what they receive themselves; baresip's picture is read from a
    loopback capture.)"""
    from gateway.catalogue import default_catalogue
    from gateway.media.codecs import MediaFormat, h263, h264
    from interop_tests.peers.baresip_video import cell_colour, clip, last_picture, received_rtp, silence
    from interop_tests.peers.capture import LoopbackCapture

    red, green, blue, yellow = (220, 30, 30), (30, 200, 40), (30, 40, 220), (230, 220, 30)
    cells = [(0.0, 0.0, 0.5, 0.5), (0.5, 0.0, 0.5, 0.5), (0.0, 0.5, 0.5, 0.5), (0.5, 0.5, 0.5, 0.5)]
    cat = default_catalogue()
    vsx = h323_endpoint("lab-vsx-4", profile="VSX", fast_start=False, tunnelling=True, video_colour=red)
    old = h323_endpoint("lab-h261-4", profile="H261", fast_start=True, tunnelling=True, video_colour=green)
    quiet = ("aufile", str(silence(tmp_path / "quiet.wav")))     # nobody speaks: cells in join order
    b264 = Baresip("h264-4", workdir=tmp_path / "b264", audio_codecs=("PCMU/8000/1",), video_codecs=("H264",),
                   audio_source=quiet, video_source=("avformat", str(clip(tmp_path / "blue.avi", blue))))
    b263 = Baresip("h263-4", workdir=tmp_path / "b263", audio_codecs=("PCMU/8000/1",), video_codecs=("H263",),
                   audio_source=quiet, video_source=("avformat", str(clip(tmp_path / "yellow.avi", yellow))))
    pcap = tmp_path / "four.pcapng"
    bpf = f"udp portrange {b264.rtp_lo}-{b264.rtp_hi} or udp portrange {b263.rtp_lo}-{b263.rtp_hi}"
    try:
        with LoopbackCapture(bpf, pcap):
            h323_run(vsx.call(target.video_room, h323.host, h323.port))
            h323_run(vsx.wait_media())
            h323_run(asyncio.sleep(0.7))
            h323_run(old.call(target.video_room, h323.host, h323.port))
            h323_run(old.wait_media())
            h323_run(asyncio.sleep(0.7))
            b264.dial(target.uri(target.video_room))
            b264.wait_established(timeout=15)
            h323_run(asyncio.sleep(0.7))
            b263.dial(target.uri(target.video_room))
            b263.wait_established(timeout=15)
            h323_run(asyncio.sleep(6.0))
            # where the room put each site (join order, unless someone's audio counted as speech)
            order = None
            if target.is_local_cau:
                room = next(r for r in target.status()["rooms"] if r["id"] == "video")
                names = {p["id"]: p["name"] for p in room["roster"]}
                order = [names.get(i) for i in room["video"]["screen"]["room"]]
            full_room_until = time.time()      # before anyone leaves: the pictures to look at
            pictures = {"the VSX": vsx.video.last, "the H.261 system": old.video.last}
            b264.hangup()
            b263.hangup()
            b264.wait_closed(timeout=10)
            b263.wait_closed(timeout=10)
        assert [c for d, m, c, _ in old.channels if m == "video"] == ["H261", "H261"], old.channels
        want = [(red, "the VSX"), (green, "the H.261 system"), (blue, "baresip H.264"), (yellow, "baresip H.263")]
        if order is not None:
            key = {"VSX lab-vsx-4": 0, "H261 lab-h261-4": 1, "h264-4": 2, "h263-4": 3}
            assert sorted(order, key=str) == sorted(key, key=str), order
            want = [want[key[name]] for name in order]
        for peer, name, fmt in ((b264, "baresip H.264", None), (b263, "baresip H.263", None)):
            streams = received_rtp(pcap, peer.rtp_lo, peer.rtp_hi, before=full_room_until)
            video = {pt: p for pt, p in streams.items() if pt not in (0, 101, 13)}
            assert len(video) == 1, f"{name} received RTP of payload types {sorted(streams)}"
            pt, packets = next(iter(video.items()))
            codec = cat.get("H264" if "264" in name else "H263")
            params = (h264 if "264" in name else h263).from_fmtp(codec, {})
            pictures[name], n = last_picture(MediaFormat(codec, pt, params), packets)
            assert n > 20, f"{name}: {n} pictures decoded"
        for viewer, picture in pictures.items():
            assert picture is not None, f"{viewer} decoded nothing"
            for cell, (colour, who) in zip(cells, want):
                got = cell_colour(picture, cell)
                assert np.abs(got - np.array(colour)).max() < 50, \
                    f"{viewer} sees {got.round()} where {who} should be ({colour})"
    finally:
        b264.stop()
        b263.stop()


def _roster_entry(cau, room: str, protocol: str) -> dict | None:
    for r in cau.status()["rooms"]:
        if r["id"] == room:
            return next((p for p in r["roster"] if p["protocol"] == protocol), None)
    return None


def _wait_roster_entry(cau, room: str, protocol: str, timeout: float = 5.0) -> dict | None:
    deadline = time.monotonic() + timeout
    while (entry := _roster_entry(cau, room, protocol)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return entry


def test_an_h323_caller_is_the_site_it_claims_only_once_registered(cau, h323, h323_endpoint, h323_run):
    """A SETUP naming lab-h323 from an endpoint that is not registered is an anonymous caller
    (identity null in the roster); registered with the gatekeeper, the same system is lab-h323."""
    ep = h323_endpoint("lab-h323", number="5003", profile="HDX", tone_hz=700)
    h323_run(ep.call("1000", h323.host, h323.port))      # straight to the gateway, no gatekeeper
    h323_run(ep.wait_media())
    entry = _wait_roster_entry(cau, "open", "h323")
    assert entry is not None, cau.status()["rooms"]
    assert entry["identity"] is None, entry
    h323_run(ep.hangup())
    assert cau.wait_participants("open", 0) == 0
    ep2 = h323_endpoint("lab-h323", number="5003", profile="HDX", tone_hz=700)
    h323_run(ep2.register(h323.gatekeeper))
    h323_run(ep2.call("1000"))
    h323_run(ep2.wait_media())
    entry = _wait_roster_entry(cau, "open", "h323")
    assert entry is not None and entry["identity"] == "lab-h323", entry
    assert entry["name"] == "lab-h323"                    # the plan's name of the site, not what it sent
    h323_run(ep2.hangup())
    assert cau.wait_participants("open", 0) == 0


def test_an_h323_system_with_a_gatekeeper_password_registers_with_h235_and_is_known_in_the_room(
        cau, h323, h323_endpoint, h323_run):
    """H.235.1 (HMAC-SHA1-96 tokens on every RAS message): a wrong password is refused, the right
    one registers; the call through the gatekeeper is then the site itself in the roster."""
    from gateway.h323.gk_client import RegistrationFailed

    bad = h323_endpoint("lab-hdx-pw", number="5004", profile="HDX", tone_hz=700)
    try:
        h323_run(bad.register(h323.gatekeeper, password="not-it", discover=True))
        raise AssertionError("a wrong gatekeeper password registered")
    except RegistrationFailed as exc:
        assert "securityDenial" in str(exc)
    h323_run(bad.close())
    ep = h323_endpoint("lab-hdx-pw", number="5004", profile="HDX", tone_hz=700)
    h323_run(ep.register(h323.gatekeeper, password=cau.users["lab-hdx-pw"], discover=True))
    h323_run(ep.call("1000"))
    h323_run(ep.wait_media())
    entry = _wait_roster_entry(cau, "open", "h323")
    assert entry is not None and entry["identity"] == "lab-hdx-pw", entry
    assert entry["name"] == "HDX with a gatekeeper password"
    h323_run(ep.hangup())
    assert cau.wait_participants("open", 0) == 0
    assert "endpoint 'lab-hdx-pw' has a password: wrong password" in cau.log()
