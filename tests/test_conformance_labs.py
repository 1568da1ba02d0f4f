"""``cau conformance`` as a test lab uses it: pointed at an independent system — sipp's own UAS as a
``sip-ua`` target — it runs only the cases for that kind of system, and the report names the
target and gives every case a verdict (PASS, FAIL with observed and expected, NOT APPLICABLE with
why), never a suite error. The report is read in headless Chromium as a person would."""
from __future__ import annotations

import json
import subprocess
import sys

from interop_tests.peers.browser import chromium_path
from interop_tests.peers.procs import free_port, free_port_block
from tests.conftest import LOOP
from tests.test_run import REPO

CASES = "calls_into_a_room or session_timers or bare_cr or rfc4475_requests_get_the_answer or over_tls"


def conformance(tmp_path, *args: str, path: str = "/usr/bin:/bin:/usr/sbin", timeout: float = 600):
    """``cau conformance ARGS --report tmp_path/rep`` as a lab runs it: another directory, a bare environment."""
    return subprocess.run([sys.executable, "-m", "gateway", "conformance", *args, "--report", str(tmp_path / "rep")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                          env={"PYTHONPATH": str(REPO), "PATH": path, "HOME": str(tmp_path)})


def test_a_sipp_uas_as_a_sip_ua_target_gets_verdicts_not_errors(tmp_path):
    port = free_port()
    media = free_port_block(4)
    uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-mp", str(media), "-nostdin",
                            "-trace_err", "-error_file", str(tmp_path / "uas-errors.log")],
                           cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        r = conformance(tmp_path, "--profile", "sip-ua", "--sip-target", f"127.0.0.1:{port}", "-k", CASES)
    finally:
        uas.terminate()
        uas.wait(timeout=10)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]          # some genuine FAILs
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert doc["profile"] == "sip-ua" and doc["target"]["address"] == f"SIP 127.0.0.1:{port}", doc["target"]
    verdicts = {}
    for c in doc["cases"]:
        verdicts.setdefault(c["id"], set()).add(c["verdict"])
    assert verdicts["SIP-CALL-001"] == {"PASS"}, doc["cases"]                  # sipp answers calls
    assert verdicts["SIP-TIMER-001"] == {"NOT APPLICABLE"}                     # it offers no session timers
    assert verdicts["TORT-003"] == {"FAIL"}                                    # it accepts a bare CR
    assert "error" not in {c["verdict"].lower() for c in doc["cases"]}
    assert all(c["verdict"] in ("PASS", "FAIL", "NOT APPLICABLE") for c in doc["cases"]), doc["cases"]
    tort3 = next(c for c in doc["cases"] if c["id"] == "TORT-003")
    assert tort3["observed_expected"] == ["200", "400"], tort3
    # evidence: the failing case's own capture, and its ladder read back from it (the torture
    # message going to sipp and sipp's 200 coming back)
    ev = tmp_path / "rep" / tort3["evidence"]["folder"]
    assert (ev / "capture.pcapng").stat().st_size > 0 and tort3["evidence"]["capture"] == "capture.pcapng"
    ladder = json.loads((ev / "evidence.json").read_text())["ladder"]
    assert any(m["to"].endswith(f":{port}") and m["message"].startswith("INVITE") for m in ladder), ladder
    assert any(m["from"].endswith(f":{port}") and m["message"].startswith("200") for m in ladder), ladder
    call = next(c for c in doc["cases"] if c["id"] == "SIP-CALL-001")
    assert any(f.startswith("sipp") for f in call["evidence"]["files"]), call["evidence"]    # the peer's log
    na = next(c for c in doc["cases"] if c["id"] == "SIP-TIMER-001")
    assert "does not list 'timer'" in na["reason"], na
    for tls in ("TLS-004", "TLS-005"):                 # sipp offers no TLS: nothing answers on 5061
        assert verdicts[tls] == {"NOT APPLICABLE"}, doc["cases"]
        c = next(c for c in doc["cases"] if c["id"] == tls)
        assert "nothing completed a TLS handshake on 127.0.0.1:5061" in c["reason"], c
    # no Cầu case ran against sipp
    assert not any(c["id"].startswith(("REG-", "H323-", "WEB-", "OPS-")) for c in doc["cases"])

    async def read() -> dict:
        from playwright.async_api import async_playwright

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium_path(), headless=True, args=["--no-sandbox"])
            page = await browser.new_page()
            await page.goto((tmp_path / "rep" / "report.html").as_uri())
            out = {"title": await page.title(), "header": await page.inner_text("#header"),
                   "failing": await page.inner_text("#cases tr:has(code:text-is('TORT-003'))"),
                   "ladder": await page.inner_html("#cases tr:has(code:text-is('TORT-003')) details.lad[open] svg"),
                   "capture": await page.get_attribute("#cases tr:has(code:text-is('TORT-003')) a[href$='.pcapng']",
                                                       "href"),
                   "na": await page.inner_text("#cases tr:has(code:text-is('SIP-TIMER-001'))"),
                   "areas": await page.inner_text("#areas")}
            await page.screenshot(path=str(tmp_path / "rep" / "report.png"), full_page=True)
            await browser.close()
        return out

    seen = LOOP.run_until_complete(read())
    assert "FAIL" in seen["title"] and f"SIP 127.0.0.1:{port}" in seen["header"] and "sip-ua" in seen["header"]
    assert "did not answer OPTIONS" in seen["header"] or "SIPp" in seen["header"]
    assert "sipp v3" in seen["header"] and "tshark" in seen["header"]
    assert "observed 200, expected 400" in seen["failing"] and "FAIL" in seen["failing"], seen["failing"]
    assert "NOT APPLICABLE" in seen["na"] and "timer" in seen["na"]
    assert "INVITE sip:" in seen["ladder"] and "200 OK" in seen["ladder"] and "target" in seen["ladder"]
    assert (tmp_path / "rep" / seen["capture"]).exists()           # the link opens the capture
    assert "RFC 4475 torture messages" in seen["areas"]


