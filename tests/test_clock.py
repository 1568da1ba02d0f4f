"""The media clock: one drift-free 20 ms ticker for the whole process."""
from __future__ import annotations

import logging
import time

import pytest
from twisted.internet.task import Clock

from gateway.media.clock import MediaClock
from tests.conftest import run_for


def test_about_50_ticks_per_second_of_real_time():
    clock = MediaClock()
    stamps: list[float] = []
    clock.subscribe(lambda: stamps.append(time.monotonic()))
    t0 = time.monotonic()
    clock.start()
    try:
        run_for(1.0)
    finally:
        clock.stop()
    elapsed = time.monotonic() - t0  # ~1 s; more if the machine is busy
    due = int(elapsed / 0.020)
    assert due - 6 - clock.stats.skipped <= len(stamps) <= due + 1
    assert 40 <= len(stamps) + clock.stats.skipped  # a stall > 100 ms skips ticks (and logs it)
    n = len(stamps)
    run_for(0.1)
    assert len(stamps) == n  # stopped means stopped


def test_missed_ticks_are_caught_up_after_the_loop_was_blocked():
    clock = MediaClock()
    count = [0]

    def tick():
        count[0] += 1
        if count[0] == 5:
            time.sleep(0.1)  # a blocking call somewhere in the process: 5 ticks' worth

    clock.subscribe(tick)
    t0 = time.monotonic()
    clock.start()
    try:
        run_for(1.0)
    finally:
        clock.stop()
    elapsed = time.monotonic() - t0
    due = int(elapsed / 0.020)
    assert clock.stats.missed >= 4
    assert clock.stats.late_ticks >= 1 and clock.stats.max_lateness_ms >= 80
    # the average rate did not suffer: one tick per 20 ms of wall time despite the 100 ms stall
    assert due - 6 - clock.stats.skipped <= count[0] <= due + 1


def test_fixed_grid_with_a_manual_reactor():
    r = Clock()
    clock = MediaClock(0.020, reactor=r)
    count = [0]
    clock.subscribe(lambda: count.__setitem__(0, count[0] + 1))
    clock.start()
    # timers that fire late by odd amounts must not slow the average rate
    for _ in range(143):
        r.advance(0.007)
    assert count[0] == int(143 * 0.007 / 0.020 + 1e-9)  # 50 ticks in 1.001 s
    assert clock.stats.ticks == count[0]


def test_catch_up_is_bounded_then_resyncs():
    r = Clock()
    clock = MediaClock(0.020, reactor=r, max_catchup=5)
    count = [0]
    clock.subscribe(lambda: count.__setitem__(0, count[0] + 1))
    clock.start()
    r.advance(0.020)
    assert count[0] == 1
    r.advance(0.080)  # 4 ticks due at once
    assert count[0] == 5 and clock.stats.missed == 3
    r.advance(1.0)  # 50 ticks due: run 6, skip the rest
    assert count[0] == 11 and clock.stats.resyncs == 1 and clock.stats.skipped == 44
    r.advance(0.020)
    assert count[0] == 12  # back on the grid


def test_a_failing_subscriber_is_logged_and_the_clock_keeps_going(caplog):
    r = Clock()
    clock = MediaClock(0.020, reactor=r)
    good = [0]

    def bad():
        raise ZeroDivisionError("room 7 mixer bug")

    clock.subscribe(bad)
    clock.subscribe(lambda: good.__setitem__(0, good[0] + 1))
    clock.start()
    with caplog.at_level(logging.ERROR):
        for _ in range(10):
            r.advance(0.020)
    assert good[0] == 10
    assert clock.stats.callback_errors == 10
    assert caplog.text.count("ZeroDivisionError: room 7 mixer bug") == 1


def test_subscribe_unsubscribe_and_restart():
    r = Clock()
    clock = MediaClock(0.020, reactor=r)
    calls: list[str] = []
    a = lambda: calls.append("a")  # noqa: E731
    b = lambda: calls.append("b")  # noqa: E731
    clock.subscribe(a)
    clock.subscribe(a)  # no double calls
    clock.subscribe(b)
    clock.start()
    clock.start()  # idempotent
    r.advance(0.020)
    assert calls == ["a", "b"]
    clock.unsubscribe(a)
    clock.unsubscribe(a)  # unknown: ignored
    r.advance(0.020)
    assert calls == ["a", "b", "b"]
    clock.stop()
    r.advance(0.1)
    assert calls == ["a", "b", "b"]
    clock.start()
    r.advance(0.020)
    assert calls[-1] == "b" and len(calls) == 4
    with pytest.raises(ValueError):
        MediaClock(0)
    with pytest.raises(TypeError):
        clock.subscribe("not callable")  # type: ignore[arg-type]


def test_a_subscriber_may_unsubscribe_itself_during_a_tick():
    r = Clock()
    clock = MediaClock(0.020, reactor=r)
    calls = []

    def once():
        calls.append(1)
        clock.unsubscribe(once)

    clock.subscribe(once)
    clock.start()
    r.advance(0.020)
    r.advance(0.020)
    assert calls == [1]


def test_late_hooks_run_before_a_late_tick_only():
    r = Clock()
    clock = MediaClock(0.020, reactor=r)
    order: list[str] = []
    clock.add_late_hook(lambda: order.append("hook"))
    clock.subscribe(lambda: order.append("tick"))
    clock.start()
    r.advance(0.020)  # on time
    r.advance(0.021)  # 1 ms late: within the timer granularity
    assert order == ["tick", "tick"]
    r.advance(0.024)  # 5 ms late: the hook first (once), then the tick
    assert order[2:] == ["hook", "tick"]
    r.advance(0.060)  # a stall: one hook, then the tick and its catch-up ticks
    assert order[4:] == ["hook", "tick", "tick", "tick"]
