"""Locating a SIP server by name (RFC 3263 §4), with ``twisted.names``.

For ``sip:90001@mcu.example.vn`` the gateway finds where to send the INVITE:

1. **transport** (§4.1): ``transport=`` in the URI, else ``sips:`` → TLS; else, with no port,
   the domain's NAPTR records (services ``SIP+D2U`` / ``SIP+D2T`` / ``SIPS+D2T``, by order and
   preference) name it and the SRV name to ask; without NAPTR, SRV queries for each transport we
   speak (``_sip._udp``, ``_sip._tcp``, ``_sips._tcp``; for ``sips:`` only the last);
2. **port and address** (§4.2): a port in the URI means A/AAAA of the host with that port; else the
   SRV records (RFC 2782: lowest priority first, weighted random within a priority), each target's
   A/AAAA with the SRV port; no SRV: the host's A/AAAA with 5060 (5061 for TLS).

The answer is an ordered list of :class:`Target`; the dial-out tries them in order while a target
gives no response at all (§4.3: a transport error or a timeout), so a second SRV target takes over
when the first is down. A host name in ``/etc/hosts`` is found too (the resolver reads it first).
"""
from __future__ import annotations

import ipaddress
import logging
import random
import socket
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))

#: NAPTR service field → transport
NAPTR_SERVICES = {"SIP+D2U": "UDP", "SIP+D2T": "TCP", "SIPS+D2T": "TLS"}
SRV_PREFIX = {"UDP": "_sip._udp.", "TCP": "_sip._tcp.", "TLS": "_sips._tcp."}
DEFAULT_PORT = {"UDP": 5060, "TCP": 5060, "TLS": 5061}
#: targets tried at most (a zone with fifty SRV records must not make fifty calls)
MAX_TARGETS = 6


@dataclass(frozen=True)
class Target:
    transport: str     # UDP | TCP | TLS
    host: str          # an IP address
    port: int
    via: str           # how it was found, for the log: "NAPTR → SRV sip1.example:5060 → A"


class ResolveError(Exception):
    """Nothing to send to: the name has no usable records (or DNS did not answer)."""


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def make_resolver(servers: tuple[str, ...] = (), timeout: float = 2.0) -> Any:
    """A twisted.names resolver: ``servers`` ("IP" or "IP:PORT") when given, else the system's
    (/etc/hosts, then the servers in /etc/resolv.conf)."""
    from twisted.names import client

    timeouts = (timeout, timeout * 2)
    if servers:
        parsed = []
        for s in servers:
            host, _, port = s.rpartition(":") if s.count(":") == 1 or s.startswith("[") else (s, "", "")
            parsed.append(((host or s).strip("[]"), int(port) if port else 53))
        return client.Resolver(servers=parsed, timeout=timeouts)
    return client.createResolver(resolvconf="/etc/resolv.conf", hosts="/etc/hosts")