def test_the_h323_test_endpoint_as_an_h323_terminal_target_passes_the_terminal_cases(tmp_path):
    port = free_port()
    terminal = subprocess.Popen([sys.executable, "-m", "interop_tests.h323.endpoint", "--answer", str(port), "--calls",
                                 "0", "--tone", "700", "--seconds", "30", "--alias", "hdx-bench"],
                                cwd=REPO, stdout=(tmp_path / "terminal.txt").open("w"), stderr=subprocess.STDOUT,
                                env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    try:
        import time

        deadline = time.monotonic() + 20                 # listening (a loaded machine starts it slowly)
        while "answering on" not in (tmp_path / "terminal.txt").read_text() and time.monotonic() < deadline:
            assert terminal.poll() is None, (tmp_path / "terminal.txt").read_text()
            time.sleep(0.1)
        r = conformance(tmp_path, "--profile", "h323-terminal", "--h323-target", f"127.0.0.1:{port}", timeout=300)
    finally:
        terminal.terminate()
        terminal.wait(timeout=10)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert doc["verdict"] == "PASS" and doc["target"]["address"] == f"H.323 127.0.0.1:{port}", doc["target"]
    ids = sorted({c["id"] for c in doc["cases"]})
    assert ids == ["H323-TERM-001", "H323-TERM-002", "H323-TERM-003"], ids    # no MCU or Cầu case ran
    assert len(doc["cases"]) == 5 and all(c["verdict"] == "PASS" for c in doc["cases"]), doc["cases"]
    # the header names the device by what its CONNECT says (H.225.0 vendor, product, version)
    assert "T.35 country 0xBC" in doc["target"].get("H.225.0 vendor (its CONNECT)", ""), doc["target"]
    sep = next(c for c in doc["cases"] if c["id"] == "H323-TERM-001" and "separate" in c["test"])
    ev = json.loads((tmp_path / "rep" / sep["evidence"]["folder"] / "evidence.json").read_text())
    said = [m["message"] for m in ev["ladder"]]
    assert any("setup" in m for m in said) and any("connect" in m for m in said), said
    assert any("terminalCapabilitySet" in m for m in said) and any("openLogicalChannel" in m for m in said), said
    freq = next(m for m in ev["measurements"] if "dominant frequency" in m["name"])
    assert abs(freq["value"] - 700) < 30, freq                     # what it sent, as the suite heard it
    # video, judged by its TCS: H.264 both ways, pictures decoded, an intra on videoFastUpdatePicture
    vid = next(c for c in doc["cases"] if c["id"] == "H323-TERM-003")
    assert "video: H264" in doc["target"].get("H.245 capabilities (its TerminalCapabilitySet)", ""), doc["target"]
    measured = {m["name"]: m["value"] for m in vid["evidence"]["measurements"]}
    assert measured["video frames decoded"] >= 10 and measured["intra picture after videoFastUpdatePicture"] != "none"
    assert any(f.endswith(".png") for f in vid["evidence"]["files"]), vid["evidence"]
    log = (tmp_path / "terminal.txt").read_text()
    assert log.count("connected; channels") == 5 and "heard 800 Hz" in log, log[-2000:]    # it heard the suite


def test_baresip_as_a_sip_ua_target_gets_audio_and_video_verdicts_with_evidence(tmp_path):
    """baresip (auto-answer, a 700 Hz sine, a red H.264 clip) as a lab's SIP phone: the calls, hold and
    media cases pass; its genuine deviations are FAILs with the reason; CANCEL does not apply to a
    phone that answers at once; the video it sends is decoded and kept as a picture."""
    from interop_tests.peers.baresip import Baresip
    from interop_tests.peers.baresip_video import clip

    red = clip(tmp_path / "red.avi", (220, 30, 30))
    phone = Baresip("lab", workdir=tmp_path / "baresip", auto_answer=True, audio_codecs=["PCMU/8000/1", "PCMA/8000/1"],
                    audio_source=("ausine", 700), video_codecs=("H264",), video_source=("avformat", str(red)))
    try:
        r = conformance(tmp_path, "--profile", "sip-ua", "--sip-target", f"127.0.0.1:{phone.sip_port}", "--room", "lab",
                        "--video-room", "lab", "-k", "calls_into_a_room or options_answers or cancel_before or "
                        "reinvite_hold or answers_audio or takes_video or picture_loss or update_changes or "
                        "changes_the_codec")
    finally:
        phone.stop()
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]          # baresip sends no Accept
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert doc["target"]["server"].startswith("baresip"), doc["target"]
    got = {c["id"]: c for c in doc["cases"]}
    assert {k: c["verdict"] for k, c in got.items()} == {
        "SIP-CALL-001": "PASS", "SIP-OPT-001": "FAIL", "SIP-CAN-001": "NOT APPLICABLE", "SDP-OA-002": "PASS",
        "MED-003": "PASS", "VID-004": "PASS", "VID-005": "PASS", "SDP-OA-006": "PASS",
        "SIP-UPD-001": "NOT APPLICABLE"}, [(c["id"], c["verdict"], c["reason"])
                                                                   for c in doc["cases"]]
    assert "no Accept header" in got["SIP-OPT-001"]["reason"]
    assert "answered the INVITE before the CANCEL" in got["SIP-CAN-001"]["reason"]
    assert "does not allow UPDATE" in got["SIP-UPD-001"]["reason"]         # its Allow, read from OPTIONS
    measured = {m["name"]: m["value"] for m in got["MED-003"]["evidence"]["measurements"]}
    assert measured["payload type"] == 0 and measured["timestamp step"] == 160, measured
    video = {m["name"]: m["value"] for m in got["VID-004"]["evidence"]["measurements"]}
    assert video["video codec"] == "H264" and video["picture size"] == "352x288", video
    r_, g_, b_ = (int(x) for x in video["picture mean colour (RGB)"].split())
    assert r_ > 150 and g_ < 80 and b_ < 80, video                       # the red clip, decoded
    assert any(f.endswith(".png") for f in got["VID-004"]["evidence"]["files"])
    html = (tmp_path / "rep" / "report.html").read_text()
    assert 'src="evidence/VID-004/what-the-target-sent-H264.png"' in html


