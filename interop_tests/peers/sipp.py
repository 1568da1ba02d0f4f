"""sipp (package ``sip-tester``) as a scriptable SIP peer, plus a raw UDP sender.

    from interop_tests.peers.sipp import Sipp, send_raw

    sipp = Sipp(workdir)                                   # or the ``sipp`` fixture
    r = sipp.uac("127.0.0.1:5060", "uac_audio", service="8100", call_ms=3000)
    assert r.ok, r.explain()                               # exit 0, every call succeeded

    uas = sipp.uas()                                       # built-in uas, background
    sipp.uac(f"127.0.0.1:{uas.port}")                      # built-in uac
    uas.stop()                                             # → SippResult of the server

Scenarios: ``"builtin:uac"`` / ``"builtin:uas"`` (sipp's own), a name of a file in
``interop_tests/peers/scenarios/`` (``"uac_cancel"`` or ``"uac_cancel.xml"``) or a
path. Each run gets its own directory under ``workdir`` holding the logs
(``messages.log``, ``errors.log``, ``logs.log``, ``stats.csv``, ``stdout.log``)
and the tone file ``cau_tone_pcmu.ulaw`` (1 kHz, mu-law) that ``uac_audio.xml``
streams with sipp's ``rtp_stream``.

sipp facts (3.6.1 on Debian 12): exit code 0 only when every call succeeded;
``-timeout N -timeout_error`` makes a hung run fail instead of blocking; the
default pause length (``<pause/>``) is ``-d`` ms; ``rtp_stream`` sends from the
``-mp`` port (which the scenario advertises as ``[rtpstream_audio_port]``) and
does no keyword substitution in its file name; a variable assigned but never
used is a fatal error (hence ``<Reference>`` in the scenarios).
"""
from __future__ import annotations

import csv
import os
import signal
import itertools
import re
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .procs import LOOPBACK, PeerProcess, free_port, free_port_block, require_binary

SCENARIOS = Path(__file__).with_name("scenarios")
TONE_FILE = "cau_tone_pcmu.ulaw"
PCAP_30MS_FILE = "cau_tone_pcmu_30ms.pcap"  # uac_audio_30ms.xml plays it


# --------------------------------------------------------------------------- helpers
def scenario_path(name: str) -> Path:
    """Resolve a scenario: a shipped name (with or without .xml) or a path."""
    p = Path(name)
    if p.is_file():
        return p
    for cand in (SCENARIOS / name, SCENARIOS / f"{name}.xml"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"no sipp scenario {name!r}; shipped: {sorted(x.stem for x in SCENARIOS.glob('*.xml'))}")


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """G.711 mu-law encode int16 samples (ITU-T G.711, with the 0x84 bias)."""
    x = pcm.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0x00)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exp = np.floor(np.log2(mag)).astype(np.int32) - 7
    exp = np.clip(exp, 0, 7)
    mant = (mag >> (exp + 3)) & 0x0F
    return (~(sign | (exp << 4) | mant) & 0xFF).astype(np.uint8).tobytes()


def write_tone(path: Path, freq: float = 1000.0, seconds: float = 2.0,
               amplitude: float = 0.3) -> Path:
    """Raw mu-law 8 kHz tone (a whole number of 20 ms frames, loops cleanly at 1 kHz)."""
    n = int(8000 * seconds) // 160 * 160
    t = np.arange(n) / 8000.0
    pcm = (np.sin(2 * np.pi * freq * t) * amplitude * 32767).astype(np.int16)
    path.write_bytes(ulaw_encode(pcm))
    return path


