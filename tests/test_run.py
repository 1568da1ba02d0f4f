"""``cau run`` as an operator meets it: start, health, reload, refuse a bad plan, stop."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gateway.resources import default_dialplan
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
# a "national" gatekeeper in a lab: anyone on loopback registers under aliases its plan does not use
OPEN_LAB_PLAN = 'version: 1\nrooms: []\nopen_registration: ["127.0.0.0/8"]\n'


class Gateway:
    """A `cau run` child process on loopback with an ephemeral HTTP port."""

    def __init__(self, tmp_path: Path, *extra: str, config: str | None = None, fd_limit: int | None = None):
        self.plan = tmp_path / "plan.yaml"
        if not self.plan.exists():
            shutil.copy(default_dialplan(), self.plan)
        args = [sys.executable, "-m", "gateway", "run", "--bind", "127.0.0.1", "--http-port", "0", "--sip-port", "0", "--ras-port", "0", "--h323-port", "0", "--https-port", "0", "--sip-tls-port", "0", "--dialplan", str(self.plan), *extra]
        if config is not None:
            cfg = tmp_path / "cau.yaml"
            cfg.write_text(config)
            args += ["--config", str(cfg)]
        self.stdout = tmp_path / "stdout.txt"
        self.stderr = tmp_path / "stderr.txt"
        self.state = tmp_path / "state"         # XDG_STATE_HOME: the token and certificate stay in the test's folder
        self.proc = subprocess.Popen(
            args, cwd=tmp_path, stdout=self.stdout.open("w"), stderr=self.stderr.open("w"),
            env={**os.environ, "PYTHONPATH": str(REPO), "XDG_STATE_HOME": str(self.state)},
            preexec_fn=None if fd_limit is None else (lambda: __import__("resource").setrlimit(
                __import__("resource").RLIMIT_NOFILE, (fd_limit, fd_limit))),
        )
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = re.search(r"HTTP listening on 127\.0\.0\.1:(\d+)", self.stdout.read_text())
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                raise AssertionError(f"cau run exited {self.proc.returncode}: {self.stderr.read_text()}")
            time.sleep(0.05)
        raise AssertionError("cau run did not report its HTTP port: " + self.stderr.read_text())

    @property
    def token(self) -> str:
        return (self.state / "cau" / "api_token").read_text().strip()

    def get(self, path: str) -> tuple[int, str, bytes]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return r.status, r.headers.get("content-type", ""), r.read()

    def health(self) -> dict:
        status, ctype, body = self.get("/healthz")
        assert status == 200 and ctype.startswith("application/json")
        return json.loads(body)

    def wait_health(self, pred, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            h = self.health()
            if pred(h) or time.monotonic() > deadline:
                return h
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("cau run did not stop within 10 s of SIGTERM")


@pytest.fixture
def gateway(tmp_path):
    gws: list[Gateway] = []

    def start(*extra: str, config: str | None = None, fd_limit: int | None = None) -> Gateway:
        gw = Gateway(tmp_path, *extra, config=config, fd_limit=fd_limit)
        gws.append(gw)
        return gw

    yield start
    for gw in gws:
        if gw.proc.poll() is None:
            gw.proc.kill()
            gw.proc.wait()


def test_run_serves_health_and_status_page_and_stops_cleanly_on_sigterm(gateway):
    gw = gateway("--no-watch")
    h = gw.health()
    from gateway import __version__

    assert h["status"] == "ok" and h["version"] == __version__
    assert h["uptime_s"] >= 0
    assert re.fullmatch(r"[0-9a-f]{64}", h["dialplan"]["sha256"])
    status, ctype, body = gw.get("/")
    page = body.decode()
    assert status == 200 and ctype.startswith("text/html")
    assert "Numbers to dial" in page and "1000" in page
    banner = gw.stdout.read_text()
    assert "numbers people can dial" in banner and "1000" in banner
    assert gw.stop() == 0


def test_sighup_refuses_a_bad_plan_keeps_the_old_one_and_takes_a_good_one(gateway):
    gw = gateway("--no-watch")
    before = gw.health()["dialplan"]["sha256"]
    good_text = gw.plan.read_text()

    gw.plan.write_text(good_text + "\nbogus_top_level_key: 1\n")
    gw.proc.send_signal(signal.SIGHUP)
    h = gw.wait_health(lambda h: h["last_reload"] is not None)
    assert h["last_reload"]["ok"] is False
    assert "bogus_top_level_key" in h["last_reload"]["message"]
    assert re.search(r"plan\.yaml:\d+:\d+:", h["last_reload"]["message"])
    assert h["dialplan"]["sha256"] == before, "a refused plan must not replace the running one"
    assert "REFUSED" in gw.stderr.read_text()

    gw.plan.write_text(good_text.replace("1000", "1009", 1))
    gw.proc.send_signal(signal.SIGHUP)
    h = gw.wait_health(lambda h: h["last_reload"]["ok"] is True)
    assert h["last_reload"]["ok"] is True
    assert h["dialplan"]["sha256"] != before
    assert gw.stop() == 0


def test_a_refused_plan_put_back_as_it_was_clears_the_refusal(gateway):
    """The operator saves a typo (refused), then undoes it: the file is the running plan again, and
    the status no longer says the last reload was refused."""
    gw = gateway(config="watch_interval: 0.2\n")
    good_text = gw.plan.read_text()
    before = gw.health()["dialplan"]["sha256"]
    gw.plan.write_text(good_text + "\nbogus_top_level_key: 1\n")
    h = gw.wait_health(lambda h: h["last_reload"] is not None)
    assert h["last_reload"]["ok"] is False
    gw.plan.write_text(good_text)
    h = gw.wait_health(lambda h: h["last_reload"]["ok"] is True)
    assert h["last_reload"]["ok"] is True and h["dialplan"]["sha256"] == before, h["last_reload"]
    _s, _c, page = gw.get("/")
    assert b"REFUSED" not in page
    assert gw.stop() == 0


def test_file_watch_reloads_without_a_signal(gateway):
    gw = gateway(config="watch_interval: 0.2\n")
    before = gw.health()["dialplan"]["sha256"]
    gw.plan.write_text(gw.plan.read_text().replace("1000", "1009", 1))
    h = gw.wait_health(lambda h: h["dialplan"]["sha256"] != before)
    assert h["dialplan"]["sha256"] != before and h["last_reload"]["ok"] is True
    assert gw.stop() == 0


@pytest.mark.parametrize("flag, kind", [("--http-port", socket.SOCK_STREAM), ("--sip-port", socket.SOCK_DGRAM),
                                        ("--h323-port", socket.SOCK_STREAM), ("--ras-port", socket.SOCK_DGRAM)])
def test_port_in_use_is_one_line_naming_port_and_flag(tmp_path, flag, kind):
    busy = socket.socket(socket.AF_INET, kind)
    busy.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        busy.listen()
    port = busy.getsockname()[1]
    ports = {"--http-port": "0", "--sip-port": "0", "--h323-port": "0", "--ras-port": "0", "--https-port": "0", "--sip-tls-port": "0",
             flag: str(port)}
    try:
        r = subprocess.run(
            [sys.executable, "-m", "gateway", "run", "--bind", "127.0.0.1", *[x for kv in ports.items() for x in kv]],
            capture_output=True, text=True, timeout=30, cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO), "XDG_STATE_HOME": str(tmp_path / "state")},
        )
    finally:
        busy.close()
    assert r.returncode == 3
    lines = [l for l in r.stderr.splitlines() if l.startswith("cau:")]
    assert len(lines) == 1, r.stderr
    assert str(port) in lines[0] and flag in lines[0]


def test_invalid_plan_refuses_to_start_with_file_and_line(tmp_path):
    plan = tmp_path / "bad.yaml"
    plan.write_text(default_dialplan().read_text() + "\nroomz: []\n")
    r = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--bind", "127.0.0.1", "--http-port", str(free_port()), "--dialplan", str(plan)],
        capture_output=True, text=True, timeout=30, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == 2
    assert re.search(r"bad\.yaml:\d+:\d+: .*roomz", r.stderr)


def test_bad_settings_file_is_refused_with_line(tmp_path):
    cfg = tmp_path / "cau.yaml"
    cfg.write_text("bind: 127.0.0.1\nhttp_prot: 9000\n")
    r = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(cfg)],
        capture_output=True, text=True, timeout=30, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == 2
    assert f"{cfg}:2:1: unknown key 'http_prot' (did you mean 'http_port'?)" in r.stderr


def test_an_api_token_guards_operator_actions(gateway, tmp_path):
    import urllib.error
    import urllib.request

    from gateway.config import ConfigError, load_settings

    short = tmp_path / "short.yaml"
    short.write_text("api_token: secret\n")
    with pytest.raises(ConfigError, match=r"short\.yaml:1:\d+: api_token must be a secret of at least 16"):
        load_settings(short)

    token = "3b1f0c9e7d5a4b2c8e6f1a0d"
    gw = gateway(config=f"api_token: {token}\n")

    def post(auth: str | None) -> tuple[int, dict, str]:
        headers = {"content-type": "application/json"}
        if auth is not None:
            headers["authorization"] = auth
        req = urllib.request.Request(f"http://127.0.0.1:{gw.port}/api/rooms/demo/dial", method="POST",
                                     data=b'{"nothing": 1}', headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read()), ""
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read()), e.headers.get("www-authenticate", "")

    code, body, challenge = post(None)
    assert code == 401 and "API token" in body["error"] and challenge.startswith("Bearer")
    assert post("Bearer " + token[:-1] + "x")[0] == 401
    assert post("Basic " + token)[0] == 401
    code, body, _ = post("Bearer " + token)  # let in: now it is the request that is wrong
    assert code == 400 and '"to"' in body["error"]
    # the layout of a room: token-protected the same way; a room that is not running is a 404,
    # an unknown layout a 400 that lists the layouts there are
    def layout(body: bytes, auth: str | None = "Bearer " + token, room: str = "demo") -> tuple[int, dict]:
        headers = {"content-type": "application/json", **({"authorization": auth} if auth else {})}
        req = urllib.request.Request(f"http://127.0.0.1:{gw.port}/api/rooms/{room}/layout", method="POST",
                                     data=body, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    assert layout(b'{"layout": "cp-3x3"}', auth=None)[0] == 401
    code, body = layout(b'{"layout": "cp-3x3"}')
    assert code == 404 and "not running" in body["error"]
    code, body = layout(b'{"layout": 7}')
    assert code == 400 and "cp-1+7" in body["layouts"]
    code, body = layout(b'not json')
    assert code == 400
    assert gw.get("/api/status")[0] == 200  # reading stays open (bind the port to a management network)
    assert gw.stop() == 0


def test_a_fresh_gateway_makes_its_api_token_shows_it_once_and_takes_only_json(gateway, tmp_path):
    """No api_token in the settings: one is made on first start (kept, 0600, printed once); without
    it no action is taken, and a cross-site form's content types are refused even with it."""
    import stat
    import urllib.error
    import urllib.request

    gw = gateway("--no-watch")
    token = gw.token
    assert len(token) == 48 and stat.S_IMODE((gw.state / "cau" / "api_token").stat().st_mode) == 0o600
    assert token in gw.stdout.read_text(), "the first start does not show the token it made"

    def post(headers: dict, body: bytes = b'{"layout": "cp-3x3"}') -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{gw.port}/api/rooms/demo/layout", method="POST",
                                     data=body, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    assert post({"content-type": "application/json"}) == 401
    assert post({"content-type": "text/plain", "authorization": f"Bearer {token}"}) == 415
    assert post({"content-type": "application/x-www-form-urlencoded", "authorization": f"Bearer {token}"}) == 415
    assert post({"content-type": "application/json", "authorization": f"Bearer {token}"}) == 404   # room not running
    assert gw.stop() == 0
    again = gateway("--no-watch")
    assert again.token == token, "a restart made a new token"
    assert token not in again.stdout.read_text() and "API token for operator actions: kept in" in again.stdout.read_text()
    assert again.stop() == 0


