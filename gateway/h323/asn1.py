"""ASN.1 (aligned PER) for H.225.0 and H.245, through pycrate's compiled modules.

pycrate (``pycrate_asn1dir.H225`` / ``.H245``) does all the PER work; this
module only loads it lazily (once), serialises access to its objects and turns
every failure into :class:`Asn1Error`.

Values use pycrate's value notation: a SEQUENCE is a ``dict``, a CHOICE a
``(name, value)`` tuple, an OBJECT IDENTIFIER a tuple of ints, a BIT STRING
``(uint, nbits)``, OCTET STRING ``bytes``, BMPString/IA5String ``str``, NULL
``0``, ENUMERATED a ``str``.

pycrate ASN.1 objects are module-level singletons that *hold* the value being
encoded or decoded, so they are neither thread-safe nor re-entrant.  Every
operation here runs under one lock and never hands out a value the object
still references (decoded values are detached from the object before the lock
is released).

    >>> data = encode_ras(("gatekeeperRequest", {...}))   # doctest: +SKIP
    >>> decode_ras(data)[0]                                # doctest: +SKIP
    'gatekeeperRequest'
"""
from __future__ import annotations

import threading
import time
from types import ModuleType
from typing import Any

__all__ = [
    "ALIAS_KINDS",
    "alias_address",
    "parse_alias",
    "parse_transport_address",
    "transport_address",
    "Asn1Error",
    "H225_OID_PREFIX",
    "H225_PROTOCOL_ID",
    "H245_OID_PREFIX",
    "H245_PROTOCOL_ID",
    "decode_h245",
    "decode_open_logical_channel",
    "encode_open_logical_channel",
    "decode_ras",
    "decode_uuie",
    "encode_h245",
    "encode_ras",
    "encode_uuie",
    "h225_module",
    "h225_version",
    "h245_module",
    "h245_version",
    "import_seconds",
]

# H.225.0 protocolIdentifier {itu-t(0) recommendation(0) h(8) 2250 version(0) v}
H225_OID_PREFIX: tuple[int, ...] = (0, 0, 8, 2250, 0)
H225_PROTOCOL_ID: tuple[int, ...] = H225_OID_PREFIX + (4,)
# H.245 protocolIdentifier {itu-t(0) recommendation(0) h(8) 245 version(0) v}
H245_OID_PREFIX: tuple[int, ...] = (0, 0, 8, 245, 0)
H245_PROTOCOL_ID: tuple[int, ...] = H245_OID_PREFIX + (7,)

MAX_PDU = 65535  # no H.225/H.245 PDU we accept is larger (TPKT bounds it anyway)


class Asn1Error(Exception):
    """An ASN.1 PDU could not be encoded or decoded.

    ``kind`` is ``"decode"``, ``"encode"``, ``"protocol"`` (wrong protocol
    identifier) or ``"size"``; ``reason`` is a human-readable explanation.
    """

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(f"ASN.1 {kind} error: {reason}")


_lock = threading.RLock()
_modules: dict[str, ModuleType] = {}
_import_seconds: dict[str, float] = {}


def _load(name: str) -> ModuleType:
    mod = _modules.get(name)
    if mod is not None:
        return mod
    with _lock:
        mod = _modules.get(name)
        if mod is None:
            t0 = time.perf_counter()
            if name == "H225":
                from pycrate_asn1dir import H225 as mod  # noqa: N811 (pycrate's name)
            else:
                from pycrate_asn1dir import H245 as mod  # noqa: N811
            _import_seconds[name] = time.perf_counter() - t0
            _fix_pycrate_extension_alignment()
            _modules[name] = mod
    return mod


_fixed = False


