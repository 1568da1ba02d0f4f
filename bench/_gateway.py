"""What the call benchmarks share: a `cau run` child on loopback, /proc figures, log reading.

``BenchCau`` starts the real gateway in its own process group on ephemeral ports
with a dial plan the benchmark writes, reads the ports it reports in its banner,
and reads its status and log; ``stop()`` ends the whole group.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# banner line → port name
_BANNER = {
    "sip": r"SIP listening on [\d.]+:(\d+)",
    "h323": r"H\.323 call signalling listening on [\d.]+:(\d+)/tcp",
    "http": r"HTTP listening on [\d.]+:(\d+)",
}


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks (fields 14, 15 of /proc/PID/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(q / 100 * (len(v) - 1)))))]


def problems(lines: list[str]) -> list[str]:
    """WARNING/ERROR/CRITICAL lines and tracebacks of a log slice."""
    return [ln for ln in lines if re.search(r" (WARNING|ERROR|CRITICAL) |Traceback", ln)]


def shape(line: str) -> str:
    """A log line with its timestamp, Call-IDs and numbers blanked: to group alike lines."""
    line = re.sub(r"^\S+ \S+ ", "", line)
    line = re.sub(r"\b[\w.-]*@[\w.:-]+", "<id>", line)
    return re.sub(r"\d+", "N", line)


class BenchCau:
    """``cau run`` as a child in its own process group; stdout (banner) and stderr (log) to files."""

    def __init__(self, workdir: Path, dialplan: str, room_id: str, needs: tuple[str, ...]):
        plan = workdir / "bench-dialplan.yaml"
        plan.write_text(dialplan)
        self.room_id = room_id
        self.out_path, self.log_path = workdir / "cau.out", workdir / "cau.log"
        self.argv = [sys.executable, "-m", "gateway", "run", "--bind", LOOPBACK, "--sip-port", "0",
                     "--http-port", "0", "--https-port", "0", "--sip-tls-port", "0", "--ras-port", "0", "--h323-port", "0", "--rtp-ports", "20000-39999",
                     "--dialplan", str(plan), "--no-watch"]
        self.proc = subprocess.Popen(
            self.argv, stdout=self.out_path.open("w"), stderr=self.log_path.open("w"), stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=workdir,
            env={**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")})
        wanted = ("http", *needs)
        self.ports: dict[str, int] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.out_path.read_text(errors="replace")
            for name in wanted:
                m = re.search(_BANNER[name], text)
                if m:
                    self.ports[name] = int(m.group(1))
            if all(n in self.ports for n in wanted):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"cau run did not report its {', '.join(wanted)} ports (exit {self.proc.returncode}):\n"
                           f"{self.log_path.read_text(errors='replace')[-3000:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def http_port(self) -> int:
        return self.ports["http"]

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.http_port}/api/status", timeout=10) as r:
            return json.loads(r.read())

    def snapshot(self) -> tuple[int, int, int]:
        """(participants in the room, rtp_ports_in_use, media clock late ticks so far)."""
        s = self.status()
        n = sum(r["participants"] for r in s["rooms"] if r["id"] == self.room_id)
        return n, s["media"]["rtp_ports_in_use"], s["media"]["clock"]["late_ticks"]

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> list[str]:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace").splitlines()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything of its group still there
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            pass