def test_endpoint_mode_registers_the_rooms_with_an_external_gatekeeper(gateway, tmp_path):
    """Cầu registers with a national gatekeeper (here: another Cầu gatekeeper on loopback)."""
    from gateway.dialplan import parse_dialplan
    from gateway.h323.gatekeeper import Gatekeeper
    from tests.conftest import run_for

    national = Gatekeeper(parse_dialplan(OPEN_LAB_PLAN), gatekeeper_id="quocgia",
                          call_signal_address=("127.0.0.1", 1720))
    national.start("127.0.0.1", 0)
    try:
        gw = gateway(config=f"register_with: 127.0.0.1:{national.port}\nregister_as: cau-tinh\n")
        deadline = time.monotonic() + 10
        while not national.by_alias("cau-tinh") and time.monotonic() < deadline:
            run_for(0.1)
        reg = national.by_alias("cau-tinh")
        assert reg is not None, "Cầu did not register with the external gatekeeper"
        assert national.by_alias("1000") is reg, "the demo room's number was not registered"
        assert "300" in reg.prefixes, "the team rooms' prefix (3001-3009) was not registered"
        status = json.loads(gw.get("/api/status")[2])
        assert status["gatekeeper_client"]["state"] == "registered"
        assert gw.stop() == 0
        deadline = time.monotonic() + 5
        while national.by_alias("cau-tinh") and time.monotonic() < deadline:
            run_for(0.1)
        assert national.by_alias("cau-tinh") is None, "Cầu did not unregister (URQ) when it stopped"
    finally:
        national.stop()
        run_for(0.1)