def write_rtp_pcap(path: Path, ptime_ms: int = 30, freq: float = 1000.0, seconds: float = 6.0,
                   amplitude: float = 0.3, payload_type: int = 0) -> Path:
    """A pcap (Ethernet/IPv4/UDP) of RTP packets carrying a mu-law tone, ``ptime_ms`` per
    packet and timed that far apart, for sipp's ``play_pcap_audio`` (which keeps the
    payloads, sizes and timing and sends them to the negotiated media address)."""
    import struct

    n = 8000 * ptime_ms // 1000
    total = int(seconds * 1000 / ptime_ms)
    t = np.arange(total * n) / 8000.0
    audio = ulaw_encode((np.sin(2 * np.pi * freq * t) * amplitude * 32767).astype(np.int16))
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # pcap, Ethernet
    for k in range(total):
        rtp = struct.pack("!BBHII", 0x80, (0x80 if k == 0 else 0) | payload_type, k, k * n, 0x5EED) + \
            audio[k * n:(k + 1) * n]
        udp = struct.pack("!HHHH", 40000, 40000, 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), k & 0xFFFF, 0, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])) + udp
        frame = b"\x00" * 12 + b"\x08\x00" + ip
        usec = k * ptime_ms * 1000
        out.append(struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))
    return path


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------- results
@dataclass
class SippResult:
    exit_code: int
    successful: int
    failed: int
    run_dir: Path
    argv: list[str]
    stats: dict[str, str] = field(default_factory=dict)   # last row of stats.csv
    stdout: str = ""

    @property
    def stats_csv(self) -> Path:
        return self.run_dir / "stats.csv"

    @property
    def messages_log(self) -> str:
        """Every SIP message sent and received (``-trace_msg``)."""
        return _read(self.run_dir / "messages.log")

    @property
    def errors_log(self) -> str:
        return _read(self.run_dir / "errors.log")

    @property
    def logs(self) -> str:
        """Output of the scenario's ``<log>`` actions."""
        return _read(self.run_dir / "logs.log")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.failed == 0 and self.successful > 0

    def received(self, start_line: str) -> list[str]:
        """Received messages (whole text) whose first line starts with ``start_line``,
        e.g. ``"SIP/2.0 200"`` or ``"INVITE"``."""
        out = []
        for block in re.split(r"\n-{5,}.*\n", self.messages_log):
            m = re.search(r"message received \[\d+\] bytes :\s*\n\n?(.*)", block, re.S)
            if m and m.group(1).lstrip().startswith(start_line):
                out.append(m.group(1).strip())
        return out

    def explain(self) -> str:
        return (f"sipp exit {self.exit_code}, {self.successful} ok, {self.failed} failed\n"
                f"argv: {' '.join(self.argv)}\nrun dir: {self.run_dir}\n"
                f"errors:\n{self.errors_log[-3000:]}\nstdout tail:\n{self.stdout[-2000:]}")


def _result(rc: int, run_dir: Path, argv: list[str], stdout: str) -> SippResult:
    stats: dict[str, str] = {}
    p = run_dir / "stats.csv"
    if p.exists():
        rows = list(csv.reader(p.read_text(errors="replace").splitlines(), delimiter=";"))
        if len(rows) >= 2:
            stats = dict(zip(rows[0], rows[-1]))

    def num(key: str) -> int:
        try:
            return int(stats.get(key, "0") or 0)
        except ValueError:
            return 0

    return SippResult(rc, num("SuccessfulCall(C)"), num("FailedCall(C)"), run_dir, argv,
                      stats, stdout)


