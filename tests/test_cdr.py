"""Call records in SQLite: what a call leaves behind, through restarts, a full disk and old age."""
from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
import urllib.request
from types import SimpleNamespace

import pytest

from gateway.cdr import SCHEMA_VERSION, CallRecords, CdrError, open_database
from interop_tests.peers.baresip import Baresip
from tests.test_run import gateway  # noqa: F401 - the fixture

Q = {"rx": {"packets": 500, "loss_pct": 1.5, "jitter_ms": 4.2, "mos": 4.1}, "tx": {"packets": 498, "loss_pct": 0.0,
                                                                                 "jitter_ms": 2.0, "mos": 4.3},
     "rtt_ms": 12.0}


def _leg(i: int, **kw):
    fmt = SimpleNamespace(codec=SimpleNamespace(name="G722"))
    audio = SimpleNamespace(tx=fmt)
    base = dict(id=f"leg-{i}", identity="xa-an-binh", display_name="=HYPERLINK(1)", remote="198.18.0.2:5060",
                protocol="sip", user_agent="Yealink", encryption={"signalling": "TLS", "media": None},
                started=time.monotonic() - 1.5, hangup_reason=None)
    base.update(kw)
    leg = SimpleNamespace(**base)
    leg.stream = lambda kind: audio if kind == "audio" else None
    return leg


ROOM = SimpleNamespace(id="tinh", name="Họp tỉnh")


def test_a_call_is_recorded_with_who_codecs_quality_and_a_minute_series(tmp_path):
    cdr = CallRecords(tmp_path / "cau.sqlite")
    leg = _leg(1)
    cdr.joined(ROOM, leg)
    cdr.sample(leg, Q)
    cdr.sample(leg, Q)
    cdr.left(ROOM, leg, "the participant hung up", Q)
    assert cdr.flush()
    [row] = cdr.query()
    assert (row["room"], row["site"], row["protocol"], row["audio_codec"], row["user_agent"]) == \
        ("tinh", "xa-an-binh", "sip", "G722", "Yealink")
    assert row["encryption"] == {"signalling": "TLS", "media": None}
    assert row["end_reason"] == "the participant hung up" and row["ended"] >= row["joined"] > row["started"]
    assert (row["mos_rx"], row["loss_rx"], row["mos_tx"], row["rtt_ms"]) == (4.1, 1.5, 4.3, 12.0)
    assert len(cdr.series(row["id"])) == 2
    assert cdr.query(room="other") == [] and cdr.query(site="xa-an-binh")
    assert cdr.query(start=time.time() + 60) == []
    text = CallRecords.to_csv(cdr.query())
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:3] == ["id", "leg", "started"] and len(rows) == 2
    assert rows[1][rows[0].index("name")] == "'=HYPERLINK(1)"       # no formula for the spreadsheet
    cdr.close()
    again = CallRecords(tmp_path / "cau.sqlite")                     # a restart keeps them
    assert len(again.query()) == 1
    again.close()


def test_the_schema_is_versioned_and_a_newer_file_is_refused(tmp_path):
    db = open_database(tmp_path / "a.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(CdrError, match="newer than this"):
        open_database(tmp_path / "a.sqlite")
    old = sqlite3.connect(tmp_path / "b.sqlite")                      # a version-1 file is migrated
    old.executescript(open_database.__globals__["_MIGRATIONS"][0])
    old.execute("PRAGMA user_version = 1")
    old.close()
    db = open_database(tmp_path / "b.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT count(*) FROM quality").fetchone() == (0,)


def test_a_full_disk_is_reported_and_the_calls_go_on(tmp_path):
    cdr = CallRecords(tmp_path / "cau.sqlite")
    cdr.flush()
    pages = cdr._db.execute("PRAGMA page_count").fetchone()[0]
    cdr._db.execute(f"PRAGMA max_page_count = {pages}").fetchone()   # the disk is full from now on
    for i in range(300):
        cdr.joined(ROOM, _leg(i, display_name="x" * 400))
    assert cdr.flush()
    assert cdr.error is not None and "full" in cdr.error
    assert cdr.info()["error"] == cdr.error
    cdr._db.execute("PRAGMA max_page_count = 1073741823").fetchone()   # space again: writing resumes
    cdr.joined(ROOM, _leg(999))
    assert cdr.flush() and cdr.error is None
    cdr.close()


def test_old_calls_are_deleted_after_the_retention_period(tmp_path):
    now = [time.time() - 100 * 86400]
    cdr = CallRecords(tmp_path / "cau.sqlite", retention_days=90, clock=lambda: now[0])
    leg = _leg(1)
    cdr.joined(ROOM, leg)
    cdr.left(ROOM, leg, "done", Q)
    cdr.flush()
    now[0] = time.time()
    cdr._purge()
    assert cdr.query() == []
    cdr.close()


def test_a_real_call_is_in_api_calls_and_in_the_csv_after_a_restart(gateway, tmp_path):  # noqa: F811
    gw = gateway("--no-watch", "--rtp-ports", "43000-43199")
    sip = int(json.loads(gw.get("/api/status")[2])["listening"]["SIP"].split(":")[-1].split("/")[0])
    b = Baresip("site", workdir=tmp_path / "b", audio_codecs=("PCMU/8000/1",))
    try:
        b.dial(f"sip:1000@127.0.0.1:{sip}")
        b.wait_established(timeout=10)
        time.sleep(1.0)
        b.hangup()
        b.wait_closed(timeout=10)
    finally:
        b.stop()
    deadline = time.monotonic() + 5
    calls: list = []
    while time.monotonic() < deadline:
        calls = json.loads(gw.get("/api/calls")[2])["calls"]
        if calls and calls[0]["ended"]:
            break
        time.sleep(0.1)
    [call] = calls
    assert call["protocol"] == "sip" and call["audio_codec"] == "PCMU" and "baresip" in call["user_agent"]
    assert call["address"].startswith("127.0.0.1:") and call["duration_s"] >= 0.5
    assert call["mos_rx"] is not None and call["end_reason"]
    assert gw.stop() == 0
    gw2 = gateway("--no-watch", "--rtp-ports", "43000-43199")
    day = time.strftime("%Y-%m-%d", time.gmtime(call["started"]))
    with urllib.request.urlopen(f"http://127.0.0.1:{gw2.port}/api/calls?from={day}&format=csv", timeout=5) as r:
        assert r.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(r.read().decode())))
    assert len(rows) == 2 and rows[1][rows[0].index("leg")] == call["leg"]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{gw2.port}/api/calls?from=yesterday", timeout=5)
    assert err.value.code == 400
    assert gw2.stop() == 0
