"""The operator's console: the page (``/console``), the endpoint states (``/api/endpoints``), a
participant's quality history (``/api/rooms/<room>/participants/<id>/quality``) and the live
events (``/api/events``, Server-Sent Events).

The page is plain HTML, CSS and JavaScript in ``gateway/api/static`` with uPlot vendored beside it:
no build step, nothing loaded from another site (the Content-Security-Policy says so). It reads
the state once from the ``snapshot`` event and then follows the events; actions are the API's
POSTs with the operator's token.

Events (``event:`` name, JSON ``data:``):

- ``snapshot``: ``{"rooms": [...], "endpoints": {...}, "alerts": [...]}`` first, and again after a
  client was too slow to keep up (its events were dropped, the snapshot starts it afresh);
- ``room_opened`` / ``room_closed``, ``joined`` / ``left``, ``speaking``, ``dominant``, ``locked``,
  ``muted``, ``layout``: as they happen;
- ``quality``: every :data:`QUALITY_EVERY` s, each participant's figures (MOS, loss, jitter, RTT,
  video) in every room;
- ``endpoints``: the endpoints whose state changed (``in_call`` / ``registered`` / ``offline``);
- ``alert``: see :mod:`gateway.alerts`.
"""
from __future__ import annotations

import hmac
import json
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet import task
from twisted.internet.interfaces import IPushProducer
from twisted.web import resource, server
from zope.interface import implementer

from gateway.api.http import json_response
from gateway.webrtc.pages import SecureFiles

if TYPE_CHECKING:  # pragma: no cover
    from gateway.app import Gateway

log = logging.getLogger("cau.api.console")