def test_a_reload_never_drops_a_call_in_progress(gateway, tmp_path):
    """A SIP call in room 1000 survives a reload that even removes the room's number."""
    import threading

    from interop_tests.peers.sipp import Sipp

    gw = gateway("--no-watch")
    out = gw.stdout.read_text()
    sip_port = int(re.search(r"SIP listening on 127\.0\.0\.1:(\d+)", out).group(1))
    result = {}
    with Sipp(tmp_path / "sipp") as sipp:
        t = threading.Thread(target=lambda: result.update(r=sipp.uac(f"127.0.0.1:{sip_port}", "builtin:uac",
                                                                       service="1000", call_ms=3000)))
        t.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rooms = json.loads(gw.get("/api/status")[2])["rooms"]
            if any(r["id"] == "demo" and r["participants"] == 1 for r in rooms):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the call never reached the demo room")
        # the operator's views of the call: its quality figures and the status page's room row
        demo = next(r for r in rooms if r["id"] == "demo")
        q = demo["roster"][0]["quality"]
        assert set(q["rx"]) >= {"packets", "loss_pct", "jitter_ms", "buffer_ms", "mos"} and "rtt_ms" in q
        page = gw.get("/")[2].decode()
        assert "Worst line" in page and "<td>demo</td>" in page
        text = gw.plan.read_text()
        assert 'numbers: ["1000", "demo"]' in text
        gw.plan.write_text(text.replace('numbers: ["1000", "demo"]', 'numbers: ["demo"]'))
        gw.proc.send_signal(signal.SIGHUP)
        h = gw.wait_health(lambda h: h["last_reload"] is not None)
        assert h["last_reload"]["ok"], h["last_reload"]
        status = json.loads(gw.get("/api/status")[2])
        assert "1000" not in [n for n, _ in status["dialplan"]["dialable"]], "the new plan was not taken"
        rooms = status["rooms"]
        assert any(r["id"] == "demo" and r["participants"] == 1 for r in rooms), "the reload dropped the call"
        t.join(30)
    r = result["r"]
    assert r.ok and r.successful == 1, r.explain()
    assert gw.stop() == 0


