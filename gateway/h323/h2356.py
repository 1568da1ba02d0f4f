"""H.235.6 media encryption for H.323: Diffie-Hellman in SETUP/CONNECT, AES-128 for RTP.

What runs here, as H323Plus, GnuGk and Polycom RMX do it (AES-128 with the 1024-bit group only):

* **Key agreement** (H.225.0): the caller's SETUP carries two ClearTokens in ``tokens`` —
  ``{tokenOID 0.0.8.235.0.3.43, dhkey {halfkey, modSize, generator}}`` (DH-1024, the RFC 2409
  Oakley group 2 prime, g = 2; every BIT STRING 1024 bits, big-endian, the generator padded to the
  length of the prime) and the "version 3" marker ``{tokenOID 0.0.8.235.0.3.24}``; the callee's
  CONNECT answers with its own halfkey in the same form. The key-encryption key is the last 16
  octets (the least significant 128 bits) of the shared secret g^xy mod p.
* **Session keys** (H.245): the master draws a random 16-octet key per logical channel and sends
  it in ``encryptionSync`` — in its own OpenLogicalChannel, or in the OpenLogicalChannelAck of a
  channel the slave opened — as an aligned-PER ``H235Key.secureSharedSecret`` (algorithmOID AES-128,
  empty paramS, the key encrypted with AES-128 under the key-encryption key, one block, zero IV);
  ``synchFlag`` is the payload type the encrypted packets carry.
* **Media**: AES-128-CBC over the RTP payload only (header clear; RTCP clear), IV = header octets
  2..7 (sequence number, timestamp) repeated to 16 octets; a payload that is not a whole number of
  blocks is padded (RFC 3550 padding, P bit set, the count in the last, encrypted, octet); a
  received P=0 payload that is not whole blocks is ciphertext stealing (decoded, never sent).
  Encrypted packets carry the synchFlag payload type: the codec's own when dynamic, else 120 for
  audio and 121 for video (H323Plus); :class:`H235MediaContext` maps it back.

:class:`H235MediaContext` has the interface of :class:`gateway.media.srtp.SrtpContext`
(in gateway.media.h235_rtp), so RTP sessions use either the same way.
"""
from __future__ import annotations

import os
from typing import Any

import secrets

from gateway.media.h235_rtp import H235MediaContext, aes_block as _aes_block

__all__ = ["AES128_OID", "DH1024_OID", "H235MediaContext", "KeyAgreement", "V3_OID", "cipher_payload_type",
           "decode_session_key", "encode_session_key", "read_dh_tokens"]

#: tokenOIDs (H.235.6; H323Plus h2351.h)
DH1024_OID = (0, 0, 8, 235, 0, 3, 43)
V3_OID = (0, 0, 8, 235, 0, 3, 24)
#: MediaEncryptionAlgorithm / algorithmOID: AES-128-CBC (NIST)
AES128_OID = (2, 16, 840, 1, 101, 3, 4, 1, 2)

#: RFC 2409 §6.2, the second Oakley group (1024-bit MODP), generator 2
DH1024_P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF", 16)
DH1024_G = 2
_BITS = 1024
_OCTETS = _BITS // 8
#: bits of our ephemeral DH exponent (twice the 128-bit strength the 1024-bit group gives, at most)
_EXPONENT_BITS = 512


def _bits(value: int) -> tuple[int, int]:
    """A pycrate BIT STRING value of exactly 1024 bits (big-endian, left-padded)."""
    return (value, _BITS)


def _bits_value(bs: Any) -> int | None:
    """The integer of a BIT STRING as H323Plus reads it: its octets, big-endian."""
    try:
        value, nbits = bs
        value, nbits = int(value), int(nbits)
    except (TypeError, ValueError):
        return None
    if nbits <= 0 or nbits > 65536:
        return None
    pad = (-nbits) % 8
    return value << pad