def _fix_pycrate_extension_alignment() -> None:
    """Correct pycrate's aligned-PER encoding of SEQUENCE extension additions.

    pycrate (0.8.1, the latest) encodes a SEQUENCE's extension additions
    *before* it counts the extension bitmap in its bit offset, so when the
    root part ends off an octet boundary the first open type gets padding
    computed from the wrong offset: an extra octet appears and the PDU is
    undecodable (tshark: malformed; pycrate itself cannot decode it).  Seen
    with DisengageRequest and AdmissionRequest + callIdentifier.

    The fix encodes the root part with pycrate (extension bit forced to 1),
    then the bitmap length, the bitmap, the realignment, and only then each
    addition as an open type, all with pycrate's own codec primitives
    (X.691 §19.7-19.9).  Values without extensions take pycrate's own path.
    """
    global _fixed
    if _fixed:
        return
    from pycrate_asn1rt.asnobj_construct import _CONSTRUCT
    from pycrate_asn1rt.codecs import ASN1CodecPER as PER
    from pycrate_asn1rt.utils import T_UINT

    original = _CONSTRUCT._to_per

    def _to_per(self: Any) -> list[Any]:
        ext = self._ext
        val = self._val
        if not PER.ALIGNED or ext is None or not isinstance(val, dict):
            return original(self)
        ext_keys = [k for k in val if k in ext or k[:5] == "_ext_"]
        if not ext_keys:
            return original(self)
        self._val = {k: v for k, v in val.items() if k not in ext_keys}
        try:
            gen = original(self)            # root part; its first item is the extension bit (0)
        finally:
            self._val = val
        gen[0] = (T_UINT, 1, 1)             # same width: the offset count stays right
        present: list[int] = []
        opens: list[Any] = []               # (index, object or raw bytes)
        for cnt, ident in enumerate(self._ext_nest, start=1):
            if isinstance(ident, list):
                grp = {i: val[i] for i in ident if i in val}
                if grp:
                    comp = self._ext_group_obj[self._ext_ident[ident[0]]]
                    opens.append((comp, grp))
                    present.append(cnt)
            elif ident in val:
                opens.append((self._cont[ident], val[ident]))
                present.append(cnt)
        nknown = len(self._ext_nest)
        for ident in sorted((k for k in ext_keys if k[:5] == "_ext_"), key=lambda k: int(k[5:])):
            ind = int(ident[5:])
            if ind > nknown and ind not in present:
                opens.append((None, val[ident]))
                present.append(ind)
        ldet = max(max(present), nknown)
        if ldet > 64:
            gen.append((T_UINT, 1, 1))
            PER._off[-1] += 1
            gen.extend(PER.encode_intunconst(ldet - 1, 0))
        else:
            gen.append((T_UINT, ldet - 1, 7))
            PER._off[-1] += 7
        gen.append((T_UINT, sum(1 << (ldet - i) for i in present), ldet))
        PER._off[-1] += ldet
        if PER._off[-1] % 8:
            gen.extend(PER.encode_pad())
        for comp, v in opens:
            if comp is None:
                gen.extend(PER.encode_unconst_buf(v))
                continue
            parent = comp._parent
            comp._parent = self
            comp._val = v
            try:
                gen.extend(PER.encode_unconst_open(comp))
            finally:
                comp._parent = parent
        return gen

    _CONSTRUCT._to_per = _to_per
    _fixed = True


def h225_module() -> ModuleType:
    """pycrate's ``pycrate_asn1dir.H225`` (imported on first use, then cached)."""
    return _load("H225")


def h245_module() -> ModuleType:
    """pycrate's ``pycrate_asn1dir.H245`` (imported on first use, then cached)."""
    return _load("H245")


def import_seconds() -> dict[str, float]:
    """How long each pycrate module took to import (only those imported so far)."""
    return dict(_import_seconds)


def _ras_obj() -> Any:
    return h225_module().H323_MESSAGES.RasMessage


def _uuie_obj() -> Any:
    return h225_module().H323_MESSAGES.H323_UserInformation


def _h245_obj() -> Any:
    return h245_module().MULTIMEDIA_SYSTEM_CONTROL.MultimediaSystemControlMessage


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


def _encode(obj: Any, value: Any, what: str) -> bytes:
    with _lock:
        try:
            obj.set_val(value)
            data = obj.to_aper()
        except Exception as exc:  # pycrate raises many unrelated types on bad values
            raise Asn1Error("encode", f"{what}: {_short(exc)}") from None
        finally:
            obj._val = None  # do not keep the caller's value inside the singleton
    if len(data) > MAX_PDU:
        raise Asn1Error("size", f"{what}: {len(data)} bytes is larger than {MAX_PDU}")
    return data


