"""Call records and quality history in SQLite (the standard library's ``sqlite3``).

Every participant's call is one row of ``calls``: when it began and joined and ended, who
(checked identity, display name, address, protocol, user agent), the room, codecs, encryption,
why it ended, and its quality summary (MOS, loss, jitter both ways, round trip). While it runs,
``quality`` gets a row a minute (for the console's charts).

The database is one file (``state_dir/cau.sqlite`` unless ``database:`` says otherwise), WAL
mode, the schema versioned in ``PRAGMA user_version`` and migrated forward at start (a file from a
newer Cầu is refused with a clear line). One writer thread owns the write connection, so a slow
disk never holds the event loop; queries open their own read connection (WAL readers do not wait
for the writer). A write that fails (a full disk, a read-only file) is logged once with a count
and shown in ``/api/status`` (``call_records.error``); the calls go on. Rows older than
``cdr_retention_days`` are deleted once an hour.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

from gateway.repeated import RepeatedLog

__all__ = ["CallRecords", "SCHEMA_VERSION", "CdrError"]

log = logging.getLogger("cau.cdr")
_repeated = RepeatedLog(log)

SCHEMA_VERSION = 2

#: migrations[n] takes a database from version n to n + 1
_MIGRATIONS: list[str] = [
    # 0 → 1: calls
    """
    CREATE TABLE calls (
        id INTEGER PRIMARY KEY,
        leg TEXT NOT NULL,
        started REAL NOT NULL,          -- unix time of the call's first message
        joined REAL NOT NULL,           -- unix time it joined the room
        ended REAL,                     -- NULL while it runs
        room TEXT NOT NULL,
        room_name TEXT,
        site TEXT,                      -- the checked dial-plan identity; NULL: anonymous
        name TEXT,
        address TEXT,
        protocol TEXT NOT NULL,
        user_agent TEXT,
        audio_codec TEXT,
        video_codec TEXT,
        encryption TEXT,                -- JSON {"signalling": ..., "media": ...}
        end_reason TEXT,
        mos_rx REAL, mos_tx REAL, loss_rx REAL, loss_tx REAL, jitter_rx REAL, jitter_tx REAL, rtt_ms REAL,
        packets_rx INTEGER, packets_tx INTEGER
    );
    CREATE INDEX calls_started ON calls(started);
    CREATE INDEX calls_room ON calls(room, started);
    CREATE INDEX calls_site ON calls(site, started);
    """,
    # 1 → 2: the per-minute quality series
    """
    CREATE TABLE quality (
        call INTEGER NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
        at REAL NOT NULL,
        mos_rx REAL, loss_rx REAL, jitter_rx REAL, mos_tx REAL, loss_tx REAL, rtt_ms REAL
    );
    CREATE INDEX quality_call ON quality(call, at);
    """,
]
assert len(_MIGRATIONS) == SCHEMA_VERSION

_COLUMNS = ("id", "leg", "started", "joined", "ended", "room", "room_name", "site", "name", "address", "protocol",
            "user_agent", "audio_codec", "video_codec", "encryption", "end_reason", "mos_rx", "mos_tx",
            "loss_rx", "loss_tx", "jitter_rx", "jitter_tx", "rtt_ms", "packets_rx", "packets_tx")


class CdrError(Exception):
    """The database cannot be used (one line for the operator)."""


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), timeout=5.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA foreign_keys = ON")
    return db


def open_database(path: Path) -> sqlite3.Connection:
    """Open (or make) the database and bring its schema to SCHEMA_VERSION."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = _connect(path)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
    except (OSError, sqlite3.Error) as exc:
        raise CdrError(f"call records: cannot open {path}: {exc}") from None
    if version > SCHEMA_VERSION:
        db.close()
        raise CdrError(f"call records: {path} has schema version {version}, newer than this Cầu's "
                       f"{SCHEMA_VERSION}: upgrade Cầu or set database: to another file")
    for n in range(version, SCHEMA_VERSION):
        try:
            db.execute("BEGIN")
            for stmt in _statements(_MIGRATIONS[n]):      # one transaction (executescript would commit)
                db.execute(stmt)
            db.execute(f"PRAGMA user_version = {n + 1}")
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            db.execute("ROLLBACK")
            db.close()
            raise CdrError(f"call records: migrating {path} to version {n + 1} failed: {exc}") from None
        log.info("call records: %s migrated to schema version %d", path, n + 1)
    return db


