"""The gateway's H.323 side: calls on TCP 1720 become Legs in rooms (and Cầu can call out).

:class:`H323Service` listens for H.225.0 call signalling.  A SETUP is routed
through the dial plan on its called party number / destinationAddress
aliases (dialledDigits, then h323-ID):

=================  ================================================================
room               answered (CallProceeding, Connect), H.245 as the caller chose
                   (fast start, tunnelled, separate connection); once audio runs
                   both ways the call becomes a Leg in the room (through the
                   PIN gate when the room has a PIN)
reject route       RELEASE COMPLETE, cause from the route's SIP status (RFC 3398)
dial route         RELEASE COMPLETE cause 21 (bridging a caller out is not offered)
nothing            RELEASE COMPLETE cause 1 (unallocated number)
room full/closed   RELEASE COMPLETE with the refusal's Q.850 cause (17 / 18)
=================  ================================================================

Media: one :class:`~gateway.media.rtp.RtpSession` per media (symmetric RTP:
the port we receive on is the one we send from).  Audio becomes the Leg's
:class:`~gateway.media.audio_stream.AudioStream` (receive codec = the far end's
transmit channel, send codec = ours).  Video channels (by fast start or OLC,
opened before or after the audio) become the Leg's video stream: the room's
picture goes out on our transmit channel, the far end's picture into the room.

Media encryption (H.235.6, :mod:`gateway.h323.h2356`) follows the room's and the site's
``encryption`` policy: a caller's DH tokens are answered unless it is ``off``; ``required``
releases a caller without them (cause 31) or one that opens a plain channel.

H.245 UserInputIndication → ``dtmf`` events on the Leg; videoFastUpdatePicture
→ ``keyframe_request``; FlowControlCommand → ``bitrate_limit(kbps)``.  A leg
that hangs up (RTP timeout, room closed, kicked) ends the call with
EndSessionCommand + RELEASE COMPLETE; the far end's RELEASE COMPLETE,
EndSessionCommand or a lost connection hang the leg up.
"""
from __future__ import annotations

import itertools
import logging
from collections import Counter
from typing import Any, Callable

from twisted.internet import defer

from gateway.catalogue import Catalogue
from gateway.conference import JoinRefused, Leg, RoomRegistry
from gateway.conference.rtp_media import RtpMedia, StreamPlan, admit
from gateway.dialplan.model import combined_encryption
from gateway.media.ports import PortAllocator, PortsExhausted

from . import q931
from .call import (CallOptions, CallRejected, H323Call, H323CallFactory, _alias_for, parse_destination,
                   place_call)

__all__ = ["H323Service", "H323Media"]

log = logging.getLogger("cau.h323")

H245_AUDIO = ("G722", "PCMU", "PCMA")
H245_VIDEO = ("H264", "H263", "H261")
DTMF_PT = 101
#: RTP packets a stream sends before CONNECT (or the far end's RTP) confirms the call (see RtpSession)
UNCONFIRMED_PACKETS = 25


def _codecs(wanted: tuple[str, ...], ours: tuple[str, ...]) -> tuple[str, ...]:
    if not wanted:
        return ours
    picked = tuple(c for c in wanted if c in ours)
    return picked


