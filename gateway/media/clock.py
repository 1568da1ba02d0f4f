"""The media clock: ONE 20 ms ticker for the whole process; rooms subscribe.

Tick *k* is due at ``t0 + k * interval`` (a fixed grid, never "now + interval"),
so the average rate is exact however late individual timers fire. When the
event loop was blocked and several ticks are due at once, the missed ticks run
immediately one after the other (at most ``max_catchup`` extra ticks), so every
room still produces one audio frame per 20 ms of wall time and the far ends'
jitter buffers see no gap. If the loop was blocked even longer, the clock
resyncs to the grid and counts the ticks it skipped.

Before a tick whose timer fired more than ``LATE_HOOK_AFTER`` late, the *late
hooks* run (``add_late_hook``): the gateway reads the RTP packets that queued up
meanwhile (``gateway.media.rtp.read_pending``), because the loop runs due timers
before it polls its sockets.

A subscriber that raises is logged (first time with a traceback, then one in
every 500) and the clock keeps going.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))


@dataclass
class ClockStats:
    ticks: int = 0
    #: ticks whose timer fired more than ``late_threshold`` after they were due
    late_ticks: int = 0
    #: catch-up ticks run back to back because the loop was blocked
    missed: int = 0
    #: ticks given up when the loop was blocked for longer than max_catchup ticks
    skipped: int = 0
    resyncs: int = 0
    max_lateness_ms: float = 0.0
    #: ticks that fired more than 20 ms / 100 ms late: the event loop was busy (or the machine
    #: stalled) that long — monotonic counters, so a window's stalls are a difference
    late_over_20ms: int = 0
    late_over_100ms: int = 0
    callback_errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["max_lateness_ms"] = round(self.max_lateness_ms, 2)
        return d


class MediaClock:
    """A drift-free periodic ticker on a Twisted reactor.

    ``reactor`` defaults to the global reactor with ``time.monotonic`` as the
    time source; pass a ``twisted.internet.task.Clock`` (or any
    ``IReactorTime``) to drive it by hand — then ``reactor.seconds()`` is the
    time source.
    """

    #: a timer firing this much before its due time still runs the tick (timer granularity)
    EARLY_TOLERANCE = 0.001
    #: a timer firing this much after its due time runs the late hooks first
    LATE_HOOK_AFTER = 0.002

    def __init__(
        self,
        interval: float = 0.020,
        reactor: Any = None,
        *,
        max_catchup: int = 5,
        late_threshold: float = 0.005,
        now: Callable[[], float] | None = None,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"clock interval must be positive seconds, got {interval!r}")
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
            default_now: Callable[[], float] = time.monotonic
        else:
            default_now = reactor.seconds
        self.interval = float(interval)
        self.reactor = reactor
        self._now = now or default_now
        self.max_catchup = max(0, int(max_catchup))
        self.late_threshold = float(late_threshold)
        self._subscribers: list[Callable[[], None]] = []
        self._snapshot: tuple[Callable[[], None], ...] = ()
        self._late_hooks: list[Callable[[], None]] = []
        self._errors: dict[int, int] = {}
        self._call: Any = None
        self._t0 = 0.0
        self._k = 0  # index of the next tick on the grid
        self.running = False
        self._gen = 0  # bumped by start/stop so a callback that restarts the clock is safe
        self.stats = ClockStats()

    # ------------------------------------------------------------ subscribers
    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` every tick (subscribing the same callable twice is a no-op)."""
        if not callable(callback):
            raise TypeError(f"MediaClock.subscribe needs a callable, got {callback!r}")
        if callback not in self._subscribers:
            self._subscribers.append(callback)
            self._snapshot = tuple(self._subscribers)

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``; unknown callbacks are ignored."""
        try:
            self._subscribers.remove(callback)
        except ValueError:
            return
        self._snapshot = tuple(self._subscribers)
        self._errors.pop(id(callback), None)

    def add_late_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` before a tick that fires more than ``LATE_HOOK_AFTER`` late."""
        if hook not in self._late_hooks:
            self._late_hooks.append(hook)

    @property
    def origin(self) -> float:
        """When tick 0 of the current grid was due (the clock's time source; ticks are
        due at ``origin + k * interval``)."""
        return self._t0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    # ---------------------------------------------------------------- control
    def start(self) -> None:
        """Start ticking; the first tick is one interval from now. Idempotent."""
        if self.running:
            return
        self.running = True
        self._gen += 1
        self._t0 = self._now() + self.interval
        self._k = 0
        self._schedule()

    def stop(self) -> None:
        """Stop ticking (subscribers stay subscribed). Idempotent."""
        self.running = False
        self._gen += 1
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    # -------------------------------------------------------------- internals
    def _due(self, k: int) -> float:
        return self._t0 + k * self.interval

    def _schedule(self) -> None:
        delay = self._due(self._k) - self._now()
        self._call = self.reactor.callLater(max(0.0, delay), self._fire)

    def _fire(self) -> None:
        self._call = None
        if not self.running:
            return
        now = self._now()
        due = self._due(self._k)
        if now < due - self.EARLY_TOLERANCE:  # woke up too early: sleep again
            self._schedule()
            return
        st = self.stats
        lateness = now - due
        if lateness > self.late_threshold:
            st.late_ticks += 1
        if lateness > 0.020:
            st.late_over_20ms += 1
            if lateness > 0.100:
                st.late_over_100ms += 1
        if lateness * 1000.0 > st.max_lateness_ms:
            st.max_lateness_ms = lateness * 1000.0
        if lateness > self.LATE_HOOK_AFTER:
            for hook in self._late_hooks:
                try:
                    hook()
                except Exception:
                    log.exception("media clock late hook %r failed", hook)
        behind = int(lateness // self.interval) if lateness > 0 else 0  # ticks due besides this one
        if behind > self.max_catchup:
            skip = behind - self.max_catchup
            st.skipped += skip
            st.resyncs += 1
            self._k += skip
            behind = self.max_catchup
            log.warning(
                "media clock: event loop was blocked for %.0f ms; skipped %d ticks of audio",
                lateness * 1000.0, skip,
            )
        gen = self._gen
        for j in range(behind + 1):
            self._run_once()
            st.ticks += 1
            if j:
                st.missed += 1
            if gen != self._gen:  # stopped or restarted by a subscriber
                return
            self._k += 1
        self._schedule()

    def _run_once(self) -> None:
        for cb in self._snapshot:
            try:
                cb()
            except Exception:
                self.stats.callback_errors += 1
                n = self._errors.get(id(cb), 0)
                self._errors[id(cb)] = n + 1
                if n % 500 == 0:
                    log.exception("media clock subscriber %r failed (%d times so far)", cb, n + 1)

    def as_dict(self) -> dict[str, Any]:
        d = self.stats.as_dict()
        d.update(interval_ms=self.interval * 1000.0, subscribers=self.subscribers, running=self.running)
        return d
