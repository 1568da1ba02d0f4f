"""RTP/RTCP port-pair bookkeeping.

RFC 3550 §11: RTP uses an even port and RTCP the next (odd) one. The
allocator hands out even ports whose pair lies inside an inclusive range and
keeps track of which pairs are ours. It does not bind anything: binding can
still fail when another process holds a port, and ``open_rtp_session`` (in
``gateway.media.rtp``) then moves on to the next pair.

Released pairs go to the back of the queue, so a port that was just freed is
the last to be handed out again (late packets of the previous call do not
land in the next one).
"""
from __future__ import annotations

import logging
from collections import deque

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))


class PortsExhausted(Exception):
    """Every RTP/RTCP pair of the configured range is in use (or could not be bound)."""


class PortAllocator:
    """Even RTP ports (RTCP = RTP + 1) from the inclusive range ``low``..``high``."""

    def __init__(self, low: int, high: int) -> None:
        if not (isinstance(low, int) and isinstance(high, int)):
            raise TypeError(f"RTP port range must be integers, got {low!r}..{high!r}")
        if not (1 <= low <= high <= 65535):
            raise ValueError(
                f"RTP port range {low}..{high} is invalid: expected 1 <= low <= high <= 65535"
            )
        first = low + (low & 1)  # first even port
        if first + 1 > high:
            raise ValueError(
                f"RTP port range {low}..{high} holds no even/odd RTP/RTCP pair: "
                "widen it (e.g. 10000..20000)"
            )
        self.low = low
        self.high = high
        self._free: deque[int] = deque(range(first, high, 2))  # p+1 <= high guaranteed
        self._in_use: set[int] = set()
        self.capacity: int = len(self._free)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def allocate(self) -> int:
        """Return an even port whose pair (port, port+1) is free in our bookkeeping."""
        if not self._free:
            raise PortsExhausted(
                f"no free RTP/RTCP port pair in {self.low}..{self.high}: all "
                f"{self.capacity} pairs are in use; widen the media port range or "
                "end some calls"
            )
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a pair back. Idempotent; an unknown port is logged and ignored."""
        if port in self._in_use:
            self._in_use.remove(port)
            self._free.append(port)
        else:
            log.debug("release of RTP port %r which is not allocated in %d..%d: ignored",
                      port, self.low, self.high)

    def __repr__(self) -> str:
        return f"PortAllocator({self.low}..{self.high}, in_use={self.in_use}/{self.capacity})"
