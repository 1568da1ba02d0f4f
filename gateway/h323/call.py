"""H.225.0 call signalling (TCP, TPKT-framed Q.931) for one H.323 call, both directions.

:class:`H323Call` is a Twisted :class:`Protocol` for the call signalling
connection of one call (H.225.0 does one call per connection here:
``multipleCalls`` false) and the state machine around it.  It knows nothing
of rooms or media engines: its owner gives it local RTP addresses
(``media_address``) and hears about logical channels (``on_channels``),
connection, user input and release through callbacks.  The gateway
(:mod:`gateway.h323.endpoint`) turns that into a Leg; the interop test
endpoint (:mod:`interop_tests.h323.endpoint`) into an RTP test peer.

H.245 travels in all three ways H.323 knows, in both roles:

1. **Fast start** (H.323 §8.1.7): the caller's Setup carries OpenLogicalChannel
   proposals; the callee answers in CallProceeding (and media flows at once).
   H.245 may still follow (tunnelled or separate) for user input and commands.
2. **Tunnelling** (H.323 §8.2.1): H.245 PDUs ride in ``h245Control`` of H.225.0
   messages; when nothing else is going out they go in a FACILITY with the
   ``empty`` body.  A reply that says ``h245Tunnelling`` false turns it off.
3. **Separate H.245 connection** (H.323 §8.1.1): an ``h245Address`` in Setup /
   Connect / Facility(startH245); the side that receives it connects; TPKT on
   that connection too.

Malformed input (TPKT, Q.931, PER) is logged and the call released with
RELEASE COMPLETE (cause 95 invalid message, 100 invalid IE contents, 96
mandatory IE missing) and the connection closed.  Nothing raises out of the
protocol methods.
"""
from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import ClientFactory, Factory, Protocol

from gateway.catalogue import Catalogue

from . import asn1, h2356, q931
from .h245 import TERMINAL_TYPES, H245Session, LogicalChannel
from .q931 import MessageType, Q931Error, Q931Message
from .tpkt import TpktError, TpktFramer, tpkt_frame

__all__ = ["CallOptions", "CallRejected", "H225_PORT", "H323Call", "H323CallFactory", "parse_destination",
           "place_call"]

log = logging.getLogger("cau.h323")

H225_PORT = 1720
Address = tuple[str, int]
Alias = tuple[str, str]
MediaAddress = tuple[Address, Address]   # (RTP, RTCP)

_refs = itertools.count(int.from_bytes(os.urandom(2), "big") % 30000 + 1)
_END_SESSION = ("command", ("endSessionCommand", ("disconnect", 0)))

# Q.931 call states (Q.931 §2.1) for STATUS
_STATE_NUMBER = {"idle": 0, "outgoing": 1, "proceeding": 3, "incoming": 6, "answering": 9,
                 "connected": 10, "released": 0}


SETUP_WAIT = 10.0  # seconds an incoming connection may stay without a Setup


@dataclass
class CallOptions:
    """How this side runs a call.  ``separate_h245``: a caller that does not tunnel puts an
    ``h245Address`` (a listener of ours) in its Setup; a callee that does not tunnel always
    offers one in Connect unless the caller gave one."""

    fast_start: bool = True
    tunnelling: bool = True
    separate_h245: bool = False
    audio_codecs: tuple[str, ...] = ("G722", "PCMU", "PCMA")
    video_codecs: tuple[str, ...] = ("H264", "H263")
    open_video: bool = True               # open a video channel / offer video when both sides have it
    terminal_type: int = TERMINAL_TYPES["mcu+avMP"]
    endpoint_kind: str = "mcu"
    aliases: tuple[Alias, ...] = ()      # our own (sourceAddress of a Setup we send)
    display: str | None = None
    bind: str = "127.0.0.1"              # where H.245 listeners bind
    advertise: str = "127.0.0.1"         # the address we put in h245Address / media addresses
    #: (peer ip) -> our address as that peer reaches it; set once the connection is up (bound to
    #: every address without --advertise: gateway.netaddr); None: ``advertise`` as given
    host_for: Callable[[str], str] | None = None
    tcs_options: dict[str, Any] = field(default_factory=dict)
    h245_timeout: float = 10.0           # a separate H.245 connection that does not come up
    #: H.235.6 media encryption (DH in Setup/Connect, AES-128 RTP): "off", "preferred" (when the far
    #: end does it too) or "required" (a call without it is released); the callee's owner may change
    #: :attr:`H323Call.media_encryption` in ``on_incoming`` (the room's policy)
    media_encryption: str = "off"


class CallRejected(Exception):
    """Raised by an owner's ``on_incoming`` to refuse a Setup: RELEASE COMPLETE with ``cause``."""

    def __init__(self, cause: int, text: str, reason: str | None = None) -> None:
        super().__init__(text)
        self.cause = cause
        self.text = text
        self.reason = reason


def parse_destination(destination: str, default_port: int = H225_PORT) -> tuple[str | None, str, int]:
    """``alias@ip[:port]`` / ``h323:alias@ip[:port]`` / ``ip[:port]`` → (alias or None, ip, port)."""
    text = destination.strip()
    if text.lower().startswith("h323:"):
        text = text[5:]
    alias, _, hostport = text.rpartition("@")
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif hostport.count(":") == 1:
        host, _, port = hostport.partition(":")
    else:
        host, port = hostport, ""
    if not host:
        raise ValueError(f"H.323 destination {destination!r}: no host (expected alias@ip[:port])")
    if port and not port.isdigit():
        raise ValueError(f"H.323 destination {destination!r}: port {port!r} is not a number")
    return (alias or None), host, int(port) if port else default_port


