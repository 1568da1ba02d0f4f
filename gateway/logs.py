"""How Cầu logs: one logger tree (``cau``, ``cau.sip.ua``, ``cau.h323.call``, ``cau.alerts`` …, from
the module's name under ``gateway``), and two formats for stderr:

- ``text``: ``2026-12-03 08:40:01,123 INFO cau.sip.ua: …``, for a person at a terminal;
- ``json``: one JSON object per line (``time`` in UTC, ISO 8601; ``level``; ``logger``;
  ``message``; ``exception`` with the traceback when there is one), for journald, Loki or an ELK
  stack, where a message with a newline (a refused dial plan lists its problems) stays one record.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import sys

FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False)


def setup(fmt: str = "text", verbose: bool = False) -> None:
    """Log to stderr in ``fmt`` (see the module docstring)."""
    if fmt not in FORMATS:
        raise ValueError(f"--log-format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
