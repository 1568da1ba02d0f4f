"""SIP transaction layer (RFC 3261 §17, §9 CANCEL, RFC 6026 "Accepted").

:class:`TransactionLayer` sits on a :class:`~gateway.sip.transport.SipTransport`
and gives the transaction user (TU: the UA core) two things:

* ``layer.client(request, peer, on_response)`` runs a client transaction.
  ``on_response(response, tx)`` is called for every provisional response,
  once per final response (retransmitted finals are absorbed), and with
  ``None`` when the transaction fails: ``tx.failure`` is then 408 (Timer B/F,
  or no final 64*T1 after a CANCEL, §9.1) or 503 (transport error,
  §8.1.3.1), with ``tx.error`` saying why.
  INVITE: every 2xx is passed up — the first, its retransmissions and 2xx
  from other forks (§13.2.2.4: the TU must ACK each). ``tx.duplicate`` is
  True while the 2xx being delivered has a To tag already delivered by this
  transaction (a retransmission: re-send the dialog's ACK, do not create a
  dialog). The transaction stays in "accepted" for 64*T1 (Timer M, RFC
  6026); 2xx arriving after it has ended go to ``layer.on_stray_2xx``.
  Non-2xx finals are ACKed by the transaction itself (§17.1.1.3).
* ``layer.on_request(request, tx, peer)`` is called for every new request,
  with its :class:`ServerTransaction` already created — except ACK, which
  has none (ACK for a 2xx, or an ACK that matches nothing): ``tx`` is None.
  Retransmitted requests are absorbed (the last response is re-sent).
  An INVITE gets ``100 Trying`` at once if the TU has not answered by the
  time ``on_request`` returns (§17.2.1). CANCEL is handled here (§9.2): 481
  when nothing matches, else 200 and ``invite_tx.on_cancel(cancel)``; the
  TU answers the INVITE 487 (when ``on_cancel`` is None the layer sends the
  487 itself).

Timers are injectable (``T1``, ``T2``, ``T4``, and ``timer_d`` which
defaults to 64*T1 = 32 s with the default T1, the RFC's "> 32 s"). Each
transaction uses a single ``callLater`` (retransmission and timeout share
it: the earlier of the two deadlines is armed). Every transaction removes
itself from ``layer.clients`` / ``layer.servers`` when it terminates.

Server transactions in "proceeding" have no timer: the TU must answer every
request it is given (a non-INVITE request left unanswered is dropped from
the table after 64*T1, when the client has long given up; an INVITE waits
for the TU for ever).

Matching (§17.1.3, §17.2.3): client transactions by (top Via branch, CSeq
method); server transactions by (branch, sent-by, method) for branches
with the magic cookie — ACK is matched to its INVITE — and, for RFC 2543
branches, by (Request-URI, From tag, Call-ID, CSeq number, method, top Via
sent-by and branch). The To tag is not part of the RFC 2543 key (so the
ACK, whose To carries the tag of our response, matches).
"""
from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from gateway.guard import source_key
from gateway.repeated import RepeatedLog
from gateway.sip.headers import Headers
from gateway.sip.message import (
    MAGIC_COOKIE,
    CSeq,
    Request,
    Response,
    SipParseError,
    Via,
    make_response,
)
from gateway.sip.transport import Peer, SipTransport, _safe_call

__all__ = [
    "TransactionLayer",
    "ClientTransaction",
    "ServerTransaction",
    "Retransmission2xx",
    "LayerStats",
    "new_branch",
    "new_tag",
]

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))

#: server transactions one address (an IPv6 /64) may hold open at once; at the RFC's T1 a UDP
#: OPTIONS or REGISTER stays 32 s after its answer, so this is about 60 requests a second, sustained
MAX_SERVER_TRANSACTIONS_PER_SOURCE = 2000

_EPS = 1e-6


def new_branch() -> str:
    """A fresh RFC 3261 branch (magic cookie + 64 random bits)."""
    return MAGIC_COOKIE + os.urandom(8).hex()


def new_tag() -> str:
    """A fresh From/To tag (§19.3: at least 32 bits of randomness)."""
    return os.urandom(6).hex()