def _alias_for(text: str) -> Alias:
    return ("dialledDigits", text) if text and set(text) <= set("0123456789#*,") else ("h323-ID", text)


def _is_video_proposal(data: bytes) -> bool:
    try:
        olc = asn1.decode_open_logical_channel(data)
    except asn1.Asn1Error:
        return False
    for key in ("forwardLogicalChannelParameters", "reverseLogicalChannelParameters"):
        p = olc.get(key)
        if p and isinstance(p.get("dataType"), tuple) and p["dataType"][0] == "videoData":
            return True
    return False


class _H245Protocol(Protocol):
    """A separate H.245 TCP connection: TPKT-framed MultimediaSystemControlMessages."""

    def __init__(self, call: H323Call) -> None:
        self.call = call
        self.framer = TpktFramer()
        self.connected = False

    def connectionMade(self) -> None:  # noqa: N802 (Twisted)
        self.connected = True
        self.call._h245_connected(self)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        for item in self.framer.feed(data):
            if isinstance(item, TpktError):
                log.warning("%s: H.245 connection: %s", self.call.name, item)
                self.transport.loseConnection()
                self.call._h245_broken(str(item))
                return
            self.call._h245_pdu(item)

    def send(self, pdu: bytes) -> None:
        if self.connected:
            self.transport.write(tpkt_frame(pdu))

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self.connected = False
        self.call._h245_lost(self)


class _H245Listen(Factory):
    def __init__(self, call: H323Call) -> None:
        self.call = call
        self.used = False

    def buildProtocol(self, addr: Any) -> Protocol | None:  # noqa: N802
        if self.used or self.call.state == "released":
            return None
        self.used = True
        return _H245Protocol(self.call)


class _H245Connect(ClientFactory):
    def __init__(self, call: H323Call) -> None:
        self.call = call

    def buildProtocol(self, addr: Any) -> Protocol:  # noqa: N802
        return _H245Protocol(self.call)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:  # noqa: N802
        self.call._h245_connect_failed(reason.getErrorMessage())


