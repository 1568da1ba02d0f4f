"""SIP digest authentication, both sides (RFC 3261 §22, RFC 7616, RFC 2617, RFC 8760).

Server side: :class:`DigestServer` makes the ``WWW-Authenticate`` /
``Proxy-Authenticate`` challenges and checks the ``Authorization`` /
``Proxy-Authorization`` credentials of a request.

* One challenge per algorithm, in the server's order of preference
  (``SHA-256`` before ``MD5``: RFC 8760 §2.4 — the client takes the first one
  it supports), each with ``qop="auth"`` and an ``opaque``.
* The nonce is stateless: ``base64url(timestamp_ms | 8 random octets |
  HMAC-SHA-256(secret, realm | timestamp | random)[:16])``. Any nonce can be
  checked without storage; it is *stale* once older than ``nonce_lifetime``
  (or when it is not ours, e.g. issued before a restart with another secret).
* Replay protection (RFC 7616 §3.3, §5.6): for qop=auth the nonce count
  ``nc`` must grow for every use of a nonce. The highest ``nc`` seen per
  nonce is kept in a bounded LRU cache (``max_nonces``); when an entry is
  evicted every nonce not newer than it counts as stale from then on, so an
  eviction can never reopen a replay window — the client just fetches a
  fresh nonce.
* A nonce we did not issue (forged, tampered with, or of a previous run) is
  answered ``stale`` *before any password is looked at*: a made-up nonce
  tests no password. For a nonce of ours, ``stale=True`` is reported only
  when the response hash is *right* (RFC 7616 §3.3: the client knows the
  password and may retry at once with a new nonce): nonce expired, or nc not
  above the last one (a replay gets a fresh challenge, never a 200). A wrong
  hash on our nonce is ``problem="wrong_password"``, which callers count
  (:class:`gateway.guard.FailureGuard`).
* Algorithms: MD5, MD5-sess, SHA-256, SHA-256-sess, SHA-512-256(-sess);
  qop ``auth``, ``auth-int`` (the body is hashed) and the legacy RFC 2069
  form without qop (no cnonce/nc; replay protection is then only the nonce
  lifetime).

Client side: :func:`authorization` answers one challenge (dial-out when a
far end challenges us); :func:`best_challenge` picks, from the challenges of
a 401/407, the first one whose algorithm we support.

:func:`parse_challenge` / :func:`parse_credentials` read the auth-param
lists (quoted strings with commas and escapes, tokens, LWS), refusing
duplicate parameters and other schemes with :class:`ValueError`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable

from gateway.sip.message import Request, SipParseError
from gateway.sip.uri import AbsoluteUri, SipUri, parse_uri

__all__ = [
    "DigestServer",
    "AuthResult",
    "authorization",
    "best_challenge",
    "parse_challenge",
    "parse_credentials",
    "digest_response",
    "ALGORITHMS",
]

# algorithm name (upper-cased) → hashlib name
_HASHES: dict[str, str] = {
    "MD5": "md5",
    "SHA-256": "sha256",
    "SHA-512-256": "sha512_256",
}
ALGORITHMS: tuple[str, ...] = (
    "SHA-512-256", "SHA-256", "MD5",
    "SHA-512-256-sess", "SHA-256-sess", "MD5-sess",
)
_CANON = {a.upper(): a for a in ALGORITHMS}
# parameters whose value is written as a token, never quoted (RFC 7616 §3.3/§3.4)
_UNQUOTED = {"algorithm", "qop", "nc", "stale", "charset", "userhash"}


def _canon_algorithm(name: str | None) -> str | None:
    """Canonical spelling of an algorithm name (None for an unknown one);
    an absent algorithm means MD5 (RFC 7616 §3.3)."""
    if name is None:
        return "MD5"
    return _CANON.get(name.strip().upper())


def _hasher(algorithm: str) -> Callable[[str], str]:
    base = algorithm.upper()
    if base.endswith("-SESS"):
        base = base[:-5]
    hname = _HASHES[base]

    def h(data: str) -> str:
        return hashlib.new(hname, data.encode("utf-8")).hexdigest()

    return h


def digest_response(
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1, RFC 2617 §3.2.2.1/§3.2.2.2)."""
    algo = _canon_algorithm(algorithm)
    if algo is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    H = _hasher(algo)
    ha1 = H(f"{username}:{realm}:{password}")
    if algo.endswith("-sess"):
        ha1 = H(f"{ha1}:{nonce}:{cnonce or ''}")
    if qop == "auth-int":
        hbody = hashlib.new(_HASHES[algo.upper().removesuffix("-SESS")], body).hexdigest()
        ha2 = H(f"{method}:{uri}:{hbody}")
    else:
        ha2 = H(f"{method}:{uri}")
    if qop:
        return H(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return H(f"{ha1}:{nonce}:{ha2}")


# --- parsing ----------------------------------------------------------------

_TOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
_WS = " \t\r\n"


def _parse_auth(value: str, what: str) -> dict[str, str]:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text")
    s = value.strip(_WS)
    i = 0
    while i < len(s) and s[i] in _TOKEN_CHARS:
        i += 1
    scheme = s[:i]
    if not scheme:
        raise ValueError(f"{what}: missing auth scheme")
    if scheme.lower() != "digest":
        raise ValueError(f"{what}: scheme {scheme!r} is not Digest")
    if i < len(s) and s[i] not in _WS:
        raise ValueError(f"{what}: bad character {s[i]!r} after the scheme")
    params: dict[str, str] = {}
    n = len(s)
    while True:
        while i < n and s[i] in _WS:
            i += 1
        if i >= n:
            break
        start = i
        while i < n and s[i] in _TOKEN_CHARS:
            i += 1
        name = s[start:i].lower()
        if not name:
            raise ValueError(f"{what}: expected a parameter name at {s[start:start + 20]!r}")
        while i < n and s[i] in _WS:
            i += 1
        if i >= n or s[i] != "=":
            raise ValueError(f"{what}: parameter {name!r} has no value")
        i += 1
        while i < n and s[i] in _WS:
            i += 1
        if i < n and s[i] == '"':
            i += 1
            out: list[str] = []
            while True:
                if i >= n:
                    raise ValueError(f"{what}: unterminated quoted string in {name!r}")
                c = s[i]
                if c == "\\":
                    if i + 1 >= n:
                        raise ValueError(f"{what}: unterminated quoted string in {name!r}")
                    out.append(s[i + 1])
                    i += 2
                    continue
                if c == '"':
                    i += 1
                    break
                out.append(c)
                i += 1
            val = "".join(out)
        else:
            start = i
            while i < n and s[i] in _TOKEN_CHARS:
                i += 1
            val = s[start:i]
            if not val:
                raise ValueError(f"{what}: parameter {name!r} has an empty value")
        if name in params:
            raise ValueError(f"{what}: parameter {name!r} given twice")
        params[name] = val
        while i < n and s[i] in _WS:
            i += 1
        if i >= n:
            break
        if s[i] != ",":
            raise ValueError(f"{what}: expected ',' after parameter {name!r}")
        i += 1
    return params


def parse_challenge(value: str) -> dict[str, str]:
    """Parameters of a ``Digest`` challenge (WWW-/Proxy-Authenticate value):
    lower-cased names, unquoted values. Raises ValueError when malformed or
    not Digest."""
    return _parse_auth(value, "challenge")


def parse_credentials(value: str) -> dict[str, str]:
    """Parameters of ``Digest`` credentials (Authorization /
    Proxy-Authorization value), as :func:`parse_challenge`."""
    return _parse_auth(value, "credentials")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _format(params: Iterable[tuple[str, str]]) -> str:
    return "Digest " + ", ".join(
        f"{k}={v if k in _UNQUOTED else _quote(v)}" for k, v in params
    )


# --- client side --------------------------------------------------------------


def best_challenge(values: Iterable[str]) -> str | None:
    """The first challenge (in the order the server gave them, RFC 8760 §2.4)
    that is Digest, well formed and of an algorithm we support."""
    for v in values:
        try:
            p = parse_challenge(v)
        except ValueError:
            continue
        if _canon_algorithm(p.get("algorithm")) is not None and "nonce" in p:
            return v
    return None


def authorization(
    challenge: str,
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int = 1,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """Credentials answering ``challenge`` (a WWW-/Proxy-Authenticate value):
    the value for Authorization / Proxy-Authorization. ``uri`` is the
    Request-URI of the request being sent. qop ``auth`` is chosen when
    offered, else ``auth-int`` (hashing ``body``), else the RFC 2069 form.
    Raises ValueError for a malformed challenge or unknown algorithm."""
    p = parse_challenge(challenge)
    realm = p.get("realm")
    nonce = p.get("nonce")
    if realm is None or nonce is None:
        raise ValueError("challenge: realm and nonce are required")
    algo = _canon_algorithm(p.get("algorithm"))
    if algo is None:
        raise ValueError(f"challenge: unsupported algorithm {p.get('algorithm')!r}")
    offered = [q.strip().lower() for q in p.get("qop", "").split(",") if q.strip()]
    qop = "auth" if "auth" in offered else ("auth-int" if "auth-int" in offered else None)
    if "qop" in p and qop is None:
        raise ValueError(f"challenge: no supported qop in {p['qop']!r}")
    if not 1 <= nc <= 0xFFFFFFFF:
        raise ValueError("nc must be 1..2**32-1")
    ncs = f"{nc:08x}"
    if (qop or algo.endswith("-sess")) and cnonce is None:
        cnonce = os.urandom(12).hex()
    resp = digest_response(algo, username, realm, password, method, uri, nonce,
                           qop, ncs if qop else None, cnonce, body)
    out = [("username", username), ("realm", realm), ("nonce", nonce), ("uri", uri),
           ("response", resp), ("algorithm", algo)]
    if cnonce is not None and (qop or algo.endswith("-sess")):
        out.append(("cnonce", cnonce))
    if "opaque" in p:
        out.append(("opaque", p["opaque"]))
    if qop:
        out += [("qop", qop), ("nc", ncs)]
    return _format(out)


# --- server side --------------------------------------------------------------


@dataclass
class AuthResult:
    """Outcome of :meth:`DigestServer.verify`.

    ``problem`` says what went wrong, for the caller to pick the answer:
    ``""`` (ok), ``"missing"`` (no Digest credentials for our realm: send a
    challenge), ``"malformed"`` (400), ``"unknown_user"``, ``"wrong_password"``
    (403), ``"stale"`` (401 with stale=true), ``"uri"``, ``"algorithm"``,
    ``"qop"`` (credentials not for this request/challenge)."""

    ok: bool
    username: str | None
    stale: bool
    reason: str
    problem: str = ""
    algorithm: str | None = None


class DigestServer:
    """Challenges and verifies digest credentials for one realm (module doc).

    ``clock`` gives the time nonces are stamped with; keep the default
    (monotonic) unless ``secret`` is persisted across restarts, then pass
    ``time.time``."""

    def __init__(
        self,
        realm: str,
        secret: bytes | None = None,
        nonce_lifetime: float = 300,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        clock: Callable[[], float] = time.monotonic,
        max_nonces: int = 4096,
    ) -> None:
        algos = []
        for a in algorithms:
            c = _canon_algorithm(a)
            if c is None:
                raise ValueError(f"unsupported digest algorithm {a!r}; expected one of {', '.join(ALGORITHMS)}")
            algos.append(c)
        if not algos:
            raise ValueError("at least one digest algorithm is needed")
        if '"' in realm or "\\" in realm:
            raise ValueError("realm must not contain quotes or backslashes")
        self.realm = realm
        self.algorithms: tuple[str, ...] = tuple(algos)
        self.secret = secret if secret is not None else os.urandom(32)
        self.nonce_lifetime = nonce_lifetime
        self.clock = clock
        self.max_nonces = max_nonces
        self.opaque = hmac.new(self.secret, b"opaque\0" + realm.encode(), hashlib.sha256).hexdigest()[:16]
        self._nc: OrderedDict[str, int] = OrderedDict()
        self._forgotten_ms = -(2**62)  # nonces stamped at or before this lost their nc record

    # -- nonces --
    def _mac(self, raw: bytes) -> bytes:
        return hmac.new(self.secret, self.realm.encode() + b"\0" + raw, hashlib.sha256).digest()[:16]

    def new_nonce(self) -> str:
        raw = struct.pack(">q", int(self.clock() * 1000)) + os.urandom(8)
        return base64.urlsafe_b64encode(raw + self._mac(raw)).decode().rstrip("=")

    def _check_nonce(self, nonce: str) -> tuple[int | None, str]:
        """(timestamp in ms, "") for a fresh nonce of ours, else (ts|None, why)."""
        try:
            blob = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None, "nonce not issued by this server"
        if len(blob) != 32 or not hmac.compare_digest(blob[16:], self._mac(blob[:16])):
            return None, "nonce not issued by this server"
        ts = struct.unpack(">q", blob[:8])[0]
        now_ms = int(self.clock() * 1000)
        if ts > now_ms + 1000 or now_ms - ts > self.nonce_lifetime * 1000:
            return ts, "nonce expired"
        return ts, ""

    def challenges(self, stale: bool = False) -> list[str]:
        """WWW-Authenticate (or Proxy-Authenticate) values, one per algorithm
        in order of preference, all with the same fresh nonce."""
        nonce = self.new_nonce()
        out = []
        for algo in self.algorithms:
            # qop-options is a quoted list (RFC 7616 §3.3), algorithm a token
            text = (f"Digest realm={_quote(self.realm)}, nonce=\"{nonce}\", "
                    f"opaque=\"{self.opaque}\", algorithm={algo}, qop=\"auth\"")
            if stale:
                text += ", stale=true"
            out.append(text)
        return out

    # -- verification --
    def verify(
        self,
        request: Request,
        password_for: Callable[[str], str | None],
        header: str = "Authorization",
    ) -> AuthResult:
        """Check the credentials of ``request`` (module doc). ``password_for``
        gives the password of a user name (None: unknown user)."""
        creds: dict[str, str] | None = None
        bad: str | None = None
        for value in request.headers.get_all(header):
            try:
                p = parse_credentials(value)
            except ValueError as e:
                if value.strip().lower().startswith("digest"):
                    bad = bad or str(e)
                continue
            if p.get("realm") == self.realm:
                creds = p
                break
        if creds is None:
            if bad is not None:
                return AuthResult(False, None, False, f"bad {header}: {bad}", "malformed")
            return AuthResult(False, None, False, f"no {header} for realm {self.realm}", "missing")
        username = creds.get("username")
        missing = [k for k in ("username", "nonce", "uri", "response") if k not in creds]
        if missing:
            return AuthResult(False, username, False,
                              f"bad {header}: missing {', '.join(missing)}", "malformed")
        assert username is not None
        algo = _canon_algorithm(creds.get("algorithm"))
        if algo is None or algo not in self.algorithms:
            return AuthResult(False, username, False,
                              f"algorithm {creds.get('algorithm')} not offered", "algorithm")
        qop = creds.get("qop")
        if qop is not None:
            qop = qop.lower()
            if qop not in ("auth", "auth-int"):
                return AuthResult(False, username, False, f"qop {qop} not supported", "qop", algo)
            nc_text = creds.get("nc", "")
            if "cnonce" not in creds or len(nc_text) != 8 or not all(
                c in "0123456789abcdefABCDEF" for c in nc_text
            ):
                return AuthResult(False, username, False,
                                  f"bad {header}: qop={qop} needs cnonce and an 8-hex-digit nc",
                                  "malformed", algo)
        elif algo.endswith("-sess") and "cnonce" not in creds:
            return AuthResult(False, username, False, f"bad {header}: {algo} needs cnonce",
                              "malformed", algo)
        if not _same_uri(creds["uri"], request.uri):
            return AuthResult(False, username, False,
                              f"digest uri {creds['uri']!r} is not the Request-URI", "uri", algo)
        # a nonce we never issued is answered with a fresh challenge before any password is looked at:
        # made-up nonces must not let anyone test passwords as fast as the network carries them
        ts0, why0 = self._check_nonce(creds["nonce"])
        if ts0 is None:
            return AuthResult(False, username, True, why0, "stale", algo)
        password = password_for(username)
        if password is None:
            return AuthResult(False, username, False, f"unknown user {username!r}", "unknown_user", algo)
        expected = digest_response(
            algo, username, self.realm, password, request.method, creds["uri"],
            creds["nonce"], qop, creds.get("nc"), creds.get("cnonce"), request.body,
        )
        if not hmac.compare_digest(expected, creds["response"].lower()):
            return AuthResult(False, username, False, "wrong password", "wrong_password", algo)
        if "opaque" in creds and creds["opaque"] != self.opaque:
            # the right password against a challenge of another secret (a restart)
            return AuthResult(False, username, True, "opaque of another challenge", "stale", algo)
        nonce = creds["nonce"]
        ts, why = ts0, why0
        if why:
            return AuthResult(False, username, True, why, "stale", algo)
        if qop is not None:
            nc = int(creds["nc"], 16)
            last = self._nc.get(nonce)
            if last is None and ts is not None and ts <= self._forgotten_ms:
                return AuthResult(False, username, True, "nonce no longer tracked", "stale", algo)
            if last is not None and nc <= last:
                return AuthResult(False, username, True,
                                  f"nonce count {nc} not above {last} (replay)", "stale", algo)
            self._remember(nonce, nc, ts)
        return AuthResult(True, username, False, "ok", "", algo)

    def _remember(self, nonce: str, nc: int, ts: int | None) -> None:
        self._nc[nonce] = nc
        self._nc.move_to_end(nonce)
        now_ms = int(self.clock() * 1000)
        while len(self._nc) > self.max_nonces:
            old, _ = self._nc.popitem(last=False)
            old_ts, _why = self._check_nonce(old)
            if old_ts is not None and now_ms - old_ts <= self.nonce_lifetime * 1000:
                self._forgotten_ms = max(self._forgotten_ms, old_ts)


def _same_uri(text: str, request_uri: SipUri | AbsoluteUri) -> bool:
    """Is the digest ``uri`` the Request-URI (RFC 3261 §22.4; compared as
    URIs per §19.1.4: host and parameters case-insensitive)?"""
    if text == str(request_uri):
        return True
    try:
        u = parse_uri(text)
    except SipParseError:
        return False
    r = request_uri
    if isinstance(u, SipUri) and isinstance(r, SipUri):
        return (
            u.scheme == r.scheme and u.user == r.user and u.password == r.password
            and u.host.lower() == r.host.lower() and u.port == r.port
            and {k: (v or "").lower() for k, v in u.params.items()}
            == {k: (v or "").lower() for k, v in r.params.items()}
        )
    if isinstance(u, AbsoluteUri) and isinstance(r, AbsoluteUri):
        return u.scheme == r.scheme and u.rest == r.rest
    return False