def test_dial_out_by_alias_through_the_external_gatekeeper(gateway, tmp_path):
    """The operator invites `h323:lab-national`: Cầu asks the national gatekeeper (ARQ) where it is."""
    import asyncio
    import urllib.request

    from gateway.dialplan import parse_dialplan
    from gateway.h323.gatekeeper import Gatekeeper
    from interop_tests.h323.endpoint import H323TestEndpoint
    from tests.conftest import LOOP, run_for

    national = Gatekeeper(parse_dialplan(OPEN_LAB_PLAN), gatekeeper_id="quocgia",
                          call_signal_address=("127.0.0.1", 1720))
    national.start("127.0.0.1", 0)
    ep = H323TestEndpoint("lab-national", profile="HDX", tone_hz=700)
    try:
        LOOP.run_until_complete(asyncio.wait_for(ep.register(("127.0.0.1", national.port)), 10))
        gw = gateway(config=f"register_with: 127.0.0.1:{national.port}\nregister_as: cau-tinh\n")
        deadline = time.monotonic() + 10
        while not national.by_alias("cau-tinh") and time.monotonic() < deadline:
            run_for(0.1)

        def post() -> tuple[int, dict]:
            req = urllib.request.Request(f"http://127.0.0.1:{gw.port}/api/rooms/demo/dial", method="POST",
                                         data=json.dumps({"to": "h323:lab-national"}).encode(),
                                         headers={"content-type": "application/json",
                                                  "authorization": f"Bearer {gw.token}"})
            try:
                with urllib.request.urlopen(req, timeout=20) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        async def invite():
            return await asyncio.get_event_loop().run_in_executor(None, post)

        code, body = LOOP.run_until_complete(asyncio.wait_for(invite(), 30))
        assert code == 200, body
        assert body["protocol"] == "h323" and body["room"] == "demo"
        LOOP.run_until_complete(asyncio.wait_for(ep.wait_connected(), 10))
        assert "gatekeeper admitted the call to lab-national" in gw.stderr.read_text()
        LOOP.run_until_complete(ep.hangup())
        assert gw.stop() == 0
    finally:
        LOOP.run_until_complete(ep.close())
        national.stop()
        run_for(0.1)


