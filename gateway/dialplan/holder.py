"""Keeps the current dial plan and swaps in a new one on reload, atomically and only if valid.

A reload reads and validates the file off the event loop (:meth:`DialPlanHolder.reload_in_thread`,
what the gateway uses): parsing the province plan takes ~70 ms of Python, which on the loop froze
every room's audio for as long. The swap itself, on the loop thread, is one assignment.
"""
from __future__ import annotations

import gc
import hashlib
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .loader import load_dialplan
from .plan import DialPlan
from .problems import DialPlanError

#: how often the interpreter hands the GIL over while a plan is parsed in a worker (default 5 ms)
SWITCH_INTERVAL = 0.0002


class DialPlanHolder:
    """The live dial plan of the gateway.

    The first load must succeed (DialPlanError otherwise).  ``reload()`` keeps the
    old plan when the new file has problems, so a typo never takes rooms away.
    """

    def __init__(self, path: str | os.PathLike[str], codec_names: set[str] | None = None, *,
                 dns: bool = True) -> None:
        self.path = os.fspath(path)
        self.codec_names = codec_names
        self.dns = dns
        self._lock = threading.Lock()
        stamp = self._stamp()
        self._current = load_dialplan(self.path, codec_names, dns=dns)
        self._seen = stamp
        #: the last reload was refused (a file put back to the running plan's content clears it)
        self.refused = False
        self._pool: ThreadPoolExecutor | None = None

    @property
    def current(self) -> DialPlan:
        return self._current

    def reload(self) -> tuple[bool, str]:
        """Re-read the file: (True, summary) on success, (False, every problem) on error."""
        return self.apply(*self.load_new())

    def load_new(self) -> tuple[Any, DialPlan | DialPlanError]:
        """Read and validate the file (any thread; changes nothing): (its stamp, the plan or the error)."""
        stamp = self._stamp()
        try:
            return stamp, load_dialplan(self.path, self.codec_names, dns=self.dns)
        except DialPlanError as exc:
            return stamp, exc

    def apply(self, stamp: Any, result: DialPlan | DialPlanError) -> tuple[bool, str]:
        """Swap in what :meth:`load_new` made (the thread that reads ``current``)."""
        if isinstance(result, DialPlanError):
            self._seen = stamp  # do not report the same broken file again and again
            self.refused = True
            return False, f"dial plan not reloaded, still using the previous one ({self._current.summary()}):\n{result}"
        with self._lock:
            self._current = result
            self._seen = stamp
        self.refused = False
        return True, result.summary()

    def reload_in_thread(self, call_in_loop: Callable[..., Any],
                         done: Callable[[bool, str], None]) -> "Future[None]":
        """Read and validate in a worker thread, then ``call_in_loop(...)`` swaps it in and calls
        ``done(ok, message)`` on the loop thread. While the worker parses, the interpreter hands the
        GIL over every 0.2 ms instead of every 5 and the garbage collector waits, so the loop's media
        ticks barely wait (bench/dialplan_reload.py)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cau-dialplan")

        def work() -> None:
            before = sys.getswitchinterval()
            collecting = gc.isenabled()
            sys.setswitchinterval(min(before, SWITCH_INTERVAL))
            gc.disable()      # a full collection set off by the new plan's objects would hold the GIL
            try:
                stamp, result = self.load_new()
            finally:
                sys.setswitchinterval(before)
                if collecting:
                    gc.enable()
            call_in_loop(lambda: done(*self.apply(stamp, result)))

        return self._pool.submit(work)

    def changed_on_disk(self) -> bool:
        """Has the file changed since the last (attempted) load?  Cheap: stat first, hash if needed."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        if stamp is None:
            return True
        try:
            with open(self.path, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()
        except OSError:
            return True
        if digest == self._current.sha256 and not self.refused:
            self._seen = stamp
            return False
        return True   # (back to the running plan after a refusal: reloading it clears the refusal)

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)
