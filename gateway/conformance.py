"""``cau conformance``: run the interop suite with pytest and write a report.

The suite lives in the ``interop_tests`` package (installed with ``cau``), so
a test lab can run it from any directory. The report folder receives
``junit.xml`` (for CI systems) and ``report.html`` (for people). The exit code
is pytest's: 0 every case passed, 1 some failed, 5 no case was selected.
"""
from __future__ import annotations

import datetime as _dt
import html
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from gateway import __version__


@dataclass
class CaseResult:
    classname: str
    name: str
    outcome: str  # passed | failed | error | skipped
    seconds: float
    detail: str


#: the independent peers the suite drives: (name, how it is found, what it is for, how to install it)
PEERS = (
    ("sipp", "exe:sipp", "SIP call flows and digest registration", "apt-get install sip-tester"),
    ("baresip", "exe:baresip", "a SIP phone with audio and video", "apt-get install baresip-core baresip-ffmpeg"),
    ("pjsua2", "py:pjsua2", "PJSIP, a second SIP stack", "pip install pjsua2-python"),
    ("tshark", "exe:tshark", "dissectors that judge what is on the wire", "apt-get install tshark"),
    ("chromium", "exe:chromium", "a browser joining from the join page", "apt-get install chromium"),
    ("playwright", "py:playwright", "drives chromium (never `playwright install`)", "pip install playwright"),
)


def check_peers() -> list[tuple[str, bool, str]]:
    """(peer, found, one line for a person) for every peer of :data:`PEERS`."""
    import importlib.util
    import shutil

    out = []
    for name, how, use, install in PEERS:
        kind, _, what = how.partition(":")
        if kind == "exe":
            path = shutil.which(what)
            found, where = path is not None, path or ""
        else:
            spec = importlib.util.find_spec(what)
            found, where = spec is not None, (spec.origin or "") if spec else ""
        line = (f"{name:10s} ok       {where}" if found
                else f"{name:10s} MISSING  needed for {use}: {install}")
        out.append((name, found, line))
    return out


def print_peers() -> bool:
    """Print one line per peer; True when all are there."""
    results = check_peers()
    for _name, _found, line in results:
        print(line)
    return all(found for _n, found, _l in results)


def suite_dir() -> Path:
    import interop_tests

    return Path(interop_tests.__file__).resolve().parent


def read_junit(path: Path) -> list[CaseResult]:
    results: list[CaseResult] = []
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        outcome, detail = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                detail = (el.get("message") or "") + ("\n" + el.text if el.text else "")
                break
        results.append(
            CaseResult(case.get("classname", ""), case.get("name", ""), outcome, float(case.get("time", 0) or 0), detail)
        )
    return results


def write_html(results: list[CaseResult], path: Path, exit_code: int, selection: str,
               evidence: Path | None = None) -> None:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no case ran"
    colour = {"passed": "#dff0d8", "failed": "#f2dede", "error": "#f2dede", "skipped": "#fcf8e3"}
    rows = []
    for r in results:
        detail = f"<details><summary>detail</summary><pre>{html.escape(r.detail)}</pre></details>" if r.detail else ""
        rows.append(
            f'<tr style="background:{colour.get(r.outcome, "#fff")}"><td>{html.escape(r.classname)}</td>'
            f"<td>{html.escape(r.name)}</td><td>{r.outcome}</td><td>{r.seconds:.2f}</td><td>{detail}</td></tr>"
        )
    when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    shots = sorted(evidence.glob("*.png")) if evidence is not None and evidence.is_dir() else []
    pictures = "".join(f'<figure><img src="{html.escape(p.parent.name)}/{html.escape(p.name)}" style="max-width:48em" '
                       f'alt="{html.escape(p.stem)}"><figcaption>{html.escape(p.stem)}</figcaption></figure>'
                       for p in shots)
    if pictures:
        pictures = "<h2>Screenshots</h2>" + pictures
    verdict = "PASS" if exit_code == 0 else ("NO CASES" if exit_code == 5 else "FAIL")
    path.write_text(
        f"""<!doctype html><html><head><meta charset="utf-8"><title>Cầu conformance report</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .6em;text-align:left;vertical-align:top}}
table{{border-collapse:collapse}}</style></head><body>
<h1>Cầu conformance report: {verdict}</h1>
<p>cau {__version__}, run {when}{', selection ' + html.escape(selection) if selection else ''}: {summary}.</p>
<table><tr><th>Group</th><th>Case</th><th>Result</th><th>Seconds</th><th></th></tr>
{''.join(rows)}</table>{pictures}</body></html>
""",
        encoding="utf-8",
    )


def run_conformance(list_only: bool = False, keyword: str | None = None, report_dir: str | None = None,
                    extra: list[str] | None = None, peers_check: bool = False) -> int:
    """Run the suite (see the module docstring). ``peers_check``: only check the peers (exit 0
    when all are there, 3 otherwise). A run starts with the same check; a missing peer is said
    there, and the cases that need it fail saying so."""
    if peers_check:
        return 0 if print_peers() else 3
    suite = suite_dir()
    cmd = [sys.executable, "-m", "pytest", str(suite), "-p", "no:cacheprovider", "--rootdir", str(suite), *(extra or [])]
    if keyword:
        cmd += ["-k", keyword]
    if list_only:
        return subprocess.call(cmd + ["--collect-only", "-q"])
    print("cau conformance: the peers the suite drives:")
    if not print_peers():
        print("cau conformance: some peers are missing: the cases that need them will fail, saying so")
    report = Path(report_dir or "conformance-report").resolve()
    report.mkdir(parents=True, exist_ok=True)
    junit = report / "junit.xml"
    evidence = report / "evidence"
    code = subprocess.call(cmd + ["-v", f"--junitxml={junit}", f"--evidence-dir={evidence}"],
                           env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    results = read_junit(junit) if junit.exists() else []
    write_html(results, report / "report.html", code, keyword or "", evidence)
    print(f"cau conformance: {len(results)} case(s); report in {report}/report.html and {junit}")
    return code
