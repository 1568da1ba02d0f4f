"""The built-in H.323 gatekeeper: H.225.0 RAS on UDP (1719), driven by the dial plan.

Procedures (H.225.0 §7, H.323 §7.2 / §8.1):

* **GRQ** → GCF (gatekeeperIdentifier, rasAddress).  GRJ ``terminalExcluded``
  when the GRQ names another gatekeeperIdentifier or (``require_known_endpoints``)
  no alias is a dial-plan endpoint; ``securityDenial`` when a known alias comes
  from outside its networks.  A multicast GRQ that is not for us is not answered.
* **RRQ** (full) → RCF with endpointIdentifier, timeToLive = min(asked, ours),
  the registered aliases.  RRJ:

  ===========================  ====================================================
  ``invalidCallSignalAddress`` no usable callSignalAddress
  ``securityDenial``           an alias/number of a dial-plan endpoint from outside
                               its ``networks``, or of a non-H.323 endpoint
  ``invalidAlias``             ``require_known_endpoints`` and no alias is known, or
                               the known aliases belong to different endpoints
  ``duplicateAlias``           an alias is a room number, or registered by another
                               endpoint (another call signalling address)
  ===========================  ====================================================

  The same endpoint registering again (same endpointIdentifier or same call
  signalling address) replaces its registration and keeps its identifier.
* **RRQ keepAlive** (lightweight, H.225.0 §7.9.2.2) → RCF refreshing the expiry;
  RRJ ``fullRegistrationRequired`` when the identifier is unknown, comes from
  another IP, or the endpoint's networks no longer allow it (plan reloaded).
* Registrations expire ``timeToLive`` (+ ``expiry_grace``) after the last RRQ /
  keep-alive / IRR; a timer checks every ``expiry_check_interval`` seconds and
  drops the endpoint's admitted calls too (a URQ ``ttlExpired`` is sent to it).
* **URQ** → UCF, or URJ ``notCurrentlyRegistered``.
* **ARQ** → the dialed aliases (destinationInfo, in order) through
  ``DialPlan.route(dialed, caller, "h323")``:

  ============================  ==========================================================
  room                          ACF to Cầu's call signalling address, callModel
                                gatekeeperRouted (``direct`` when ``routed=False``)
  reject route                  ARJ by the route's SIP status: 403→requestDenied,
                                404/410/604→unallocatedNumber, 484→incompleteAddress,
                                503→resourceUnavailable, otherwise requestDenied
  registered alias / prefix     ACF direct to that endpoint's call signalling address
  dial route                    ACF to Cầu (Cầu's gateway dials out), as for a room
  nothing                       ARJ calledPartyNotRegistered
  ============================  ==========================================================

  answerCall=true → ACF (the endpoint's own address); an unregistered or
  spoofed endpointIdentifier → ARJ callerNotRegistered / invalidEndpointIdentifier;
  no destination at all → ARJ incompleteAddress.  Bandwidth granted =
  min(asked, ``max_bandwidth``).  Every ACF is kept as an admission record
  (:attr:`calls`) until DRQ or the endpoint's expiry/unregistration.
* **BRQ** → BCF (min(asked, max)) for a known call; BRJ ``invalidConferenceID``
  for an unknown call, ``notBound`` for an unregistered endpoint.
* **DRQ** → DCF and the admission record is dropped; DRJ ``notRegistered``.
* **LRQ** from a configured neighbour (``neighbours``: addresses / networks;
  none by default) → LCF (our call signalling + RAS address) when the number
  reaches a room, LCF with the endpoint's addresses for a registered
  alias/prefix; LRJ ``notRegistered`` when nothing answers, ``requestDenied``
  for reject and dial routes (we are no transit for other zones); sent to the
  LRQ's replyAddress when that is the sender's own host. From anyone else →
  LRJ ``requestDenied``, to the sender's address.
* RRQ beyond ``max_registrations`` in all or ``max_registrations_per_source``
  from one address → RRJ ``resourceUnavailable``.
* **IRR** from a registered endpoint is a keep-alive (IACK when needResponse);
  :meth:`Gatekeeper.send_irq` asks an endpoint for one.
* Other requests → XRS (unknownMessageResponse).  A datagram that does not
  decode is logged and dropped; an exception in a handler is logged, never raised.

Retransmitted requests (same source, kind and requestSeqNum within
``reply_cache_seconds``) get the identical answer again.
"""
from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.protocol import DatagramProtocol

from gateway.dialplan import DialPlan, EndpointSpec, normalise

from . import asn1, h235, ras
from .ras import RasError, RasMessage

__all__ = ["AdmittedCall", "Gatekeeper", "Registration", "RAS_PORT", "RAS_DISCOVERY_PORT", "RAS_MULTICAST_GROUP"]

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))

RAS_PORT = 1719
#: bytes of RAS datagrams one reactor read pass takes
RAS_READ_BUDGET = 4096
RAS_DISCOVERY_PORT = 1718
RAS_MULTICAST_GROUP = "224.0.1.41"

Address = tuple[str, int]
Alias = tuple[str, str]

# kinds that answer something: never answered themselves
_ANSWER_SUFFIXES = ("Confirm", "Reject", "Response", "Ack", "Nak", "InProgress")

# SIP status of a reject route -> AdmissionRejectReason
_STATUS_TO_ARJ = {403: "requestDenied", 404: "unallocatedNumber", 410: "unallocatedNumber",
                  604: "unallocatedNumber", 484: "incompleteAddress", 503: "resourceUnavailable"}


