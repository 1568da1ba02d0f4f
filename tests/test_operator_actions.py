"""The operator's room actions over the API (token, JSON only) with real callers (baresip)."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from interop_tests.peers.baresip import Baresip
from tests.test_run import gateway  # noqa: F401 - the fixture


def _post(gw, path: str, body: dict, token: str | None) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{gw.port}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _roster(gw) -> list[dict]:
    return [p for room in json.loads(gw.get("/api/status")[2])["rooms"] for p in room["roster"]]


def test_mute_lock_remove_and_end_a_room(gateway, tmp_path):  # noqa: F811
    gw = gateway("--no-watch", "--rtp-ports", "44000-44199")
    sip = int(json.loads(gw.get("/api/status")[2])["listening"]["SIP"].split(":")[-1].split("/")[0])
    a = Baresip("a", workdir=tmp_path / "a", audio_codecs=("PCMU/8000/1",))
    b = Baresip("b", workdir=tmp_path / "b", audio_codecs=("PCMU/8000/1",))
    late = Baresip("late", workdir=tmp_path / "late", audio_codecs=("PCMU/8000/1",))
    try:
        a.dial(f"sip:1000@127.0.0.1:{sip}")
        a.wait_established(timeout=10)
        b.dial(f"sip:1000@127.0.0.1:{sip}")
        b.wait_established(timeout=10)
        time.sleep(0.5)
        leg_a = next(p["id"] for p in _roster(gw) if p["name"] == "a")
        room = json.loads(gw.get("/api/status")[2])["rooms"][0]["id"]
        assert _post(gw, f"/api/rooms/{room}/participants/{leg_a}/mute", {}, None)[0] == 401
        code, body = _post(gw, f"/api/rooms/{room}/participants/{leg_a}/mute", {"direction": "in"}, gw.token)
        assert code == 200 and body["muted"] is True, body
        assert next(p for p in _roster(gw) if p["id"] == leg_a)["muted"] is True
        assert _post(gw, f"/api/rooms/{room}/participants/{leg_a}/mute", {"direction": "sideways"}, gw.token)[0] == 400
        code, body = _post(gw, f"/api/rooms/{room}/lock", {"locked": True}, gw.token)
        assert code == 200 and body["locked"] is True
        late.dial(f"sip:1000@127.0.0.1:{sip}")
        ev = late.wait_event("CALL_CLOSED", timeout=10)
        assert "403" in str(ev.get("param")) and "locked" in str(ev.get("param")), ev
        code, body = _post(gw, f"/api/rooms/{room}/participants/{leg_a}/remove", {}, gw.token)
        assert code == 200
        a.wait_closed(timeout=10)                                   # its BYE came
        assert _post(gw, f"/api/rooms/{room}/participants/{leg_a}/remove", {}, gw.token)[0] == 404
        code, body = _post(gw, f"/api/rooms/{room}/end", {}, gw.token)
        assert code == 200 and body["participants"] == 1
        b.wait_closed(timeout=10)
        assert _roster(gw) == []
    finally:
        for p in (a, b, late):
            p.stop()
    assert gw.stop() == 0