def _statements(script: str) -> list[str]:
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class CallRecords:
    """The call log of one gateway. ``on_*`` methods run on the event loop and only queue work."""

    def __init__(self, path: Path, *, retention_days: float = 90.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.retention_days = retention_days
        self.clock = clock
        self._db = open_database(self.path)
        self._queue: queue.Queue = queue.Queue(maxsize=100_000)
        self._rows: dict[str, int] = {}            # leg id -> calls.id (set by the writer)
        self._lock = threading.Lock()
        self.error: str | None = None
        self.written = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._writer, name="cau-cdr", daemon=True)
        self._thread.start()

    # -- events (event loop) ------------------------------------------------------------
    def joined(self, room: Any, leg: Any) -> None:
        now = self.clock()
        started = now - max(0.0, time.monotonic() - getattr(leg, "started", time.monotonic()))
        audio = leg.stream("audio")
        video = leg.stream("video")
        row = {
            "leg": leg.id, "started": started, "joined": now, "room": room.id, "room_name": room.name,
            "site": leg.identity, "name": leg.display_name, "address": leg.remote, "protocol": leg.protocol,
            "user_agent": getattr(leg, "user_agent", None),
            "audio_codec": audio.tx.codec.name if audio is not None and audio.tx is not None else None,
            "video_codec": video.tx.codec.name if video is not None and video.tx is not None else None,
            "encryption": json.dumps(leg.encryption, sort_keys=True) if leg.encryption else None,
        }
        self._put(("insert", row))

    def left(self, room: Any, leg: Any, reason: str | None, quality: dict | None) -> None:
        self._put(("end", leg.id, self.clock(), reason or getattr(leg, "hangup_reason", None), quality))

    def sample(self, leg: Any, quality: dict | None) -> None:
        if quality:
            self._put(("quality", leg.id, self.clock(), quality))

    def _put(self, item: Any) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            _repeated("full", logging.ERROR, "call records: the write queue is full (the disk is too slow?); "
                      "records dropped")

    # -- the writer thread --------------------------------------------------------------
    def _writer(self) -> None:
        last_purge = 0.0
        while True:
            item = self._queue.get()
            if item is None:
                break
            try:
                if self._write(item):
                    self.written += 1
                    if self.error is not None:
                        log.info("call records: writing again (%s)", self.path)
                    self.error = None
            except sqlite3.Error as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                _repeated(("write", str(exc)), logging.ERROR, "call records: cannot write to %s: %s "
                          "(calls go on; the record is lost)", self.path, exc)
            if time.monotonic() - last_purge > 3600:
                last_purge = time.monotonic()
                self._purge()
        self._db.close()

    def _write(self, item: tuple) -> bool:
        """One queued item into the database; True when a row was written."""
        db = self._db
        kind = item[0]
        if kind == "insert":
            row = item[1]
            cols = ", ".join(row)
            cur = db.execute(f"INSERT INTO calls ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
            with self._lock:
                self._rows[row["leg"]] = int(cur.lastrowid)
            return True
        if kind == "end":
            _, leg, at, reason, q = item
            with self._lock:
                rid = self._rows.pop(leg, None)
            if rid is None:
                return False
            s = _summary(q)
            db.execute("UPDATE calls SET ended = ?, end_reason = ?, mos_rx = ?, mos_tx = ?, loss_rx = ?, loss_tx = ?, "
                       "jitter_rx = ?, jitter_tx = ?, rtt_ms = ?, packets_rx = ?, packets_tx = ? WHERE id = ?",
                       (at, reason, s["mos_rx"], s["mos_tx"], s["loss_rx"], s["loss_tx"], s["jitter_rx"],
                        s["jitter_tx"], s["rtt_ms"], s["packets_rx"], s["packets_tx"], rid))
            return True
        if kind == "quality":
            _, leg, at, q = item
            with self._lock:
                rid = self._rows.get(leg)
            if rid is None:
                return False
            s = _summary(q)
            db.execute("INSERT INTO quality (call, at, mos_rx, loss_rx, jitter_rx, mos_tx, loss_tx, rtt_ms) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (rid, at, s["mos_rx"], s["loss_rx"], s["jitter_rx"], s["mos_tx"], s["loss_tx"], s["rtt_ms"]))
            return True
        if kind == "sync":
            item[1].set()
        return False

    def _purge(self) -> None:
        if not self.retention_days:
            return
        cutoff = self.clock() - self.retention_days * 86400
        try:
            n = self._db.execute("DELETE FROM calls WHERE started < ? AND ended IS NOT NULL", (cutoff,)).rowcount
            if n:
                log.info("call records: %d calls older than %g days deleted", n, self.retention_days)
        except sqlite3.Error as exc:
            _repeated(("purge", str(exc)), logging.ERROR, "call records: purge failed: %s", exc)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is written (tests, shutdown)."""
        done = threading.Event()
        self._put(("sync", done))
        return done.wait(timeout)

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=5)

    # -- queries (any thread) -----------------------------------------------------------
    def call_id(self, leg_id: str) -> int | None:
        """The record of a call still in progress (None until the writer has inserted it)."""
        with self._lock:
            return self._rows.get(leg_id)

    def query(self, *, start: float | None = None, end: float | None = None, room: str | None = None,
              site: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        where, args = [], []
        if start is not None:
            where.append("started >= ?")
            args.append(start)
        if end is not None:
            where.append("started < ?")
            args.append(end)
        if room:
            where.append("room = ?")
            args.append(room)
        if site:
            where.append("site = ?")
            args.append(site)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started DESC LIMIT ?"
        args.append(max(1, min(int(limit), 100_000)))
        db = _connect(self.path)
        try:
            rows = db.execute(sql, args).fetchall()
        finally:
            db.close()
        out = []
        for r in rows:
            d = dict(zip(_COLUMNS, r))
            d["encryption"] = json.loads(d["encryption"]) if d["encryption"] else None
            d["duration_s"] = round(d["ended"] - d["joined"], 1) if d["ended"] else None
            out.append(d)
        return out

    def series(self, call_id: int) -> list[dict[str, Any]]:
        db = _connect(self.path)
        try:
            rows = db.execute("SELECT at, mos_rx, loss_rx, jitter_rx, mos_tx, loss_tx, rtt_ms FROM quality "
                              "WHERE call = ? ORDER BY at", (call_id,)).fetchall()
        finally:
            db.close()
        return [dict(zip(("at", "mos_rx", "loss_rx", "jitter_rx", "mos_tx", "loss_tx", "rtt_ms"), r)) for r in rows]

    @staticmethod
    def to_csv(rows: list[dict[str, Any]]) -> str:
        buf = io.StringIO()
        cols = [c for c in _COLUMNS if c != "encryption"] + ["signalling", "media_encryption", "duration_s"]
        w = csv.writer(buf)
        w.writerow(cols)
        for r in rows:
            enc = r.get("encryption") or {}
            values = [r.get(c) for c in cols[:-3]] + [enc.get("signalling"), enc.get("media"), r.get("duration_s")]
            w.writerow(["" if v is None else _csv_safe(v) for v in values])
        return buf.getvalue()

    def info(self) -> dict[str, Any]:
        return {"database": str(self.path), "written": self.written, "queued": self._queue.qsize(),
                "dropped": self.dropped, "error": self.error, "retention_days": self.retention_days}


def _csv_safe(v: Any) -> Any:
    """Text that a spreadsheet would run as a formula is quoted with a leading apostrophe."""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


def _summary(q: dict | None) -> dict[str, Any]:
    rx = (q or {}).get("rx") or {}
    tx = (q or {}).get("tx") or {}
    return {"mos_rx": rx.get("mos"), "loss_rx": rx.get("loss_pct"), "jitter_rx": rx.get("jitter_ms"),
            "mos_tx": tx.get("mos"), "loss_tx": tx.get("loss_pct"), "jitter_tx": tx.get("jitter_ms"),
            "rtt_ms": (q or {}).get("rtt_ms"), "packets_rx": rx.get("packets"), "packets_tx": tx.get("packets")}
