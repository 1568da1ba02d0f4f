"""The gateway's SIP user agent core: calls into conference rooms (RFC 3261 UAS side).

An INVITE to ``sip:<number or alias>@gateway`` is routed through the dial
plan; a room route opens (or joins) the room, the SDP offer is answered from
the codec catalogue and the room's policy, and the call becomes an ordinary
:class:`~gateway.conference.Leg`. Everything else a SIP endpoint expects from a
conference server is answered here: late offer (INVITE without SDP, answer in
the ACK), re-INVITE and UPDATE (hold/resume, codec change, session refresh),
CANCEL, BYE both ways, OPTIONS, INFO (DTMF relay, picture_fast_update),
session timers (RFC 4028) and the refusals with reasons (404, 403, 480, 486,
488, 420, 422, 481, 482, 483).
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from gateway.catalogue import Catalogue
from gateway.dialplan.model import combined_encryption
from gateway.conference import JoinRefused, Leg, RoomRegistry
from gateway.conference.rtp_media import RtpMedia, admit
from gateway.media.ports import PortAllocator, PortsExhausted
from gateway.repeated import RepeatedLog
from gateway.sip.dialog import USER_AGENT, Dialog, new_tag
from gateway.sip.message import Request, Response
from gateway.sip.offer_answer import LocalMedia, OfferAnswer, SdpStream
from gateway.sip.sdp import SdpError, SessionDescription
from gateway.sip.transaction import ServerTransaction, TransactionLayer
from gateway.sip.transport import Peer, SipTransport
from gateway.sip.uri import SipUri

log = logging.getLogger("cau.sip")
#: a request that keeps failing the same way (one peer's broken client): logged once, then with a count
_repeated = RepeatedLog(log)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK, REGISTER"
SUPPORTED = "timer, 100rel, replaces"
ACCEPT = "application/sdp, application/dtmf-relay, application/dtmf, application/media_control+xml"
DTMF_DIGITS = "0123456789*#ABCD"


@dataclass
class SipConfig:
    session_expires: int = 1800   # RFC 4028: what we ask for when the caller does not say
    min_se: int = 90              # RFC 4028 §5: the smallest interval we accept
    rtp_timeout: float = 30.0     # no media for this long → the leg hangs up (BYE)
    answer_delay: float = 0.0     # ring (180) this long before answering; 0 answers at once
    video_mtu: int = 1200         # bytes of RTP payload per video packet we send


class SipCall:
    """One INVITE dialog with a participant in a room."""

    identity: Any = None        # the checked dial-plan endpoint, None for anonymous callers

    def __init__(self, ua: "SipUserAgent", invite: Request, stx: ServerTransaction, peer: Peer):
        self.ua = ua
        self.invite = invite
        self.stx = stx
        self.peer = peer
        self.local_tag = new_tag()
        self.dialog = Dialog.as_uas(invite, self.local_tag, peer)
        self.leg: Leg | None = None
        self.room = None
        self.spec = None
        self.identity = None
        self.oa: OfferAnswer | None = None
        self.media: RtpMedia | None = None
        self.local_sdp: SessionDescription | None = None
        self.pending_offer: SessionDescription | None = None  # our offer awaiting the ACK (late offer)
        self.streams: list[SdpStream] = []
        self.fast_update_refused = False      # the far end refused INFO picture_fast_update
        self.state = "early"  # early → confirmed → terminated
        self.ended_by_us = False
        self.session_expires: int | None = None
        self._refresh_timer = None
        self._ack_wait = None
        self._answer_timer = None
        self.refresher = "uac"
        self.retransmission = None
        self.started = time.time()
        self.started_mono = time.monotonic()      # the INVITE's arrival (call set-up time)
        self.answered_at: float | None = None     # monotonic time of our 200 OK (ACK pending)
        self.join_on_ack = False                   # the leg joins its room when the ACK comes

    # -- set-up ---------------------------------------------------------------------------
    def local_media(self) -> LocalMedia:
        m = self.media
        return LocalMedia(m.local_port("audio"), m.local_port("video"), self.ua.host_for(self.peer.host))

    @property
    def has_video(self) -> bool:
        return self.media is not None and "video" in self.media.sessions

    def open_media(self, want_video: bool) -> None:
        """Our RTP sessions (audio, and video when offered or wanted); PortsExhausted passes up."""
        self.media = m = RtpMedia(self.ua.ports, bind=self.ua.media_bind, rtp_timeout=self.ua.config.rtp_timeout,
                                  display_name=self.display_name(), protocol="sip",
                                  remote=f"{self.peer.host}:{self.peer.port}",
                                  unconfirmed_budget=UNCONFIRMED_PACKETS)
        m.video_mtu = self.ua.config.video_mtu
        m.on_leg = self._on_leg
        m.on_replaced = self._on_replaced
        m.keyframe_fallback = lambda stream_id: self.ua.send_fast_update(self)
        m.open("audio")
        if want_video:
            m.open("video")

    def close_media(self) -> None:
        if self.media is not None:
            self.media.close()

    def apply_streams(self, streams: list[SdpStream]) -> None:
        """Point RTP at what was negotiated; (re)build the Leg's streams (a codec change swaps
        the audio in the room in place)."""
        self.streams = streams
        audio = next((s for s in streams if s.media == "audio" and s.accepted), None)
        if audio is None:
            raise SdpError("no audio stream was accepted", status=488)
        video = next((s for s in streams if s.media == "video" and s.accepted), None)
        try:
            self.media.apply("audio", audio.plan(self.peer.host))
            if video is not None and self.has_video and video.remote_port:
                self.media.apply("video", video.plan(self.peer.host))
            elif self.has_video:        # declined, or a re-INVITE took it away (m=video 0)
                self.media.remove("video")
        except ValueError as exc:  # e.g. a host name or an IPv6 address on an IPv4 gateway
            raise SdpError(f"cannot send media there: {exc}", status=488) from None
        # hold: the far end does not want to receive → do not send it the room's audio
        if self.room is not None and self.leg is not None and self.leg.id in self.room.legs:
            self.leg.mute("out", not audio.sends)
        self._note_encryption()

    def _note_encryption(self) -> None:
        if self.leg is None:
            return
        audio = next((s for s in self.streams if s.media == "audio" and s.accepted), None)
        enc = {"signalling": self.peer.transport,
               "media": f"SRTP {audio.srtp[0]}" if audio is not None and audio.srtp else None}
        name = self.ua.transport.verifies(self.peer)
        if name:
            enc["verified"] = name           # the far certificate was checked for this name (tls_ca)
        self.leg.encryption = enc

    def _on_leg(self, leg: Leg) -> None:
        self.leg = leg
        leg.started = getattr(self, "started_mono", leg.started)
        invite = self.invite if getattr(self, "stx", None) is not None else None    # their INVITE, not ours
        agent = invite.headers.get("User-Agent") if invite is not None else None
        if agent:
            leg.user_agent = "".join(c for c in agent if c.isprintable())[:128]
        leg.identity = self.identity.alias if self.identity is not None else None
        self._note_encryption()
        leg.on("hangup", self._on_leg_hangup)

    def _on_replaced(self, leg: Leg, stream_id: str) -> None:
        if self.room is not None:
            self.room.replace_stream(leg, stream_id)  # in place: a two-party room must not see anyone leave

    def display_name(self) -> str:
        if self.identity is not None:
            return self.identity.name
        frm = self.invite.from_
        if frm.display_name:
            return frm.display_name
        uri = frm.uri
        return (uri.user or uri.host) if isinstance(uri, SipUri) else str(uri)

    def contact(self) -> str:
        return self.ua.contact(self.peer.transport, sips=self._sips(), peer_host=self.peer.host)

    def _sips(self) -> bool:
        uri = self.invite.uri
        return isinstance(uri, SipUri) and uri.scheme == "sips"

    # -- responses ----------------------------------------------------------------------
    def final(self, status: int, reason: str | None = None, body: bytes = b"", extra: list[tuple[str, str]] = ()) -> Response:
        r = self.stx.make_response(status, reason, to_tag=self.local_tag)
        h = r.headers
        if 200 <= status < 300:
            h.add("Contact", self.contact())
            for rr in self.invite.headers.get_lines("Record-Route"):
                h.add("Record-Route", rr)
        h.add("Allow", ALLOW)
        h.add("Supported", SUPPORTED)
        h.add("Server", USER_AGENT)
        if status >= 400 and reason:
            h.add("Warning", f'399 cau "{_quote(reason)}"')
        for name, value in extra:
            h.add(name, value)
        if body:
            h.add("Content-Type", "application/sdp")
            r.body = body
        return r

    def stop_retransmission(self) -> None:
        if self.retransmission is not None:
            self.retransmission.stop()
            self.retransmission = None

    # -- teardown -----------------------------------------------------------------------
    def _on_leg_hangup(self, reason: str) -> None:
        """The leg ended on our side (RTP timeout, room closed, kicked): tell the far end."""
        if self.state == "terminated":
            return
        if self.state == "confirmed":
            self.ended_by_us = True
            self.ua.send_bye(self, reason)
        self.terminate(reason)

    def terminate(self, reason: str) -> None:
        if self.state == "terminated":
            return
        was_early = self.state == "early"
        self.state = "terminated"
        stx = getattr(self, "stx", None)
        if was_early and isinstance(stx, ServerTransaction):
            last = stx.last_response
            if last is None or last.status < 200:  # the INVITE is still unanswered: finish it (§15)
                try:
                    stx.respond(self.final(487 if "cancel" in reason or "hung up" in reason else 480, reason))
                except Exception:
                    log.exception("call %s: could not answer the INVITE while ending it", self.dialog.call_id)
        endpoint_dial = getattr(self, "_endpoint_dial", None)
        if endpoint_dial is not None and not endpoint_dial.called:
            endpoint_dial.cancel()
        self.stop_retransmission()
        # The INVITE server transaction lingers for Timer L (64*T1) after the call: let go of this
        # call's objects now, so that a busy gateway does not carry thousands of ended calls.
        if self.stx is not None:
            self.stx.on_cancel = None
        for t in (self._refresh_timer, self._ack_wait, self._answer_timer):
            if t is not None and t.active():
                t.cancel()
        if self.leg is not None:
            self.leg.hangup(reason)  # closes the RTP sessions (RtpMedia) and leaves the room
        self.close_media()
        self.ua.forget(self)
        log.info("call %s ended: %s", self.dialog.call_id, reason)

    # -- session timer (RFC 4028) --------------------------------------------------------
    def arm_session_timer(self) -> None:
        if self._refresh_timer is not None and self._refresh_timer.active():
            self._refresh_timer.cancel()
        if not self.session_expires:
            return
        if self.refresher == "uas":
            # the caller asked us to refresh (RFC 4028 §7.2/§9): do it at half the interval
            self._refresh_timer = self.ua.reactor.callLater(self.session_expires / 2, self._send_refresh)
        else:
            # the refresher (the caller) must refresh before expiry; give it the RFC's margin
            grace = min(32, self.session_expires / 3)
            self._refresh_timer = self.ua.reactor.callLater(self.session_expires - grace, self._session_expired)

    def _send_refresh(self) -> None:
        """Refresh the session: UPDATE without a body where the caller allows it, else a re-INVITE
        offering our current SDP again (nothing changes, RFC 3264 §8)."""
        if self.state != "confirmed":
            return
        se = [("Session-Expires", f"{self.session_expires};refresher=uas"), ("Supported", "timer")]
        allowed = _options(self.invite.headers.get_all("Allow"))
        if "update" in allowed:
            request = self.dialog.request("UPDATE", self.contact(), extra=se)
        else:
            request = self.dialog.request("INVITE", self.contact(), body=self.local_sdp.serialize().encode(),
                                          content_type="application/sdp", extra=se)
        cseq = self.dialog.local_seq

        def answered(response: Response | None, tx: Any) -> None:
            if self.state != "confirmed":
                return
            if response is None or response.status >= 300:
                if response is not None and response.status in (408, 481):
                    self._on_leg_hangup(f"session refresh failed ({response.status})")
                elif response is None:
                    self._on_leg_hangup("session refresh got no answer")
                else:  # e.g. 491 glare or 501: try again later
                    self.arm_session_timer()
                return
            if response.status < 200:
                return
            if request.method == "INVITE":
                ack = self.dialog.request("ACK", self.contact(), cseq=cseq)
                self.ua.transport.send(ack, self.dialog.peer)
            self.arm_session_timer()

        self.ua.tx.client(request, self.dialog.peer, answered)

    def _session_expired(self) -> None:
        log.info("call %s: session timer expired without a refresh", self.dialog.call_id)
        self._on_leg_hangup("session timer expired (RFC 4028)")


class SipUserAgent:
    def __init__(
        self,
        transactions: TransactionLayer,
        transport: SipTransport,
        plan: Callable[[], Any],
        registry: RoomRegistry,
        ports: PortAllocator,
        catalogue: Catalogue,
        media_bind: str = "127.0.0.1",
        media_host: str | None = None,
        reactor: Any = None,
        config: SipConfig | None = None,
    ):
        if reactor is None:
            from twisted.internet import reactor as _r

            reactor = _r
        self.tx = transactions
        self.transport = transport
        self.plan = plan
        self.registry = registry
        self.ports = ports
        self.catalogue = catalogue
        self.media_bind = media_bind
        #: the address for messages with no particular reader; per peer see :meth:`host_for`
        self.media_host = media_host or (media_bind if media_bind not in ("0.0.0.0", "::") else transport.local_host)
        self.advertise = media_host
        self.reactor = reactor
        self.config = config or SipConfig()
        self.calls: dict[str, SipCall] = {}  # by Call-ID
        self.stats = {"invites": 0, "answered": 0, "refused": 0, "byes": 0}
        transactions.on_request = self.on_request
        transactions.on_stray_2xx = lambda response: None

    # -- helpers --------------------------------------------------------------------------
    def host_for(self, peer_host: str | None) -> str:
        """Our address as ``peer_host`` reaches it (SDP, Contact): ``--advertise``, the bound
        address, else the one the routing table picks for that peer (gateway.netaddr)."""
        if self.advertise:
            return self.advertise
        return self.transport.local_host_for(peer_host) if peer_host else self.media_host

    def contact(self, transport: str = "UDP", sips: bool = False, peer_host: str | None = None) -> str:
        """Our Contact for a dialog over ``transport``: TLS gets our TLS port (``sips:`` when the
        request was for a sips: URI, RFC 3261 §26.2), TCP ``;transport=tcp``."""
        host = self.host_for(peer_host)
        host = f"[{host}]" if ":" in host else host
        if transport == "TLS":
            port = self.transport.port_for("TLS")
            return f"<sips:cau@{host}:{port}>" if sips else f"<sip:cau@{host}:{port};transport=tls>"
        if transport == "TCP":
            return f"<sip:cau@{host}:{self.transport.port};transport=tcp>"
        return f"<sip:cau@{host}:{self.transport.port}>"

    def forget(self, call: SipCall) -> None:
        if self.calls.get(call.dialog.call_id) is call:
            del self.calls[call.dialog.call_id]

    def _respond(self, stx: ServerTransaction, status: int, reason: str | None = None,
                 extra: list[tuple[str, str]] = (), body: bytes = b"", content_type: str | None = None,
                 to_tag: str | None = None, retransmit: bool = True) -> None:
        r = stx.make_response(status, reason, to_tag=to_tag or (new_tag() if status >= 200 else None))
        r.headers.add("Server", USER_AGENT)
        if status >= 400 and reason:
            r.headers.add("Warning", f'399 cau "{_quote(reason)}"')
        for name, value in extra:
            r.headers.add(name, value)
        if body:
            r.headers.add("Content-Type", content_type or "application/sdp")
            r.body = body
        stx.respond(r, retransmit=retransmit)

    # -- dispatch -------------------------------------------------------------------------
    def on_request(self, request: Request, stx: ServerTransaction | None, peer: Peer) -> None:
        try:
            self._dispatch(request, stx, peer)
        except Exception as exc:  # never let one request take the UA down
            _repeated((request.method, type(exc).__name__, str(exc)[:80]), logging.ERROR, "SIP %s from %s failed: %s",
                      request.method, peer, exc, exc_info=True)
            if stx is not None and request.method != "ACK":
                try:
                    self._respond(stx, 500, f"internal error: {type(exc).__name__}")
                except Exception:
                    log.exception("could not answer 500")

    def _dispatch(self, request: Request, stx: ServerTransaction | None, peer: Peer) -> None:
        method = request.method
        if method == "ACK":
            self._on_ack(request)
            return
        assert stx is not None
        if method == "REGISTER":
            if self.registrar is None:
                self._respond(stx, 405, "this gateway does not register endpoints", extra=[("Allow", ALLOW)])
            else:
                self.registrar.on_register(request, stx, peer)
            return
        # Max-Forwards 0 needs no 483 here: we are the endpoint, not a proxy (RFC 4475 zeromf).
        to_tag = request.to.tag
        if to_tag:
            call = self.calls.get(request.call_id)
            if call is None or call.local_tag != to_tag:
                self._respond(stx, 481, "Call/Transaction Does Not Exist")
                return
            if not call.dialog.accepts(request):
                self._respond(stx, 500, "CSeq lower than the last one in this dialog")
                return
            handler = {
                "BYE": self._on_bye, "INVITE": self._on_reinvite, "UPDATE": self._on_update,
                "INFO": self._on_info, "OPTIONS": self._on_options_in_dialog, "PRACK": self._on_prack,
            }.get(method)
            if handler is None:
                self._respond(stx, 405, f"{method} is not allowed in a call", extra=[("Allow", ALLOW)])
                return
            handler(call, request, stx)
            return
        # outside a dialog: a Request-URI we can route, and extensions we have (RFC 3261 §8.2.2)
        if not isinstance(request.uri, SipUri) and method in ("INVITE", "OPTIONS"):
            scheme = str(request.uri).split(":", 1)[0][:16]
            self._respond(stx, 416, f"Unsupported URI Scheme {scheme!r}: sip: and sips: only")
            return
        required = [o.strip() for v in request.headers.get_all("Require") for o in v.split(",") if o.strip()]
        unsupported = [o for o in required if o.lower() not in ("timer", "100rel", "replaces")]
        if unsupported and method in ("INVITE", "OPTIONS"):
            self._respond(stx, 420, "Bad Extension", extra=[("Unsupported", ", ".join(u[:32] for u in unsupported[:8]))])
            return
        if method == "INVITE" and not _accepts_sdp(request.headers.get_all("Accept")):
            self._respond(stx, 406, "Not Acceptable: our answers are application/sdp",
                          extra=[("Accept", ACCEPT)])
            return
        if method == "INVITE":
            self._on_invite(request, stx, peer)
        elif method == "OPTIONS":
            self._on_options(request, stx)
        elif method in ("BYE", "INFO", "UPDATE", "PRACK"):
            self._respond(stx, 481, "Call/Transaction Does Not Exist")
        else:
            self._respond(stx, 405, f"{method} is not supported here", extra=[("Allow", ALLOW)])

    registrar = None  # set by the registrar when it is built

    # -- OPTIONS --------------------------------------------------------------------------
    def _options_headers(self) -> list[tuple[str, str]]:
        return [("Allow", ALLOW), ("Accept", ACCEPT), ("Supported", SUPPORTED), ("Accept-Language", "vi, en")]

    def _on_options(self, request: Request, stx: ServerTransaction) -> None:
        # capabilities: an SDP offer of what a room with the default policy would take (RFC 3261 §11.2)
        oa = OfferAnswer(self.catalogue)
        sdp = oa.offer(LocalMedia(0, 0, self.host_for(stx.peer.host if stx.peer else None))).serialize().encode()
        self._respond(stx, 200, None, extra=self._options_headers(), body=sdp)

    def _on_options_in_dialog(self, call: SipCall, request: Request, stx: ServerTransaction) -> None:
        self._respond(stx, 200, None, extra=self._options_headers(), to_tag=call.local_tag)

    # -- INVITE ---------------------------------------------------------------------------
    def _dialed(self, request: Request) -> str:
        uri = request.uri
        if isinstance(uri, SipUri) and uri.user:
            return uri.user
        to = request.to.uri
        if isinstance(to, SipUri) and to.user:
            return to.user
        return str(uri)

    def _caller(self, request: Request) -> str | None:
        """Who the From header claims to be (its user part): a claim, not an identity."""
        uri = request.from_.uri
        return uri.user if isinstance(uri, SipUri) else None

    def _identify(self, request: Request, stx: ServerTransaction, peer: Peer) -> tuple[Any, bool]:
        """The dial-plan endpoint this INVITE provably comes from: (EndpointSpec | None, answered).

        The From header only *claims* an endpoint. The claim is checked, by the endpoint's
        ``identity`` policy: its current registration from this address (every policy), a source
        address in its ``networks`` ("network"), or digest credentials on the INVITE ("password":
        the INVITE is challenged with 401 and counted by the password guard). A claim that cannot
        be checked leaves the caller anonymous — it joins as anyone may, under its own display name,
        matches no ``from:`` rule and may not call sites. ``answered`` is True when this method
        answered the INVITE (401 / 403) and the caller must stop."""
        claimed = self._caller(request)
        ep = self.plan().endpoint(claimed) if claimed else None
        if ep is None or ep.protocol != "sip":
            return None, False
        registrar = self.registrar
        if registrar is not None and any(b.source.host == peer.host for b in registrar.lookup(ep.alias)):
            return ep, False
        if ep.identity == "network" and ep.networks and ep.allows(peer.host):
            return ep, False
        if ep.identity != "password" or ep.password is None or registrar is None:
            log.info("SIP INVITE from %s claims endpoint '%s', which it is not registered as: anonymous",
                     peer.host, ep.alias)
            return None, False
        username = ep.username or ep.alias
        res = registrar.digest.verify(request, lambda u: ep.password if u == username else None)
        guard, target = registrar.guard, "account " + ep.alias.casefold()
        if res.problem in ("missing", "algorithm") or (res.problem == "stale" and not res.ok):
            challenges = registrar.digest.challenges(stale=res.problem == "stale")
            self._respond(stx, 401, "Unauthorized", extra=[("WWW-Authenticate", c) for c in challenges])
            return None, True
        wait = guard.retry_after(peer.host, target)
        if wait:
            log.info("SIP INVITE as '%s' from %s refused: locked out for %.0f s (wrong passwords)",
                     ep.alias, peer.host, wait)
            self._refuse(stx, 403, "Forbidden")
            return None, True
        if res.ok:
            guard.succeeded(peer.host, target)
            return ep, False
        if res.problem in ("wrong_password", "unknown_user"):
            guard.failed(peer.host, target)
            log.info("SIP INVITE as '%s' from %s: %s", ep.alias, peer.host, res.reason)
            self._refuse(stx, 403, "Forbidden")
            return None, True
        self._refuse(stx, 400, res.reason)
        return None, True

    def _on_invite(self, request: Request, stx: ServerTransaction, peer: Peer) -> None:
        self.stats["invites"] += 1
        call_id = request.call_id
        existing = self.calls.get(call_id)
        if existing is not None:
            # §8.2.2.2 merged request: same Call-ID/From tag/CSeq arriving by another path
            if existing.invite.from_.tag == request.from_.tag and existing.invite.cseq.seq == request.cseq.seq:
                self._respond(stx, 482, "Loop Detected")
                return
        # Require: only what we support (RFC 3261 §8.2.2.3; _dispatch answered 420 for the rest)
        required = [o.strip().lower() for v in request.headers.get_all("Require") for o in v.split(",") if o.strip()]
        # Session timer (RFC 4028 §9)
        try:
            se_value, se_refresher = _session_expires(request.headers.get("Session-Expires"))
        except BadSessionExpires as exc:
            self._respond(stx, 400, str(exc))
            return
        if se_value is not None and se_value < self.config.min_se:
            self._respond(stx, 422, "Session Interval Too Small", extra=[("Min-SE", str(self.config.min_se))])
            return
        # Who is calling (checked, not claimed), then route through the dial plan
        identity, answered = self._identify(request, stx, peer)
        if answered:
            return
        dialed = self._dialed(request)
        result = self.plan().route(dialed, caller=identity.alias if identity else None, protocol="sip")
        if result.kind == "none":
            endpoint = self.plan().endpoint(dialed)
            if endpoint is not None and self.call_endpoint is not None:
                if identity is None:
                    # ringing a site through the gateway is for the plan's own endpoints
                    log.info("SIP INVITE for endpoint '%s' from %s refused: the caller is not a known endpoint",
                             endpoint.alias, peer.host)
                    self._refuse(stx, 403, f"{dialed[:32]!r} is not open to callers")
                    return
                self._on_invite_endpoint(request, stx, peer, endpoint, identity)
                return
            self._refuse(stx, 404, f"no room or route for {dialed!r}")
            return
        if result.kind == "reject":
            self._refuse(stx, result.status or 403, result.reason)
            return
        if result.kind == "dial":
            if self.bridge_out is not None and self.plan().may_bridge(
                    result, identity.alias if identity else None, peer.host):
                target = result.target
                log.info("SIP INVITE for %r from %s: bridged out to %s (%s)", dialed,
                         identity.alias if identity else peer.host, target, result.rule)
                self._on_invite_bridged(request, stx, peer, dialed, "preferred",
                                        lambda spec, room: self.bridge_out(target, spec, room), identity,
                                        reveal=False)
                return
            # the caller learns that it is refused, not where the number leads (a dial-out target is
            # the province's own business: the national MCU's address, a trunk)
            log.info("SIP INVITE for %r from %s refused: it routes out to %s, and this caller is not among "
                     "the route's callers", dialed, identity.alias if identity else peer.host, result.target)
            self._refuse(stx, 403, f"{dialed[:32]!r} is not open to callers")
            return
        self._invite_into(request, stx, peer, result.room, se_value, se_refresher, required, identity=identity)

    # A call to a registered endpoint's number: both parties meet in a two-seat room of their own,
    # so codecs are bridged by the media plane like any room. The caller rings until the callee answers.
    call_endpoint: Callable[[Any, Any, Any], Any] | None = None  # set by the app: (endpoint, spec, room) -> Deferred
    #: set by the app: (target URI, spec, room) -> Deferred; a caller a dial route's ``callers`` allows
    bridge_out: Callable[[str, Any, Any], Any] | None = None
    #: RFC 3263 lookups for targets by name (gateway.sip.dns.SipResolver); None: DNS is off
    resolver: Any = None

    def _on_invite_endpoint(self, request: Request, stx: ServerTransaction, peer: Peer, endpoint: Any,
                            identity: Any = None) -> None:
        self._on_invite_bridged(request, stx, peer, endpoint.alias, endpoint.encryption or "preferred",
                                lambda spec, room: self.call_endpoint(endpoint, spec, room), identity)

    def _on_invite_bridged(self, request: Request, stx: ServerTransaction, peer: Peer, label: str,
                           encryption: str, dial_out: Callable[[Any, Any], Any], identity: Any = None, *,
                           reveal: bool = True) -> None:
        """The caller and the far end meet in a two-seat room of their own (the media plane bridges
        codecs and protocols); the caller rings until the far end answers. ``reveal=False``: a
        refusal names only the number dialed, not where it leads."""
        import secrets

        try:
            se_value, se_refresher = _session_expires(request.headers.get("Session-Expires"))
        except BadSessionExpires as exc:
            self._respond(stx, 400, str(exc))
            return
        required = [o.strip().lower() for v in request.headers.get_all("Require") for o in v.split(",") if o.strip()]
        caller = identity.alias if identity is not None else "caller"
        from gateway.dialplan.model import RoomSpec

        spec = RoomSpec(id=f"call-{secrets.token_hex(4)}", name=f"{caller} → {label}", numbers=(), pin=None,
                        max_participants=2, layout="voice-switched", audio_codecs=(), video_codecs=(),
                        max_resolution=None, max_bitrate_kbps=None, cascade=None, template=None, line=0,
                        encryption=encryption)
        call = self._invite_into(request, stx, peer, spec, se_value, se_refresher, required, hold_answer=True,
                                 identity=identity)
        if call is None:
            return
        d = dial_out(spec, call.room)
        call._endpoint_dial = d
        cancelled = stx.on_cancel

        def on_cancel(cancel: Request) -> None:
            if not d.called:
                d.cancel()  # CANCEL towards the callee as well
            cancelled(cancel)

        stx.on_cancel = on_cancel

        def answered(leg: Any) -> None:
            log.info("call %s: %s answered", call.dialog.call_id, label)
            room = self.registry.get(spec.id)
            if room is not None:  # a two-party room ends when either party leaves
                room.on("left", lambda *_: self.registry.close(spec.id, "the other party hung up"))
            self._answer(call)

        def failed(f: Any) -> None:
            if call.state != "early":
                return
            err = f.value
            status = getattr(err, "status", None) or 480
            status = status if 400 <= status < 700 else 480
            reason = getattr(err, "reason", None) or str(err) or "the endpoint did not answer"
            call.stop_retransmission()
            told = f"{label}: {reason}" if reveal else f"{label[:32]}: the call out did not connect"
            self._refuse(call.stx, status, told, to_tag=call.local_tag)
            call.terminate(f"the call to {label} failed: {reason}")
            self.registry.close(spec.id, "the call did not connect")

        d.addCallbacks(answered, failed)

    def _invite_into(self, request: Request, stx: ServerTransaction, peer: Peer, spec: Any,
                     se_value: int | None, se_refresher: str | None, required: list[str],
                     hold_answer: bool = False, identity: Any = None) -> "SipCall | None":
        call_id = request.call_id
        # calls not yet confirmed by an ACK hold a seat and RTP ports: only a few per address, and a
        # bounded number in all (a flood of never-ACKed INVITEs must not fill rooms or the port range)
        from gateway.guard import source_key

        src = source_key(peer.host)
        early = [c for c in self.calls.values() if c.state == "early"]
        if len(early) >= MAX_UNCONFIRMED and not self._evict_unconfirmed(early, early):
            self._refuse(stx, 503, f"{MAX_UNCONFIRMED} calls are waiting for their ACK", extra=[("Retry-After", "5")],
                         retransmit=False)
            return
        if src not in _TRUSTED_LOCAL and \
                sum(1 for c in early if getattr(c, "source", None) == src) >= MAX_UNCONFIRMED_PER_SOURCE:
            self._refuse(stx, 503, f"{MAX_UNCONFIRMED_PER_SOURCE} calls from {src} are waiting for their ACK",
                         extra=[("Retry-After", "5")], retransmit=False)
            return
        room = self.registry.get(spec.id)
        if room is not None and room.locked:
            self._refuse(stx, 403, f"room {spec.id} is locked by the operator")
            return
        if spec.max_participants:
            # seats: the room's legs, and the calls on their way in (answered, ACK not yet come) —
            # but not one whose 200 OK has waited long for its ACK: that caller is not coming
            now = time.monotonic()
            coming = sum(1 for c in early if getattr(c, "join_on_ack", False) and c.spec.id == spec.id
                         and (c.answered_at is None or now - c.answered_at < EVICT_UNCONFIRMED_AFTER))
            if (len(room.legs) if room is not None else 0) + coming >= spec.max_participants:
                self._refuse(stx, 486, f"room {spec.id} is full ({spec.max_participants} participants)")
                return
        offer = None
        if request.body:
            if request.content_type not in (None, "application/sdp"):
                self._refuse(stx, 415, f"cannot read a {request.content_type} body", extra=[("Accept", "application/sdp")])
                return
            try:
                offer = SessionDescription.parse(request.body)
            except SdpError as exc:
                self._refuse(stx, 400, f"bad SDP: {exc.reason}")
                return
        call = SipCall(self, request, stx, peer)
        call.source = src
        call.spec = spec
        call.identity = identity
        call.oa = OfferAnswer(self.catalogue, spec.audio_codecs, spec.video_codecs, spec.max_resolution, spec.max_bitrate_kbps)
        call.oa.encryption = combined_encryption(getattr(spec, "encryption", None),
                                                 identity.encryption if identity is not None else None)
        call.oa.secure_signalling = peer.transport == "TLS"
        if se_value is not None or "timer" in _options(request.headers.get_all("Supported")):
            call.session_expires = max(se_value or self.config.session_expires, self.config.min_se)
        try:
            want_video = offer is None or any(m.media == "video" and m.port for m in offer.media)
            call.open_media(want_video)
        except PortsExhausted as exc:
            call.close_media()
            self._refuse(stx, 503, f"no media ports free: {exc}", to_tag=call.local_tag)
            return
        self.calls[call_id] = call
        stx.on_cancel = lambda cancel: self._on_cancel(call)
        try:
            if offer is not None:
                answer, streams = call.oa.answer(offer, call.local_media())
                call.apply_streams(streams)
                call.local_sdp = answer
            else:
                # late offer (Polycom/Cisco): we offer in the 200, the answer comes in the ACK
                # (with SDES keys only where the room requires them: a plain answer in the ACK
                # could not be refused any more)
                srtp = call.oa.encryption == "required"
                if srtp and not call.oa.secure_signalling:
                    raise SdpError("this room requires encrypted media: call over TLS (sips:) with SRTP", status=488)
                call.local_sdp = call.oa.offer(call.local_media(), video=call.has_video, srtp=srtp)
                call.pending_offer = call.local_sdp
        except SdpError as exc:
            call.close_media()
            self.forget(call)
            self._refuse(stx, exc.status if exc.status in (400, 488) else 488, exc.reason, to_tag=call.local_tag,
                         extra=[("Warning", '304 cau "Media type not available"')] if exc.status == 488 else ())
            return
        if call.leg is not None and not (hold_answer or spec.pin):
            # the seat is taken when the caller proves to be there (its ACK): never-ACKed INVITEs
            # fill no room (a PIN room's prompt seats are capped per room and address instead)
            call.join_on_ack = True
        elif call.leg is not None:
            try:
                self._enter_room(call)
            except JoinRefused as exc:
                call.leg.hangup(exc.reason)
                self.forget(call)
                self._refuse(stx, exc.sip_status, exc.reason, to_tag=call.local_tag)
                return
        call.refresher = se_refresher or "uac"
        if hold_answer or self.config.answer_delay > 0:
            # ring first (an operator knob: some endpoints expect ringback); CANCEL can arrive meanwhile.
            # A caller that requires 100rel gets no 180 at all: RFC 3262 then has nothing to make reliable.
            if "100rel" not in required:
                stx.respond(stx.make_response(180, to_tag=call.local_tag))
            if not hold_answer:
                call._answer_timer = self.reactor.callLater(self.config.answer_delay, self._answer, call)
        else:
            self._answer(call)
        return call

    def _evict_unconfirmed(self, pool: list, early: list) -> bool:
        """End the oldest call of ``pool`` whose 200 OK has waited EVICT_UNCONFIRMED_AFTER for its
        ACK (a real caller ACKs within a round trip), quietly: no BYE towards an address that
        never answered. False when none has waited that long."""
        now = time.monotonic()
        stale = [c for c in pool if c.answered_at is not None and now - c.answered_at >= EVICT_UNCONFIRMED_AFTER]
        if not stale:
            return False
        oldest = min(stale, key=lambda c: c.answered_at)
        self.stats["evicted"] = self.stats.get("evicted", 0) + 1
        _repeated("evicted", logging.WARNING, "call %s from %s: no ACK after %.1f s while %d calls wait for "
                  "theirs; ended to make room", oldest.dialog.call_id, oldest.peer.host,
                  now - oldest.answered_at, len(early))
        oldest.terminate("no ACK (ended to make room for new calls)")
        for group in (pool, early):
            if oldest in group:
                group.remove(oldest)
        return True

    def _answer(self, call: SipCall) -> None:
        if call.state != "early":
            return
        stx, spec = call.stx, call.spec
        extra = []
        if call.session_expires:
            extra = [("Session-Expires", f"{call.session_expires};refresher={call.refresher}"), ("Require", "timer")]
        ok = call.final(200, None, call.local_sdp.serialize().encode(), extra=extra)
        call.answered_at = time.monotonic()
        self.stats["answered"] += 1
        call.retransmission = stx.retransmit_2xx_until_ack(ok, lambda: self._ack_timeout(call))
        call_id = call.dialog.call_id
        log.info("SIP call %s from %s %s room %s (%s)", call_id, call.display_name(),
                 "waits for the PIN of" if spec.pin else "answered into", spec.id,
                 call.leg.audio.rx if call.leg and call.leg.audio else "late offer")

    def _enter_room(self, call: SipCall) -> None:
        """Join the room now, or first through the PIN gate when the room has a PIN."""
        def refused(exc: JoinRefused) -> None:
            call._on_leg_hangup(exc.reason)

        def joined(room: Any) -> None:
            call.room = room

        call.gate = admit(self.registry, call.spec, call.leg, reactor=self.reactor, on_joined=joined,
                          on_refused=refused)

    def _refuse(self, stx: ServerTransaction, status: int, reason: str, extra=(), to_tag: str | None = None,
                retransmit: bool = True) -> None:
        self.stats["refused"] += 1
        # the same refusal again and again (a flood, a misdialling site) is one line with a count
        _repeated(("refused", status, reason), logging.INFO, "SIP INVITE refused %d: %s", status, reason)
        self._respond(stx, status, reason, extra=list(extra), to_tag=to_tag, retransmit=retransmit)

    def _ack_timeout(self, call: SipCall) -> None:
        if call.state == "early":
            log.warning("call %s: no ACK for our 200 OK; ending it", call.dialog.call_id)
            call.state = "confirmed"  # so that a BYE goes out (RFC 3261 §13.3.1.4)
            call._on_leg_hangup("no ACK received")

    def _on_ack(self, request: Request) -> None:
        call = self.calls.get(request.call_id)
        if call is None or request.to.tag != call.local_tag:
            return  # ACK for a non-2xx is absorbed by the transaction layer; stray ones dropped
        call.stop_retransmission()
        if call.pending_offer is not None:
            offer, call.pending_offer = call.pending_offer, None
            if not request.body:
                call.state = "confirmed"
                call._on_leg_hangup("late offer: the ACK carried no SDP answer")
                return
            try:
                answer = SessionDescription.parse(request.body)
                streams = call.oa.process_answer(offer, answer)
                call.apply_streams(streams)
                if call.room is None and getattr(call, "gate", None) is None:  # the first ACK, not a re-INVITE's
                    self._enter_room(call)
            except (SdpError, JoinRefused) as exc:
                call.state = "confirmed"
                call._on_leg_hangup(f"unusable answer in ACK: {getattr(exc, 'reason', exc)}")
                return
        if call.join_on_ack:
            call.join_on_ack = False
            try:
                self._enter_room(call)
            except JoinRefused as exc:          # filled up since the INVITE: the call ends with the reason
                call.state = "confirmed"
                call._on_leg_hangup(exc.reason)
                return
        if call.state == "early":
            call.state = "confirmed"
            call.dialog.confirmed = True
            call.arm_session_timer()
        if call.media is not None:
            call.media.confirm()       # the caller is real: media may flow beyond the first second

    def _on_cancel(self, call: SipCall) -> None:
        if call.state != "early":
            return
        log.info("call %s cancelled by the caller", call.dialog.call_id)
        call.stop_retransmission()
        self._respond(call.stx, 487, "Request Terminated", to_tag=call.local_tag)
        call.terminate("cancelled")

    # -- in-dialog requests -----------------------------------------------------------------
    def _on_bye(self, call: SipCall, request: Request, stx: ServerTransaction) -> None:
        self.stats["byes"] += 1
        self._respond(stx, 200, None, to_tag=call.local_tag)
        call.terminate("the participant hung up")

    def _on_prack(self, call: SipCall, request: Request, stx: ServerTransaction) -> None:
        self._respond(stx, 200, None, to_tag=call.local_tag)

    def _offered_video(self, call: SipCall, offer: SessionDescription) -> None:
        """A renegotiation that adds video to a call that had none: open its RTP session first, so
        the answer can take it (no ports left: the answer declines it, the call goes on)."""
        if call.has_video or call.media is None:
            return
        if any(m.media == "video" and m.port for m in offer.media):
            try:
                call.media.open("video")
            except PortsExhausted as exc:
                log.warning("call %s: no RTP ports for the video it adds: %s", call.dialog.call_id, exc)

    def _on_reinvite(self, call: SipCall, request: Request, stx: ServerTransaction) -> None:
        try:
            self._session_refresh(call, request)
        except BadSessionExpires as exc:
            self._respond(stx, 400, str(exc), to_tag=call.local_tag)
            return
        if not request.body:
            # offer-less re-INVITE: offer our current SDP again (answer arrives in the ACK)
            offer = call.oa.reoffer(call.local_sdp, call.local_media())
            call.local_sdp = offer
            call.pending_offer = offer
        else:
            try:
                offer = SessionDescription.parse(request.body)
                self._offered_video(call, offer)
                answer, streams = call.oa.answer(offer, call.local_media(), previous=call.local_sdp)
                call.apply_streams(streams)
                call.local_sdp = answer
            except SdpError as exc:
                # RFC 3261 §14.2: a failed re-INVITE leaves the session as it was
                self._respond(stx, 488, exc.reason, to_tag=call.local_tag)
                return
        call.stop_retransmission()
        call.stx = stx
        ok = call.final(200, None, call.local_sdp.serialize().encode(), extra=self._timer_headers(call))
        call.retransmission = stx.retransmit_2xx_until_ack(ok, None)

    def _on_update(self, call: SipCall, request: Request, stx: ServerTransaction) -> None:
        try:
            self._session_refresh(call, request)
        except BadSessionExpires as exc:
            self._respond(stx, 400, str(exc), to_tag=call.local_tag)
            return
        body = b""
        if request.body:
            try:
                offer = SessionDescription.parse(request.body)
                self._offered_video(call, offer)
                answer, streams = call.oa.answer(offer, call.local_media(), previous=call.local_sdp)
                call.apply_streams(streams)
                call.local_sdp = answer
                body = answer.serialize().encode()
            except SdpError as exc:
                self._respond(stx, 488, exc.reason, to_tag=call.local_tag)
                return
        r = stx.make_response(200, None, to_tag=call.local_tag)
        r.headers.add("Contact", call.contact())
        for name, value in self._timer_headers(call):
            r.headers.add(name, value)
        if body:
            r.headers.add("Content-Type", "application/sdp")
            r.body = body
        stx.respond(r)

    def _session_refresh(self, call: SipCall, request: Request) -> None:
        """The refresh a re-INVITE / UPDATE carries (BadSessionExpires passes up: a 400)."""
        se, _ = _session_expires(request.headers.get("Session-Expires"))
        if se is not None:
            call.session_expires = max(se, self.config.min_se)
        call.arm_session_timer()

    def _timer_headers(self, call: SipCall) -> list[tuple[str, str]]:
        if not call.session_expires:
            return []
        return [("Session-Expires", f"{call.session_expires};refresher=uac"), ("Require", "timer")]

    def _on_info(self, call: SipCall, request: Request, stx: ServerTransaction) -> None:
        ctype = request.content_type or ""
        body = request.body.decode("utf-8", "replace")
        digit = None
        if ctype == "application/dtmf-relay":
            m = re.search(r"(?im)^\s*signal\s*=\s*(\S)", body)
            digit = m.group(1).upper() if m else None
        elif ctype == "application/dtmf":
            digit = body.strip()[:1].upper() or None
        elif ctype == "application/media_control+xml":
            if "picture_fast_update" in body and call.leg is not None:
                call.leg.emit("keyframe_request", stream="video")
            self._respond(stx, 200, None, to_tag=call.local_tag)
            return
        else:
            self._respond(stx, 415, f"INFO with {ctype or 'no body'} is not understood", to_tag=call.local_tag,
                          extra=[("Accept", ACCEPT)])
            return
        if digit is None or digit not in DTMF_DIGITS:
            self._respond(stx, 400, "DTMF INFO without a digit 0-9 * # A-D", to_tag=call.local_tag)
            return
        self._respond(stx, 200, None, to_tag=call.local_tag)
        if call.leg is not None:
            call.leg.emit("dtmf", digit=digit)

    # -- requests we send ------------------------------------------------------------------
    def send_fast_update(self, call: SipCall) -> None:
        """Ask the far end for a keyframe by SIP INFO (RFC 5168), for peers without RTCP feedback."""
        if call.state != "confirmed" or call.dialog is None or call.fast_update_refused:
            return
        body = ('<?xml version="1.0" encoding="utf-8" ?><media_control><vc_primitive><to_encoder>'
                '<picture_fast_update/></to_encoder></vc_primitive></media_control>').encode()
        info = call.dialog.request("INFO", call.contact(), body=body, content_type="application/media_control+xml")

        def answered(response: Any, tx: Any) -> None:
            code = getattr(response, "status", None)
            if code is None or code >= 300:      # refused (415, 501...) or unanswered: ask by RTCP only
                call.fast_update_refused = True
                log.info("call %s: the far end does not take INFO picture_fast_update (%s); "
                         "keyframes are asked for by RTCP PLI only", call.dialog.call_id, code or "no answer")
        self.tx.client(info, call.dialog.peer, answered)

    def send_bye(self, call: SipCall, reason: str) -> None:
        bye = call.dialog.request("BYE", call.contact(), extra=[("Reason", f'SIP;cause=200;text="{_quote(reason)}"')])
        self.tx.client(bye, call.dialog.peer, lambda response, tx: None)

    def close_all(self, reason: str) -> None:
        for call in list(self.calls.values()):
            if call.state == "confirmed":
                call._on_leg_hangup(reason)
            else:
                call.terminate(reason)


def _accepts_sdp(values: list[str]) -> bool:
    """No Accept header means application/sdp (RFC 3261 §20.1); else it must list it or a wildcard."""
    if not values:
        return True
    types = {v.split(";")[0].strip().lower() for value in values for v in value.split(",") if v.strip()}
    return bool(types & {"application/sdp", "application/*", "*/*"}) or not types


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


def _options(values: list[str]) -> set[str]:
    return {o.strip().lower() for v in values for o in v.split(",") if o.strip()}


#: calls answered but not yet ACKed (they hold seats and RTP ports), from one address / in all
MAX_UNCONFIRMED_PER_SOURCE = 4
MAX_UNCONFIRMED = 200
#: with MAX_UNCONFIRMED reached, a call whose 200 OK has waited this long for its ACK is ended
EVICT_UNCONFIRMED_AFTER = 2.0
#: the gateway's own host (tests, a local proxy): not limited per address, only in all
_TRUSTED_LOCAL = ("127.0.0.1", "::/64")   # source_key of ::1 is its /64

#: RTP packets a call's stream may send before the caller's ACK (or its RTP) confirms it: half a second
#: of audio — an INVITE that names someone else's address in its SDP and never ACKs gets that much,
#: not the 30 s of a 2xx retransmission
UNCONFIRMED_PACKETS = 25

#: the longest session interval we take (RFC 4028 delta-seconds; a day is far above any refresh)
MAX_SESSION_EXPIRES = 86400


class BadSessionExpires(ValueError):
    """A Session-Expires that is not delta-seconds within bounds: the request gets a 400."""


def _session_expires(value: str | None) -> tuple[int | None, str | None]:
    """(seconds, refresher) of a Session-Expires header; BadSessionExpires for one that is not
    1-10 digits or above MAX_SESSION_EXPIRES (a 400-digit value must not reach int() and timers)."""
    if not value:
        return None, None
    parts = value.split(";")
    text = parts[0].strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 10) or int(text) > MAX_SESSION_EXPIRES:
        shown = text if len(text) <= 12 else text[:12] + "…"
        raise BadSessionExpires(f"Session-Expires {shown!r} is not a number of seconds up to {MAX_SESSION_EXPIRES}")
    seconds = int(text)
    refresher = None
    for p in parts[1:]:
        k, _, v = p.partition("=")
        if k.strip().lower() == "refresher" and v.strip().lower() in ("uac", "uas"):
            refresher = v.strip().lower()
    return seconds, refresher
