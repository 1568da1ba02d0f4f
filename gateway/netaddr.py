"""Which local address a peer can reach us at.

Bound to one address, that is the address. Bound to every address (``0.0.0.0`` / ``::``) the
answer depends on the peer: the kernel's routing table says which local address a packet to it
would leave from (a UDP socket is "connected" to the peer — no packet is sent — and asked for its
own name). ``--advertise`` (a NAT's outside address) wins over both.

Every address that goes into a message — SDP ``c=``/``o=``, Contact, Via, RAS ``rasAddress`` /
``callSignalAddress``, H.245 ``h245Address`` and media channels — comes from :meth:`LocalAddress.for_peer`
with the address of the peer that will read it.
"""
from __future__ import annotations

import ipaddress
import socket

__all__ = ["LocalAddress", "WILDCARDS"]

WILDCARDS = ("", "0.0.0.0", "::")


class LocalAddress:
    def __init__(self, bind: str, advertise: str | None = None) -> None:
        self.bind = bind or "0.0.0.0"
        self.advertise = advertise or None
        self._cache: dict[str, str] = {}

    @property
    def wildcard(self) -> bool:
        return self.bind in WILDCARDS

    @property
    def fallback(self) -> str:
        """For a message with no particular reader: the advertised address, the bound one, else
        loopback."""
        if self.advertise:
            return self.advertise
        if not self.wildcard:
            return self.bind
        return "::1" if self.bind == "::" else "127.0.0.1"

    def for_peer(self, peer: str | None) -> str:
        """The address ``peer`` (an IP address) should send to."""
        if self.advertise:
            return self.advertise
        if not self.wildcard:
            return self.bind
        if not peer:
            return self.fallback
        host = peer.strip("[]").split("%")[0]
        hit = self._cache.get(host)
        if hit is not None:
            return hit
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return self.fallback        # a name: never looked up here
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        try:
            s = socket.socket(family, socket.SOCK_DGRAM)
            try:
                s.connect((str(ip), 9))
                local = s.getsockname()[0]
            finally:
                s.close()
        except OSError:
            local = self.fallback
        if self.bind == "0.0.0.0" and ":" in local:
            local = self.fallback
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[host] = local
        return local
