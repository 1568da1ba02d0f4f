"""Q.931 messages as H.225.0 call signalling uses them, and the H.225.0 builders.

Wire format (Q.931 §4, H.225.0 §7): protocol discriminator ``0x08``, call
reference length (2 in H.225.0) and value whose top bit is the *flag* (set in
messages sent **to** the side that allocated the call reference), message
type, then information elements.  Variable IEs are ``id, length, contents``;
the User-user IE (``0x7e``) carries a **two-octet** length (H.225.0 §7.2.2.1)
and contents ``0x05`` (X.208/X.209 coded user information) + the PER-encoded
``H323-UserInformation``.  Single-octet IEs (top bit set: shift, sending
complete, ...) are kept as they are.  Unknown IEs are kept (identifier + raw
contents) and re-encoded unchanged.

:class:`Q931Message` keeps IEs raw; typed views (:class:`Cause`,
:class:`PartyNumber`, :class:`BearerCapability`, :class:`ProgressIndicator`)
parse and build them.  Builders (``build_setup`` ...) return a
:class:`Q931Message` whose ``encode()`` gives the bytes to put in a TPKT.
"""
from __future__ import annotations

import struct
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import gateway

from . import asn1
from .asn1 import Asn1Error

__all__ = [
    "BearerCapability",
    "CAU_VENDOR",
    "Cause",
    "IE",
    "InformationElement",
    "MessageType",
    "PROTOCOL_DISCRIMINATOR",
    "PartyNumber",
    "ProgressIndicator",
    "Q850_CAUSES",
    "Q931Error",
    "Q931Message",
    "RELEASE_REASON_TO_CAUSE",
    "build_alerting",
    "build_call_proceeding",
    "build_connect",
    "build_facility",
    "build_information",
    "build_progress",
    "build_release_complete",
    "build_setup",
    "build_status",
    "build_status_enquiry",
    "cause_name",
    "cause_to_release_reason",
    "cause_to_sip",
    "decode",
    "ia5_text",
    "release_reason_to_cause",
    "sip_to_cause",
    "vendor_identifier",
]

PROTOCOL_DISCRIMINATOR = 0x08      # Q.931 user-network call control messages
UU_PROTOCOL_X208 = 0x05            # user-user IE: X.208/X.209 coded user information (H.225.0)
MAX_DISPLAY = 82                   # octets of Display IE contents (Q.931 §4.5.16, max length)