@dataclass
class Registration:
    """One registered endpoint (RCF given)."""

    endpoint_id: str
    aliases: list[Alias]
    call_signal_addresses: list[Address]
    ras_address: Address
    time_to_live: int | None
    expires_at: float
    endpoint_spec: EndpointSpec | None = None
    registered_at: float = 0.0
    endpoint_type: str | None = None
    prefixes: list[str] = field(default_factory=list)      # gateway/MCU supportedPrefixes (dialled digits)
    vendor: str = ""
    keepalives: int = 0

    @property
    def call_signal_address(self) -> Address:
        return self.call_signal_addresses[0]


@dataclass
class AdmittedCall:
    """An ACF we gave: kept until DRQ or the endpoint goes away."""

    call_identifier: bytes
    endpoint_id: str
    conference_id: bytes | None
    call_reference_value: int | None
    bandwidth: int
    answer_call: bool
    destination: str
    dest_call_signal_address: Address
    admitted_at: float


def _key(text: str) -> str:
    return text.casefold()


def _prefixes_of(value: dict[str, Any]) -> list[str]:
    """Dialled-digit supportedPrefixes of a gateway/MCU terminalType (all protocols)."""
    et = value.get("terminalType") or value.get("endpointType")
    out: list[str] = []
    if not isinstance(et, dict):
        return out
    for kind in ("gateway", "mcu"):
        info = et.get(kind)
        if not isinstance(info, dict):
            continue
        for proto in info.get("protocol", ()) or ():
            try:
                caps = proto[1]
                for sp in caps.get("supportedPrefixes", ()) or ():
                    k, text = asn1.parse_alias(sp["prefix"])
                    if k == "dialledDigits" and text and text not in out:
                        out.append(text)
            except (TypeError, KeyError, ValueError, AttributeError, IndexError):
                continue
    return out


def _vendor_text(m: RasMessage) -> str:
    v = m.vendor or {}
    parts = []
    for key in ("productId", "versionId"):
        raw = v.get(key)
        if isinstance(raw, (bytes, bytearray)):
            parts.append(bytes(raw).decode("latin-1", "replace").strip("\x00 "))
    return " ".join(p for p in parts if p)


