"""H.225.0 RAS messages (registration, admission and status): build and parse.

No networking here: ``build_*`` return the PER-encoded datagram, and
:func:`parse_ras` turns a datagram into a :class:`RasMessage` carrying the
fields a gatekeeper acts on (plus the full decoded value in ``value``).

Conventions:

* aliases are ``(kind, text)`` with the H.225.0 kind names ``dialledDigits``
  (E.164; ``dialedDigits`` accepted), ``h323-ID`` (a BMPString: any text up to
  U+FFFF), ``url-ID``, ``email-ID``, ``transportID`` (``"ip:port"``);
* transport addresses are ``(ip, port)``;
* ``bandwidth`` is in H.225.0 BandWidth units of **100 bit/s** (3840 = 384 kbit/s);
* ``call_identifier`` and ``conference_id`` are 16-byte GUIDs.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


from . import asn1
from .asn1 import Asn1Error

__all__ = [
    "ABBREVIATIONS",
    "RasError",
    "RasMessage",
    "build_acf", "build_arj", "build_arq",
    "build_bcf", "build_brj", "build_brq",
    "build_dcf", "build_drj", "build_drq",
    "build_gcf", "build_grj", "build_grq",
    "build_irq", "build_irr",
    "build_lcf", "build_lrj", "build_lrq",
    "build_rcf", "build_rrj", "build_rrq", "build_keepalive_rrq",
    "build_ucf", "build_urj", "build_urq",
    "parse_ras",
]

Address = tuple[str, int]
Alias = tuple[str, str]

ABBREVIATIONS: dict[str, str] = {
    "gatekeeperRequest": "GRQ", "gatekeeperConfirm": "GCF", "gatekeeperReject": "GRJ",
    "registrationRequest": "RRQ", "registrationConfirm": "RCF", "registrationReject": "RRJ",
    "unregistrationRequest": "URQ", "unregistrationConfirm": "UCF", "unregistrationReject": "URJ",
    "admissionRequest": "ARQ", "admissionConfirm": "ACF", "admissionReject": "ARJ",
    "bandwidthRequest": "BRQ", "bandwidthConfirm": "BCF", "bandwidthReject": "BRJ",
    "disengageRequest": "DRQ", "disengageConfirm": "DCF", "disengageReject": "DRJ",
    "locationRequest": "LRQ", "locationConfirm": "LCF", "locationReject": "LRJ",
    "infoRequest": "IRQ", "infoRequestResponse": "IRR", "nonStandardMessage": "NSM",
    "unknownMessageResponse": "XRS", "requestInProgress": "RIP",
    "resourcesAvailableIndicate": "RAI", "resourcesAvailableConfirm": "RAC",
    "infoRequestAck": "IACK", "infoRequestNak": "INAK",
    "serviceControlIndication": "SCI", "serviceControlResponse": "SCR",
}


class RasError(Asn1Error):
    """A RAS datagram is malformed, or a builder got values RAS cannot carry."""


@dataclass
class RasMessage:
    """A decoded RAS message: its kind, sequence number and the fields a gatekeeper uses.

    Fields absent from the message are None / empty.  ``value`` is the whole
    decoded SEQUENCE in pycrate value notation for anything else.
    """

    kind: str                                      # "registrationRequest", ...
    seq: int                                       # requestSeqNum
    value: dict[str, Any] = field(repr=False, default_factory=dict)
    protocol_version: int | None = None            # H.225.0 version from protocolIdentifier
    aliases: list[Alias] = field(default_factory=list)       # endpointAlias/terminalAlias/srcInfo
    destination_info: list[Alias] = field(default_factory=list)
    endpoint_identifier: str | None = None
    gatekeeper_identifier: str | None = None
    call_signal_addresses: list[Address] = field(default_factory=list)
    ras_addresses: list[Address] = field(default_factory=list)
    dest_call_signal_address: Address | None = None
    src_call_signal_address: Address | None = None
    reply_address: Address | None = None
    time_to_live: int | None = None
    keep_alive: bool = False
    discovery_complete: bool | None = None
    call_identifier: bytes | None = None
    conference_id: bytes | None = None
    call_reference_value: int | None = None
    answer_call: bool | None = None
    bandwidth: int | None = None                   # units of 100 bit/s
    call_model: str | None = None                  # "direct" | "gatekeeperRouted"
    reject_reason: str | None = None
    disengage_reason: str | None = None
    unregistration_reason: str | None = None
    endpoint_type: str | None = None               # terminal / gateway / mcu / gatekeeper / mcu+...
    vendor: dict[str, Any] | None = None
    raw: bytes = field(repr=False, default=b"")      # the datagram as received (H.235 hashes it)

    @property
    def abbreviation(self) -> str:
        return ABBREVIATIONS.get(self.kind, self.kind)


def _addr(value: Any) -> Address | None:
    try:
        return asn1.parse_transport_address(value)
    except (ValueError, KeyError, TypeError):
        return None


def _addrs(values: Any) -> list[Address]:
    return [a for a in (_addr(v) for v in values or ()) if a is not None]


def _aliases_of(values: Any) -> list[Alias]:
    return [asn1.parse_alias(v) for v in values or ()]


def _endpoint_kind(et: Any) -> str | None:
    if not isinstance(et, dict):
        return None
    kinds = [k for k in ("terminal", "gateway", "mcu", "gatekeeper") if k in et]
    return "+".join(kinds) if kinds else "undefined"


def parse_ras(data: bytes) -> RasMessage:
    """Decode a RAS datagram.  :class:`RasError` for malformed PER or a wrong protocolIdentifier."""
    try:
        kind, v = asn1.decode_ras(data)
    except Asn1Error as exc:
        raise RasError(exc.kind, exc.reason) from None
    if not isinstance(v, dict):           # admissionConfirmSequence is a SEQUENCE OF
        return RasMessage(kind=kind, seq=0, value={"items": v})
    m = RasMessage(kind=kind, seq=int(v.get("requestSeqNum", 0)), value=v, raw=bytes(data))
    if "protocolIdentifier" in v:
        try:
            m.protocol_version = asn1.h225_version(v["protocolIdentifier"])
        except Asn1Error as exc:
            raise RasError(exc.kind, exc.reason) from None
    for key in ("terminalAlias", "endpointAlias", "srcInfo", "sourceInfo"):
        if key in v and isinstance(v[key], list):
            m.aliases = _aliases_of(v[key])
            break
    dest = v.get("destinationInfo")
    if isinstance(dest, list):
        m.destination_info = _aliases_of(dest)
    elif kind == "admissionRequest" and "destinationInfo" in v:
        m.destination_info = _aliases_of(v["destinationInfo"])
    m.endpoint_identifier = v.get("endpointIdentifier")
    m.gatekeeper_identifier = v.get("gatekeeperIdentifier")
    csa = v.get("callSignalAddress")
    m.call_signal_addresses = _addrs(csa) if isinstance(csa, list) else _addrs([csa] if csa else [])
    ras = v.get("rasAddress")
    m.ras_addresses = _addrs(ras) if isinstance(ras, list) else _addrs([ras] if ras else [])
    m.dest_call_signal_address = _addr(v.get("destCallSignalAddress"))
    m.src_call_signal_address = _addr(v.get("srcCallSignalAddress"))
    m.reply_address = _addr(v.get("replyAddress"))
    m.time_to_live = v.get("timeToLive")
    m.keep_alive = bool(v.get("keepAlive", False))
    m.discovery_complete = v.get("discoveryComplete")
    if "callIdentifier" in v:
        m.call_identifier = v["callIdentifier"]["guid"]
    m.conference_id = v.get("conferenceID")
    m.call_reference_value = v.get("callReferenceValue")
    m.answer_call = v.get("answerCall")
    m.bandwidth = v.get("bandWidth")
    if "callModel" in v:
        m.call_model = v["callModel"][0]
    if "rejectReason" in v:
        m.reject_reason = v["rejectReason"][0]
    if "disengageReason" in v:
        m.disengage_reason = v["disengageReason"][0]
    if kind == "unregistrationRequest" and "reason" in v:
        m.unregistration_reason = v["reason"][0]
    et = v.get("terminalType") or v.get("endpointType")
    m.endpoint_type = _endpoint_kind(et)
    if "endpointVendor" in v:
        m.vendor = v["endpointVendor"]
    elif isinstance(et, dict) and "vendor" in et:
        m.vendor = et["vendor"]
    return m


# --------------------------------------------------------------------------- builders


def _encode(kind: str, body: dict[str, Any]) -> bytes:
    try:
        return asn1.encode_ras((kind, body))
    except Asn1Error as exc:
        raise RasError(exc.kind, f"{ABBREVIATIONS.get(kind, kind)}: {exc.reason}") from None


def _seq(seq: int) -> int:
    if not isinstance(seq, int) or not 1 <= seq <= 65535:
        raise RasError("encode", f"requestSeqNum {seq!r} is not in 1..65535")
    return seq


def _ta(addr: Address) -> Any:
    try:
        return asn1.transport_address(*addr)
    except (Asn1Error, TypeError) as exc:
        raise RasError("encode", getattr(exc, "reason", str(exc))) from None


def _aliases(aliases: Sequence[Alias]) -> list[Any]:
    try:
        return [asn1.alias_address(a) for a in aliases]
    except Asn1Error as exc:
        raise RasError("encode", exc.reason) from None


def _guid(value: bytes, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != 16:
        raise RasError("encode", f"{what} must be 16 bytes, got {value!r}")
    return bytes(value)


def _vendor() -> dict[str, Any]:
    from .q931 import vendor_identifier

    return vendor_identifier()


def _endpoint_type(kind: str) -> dict[str, Any]:
    if kind not in ("terminal", "gateway", "mcu", "gatekeeper"):
        raise RasError("encode", f"endpoint kind {kind!r} is not terminal, gateway, mcu or gatekeeper")
    return {"vendor": _vendor(), kind: {}, "mc": kind == "mcu", "undefinedNode": False}


def _reason(reason: str, allowed: Sequence[str], what: str) -> tuple[str, int]:
    if reason not in allowed:
        raise RasError("encode", f"{what} {reason!r} is not one of {', '.join(allowed)}")
    return (reason, 0)


def _opt(body: dict[str, Any], key: str, value: Any) -> None:
    if value is not None and value != [] and value != ():
        body[key] = value


PID = asn1.H225_PROTOCOL_ID

GRJ_REASONS = ("resourceUnavailable", "terminalExcluded", "invalidRevision", "undefinedReason",
               "securityDenial", "genericDataReason", "neededFeatureNotSupported")
RRJ_REASONS = ("discoveryRequired", "invalidRevision", "invalidCallSignalAddress", "invalidRASAddress",
               "invalidTerminalType", "undefinedReason", "transportNotSupported", "transportQOSNotSupported",
               "resourceUnavailable", "invalidAlias", "securityDenial", "fullRegistrationRequired",
               "additiveRegistrationNotSupported", "genericDataReason", "neededFeatureNotSupported",
               "registerWithAssignedGK")
URQ_REASONS = ("reregistrationRequired", "ttlExpired", "securityDenial", "undefinedReason", "maintenance",
               "registerWithAssignedGK")
URJ_REASONS = ("notCurrentlyRegistered", "callInProgress", "undefinedReason", "permissionDenied", "securityDenial")
ARJ_REASONS = ("calledPartyNotRegistered", "invalidPermission", "requestDenied", "undefinedReason",
               "callerNotRegistered", "routeCallToGatekeeper", "invalidEndpointIdentifier", "resourceUnavailable",
               "securityDenial", "qosControlNotSupported", "incompleteAddress", "aliasesInconsistent",
               "exceedsCallCapacity", "collectDestination", "collectPIN", "genericDataReason",
               "neededFeatureNotSupported", "securityDHmismatch", "noRouteToDestination", "unallocatedNumber",
               "registerWithAssignedGK")
BRJ_REASONS = ("notBound", "invalidConferenceID", "invalidPermission", "insufficientResources",
               "invalidRevision", "undefinedReason", "securityDenial")
DRJ_REASONS = ("notRegistered", "requestToDropOther", "securityDenial")
LRJ_REASONS = ("notRegistered", "invalidPermission", "requestDenied", "undefinedReason", "securityDenial",
               "aliasesInconsistent", "resourceUnavailable", "genericDataReason", "neededFeatureNotSupported",
               "hopCountExceeded", "incompleteAddress", "securityDHmismatch", "noRouteToDestination",
               "unallocatedNumber")
DISENGAGE_REASONS = ("forcedDrop", "normalDrop", "undefinedReason")
CALL_MODELS = ("direct", "gatekeeperRouted")


# -- discovery
def build_grq(seq: int, ras_address: Address, *, endpoint_kind: str = "terminal", aliases: Sequence[Alias] = (),
              gatekeeper_identifier: str | None = None) -> bytes:
    body: dict[str, Any] = {"requestSeqNum": _seq(seq), "protocolIdentifier": PID,
                            "rasAddress": _ta(ras_address), "endpointType": _endpoint_type(endpoint_kind)}
    _opt(body, "gatekeeperIdentifier", gatekeeper_identifier)
    _opt(body, "endpointAlias", _aliases(aliases))
    return _encode("gatekeeperRequest", body)


def build_gcf(seq: int, ras_address: Address, *, gatekeeper_identifier: str | None = None) -> bytes:
    body: dict[str, Any] = {"requestSeqNum": _seq(seq), "protocolIdentifier": PID, "rasAddress": _ta(ras_address)}
    _opt(body, "gatekeeperIdentifier", gatekeeper_identifier)
    return _encode("gatekeeperConfirm", body)


def build_grj(seq: int, reason: str = "undefinedReason", *, gatekeeper_identifier: str | None = None) -> bytes:
    body: dict[str, Any] = {"requestSeqNum": _seq(seq), "protocolIdentifier": PID,
                            "rejectReason": _reason(reason, GRJ_REASONS, "GatekeeperRejectReason")}
    _opt(body, "gatekeeperIdentifier", gatekeeper_identifier)
    return _encode("gatekeeperReject", body)


# -- registration
def build_rrq(seq: int, call_signal_addresses: Sequence[Address], ras_addresses: Sequence[Address], *,
              aliases: Sequence[Alias] = (), endpoint_kind: str = "terminal", time_to_live: int | None = None,
              discovery_complete: bool = False, gatekeeper_identifier: str | None = None,
              endpoint_identifier: str | None = None, keep_alive: bool = False) -> bytes:
    """RRQ.  With ``keep_alive=True`` it is the lightweight re-registration
    (H.225.0 §7.9.2.2): endpointIdentifier, gatekeeperIdentifier and keepAlive."""
    body: dict[str, Any] = {
        "requestSeqNum": _seq(seq), "protocolIdentifier": PID, "discoveryComplete": discovery_complete,
        "callSignalAddress": [_ta(a) for a in call_signal_addresses],
        "rasAddress": [_ta(a) for a in ras_addresses],
        "terminalType": _endpoint_type(endpoint_kind), "endpointVendor": _vendor(),
        "keepAlive": keep_alive, "willSupplyUUIEs": False, "maintainConnection": False,
    }
    _opt(body, "terminalAlias", _aliases(aliases))
    _opt(body, "gatekeeperIdentifier", gatekeeper_identifier)
    _opt(body, "timeToLive", time_to_live)
    _opt(body, "endpointIdentifier", endpoint_identifier)
    if keep_alive and not endpoint_identifier:
        raise RasError("encode", "a keepAlive RRQ needs the endpointIdentifier the RCF gave")
    return _encode("registrationRequest", body)


def build_keepalive_rrq(seq: int, call_signal_addresses: Sequence[Address], ras_addresses: Sequence[Address],
                        endpoint_identifier: str, gatekeeper_identifier: str | None = None,
                        time_to_live: int | None = None, endpoint_kind: str = "terminal") -> bytes:
    return build_rrq(seq, call_signal_addresses, ras_addresses, endpoint_kind=endpoint_kind,
                     time_to_live=time_to_live, gatekeeper_identifier=gatekeeper_identifier,
                     endpoint_identifier=endpoint_identifier, keep_alive=True)


def build_rcf(seq: int, call_signal_addresses: Sequence[Address], endpoint_identifier: str, *,
              aliases: Sequence[Alias] = (), gatekeeper_identifier: str | None = None,
              time_to_live: int | None = None) -> bytes:
    body: dict[str, Any] = {"requestSeqNum": _seq(seq), "protocolIdentifier": PID,
                            "callSignalAddress": [_ta(a) for a in call_signal_addresses],
                            "endpointIdentifier": endpoint_identifier,
                            "willRespondToIRR": False, "maintainConnection": False}
    _opt(body, "terminalAlias", _aliases(aliases))
    _opt(body, "gatekeeperIdentifier", gatekeeper_identifier)
    _opt(body, "timeToLive", time_to_live)
    return _encode("registrationConfirm", body)


def build_rrj(seq: int, reason: str = "undefinedReason", *, gatekeeper_identifier: str | None = None) -> bytes:
    body: dict[str, Any] = {"requestSeqNum": _seq(seq), "protocolIdentifier": PID,
                            "rejectReason": _reason(reason, RRJ_REASONS, "RegistrationRejectReason")}
    _opt(body, "gatekeeperIdentifier", gatekeeper_identifier)
    return _encode("registrationReject", body)


def build_urq(seq: int, call_signal_addresses: Sequence[Address], *, endpoint_identifier: str | None = None,
              aliases: Sequence[Alias] = (), reason: str | None = None,
              gatekeeper_identifier: str | None = None) -> bytes:
    body: dict[str, Any] = {"requestSeqNum": _seq(seq), "callSignalAddress": [_ta(a) for a in call_signal_addresses]}
    _opt(body, "endpointAlias", _aliases(aliases))
    _opt(body, "endpointIdentifier", endpoint_identifier)
    _opt(body, "gatekeeperIdentifier", gatekeeper_identifier)
    if reason is not None:
        body["reason"] = _reason(reason, URQ_REASONS, "UnregRequestReason")
    return _encode("unregistrationRequest", body)


def build_ucf(seq: int) -> bytes:
    return _encode("unregistrationConfirm", {"requestSeqNum": _seq(seq)})


def build_urj(seq: int, reason: str = "notCurrentlyRegistered") -> bytes:
    return _encode("unregistrationReject", {"requestSeqNum": _seq(seq),
                                            "rejectReason": _reason(reason, URJ_REASONS, "UnregRejectReason")})


# -- admission
def build_arq(seq: int, endpoint_identifier: str, src_aliases: Sequence[Alias], bandwidth: int, call_ref: int,
              conference_id: bytes, call_identifier: bytes, *, answer_call: bool = False,
              destination_aliases: Sequence[Alias] = (), dest_call_signal_address: Address | None = None,
              src_call_signal_address: Address | None = None, call_model: str | None = None,
              gatekeeper_identifier: str | None = None) -> bytes:
    body: dict[str, Any] = {
        "requestSeqNum": _seq(seq), "callType": ("pointToPoint", 0), "endpointIdentifier": endpoint_identifier,
        "srcInfo": _aliases(src_aliases) or [("h323-ID", endpoint_identifier)],
        "bandWidth": bandwidth, "callReferenceValue": call_ref,
        "conferenceID": _guid(conference_id, "conferenceID"), "activeMC": False, "answerCall": answer_call,
        "callIdentifier": {"guid": _guid(call_identifier, "callIdentifier")},
        "willSupplyUUIEs": False, "canMapAlias": False,
    }
    if call_model is not None:
        body["callModel"] = _reason(call_model, CALL_MODELS, "CallModel")
    _opt(body, "destinationInfo", _aliases(destination_aliases))
    if dest_call_signal_address is not None:
        body["destCallSignalAddress"] = _ta(dest_call_signal_address)
    if src_call_signal_address is not None:
        body["srcCallSignalAddress"] = _ta(src_call_signal_address)
    _opt(body, "gatekeeperIdentifier", gatekeeper_identifier)
    return _encode("admissionRequest", body)


def build_acf(seq: int, bandwidth: int, dest_call_signal_address: Address, *, call_model: str = "direct",
              destination_aliases: Sequence[Alias] = ()) -> bytes:
    body: dict[str, Any] = {
        "requestSeqNum": _seq(seq), "bandWidth": bandwidth,
        "callModel": _reason(call_model, CALL_MODELS, "CallModel"),
        "destCallSignalAddress": _ta(dest_call_signal_address),
        "willRespondToIRR": False,
        "uuiesRequested": {k: False for k in ("setup", "callProceeding", "connect", "alerting", "information",
                                              "releaseComplete", "facility", "progress", "empty")},
    }
    _opt(body, "destinationInfo", _aliases(destination_aliases))
    return _encode("admissionConfirm", body)


def build_arj(seq: int, reason: str = "undefinedReason") -> bytes:
    return _encode("admissionReject", {"requestSeqNum": _seq(seq),
                                       "rejectReason": _reason(reason, ARJ_REASONS, "AdmissionRejectReason")})


# -- bandwidth
def build_brq(seq: int, endpoint_identifier: str, conference_id: bytes, call_ref: int, bandwidth: int,
              call_identifier: bytes, *, answered_call: bool = False) -> bytes:
    return _encode("bandwidthRequest", {
        "requestSeqNum": _seq(seq), "endpointIdentifier": endpoint_identifier,
        "conferenceID": _guid(conference_id, "conferenceID"), "callReferenceValue": call_ref,
        "bandWidth": bandwidth, "callIdentifier": {"guid": _guid(call_identifier, "callIdentifier")},
        "answeredCall": answered_call})


def build_bcf(seq: int, bandwidth: int) -> bytes:
    return _encode("bandwidthConfirm", {"requestSeqNum": _seq(seq), "bandWidth": bandwidth})


def build_brj(seq: int, reason: str, allowed_bandwidth: int) -> bytes:
    return _encode("bandwidthReject", {"requestSeqNum": _seq(seq),
                                       "rejectReason": _reason(reason, BRJ_REASONS, "BandRejectReason"),
                                       "allowedBandWidth": allowed_bandwidth})


# -- disengage
def build_drq(seq: int, endpoint_identifier: str, conference_id: bytes, call_ref: int, call_identifier: bytes, *,
              reason: str = "normalDrop", answered_call: bool = False,
              gatekeeper_identifier: str | None = None) -> bytes:
    body: dict[str, Any] = {
        "requestSeqNum": _seq(seq), "endpointIdentifier": endpoint_identifier,
        "conferenceID": _guid(conference_id, "conferenceID"), "callReferenceValue": call_ref,
        "disengageReason": _reason(reason, DISENGAGE_REASONS, "DisengageReason"),
        "callIdentifier": {"guid": _guid(call_identifier, "callIdentifier")}, "answeredCall": answered_call}
    _opt(body, "gatekeeperIdentifier", gatekeeper_identifier)
    return _encode("disengageRequest", body)


def build_dcf(seq: int) -> bytes:
    return _encode("disengageConfirm", {"requestSeqNum": _seq(seq)})


def build_drj(seq: int, reason: str = "notRegistered") -> bytes:
    return _encode("disengageReject", {"requestSeqNum": _seq(seq),
                                       "rejectReason": _reason(reason, DRJ_REASONS, "DisengageRejectReason")})


# -- location
def build_lrq(seq: int, destination_aliases: Sequence[Alias], reply_address: Address, *,
              endpoint_identifier: str | None = None, source_aliases: Sequence[Alias] = (),
              gatekeeper_identifier: str | None = None) -> bytes:
    if not destination_aliases:
        raise RasError("encode", "an LRQ needs at least one destination alias")
    body: dict[str, Any] = {"requestSeqNum": _seq(seq), "destinationInfo": _aliases(destination_aliases),
                            "replyAddress": _ta(reply_address), "canMapAlias": False}
    _opt(body, "endpointIdentifier", endpoint_identifier)
    _opt(body, "sourceInfo", _aliases(source_aliases))
    _opt(body, "gatekeeperIdentifier", gatekeeper_identifier)
    return _encode("locationRequest", body)


def build_lcf(seq: int, call_signal_address: Address, ras_address: Address, *,
              destination_aliases: Sequence[Alias] = ()) -> bytes:
    body: dict[str, Any] = {"requestSeqNum": _seq(seq), "callSignalAddress": _ta(call_signal_address),
                            "rasAddress": _ta(ras_address)}
    _opt(body, "destinationInfo", _aliases(destination_aliases))
    return _encode("locationConfirm", body)


def build_lrj(seq: int, reason: str = "requestDenied") -> bytes:
    return _encode("locationReject", {"requestSeqNum": _seq(seq),
                                      "rejectReason": _reason(reason, LRJ_REASONS, "LocationRejectReason")})


# -- status
def build_irq(seq: int, call_ref: int = 0, *, call_identifier: bytes | None = None,
              reply_address: Address | None = None) -> bytes:
    """IRQ; ``call_ref=0`` asks about all calls."""
    body: dict[str, Any] = {"requestSeqNum": _seq(seq), "callReferenceValue": call_ref}
    if reply_address is not None:
        body["replyAddress"] = _ta(reply_address)
    if call_identifier is not None:
        body["callIdentifier"] = {"guid": _guid(call_identifier, "callIdentifier")}
    return _encode("infoRequest", body)


def build_irr(seq: int, endpoint_identifier: str, ras_address: Address, call_signal_addresses: Sequence[Address],
              *, endpoint_kind: str = "terminal", aliases: Sequence[Alias] = (), need_response: bool = False,
              unsolicited: bool = False) -> bytes:
    body: dict[str, Any] = {"requestSeqNum": _seq(seq), "endpointType": _endpoint_type(endpoint_kind),
                            "endpointIdentifier": endpoint_identifier, "rasAddress": _ta(ras_address),
                            "callSignalAddress": [_ta(a) for a in call_signal_addresses],
                            "needResponse": need_response, "unsolicited": unsolicited}
    _opt(body, "endpointAlias", _aliases(aliases))
    return _encode("infoRequestResponse", body)