def test_the_banner_of_a_gateway_bound_to_every_address_names_them_and_warns(monkeypatch):
    """Bound to 0.0.0.0 the banner gives addresses people can call (not the host name), says each
    site is answered with the address it reaches, and warns about a loopback --advertise."""
    import asyncio
    from types import SimpleNamespace

    from gateway import app
    from gateway.config import Settings
    from gateway.dialplan import DialPlanHolder
    from gateway.resources import default_dialplan

    monkeypatch.setattr(app, "local_addresses", lambda: ["198.51.100.7", "2001:db8::7"])
    plan = DialPlanHolder(default_dialplan())
    gw = SimpleNamespace(settings=Settings(bind="0.0.0.0"), dialplan=plan, listening={},
                         reactor=SimpleNamespace(_asyncioEventloop=asyncio.new_event_loop()),
                         http_port=lambda: 8080, advertised_host=lambda: "127.0.0.1")
    text = app.banner(gw)
    assert "this machine's addresses: 198.51.100.7, 2001:db8::7" in text
    assert "status page: http://198.51.100.7:8080/" in text
    assert "each site is answered" in text and "WARNING" not in text
    gw.settings = Settings(bind="0.0.0.0", advertise="203.0.113.9")
    text = app.banner(gw)
    assert "WARNING" not in text and "status page: http://203.0.113.9:8080/" in text
    gw.settings = Settings(bind="0.0.0.0", advertise="127.0.0.1")
    text = app.banner(gw)
    assert "WARNING: --advertise 127.0.0.1 is a loopback address" in text


def test_a_huge_request_body_is_refused_before_it_is_kept(gateway):
    """A Content-Length of 1 GB (or a chunked body that keeps coming) gets 413 at once and the
    connection is closed: the gateway never stores it, and goes on serving."""
    gw = gateway("--no-watch")

    def send(head: bytes, body: bytes) -> bytes:
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        try:
            s.sendall(head + body)
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except (ConnectionResetError, socket.timeout):
                    break
                if not chunk:
                    break
                out += chunk
            return out
        finally:
            s.close()

    big = send(b"POST /api/rooms/demo/dial HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 1000000000\r\n\r\n", b"x" * 1000)
    assert big.startswith(b"HTTP/1.1 413"), big[:80]
    chunk = b"%x\r\n%s\r\n" % (65536, b"y" * 65536)
    chunked = send(b"POST /whip/1000 HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n", chunk * 5)
    assert chunked.startswith(b"HTTP/1.1 413"), chunked[:80]
    assert gw.health()["status"] == "ok"
    assert gw.stop() == 0


