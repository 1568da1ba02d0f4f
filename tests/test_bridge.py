"""Dial routes as an interworking bridge: a caller the route's ``callers`` allows is bridged out to
the target as a two-party call — a SIP commune reaching an H.323 system (the national MCU's
number), an H.323 room system reaching a SIP number — and hears and is heard; anyone else gets a
plain refusal that does not name the target. Independent peers: baresip, the H.323 test endpoint."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from interop_tests.peers.baresip import Baresip
from interop_tests.peers.procs import free_port, wait_line, wav_peak
from tests.test_console import _ports
from tests.test_run import REPO, gateway  # noqa: F401 - the fixture

PLAN = """\
version: 1
rooms:
  - {{id: hop, name: "Phòng họp", numbers: ["1000"]}}
routes:
  - prefix: "00"
    dial: "h323:{{rest}}@127.0.0.1:{h323_port}"
    callers: ["xa-*"]
    description: the national MCU
  - prefix: "09"
    dial: "sip:phone@127.0.0.1:{sip_port}"
    callers: ["127.0.0.0/8"]
endpoints:
  - {{alias: xa-an-binh, name: "UBND xã An Bình", number: "5101", protocol: sip, password: "mat-khau-5101", group: huyen-01}}
"""


def _endpoint(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "interop_tests.h323.endpoint", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_a_sip_commune_reaches_an_h323_system_and_an_h323_system_a_sip_phone(gateway, tmp_path):  # noqa: F811
    h323_port = free_port()
    phone = Baresip("phone", workdir=tmp_path / "phone", audio_codecs=("PCMU/8000/1",), auto_answer=True,
                    audio_source=("ausine", 523))
    (tmp_path / "plan.yaml").write_text(PLAN.format(h323_port=h323_port, sip_port=phone.sip_port))
    gw = gateway("--no-watch", "--rtp-ports", "48000-48199")
    ports = _ports(gw)
    dialable = dict(json.loads(gw.get("/api/status")[2])["dialplan"]["dialable"])
    assert dialable["00…"].startswith("dial out (for xa-*) to h323:"), dialable
    assert dialable["09…"].startswith("dial out (for 127.0.0.0/8) to sip:"), dialable
    commune = Baresip("xa-an-binh", workdir=tmp_path / "commune", audio_codecs=("G722/16000/1", "PCMU/8000/1"),
                      audio_source=("ausine", 440),
                      register_to=(f"127.0.0.1:{ports['SIP']}", "xa-an-binh", "mat-khau-5101"))
    stranger = Baresip("stranger", workdir=tmp_path / "stranger", audio_codecs=("PCMU/8000/1",))
    mcu = _endpoint("--answer", str(h323_port), "--alias", "national-mcu", "--tone", "700", "--seconds", "30")
    room_system = None
    try:
        assert commune.registered(timeout=10)
        first = wait_line(mcu, "answering on", 20)          # the H.323 system listens (a loaded machine is slow)
        # an unknown caller: refused, and told nothing of where 00… leads
        stranger.dial(f"sip:0090001@127.0.0.1:{ports['SIP']}")
        ev = stranger.wait_event("CALL_CLOSED", timeout=10)
        assert "403" in str(ev.get("param")) and "not open to callers" in str(ev.get("param")), ev
        assert "127.0.0.1:%d" % h323_port not in str(ev) and "h323" not in str(ev.get("param")).lower(), ev
        # the commune: bridged to the H.323 system
        commune.dial(f"sip:0090001@127.0.0.1:{ports['SIP']}")
        commune.wait_established(timeout=15)
        status = json.loads(gw.get("/api/status")[2])
        [room] = [r for r in status["rooms"] if r["id"].startswith("call-")]
        assert sorted(p["protocol"] for p in room["roster"]) == ["h323", "sip"], room["roster"]
        time.sleep(4.0)
        commune.hangup()
        commune.wait_closed(timeout=10)
        out, _ = mcu.communicate(timeout=20)
        out = first + out
        assert "released by the far end" in out, out[-2000:]
        heard = [ln for ln in out.splitlines() if ln.startswith("heard ")]
        assert heard and abs(float(heard[0].split()[1]) - 440) < 15, out[-1500:]    # the H.323 side heard the commune
        freq, level = wav_peak(commune.received_audio())
        assert abs(freq - 700) < 15 and level > -40, (freq, level)                     # and the commune the H.323 side
        # an H.323 room system on loopback dials 09…: bridged to the SIP phone
        room_system = _endpoint("--call", "0990002", "--to", f"127.0.0.1:{ports['H.323 call signalling']}",
                                "--alias", "hdx-huyen", "--tone", "900", "--seconds", "4")
        phone.wait_established(timeout=15)
        out2, _ = room_system.communicate(timeout=30)
        assert "connected; channels" in out2, out2[-2000:]
        heard = [ln for ln in out2.splitlines() if ln.startswith("heard ")]
        assert heard and abs(float(heard[0].split()[1]) - 523) < 15, out2[-1500:]
        phone.wait_closed(timeout=10)
        freq, level = wav_peak(phone.received_audio())
        assert abs(freq - 900) < 15 and level > -40, (freq, level)
    finally:
        for p in (commune, stranger, phone):
            p.stop()
        for proc in (mcu, room_system):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    log = gw.stderr.read_text()
    assert "bridged out to h323:0090001@127.0.0.1" in log or "bridged out to h323:90001" in log, log[-3000:]
    assert gw.stop() == 0
