"""H.235.1 baseline security for RAS: the password profile with HMAC-SHA1-96 (H.235.1 "procedure I").

What Polycom, Tandberg and H323Plus endpoints (and GnuGk) send when a gatekeeper password is
configured.  Each RAS message carries, in ``cryptoTokens``, a ``nestedcryptoToken`` →
``cryptoHashedToken``:

* ``tokenOID`` "A" = 0.0.8.235.0.2.1 (all fields of the message are protected);
* ``hashedVals``, a ClearToken: ``tokenOID`` "T" = 0.0.8.235.0.2.5, ``timeStamp`` (seconds since
  1970), ``random`` (a sequence number), ``generalID`` (the receiver: the gatekeeper's
  identifier) and ``sendersID`` (the sender: the endpointIdentifier once it has one);
* ``token``: ``algorithmOID`` "U" = 0.0.8.235.0.2.6 (HMAC-SHA1-96) and a 96-bit ``hash``.

The hash is HMAC-SHA1 keyed with SHA-1(password), over the whole PER-encoded message with the
12 octets of the hash set to zero, cut to 12 octets.  A sender encodes the message with a
placeholder in the hash, finds the placeholder in the encoding (an unconstrained BIT STRING of
96 bits is octet-aligned in aligned PER), zeroes it, computes, and writes the hash there.  A
receiver finds the received hash in the datagram, zeroes it and recomputes.  The version-1 OIDs
(0.0.8.235.0.1.x) are accepted as well.

Checked on receipt (:func:`verify`): the OIDs, the hash, ``timeStamp`` within ``grace`` seconds of
our clock, ``generalID`` (when present) our gatekeeper identifier, ``sendersID`` (when the
endpoint has an identifier and sends one) that identifier, and no (timeStamp, random) pair twice.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from . import asn1

__all__ = ["OID_A", "OID_T", "OID_U", "H235Error", "ReplayWindow", "sign", "token_of", "verify"]

OID_A = (0, 0, 8, 235, 0, 2, 1)
OID_T = (0, 0, 8, 235, 0, 2, 5)
OID_U = (0, 0, 8, 235, 0, 2, 6)
HASH_SIZE = 12
_PLACEHOLDER = b"Cau-H.235.1~"          # 12 octets unlikely anywhere else in a RAS message
assert len(_PLACEHOLDER) == HASH_SIZE
#: default tolerance between the endpoint's clock and ours (old room systems drift, some use local time)
GRACE_SECONDS = 7210          # as H323Plus and GnuGk


class H235Error(Exception):
    """A token that is absent, malformed or wrong; ``reason`` says which (for the log)."""

    def __init__(self, reason: str, absent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.absent = absent


def same_oid(oid: Any, want: tuple[int, ...]) -> bool:
    """OIDs equal but for the version arc (index 5): 0.0.8.235.0.1.x and .2.x are both taken."""
    try:
        t = tuple(int(x) for x in oid)
    except (TypeError, ValueError):
        return False
    return len(t) == len(want) and t[:5] == want[:5] and t[6:] == want[6:] and t[5] in (1, 2)


def key_of(password: str) -> bytes:
    return hashlib.sha1(password.encode("utf-8")).digest()


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha1).digest()[:HASH_SIZE]


def token_value(hash_bytes: bytes, *, general_id: str | None, senders_id: str | None, timestamp: int,
                random: int) -> tuple[str, Any]:
    """A CryptoH323Token (pycrate value notation) carrying ``hash_bytes``."""
    clear: dict[str, Any] = {"tokenOID": OID_T, "timeStamp": timestamp, "random": random}
    if general_id:
        clear["generalID"] = general_id
    if senders_id:
        clear["sendersID"] = senders_id
    return ("nestedcryptoToken", ("cryptoHashedToken", {
        "tokenOID": OID_A, "hashedVals": clear,
        "token": {"algorithmOID": OID_U, "paramS": {}, "hash": (int.from_bytes(hash_bytes, "big"), 8 * HASH_SIZE)},
    }))


def sign(data: bytes, password: str, *, general_id: str | None, senders_id: str | None,
         random: int, now: float | None = None) -> bytes:
    """The RAS message ``data`` again, with an H.235.1 token in its ``cryptoTokens`` (any tokens it
    had are replaced).  :class:`asn1.Asn1Error` when ``data`` does not decode."""
    kind, body = asn1.decode_ras(data)
    if not isinstance(body, dict):
        raise asn1.Asn1Error("encode", f"{kind} carries no cryptoTokens")
    timestamp = int(time.time() if now is None else now)
    body["cryptoTokens"] = [token_value(_PLACEHOLDER, general_id=general_id, senders_id=senders_id,
                                        timestamp=timestamp, random=random & 0x7FFFFFFF)]
    encoded = bytearray(asn1.encode_ras((kind, body)))
    at = encoded.find(_PLACEHOLDER)
    if at < 0 or encoded.find(_PLACEHOLDER, at + 1) >= 0:
        raise asn1.Asn1Error("encode", "the H.235 hash placeholder is not found once in the encoding")
    encoded[at:at + HASH_SIZE] = bytes(HASH_SIZE)
    encoded[at:at + HASH_SIZE] = _mac(key_of(password), bytes(encoded))
    return bytes(encoded)


@dataclass
class Token:
    """The parts of a received H.235.1 token that are checked."""

    hash: bytes
    timestamp: int
    random: int | None
    general_id: str | None
    senders_id: str | None


def token_of(body: dict[str, Any]) -> Token:
    """The H.235.1 password token of a decoded RAS message; H235Error(absent=True) without one."""
    tokens = body.get("cryptoTokens") or []
    if not isinstance(tokens, list):
        raise H235Error("cryptoTokens is not a list")
    for t in tokens:
        try:
            kind, inner = t
            if kind != "nestedcryptoToken" or inner[0] != "cryptoHashedToken":
                continue
            hashed = inner[1]
            clear, tok = hashed["hashedVals"], hashed["token"]
            if not (same_oid(hashed["tokenOID"], OID_A) and same_oid(clear["tokenOID"], OID_T)
                    and same_oid(tok["algorithmOID"], OID_U)):
                continue
            value, bits = tok["hash"]
            if bits != 8 * HASH_SIZE:
                raise H235Error(f"the HMAC-SHA1-96 hash has {bits} bits, not 96")
            if "timeStamp" not in clear:
                raise H235Error("the ClearToken has no timeStamp")
            return Token(int(value).to_bytes(HASH_SIZE, "big"), int(clear["timeStamp"]),
                         int(clear["random"]) if "random" in clear else None,
                         clear.get("generalID"), clear.get("sendersID"))
        except (TypeError, KeyError, ValueError, IndexError, OverflowError):
            raise H235Error("a malformed H.235 token") from None
    raise H235Error("no H.235.1 (HMAC-SHA1-96) token", absent=True)


@dataclass
class ReplayWindow:
    """(timeStamp, random) pairs seen lately per endpoint: each may be used once."""

    size: int = 64
    seen: dict[str, deque[tuple[int, int | None]]] = field(default_factory=dict)

    def check_and_add(self, who: str, pair: tuple[int, int | None]) -> bool:
        q = self.seen.get(who)
        if q is None:
            if len(self.seen) > 10000:
                self.seen.pop(next(iter(self.seen)))
            q = self.seen[who] = deque(maxlen=self.size)
        if pair in q:
            return False
        q.append(pair)
        return True


def verify(raw: bytes, body: dict[str, Any], password: str, *, gatekeeper_id: str | None,
           endpoint_id: str | None = None, senders: tuple[str, ...] = (), replay: ReplayWindow | None = None,
           who: str = "", now: float | None = None, grace: float = GRACE_SECONDS) -> Token:
    """Check the H.235.1 token of the received RAS message ``raw`` (decoded: ``body``) against
    ``password``; the token when it holds, :class:`H235Error` saying why not.  ``sendersID``, when
    the token has one and ``endpoint_id`` is known, must be that identifier or one of ``senders``
    (the endpoint's aliases: H323Plus sends its user name until the RCF)."""
    tok = token_of(body)
    clock = time.time() if now is None else now
    if abs(clock - tok.timestamp) > grace:
        raise H235Error(f"timeStamp {tok.timestamp} is {clock - tok.timestamp:+.0f} s from our clock "
                        f"(more than {grace:.0f} s)")
    if tok.general_id is not None and gatekeeper_id is not None and tok.general_id != gatekeeper_id:
        raise H235Error(f"the token is for gatekeeper {tok.general_id!r}, not {gatekeeper_id!r}")
    if endpoint_id is not None and tok.senders_id is not None and tok.senders_id != endpoint_id \
            and tok.senders_id.casefold() not in {x.casefold() for x in senders}:
        raise H235Error(f"the token's sendersID {tok.senders_id!r} is not {endpoint_id!r}")
    key = key_of(password)
    buf = bytearray(raw)
    start, found = 0, False
    while (at := buf.find(tok.hash, start)) >= 0:
        found = True
        buf[at:at + HASH_SIZE] = bytes(HASH_SIZE)
        if hmac.compare_digest(_mac(key, bytes(buf)), tok.hash):
            break
        buf[at:at + HASH_SIZE] = tok.hash
        start = at + 1
    else:
        raise H235Error("the hash is not in the message" if not found else "wrong password (the hash does not match)")
    if replay is not None and not replay.check_and_add(who, (tok.timestamp, tok.random)):
        raise H235Error(f"timeStamp {tok.timestamp} and random {tok.random} were used before (a replay)")
    return tok
