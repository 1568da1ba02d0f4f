"""Shared process helpers for the interop peers (sipp, baresip, pjsua2 child).

- ``free_port`` / ``free_port_block``: ephemeral loopback ports free right now
  (UDP and TCP both, since SIP peers listen on both).
- ``require_binary``: a missing peer fails loudly, naming the package to install.
- ``PeerProcess``: a child in its own process group, stdout+stderr captured by a
  reader thread into a line list, ``wait_for(regex)``, ``stop()`` that kills the
  whole group (TERM, then KILL) and is safe to call twice.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import select
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Sequence

LOOPBACK = "127.0.0.1"

# binary → Debian package that provides it
PACKAGES = {"sipp": "sip-tester", "baresip": "baresip-core"}


class PeerMissing(RuntimeError):
    """An independent peer is not installed: the message says what to install."""


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pkg = PACKAGES.get(name, name)
        raise PeerMissing(
            f"{name} not found: install {pkg} (scripts/install-test-deps.sh)")
    return path


def _port_free(port: int, host: str = LOOPBACK) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind((host, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


# ports handed out by this process: a peer binds its ports (RTP ranges above all)
# only later, so without this two peers started in a row could get the same ones
_HANDED_OUT: set[int] = set()
_LOCK = threading.Lock()


def free_port(host: str = LOOPBACK) -> int:
    """A port free for both UDP and TCP on ``host`` right now (never handed out twice)."""
    for _ in range(200):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((host, 0))
        port = s.getsockname()[1]
        s.close()
        with _LOCK:
            if port not in _HANDED_OUT and _port_free(port, host):
                _HANDED_OUT.add(port)
                return port
    raise RuntimeError("no free port found")


def free_port_block(count: int, host: str = LOOPBACK, even: bool = True) -> int:
    """First port of ``count`` consecutive free ports (UDP+TCP), even-aligned for RTP."""
    for _ in range(300):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((host, 0))
        base = s.getsockname()[1]
        s.close()
        if even:
            base &= ~1
        if base + count >= 65535 or base < 1024:
            continue
        with _LOCK:
            block = set(range(base, base + count))
            if not (block & _HANDED_OUT) and all(_port_free(p, host) for p in block):
                _HANDED_OUT.update(block)
                return base
    raise RuntimeError(f"no block of {count} free ports found")


#: every PeerProcess started (the suite's evidence keeps each case's peers' output; it empties this)
STARTED: list["PeerProcess"] = []


class PeerProcess:
    """One child process in its own process group, its output captured line by line."""

    def __init__(self, argv: Sequence[str], *, cwd: str | os.PathLike | None = None,
                 env: dict | None = None, name: str | None = None,
                 log_path: str | os.PathLike | None = None,
                 stdin_pipe: bool = False):
        self.argv = [str(a) for a in argv]
        self.name = name or Path(self.argv[0]).name
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._log = open(log_path, "w") if log_path else None
        self.log_path = Path(log_path) if log_path else None
        STARTED.append(self)
        self.proc = subprocess.Popen(
            self.argv, cwd=cwd, env=env,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, text=True, errors="replace", bufsize=1)
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"{self.name}-reader")
        self._reader.start()

    # output -----------------------------------------------------------------
    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            with self._cond:
                self.lines.append(line)
                if self._log:
                    self._log.write(line + "\n")
                    self._log.flush()
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def tail(self, n: int = 40) -> str:
        with self._cond:
            return "\n".join(self.lines[-n:])

    def wait_for(self, pattern: str | re.Pattern, timeout: float = 10.0,
                 start: int = 0) -> re.Match:
        """Wait until an output line (index >= ``start``) matches; return the match.

        Raises TimeoutError (with the output's tail) on timeout or if the process
        exits first.
        """
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    i += 1
                    if m:
                        return m
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{self.name}: no line matching {rx.pattern!r} within {timeout}s;"
                        f" output tail:\n{self.tail()}")
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise TimeoutError(
                        f"{self.name} exited ({self.proc.returncode}) before a line matching"
                        f" {rx.pattern!r}; output tail:\n{self.tail()}")
                self._cond.wait(min(remaining, 0.2))

    def count(self, pattern: str) -> int:
        rx = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.lines if rx.search(line))

    # lifecycle --------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(2)
        return rc

    def stop(self, grace: float = 3.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal the whole process group, then SIGKILL it after ``grace`` seconds."""
        kill_group(self.proc, grace=grace, sig=sig)
        self._reader.join(2)
        if self._log:
            self._log.close()
            self._log = None
        return self.proc.returncode


def wait_line(proc: subprocess.Popen, text: str, timeout: float) -> str:
    """Read ``proc``'s stdout (a pipe) until it holds ``text``; what was read (fails after ``timeout``).

    Reads the pipe's descriptor directly, so nothing waits in a file object's buffer out of
    ``select``'s sight; ``proc.communicate()`` afterwards returns the rest."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    fd, seen, deadline = proc.stdout.fileno(), "", time.monotonic() + timeout
    while text not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no '{text}' from the peer in {timeout:.0f} s: {seen[-1500:]}")
        if select.select([fd], [], [], min(left, 0.5))[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"the peer ended without '{text}': {seen[-1500:]}")
            seen += decoder.decode(chunk)
    return seen


def kill_group(proc: subprocess.Popen, grace: float = 3.0, sig: int = signal.SIGTERM) -> None:
    """Terminate ``proc``'s process group (it was started with start_new_session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    # the leader may be gone while children of its group linger
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(2)
    except subprocess.TimeoutExpired:
        pass


def wav_peak(path: str | os.PathLike, skip_seconds: float = 0.2) -> tuple[float, float]:
    """(dominant frequency in Hz, RMS level in dBFS) of a 16-bit PCM WAV file (first
    channel), skipping the first ``skip_seconds``. (0.0, -inf) for silence or no audio."""
    import wave

    import numpy as np

    with wave.open(str(path), "rb") as w:
        rate, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    if width != 2 or not raw:
        return 0.0, float("-inf")
    pcm = np.frombuffer(raw, dtype="<i2")[::ch].astype(np.float64)
    pcm = pcm[int(rate * skip_seconds):]
    if pcm.size < 256:
        return 0.0, float("-inf")
    rms = float(np.sqrt(np.mean(pcm ** 2)))
    if rms < 1.0:
        return 0.0, float("-inf")
    spec = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
    spec[0] = 0.0
    freq = float(np.argmax(spec)) * rate / pcm.size
    return freq, float(20 * np.log10(rms / 32768.0))