class _Reject(Exception):
    def __init__(self, reason: str, detail: str, aliases: list[Alias] | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.aliases = aliases or []


class Gatekeeper(DatagramProtocol):
    """H.225.0 RAS gatekeeper for Cầu's zone.  See the module docstring for the procedures."""

    def __init__(self, plan: Callable[[], DialPlan] | DialPlan, gatekeeper_id: str = "cau",
                 call_signal_address: Address = ("127.0.0.1", 1720), ras_address: Address | None = None,
                 routed: bool = True, time_to_live: int = 300,
                 multicast_discovery: bool = False, reactor: Any = None, *, clock: Any = None,
                 max_bandwidth: int = 40960, expiry_grace: float = 10.0, expiry_check_interval: float = 1.0,
                 reply_cache_seconds: float = 15.0, neighbours: Any = (),
                 max_registrations: int = 2000, max_registrations_per_source: int = 50,
                 guard: Any = None, addresses: Any = None) -> None:
        import ipaddress

        self._plan = plan
        if guard is None:
            from gateway.guard import FailureGuard

            guard = FailureGuard("password", per_source=10, per_target=20, window=300.0)
        #: failed H.235 tokens per source and endpoint (the app shares it with SIP digest)
        self.guard = guard
        self._replay = h235.ReplayWindow()
        self._random = itertools.count(1)
        self._sign_with: str | None = None     # the password of the request being answered, if it proved it
        #: the gatekeepers whose LRQs are answered (addresses / networks); nobody else's
        self.neighbours = tuple(ipaddress.ip_network(n, strict=False) for n in neighbours)
        self.max_registrations = max_registrations
        self.max_registrations_per_source = max_registrations_per_source
        self.gatekeeper_id = gatekeeper_id
        self.call_signal_address = call_signal_address
        self._ras_address = ras_address
        #: bound to every address without --advertise: our addresses in a reply are the ones the
        #: requester reaches (gateway.netaddr.LocalAddress); None: the fixed ones above
        self.addresses = addresses if addresses is not None and addresses.wildcard and \
            not addresses.advertise else None
        self.routed = routed
        self.time_to_live = time_to_live
        self.multicast_discovery = multicast_discovery
        self.max_bandwidth = max_bandwidth
        self.expiry_grace = expiry_grace
        self.expiry_check_interval = expiry_check_interval
        self.reply_cache_seconds = reply_cache_seconds
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self.registrations: dict[str, Registration] = {}
        self._aliases: dict[str, str] = {}                  # alias key -> endpoint_id
        self.calls: dict[tuple[bytes, str], AdmittedCall] = {}
        self.stats: dict[str, Counter[str]] = {"received": Counter(), "sent": Counter(), "rejects": Counter(),
                                                "events": Counter()}
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._reply_cache: dict[tuple[Address, str, int], tuple[float, bytes, Address]] = {}
        self._port: Any = None
        self._mcast_port: Any = None
        self._expiry_loop: Any = None

    # ------------------------------------------------------------------ lifecycle
    def start(self, bind: str = "0.0.0.0", port: int = RAS_PORT) -> None:
        """Listen for RAS on ``bind:port`` (CannotListenError passes up) and start the expiry timer."""
        from twisted.internet.task import LoopingCall

        self._port = self._reactor.listenUDP(port, self, interface=bind)
        # one reactor read pass takes a few KiB of RAS (~20 messages), then media and timers get
        # their turn: Twisted's default (256 KiB) let a burst of RRQs hold the loop for 60 ms
        self._port.maxThroughput = RAS_READ_BUDGET
        if self.multicast_discovery:
            self._start_multicast(bind)
        loop = LoopingCall(self._expire)
        loop.clock = self._clock
        loop.start(self.expiry_check_interval, now=False)
        self._expiry_loop = loop
        log.info("gatekeeper %s: RAS on %s:%d (%s, ttl %ds)", self.gatekeeper_id, *self.ras_address,
                 "gatekeeper-routed" if self.routed else "direct", self.time_to_live)

    def _start_multicast(self, bind: str) -> None:
        gk = self

        class _Discovery(DatagramProtocol):
            def datagramReceived(self, data: bytes, addr: Address) -> None:  # noqa: N802 (Twisted)
                gk._datagram(data, addr, multicast=True)

        self._mcast_port = self._reactor.listenMulticast(RAS_DISCOVERY_PORT, _Discovery(), listenMultiple=True)
        self._mcast_port.joinGroup(RAS_MULTICAST_GROUP, bind if bind not in ("", "0.0.0.0") else "0.0.0.0")

    def stop(self) -> Any:
        """Stop listening and the timers (registrations are kept in memory)."""
        if self._expiry_loop is not None and self._expiry_loop.running:
            self._expiry_loop.stop()
        self._expiry_loop = None
        results = []
        for p in (self._mcast_port, self._port):
            if p is not None:
                results.append(p.stopListening())
        self._port = self._mcast_port = None
        from twisted.internet import defer

        return defer.gatherResults([r for r in results if isinstance(r, defer.Deferred)])

    @property
    def port(self) -> int:
        return self._port.getHost().port if self._port is not None else 0

    @property
    def multicast_listening(self) -> bool:
        return self._mcast_port is not None

    def csa_for(self, ip: str) -> Address:
        """Cầu's call signalling address as the endpoint at ``ip`` reaches it."""
        if self.addresses is None:
            return self.call_signal_address
        return (self.addresses.for_peer(ip), self.call_signal_address[1])

    def ras_for(self, ip: str) -> Address:
        """Our RAS address as ``ip`` reaches it."""
        ras_addr = self.ras_address
        if self.addresses is None or self._ras_address is not None:
            return ras_addr
        return (self.addresses.for_peer(ip), ras_addr[1])

    def is_us(self, target: Address) -> bool:
        return target == self.call_signal_address or (
            self.addresses is not None and target[1] == self.call_signal_address[1]
            and self.addresses.for_peer(target[0]) == target[0])

    @property
    def ras_address(self) -> Address:
        """The RAS address we announce (GCF, LCF): the configured one, else where we listen."""
        if self._ras_address is not None:
            return self._ras_address
        if self._port is not None:
            host = self._port.getHost()
            ip = host.host if host.host not in ("0.0.0.0", "::", "") else self.call_signal_address[0]
            return (ip, host.port)
        return (self.call_signal_address[0], RAS_PORT)

    def plan(self) -> DialPlan:
        return self._plan() if callable(self._plan) else self._plan

    # ------------------------------------------------------------------ lookups
    def by_alias(self, alias: str | Alias) -> Registration | None:
        """The registration holding ``alias`` (text or (kind, text); URIs normalised)."""
        text = alias[1] if isinstance(alias, tuple) else alias
        eid = self._aliases.get(_key(normalise(text) or text))
        return self.registrations.get(eid) if eid else None

    def by_prefix(self, number: str) -> Registration | None:
        """The gateway/MCU registration with the longest supportedPrefix that ``number`` starts with."""
        best: tuple[int, Registration] | None = None
        for reg in self.registrations.values():
            for p in reg.prefixes:
                if number.startswith(p) and (best is None or len(p) > best[0]):
                    best = (len(p), reg)
        return best[1] if best else None

    def unregister(self, endpoint_id: str, *, notify: bool = False, reason: str = "maintenance") -> bool:
        """Forget an endpoint (operator action); with ``notify`` send it a URQ with ``reason``."""
        reg = self._drop(endpoint_id, reason)
        if reg is None:
            return False
        if notify:
            self._send_request(ras.build_urq(self._next_seq(), reg.call_signal_addresses,
                                             endpoint_identifier=reg.endpoint_id, reason=reason,
                                             gatekeeper_identifier=self.gatekeeper_id), reg.ras_address, "URQ")
        return True

    def send_irq(self, endpoint_id: str) -> bool:
        """Ask a registered endpoint for an IRR (about all its calls); its IRR refreshes it."""
        reg = self.registrations.get(endpoint_id)
        if reg is None:
            return False
        self._send_request(ras.build_irq(self._next_seq(), 0, reply_address=self.ras_for(reg.ras_address[0])),
                           reg.ras_address, "IRQ")
        return True

    # ------------------------------------------------------------------ datagrams
    def datagramReceived(self, data: bytes, addr: Address) -> None:  # noqa: N802 (Twisted's name)
        self._datagram(data, addr, multicast=False)

    def _datagram(self, data: bytes, addr: Address, multicast: bool) -> None:
        try:
            m = ras.parse_ras(data)
        except RasError as exc:
            self.stats["events"]["malformed"] += 1
            log.warning("gatekeeper: dropped a malformed RAS datagram (%d bytes) from %s:%d: %s",
                        len(data), addr[0], addr[1], exc.reason)
            return
        self.stats["received"][m.abbreviation] += 1
        if multicast and m.kind not in ("gatekeeperRequest", "locationRequest"):
            return
        now = self._clock.seconds()
        cache_key = (addr, m.kind, m.seq)
        cached = self._reply_cache.get(cache_key)
        if cached is not None and cached[0] > now:
            self.stats["events"]["retransmission"] += 1
            self._write(cached[1], cached[2])
            return
        self._sign_with = None
        try:
            reply = self._dispatch(m, addr, multicast)
            if reply is not None and self._sign_with is not None:
                reply = (self._signed(reply[0], m), reply[1])
        except Exception:  # a bug must not take the RAS port down
            self.stats["events"]["error"] += 1
            log.exception("gatekeeper: error handling %s seq %d from %s:%d", m.abbreviation, m.seq, *addr)
            return
        if reply is None:
            return
        data_out, dest = reply
        if m.seq:
            self._reply_cache[cache_key] = (now + self.reply_cache_seconds, data_out, dest)
            if len(self._reply_cache) > 4096:
                self._prune_cache(now)
        self._write(data_out, dest)

    def _prune_cache(self, now: float) -> None:
        for k in [k for k, v in self._reply_cache.items() if v[0] <= now]:
            del self._reply_cache[k]

    def _write(self, data: bytes, dest: Address) -> None:
        if self._port is None:
            return
        try:
            self._port.write(data, dest)
        except OSError as exc:
            log.warning("gatekeeper: cannot send to %s:%d: %s", dest[0], dest[1], exc)
            return
        self.stats["sent"]["total"] += 1

    def _send_request(self, data: bytes, dest: Address, abbreviation: str) -> None:
        """A request of our own (URQ, IRQ): fire and forget; the answer is only counted."""
        self.stats["sent"][abbreviation] += 1
        self._write(data, dest)

    def _next_seq(self) -> int:
        return (next(self._seq) - 1) % 65535 + 1

    def _dispatch(self, m: RasMessage, addr: Address, multicast: bool) -> tuple[bytes, Address] | None:
        handler = {
            "gatekeeperRequest": self._on_grq, "registrationRequest": self._on_rrq,
            "unregistrationRequest": self._on_urq, "admissionRequest": self._on_arq,
            "bandwidthRequest": self._on_brq, "disengageRequest": self._on_drq,
            "locationRequest": self._on_lrq, "infoRequestResponse": self._on_irr,
        }.get(m.kind)
        if handler is not None:
            if m.kind == "gatekeeperRequest":
                return self._on_grq(m, addr, multicast)
            return handler(m, addr)
        if m.seq and not m.kind.endswith(_ANSWER_SUFFIXES):   # a request we do not serve (RAI, SCI, NSM ...)
            return self._encode("unknownMessageResponse",
                                {"requestSeqNum": m.seq, "messageNotUnderstood": b""}), addr
        # confirms/rejects to our URQ/IRQ, XRS, IACK ...: nothing to answer
        return None

    def _encode(self, kind: str, body: dict[str, Any]) -> bytes:
        return asn1.encode_ras((kind, body))

    def _reject(self, abbreviation: str, reason: str, detail: str, m: RasMessage, addr: Address) -> None:
        self.stats["rejects"][f"{abbreviation} {reason}"] += 1
        log.info("gatekeeper: %s %s to %s:%d (%s seq %d): %s", abbreviation, reason, addr[0], addr[1],
                 m.abbreviation, m.seq, detail)

    # ------------------------------------------------------------------ GRQ
    def _on_grq(self, m: RasMessage, addr: Address, multicast: bool = False) -> tuple[bytes, Address] | None:
        dest = m.ras_addresses[0] if multicast and m.ras_addresses else addr
        if m.gatekeeper_identifier and m.gatekeeper_identifier != self.gatekeeper_id:
            if multicast:
                return None
            self._reject("GRJ", "terminalExcluded", f"asks for gatekeeper {m.gatekeeper_identifier!r}", m, addr)
            return ras.build_grj(m.seq, "terminalExcluded", gatekeeper_identifier=self.gatekeeper_id), dest
        if multicast and not self._known_here(m, addr[0]):
            return None             # a multicast GRQ from a stranger: another zone's endpoint, not ours to take
        gcf = ras.build_gcf(m.seq, self.ras_for(addr[0]), gatekeeper_identifier=self.gatekeeper_id)
        offered = m.value.get("algorithmOIDs") or []
        if any(h235.same_oid(o, h235.OID_U) for o in offered):
            # the endpoint can do H.235.1: tell it to (its password is checked from the RRQ on)
            _, body = asn1.decode_ras(gcf)
            body["authenticationMode"] = ("pwdHash", 0)
            body["algorithmOID"] = h235.OID_U
            gcf = self._encode("gatekeeperConfirm", body)
        return gcf, dest

    def _known_here(self, m: RasMessage, source_ip: str) -> bool:
        plan = self.plan()
        if plan.registration_open(source_ip):
            return True
        return any((ep := plan.endpoint(t)) is not None and ep.protocol == "h323" for k, t in m.aliases
                   if k != "transportID")

    # ------------------------------------------------------------------ RRQ
    def _admit(self, m: RasMessage, source_ip: str, *, endpoint_id: str | None = None,
               call_signal: Address | None = None) -> tuple[EndpointSpec | None, list[Alias], list[str], bool]:
        """Who may register, under what: (plan endpoint or None, granted aliases, granted prefixes,
        authenticated).  :class:`_Reject` when the RRQ is refused.

        A plan endpoint gets exactly the aliases and prefixes the plan gives it (its alias, its number,
        its ``prefixes``); whatever else it asks for is left out of the RCF.  Anyone else registers only
        from an ``open_registration`` network of the plan, and only under aliases and prefixes the plan
        does not use.  An unknown alias, a wrong network and a failed password all read
        ``securityDenial``: the answer does not tell which endpoints exist."""
        plan = self.plan()
        spec: EndpointSpec | None = None
        for kind, text in m.aliases:
            if kind == "transportID":
                continue
            ep = plan.endpoint(text)
            if ep is None:
                continue
            if ep.protocol != "h323":
                raise _Reject("securityDenial", f"alias {text!r} is the {ep.protocol} endpoint '{ep.alias}'")
            if spec is not None and spec.alias != ep.alias:
                raise _Reject("invalidAlias", f"aliases name two endpoints: '{spec.alias}' and '{ep.alias}'")
            spec = ep
        authenticated = False
        asked_prefixes = _prefixes_of(m.value)
        if spec is not None:
            if not spec.allows(source_ip):
                raise _Reject("securityDenial", f"endpoint '{spec.alias}' may not register from {source_ip}: "
                                                f"allowed networks are {', '.join(map(str, spec.networks))}")
            if spec.password is not None:
                self._authenticate(m, spec, source_ip, endpoint_id)
                authenticated = True
            granted: list[Alias] = [("h323-ID", spec.alias)]
            if spec.number:
                granted.append(("dialedDigits" if spec.number.isdigit() else "h323-ID", spec.number))
            prefixes = list(spec.prefixes)
            left = [t for k, t in m.aliases if k != "transportID" and plan.endpoint(t) is None]
            left += [p for p in asked_prefixes if p not in prefixes]
            if left:
                log.info("gatekeeper: endpoint '%s' asked also for %s, which the dial plan does not give it",
                         spec.alias, ", ".join(left[:8]))
        else:
            if not plan.registration_open(source_ip):
                raise _Reject("securityDenial", f"no alias is an endpoint of the dial plan "
                                                f"({', '.join(t for _, t in m.aliases)[:120] or 'no aliases'}) and "
                                                f"{source_ip} is not in open_registration")
            granted = [(k, t) for k, t in m.aliases if k != "transportID"]
            if not granted:
                raise _Reject("invalidAlias", "an endpoint the dial plan does not list must name an alias")
            taken = [(k, t) for k, t in granted if plan.claimant(t)]
            if taken:
                raise _Reject("duplicateAlias", "the dial plan uses " + ", ".join(
                    f"{t} ({plan.claimant(t)})" for _, t in taken), taken)
            prefixes = []
            for p in asked_prefixes:
                owner = plan.prefix_claimant(p)
                if owner is None:
                    prefixes.append(p)
                else:
                    log.info("gatekeeper: prefix %s left out of %s's registration: the dial plan has %s",
                             p, source_ip, owner)
        self._check_taken(granted, prefixes, source_ip, endpoint_id, call_signal, authenticated)
        return spec, granted, prefixes, authenticated

    def _check_taken(self, aliases: list[Alias], prefixes: list[str], source_ip: str, endpoint_id: str | None,
                     call_signal: Address | None, authenticated: bool) -> None:
        """duplicateAlias when another registration holds one of ``aliases`` (or ``prefixes``) and this is
        not that endpoint again: a proven password, or the same address (a reboot)."""
        plan = self.plan()
        room_numbers = {_key(n) for r in plan.rooms for n in r.numbers}
        dups: list[Alias] = []
        for kind, text in aliases:
            k = _key(text)
            if k in room_numbers:
                dups.append((kind, text))
                continue
            owner = self.registrations.get(self._aliases.get(k, ""))
            if owner is None or owner.endpoint_id == endpoint_id or authenticated:
                continue
            if owner.ras_address[0] == source_ip and call_signal is not None \
                    and call_signal in owner.call_signal_addresses:
                continue                    # the same endpoint registering again (e.g. after a reboot)
            dups.append((kind, text))
        for p in prefixes:
            owner = next((r for r in self.registrations.values() if p in r.prefixes), None)
            if owner is not None and owner.endpoint_id != endpoint_id and not authenticated \
                    and owner.ras_address[0] != source_ip:
                dups.append(("dialedDigits", p))
        if dups:
            raise _Reject("duplicateAlias", "already taken: " + ", ".join(t for _, t in dups), dups)

    def _authenticate(self, m: RasMessage, spec: EndpointSpec, source_ip: str,
                      endpoint_id: str | None = None) -> None:
        """H.235.1 password check (gateway.h323.h235) of a request from an endpoint with a password;
        _Reject securityDenial when it fails.  Failures count in the password guard per source and
        endpoint; a locked-out source is refused without looking at the token."""
        target = "account " + spec.alias.casefold()
        wait = self.guard.retry_after(source_ip, target)
        if wait:
            raise _Reject("securityDenial", f"endpoint '{spec.alias}': {source_ip} is locked out for "
                                            f"{wait:.0f} s more (too many wrong passwords)")
        try:
            h235.verify(m.raw, m.value, spec.password or "", gatekeeper_id=self.gatekeeper_id,
                        endpoint_id=endpoint_id, senders=(spec.alias, spec.number or spec.alias, spec.username),
                        replay=self._replay, who=spec.alias)
        except h235.H235Error as exc:
            if not exc.absent:
                self.guard.failed(source_ip, target)
            raise _Reject("securityDenial", f"endpoint '{spec.alias}' has a password: {exc.reason}") from None
        self.guard.succeeded(source_ip, target)
        self._sign_with = spec.password or ""

    def _signed(self, data: bytes, m: RasMessage) -> bytes:
        """Our answer to an authenticated request, with our own H.235.1 token (sendersID = our
        gatekeeper identifier, generalID = the endpoint's identifier)."""
        _, body = asn1.decode_ras(data)
        eid = body.get("endpointIdentifier") if isinstance(body, dict) else None
        return h235.sign(data, self._sign_with or "", general_id=eid or m.endpoint_identifier,
                         senders_id=self.gatekeeper_id, random=next(self._random))

    def _rrj(self, m: RasMessage, addr: Address, rej: _Reject) -> tuple[bytes, Address]:
        self._reject("RRJ", rej.reason, rej.detail, m, addr)
        if rej.reason == "duplicateAlias":
            try:
                body = {"requestSeqNum": m.seq, "protocolIdentifier": asn1.H225_PROTOCOL_ID,
                        "rejectReason": ("duplicateAlias", [asn1.alias_address(a) for a in rej.aliases]),
                        "gatekeeperIdentifier": self.gatekeeper_id}
                return self._encode("registrationReject", body), addr
            except asn1.Asn1Error:
                pass
        return ras.build_rrj(m.seq, rej.reason, gatekeeper_identifier=self.gatekeeper_id), addr

    def _ttl(self, asked: int | None) -> int:
        return min(asked, self.time_to_live) if asked else self.time_to_live

    def _on_rrq(self, m: RasMessage, addr: Address) -> tuple[bytes, Address]:
        now = self._clock.seconds()
        if m.gatekeeper_identifier and m.gatekeeper_identifier != self.gatekeeper_id:
            return self._rrj(m, addr, _Reject("undefinedReason",
                                              f"RRQ for gatekeeper {m.gatekeeper_identifier!r}"))
        if m.keep_alive:
            reg = self.registrations.get(m.endpoint_identifier or "")
            if reg is None:
                return self._rrj(m, addr, _Reject("fullRegistrationRequired",
                                                  f"keep-alive for unknown endpoint {m.endpoint_identifier!r}"))
            if addr[0] != reg.ras_address[0]:
                return self._rrj(m, addr, _Reject("fullRegistrationRequired",
                                                  f"keep-alive for {reg.endpoint_id} from {addr[0]}, registered "
                                                  f"from {reg.ras_address[0]}"))
            if reg.endpoint_spec is not None:
                current = self.plan().endpoint(reg.endpoint_spec.alias)
                if current is None or not current.allows(addr[0]) or current.protocol != "h323":
                    self._drop(reg.endpoint_id, "the dial plan no longer allows it")
                    return self._rrj(m, addr, _Reject("fullRegistrationRequired",
                                                      f"endpoint '{reg.endpoint_spec.alias}' changed in the plan"))
                if current.password is not None:
                    try:
                        self._authenticate(m, current, addr[0], reg.endpoint_id)
                    except _Reject as rej:
                        return self._rrj(m, addr, rej)
            ttl = self._ttl(m.time_to_live)
            reg.time_to_live = ttl
            reg.expires_at = now + ttl
            reg.keepalives += 1
            self.stats["events"]["keepalive"] += 1
            return ras.build_rcf(m.seq, reg.call_signal_addresses, reg.endpoint_id,
                                 gatekeeper_identifier=self.gatekeeper_id, time_to_live=ttl), addr
        csas = m.call_signal_addresses
        if not csas or any(port == 0 for _, port in csas):
            return self._rrj(m, addr, _Reject("invalidCallSignalAddress", "no usable callSignalAddress"))
        ras_addr = m.ras_addresses[0] if m.ras_addresses and m.ras_addresses[0][1] else addr
        # a RAS address behind NAT: answer and reach the endpoint where it really is
        if ras_addr[0] != addr[0]:
            ras_addr = addr
        previous = self.registrations.get(m.endpoint_identifier or "")
        if previous is not None and previous.ras_address[0] != addr[0]:
            previous = None         # someone else's identifier: only the endpoint itself re-registers under it
        if previous is None:
            previous = next((r for r in self.registrations.values() if r.ras_address[0] == addr[0]
                             and any(a in r.call_signal_addresses for a in csas)), None)
        if previous is None:
            if len(self.registrations) >= self.max_registrations:
                return self._rrj(m, addr, _Reject("resourceUnavailable",
                                                  f"the gatekeeper holds {self.max_registrations} registrations"))
            if sum(1 for r in self.registrations.values() if r.ras_address[0] == addr[0]) \
                    >= self.max_registrations_per_source:
                return self._rrj(m, addr, _Reject("resourceUnavailable",
                                                  f"{addr[0]} holds {self.max_registrations_per_source} registrations"))
        try:
            spec, aliases, prefixes, _ = self._admit(m, addr[0], endpoint_id=previous.endpoint_id if previous else None,
                                                     call_signal=csas[0])
        except _Reject as rej:
            return self._rrj(m, addr, rej)
        ttl = self._ttl(m.time_to_live)
        if previous is not None:
            self._unindex(previous)
            eid = previous.endpoint_id
            registered_at = previous.registered_at
        else:
            eid = f"{next(self._ids)}_{self.gatekeeper_id}"[:128]
            registered_at = now
        # what another registration held (the same endpoint before a reboot, or before it proved its
        # password from a new address): it is this one's now
        for kind, text in aliases:
            owner = self.registrations.get(self._aliases.get(_key(text), ""))
            if owner is not None and owner.endpoint_id != eid:
                self._drop(owner.endpoint_id, "re-registered with a new identifier")
        for p in prefixes:
            for owner in [r for r in self.registrations.values() if p in r.prefixes and r.endpoint_id != eid]:
                self._drop(owner.endpoint_id, f"prefix {p} registered again")
        reg = Registration(endpoint_id=eid, aliases=aliases, call_signal_addresses=list(csas),
                           ras_address=ras_addr, time_to_live=ttl, expires_at=now + ttl, endpoint_spec=spec,
                           registered_at=registered_at, endpoint_type=m.endpoint_type,
                           prefixes=prefixes, vendor=_vendor_text(m))
        self.registrations[eid] = reg
        for _, text in reg.aliases:
            self._aliases[_key(text)] = eid
        self.stats["events"]["registered"] += 1
        log.info("gatekeeper: registered %s %s at %s:%d (ttl %ds%s)", eid,
                 ", ".join(t for _, t in reg.aliases) or "(no alias)", *reg.call_signal_address, ttl,
                 f", endpoint '{spec.alias}'" if spec else "")
        return ras.build_rcf(m.seq, reg.call_signal_addresses, eid, aliases=reg.aliases,
                             gatekeeper_identifier=self.gatekeeper_id, time_to_live=ttl), addr

    def _unindex(self, reg: Registration) -> None:
        for _, text in reg.aliases:
            if self._aliases.get(_key(text)) == reg.endpoint_id:
                del self._aliases[_key(text)]

    def _drop(self, endpoint_id: str, why: str) -> Registration | None:
        reg = self.registrations.pop(endpoint_id, None)
        if reg is None:
            return None
        self._unindex(reg)
        for k in [k for k, c in self.calls.items() if c.endpoint_id == endpoint_id]:
            del self.calls[k]
        log.info("gatekeeper: %s unregistered (%s)", endpoint_id, why)
        return reg

    def _expire(self) -> None:
        now = self._clock.seconds()
        for reg in [r for r in self.registrations.values()
                    if r.time_to_live and now > r.expires_at + self.expiry_grace]:
            self._drop(reg.endpoint_id, "timeToLive passed without a keep-alive")
            self.stats["events"]["expired"] += 1
            try:
                self._send_request(ras.build_urq(self._next_seq(), reg.call_signal_addresses,
                                                 endpoint_identifier=reg.endpoint_id, reason="ttlExpired",
                                                 gatekeeper_identifier=self.gatekeeper_id),
                                   reg.ras_address, "URQ")
            except RasError as exc:
                log.warning("gatekeeper: cannot build URQ for %s: %s", reg.endpoint_id, exc.reason)
        if len(self._reply_cache) > 256:
            self._prune_cache(now)

    # ------------------------------------------------------------------ URQ
    def _on_urq(self, m: RasMessage, addr: Address) -> tuple[bytes, Address]:
        reg = self.registrations.get(m.endpoint_identifier or "")
        if reg is None and not m.endpoint_identifier:
            reg = next((r for r in self.registrations.values()
                        if any(a in r.call_signal_addresses for a in m.call_signal_addresses)), None)
        if reg is None or reg.ras_address[0] != addr[0]:
            self._reject("URJ", "notCurrentlyRegistered", f"endpoint {m.endpoint_identifier!r}", m, addr)
            return ras.build_urj(m.seq, "notCurrentlyRegistered"), addr
        if not self._password_holds(m, reg, addr, "URJ"):
            return ras.build_urj(m.seq, "securityDenial"), addr
        self._drop(reg.endpoint_id, f"URQ {m.unregistration_reason or ''}".strip())
        self.stats["events"]["unregistered"] += 1
        return ras.build_ucf(m.seq), addr

    def _password_holds(self, m: RasMessage, reg: Registration, addr: Address, reject: str) -> bool:
        """For an endpoint with a password: the message's H.235.1 token checks out (else the
        refusal is logged as `reject` with securityDenial). True for endpoints without one."""
        if reg.endpoint_spec is None or reg.endpoint_spec.password is None:
            return True
        try:
            self._authenticate(m, reg.endpoint_spec, addr[0], reg.endpoint_id)
        except _Reject as rej:
            self._reject(reject, "securityDenial", rej.detail, m, addr)
            return False
        return True

    # ------------------------------------------------------------------ admission
    def _registered_sender(self, m: RasMessage, addr: Address) -> Registration | None:
        reg = self.registrations.get(m.endpoint_identifier or "")
        if reg is None:
            return None
        if addr[0] != reg.ras_address[0] and addr[0] not in {ip for ip, _ in reg.call_signal_addresses}:
            return None
        return reg

    def resolve(self, number: str, caller: str | None = None) -> tuple[str, Any]:
        """Where a dialed alias goes: ("room", RouteResult) | ("dial", RouteResult) |
        ("endpoint", Registration) | ("reject", RouteResult) | ("none", RouteResult)."""
        r = self.plan().route(number, caller=caller, protocol="h323")
        if r.kind in ("room", "reject"):
            return r.kind, r
        reg = self.by_alias(number) or self.by_prefix(normalise(number))
        if reg is not None:
            return "endpoint", reg
        return r.kind, r

    def _on_arq(self, m: RasMessage, addr: Address) -> tuple[bytes, Address]:
        reg = self.registrations.get(m.endpoint_identifier or "")
        if reg is None:
            self._reject("ARJ", "callerNotRegistered", f"endpoint {m.endpoint_identifier!r}", m, addr)
            return ras.build_arj(m.seq, "callerNotRegistered"), addr
        if self._registered_sender(m, addr) is None:
            self._reject("ARJ", "invalidEndpointIdentifier", f"{reg.endpoint_id} used from {addr[0]}", m, addr)
            return ras.build_arj(m.seq, "invalidEndpointIdentifier"), addr
        if not self._password_holds(m, reg, addr, "ARJ"):
            return ras.build_arj(m.seq, "securityDenial"), addr
        bandwidth = min(m.bandwidth or 0, self.max_bandwidth)
        routed_model = "gatekeeperRouted" if self.routed else "direct"
        if m.answer_call:
            dest = reg.call_signal_address
            model = routed_model
            destination = ", ".join(t for _, t in m.destination_info) or "(incoming)"
            return self._acf(m, addr, reg, bandwidth, dest, model, destination)
        caller = reg.endpoint_spec.alias if reg.endpoint_spec else (reg.aliases[0][1] if reg.aliases else None)
        first_failure: tuple[str, str] | None = None
        for kind, text in m.destination_info:
            if kind == "transportID":
                continue
            what, hit = self.resolve(text, caller)
            if what in ("room", "dial"):
                return self._acf(m, addr, reg, bandwidth, self.csa_for(addr[0]), routed_model, text,
                                 aliases=[(kind, text)])
            if what == "endpoint":
                return self._acf(m, addr, reg, bandwidth, hit.call_signal_address, "direct", text,
                                 aliases=[(kind, text)])
            if first_failure is None:
                if what == "reject":
                    first_failure = (_STATUS_TO_ARJ.get(hit.status or 403, "requestDenied"),
                                     f"{text!r}: {hit.reason} ({hit.rule})")
                else:
                    first_failure = ("calledPartyNotRegistered", f"{text!r}: {hit.reason}")
        if first_failure is None:
            target = m.dest_call_signal_address
            for kind, text in m.destination_info:
                if kind == "transportID":
                    host, _, port = text.rpartition(":")
                    target = (host.strip("[]"), int(port))
            if target is not None:
                if self.is_us(target):
                    return self._acf(m, addr, reg, bandwidth, target, routed_model, f"{target[0]}:{target[1]}")
                owner = next((r for r in self.registrations.values() if target in r.call_signal_addresses), None)
                if owner is not None:
                    return self._acf(m, addr, reg, bandwidth, target, "direct", f"{target[0]}:{target[1]}")
                first_failure = ("calledPartyNotRegistered", f"{target[0]}:{target[1]} is no registered endpoint")
            else:
                first_failure = ("incompleteAddress", "the ARQ names no destination")
        reason, detail = first_failure
        self._reject("ARJ", reason, detail, m, addr)
        return ras.build_arj(m.seq, reason), addr

    def _acf(self, m: RasMessage, addr: Address, reg: Registration, bandwidth: int, dest: Address, model: str,
             destination: str, aliases: list[Alias] | None = None) -> tuple[bytes, Address]:
        if m.call_identifier is not None:
            self.calls[(m.call_identifier, reg.endpoint_id)] = AdmittedCall(
                call_identifier=m.call_identifier, endpoint_id=reg.endpoint_id, conference_id=m.conference_id,
                call_reference_value=m.call_reference_value, bandwidth=bandwidth, answer_call=bool(m.answer_call),
                destination=destination, dest_call_signal_address=dest, admitted_at=time.time())
        self.stats["events"]["admitted"] += 1
        log.info("gatekeeper: ACF %s -> %s at %s:%d (%s, %d kbit/s)", reg.endpoint_id, destination, dest[0],
                 dest[1], model, bandwidth // 10)
        return ras.build_acf(m.seq, bandwidth, dest, call_model=model, destination_aliases=aliases or ()), addr

    def _on_brq(self, m: RasMessage, addr: Address) -> tuple[bytes, Address]:
        reg = self._registered_sender(m, addr)
        if reg is None:
            self._reject("BRJ", "notBound", f"endpoint {m.endpoint_identifier!r}", m, addr)
            return ras.build_brj(m.seq, "notBound", 0), addr
        call = self.calls.get((m.call_identifier or b"", reg.endpoint_id))
        if call is None:
            self._reject("BRJ", "invalidConferenceID", "no such admitted call", m, addr)
            return ras.build_brj(m.seq, "invalidConferenceID", 0), addr
        call.bandwidth = min(m.bandwidth or 0, self.max_bandwidth)
        return ras.build_bcf(m.seq, call.bandwidth), addr

    def _on_drq(self, m: RasMessage, addr: Address) -> tuple[bytes, Address]:
        reg = self._registered_sender(m, addr)
        if reg is None:
            self._reject("DRJ", "notRegistered", f"endpoint {m.endpoint_identifier!r}", m, addr)
            return ras.build_drj(m.seq, "notRegistered"), addr
        call = self.calls.pop((m.call_identifier or b"", reg.endpoint_id), None)
        self.stats["events"]["disengaged"] += 1
        log.info("gatekeeper: DCF %s call %s%s", reg.endpoint_id, (m.call_identifier or b"").hex(),
                 "" if call else " (not admitted by us)")
        return ras.build_dcf(m.seq), addr

    # ------------------------------------------------------------------ location
    def is_neighbour(self, host: str) -> bool:
        import ipaddress

        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in n for n in self.neighbours if n.version == ip.version)

    def _on_lrq(self, m: RasMessage, addr: Address) -> tuple[bytes, Address]:
        if not self.is_neighbour(addr[0]):
            # not a configured neighbour: told no, at the address it came from (a spoofed
            # replyAddress must not turn the gatekeeper into a reflector), and told nothing else
            self._reject("LRJ", "requestDenied", f"LRQ from {addr[0]}, which is not a configured neighbour", m, addr)
            return ras.build_lrj(m.seq, "requestDenied"), addr
        dest = m.reply_address if m.reply_address and m.reply_address[0] == addr[0] else addr
        reason, detail = "notRegistered", "no destination"
        for kind, text in m.destination_info:
            if kind == "transportID":
                continue
            what, hit = self.resolve(text)
            if what == "room":
                return ras.build_lcf(m.seq, self.csa_for(addr[0]), self.ras_for(addr[0]),
                                     destination_aliases=[(kind, text)]), dest
            if what == "endpoint":
                return ras.build_lcf(m.seq, hit.call_signal_address, hit.ras_address,
                                     destination_aliases=[(kind, text)]), dest
            reason = "requestDenied" if what in ("reject", "dial") else "notRegistered"
            detail = f"{text!r}: {hit.reason}"
            break
        self._reject("LRJ", reason, detail, m, addr)
        return ras.build_lrj(m.seq, reason), dest

    # ------------------------------------------------------------------ status
    def _on_irr(self, m: RasMessage, addr: Address) -> tuple[bytes, Address] | None:
        reg = self._registered_sender(m, addr)
        need_response = bool(m.value.get("needResponse"))
        if reg is None:
            if not need_response:
                return None
            return self._encode("infoRequestNak", {"requestSeqNum": m.seq,
                                                   "nakReason": ("notRegistered", 0)}), addr
        if reg.time_to_live:
            reg.expires_at = self._clock.seconds() + reg.time_to_live
        reg.keepalives += 1
        self.stats["events"]["keepalive"] += 1
        if need_response:
            return self._encode("infoRequestAck", {"requestSeqNum": m.seq}), addr
        return None