def test_pjsip_as_a_sip_ua_target_passes_the_ua_cases_it_offers(tmp_path):
    """PJSIP (pjsua2, auto-answer with a 700 Hz tone, no video) as a lab's SIP phone: calls, OPTIONS,
    late offer, hold, 488 and session timers (it offers them) PASS; its RTP has the agreed type and
    packet time; video and CANCEL do not apply (it has no camera, it answers at once)."""
    from interop_tests.peers.pjsua import PjsuaAnswerer

    phone = PjsuaAnswerer(codecs=("PCMU", "PCMA"), tone=700, timeout=600)
    try:
        r = conformance(tmp_path, "--profile", "sip-ua", "--sip-target", f"127.0.0.1:{phone.port}", "--room", "pjsua",
                        "--video-room", "pjsua", "-k", "calls_into_a_room or options_answers or cancel_before or "
                        "reinvite_hold or answers_audio or takes_video or session_timers or late_offer or "
                        "no_common_codec or picture_loss or update_changes or changes_the_codec")
    finally:
        phone.stop()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert doc["target"]["server"].startswith("pjsua2"), doc["target"]
    verdicts = {c["id"]: c["verdict"] for c in doc["cases"]}
    assert verdicts == {"SIP-CALL-001": "PASS", "SIP-OPT-001": "PASS", "SIP-CAN-001": "NOT APPLICABLE",
                        "SDP-OA-001": "PASS", "SDP-OA-002": "PASS", "SDP-OA-003": "PASS", "SIP-TIMER-001": "PASS",
                        "MED-003": "PASS", "VID-004": "NOT APPLICABLE", "VID-005": "NOT APPLICABLE",
                        "SIP-UPD-001": "PASS", "SDP-OA-006": "PASS"}, verdicts
    vid = next(c for c in doc["cases"] if c["id"] == "VID-004")
    assert vid["reason"].endswith("(no m=video, or port 0)"), vid["reason"]
    med = next(c for c in doc["cases"] if c["id"] == "MED-003")
    assert {m["name"]: m["value"] for m in med["evidence"]["measurements"]}["timestamp step"] == 160


