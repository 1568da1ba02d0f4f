"""Endpoint mode: Cầu registers itself with an external gatekeeper (e.g. the national one).

The client runs the endpoint side of H.225.0 RAS (§7 of H.225.0, H.323 §7.2):

* optional discovery (GRQ → GCF: the gatekeeper's identifier and RAS address),
* full registration (RRQ → RCF) as a **gateway** whose ``supportedPrefixes``
  (in ``terminalType.gateway.protocol``, for both the ``h323`` and ``voice``
  protocols, as gatekeepers such as GnuGk read them) are Cầu's room prefixes,
* keep-alive: a lightweight RRQ (keepAlive, endpointIdentifier) at
  ``timeToLive × keepalive_fraction``, or an unsolicited IRR when asked;
  RRJ (e.g. ``fullRegistrationRequired``) or no answer → full registration again,
* ARQ / DRQ around calls that go out through that gatekeeper,
* URQ on :meth:`GatekeeperClient.stop`,
* requests from the gatekeeper: URQ → UCF and a fresh full registration,
  IRQ → IRR, DRQ → DCF (``on_disengage`` is told), BRQ → BCF.

Every request is a transaction: sent again with the **same** requestSeqNum
every ``ras_timeout`` seconds, ``ras_tries`` times in all (H.225.0 recommends
3–5 s and 2–3 attempts; default 5 s × 3); a RIP (requestInProgress) extends
the wait by its delay.  When registration fails (reject or no answer) the
state says so (``"rejected"`` / ``"unreachable"``, ``last_error`` tells why)
and the client tries again after ``retry_interval`` seconds, doubling up to
``max_retry_interval``.
"""
from __future__ import annotations

import itertools
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol

from . import asn1, h235, ras
from .ras import RasError, RasMessage

__all__ = ["AdmissionResult", "GatekeeperClient", "RasTimeout", "RegistrationFailed"]

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))

Address = tuple[str, int]
Alias = tuple[str, str]

_CONFIRMS = {
    "gatekeeperRequest": ("gatekeeperConfirm", "gatekeeperReject"),
    "registrationRequest": ("registrationConfirm", "registrationReject"),
    "unregistrationRequest": ("unregistrationConfirm", "unregistrationReject"),
    "admissionRequest": ("admissionConfirm", "admissionReject"),
    "disengageRequest": ("disengageConfirm", "disengageReject"),
    "bandwidthRequest": ("bandwidthConfirm", "bandwidthReject"),
    "infoRequestResponse": ("infoRequestAck", "infoRequestNak"),
}


class RasTimeout(Exception):
    """The gatekeeper did not answer a RAS request after every retransmission."""


class ClientStopped(Exception):
    """The client was stopped while a request was outstanding."""


class RegistrationFailed(Exception):
    """Registration was rejected or got no answer; ``str()`` says which."""


@dataclass
class AdmissionResult:
    """What the gatekeeper said to an ARQ."""

    ok: bool
    dest_call_signal_address: Address | None = None
    reason: str | None = None                  # ARJ rejectReason, "timeout", "not registered", ...
    bandwidth: int = 0                         # granted, units of 100 bit/s
    call_model: str | None = None              # "direct" | "gatekeeperRouted"
    destination_aliases: list[Alias] = field(default_factory=list)


@dataclass
class _Transaction:
    seq: int
    kind: str
    data: bytes
    dest: Address
    tries_left: int
    deferred: defer.Deferred
    timeout: float
    tries: int
    timer: Any = None


def _dest_aliases(destination: Sequence[Alias] | str) -> list[Alias]:
    if isinstance(destination, str):
        text = destination.strip()
        if text and set(text) <= set("0123456789#*,"):
            return [("dialledDigits", text)]
        return [("h323-ID", text)]
    return list(destination)