# --------------------------------------------------------------------------- server
class SippServer:
    """A background sipp (usually a uas). ``stop()`` ends it and returns its result."""

    def __init__(self, proc: PeerProcess, port: int, media_port: int, run_dir: Path,
                 argv: list[str]):
        self.proc, self.port, self.media_port = proc, port, media_port
        self.run_dir, self.argv = run_dir, argv
        self.result: SippResult | None = None

    @property
    def uri_host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def wait(self, timeout: float = 30.0) -> SippResult:
        """Wait for sipp to exit by itself (``calls=`` reached or its -timeout)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.stop()
            rc = -1
        return self._finish(rc)

    def stop(self, graceful: bool = True) -> SippResult:
        """``graceful``: SIGUSR1, sipp's "quit": it finishes the calls in progress (the
        built-in uas keeps each ended call 4 s in its closing ``timewait``), writes the
        final statistics and exits 0 if every call succeeded. Otherwise kill at once."""
        if self.result is None:
            if self.proc.alive() and graceful:
                try:
                    os.kill(self.proc.pid, signal.SIGUSR1)
                    self.proc.wait(8)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
            self.proc.stop(grace=3.0)
            self._finish(self.proc.proc.returncode if self.proc.proc.returncode is not None else -1)
        return self.result  # type: ignore[return-value]

    def _finish(self, rc: int) -> SippResult:
        if self.result is None:
            self.result = _result(rc, self.run_dir, self.argv, self.proc.output)
        return self.result


# --------------------------------------------------------------------------- sipp
class Sipp:
    """Runs sipp with logs under ``workdir``; remembers servers so ``close()`` ends them."""

    def __init__(self, workdir: str | Path | None = None):
        self.binary = require_binary("sipp")
        self._own_tmp = None
        if workdir is None:
            self._own_tmp = tempfile.TemporaryDirectory(prefix="cau-sipp-")
            workdir = self._own_tmp.name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._n = itertools.count(1)
        self.servers: list[SippServer] = []

    def _run_dir(self, kind: str) -> Path:
        d = self.workdir / f"sipp-{next(self._n):02d}-{kind}"
        d.mkdir()
        write_tone(d / TONE_FILE)
        write_rtp_pcap(d / PCAP_30MS_FILE)
        return d

    def _argv(self, scenario: str, run_dir: Path, *, local_port: int, media_port: int,
              timeout: float, keys: dict | None, extra: Sequence[str]) -> list[str]:
        if scenario.startswith("builtin:"):
            scen = ["-sn", scenario.split(":", 1)[1]]
        else:
            scen = ["-sf", str(scenario_path(scenario).resolve())]
        argv = [self.binary, *scen, "-i", LOOPBACK, "-p", str(local_port),
                "-mi", LOOPBACK, "-mp", str(media_port), "-nostdin",
                "-trace_msg", "-message_file", str(run_dir / "messages.log"),
                "-trace_err", "-error_file", str(run_dir / "errors.log"),
                "-trace_logs", "-log_file", str(run_dir / "logs.log"),
                "-trace_stat", "-stf", str(run_dir / "stats.csv"),
                "-timeout", f"{int(max(1, timeout))}s", "-timeout_error"]
        for k, v in (keys or {}).items():
            argv += ["-key", str(k), str(v)]
        return argv + [str(a) for a in extra]

    def uac(self, target: str, scenario: str = "builtin:uac", *, calls: int = 1,
            rate: float = 10, service: str = "1000", call_ms: int = 1000,
            auth: tuple[str, str] | None = None, local_port: int | None = None,
            media_port: int | None = None, keys: dict | None = None,
            extra: Sequence[str] = (), timeout: float = 30) -> SippResult:
        """Place ``calls`` calls (or transactions) to ``target`` ("host:port") and wait.

        ``service`` is the request-URI user (the room number); ``call_ms`` is the
        length of ``<pause/>`` (sipp's ``-d``); ``auth=(user, password)`` answers
        digest challenges. sipp is killed if it outlives ``timeout`` + 10 s.
        """
        run_dir = self._run_dir("uac")
        media_port = media_port or free_port_block(4)   # audio RTP/RTCP, video RTP/RTCP
        local_port = local_port or free_port()
        argv = self._argv(scenario, run_dir, local_port=local_port, media_port=media_port,
                          timeout=timeout, keys=keys, extra=extra)
        argv[1:1] = [target]
        argv += ["-s", service, "-m", str(calls), "-r", str(rate), "-d", str(call_ms)]
        if auth:
            argv += ["-au", auth[0], "-ap", auth[1]]
        proc = PeerProcess(argv, cwd=run_dir, name="sipp-uac",
                           log_path=run_dir / "stdout.log")
        try:
            rc = proc.wait(timeout + 10)
        except subprocess.TimeoutExpired:
            rc = -1
        finally:
            proc.stop()
        return _result(rc, run_dir, argv, proc.output)

    def uas(self, scenario: str = "builtin:uas", *, port: int | None = None,
            media_port: int | None = None, rtp_echo: bool = False, calls: int | None = None,
            keys: dict | None = None, extra: Sequence[str] = (), timeout: float = 60,
            ready: float = 15.0) -> SippServer:
        """Start a background sipp server (built-in uas answers PCMU whatever the offer).

        ``calls``: exit after that many calls (``-m``). Waits until the SIP port is
        bound. ``rtp_echo`` echoes RTP received on ``media_port``.
        """
        run_dir = self._run_dir("uas")
        media_port = media_port or free_port_block(4)   # audio RTP/RTCP, video RTP/RTCP
        port = port or free_port()
        argv = self._argv(scenario, run_dir, local_port=port, media_port=media_port,
                          timeout=timeout, keys=keys, extra=extra)
        if rtp_echo:
            argv.append("-rtp_echo")
        if calls:
            argv += ["-m", str(calls)]
        proc = PeerProcess(argv, cwd=run_dir, name="sipp-uas",
                           log_path=run_dir / "stdout.log")
        server = SippServer(proc, port, media_port, run_dir, argv)
        self.servers.append(server)
        _wait_udp_bound(port, proc, ready)
        return server

    def close(self) -> None:
        for s in self.servers:
            s.stop(graceful=False)
        self.servers.clear()

    def __enter__(self) -> "Sipp":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _wait_udp_bound(port: int, proc: PeerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"sipp exited ({proc.proc.returncode}) at start:\n{proc.tail()}")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return  # bound by sipp
        finally:
            s.close()
        time.sleep(0.05)
    proc.stop()
    raise TimeoutError(f"sipp did not bind UDP {port} within {timeout}s:\n{proc.tail()}")


# --------------------------------------------------------------------------- raw UDP
def localize_via(data: bytes, host: str, port: int) -> bytes:
    """Point the topmost Via's sent-by at (host, port), keeping its parameters, so a
    UAS that answers to the Via (RFC 3261 18.2.2) reaches our socket. Messages whose
    first Via cannot be found are returned unchanged."""
    rx = re.compile(rb"^((?:Via|v)[ \t]*:[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*[A-Za-z]+[ \t]+)"
                    rb"([^;\r\n,]+)", re.I | re.M)
    return rx.sub(lambda m: m.group(1) + f"{host}:{port}".encode(), data, count=1)


def send_raw(host: str, port: int, data: bytes, timeout: float = 2.0, *,
             rewrite_via: bool = False, want_final: bool = True) -> str | None:
    """Send ``data`` as one UDP datagram from a loopback socket; return the status line
    of the response (``"SIP/2.0 400 Bad Request"``) or None if nothing came back.

    100 Trying is skipped while waiting for a final response (``want_final``); if only
    a 100 arrived, its status line is returned. ``rewrite_via`` applies
    ``localize_via`` first (RFC 4475 messages carry example.com Vias).
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((LOOPBACK, 0))
        if rewrite_via:
            data = localize_via(data, LOOPBACK, s.getsockname()[1])
        s.sendto(data, (host, port))
        deadline = time.monotonic() + timeout
        provisional = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return provisional
            s.settimeout(remaining)
            try:
                pkt, _ = s.recvfrom(65535)
            except socket.timeout:
                return provisional
            line = pkt.split(b"\r\n", 1)[0].split(b"\n", 1)[0].decode("utf-8", "replace")
            if not line.startswith("SIP/2.0 "):
                continue  # a request (e.g. a stray OPTIONS): not our answer
            code = line[8:11]
            if want_final and code.startswith("1"):
                provisional = provisional or line
                continue
            return line
    finally:
        s.close()


def status_code(status_line: str | None) -> int | None:
    """``"SIP/2.0 400 Bad Request"`` → 400."""
    if not status_line:
        return None
    try:
        return int(status_line.split()[1])
    except (IndexError, ValueError):
        return None


def send_raw_files(host: str, port: int, files: Iterable[Path], timeout: float = 2.0,
                   rewrite_via: bool = False) -> dict[str, str | None]:
    """``send_raw`` each file (e.g. RFC 4475 ``*.dat``): {file name: status line | None}."""
    return {Path(f).name: send_raw(host, port, Path(f).read_bytes(), timeout,
                                   rewrite_via=rewrite_via) for f in files}
