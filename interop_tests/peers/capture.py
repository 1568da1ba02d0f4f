"""tshark capturing on loopback into a file, proven live before a test acts and proven
complete before it stops.

"Capturing on 'lo'" on tshark's stderr comes before dumpcap really captures, and on a
busy machine the gap can be longer than any fixed sleep: the first packets of the
call were missing from the file. So the capture filter also takes a probe port; a
datagram to it is sent until it shows up in the file (the capture is live), and once
more at the end (everything before it has been written) before tshark is stopped.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


class LoopbackCapture:
    def __init__(self, bpf: str, path: str | os.PathLike, timeout: float = 20.0, interface: str = "lo",
                 max_kb: int | None = None, duration: int = 120) -> None:
        self.duration = duration
        self.bpf = bpf
        self.interface = interface
        self.max_kb = max_kb
        self.path = Path(path)
        self.timeout = timeout
        self._probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._probe.bind(("127.0.0.1", 0))  # bound: the probes get no ICMP "port unreachable"
        self.probe_port = self._probe.getsockname()[1]
        self._home = tempfile.TemporaryDirectory()
        self._proc: subprocess.Popen | None = None
        self._n = 0

    def __enter__(self) -> "LoopbackCapture":
        tshark = shutil.which("tshark")
        if tshark is None:
            pytest.fail("tshark is not installed (scripts/install-test-deps.sh installs it)")
        if os.geteuid() != 0:
            pytest.fail("capturing on lo needs root (or dumpcap capabilities)")
        self._proc = subprocess.Popen(
            [tshark, "-n", "-i", self.interface, "-f", f"({self.bpf}) or (udp port {self.probe_port})",
             "-w", str(self.path), "-a", f"duration:{self.duration}",
             *(["-a", f"filesize:{self.max_kb}"] if self.max_kb else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, HOME=self._home.name),
        )
        self._mark("tshark did not start capturing")
        return self

    def _mark(self, failure: str) -> None:
        """Send probe datagrams until one is in the file."""
        self._n += 1
        marker = f"cau-capture-probe-{self._n}-{os.getpid()}".encode()
        deadline = time.monotonic() + self.timeout
        while True:
            self._probe.sendto(marker, ("127.0.0.1", self.probe_port))
            end = time.monotonic() + 0.25
            while time.monotonic() < end:
                try:
                    if marker in self.path.read_bytes():
                        return
                except FileNotFoundError:
                    pass
                time.sleep(0.02)
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._stop()
                pytest.fail(f"{failure} within {self.timeout:.0f} s (tshark exit status {self._proc.returncode})")

    def stop(self) -> None:
        """Wait until everything sent so far is in the file, then stop tshark."""
        if self._proc is not None and self._proc.poll() is None:
            self._mark("tshark did not write the last packets")
        self._stop()

    def _stop(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._probe.close()
        self._home.cleanup()

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.stop()
        else:
            self._stop()
