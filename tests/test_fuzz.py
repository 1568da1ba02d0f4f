"""The short version of the fuzz driver (scripts/fuzz.py): hostile SIP, H.225.0 and RAS inputs
against a gateway it starts; the gateway stays up, answers every probe, logs no traceback."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_gateway_survives_a_short_fuzz_run(tmp_path):
    out = tmp_path / "fuzz.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "fuzz.py"), "--sip", "3000", "--h225", "600",
                           "--ras", "2000", "--seed", "7", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["alive"] and r["tracebacks"] == 0, proc.stdout[-4000:]
    for name in ("sip", "h225", "ras"):
        assert r[name]["probes_missed"] == {"sip": 0, "sip_tls": 0, "ras": 0, "h225": 0, "http": 0}, (name, r[name])
    assert proc.returncode == 0
    # loop stalls are printed, not asserted here: a shared CI machine freezes now and then;
    # docs/security.md has the figures of full runs
    assert r["sip"]["inputs"] == 3000 and "late_ticks_over_20ms" in r["ras"]
