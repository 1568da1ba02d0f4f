"""WHIP (RFC 9725) and WHEP against the target, with clients shaped like the real ones: GStreamer
(every candidate in the offer), OBS (no candidate at all, gathers after the answer, never
PATCHes), Meetecho's simple-whip-client (trickles with If-Match), a WHEP viewer — and an H.323
room system in the same room, so what is checked is what each site sees and hears."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from interop_tests.peers.baresip_video import cell_colour
from interop_tests.peers.rtp_participant import band_level_db, wait_for_tone
from interop_tests.peers.webrtc_client import HttpAnswer, http
from interop_tests.verdicts import not_applicable

RED, BLUE, GREEN = (220, 30, 30), (30, 40, 220), (30, 200, 40)
CELLS = [(0.0, 0.0, 0.5, 0.5), (0.5, 0.0, 0.5, 0.5), (0.0, 0.5, 0.5, 0.5), (0.5, 0.5, 0.5, 0.5)]


def near(got, want, tol: float = 50) -> bool:
    return got is not None and float(np.abs(np.asarray(got) - np.asarray(want)).max()) < tol


async def until(check, within: float, step: float = 0.2):
    deadline = time.monotonic() + within
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        await asyncio.sleep(step)


def test_a_whip_participant_and_an_h323_room_system_hear_and_see_each_other(
        target, https, h323, h323_endpoint, h323_run, webrtc_clients):
    """GStreamer-shaped: the offer holds every candidate, no PATCH. The room system (H.263, red,
    1000 Hz) and the WebRTC participant (VP8, blue, 440 Hz) hear and see each other."""
    vsx = h323_endpoint("lab-vsx-webrtc", profile="VSX", fast_start=False, tunnelling=True, tone_hz=1000,
                        video_colour=RED)
    h323_run(vsx.call(target.video_room, h323.host, h323.port))
    h323_run(vsx.wait_media())
    c = webrtc_clients(tone=440, colour=BLUE)
    h323_run(c.publish(f"{https}/whip/{target.video_room}", query="?name=X%C3%A3%20Ph%C3%BA%20Th%E1%BB%8D"))
    assert c.headers.get("content-type") == "application/sdp"
    assert c.headers.get("accept-patch") == "application/trickle-ice-sdpfrag"
    assert c.etag, "no ETag in the 201"
    h323_run(c.wait_connected())

    async def both_hear():
        return (await wait_for_tone(lambda s=None: c.heard(s or 1.0), 16000, 1000, -30, within=8, window=1.0),
                await wait_for_tone(vsx.heard, vsx.rx_rate, 440, -30, within=8, window=1.0))

    browser_hears, vsx_hears = h323_run(both_hear(), timeout=20)
    assert browser_hears, "the WebRTC participant does not hear the room system's 1000 Hz"
    assert vsx_hears, "the room system does not hear the WebRTC participant's 440 Hz"
    assert band_level_db(c.heard(1.0), 16000, 440) < -40, "the WebRTC participant hears itself"
    # cp-2x2: both talk, so who is in cell 0 and who in cell 1 follows who spoke last
    def two_cells(picture) -> bool:
        if picture is None:
            return False
        a, b = cell_colour(picture, CELLS[0]), cell_colour(picture, CELLS[1])
        return (near(a, RED) and near(b, BLUE)) or (near(a, BLUE) and near(b, RED))

    seen = h323_run(until(lambda: two_cells(c.received.picture), within=10))
    assert seen, (f"the WebRTC participant sees {cell_colour(c.received.picture, CELLS[0]).round()} / "
                  f"{cell_colour(c.received.picture, CELLS[1]).round()}" if c.received.picture is not None
                  else "the WebRTC participant decoded no picture")
    seen = h323_run(until(lambda: two_cells(vsx.video.last), within=10))
    assert seen, "the room system does not see the WebRTC participant's blue beside its own red"
    if target.is_local_cau:
        def me():
            room = next(r for r in target.status()["rooms"] if r["id"] == "video")
            return next(p for p in room["roster"] if p["protocol"] == "webrtc")

        # the client's receiver reports come every 0.5-1.5 s
        h323_run(until(lambda: me()["quality"]["tx"] is not None, within=4))
        me = me()
        assert me["name"] == "Xã Phú Thọ"
        assert me["video_media"]["in"]["frames_decoded"] > 0 and me["video_media"]["out"]["frames_sent"] > 0
        assert me["quality"]["rx"]["packets"] > 50 and me["quality"]["tx"] is not None, me["quality"]
        _s, _h, page = http("GET", f"http://{target.host}:{target.http_port}/")
        assert "Xã Phú Thọ" in page and "participant" in page and "connected" in page, "not on the status page"
    assert h323_run(c.delete()) == 200
    if target.is_local_cau:
        assert target.wait_participants("video", 1, timeout=5) == 1, "the participant did not leave on DELETE"
    c.resource = None


def test_an_obs_shaped_publisher_with_no_candidates_is_found_by_its_checks(target, https, h323_run, webrtc_clients):
    """OBS: no candidate and no end-of-candidates in the offer, gathering only after the answer, no
    PATCH: the gateway learns its address from its STUN checks (peer-reflexive)."""
    c = webrtc_clients(tone=600, colour=GREEN, receive=False)
    h323_run(c.publish(f"{https}/whip/{target.room}", obs=True))
    h323_run(c.wait_connected(timeout=15))
    if target.is_local_cau:
        assert target.wait_participants("open", 1, timeout=5) >= 1


def test_an_offer_with_end_of_candidates_and_no_candidates_still_connects(target, https, h323_run, webrtc_clients):
    c = webrtc_clients(tone=600, colour=GREEN)

    async def go():
        offer = await c.pc.createOffer()
        sdp = "\r\n".join(l for l in offer.sdp.split("\r\n") if not l.startswith("a=candidate")) \
            .replace("a=mid:0\r\n", "a=mid:0\r\na=end-of-candidates\r\n", 1)
        status, h, body = await asyncio.get_event_loop().run_in_executor(
            None, lambda: http("POST", f"{https}/whip/{target.room}", sdp.encode(), {"Content-Type": "application/sdp"}))
        assert status == 201, body
        c.resource = f"{https}{h['location']}"
        await c.pc.setLocalDescription(offer)
        from aiortc import RTCSessionDescription

        await c.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        await c.wait_connected(timeout=15)

    h323_run(go(), timeout=25)


def test_a_trickling_client_patches_its_candidates_with_if_match(target, https, h323_run, webrtc_clients):
    """Meetecho-shaped: the POST carries no candidate; two PATCHes with If-Match bring them, the
    second with end-of-candidates. A PATCH naming another ETag gets 412, an ICE restart 501 (or 200
    from a server that restarts ICE). Whether the server takes trickle ICE is read from its answer: a
    201 without ``Accept-Patch: application/trickle-ice-sdpfrag`` makes the case NOT APPLICABLE."""
    probe = webrtc_clients(send=False)
    h323_run(probe.publish(f"{https}/whip/{target.room}"))
    accept_patch = probe.headers.get("accept-patch", "")
    http("DELETE", probe.resource)                  # RFC 9725 §4.2: the session ends now, not at ICE timeout
    h323_run(probe.close())
    if "trickle-ice-sdpfrag" not in accept_patch:
        not_applicable(f"the server's 201 offers no trickle ICE (Accept-Patch: {accept_patch or 'absent'})")
    c = webrtc_clients(tone=700, colour=BLUE)
    h323_run(c.publish(f"{https}/whip/{target.room}", trickle=True))
    h323_run(c.wait_connected(timeout=15))
    frag = b"a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
    status, _h, body = http("PATCH", c.resource, frag, {"Content-Type": "application/trickle-ice-sdpfrag",
                                                        "If-Match": '"not-the-etag"'})
    assert status == 412, body
    status, _h, body = http("PATCH", c.resource, frag, {"Content-Type": "application/trickle-ice-sdpfrag",
                                                        "If-Match": "*"})
    if target.is_local_cau:
        assert status == 501 and "restart" in body, (status, body)     # aiortc cannot restart ICE
    else:
        assert status in (200, 501), f"an ICE restart PATCH was answered {status} (RFC 9725 §4.3.2: 200 or 501)"
    status, _h, body = http("PATCH", c.resource, frag, {"Content-Type": "application/sdp"})
    assert status == 415, (status, body)


def test_a_whep_viewer_receives_the_room(target, https, h323_run, webrtc_clients):
    speaker = webrtc_clients(tone=880, colour=RED)
    h323_run(speaker.publish(f"{https}/whip/{target.room}"))
    viewer = webrtc_clients(send=False)
    try:
        h323_run(viewer.publish(f"{https}/whep/{target.room}"))
    except HttpAnswer as exc:
        if exc.status in (404, 405) and not target.is_local_cau:
            not_applicable(f"the server has no WHEP endpoint at /whep/{target.room} ({exc.status})")
        raise
    h323_run(viewer.wait_connected())
    heard = h323_run(wait_for_tone(lambda s=None: viewer.heard(s or 1.0), 16000, 880, -30, within=8, window=1.0),
                     timeout=15)
    assert heard, "the WHEP viewer does not hear the room"
    seen = h323_run(until(lambda: viewer.received.frames > 10, within=8))
    assert seen, f"the WHEP viewer decoded {viewer.received.frames} pictures"


def test_whip_refusals_say_what_is_wrong(target, https, h323_run, webrtc_clients):
    c = webrtc_clients(tone=500)
    offer = h323_run(c.offer())
    sdp = {"Content-Type": "application/sdp"}

    def post(path: str, body: str = offer, headers=None):
        return http("POST", f"{https}{path}", body.encode(), headers or sdp)

    status, _h, body = post("/whip/999999")
    assert status == 404 and "no room" in body
    status, h, body = post(f"/whip/{target.pin_room}")
    assert status == 401 and "PIN" in body and h.get("www-authenticate", "").startswith("Bearer")
    status, _h, body = post(f"/whip/{target.pin_room}", headers={**sdp, "Authorization": "Bearer 0000"})
    assert status == 403 and "wrong PIN" in body
    status, _h, body = post(f"/whip/{target.room}", headers={"Content-Type": "text/plain"})
    assert status == 415
    status, _h, body = post(f"/whip/{target.room}", "v=0\r\nthis is not SDP\r\n")
    assert status == 400 and "malformed" in body, body
    h264_only = _only_codec(offer, "video", "H265")
    status, _h, body = post(f"/whip/{target.room}", h264_only)
    assert status == 406 and "H265" in body and "VP8" in body, (status, body)
    status, h, _b = http("OPTIONS", f"{https}/whip/{target.room}", None,
                         {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"})
    assert status == 204 and "Location" in h.get("access-control-expose-headers", "")
    assert "POST" in h.get("access-control-allow-methods", "")
    # the right PIN opens the room
    status, h, body = post(f"/whip/{target.pin_room}", headers={**sdp, "Authorization": f"Bearer {target.pin}"})
    assert status == 201, (status, body)
    status, _h, _b = http("DELETE", f"{https}{h['location']}", None, {})
    assert status == 403, "a session of a PIN room was ended without the PIN"
    status, _h, _b = http("DELETE", f"{https}{h['location']}", None, {"Authorization": f"Bearer {target.pin}"})
    assert status == 200


def _only_codec(sdp: str, kind: str, name: str) -> str:
    """The offer with ``kind``'s section offering only a codec called ``name`` (pt 120)."""
    out, section, added = [], None, False
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            section = line[2:].split()[0]
            if section == kind:
                line = " ".join(line.split()[:3] + ["120"])
        elif section == kind and line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:", "a=ssrc-group:")):
            if line.startswith("a=rtpmap:") and not added:
                out.append(f"a=rtpmap:120 {name}/90000")
                added = True
            continue
        out.append(line)
    return "\r\n".join(out)


@pytest.mark.cau_only
def test_the_plain_http_port_sends_browsers_to_https_and_serves_loopback(cau):
    status, _h, body = http("GET", f"http://{cau.host}:{cau.http_port}/join/6000")
    assert status == 200 and "<video" in body, "loopback is served the join page on plain HTTP"
    status, h, body = http("GET", f"https://{cau.host}:{cau.https_port}/join/6000")
    assert status == 200 and "join.js" in body
    assert "default-src 'self'" in h.get("content-security-policy", "")
    status, h, body = http("GET", f"https://{cau.host}:{cau.https_port}/static/join.js")
    assert status == 200 and "RTCPeerConnection" in body and h["content-type"].startswith("text/javascript")
    status, _h, _b = http("GET", f"https://{cau.host}:{cau.https_port}/static/")
    assert status == 404, "the static folder lists its files"
    status, _h, _b = http("GET", f"https://{cau.host}:{cau.https_port}/")
    assert status == 404, "the HTTPS port every browser reaches serves the status page"
    status, _h, _b = http("GET", f"https://{cau.host}:{cau.https_port}/api/status")
    assert status == 401, "the HTTPS port every browser reaches serves the roster without the API token"
