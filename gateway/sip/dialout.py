"""The gateway calls out (RFC 3261 UAC): "invite this site" and cascading a room into another MCU.

:func:`dial` sends an INVITE with our SDP offer (the room's codec policy) to a
``sip:`` URI, follows the call through its provisional and final responses and
turns an answered call into a :class:`~gateway.conference.Leg` joined into the
room; the returned Deferred fires with that Leg, or fails with
:class:`DialFailed` (status and a reason a person can act on).

* 2xx: the dialog is made from it (§12.1.2), ACKed by us (§13.2.2.4: the ACK of
  a 2xx is the TU's, with the INVITE's credentials), its SDP answer checked
  (:meth:`OfferAnswer.process_answer`) and applied. A retransmitted 2xx gets the
  same ACK again (``tx.duplicate``; after the transaction ended, through the
  transaction layer's ``on_stray_2xx``); a 2xx from a second fork is ACKed and
  hung up at once. An unusable answer is ACKed, then BYE'd: DialFailed(488).
* non-2xx: DialFailed(status, reason phrase + the Warning text if any).
  401/407: one retry with digest credentials (new CSeq, same Call-ID and From
  tag) when ``credentials`` were given.
* no answer within ``timeout``: CANCEL (sent when a provisional arrived; §9.1
  forbids it before), DialFailed(408). A 2xx racing the CANCEL is ACKed and BYE'd.
* afterwards the call is an ordinary :class:`SipCall` for the UA core (it is in
  ``ua.calls``): BYE, re-INVITE, UPDATE, INFO, OPTIONS from the far end work as
  for calls in; a leg hung up on our side (room closed, RTP timeout) sends BYE.

Targets: ``sip:user@IP[:port][;transport=tcp|udp]``. Host names are refused
(no DNS yet), so is ``sips:`` (the SIP transport has no TLS yet).

:func:`enable_cascade` makes a room whose dial plan spec has ``cascade`` dial
that number (routed through the plan) when it opens; failures are logged and
retried while the room is open.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from twisted.internet.defer import Deferred

from gateway.conference import JoinRefused, Leg, RoomRegistry
from gateway.dialplan.model import combined_encryption
from gateway.media.ports import PortsExhausted
from gateway.sip.dialog import USER_AGENT, Dialog, new_call_id, new_tag
from gateway.sip.digest import authorization, best_challenge
from gateway.sip.headers import Headers
from gateway.sip.message import Address, CSeq, Request, Response, SipParseError, Via
from gateway.sip.offer_answer import OfferAnswer
from gateway.sip.sdp import SdpError, SessionDescription
from gateway.sip.transaction import ClientTransaction, new_branch
from gateway.sip.transport import Peer
from gateway.sip.ua import ALLOW, SipCall, SipUserAgent, _quote
from gateway.sip.uri import SipUri, parse_uri

__all__ = ["DialFailed", "OutgoingCall", "dial", "parse_target", "enable_cascade", "Cascade"]

log = logging.getLogger("cau.sip.dialout")


class DialFailed(Exception):
    """A dial-out did not become a call. ``status`` is the far end's final status, or for
    failures on our side: 408 (no answer / no response), 503 (transport error, no media
    ports, DNS not supported), 416 (not a sip: URI), 484 (unreadable target), 488 (unusable
    SDP answer), 480/486 (the room refused the leg), 487 (cancelled by us)."""

    def __init__(self, status: int, reason: str, target: str = ""):
        super().__init__(f"dial {target or '?'}: {status} {reason}")
        self.status = status
        self.reason = reason
        self.target = target


def parse_target(text: str) -> tuple[SipUri, Peer]:
    """``sip:user@host[:port][;transport=tcp]`` → (Request-URI, where to send when host is an IP
    address; for a name, :func:`dial` asks DNS, RFC 3263). DialFailed otherwise."""
    try:
        uri = parse_uri(text.strip())
    except SipParseError as exc:
        raise DialFailed(484, f"cannot read the target URI: {exc.reason}", text) from None
    if not isinstance(uri, SipUri):
        raise DialFailed(416, f"only sip: targets can be dialed by the SIP adapter, not {uri.scheme}:", text)
    transport = (uri.params.get("transport") or ("tls" if uri.scheme == "sips" else "udp")).upper()
    if transport not in ("UDP", "TCP", "TLS"):
        raise DialFailed(503, f"transport={transport.lower()} is not supported (udp, tcp or tls)", text)
    if uri.scheme == "sips" and transport != "TLS":
        raise DialFailed(484, "a sips: target goes over TLS only (RFC 3261 §26.2)", text)
    port = uri.port or (5061 if transport == "TLS" else 5060)
    # over TLS the far certificate must name the host dialled (RFC 5922 §4), checked when tls_ca is set
    return uri, Peer(transport, uri.host, port, name=uri.host if transport == "TLS" else None)  # type: ignore[arg-type]


class OutgoingCall(SipCall):
    """One INVITE dialog we started (UAC). Duck-types :class:`SipCall` for the UA core's
    in-dialog handlers (it subclasses it, with its own constructor)."""

    def __init__(self, ua: SipUserAgent, target: str, uri: SipUri, peer: Peer, spec: Any, *,
                 display_name: str = "Cầu", from_user: str = "cau",
                 credentials: tuple[str, str] | None = None, timeout: float = 60.0,
                 video: bool = True, room: Any = None, encryption: str | None = None):
        # deliberately not SipCall.__init__ (that one is the UAS side, built from an INVITE)
        self.ua = ua
        self.target = target
        self.target_uri = uri
        self.peer = peer
        self.spec = spec
        self.want_room = room
        self.our_name = display_name
        self.from_user = from_user
        self.credentials = credentials
        self.timeout = timeout
        self.want_video = video
        self.local_tag = new_tag()
        self.call_id = new_call_id(ua.media_host)
        self.invite: Request | None = None
        self.stx = None
        self.ctx: ClientTransaction | None = None
        self.dialog: Dialog | None = None
        self.leg: Leg | None = None
        self.room = None
        self.oa = OfferAnswer.for_room(ua.catalogue, spec)
        self.oa.encryption = combined_encryption(getattr(spec, "encryption", None), encryption)
        self.oa.secure_signalling = peer.transport == "TLS"
        self.plain_retry = False      # a "preferred" room's SRTP offer was refused: tried once with RTP
        self.answered_at_all = False  # any response came (else DNS's next target may be tried)
        self.media = None
        self.local_sdp: SessionDescription | None = None
        self.offer: SessionDescription | None = None
        self.pending_offer = None
        self.streams = []
        self.fast_update_refused = False
        self.state = "early"  # early (INVITE pending) → confirmed → terminated
        self.ended_by_us = False
        self.session_expires: int | None = None
        self._refresh_timer = None
        self._ack_wait = None
        self._answer_timer = None
        self._no_answer = None
        self.refresher = "uas"
        self.retransmission = None
        self.started = time.time()
        self.auth_tried = False
        self.final_status: int | None = None
        self._ack_data: bytes | None = None
        self._failure: DialFailed | None = None
        self.deferred: Deferred = Deferred(canceller=lambda d: self.cancel("cancelled by the gateway"))

    def __repr__(self) -> str:
        return f"<OutgoingCall {self.target} {self.state}>"

    # -- what the UA core and apply_streams use ----------------------------------------
    def display_name(self) -> str:
        uri = self.target_uri
        return uri.user or uri.host

    def contact(self) -> str:
        return self.ua.contact(self.peer.transport, peer_host=self.peer.host)

    # -- set-up ---------------------------------------------------------------------------
    def start(self) -> Deferred:
        if self.oa.encryption == "required" and not self.oa.secure_signalling:
            self.state = "terminated"
            self.deferred.errback(DialFailed(488, "the room requires encrypted media: SRTP keys travel only over "
                                                  "TLS (dial a sips: or ;transport=tls target)", self.target))
            return self.deferred
        try:
            self.open_media(self.want_video)
        except PortsExhausted as exc:
            self.state = "terminated"
            self.deferred.errback(DialFailed(503, f"no media ports free: {exc}", self.target))
            return self.deferred
        self.offer = self.local_sdp = self.oa.offer(self.local_media(), video=self.has_video)
        self.invite = self._make_invite(1)
        # provisional dialog: the real one is made from the 2xx (§12.1.2); registering now lets
        # close_all() reach a ringing call
        self.dialog = Dialog(self.call_id, self.local_tag, None, _without_tag(self.invite.from_),
                             self.invite.to, self.target_uri, self.peer, 1, None)
        self.ua.calls[self.call_id] = self
        _hook_stray_2xx(self.ua)
        self._no_answer = self.ua.reactor.callLater(self.timeout, self._on_no_answer)
        log.info("dialing %s from room %s (Call-ID %s)", self.target, getattr(self.spec, "id", "?"), self.call_id)
        self.ctx = self.ua.tx.client(self.invite, self.peer, self._on_response)
        return self.deferred

    def _make_invite(self, seq: int, auth: tuple[str, str] | None = None) -> Request:
        ua = self.ua
        host = ua.host_for(self.peer.host)
        host = f"[{host}]" if ":" in host else host
        h = Headers()  # the transaction layer adds the top Via
        h.add("Max-Forwards", "70")
        h.add("From", str(Address(self.our_name or None, SipUri("sip", self.from_user, None, host),
                                  {"tag": self.local_tag})))
        h.add("To", str(Address(None, self.target_uri)))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", str(CSeq(seq, "INVITE")))
        h.add("Contact", self.contact())
        h.add("Allow", ALLOW)
        h.add("User-Agent", USER_AGENT)
        if auth is not None:
            h.add(*auth)
        h.add("Content-Type", "application/sdp")
        return Request("INVITE", self.target_uri, h, self.offer.serialize().encode())

    # -- responses to our INVITE ----------------------------------------------------------
    def _on_response(self, response: Response | None, tx: ClientTransaction) -> None:
        if response is not None:
            self.answered_at_all = True
        try:
            self._handle(response, tx)
        except Exception as exc:  # a bad answer must never take the UA down
            log.exception("dial %s: handling %s failed", self.target, response.status if response else "a failure")
            self._fail(500, f"internal error handling the far end's answer: {type(exc).__name__}: {exc}")

    def _handle(self, response: Response | None, tx: ClientTransaction) -> None:
        if response is None:
            if tx is self.ctx and self.state == "early":
                self._fail(tx.failure or 408, tx.error or "no response")
            return
        status = response.status
        if 200 <= status < 300:
            self._on_2xx(response, tx)
            return
        if tx is not self.ctx or self.state != "early":
            log.debug("dial %s: %d after the call was settled: ignored", self.target, status)
            return
        if status < 200:
            if status > 100:
                log.info("dial %s: %d %s", self.target, status, response.reason)
            return
        self.final_status = status
        if status in (401, 407):
            self._authenticate(response)
            return
        if status in (488, 415, 406) and self.oa.encryption == "preferred" and not self.plain_retry and \
                any(m.proto.upper() == "RTP/SAVP" for m in self.offer.media):
            self._retry_without_srtp(response)
            return
        reason = response.reason or "refused"
        warning = response.headers.get("Warning")
        if warning:
            reason = f"{reason} (Warning: {warning})"
        if 300 <= status < 400:
            where = ", ".join(str(c.uri) for c in _contacts(response)) or "nowhere"
            reason = f"{reason}: redirected to {where}; redirects are not followed"
        self._fail(status, reason)

    def _retry_without_srtp(self, response: Response) -> None:
        """The far end took no SRTP offer; the room only prefers encryption: offer plain RTP once."""
        self.plain_retry = True
        self.auth_tried = False
        log.info("dial %s: %d %s to our SRTP offer; offering plain RTP (the room prefers, not requires, "
                 "encryption)", self.target, response.status, response.reason)
        self.offer = self.local_sdp = self.oa.offer(self.local_media(), video=self.has_video, srtp=False)
        self.invite = self._make_invite(self.invite.cseq.seq + 1)
        self.dialog.local_seq = self.invite.cseq.seq
        self.ctx = self.ua.tx.client(self.invite, self.peer, self._on_response)

    def _authenticate(self, response: Response) -> None:
        status = response.status
        if self.credentials is None:
            self._fail(status, f"{response.reason or 'Unauthorized'}: the far end wants credentials and none "
                               "are configured for this target")
            return
        if self.auth_tried:
            self._fail(status, f"{response.reason or 'Unauthorized'}: our credentials were refused")
            return
        name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        challenge = best_challenge(response.headers.get_all(name))
        if challenge is None:
            self._fail(status, f"no Digest challenge with an algorithm we support in {name}")
            return
        user, password = self.credentials
        try:
            value = authorization(challenge, "INVITE", str(self.target_uri), user, password,
                                  body=self.invite.body)
        except ValueError as exc:
            self._fail(status, f"cannot answer the challenge: {exc}")
            return
        self.auth_tried = True
        header = "Authorization" if status == 401 else "Proxy-Authorization"
        self.invite = self._make_invite(self.invite.cseq.seq + 1, (header, value))
        self.dialog.local_seq = self.invite.cseq.seq
        log.info("dial %s: %d, retrying with credentials for %r", self.target, status, user)
        self.ctx = self.ua.tx.client(self.invite, self.peer, self._on_response)

    def _on_2xx(self, response: Response, tx: ClientTransaction | None) -> None:
        tag = response.to.tag if response.to is not None else None
        invite = tx.request if tx is not None else self.invite
        if self.state != "early" or (self.dialog is not None and self.dialog.remote_tag is not None):
            if self.dialog is not None and self.dialog.remote_tag == tag and self._ack_data is not None:
                self.ua.transport.send_raw(self._ack_data, self.dialog.peer)  # retransmitted 2xx: ACK again
                return
            # a 2xx after we gave up (CANCEL race) or from a second fork: ACK it, then BYE it (§15, §13.2.2.4)
            other = Dialog.as_uac(invite, response, self.peer)
            self._send_ack(other, invite)
            why = "another fork answered first" if self.state != "terminated" else "the call was given up"
            bye = other.request("BYE", self.contact(), extra=[("Reason", f'SIP;cause=200;text="{_quote(why)}"')])
            self.ua.tx.client(bye, other.peer, lambda r, t: None)
            log.info("dial %s: 2xx (tag %s) ACKed and hung up: %s", self.target, tag, why)
            return
        if self._no_answer is not None and self._no_answer.active():
            self._no_answer.cancel()
        self.final_status = response.status
        self.dialog = Dialog.as_uac(invite, response, self.peer)
        self.dialog.confirmed = True
        self.state = "confirmed"
        if self.media is not None:
            self.media.confirm()           # we called them and they answered
        self._ack_data = self._send_ack(self.dialog, invite)
        se = response.headers.get("Session-Expires")
        if se:
            from gateway.sip.ua import BadSessionExpires, _session_expires

            try:
                value, refresher = _session_expires(se)
            except BadSessionExpires as exc:      # the far end's mistake: no session timer, the call goes on
                log.warning("call %s: %s in the 200 OK; no session timer", self.call_id, exc)
                value, refresher = None, None
            if value and refresher == "uas":  # the far end refreshes; we only watch (RFC 4028 §10)
                self.session_expires = value
                self.arm_session_timer()
        # the SDP answer
        if not response.body:
            self._fail(488, f"{response.status} {response.reason} carried no SDP answer to our offer")
            return
        if response.content_type not in (None, "application/sdp"):
            self._fail(488, f"the answer is {response.content_type}, not application/sdp")
            return
        try:
            answer = SessionDescription.parse(response.body)
            streams = self.oa.process_answer(self.offer, answer)
            self.apply_streams(streams)
        except SdpError as exc:
            self._fail(488, f"unusable SDP answer: {exc.reason}")
            return
        try:
            if self.want_room is not None:
                self.want_room.join(self.leg)
                self.room = self.want_room
            else:
                self.room = self.ua.registry.join(self.spec, self.leg)
        except JoinRefused as exc:
            self._fail(exc.sip_status, exc.reason)
            return
        log.info("dial %s: answered (%s), joined room %s", self.target, self.leg.audio.rx, self.room.id)
        if not self.deferred.called:
            self.deferred.callback(self.leg)

    def _send_ack(self, dialog: Dialog, invite: Request) -> bytes:
        """§13.2.2.4: the ACK for a 2xx, built like an in-dialog request, the INVITE's CSeq number
        and credentials, a new branch; sent by us, not by a transaction."""
        ack = dialog.request("ACK", self.contact(), cseq=invite.cseq.seq)
        for name in ("Authorization", "Proxy-Authorization"):
            for value in invite.headers.get_all(name):
                ack.headers.add(name, value)
        transport = self.ua.transport
        via = Via(dialog.peer.transport, transport.local_host_for(dialog.peer.host),
                  transport.port_for(dialog.peer.transport),
                  {"branch": new_branch(), "rport": None})
        ack.headers.add("Via", str(via), first=True)
        data = ack.serialize()
        transport.send_raw(data, dialog.peer)
        return data

    def on_stray_2xx(self, response: Response) -> None:
        """A 2xx that came after the INVITE transaction ended (Timer M)."""
        self._on_2xx(response, None)

    # -- ending -----------------------------------------------------------------------------
    def _on_no_answer(self) -> None:
        self._no_answer = None
        if self.state == "early":
            self._fail(408, f"no answer within {self.timeout:g} s; INVITE cancelled")

    def cancel(self, reason: str = "cancelled") -> None:
        """Give up a call that has not been answered yet (CANCEL; the Deferred fails with 487)."""
        if self.state == "early":
            self._fail(487, reason)

    def _fail(self, status: int, reason: str) -> None:
        if self.state == "terminated":
            return
        if self._failure is None and not self.deferred.called:
            self._failure = DialFailed(status, reason, self.target)
            log.warning("dial %s failed: %d %s", self.target, status, reason)
        if self.state == "confirmed":
            self._on_leg_hangup(reason)  # BYE, then terminate
        else:
            self.terminate(reason)

    def terminate(self, reason: str) -> None:
        if self.state == "terminated":
            return
        if self.state == "early" and self.ctx is not None:
            # CANCEL now if a provisional came, else as soon as one does (§9.1); Timer B ends it otherwise
            self.ua.tx.cancel(self.ctx)
        if self._no_answer is not None and self._no_answer.active():
            self._no_answer.cancel()
        super().terminate(reason)
        if not self.deferred.called:
            self.deferred.errback(self._failure or DialFailed(487, reason, self.target))


def _without_tag(addr: Address) -> Address:
    a = addr.copy()
    a.params.pop("tag", None)
    return a


def _contacts(response: Response) -> list[Address]:
    try:
        return response.contacts
    except SipParseError:
        return []


def _hook_stray_2xx(ua: SipUserAgent) -> None:
    """Route 2xx that outlived their INVITE transaction to our calls (they must be ACKed again)."""
    if getattr(ua.tx, "_dialout_hooked", False):
        return
    previous = ua.tx.on_stray_2xx

    def on_stray_2xx(response: Response) -> None:
        call = ua.calls.get(response.call_id)
        if isinstance(call, OutgoingCall):
            call.on_stray_2xx(response)
        elif previous is not None:
            previous(response)

    ua.tx.on_stray_2xx = on_stray_2xx
    ua.tx._dialout_hooked = True


def dial(ua: SipUserAgent, target: str, spec: Any, *, display_name: str = "Cầu", from_user: str = "cau",
         credentials: tuple[str, str] | None = None, timeout: float = 60, video: bool = True,
         room: Any = None, encryption: str | None = None) -> Deferred:
    """Call ``target`` and join the answered call into the room of ``spec`` (module doc).

    Fires with the :class:`Leg` once it is in the room; fails with :class:`DialFailed`.
    ``room``: join exactly this Room (a cascade joins the room that opened; if it closed
    meanwhile the answered call is hung up, DialFailed 480) instead of ``registry.join(spec)``.
    ``encryption``: the called site's own policy, combined with the room's
    (:func:`~gateway.dialplan.model.combined_encryption`): over TLS the offer carries SDES keys
    unless that says ``off``; ``required`` without TLS fails (488) before anything is sent.
    Cancelling the Deferred CANCELs an unanswered INVITE."""
    try:
        uri, peer = parse_target(target)
    except DialFailed as exc:
        log.warning("dial %s refused: %d %s", target, exc.status, exc.reason)
        d: Deferred = Deferred()
        d.errback(exc)
        return d

    def attempt(p: Peer) -> Deferred:
        call = OutgoingCall(ua, target, uri, p, spec, display_name=display_name, from_user=from_user,
                            credentials=credentials, timeout=timeout, video=video, room=room,
                            encryption=encryption)
        call.start()
        call.deferred.call = call  # type: ignore[attr-defined]
        return call.deferred

    from gateway.sip.dns import is_ip

    if is_ip(uri.host):
        d = attempt(peer)
        return d
    return _dial_by_name(ua, target, uri, attempt)


class _NamedDial(Deferred):
    """The Deferred of a dial to a host name: ``.call`` is the call under way (None while DNS is
    asked); cancelling it cancels that call or the lookup."""

    call: Any = None


def _dial_by_name(ua: SipUserAgent, target: str, uri: SipUri, attempt: Callable[[Peer], Deferred]) -> Deferred:
    """RFC 3263: the host's targets from DNS, tried in order while one gives no response at all."""
    resolver = getattr(ua, "resolver", None)
    out = _NamedDial(lambda d: d.call.cancel("cancelled") if d.call is not None else None)
    if resolver is None:
        out.errback(DialFailed(503, f"{uri.host!r} is a host name and DNS is off (dns: false); dial an IP "
                                    "address", target))
        return out
    secure = uri.scheme == "sips"
    given = uri.params.get("transport")
    d = resolver.resolve(uri.host, uri.port, given.upper() if given else None, secure)

    def located(targets: list) -> None:
        if out.called:
            return
        log.info("dial %s: %s", target, "; ".join(f"{t.via} → {t.transport} {t.host}:{t.port}" for t in targets))
        go(list(targets))

    def go(left: list) -> None:
        t = left.pop(0)
        call_d = attempt(Peer(t.transport, t.host, t.port, name=uri.host if t.transport == "TLS" else None))
        out.call = call_d.call

        def done(leg: Any) -> None:
            if not out.called:
                out.callback(leg)

        def failed(f: Any) -> None:
            if out.called:
                return
            silent = f.check(DialFailed) and f.value.status in (408, 503) and not out.call.answered_at_all
            if silent and left:
                log.warning("dial %s: %s:%d gave no answer (%s); trying the next target", target, t.host, t.port,
                            f.value.reason)
                go(left)
                return
            out.errback(f)

        call_d.addCallbacks(done, failed)

    def not_found(f: Any) -> None:
        if not out.called:
            log.warning("dial %s refused: 503 %s", target, f.getErrorMessage())
            out.errback(DialFailed(503, f.getErrorMessage(), target))

    d.addCallbacks(located, not_found)
    return out