def test_pjsip_over_tls_as_a_lab_target_gets_the_tls_and_srtp_verdicts_it_deserves(tmp_path):
    """PJSIP listening for SIP over TLS (``--sip-tls-target``): with SRTP offered, a call over TLS comes
    up (its certificate shown in the report) and its SRTP decrypts and is ciphertext on the wire;
    without SRTP, the SRTP case does not apply (it answers 488), never a FAIL."""
    from interop_tests.peers.pjsua import PjsuaAnswerer

    for srtp, expected in (("optional", "PASS"), (None, "NOT APPLICABLE")):
        phone = PjsuaAnswerer(tls=True, srtp=srtp, codecs=("PCMU", "PCMA"), tone=700, timeout=600)
        rep = tmp_path / f"srtp-{srtp}"
        rep.mkdir()
        try:
            r = conformance(rep, "--profile", "sip-ua", "--sip-target", f"127.0.0.1:{phone.port}", "--sip-tls-target",
                            f"127.0.0.1:{phone.tls_port}", "--room", "pjsua", "-k", "over_tls")
        finally:
            phone.stop()
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
        doc = json.loads((rep / "rep" / "report.json").read_text())
        assert f"SIP/TLS 127.0.0.1:{phone.tls_port}" in doc["target"]["address"], doc["target"]
        assert "127.0.0.1" in doc["target"]["SIP over TLS certificate"], doc["target"]     # the header shows it
        verdicts = {c["id"]: c for c in doc["cases"]}
        assert verdicts["TLS-004"]["verdict"] == "PASS", verdicts["TLS-004"]
        shown = {m["name"]: m["value"] for m in verdicts["TLS-004"]["evidence"]["measurements"]}
        assert "127.0.0.1" in shown["certificate names"] and shown["certificate SHA-256"].count(":") == 31, shown
        assert verdicts["TLS-005"]["verdict"] == expected, verdicts["TLS-005"]
        if srtp:
            m = {m["name"]: m["value"] for m in verdicts["TLS-005"]["evidence"]["measurements"]}
            assert m["payload entropy"] >= 7.8 and m["packets baresip could not decrypt"] == 0, m
        else:
            assert "488" in verdicts["TLS-005"]["reason"], verdicts["TLS-005"]


def test_a_missing_peer_makes_a_lab_case_inconclusive_and_says_what_to_install(tmp_path):
    """sipp absent from the lab machine: the cases that drive it are INCONCLUSIVE with the package to
    install, never a FAIL of the device; the start of the run says the same."""
    import os

    port = free_port()
    uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-nostdin"],
                           cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    bin_dir = tmp_path / "bin"                     # a PATH with tshark and nothing of the SIP peers
    bin_dir.mkdir()
    for tool in ("tshark", "dumpcap"):
        os.symlink(f"/usr/bin/{tool}", bin_dir / tool)
    try:
        r = conformance(tmp_path, "--profile", "sip-ua", "--sip-target", f"127.0.0.1:{port}", "-k", "calls_into_a_room",
                        path=str(bin_dir), timeout=300)
    finally:
        uas.terminate()
        uas.wait(timeout=10)
    assert "sipp       MISSING" in r.stdout and "apt-get install sip-tester" in r.stdout, r.stdout[-2000:]
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    (case,) = doc["cases"]
    assert case["id"] == "SIP-CALL-001" and case["verdict"] == "INCONCLUSIVE", case
    assert "sip-tester" in case["reason"], case["reason"]
    assert doc["verdict"] == "INCONCLUSIVE"