def _decode(obj: Any, data: bytes, what: str, strict: bool) -> Any:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise Asn1Error("decode", f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise Asn1Error("decode", f"{what}: empty PDU")
    if len(data) > MAX_PDU:
        raise Asn1Error("size", f"{what}: {len(data)} bytes is larger than {MAX_PDU}")
    charpy = h225_module().Charpy  # same class in both modules
    with _lock:
        try:
            buf = charpy(data)
            obj.from_aper(buf)
            value = obj._val  # freshly built by from_aper: nothing else refers to it
            left = buf.len_bit()
        except Exception as exc:
            raise Asn1Error("decode", f"{what}: {_short(exc)}") from None
        finally:
            obj._val = None
    if strict and left >= 8:
        raise Asn1Error("decode", f"{what}: {left // 8} trailing bytes after the PDU")
    return value


def encode_ras(value: Any) -> bytes:
    """PER-encode a ``RasMessage`` (a ``(choice, dict)`` tuple)."""
    return _encode(_ras_obj(), value, "RasMessage")


def decode_ras(data: bytes, *, strict: bool = False) -> Any:
    """Decode a ``RasMessage`` datagram; :class:`Asn1Error` on anything malformed."""
    return _decode(_ras_obj(), data, "RasMessage", strict)


def encode_uuie(value: Any) -> bytes:
    """PER-encode an ``H323-UserInformation`` (the Q.931 user-user IE contents)."""
    return _encode(_uuie_obj(), value, "H323-UserInformation")


def decode_uuie(data: bytes, *, strict: bool = False) -> Any:
    """Decode an ``H323-UserInformation``; :class:`Asn1Error` on anything malformed."""
    return _decode(_uuie_obj(), data, "H323-UserInformation", strict)


def encode_h245(value: Any) -> bytes:
    """PER-encode a ``MultimediaSystemControlMessage`` (request/response/command/indication)."""
    return _encode(_h245_obj(), value, "MultimediaSystemControlMessage")


def decode_h245(data: bytes, *, strict: bool = False) -> Any:
    """Decode a ``MultimediaSystemControlMessage``; :class:`Asn1Error` on anything malformed."""
    return _decode(_h245_obj(), data, "MultimediaSystemControlMessage", strict)


def _version(oid: Any, prefix: tuple[int, ...], what: str) -> int:
    if (not isinstance(oid, tuple) or len(oid) != len(prefix) + 1
            or tuple(oid[:-1]) != prefix or not isinstance(oid[-1], int)):
        raise Asn1Error("protocol", f"{what}: protocolIdentifier {_oid_text(oid)} is not "
                                    f"{'.'.join(map(str, prefix))}.<version>")
    return oid[-1]


def h225_version(oid: Any) -> int:
    """The H.225.0 version of a protocolIdentifier ``0.0.8.2250.0.v`` (any v accepted)."""
    v = _version(oid, H225_OID_PREFIX, "H.225.0")
    if not 1 <= v <= 99:
        raise Asn1Error("protocol", f"H.225.0: version {v} is not plausible")
    return v


def h245_version(oid: Any) -> int:
    """The H.245 version of a protocolIdentifier ``0.0.8.245.0.v``."""
    v = _version(oid, H245_OID_PREFIX, "H.245")
    if not 1 <= v <= 99:
        raise Asn1Error("protocol", f"H.245: version {v} is not plausible")
    return v


def _oid_text(oid: Any) -> str:
    if isinstance(oid, tuple) and all(isinstance(x, int) for x in oid):
        return ".".join(map(str, oid))
    return repr(oid)


# --------------------------------------------------------------------------- value helpers
# Small conversions between Python values and H.225.0 value notation that the
# Q.931 builders and RAS both need (TransportAddress, AliasAddress).

# Alias kinds as H.225.0 spells them; "dialedDigits" (US spelling) is accepted too.
ALIAS_KINDS = ("dialledDigits", "h323-ID", "url-ID", "transportID", "email-ID")
_ALIAS_SPELLINGS = {"dialeddigits": "dialledDigits", "e164": "dialledDigits", "h323-id": "h323-ID",
                    "h323id": "h323-ID", "url-id": "url-ID", "url": "url-ID", "email-id": "email-ID",
                    "email": "email-ID", "transportid": "transportID"}
_E164_CHARS = frozenset("0123456789#*,")


def transport_address(ip: str, port: int) -> tuple[str, dict[str, Any]]:
    """TransportAddress value for an IPv4 (``ipAddress``) or IPv6 (``ip6Address``) address."""
    import ipaddress

    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise Asn1Error("encode", f"TransportAddress: {ip!r} is not an IP address") from None
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise Asn1Error("encode", f"TransportAddress: port {port!r} is not in 0..65535")
    if addr.version == 4:
        return ("ipAddress", {"ip": addr.packed, "port": port})
    return ("ip6Address", {"ip": addr.packed, "port": port})


def parse_transport_address(value: Any) -> tuple[str, int] | None:
    """``(ip, port)`` of an ipAddress / ip6Address TransportAddress; None for other kinds."""
    import ipaddress

    if not isinstance(value, tuple) or len(value) != 2:
        return None
    kind, v = value
    if kind in ("ipAddress", "ip6Address", "ipSourceRoute") and isinstance(v, dict):
        return str(ipaddress.ip_address(v["ip"])), int(v["port"])
    return None


def alias_address(alias: tuple[str, str]) -> tuple[str, Any]:
    """AliasAddress value from ``(kind, text)``; kinds: dialledDigits (E.164), h323-ID
    (BMPString), url-ID, email-ID, transportID (``"ip:port"``)."""
    kind, text = alias
    kind = _ALIAS_SPELLINGS.get(kind.lower(), kind)
    if kind not in ALIAS_KINDS:
        raise Asn1Error("encode", f"AliasAddress: unknown kind {alias[0]!r} (expected one of {', '.join(ALIAS_KINDS)})")
    if not isinstance(text, str) or not text:
        raise Asn1Error("encode", f"AliasAddress {kind}: expected a non-empty string, got {text!r}")
    if kind == "dialledDigits" and not set(text) <= _E164_CHARS:
        raise Asn1Error("encode", f"AliasAddress dialledDigits {text!r}: only 0-9 # * , are allowed")
    if kind == "h323-ID" and any(ord(c) > 0xFFFF for c in text):
        raise Asn1Error("encode", f"AliasAddress h323-ID {text!r}: BMPString holds no character above U+FFFF")
    if kind == "transportID":
        host, _, port = text.rpartition(":")
        if not port.isdigit():
            raise Asn1Error("encode", f"AliasAddress transportID {text!r}: expected ip:port")
        return (kind, transport_address(host.strip("[]"), int(port)))
    if kind in ("url-ID", "email-ID", "dialledDigits") and not text.isascii():
        raise Asn1Error("encode", f"AliasAddress {kind} {text!r}: IA5String must be ASCII")
    return (kind, text)


def parse_alias(value: Any) -> tuple[str, str]:
    """``(kind, text)`` of an AliasAddress value; unknown kinds come back as (kind, repr)."""
    kind, v = value
    if kind == "transportID":
        ta = parse_transport_address(v)
        if ta is not None:
            host = f"[{ta[0]}]" if ":" in ta[0] else ta[0]
            return (kind, f"{host}:{ta[1]}")
    if kind == "partyNumber" and isinstance(v, tuple) and isinstance(v[1], dict):
        digits = v[1].get("partyNumber")
        if isinstance(digits, str):
            return (kind, digits)
    return (kind, v if isinstance(v, str) else repr(v))


# --------------------------------------------------------------------------- fastStart elements
# H.225.0 fastStart carries each proposal as a PER-encoded H.245
# OpenLogicalChannel on its own (not inside a MultimediaSystemControlMessage).


def _olc_obj() -> Any:
    return h245_module().MULTIMEDIA_SYSTEM_CONTROL.OpenLogicalChannel


def encode_open_logical_channel(value: Any) -> bytes:
    """PER-encode an H.245 ``OpenLogicalChannel`` (a fastStart element)."""
    return _encode(_olc_obj(), value, "OpenLogicalChannel")


def decode_open_logical_channel(data: bytes, *, strict: bool = False) -> Any:
    """Decode a fastStart element (an H.245 ``OpenLogicalChannel``)."""
    return _decode(_olc_obj(), data, "OpenLogicalChannel", strict)