@dataclass
class LayerStats:
    client_transactions: int = 0
    server_transactions: int = 0
    retransmissions: int = 0       # requests/responses we re-sent on a timer
    absorbed: int = 0              # retransmitted requests/responses absorbed
    timeouts: int = 0              # client transactions that ended with 408
    transport_errors: int = 0
    stray_responses: int = 0       # responses matching no client transaction (dropped)
    stray_2xx: int = 0             # 2xx to INVITE with no transaction, given to on_stray_2xx
    cancel_481: int = 0
    ack_timeouts: int = 0          # non-2xx without ACK (Timer H) + 2xx without ACK
    overload_503: int = 0          # requests answered 503 statelessly: their source had too many open


class _Timed:
    """One DelayedCall per object: fires at the earlier of ``_next_retx`` and
    ``_deadline`` (absolute reactor times)."""

    layer: "TransactionLayer"
    _call: Any
    _next_retx: float | None
    _deadline: float | None
    _interval: float

    def _arm(self) -> None:
        times = [t for t in (self._next_retx, self._deadline) if t is not None]
        if not times:
            self._disarm()
            return
        delay = max(0.0, min(times) - self.layer._now())
        call = self._call
        if call is not None and call.active():
            call.reset(delay)
        else:
            self._call = self.layer.reactor.callLater(delay, self._fire)

    def _disarm(self) -> None:
        call = self._call
        self._call = None
        if call is not None and call.active():
            call.cancel()

    def _fire(self) -> None:
        self._call = None
        now = self.layer._now()
        if self._deadline is not None and now >= self._deadline - _EPS:
            self._deadline = None
            self._on_deadline()
            return
        if self._next_retx is not None and now >= self._next_retx - _EPS:
            self._on_retransmit(now)
        self._arm()

    def _on_deadline(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _on_retransmit(self, now: float) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


# --- client transactions -----------------------------------------------------


class ClientTransaction(_Timed):
    """RFC 3261 §17.1. States: INVITE calling → proceeding → completed |
    accepted → terminated; non-INVITE trying → proceeding → completed →
    terminated."""

    def __init__(
        self,
        layer: "TransactionLayer",
        request: Request,
        peer: Peer,
        branch: str,
        on_response: Callable[[Response | None, "ClientTransaction"], None],
    ) -> None:
        self.layer = layer
        self.request = request
        self.peer = peer
        self.branch = branch
        self.method = request.method
        self.is_invite = request.method == "INVITE"
        self.reliable = peer.transport != "UDP"
        self.key: tuple[str, str] = (branch, request.method)
        self.on_response = on_response
        self.state = "calling" if self.is_invite else "trying"
        self.failure: int | None = None
        self.error: str | None = None
        self.duplicate = False
        self.last_response: Response | None = None
        self.cancel_requested = False
        self.cancel_sent = False
        self._cancel_cb: Callable[[Response | None, ClientTransaction], None] | None = None
        self._data = b""
        self._ack_data: bytes | None = None
        self._tags_2xx: set[str | None] = set()
        self._call = None
        self._next_retx = None
        self._deadline = None
        self._interval = layer.T1

    def __repr__(self) -> str:
        return f"<ClientTransaction {self.method} {self.branch} {self.state}>"

    @property
    def terminated(self) -> bool:
        return self.state == "terminated"

    # -- start and timers --
    def _start(self) -> None:
        layer = self.layer
        self._data = self.request.serialize()
        now = layer._now()
        if not self.reliable:
            self._interval = layer.T1
            self._next_retx = now + layer.T1        # Timer A / Timer E
        self._deadline = now + 64 * layer.T1        # Timer B / Timer F
        self._arm()
        layer.transport.send_raw(self._data, self.peer, self._transport_error)

    def _on_retransmit(self, now: float) -> None:
        layer = self.layer
        if self.state == "calling":
            self._interval *= 2                     # Timer A: 2*previous
        elif self.state == "trying":
            self._interval = min(2 * self._interval, layer.T2)   # Timer E
        elif self.state == "proceeding" and not self.is_invite:
            self._interval = layer.T2
        else:
            self._next_retx = None
            return
        layer.stats.retransmissions += 1
        layer.transport.send_raw(self._data, self.peer, self._transport_error)
        self._next_retx = now + self._interval

    def _on_deadline(self) -> None:
        if self.state in ("calling", "trying") or (
            self.state == "proceeding" and (not self.is_invite or self.cancel_sent)
        ):
            self.layer.stats.timeouts += 1
            self._fail(408, "timeout: no final response within 64*T1")
        else:                                       # Timer D, K, M
            self._terminate()

    def _transport_error(self, reason: str) -> None:
        if self.state in ("calling", "trying", "proceeding"):
            self.layer.stats.transport_errors += 1
            self._fail(503, reason)

    def _fail(self, status: int, reason: str) -> None:
        self.failure = status
        self.error = reason
        self._terminate()
        _safe_call(self.on_response, None, self)

    def _terminate(self) -> None:
        self.state = "terminated"
        self._next_retx = self._deadline = None
        self._disarm()
        clients = self.layer.clients
        if clients.get(self.key) is self:
            del clients[self.key]

    # -- responses --
    def _receive(self, response: Response) -> None:
        code = response.status
        layer = self.layer
        state = self.state
        if self.is_invite:
            if state in ("calling", "proceeding"):
                self.last_response = response
                if code < 200:
                    self.state = "proceeding"
                    self._next_retx = None
                    if not self.cancel_sent:
                        self._deadline = None       # Timer B only runs in Calling
                    self._arm()
                    self.duplicate = False
                    _safe_call(self.on_response, response, self)
                    if self.cancel_requested and not self.cancel_sent and self.state == "proceeding":
                        layer._send_cancel(self)
                elif code < 300:
                    self.state = "accepted"         # RFC 6026
                    self._next_retx = None
                    self._deadline = layer._now() + 64 * layer.T1   # Timer M
                    self._arm()
                    self._deliver_2xx(response)
                else:
                    self.state = "completed"
                    self._send_ack(response)
                    self._next_retx = None
                    delay = 0.0 if self.reliable else layer.timer_d  # Timer D
                    self._deadline = layer._now() + delay
                    self.duplicate = False
                    _safe_call(self.on_response, response, self)
                    if self.reliable and self.state == "completed":
                        self._terminate()
                    else:
                        self._arm()
            elif state == "accepted":
                if 200 <= code < 300:
                    self._deliver_2xx(response)
                else:
                    layer.stats.absorbed += 1
            elif state == "completed":
                layer.stats.absorbed += 1
                if code >= 300 and self._ack_data is not None:
                    layer.transport.send_raw(self._ack_data, self.peer)
            else:
                layer.stats.absorbed += 1
            return
        # non-INVITE
        if state in ("trying", "proceeding"):
            self.last_response = response
            self.duplicate = False
            if code < 200:
                self.state = "proceeding"
                _safe_call(self.on_response, response, self)
                return
            self.state = "completed"
            self._next_retx = None
            self._deadline = layer._now() + (0.0 if self.reliable else layer.T4)  # Timer K
            _safe_call(self.on_response, response, self)
            if self.reliable and self.state == "completed":
                self._terminate()
            else:
                self._arm()
        else:
            layer.stats.absorbed += 1

    def _deliver_2xx(self, response: Response) -> None:
        try:
            to = response.to
            tag = to.tag if to is not None else None
        except SipParseError:
            tag = None
        self.duplicate = tag in self._tags_2xx
        if self.duplicate:
            self.layer.stats.absorbed += 1
        self._tags_2xx.add(tag)
        _safe_call(self.on_response, response, self)

    def _send_ack(self, response: Response) -> None:
        """§17.1.1.3: the ACK for a non-2xx final, in this transaction."""
        req = self.request
        h = Headers()
        h.add("Via", req.headers.get("Via") or "")
        for name in ("From", "Call-ID"):
            v = req.headers.get(name)
            if v is not None:
                h.add(name, v)
        to_lines = response.headers.get_lines("To")
        h.add("To", to_lines[0] if to_lines else (req.headers.get("To") or ""))
        cseq = req.cseq
        h.add("CSeq", str(CSeq(cseq.seq if cseq else 1, "ACK")))
        for v in req.headers.get_lines("Route"):
            h.add("Route", v)
        h.add("Max-Forwards", "70")
        ack = Request("ACK", req.uri, h)
        self._ack_data = ack.serialize()
        self.layer.transport.send_raw(self._ack_data, self.peer)


# --- server transactions -----------------------------------------------------


class ServerTransaction(_Timed):
    """RFC 3261 §17.2 (+ RFC 6026). States: INVITE proceeding → completed →
    confirmed | accepted → terminated; non-INVITE trying → proceeding →
    completed → terminated.

    Callbacks the TU may set: ``on_cancel(cancel_request)`` (INVITE only),
    ``on_error(reason)`` when a response could not be sent (§17.2.4; the
    transaction is then terminated), ``on_timeout()`` when Timer H fires
    (no ACK for a non-2xx final)."""

    def __init__(self, layer: "TransactionLayer", request: Request, peer: Peer, key: Hashable) -> None:
        self.layer = layer
        self.request = request
        self.peer = peer
        self.key = key
        self.method = request.method
        self.is_invite = request.method == "INVITE"
        self.reliable = peer.transport != "UDP"
        self.state = "proceeding" if self.is_invite else "trying"
        self.on_cancel: Callable[[Request], None] | None = None
        self.on_error: Callable[[str], None] | None = None
        self.on_timeout: Callable[[], None] | None = None
        self.local_tag: str | None = None
        self.source: str | None = None           # counted in the layer's per-source table
        self.last_response: Response | None = None
        self.cancelled = False
        self._last_data: bytes | None = None
        self._call = None
        self._next_retx = None
        self._deadline = None
        self._interval = layer.T1
        self._retx_2xx: Retransmission2xx | None = None
        if not self.is_invite:
            # safety net: an unanswered non-INVITE leaves the table after 64*T1
            self._deadline = layer._now() + 64 * layer.T1
            self._arm()

    def __repr__(self) -> str:
        return f"<ServerTransaction {self.method} {self.state}>"

    @property
    def terminated(self) -> bool:
        return self.state == "terminated"

    def make_response(self, status: int, reason: str | None = None, to_tag: str | None = None) -> Response:
        """``message.make_response(self.request, ...)``. Responses other than
        100 get a To tag when the request had none (§8.2.6.2): ``to_tag``, or
        the transaction's ``local_tag`` (made up once, so the 200 to a
        CANCEL, the 180 and the 487 all carry the same tag, §9.2)."""
        if status != 100:
            if to_tag is None:
                if self.local_tag is None:
                    self.local_tag = new_tag()
                to_tag = self.local_tag
            elif self.local_tag is None:
                self.local_tag = to_tag
        return make_response(self.request, status, reason, to_tag if status != 100 else None)

    def respond(self, response: Response, retransmit: bool = True) -> None:
        """Send a response through this transaction (see the class doc).

        ``retransmit=False`` (an INVITE's error response under load, e.g. a flood's 503): sent
        once, as a stateless proxy would answer; a retransmitted INVITE gets it again and the
        transaction is kept only 8*T1 — the answer never multiplies what a spoofed source sent."""
        code = response.status
        layer = self.layer
        state = self.state
        now = layer._now()
        if self.is_invite:
            if state == "proceeding":
                if code < 200:
                    self._send(response)
                    return
                if code < 300:
                    self.state = "accepted"
                    self._deadline = now + 64 * layer.T1           # Timer L
                    self._arm()
                    self._send(response)
                    return
                self.state = "completed"
                if not self.reliable and retransmit:
                    self._interval = layer.T1
                    self._next_retx = now + layer.T1               # Timer G
                self._deadline = now + (64 if retransmit else 8) * layer.T1   # Timer H
                self._arm()
                self._send(response)
                return
            if state == "accepted" and 200 <= code < 300:
                self._send(response)                               # TU's 2xx retransmission
                return
        else:
            if state in ("trying", "proceeding"):
                if code < 200:
                    self.state = "proceeding"
                    self._send(response)
                    return
                self.state = "completed"
                self._send(response)
                if self.state != "completed":
                    return  # transport error terminated us
                if self.reliable:
                    self._terminate()
                else:
                    self._next_retx = None
                    self._deadline = now + 64 * layer.T1           # Timer J
                    self._arm()
                return
        log.warning("%r: response %d ignored in state %s", self, code, state)

    def retransmit_2xx_until_ack(
        self, response: Response, on_ack_timeout: Callable[[], None] | None = None
    ) -> "Retransmission2xx":
        """§13.3.1.4: send ``response`` (a 2xx) if not sent yet, then re-send it
        at T1, 2*T1, ... (capped at T2) until its ACK arrives; after 64*T1
        without ACK stop and call ``on_ack_timeout()`` (the TU sends BYE)."""
        if not 200 <= response.status < 300:
            raise ValueError("retransmit_2xx_until_ack() takes a 2xx response")
        if self.last_response is not response:
            self.respond(response)
        handle = self.layer.retransmit_2xx_until_ack(response, self.peer, on_ack_timeout)
        self._retx_2xx = handle
        return handle

    # -- internals --
    def _dest(self, response: Response) -> Peer | None:
        return self.layer.transport.response_peer(response, self.peer)

    def _send(self, response: Response) -> None:
        self.last_response = response
        data = self._last_data = response.serialize()
        self._send_data(data)

    def _send_data(self, data: bytes) -> None:
        assert self.last_response is not None
        dest = self._dest(self.last_response)
        if dest is None:
            self._transport_error("response has no readable top Via")
            return
        self.layer.transport.send_raw(data, dest, self._transport_error)

    def _transport_error(self, reason: str) -> None:
        if self.state == "terminated":
            return
        self.layer.stats.transport_errors += 1
        self._terminate()
        if self.on_error is not None:
            _safe_call(self.on_error, reason)

    def _retransmitted(self) -> None:
        """The request came again (§17.2.1, §17.2.2)."""
        self.layer.stats.absorbed += 1
        if self._last_data is None:
            return
        if self.state in ("proceeding", "completed"):
            self._send_data(self._last_data)

    def _ack(self, ack: Request) -> bool:
        """An ACK matched this INVITE transaction. True if absorbed here."""
        if self.state == "completed":
            self.state = "confirmed"
            self._next_retx = None
            if self.reliable:
                self._terminate()                                  # Timer I = 0
            else:
                self._deadline = self.layer._now() + self.layer.T4  # Timer I
                self._arm()
            return True
        if self.state == "confirmed":
            self.layer.stats.absorbed += 1
            return True
        return False  # accepted (ACK for 2xx reusing the branch) etc.: the TU's

    def _on_retransmit(self, now: float) -> None:
        if self.state != "completed" or self._last_data is None:
            self._next_retx = None
            return
        self.layer.stats.retransmissions += 1
        self._send_data(self._last_data)                           # Timer G
        self._interval = min(2 * self._interval, self.layer.T2)
        self._next_retx = now + self._interval

    def _on_deadline(self) -> None:
        if self.state == "completed" and self.is_invite:           # Timer H
            self.layer.stats.ack_timeouts += 1
            self._terminate()
            if self.on_timeout is not None:
                _safe_call(self.on_timeout)
            return
        if self.state in ("trying", "proceeding"):
            log.warning("%r: the TU never answered; dropped after 64*T1", self)
        self._terminate()                                          # Timer I, J, L

    def _terminate(self) -> None:
        self.state = "terminated"
        self._next_retx = self._deadline = None
        self._disarm()
        servers = self.layer.servers
        if servers.get(self.key) is self:
            del servers[self.key]
        src = self.source
        if src is not None:
            self.source = None
            counts = self.layer._per_source
            left = counts.get(src, 1) - 1
            if left > 0:
                counts[src] = left
            else:
                counts.pop(src, None)


# --- 2xx retransmission (TU helper, §13.3.1.4) -------------------------------


class Retransmission2xx(_Timed):
    """Re-sends a 2xx to INVITE until its ACK arrives (``stop()`` to end it
    early). ``acked`` tells how it ended."""

    def __init__(
        self,
        layer: "TransactionLayer",
        response: Response,
        peer: Peer,
        key: Hashable,
        on_ack_timeout: Callable[[], None] | None,
    ) -> None:
        self.layer = layer
        self.response = response
        self.peer = peer
        self.key = key
        self.on_ack_timeout = on_ack_timeout
        self.acked = False
        self.active = True
        self._data = response.serialize()
        self._call = None
        now = layer._now()
        self._interval = layer.T1
        self._next_retx = now + layer.T1
        self._deadline = now + 64 * layer.T1
        self._arm()

    def _on_retransmit(self, now: float) -> None:
        layer = self.layer
        dest = layer.transport.response_peer(self.response, self.peer)
        if dest is not None:
            layer.stats.retransmissions += 1
            layer.transport.send_raw(self._data, dest)
        self._interval = min(2 * self._interval, layer.T2)
        self._next_retx = now + self._interval

    def _on_deadline(self) -> None:
        callback = self.on_ack_timeout
        self.stop()
        self.layer.stats.ack_timeouts += 1
        if callback is not None:
            _safe_call(callback)

    def _acked(self) -> None:
        self.acked = True
        self.stop()

    def stop(self) -> None:
        self.active = False
        self.on_ack_timeout = None  # drop the TU's closure: the transaction may linger (Timer L) after the call
        self._next_retx = self._deadline = None
        self._disarm()
        table = self.layer.pending_acks
        if table.get(self.key) is self:
            del table[self.key]


def _ack_key(call_id: str | None, seq: int, from_tag: str | None, to_tag: str | None) -> tuple:
    return (call_id, seq, from_tag, to_tag)


# --- the layer ---------------------------------------------------------------


class TransactionLayer:
    """Client and server transactions over one SipTransport (module doc)."""

    def __init__(
        self,
        transport: SipTransport,
        reactor: Any = None,
        T1: float = 0.5,
        T2: float = 4.0,
        T4: float = 5.0,
        timer_d: float | None = None,
        max_per_source: int = MAX_SERVER_TRANSACTIONS_PER_SOURCE,
        exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128"),
    ) -> None:
        if reactor is None:
            reactor = transport.reactor
        self.transport = transport
        self.reactor = reactor
        self.T1 = T1
        self.T2 = T2
        self.T4 = T4
        self.timer_d = 64 * T1 if timer_d is None else timer_d
        self.clients: dict[tuple[str, str], ClientTransaction] = {}
        self.servers: dict[Hashable, ServerTransaction] = {}
        self.pending_acks: dict[Hashable, Retransmission2xx] = {}
        self.stats = LayerStats()
        # server transactions open per source (IPv4 address or IPv6 /64): a UDP non-INVITE lives
        # 64*T1 after its answer, so one address sending OPTIONS or REGISTER as fast as it can
        # would otherwise hold an unbounded number (memory); loopback (a local proxy, the tests'
        # load generators) is exempt
        self.max_per_source = max_per_source
        self._exempt = [ipaddress.ip_network(n) for n in exempt]
        self._per_source: dict[str, int] = {}
        self._overload_log = RepeatedLog(log, every=1000)
        self.on_request: Callable[[Request, ServerTransaction | None, Peer], None] = self._no_tu
        self.on_stray_2xx: Callable[[Response], None] | None = None
        transport.on_request = self._on_request
        transport.on_response = self._on_response

    def _now(self) -> float:
        return self.reactor.seconds()

    # -- client side --
    def client(
        self,
        request: Request,
        peer: Peer,
        on_response: Callable[[Response | None, ClientTransaction], None],
    ) -> ClientTransaction:
        """Start a client transaction for ``request`` to ``peer`` (module doc).

        A request without Via gets ``Via: SIP/2.0/<transport> <local>:<port>
        ;branch=z9hG4bK...;rport``; a top Via without branch gets one. Max-
        Forwards: 70 is added when absent. Raises ValueError for ACK (send
        it with ``transport.send``) or a branch already in use.
        """
        if request.method == "ACK":
            raise ValueError("ACK is not sent in a client transaction: use transport.send()")
        headers = request.headers
        top = headers.get("Via")
        if top is None:
            branch = new_branch()
            host = self.transport.local_host_for(peer.host)
            via = Via(peer.transport, host, _port_for(self.transport, peer.transport), {"branch": branch, "rport": None})
            headers.add("Via", str(via), first=True)
        else:
            via = Via.parse(top)
            branch = via.branch or ""
            if not branch:
                branch = new_branch()
                via.params["branch"] = branch
                headers.remove_first("Via")
                headers.add("Via", str(via), first=True)
        if "Max-Forwards" not in headers:
            headers.add("Max-Forwards", "70")
        key = (branch, request.method)
        if key in self.clients:
            raise ValueError(f"branch {branch} is already used by a {request.method} transaction")
        tx = ClientTransaction(self, request, peer, branch, on_response)
        self.clients[key] = tx
        self.stats.client_transactions += 1
        tx._start()
        return tx

    def cancel(
        self,
        invite_tx: ClientTransaction,
        on_response: Callable[[Response | None, ClientTransaction], None] | None = None,
    ) -> ClientTransaction | None:
        """§9.1: CANCEL ``invite_tx``. Sent at once if a provisional response
        has been received, else as soon as one arrives (returns None then).
        Does nothing once a final response has arrived. Once the CANCEL is
        sent, the INVITE transaction ends with ``failure=408`` if no final
        response arrives within 64*T1."""
        if not invite_tx.is_invite:
            raise ValueError("only an INVITE can be cancelled")
        if invite_tx.cancel_requested or invite_tx.state not in ("calling", "proceeding"):
            return None
        invite_tx.cancel_requested = True
        invite_tx._cancel_cb = on_response
        if invite_tx.state == "proceeding":
            return self._send_cancel(invite_tx)
        return None

    def _send_cancel(self, invite_tx: ClientTransaction) -> ClientTransaction:
        req = invite_tx.request
        h = Headers()
        h.add("Via", req.headers.get("Via") or "")
        for v in req.headers.get_lines("Route"):
            h.add("Route", v)
        h.add("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            lines = req.headers.get_lines(name)
            if lines:
                h.add(name, lines[0])
        cseq = req.cseq
        h.add("CSeq", str(CSeq(cseq.seq if cseq else 1, "CANCEL")))
        cancel = Request("CANCEL", req.uri, h)
        invite_tx.cancel_sent = True
        invite_tx._deadline = self._now() + 64 * self.T1
        invite_tx._arm()
        cb = invite_tx._cancel_cb or (lambda r, t: None)
        return self.client(cancel, invite_tx.peer, cb)

    def _on_response(self, response: Response, peer: Peer) -> None:
        try:
            via = response.top_via
            cseq = response.cseq
        except SipParseError:
            self.stats.stray_responses += 1
            return
        if via is None or cseq is None:
            self.stats.stray_responses += 1
            return
        tx = self.clients.get((via.branch or "", cseq.method))
        if tx is not None:
            tx._receive(response)
            return
        if 200 <= response.status < 300 and cseq.method == "INVITE" and self.on_stray_2xx is not None:
            self.stats.stray_2xx += 1
            _safe_call(self.on_stray_2xx, response)
            return
        self.stats.stray_responses += 1

    # -- server side --
    @staticmethod
    def _server_key(request: Request, via: Via, cseq: CSeq, method: str) -> Hashable:
        if via.is_rfc3261_branch:
            return (via.branch, via.sent_by, method)
        frm = request.from_
        return (
            "2543", str(request.uri), frm.tag if frm else None, request.call_id,
            cseq.seq, method, via.sent_by, via.branch,
        )

    def _on_request(self, request: Request, peer: Peer) -> None:
        try:
            via = request.top_via
            cseq = request.cseq
        except SipParseError:
            return  # the parser has vetted these; nothing sane to do
        if via is None or cseq is None:
            return
        method = request.method
        if method == "ACK":
            self._on_ack(request, via, cseq, peer)
            return
        key = self._server_key(request, via, cseq, method)
        tx = self.servers.get(key)
        if tx is not None:
            tx._retransmitted()
            return
        tx = ServerTransaction(self, request, peer, key)
        src = self._source(peer.host)
        if src is not None:
            n = self._per_source.get(src, 0)
            if n >= self.max_per_source:
                # answered once and forgotten, as a stateless server would: no state, no timers
                self.stats.overload_503 += 1
                self._overload_log(("overload", src), logging.WARNING,
                                   "SIP: %s has %d transactions open; answering its requests 503", src, n)
                busy = tx.make_response(503, "Too many requests from your address")
                busy.headers.add("Retry-After", "10")
                tx._send(busy)
                return
            self._per_source[src] = n + 1
            tx.source = src
        self.servers[key] = tx
        self.stats.server_transactions += 1
        if method == "CANCEL":
            self._on_cancel(tx, via, cseq)
            return
        _safe_call(self.on_request, request, tx, peer)
        if tx.is_invite and tx.state == "proceeding" and tx.last_response is None:
            tx.respond(tx.make_response(100))                 # §17.2.1

    def _source(self, host: str) -> str | None:
        """The counted source of a request from ``host``; None when exempt (loopback)."""
        try:
            ip = ipaddress.ip_address(host.strip("[]").split("%")[0])
        except ValueError:
            return host[:64]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped                # a dual-stack socket's ::ffff:127.0.0.1 is loopback too
        if any(ip in n for n in self._exempt):
            return None
        return source_key(host)

    def open_from(self, host: str) -> int:
        """Server transactions open from the source of ``host``."""
        src = self._source(host)
        return self._per_source.get(src, 0) if src is not None else 0

    def _on_ack(self, ack: Request, via: Via, cseq: CSeq, peer: Peer) -> None:
        key = self._server_key(ack, via, cseq, "INVITE")
        tx = self.servers.get(key)
        if tx is not None and tx._ack(ack):
            return
        if tx is not None and tx.state != "accepted":
            self.stats.absorbed += 1                          # stray ACK in proceeding
            return
        try:
            frm, to = ack.from_, ack.to
        except SipParseError:
            frm = to = None
        akey = _ack_key(ack.call_id, cseq.seq, frm.tag if frm else None, to.tag if to else None)
        retx = self.pending_acks.get(akey)
        if retx is not None:
            retx._acked()
        _safe_call(self.on_request, ack, None, peer)

    def _on_cancel(self, cancel_tx: ServerTransaction, via: Via, cseq: CSeq) -> None:
        cancel = cancel_tx.request
        inv = self.servers.get(self._server_key(cancel, via, cseq, "INVITE"))
        if inv is None or not inv.is_invite:
            self.stats.cancel_481 += 1
            cancel_tx.respond(cancel_tx.make_response(481))
            return
        if inv.local_tag is None:
            inv.local_tag = new_tag()
        cancel_tx.respond(cancel_tx.make_response(200, to_tag=inv.local_tag))
        if inv.state != "proceeding" or inv.cancelled:
            return                                            # final already sent: no effect
        inv.cancelled = True
        if inv.on_cancel is not None:
            _safe_call(inv.on_cancel, cancel)
        else:
            inv.respond(inv.make_response(487))

    def retransmit_2xx_until_ack(
        self,
        response: Response,
        peer: Peer,
        on_ack_timeout: Callable[[], None] | None = None,
    ) -> Retransmission2xx:
        """Re-send an already sent 2xx (to the request from ``peer``) until the
        matching ACK (same Call-ID, CSeq number, From and To tags) arrives, or
        64*T1 pass (then ``on_ack_timeout()``). Does not send the first copy."""
        try:
            frm, to, cseq = response.from_, response.to, response.cseq
        except SipParseError as e:
            raise ValueError(f"cannot match an ACK to this response: {e.reason}") from None
        key = _ack_key(response.call_id, cseq.seq if cseq else 0,
                       frm.tag if frm else None, to.tag if to else None)
        old = self.pending_acks.get(key)
        if old is not None:
            old.stop()
        handle = Retransmission2xx(self, response, peer, key, on_ack_timeout)
        self.pending_acks[key] = handle
        return handle

    # -- misc --
    def close(self) -> None:
        """Cancel every timer and forget every transaction (shutdown)."""
        for tx in list(self.clients.values()):
            tx._terminate()
        for stx in list(self.servers.values()):
            stx._terminate()
        for r in list(self.pending_acks.values()):
            r.stop()

    def _no_tu(self, request: Request, tx: ServerTransaction | None, peer: Peer) -> None:
        if tx is not None:
            tx.respond(tx.make_response(500, "No transaction user"))


def _port_for(transport: Any, name: str) -> int:
    """Our port for the transport ``name`` (TLS has its own)."""
    port_for = getattr(transport, "port_for", None)
    return port_for(name) if port_for is not None else transport.port