# --------------------------------------------------------------------------- cascade

class _Link:
    def __init__(self, room: Any, number: str):
        self.room = room
        self.number = number
        self.failures = 0
        self.timer = None
        self.pending: Deferred | None = None
        self.leg: Leg | None = None
        self.done = False
        self.target: str | None = None


class Cascade:
    """Dials a room's ``cascade`` number when the room opens (see :func:`enable_cascade`)."""

    def __init__(self, ua: SipUserAgent, registry: RoomRegistry, plan: Any, *, retry_delay: float = 30.0,
                 max_attempts: int = 5, timeout: float = 60.0,
                 h323_dial: Callable[[str, Any, Any], Any] | None = None):
        self.ua = ua
        self.registry = registry
        self.plan = plan
        self.retry_delay = retry_delay
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.h323_dial = h323_dial
        self.links: dict[str, _Link] = {}
        #: ``on_state(room_id, target, up, why)``: the link came up, failed or dropped (alerts)
        self.on_state: Callable[[str, str, bool, str], Any] | None = None
        self._unsubs = [registry.on("room_opened", self._on_opened), registry.on("room_closed", self._on_closed),
                        registry.on("roster", self._on_roster)]

    def close(self) -> None:
        for u in self._unsubs:
            u()
        self._unsubs = []
        for link in list(self.links.values()):
            self._stop(link)
        self.links.clear()

    def _current_plan(self) -> Any:
        return self.plan() if callable(self.plan) else self.plan

    def _on_opened(self, room: Any) -> None:
        number = getattr(room.spec, "cascade", None)
        if not number:
            return
        link = _Link(room, number)
        self.links[room.id] = link
        self._attempt(link)

    def _attempt(self, link: _Link) -> None:
        link.timer = None
        room = link.room
        if link.done or room.closed:
            return
        result = self._current_plan().route(link.number, caller=room.id)
        if result.kind != "dial" or not result.target:
            log.error("room %s: cascade number %s does not route to a dial rule (%s: %s); not cascading",
                      room.id, link.number, result.kind, result.reason or result.rule)
            link.done = True
            return
        target = result.target
        scheme = target.split(":", 1)[0].lower()
        if scheme == "h323":
            if self.h323_dial is None:
                log.warning("room %s: cascade %s → %s: H.323 dial-out is handled by the H.323 service, "
                            "which is not wired to the cascade here", room.id, link.number, target)
            else:
                self.h323_dial(target, room.spec, room)
            link.done = True
            return
        link.target = target
        log.info("room %s: cascading into %s (number %s, attempt %d)", room.id, target, link.number,
                 link.failures + 1)
        d = dial(self.ua, target, room.spec, display_name=getattr(room.spec, "name", "Cầu") or "Cầu",
                 from_user=room.id, timeout=self.timeout, room=room)
        link.pending = d
        d.addCallbacks(lambda leg: self._connected(link, leg), lambda f: self._failed(link, target, f))

    def _state(self, link: _Link, up: bool, why: str = "") -> None:
        if self.on_state is not None:
            self.on_state(link.room.id, link.target or link.number, up, why)

    def _connected(self, link: _Link, leg: Leg) -> None:
        link.pending = None
        link.failures = 0
        link.leg = leg
        self._state(link, True)
        leg.cascade = True  # type: ignore[attr-defined]
        leg.on("hangup", lambda reason="": self._dropped(link, leg, reason))
        if not any(not getattr(other, "cascade", False) for other in link.room.legs.values()):
            leg.hangup("everyone else has left the room")  # the local participants are already gone

    def _failed(self, link: _Link, target: str, failure: Any) -> None:
        link.pending = None
        exc = failure.value
        why = f"{exc.status} {exc.reason}" if isinstance(exc, DialFailed) else str(exc)
        link.failures += 1
        if link.done or link.room.closed:
            return None
        if link.failures >= self.max_attempts:
            log.error("room %s: cascade into %s failed %d times (last: %s); giving up", link.room.id, target,
                      link.failures, why)
            self._state(link, False, f"failed {link.failures} times (last: {why}); given up")
            link.done = True
            return None
        log.warning("room %s: cascade into %s failed (%s); retrying in %g s", link.room.id, target, why,
                    self.retry_delay)
        self._state(link, False, f"failed ({why}); retrying")
        link.timer = self.ua.reactor.callLater(self.retry_delay, self._attempt, link)
        return None

    def _dropped(self, link: _Link, leg: Leg, reason: str) -> None:
        if link.leg is leg:
            link.leg = None
        if link.done or link.room.closed or self.links.get(link.room.id) is not link:
            return
        if not any(not getattr(other, "cascade", False) for other in link.room.legs.values() if other is not leg):
            return  # nobody local left: no reason to reconnect
        log.warning("room %s: cascade call ended (%s); reconnecting in %g s", link.room.id, reason,
                    self.retry_delay)
        self._state(link, False, f"dropped ({reason}); reconnecting")
        if link.timer is None:
            link.timer = self.ua.reactor.callLater(self.retry_delay, self._attempt, link)

    def _on_roster(self, room: Any, event: str, *args: Any) -> None:
        if event != "left":
            return
        link = self.links.get(room.id)
        if link is None or link.leg is None or link.leg.hung_up:
            return
        if not any(not getattr(other, "cascade", False) for other in room.legs.values()):
            link.leg.hangup("everyone else has left the room")  # BYE: let the room close

    def _on_closed(self, room: Any) -> None:
        link = self.links.pop(room.id, None)
        if link is not None:
            self._stop(link)

    def _stop(self, link: _Link) -> None:
        link.done = True
        if link.timer is not None and link.timer.active():
            link.timer.cancel()
        link.timer = None
        if link.pending is not None and not link.pending.called:
            call = getattr(link.pending, "call", None)
            if call is not None:
                call.cancel("the room closed")
            else:                                   # still asking DNS
                link.pending.cancel()
        if link.leg is not None and not link.leg.hung_up:
            link.leg.hangup("the room closed")


def enable_cascade(ua: SipUserAgent, registry: RoomRegistry, plan: Any, *, retry_delay: float = 30.0,
                   max_attempts: int = 5, timeout: float = 60.0,
                   h323_dial: Callable[[str, Any, Any], Any] | None = None) -> Cascade:
    """When a room whose spec has ``cascade`` opens, route that number through ``plan`` (a
    DialPlan, or a callable giving the current one, like ``ua.plan``) and dial a sip: target
    into the room. A failure is logged with its reason and retried every ``retry_delay`` s
    while the room is open, at most ``max_attempts`` times in a row; a cascade call that
    drops while local participants remain is redialed the same way. When the last local
    participant leaves, the cascade call is hung up so the room can close. h323: targets go
    to ``h323_dial(target, spec, room)`` when given (the H.323 service), else are logged.
    ``Cascade.close()`` unsubscribes and hangs up."""
    return Cascade(ua, registry, plan, retry_delay=retry_delay, max_attempts=max_attempts, timeout=timeout,
                   h323_dial=h323_dial)