class H323Call(Protocol):
    """One H.323 call on its call signalling connection.  ``role``: "callee" | "caller".

    Hooks (set by the owner; exceptions in them are logged):

    Every hook gets the call first.

    * ``media_address(call, media) -> ((ip, rtp), (ip, rtcp)) | None``: our receive
      addresses for "audio" / "video" (None: we take no such media)
    * ``on_incoming(call)``: callee, after a Setup; raise :class:`CallRejected` to refuse
    * ``on_channels(call)``: a logical channel opened or closed (see :attr:`channels`)
    * ``on_connected(call)``, ``on_released(call)`` (once; :attr:`cause`, :attr:`release_text`)
    * ``on_user_input(call, digit)``, ``on_fast_update(call, n)``, ``on_flow_control(call, n, bitrate)``
    """

    def __init__(self, role: str, options: CallOptions, catalogue: Catalogue, *, reactor: Any = None,
                 name: str | None = None) -> None:
        if role not in ("callee", "caller"):
            raise ValueError(f"role {role!r}: callee or caller")
        if reactor is None:
            from twisted.internet import reactor as _r
            reactor = _r
        self.role = role
        self.created = time.monotonic()        # the connection (a SETUP follows): call set-up time
        self.options = options
        self.catalogue = catalogue
        self.reactor = reactor
        self.name = name or f"h323-{role}"
        self.state = "idle"   # idle | outgoing | proceeding | incoming | answering | connected | released
        self.call_ref = 0
        self.call_id = b""
        self.conference_id = b""
        self.remote: Address | None = None
        self.dialed: str | None = None         # what the caller dialed (called number / first alias)
        self.destination: list[Alias] = []     # destinationAddress aliases (+ called number)
        self.caller: str | None = None
        self.caller_aliases: list[Alias] = []
        self.display: str | None = None
        self.tunnelling = options.tunnelling
        self.fast_start = "none"               # none | offered | active | refused
        self.media_encryption = options.media_encryption
        self._dh: h2356.KeyAgreement | None = None
        #: the H.235.6 key-encryption key once both halfkeys are known (None: media stays plain)
        self.media_key: bytes | None = None
        self.h245: H245Session | None = None
        self.h245_mode = "none"                # none | tunnelled | separate
        self._h245_started = False
        self._h245_conn: _H245Protocol | None = None
        self._h245_listener: Any = None
        self._h245_connecting = False
        self._h245_timer: Any = None
        self._tunnel_out: list[bytes] = []
        self._separate_out: list[bytes] = []
        self._flush_call: Any = None
        self._end_sent = False
        self.framer = TpktFramer()
        self.cause: int | None = None          # Q.850 cause of the release
        self.release_reason: str | None = None
        self.remote_vendor: str = ""            # the far end's H.225.0 vendor, product and version
        self.release_text = ""
        self.released_by: str | None = None    # "local" | "remote"
        self.received: list[str] = []          # Q.931 message type names, in order (diagnostics)
        self.sent: list[str] = []
        # outgoing-call parameters (caller)
        self._dest_aliases: list[Alias] = []
        self._dest_address: Address | None = None
        self.released = defer.Deferred()       # fires with self when the call is over
        self.connected_d = defer.Deferred()    # fires with self at Connect (errback never: see released)
        # hooks
        self.media_address: Callable[[H323Call, str], MediaAddress | None] = lambda call, media: None
        self.on_incoming: Callable[[H323Call], None] | None = None
        #: set by ``on_incoming`` to answer later: a Deferred; Alerting now, Connect when it fires,
        #: release with its CallRejected's cause when it fails
        self.hold_connect: defer.Deferred | None = None
        self.on_channels: Callable[[H323Call], None] | None = None
        self.on_connected: Callable[[H323Call], None] | None = None
        self.on_released: Callable[[H323Call], None] | None = None
        self.on_user_input: Callable[[H323Call, str], None] | None = None
        self.on_fast_update: Callable[[H323Call, int | None], None] | None = None
        self.on_flow_control: Callable[[H323Call, int | None, int | None], None] | None = None

    # ------------------------------------------------------------------ plumbing

    def _hook(self, name: str, *args: Any) -> Any:
        fn = getattr(self, name)
        if fn is None:
            return None
        try:
            return fn(self, *args)
        except CallRejected:
            raise
        except Exception:
            log.exception("%s: %s hook raised", self.name, name)
            return None

    @property
    def channels(self) -> dict[tuple[str, int], LogicalChannel]:
        return self.h245.channels if self.h245 is not None else {}

    def channel(self, media: str, direction: str) -> LogicalChannel | None:
        """The open channel of ``media`` in ``direction`` ("rx": we receive, "tx": we send)."""
        found = None
        for ch in self.channels.values():
            if ch.media == media and ch.direction == direction and ch.state == "open":
                found = ch
        return found

    def _from_destination(self) -> bool:
        return self.role == "callee"

    def _send(self, msg: Q931Message) -> None:
        if self.transport is None:
            return
        try:
            data = msg.encode()
        except Q931Error as exc:
            log.error("%s: cannot encode %s: %s", self.name, msg.type_name, exc)
            return
        self.sent.append(msg.type_name)
        log.debug("%s: send %s", self.name, msg.type_name)
        self.transport.write(tpkt_frame(data))

    def _take_tunnel(self) -> list[bytes]:
        out, self._tunnel_out = self._tunnel_out, []
        return out

    # ------------------------------------------------------------------ Twisted

    def connectionMade(self) -> None:  # noqa: N802
        peer = self.transport.getPeer()
        self.remote = (peer.host, peer.port)
        if self.options.host_for is not None:
            self.options.advertise = self.options.host_for(peer.host)
        if self.role == "caller":
            self._send_setup()
        else:
            self.state = "idle"
            log.info("%s: call signalling connection from %s:%d", self.name, *self.remote)
            # a connection that never sends a Setup (a port scan, a half-open peer) must not stay for ever
            self._setup_wait = self.reactor.callLater(SETUP_WAIT, self._no_setup)

    def _no_setup(self) -> None:
        self._setup_wait = None
        if self.state == "idle" and self.transport is not None:
            log.info("%s: no Setup within %g s; closing the connection", self.name, SETUP_WAIT)
            self._finish(102, "no Setup received", by="local")

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        for item in self.framer.feed(data):
            if self.state == "released":
                return
            if isinstance(item, TpktError):
                self._malformed(95, str(item))
                return
            try:
                self._message(item)
            except asn1.Asn1Error as exc:     # broken ASN.1 (a wrong protocolIdentifier ...): expected input
                self._malformed(100 if exc.kind == "decode" else 111, str(exc))
                return
            except Exception as exc:   # a bug or a decodable-but-broken PDU: release, never crash
                log.exception("%s: cannot handle a message", self.name)
                cause = 100 if isinstance(exc, (KeyError, TypeError, ValueError, IndexError)) else 111
                self._malformed(cause, f"{type(exc).__name__}: {exc}")
                return

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        if self.state != "released":
            log.info("%s: call signalling connection lost", self.name)
            self._finish(16 if self.state == "connected" else 41, "call signalling connection lost",
                         by="remote", close=False)

    # ------------------------------------------------------------------ receiving

    def _malformed(self, cause: int, why: str) -> None:
        log.warning("%s: malformed input from %s: %s: releasing with cause %d", self.name, self.remote, why, cause)
        self.hangup(cause, f"malformed message: {why}")

    def _message(self, payload: bytes) -> None:
        try:
            msg = q931.decode(payload)
        except Q931Error as exc:
            self._malformed(95, exc.reason)
            return
        self.received.append(msg.type_name)
        try:
            uu = msg.user_user
        except Q931Error as exc:
            if self.call_ref == 0 and msg.message_type == MessageType.SETUP:
                self.call_ref = msg.call_reference
            self._malformed(100, exc.reason)
            return
        mtype = msg.message_type
        log.debug("%s: received %s", self.name, msg.type_name)
        if self.role == "callee" and self.state == "idle":
            self.call_ref = msg.call_reference
            if mtype != MessageType.SETUP:
                self._malformed(101, f"{msg.type_name} before SETUP")
                return
            if uu is None:
                self._malformed(96, "SETUP without the user-user IE")
                return
            self._on_setup(msg, uu)
            return
        if msg.call_reference != self.call_ref:
            log.warning("%s: %s for call reference %d (ours %d) ignored", self.name, msg.type_name,
                        msg.call_reference, self.call_ref)
            return
        if mtype == MessageType.RELEASE_COMPLETE:
            self._on_release_complete(msg, uu)
        elif mtype == MessageType.STATUS_ENQUIRY:
            self._send(q931.build_status(self.call_ref, self.call_id or bytes(16),
                                         from_destination=self._from_destination(),
                                         call_state=_STATE_NUMBER.get(self.state, 0)))
        elif mtype == MessageType.STATUS:
            pass
        elif mtype in (MessageType.CALL_PROCEEDING, MessageType.ALERTING, MessageType.PROGRESS,
                       MessageType.CONNECT, MessageType.FACILITY, MessageType.INFORMATION,
                       MessageType.NOTIFY, MessageType.SETUP_ACKNOWLEDGE, MessageType.CONNECT_ACKNOWLEDGE,
                       MessageType.USER_INFORMATION):
            if uu is None:
                return          # Q.931-only information (e.g. keypad) carries nothing for us
            self._on_uu_message(msg, uu)
        elif mtype == MessageType.SETUP:
            log.warning("%s: a second SETUP on this connection ignored", self.name)
        else:
            self._send(q931.build_status(self.call_ref, self.call_id or bytes(16),
                                         from_destination=self._from_destination(),
                                         call_state=_STATE_NUMBER.get(self.state, 0), cause=97))

    def _tunnel_in(self, pdu: dict[str, Any]) -> None:
        control = pdu.get("h245Control") or []
        if not control:
            return
        if self.h245 is None:
            log.warning("%s: tunnelled H.245 before the call is set up ignored", self.name)
            return
        if self.h245_mode == "none":
            self.h245_mode = "tunnelled"
        for item in control:
            self._h245_pdu(bytes(item))

    # -- callee ------------------------------------------------------------------------

    def _on_setup(self, msg: Q931Message, uu: dict[str, Any]) -> None:
        wait = getattr(self, "_setup_wait", None)
        if wait is not None and wait.active():
            wait.cancel()
        pdu = uu["h323-uu-pdu"]
        kind, body = pdu["h323-message-body"]
        if kind != "setup":
            self._malformed(100, f"SETUP carrying a {kind} body")
            return
        asn1.h225_version(body["protocolIdentifier"])
        info = body.get("sourceInfo")
        if isinstance(info, dict) and isinstance(info.get("vendor"), dict):
            self.remote_vendor = q931.vendor_text(info["vendor"])
        self.state = "incoming"
        self.call_id = bytes(body["callIdentifier"]["guid"]) if "callIdentifier" in body else os.urandom(16)
        self.conference_id = bytes(body["conferenceID"])
        called = msg.called_number
        aliases = [asn1.parse_alias(a) for a in body.get("destinationAddress", [])]
        if called is not None and called.digits:
            aliases.insert(0, ("dialledDigits", called.digits))
        self.destination = aliases
        self.dialed = next((t for k, t in aliases if k in ("dialledDigits", "partyNumber")), None) or \
            next((t for k, t in aliases if k in ("h323-ID", "url-ID", "email-ID")), None)
        self.caller_aliases = [asn1.parse_alias(a) for a in body.get("sourceAddress", [])]
        calling = msg.calling_number
        self.caller = (calling.digits if calling is not None and calling.digits else None) or \
            next((t for k, t in self.caller_aliases if k != "transportID"), None)
        self.display = msg.display
        remote_tunnelling = bool(pdu.get("h245Tunnelling", False))
        self.tunnelling = self.options.tunnelling and remote_tunnelling
        log.info("%s: SETUP from %s (%s) to %r; fastStart %s, tunnelling %s, h245Address %s", self.name,
                 self.caller, self.remote, self.dialed, "yes" if body.get("fastStart") else "no",
                 remote_tunnelling, "yes" if body.get("h245Address") else "no")
        try:
            if self.on_incoming is not None:
                self.on_incoming(self)  # not through _hook: a failure here must refuse the call, not answer it
        except CallRejected as rej:
            log.info("%s: call to %r refused: cause %d (%s)", self.name, self.dialed, rej.cause, rej.text)
            self.hangup(rej.cause, rej.text, reason=rej.reason)
            return
        except Exception:
            log.exception("%s: routing the call to %r failed; releasing it", self.name, self.dialed)
            self.hangup(41, "temporary failure while routing the call")
            return
        if self.state == "released":
            return
        connect_tokens = self._agree_as_callee(body.get("tokens"))
        if self.state == "released":
            return
        self._make_h245()
        if self.tunnelling:
            self._tunnel_in(pdu)
        fs_answer: list[bytes] = []
        offered = [bytes(x) for x in body.get("fastStart") or []]
        if offered and self.media_key is not None:
            # fast-start channels would be plain (the keys go in H.245): open them through H.245
            log.info("%s: fast start declined: H.235.6 media is agreed, channels open encrypted", self.name)
            offered = []
        if offered and self.options.fast_start:
            local: dict[str, MediaAddress] = {}
            for media in ("audio", "video"):
                if media == "video" and not (self.options.open_video and any(map(_is_video_proposal, offered))):
                    continue
                addr = self._hook("media_address", media)
                if addr is not None:
                    local[media] = addr
            fs_answer, chans = self.h245.fast_start_answer(offered, local)
            self.fast_start = "active" if fs_answer else "refused"
            log.info("%s: fast start %s (%s)", self.name, self.fast_start,
                     ", ".join(f"{c.direction} {c.codec_name}" for c in chans) or "no proposal acceptable")
        remote_h245 = asn1.parse_transport_address(body.get("h245Address")) if body.get("h245Address") else None
        self.state = "answering"
        self._send(q931.build_call_proceeding(self.call_ref, self.call_id, h245_tunnelling=self.tunnelling,
                                              fast_start=fs_answer or None,
                                              endpoint_kind=self.options.endpoint_kind,
                                              display=self.options.display))
        if fs_answer:
            self._hook("on_channels")
        h245_address = None
        if self.tunnelling:
            self.h245_mode = "tunnelled"
            self._start_h245()
        elif remote_h245 is not None:
            self._connect_h245(remote_h245)
        else:
            h245_address = self._listen_h245()
        if self.state == "released":
            return
        hold = self.hold_connect
        if hold is not None:
            # the owner answers later (a caller bridged out: Connect when the far end answers)
            self._send(q931.build_alerting(self.call_ref, self.call_id, h245_tunnelling=self.tunnelling,
                                           h245_control=self._take_tunnel() if self.tunnelling else (),
                                           endpoint_kind=self.options.endpoint_kind, display=self.options.display))

            def go(_: Any) -> None:
                if self.state == "answering":
                    self._send_connect(h245_address, connect_tokens)

            def refused(f: Any) -> None:
                if self.state == "released":
                    return
                if f.check(CallRejected):
                    self.hangup(f.value.cause, f.value.text, reason=f.value.reason)
                else:
                    log.warning("%s: answering failed: %s", self.name, f.getErrorMessage())
                    self.hangup(41, "temporary failure")

            hold.addCallbacks(go, refused)
            return
        self._send_connect(h245_address, connect_tokens)

    def _send_connect(self, h245_address: Any, connect_tokens: Any) -> None:
        self.state = "connected"
        self._send(q931.build_connect(self.call_ref, self.conference_id, self.call_id,
                                      h245_tunnelling=self.tunnelling, h245_address=h245_address,
                                      h245_control=self._take_tunnel() if self.tunnelling else (),
                                      endpoint_kind=self.options.endpoint_kind, display=self.options.display,
                                      tokens=connect_tokens))
        self._connected()

    # -- H.235.6 key agreement ------------------------------------------------------------

    def _agree_as_callee(self, tokens: Any) -> list[dict[str, Any]] | None:
        """The caller's DH halfkey → our own and the key; the CONNECT's tokens (None: plain media).
        A ``required`` call without them is released."""
        if self.media_encryption == "off":
            return None
        peer = h2356.read_dh_tokens(tokens)
        if peer is not None:
            dh = h2356.KeyAgreement()
            try:
                self.media_key = dh.master_key(peer)
            except ValueError as exc:
                log.warning("%s: %s: no media encryption", self.name, exc)
                self.media_key = None
            else:
                log.info("%s: H.235.6: DH-1024 agreed, media will be AES-128", self.name)
                return dh.tokens()
        if self.media_encryption == "required":
            self.hangup(31, "this room requires encrypted media (H.235.6: DH-1024 and AES-128); the "
                            "SETUP offered none", reason="securityDenied")
        return None

    def _agree_as_caller(self, tokens: Any) -> None:
        peer = h2356.read_dh_tokens(tokens)
        if peer is not None:
            try:
                self.media_key = self._dh.master_key(peer)
            except ValueError as exc:
                log.warning("%s: %s: no media encryption", self.name, exc)
        if self.media_key is not None:
            log.info("%s: H.235.6: DH-1024 agreed, media will be AES-128", self.name)
            if self.h245 is not None:
                self.h245.media_key = self.media_key
        elif self.media_encryption == "required":
            self.hangup(31, "the far end does not encrypt its media (no H.235.6 DH token in CONNECT)",
                        reason="securityDenied")
        elif self.h245 is not None:
            self.h245.offer_encryption = False        # plain after all: stop declaring it

    # -- caller ------------------------------------------------------------------------

    def dial(self, aliases: Sequence[Alias], address: Address) -> None:
        """Before connecting: what the Setup will ask for (``destinationAddress`` aliases and
        ``destCallSignalAddress``)."""
        self._dest_aliases = list(aliases)
        self._dest_address = address

    def _send_setup(self) -> None:
        self.call_ref = self.call_ref or next(_refs) % 32767 + 1
        self.call_id = self.call_id or os.urandom(16)          # preset when a gatekeeper admitted it
        self.conference_id = self.conference_id or os.urandom(16)
        self.state = "outgoing"
        self._make_h245()
        tokens = None
        if self.media_encryption != "off":
            self._dh = h2356.KeyAgreement()
            tokens = self._dh.tokens()
            self.h245.offer_encryption = True
        fs = None
        if self.options.fast_start and self.media_encryption != "required":
            local: dict[str, MediaAddress] = {}
            for media in ("audio", "video") if self.options.open_video and self.options.video_codecs else ("audio",):
                addr = self._hook("media_address", media)
                if addr is not None:
                    local[media] = addr
            fs = self.h245.fast_start_offer(local) or None
            self.fast_start = "offered" if fs else "none"
        h245_address = None
        if not self.options.tunnelling and self.options.separate_h245:
            h245_address = self._listen_h245()
        local = self.transport.getHost()
        number = next((t for k, t in self.options.aliases if k == "dialledDigits"), None)
        called = next((t for k, t in self._dest_aliases if k == "dialledDigits"), None)
        self.dialed = called or next((t for _, t in self._dest_aliases), None)
        try:
            setup = q931.build_setup(
                self.call_ref, self.conference_id, self.call_id, self.options.aliases, self._dest_aliases,
                self._dest_address, (self.options.advertise, local.port), fs, self.options.tunnelling,
                h245_address, display=self.options.display, endpoint_kind=self.options.endpoint_kind,
                calling_number=number, called_number=called, tokens=tokens)
        except Q931Error as exc:
            log.error("%s: cannot build SETUP: %s", self.name, exc.reason)
            self._finish(28, f"cannot build SETUP: {exc.reason}", by="local")
            return
        self._send(setup)
        log.info("%s: SETUP to %s at %s:%d (fastStart %s, tunnelling %s)", self.name, self.dialed,
                 *self.remote, bool(fs), self.options.tunnelling)

    def _on_uu_message(self, msg: Q931Message, uu: dict[str, Any]) -> None:
        pdu = uu["h323-uu-pdu"]
        kind, body = pdu["h323-message-body"]
        mtype = msg.message_type
        body = body if isinstance(body, dict) else {}
        is_answer = mtype in (MessageType.CALL_PROCEEDING, MessageType.ALERTING, MessageType.PROGRESS,
                              MessageType.CONNECT)
        if self.role == "caller" and mtype == MessageType.CONNECT and self._dh is not None \
                and self.media_key is None:
            self._agree_as_caller(body.get("tokens"))   # before the H.245 the CONNECT may carry
            if self.state == "released":
                return
        if self.role == "caller" and is_answer:
            info = body.get("destinationInfo")
            if isinstance(info, dict) and isinstance(info.get("vendor"), dict):
                self.remote_vendor = q931.vendor_text(info["vendor"])
            if self.tunnelling and not pdu.get("h245Tunnelling", False):
                log.info("%s: the far end does not tunnel H.245 (%s): falling back", self.name, msg.type_name)
                self.tunnelling = False
                self._separate_out.extend(self._take_tunnel())
            if self.fast_start == "offered" and body.get("fastStart"):
                chans = self.h245.fast_start_accepted([bytes(x) for x in body["fastStart"]])
                self.fast_start = "active" if chans else "refused"
                log.info("%s: fast start %s (%s)", self.name, self.fast_start,
                         ", ".join(f"{c.direction} {c.codec_name}" for c in chans))
                if chans:
                    self._hook("on_channels")
            if mtype == MessageType.CALL_PROCEEDING and self.state == "outgoing":
                self.state = "proceeding"
        if self.tunnelling and kind != "releaseComplete":
            self._tunnel_in(pdu)
            if self.role == "caller" and is_answer and pdu.get("h245Tunnelling"):
                self.h245_mode = "tunnelled"
                self._start_h245()
        address = body.get("h245Address")
        if address is not None and not self.tunnelling and self._h245_conn is None and not self._h245_connecting:
            remote = asn1.parse_transport_address(address)
            if remote is not None:          # in an answer, or a Facility startH245
                self._connect_h245(remote)
        if self.role == "caller" and mtype == MessageType.CONNECT and self.state != "connected":
            self.state = "connected"
            if self.fast_start == "offered":
                self.fast_start = "refused"
                log.info("%s: the far end did not accept fast start: H.245 opens the channels", self.name)
            if not self.tunnelling and self._h245_conn is None and not self._h245_connecting \
                    and self._h245_listener is None:
                # nobody offered an H.245 address: offer ours (Facility startH245)
                addr = self._listen_h245()
                if addr is not None:
                    self._send(q931.build_facility(self.call_ref, self.call_id, from_destination=False,
                                                   reason="startH245", h245_address=addr,
                                                   h245_tunnelling=False, conference_id=self.conference_id))
            self._connected()

    def _connected(self) -> None:
        log.info("%s: connected (fast start %s, H.245 %s)", self.name, self.fast_start,
                 "tunnelled" if self.tunnelling else "separate connection")
        self._hook("on_connected")
        if not self.connected_d.called:
            self.connected_d.callback(self)

    # ------------------------------------------------------------------ H.245

    def _make_h245(self) -> None:
        if self.h245 is not None:
            return
        o = self.options
        s = H245Session(self.catalogue, send=self._h245_send, terminal_type=o.terminal_type,
                        audio_codecs=o.audio_codecs, video_codecs=o.video_codecs,
                        tcs_options=o.tcs_options or None, clock=self.reactor, name=f"{self.name}/h245")
        s.on_ready = self._h245_ready
        s.on_open_request = self._h245_open_request
        s.on_channel_open = lambda ch: self._hook("on_channels")
        s.on_channel_closed = lambda ch, why: self._hook("on_channels")
        s.on_user_input = lambda digit: self._hook("on_user_input", digit)
        s.on_fast_update = lambda n: self._hook("on_fast_update", n)
        s.on_flow_control = lambda n, bitrate: self._hook("on_flow_control", n, bitrate)
        s.on_end_session = self._h245_end_session
        if self.media_key is not None:                # callee: agreed from the SETUP already
            s.offer_encryption, s.media_key = True, self.media_key
        s.on_failure = lambda why: log.warning("%s: H.245: %s", self.name, why)
        self.h245 = s

    def _start_h245(self) -> None:
        if self._h245_started or self.h245 is None or self.state == "released":
            return
        self._h245_started = True
        self.h245.start()

    def _h245_send(self, pdu: bytes) -> None:
        if self.state == "released" and not self._end_sent:
            return
        if self._h245_conn is not None and self._h245_conn.connected:
            self._h245_conn.send(pdu)
        elif self.tunnelling:
            self._tunnel_out.append(pdu)
            if self._flush_call is None or not self._flush_call.active():
                self._flush_call = self.reactor.callLater(0, self._flush_tunnel)
        else:
            self._separate_out.append(pdu)

    def _flush_tunnel(self) -> None:
        self._flush_call = None
        if not self._tunnel_out or self.state == "released" or self.transport is None:
            return
        if self.state not in ("connected", "proceeding", "answering", "outgoing", "incoming"):
            return
        self._send(q931.build_facility(self.call_ref, self.call_id, from_destination=self._from_destination(),
                                       reason=None, h245_control=self._take_tunnel(), h245_tunnelling=True))

    def _h245_pdu(self, pdu: bytes) -> None:
        if self.h245 is not None:
            self.h245.receive(pdu)

    def _listen_h245(self) -> Address | None:
        if self._h245_listener is not None:
            return (self.options.advertise, self._h245_listener.getHost().port)
        try:
            self._h245_listener = self.reactor.listenTCP(0, _H245Listen(self), interface=self.options.bind)
        except Exception as exc:
            log.error("%s: cannot listen for H.245: %s", self.name, exc)
            return None
        self.h245_mode = "separate"
        self._arm_h245_timer()
        return (self.options.advertise, self._h245_listener.getHost().port)

    def _connect_h245(self, address: Address) -> None:
        self._h245_connecting = True
        self.h245_mode = "separate"
        log.info("%s: connecting the H.245 channel to %s:%d", self.name, *address)
        self.reactor.connectTCP(address[0], address[1], _H245Connect(self), timeout=self.options.h245_timeout)

    def _arm_h245_timer(self) -> None:
        if self._h245_timer is None and self.options.h245_timeout:
            self._h245_timer = self.reactor.callLater(self.options.h245_timeout, self._h245_timed_out)

    def _h245_timed_out(self) -> None:
        self._h245_timer = None
        if self._h245_conn is None and self.state != "released" and self.fast_start != "active":
            self.hangup(41, "the H.245 channel did not come up")

    def _h245_connected(self, conn: _H245Protocol) -> None:
        if self.state == "released":
            conn.transport.loseConnection()
            return
        self._h245_conn = conn
        self._h245_connecting = False
        if self._h245_timer is not None and self._h245_timer.active():
            self._h245_timer.cancel()
        self._h245_timer = None
        if self._h245_listener is not None:
            self._h245_listener.stopListening()
            self._h245_listener = None
        log.info("%s: H.245 channel up (%s)", self.name, conn.transport.getPeer())
        pending, self._separate_out = self._separate_out, []
        for pdu in pending:
            conn.send(pdu)
        self._start_h245()

    def _h245_connect_failed(self, why: str) -> None:
        self._h245_connecting = False
        log.warning("%s: cannot connect the H.245 channel: %s", self.name, why)
        if self.state != "released" and self.fast_start != "active":
            self.hangup(41, f"H.245 connection failed: {why}")

    def _h245_broken(self, why: str) -> None:
        if self.state != "released":
            self.hangup(95, f"H.245 channel: {why}")

    def _h245_lost(self, conn: _H245Protocol) -> None:
        if self._h245_conn is conn:
            self._h245_conn = None
            if self.state != "released":
                log.info("%s: H.245 channel closed by the far end", self.name)
                self.hangup(16, "H.245 channel closed")

    def _h245_ready(self) -> None:
        self.open_channels()

    def open_channels(self) -> None:
        """Open our transmit channels (audio, and video when both sides have it) that fast
        start has not already opened.  Called when H.245 is ready."""
        s = self.h245
        if s is None or s.ended or not s.remote_tcs_received:
            return
        medias = ["audio"] + (["video"] if self.options.open_video else [])
        for media in medias:
            if any(c.media == media and c.direction == "tx" and c.state in ("opening", "open")
                   for c in s.channels.values()):
                continue
            if s.choose_codec(media) is None:
                log.info("%s: no %s codec in common: no %s channel", self.name, media, media)
                continue
            addr = self._hook("media_address", media)
            if addr is None:
                continue
            try:
                s.open_channel(media, local_rtcp=addr[1])
            except (ValueError, RuntimeError) as exc:
                log.warning("%s: cannot open a %s channel: %s", self.name, media, exc)

    def _h245_open_request(self, ch: LogicalChannel) -> Any:
        if ch.media == "video" and not self.options.open_video:
            return "dataTypeNotSupported"
        addr = self._hook("media_address", ch.media)
        if addr is None:
            return "dataTypeNotSupported"
        existing = self.channel(ch.media, "rx")
        if existing is not None and existing.number != ch.number:
            log.info("%s: a second %s channel replaces channel %d", self.name, ch.media, existing.number)
            existing.state = "closed"
        self.reactor.callLater(0, self._hook, "on_channels")
        return addr

    def _h245_end_session(self) -> None:
        if self.state == "released":
            return
        log.info("%s: the far end ended H.245 (EndSessionCommand)", self.name)
        self._send_end_session()
        self.hangup(16, "the far end ended the session", remote=True)

    def _send_end_session(self) -> None:
        if self._end_sent or self.h245 is None or self.h245_mode == "none":
            return
        self._end_sent = True
        if self.h245.ended:     # the far end's EndSession already shut the session down: answer it
            self._h245_send(asn1.encode_h245(_END_SESSION))
        else:
            self.h245.end_session()
        if self.tunnelling and self._tunnel_out:
            self._send(q931.build_facility(self.call_ref, self.call_id, from_destination=self._from_destination(),
                                           reason=None, h245_control=self._take_tunnel(), h245_tunnelling=True))

    # ------------------------------------------------------------------ user actions

    def send_user_input(self, digits: str) -> None:
        """DTMF as H.245 UserInputIndication (signal or alphanumeric, as the far end declared)."""
        if self.h245 is None or not self.h245.remote_tcs_received:
            raise RuntimeError("H.245 is not up: no UserInputIndication possible")
        self.h245.send_user_input(digits)

    def hangup(self, cause: int = 16, text: str = "", *, reason: str | None = None, remote: bool = False) -> None:
        """Release the call: EndSessionCommand (when H.245 runs), RELEASE COMPLETE with ``cause``,
        close the connections."""
        if self.state == "released":
            return
        if reason is None and cause not in (16, 31):
            reason = q931.cause_to_release_reason(cause)
        if self.call_ref:
            if self.h245 is not None and self.state == "connected":
                self._send_end_session()
            try:
                rc = q931.build_release_complete(self.call_ref, self.call_id or bytes(16),
                                                 from_destination=self._from_destination(), reason=reason,
                                                 cause=cause, h245_tunnelling=self.tunnelling,
                                                 display=None)
            except Q931Error:
                rc = q931.build_release_complete(self.call_ref, self.call_id or bytes(16),
                                                 from_destination=self._from_destination(), cause=cause)
            self._send(rc)
        self._finish(cause, text or q931.cause_name(cause), by="remote" if remote else "local", reason=reason)

    def _on_release_complete(self, msg: Q931Message, uu: dict[str, Any] | None) -> None:
        cause = None
        try:
            c = msg.cause
            cause = c.value if c is not None else None
        except Q931Error:
            pass
        reason = None
        if uu is not None:
            kind, body = uu["h323-uu-pdu"]["h323-message-body"]
            if kind == "releaseComplete" and isinstance(body, dict) and body.get("reason"):
                reason = body["reason"][0]
        if cause is None:
            cause = q931.release_reason_to_cause(reason) if reason else 16
        log.info("%s: RELEASE COMPLETE from the far end: cause %d (%s)%s", self.name, cause,
                 q931.cause_name(cause), f", reason {reason}" if reason else "")
        self._finish(cause, q931.cause_name(cause), by="remote", reason=reason)

    def _finish(self, cause: int, text: str, *, by: str, reason: str | None = None, close: bool = True) -> None:
        if self.state == "released":
            return
        self.state = "released"
        self.cause = cause
        self.release_text = text
        self.release_reason = reason
        self.released_by = by
        wait = getattr(self, "_setup_wait", None)
        if wait is not None and wait.active():
            wait.cancel()
        for name in ("_flush_call", "_h245_timer"):
            t = getattr(self, name)
            if t is not None and t.active():
                t.cancel()
            setattr(self, name, None)
        if self.h245 is not None:
            self.h245.close()
        if self._h245_conn is not None and self._h245_conn.transport is not None:
            self._h245_conn.transport.loseConnection()
        self._h245_conn = None
        if self._h245_listener is not None:
            self._h245_listener.stopListening()
            self._h245_listener = None
        if close and self.transport is not None:
            self.transport.loseConnection()
        log.info("%s: released by %s side: cause %d (%s)", self.name, by, cause, text)
        self._hook("on_released")
        if not self.released.called:
            self.released.callback(self)


