"""HTTP face of the gateway: ``/healthz`` (JSON), ``/api/status`` (JSON) and a status page.

The resources read everything from the running :class:`gateway.app.Gateway`;
they never change it (reload and the like stay on the signal/file-watch path
until the operator API exists).
"""
from __future__ import annotations

import html
import json
import re
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.web import resource, server

if TYPE_CHECKING:  # pragma: no cover
    from gateway.app import Gateway


def json_response(request: server.Request, body: Any, code: int = 200) -> bytes:
    """``body`` as the JSON answer of ``request`` (UTF-8, not cached; what JSON cannot say, as text)."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, ensure_ascii=False, indent=1, default=str).encode("utf-8") + b"\n"


class Health(resource.Resource):
    isLeaf = True

    def __init__(self, gateway: "Gateway"):
        super().__init__()
        self.gateway = gateway

    def render_GET(self, request: server.Request) -> bytes:
        return json_response(request, self.gateway.health())

    render_HEAD = render_GET


def _when(text: str, what: str) -> float:
    """A query's time: unix seconds, or an ISO date / date-time (UTC when no zone is given)."""
    import datetime as dt

    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{what}={text[:40]!r} is not a date (2026-12-01, 2026-12-01T08:00) "
                         "or unix seconds") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()


class Calls(resource.Resource):
    """``GET /api/calls?from=&to=&room=&site=&limit=`` (JSON, newest first; ``format=csv`` or
    ``Accept: text/csv`` for a spreadsheet) and ``/api/calls/<id>/quality`` (the minute series)."""
    isLeaf = True

    def __init__(self, gateway: "Gateway"):
        super().__init__()
        self.gateway = gateway

    def render_GET(self, request: server.Request) -> Any:
        from twisted.internet import threads

        cdr = getattr(self.gateway, "cdr", None)
        if cdr is None:
            return json_response(request, {"error": "call records are off: "
                                   + (getattr(self.gateway, "cdr_error", None) or "no database")}, 503)
        parts = [p.decode("utf-8", "replace") for p in request.postpath if p]
        args = {k.decode("ascii", "replace"): v[0].decode("utf-8", "replace")[:200]
                for k, v in (request.args or {}).items() if v}
        try:
            if parts and len(parts) == 2 and parts[0].isdigit() and parts[1] == "quality":
                work = lambda: {"call": int(parts[0]), "series": cdr.series(int(parts[0]))}  # noqa: E731
                as_csv = False
            elif parts:
                return json_response(request, {"error": "try /api/calls or /api/calls/<id>/quality"}, 404)
            else:
                query = {"start": _when(args["from"], "from") if "from" in args else None,
                         "end": _when(args["to"], "to") if "to" in args else None,
                         "room": args.get("room") or None, "site": args.get("site") or None,
                         "limit": int(args["limit"]) if args.get("limit", "").isdigit() else 1000}
                work = lambda: cdr.query(**query)  # noqa: E731
                accept = (request.getHeader("accept") or "").lower()
                as_csv = args.get("format") == "csv" or ("text/csv" in accept and "json" not in accept)
        except ValueError as exc:
            return json_response(request, {"error": str(exc)}, 400)

        def done(result: Any) -> None:
            if request.finished or getattr(request, "_disconnected", False):
                return
            if as_csv:
                request.setHeader(b"content-type", b"text/csv; charset=utf-8")
                request.setHeader(b"content-disposition", b'attachment; filename="cau-calls.csv"')
                request.write(cdr.to_csv(result).encode("utf-8"))
            else:
                request.write(json_response(request, {"calls": result} if isinstance(result, list) else result))
            request.finish()

        def failed(f: Any) -> None:
            if not request.finished:
                request.write(json_response(request, {"error": f"the call records cannot be read: {f.getErrorMessage()}"}, 500))
                request.finish()

        threads.deferToThread(work).addCallbacks(done, failed)   # the query never holds the event loop
        return server.NOT_DONE_YET