class GatekeeperClient(DatagramProtocol):
    """Registers Cầu (as a gateway with its room prefixes) with an external gatekeeper."""

    def __init__(self, gatekeeper: Address, aliases: Sequence[Alias], call_signal_address: Address,
                 gatekeeper_id: str | None = None, time_to_live: int = 300, discover: bool = False,
                 reactor: Any = None, *, clock: Any = None, prefixes: Sequence[str] = (),
                 endpoint_kind: str = "gateway", ras_address: Address | None = None, ras_timeout: float = 5.0,
                 ras_tries: int = 3, keepalive_fraction: float = 0.8, keepalive_with_irr: bool = False,
                 retry_interval: float = 30.0, max_retry_interval: float = 600.0,
                 password: str | None = None) -> None:
        self.gatekeeper: Address = tuple(gatekeeper)  # type: ignore[assignment]
        #: the gatekeeper password: every RAS message we send then carries an H.235.1 token
        self.password = password
        self._random = itertools.count(1)
        self.aliases: list[Alias] = list(aliases)
        self.call_signal_address = call_signal_address
        self.gatekeeper_id = gatekeeper_id
        self.time_to_live = time_to_live
        self.discover = discover
        self.prefixes = [p for p in prefixes]
        self.endpoint_kind = endpoint_kind
        self._ras_address = ras_address
        self.ras_timeout = ras_timeout
        self.ras_tries = max(1, ras_tries)
        self.keepalive_fraction = keepalive_fraction
        self.keepalive_with_irr = keepalive_with_irr
        self.retry_interval = retry_interval
        self.max_retry_interval = max_retry_interval
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self.state = "idle"   # idle | discovering | registering | registered | rejected | unreachable
        self.endpoint_id: str | None = None
        self.granted_ttl: int | None = None
        self.last_error: str | None = None
        self.stats: Counter[str] = Counter()
        self.calls: dict[bytes, tuple[bytes, int, bool]] = {}   # call id -> (conference id, call ref, answered)
        self.on_state_change: Callable[[str], None] | None = None
        self.on_disengage: Callable[[bytes], None] | None = None
        self._pending: dict[int, _Transaction] = {}
        self._seq = itertools.count(int.from_bytes(os.urandom(2), "big") % 60000 + 1)
        self._call_refs = itertools.count(1)
        self._port: Any = None
        self._started: defer.Deferred | None = None
        self._keepalive_timer: Any = None
        self._retry_timer: Any = None
        self._failures = 0
        self._stopping = False
        self._discovered = False

    # ------------------------------------------------------------------ lifecycle
    def start(self, bind: str = "0.0.0.0", port: int = 0) -> defer.Deferred:
        """Listen on ``bind:port`` and register.  The Deferred fires with ``self`` once registered,
        or fails with :class:`RegistrationFailed` after the first failed attempt (the client keeps
        trying in the background)."""
        self._port = self._reactor.listenUDP(port, self, interface=bind)
        self._started = defer.Deferred()
        self._stopping = False
        self._register()
        return self._started

    @property
    def port(self) -> int:
        return self._port.getHost().port if self._port is not None else 0

    @property
    def ras_address(self) -> Address:
        if self._ras_address is not None:
            return self._ras_address
        host = self._port.getHost() if self._port is not None else None
        ip = host.host if host is not None and host.host not in ("0.0.0.0", "", "::") \
            else self.call_signal_address[0]
        return (ip, host.port if host is not None else 0)

    def stop(self, timeout: float = 2.0) -> defer.Deferred:
        """Unregister (URQ, one try, up to ``timeout`` s) and stop listening; fires with True
        when the gatekeeper confirmed the URQ."""
        self._stopping = True
        self._cancel_timers()
        for t in list(self._pending.values()):
            self._finish(t, failure=ClientStopped("stopped"))
        d: defer.Deferred
        if self.state == "registered" and self.endpoint_id:
            urq = ras.build_urq(self._next_seq(), [self.call_signal_address], endpoint_identifier=self.endpoint_id,
                                aliases=self.aliases, gatekeeper_identifier=self.gatekeeper_id)
            d = self._request(urq, "unregistrationRequest", tries=1, timeout=timeout)
            d.addCallbacks(lambda m: m.kind == "unregistrationConfirm", lambda f: False)
        else:
            d = defer.succeed(False)

        def close(confirmed: bool) -> bool:
            self.endpoint_id = None
            self._set_state("idle")
            port, self._port = self._port, None
            if port is not None:
                port.stopListening()
            if self._started is not None and not self._started.called:
                self._started.errback(RegistrationFailed("stopped before registration"))
                self._started.addErrback(lambda f: None)
            return confirmed

        return d.addCallback(close)

    def _cancel_timers(self) -> None:
        for name in ("_keepalive_timer", "_retry_timer"):
            t = getattr(self, name)
            if t is not None and t.active():
                t.cancel()
            setattr(self, name, None)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            log.info("gatekeeper client %s:%d: %s -> %s", *self.gatekeeper, self.state, state)
            self.state = state
            if self.on_state_change is not None:
                try:
                    self.on_state_change(state)
                except Exception:
                    log.exception("on_state_change failed")

    # ------------------------------------------------------------------ transactions
    def _next_seq(self) -> int:
        return (next(self._seq) - 1) % 65535 + 1

    def _secured(self, data: bytes) -> bytes:
        """``data`` with an H.235.1 token (gateway.h323.h235) when a password is set."""
        if self.password is None:
            return data
        # sendersID: our alias until the RCF gives us an endpointIdentifier (as H323Plus does)
        alias = next((t for k, t in self.aliases if k == "h323-ID"), None)
        return h235.sign(data, self.password, general_id=self.gatekeeper_id, senders_id=self.endpoint_id or alias,
                         random=next(self._random))

    def _request(self, data: bytes, kind: str, *, tries: int | None = None, timeout: float | None = None,
                 dest: Address | None = None) -> defer.Deferred:
        data = self._secured(data)
        seq = ras.parse_ras(data).seq
        n = tries or self.ras_tries
        t = _Transaction(seq=seq, kind=kind, data=data, dest=dest or self.gatekeeper, tries_left=n,
                         deferred=defer.Deferred(), timeout=timeout if timeout is not None else self.ras_timeout,
                         tries=n)
        self._pending[seq] = t
        self._transmit(t)
        return t.deferred

    def _transmit(self, t: _Transaction) -> None:
        t.tries_left -= 1
        self.stats[f"sent {ras.ABBREVIATIONS.get(t.kind, t.kind)}"] += 1
        self._write(t.data, t.dest)
        t.timer = self._clock.callLater(t.timeout, self._on_timeout, t)

    def _on_timeout(self, t: _Transaction) -> None:
        if self._pending.get(t.seq) is not t:
            return
        if t.tries_left > 0:
            self.stats["retransmissions"] += 1
            self._transmit(t)
            return
        self._finish(t, failure=RasTimeout(f"no answer from gatekeeper {t.dest[0]}:{t.dest[1]} to "
                                           f"{ras.ABBREVIATIONS.get(t.kind, t.kind)} after "
                                           f"{t.tries} tries"))

    def _finish(self, t: _Transaction, result: RasMessage | None = None, failure: Exception | None = None) -> None:
        self._pending.pop(t.seq, None)
        if t.timer is not None and t.timer.active():
            t.timer.cancel()
        if failure is not None:
            t.deferred.errback(failure)
        else:
            t.deferred.callback(result)

    def _write(self, data: bytes, dest: Address) -> None:
        if self._port is None:
            return
        try:
            self._port.write(data, dest)
        except OSError as exc:
            log.warning("gatekeeper client: cannot send to %s:%d: %s", dest[0], dest[1], exc)

    # ------------------------------------------------------------------ registration
    def _register(self) -> None:
        if self._stopping:
            return
        if self.discover and not self._discovered:
            self._set_state("discovering")
            grq = ras.build_grq(self._next_seq(), self.ras_address, endpoint_kind=self.endpoint_kind,
                                aliases=self.aliases, gatekeeper_identifier=self.gatekeeper_id)
            if self.password is not None:       # offer H.235.1
                _, body = asn1.decode_ras(grq)
                body["authenticationCapability"] = [("pwdHash", 0)]
                body["algorithmOIDs"] = [h235.OID_U]
                grq = asn1.encode_ras(("gatekeeperRequest", body))
            self._request(grq, "gatekeeperRequest").addCallbacks(self._on_grq_answer, self._on_failure) \
                .addErrback(self._internal_error)
        else:
            self._full_rrq()

    def _on_grq_answer(self, m: RasMessage) -> None:
        if m.kind == "gatekeeperReject":
            self._registration_failed("rejected", f"GRJ {m.reject_reason}")
            return
        if m.ras_addresses:
            self.gatekeeper = m.ras_addresses[0]
        if m.gatekeeper_identifier:
            self.gatekeeper_id = m.gatekeeper_identifier
        self._discovered = True
        self._full_rrq()

    def _build_rrq(self) -> bytes:
        data = ras.build_rrq(self._next_seq(), [self.call_signal_address], [self.ras_address],
                             aliases=self.aliases, endpoint_kind=self.endpoint_kind, time_to_live=self.time_to_live,
                             discovery_complete=self._discovered, gatekeeper_identifier=self.gatekeeper_id)
        if not self.prefixes or self.endpoint_kind not in ("gateway", "mcu"):
            return data
        # terminalType.<gateway|mcu>.protocol: h323 and voice, each with the supportedPrefixes
        kind, value = asn1.decode_ras(data)
        supported = [{"prefix": asn1.alias_address(("dialledDigits", p))} for p in self.prefixes]
        value["terminalType"][self.endpoint_kind] = {
            "protocol": [("h323", {"supportedPrefixes": supported}), ("voice", {"supportedPrefixes": supported})]}
        try:
            return asn1.encode_ras((kind, value))
        except asn1.Asn1Error as exc:
            raise RasError("encode", exc.reason) from None

    def _full_rrq(self) -> None:
        if self._stopping:
            return
        self._set_state("registering")
        self.endpoint_id = None
        try:
            rrq = self._build_rrq()
        except RasError as exc:           # e.g. an alias RAS cannot carry: a configuration error
            self._registration_failed("rejected", f"cannot build the RRQ: {exc.reason}")
            return
        self._request(rrq, "registrationRequest").addCallbacks(self._on_rrq_answer, self._on_failure) \
            .addErrback(self._internal_error)

    def _on_rrq_answer(self, m: RasMessage) -> None:
        if m.kind == "registrationReject":
            if m.reject_reason == "discoveryRequired" and not self._discovered:
                self.discover = True
                self._register()
                return
            self._registration_failed("rejected", f"RRJ {m.reject_reason}")
            return
        self.endpoint_id = m.endpoint_identifier
        if m.gatekeeper_identifier:
            self.gatekeeper_id = m.gatekeeper_identifier
        self.granted_ttl = m.time_to_live
        self.last_error = None
        self._failures = 0
        self.stats["registrations"] += 1
        self._set_state("registered")
        self._schedule_keepalive()
        if self._started is not None and not self._started.called:
            self._started.callback(self)

    def _on_failure(self, failure: Any) -> None:
        if failure.check(ClientStopped):
            return
        if failure.check(RasTimeout):
            self._registration_failed("unreachable", str(failure.value))
            return
        log.error("gatekeeper client: %s", failure.getErrorMessage())
        self._registration_failed("unreachable", failure.getErrorMessage())

    def _internal_error(self, failure: Any) -> None:
        log.error("gatekeeper client: internal error: %s", failure.getTraceback())

    def _registration_failed(self, state: str, error: str) -> None:
        self.last_error = error
        self.endpoint_id = None
        self._set_state(state)
        log.warning("gatekeeper client %s:%d: registration failed: %s", *self.gatekeeper, error)
        if self._started is not None and not self._started.called:
            self._started.errback(RegistrationFailed(error))
        if self._stopping:
            return
        delay = min(self.retry_interval * (2 ** self._failures), self.max_retry_interval)
        self._failures += 1
        if self.discover:
            self._discovered = False
        self._retry_timer = self._clock.callLater(delay, self._register)

    # ------------------------------------------------------------------ keep-alive
    def _schedule_keepalive(self) -> None:
        if self._keepalive_timer is not None and self._keepalive_timer.active():
            self._keepalive_timer.cancel()
        self._keepalive_timer = None
        if self.granted_ttl:
            self._keepalive_timer = self._clock.callLater(max(0.05, self.granted_ttl * self.keepalive_fraction),
                                                          self._keepalive)

    def _keepalive(self) -> None:
        self._keepalive_timer = None
        if self.state != "registered" or not self.endpoint_id or self._stopping:
            return
        self.stats["keepalives"] += 1
        if self.keepalive_with_irr:
            irr = ras.build_irr(self._next_seq(), self.endpoint_id, self.ras_address, [self.call_signal_address],
                                endpoint_kind=self.endpoint_kind, aliases=self.aliases, need_response=True,
                                unsolicited=True)
            d = self._request(irr, "infoRequestResponse")
        else:
            rrq = ras.build_keepalive_rrq(self._next_seq(), [self.call_signal_address], [self.ras_address],
                                          self.endpoint_id, self.gatekeeper_id, self.time_to_live,
                                          endpoint_kind=self.endpoint_kind)
            d = self._request(rrq, "registrationRequest")
        d.addCallbacks(self._on_keepalive_answer, self._on_keepalive_failure).addErrback(self._internal_error)

    def _on_keepalive_answer(self, m: RasMessage) -> None:
        if m.kind in ("registrationConfirm", "infoRequestAck"):
            if m.time_to_live:
                self.granted_ttl = m.time_to_live
            self._schedule_keepalive()
            return
        reason = m.reject_reason or m.value.get("nakReason", ("?",))[0]
        log.info("gatekeeper client: keep-alive refused (%s): registering again", reason)
        self.stats["reregistrations"] += 1
        self._full_rrq()

    def _on_keepalive_failure(self, failure: Any) -> None:
        if failure.check(ClientStopped) or self._stopping:
            return
        log.warning("gatekeeper client: keep-alive unanswered (%s): registering again", failure.getErrorMessage())
        self.stats["reregistrations"] += 1
        self._register()

    # ------------------------------------------------------------------ calls
    def admission(self, destination: Sequence[Alias] | str, call_id: bytes, conference_id: bytes, bandwidth: int,
                  answer_call: bool = False, *, call_ref: int | None = None,
                  dest_call_signal_address: Address | None = None) -> defer.Deferred:
        """ARQ for a call (``bandwidth`` in units of 100 bit/s); fires with an :class:`AdmissionResult`
        (never fails)."""
        if self.state != "registered" or not self.endpoint_id:
            return defer.succeed(AdmissionResult(False, reason="not registered with the gatekeeper"))
        ref = call_ref if call_ref is not None else next(self._call_refs) % 65536
        try:
            arq = ras.build_arq(self._next_seq(), self.endpoint_id, self.aliases, bandwidth, ref, conference_id,
                                call_id, answer_call=answer_call, destination_aliases=_dest_aliases(destination),
                                dest_call_signal_address=dest_call_signal_address,
                                src_call_signal_address=self.call_signal_address,
                                gatekeeper_identifier=self.gatekeeper_id)
        except RasError as exc:
            return defer.succeed(AdmissionResult(False, reason=f"cannot build the ARQ: {exc.reason}"))

        def answer(m: RasMessage) -> AdmissionResult:
            if m.kind == "admissionConfirm":
                self.calls[call_id] = (conference_id, ref, answer_call)
                return AdmissionResult(True, m.dest_call_signal_address, None, m.bandwidth or 0, m.call_model,
                                       m.destination_info)
            if m.reject_reason == "callerNotRegistered" and self.state == "registered":
                self.stats["reregistrations"] += 1
                self._full_rrq()
            return AdmissionResult(False, reason=m.reject_reason)

        def failed(failure: Any) -> AdmissionResult:
            return AdmissionResult(False, reason="timeout" if failure.check(RasTimeout) else
                                   failure.getErrorMessage() or "stopped")

        return self._request(arq, "admissionRequest").addCallbacks(answer, failed)

    def disengage(self, call_id: bytes, conference_id: bytes, reason: str = "normalDrop") -> defer.Deferred:
        """DRQ for an admitted call; fires with True on DCF, False on DRJ / no answer / not registered."""
        conf, ref, answered = self.calls.pop(call_id, (conference_id, 0, False))
        if self.state != "registered" or not self.endpoint_id:
            return defer.succeed(False)
        drq = ras.build_drq(self._next_seq(), self.endpoint_id, conference_id or conf, ref, call_id, reason=reason,
                            answered_call=answered, gatekeeper_identifier=self.gatekeeper_id)
        return self._request(drq, "disengageRequest").addCallbacks(
            lambda m: m.kind == "disengageConfirm", lambda f: False)

    # ------------------------------------------------------------------ datagrams
    def datagramReceived(self, data: bytes, addr: Address) -> None:  # noqa: N802 (Twisted's name)
        try:
            m = ras.parse_ras(data)
        except RasError as exc:
            self.stats["malformed"] += 1
            log.warning("gatekeeper client: dropped a malformed RAS datagram from %s:%d: %s", *addr, exc.reason)
            return
        self.stats[f"received {m.abbreviation}"] += 1
        if addr[0] != self.gatekeeper[0]:
            log.warning("gatekeeper client: ignored %s from %s:%d (not our gatekeeper)", m.abbreviation, *addr)
            return
        try:
            self._handle(m, addr)
        except Exception:
            log.exception("gatekeeper client: error handling %s from %s:%d", m.abbreviation, *addr)

    def _handle(self, m: RasMessage, addr: Address) -> None:
        t = self._pending.get(m.seq)
        if t is not None and m.kind in _CONFIRMS.get(t.kind, ()):
            self._finish(t, m)
            return
        if m.kind == "requestInProgress" and t is not None:
            delay = int(m.value.get("delay", 0)) / 1000.0
            if t.timer is not None and t.timer.active():
                t.timer.delay(delay)
            return
        if m.kind == "unregistrationRequest":
            self._write(self._secured(ras.build_ucf(m.seq)), addr)
            if self.state == "registered" and not self._stopping:
                log.info("gatekeeper client: the gatekeeper unregistered us (%s): registering again",
                         m.unregistration_reason)
                self.stats["reregistrations"] += 1
                self._register()
        elif m.kind == "infoRequest":
            if self.endpoint_id:
                self._write(self._secured(ras.build_irr(m.seq, self.endpoint_id, self.ras_address,
                                                        [self.call_signal_address], endpoint_kind=self.endpoint_kind,
                                                        aliases=self.aliases)),
                            m.reply_address or addr)
        elif m.kind == "disengageRequest":
            self._write(self._secured(ras.build_dcf(m.seq)), addr)
            if m.call_identifier is not None:
                self.calls.pop(m.call_identifier, None)
                if self.on_disengage is not None:
                    self.on_disengage(m.call_identifier)
        elif m.kind == "bandwidthRequest":
            self._write(self._secured(ras.build_bcf(m.seq, m.bandwidth or 0)), addr)
        elif m.seq and not m.kind.endswith(("Confirm", "Reject", "Response", "Ack", "Nak", "InProgress")):
            self._write(asn1.encode_ras(("unknownMessageResponse",
                                         {"requestSeqNum": m.seq, "messageNotUnderstood": b""})), addr)
