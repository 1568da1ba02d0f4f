"""The conformance suite's system under test: a running Cầu, or any SIP endpoint/MCU a lab names.

By default a Cầu gateway is started on loopback for the session (its own dial
plan, ``interop_tests/dialplan.yaml``, ephemeral ports). A lab can point the
suite at another system instead::

    cau conformance --sip-target 192.0.2.20:5060 --room 1000 --pin-room 2000 --pin 2468

(the options are passed to pytest). Tests that need to look inside Cầu (its
HTTP status, its logs) are marked ``cau_only`` and fail, with the reason, when
the target is not a Cầu started by the suite.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
DIALPLAN = HERE / "dialplan.yaml"


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("cau", "Cầu conformance target")
    g.addoption("--sip-target", metavar="HOST:PORT", help="test this SIP system instead of starting a local Cầu")
    g.addoption("--room", default="1000", help="a room number without PIN on the target (default 1000)")
    g.addoption("--pin-room", default="2000", help="a room number with a PIN on the target (default 2000)")
    g.addoption("--pin", default="2468", help="that room's PIN (default 2468)")
    g.addoption("--evidence-dir", metavar="DIR", help="where cases keep what a person would look at (screenshots); "
                "cau conformance puts it in the report folder")
    g.addoption("--video-room", default="6000",
                help="a room number without PIN whose video layout is cp-2x2, filled in join order (default 6000)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cau_only: needs the Cầu started by the suite (looks at its status or logs)")


@dataclass
class Target:
    host: str
    sip_port: int
    room: str
    pin_room: str
    pin: str
    video_room: str = "6000"
    http_port: int | None = None     # only for a Cầu the suite started
    https_port: int | None = None    # its join page and WHIP/WHEP (self-signed certificate)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    users: dict[str, str] = field(default_factory=dict)  # registration accounts of the suite's dial plan
    api_token: str | None = None     # operator actions of a Cầu the suite started
    sip_tls_port: int | None = None  # SIP over TLS (RFC 3261 §26), when the target has it

    @property
    def is_local_cau(self) -> bool:
        return self.proc is not None

    def uri(self, user: str) -> str:
        return f"sip:{user}@{self.host}:{self.sip_port}"

    def status(self) -> dict:
        if self.http_port is None:
            pytest.fail("this test looks at Cầu's /api/status: run it against the Cầu the suite starts")
        with urllib.request.urlopen(f"http://{self.host}:{self.http_port}/api/status", timeout=5) as r:
            return json.loads(r.read())

    def room_participants(self, room_id: str) -> int:
        for r in self.status()["rooms"]:
            if r["id"] == room_id:
                return r["participants"]
        return 0

    def wait_participants(self, room_id: str, n: int, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            got = self.room_participants(room_id)
            if got == n or time.monotonic() > deadline:
                return got
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


def _rtp_base() -> int:
    """First port of a 1000-port RTP range below the kernel's ephemeral range, so that
    the ports the peers are given (bound to port 0 first) never fall in it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    top = max(low - 1000, 11000)
    return random.randrange(10000, top, 1000)


def _start_cau(tmp: Path) -> Target:
    base = _rtp_base()
    out, err = tmp / "cau.out", tmp / "cau.log"
    settings = tmp / "cau.yaml"
    # ring briefly before answering so that CANCEL can be exercised
    # browsers and WHIP clients on loopback: offer 127.0.0.1 as the ICE host candidate
    settings.write_text(f"sip_answer_delay: 0.3\nstate_dir: {tmp / 'state'}\nice_hosts: 127.0.0.1\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(settings), "--bind", "127.0.0.1", "--sip-port", "0", "--ras-port", "0", "--h323-port", "0", "--http-port", "0", "--https-port", "0", "--sip-tls-port", "0",
         "--rtp-ports", f"{base}-{base + 999}", "--dialplan", str(DIALPLAN), "--no-watch"],
        stdout=out.open("w"), stderr=err.open("w"), start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")},
    )
    deadline = time.monotonic() + 30
    sip = http = https = sip_tls = None
    while time.monotonic() < deadline and (sip is None or http is None or https is None or sip_tls is None):
        text = out.read_text()
        m = re.search(r"SIP over TLS listening on [\d.]+:(\d+)", text)
        sip_tls = int(m.group(1)) if m else None
        m = re.search(r"SIP listening on [\d.]+:(\d+)", text)
        sip = int(m.group(1)) if m else None
        m = re.search(r"HTTP listening on [\d.]+:(\d+)", text)
        http = int(m.group(1)) if m else None
        m = re.search(r"HTTPS listening on [\d.]+:(\d+)", text)
        https = int(m.group(1)) if m else None
        if proc.poll() is not None:
            pytest.fail(f"cau run exited {proc.returncode}: {err.read_text()}")
        time.sleep(0.05)
    if sip is None or http is None:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("cau run did not report its SIP and HTTP ports within 30 s: " + err.read_text())
    token = (tmp / "state" / "api_token").read_text().strip()
    return Target("127.0.0.1", sip, "1000", "2000", "2468", "6000", http, https, proc, err,
                  users={"baresip-a": "secret-a", "pjsua-b": "secret-b", "lab-hdx-pw": "secret-h235"}, api_token=token,
                  sip_tls_port=sip_tls)


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest):
    opt = request.config.getoption("--sip-target")
    if opt:
        host, _, port = opt.rpartition(":")
        yield Target(host or opt, int(port or 5060), request.config.getoption("--room"),
                     request.config.getoption("--pin-room"), request.config.getoption("--pin"),
                     request.config.getoption("--video-room"))
        return
    tmp = Path(tempfile.mkdtemp(prefix="cau-conformance-"))
    t = _start_cau(tmp)
    yield t
    os.killpg(t.proc.pid, signal.SIGTERM)
    try:
        t.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(t.proc.pid, signal.SIGKILL)
        t.proc.wait()


@pytest.fixture
def evidence_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The report's evidence folder (``--evidence-dir``), else the case's temporary folder."""
    opt = request.config.getoption("--evidence-dir")
    path = Path(opt) if opt else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def cau(target: Target) -> Target:
    """The target, which must be the Cầu the suite started (for tests that look inside)."""
    if not target.is_local_cau:
        pytest.fail("this case inspects Cầu itself (status/logs); it cannot run against --sip-target")
    return target