class SipResolver:
    """RFC 3263 for the dial-out (module docstring). ``resolver``: a twisted.names IResolver."""

    def __init__(self, resolver: Any, rng: random.Random | None = None) -> None:
        self.resolver = resolver
        self.rng = rng or random.Random()

    # -- the records --------------------------------------------------------------------------
    async def _answers(self, method: str, name: str) -> list[Any]:
        try:
            answers, _auth, _extra = await getattr(self.resolver, method)(name)
        except Exception as exc:   # NXDOMAIN, no such record, a timeout: no records
            log.debug("DNS %s %s: %s", method, name, type(exc).__name__)
            return []
        return [a.payload for a in answers if a.payload is not None]

    async def addresses(self, name: str) -> list[str]:
        """A then AAAA records of ``name`` (an IP literal is itself)."""
        if is_ip(name):
            return [name.strip("[]")]
        out: list[str] = []
        for rec in await self._answers("lookupAddress", name):
            if hasattr(rec, "dottedQuad"):
                out.append(rec.dottedQuad())
        for rec in await self._answers("lookupIPV6Address", name):
            addr = getattr(rec, "address", None)
            if isinstance(addr, bytes) and len(addr) == 16:
                out.append(socket.inet_ntop(socket.AF_INET6, addr))
        return list(dict.fromkeys(out))

    async def _srv(self, name: str) -> list[tuple[str, int]]:
        """(target, port) of ``name``'s SRV records in RFC 2782 order."""
        recs = [r for r in await self._answers("lookupService", name) if hasattr(r, "priority")]
        recs = [r for r in recs if str(r.target) not in ("", ".")]        # "." = the service is not offered
        out: list[tuple[str, int]] = []
        for prio in sorted({r.priority for r in recs}):
            group = [r for r in recs if r.priority == prio]
            while group:                                    # weighted random, as RFC 2782 says
                total = sum(r.weight for r in group)
                pick = group[0]
                if total > 0:
                    x = self.rng.uniform(0, total)
                    acc = 0
                    for r in group:
                        acc += r.weight
                        if acc >= x:
                            pick = r
                            break
                group.remove(pick)
                out.append((str(pick.target).rstrip("."), int(pick.port)))
        return out

    async def _naptr(self, name: str, secure: bool) -> list[tuple[str, str]]:
        """(transport, SRV name) from ``name``'s NAPTR records we can use, in order."""
        recs = [r for r in await self._answers("lookupNamingAuthorityPointer", name) if hasattr(r, "order")]
        out = []
        for r in sorted(recs, key=lambda r: (r.order, r.preference)):
            flags = bytes(r.flags.string if hasattr(r.flags, "string") else r.flags).decode("ascii", "replace").lower()
            service = bytes(r.service.string if hasattr(r.service, "string") else r.service).decode(
                "ascii", "replace").upper()
            transport = NAPTR_SERVICES.get(service)
            if flags != "s" or transport is None or (secure and transport != "TLS"):
                continue
            out.append((transport, str(r.replacement).rstrip(".")))
        return out

    # -- RFC 3263 -----------------------------------------------------------------------------
    async def locate(self, host: str, port: int | None, transport: str | None, secure: bool) -> list[Target]:
        """Where to send a request for ``sip[s]:…@host[:port][;transport=…]``."""
        if secure:
            transport = "TLS"
        if is_ip(host):
            t = transport or "UDP"
            return [Target(t, host.strip("[]"), port or DEFAULT_PORT[t], "address")]
        if port is not None:                                # §4.2: a port given → A/AAAA only
            t = transport or "UDP"
            return [Target(t, ip, port, f"{host} → A/AAAA") for ip in await self.addresses(host)][:MAX_TARGETS]
        found: list[Target] = []
        srv_names: list[tuple[str, str, str]] = []          # (transport, SRV name, how)
        if transport is None:
            for t, name in await self._naptr(host, secure):
                srv_names.append((t, name, f"NAPTR {host} → SRV {name}"))
            if not srv_names:
                for t in ("UDP", "TCP", "TLS"):
                    srv_names.append((t, SRV_PREFIX[t] + host, f"SRV {SRV_PREFIX[t]}{host}"))
        else:
            srv_names.append((transport, SRV_PREFIX[transport] + host, f"SRV {SRV_PREFIX[transport]}{host}"))
        for t, name, how in srv_names:
            srv = await self._srv(name)
            for target, srv_port in srv:
                for ip in await self.addresses(target):
                    found.append(Target(t, ip, srv_port, f"{how} → {target}:{srv_port}"))
                    if len(found) >= MAX_TARGETS:
                        return found
            if srv and transport is None and found:
                break       # the first NAPTR / transport with SRV records is the one (§4.1)
        if found:
            return found
        t = transport or "UDP"                              # §4.2: no SRV → A/AAAA, default port
        return [Target(t, ip, DEFAULT_PORT[t], f"{host} → A/AAAA") for ip in await self.addresses(host)][:MAX_TARGETS]

    async def locate_h323(self, host: str, port: int | None) -> list[tuple[str, int]]:
        """Where an H.323 call to ``host`` goes (H.323 Annex O): a port given → A/AAAA; else the
        ``_h323cs._tcp`` SRV records, else A/AAAA with 1720."""
        if port is not None or is_ip(host):
            return [(ip, port or 1720) for ip in await self.addresses(host)][:MAX_TARGETS]
        out = [(ip, p) for target, p in await self._srv("_h323cs._tcp." + host) for ip in await self.addresses(target)]
        return (out or [(ip, 1720) for ip in await self.addresses(host)])[:MAX_TARGETS]

    def resolve(self, host: str, port: int | None, transport: str | None, secure: bool) -> defer.Deferred:
        """:meth:`locate` as a Deferred; fails with :class:`ResolveError` when nothing is found."""
        async def go() -> list[Target]:
            targets = await self.locate(host, port, transport, secure)
            if not targets:
                raise ResolveError(f"{host!r} has no SIP server in DNS (no NAPTR/SRV/A/AAAA record)")
            return targets

        return defer.ensureDeferred(go())
