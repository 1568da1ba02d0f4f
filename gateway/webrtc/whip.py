"""WHIP (RFC 9725) and WHEP on the gateway's web server: browsers and streaming tools join rooms.

* ``POST /whip/<room number>`` (``Content-Type: application/sdp``): a participant (sendrecv) or
  a publisher (sendonly) joins; ``POST /whep/<room number>``: a viewer (recvonly) watches and
  listens. The room's PIN, when it has one, is the Bearer token. Answers ``201 Created`` with the
  SDP answer (all our candidates in it), ``Location`` (the session's resource), ``ETag``,
  ``Accept-Patch: application/trickle-ice-sdpfrag`` and a ``Link`` per configured STUN/TURN server.
  ``?name=…`` gives the participant's display name.
* ``PATCH <resource>`` (``application/trickle-ice-sdpfrag``, RFC 8840): trickled candidates and
  end-of-candidates → 204; ``If-Match`` other than the ETag or ``*`` → 412; new ICE credentials
  (an ICE restart) → 501, since aiortc cannot restart ICE: the client starts a new session.
* ``DELETE <resource>`` → 200, the participant leaves.
* ``OPTIONS`` answers CORS preflights (pages on another origin; Bearer tokens, no cookies, so
  ``Access-Control-Allow-Origin: *`` gives nothing away) and lists the ICE servers in ``Link``.

Refusals say what is wrong: 404 no such room, 401 no PIN / 403 wrong PIN (and 429 after
:data:`PIN_TRIES` wrong ones from one address, or :data:`ROOM_PIN_TRIES` for one room from
anywhere, within a minute, counted with the DTMF PINs of SIP and H.323 callers; the lockout
doubles each time it recurs within an hour — :mod:`gateway.guard`), 409 the room is full, 406 no common
codec (naming what was offered and what is taken), 400 malformed SDP, 415 wrong content type,
413 an offer over 64 KiB, 503 while the gateway shuts down, 429 more than :data:`MAX_PER_SOURCE` sessions from one address, 503 more
than :data:`MAX_SESSIONS` in all.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import secrets
import unicodedata
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.web import resource, server

from gateway.webrtc.offer import OfferError, candidate_fields, prepare_offer

if TYPE_CHECKING:  # pragma: no cover
    from gateway.app import Gateway

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))

MAX_OFFER = 64 * 1024
MAX_PATCH = 16 * 1024
MAX_CANDIDATES = 64          # per session: a client has a handful
PIN_TRIES = 5                # wrong PINs per address (IPv6: per /64) per minute before 429
ROOM_PIN_TRIES = 30          # wrong PINs for one room per minute, from anywhere, before 429
MAX_SESSIONS = 500           # WebRTC sessions in all (a province has ~220 sites)
MAX_PER_SOURCE = 20          # sessions from one address (a hall of laptops behind one NAT; not a flood);
                             # loopback is exempt (a reverse proxy on the same machine, the benchmarks)
SDP = b"application/sdp"
SDPFRAG = b"application/trickle-ice-sdpfrag"


def clean_name(text: str, fallback: str) -> str:
    """A display name as people typed it: NFC, no control characters, at most 64 characters."""
    t = unicodedata.normalize("NFC", text or "")
    t = "".join(c for c in t if unicodedata.category(c)[0] != "C").strip()
    return t[:64] or fallback


class WhipSession:
    def __init__(self, sid: str, peer: Any, room_id: str, pin: str | None, viewer: bool) -> None:
        self.id = sid
        self.peer = peer
        self.room_id = room_id
        self.pin = pin
        self.viewer = viewer
        self.etag = f'"{secrets.token_hex(8)}"'
        self.candidates = 0
        self.ufrag: str | None = None


class WebRtcService:
    """The WHIP/WHEP sessions of the gateway."""

    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway
        self.sessions: dict[str, WhipSession] = {}
        #: POSTs being answered, per source address (they count against the limits too)
        self.pending: dict[str, int] = {}
        self.closing = False
        self._own_guard: Any = None

    # -- helpers ------------------------------------------------------------------------------
    @property
    def ice_servers(self) -> list[dict[str, str]]:
        return [dict(s) for s in self.gateway.settings.ice_servers]

    def link_headers(self) -> list[bytes]:
        out = []
        for s in self.ice_servers:
            h = f'<{s["urls"]}>; rel="ice-server"'
            if "username" in s:
                h += f'; username="{s["username"]}"; credential="{s["credential"]}"; credential-type="password"'
            out.append(h.encode())
        return out

    @property
    def pin_guard(self) -> Any:
        """The registry's PIN guard (shared with the DTMF PIN prompt of SIP and H.323 callers)."""
        registry = getattr(self.gateway, "registry", None)
        guard = getattr(registry, "pin_guard", None)
        if guard is None:
            if self._own_guard is None:
                from gateway.guard import FailureGuard

                self._own_guard = FailureGuard("PIN", per_source=PIN_TRIES, per_target=ROOM_PIN_TRIES)
            guard = self._own_guard
        return guard

    def pin_refused(self, source: str, room: str) -> bool:
        """Too many wrong PINs lately from ``source`` (an IPv6 address counts with its /64), or for
        ``room`` from anywhere (guesses spread over many addresses)."""
        return self.pin_guard.refused(source, room)

    def pin_failed(self, source: str, room: str) -> None:
        self.pin_guard.failed(source, room)

    def status(self) -> list[dict[str, Any]]:
        return [{"resource": s.id, "room": s.room_id, "viewer": s.viewer, **s.peer.info()} for s in self.sessions.values()]

    async def close(self) -> None:
        self.closing = True
        for s in list(self.sessions.values()):
            await s.peer.close()