class Metrics(resource.Resource):
    """``/metrics``: the Prometheus text exposition (gateway.metrics)."""
    isLeaf = True

    def __init__(self, gateway: "Gateway"):
        super().__init__()
        self.gateway = gateway

    def render_GET(self, request: server.Request) -> bytes:
        from gateway.metrics import CONTENT_TYPE

        request.setHeader(b"content-type", CONTENT_TYPE.encode())
        request.setHeader(b"cache-control", b"no-store")
        return self.gateway.metrics.render()


class Status(resource.Resource):
    isLeaf = True

    def __init__(self, gateway: "Gateway"):
        super().__init__()
        self.gateway = gateway

    def render_GET(self, request: server.Request) -> bytes:
        return json_response(request, self.gateway.status())


def _worst_line(roster: list[dict[str, Any]]) -> str:
    """The participant whose audio reaches the bridge worst: name, MOS, loss (HTML-escaped)."""
    rated = [(p["quality"]["rx"]["mos"], p) for p in roster
             if p.get("quality") and p["quality"]["rx"]["packets"] > 0]
    if not rated:
        return "-"
    mos, p = min(rated, key=lambda x: x[0])
    rx = p["quality"]["rx"]
    return html.escape(f"{p['name'] or p['id']}: {mos:.1f} ({rx['loss_pct']:.1f} % lost, "
                       f"jitter {rx['jitter_ms']:.0f} ms)")


def _video_rows(rooms: list[dict[str, Any]]) -> str:
    """One row per participant with video: what we receive from them and what we send them."""
    e = html.escape
    rows = []
    for r in rooms:
        v = r.get("video") or {}
        for p in r.get("roster", []):
            vm = p.get("video_media")
            if not vm:
                continue
            i, o = vm.get("in"), vm.get("out")
            got = (f"{e(i['codec'])} {i['width']}x{i['height']} {i['fps']:g} fps; {i['frames_decoded']} decoded, "
                   f"{i['frames_dropped']} dropped, {i['keyframes_asked']} keyframes asked for"
                   f"{'' if i['on_screen'] else ' (off screen)'}") if i else "-"
            sent = (f"{e(o['codec'])}{' mode ' + str(o['packetization']) if o['codec'] == 'H264' else ''} "
                    f"{o['width']}x{o['height']} {o['fps']:g} fps, {o['tier_kbps']} kbit/s; "
                    f"{o['frames_sent']} frames, {o['keyframes_sent']} keyframes ({o['keyframe_requests']} asked for); "
                    f"group {e(o['group'] or '-')}") \
                if o else "-"
            rows.append(f"<tr><td>{e(r['id'])} ({e(v.get('layout', '-'))})</td><td>{e(p['name'] or p['id'])}</td>"
                        f"<td>{got}</td><td>{sent}</td></tr>")
    return "".join(rows) or '<tr><td colspan="4">no video</td></tr>'


def _webrtc_rows(st: dict[str, Any]) -> str:
    e = html.escape
    names = {p["id"]: p["name"] for r in st["rooms"] for p in r.get("roster", [])}
    rows = []
    for s in st.get("webrtc", {}).get("sessions", []):
        since = "" if s["connected_s"] is None else f" for {s['connected_s']:.0f} s"
        rows.append(f"<tr><td>{e(s['room'])}</td><td>{e(names.get(s['id'], s['id']))}</td>"
                    f"<td>{'WHEP viewer' if s['viewer'] else 'participant'}</td>"
                    f"<td>{e(s['state'])}{since}</td><td>{e(s['remote'])}</td></tr>")
    return "".join(rows) or '<tr><td colspan="5">none</td></tr>'


def _alarm_rows(st: dict[str, Any]) -> str:
    e = html.escape
    rows = []
    for a in st.get("security", {}).get("alarms", []):
        who = "address" if a["kind"] == "source" else "target"
        state = f"locked {a['locked_for_s']} s more" if a["locked"] else "lockout over"
        rows.append(f"<tr><td>{e(a['secret'])}</td><td>{who} <code>{e(a['name'])}</code></td>"
                    f"<td>{a['failures']} wrong, from {a['sources']} address(es)</td><td>{state}</td></tr>")
    return "".join(rows) or '<tr><td colspan="4">none: no PIN or password is being guessed</td></tr>'