STATIC = Path(__file__).resolve().parent / "static"
CSP = (b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

#: seconds between ``quality`` events (and endpoint-state checks)
QUALITY_EVERY = 2.0
#: a comment line this often keeps proxies and the browser from closing an idle stream
KEEPALIVE_EVERY = 15.0
#: event streams open at once (each is one TCP connection and a little memory)
MAX_CLIENTS = 32
#: a client that has not read for this long (its socket buffer full) is closed
STALL_LIMIT = 30.0


def token_ok(gateway: "Gateway", request: server.Request) -> bool:
    """Does the request carry the API token (``Authorization: Bearer …``)?"""
    token = getattr(getattr(gateway, "api_token", None), "value", None)
    if not token:
        return False
    scheme, _, value = (request.getHeader("authorization") or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


class NeedsToken(resource.Resource):
    """On the HTTPS site every browser reaches, the roster is not for everyone: ``inner`` is served
    only to requests with the API token (reads as well as actions)."""

    def __init__(self, gateway: "Gateway", inner: resource.Resource) -> None:
        super().__init__()
        self.gateway = gateway
        self.inner = inner

    def getChildWithDefault(self, path: bytes, request: server.Request) -> resource.Resource:  # noqa: N802
        if not token_ok(self.gateway, request):
            return self
        return self.inner.getChildWithDefault(path, request)

    def render(self, request: server.Request) -> bytes:
        request.setHeader(b"www-authenticate", b'Bearer realm="cau"')
        return json_response(request, {"error": "this needs the API token: Authorization: Bearer <api_token>"}, 401)


# -- views -------------------------------------------------------------------------------------
def group_label(plan: Any, group: str) -> str:
    """A group's name for people: the room with that id, or the template that makes it, else the id."""
    room = plan._rooms_by_id.get(group) if hasattr(plan, "_rooms_by_id") else None
    if room is not None:
        return room.name
    for t in getattr(plan, "templates", ()):
        names = re.findall(r"\{(\w+)\}", t.id)
        if not names:
            continue
        rx = "^" + re.sub(r"\\\{(\w+)\\\}", lambda m: f"(?P<{m.group(1)}>.+?)", re.escape(t.id)) + "$"
        m = re.match(rx, group)
        if m:
            try:
                return t.name.format(**m.groupdict())
            except (KeyError, IndexError, ValueError):
                return group
    return group


def endpoint_states(gateway: "Gateway") -> dict[str, Any]:
    """Every endpoint of the dial plan with its state, grouped as the plan groups them."""
    plan = gateway.dialplan.current
    in_call: dict[str, tuple[str, str]] = {}
    for room in list(gateway.registry.rooms.values()):
        for leg in list(room.legs.values()):
            if leg.identity:
                in_call.setdefault(leg.identity.casefold(), (room.id, leg.id))
    registered: dict[str, str] = {}
    sip = getattr(gateway, "sip", None)
    registrar = getattr(sip, "registrar", None)
    if registrar is not None:
        now = registrar.clock()
        for aor, bindings in registrar.bindings.items():
            if any(b.expires_at > now for b in bindings):
                registered[aor.casefold()] = "SIP"
    gk = getattr(gateway, "gatekeeper", None)
    if gk is not None:
        for reg in gk.registrations.values():
            if reg.endpoint_spec is not None:
                registered[reg.endpoint_spec.alias.casefold()] = "H.323"
    groups: dict[str, dict[str, Any]] = {}
    counts = {"in_call": 0, "registered": 0, "offline": 0}
    for ep in plan.endpoints:
        key = ep.alias.casefold()
        if key in in_call:
            state = "in_call"
        elif key in registered:
            state = "registered"
        else:
            state = "offline"
        counts[state] += 1
        gid = ep.group or ""
        g = groups.get(gid)
        if g is None:
            g = groups[gid] = {"id": gid, "name": group_label(plan, gid) if gid else "", "endpoints": []}
        room_id, leg_id = in_call.get(key, (None, None))
        g["endpoints"].append({"alias": ep.alias, "name": ep.name or ep.alias, "number": ep.number,
                               "protocol": ep.protocol, "state": state, "room": room_id, "participant": leg_id,
                               "registered": registered.get(key)})
    return {"groups": list(groups.values()), "counts": counts, "total": len(plan.endpoints)}


def _compact_quality(room: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in room.roster():
        out[p["id"]] = {"quality": p["quality"], "video_media": p["video_media"], "speaking": p["speaking"]}
    return out


# -- the event stream --------------------------------------------------------------------------
@implementer(IPushProducer)
class _Client:
    """One open ``/api/events`` stream. Twisted pauses it when the socket's buffer is full: then
    events are dropped, and the client gets a fresh ``snapshot`` when it reads again."""

    def __init__(self, hub: "EventHub", request: server.Request) -> None:
        self.hub = hub
        self.request = request
        self.paused_at: float | None = None
        self.missed = False

    def pauseProducing(self) -> None:  # noqa: N802 (Twisted)
        self.paused_at = time.monotonic()

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted)
        self.paused_at = None
        if self.missed:
            self.missed = False
            self.send(self.hub.encode("snapshot", self.hub.snapshot()))

    def stopProducing(self) -> None:  # noqa: N802 (Twisted)
        self.hub.clients.discard(self)

    def send(self, chunk: bytes) -> None:
        if self.paused_at is not None:
            self.missed = True
            return
        try:
            self.request.write(chunk)
        except Exception:       # the connection went away under us
            self.hub.clients.discard(self)


class EventHub:
    """Relays the rooms' events, the quality figures and the endpoints' states to the streams."""

    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway
        self.clients: set[_Client] = set()
        self.alerts: list[dict[str, Any]] = []        # the recent alerts (gateway.alerts keeps them here)
        self._states: dict[str, str] = {}
        self.sent = 0
        reg = gateway.registry
        reg.on("room_opened", lambda room: self.publish("room_opened", self._room(room)))
        reg.on("room_closed", lambda room: self.publish("room_closed", {"room": room.id,
                                                                        "reason": getattr(room, "close_reason", "")}))
        reg.on("roster", self._roster)
        self._ticker = task.LoopingCall(self._tick)
        self._ticker.clock = gateway.reactor
        self._ticker.start(QUALITY_EVERY, now=False)
        self._keepalive = task.LoopingCall(self._ping)
        self._keepalive.clock = gateway.reactor
        self._keepalive.start(KEEPALIVE_EVERY, now=False)

    def stop(self) -> None:
        for lc in (self._ticker, self._keepalive):
            if lc.running:
                lc.stop()
        for c in list(self.clients):
            try:
                c.request.finish()
            except Exception:
                pass
        self.clients.clear()

    # -- what is sent ----------------------------------------------------------------------
    @staticmethod
    def encode(event: str, data: Any) -> bytes:
        text = json.dumps(data, ensure_ascii=False, default=str, separators=(",", ":"))
        return f"event: {event}\ndata: {text}\n\n".encode()

    def _room(self, room: Any) -> dict[str, Any]:
        from gateway.media.video_mixer import LAYOUT_NAMES

        info = room.info()
        return {"id": room.id, "name": room.name, "locked": room.locked, "max_participants": room.max_participants,
                "participants": len(room.legs), "video": info["video"], "layouts": list(LAYOUT_NAMES),
                "roster": room.roster()}

    def snapshot(self) -> dict[str, Any]:
        return {"rooms": [self._room(r) for r in list(self.gateway.registry.rooms.values())],
                "endpoints": endpoint_states(self.gateway), "alerts": list(self.alerts[-50:]),
                "time": time.time()}

    def publish(self, event: str, data: Any) -> None:
        if not self.clients:
            return
        chunk = self.encode(event, data)
        self.sent += 1
        for c in list(self.clients):
            c.send(chunk)

    def _roster(self, room: Any, event: str, *args: Any) -> None:
        if not self.clients and event not in ("joined", "left"):
            return
        if event == "joined":
            leg = args[0]
            entry = next((p for p in room.roster() if p["id"] == leg.id), None)
            self.publish("joined", {"room": room.id, "participant": entry})
            self._check_endpoints()
        elif event == "left":
            leg, reason = args[0], (args[1] if len(args) > 1 else "")
            self.publish("left", {"room": room.id, "id": leg.id, "reason": reason})
            self._check_endpoints()
        elif event == "speaking":
            self.publish("speaking", {"room": room.id, "id": args[0].id, "on": bool(args[1])})
        elif event == "dominant":
            self.publish("dominant", {"room": room.id, "id": args[0].id if args and args[0] is not None else None})
        elif event == "locked":
            self.publish("locked", {"room": room.id, "locked": bool(args[0])})
        elif event == "muted":
            self.publish("muted", {"room": room.id, "id": args[0].id, "muted": bool(args[1]),
                                   "muted_out": bool(args[2])})
        elif event == "layout":
            self.publish("layout", {"room": room.id, "layout": args[0], "video": room.video.info()})

    def _check_endpoints(self) -> None:
        if not self.clients:
            self._states = {}
            return
        view = endpoint_states(self.gateway)
        now = {e["alias"]: e for g in view["groups"] for e in g["endpoints"]}
        changed = [e for alias, e in now.items() if self._states.get(alias) != e["state"]]
        self._states = {alias: e["state"] for alias, e in now.items()}
        if changed:
            self.publish("endpoints", {"changed": changed, "counts": view["counts"]})

    def _tick(self) -> None:
        if not self.clients:
            return
        now = time.monotonic()
        for c in list(self.clients):
            if c.paused_at is not None and now - c.paused_at > STALL_LIMIT:
                log.info("console event stream from %s closed: it stopped reading", c.request.getClientAddress())
                self.clients.discard(c)
                try:
                    c.request.channel.transport.abortConnection()
                except Exception:
                    pass
        rooms = {room.id: _compact_quality(room) for room in list(self.gateway.registry.rooms.values())}
        self.publish("quality", {"rooms": rooms, "time": time.time()})
        self._check_endpoints()

    def _ping(self) -> None:
        for c in list(self.clients):
            c.send(b": keep-alive\n\n")

    # -- the resource ----------------------------------------------------------------------
    def attach(self, request: server.Request) -> Any:
        if len(self.clients) >= MAX_CLIENTS:
            return json_response(request, {"error": f"too many event streams open (at most {MAX_CLIENTS})"}, 503)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        client = _Client(self, request)
        request.registerProducer(client, True)
        self.clients.add(client)
        if not self._states:
            self._states = {e["alias"]: e["state"] for g in endpoint_states(self.gateway)["groups"]
                            for e in g["endpoints"]}

        def gone(_: Any) -> None:
            self.clients.discard(client)

        request.notifyFinish().addBoth(gone)
        request.write(b"retry: 2000\n\n" + self.encode("snapshot", self.snapshot()))
        # no timeout on a stream that is meant to stay open (the site's idle timeout would end it)
        channel = request.channel
        if channel is not None and hasattr(channel, "setTimeout"):
            channel.setTimeout(None)
        return server.NOT_DONE_YET


class Events(resource.Resource):
    isLeaf = True

    def __init__(self, gateway: "Gateway") -> None:
        super().__init__()
        self.gateway = gateway

    def render_GET(self, request: server.Request) -> Any:  # noqa: N802
        return self.gateway.events.attach(request)


class Endpoints(resource.Resource):
    """``GET /api/endpoints``: every endpoint of the plan by group, with its state."""

    isLeaf = True

    def __init__(self, gateway: "Gateway") -> None:
        super().__init__()
        self.gateway = gateway

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802
        return json_response(request, endpoint_states(self.gateway))


def participant_quality(gateway: "Gateway", request: server.Request, room_id: str, leg_id: str) -> Any:
    """``GET /api/rooms/<room>/participants/<id>/quality``: this call's per-minute series (up to the
    last hour, read in a thread) and the figures now."""
    from twisted.internet import threads

    from gateway.conference.room import _quality

    room = gateway.registry.get(room_id)
    leg = room.legs.get(leg_id) if room is not None else None
    if leg is None:
        return json_response(request, {"error": f"no participant {leg_id[:40]!r} in a running room {room_id[:40]!r}"},
                          404)
    body = {"room": room.id, "participant": leg.id, "name": leg.display_name, "series": [],
            "now": _quality(leg), "time": time.time()}
    cdr = getattr(gateway, "cdr", None)
    call_id = cdr.call_id(leg.id) if cdr is not None else None
    if call_id is None:
        return json_response(request, body)
    since = time.time() - 3600

    def done(series: list[dict[str, Any]]) -> None:
        body["series"] = [s for s in series if (s.get("at") or 0) >= since]
        if not request._disconnected:
            request.write(json_response(request, body))
            request.finish()

    def failed(f: Any) -> None:
        log.warning("quality history of %s: %s", leg_id, f.getErrorMessage())
        if not request._disconnected:
            request.write(json_response(request, {"error": "the call records could not be read"}, 503))
            request.finish()

    threads.deferToThread(cdr.series, call_id).addCallbacks(done, failed)
    return server.NOT_DONE_YET


class RoomsRead(resource.Resource):
    """``GET /api/rooms/<room>/participants/<id>/quality`` (the POSTs are :class:`RoomActions`)."""

    isLeaf = True

    def __init__(self, gateway: "Gateway", actions: resource.Resource) -> None:
        super().__init__()
        self.gateway = gateway
        self.actions = actions

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802
        parts = [p.decode("utf-8", "replace") for p in request.postpath]
        if len(parts) == 4 and parts[1] == "participants" and parts[3] == "quality":
            return participant_quality(self.gateway, request, parts[0], parts[2])
        return json_response(request, {"error": "use GET /api/rooms/<room>/participants/<id>/quality"}, 404)

    def render_POST(self, request: server.Request) -> Any:  # noqa: N802
        return self.actions.render_POST(request)


# -- the page ----------------------------------------------------------------------------------
def _secure_headers(request: server.Request) -> None:
    request.setHeader(b"content-security-policy", CSP)
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"cache-control", b"no-cache")


class ConsolePage(resource.Resource):
    """``/console``: the page; ``/console/<file>``: its script, style and the vendored uPlot."""

    def __init__(self) -> None:
        super().__init__()
        self.files = _Files(str(STATIC))

    def getChild(self, path: bytes, request: server.Request) -> resource.Resource:  # noqa: N802
        if path == b"":
            return self
        return self.files.getChild(path, request)

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802
        if not request.path.endswith(b"/"):     # relative links need /console/
            request.redirect(b"/console/")
            return b""
        _secure_headers(request)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return (STATIC / "console.html").read_bytes()

    render_HEAD = render_GET


class _Files(SecureFiles):
    """The console's files, with its own Content-Security-Policy."""

    headers = staticmethod(_secure_headers)
