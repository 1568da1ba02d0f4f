"""Cầu bound to every address, with sites on a real (namespace) network: each is answered with the
address its packets come in on (SDP, Contact, H.245, RAS), so its audio reaches the room.

The test makes a network namespace and a veth pair (198.18.x.1 here, 198.18.x.2 inside), runs
`cau run --bind 0.0.0.0`, a baresip and the H.323 test endpoint (registering with the gatekeeper
and calling through it) inside the namespace and a baresip on loopback, and tears it all down.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from interop_tests.peers.baresip import Baresip
from interop_tests.peers.procs import wav_peak
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
PLAN = 'version: 1\nrooms:\n  - {id: hop, name: "Họp", numbers: ["1000"]}\nopen_registration: ["198.18.0.0/15"]\n'


def _ip(*args: str, ns: str | None = None) -> None:
    argv = ["ip", *(["netns", "exec", ns, "ip"] if ns else []), *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if out.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip()}")


@pytest.fixture
def netns():
    if shutil.which("ip") is None:
        pytest.fail("iproute2 (ip) is not installed (scripts/install-test-deps.sh installs it)")
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root")
    tag = f"{os.getpid() % 1000}{random.randrange(100)}"
    ns, here, there = f"cau-t{tag}", f"cau{tag}a", f"cau{tag}b"
    net = random.randrange(0, 256)
    outer, inner = f"198.18.{net}.1", f"198.18.{net}.2"
    yield from _veth(ns, here, there, (f"{outer}/24",), (f"{inner}/24",), outer, inner)


def _veth(ns: str, here: str, there: str, outer_addr: tuple[str, ...], inner_addr: tuple[str, ...], outer: str,
          inner: str):
    """A namespace and a veth pair with these addresses on each end (``ip addr add`` arguments), torn
    down afterwards; yields (namespace, outer address, inner address)."""
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", ns)
        _ip("addr", "add", *outer_addr, "dev", here, *(("nodad",) if ":" in outer else ()))
        _ip("link", "set", here, "up")
        _ip("addr", "add", *inner_addr, "dev", there, *(("nodad",) if ":" in inner else ()), ns=ns)
        _ip("link", "set", there, "up", ns=ns)
        _ip("link", "set", "lo", "up", ns=ns)
        yield ns, outer, inner
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


@pytest.fixture
def wildcard_gateway(tmp_path):
    (tmp_path / "plan.yaml").write_text(PLAN)
    ras = free_port()
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--bind", "0.0.0.0", "--http-port", "0", "--sip-port", "0",
         "--ras-port", str(ras), "--h323-port", "0", "--https-port", "0", "--sip-tls-port", "0",
         "--rtp-ports", "41000-41199", "--dialplan", str(tmp_path / "plan.yaml"), "--no-watch"],
        cwd=tmp_path, stdout=out.open("w"), stderr=err.open("w"),
        env={**os.environ, "PYTHONPATH": str(REPO), "XDG_STATE_HOME": str(tmp_path / "state")})
    try:
        deadline = time.monotonic() + 20
        ports: dict[str, int] = {}
        while time.monotonic() < deadline and len(ports) < 3:
            text = out.read_text()
            for key, pattern in (("http", r"HTTP listening on [\d.]+:(\d+)"), ("sip", r"\nSIP listening on [\d.]+:(\d+)"),
                                 ("h323", r"H\.323 call signalling listening on [\d.]+:(\d+)")):
                m = re.search(pattern, "\n" + text)
                if m:
                    ports[key] = int(m.group(1))
            if proc.poll() is not None:
                raise AssertionError(f"cau run exited: {err.read_text()}")
            time.sleep(0.05)
        assert len(ports) == 3, out.read_text() + err.read_text()
        ports["ras"] = ras
        yield proc, ports, out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _roster(http: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/status", timeout=5) as r:
        return [p for room in json.loads(r.read())["rooms"] for p in room["roster"]]


def test_sites_on_a_namespace_network_and_on_loopback_meet_with_audio_both_ways(netns, wildcard_gateway, tmp_path):
    ns, outer, inner = netns
    proc, ports, out = wildcard_gateway
    assert "bound to every address" in out.read_text() and outer in out.read_text()   # the banner names it
    local = Baresip("here", workdir=tmp_path / "here", audio_codecs=("PCMU/8000/1",), audio_source=("ausine", 440))
    away = Baresip("away", workdir=tmp_path / "away", audio_codecs=("PCMU/8000/1",), audio_source=("ausine", 1000),
                   host=inner, netns=ns, sip_trace=True)
    h323_log = tmp_path / "h323.txt"
    h323 = None
    try:
        local.dial(f"sip:1000@127.0.0.1:{ports['sip']}")
        local.wait_established(timeout=10)
        away.dial(f"sip:1000@{outer}:{ports['sip']}")
        away.wait_established(timeout=10)
        h323 = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "interop_tests.h323.endpoint", "--call", "1000",
             "--gatekeeper", f"{outer}:{ports['ras']}", "--host", inner, "--profile", "G711", "--no-fast-start",
             "--tone", "700", "--seconds", "4"],
            stdout=h323_log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
        time.sleep(3.0)
        roster = _roster(ports["http"])
        h323.wait(timeout=30)
        local.hangup()
        away.hangup()
        local.wait_closed(timeout=10)
        away.wait_closed(timeout=10)
    finally:
        local.stop()
        away.stop()
        if h323 is not None and h323.poll() is None:
            h323.kill()
    remotes = {p["name"]: p.get("remote", "") for p in roster}
    assert any(inner in str(r) for r in remotes.values()), roster
    # the SDP answer the namespace site got names the address it called, not loopback
    trace = (tmp_path / "away" / "stdout.log").read_text(errors="replace")
    assert f"c=IN IP4 {outer}" in trace and "c=IN IP4 127.0.0.1" not in trace, trace[-3000:]
    assert re.search(rf"Contact: <sip:cau@{re.escape(outer)}:", trace), "Contact does not carry the reachable address"
    freq, _ = wav_peak(local.received_audio())
    assert abs(freq - 1000) < 20 or abs(freq - 700) < 20, f"the loopback site heard {freq:.0f} Hz, not the others"
    freq, _ = wav_peak(away.received_audio())
    assert abs(freq - 440) < 20 or abs(freq - 700) < 20, f"the namespace site heard {freq:.0f} Hz: no audio reached it"
    text = h323_log.read_text()
    assert "registered as" in text, text        # RRQ → RCF, then ARQ → ACF naming our reachable address
    m = re.search(r"heard (\d+) Hz at (-?[\d.]+) dBFS", text)
    assert m and float(m.group(2)) > -40, f"the H.323 system in the namespace heard nothing:\n{text}"
    assert h323.returncode == 0, text


@pytest.fixture
def netns6():
    """A namespace reached over IPv6 only (documentation prefix 2001:db8::/32, no DAD wait)."""
    if shutil.which("ip") is None:
        pytest.fail("iproute2 (ip) is not installed (scripts/install-test-deps.sh installs it)")
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root")
    tag = f"{os.getpid() % 1000}{random.randrange(100)}"
    ns, here, there = f"cau-6{tag}", f"cau{tag}c", f"cau{tag}d"
    net = f"{random.randrange(0, 0xffff):x}"
    outer, inner = f"2001:db8:{net}::1", f"2001:db8:{net}::2"
    yield from _veth(ns, here, there, (f"{outer}/64",), (f"{inner}/64",), outer, inner)


def test_bound_to_every_ipv6_address_a_site_on_an_ipv6_network_is_answered_with_its_address(netns6, tmp_path):
    ns, outer, inner = netns6
    (tmp_path / "plan.yaml").write_text(PLAN)
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--bind", "::", "--http-port", "0", "--sip-port", "0",
         "--ras-port", "0", "--h323-port", "0", "--https-port", "0", "--sip-tls-port", "0",
         "--rtp-ports", "41200-41399", "--dialplan", str(tmp_path / "plan.yaml"), "--no-watch"],
        cwd=tmp_path, stdout=out.open("w"), stderr=err.open("w"),
        env={**os.environ, "PYTHONPATH": str(REPO), "XDG_STATE_HOME": str(tmp_path / "state")})
    local = away = None
    try:
        deadline = time.monotonic() + 20
        sip = None
        while time.monotonic() < deadline and sip is None:
            m = re.search(r"\nSIP listening on [0-9a-f:.]*:(\d+)/", "\n" + out.read_text())
            sip = int(m.group(1)) if m else None
            assert proc.poll() is None, err.read_text()
            time.sleep(0.05)
        assert sip, out.read_text() + err.read_text()
        assert outer in out.read_text(), out.read_text()               # the banner names the address
        local = Baresip("here6", workdir=tmp_path / "here", audio_codecs=("PCMU/8000/1",), host="::1",
                        audio_source=("ausine", 440))
        away = Baresip("away6", workdir=tmp_path / "away", audio_codecs=("PCMU/8000/1",), host=inner, netns=ns,
                       audio_source=("ausine", 1000), sip_trace=True)
        local.dial(f"sip:1000@[::1]:{sip}")
        local.wait_established(timeout=10)
        away.dial(f"sip:1000@[{outer}]:{sip}")
        away.wait_established(timeout=10)
        time.sleep(3.0)
        local.hangup()
        away.hangup()
        local.wait_closed(timeout=10)
        away.wait_closed(timeout=10)
    finally:
        for b in (local, away):
            if b is not None:
                b.stop()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    trace = (tmp_path / "away" / "stdout.log").read_text(errors="replace")
    assert f"c=IN IP6 {outer}" in trace and "c=IN IP6 ::1" not in trace, trace[-3000:]
    assert re.search(rf"Contact: <sip:cau@\[{re.escape(outer)}\]:", trace), trace[-3000:]
    freq, _ = wav_peak(away.received_audio())
    assert abs(freq - 440) < 20, f"the IPv6 site heard {freq:.0f} Hz: no audio reached it"
    freq, _ = wav_peak(local.received_audio())
    assert abs(freq - 1000) < 20, f"the ::1 site heard {freq:.0f} Hz"