def _tls_line(st: dict[str, Any]) -> str:
    t = st.get("webrtc", {}).get("tls")
    if not t:
        return ""
    kind = "self-signed certificate" if t["self_signed"] else "certificate"
    return f"<p>HTTPS {kind}, SHA-256 <code>{html.escape(t['sha256'])}</code></p>"


class StatusPage(resource.Resource):
    """A small human page: what is running, what people can dial, the rooms open now."""

    isLeaf = True

    def __init__(self, gateway: "Gateway"):
        super().__init__()
        self.gateway = gateway

    def render_GET(self, request: server.Request) -> bytes:
        if request.path not in (b"/", b"/index.html"):
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found: try / or /healthz or /api/status\n"
        st = self.gateway.status()
        e = html.escape
        rows = "".join(
            f"<tr><td><code>{e(n)}</code></td><td>{e(d)}</td></tr>" for n, d in st["dialplan"]["dialable"]
        )
        rooms = "".join(
            f"<tr><td>{e(r['id'])}</td><td>{e(r['name'])}</td><td>{r['participants']}</td>"
            f"<td>{_worst_line(r.get('roster', []))}</td></tr>"
            for r in st["rooms"]
        ) or '<tr><td colspan="4">no room is open</td></tr>'
        last = st["dialplan"]["last_reload"]
        reload_line = ""
        if last:
            reload_line = (
                f"<p>Last reload: {'ok' if last['ok'] else 'REFUSED'} at {e(last['at'])}</p>"
                f"<pre>{e(last['message'])}</pre>"
            )
        body = f"""<!doctype html>
<html lang="vi"><head><meta charset="utf-8"><title>Cầu — {e(st['hostname'])}</title>
<meta http-equiv="refresh" content="10">
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}td,th{{padding:.2em .8em;text-align:left}}
table{{border-collapse:collapse}}tr:nth-child(even){{background:#f2f2f2}}pre{{background:#fff3f3}}</style></head>
<body><h1>Cầu {e(st['version'])}</h1>
<p>Up {st['uptime_s']:.0f} s on {e(st['hostname'])}; event loop {e(st['event_loop'])}.
<a href="/console/">Bàn điều khiển / console</a></p>
<h2>Dial plan</h2><p><code>{e(st['dialplan']['path'])}</code>: {e(st['dialplan']['summary'])}
(sha256 {e(st['dialplan']['sha256'][:12])}…)</p>{reload_line}
<h2>Numbers to dial</h2><table><tr><th>Number</th><th>Goes to</th></tr>{rows}</table>
<h2>Rooms open now</h2><table><tr><th>Room</th><th>Name</th><th>Participants</th>
<th>Worst line (estimated MOS received)</th></tr>{rooms}</table>
<h2>Video</h2><table><tr><th>Room (layout)</th><th>Participant</th><th>We receive</th><th>We send</th></tr>
{_video_rows(st["rooms"])}</table>
<h2>Browsers and WHIP/WHEP clients</h2><table><tr><th>Room</th><th>Participant</th><th>Kind</th><th>Connection</th>
<th>Address</th></tr>{_webrtc_rows(st)}</table>{_tls_line(st)}
<h2>Security alarms</h2><table><tr><th>Secret</th><th>Guessed at</th><th>Failures</th><th>State</th></tr>
{_alarm_rows(st)}</table>
<h2>Listening</h2><ul>{''.join(f'<li>{e(k)}: {e(v)}</li>' for k, v in st['listening'].items())}</ul>
</body></html>
"""
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return body.encode("utf-8")


DIAL_TIMEOUT = 90.0  # seconds an operator's invite may ring before the answer is "no answer"


