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
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from interop_tests.catalogue import PROFILES, case_for

HERE = Path(__file__).resolve().parent
#: the --profile of this run (interop_tests.verdicts reads it)
PROFILE = "cau"
DIALPLAN = HERE / "dialplan.yaml"


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("cau", "Cầu conformance target")
    g.addoption("--sip-target", metavar="HOST:PORT", help="test this SIP system instead of starting a local Cầu")
    g.addoption("--sip-tls-target", metavar="HOST:PORT",
                help="the SIP system's TLS address (default: its host, port 5061, if a TLS handshake succeeds there)")
    g.addoption("--room", default="1000", help="a room number without PIN on the target (default 1000)")
    g.addoption("--pin-room", default="2000", help="a room number with a PIN on the target (default 2000)")
    g.addoption("--pin", default="2468", help="that room's PIN (default 2468)")
    g.addoption("--evidence-dir", metavar="DIR", help="where cases keep what a person would look at (screenshots); "
                "cau conformance puts it in the report folder")
    g.addoption("--video-room", default="6000",
                help="a room number without PIN whose video layout is cp-2x2, filled in join order (default 6000)")
    g.addoption("--profile", default="cau", choices=PROFILES,
                help="the kind of system under test: chooses the cases (interop_tests/catalogue.py); default cau")
    g.addoption("--h323-target", metavar="HOST:PORT", help="an H.323 system's call signalling address")
    g.addoption("--gatekeeper", metavar="HOST:PORT", help="an H.323 gatekeeper's RAS address")
    g.addoption("--whip-target", metavar="URL", help="a WHIP server's base URL (https://host:port)")
    g.addoption("--h323-alias", help="an alias the gatekeeper lets the suite register (RAS cases)")
    g.addoption("--user", help="an account on the SIP registrar (registration cases)")
    g.addoption("--password", help="that account's password")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cau_only: needs the Cầu started by the suite (looks at its status or logs)")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """Every case must be in the catalogue; the profile chooses which run. Each case's id, title,
    clause and area go into the JUnit XML as properties (the report reads them)."""
    ours = [it for it in items if HERE in Path(str(it.path)).parents]    # not tests/ in the same session
    mine = {id(it) for it in ours}
    missing = sorted({it.originalname for it in ours if case_for(it.originalname) is None})
    if missing:
        raise pytest.UsageError("cases missing from interop_tests/catalogue.py: " + ", ".join(missing))
    global PROFILE
    profile = PROFILE = config.getoption("--profile")
    keep, drop = [], []
    for it in items:
        c = case_for(it.originalname) if id(it) in mine else None
        if c is None:
            keep.append(it)
            continue
        (keep if profile in c.applies else drop).append(it)
        it.user_properties += [("case_id", c.id), ("title", c.title), ("clause", c.clause), ("area", c.area),
                               ("checks", c.checks)]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A peer that cannot be found (interop_tests.peers.procs.PeerMissing) leaves the case without a
    judgement: INCONCLUSIVE, saying what to install, for a lab's target; against Cầu (profile cau)
    it stays a failure, as every missing peer must fail loudly there."""
    outcome = yield
    rep = outcome.get_result()
    if PROFILE == "cau" or call.excinfo is None or rep.outcome != "failed":
        return
    from interop_tests.peers.procs import PeerMissing

    if call.excinfo.errisinstance(PeerMissing):
        rep.outcome = "skipped"
        rep.longrepr = (str(item.path), item.location[1] or 0,
                        f"Skipped: INCONCLUSIVE: a peer the case needs is missing: {call.excinfo.value}")


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
    h323_port: int | None = None     # H.225.0 call signalling and RAS of a Cầu the suite started
    ras_port: int | None = None
    rtp_range: tuple[int, int] | None = None

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
    h323 = ras = None
    while time.monotonic() < deadline and (sip is None or http is None or https is None or sip_tls is None
                                           or h323 is None or ras is None):
        text = out.read_text()
        m = re.search(r"H\.323 call signalling listening on [\d.]+:(\d+)", text)
        h323 = int(m.group(1)) if m else None
        m = re.search(r"H\.323 RAS \(gatekeeper\) listening on [\d.]+:(\d+)", text)
        ras = int(m.group(1)) if m else None
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
                  sip_tls_port=sip_tls, h323_port=h323, ras_port=ras, rtp_range=(base, base + 999))


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest):
    opt = request.config.getoption("--sip-target")
    h323_opt = request.config.getoption("--h323-target") or request.config.getoption("--gatekeeper")
    if not opt and (h323_opt or request.config.getoption("--whip-target")):
        # another system, reached by H.323 or WHIP only: no Cầu is started; SIP cases do not apply
        host = (h323_opt or "").rpartition(":")[0] or "127.0.0.1"
        yield Target(host, 0, request.config.getoption("--room"), request.config.getoption("--pin-room"),
                     request.config.getoption("--pin"), request.config.getoption("--video-room"))
        return
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


def _ports_of(text: str | None) -> int | None:
    if not text:
        return None
    m = re.search(r":(\d+)(?:/|$)", text.rsplit("@", 1)[-1])
    return int(m.group(1)) if m else None


