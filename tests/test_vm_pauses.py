"""scripts/vm-pauses.py: the stress tool really freezes the command (and its children)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "vm-pauses.py"

# a child of the command notes how much wall time passed while it slept 60 times 10 ms
CHILD = (
    "import subprocess, sys; "
    "sys.exit(subprocess.call([sys.executable, '-c', "
    "'import time,sys; t=time.monotonic(); [time.sleep(0.01) for _ in range(60)]; "
    "print(round(time.monotonic()-t, 2)); sys.exit(7)']))"
)


def test_the_command_and_its_children_are_frozen_and_its_exit_status_is_kept():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--pause", "0.3", "--every", "0.05", "--seed", "1", "--", sys.executable, "-c", CHILD],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 7, out.stderr
    wall = float(out.stdout.strip())
    assert wall >= 0.85, f"the grandchild ran 0.6 s of sleeps in {wall} s: it was not frozen"
    assert "pauses" in out.stderr and "exited 7" in out.stderr


def test_a_command_is_required_and_ranges_are_checked():
    for args in ([], ["--pause", "2-1", "--", "true"]):
        out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and "error" in out.stderr
