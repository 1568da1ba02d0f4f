"""Limits on the gateway's TCP listeners, so that a flood on one never starves the others.

Every listener (SIP TCP, SIP TLS, H.225.0 call signalling, HTTP, HTTPS) is wrapped in a
:class:`GuardedFactory` (Twisted's ``policies.WrappingFactory``):

* at most ``max_total`` connections at once and ``max_per_source`` from one address (an IPv6
  /64 counts as one; loopback is exempt from the per-source cap: a proxy on the machine relays
  everybody); a connection beyond them is closed at once, counted, and logged at most once a
  minute with the count;
* a connection that sends nothing within ``first_data_timeout`` seconds is closed, and one that
  stays silent ``idle_timeout`` seconds after that too (None: never — an H.225.0 connection
  carries a call that may be quiet for hours).

The caps come from the process's file descriptor limit: :func:`raise_fd_limit` lifts the soft
limit towards the hard one at start, and :func:`tcp_budgets` shares what is left after a reserve
(RTP sockets, files, the event loop's own) among the listeners.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from twisted.protocols import policies

from gateway.guard import _is_loopback, source_key

__all__ = ["GuardedFactory", "raise_fd_limit", "tcp_budgets"]

log = logging.getLogger("cau.netguard")


class _Guarded(policies.ProtocolWrapper, policies.TimeoutMixin):
    def connectionMade(self) -> None:  # noqa: N802 (Twisted)
        self.setTimeout(self.factory.first_data_timeout)
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.setTimeout(self.factory.idle_timeout)
        super().dataReceived(data)

    def timeoutConnection(self) -> None:  # noqa: N802
        self.factory.stats["timed_out"] += 1
        self.transport.abortConnection()

    def connectionLost(self, reason: Any) -> None:  # noqa: N802
        self.setTimeout(None)
        super().connectionLost(reason)


class GuardedFactory(policies.WrappingFactory):
    """``wrapped`` with connection caps and timeouts (module docstring)."""

    protocol = _Guarded

    def __init__(self, wrapped: Any, name: str, *, max_total: int, max_per_source: int = 32,
                 first_data_timeout: float | None = 30.0, idle_timeout: float | None = None) -> None:
        super().__init__(wrapped)
        self.name = name
        self.max_total = max_total
        self.max_per_source = max_per_source
        self.first_data_timeout = first_data_timeout
        self.idle_timeout = idle_timeout
        self.per_source: Counter[str] = Counter()
        self.count = 0                        # connections accepted and not yet closed
        self.stats: Counter[str] = Counter()
        self._last_log = 0.0
        self._unlogged = 0

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802
        host = getattr(addr, "host", "?")
        src = source_key(host)
        why = None
        if self.count >= self.max_total:
            why = f"{self.max_total} connections are open"
        elif not _is_loopback(src) and self.per_source[src] >= self.max_per_source:
            why = f"{src} has {self.max_per_source} connections open"
        if why is not None:
            self.stats["refused"] += 1
            self._log_refusal(why)
            return None           # Twisted closes the accepted socket at once
        p = super().buildProtocol(addr)
        if p is not None:
            p.source_key = src
            self.per_source[src] += 1
            self.count += 1
            self.stats["accepted"] += 1
        return p

    def unregisterProtocol(self, p: Any) -> None:  # noqa: N802
        self.protocols.pop(p, None)
        src = getattr(p, "source_key", None)
        if src is not None:
            p.source_key = None
            self.count -= 1
            self.per_source[src] -= 1
            if self.per_source[src] <= 0:
                del self.per_source[src]

    def _log_refusal(self, why: str) -> None:
        now = time.monotonic()
        self._unlogged += 1
        if now - self._last_log >= 60:
            log.warning("%s: refused %d connection(s) in the last minute (%s)", self.name, self._unlogged, why)
            self._last_log, self._unlogged = now, 0

    def info(self) -> dict[str, Any]:
        return {"open": self.count, "max": self.max_total, "max_per_source": self.max_per_source,
                "refused": self.stats["refused"], "timed_out": self.stats["timed_out"]}


def raise_fd_limit(want: int = 65536) -> tuple[int, int]:
    """Lift the soft RLIMIT_NOFILE towards the hard limit (at most ``want``); (soft, hard) after."""
    try:
        import resource
    except ImportError:       # not on this platform
        return (1024, 1024)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft, hard


#: shares of the TCP budget per listener
SHARES = {"SIP": 0.30, "SIP TLS": 0.15, "H.323": 0.25, "HTTP": 0.15, "HTTPS": 0.15}


def tcp_budgets(fd_limit: int, rtp_sockets: int, reserve: int = 128) -> dict[str, int]:
    """Connections each listener may hold: the fd limit less the RTP sockets (one per port of the
    range, at most half the limit) and a reserve, shared by :data:`SHARES` (at least 16 each)."""
    budget = max(0, fd_limit - min(rtp_sockets, fd_limit // 2) - reserve)
    return {name: max(16, int(budget * share)) for name, share in SHARES.items()}