class H323Media:
    """The media of one gateway call: its RTP (:class:`RtpMedia`) and, once audio runs both ways, its Leg."""

    def __init__(self, service: H323Service, call: H323Call) -> None:
        self.service = service
        self.call = call
        self.spec: Any = None
        self.identity: Any = None        # the checked dial-plan endpoint (H323Service.identify)
        self.bridge: Any = None          # a caller bridged out: the Deferred of the call out
        self.rtp = RtpMedia(service.ports, bind=service.bind, rtp_timeout=service.rtp_timeout,
                            reactor=service.reactor, protocol="h323", unconfirmed_budget=UNCONFIRMED_PACKETS)
        self.rtp.on_leg = self._on_leg
        self.rtp.keyframe_fallback = self._fast_update
        self.rtp.on_replaced = self._on_replaced
        self.rtp.video_mtu = service.video_mtu
        self.leg: Leg | None = None
        self.room: Any = None
        self.gate: Any = None
        self.joined = defer.Deferred()   # fires with the Leg once it is in the room (or the PIN gate)
        self._no_media_timer: Any = None

    @property
    def video_packets(self) -> int:
        return self.rtp.video_packets

    # -- hooks from the call ------------------------------------------------------------
    def media_address(self, call: H323Call, media: str) -> Any:
        if media not in ("audio", "video"):
            return None
        try:
            s = self.rtp.open(media)
        except PortsExhausted as exc:
            log.error("%s: no RTP ports for %s: %s", call.name, media, exc)
            return None
        host = call.options.advertise           # per call: the address this peer reaches
        return (host, s.local_port), (host, s.local_port + 1)

    def on_channels(self, call: H323Call) -> None:
        if call.state == "released":
            return
        for media in ("video", "audio"):   # audio last: the Leg is made with it, video already known
            tx, rx = call.channel(media, "tx"), call.channel(media, "rx")
            if tx is None or tx.remote_media is None or media not in self.rtp.sessions:
                continue
            if media == "audio" and call.media_encryption == "required" and \
                    not (tx.encrypted and (rx is None or rx.encrypted)):
                call.hangup(31, "this room requires encrypted media (H.235.6 AES-128); the far end opened "
                                "a plain channel", reason="securityDenied")
                return
            h235 = None
            if tx.encrypted or (rx is not None and rx.encrypted):
                h235 = ((tx.session_key, tx.cipher_pt, tx.payload_type) if tx.encrypted and tx.session_key else None,
                        (rx.session_key, rx.cipher_pt, rx.payload_type)
                        if rx is not None and rx.encrypted and rx.session_key else None)
            plan = StreamPlan(media, rx.format if rx is not None else None, tx.format,
                              "sendrecv" if rx is not None else "sendonly", tx.remote_media,
                              tx.remote_rtcp[1] if tx.remote_rtcp else None,
                              DTMF_PT if media == "audio" else None, DTMF_PT if media == "audio" else None,
                              h235=h235)
            if self.rtp.plans.get(media) == plan:
                continue
            if self.leg is None and media == "audio":
                self.rtp.display_name = (self.identity.name if self.identity is not None else None) or \
                    call.display or call.caller or (call.remote[0] if call.remote else "h323")
                self.rtp.remote = f"{call.remote[0]}:{call.remote[1]}" if call.remote else ""
            try:
                self.rtp.apply(media, plan)
            except ValueError as exc:
                log.warning("%s: unusable %s media address %s: %s", call.name, media, tx.remote_media, exc)

    def _on_leg(self, leg: Leg) -> None:
        call = self.call
        self.leg = leg
        leg.started = getattr(call, "created", leg.started)
        if call.display:
            leg.user_agent = "H.323 " + "".join(c for c in call.display if c.isprintable())[:120]
        leg.identity = self.identity.alias if self.identity is not None else None
        tx, rx = call.channel("audio", "tx"), call.channel("audio", "rx")
        leg.encryption = {"signalling": "H.225.0 (TCP)",
                          "media": "H.235.6 AES-128" if tx is not None and rx is not None and tx.encrypted
                          and rx.encrypted else None}
        leg.on("hangup", self._leg_hangup)
        if self._no_media_timer is not None and self._no_media_timer.active():
            self._no_media_timer.cancel()
        audio = leg.audio
        log.info("%s: audio %s in, %s out: joining room %s", call.name, audio.rx, audio.tx, self.spec.id)
        try:
            self._enter_room()
        except JoinRefused as exc:
            call.hangup(exc.q850_cause, exc.reason)
            return
        if not self.joined.called:
            self.joined.callback(leg)

    def _on_replaced(self, leg: Leg, stream_id: str) -> None:
        if self.room is not None:
            self.room.replace_stream(leg, stream_id)   # a channel opened or changed after the join

    def _enter_room(self) -> None:
        def refused(exc: JoinRefused) -> None:
            self.call.hangup(exc.q850_cause, exc.reason)

        def joined(room: Any) -> None:
            self.room = room

        self.gate = admit(self.service.registry, self.spec, self.leg, reactor=self.service.reactor,
                          on_joined=joined, on_refused=refused)

    def _fast_update(self, stream_id: str) -> None:
        """Ask the far end for an intra picture (H.245 videoFastUpdatePicture on its channel to us)."""
        rx = self.call.channel("video", "rx")
        h245 = self.call.h245
        if rx is not None and h245 is not None and not h245.ended:
            h245.request_fast_update(rx.number)

    def on_connected(self, call: H323Call) -> None:
        self.rtp.confirm()        # CONNECT exchanged: media beyond the first second (fast start before it)
        t = self.service.rtp_timeout
        if self.leg is None and t:
            self._no_media_timer = self.service.reactor.callLater(t, self._no_media)

    def _no_media(self) -> None:
        self._no_media_timer = None
        if self.leg is None and self.call.state != "released":
            self.call.hangup(102, "no audio channels were opened")

    def on_user_input(self, call: H323Call, digit: str) -> None:
        if self.leg is not None:
            self.leg.emit("dtmf", digit=digit)

    def on_fast_update(self, call: H323Call, number: int | None) -> None:
        if self.leg is not None:
            self.leg.emit("keyframe_request", stream="video")

    def on_flow_control(self, call: H323Call, number: int | None, bitrate: int | None) -> None:
        if self.leg is not None:
            ch = call.channels.get(("tx", number)) if number is not None else None
            stream = ch.media if ch is not None else "video"
            self.leg.emit("bitrate_limit", stream=stream, kbps=bitrate // 10 if bitrate is not None else None)

    def _leg_hangup(self, reason: str) -> None:
        call = self.call
        if call.state != "released":
            cause = 102 if reason.startswith("no media") else 16
            call.hangup(cause, reason)

    def on_released(self, call: H323Call) -> None:
        bridge = self.bridge
        if bridge is not None and not bridge.called:
            bridge.cancel()          # the caller gave up: stop calling the far end
        if self._no_media_timer is not None and self._no_media_timer.active():
            self._no_media_timer.cancel()
        self._no_media_timer = None
        if self.leg is not None:
            self.leg.hangup(f"H.323: {call.release_text}")   # closes the RTP sessions
        self.rtp.close()
        self.service._forget(call)
        if not self.joined.called:
            self.joined.errback(ConnectionError(f"call released before joining: cause {call.cause} "
                                                f"({call.release_text})"))
            self.joined.addErrback(lambda f: None)


class H323Service:
    """H.225.0 call signalling for Cầu: incoming calls into rooms, :meth:`dial` for cascades."""

    def __init__(self, plan: Callable[[], Any], registry: RoomRegistry, ports: PortAllocator, catalogue: Catalogue,
                 *, bind: str, advertise: str | None, gatekeeper: Any = None, reactor: Any = None,
                 rtp_timeout: float = 30.0, alias: str = "cau") -> None:
        if reactor is None:
            from twisted.internet import reactor as _r
            reactor = _r
        self.plan = plan
        self.registry = registry
        self.ports = ports
        self.catalogue = catalogue
        self.bind = bind
        from gateway.netaddr import LocalAddress

        #: which of our addresses a peer reaches (--advertise wins; per peer when bound to all)
        self.addresses = LocalAddress(bind, advertise)
        self.advertise = self.addresses.fallback
        self.gatekeeper = gatekeeper
        self.reactor = reactor
        self.rtp_timeout = rtp_timeout
        #: bytes of RTP payload per video packet we send
        self.video_mtu = 1200
        self.alias = alias
        #: wraps the call signalling listener's factory (the app adds connection caps, gateway.netguard)
        self.wrap_tcp_factory: Callable[[Any], Any] | None = None
        #: set by the app: (target URI, spec, room) -> Deferred; a caller a dial route's ``callers`` allows
        self.bridge_out: Callable[[str, Any, Any], Any] | None = None
        self.port: int | None = None
        self._listener: Any = None
        self.calls: dict[str, H323Call] = {}
        self.media: dict[str, H323Media] = {}
        self.stats: Counter[str] = Counter()
        self._out = itertools.count(1)

    def options(self) -> CallOptions:
        return CallOptions(fast_start=True, tunnelling=True, bind=self.bind, advertise=self.advertise,
                           aliases=(("h323-ID", self.alias),), display="Cau", endpoint_kind="mcu",
                           host_for=self.addresses.for_peer)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, port: int) -> None:
        """Listen for call signalling on ``bind:port`` (CannotListenError passes up)."""
        factory: Any = H323CallFactory("callee", self.options, self.catalogue, self._prepare_incoming,
                                       reactor=self.reactor, name="h323-in")
        if self.wrap_tcp_factory is not None:
            factory = self.wrap_tcp_factory(factory)
        self._listener = self.reactor.listenTCP(port, factory, interface=self.bind)
        self.port = self._listener.getHost().port
        log.info("H.323 call signalling on %s:%d", self.bind, self.port)

    def stop(self) -> defer.Deferred:
        for call in list(self.calls.values()):
            call.hangup(16, "gateway shutting down")
        d = defer.maybeDeferred(self._listener.stopListening) if self._listener is not None else defer.succeed(None)
        self._listener = None
        return d

    def _key(self, call: H323Call) -> str:
        return call.name

    def _forget(self, call: H323Call) -> None:
        self.calls.pop(self._key(call), None)
        self.media.pop(self._key(call), None)

    def _attach(self, call: H323Call, spec: Any = None) -> H323Media:
        m = H323Media(self, call)
        m.spec = spec
        call.media_address = m.media_address
        call.on_channels = m.on_channels
        call.on_connected = m.on_connected
        call.on_released = m.on_released
        call.on_user_input = m.on_user_input
        call.on_fast_update = m.on_fast_update
        call.on_flow_control = m.on_flow_control
        self.calls[self._key(call)] = call
        self.media[self._key(call)] = m
        return m

    # -- incoming -----------------------------------------------------------------------
    def _prepare_incoming(self, call: H323Call) -> None:
        self.stats["connections"] += 1
        m = self._attach(call)
        call.on_incoming = lambda c: self._route(c, m)

    def identify(self, call: H323Call) -> Any:
        """The dial-plan endpoint a SETUP provably comes from, None for an anonymous caller.

        The SETUP's sourceAddress / calling number only claim an endpoint: the claim holds when the
        endpoint is registered with our gatekeeper from the address the call comes from (its RRQ was
        checked: networks, H.235 password), or, for ``identity: network``, when that address is in
        the endpoint's networks."""
        plan = self.plan()
        claims = [t for k, t in call.caller_aliases if k != "transportID"] + ([call.caller] if call.caller else [])
        ep = next((e for c in claims if (e := plan.endpoint(c)) is not None and e.protocol == "h323"), None)
        if ep is None:
            return None
        ip = call.remote[0] if call.remote else ""
        reg = self.gatekeeper.by_alias(ep.alias) if self.gatekeeper is not None else None
        if reg is not None and reg.endpoint_spec is not None and reg.endpoint_spec.alias == ep.alias and \
                ip in {reg.ras_address[0], *(h for h, _ in reg.call_signal_addresses)}:
            return ep
        if ep.identity == "network" and ep.networks and ep.allows(ip):
            return ep
        log.info("%s: SETUP from %s claims endpoint '%s', which is not registered from there: anonymous",
                 call.name, ip, ep.alias)
        return None

    def _route(self, call: H323Call, media: H323Media) -> None:
        self.stats["setups"] += 1
        plan = self.plan()
        candidates = [t for k, t in call.destination if k in ("dialledDigits", "partyNumber")] + \
                     [t for k, t in call.destination if k in ("h323-ID", "url-ID", "email-ID")]
        if not candidates:
            self.stats["refused"] += 1
            raise CallRejected(28, "the SETUP names no called number or alias", "badFormatAddress")
        identity = self.identify(call)
        media.identity = identity
        result = None
        for dialed in dict.fromkeys(candidates):
            result = plan.route(dialed, caller=identity.alias if identity else None, protocol="h323")
            if result.kind != "none":
                call.dialed = dialed
                break
        assert result is not None
        if result.kind == "none":
            self.stats["refused"] += 1
            raise CallRejected(1, f"no room or route for {call.dialed!r}", "unreachableDestination")
        if result.kind == "reject":
            self.stats["refused"] += 1
            status = result.status or 403
            raise CallRejected(q931.sip_to_cause(status), result.reason or f"rejected ({status})")
        if result.kind == "dial":
            ip = call.remote[0] if call.remote else None
            if self.bridge_out is not None and plan.may_bridge(result, identity.alias if identity else None, ip):
                self._bridge(call, media, result, identity)
                return
            self.stats["refused"] += 1
            log.info("%s: %r routes out to %s, and this caller is not among the route's callers", call.name,
                     call.dialed, result.target)
            raise CallRejected(21, f"{str(call.dialed)[:32]!r} is not open to callers")
        spec = result.room
        room = self.registry.get(spec.id)
        if room is not None and spec.max_participants and len(room.legs) >= spec.max_participants:
            self.stats["refused"] += 1
            raise CallRejected(17, f"room {spec.id} is full ({spec.max_participants} participants)", "inConf")
        if room is not None and room.locked:
            self.stats["refused"] += 1
            raise CallRejected(21, f"room {spec.id} is locked by the operator")
        media.spec = spec
        self._room_codecs(call, spec)
        call.media_encryption = combined_encryption(getattr(spec, "encryption", None),
                                                    identity.encryption if identity is not None else None)
        self.stats["answered"] += 1
        log.info("%s: %s calls %r → room %s", call.name, call.caller, call.dialed, spec.id)

    def _bridge(self, call: H323Call, media: H323Media, result: Any, identity: Any) -> None:
        """A caller a dial route's ``callers`` allows: a two-seat room with the far end (called now);
        the caller hears alerting until it answers, then Connect; a far end that fails releases the
        caller (cause from its answer, the target not named)."""
        import secrets

        from gateway.dialplan.model import RoomSpec

        who = identity.alias if identity is not None else str(call.caller or "caller")
        spec = RoomSpec(id=f"call-{secrets.token_hex(4)}", name=f"{who} → {call.dialed}", numbers=(), pin=None,
                        max_participants=2, layout="voice-switched", audio_codecs=(), video_codecs=(),
                        max_resolution=None, max_bitrate_kbps=None, cascade=None, template=None, line=0,
                        encryption="preferred")
        media.spec = spec
        self._room_codecs(call, spec)
        call.media_encryption = combined_encryption("preferred", identity.encryption if identity is not None else None)
        log.info("%s: %s calls %r → bridged out to %s (%s)", call.name, call.caller, call.dialed, result.target,
                 result.rule)
        d = self.bridge_out(result.target, spec, None)
        media.bridge = d
        self.stats["bridged"] += 1

        def answered(leg: Any) -> Any:
            room = self.registry.get(spec.id)
            if room is not None:       # a two-party room ends when either party leaves
                room.on("left", lambda *_: self.registry.close(spec.id, "the other party hung up"))
            return leg

        def failed(f: Any) -> Any:
            err = f.value
            status = getattr(err, "status", None)
            cause = q931.sip_to_cause(status) if isinstance(status, int) and 400 <= status < 700 else \
                getattr(err, "cause", None) or 16
            log.info("%s: the call out for %r did not connect: %s", call.name, call.dialed, f.getErrorMessage())
            self.registry.close(spec.id, "the call did not connect")
            raise CallRejected(int(cause), f"{str(call.dialed)[:32]!r}: the call out did not connect")

        call.hold_connect = d.addCallbacks(answered, failed)

    def _room_codecs(self, call: H323Call, spec: Any) -> None:
        audio = _codecs(tuple(getattr(spec, "audio_codecs", ()) or ()), H245_AUDIO) or H245_AUDIO
        video = _codecs(tuple(getattr(spec, "video_codecs", ()) or ()), H245_VIDEO)
        call.options.audio_codecs = audio
        call.options.video_codecs = video
        call.options.open_video = bool(video)

    # -- outgoing -----------------------------------------------------------------------
    def dial(self, destination: str, room_spec: Any, *, timeout: float = 60.0) -> defer.Deferred:
        """Call ``alias@ip[:port]`` (or ``h323:alias@ip[:port]``) into the room ``room_spec``:
        SETUP with fast start and tunnelling (H.245 falls back as the far end answers).
        Fires with the Leg once it is in the room; fails with ConnectionError (the cause in the
        message) when the call is released first - also when it is not answered within
        ``timeout`` seconds (released with cause 19, no answer), as SIP dial-out does."""
        try:
            alias, host, port = parse_destination(destination)
        except ValueError as exc:
            return defer.fail(exc)
        call = H323Call("caller", self.options(), self.catalogue, reactor=self.reactor,
                        name=f"h323-out-{next(self._out)}")
        m = self._attach(call, room_spec)
        self._room_codecs(call, room_spec)
        call.media_encryption = combined_encryption(getattr(room_spec, "encryption", None), None)
        self.stats["dialled"] += 1
        place_call(call, host, port, [_alias_for(alias)] if alias else [])

        def no_answer() -> None:
            if not m.joined.called and call.state != "released":
                log.info("H.323 call to %s: no answer within %g s", destination, timeout)
                call.hangup(19, f"no answer within {timeout:g} s")

        timer = self.reactor.callLater(timeout, no_answer)

        def done(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return m.joined.addBoth(done)

    # -- views --------------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        out = []
        for key, call in self.calls.items():
            m = self.media.get(key)
            out.append({"call": key, "role": call.role, "state": call.state, "dialed": call.dialed,
                        "caller": call.caller, "fast_start": call.fast_start, "h245": call.h245_mode,
                        "room": m.spec.id if m and m.spec else None,
                        "leg": m.leg.id if m and m.leg else None})
        return out