class RoomActions(resource.Resource):
    """The operator's actions on a room, behind the API token (always: one is made on first start)
    and in JSON only:

    * ``POST /api/rooms/<room>/dial`` with JSON {"to": "sip:…" | "h323:…" | endpoint alias or number}.
      Answers when the call is up (200, the participant) or has failed (400 for a bad request,
      502 with the far end's reason), so an operator sees at once what happened.
    * ``POST /api/rooms/<room>/layout`` with JSON {"layout": "cp-3x3"}: the room's video layout,
      changed while it runs (200 with the layout; 404 when the room is not running; 400 with
      the layouts there are)."""

    isLeaf = True

    def __init__(self, gateway: "Gateway"):
        super().__init__()
        self.gateway = gateway

    def render_POST(self, request: server.Request) -> Any:
        from gateway.api.console import token_ok

        if not token_ok(self.gateway, request):
            request.setHeader(b"www-authenticate", b'Bearer realm="cau"')
            return json_response(request, {"error": "this needs the API token: Authorization: Bearer <api_token> "
                                            "(in the settings, or the file the start banner names)"}, 401)
        kind = (request.getHeader("content-type") or "").split(";", 1)[0].strip().lower()
        if kind != "application/json":
            # a cross-site form can only send form or text types: JSON alone keeps them out
            return json_response(request, {"error": "send the request body as Content-Type: application/json"}, 415)
        parts = [p.decode("utf-8", "replace") for p in request.postpath]
        if len(parts) == 4 and parts[1] == "participants" and parts[3] in ("mute", "remove"):
            return self._participant(request, parts[0], parts[2], parts[3])
        if len(parts) != 2 or parts[1] not in ("dial", "layout", "lock", "end") or not parts[0]:
            return json_response(request, {"error": "use POST /api/rooms/<room>/dial | layout | lock | end, or "
                                            "/api/rooms/<room>/participants/<id>/mute | remove"}, 404)
        if parts[1] == "layout":
            return self._layout(request, parts[0])
        if parts[1] in ("lock", "end"):
            return self._room_state(request, parts[0], parts[1])
        return self._dial(request, parts)

    def _body(self, request: server.Request) -> dict:
        try:
            body = json.loads(request.content.read(65536) or b"{}")
        except ValueError:
            raise ValueError("the body is not JSON") from None
        if not isinstance(body, dict):
            raise ValueError("send a JSON object")
        return body

    def _room_state(self, request: server.Request, room_id: str, what: str) -> bytes:
        room = self.gateway.registry.get(room_id)
        if room is None:
            return json_response(request, {"error": f"room {room_id!r} is not running"}, 404)
        try:
            body = self._body(request)
        except ValueError as exc:
            return json_response(request, {"error": str(exc)}, 400)
        if what == "lock":
            locked = body.get("locked", True)
            if not isinstance(locked, bool):
                return json_response(request, {"error": 'send {"locked": true} or {"locked": false}'}, 400)
            room.set_locked(locked)
            return json_response(request, {"room": room.id, "locked": room.locked})
        n = len(room.legs)
        self.gateway.registry.close(room.id, "ended by the operator")
        return json_response(request, {"room": room_id, "ended": True, "participants": n})

    def _participant(self, request: server.Request, room_id: str, leg_id: str, what: str) -> bytes:
        room = self.gateway.registry.get(room_id)
        if room is None or leg_id not in room.legs:
            return json_response(request, {"error": f"no participant {leg_id[:40]!r} in a running room {room_id[:40]!r}"}, 404)
        try:
            body = self._body(request)
        except ValueError as exc:
            return json_response(request, {"error": str(exc)}, 400)
        if what == "remove":
            room.kick(leg_id)
            return json_response(request, {"room": room.id, "removed": leg_id})
        direction = body.get("direction", "in")
        muted = body.get("muted", True)
        if direction not in ("in", "out") or not isinstance(muted, bool):
            return json_response(request, {"error": 'send {"direction": "in" | "out", "muted": true | false} '
                                            '("in": the room stops hearing them; "out": they stop hearing it)'}, 400)
        room.set_mute(leg_id, **({"mute_in": muted} if direction == "in" else {"mute_out": muted}))
        entry = next(p for p in room.roster() if p["id"] == leg_id)
        return json_response(request, {"room": room.id, "participant": leg_id, "muted": entry["muted"],
                               "muted_out": entry["muted_out"]})

    def _layout(self, request: server.Request, room_id: str) -> bytes:
        from gateway.media.video_mixer import LAYOUT_NAMES

        try:
            body = json.loads(request.content.read(65536) or b"{}")
            layout = body["layout"]
            if not isinstance(layout, str):
                raise TypeError
        except (ValueError, KeyError, TypeError, AttributeError):
            return json_response(request, {"error": 'send JSON like {"layout": "cp-2x2"}', "layouts": list(LAYOUT_NAMES)}, 400)
        room = self.gateway.registry.get(room_id)
        if room is None:
            return json_response(request, {"error": f"room {room_id!r} is not running"}, 404)
        try:
            room.set_layout(layout)
        except ValueError as exc:
            return json_response(request, {"error": str(exc), "layouts": list(LAYOUT_NAMES)}, 400)
        return json_response(request, {"room": room.id, "layout": layout})

    def _dial(self, request: server.Request, parts: list[str]) -> Any:
        try:
            body = json.loads(request.content.read() or b"{}")
            to = body["to"]
            if not isinstance(to, str) or not to.strip():
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return json_response(request, {"error": 'send JSON like {"to": "sip:1234@192.0.2.7"}'}, 400)
        d = self.gateway.invite(parts[0], to)
        d.addTimeout(DIAL_TIMEOUT, self.gateway.reactor)  # an endpoint that rings for ever must not hold the request
        request.notifyFinish().addErrback(lambda _: None if d.called else d.cancel())  # the client went away

        def done(leg: Any) -> None:
            if not request.finished and not request._disconnected:
                request.write(json_response(request, {"room": parts[0], "participant": leg.id, "name": leg.display_name,
                                              "protocol": leg.protocol}))
                request.finish()

        def failed(f: Any) -> None:
            if request.finished or request._disconnected:
                return
            err = f.value
            if f.check(defer.TimeoutError, defer.CancelledError):
                request.write(json_response(request, {"error": f"no answer within {DIAL_TIMEOUT:g} s"}, 504))
                request.finish()
                return
            code = 400 if isinstance(err, ValueError) else 502
            request.write(json_response(request, {"error": str(err) or type(err).__name__,
                                          "status": getattr(err, "status", None)}, code))
            request.finish()

        d.addCallbacks(done, failed)
        return server.NOT_DONE_YET


