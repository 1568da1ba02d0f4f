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
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import __version__


@dataclass
class CaseResult:
    classname: str
    name: str
    outcome: str  # passed | failed | error | skipped
    seconds: float
    detail: str
    props: dict = field(default_factory=dict)
    message: str = ""     # JUnit's failure message: pytest's "E" lines (the assertion as evaluated)

    @property
    def verdict(self) -> str:
        """PASS, FAIL, NOT APPLICABLE or INCONCLUSIVE (an error in the suite itself is a FAIL that
        says so)."""
        if self.outcome == "passed":
            return "PASS"
        if self.outcome == "skipped":
            text = self.detail.split("Skipped: ", 1)[-1]
            return "INCONCLUSIVE" if "INCONCLUSIVE: " in text[:200] else "NOT APPLICABLE"
        return "FAIL"

    @property
    def reason(self) -> str:
        """Why: for a FAIL the observed and the expected (the first lines of the assertion)."""
        text = self.detail.strip()
        for marker in ("NOT APPLICABLE: ", "INCONCLUSIVE: "):
            if marker in text:
                why = text.split(marker, 1)[1].split("\n", 1)[0].strip().strip("'\"")
                while why.endswith(")") and why.count(")") > why.count("("):   # pytest's repr around it
                    why = why[:-1].rstrip("'\"")
                return why
        return text.split("\n", 1)[0][:600]

    @property
    def observed_expected(self) -> tuple[str, str] | None:
        # the evaluated assertion of the message, not a line of the source listing that follows it
        m = re.search(r"(?m)^assert (.+?) (==|!=|<=|>=|<|>|in|not in) (.+?)$", self.message or self.detail)
        if not m:
            return None
        ops = {"==": "", "!=": "not ", "in": "in ", "not in": "not in ", "<": "< ", ">": "> ", "<=": "≤ ", ">=": "≥ "}
        return m.group(1).strip(), ops[m.group(2)] + m.group(3).strip()


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
        outcome, detail, message = "passed", "", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = el.get("message") or ""
                detail = message + ("\n" + el.text if el.text else "")
                break
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        results.append(
            CaseResult(case.get("classname", ""), case.get("name", ""), outcome, float(case.get("time", 0) or 0), detail,
                       props, message)
        )
    return results


def peer_versions() -> dict[str, str]:
    """Each peer's version, as it reports it (empty when missing)."""
    import shutil

    def first(argv: list[str], pattern: str) -> str:
        if shutil.which(argv[0]) is None:
            return ""
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        m = re.search(pattern, out.stdout + out.stderr)
        return m.group(1) if m else ""

    def dist(name: str) -> str:
        import importlib.metadata as md

        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return ""

    return {"cau": __version__, "sipp": first(["sipp", "-v"], r"SIPp (v[\w.\-]*\w)"),
            "baresip": first(["baresip", "-h"], r"baresip (v[\d.]+)"),
            "pjsua2": dist("pjsua2-python"), "tshark": first(["tshark", "--version"], r"TShark \(Wireshark\) ([\d.]+)"),
            "chromium": first(["chromium", "--version"], r"Chromium ([\d.]+)"), "playwright": dist("playwright"),
            "python": sys.version.split()[0]}


def catalogue_rows(profile: str | None = None) -> list[Any]:
    from interop_tests.catalogue import CASES

    return [c for c in sorted(CASES.values(), key=lambda c: c.id) if profile is None or profile in c.applies]


def print_catalogue(profile: str | None = None) -> None:
    rows = catalogue_rows(profile)
    for c in rows:
        print(f"{c.id:15s} {c.title}")
        print(f"{'':15s} {c.clause}  [{', '.join(c.applies)}]")
    print(f"{len(rows)} case(s)" + (f" for profile {profile}" if profile else ""))


