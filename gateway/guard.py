"""Guessing guards: failed secrets (room PINs, passwords, H.235 tokens) counted per source and per
target, with lockouts that grow, and alarms for the log and ``/api/status``.

A *source* is an IPv4 address or an IPv6 /64 (one subscriber's network); a *target* is what is
being guessed: a room's PIN, an account's password.  Within ``window`` seconds

* ``per_source`` failures from one source lock that source out (of every target of this guard) —
  except loopback: a proxy or a web front end on the gateway's own machine relays everybody, and
  locking it out would lock out everyone (nobody off the machine can send from 127.0.0.0/8 or ::1);
* ``per_target`` failures against one target, from anywhere, lock the target for every source
  that has not proved itself for it recently (a source that gave the right secret within
  ``trust_seconds`` keeps its way in: an attacker cannot lock a commune out of its own account).

A lockout lasts ``lockout`` seconds, doubled each time the same key is locked again within an hour
(at most ``max_lockout``).  Each lockout is an *alarm*: a warning in the log and an entry in
:meth:`FailureGuard.alarms` while it lasts and for ten minutes after.

Memory is bounded: at most ``max_keys`` keys are tracked, the least recently failed go first.
"""
from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["FailureGuard", "source_key"]

log = logging.getLogger("cau.security")

ALARM_MEMORY = 600.0      # an alarm stays listed this long after its lockout ends
RELOCK_MEMORY = 3600.0    # a key locked again within this time gets a doubled lockout


def source_key(address: str) -> str:
    """The IPv4 address of ``address`` (``ip``, ``ip:port`` or ``[v6]:port``), or its IPv6 /64."""
    from gateway.dialplan.model import parse_address

    ip = parse_address(address or "")
    if ip is None:
        return (address or "?")[:64]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _is_loopback(key: str) -> bool:
    try:
        return ipaddress.ip_network(key, strict=False).network_address.is_loopback
    except ValueError:
        return False


@dataclass
class _Key:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0
    lockouts: int = 0
    last_lock: float = -1e18
    sources: set[str] = field(default_factory=set)     # for a target: who failed against it


class FailureGuard:
    """See the module docstring.  ``what`` names the secret in messages ("PIN", "password")."""

    def __init__(self, what: str, *, per_source: int = 5, per_target: int = 30, window: float = 60.0,
                 lockout: float = 60.0, max_lockout: float = 3600.0, trust_seconds: float = 86400.0,
                 max_keys: int = 20000, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.per_source = per_source
        self.per_target = per_target
        self.window = window
        self.lockout = lockout
        self.max_lockout = max_lockout
        self.trust_seconds = trust_seconds
        self.max_keys = max_keys
        self.clock = clock
        self._keys: OrderedDict[str, _Key] = OrderedDict()
        self._trusted: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._alarms: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.stats = {"failures": 0, "refused": 0, "lockouts": 0}

    # -- asking -----------------------------------------------------------------------------
    def retry_after(self, source: str, target: str) -> float:
        """Seconds until ``source`` may try ``target`` again; 0 when it may now."""
        now = self.clock()
        src = source_key(source)
        wait = 0.0
        k = self._keys.get("source " + src)
        if k is not None and k.locked_until > now:
            wait = k.locked_until - now
        k = self._keys.get("target " + target)
        if k is not None and k.locked_until > now and not self._is_trusted(src, target, now):
            wait = max(wait, k.locked_until - now)
        if wait:
            self.stats["refused"] += 1
        return wait

    def refused(self, source: str, target: str) -> bool:
        return self.retry_after(source, target) > 0

    def failures(self, source: str) -> int:
        """Failures of ``source`` within the window (for growing delays)."""
        k = self._keys.get("source " + source_key(source))
        return 0 if k is None else self._recent(k, self.clock())

    # -- telling ----------------------------------------------------------------------------
    def failed(self, source: str, target: str) -> None:
        now = self.clock()
        src = source_key(source)
        self.stats["failures"] += 1
        keys = [("target " + target, self.per_target)]
        if not _is_loopback(src):
            keys.insert(0, ("source " + src, self.per_source))
        for key, limit in keys:
            k = self._keys.pop(key, None) or _Key()
            self._keys[key] = k                        # most recently failed last
            k.failures.append(now)
            if key.startswith("target "):
                k.sources.add(src)
                if len(k.sources) > 1000:
                    k.sources.pop()
            if self._recent(k, now) >= limit and k.locked_until <= now:
                self._lock(key, k, now)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)

    def succeeded(self, source: str, target: str) -> None:
        src = source_key(source)
        self._trusted.pop((src, target), None)
        self._trusted[(src, target)] = self.clock()
        while len(self._trusted) > self.max_keys:
            self._trusted.popitem(last=False)
        k = self._keys.get("source " + src)
        if k is not None and k.locked_until <= self.clock():
            k.failures.clear()

    # -- reporting --------------------------------------------------------------------------
    def alarms(self) -> list[dict[str, Any]]:
        """Lockouts now or in the last ten minutes: what, since when, how many failures, from how many."""
        now = self.clock()
        out = []
        for key, a in list(self._alarms.items()):
            k = self._keys.get(key)
            until = k.locked_until if k is not None else a["until"]
            if now - until > ALARM_MEMORY:
                del self._alarms[key]
                continue
            out.append({**{x: a[x] for x in ("secret", "kind", "name", "failures", "sources")},
                        "locked": until > now, "locked_for_s": max(0, round(until - now)),
                        "since_s": round(now - a["since"])})
        return out

    # -- inside -----------------------------------------------------------------------------
    def _recent(self, k: _Key, now: float) -> int:
        while k.failures and now - k.failures[0] > self.window:
            k.failures.popleft()
        return len(k.failures)

    def _is_trusted(self, src: str, target: str, now: float) -> bool:
        t = self._trusted.get((src, target))
        return t is not None and now - t <= self.trust_seconds

    def _lock(self, key: str, k: _Key, now: float) -> None:
        k.lockouts = k.lockouts + 1 if now - k.last_lock <= RELOCK_MEMORY else 1
        seconds = min(self.max_lockout, self.lockout * 2 ** (k.lockouts - 1))
        k.locked_until = now + seconds
        k.last_lock = now
        self.stats["lockouts"] += 1
        kind, _, name = key.partition(" ")
        n = len(k.failures)
        who = f", from {len(k.sources)} address(es)" if kind == "target" else ""
        log.warning("ALARM: %d wrong %ss in %gs against %s %s%s: locked for %gs", n, self.what, self.window,
                    kind, name, who, seconds)
        prev = self._alarms.pop(key, None)
        self._alarms[key] = {"secret": self.what, "kind": kind, "name": name, "failures": n,
                             "sources": len(k.sources) if kind == "target" else 1,
                             "since": prev["since"] if prev else now, "until": k.locked_until}
        while len(self._alarms) > 200:
            self._alarms.popitem(last=False)