class Q931Error(Exception):
    """A Q.931 message could not be decoded (or a builder was given impossible values)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"Q.931: {reason}")


class MessageType(IntEnum):
    """Q.931 message types used by H.225.0 (Table 4-2 of Q.931)."""

    ALERTING = 0x01
    CALL_PROCEEDING = 0x02
    PROGRESS = 0x03
    SETUP = 0x05
    CONNECT = 0x07
    SETUP_ACKNOWLEDGE = 0x0D
    CONNECT_ACKNOWLEDGE = 0x0F
    USER_INFORMATION = 0x20
    RELEASE_COMPLETE = 0x5A
    FACILITY = 0x62
    NOTIFY = 0x6E
    STATUS_ENQUIRY = 0x75
    INFORMATION = 0x7B
    STATUS = 0x7D


class IE(IntEnum):
    """Codeset 0 information element identifiers H.225.0 uses."""

    SENDING_COMPLETE = 0xA1        # single octet
    BEARER_CAPABILITY = 0x04
    CAUSE = 0x08
    CALL_STATE = 0x14
    FACILITY = 0x1C
    PROGRESS_INDICATOR = 0x1E
    NOTIFICATION_INDICATOR = 0x27
    DISPLAY = 0x28
    KEYPAD = 0x2C
    SIGNAL = 0x34
    CALLING_PARTY_NUMBER = 0x6C
    CALLED_PARTY_NUMBER = 0x70
    REDIRECTING_NUMBER = 0x74
    USER_USER = 0x7E


# Q.850 Table 1: cause values and names.
Q850_CAUSES: dict[int, str] = {
    1: "Unallocated (unassigned) number",
    2: "No route to specified transit network",
    3: "No route to destination",
    4: "Send special information tone",
    5: "Misdialled trunk prefix",
    6: "Channel unacceptable",
    7: "Call awarded and being delivered in an established channel",
    8: "Preemption",
    9: "Preemption - circuit reserved for reuse",
    16: "Normal call clearing",
    17: "User busy",
    18: "No user responding",
    19: "No answer from user (user alerted)",
    20: "Subscriber absent",
    21: "Call rejected",
    22: "Number changed",
    23: "Redirection to new destination",
    25: "Exchange routing error",
    26: "Non-selected user clearing",
    27: "Destination out of order",
    28: "Invalid number format (address incomplete)",
    29: "Facility rejected",
    30: "Response to STATUS ENQUIRY",
    31: "Normal, unspecified",
    34: "No circuit/channel available",
    38: "Network out of order",
    39: "Permanent frame mode connection out of service",
    40: "Permanent frame mode connection operational",
    41: "Temporary failure",
    42: "Switching equipment congestion",
    43: "Access information discarded",
    44: "Requested circuit/channel not available",
    46: "Precedence call blocked",
    47: "Resource unavailable, unspecified",
    49: "Quality of Service not available",
    50: "Requested facility not subscribed",
    53: "Outgoing calls barred within CUG",
    55: "Incoming calls barred within CUG",
    57: "Bearer capability not authorized",
    58: "Bearer capability not presently available",
    62: "Inconsistency in designated outgoing access information and subscriber class",
    63: "Service or option not available, unspecified",
    65: "Bearer capability not implemented",
    66: "Channel type not implemented",
    69: "Requested facility not implemented",
    70: "Only restricted digital information bearer capability is available",
    79: "Service or option not implemented, unspecified",
    81: "Invalid call reference value",
    82: "Identified channel does not exist",
    83: "A suspended call exists, but this call identity does not",
    84: "Call identity in use",
    85: "No call suspended",
    86: "Call having the requested call identity has been cleared",
    87: "User not member of CUG",
    88: "Incompatible destination",
    90: "Non-existent CUG",
    91: "Invalid transit network selection",
    95: "Invalid message, unspecified",
    96: "Mandatory information element is missing",
    97: "Message type non-existent or not implemented",
    98: "Message not compatible with call state or message type non-existent or not implemented",
    99: "Information element/parameter non-existent or not implemented",
    100: "Invalid information element contents",
    101: "Message not compatible with call state",
    102: "Recovery on timer expiry",
    103: "Parameter non-existent or not implemented, passed on",
    110: "Message with unrecognized parameter, discarded",
    111: "Protocol error, unspecified",
    127: "Interworking, unspecified",
}


def cause_name(value: int) -> str:
    return Q850_CAUSES.get(value, f"cause {value}")


# RFC 3398 §7.2.4.1: ISUP (Q.850) cause -> SIP final response.  Deviation: 88
# (incompatible destination) maps to 488, not 503: H.323 endpoints send it when
# no media capability matches, which is what 488 means (Asterisk and
# FreeSWITCH do the same).  16 (normal clearing) is not an error: None.
_CAUSE_TO_SIP: dict[int, int] = {
    1: 404, 2: 404, 3: 404, 17: 486, 18: 408, 19: 480, 20: 480, 21: 403, 22: 410, 23: 410,
    26: 404, 27: 502, 28: 484, 29: 501, 31: 480, 34: 503, 38: 503, 41: 503, 42: 503, 47: 503,
    55: 403, 57: 403, 58: 503, 65: 488, 70: 488, 79: 501, 87: 403, 88: 488, 102: 504,
    111: 500, 127: 500,
}

# RFC 3398 §8.2.6.1: SIP final response -> ISUP (Q.850) cause.  488 and 606 are
# left to the Warning header by the RFC; here they map to 88.
_SIP_TO_CAUSE: dict[int, int] = {
    400: 41, 401: 21, 402: 21, 403: 21, 404: 1, 405: 63, 406: 79, 407: 21, 408: 102, 410: 22,
    413: 127, 414: 127, 415: 79, 416: 127, 420: 127, 421: 127, 423: 127, 480: 18, 481: 41,
    482: 25, 483: 25, 484: 28, 485: 1, 486: 17, 487: 16, 488: 88, 500: 41, 501: 79, 502: 38,
    503: 41, 504: 102, 505: 127, 513: 127, 600: 17, 603: 21, 604: 1, 606: 88,
}


def cause_to_sip(cause: int) -> int | None:
    """SIP status for a Q.850 cause (RFC 3398 §7.2.4.1); None for 16 (normal clearing).

    Causes the RFC does not list map by class: 1-31 → 480, 32-47 → 503,
    48-63 → 503, 64-79 → 501, other → 500.
    """
    if cause == 16:
        return None
    if cause in _CAUSE_TO_SIP:
        return _CAUSE_TO_SIP[cause]
    if cause <= 31:
        return 480
    if cause <= 63:
        return 503
    if cause <= 79:
        return 501
    return 500


def sip_to_cause(status: int) -> int:
    """Q.850 cause for a SIP final response (RFC 3398 §8.2.6.1); unknown → class default."""
    if status in _SIP_TO_CAUSE:
        return _SIP_TO_CAUSE[status]
    if 400 <= status < 500:
        return 21 if status in (401, 407) else 127
    if 500 <= status < 600:
        return 41
    if 600 <= status < 700:
        return 21
    return 127


# H.225.0 Table 5 (ReleaseCompleteReason ↔ Q.931/Q.850 cause).
RELEASE_REASON_TO_CAUSE: dict[str, int] = {
    "noBandwidth": 34,
    "gatekeeperResources": 47,
    "unreachableDestination": 3,
    "destinationRejection": 16,
    "invalidRevision": 88,
    "noPermission": 111,
    "unreachableGatekeeper": 38,
    "gatewayResources": 42,
    "badFormatAddress": 28,
    "adaptiveBusy": 41,
    "inConf": 17,
    "undefinedReason": 31,
    "facilityCallDeflection": 16,
    "securityDenied": 31,
    "calledPartyNotRegistered": 20,
    "callerNotRegistered": 31,
    "newConnectionNeeded": 47,
    "nonStandardReason": 127,
    "replaceWithConferenceInvite": 31,
    "genericDataReason": 31,
    "neededFeatureNotSupported": 31,
    "tunnelledSignallingRejected": 127,
    "invalidCID": 16,
    "securityError": 31,
    "hopCountExceeded": 25,
}
# Cause → the reason an H.323 endpoint understands best (inverse of Table 5, one choice each).
_CAUSE_TO_REASON: dict[int, str] = {
    34: "noBandwidth", 47: "gatekeeperResources", 3: "unreachableDestination", 1: "unreachableDestination",
    2: "unreachableDestination", 16: "destinationRejection", 21: "destinationRejection", 88: "invalidRevision",
    111: "noPermission", 38: "unreachableGatekeeper", 42: "gatewayResources", 28: "badFormatAddress",
    41: "adaptiveBusy", 17: "inConf", 20: "calledPartyNotRegistered", 25: "hopCountExceeded",
    127: "undefinedReason", 31: "undefinedReason",
}


def release_reason_to_cause(reason: str) -> int:
    """Q.850 cause for an H.225.0 ReleaseCompleteReason (H.225.0 Table 5); unknown → 31."""
    return RELEASE_REASON_TO_CAUSE.get(reason, 31)


def cause_to_release_reason(cause: int) -> str:
    """ReleaseCompleteReason for a Q.850 cause; causes without one → ``undefinedReason``."""
    return _CAUSE_TO_REASON.get(cause, "undefinedReason")


# --------------------------------------------------------------------------- IEs


@dataclass
class InformationElement:
    """One IE, kept raw.  ``identifier`` ≥ 0x80 is a single-octet IE (no contents)."""

    identifier: int
    contents: bytes = b""
    codeset: int = 0  # active codeset when it was decoded (after a locking shift)

    @property
    def single_octet(self) -> bool:
        return self.identifier & 0x80 != 0

    def encode(self) -> bytes:
        if self.single_octet:
            if self.contents:
                raise Q931Error(f"single-octet IE 0x{self.identifier:02x} cannot have contents")
            return bytes([self.identifier])
        n = len(self.contents)
        if self.identifier == IE.USER_USER and self.codeset == 0:
            if n > 0xFFFF:
                raise Q931Error(f"user-user IE of {n} bytes is too long")
            return struct.pack("!BH", self.identifier, n) + self.contents
        if n > 0xFF:
            raise Q931Error(f"IE 0x{self.identifier:02x} of {n} bytes is longer than 255")
        return bytes([self.identifier, n]) + self.contents

    def __repr__(self) -> str:
        try:
            name = IE(self.identifier).name if self.codeset == 0 else f"0x{self.identifier:02x}"
        except ValueError:
            name = f"0x{self.identifier:02x}"
        return f"IE({name}, {self.contents.hex()})" if self.contents else f"IE({name})"


@dataclass(frozen=True)
class Cause:
    """Cause IE (Q.931 §4.5.12, Q.850 §2): location and cause value."""

    value: int
    location: int = 0            # 0 user, 1 private net local, 2 public net local, 3 transit, 4 public remote, ...
    coding_standard: int = 0     # 0 ITU-T
    diagnostics: bytes = b""

    @property
    def name(self) -> str:
        return cause_name(self.value)

    def to_ie(self) -> InformationElement:
        if not 0 <= self.value <= 127 or not 0 <= self.location <= 15:
            raise Q931Error(f"cause {self.value} / location {self.location} out of range")
        body = bytes([0x80 | (self.coding_standard & 3) << 5 | self.location, 0x80 | self.value])
        return InformationElement(IE.CAUSE, body + self.diagnostics)

    @classmethod
    def from_ie(cls, ie: InformationElement) -> Cause:
        c = ie.contents
        if len(c) < 2:
            raise Q931Error(f"cause IE of {len(c)} octets, at least 2 needed")
        pos = 1
        if not c[0] & 0x80:      # octet 3a (recommendation) present
            pos = 2
            if len(c) < 3:
                raise Q931Error("cause IE: octet 3a announced but no cause value")
        return cls(value=c[pos] & 0x7F, location=c[0] & 0x0F, coding_standard=(c[0] >> 5) & 3,
                   diagnostics=bytes(c[pos + 1:]))


@dataclass(frozen=True)
class PartyNumber:
    """Called / calling party number IE (Q.931 §4.5.8, §4.5.10).

    ``type_of_number``: 0 unknown, 1 international, 2 national, 4 subscriber;
    ``numbering_plan``: 0 unknown, 1 ISDN/telephony E.164, 9 private.
    ``presentation``/``screening`` (calling number octet 3a) are None when absent.
    """

    digits: str
    type_of_number: int = 0
    numbering_plan: int = 1
    presentation: int | None = None
    screening: int | None = None

    def to_ie(self, identifier: int) -> InformationElement:
        if not self.digits.isascii():
            raise Q931Error(f"party number {self.digits!r} must be IA5 (ASCII)")
        o3 = (self.type_of_number & 7) << 4 | (self.numbering_plan & 0x0F)
        if self.presentation is not None or self.screening is not None:
            head = bytes([o3, 0x80 | ((self.presentation or 0) & 3) << 5 | ((self.screening or 0) & 3)])
        else:
            head = bytes([0x80 | o3])
        return InformationElement(identifier, head + self.digits.encode("ascii"))

    @classmethod
    def from_ie(cls, ie: InformationElement) -> PartyNumber:
        c = ie.contents
        if not c:
            raise Q931Error("party number IE is empty")
        pos, pres, scr = 1, None, None
        if not c[0] & 0x80:
            if len(c) < 2:
                raise Q931Error("party number IE: octet 3a announced but missing")
            pres, scr, pos = (c[1] >> 5) & 3, c[1] & 3, 2
        return cls(digits=c[pos:].decode("ascii", "replace"), type_of_number=(c[0] >> 4) & 7,
                   numbering_plan=c[0] & 0x0F, presentation=pres, screening=scr)


@dataclass(frozen=True)
class BearerCapability:
    """Bearer capability IE (Q.931 §4.5.5), the subset H.323 endpoints send.

    ``transfer_capability``: 0x00 speech, 0x08 unrestricted digital information,
    0x10 3.1 kHz audio, 0x18 video.  ``transfer_rate``: 0x10 64 kbit/s,
    0x11 2×64, 0x13 384, 0x15 1536, 0x17 1920, 0x18 multirate (then
    ``rate_multiplier`` × 64 kbit/s).  ``layer1``: 0x02 G.711 µ-law,
    0x03 G.711 A-law, 0x05 H.221/H.242, None: octet 5 absent.
    """

    transfer_capability: int = 0x08
    transfer_rate: int = 0x10
    rate_multiplier: int | None = None
    layer1: int | None = 0x05

    @classmethod
    def unrestricted_digital(cls, kbps: int = 64) -> BearerCapability:
        """What H.323 video endpoints send: unrestricted digital, H.221, multirate above 64k."""
        if kbps <= 64:
            return cls(0x08, 0x10, None, 0x05)
        return cls(0x08, 0x18, max(1, min(127, kbps // 64)), 0x05)

    @classmethod
    def speech(cls, a_law: bool = False) -> BearerCapability:
        """What voice-only H.323 endpoints and gateways send: speech, 64 kbit/s, G.711."""
        return cls(0x00, 0x10, None, 0x03 if a_law else 0x02)

    def to_ie(self) -> InformationElement:
        body = bytearray([0x80 | (self.transfer_capability & 0x1F), 0x80 | (self.transfer_rate & 0x1F)])
        if self.transfer_rate == 0x18:
            body.append(0x80 | ((self.rate_multiplier or 1) & 0x7F))
        if self.layer1 is not None:
            body.append(0x80 | 0x20 | (self.layer1 & 0x1F))
        return InformationElement(IE.BEARER_CAPABILITY, bytes(body))

    @classmethod
    def from_ie(cls, ie: InformationElement) -> BearerCapability:
        c = ie.contents
        if len(c) < 2:
            raise Q931Error(f"bearer capability IE of {len(c)} octets, at least 2 needed")
        pos = 1
        while pos < len(c) and not c[pos - 1] & 0x80:   # octet 3 extensions
            pos += 1
        if pos >= len(c):
            raise Q931Error("bearer capability IE: octet 4 missing")
        rate = c[pos] & 0x1F
        pos += 1
        mult = None
        if rate == 0x18:
            if pos >= len(c):
                raise Q931Error("bearer capability IE: multirate without rate multiplier")
            mult = c[pos] & 0x7F
            pos += 1
        layer1 = None
        if pos < len(c) and (c[pos] >> 5) & 3 == 1:
            layer1 = c[pos] & 0x1F
        return cls(c[0] & 0x1F, rate, mult, layer1)


@dataclass(frozen=True)
class ProgressIndicator:
    """Progress indicator IE (Q.931 §4.5.23): 1 not end-to-end ISDN, 2 destination
    non-ISDN, 3 origination non-ISDN, 8 in-band information now available."""

    description: int
    location: int = 0

    def to_ie(self) -> InformationElement:
        return InformationElement(IE.PROGRESS_INDICATOR,
                                  bytes([0x80 | self.location & 0x0F, 0x80 | self.description & 0x7F]))

    @classmethod
    def from_ie(cls, ie: InformationElement) -> ProgressIndicator:
        if len(ie.contents) < 2:
            raise Q931Error("progress indicator IE needs 2 octets")
        return cls(ie.contents[1] & 0x7F, ie.contents[0] & 0x0F)


# --------------------------------------------------------------------------- message


@dataclass
class Q931Message:
    """A Q.931 message.  ``from_destination`` is the call reference flag: True in
    messages sent by the side that did *not* allocate the call reference."""

    message_type: int
    call_reference: int
    from_destination: bool = False
    ies: list[InformationElement] = field(default_factory=list)
    call_reference_length: int = 2

    # ---- IE access
    def ie(self, identifier: int) -> InformationElement | None:
        for e in self.ies:
            if e.identifier == identifier and e.codeset == 0:
                return e
        return None

    def set_ie(self, element: InformationElement) -> None:
        """Replace the IE of that identifier or insert it keeping ascending order (Q.931 §4.5.1)."""
        for i, e in enumerate(self.ies):
            if e.identifier == element.identifier and e.codeset == 0:
                self.ies[i] = element
                return
        for i, e in enumerate(self.ies):
            if e.codeset == 0 and not e.single_octet and e.identifier > element.identifier:
                self.ies.insert(i, element)
                return
        self.ies.append(element)

    @property
    def type_name(self) -> str:
        try:
            return MessageType(self.message_type).name
        except ValueError:
            return f"0x{self.message_type:02x}"

    @property
    def user_user(self) -> dict[str, Any] | None:
        """The decoded H323-UserInformation, None when there is no user-user IE.

        :class:`Q931Error` if the IE is not X.208-coded or its PER is malformed.
        """
        e = self.ie(IE.USER_USER)
        if e is None:
            return None
        if not e.contents or e.contents[0] != UU_PROTOCOL_X208:
            pd = e.contents[0] if e.contents else None
            raise Q931Error(f"user-user IE protocol discriminator {pd!r}, expected 5 (X.208)")
        try:
            return asn1.decode_uuie(e.contents[1:])
        except Asn1Error as exc:
            raise Q931Error(f"user-user IE: {exc.reason}") from None

    @property
    def h323_body(self) -> tuple[str, Any] | None:
        """``(choice, value)`` of h323-message-body, e.g. ``("setup", {...})``."""
        uu = self.user_user
        return None if uu is None else uu["h323-uu-pdu"]["h323-message-body"]

    @property
    def cause(self) -> Cause | None:
        e = self.ie(IE.CAUSE)
        return None if e is None else Cause.from_ie(e)

    @property
    def display(self) -> str | None:
        e = self.ie(IE.DISPLAY)
        if e is None:
            return None
        try:
            return e.contents.decode("utf-8")
        except UnicodeDecodeError:
            return e.contents.decode("latin-1")

    @property
    def called_number(self) -> PartyNumber | None:
        e = self.ie(IE.CALLED_PARTY_NUMBER)
        return None if e is None else PartyNumber.from_ie(e)

    @property
    def calling_number(self) -> PartyNumber | None:
        e = self.ie(IE.CALLING_PARTY_NUMBER)
        return None if e is None else PartyNumber.from_ie(e)

    @property
    def bearer_capability(self) -> BearerCapability | None:
        e = self.ie(IE.BEARER_CAPABILITY)
        return None if e is None else BearerCapability.from_ie(e)

    @property
    def progress_indicator(self) -> ProgressIndicator | None:
        e = self.ie(IE.PROGRESS_INDICATOR)
        return None if e is None else ProgressIndicator.from_ie(e)

    @property
    def call_state(self) -> int | None:
        e = self.ie(IE.CALL_STATE)
        return None if e is None or not e.contents else e.contents[0] & 0x3F

    @property
    def keypad(self) -> str | None:
        e = self.ie(IE.KEYPAD)
        return None if e is None else e.contents.decode("ascii", "replace")

    @property
    def signal(self) -> int | None:
        e = self.ie(IE.SIGNAL)
        return None if e is None or not e.contents else e.contents[0]

    # ---- wire
    def encode(self) -> bytes:
        n = self.call_reference_length
        if n not in (0, 1, 2):
            raise Q931Error(f"call reference length {n} is not 0, 1 or 2")
        if n and not 0 <= self.call_reference < (1 << (8 * n - 1)):
            raise Q931Error(f"call reference {self.call_reference} does not fit in {n} octets")
        out = bytearray([PROTOCOL_DISCRIMINATOR, n])
        if n:
            cr = self.call_reference | ((1 << (8 * n - 1)) if self.from_destination else 0)
            out += cr.to_bytes(n, "big")
        if not 0 <= self.message_type <= 0x7F:
            raise Q931Error(f"message type 0x{self.message_type:x} out of range")
        out.append(self.message_type)
        for e in self.ies:
            out += e.encode()
        return bytes(out)


def decode(data: bytes) -> Q931Message:
    """Parse a Q.931 message (a TPKT payload).  :class:`Q931Error` on malformed input."""
    data = bytes(data)
    if len(data) < 3:
        raise Q931Error(f"message of {len(data)} octets is too short")
    if data[0] != PROTOCOL_DISCRIMINATOR:
        raise Q931Error(f"protocol discriminator 0x{data[0]:02x}, expected 0x08")
    crl = data[1] & 0x0F
    if data[1] & 0xF0 or crl > 2:
        raise Q931Error(f"call reference length octet 0x{data[1]:02x} (at most 2 supported)")
    if len(data) < 2 + crl:
        raise Q931Error("message ends inside the call reference")
    if len(data) < 3 + crl:
        raise Q931Error("message ends before the message type")
    cr_raw = int.from_bytes(data[2:2 + crl], "big") if crl else 0
    flag = bool(crl and cr_raw >> (8 * crl - 1))
    cr = cr_raw & ((1 << (8 * crl - 1)) - 1) if crl else 0
    pos = 2 + crl
    mtype = data[pos]
    if mtype & 0x80:
        raise Q931Error(f"message type octet 0x{mtype:02x} has bit 8 set")
    pos += 1
    ies: list[InformationElement] = []
    codeset = locked = 0
    while pos < len(data):
        ident = data[pos]
        if ident & 0x80:                         # single-octet IE
            ies.append(InformationElement(ident, b"", codeset))
            pos += 1
            if ident & 0xF0 == 0x90:             # shift: bit 4 = non-locking
                new = ident & 0x07
                if ident & 0x08:
                    codeset = new                # applies to the next IE only
                    continue
                locked = codeset = new
                continue
            codeset = locked
            continue
        if ident == IE.USER_USER and codeset == 0:
            if pos + 3 > len(data):
                raise Q931Error("user-user IE length runs past the end")
            n = struct.unpack_from("!H", data, pos + 1)[0]
            start = pos + 3
        else:
            if pos + 2 > len(data):
                raise Q931Error(f"IE 0x{ident:02x} length runs past the end")
            n = data[pos + 1]
            start = pos + 2
        if start + n > len(data):
            raise Q931Error(f"IE 0x{ident:02x} of length {n} runs past the end "
                            f"({len(data) - start} octets left)")
        ies.append(InformationElement(ident, data[start:start + n], codeset))
        pos = start + n
        codeset = locked
    return Q931Message(mtype, cr, flag, ies, crl)


# --------------------------------------------------------------------------- H.225.0 builders

# Cầu's H.221 non-standard vendor identity.  T.35 country code 0xBC is Viet Nam
# (T.35 Annex A); manufacturer code 0 is NOT a registered code: it only marks
# "Cầu, unregistered".  Deployments with a registered code should change it.
CAU_T35_COUNTRY = 0xBC
CAU_T35_EXTENSION = 0
CAU_MANUFACTURER = 0
CAU_VENDOR: dict[str, int] = {"t35CountryCode": CAU_T35_COUNTRY, "t35Extension": CAU_T35_EXTENSION,
                              "manufacturerCode": CAU_MANUFACTURER}

Address = tuple[str, int]
Alias = tuple[str, str]


def vendor_identifier() -> dict[str, Any]:
    """H.225.0 VendorIdentifier: the T.35 identity above, productId "Cau", versionId."""
    return {"vendor": dict(CAU_VENDOR), "productId": b"Cau", "versionId": gateway.__version__.encode()}


def vendor_text(v: dict[str, Any]) -> str:
    """A VendorIdentifier (an EndpointType's ``vendor``) for people: product, version and the
    T.35 country and manufacturer codes (H.225.0 §7.6; what a Polycom or Tandberg calls itself)."""
    def text(raw: Any) -> str:
        if isinstance(raw, (bytes, bytearray)):
            raw = bytes(raw).decode("latin-1", "replace")
        return "".join(c for c in str(raw or "") if c.isprintable()).strip("\x00 ")[:64]

    t35 = v.get("vendor") if isinstance(v.get("vendor"), dict) else {}
    product, version = text(v.get("productId")), text(v.get("versionId"))
    codes = (f"T.35 country 0x{int(t35.get('t35CountryCode', 0)):02X}, "
             f"manufacturer {int(t35.get('manufacturerCode', 0))}") if t35 else ""
    return ", ".join(x for x in (" ".join(y for y in (product, version) if y), codes) if x)


def endpoint_type(kind: str = "terminal") -> dict[str, Any]:
    """EndpointType with our vendor; ``kind`` is terminal, gateway or mcu."""
    if kind not in ("terminal", "gateway", "mcu"):
        raise Q931Error(f"endpoint kind {kind!r} is not terminal, gateway or mcu")
    return {"vendor": vendor_identifier(), kind: {}, "mc": kind == "mcu", "undefinedNode": False}


def _guid(value: bytes, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != 16:
        raise Q931Error(f"{what} must be 16 bytes, got {value!r}")
    return bytes(value)


def _ta(addr: Address) -> Any:
    try:
        return asn1.transport_address(*addr)
    except Asn1Error as exc:
        raise Q931Error(exc.reason) from None


def _aliases(aliases: Iterable[Alias]) -> list[Any]:
    try:
        return [asn1.alias_address(a) for a in aliases]
    except Asn1Error as exc:
        raise Q931Error(exc.reason) from None


def ia5_text(text: str) -> str:
    """``text`` folded to IA5 (ASCII) for Q.931 Display/Keypad: Vietnamese "Cầu Đà" → "Cau Da"."""
    text = text.replace("\u0111", "d").replace("\u0110", "D")
    nfkd = unicodedata.normalize("NFKD", text)
    return "".join(c for c in nfkd if c.isascii() and c.isprintable() and not unicodedata.combining(c))


def _display_ie(text: str) -> InformationElement | None:
    """Display IE (Q.931 §4.5.16): IA5 characters, at most 82 octets; None if nothing is left."""
    raw = ia5_text(text).encode("ascii")[:MAX_DISPLAY]
    return InformationElement(IE.DISPLAY, raw) if raw else None


def _user_user(body: tuple[str, Any], *, h245_tunnelling: bool | None, h245_control: Sequence[bytes] = ()
               ) -> InformationElement:
    pdu: dict[str, Any] = {"h323-message-body": body}
    if h245_tunnelling is not None:
        pdu["h245Tunnelling"] = h245_tunnelling
    if h245_control:
        pdu["h245Control"] = [bytes(m) for m in h245_control]
    try:
        per = asn1.encode_uuie({"h323-uu-pdu": pdu})
    except Asn1Error as exc:
        raise Q931Error(f"cannot encode {body[0]}: {exc.reason}") from None
    return InformationElement(IE.USER_USER, bytes([UU_PROTOCOL_X208]) + per)


def _message(mtype: MessageType, call_ref: int, from_destination: bool, ies: list[InformationElement]
             ) -> Q931Message:
    ies = sorted(ies, key=lambda e: e.identifier)   # codeset 0 IEs in ascending order
    return Q931Message(int(mtype), call_ref, from_destination, ies)


def _common_ies(display: str | None) -> list[InformationElement]:
    ie = _display_ie(display) if display else None
    return [ie] if ie is not None else []


def build_setup(call_ref: int, conference_id: bytes, call_identifier: bytes,
                source_aliases: Sequence[Alias], destination_aliases: Sequence[Alias],
                dest_address: Address | None, src_call_signal_address: Address | None,
                fast_start: Sequence[bytes] | None, h245_tunnelling: bool,
                h245_address: Address | None = None, h245_control: Sequence[bytes] = (), *,
                display: str | None = None, bearer: BearerCapability | None = None,
                endpoint_kind: str = "terminal", media_wait_for_connect: bool = False,
                can_overlap_send: bool = False, calling_number: str | None = None,
                called_number: str | None = None, endpoint_identifier: str | None = None,
                create_conference: bool = True, tokens: Sequence[dict[str, Any]] | None = None) -> Q931Message:
    """SETUP (H.225.0 §7.3.1) with Setup-UUIE.

    ``fast_start``: PER-encoded OpenLogicalChannel proposals (None: no fastStart).
    ``h245_control``: PER-encoded H.245 messages tunnelled in this SETUP.
    Called/calling party numbers default to the first ``dialledDigits`` alias.
    """
    body: dict[str, Any] = {
        "protocolIdentifier": asn1.H225_PROTOCOL_ID,
        "sourceInfo": endpoint_type(endpoint_kind),
        "activeMC": False,
        "conferenceID": _guid(conference_id, "conferenceID"),
        "conferenceGoal": ("create" if create_conference else "join", 0),
        "callType": ("pointToPoint", 0),
        "callIdentifier": {"guid": _guid(call_identifier, "callIdentifier")},
        "mediaWaitForConnect": media_wait_for_connect,
        "canOverlapSend": can_overlap_send,
        "multipleCalls": False,
        "maintainConnection": False,
    }
    if h245_address is not None:
        body["h245Address"] = _ta(h245_address)
    if source_aliases:
        body["sourceAddress"] = _aliases(source_aliases)
    if destination_aliases:
        body["destinationAddress"] = _aliases(destination_aliases)
    if dest_address is not None:
        body["destCallSignalAddress"] = _ta(dest_address)
    if src_call_signal_address is not None:
        body["sourceCallSignalAddress"] = _ta(src_call_signal_address)
    if fast_start:
        body["fastStart"] = [bytes(x) for x in fast_start]
    if endpoint_identifier:
        body["endpointIdentifier"] = endpoint_identifier
    if tokens:
        body["tokens"] = list(tokens)            # H.235 ClearTokens (H.235.6 Diffie-Hellman)
    ies = [(bearer or BearerCapability.unrestricted_digital(384)).to_ie()]
    ies += _common_ies(display)
    calling = calling_number or _first_digits(source_aliases)
    called = called_number or _first_digits(destination_aliases)
    if calling:
        ies.append(PartyNumber(calling, 0, 1).to_ie(IE.CALLING_PARTY_NUMBER))
    if called:
        ies.append(PartyNumber(called, 0, 1).to_ie(IE.CALLED_PARTY_NUMBER))
    ies.append(_user_user(("setup", body), h245_tunnelling=h245_tunnelling, h245_control=h245_control))
    return _message(MessageType.SETUP, call_ref, False, ies)


def _first_digits(aliases: Sequence[Alias]) -> str | None:
    for kind, value in aliases:
        if kind in ("dialledDigits", "dialedDigits", "e164"):
            return value
    return None


def _answer_body(call_identifier: bytes, h245_address: Address | None, fast_start: Sequence[bytes] | None,
                 endpoint_kind: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "protocolIdentifier": asn1.H225_PROTOCOL_ID,
        "destinationInfo": endpoint_type(endpoint_kind),
        "callIdentifier": {"guid": _guid(call_identifier, "callIdentifier")},
        "multipleCalls": False,
        "maintainConnection": False,
    }
    if h245_address is not None:
        body["h245Address"] = _ta(h245_address)
    if fast_start:
        body["fastStart"] = [bytes(x) for x in fast_start]
    return body


def build_call_proceeding(call_ref: int, call_identifier: bytes, *, h245_tunnelling: bool = True,
                          h245_address: Address | None = None, fast_start: Sequence[bytes] | None = None,
                          h245_control: Sequence[bytes] = (), endpoint_kind: str = "terminal",
                          display: str | None = None) -> Q931Message:
    """CALL PROCEEDING (sent by the called side: flag set)."""
    body = _answer_body(call_identifier, h245_address, fast_start, endpoint_kind)
    ies = _common_ies(display) + [_user_user(("callProceeding", body), h245_tunnelling=h245_tunnelling,
                                             h245_control=h245_control)]
    return _message(MessageType.CALL_PROCEEDING, call_ref, True, ies)


def build_alerting(call_ref: int, call_identifier: bytes, *, h245_tunnelling: bool = True,
                   h245_address: Address | None = None, fast_start: Sequence[bytes] | None = None,
                   h245_control: Sequence[bytes] = (), endpoint_kind: str = "terminal",
                   display: str | None = None, progress: int | None = None) -> Q931Message:
    """ALERTING; ``progress=8`` adds "in-band information now available" (ringback from media)."""
    body = _answer_body(call_identifier, h245_address, fast_start, endpoint_kind)
    ies = _common_ies(display) + [_user_user(("alerting", body), h245_tunnelling=h245_tunnelling,
                                             h245_control=h245_control)]
    if progress is not None:
        ies.append(ProgressIndicator(progress).to_ie())
    return _message(MessageType.ALERTING, call_ref, True, ies)


def build_progress(call_ref: int, call_identifier: bytes, *, description: int = 8,
                   h245_tunnelling: bool = True, h245_address: Address | None = None,
                   fast_start: Sequence[bytes] | None = None, endpoint_kind: str = "terminal") -> Q931Message:
    """PROGRESS with a progress indicator (default 8: in-band information now available)."""
    body = _answer_body(call_identifier, h245_address, fast_start, endpoint_kind)
    body.pop("multipleCalls")
    body.pop("maintainConnection")
    ies = [ProgressIndicator(description).to_ie(),
           _user_user(("progress", body), h245_tunnelling=h245_tunnelling)]
    return _message(MessageType.PROGRESS, call_ref, True, ies)


def build_connect(call_ref: int, conference_id: bytes, call_identifier: bytes, *,
                  h245_tunnelling: bool = True, h245_address: Address | None = None,
                  fast_start: Sequence[bytes] | None = None, h245_control: Sequence[bytes] = (),
                  endpoint_kind: str = "terminal", display: str | None = None,
                  bearer: BearerCapability | None = None,
                  tokens: Sequence[dict[str, Any]] | None = None) -> Q931Message:
    """CONNECT with Connect-UUIE (conferenceID as in the SETUP; ``tokens``: H.235 ClearTokens)."""
    body = _answer_body(call_identifier, h245_address, fast_start, endpoint_kind)
    body["conferenceID"] = _guid(conference_id, "conferenceID")
    if tokens:
        body["tokens"] = list(tokens)
    ies = [(bearer or BearerCapability.unrestricted_digital(384)).to_ie()] + _common_ies(display)
    ies.append(_user_user(("connect", body), h245_tunnelling=h245_tunnelling, h245_control=h245_control))
    return _message(MessageType.CONNECT, call_ref, True, ies)


def build_release_complete(call_ref: int, call_identifier: bytes, *, from_destination: bool,
                           reason: str | None = None, cause: int | None = None, location: int = 0,
                           h245_tunnelling: bool | None = True, display: str | None = None) -> Q931Message:
    """RELEASE COMPLETE with a Cause IE and ReleaseComplete-UUIE ``reason``.

    Give either ``reason`` (H.225.0 ReleaseCompleteReason) or ``cause`` (Q.850)
    or both; the missing one is derived from H.225.0 Table 5.  Neither: 16
    normal call clearing, reason omitted.
    """
    if reason is None and cause is None:
        cause = 16
    elif cause is None:
        cause = release_reason_to_cause(reason or "undefinedReason")
    body: dict[str, Any] = {"protocolIdentifier": asn1.H225_PROTOCOL_ID,
                            "callIdentifier": {"guid": _guid(call_identifier, "callIdentifier")}}
    if reason is not None:
        if reason not in RELEASE_REASON_TO_CAUSE or reason in ("nonStandardReason", "replaceWithConferenceInvite",
                                                               "securityError"):
            raise Q931Error(f"ReleaseCompleteReason {reason!r} is not a NULL reason this builder knows")
        body["reason"] = (reason, 0)
    ies = [Cause(cause, location).to_ie()] + _common_ies(display)
    ies.append(_user_user(("releaseComplete", body), h245_tunnelling=h245_tunnelling))
    return _message(MessageType.RELEASE_COMPLETE, call_ref, from_destination, ies)


FACILITY_REASONS = ("routeCallToGatekeeper", "callForwarded", "routeCallToMC", "undefinedReason",
                    "conferenceListChoice", "startH245", "noH245", "newTokens", "featureSetUpdate",
                    "forwardedElements", "transportedInformation")


def build_facility(call_ref: int, call_identifier: bytes, *, from_destination: bool,
                   reason: str | None = "undefinedReason", h245_address: Address | None = None,
                   h245_control: Sequence[bytes] = (), h245_tunnelling: bool = True,
                   conference_id: bytes | None = None, alternative_address: Address | None = None,
                   alternative_aliases: Sequence[Alias] = (),
                   fast_start: Sequence[bytes] | None = None) -> Q931Message:
    """FACILITY.

    * ``reason="startH245"`` + ``h245_address``: ask the peer to open the
      separate H.245 connection (H.225.0 §7.4.2.2).
    * ``reason=None``: an H.245 tunnel carrier with h323-message-body ``empty``
      (H.225.0 v4+); for peers older than v4 use ``reason="transportedInformation"``
      or ``"undefinedReason"`` with a Facility-UUIE instead.
    * ``reason="callForwarded"`` / ``"routeCallToGatekeeper"`` + ``alternative_address``.
    """
    if reason is None:
        body: tuple[str, Any] = ("empty", 0)
    else:
        if reason not in FACILITY_REASONS:
            raise Q931Error(f"FacilityReason {reason!r} is not one of {', '.join(FACILITY_REASONS)}")
        if reason == "startH245" and h245_address is None:
            raise Q931Error("a startH245 facility needs the h245_address to connect to")
        fac: dict[str, Any] = {
            "protocolIdentifier": asn1.H225_PROTOCOL_ID,
            "reason": (reason, 0),
            "callIdentifier": {"guid": _guid(call_identifier, "callIdentifier")},
            "multipleCalls": False,
            "maintainConnection": False,
        }
        if conference_id is not None:
            fac["conferenceID"] = _guid(conference_id, "conferenceID")
        if h245_address is not None:
            fac["h245Address"] = _ta(h245_address)
        if alternative_address is not None:
            fac["alternativeAddress"] = _ta(alternative_address)
        if alternative_aliases:
            fac["alternativeAliasAddress"] = _aliases(alternative_aliases)
        if fast_start:
            fac["fastStart"] = [bytes(x) for x in fast_start]
        body = ("facility", fac)
    ies = [_user_user(body, h245_tunnelling=h245_tunnelling, h245_control=h245_control)]
    return _message(MessageType.FACILITY, call_ref, from_destination, ies)


def build_status(call_ref: int, call_identifier: bytes, *, from_destination: bool, call_state: int,
                 cause: int = 30) -> Q931Message:
    """STATUS (answer to STATUS ENQUIRY: cause 30) with Call state (Q.931 §4.5.7, e.g. 10 active)."""
    if not 0 <= call_state <= 63:
        raise Q931Error(f"call state {call_state} out of range 0..63")
    body = {"protocolIdentifier": asn1.H225_PROTOCOL_ID,
            "callIdentifier": {"guid": _guid(call_identifier, "callIdentifier")}}
    ies = [Cause(cause).to_ie(), InformationElement(IE.CALL_STATE, bytes([call_state])),
           _user_user(("status", body), h245_tunnelling=None)]
    return _message(MessageType.STATUS, call_ref, from_destination, ies)


def build_status_enquiry(call_ref: int, call_identifier: bytes, *, from_destination: bool) -> Q931Message:
    body = {"protocolIdentifier": asn1.H225_PROTOCOL_ID,
            "callIdentifier": {"guid": _guid(call_identifier, "callIdentifier")}}
    return _message(MessageType.STATUS_ENQUIRY, call_ref, from_destination,
                    [_user_user(("statusInquiry", body), h245_tunnelling=None)])


def build_information(call_ref: int, call_identifier: bytes, *, from_destination: bool,
                      keypad: str | None = None, display: str | None = None,
                      h245_tunnelling: bool = True, h245_control: Sequence[bytes] = ()) -> Q931Message:
    """INFORMATION: overlap digits (``keypad``) and/or tunnelled H.245."""
    body = {"protocolIdentifier": asn1.H225_PROTOCOL_ID,
            "callIdentifier": {"guid": _guid(call_identifier, "callIdentifier")}}
    ies = _common_ies(display)
    if keypad:
        if not keypad.isascii() or len(keypad) > 34:
            raise Q931Error(f"keypad {keypad!r}: up to 34 IA5 characters")
        ies.append(InformationElement(IE.KEYPAD, keypad.encode("ascii")))
    ies.append(_user_user(("information", body), h245_tunnelling=h245_tunnelling, h245_control=h245_control))
    return _message(MessageType.INFORMATION, call_ref, from_destination, ies)
