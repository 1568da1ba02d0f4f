"""A failure that repeats (one peer's bad packets, fifty a second) is logged once with its
traceback, then one line in every 500 with the count: the disk does not fill, the operator still sees it."""
from __future__ import annotations

import logging

from gateway.repeated import RepeatedLog
from gateway.sip import transport


def test_a_repeated_failure_is_logged_once_then_with_a_count(caplog):
    log = RepeatedLog(logging.getLogger("cau.test"), every=500)
    with caplog.at_level(logging.WARNING, logger="cau.test"):
        for _ in range(1200):
            log(("bad", "x"), logging.WARNING, "bad packet from %s", "192.0.2.7")
        log(("other",), logging.WARNING, "another problem")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["bad packet from 192.0.2.7", "bad packet from 192.0.2.7 (seen 501 times)",
                     "bad packet from 192.0.2.7 (seen 1001 times)", "another problem"]
    assert log.count(("bad", "x")) == 1200


def test_distinct_keys_cannot_grow_the_table_without_bound():
    log = RepeatedLog(logging.getLogger("cau.test"), keys=100)
    for i in range(10_000):
        log(("k", i), logging.DEBUG, "x")
    assert len(log._seen) == 100


def test_a_sip_callback_that_keeps_failing_logs_one_traceback(caplog):
    def broken(*args):
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger=transport.log.name):
        for _ in range(1000):
            transport._safe_call(broken, "request", "peer")
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and len(caplog.records) == 2, [r.getMessage() for r in caplog.records]
