"""``/metrics``: Prometheus' own parser reads it, and the figures follow a real call (baresip)."""
from __future__ import annotations

import json
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from interop_tests.peers.baresip import Baresip
from tests.test_run import gateway  # noqa: F401 - the fixture


def _metrics(gw) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.port}/metrics", timeout=5) as r:
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _value(m: dict, name: str, **labels) -> float | None:
    for got, value in m.get(name, []):
        if all(got.get(k) == v for k, v in labels.items()):
            return value
    return None


def test_metrics_follow_a_call_and_parse_with_prometheus(gateway, tmp_path):  # noqa: F811
    gw = gateway("--no-watch", "--rtp-ports", "42000-42199")
    status = json.loads(gw.get("/api/status")[2])
    sip = int(status["listening"]["SIP"].split(":")[-1].split("/")[0])
    before = _metrics(gw)
    assert _value(before, "cau_rooms") == 0
    assert _value(before, "cau_rtp_ports") == 200
    assert _value(before, "process_cpu_seconds_total") is not None        # process figures too
    assert _value(before, "cau_call_setup_seconds_count", protocol="sip") == 0
    b = Baresip("site", workdir=tmp_path / "b", audio_codecs=("PCMU/8000/1",))
    try:
        b.dial(f"sip:1000@127.0.0.1:{sip}")
        b.wait_established(timeout=10)
        time.sleep(2.5)
        during = _metrics(gw)
        b.hangup()
        b.wait_closed(timeout=10)
    finally:
        b.stop()
    assert _value(during, "cau_rooms") == 1
    assert _value(during, "cau_participants", protocol="sip", codec="PCMU") == 1
    assert _value(during, "cau_calls_total", protocol="sip", result="answered") == 1
    assert _value(during, "cau_rtp_ports_in_use") >= 2
    assert _value(during, "cau_call_setup_seconds_count", protocol="sip") == 1
    assert 0 < _value(during, "cau_call_setup_seconds_sum", protocol="sip") < 5
    mos = _value(during, "cau_site_mos", site="anonymous")
    assert mos is not None and 3.5 < mos <= 4.5, during.get("cau_site_mos")
    assert _value(during, "cau_site_loss_ratio", site="anonymous", direction="rx") == 0
    assert _value(during, "cau_media_ticks_total") > 100
    # a refused reload is counted
    gw.plan.write_text("version: 1\nrooms: [oops\n")
    gw.proc.send_signal(__import__("signal").SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _value(_metrics(gw), "cau_dialplan_reloads_total", result="refused") != 1:
        time.sleep(0.1)
    assert _value(_metrics(gw), "cau_dialplan_reloads_total", result="refused") == 1
    assert gw.stop() == 0
