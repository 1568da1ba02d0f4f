"""SIP transport layer (RFC 3261 §18, RFC 3581 rport, RFC 5626 keep-alive).

One :class:`SipTransport` owns a UDP socket and a TCP listener on the same
port number. It turns datagrams and stream bytes into parsed messages for
the transaction layer (``on_request(request, peer)`` /
``on_response(response, peer)``) and sends messages to a :class:`Peer`.

Receiving (§18.2.1, RFC 3581 §4)
    The top Via of every request gets ``received=<source IP>`` when its
    sent-by host differs from the packet source (a domain name always
    differs) or when it carries ``rport``; an empty ``rport`` gets the
    source port. A malformed request is answered ``400`` (``505`` for a
    SIP version we do not speak) whose reason phrase is the parser's reason,
    with ``Warning: 399 cau "<reason>"``; Via/From/To/Call-ID/CSeq are
    copied from ``SipParseError.partial``. If not even a Via can be read, or
    the request is an ACK, nothing is sent and the message is dropped. A
    malformed response is dropped. Every one of these is counted in
    :attr:`SipTransport.stats`. Exceptions raised by the callbacks are
    logged, never propagated into the reactor.

Keep-alive
    On TCP, a CRLFCRLF "ping" (RFC 5626 §3.5.1) is answered with a CRLF
    "pong". On UDP, datagrams holding only CR/LF (the RFC 5626 §3.5.1/STUN-
    less keep-alive many phones send) are ignored.

Sending (§18.1, §18.2.2)
    :meth:`SipTransport.send` sends to exactly the given peer. UDP uses
    ``sendto``; TCP reuses the open connection keyed by ``(host, port)`` (the
    one the peer opened to us, or one we opened), else opens one, queueing
    messages until it is up. Failures (connection refused, unreachable,
    datagram too large for ``max_udp``) are reported by calling
    ``on_error(reason)`` *later*, from the reactor, never re-entrantly.
    :meth:`SipTransport.send_response` applies §18.2.2 / RFC 3581 §4 to
    find where a response goes: back over the TCP connection the request
    came on while it is open, else ``received``/sent-by port; for UDP, to
    ``received``:``rport`` when rport is present (the packet source), else to
    ``received`` (or the sent-by host) at the sent-by port (default 5060).
    ``maddr`` is not used.

Known limits
    * §18.1.1 asks to switch to TCP for requests larger than 1300 octets
      (MTU - 200) when the path MTU is unknown; we send them over UDP
      anyway and count them in ``stats.large_udp`` (the caller picks the
      transport by choosing the Peer).
    * §18.1.2 "sent-by does not match what we insert → discard" is not
      checked here; the transaction layer drops responses whose branch
      matches no client transaction, which covers it in practice.
    * ``local_host``: the bind address; when bound to 0.0.0.0 (or ::) it is
      127.0.0.1 (resp. ::1). :meth:`local_host_for` asks the kernel which
      local address routes to a given destination (a connected UDP socket,
      no packet sent) and is what Via/Contact should use for real peers
      when bound to "any".
    * Caps and idle timeouts on inbound TCP connections come from
      :attr:`SipTransport.wrap_tcp_factory` (the app uses gateway.netguard).

TLS (RFC 3261 §26, RFC 5922)
    Inbound TLS is served with ``tls_context``. Outbound TLS connections verify the far
    certificate when :attr:`SipTransport.tls_trust` is set (a Twisted trust root: the CAs of a
    PEM file, or the platform's): the chain must lead to one of those CAs and the certificate
    must name :attr:`Peer.name` — the host of the URI that was dialled (RFC 5922 §4: the SIP
    domain, not the SRV target or the address it resolved to). Messages wait for the handshake;
    a failed one reports its reason to each of them (a dial answers 503 with it). Without a
    trust root the far certificate is not checked (encrypted, not authenticated) — the app
    says so at start. Only named peers are checked (a target dialled and the dialogs we
    started): a connection verified for that name carries them, kept per address and name; a
    handshake that does not finish within ``connect_timeout`` is given up. Unnamed peers
    (responses, the dialogs of sites that called us) go as before over the connection open to
    that address, or a new one that is not checked. Two names at one address: a response to a
    request that came on the first name's connection may leave on the second's (same far end).
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Union

from twisted.internet import defer, error as tw_error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import ClientFactory, DatagramProtocol, Factory, Protocol
from zope.interface import implementer

from gateway.repeated import RepeatedLog
from gateway.sip.headers import quote_string
from gateway.sip.message import (
    KEEPALIVE_PING,
    Request,
    Response,
    SipParseError,
    StreamFramer,
    Via,
    make_response,
    parse_message,
)

__all__ = ["Peer", "SipTransport", "TransportStats", "response_destination", "UDP_MTU_LIMIT"]

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))
#: the same failure again and again (one peer's bad packets): logged once, then with a count
_repeated = RepeatedLog(log)

TransportName = Literal["UDP", "TCP", "TLS"]
STREAMS = ("TCP", "TLS")
ErrorCallback = Callable[[str], None]
Message = Union[Request, Response]

UDP_MTU_LIMIT = 1300  # §18.1.1: MTU 1500 - 200
DEFAULT_SIP_PORT = 5060
DEFAULT_SIPS_PORT = 5061
#: bytes of SIP datagrams one reactor read pass takes (then media and timers get their turn)
UDP_READ_BUDGET = 8192


@dataclass(frozen=True)
class Peer:
    """Where a message came from / goes to."""

    transport: TransportName
    host: str
    port: int
    #: TLS: the name the far certificate must carry (the dialled URI's host); not part of the
    #: peer's identity for equality (one address, one peer)
    name: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport.lower()}:{h}:{self.port}"


@dataclass
class TransportStats:
    received: int = 0        # messages parsed or attempted (keep-alives excluded)
    sent: int = 0            # messages/octet-strings handed to a socket
    parse_errors: int = 0    # messages the parser refused (requests and responses)
    answered_400: int = 0    # malformed requests answered 400/505 (and 513 on TCP)
    dropped: int = 0         # malformed responses, unanswerable requests, send failures
    keepalives: int = 0      # CRLF pings answered (TCP) or ignored (UDP)
    large_udp: int = 0       # messages > 1300 octets sent over UDP anyway (§18.1.1)


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False  # a domain name never equals the packet source


def response_destination(via: Via, source: Peer) -> Peer:
    """Where a response goes per §18.2.2 / RFC 3581 §4, from the top Via of
    the request (as processed on receipt) and the request's source.

    For TCP this is the fall-back target once the original connection has
    closed (``received`` host, sent-by port)."""
    transport: TransportName = source.transport if source.transport in STREAMS else "UDP"
    host = via.received or via.host
    if transport == "UDP":
        rport = via.rport
        if rport is not None:
            return Peer("UDP", host, rport)
    return Peer(transport, host, via.port or (DEFAULT_SIPS_PORT if transport == "TLS" else DEFAULT_SIP_PORT))


def process_via(request: Request, source: Peer) -> None:
    """§18.2.1 + RFC 3581 §4: add received= (and fill rport=) on the top Via."""
    raw = request.headers.get("Via")
    if raw is None:
        return
    try:
        via = Via.parse(raw)
    except SipParseError:
        return
    has_rport = "rport" in via.params
    changed = False
    if has_rport or not _same_ip(via.host, source.host):
        if via.params.get("received") != source.host:
            via.params["received"] = source.host
            changed = True
    if has_rport and via.params["rport"] is None:
        via.params["rport"] = str(source.port)
        changed = True
    if changed:
        request.headers.remove_first("Via")
        request.headers.add("Via", str(via), first=True)


def _warning(reason: str) -> str:
    return f"399 cau {quote_string(reason)}"


class _UdpProtocol(DatagramProtocol):
    def __init__(self, owner: "SipTransport") -> None:
        self.owner = owner

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802 (Twisted)
        host, port = addr[0], addr[1]
        if not data.strip(b"\r\n"):
            self.owner.stats.keepalives += 1
            return
        self.owner._on_message(data, Peer("UDP", host, port), None)


@implementer(IHandshakeListener)
class _StreamProtocol(Protocol):
    """One TCP or TLS connection (inbound or outbound)."""

    def __init__(self, owner: "SipTransport", outbound_key: tuple[str, int] | None = None,
                 kind: TransportName = "TCP", verified_name: str | None = None) -> None:
        self.owner = owner
        self.kind = kind
        self.framer = StreamFramer(owner.max_tcp_message)
        self.key: tuple[str, int] | None = outbound_key
        self.closed: Deferred = Deferred()
        self.connected_ok = False
        #: outbound TLS with a trust root: the name the far certificate was checked for
        self.verified_name = verified_name
        self._registered = False
        self._handshake_timer: Any = None
        self.late = False                    # the handshake took longer than connect_timeout

    def connectionMade(self) -> None:  # noqa: N802
        peer = self.transport.getPeer()
        if self.key is None:
            self.key = (peer.host, peer.port)
        self.connected_ok = True
        if self.verified_name is not None:   # registered and flushed once the certificate is checked
            self._handshake_timer = self.owner.reactor.callLater(self.owner.connect_timeout, self._handshake_late)
            return
        self._ready()

    def _handshake_late(self) -> None:
        self._handshake_timer = None
        self.late = True
        self.transport.abortConnection()

    def handshakeCompleted(self) -> None:  # noqa: N802
        if self.verified_name is None or self._registered:
            return
        if getattr(self.transport, "disconnecting", False):
            return                           # the certificate check aborted it: connectionLost reports
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None
        self._ready()

    def _ready(self) -> None:
        assert self.key is not None
        self._registered = True
        self.owner._connections[(self.kind, *self.key)] = self
        if self.verified_name is not None:
            self.owner._verified[(self.kind, *self.key, self.verified_name)] = self
        pending = self.owner._pending.pop(_pending_key(self.kind, self.key, self.verified_name), None)
        if pending is not None:
            for data, _ in pending.queue:
                self.transport.write(data)
                self.owner.stats.sent += 1

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        assert self.key is not None
        peer = Peer(self.kind, self.key[0], self.key[1])
        for item in self.framer.feed(data):
            if isinstance(item, SipParseError):
                self.owner._on_stream_error(item, peer)
                self.transport.loseConnection()
                return
            if item == KEEPALIVE_PING:
                self.owner.stats.keepalives += 1
                self.transport.write(b"\r\n")
                continue
            self.owner._on_message(item, peer, self)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        if self.key is not None and self.owner._connections.get((self.kind, *self.key)) is self:
            del self.owner._connections[(self.kind, *self.key)]
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        if self.verified_name is not None and self.key is not None:
            vkey = (self.kind, *self.key, self.verified_name)
            if self.owner._verified.get(vkey) is self:
                del self.owner._verified[vkey]
        if self.verified_name is not None and not self._registered and self.key is not None:
            pending = self.owner._pending.pop(_pending_key(self.kind, self.key, self.verified_name), None)
            if pending is not None:      # the certificate was refused (or the handshake broke)
                why = (f"TLS handshake with {self.key[0]}:{self.key[1]} ({self.verified_name}) did not finish in "
                       f"{self.owner.connect_timeout:g} s" if self.late
                       else tls_failure_text(reason, self.verified_name, self.key))
                _repeated(("tls-verify", self.verified_name), logging.WARNING, "SIP over TLS: %s", why)
                for _, on_error in pending.queue:
                    self.owner.stats.dropped += 1
                    self.owner._report(on_error, why)
        if not self.closed.called:
            self.closed.callback(None)


class _InboundFactory(Factory):
    def __init__(self, owner: "SipTransport", kind: TransportName = "TCP") -> None:
        self.owner = owner
        self.kind = kind

    def buildProtocol(self, addr: Any) -> _StreamProtocol:  # noqa: N802
        return _StreamProtocol(self.owner, kind=self.kind)


@dataclass
class _Pending:
    """An outbound TCP connection being set up, with the queued messages."""

    queue: list[tuple[bytes, ErrorCallback | None]] = field(default_factory=list)
    connector: Any = None


def _pending_key(kind: str, key: tuple[str, int], verified_name: str | None) -> tuple:
    """Connections being set up: one per address, and per name its certificate must carry."""
    return (kind, *key) if verified_name is None else (kind, *key, verified_name)


def tls_failure_text(reason: Any, name: str, key: tuple[str, int]) -> str:
    """Why an outbound TLS connection to ``key`` (verified for ``name``) ended before its
    handshake: the certificate's fault in words an operator can act on."""
    value = getattr(reason, "value", reason)
    where = f"[{key[0]}]:{key[1]}" if ":" in key[0] else f"{key[0]}:{key[1]}"
    kind = type(value).__name__
    text = str(value)
    if kind == "VerificationError" or "mismatch" in text.lower():
        return f"the certificate of {where} is not for {name} (RFC 5922: it must name the dialled host)"
    if "certificate verify failed" in text:
        return (f"the certificate of {where} is not signed by a CA in tls_ca (or it has expired); "
                f"dialled {name}")
    if isinstance(value, tw_error.ConnectionDone) or "ConnectionDone" in kind:
        return f"TLS handshake with {where} ({name}) was closed by the far end"
    return f"TLS handshake with {where} ({name}) failed: {text or kind}"