def catalogue_markdown() -> str:
    """docs/conformance.md (generated: ``python -m gateway.conformance --markdown``)."""
    from interop_tests.catalogue import AREAS, PROFILES

    rows = catalogue_rows()
    out = ["# Conformance cases", "",
           "Generated from `interop_tests/catalogue.py` by `python -m gateway.conformance --markdown`;",
           "`cau conformance --list [--profile P]` prints the same. Run the cases for one kind of system:", "",
           "```sh", "cau conformance --profile sip-ua --sip-target 192.0.2.20:5060 --room 1000 --report lab-report",
           "#   its SIP over TLS, when not on port 5061: --sip-tls-target 192.0.2.20:5081 (TLS-* cases)",
           "cau conformance --profile h323-terminal --h323-target 192.0.2.30:1720 --room 1000",
           "cau conformance                      # profile cau: every case, against a Cầu the suite starts", "```", "",
           "Verdicts: **PASS**; **FAIL** (with what was observed and what was expected); **NOT APPLICABLE** (the",
           "target does not offer what the case checks, with why); **INCONCLUSIVE** (the case could not judge: the",
           "machine stalled through every retry, a peer did not start). Against Cầu (profile `cau`) only PASS counts.",
           "", "The report is one folder: `report.html` (the target as it names itself — Server/User-Agent, the",
           "H.225.0 vendor, product and version of its CONNECT — the profile, every peer's version, a summary by",
           "area), `report.json`, `junit.xml`, and `evidence/<case>/` for every case: `capture.pcapng` (tshark,",
           "filtered to the target's signalling ports and media range, or to its host when it is on another",
           "machine), the message sequence read back from that capture (SIP, H.225.0 call signalling and RAS,",
           "H.245; drawn as a ladder diagram in the report, open for a failing case), the measurements the case",
           "judged (tone levels with their level over time, plotted), the output and logs of the peers it started",
           "and, against Cầu, the gateway's log for the case. `assets/` holds uPlot so the folder works offline.",
           "", "baresip as a `sip-ua` target (two genuine FAILs, a plot of its packet intervals, the picture it sent):",
           "", "![a conformance report of baresip](conformance-report-evidence.png)",
           "", "| profile | cases |", "|---|---|"]
    out += [f"| `{p}` | {sum(p in c.applies for c in rows)} |" for p in PROFILES]
    for area, title in AREAS.items():
        cases = [c for c in rows if c.area == area]
        if not cases:
            continue
        out += ["", f"## {title}", "", "| id | case | clause | applies to |", "|---|---|---|---|"]
        for c in cases:
            out.append(f"| `{c.id}` | **{c.title}**. {c.checks} | {c.clause} | {', '.join(c.applies)} |")
    return "\n".join(out) + "\n"


def _esc(x: Any) -> str:
    return html.escape(str(x))


def read_evidence(evidence: Path | None, r: CaseResult) -> dict[str, Any] | None:
    """The case's evidence.json (interop_tests.evidence), with the folder's name, or None."""
    name = r.props.get("evidence")
    if evidence is None or not name or "/" in name or name.startswith("."):
        return None
    path = evidence / name / "evidence.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    doc["folder"] = name
    return doc


