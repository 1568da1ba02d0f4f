"""The `cau` command's sub-commands and exit codes, run as a user runs them."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gateway import __version__
from interop_tests.catalogue import CASES
from gateway.resources import data_dir

REPO = Path(__file__).resolve().parent.parent
PROVINCE = data_dir("dialplans") / "province.yaml"


def cau(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=120,
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_version():
    r = cau("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"cau {__version__}"


@pytest.mark.parametrize("cmd", [[], ["run"], ["dialplan"], ["dialplan", "check"], ["dialplan", "route"], ["conformance"]])
def test_every_command_has_help(cmd):
    r = cau(*cmd, "--help")
    assert r.returncode == 0
    assert "usage: cau" in r.stdout


def test_no_command_prints_help_and_fails():
    r = cau()
    assert r.returncode == 2 and "COMMAND" in r.stdout


def test_check_shipped_plans_pass():
    for name in ("default.yaml", "province.yaml"):
        r = cau("dialplan", "check", str(data_dir("dialplans") / name))
        assert r.returncode == 0, r.stderr
        assert re.search(r"ok: \d+ rooms?", r.stdout)


def test_check_misspelt_key_fails_with_file_and_line(tmp_path):
    text = PROVINCE.read_text().splitlines()
    # misspell the first "numbers:" key
    idx = next(i for i, l in enumerate(text) if l.strip().startswith("numbers:"))
    text[idx] = text[idx].replace("numbers:", "numbrs:")
    bad = tmp_path / "province.yaml"
    bad.write_text("\n".join(text) + "\n")
    r = cau("dialplan", "check", str(bad))
    assert r.returncode == 2
    col = text[idx].index("numbrs") + 1
    assert f"{bad}:{idx + 1}:{col}: " in r.stderr
    assert "numbrs" in r.stderr and "numbers" in r.stderr


def test_route_district_number_names_the_district_room():
    r = cau("dialplan", "route", str(PROVINCE), "8107")
    assert r.returncode == 0, r.stderr
    assert "huyen-07" in r.stdout
    assert "template" in r.stdout


def test_route_unknown_number_says_no_route_and_fails():
    r = cau("dialplan", "route", str(PROVINCE), "7777777")
    assert r.returncode == 1, "a script cannot tell a number that goes nowhere"
    assert "no route" in r.stdout and "404" in r.stdout


@pytest.mark.parametrize("dialed, words", [
    ("8101002", "endpoint xa-vinh-phat \"UBND xa Vinh Phat\" (h323, number 8101002)"),
    ("xa-vinh-phat", "where it is registered (the gatekeeper)"),
    ("xa-minh-tay", "it joins by itself (webrtc)"),
])
def test_route_answers_for_endpoint_numbers_and_aliases(dialed, words):
    r = cau("dialplan", "route", str(PROVINCE), dialed)
    assert r.returncode == 0, r.stdout
    assert words in r.stdout


def test_route_cascade_number_dials_out():
    r = cau("dialplan", "route", str(PROVINCE), "00123")
    assert r.returncode == 0
    assert "dial out to h323:123@" in r.stdout


def test_check_missing_file_is_an_error():
    r = cau("dialplan", "check", "/nonexistent/plan.yaml")
    assert r.returncode == 2
    assert "/nonexistent/plan.yaml" in r.stderr


def test_conformance_lists_the_catalogue_and_the_docs_are_generated_from_it():
    r = cau("conformance", "--list")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SIP-OPT-001     OPTIONS is answered 200 with Allow and Accept" in r.stdout
    assert "RFC 3261 §11  [sip-ua, sip-mcu, cau]" in r.stdout and f"{len(CASES)} case(s)" in r.stdout
    ua = cau("conformance", "--list", "--profile", "sip-ua")
    assert "SIP-OPT-001" in ua.stdout and "REG-002" not in ua.stdout and "for profile sip-ua" in ua.stdout
    from gateway.conformance import catalogue_markdown

    assert (REPO / "docs" / "conformance.md").read_text() == catalogue_markdown(), \
        "docs/conformance.md is stale: python -m gateway.conformance --markdown > docs/conformance.md"


def test_conformance_runs_a_case_and_writes_junit_and_html(tmp_path):
    r = cau("conformance", "-k", "options_answers", "--report", str(tmp_path / "rep"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    junit = tmp_path / "rep" / "junit.xml"
    html = tmp_path / "rep" / "report.html"
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    assert len(cases) == 1 and not any(c.find(t) is not None for c in cases for t in ("failure", "error", "skipped"))
    page = html.read_text()
    assert "Conformance report: PASS" in page and "SIP-OPT-001" in page and "RFC 3261 §11" in page
    assert f"Cầu {__import__('gateway').__version__} (started by the suite on loopback)" in page
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert doc["verdict"] == "PASS" and doc["profile"] == "cau" and doc["versions"]["sipp"].startswith("v3")
    assert [(c["id"], c["verdict"]) for c in doc["cases"]] == [("SIP-OPT-001", "PASS")]


def test_conformance_peers_check_says_what_is_missing_and_how_to_install_it(tmp_path):
    ok = cau("conformance", "--peers-check")
    assert ok.returncode == 0 and all(f"{p}" in ok.stdout for p in ("sipp", "baresip", "pjsua2", "tshark", "chromium"))
    # a machine without the Debian peers on its PATH
    r = subprocess.run([sys.executable, "-m", "gateway", "conformance", "--peers-check"], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO), "PATH": str(tmp_path)})
    assert r.returncode == 3, r.stdout
    lines = {l.split()[0]: l for l in r.stdout.splitlines()}
    assert "MISSING" in lines["sipp"] and "apt-get install sip-tester" in lines["sipp"]
    assert "MISSING" in lines["chromium"] and "apt-get install chromium" in lines["chromium"]
    assert " ok " in lines["pjsua2"], "a Python peer was looked for on PATH"