class _OutboundFactory(ClientFactory):
    def __init__(self, owner: "SipTransport", key: tuple[str, int], kind: TransportName = "TCP",
                 verified_name: str | None = None) -> None:
        self.owner = owner
        self.key = key
        self.kind = kind
        self.verified_name = verified_name

    def buildProtocol(self, addr: Any) -> _StreamProtocol:  # noqa: N802
        return _StreamProtocol(self.owner, self.key, self.kind, self.verified_name)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:  # noqa: N802
        pending = self.owner._pending.pop(_pending_key(self.kind, self.key, self.verified_name), None)
        if pending is None:
            return
        why = f"{self.kind} connection to {self.key[0]}:{self.key[1]} failed: {reason.getErrorMessage()}"
        for _, on_error in pending.queue:
            self.owner.stats.dropped += 1
            self.owner._report(on_error, why)


class SipTransport:
    """UDP + TCP SIP transport on one port number (see the module doc)."""

    def __init__(
        self,
        bind: str,
        port: int,
        reactor: Any = None,
        max_udp: int = 65507,
        max_tcp_message: int = 65536,
        connect_timeout: float = 10.0,
        *,
        tls_port: int | None = None,
        tls_context: Any = None,
        tls_client_context: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _r

            reactor = _r
        self.reactor = reactor
        self.bind = bind
        self.port = port
        self.max_udp = max_udp
        self.max_tcp_message = max_tcp_message
        self.connect_timeout = connect_timeout
        self.stats = TransportStats()
        self.on_request: Callable[[Request, Peer], None] = self._no_request
        self.on_response: Callable[[Response, Peer], None] = self._no_response
        self._udp: Any = None
        self._tcp: Any = None
        self._connections: dict[tuple[str, str, int], _StreamProtocol] = {}
        self._pending: dict[tuple, _Pending] = {}
        #: SIP over TLS (RFC 3261 §26): a server context (certificate) to listen on ``tls_port``,
        #: and the context for connections we open (None: encrypted, certificate not verified)
        self.tls_port = tls_port
        self.tls_context = tls_context
        self.tls_client_context = tls_client_context
        #: a Twisted trust root (``ssl.trustRootFromCertificates`` / ``ssl.platformTrust()``):
        #: outbound TLS verifies the far certificate against it and the peer's name; None: not checked
        self.tls_trust: Any = None
        self._tls_verifying: dict[str, Any] = {}
        #: outbound TLS connections verified for a name: (kind, host, port, name) → connection
        self._verified: dict[tuple, _StreamProtocol] = {}
        self._tls: Any = None
        #: which local address a peer reaches us at (``--advertise`` set by the owner wins)
        from gateway.netaddr import LocalAddress

        self.addresses = LocalAddress(bind)
        #: wraps the inbound TCP factory (the app adds connection caps and idle timeouts)
        self.wrap_tcp_factory: Callable[[Any, str], Any] | None = None

    # -- lifecycle --------------------------------------------------------

    def start(self) -> None:
        """Listen on UDP and TCP, same port number. Raises CannotListenError."""
        attempts = 10 if self.port == 0 else 1
        last: Exception | None = None
        for _ in range(attempts):
            udp = self.reactor.listenUDP(
                self.port, _UdpProtocol(self), interface=self.bind,
                maxPacketSize=65536,
            )
            # one read pass takes at most ~16 datagrams before the loop gets back to the media
            # clock (Twisted's default, 256 KiB, let a burst of INVITEs hold it for 300 ms)
            udp.maxThroughput = UDP_READ_BUDGET
            number = udp.getHost().port
            try:
                factory: Any = _InboundFactory(self)
                if self.wrap_tcp_factory is not None:
                    factory = self.wrap_tcp_factory(factory, "TCP")
                tcp = self.reactor.listenTCP(number, factory, interface=self.bind)
            except tw_error.CannotListenError as e:
                udp.stopListening()
                last = e
                continue
            self._udp, self._tcp, self.port = udp, tcp, number
            return
        assert last is not None
        raise last

    def start_tls(self) -> None:
        """Listen for SIP over TLS on ``tls_port`` with ``tls_context`` (after :meth:`start`).
        Raises CannotListenError."""
        if self.tls_context is None or self.tls_port is None:
            raise ValueError("SIP over TLS needs tls_context and tls_port")
        factory: Any = _InboundFactory(self, "TLS")
        if self.wrap_tcp_factory is not None:
            factory = self.wrap_tcp_factory(factory, "TLS")
        self._tls = self.reactor.listenSSL(self.tls_port, factory, self.tls_context, interface=self.bind)
        self.tls_port = self._tls.getHost().port

    def port_for(self, transport: str) -> int:
        """Our port for ``transport`` (Via sent-by, Contact)."""
        return self.tls_port if transport == "TLS" and self.tls_port else self.port

    def stop(self) -> Deferred:
        """Close the listeners and every connection; fires when all are closed."""
        ds: list[Deferred] = []
        for p in (self._udp, self._tcp, self._tls):
            if p is not None:
                d = p.stopListening()
                if isinstance(d, Deferred):
                    ds.append(d)
        self._udp = self._tcp = self._tls = None
        pending_list = list(self._pending.values())
        self._pending.clear()
        for pending in pending_list:
            if pending.connector is not None:
                try:
                    pending.connector.disconnect()   # connecting, or connected and still handshaking
                except Exception:  # already failed
                    pass
            for _, on_error in pending.queue:
                self._report(on_error, "transport stopped")
        for proto in {id(c): c for c in [*self._connections.values(), *self._verified.values()]}.values():
            ds.append(proto.closed)
            proto.transport.loseConnection()
        return defer.DeferredList(ds, consumeErrors=True)

    @property
    def listening(self) -> bool:
        return self._udp is not None

    # -- addresses --------------------------------------------------------

    @property
    def local_host(self) -> str:
        """Address for Via/Contact: the bind address, or loopback when bound
        to any (use :meth:`local_host_for` for a real destination)."""
        if self.bind in ("", "0.0.0.0"):
            return "127.0.0.1"
        if self.bind == "::":
            return "::1"
        return self.bind

    def local_host_for(self, dest_host: str) -> str:
        """The local address the kernel routes ``dest_host`` from (no packet is
        sent). Equals the bind address when bound to a specific one."""
        return self.addresses.for_peer(dest_host)

    def connection_open(self, peer: Peer) -> bool:
        """True when a TCP or TLS connection to ``peer`` (host, port) is up."""
        return peer.transport in STREAMS and (peer.transport, peer.host, peer.port) in self._connections

    # -- sending ----------------------------------------------------------

    def send(self, msg: Message, peer: Peer, on_error: ErrorCallback | None = None) -> None:
        """Serialize and send ``msg`` to ``peer``; failures call ``on_error(reason)``
        later from the reactor."""
        self.send_raw(msg.serialize(), peer, on_error)

    def send_raw(self, data: bytes, peer: Peer, on_error: ErrorCallback | None = None) -> None:
        """Send already serialized octets (retransmissions reuse them)."""
        if peer.transport == "UDP":
            self._send_udp(data, peer, on_error)
        elif peer.transport in STREAMS:
            self._send_tcp(data, peer, on_error)
        else:
            self.stats.dropped += 1
            self._report(on_error, f"unsupported transport {peer.transport!r}")

    def send_response(
        self, response: Response, source: Peer, on_error: ErrorCallback | None = None
    ) -> Peer | None:
        """Send a response to the request that came from ``source`` (§18.2.2).

        Returns the peer it was sent to (None when the top Via is unreadable).
        """
        dest = self.response_peer(response, source)
        if dest is None:
            self.stats.dropped += 1
            self._report(on_error, "response has no readable top Via")
            return None
        self.send(response, dest, on_error)
        return dest

    def response_peer(self, response: Response, source: Peer) -> Peer | None:
        """Where ``response`` goes (see :func:`response_destination`); for TCP
        the original connection while it is open."""
        if source.transport in STREAMS and (source.transport, source.host, source.port) in self._connections:
            return source
        try:
            via = response.top_via
        except SipParseError:
            return None
        if via is None:
            return None
        return response_destination(via, source)

    def _send_udp(self, data: bytes, peer: Peer, on_error: ErrorCallback | None) -> None:
        if self._udp is None:
            self.stats.dropped += 1
            self._report(on_error, "transport not started")
            return
        if len(data) > self.max_udp:
            self.stats.dropped += 1
            self._report(on_error, f"message of {len(data)} octets is too large for UDP")
            return
        if len(data) > UDP_MTU_LIMIT:
            self.stats.large_udp += 1
        try:
            self._udp.write(data, (peer.host, peer.port))
        except Exception as e:  # socket errors, MessageLengthError, bad address
            self.stats.dropped += 1
            self._report(on_error, f"UDP send to {peer.host}:{peer.port} failed: {e}")
            return
        self.stats.sent += 1

    def verifies(self, peer: Peer) -> str | None:
        """The name ``peer``'s certificate is checked for, or None: only named TLS peers (a target
        we dialled, its dialog) with a trust root set; responses and the dialogs of those who
        called us go over the connection they came on, or as before without a check."""
        return peer.name if peer.transport == "TLS" and self.tls_trust is not None else None

    def _send_tcp(self, data: bytes, peer: Peer, on_error: ErrorCallback | None) -> None:
        key = (peer.transport, peer.host, peer.port)
        verify = self.verifies(peer)
        conn = self._connections.get(key) if verify is None else self._verified.get((*key, verify))
        if conn is not None:
            conn.transport.write(data)
            self.stats.sent += 1
            return
        if self._udp is None:
            self.stats.dropped += 1
            self._report(on_error, "transport not started")
            return
        pkey = _pending_key(peer.transport, (peer.host, peer.port), verify)
        pending = self._pending.get(pkey)
        if pending is None:
            pending = self._pending[pkey] = _Pending()
            factory = _OutboundFactory(self, (peer.host, peer.port), peer.transport, verify)
            try:
                if verify is not None:
                    ctx = self._tls_verifying.get(verify)
                    if ctx is None:
                        from twisted.internet import ssl

                        if len(self._tls_verifying) > 256:
                            self._tls_verifying.clear()
                        ctx = self._tls_verifying[verify] = ssl.optionsForClientTLS(verify, self.tls_trust)
                    pending.connector = self.reactor.connectSSL(peer.host, peer.port, factory, ctx,
                                                                timeout=self.connect_timeout)
                elif peer.transport == "TLS":
                    ctx = self.tls_client_context
                    if ctx is None:
                        from twisted.internet import ssl

                        ctx = self.tls_client_context = ssl.CertificateOptions()
                    pending.connector = self.reactor.connectSSL(peer.host, peer.port, factory, ctx,
                                                                timeout=self.connect_timeout)
                else:
                    pending.connector = self.reactor.connectTCP(peer.host, peer.port, factory,
                                                                timeout=self.connect_timeout, bindAddress=None)
            except Exception as e:
                del self._pending[pkey]
                self.stats.dropped += 1
                self._report(on_error, f"{peer.transport} connect to {peer.host}:{peer.port} failed: {e}")
                return
        pending.queue.append((data, on_error))

    def _report(self, on_error: ErrorCallback | None, reason: str) -> None:
        log.debug("SIP send failure: %s", reason)
        if on_error is not None:
            self.reactor.callLater(0, _safe_call, on_error, reason)

    # -- receiving --------------------------------------------------------

    def _on_message(self, data: bytes, peer: Peer, conn: _StreamProtocol | None) -> None:
        self.stats.received += 1
        try:
            msg = parse_message(data)
        except SipParseError as e:
            self.stats.parse_errors += 1
            self._answer_bad(e, peer)
            return
        except Exception as exc:  # a parser bug must not take the transport down
            _repeated(("parser", type(exc).__name__), logging.ERROR, "SIP parser failed on a message from %s: %s",
                      peer, exc, exc_info=True)
            self.stats.parse_errors += 1
            self.stats.dropped += 1
            return
        if isinstance(msg, Request):
            process_via(msg, peer)
            _safe_call(self.on_request, msg, peer)
        else:
            _safe_call(self.on_response, msg, peer)

    def _on_stream_error(self, e: SipParseError, peer: Peer) -> None:
        """Framing error on TCP: answer if possible; the caller closes."""
        self.stats.received += 1
        self.stats.parse_errors += 1
        self._answer_bad(e, peer)

    def _answer_bad(self, e: SipParseError, peer: Peer) -> None:
        partial = e.partial
        if e.is_response or partial is None or partial.method == "ACK":
            self.stats.dropped += 1
            return
        try:
            vias = partial.vias
        except SipParseError:
            vias = []
        if not partial.headers.get_lines("Via"):
            self.stats.dropped += 1
            return
        try:
            if vias:
                process_via(partial, peer)
            resp = make_response(partial, e.status, e.reason)
            resp.headers.add("Warning", _warning(e.reason))
        except Exception as exc:
            _repeated(("answer", type(exc).__name__), logging.ERROR,
                      "could not build the answer to a bad request from %s: %s", peer, exc, exc_info=True)
            self.stats.dropped += 1
            return
        self.stats.answered_400 += 1
        if vias:
            self.send_response(resp, peer)
        else:
            # The Via itself is unreadable (RFC 4475 badinv01, badvers): answer where the request came from.
            self.send_raw(resp.serialize(), peer)

    # -- defaults ---------------------------------------------------------

    def _no_request(self, request: Request, peer: Peer) -> None:
        self.stats.dropped += 1

    def _no_response(self, response: Response, peer: Peer) -> None:
        self.stats.dropped += 1


def _safe_call(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:
        _repeated(("callback", getattr(fn, "__qualname__", repr(fn)), type(exc).__name__), logging.ERROR,
                  "SIP callback %r failed: %s", fn, exc, exc_info=True)
