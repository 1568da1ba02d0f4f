"""SIP targets by name (RFC 3263), answered by dnsmasq — an independent DNS server the test starts
on loopback with NAPTR, SRV, A and AAAA records of its own: the resolver's order (NAPTR order and
preference, SRV priority, the transport each names, A/AAAA fallback with the default port), and
the gateway dialling ``sip:mcu@mcu.example.vn`` through it to a baresip that answers."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from gateway.sip.dns import SipResolver, make_resolver
from interop_tests.peers.baresip import Baresip
from interop_tests.peers.procs import wait_line
from tests.conftest import free_port, wait
from tests.test_console import _ports
from tests.test_run import gateway  # noqa: F401 - the fixture


class Dnsmasq:
    def __init__(self, records: list[str]) -> None:
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        if not shutil.os.path.exists(binary):
            pytest.fail("dnsmasq is not installed (scripts/install-test-deps.sh installs dnsmasq-base)")
        from interop_tests.peers.procs import free_port as free_udp_tcp

        self.port = free_udp_tcp()   # dnsmasq binds UDP and TCP
        self.proc = subprocess.Popen(
            [binary, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--pid-file=",
             "--bind-interfaces", "--listen-address=127.0.0.1", f"--port={self.port}", "--log-queries",
             "--log-facility=-", "--user=root", *records],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.server = f"127.0.0.1:{self.port}"
        deadline = time.monotonic() + 5
        import socket

        while time.monotonic() < deadline:       # answering?
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(0.2)
            q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03mcu\x07example\x02vn\x00\x00\x01\x00\x01"
            try:
                s.sendto(q, ("127.0.0.1", self.port))
                if s.recv(512)[:2] == b"\x12\x34":
                    return
            except OSError:
                time.sleep(0.1)
            finally:
                s.close()
            if self.proc.poll() is not None:
                pytest.fail(f"dnsmasq exited: {self.proc.stdout.read()}")
        pytest.fail("dnsmasq did not answer")

    def stop(self) -> str:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=5)
        return out


@pytest.fixture
def dns():
    made = []

    def start(*records: str) -> Dnsmasq:
        d = Dnsmasq(list(records))
        made.append(d)
        return d

    yield start
    for d in made:
        d.stop()


def _locate(server: str, host: str, port=None, transport=None, secure=False):
    return wait(SipResolver(make_resolver((server,))).resolve(host, port, transport, secure), timeout=10)


def test_naptr_then_srv_then_addresses_in_the_order_rfc_3263_gives(dns):
    d = dns(
        # NAPTR: TCP has the better order; a SIPS record and one for a service we don't speak
        "--naptr-record=mcu.example.vn,20,10,S,SIP+D2U,,_sip._udp.mcu.example.vn",
        "--naptr-record=mcu.example.vn,10,10,S,SIP+D2T,,_sip._tcp.mcu.example.vn",
        "--naptr-record=mcu.example.vn,5,10,S,SIP+D2X,,_sip._sctp.mcu.example.vn",
        "--naptr-record=mcu.example.vn,30,10,S,SIPS+D2T,,_sips._tcp.mcu.example.vn",
        "--srv-host=_sip._tcp.mcu.example.vn,backup.mcu.example.vn,5070,20,10",
        "--srv-host=_sip._tcp.mcu.example.vn,main.mcu.example.vn,5080,10,10",
        "--srv-host=_sip._udp.mcu.example.vn,main.mcu.example.vn,5060,10,10",
        "--srv-host=_sips._tcp.mcu.example.vn,main.mcu.example.vn,5061,10,10",
        "--host-record=main.mcu.example.vn,127.0.0.21,::21",
        "--host-record=backup.mcu.example.vn,127.0.0.22",
        "--host-record=plain.example.vn,127.0.0.30",
        "--srv-host=_sip._udp.nonaptr.example.vn,main.mcu.example.vn,5090,10,10",
    )
    got = [(t.transport, t.host, t.port) for t in _locate(d.server, "mcu.example.vn")]
    # NAPTR order 10 (TCP) wins over 20 (UDP); SRV priority 10 (main) before 20 (backup); A and AAAA
    assert got == [("TCP", "127.0.0.21", 5080), ("TCP", "::21", 5080), ("TCP", "127.0.0.22", 5070)], got
    # sips: only the SIPS+D2T record counts
    assert [(t.transport, t.port) for t in _locate(d.server, "mcu.example.vn", secure=True)][:1] == [("TLS", 5061)]
    # transport=udp given: its SRV directly
    assert [(t.transport, t.port) for t in _locate(d.server, "mcu.example.vn", transport="UDP")][:1] == [("UDP", 5060)]
    # a port given: A/AAAA only, that port
    assert [(t.transport, t.host, t.port) for t in _locate(d.server, "backup.mcu.example.vn", port=5999)] == \
        [("UDP", "127.0.0.22", 5999)]
    # no NAPTR: SRV for each transport we speak, UDP first
    assert [(t.transport, t.port) for t in _locate(d.server, "nonaptr.example.vn")][:1] == [("UDP", 5090)]
    # no NAPTR, no SRV: the address and the default port
    assert [(t.transport, t.host, t.port) for t in _locate(d.server, "plain.example.vn")] == [("UDP", "127.0.0.30", 5060)]
    with pytest.raises(Exception, match="no SIP server in DNS"):
        _locate(d.server, "nothing.example.vn")


def _invite(gw, to: str) -> dict:
    """The operator's invite into the default plan's room 'demo' (the answer once the call is up)."""
    req = urllib.request.Request(f"http://127.0.0.1:{gw.port}/api/rooms/demo/dial", data=json.dumps({"to": to}).encode(),
                                 method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {gw.token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(exc.read().decode()) from None


def test_the_gateway_dials_a_sip_target_by_name(gateway, dns, tmp_path):  # noqa: F811
    mcu = Baresip("mcu", workdir=tmp_path / "mcu", audio_codecs=("PCMU/8000/1",), auto_answer=True)
    try:
        d = dns("--naptr-record=mcu.example.vn,10,10,S,SIP+D2U,,_sip._udp.mcu.example.vn",
                f"--srv-host=_sip._udp.mcu.example.vn,sip1.mcu.example.vn,{mcu.sip_port},10,10",
                "--host-record=sip1.mcu.example.vn,127.0.0.1")
        gw = gateway("--no-watch", "--rtp-ports", "49000-49199", config=f"dns_servers: [\"{d.server}\"]\n")
        body = _invite(gw, "sip:mcu@mcu.example.vn")
        assert body["protocol"] == "sip", body
        mcu.wait_established(timeout=10)
        roster = [p for r in json.loads(gw.get("/api/status")[2])["rooms"] for p in r["roster"]]
        assert [p["remote"] for p in roster] == [f"127.0.0.1:{mcu.sip_port}"], roster   # where the SRV pointed
    finally:
        mcu.stop()
    log = gw.stderr.read_text()
    assert "sip:mcu@mcu.example.vn: NAPTR mcu.example.vn → SRV _sip._udp.mcu.example.vn → sip1.mcu.example.vn:" in log, \
        log[-3000:]
    assert "query[NAPTR] mcu.example.vn" in d.stop()
    assert gw.stop() == 0


def test_the_gateway_dials_an_h323_target_by_name(gateway, dns, tmp_path):  # noqa: F811
    import sys

    from tests.test_run import REPO

    port = free_port()
    d = dns(f"--srv-host=_h323cs._tcp.national.example.vn,gk.national.example.vn,{port},10,10",
            "--host-record=gk.national.example.vn,127.0.0.1")
    gw = gateway("--no-watch", "--rtp-ports", "49200-49399", config=f"dns_servers: [\"{d.server}\"]\n")
    mcu = subprocess.Popen([sys.executable, "-m", "interop_tests.h323.endpoint", "--answer", str(port), "--alias",
                            "national-mcu", "--seconds", "3"], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    try:
        first = wait_line(mcu, "answering on", 20)     # listening (a loaded machine starts it slowly)
        body = _invite(gw, "h323:mcu@national.example.vn")
        assert body["protocol"] == "h323", body
        out, _ = mcu.communicate(timeout=20)
        out = first + out
        assert "connected; channels" in out, out[-2000:]
    finally:
        if mcu.poll() is None:
            mcu.kill()
            mcu.wait()
    assert f"national.example.vn → 127.0.0.1:{port}" in gw.stderr.read_text()
    assert "query[SRV] _h323cs._tcp.national.example.vn" in d.stop()
    assert gw.stop() == 0
