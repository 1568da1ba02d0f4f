"""The running gateway: one service tree on one event loop.

``run(settings)`` installs Twisted's asyncio reactor (uvloop underneath where
available), loads the codec catalogue and the dial plan, starts the listeners
and the services, and serves until SIGINT/SIGTERM. SIGHUP (and, unless turned
off, a change of the dial plan file on disk) reloads the dial plan; a plan that
does not validate is refused with every problem logged and the old plan keeps
running. Rooms and calls in progress never depend on a reload: a room keeps the
settings it was opened with.
"""
from __future__ import annotations

import datetime as _dt
import gc
import logging
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from gateway import __version__
from gateway import loop as _loop
from gateway.config import Settings

log = logging.getLogger("cau")


class StartupError(Exception):
    """A problem that stops ``cau run`` before it serves: one line for the operator."""

    def __init__(self, message: str, exit_code: int = 3):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class ReloadRecord:
    ok: bool
    message: str
    at: str


class Gateway:
    """Holds the running state; listeners and services hang off it."""

    def __init__(self, settings: Settings, reactor: Any):
        from gateway.catalogue import default_catalogue
        from gateway.dialplan import DialPlanHolder

        self.settings = settings
        self.reactor = reactor
        self.started = time.monotonic()
        self.catalogue = default_catalogue()
        self.codec_names = self.catalogue.names()
        # May raise DialPlanError: the caller reports it and exits 2.
        self.dialplan = DialPlanHolder(settings.dialplan, codec_names=self.codec_names, dns=settings.dns)
        self.last_reload: ReloadRecord | None = None
        self._reloading: Any = None
        self._reload_again: str | None = None
        self.listening: dict[str, str] = {}
        self._ports: list[Any] = []
        self._watch = None
        # The media plane and the rooms: shared by every protocol adapter.
        from gateway.conference.plane import media_plane

        plane = media_plane(settings.rtp_ports, reactor=reactor)
        self.plane = plane
        self.ports, self.clock, self.registry = plane.ports, plane.clock, plane.registry
        from gateway.guard import FailureGuard

        #: wrong passwords (SIP digest on REGISTER and INVITE, H.235 tokens) per source and account
        self.password_guard = FailureGuard("password", per_source=10, per_target=20, window=300.0)
        from gateway.metrics import GatewayMetrics

        self.metrics = GatewayMetrics(self)
        self.registry.on("roster", self._roster_metrics)
        self.gk_client = None

    # -- dial plan -------------------------------------------------------
    def reload_dialplan(self, why: str) -> Any:
        """Reload the dial plan, parsed off the event loop; a Deferred that fires with True (taken)
        or False (refused, the old plan keeps running). A reload asked for while one runs is done
        once that one has finished."""
        from twisted.internet import defer

        if self._reloading is not None:
            self._reload_again = why
            return self._reloading
        d = self._reloading = defer.Deferred()

        def done(ok: bool, message: str) -> None:
            now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            self.last_reload = ReloadRecord(ok, message, now)
            self.metrics.reloads.labels("ok" if ok else "refused").inc()
            if ok:
                log.info("dial plan reloaded (%s): %s", why, message)
            else:
                log.error("dial plan reload (%s) REFUSED:\n%s", why, message)
            self._reloading = None
            again, self._reload_again = self._reload_again, None
            d.callback(ok)
            if again:
                self.reload_dialplan(again)

        def failed(fut: Any) -> None:
            exc = fut.exception()
            if exc is not None:   # a bug in the loader: logged, the old plan keeps running
                self.reactor.callFromThread(lambda: done(False, f"dial plan reload failed: {exc!r}"))

        fut = self.dialplan.reload_in_thread(self.reactor.callFromThread, done)
        fut.add_done_callback(failed)
        return d

    def _watch_tick(self) -> None:
        try:
            if self._reloading is None and self.dialplan.changed_on_disk():
                self.reload_dialplan("file changed")
        except Exception:  # a watch must never take the gateway down
            log.exception("dial plan file watch failed")

    # -- listeners -------------------------------------------------------
    def _listen(self, what: str, port: int, flag: str, start: Any) -> Any:
        """Run ``start()``; a port in use becomes one StartupError line naming the port and the flag."""
        from twisted.internet.error import CannotListenError

        try:
            return start()
        except CannotListenError as exc:
            reason = getattr(exc.socketError, "strerror", None) or str(exc.socketError)
            raise StartupError(
                f"cannot listen for {what} on {self.settings.bind}:{port}: {reason}; "
                f"choose another port with {flag}"
            ) from None

    def _start_limits(self) -> None:
        """Raise the open-file limit and share it among the TCP listeners (gateway.netguard)."""
        from gateway.netguard import raise_fd_limit, tcp_budgets

        soft, _hard = raise_fd_limit()
        rtp_sockets = self.ports.high - self.ports.low + 1
        self.tcp_budgets = tcp_budgets(soft, rtp_sockets)
        self.fd_limit = soft
        self.tcp_guards: dict[str, Any] = {}
        if soft < 4096:
            log.warning("the open-file limit is %d: about %d calls at once; raise it (ulimit -n, "
                        "systemd LimitNOFILE=) for a province's meetings", soft, soft // 8)

    def _guarded(self, name: str, factory: Any, **kw: Any) -> Any:
        from gateway.netguard import GuardedFactory

        g = GuardedFactory(factory, name, max_total=self.tcp_budgets[name], **kw)
        self.tcp_guards[name] = g
        return g

    def _listen_tcp(self, what: str, port: int, factory: Any, flag: str) -> Any:
        p = self._listen(what, port, flag, lambda: self.reactor.listenTCP(port, factory, interface=self.settings.bind))
        self._ports.append(p)
        actual = p.getHost().port
        self.listening[what] = f"{self.settings.bind}:{actual}/tcp"
        return p

    def start(self) -> None:
        from twisted.internet import task

        from gateway.api.http import build_site

        from gateway.api.console import EventHub

        self._start_token()
        self._start_records()
        self.events = EventHub(self)
        from gateway.alerts import Alerts

        st = self.settings
        self.alerts = Alerts(self, mos_below=st.alert_mos_below, loss_above=st.alert_loss_above,
                             after=st.alert_after, webhook=st.alert_webhook)
        self._start_webrtc()
        self._start_limits()
        self._listen_tcp("HTTP", self.settings.http_port, self._guarded("HTTP", build_site(self)), "--http-port")
        self._start_https()
        self._start_sip()
        self._start_h323()
        self._start_gatekeeper()
        self._start_cascade()
        self._start_gk_client()
        self.plane.start()
        if self.settings.watch_dialplan:
            self._watch = task.LoopingCall(self._watch_tick)
            self._watch.clock = self.reactor
            self._watch.start(self.settings.watch_interval, now=False)

    def _roster_metrics(self, room: Any, event: str, *args: Any) -> None:
        if event == "joined" and args:
            leg = args[0]
            self.metrics.joined(leg.protocol, time.monotonic() - leg.started)
        cdr = getattr(self, "cdr", None)
        if cdr is None or not args:
            return
        from gateway.conference.room import _quality

        if event == "joined":
            cdr.joined(room, args[0])
        elif event == "left":
            leg = args[0]
            cdr.left(room, leg, args[1] if len(args) > 1 else None, _quality(leg))

    def _start_records(self) -> None:
        """Call records in SQLite (gateway.cdr); a database that cannot be opened is logged and
        shown in the status, and the gateway runs without records."""
        from twisted.internet import task

        from gateway.cdr import CallRecords, CdrError

        self.cdr = None
        self.cdr_error: str | None = None
        path = self.settings.database or (self.state_dir() / "cau.sqlite")
        try:
            self.cdr = CallRecords(path, retention_days=self.settings.cdr_retention_days)
        except CdrError as exc:
            self.cdr_error = str(exc)
            log.error("%s; running without call records", exc)
            return
        self._cdr_sampler = task.LoopingCall(self._sample_quality)
        self._cdr_sampler.clock = self.reactor
        self._cdr_sampler.start(60.0, now=False)

    def _sample_quality(self) -> None:
        from gateway.conference.room import _quality

        for room in list(self.registry.rooms.values()):
            for leg in list(room.legs.values()):
                self.cdr.sample(leg, _quality(leg))

    def ice_hosts(self) -> list[str]:
        """The host candidate addresses offered to browsers: the settings' ``ice_hosts``, else the
        advertised address, else the bind address (every interface's own when bound to any)."""
        if self.settings.ice_hosts:
            return list(self.settings.ice_hosts)
        if self.settings.advertise:
            return [self.settings.advertise]
        if self.settings.bind not in ("0.0.0.0", "::"):
            return [self.settings.bind]
        return []

    def state_dir(self) -> Any:
        from gateway.webrtc.tls import default_state_dir

        return self.settings.state_dir or default_state_dir()

    def _start_token(self) -> None:
        from gateway.api.token import TokenError, api_token

        try:
            self.api_token = api_token(self.settings.api_token, self.state_dir())
        except TokenError as exc:
            raise StartupError(str(exc)) from None

    def _start_webrtc(self) -> None:
        from gateway.webrtc import hooks
        from gateway.webrtc.whip import WebRtcService

        try:
            hooks.check_versions()
        except hooks.HookError as exc:
            raise StartupError(str(exc)) from None
        hosts = self.ice_hosts()
        # an address of ice_hosts this machine does not have is a NAT's: gather on the others (or on
        # every interface) and offer that address besides (gateway.webrtc.peer.add_mapped_candidates)
        local = [h for h in hosts if hooks.is_local_address(h)]
        self.ice_public = tuple(h for h in hosts if h not in local)
        hooks.set_host_addresses(local or None)
        self.webrtc = WebRtcService(self)

    def _start_https(self) -> None:
        """The join page and WHIP/WHEP over TLS (see gateway.webrtc.tls)."""
        from gateway.api.http import build_site
        from gateway.webrtc import tls

        s = self.settings
        self.tls = None
        try:
            if s.tls_cert and s.tls_key:
                cert = tls.load(s.tls_cert, s.tls_key)
            else:
                addresses = [a for a in [s.bind, s.advertise, *s.ice_hosts] if a]
                cert = tls.self_signed(self.state_dir(), addresses)
            factory = tls.ContextFactory(cert)
        except tls.TlsError as exc:
            raise StartupError(f"HTTPS: {exc}") from None
        self._tls_factory = factory       # SIP over TLS uses the same certificate
        if cert.made_now:
            log.info("made a self-signed certificate %s (SHA-256 %s)", cert.cert, cert.fingerprint)
        site = self._guarded("HTTPS", build_site(self, secure=True))
        p = self._listen("HTTPS", s.https_port, "--https-port",
                         lambda: self.reactor.listenSSL(s.https_port, site, factory, interface=s.bind))
        self._ports.append(p)
        self._https = p
        self.tls = cert
        self.listening["HTTPS"] = f"{s.bind}:{p.getHost().port}/tcp"

    def close_webrtc(self) -> Any:
        """Close every WebRTC session; a Deferred that fires when they are closed (or after 5 s)."""
        import asyncio

        from twisted.internet import defer

        svc = getattr(self, "webrtc", None)
        if svc is None or not svc.sessions:
            return None
        d = defer.Deferred.fromFuture(asyncio.ensure_future(asyncio.wait_for(svc.close(), 5.0)))
        d.addErrback(lambda f: log.warning("WebRTC sessions did not all close: %s", f.getErrorMessage()))
        return d

    def https_port(self) -> int:
        p = getattr(self, "_https", None)
        return p.getHost().port if p is not None else 0

    def _start_sip(self) -> None:
        from gateway.sip.transaction import TransactionLayer
        from gateway.sip.transport import SipTransport
        from gateway.sip.ua import SipUserAgent

        bind = self.settings.bind
        transport = SipTransport(bind, self.settings.sip_port, reactor=self.reactor,
                                 tls_port=self.settings.sip_tls_port, tls_context=self._tls_factory)
        # idle SIP TCP connections: 30 s to say something, then up to two hours between messages
        # (a registration over TCP refreshes well within that)
        transport.wrap_tcp_factory = lambda f, kind: self._guarded("SIP" if kind == "TCP" else "SIP TLS", f,
                                                                   idle_timeout=7200.0)
        self._listen("SIP", self.settings.sip_port, "--sip-port", transport.start)
        self._listen("SIP over TLS", self.settings.sip_tls_port, "--sip-tls-port", transport.start_tls)
        from gateway.netaddr import LocalAddress

        transport.addresses = LocalAddress(bind, self.settings.advertise or None)
        self.tls_trust_text = ""
        if self.settings.tls_ca:
            from gateway.webrtc import tls

            try:
                transport.tls_trust, self.tls_trust_text = tls.trust_root(self.settings.tls_ca)
            except tls.TlsError as exc:
                raise StartupError(str(exc)) from None
        self.sip_transport = transport
        self.sip_transactions = TransactionLayer(transport, reactor=self.reactor)
        self.sip = SipUserAgent(
            self.sip_transactions, transport, lambda: self.dialplan.current, self.registry, self.ports,
            self.catalogue, media_bind=bind, media_host=self.settings.advertise or None, reactor=self.reactor,
        )
        from gateway.sip.digest import DigestServer
        from gateway.sip.registrar import Registrar

        algorithms = tuple(a.strip().upper() for a in self.settings.sip_digest.split(",") if a.strip())
        self.sip.registrar = Registrar(
            lambda: self.dialplan.current, realm=self.settings.sip_realm, reactor=self.reactor,
            digest=DigestServer(self.settings.sip_realm, algorithms=algorithms), guard=self.password_guard,
        )
        self.sip.config.answer_delay = self.settings.sip_answer_delay
        self.sip.config.video_mtu = self.settings.video_mtu
        self.sip.call_endpoint = lambda endpoint, spec, room: self.call_endpoint(endpoint, spec, room)
        self.sip.bridge_out = lambda target, spec, room: self.dial_target(target, spec, room)
        if self.settings.dns:           # SIP targets by name (RFC 3263)
            from gateway.sip.dns import SipResolver, make_resolver

            self.sip.resolver = SipResolver(make_resolver(self.settings.dns_servers))
        self.listening["SIP"] = f"{bind}:{transport.port}/udp+tcp"
        self.listening["SIP over TLS"] = f"{bind}:{transport.tls_port}/tls"

    def advertised_host(self) -> str:
        if self.settings.advertise:
            return self.settings.advertise
        return self.settings.bind if self.settings.bind not in ("0.0.0.0", "::") else "127.0.0.1"

    def _start_h323(self) -> None:
        from gateway.h323.endpoint import H323Service

        svc = H323Service(lambda: self.dialplan.current, self.registry, self.ports, self.catalogue,
                          bind=self.settings.bind, advertise=self.settings.advertise or None, reactor=self.reactor)
        svc.video_mtu = self.settings.video_mtu
        # an H.225.0 connection must send its SETUP within 10 s; a call may then be quiet for hours
        svc.wrap_tcp_factory = lambda f: self._guarded("H.323", f, first_data_timeout=10.0)
        self._listen("H.323 call signalling", self.settings.h323_port, "--h323-port",
                     lambda: svc.start(self.settings.h323_port))
        self.h323 = svc
        svc.bridge_out = lambda target, spec, room: self.dial_target(target, spec, room)
        self.listening["H.323 call signalling"] = f"{self.settings.bind}:{svc.port}/tcp"

    def _start_gk_client(self) -> None:
        """Endpoint mode: register Cầu (its rooms' numbers) with an external gatekeeper."""
        self.gk_client = None
        if not self.settings.register_with:
            return
        from gateway.h323.gk_client import GatekeeperClient

        host, _, port = self.settings.register_with.rpartition(":")
        plan = self.dialplan.current
        numbers = sorted({n for r in plan.rooms for n in r.numbers if n.isdigit()})
        prefixes: list[str] = []
        for number, _what in plan.dialable():
            lo, sep, hi = number.partition("-")
            if sep and len(lo) == len(hi):  # a pattern's range such as 8101-8120: its common leading digits
                common = lo[: next((i for i, (a, b) in enumerate(zip(lo, hi)) if a != b), len(lo))]
                if common.isdigit():
                    prefixes.append(common)
        aliases = [("h323-ID", self.settings.register_as)] + [("dialedDigits", n) for n in numbers]
        client = GatekeeperClient((host, int(port)), aliases, (self.h323.addresses.for_peer(host), self.h323.port),
                                  reactor=self.reactor, prefixes=sorted(set(prefixes)),
                                  password=self.settings.register_password or None)
        d = client.start(self.settings.bind, 0)
        d.addCallbacks(
            lambda c: log.info("registered with gatekeeper %s as %s (%s)", self.settings.register_with,
                               self.settings.register_as, c.endpoint_id),
            lambda f: log.warning("gatekeeper %s: %s (retrying in the background)", self.settings.register_with,
                                  f.getErrorMessage()))
        self.gk_client = client
        self.listening["H.323 endpoint mode"] = f"registering with {self.settings.register_with}"

    def _start_cascade(self) -> None:
        """Rooms with `cascade` dial their number (e.g. the national MCU) when they open."""
        from gateway.sip.dialout import enable_cascade

        def h323_dial(target: str, spec: Any, room: Any) -> None:
            d = self.dial_h323(target, spec)
            def failed(f: Any) -> None:
                log.warning("room %s: H.323 cascade to %s failed: %s", room.id, target, f.getErrorMessage())
                self.alerts.cascade(room.id, target, False, f"failed: {f.getErrorMessage()}")

            d.addCallbacks(lambda leg: self.alerts.cascade(room.id, target, True), failed)

        self.cascade = enable_cascade(self.sip, self.registry, lambda: self.dialplan.current, h323_dial=h323_dial)
        self.cascade.on_state = self.alerts.cascade

    def _start_gatekeeper(self) -> None:
        from gateway.h323.gatekeeper import Gatekeeper

        host = self.advertised_host()
        gk = Gatekeeper(
            lambda: self.dialplan.current, gatekeeper_id="cau",
            call_signal_address=(host, self.h323.port), reactor=self.reactor,
            ras_address=(host, self.settings.ras_port) if self.settings.ras_port and not self.h323.addresses.wildcard
            or self.settings.ras_port and self.settings.advertise else None,
            neighbours=self.settings.gatekeeper_neighbours, guard=self.password_guard,
            addresses=self.h323.addresses,
        )
        self._listen("H.323 RAS", self.settings.ras_port, "--ras-port",
                     lambda: gk.start(self.settings.bind, self.settings.ras_port))
        self.gatekeeper = gk
        self.h323.gatekeeper = gk        # a caller's registration is what proves who it is
        self.listening["H.323 RAS (gatekeeper)"] = f"{self.settings.bind}:{gk.port}/udp"

    def stop(self) -> None:
        if getattr(self, "alerts", None) is not None:
            self.alerts.stop()
        if getattr(self, "events", None) is not None:
            self.events.stop()
        sampler = getattr(self, "_cdr_sampler", None)
        if sampler is not None and sampler.running:
            sampler.stop()
        if getattr(self, "gk_client", None) is not None:
            self.gk_client.stop()
            self.gk_client = None
        if getattr(self, "cascade", None) is not None:
            self.cascade.close()
            self.cascade = None
        if getattr(self, "gatekeeper", None) is not None:
            self.gatekeeper.stop()
            self.gatekeeper = None
        if getattr(self, "h323", None) is not None:
            self.h323.stop()
            self.h323 = None
        if getattr(self, "sip", None) is not None:
            self.sip.close_all("gateway shutting down")
            self.sip_transport.stop()
            self.sip = None
        if getattr(self, "webrtc", None) is not None:
            for session in list(self.webrtc.sessions.values()):
                if session.peer.leg is not None:
                    session.peer.leg.hangup("gateway shutting down")
        self.registry.close_all("gateway shutting down")
        if getattr(self, "cdr", None) is not None:
            self.cdr.close()             # the calls just ended are written before we go
            self.cdr = None
        self.plane.stop()
        if self._watch is not None and self._watch.running:
            self._watch.stop()
        for p in self._ports:
            p.stopListening()
        self._ports.clear()

    # -- operator actions ---------------------------------------------------
    def invite(self, room_id: str, target: str) -> Any:
        """Call a site into a room: a sip:/h323: URI, or a dial-plan endpoint's alias or number
        (registered with the SIP registrar or the gatekeeper). Returns a Deferred firing with the Leg;
        fails with ValueError (what is wrong with the request) or the dial failure."""
        from twisted.internet import defer

        plan = self.dialplan.current
        room = self.registry.get(room_id)
        spec = room.spec if room is not None else plan.room(room_id)
        if spec is None:
            return defer.fail(ValueError(f"no room {room_id!r} in the dial plan"))
        target = target.strip()
        scheme = target.split(":", 1)[0].lower() if ":" in target else ""
        if scheme in ("sip", "sips", "h323"):
            return self.dial_target(target, spec, room)
        endpoint = plan.endpoint(target)
        if endpoint is None:
            return defer.fail(ValueError(f"{target!r} is neither a sip:/h323: URI nor an endpoint of the dial plan"))
        return self.call_endpoint(endpoint, spec, room)

    def dial_target(self, target: str, spec: Any, room: Any = None) -> Any:
        """Call a ``sip:``/``sips:``/``h323:`` URI into ``spec``'s room (the operator's invite, and a
        caller bridged out by a dial route); a Deferred firing with the Leg."""
        from gateway.sip.dialout import dial as sip_dial

        if target.split(":", 1)[0].lower() == "h323":
            return self.dial_h323(target, spec)
        return sip_dial(self.sip, target, spec, display_name=spec.name, from_user=spec.id, room=room)

    def dial_h323(self, target: str, spec: Any) -> Any:
        """H.323 dial-out: ``h323:alias@ip[:port]`` directly; ``h323:alias`` (no address) through the
        external gatekeeper Cầu is registered with (ARQ → ACF gives the address)."""
        import ipaddress
        import os as _os

        from twisted.internet import defer

        text = target[5:] if target.lower().startswith("h323:") else target
        alias, at, host = text.rpartition("@")
        if at:
            from gateway.h323.call import parse_destination
            from gateway.sip.dns import is_ip

            try:
                _alias, name, _port = parse_destination(target)
            except ValueError as exc:
                return defer.fail(exc)
            if is_ip(name):
                return self.h323.dial(target, spec)
            resolver = getattr(self.sip, "resolver", None) if self.sip is not None else None
            if resolver is None:
                return defer.fail(ValueError(f"{name!r} is a host name and DNS is off (dns: false)"))
            port = _port if re.search(r":\d+$", host) else None

            async def by_name() -> Any:
                found = await resolver.locate_h323(name, port)
                if not found:
                    raise ValueError(f"{name!r} has no H.323 address in DNS (no _h323cs._tcp SRV, A or AAAA record)")
                ip, p = found[0]
                log.info("dial %s: %s → %s:%d", target, name, ip, p)
                ip_text = f"[{ip}]" if ":" in ip else ip
                return await self.h323.dial(f"{alias}@{ip_text}:{p}", spec)

            return defer.ensureDeferred(by_name())
        alias = text
        if self.gk_client is None:
            return defer.fail(ValueError(f"{target!r} has no address and Cầu is not registered with a gatekeeper "
                                         "(set register_with) to locate it"))
        kind = "dialedDigits" if alias.isdigit() else "h323-ID"
        d = self.gk_client.admission([(kind, alias)], _os.urandom(16), _os.urandom(16), 3840)

        def admitted(result: Any) -> Any:
            if not result.ok or not result.dest_call_signal_address:
                raise ValueError(f"the gatekeeper did not admit the call to {alias!r}: {result.reason}")
            ip, port = result.dest_call_signal_address
            ipaddress.ip_address(ip)
            log.info("gatekeeper admitted the call to %s at %s:%d", alias, ip, port)
            return self.h323.dial(f"{alias}@{ip}:{port}", spec)

        return d.addCallback(admitted)

    def call_endpoint(self, endpoint: Any, spec: Any, room: Any = None) -> Any:
        """Call a dial-plan endpoint where it registered (SIP registrar or gatekeeper) into ``spec``'s room."""
        from twisted.internet import defer

        from gateway.sip.dialout import dial as sip_dial

        if endpoint.protocol == "sip":
            bindings = self.sip.registrar.lookup(endpoint.alias) if self.sip.registrar else []
            if not bindings:
                return defer.fail(ValueError(f"endpoint {endpoint.alias!r} is not registered"))
            b = bindings[0]
            user = getattr(b.contact.uri, "user", None) or endpoint.alias
            host = f"[{b.source.host}]" if ":" in b.source.host else b.source.host
            uri = f"sip:{user}@{host}:{b.source.port}" + \
                {"TCP": ";transport=tcp", "TLS": ";transport=tls"}.get(b.source.transport, "")
            log.info("inviting SIP endpoint %s at %s into room %s", endpoint.alias, uri, spec.id)
            return sip_dial(self.sip, uri, spec, display_name=spec.name, from_user=spec.id, room=room,
                            encryption=endpoint.encryption)
        if endpoint.protocol == "h323":
            reg = self.gatekeeper.by_alias(endpoint.alias) or (endpoint.number and self.gatekeeper.by_alias(endpoint.number))
            if not reg or not reg.call_signal_address:
                return defer.fail(ValueError(f"endpoint {endpoint.alias!r} is not registered with the gatekeeper"))
            ip, port = reg.call_signal_address
            log.info("inviting H.323 endpoint %s at %s:%d into room %s", endpoint.alias, ip, port, spec.id)
            return self.h323.dial(f"{endpoint.alias}@{ip}:{port}", spec)
        return defer.fail(ValueError(f"endpoint {endpoint.alias!r} uses {endpoint.protocol}: it joins by itself"))

    # -- views -----------------------------------------------------------
    def http_port(self) -> int:
        return self._ports[0].getHost().port if self._ports else 0

    def health(self) -> dict[str, Any]:
        plan = self.dialplan.current
        return {
            "status": "ok",
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "dialplan": {"path": str(plan.path), "sha256": plan.sha256, "summary": plan.summary()},
            "last_reload": None if self.last_reload is None else vars(self.last_reload),
        }

    def status(self) -> dict[str, Any]:
        plan = self.dialplan.current
        rooms = [
            {"id": room.id, "name": room.spec.name, "participants": len(room.legs), "roster": room.roster(),
             "video": room.video.info()}
            for room in self.registry.rooms.values()
        ]
        return {
            "version": __version__,
            "hostname": socket.gethostname(),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "event_loop": _loop.loop_name(self.reactor._asyncioEventloop),
            "dialplan": {
                "path": str(plan.path),
                "sha256": plan.sha256,
                "summary": plan.summary(),
                "dialable": plan.dialable(),
                "last_reload": None if self.last_reload is None else vars(self.last_reload),
            },
            "codecs": sorted(self.codec_names),
            "rooms": rooms,
            "listening": dict(self.listening),
            "webrtc": {
                "sessions": self.webrtc.status() if getattr(self, "webrtc", None) is not None else [],
                "ice_hosts": self.ice_hosts(),
                "ice_public": list(getattr(self, "ice_public", ())),
                "tls": None if getattr(self, "tls", None) is None else {
                    "certificate": str(self.tls.cert), "sha256": self.tls.fingerprint,
                    "self_signed": self.tls.self_signed},
            },
            "tcp": {name: g.info() for name, g in getattr(self, "tcp_guards", {}).items()},
            "fd_limit": getattr(self, "fd_limit", None),
            "security": {
                # lockouts now or in the last ten minutes: a room's PIN or an account under attack
                "alarms": self.registry.pin_guard.alarms() + self.password_guard.alarms(),
                "wrong_pins": self.registry.pin_guard.stats["failures"],
                "wrong_passwords": self.password_guard.stats["failures"],
                # SIP requests answered 503 because their address held too many transactions
                "sip_overload_503": self.sip_transactions.stats.overload_503
                if getattr(self, "sip_transactions", None) is not None else 0,
                # outgoing SIP over TLS: what the far certificate is checked against (None: not checked)
                "tls_verify": getattr(self, "tls_trust_text", "") or None,
            },
            "gatekeeper_client": None if getattr(self, "gk_client", None) is None else {
                "gatekeeper": self.settings.register_with, "state": self.gk_client.state,
                "endpoint_id": self.gk_client.endpoint_id, "last_error": self.gk_client.last_error,
            },
            "alerts": self.alerts.info() if getattr(self, "alerts", None) is not None else None,
            "call_records": self.cdr.info() if getattr(self, "cdr", None) is not None else
            {"error": getattr(self, "cdr_error", None)},
            "media": {
                "rtp_ports": f"{self.ports.low}-{self.ports.high}",
                "rtp_ports_in_use": self.ports.in_use * 2,
                "clock": self.clock.stats.as_dict(),
            },
        }


def local_addresses() -> list[str]:
    """This machine's addresses people can reach (no loopback, no IPv6 link-local), IPv4 first."""
    import ipaddress

    import ifaddr

    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                a = ipaddress.ip_address(text)
            except ValueError:
                continue
            if not (a.is_loopback or a.is_link_local or a.is_unspecified) and text not in found:
                found.append(text)
    return sorted(found, key=lambda t: (":" in t, t))


def _is_loopback_text(text: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def banner(gw: Gateway) -> str:
    plan = gw.dialplan.current
    wildcard = gw.settings.bind in ("0.0.0.0", "::")
    if gw.settings.advertise:
        host = gw.settings.advertise
    elif wildcard:
        found = local_addresses()
        host = found[0] if found else "127.0.0.1"
    else:
        host = gw.settings.bind
    if ":" in host:
        host = f"[{host}]"
    lines = [
        f"Cầu {__version__} on {_loop.loop_name(gw.reactor._asyncioEventloop)}",
        f"dial plan {plan.path}: {plan.summary()}",
    ]
    if wildcard:
        addrs = local_addresses()
        lines.append("this machine's addresses: " + (", ".join(addrs) if addrs else "none but loopback"))
        if not gw.settings.advertise:
            lines.append("bound to every address: each site is answered (SDP, Contact, RAS, H.245) with "
                         "the address its packets come in on; behind NAT start with --advertise <outside address>")
    if gw.settings.advertise and _is_loopback_text(gw.settings.advertise) and wildcard:
        lines.append(f"WARNING: --advertise {gw.settings.advertise} is a loopback address while bound to every "
                     "address: only this machine can reach it")
    for what, where in gw.listening.items():
        lines.append(f"{what} listening on {where}")
    lines.append(f"status page: http://{host}:{gw.http_port()}/")
    tok = getattr(gw, "api_token", None)
    if tok is not None and tok.made_now:
        lines.append(f"API token for operator actions (made now, kept in {tok.source}; shown only this once): {tok.value}")
    elif tok is not None:
        lines.append("API token for operator actions: " + ("from the settings file" if tok.source == "settings"
                                                            else f"kept in {tok.source}"))
    if getattr(gw, "tls", None) is not None:
        lines.append(f"join page: https://{host}:{gw.https_port()}/join/<room number>")
        lines.append(f"TLS certificate {gw.tls.cert}{' (self-signed)' if gw.tls.self_signed else ''}: "
                     f"SHA-256 {gw.tls.fingerprint}")
    if getattr(gw, "sip_transport", None) is not None:
        trust = getattr(gw, "tls_trust_text", "")
        lines.append(f"calls out over TLS check the far certificate against {trust} and the host dialled" if trust
                     else "calls out over TLS are encrypted but the far certificate is not checked "
                          "(set tls_ca to a CA file or to system)")
    dialable = plan.dialable()
    if dialable:
        lines.append("numbers people can dial:")
        width = max(len(n) for n, _ in dialable)
        for number, what in dialable:
            lines.append(f"  {number.ljust(width)}  {what}")
    return "\n".join(lines)


def run(settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM. Returns the process exit code."""
    aio = _loop.install()
    from twisted.internet import reactor

    from gateway.dialplan import DialPlanError

    try:
        gw = Gateway(settings, reactor)
    except DialPlanError as exc:
        print(f"cau: the dial plan is not valid, not starting:\n{exc}", file=sys.stderr)
        return 2
    # Load pycrate's H.225.0/H.245 modules (~0.3 s) now, before the media clock runs, not on the first call.
    from gateway.h323 import asn1 as _asn1

    _asn1.h225_module()
    _asn1.h245_module()
    try:
        gw.start()
    except StartupError as exc:
        gw.stop()
        print(f"cau: {exc}", file=sys.stderr)
        return exc.exit_code

    # SIGHUP reloads; the handler only schedules work on the loop.
    def on_hup(signum: int, frame: Any) -> None:
        reactor.callFromThread(gw.reload_dialplan, "SIGHUP")

    signal.signal(signal.SIGHUP, on_hup)
    reactor.addSystemEventTrigger("before", "shutdown", gw.stop)
    # WebRTC peer connections close on the loop (DTLS close_notify, aiortc's receiver threads told
    # to end): the reactor waits for that, at most 5 s, before it stops the loop
    reactor.addSystemEventTrigger("before", "shutdown", gw.close_webrtc)
    # Everything loaded so far (pycrate's ASN.1 modules, the catalogue, the plan) lives for the whole
    # run: keep it out of the garbage collector's full passes, which otherwise stall the media clock.
    gc.collect()
    gc.freeze()
    print(banner(gw), flush=True)
    log.info("ready")
    reactor.run()  # installs SIGINT/SIGTERM handlers that stop the reactor cleanly
    # A second signal during the last clean-up must not reach a closed loop.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    aio.close()
    log.info("stopped")
    return 0