class SecureOnly(resource.Resource):
    """On plain HTTP: serve ``inner`` to loopback clients, send everyone else to HTTPS (308 keeps
    the method and body, so a WHIP client's POST follows it)."""

    def __init__(self, gateway: "Gateway", inner: resource.Resource) -> None:
        super().__init__()
        self.gateway = gateway
        self.inner = inner

    def _allowed(self, request: server.Request) -> bool:
        from gateway.webrtc.whip import is_loopback

        return is_loopback(request.getClientAddress().host) or not self.gateway.https_port()

    def getChildWithDefault(self, path: bytes, request: server.Request) -> resource.Resource:  # noqa: N802
        if not self._allowed(request):
            return self
        if self.inner.isLeaf:               # the leaf sees the rest of the path itself
            request.postpath.insert(0, path)
            request.prepath.pop()
            return self.inner
        return self.inner.getChildWithDefault(path, request)

    def render(self, request: server.Request) -> bytes:
        if self._allowed(request):
            return self.inner.render(request)
        # the name the browser used, when it is a plain host name or address; else ours
        asked = (request.getRequestHostname() or b"").decode("ascii", "replace")
        host = asked if re.fullmatch(r"[A-Za-z0-9.-]{1,253}|[0-9A-Fa-f:.]{2,45}", asked) \
            else self.gateway.advertised_host()
        if ":" in host:
            host = f"[{host}]"
        target = f"https://{host}:{self.gateway.https_port()}{request.uri.decode('latin-1')}"
        request.setResponseCode(308)
        request.setHeader(b"location", target.encode("latin-1", "replace"))
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return f"this page is served over HTTPS: {target}\n".encode()


