"""Running Cầu as a service: the systemd unit in packaging/ is valid (systemd-analyze verify) and
its command line starts the gateway; with --log-format json every stderr line is one JSON record
from the ``cau.*`` logger tree, a multi-line message (a refused dial plan) included."""
from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.test_run import REPO, Gateway

UNIT = REPO / "packaging" / "systemd" / "cau.service"


def _unit() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_the_systemd_unit_is_valid(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (scripts/install-test-deps.sh installs systemd)"
    unit = _unit()
    argv = shlex.split(unit["ExecStart"][0])
    assert argv[1:] == ["run", "--config", "/etc/cau/cau.yaml", "--log-format", "json"], argv
    assert unit["User"] == ["cau"] and unit["StateDirectory"] == ["cau"] and unit["Environment"] == ["XDG_STATE_HOME=/var/lib"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"] and int(unit["LimitNOFILE"][0]) >= 65536
    # verify it with the cau this checkout installed in place of /opt/cau/venv/bin/cau
    cau = Path(sys.executable).with_name("cau")
    assert cau.exists(), cau
    text = UNIT.read_text().replace(argv[0], str(cau))
    local = tmp_path / "cau.service"
    local.write_text(text)
    r = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if "cau.service" in ln]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


def test_json_logs_one_record_a_line_from_the_cau_loggers(tmp_path):
    unit_args = shlex.split(_unit()["ExecStart"][0])[2:]          # run --config … --log-format json
    assert unit_args[-2:] == ["--log-format", "json"]
    gw = Gateway(tmp_path, "--no-watch", "--log-format", "json")
    try:
        plan = gw.plan.read_text()
        gw.plan.write_text("version: 1\nrooms:\n  - id: x\n    numbers: [1]\n    layout: sideways\n")
        gw.proc.send_signal(signal.SIGHUP)
        gw.wait_health(lambda h: h["last_reload"] is not None and not h["last_reload"]["ok"])
        gw.plan.write_text(plan)
    finally:
        assert gw.stop() == 0
    lines = [ln for ln in gw.stderr.read_text().splitlines() if ln.strip()]
    assert len(lines) >= 4, lines
    records = [json.loads(ln) for ln in lines]                     # every line is JSON
    for r in records:
        assert set(r) >= {"time", "level", "logger", "message"}, r
        assert r["logger"] == "cau" or r["logger"].startswith("cau."), r
        assert r["time"].endswith("+00:00") and r["time"][10] == "T", r
    refused = [r for r in records if "REFUSED" in r["message"]]
    assert len(refused) == 1 and refused[0]["level"] == "ERROR" and "\n" in refused[0]["message"], refused
    assert "layout" in refused[0]["message"]
    assert any(r["message"] == "stopped" for r in records)
    assert {r["logger"] for r in records} >= {"cau", "cau.h323.gatekeeper"}
