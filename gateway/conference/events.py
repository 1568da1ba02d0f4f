"""The small observer the conference objects share: ``on(event, callback)`` and notify.

Legs, rooms and the room registry each publish a fixed set of events. A
listener that raises is logged and the others still run, so one faulty
adapter or API client cannot break a room.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))


class Observable:
    EVENTS: frozenset[str] = frozenset()

    def _check_event(self, event: str) -> None:
        if event not in self.EVENTS:
            raise ValueError(f"unknown {type(self).__name__.lower()} event {event!r}; expected one of {sorted(self.EVENTS)}")

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[[], None]:
        """Call ``callback`` whenever ``event`` is published; returns an unsubscribe function."""
        self._check_event(event)
        listeners = self.__dict__.setdefault("_listeners", {})
        lst = listeners.setdefault(event, [])
        lst.append(callback)

        def unsubscribe() -> None:
            try:
                lst.remove(callback)
            except ValueError:
                pass

        return unsubscribe

    def _notify(self, event: str, *args: Any, **kw: Any) -> None:
        for cb in tuple(self.__dict__.get("_listeners", {}).get(event, ())):
            try:
                cb(*args, **kw)
            except Exception:
                log.exception("%r: %r listener %r failed", self, event, cb)
