"""Keeps the current dial plan and swaps in a new one on reload, atomically and only if valid."""
from __future__ import annotations

import hashlib
import os
import threading

from .loader import load_dialplan
from .plan import DialPlan
from .problems import DialPlanError


class DialPlanHolder:
    """The live dial plan of the gateway.

    The first load must succeed (DialPlanError otherwise).  ``reload()`` keeps the
    old plan when the new file has problems, so a typo never takes rooms away.
    """

    def __init__(self, path: str | os.PathLike[str], codec_names: set[str] | None = None) -> None:
        self.path = os.fspath(path)
        self.codec_names = codec_names
        self._lock = threading.Lock()
        stamp = self._stamp()
        self._current = load_dialplan(self.path, codec_names)
        self._seen = stamp

    @property
    def current(self) -> DialPlan:
        return self._current

    def reload(self) -> tuple[bool, str]:
        """Re-read the file: (True, summary) on success, (False, every problem) on error."""
        stamp = self._stamp()
        try:
            plan = load_dialplan(self.path, self.codec_names)
        except DialPlanError as exc:
            self._seen = stamp  # do not report the same broken file again and again
            return False, f"dial plan not reloaded, still using the previous one ({self._current.summary()}):\n{exc}"
        with self._lock:
            self._current = plan
            self._seen = stamp
        return True, plan.summary()

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
        if digest == self._current.sha256:
            self._seen = stamp
            return False
        return True

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)
