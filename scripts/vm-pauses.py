#!/usr/bin/env python3
"""Run a command while freezing it now and then, the way a busy hypervisor does.

    python3 scripts/vm-pauses.py --pause 0.2-0.4 --every 1.5-4 -- make test

Every ``--every`` seconds (a random value in the range) the command and all its
descendants (the gateway, sipp, baresip, tshark ... that the tests start) are
stopped with SIGSTOP for ``--pause`` seconds, then continued with SIGCONT, all
at once, like a virtual machine whose CPU the host gave to someone else. On a
shared 2-core VM, pauses of 30-250 ms happen by themselves; this makes them
happen on purpose, so a test that only passes on a quiet machine shows itself.
The exit status is the command's. Linux only (reads /proc).
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path


def seconds_range(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition("-")
    try:
        a, b = float(lo), float(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SECONDS or LOW-HIGH seconds, got {text!r}") from None
    if not 0 <= a <= b:
        raise argparse.ArgumentTypeError(f"expected 0 <= LOW <= HIGH, got {text!r}")
    return a, b


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (from /proc/*/stat's parent pid)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()  # the name may hold spaces and parentheses
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pause", type=seconds_range, default=(0.2, 0.4), help="how long each pause lasts, LOW-HIGH seconds")
    ap.add_argument("--every", type=seconds_range, default=(1.5, 4.0), help="time between pauses, LOW-HIGH seconds")
    ap.add_argument("--seed", type=int, help="for a repeatable sequence of pauses")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command to run after --")
    rng = random.Random(args.seed)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C: continue everything, stop the command
    proc = subprocess.Popen(command)
    pauses, paused = 0, 0.0
    try:
        while True:
            try:
                proc.wait(timeout=rng.uniform(*args.every))
                break
            except subprocess.TimeoutExpired:
                pass
            pids = descendants(proc.pid)
            length = rng.uniform(*args.pause)
            signal_all(pids, signal.SIGSTOP)
            try:
                time.sleep(length)
            finally:
                signal_all(pids, signal.SIGCONT)  # never leave anything frozen
            pauses, paused = pauses + 1, paused + length
    except KeyboardInterrupt:
        signal_all(descendants(proc.pid), signal.SIGCONT)
        proc.terminate()
        proc.wait()
    print(f"vm-pauses: {pauses} pauses, {paused:.1f} s in all; the command exited {proc.returncode}", file=sys.stderr)
    rc = proc.returncode
    return rc if rc >= 0 else 128 - rc  # killed by a signal: as a shell reports it


if __name__ == "__main__":
    sys.exit(main())