def ladder_svg(rows: list[dict[str, Any]], target_ports: list[int], max_parties: int = 7) -> str:
    """The message sequence as a ladder diagram: a lifeline per address (in order of appearance,
    the target's marked), an arrow per message with its time."""
    parties: list[str] = []
    for r in rows:
        for a in (r["from"], r["to"]):
            if a not in parties and len(parties) < max_parties:
                parties.append(a)
    if not parties:
        return ""
    other = "others"
    col, left, top, step = 190, 70, 46, 24

    def column(i: int) -> int:
        return left + 80 + i * col

    def x(a: str) -> int:
        return column(parties.index(a) if a in parties else len(parties))

    n_cols = len(parties) + (1 if any(r["from"] not in parties or r["to"] not in parties for r in rows) else 0)
    width = column(n_cols - 1) + 110
    height = top + step * (len(rows) + 1)
    out = [f'<svg class=ladder xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="message sequence">',
           '<defs><marker id="arr" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#333"/></marker></defs>']
    labels = parties + ([other] if n_cols > len(parties) else [])
    for i, a in enumerate(labels):
        cx = column(i)
        port = a.rsplit(":", 1)[-1]
        is_target = port.isdigit() and int(port) in target_ports
        out.append(f'<text x="{cx}" y="16" text-anchor="middle" font-weight="{700 if is_target else 400}">'
                   f'{_esc(a)}</text><text x="{cx}" y="31" text-anchor="middle" font-size="11" fill="#555">'
                   f'{"target" if is_target else ""}</text>'
                   f'<line x1="{cx}" y1="{top - 8}" x2="{cx}" y2="{height}" stroke="#bbb"/>')
    for i, r in enumerate(rows):
        y = top + step * (i + 1)
        x1, x2 = x(r["from"]), x(r["to"])
        if x1 == x2:
            x2 = x1 + 40
        colour = "#7a1f1f" if re.match(r"[456]\d\d ", r["message"]) or "release" in r["message"].lower() else "#333"
        out.append(f'<text x="4" y="{y - 4}" font-size="11" fill="#555">{r["t"]:.3f}</text>'
                   f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{colour}" marker-end="url(#arr)"/>'
                   f'<text x="{(x1 + x2) / 2:.0f}" y="{y - 5}" text-anchor="middle" font-size="11.5" fill="{colour}">'
                   f'{_esc(_cut(r["message"], 56))}<title>{_esc(r["protocol"])}: {_esc(r["message"])}</title></text>')
    out.append("</svg>")
    return "".join(out)


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _evidence_html(ev: dict[str, Any], verdict: str, evidence_root: Path | None = None) -> str:
    folder = _esc(ev["folder"])
    parts = []
    files = []
    if ev.get("capture"):
        files.append(f'<a href="evidence/{folder}/{_esc(ev["capture"])}">capture ({_esc(ev["capture"])})</a>')
    elif ev.get("capture_note"):
        files.append(_esc(ev["capture_note"]))
    files += [f'<a href="evidence/{folder}/{_esc(f)}">{_esc(f)}</a>' for f in ev.get("files", [])]
    if files:
        parts.append("<div class=files>" + " · ".join(files) + "</div>")
    folder_path = evidence_root / ev["folder"] if evidence_root is not None else None
    images = sorted(p.name for p in folder_path.glob("*.png")) if folder_path is not None else []
    parts += [f'<figure><img src="evidence/{folder}/{_esc(n)}" alt="{_esc(n)}" loading="lazy">'
              f"<figcaption>{_esc(n.rsplit('.', 1)[0])}</figcaption></figure>" for n in images]
    meas = [m for m in ev.get("measurements", []) if m.get("name") != "case duration"]
    if meas:
        rows = "".join(f"<tr><td>{_esc(m['name'])}</td><td>{_esc(m['value'])} {_esc(m.get('unit', ''))}</td>"
                       f"<td>{_esc(m.get('expected', ''))}</td></tr>" for m in meas)
        parts.append(f"<table class=meas><tr><th>measured</th><th>value</th><th>expected</th></tr>{rows}</table>")
        for m in meas:
            if m.get("series"):
                parts.append(f'<div class=plot data-title="{_esc(m["name"])}" data-unit="{_esc(m.get("unit", ""))}" '
                             f'data-series="{_esc(json.dumps(m["series"]))}"></div>')
    ladder = ev.get("ladder") or []
    if ladder:
        parts.append(f'<details class=lad{" open" if verdict == "FAIL" else ""}><summary>message sequence '
                     f'({len(ladder)} messages, from the capture)</summary>'
                     f'{ladder_svg(ladder, ev.get("target_ports", []))}</details>')
    elif ev.get("capture"):
        parts.append("<div class=files>no SIP, H.225.0 or H.245 message in the capture</div>")
    return "<div class=ev>" + "".join(parts) + "</div>" if parts else ""


def _copy_assets(folder: Path) -> None:
    """uPlot (vendored with the console) and the report's script, so that the folder works offline."""
    import shutil

    src = Path(__file__).resolve().parent / "api" / "static" / "vendor" / "uplot"
    dest = folder / "assets"
    dest.mkdir(exist_ok=True)
    for name in ("uPlot.iife.min.js", "uPlot.min.css", "LICENSE"):
        if (src / name).exists():
            shutil.copyfile(src / name, dest / ("uPlot-LICENSE" if name == "LICENSE" else name))
    (dest / "report.js").write_text(_REPORT_JS, encoding="utf-8")


_REPORT_JS = """// plots of the measurements a case judged (uPlot); the data is in each .plot element
for (const el of document.querySelectorAll('.plot')) {
  const pts = JSON.parse(el.dataset.series);
  const data = [pts.map(p => p[0]), pts.map(p => p[1])];
  new uPlot({title: el.dataset.title, width: 520, height: 180,
             scales: {x: {time: false}},
             axes: [{label: 's'}, {label: el.dataset.unit.split(' ')[0]}],
             series: [{label: 's'}, {label: el.dataset.unit, stroke: '#1f5f9f', width: 1.5}]}, data, el);
}
"""


def write_reports(results: list[CaseResult], folder: Path, exit_code: int, meta: dict[str, Any],
                  evidence: Path | None = None) -> dict[str, Any]:
    """report.html and report.json in ``folder``; returns the JSON document."""
    from interop_tests.catalogue import AREAS

    counts: dict[str, int] = {}
    by_area: dict[str, dict[str, int]] = {}
    for r in results:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
        a = by_area.setdefault(r.props.get("area", "?"), {})
        a[r.verdict] = a.get(r.verdict, 0) + 1
    verdict = ("NO CASES" if not results else "FAIL" if counts.get("FAIL") else
               "INCONCLUSIVE" if counts.get("INCONCLUSIVE") else "PASS")
    doc = {"verdict": verdict, "exit_code": exit_code, **meta, "counts": counts, "areas": by_area,
           "cases": [{"id": r.props.get("case_id"), "title": r.props.get("title"), "clause": r.props.get("clause"),
                      "area": r.props.get("area"), "test": f"{r.classname}::{r.name}", "verdict": r.verdict,
                      "seconds": round(r.seconds, 2), "reason": None if r.verdict == "PASS" else r.reason,
                      "observed_expected": r.observed_expected if r.verdict == "FAIL" else None,
                      "detail": r.detail or None} for r in results]}
    colour = {"PASS": "#dff0d8", "FAIL": "#f2dede", "NOT APPLICABLE": "#eef1f5", "INCONCLUSIVE": "#fcf8e3"}
    rows = []
    evidences = [read_evidence(evidence, r) for r in results]
    identity: dict[str, str] = {}
    for ev, c in zip(evidences, doc["cases"]):
        if ev is not None:
            identity.update(ev.get("identity") or {})
            c["evidence"] = {"folder": f"evidence/{ev['folder']}", "capture": ev.get("capture"),
                             "files": ev.get("files", []), "messages": len(ev.get("ladder") or []),
                             "measurements": ev.get("measurements", [])}
    if identity:
        doc["target"] = {**doc.get("target", meta.get("target", {})), **identity}
    (folder / "report.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
    for r, c, ev in zip(results, doc["cases"], evidences):
        why = ""
        if c["observed_expected"]:
            obs, exp = c["observed_expected"]
            why = f"<div class=oe>observed <code>{_esc(obs)}</code>, expected <code>{_esc(exp)}</code></div>"
        elif c["reason"]:
            why = f"<div class=oe>{_esc(c['reason'])}</div>"
        detail = f"<details><summary>detail</summary><pre>{_esc(r.detail)}</pre></details>" if r.detail and \
            r.verdict == "FAIL" else ""
        param = f'<br><small>{_esc(r.name.split("[", 1)[1].rstrip("]"))}</small>' if "[" in r.name else ""
        rows.append(f'<tr style="background:{colour.get(r.verdict, "#fff")}"><td><code>{_esc(c["id"])}</code>{param}</td>'
                    f'<td><b>{_esc(c["title"])}</b><br><small>{_esc(r.props.get("checks", ""))}</small>{why}{detail}'
                    f'{_evidence_html(ev, r.verdict, evidence) if ev else ""}</td>'
                    f'<td>{_esc(c["clause"])}</td><td class=v>{r.verdict}</td><td>{r.seconds:.1f}</td></tr>')
    area_rows = "".join(f"<tr><td>{_esc(AREAS.get(a, a))}</td>" + "".join(
        f"<td>{n.get(v, 0)}</td>" for v in ("PASS", "FAIL", "NOT APPLICABLE", "INCONCLUSIVE")) + "</tr>"
        for a, n in sorted(by_area.items()))
    shots = sorted(evidence.glob("*.png")) if evidence is not None and evidence.is_dir() else []   # not a case's
    pictures = "".join(f'<figure><img src="{_esc(p.relative_to(folder).as_posix())}" alt="{_esc(p.stem)}">'
                       f"<figcaption>{_esc(p.stem)}</figcaption></figure>" for p in shots)
    versions = ", ".join(f"{k} {v or 'missing'}" for k, v in meta.get("versions", {}).items())
    t = meta.get("target", {})
    _copy_assets(folder)
    (folder / "report.html").write_text(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Conformance report: {_esc(t.get("name", "target"))} — {verdict}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:80em}}td,th{{padding:.3em .6em;text-align:left;
vertical-align:top}}table{{border-collapse:collapse}}.oe{{margin-top:.3em;color:#7a1f1f}}td.v{{font-weight:600;white-space:nowrap}}
dl{{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}}dt{{font-weight:600}}img{{max-width:36em}}
figure{{margin:.4em 0}}figcaption{{font-size:.85em;color:#555}}
.ev{{margin-top:.4em}}.ev table.meas td,.ev table.meas th{{padding:.1em .5em;font-size:.9em}}.files{{font-size:.9em}}
svg.ladder{{font-family:ui-monospace,monospace;background:#fff;border:1px solid #ddd;margin:.3em 0}}
details.lad{{overflow-x:auto;max-width:60em}}</style>
<link rel="stylesheet" href="assets/uPlot.min.css"></head><body>
<h1>Conformance report: {verdict}</h1>
<dl id="header"><dt>Target</dt><dd>{_esc(t.get("name", ""))} <code>{_esc(t.get("address", ""))}</code></dd>
<dt>Identifies as</dt><dd>{_esc(t.get("server") or "—")}</dd>{"".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in identity.items())}
<dt>Profile</dt><dd>{_esc(meta.get("profile", ""))}{(" (selection " + _esc(meta["selection"]) + ")") if meta.get("selection") else ""}</dd>
<dt>Suite and peers</dt><dd>{_esc(versions)}</dd>
<dt>Run</dt><dd>{_esc(meta.get("started", ""))}, {meta.get("duration_s", 0):.0f} s</dd>
<dt>Result</dt><dd>{", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no case ran"}</dd></dl>
<h2>By area</h2><table id="areas"><tr><th>Area</th><th>PASS</th><th>FAIL</th><th>NOT APPLICABLE</th><th>INCONCLUSIVE</th></tr>
{area_rows}</table>
<h2>Cases</h2><table id="cases"><tr><th>Id</th><th>Case</th><th>Clause</th><th>Verdict</th><th>s</th></tr>
{''.join(rows)}</table>{"<h2>Screenshots</h2>" + pictures if pictures else ""}
<p>Machine-readable: <a href="report.json">report.json</a>, <a href="junit.xml">junit.xml</a>; each case's
capture, logs and measurements in <a href="evidence/">evidence/</a>.</p>
<script src="assets/uPlot.iife.min.js"></script><script src="assets/report.js"></script></body></html>
""", encoding="utf-8")
    return doc


def identify_target(options: list[str]) -> dict[str, str]:
    """Name the system under test: its address and what its OPTIONS answer calls it."""
    opts = dict(zip(options[::2], options[1::2]))
    sip = opts.get("--sip-target")
    tls = opts.get("--sip-tls-target")
    h323 = opts.get("--h323-target") or opts.get("--gatekeeper")
    whip = opts.get("--whip-target")
    if not (sip or h323 or whip):
        return {"name": f"Cầu {__version__} (started by the suite on loopback)", "address": "127.0.0.1",
                "server": f"Cầu/{__version__}"}
    out = {"name": "system under test", "address": ", ".join(x for x in (sip and f"SIP {sip}", tls and f"SIP/TLS {tls}",
                                                                            h323 and f"H.323 {h323}",
                                                                            whip and f"WHIP {whip}") if x), "server": ""}
    if sip:
        from interop_tests.conftest import probe_sip

        host, _, port = sip.rpartition(":")
        try:
            caps = probe_sip(host or sip, int(port or 5060), user=opts.get("--room"))
            out["server"] = caps.server or (f"answered OPTIONS {caps.status}, no Server header" if caps.status
                                            else "did not answer OPTIONS")
            out["name"] = caps.server.split()[0] if caps.server else out["name"]
        except (OSError, ValueError) as exc:
            out["server"] = f"OPTIONS failed: {exc}"
    return out


def run_conformance(list_only: bool = False, keyword: str | None = None, report_dir: str | None = None,
                    extra: list[str] | None = None, peers_check: bool = False, profile: str = "cau") -> int:
    """Run the suite (see the module docstring). ``peers_check``: only check the peers (exit 0
    when all are there, 3 otherwise). A run starts with the same check; a missing peer is said
    there, and the cases that need it fail saying so."""
    if peers_check:
        return 0 if print_peers() else 3
    if list_only:
        print_catalogue(profile if profile != "cau" else None)
        return 0
    suite = suite_dir()
    cmd = [sys.executable, "-m", "pytest", str(suite), "-p", "no:cacheprovider", "--rootdir", str(suite),
           "--profile", profile, *(extra or [])]
    if keyword:
        cmd += ["-k", keyword]
    print("cau conformance: the peers the suite drives:")
    if not print_peers():
        print("cau conformance: some peers are missing: the cases that need them will fail, saying so")
    report = Path(report_dir or "conformance-report").resolve()
    report.mkdir(parents=True, exist_ok=True)
    junit = report / "junit.xml"
    evidence = report / "evidence"
    started = _dt.datetime.now(_dt.timezone.utc)
    meta = {"profile": profile, "selection": keyword or "", "target": identify_target(list(extra or [])),
            "versions": peer_versions(), "started": started.isoformat(timespec="seconds")}
    t0 = time.monotonic()
    code = subprocess.call(cmd + ["-v", "-rs", f"--junitxml={junit}", "-o", "junit_logging=no",
                                  f"--evidence-dir={evidence}"],
                           env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    meta["duration_s"] = round(time.monotonic() - t0, 1)
    results = read_junit(junit) if junit.exists() else []
    doc = write_reports(results, report, code, meta, evidence)
    print(f"cau conformance: {len(results)} case(s), {doc['verdict']}; report in {report}/report.html "
          f"(and report.json, junit.xml)")
    return code


if __name__ == "__main__":   # python -m gateway.conformance --markdown > docs/conformance.md
    if sys.argv[1:] == ["--markdown"]:
        sys.stdout.write(catalogue_markdown())
    else:
        print("usage: python -m gateway.conformance --markdown", file=sys.stderr)
        raise SystemExit(2)