@pytest.fixture(autouse=True)
def case_evidence(request: pytest.FixtureRequest):
    """With ``--evidence-dir``: a folder per case with a capture of its traffic, the ladder read
    back from it, its measurements and its peers' logs (interop_tests.evidence). Without it,
    nothing (a plain pytest run)."""
    import logging

    from interop_tests import evidence as ev
    from interop_tests.peers import procs

    base = request.config.getoption("--evidence-dir")
    case = case_for(request.node.originalname) if HERE in Path(str(request.node.path)).parents else None
    if not base or case is None:
        yield None
        return
    param = request.node.name.split("[", 1)[1].rstrip("]") if "[" in request.node.name else None
    folder = Path(base) / ev.folder_name(case.id, param)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    record = ev.CaseEvidence(folder, case.id, request.node.nodeid)
    request.node.user_properties.append(("evidence", folder.name))
    # what to capture: the target's signalling ports and media range (the Cầu the suite started),
    # or everything to and from a target on another machine
    opts = request.config.getoption
    sip_ports, ras_ports, tcp_ports, udp_ports = [], [], [], []
    rtp_range = None
    host = "127.0.0.1"
    external = any(opts(n) for n in ("--sip-target", "--h323-target", "--gatekeeper", "--whip-target"))
    t = None if external else request.getfixturevalue("target")
    if t is None:
        for name in ("--sip-target", "--h323-target", "--gatekeeper", "--whip-target"):
            text = opts(name)
            if text:
                host = re.sub(r"^\w+://", "", text).split("/")[0].rpartition(":")[0].strip("[]") or host
        sip = _ports_of(opts("--sip-target"))
        sip_ports += [sip] if sip else []
        tls = _ports_of(opts("--sip-tls-target")) or (5061 if sip else None)
        tcp_ports += [tls] if tls else []
        tcp_ports += sip_ports + [p for p in (_ports_of(opts("--h323-target")), _ports_of(opts("--whip-target"))) if p]
        gk = _ports_of(opts("--gatekeeper"))
        ras_ports += [gk] if gk else []
        udp_ports += sip_ports + ras_ports
    else:
        sip_ports = [p for p in (t.sip_port,) if p]
        ras_ports = [p for p in (t.ras_port,) if p]
        tcp_ports = [p for p in (t.sip_port, t.sip_tls_port, t.h323_port, t.https_port) if p]
        udp_ports = sip_ports + ras_ports
        rtp_range = t.rtp_range
    record.target_ports = sorted({p for p in tcp_ports + udp_ports if p})
    loopback = host.startswith("127.") or host in ("::1", "localhost")
    quiet = [t.http_port] if t is not None else []          # the status page the suite polls
    bpf = ev.capture_filter(host, tcp_ports, udp_ports, rtp_range, loopback, quiet)
    from interop_tests.peers.capture import LoopbackCapture

    cap = LoopbackCapture(bpf, folder / "capture.pcapng", interface="lo" if loopback else "any",
                          max_kb=ev.CAPTURE_KB, duration=900)
    try:
        cap.__enter__()
    except BaseException as exc:            # no tshark, no root: the case runs, the report says why
        cap = None
        record.capture_note = f"no capture: {exc}"
    procs.STARTED.clear()
    handler = logging.FileHandler(folder / "suite.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    t0 = time.monotonic()
    cau_log = None                                          # the gateway's log from here on
    if t is not None and t.log_path is not None and t.log_path.exists():
        cau_log = (t.log_path, t.log_path.stat().st_size)
    ev.CURRENT = record
    try:
        yield record
    finally:
        ev.CURRENT = None
        root.removeHandler(handler)
        handler.close()
        root.setLevel(old_level)
        if cap is not None:
            try:
                cap.stop()
            except BaseException as exc:
                record.capture_note = f"capture cut short: {exc}"
            if (folder / "capture.pcapng").exists():
                record.capture = "capture.pcapng"
                record.ladder = ev.read_ladder(folder / "capture.pcapng", sip_ports, ras_ports)
        for p in list(procs.STARTED):
            record.keep_text(f"{p.name}.out", " ".join(p.argv) + "\n\n" + p.output)   # two baresips: two files
            if p.log_path is not None and p.log_path.parent.is_dir():
                for extra in sorted(p.log_path.parent.glob("*.log"))[:6]:
                    if extra != p.log_path:
                        record.attach(extra, f"{p.name}-{extra.name}")
        procs.STARTED.clear()
        if cau_log is not None:
            path, start = cau_log
            try:
                with path.open("rb") as f:
                    f.seek(start)
                    (folder / "cau.log").write_bytes(f.read(4 * 1024 * 1024))
                record.files.append("cau.log")
            except OSError:
                pass
        if (folder / "suite.log").stat().st_size:
            record.files.append("suite.log")
        record.measure("case duration", round(time.monotonic() - t0, 2), "s")
        record.save()


@pytest.fixture
def evidence_dir(request: pytest.FixtureRequest, tmp_path: Path, case_evidence) -> Path:
    """The case's folder in the report's evidence (``--evidence-dir``), else its temporary folder."""
    if case_evidence is not None:
        return case_evidence.folder
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


@dataclass
class SipCapabilities:
    """What the target's answer to OPTIONS says about it (RFC 3261 §11)."""

    status: int | None
    allow: set[str]
    supported: set[str]
    accept: set[str]
    server: str

    def offers(self, option: str) -> bool:
        return option.lower() in self.supported


def probe_sip(host: str, port: int, timeout: float = 3.0, user: str | None = None) -> SipCapabilities:
    """OPTIONS to ``sip:[user@]host:port`` (a phone answers for its own user only: the room/number
    the cases call), read for Allow, Supported, Accept and Server/User-Agent."""
    import socket

    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("", 0))
        lport = s.getsockname()[1]
        me = "127.0.0.1" if host.startswith("127.") else socket.gethostbyname(socket.gethostname())
        ruri = f"sip:{user + '@' if user else ''}{host}:{port}"
        msg = (f"OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {me}:{lport};rport;branch=z9hG4bKcap{lport}\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:lab@{me}>;tag=cap{lport}\r\nTo: <{ruri}>\r\n"
               f"Call-ID: cap{lport}@{me}\r\nCSeq: 1 OPTIONS\r\nAccept: application/sdp\r\n"
               f"User-Agent: cau-conformance\r\nContent-Length: 0\r\n\r\n").encode()
        s.settimeout(timeout / 3)
        for _ in range(3):
            s.sendto(msg, (host, port))
            try:
                data = s.recv(65535).decode("utf-8", "replace")
            except OSError:
                continue
            if not data.startswith("SIP/2.0 1"):
                break
        else:
            return SipCapabilities(None, set(), set(), set(), "")
    finally:
        s.close()

    def header(*names: str) -> list[str]:
        out = []
        for line in data.split("\r\n")[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() in names:
                out += [x.strip() for x in v.split(",") if x.strip()]
        return out

    status = int(data.split(" ", 2)[1]) if data.startswith("SIP/2.0 ") else None
    server = ", ".join(header("server", "user-agent"))
    return SipCapabilities(status, {m.upper() for m in header("allow")}, {o.lower() for o in header("supported", "k")},
                           {a.lower() for a in header("accept")}, server)


def probe_tls(host: str, port: int, timeout: float = 3.0) -> dict | None:
    """Complete a TLS handshake with ``host:port`` (the certificate is read, not judged): what the
    report shows of it, or None when nothing answers TLS there."""
    import hashlib
    import socket
    import ssl

    from gateway.sip.dns import is_ip

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=None if is_ip(host) else host) as s:
            der, version, cipher = s.getpeercert(binary_form=True), s.version(), s.cipher()
    except (OSError, ValueError):
        return None
    out = {"version": version or "", "cipher": cipher[0] if cipher else "", "der": der,
           "sha256": ":".join(f"{b:02X}" for b in hashlib.sha256(der or b"").digest())}
    try:
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        out["subject"] = cert.subject.rfc4514_string()
        out["issuer"] = cert.issuer.rfc4514_string()
        out["not_before"], out["not_after"] = cert.not_valid_before_utc, cert.not_valid_after_utc
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            out["names"] = [str(n.value) for n in san]
        except x509.ExtensionNotFound:
            out["names"] = []
    except (ImportError, ValueError, TypeError, AttributeError):   # AttributeError: cryptography < 42
        pass
    return out


