"""SIP registrar (RFC 3261 §10.3) for the dial plan's SIP endpoints.

``ua.registrar = Registrar(lambda: holder.plan)`` makes the UA core hand every
REGISTER to :meth:`Registrar.on_register`. The steps, in order:

1. ``Require`` with any option → 420 Bad Extension (we support none here).
2. The address-of-record is the To URI's user part. It must name a dial
   plan endpoint (by alias or number) of protocol ``sip`` (a To that is not
   a sip:/sips: URI → 400). Bindings are kept
   under the endpoint's alias, so registering as the number or the alias is
   the same AOR. The Request-URI's domain is not checked: the gateway is the
   registrar for whatever name it is reached by.
3. The source address must be in the endpoint's ``networks``
   (``EndpointSpec.allows``). An unknown or non-SIP endpoint, or one from a
   network it is not allowed from, is answered as an endpoint with a password
   would be — a challenge, then 403 "Forbidden" whatever the credentials — so
   REGISTER tells nobody which endpoints exist or where they may register from;
   the real reason goes to the log.
4. Digest authentication (RFC 7616 / RFC 8760, :class:`DigestServer`) with
   the endpoint's username (default: its alias) and password; an endpoint
   without a password is not challenged. No credentials, or an algorithm we
   did not offer → 401 with one WWW-Authenticate per algorithm (SHA-256,
   MD5); a right password on an expired / foreign / replayed nonce → 401
   with ``stale=true``; a wrong password or a username other than the
   endpoint's → 403 "Forbidden" (no re-challenge: the client already had its
   chance after the first 401, and a 403 stops a misconfigured device from
   looping; the log says which it was); malformed credentials or a digest
   uri that is not the Request-URI → 400.
5. ``Contact: *`` must be alone and come with ``Expires: 0`` → else 400; it
   removes every binding (subject to the Call-ID/CSeq rule of step 7).
6. Each contact's lifetime: its ``expires`` parameter, else the Expires
   header, else ``default_expires``. A non-zero lifetime below
   ``min_expires`` → 423 Interval Too Brief with Min-Expires (nothing is
   changed); above ``max_expires`` → cut to it. A malformed value → 400.
7. A contact already bound (URI equality of §19.1.4) with the same Call-ID
   and a CSeq not above the stored one → 500 "out-of-order REGISTER"
   (the whole request is refused, nothing changes); a different Call-ID
   replaces the binding. Expires 0 removes the binding.
8. 200 OK listing every current binding of the AOR, each with its remaining
   ``expires``, plus Date. A REGISTER without Contact is a query: the same
   200 without changing anything.

Bindings expire lazily (every ``on_register``/``lookup``/``purge``) and,
when a ``reactor`` is given, by a timer armed for the earliest expiry
(:meth:`close` cancels it). More than ``max_bindings`` contacts for one AOR
→ 403. Everything unexpected is answered 500, never raised.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, Callable

from gateway.sip.digest import AuthResult, DigestServer
from gateway.sip.message import Address, Request, SipParseError
from gateway.sip.transaction import ServerTransaction
from gateway.sip.transport import Peer
from gateway.sip.uri import SipUri

__all__ = ["Binding", "Registrar"]

log = logging.getLogger("cau.sip.registrar")

SERVER = "Cau"
_MAX_DELTA = 2**32 - 1


@dataclass
class Binding:
    """One contact bound to an address-of-record."""

    aor: str                 # the endpoint's alias
    contact: Address         # as registered, without the expires parameter
    expires_at: float        # on the registrar's clock
    call_id: str
    cseq: int
    source: Peer             # where the REGISTER came from (for NAT: send there)
    q: float | None = None
    registered_at: float = 0.0

    def remaining(self, now: float) -> int:
        """Whole seconds left (rounded up), 0 when expired."""
        left = self.expires_at - now
        return 0 if left <= 0 else int(-(-left // 1))


class _Refuse(Exception):
    def __init__(self, status: int, reason: str, extra: list[tuple[str, str]] | None = None,
                 detail: str | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra or []
        self.detail = detail or reason      # for the operator's log (the wire says less)


#: what a REGISTER that may not register hears, whatever the cause: who exists is not told
FORBIDDEN = "Forbidden"


class Registrar:
    """RFC 3261 §10.3 registrar over the dial plan's endpoints (module doc)."""

    def __init__(
        self,
        plan: Callable[[], Any],
        realm: str = "cau",
        default_expires: int = 3600,
        min_expires: int = 60,
        max_expires: int = 7200,
        clock: Callable[[], float] = time.monotonic,
        reactor: Any = None,
        digest: DigestServer | None = None,
        max_bindings: int = 16,
        guard: Any = None,
    ) -> None:
        if not 0 < min_expires <= default_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= default_expires <= max_expires")
        self.plan = plan
        self.realm = realm
        self.default_expires = default_expires
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.clock = clock
        self.reactor = reactor
        self.max_bindings = max_bindings
        self.digest = digest or DigestServer(realm, clock=clock)
        if guard is None:
            from gateway.guard import FailureGuard

            guard = FailureGuard("password", per_source=10, per_target=20, window=300.0)
        #: wrong passwords per source and account (shared by the app with INVITE digest and H.235)
        self.guard = guard
        self.bindings: dict[str, list[Binding]] = {}
        self.stats = {"register": 0, "ok": 0, "challenged": 0, "refused": 0}
        self._timer: Any = None
        self._closed = False

    # -- public -------------------------------------------------------------------
    def lookup(self, alias_or_number: str) -> list[Binding]:
        """Current bindings of an endpoint, by alias or dial-plan number (highest
        q first, then most recent)."""
        self.purge()
        aor = self._aor_key(alias_or_number)
        found = list(self.bindings.get(aor, ()))
        found.sort(key=lambda b: (-(b.q if b.q is not None else 1.0), -b.registered_at))
        return found

    def purge(self) -> int:
        """Drop expired bindings; returns how many went."""
        now = self.clock()
        gone = 0
        for aor in list(self.bindings):
            keep = [b for b in self.bindings[aor] if b.expires_at > now]
            for b in self.bindings[aor]:
                if b.expires_at <= now:
                    gone += 1
                    log.info("registration of %s expired: %s", aor, b.contact.uri)
            if keep:
                self.bindings[aor] = keep
            else:
                del self.bindings[aor]
        return gone

    def close(self) -> None:
        """Cancel the expiry timer (bindings stay readable)."""
        self._closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def on_register(self, request: Request, stx: ServerTransaction, peer: Peer) -> None:
        self.stats["register"] += 1
        try:
            self._register(request, stx, peer)
        except _Refuse as r:
            self.stats["refused" if r.status != 401 else "challenged"] += 1
            if r.status != 401:
                log.info("REGISTER from %s refused: %d %s", peer, r.status, r.detail)
            self._respond(stx, r.status, r.reason, r.extra)
        except Exception as exc:  # never let one REGISTER take the UA down
            log.exception("REGISTER from %s failed", peer)
            self.stats["refused"] += 1
            try:
                self._respond(stx, 500, f"internal error: {type(exc).__name__}")
            except Exception:
                log.exception("could not answer 500")

    # -- steps --------------------------------------------------------------------
    def _register(self, request: Request, stx: ServerTransaction, peer: Peer) -> None:
        require = [o.strip() for o in request.headers.get_all("Require") if o.strip()]
        if require:
            raise _Refuse(420, "Bad Extension", [("Unsupported", ", ".join(require))])
        to = request.to
        if to is None or not isinstance(to.uri, SipUri):
            raise _Refuse(400, "the To of a REGISTER must be a sip: or sips: URI (RFC 3261 §10.2)")
        user = to.uri.user
        spec = self.plan().endpoint(user) if user else None
        why = ("no user part in To" if not user else f"unknown endpoint {user}" if spec is None
               else f"{spec.alias} is not a SIP endpoint" if spec.protocol != "sip"
               else f"{spec.alias} is not allowed from {peer.host}" if not spec.allows(peer.host) else None)
        if why is not None:
            # answered as an endpoint with a password would be (a challenge, then 403), so that
            # REGISTER cannot be used to learn which endpoints exist or where they may be
            self._authenticate(request, None, why, peer=peer, claimed=user or "?")
        if spec.password is not None:
            self._authenticate(request, spec, peer=peer, claimed=spec.alias)

        self.purge()
        aor = spec.alias
        now = self.clock()
        raw_contacts = request.headers.get_all("Contact")
        call_id = request.call_id or ""
        cseq_h = request.cseq
        cseq = cseq_h.seq if cseq_h is not None else 0
        current = list(self.bindings.get(aor, ()))
        header_expires = self._expires_header(request)

        if "*" in (c.strip() for c in raw_contacts):
            if len(raw_contacts) != 1 or header_expires != 0:
                raise _Refuse(400, "Contact: * needs Expires: 0 and no other Contact")
            for b in current:
                if b.call_id == call_id and cseq <= b.cseq:
                    raise _Refuse(500, f"out-of-order REGISTER (CSeq {cseq} not above {b.cseq})")
            if current:
                del self.bindings[aor]
            log.info("%s unregistered all %d contact(s) from %s", aor, len(current), peer)
            self._ok(stx, aor, now)
            return

        changes: list[tuple[Address, int, float | None]] = []
        for text in raw_contacts:
            try:
                contact = Address.parse(text)
            except SipParseError as e:
                raise _Refuse(400, f"Bad Contact: {e.reason}") from None
            if not isinstance(contact.uri, SipUri):
                raise _Refuse(400, f"Contact {contact.uri} is not a sip: or sips: URI")
            expires = header_expires
            if "expires" in contact.params:
                expires = _delta_seconds(contact.params.get("expires"), "expires parameter")
            if expires is None:
                expires = self.default_expires
            if expires != 0 and expires < self.min_expires:
                raise _Refuse(423, "Interval Too Brief", [("Min-Expires", str(self.min_expires))])
            expires = min(expires, self.max_expires)
            q = _q_value(contact.params.get("q")) if "q" in contact.params else None
            changes.append((contact, expires, q))

        # §10.3 step 7: check every contact before changing anything
        for contact, _exp, _q in changes:
            old = _find(current, contact)
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                raise _Refuse(500, f"out-of-order REGISTER (CSeq {cseq} not above {old.cseq})")

        notes: list[str] = []
        for contact, expires, q in changes:
            old = _find(current, contact)
            if old is not None:
                current.remove(old)
            if expires == 0:
                if old is not None:
                    notes.append(f"{aor} unregistered {contact.uri} from {peer}")
                continue
            stored = contact.copy()
            stored.params.pop("expires", None)
            current.append(Binding(aor, stored, now + expires, call_id, cseq, peer, q,
                                   old.registered_at if old is not None else now))
            notes.append(f"{aor} {'refreshed' if old else 'registered'} {contact.uri} "
                         f"from {peer} for {expires} s")
        if len(current) > self.max_bindings:
            raise _Refuse(403, f"too many contacts for {aor} (at most {self.max_bindings})")
        for note in notes:
            log.info("%s", note)
        if current:
            self.bindings[aor] = current
        else:
            self.bindings.pop(aor, None)
        self._arm()
        self._ok(stx, aor, now)

    def _authenticate(self, request: Request, spec: Any, refused: str | None = None, *, peer: Any = None,
                      claimed: str = "?") -> None:
        """Digest authentication of ``spec``; with ``spec`` None (``refused`` says why it may not
        register) every credential is wrong, and the answers are the same as for a real endpoint.
        Wrong passwords are counted by :attr:`guard` per source and account: a locked-out source
        (or account, for sources that never logged in to it) gets 403 whatever it sends."""
        username = (spec.username or spec.alias) if spec is not None else None

        def password_for(u: str) -> str | None:
            return spec.password if spec is not None and u == username else None

        res: AuthResult = self.digest.verify(request, password_for)
        p = res.problem
        if p in ("missing", "algorithm"):
            raise _Refuse(401, "Unauthorized", self._challenge(False))
        source = peer.host if peer is not None else "?"
        target = "account " + claimed.casefold()
        wait = self.guard.retry_after(source, target)
        if wait:
            raise _Refuse(403, FORBIDDEN, detail=f"{claimed}: {source} is locked out for {wait:.0f} s more "
                                                 "(too many wrong passwords)")
        if res.ok and spec is not None:
            self.guard.succeeded(source, target)
            return
        if p == "stale":
            log.info("REGISTER for %s: %s; fresh nonce sent", claimed, res.reason)
            raise _Refuse(401, "Unauthorized", self._challenge(True))
        if p in ("wrong_password", "unknown_user") or res.ok:
            self.guard.failed(source, target)
            raise _Refuse(403, FORBIDDEN, detail=refused or f"{spec.alias}: " + (
                "wrong password" if p == "wrong_password" else "wrong user name"))
        raise _Refuse(400, res.reason)  # malformed, uri, qop

    def _challenge(self, stale: bool) -> list[tuple[str, str]]:
        return [("WWW-Authenticate", c) for c in self.digest.challenges(stale=stale)]

    def _expires_header(self, request: Request) -> int | None:
        v = request.headers.get("Expires")
        return None if v is None else _delta_seconds(v, "Expires")

    # -- answers ------------------------------------------------------------------
    def _ok(self, stx: ServerTransaction, aor: str, now: float) -> None:
        self.stats["ok"] += 1
        extra = []
        for b in self.bindings.get(aor, ()):
            c = b.contact.copy()
            c.params["expires"] = str(b.remaining(now))
            extra.append(("Contact", str(c)))
        extra.append(("Date", formatdate(usegmt=True)))
        self._respond(stx, 200, "OK", extra)

    def _respond(self, stx: ServerTransaction, status: int, reason: str,
                 extra: list[tuple[str, str]] = ()) -> None:
        r = stx.make_response(status, reason)
        r.headers.add("Server", SERVER)
        if status >= 400 and status != 401 and reason:
            r.headers.add("Warning", '399 cau "' + reason.replace("\\", "\\\\").replace('"', '\\"') + '"')
        for name, value in extra:
            r.headers.add(name, value)
        stx.respond(r)

    # -- expiry -------------------------------------------------------------------
    def _aor_key(self, alias_or_number: str) -> str:
        spec = self.plan().endpoint(alias_or_number)
        return spec.alias if spec is not None else alias_or_number

    def _arm(self) -> None:
        if self.reactor is None or self._closed:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        soonest = min((b.expires_at for bs in self.bindings.values() for b in bs), default=None)
        if soonest is not None:
            self._timer = self.reactor.callLater(max(0.0, soonest - self.clock()) + 0.01, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self.purge()
        self._arm()


# --- helpers ---------------------------------------------------------------------


def _delta_seconds(value: str | None, what: str) -> int:
    v = (value or "").strip()
    if not v.isdigit() or not v.isascii():
        raise _Refuse(400, f"Bad {what}: {value!r} is not a number of seconds")
    return min(int(v), _MAX_DELTA)


def _q_value(value: str | None) -> float:
    try:
        q = float(value or "")
    except ValueError:
        raise _Refuse(400, f"Bad q parameter {value!r}") from None
    if not 0.0 <= q <= 1.0:
        raise _Refuse(400, f"Bad q parameter {value!r}: must be 0..1")
    return q


def _uri_key(uri: SipUri) -> tuple:
    """Comparison key of §19.1.4 (simplified: every parameter compared,
    host and parameter values case-insensitively, user case-sensitively)."""
    return (uri.scheme, uri.user, uri.password, uri.host.lower(), uri.port,
            tuple(sorted((k, (v or "").lower()) for k, v in uri.params.items())),
            tuple(sorted(uri.headers.items())))


def _find(bindings: list[Binding], contact: Address) -> Binding | None:
    key = _uri_key(contact.uri)  # type: ignore[arg-type]
    for b in bindings:
        if _uri_key(b.contact.uri) == key:  # type: ignore[arg-type]
            return b
    return None