class KeyAgreement:
    """Our half of one call's Diffie-Hellman exchange (DH-1024)."""

    def __init__(self) -> None:
        # plain modular exponentiation: cryptography's finite-field DH is deprecated there, and an
        # ephemeral exponent per call leaves nothing long-lived to learn
        self._x = secrets.randbits(_EXPONENT_BITS) | (1 << (_EXPONENT_BITS - 1))
        self.halfkey = pow(DH1024_G, self._x, DH1024_P)

    def tokens(self) -> list[dict[str, Any]]:
        """The ClearTokens for ``Setup-UUIE.tokens`` / ``Connect-UUIE.tokens``."""
        return [{"tokenOID": DH1024_OID,
                 "dhkey": {"halfkey": _bits(self.halfkey), "modSize": _bits(DH1024_P),
                           "generator": _bits(DH1024_G)}},
                {"tokenOID": V3_OID}]

    def master_key(self, peer_halfkey: int) -> bytes:
        """The 16-octet key-encryption key: the least significant 128 bits of the shared secret.
        ``ValueError`` for a halfkey outside 2..p-2 (a small-subgroup or forged value)."""
        if not 1 < peer_halfkey < DH1024_P - 1:
            raise ValueError("the far end's DH halfkey is outside 2..p-2")
        return (pow(peer_halfkey, self._x, DH1024_P) % (1 << 128)).to_bytes(16, "big")


def read_dh_tokens(tokens: Any) -> int | None:
    """The far end's DH-1024 halfkey from a Setup/Connect ``tokens`` list, None when it offers no
    H.235.6 DH-1024 (no such token, another group, a prime or generator that is not the standard
    one, a malformed value)."""
    if not isinstance(tokens, (list, tuple)):
        return None
    for t in tokens[:16]:
        if not isinstance(t, dict) or tuple(t.get("tokenOID") or ()) != DH1024_OID:
            continue
        key = t.get("dhkey")
        if not isinstance(key, dict):
            return None
        half = _bits_value(key.get("halfkey"))
        p = _bits_value(key.get("modSize")) if key.get("modSize") and key["modSize"][1] else DH1024_P
        g = _bits_value(key.get("generator")) if key.get("generator") and key["generator"][1] else DH1024_G
        if half is None or p != DH1024_P or g != DH1024_G:
            return None
        return half
    return None


def encode_session_key(master: bytes, session_key: bytes) -> bytes:
    """``encryptionSync.h235Key``: H235Key.secureSharedSecret (aligned PER), the session key
    encrypted with AES-128 under the key-encryption key (one block: CBC with a zero IV = ECB)."""
    from gateway.h323 import asn1

    obj = asn1.h225_module().H235_SECURITY_MESSAGES.H235Key
    obj.set_val(("secureSharedSecret", {"algorithmOID": AES128_OID, "paramS": {},
                                        "encryptedSessionKey": _aes_block(master, session_key)}))
    return obj.to_aper()


def decode_session_key(master: bytes, h235_key: bytes) -> bytes:
    """The session key of an ``encryptionSync.h235Key``; ``ValueError`` for anything else
    (another H235Key kind, another algorithm, an IV in paramS, not 16 octets)."""
    from gateway.h323 import asn1

    obj = asn1.h225_module().H235_SECURITY_MESSAGES.H235Key
    try:
        obj.from_aper(bytes(h235_key))
        kind, value = obj.get_val()
    except Exception as exc:  # pycrate raises many kinds on broken PER
        raise ValueError(f"h235Key does not decode: {type(exc).__name__}") from None
    if kind != "secureSharedSecret":
        raise ValueError(f"h235Key is {kind}, not secureSharedSecret")
    oid = value.get("algorithmOID")
    if oid is not None and tuple(oid) != AES128_OID:        # VCON leaves it out: then AES-128
        raise ValueError(f"h235Key algorithm {'.'.join(map(str, oid))} is not AES-128")
    if value.get("paramS"):
        raise ValueError("h235Key paramS carries an IV: not supported")
    encrypted = bytes(value.get("encryptedSessionKey") or b"")
    if len(encrypted) != 16:
        raise ValueError(f"h235Key session key is {len(encrypted)} octets, not 16")
    return _aes_block(master, encrypted, decrypt=True)


def cipher_payload_type(media: str, plain_pt: int) -> int:
    """The payload type encrypted packets carry (synchFlag): a dynamic one stays, a static one
    becomes 120 (audio) / 121 (video), as H323Plus does."""
    if 96 <= plain_pt <= 127:
        return plain_pt
    return 121 if media == "video" else 120


def new_session_key() -> bytes:
    return os.urandom(16)