class WebRtcConfig(resource.Resource):
    """``/webrtc-config.json``: the STUN/TURN servers the join page hands its peer connection."""

    isLeaf = True

    def __init__(self, gateway: "Gateway"):
        super().__init__()
        self.gateway = gateway

    def render_GET(self, request: server.Request) -> bytes:
        servers = [dict(s) for s in self.gateway.settings.ice_servers]
        return json_response(request, {"iceServers": servers})


#: the largest request body the web server takes (a WHIP offer is a few kB, an API call less)
MAX_BODY = 256 * 1024


class BoundedRequest(server.Request):
    """A request whose body may not pass :data:`MAX_BODY`: a larger Content-Length, or a chunked
    body that grows past it, is answered 413 and the connection closed, before the body is kept."""

    _body_seen = 0
    _refused = False

    def gotLength(self, length: int | None) -> None:  # noqa: N802 (Twisted)
        super().gotLength(None if length is None else min(length, MAX_BODY))
        if length is not None and length > MAX_BODY:
            self._refuse()

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 (Twisted)
        if self._refused:
            return
        self._body_seen += len(data)
        if self._body_seen > MAX_BODY:
            self._refuse()
            return
        super().handleContentChunk(data)

    def _refuse(self) -> None:
        self._refused = True
        transport = self.channel.transport if self.channel is not None else None
        if transport is not None:
            text = f"the request body is larger than {MAX_BODY // 1024} KiB\n".encode()
            transport.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
                            b"Connection: close\r\nContent-Length: " + str(len(text)).encode() + b"\r\n\r\n" + text)
            transport.loseConnection()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802
        if not self._refused:
            super().requestReceived(command, path, version)


def build_site(gateway: "Gateway", secure: bool = False) -> server.Site:
    """The web server. The plain HTTP site (``secure=False``) has the status page, ``/api``,
    ``/metrics`` and ``/healthz``, and the browser side (join page, WHIP/WHEP, the console) for
    loopback clients only, sending others to the HTTPS site, where browsers allow camera and
    microphone. The HTTPS site has the browser side, the console and ``/healthz``, and ``/api`` for
    requests with the API token only: the roster is not for every browser that reaches the port."""
    from gateway.webrtc.pages import join_page, static_files
    from gateway.webrtc.whip import WhipEndpoint

    from gateway.api.console import ConsolePage, Endpoints, Events, NeedsToken, RoomsRead

    root = resource.Resource()
    root.putChild(b"healthz", Health(gateway))
    api = resource.Resource()
    api.putChild(b"status", Status(gateway))
    api.putChild(b"rooms", RoomsRead(gateway, RoomActions(gateway)))
    api.putChild(b"calls", Calls(gateway))
    api.putChild(b"endpoints", Endpoints(gateway))
    api.putChild(b"events", Events(gateway))
    if not secure:   # the status page, the metrics and the open reads stay on the plain (management) port
        page = StatusPage(gateway)
        root.putChild(b"", page)
        root.putChild(b"index.html", page)
        root.putChild(b"api", api)
        root.putChild(b"metrics", Metrics(gateway))
    else:            # every browser reaches the HTTPS port: there the roster is read with the token only
        root.putChild(b"api", NeedsToken(gateway, api))
    browser = {b"whip": WhipEndpoint(gateway.webrtc, viewer=False), b"whep": WhipEndpoint(gateway.webrtc, viewer=True),
               b"join": join_page(), b"static": static_files(), b"webrtc-config.json": WebRtcConfig(gateway),
               b"console": ConsolePage()}
    for name, child in browser.items():
        root.putChild(name, child if secure else SecureOnly(gateway, child))
    site = server.Site(root, requestFactory=BoundedRequest, timeout=60)   # an idle connection: 60 s
    site.displayTracebacks = False
    site.noisy = False
    return site
