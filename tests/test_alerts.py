"""Alerts with real sites: a baresip whose audio reaches the bridge through a lossy relay the test
puts in the path (SIP and RTP through it, 30 % of its RTP dropped), and a registered baresip that
goes away. Each alert is a log line, an ``alert`` event on /api/events and a POST to the
``alert_webhook``."""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from interop_tests.peers.baresip import Baresip
from tests.test_console import PLAN, EventStream, _ports
from tests.test_run import gateway  # noqa: F401 - the fixture


class LossyRelay:
    """A UDP relay for one SIP call: SIP both ways (the bridge's SDP answer rewritten so the site
    sends its RTP here), RTP both ways, dropping ``drop`` of every 10 packets from the site."""

    def __init__(self, gateway_sip: tuple[str, int], drop: int = 3) -> None:
        self.gw_sip = gateway_sip
        self.drop = drop
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.sip_port = self.sip.getsockname()[1]
        self.rtp_port = self.rtp.getsockname()[1]
        self.site_sip = None
        self.site_rtp = None
        self.gw_rtp = None
        self.forwarded = self.dropped = 0
        self.rewrote = False
        self._stop = False
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._sip_loop, self._rtp_loop)]
        for t in self._threads:
            t.start()

    def _sip_loop(self) -> None:
        self.sip.settimeout(0.2)
        while not self._stop:
            try:
                data, addr = self.sip.recvfrom(65535)
            except OSError:
                continue
            if addr == self.gw_sip:
                m = re.search(rb"\r\nm=audio (\d+) ", data)
                if m and self.site_sip is not None:
                    self.gw_rtp = ("127.0.0.1", int(m.group(1)))
                    head, body = data.split(b"\r\n\r\n", 1)
                    body = body.replace(b"m=audio " + m.group(1) + b" ", b"m=audio " + str(self.rtp_port).encode() + b" ")
                    head = re.sub(rb"(?im)^(content-length|l)\s*:\s*\d+", b"Content-Length: " + str(len(body)).encode(), head)
                    data = head + b"\r\n\r\n" + body
                    self.rewrote = True
                if self.site_sip is not None:
                    self.sip.sendto(data, self.site_sip)
            else:
                self.site_sip = addr
                self.sip.sendto(data, self.gw_sip)

    def _rtp_loop(self) -> None:
        self.rtp.settimeout(0.2)
        n = 0
        while not self._stop:
            try:
                data, addr = self.rtp.recvfrom(65535)
            except OSError:
                continue
            if addr == self.gw_rtp:
                if self.site_rtp is not None:
                    self.rtp.sendto(data, self.site_rtp)
                continue
            self.site_rtp = addr
            n += 1
            if n % 10 < self.drop:
                self.dropped += 1
                continue
            if self.gw_rtp is not None:
                self.forwarded += 1
                self.rtp.sendto(data, self.gw_rtp)

    def close(self) -> None:
        self._stop = True
        for t in self._threads:
            t.join(timeout=2)
        self.sip.close()
        self.rtp.close()


class Hook(BaseHTTPRequestHandler):
    posts: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        Hook.posts.append({"type": self.headers.get("content-type"), "body": json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_a_lossy_site_and_a_site_that_drops_off_raise_alerts(gateway, tmp_path):  # noqa: F811
    Hook.posts = []
    hook = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    (tmp_path / "plan.yaml").write_text(PLAN)
    gw = gateway("--no-watch", "--rtp-ports", "47000-47199",
                 config=f"alert_after: 3\nalert_webhook: http://127.0.0.1:{hook.server_port}/cau-alerts\n")
    ports = _ports(gw)
    relay = LossyRelay(("127.0.0.1", ports["SIP"]))
    stream = EventStream(gw.port)
    lossy = Baresip("lossy", workdir=tmp_path / "lossy", audio_codecs=("PCMU/8000/1",))
    good = Baresip("good", workdir=tmp_path / "good", audio_codecs=("PCMU/8000/1",))
    reg = Baresip("xa-tan-loc", workdir=tmp_path / "reg", audio_codecs=("PCMU/8000/1",),
                  register_to=(f"127.0.0.1:{ports['SIP']}", "xa-tan-loc", "mat-khau-5102"))
    try:
        stream.wait("snapshot")
        assert reg.registered(timeout=10)
        good.dial(f"sip:1000@127.0.0.1:{ports['SIP']}")
        good.wait_established(timeout=10)
        lossy.dial(f"sip:1000@127.0.0.1:{relay.sip_port}")
        lossy.wait_established(timeout=10)
        assert relay.rewrote, "the relay did not see the bridge's SDP answer"
        _, alert = stream.wait("alert", lambda d: d["kind"] == "quality" and d["active"], timeout=15)
        assert relay.forwarded > 50 and relay.dropped > 20, (relay.forwarded, relay.dropped)
        status = json.loads(gw.get("/api/status")[2])
        roster = {p["id"]: p for r in status["rooms"] for p in r["roster"]}
        assert roster[alert["participant"]]["name"] == "lossy", alert      # the lossy site, not the good one
        assert 20 <= alert["loss_pct"] <= 40 and alert["mos"] < 3.6, alert
        assert [a["participant"] for a in status["alerts"]["active"] if a["kind"] == "quality"] == [alert["participant"]]
        # the registered commune goes away: it unregisters and is not in a call
        reg.stop()
        _, gone = stream.wait("alert", lambda d: d["kind"] == "registration" and d["active"], timeout=10)
        assert gone["site"] == "xa-tan-loc" and "UBND xã Tân Lộc" in gone["message"], gone
        deadline = time.monotonic() + 5
        while len(Hook.posts) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        kinds = [p["body"]["kind"] for p in Hook.posts]
        assert "quality" in kinds and "registration" in kinds, Hook.posts
        assert all(p["type"].startswith("application/json") for p in Hook.posts)
        # the lossy site hangs up: its alert is cleared
        lossy.hangup()
        lossy.wait_closed(timeout=10)
        stream.wait("alert", lambda d: d["kind"] == "quality" and d["active"] is False, timeout=10)
    finally:
        for p in (lossy, good, reg):
            p.stop()
        stream.close()
        relay.close()
        hook.shutdown()
    log = gw.stdout.read_text() + gw.stderr.read_text()
    assert re.search(r"ALERT quality: lossy in giao-ban: audio MOS \d\.\d\d, loss \d+\.\d %", log), log[-3000:]
    assert "ALERT registration: UBND xã Tân Lộc (xa-tan-loc) is no longer registered" in log
    assert gw.stop() == 0