class H323CallFactory(Factory):
    """Builds an :class:`H323Call` per connection; ``prepare(call)`` sets its hooks."""

    def __init__(self, role: str, options: Callable[[], CallOptions], catalogue: Catalogue,
                 prepare: Callable[[H323Call], None], *, reactor: Any = None, name: str = "h323") -> None:
        self.role = role
        self.options = options
        self.catalogue = catalogue
        self.prepare = prepare
        self.reactor = reactor
        self.name = name
        self._n = itertools.count(1)

    def buildProtocol(self, addr: Any) -> H323Call:  # noqa: N802
        call = H323Call(self.role, self.options(), self.catalogue, reactor=self.reactor,
                        name=f"{self.name}-{next(self._n)}")
        self.prepare(call)
        return call


class _OutgoingFactory(ClientFactory):
    def __init__(self, call: H323Call) -> None:
        self.call = call

    def buildProtocol(self, addr: Any) -> H323Call:  # noqa: N802
        return self.call

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:  # noqa: N802
        call = self.call
        if call.state != "released":
            call._finish(27, f"cannot connect: {reason.getErrorMessage()}", by="local", close=False)


def place_call(call: H323Call, host: str, port: int, aliases: Sequence[Alias], *, timeout: float = 10.0) -> Any:
    """Connect ``call`` (role caller) to ``host:port`` and send its SETUP for ``aliases``.
    Returns the connector; watch ``call.connected_d`` / ``call.released``."""
    call.dial(aliases, (host, port))
    return call.reactor.connectTCP(host, port, _OutgoingFactory(call), timeout=timeout)