@pytest.fixture(scope="session")
def sip_tls(request: pytest.FixtureRequest, target) -> tuple[str, int, dict]:
    """The target's SIP over TLS address and what its handshake showed; NOT APPLICABLE when it
    offers none (``--sip-tls-target``, else its host on port 5061; a Cầu the suite started: its own)."""
    opt = request.config.getoption("--sip-tls-target")
    if opt:
        host, sep, port = opt.rpartition(":")
        if not sep or not port.isdigit() or host.endswith(":"):   # HOST, [v6] or a bare v6 address
            host, port = opt, "5061"
        host, port = host.strip("[]") or target.host, int(port)
    elif target.is_local_cau:
        host, port = target.host, target.sip_tls_port or 0
    elif target.sip_port:
        host, port = target.host, 5061
    else:
        pytest.skip("NOT APPLICABLE: the target has no SIP address (--sip-target)")
    shown = probe_tls(host, port) if port else None
    if shown is None and opt:
        pytest.fail(f"--sip-tls-target {opt}: no TLS handshake completed there (the lab said the target has TLS)")
    if shown is None:
        from interop_tests.verdicts import not_applicable

        not_applicable(f"the target offers no SIP over TLS: nothing completed a TLS handshake on {host}:{port}"
                       + ("" if opt else " (give --sip-tls-target HOST:PORT)"))
    return host, port, shown


@pytest.fixture(scope="session")
def sip_caps(target) -> SipCapabilities:
    """The target's OPTIONS answer, asked once (cases use it to decide NOT APPLICABLE)."""
    if not target.sip_port:
        pytest.skip("NOT APPLICABLE: the target has no SIP address (--sip-target)")
    return probe_sip(target.host, target.sip_port, user=target.room)
