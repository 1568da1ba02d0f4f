"""SRTP with SDES keys (RFC 3711 protection through pylibsrtp, RFC 4568 key exchange in SDP).

``a=crypto:<tag> <suite> inline:<base64 key||salt>[|<lifetime>][|<MKI>:<length>] [<session params>]``

* suites taken: ``AES_CM_128_HMAC_SHA1_80`` and ``AES_CM_128_HMAC_SHA1_32`` (30 octets of key and
  salt); lines with an MKI, a lifetime we cannot honour, several keys or session parameters
  (``UNENCRYPTED_SRTP``, ``KDR``, ...) are skipped, not misread;
* each side's a=crypto key is the key *it* encrypts with: we decrypt with the offerer's key and
  encrypt with the one we answer;
* keys only travel over a protected signalling path: callers decide that (SIP over TLS).

:class:`SrtpContext` holds both directions for one RTP session: ``protect``/``unprotect`` for RTP,
``protect_rtcp``/``unprotect_rtcp`` for RTCP; a packet that fails authentication or replay
checks is counted and dropped (``None``), never raised.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass

import pylibsrtp

__all__ = ["SUITES", "CryptoAttribute", "SrtpContext", "choose_crypto", "new_crypto"]

#: suite name -> pylibsrtp profile
SUITES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
KEY_SALT_LEN = 30
_LINE = re.compile(r"^(\d{1,9})\s+([A-Za-z0-9_]+)\s+inline:([A-Za-z0-9+/=]+)((?:\|[^\s|]+)*)\s*(.*)$")


@dataclass(frozen=True)
class CryptoAttribute:
    tag: int
    suite: str
    key: bytes            # master key || master salt (30 octets)

    def value(self) -> str:
        return f"{self.tag} {self.suite} inline:{base64.b64encode(self.key).decode()}"


def parse_crypto(value: str) -> CryptoAttribute | None:
    """An a=crypto value we can use, None for one we cannot (unknown suite, MKI, session
    parameters, a malformed key)."""
    m = _LINE.match(value.strip()) if len(value) < 512 else None
    if m is None:
        return None
    tag, suite, b64, extras, params = m.groups()
    if suite not in SUITES or params.strip():
        return None
    for extra in filter(None, extras.split("|")):
        if ":" in extra:
            return None                         # an MKI: not supported
        lifetime = extra
        try:
            n = 2 ** int(lifetime[2:]) if lifetime.startswith("2^") else int(lifetime)
        except ValueError:
            return None
        if n < 2 ** 31:                          # a key that must be renewed soon: we do not re-key
            return None
    try:
        key = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(key) != KEY_SALT_LEN:
        return None
    return CryptoAttribute(int(tag), suite, key)


def choose_crypto(values: list[str]) -> CryptoAttribute | None:
    """The offerer's first a=crypto we can use (offer order is preference order)."""
    for v in values[:16]:
        c = parse_crypto(v)
        if c is not None:
            return c
    return None


def new_crypto(tag: int, suite: str) -> CryptoAttribute:
    """Our own fresh key for ``suite`` under ``tag``."""
    return CryptoAttribute(tag, suite, os.urandom(KEY_SALT_LEN))


class SrtpContext:
    """Both directions of one RTP session: ``tx`` encrypts with our key, ``rx`` decrypts with the
    far end's."""

    def __init__(self, suite: str, tx_key: bytes, rx_key: bytes) -> None:
        profile = SUITES[suite]
        self.suite = suite
        tx = pylibsrtp.Policy(key=tx_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
        tx.allow_repeat_tx = True        # NACKed packets go again with the same sequence number
        rx = pylibsrtp.Policy(key=rx_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
        self._tx = pylibsrtp.Session(tx)
        self._rx = pylibsrtp.Session(rx)
        self.failures = 0

    def protect(self, packet: bytes) -> bytes:
        return self._tx.protect(packet)

    def protect_rtcp(self, packet: bytes) -> bytes:
        return self._tx.protect_rtcp(packet)

    def unprotect(self, packet: bytes) -> bytes | None:
        try:
            return self._rx.unprotect(packet)
        except pylibsrtp.Error:
            self.failures += 1
            return None

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        try:
            return self._rx.unprotect_rtcp(packet)
        except pylibsrtp.Error:
            self.failures += 1
            return None