def test_a_room_under_pin_attack_raises_an_alarm_on_the_status_page(gateway):
    """Thirty wrong PINs for the demo plan's meeting room within a minute: the room's browser door
    is shut for a minute, and the operator sees it in /api/status and on the status page."""
    gw = gateway("--no-watch")
    codes = []
    for i in range(31):
        req = urllib.request.Request(f"http://127.0.0.1:{gw.port}/whip/2000", data=b"v=0\r\n", method="POST",
                                     headers={"content-type": "application/sdp", "authorization": f"Bearer {i:04d}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                codes.append(r.status)
        except urllib.error.HTTPError as e:
            codes.append(e.code)
    assert codes[:30] == [403] * 30 and codes[30] == 429, codes
    status = json.loads(gw.get("/api/status")[2])
    [alarm] = status["security"]["alarms"]
    assert alarm["kind"] == "target" and alarm["name"] == "meeting" and alarm["secret"] == "PIN"
    assert alarm["locked"] and status["security"]["wrong_pins"] == 30
    page = gw.get("/")[2].decode()
    assert "Security alarms" in page and "<code>meeting</code>" in page and "30 wrong" in page
    assert "ALARM: 30 wrong PINs" in gw.stdout.read_text() + gw.stderr.read_text()
    deadline = time.monotonic() + 5       # the alerts look once a second
    while not re.search(r"ALERT security: 30 wrong PINs for target meeting from \d+ source", gw.stderr.read_text()):
        assert time.monotonic() < deadline, gw.stderr.read_text()[-2000:]
        time.sleep(0.1)
    assert [a["kind"] for a in json.loads(gw.get("/api/status")[2])["alerts"]["active"]] == ["security"]
    assert gw.stop() == 0


def test_a_flood_of_idle_tcp_connections_on_sip_leaves_h323_and_http_alone(gateway):
    """The finding: at the common 1024-descriptor limit, 1,100 idle SIP TCP connections stopped SIP,
    H.323 and HTTP at once. Now each listener has its share of the descriptors: the flood fills
    SIP's share, and HTTP, H.323 and SIP over UDP go on answering."""
    import resource

    gw = gateway("--no-watch", "--rtp-ports", "40000-40199", fd_limit=1024)
    status = json.loads(gw.get("/api/status")[2])
    assert status["fd_limit"] == 1024
    sip_port = int(status["listening"]["SIP"].split(":")[-1].split("/")[0])
    h323_port = int(status["listening"]["H.323 call signalling"].split(":")[-1].split("/")[0])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    flood: list[socket.socket] = []
    try:
        # paced, in batches: 1,100 SYNs at once overflow the kernel's queues, and with SYN cookies a
        # client socket can look connected while the gateway never saw it, so keep opening
        # connections until the gateway reports its share full (or 2,000 have been tried)
        deadline = time.monotonic() + 40
        sip = {}
        while time.monotonic() < deadline:
            if len(flood) < 2000:
                for _ in range(25):
                    s = socket.socket()
                    s.setblocking(False)
                    s.connect_ex(("127.0.0.1", sip_port))
                    flood.append(s)
            time.sleep(0.1)
            if len(flood) % 200 == 0 or len(flood) >= 2000:
                status = json.loads(gw.get("/api/status")[2])       # HTTP answers
                sip = status["tcp"]["SIP"]
                if sip["refused"] > 0:
                    break
        assert sip["open"] <= sip["max"] < 1024 and sip["refused"] > 0, sip
        with socket.create_connection(("127.0.0.1", h323_port), timeout=3):   # H.323 still accepts
            pass
        opt = (f"OPTIONS sip:1000@127.0.0.1:{sip_port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bKfl\r\n"
               "Max-Forwards: 70\r\nFrom: <sip:lab@127.0.0.1>;tag=1\r\nTo: <sip:1000@127.0.0.1>\r\n"
               "Call-ID: flood@lab\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(3)
        u.sendto(opt, ("127.0.0.1", sip_port))
        assert u.recv(65535).startswith(b"SIP/2.0 200"), "SIP over UDP stopped answering"
        u.close()
    finally:
        for s in flood:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert "SIP: refused" in gw.stdout.read_text() + gw.stderr.read_text()
    assert gw.stop() == 0