def _cors(request: server.Request) -> None:
    request.setHeader(b"access-control-allow-origin", b"*")
    request.setHeader(b"access-control-allow-methods", b"POST, PATCH, DELETE, OPTIONS")
    request.setHeader(b"access-control-allow-headers", b"Authorization, Content-Type, If-Match")
    request.setHeader(b"access-control-expose-headers", b"Location, ETag, Link, Accept-Patch")
    request.setHeader(b"access-control-max-age", b"600")


def _text(request: server.Request, code: int, message: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return (message.rstrip() + "\n").encode("utf-8")


def _media_type(request: server.Request) -> bytes:
    return (request.getHeader(b"content-type") or b"").split(b";", 1)[0].strip().lower()


def _bearer(request: server.Request) -> str | None:
    given = request.getHeader(b"authorization")
    if not given:
        return None
    scheme, _, value = given.decode("latin-1").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _read(request: server.Request, limit: int) -> bytes | None:
    data = request.content.read(limit + 1)
    return None if len(data) > limit else data


class WhipEndpoint(resource.Resource):
    """``/whip/…`` (``viewer=False``) or ``/whep/…`` (``viewer=True``)."""

    isLeaf = True

    def __init__(self, service: WebRtcService, viewer: bool) -> None:
        super().__init__()
        self.service = service
        self.viewer = viewer
        self.kind = "WHEP" if viewer else "WHIP"

    def _parts(self, request: server.Request) -> list[str]:
        return [p.decode("utf-8", "replace") for p in request.postpath if p]

    def render_OPTIONS(self, request: server.Request) -> bytes:  # noqa: N802
        _cors(request)
        request.setHeader(b"accept-post", SDP)
        for link in self.service.link_headers():
            request.responseHeaders.addRawHeader(b"link", link)
        request.setResponseCode(204)
        return b""

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802
        _cors(request)
        request.setHeader(b"allow", b"POST, OPTIONS" if len(self._parts(request)) == 1 else b"PATCH, DELETE, OPTIONS")
        return _text(request, 405, f"{self.kind}: POST an SDP offer to /{self.kind.lower()}/<room number>")

    render_HEAD = render_GET
    render_PUT = render_GET

    # -- POST: a new session -----------------------------------------------------------------
    def render_POST(self, request: server.Request) -> Any:  # noqa: N802
        _cors(request)
        parts = self._parts(request)
        if len(parts) != 1:
            request.setHeader(b"allow", b"PATCH, DELETE, OPTIONS")
            return _text(request, 405, f"POST the offer to /{self.kind.lower()}/<room number>")
        if _media_type(request) != SDP:
            return _text(request, 415, "send the SDP offer as Content-Type: application/sdp")
        body = _read(request, MAX_OFFER)
        if body is None:
            return _text(request, 413, f"the offer is larger than {MAX_OFFER // 1024} KiB")
        svc = self.service
        gw = svc.gateway
        number = parts[0]
        result = gw.dialplan.current.route(number, protocol="webrtc")
        spec = result.room if result.kind == "room" else None
        if spec is None:
            return _text(request, 404, f"no room answers on {number[:40]!r}")
        source = request.getClientAddress().host
        if spec.pin:
            wait = svc.pin_guard.retry_after(source, spec.id)
            if wait:
                request.setHeader(b"retry-after", str(int(wait) + 1).encode())
                return _text(request, 429, f"too many wrong PINs: try again in {int(wait) + 1} s")
            token = _bearer(request)
            if token is None:
                request.setHeader(b"www-authenticate", b'Bearer realm="cau", error="invalid_request"')
                return _text(request, 401, f"room {spec.id} needs its PIN (Authorization: Bearer <PIN>)")
            if not hmac.compare_digest(token.encode(), spec.pin.encode()):
                svc.pin_failed(source, spec.id)
                return _text(request, 403, f"wrong PIN for room {spec.id}")
            svc.pin_guard.succeeded(source, spec.id)
        room = gw.registry.get(spec.id)
        limit = spec.max_participants if spec.max_participants and spec.max_participants > 0 else None
        if room is not None and limit is not None and len(room.legs) >= limit:
            return _text(request, 409, f"room {spec.id} is full ({limit} participants)")
        if svc.closing:
            return _text(request, 503, "the gateway is shutting down")
        if not is_loopback(source) and \
                sum(1 for x in svc.sessions.values() if x.peer.remote == source) \
                + svc.pending.get(source, 0) >= MAX_PER_SOURCE:
            request.setHeader(b"retry-after", b"30")
            return _text(request, 429, f"this address has {MAX_PER_SOURCE} sessions open already")
        if len(svc.sessions) + sum(svc.pending.values()) >= MAX_SESSIONS:
            request.setHeader(b"retry-after", b"30")
            return _text(request, 503, "the gateway has as many WebRTC sessions as it takes")
        try:
            offer = prepare_offer(body)
        except OfferError as exc:
            return _text(request, exc.status, exc.reason)
        args = request.args.get(b"name", [b""])[0].decode("utf-8", "replace")
        name = clean_name(args, f"{'WHEP' if self.viewer else 'WebRTC'} {source}")
        svc.pending[source] = svc.pending.get(source, 0) + 1     # counted until _start is done
        d = defer.Deferred.fromFuture(asyncio.ensure_future(self._start(request, spec, offer, name, source)))
        d.addErrback(lambda f: self._failed(request, f))
        return server.NOT_DONE_YET

    async def _start(self, request: server.Request, spec: Any, offer: Any, name: str, source: str) -> None:
        svc = self.service
        try:
            await self._answer(request, spec, offer, name, source)
        finally:
            n = svc.pending.get(source, 1) - 1
            if n > 0:
                svc.pending[source] = n
            else:
                svc.pending.pop(source, None)

    async def _answer(self, request: server.Request, spec: Any, offer: Any, name: str, source: str) -> None:
        from gateway.conference.room import JoinRefused
        from gateway.webrtc.peer import WebRtcPeer

        svc = self.service
        gw = svc.gateway
        peer = WebRtcPeer(gw.catalogue, ice_servers=svc.ice_servers, display_name=name, remote=source,
                          viewer=self.viewer, public_addresses=getattr(gw, "ice_public", ()))
        try:
            answer = await peer.answer(offer)
        except Exception as exc:
            await peer.close()
            log.warning("%s offer from %s not answered: %s", self.kind, source, exc)
            if not request.finished and not request._disconnected:
                request.write(_text(request, 400, f"the offer could not be answered: {exc}"))
                request.finish()
            return
        if request._disconnected or svc.closing:
            await peer.close()
            if not request._disconnected and not request.finished:
                request.write(_text(request, 503, "the gateway is shutting down"))
                request.finish()
            return
        try:
            gw.registry.join(spec, peer.leg)
        except Exception as exc:
            await peer.close()
            if request._disconnected or request.finished:
                return
            if isinstance(exc, JoinRefused):
                request.write(_text(request, 409 if "full" in exc.reason else 503, f"room {spec.id}: {exc.reason}"))
            else:
                log.exception("%s: joining room %s failed", self.kind, spec.id)
                request.write(_text(request, 500, "the gateway could not put you in the room (see its log)"))
            request.finish()
            return
        sid = secrets.token_urlsafe(16)
        session = WhipSession(sid, peer, spec.id, spec.pin, self.viewer)
        session.ufrag = _offer_ufrag(offer.sdp)
        svc.sessions[sid] = session
        peer.on_closed = lambda _p, _sid=sid: svc.sessions.pop(_sid, None)
        log.info("%s: %s (%s) joined room %s as %s", self.kind, name, source, spec.id, peer.id)
        request.setResponseCode(201)
        request.setHeader(b"content-type", SDP)
        request.setHeader(b"location", f"/{self.kind.lower()}/{spec.id}/{sid}".encode())
        request.setHeader(b"etag", session.etag.encode())
        request.setHeader(b"accept-patch", SDPFRAG)
        request.setHeader(b"cache-control", b"no-store")
        for link in svc.link_headers():
            request.responseHeaders.addRawHeader(b"link", link)
        request.write(answer.encode())
        request.finish()

    def _failed(self, request: server.Request, f: Any) -> None:
        log.error("%s request failed", self.kind, exc_info=f.value)
        if not request.finished and not request._disconnected:
            request.write(_text(request, 500, "the gateway could not set the session up (see its log)"))
            request.finish()

    # -- the session's resource ---------------------------------------------------------------------
    def _session(self, request: server.Request) -> tuple[WhipSession | None, bytes | None]:
        parts = self._parts(request)
        if len(parts) != 2:
            return None, _text(request, 405, "PATCH and DELETE go to the resource the POST answered in Location")
        s = self.service.sessions.get(parts[1])
        if s is None or s.room_id != parts[0] or s.viewer != self.viewer:
            return None, _text(request, 404, "no such session (it ended, or never was)")
        if s.pin:
            token = _bearer(request)
            if token is None or not hmac.compare_digest(token.encode(), s.pin.encode()):
                return None, _text(request, 403, "this session's requests carry the room's PIN as Bearer token")
        return s, None

    def render_DELETE(self, request: server.Request) -> bytes:  # noqa: N802
        _cors(request)
        s, refusal = self._session(request)
        if s is None:
            return refusal or b""
        self.service.sessions.pop(s.id, None)
        if s.peer.leg is not None:
            s.peer.leg.hangup(f"{self.kind} session ended by the client")
        asyncio.ensure_future(s.peer.close())
        return _text(request, 200, "session ended")

    def render_PATCH(self, request: server.Request) -> Any:  # noqa: N802
        _cors(request)
        s, refusal = self._session(request)
        if s is None:
            return refusal or b""
        if _media_type(request) != SDPFRAG:
            return _text(request, 415, "send candidates as Content-Type: application/trickle-ice-sdpfrag")
        match = (request.getHeader(b"if-match") or b"").decode("latin-1").strip()
        if match and match != "*" and match != s.etag:
            return _text(request, 412, "If-Match does not name this session's current ETag")
        body = _read(request, MAX_PATCH)
        if body is None:
            return _text(request, 413, f"the fragment is larger than {MAX_PATCH // 1024} KiB")
        try:
            frag = parse_sdpfrag(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return _text(request, 400, f"the fragment is not a trickle-ice-sdpfrag: {exc}")
        if frag.ufrag is not None and s.ufrag is not None and frag.ufrag != s.ufrag:
            return _text(request, 501, "ICE restart is not supported here: DELETE this session and POST a new offer")
        if s.candidates + len(frag.candidates) > MAX_CANDIDATES:
            return _text(request, 400, f"at most {MAX_CANDIDATES} candidates per session")
        s.candidates += len(frag.candidates)
        d = defer.Deferred.fromFuture(asyncio.ensure_future(self._trickle(request, s, frag)))
        d.addErrback(lambda f: self._failed(request, f))
        return server.NOT_DONE_YET

    async def _trickle(self, request: server.Request, s: WhipSession, frag: "SdpFrag") -> None:
        bad = []
        for mid, cand in frag.candidates:
            try:
                await s.peer.add_candidate(mid, cand)
            except Exception as exc:    # one bad candidate is reported, the others still count
                bad.append(f"{cand[:60]!r}: {exc}")
        if frag.end:
            await s.peer.add_candidate(None, None)
        if request._disconnected:
            return
        if bad:
            request.write(_text(request, 400, "candidates not understood: " + "; ".join(bad[:3])))
        else:
            request.setResponseCode(204)
        request.finish()


class SdpFrag:
    def __init__(self) -> None:
        self.ufrag: str | None = None
        self.pwd: str | None = None
        self.candidates: list[tuple[str | None, str]] = []
        self.end = False


def parse_sdpfrag(text: str) -> SdpFrag:
    """An RFC 8840 fragment: ice-ufrag/pwd, per m= section a mid and its candidates, end-of-candidates."""
    frag = SdpFrag()
    mid: str | None = None
    for n, raw in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        line = raw.strip()
        if not line:
            continue
        if len(line) > 1024 or "\x00" in line:
            raise ValueError(f"line {n} is not an SDP line")
        if line.startswith("m="):
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[6:].strip()
        elif line.startswith("a=ice-ufrag:"):
            frag.ufrag = line[12:].strip()
        elif line.startswith("a=ice-pwd:"):
            frag.pwd = line[10:].strip()
        elif line.startswith("a=candidate:"):
            if candidate_fields(line[12:]) is None:
                raise ValueError(f"line {n}: a=candidate needs foundation component transport priority address port typ TYPE")
            frag.candidates.append((mid, line[12:]))
        elif line == "a=end-of-candidates":
            frag.end = True
        elif not (line[:2] in ("a=", "m=", "c=") and len(line) > 2):
            raise ValueError(f"line {n} ({line[:30]!r}) is not an SDP line")
    return frag


def _offer_ufrag(sdp: str) -> str | None:
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line[12:].strip()
    return None


def is_loopback(host: str) -> bool:
    """``host`` is a loopback address (``::ffff:127.0.0.1`` from a dual-stack socket included)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
