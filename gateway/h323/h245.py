"""The H.245 control session of one H.323 call, independent of how its PDUs travel.

:class:`H245Session` runs the H.245 (ITU-T H.245 §8) signalling entities an
H.323 endpoint needs, on whole ``MultimediaSystemControlMessage`` PDUs:
``receive(bytes)`` takes one from the far end, the ``send`` callable hands one
out.  Whether those bytes ride a separate H.245 TCP connection, are tunnelled
in H.225.0 messages, or never flow at all (fast start only) is the call
layer's business.

Signalling entities (H.245 §8):

* **MSDSE** master/slave determination: terminalType, then a random 24-bit
  statusDeterminationNumber; identical numbers are retried with new numbers
  up to N100 times; timer T106.
* **CESE** capability exchange: our TerminalCapabilitySet from the codec
  catalogue (:mod:`gateway.h323.capabilities`) with a sequence number, Ack,
  Reject, timer T101; the far end's set is checked, acknowledged and parsed.
* **LCSE** uni-directional logical channels: OpenLogicalChannel / Ack /
  Reject, CloseLogicalChannel / Ack, timer T103; bi-directional channels
  (B-LCSE) are refused with ``unsuitableReverseParameters``.
* **CLCSE** close requests: RequestChannelClose / Ack / Reject, timer T108.
* **RTDSE** round trip delay: RoundTripDelayRequest / Response, timer T105.
* Commands and indications: videoFastUpdatePicture, FlowControlCommand,
  UserInputIndication (alphanumeric and signal), EndSessionCommand.

Anything else that asks for an answer (a request or command we do not
support) gets FunctionNotUnderstood; a PDU that does not decode gets
FunctionNotSupported (syntaxError) with the bytes returned; unknown responses
and indications are logged and ignored.  Nothing the far end sends raises out
of :meth:`H245Session.receive`.

Fast start (H.323 §8.1.7) helpers build and read the OpenLogicalChannel
proposals a Setup / Connect carries, so the same session keeps one channel
table whichever way channels were opened.

Logical channel numbers are per direction: a channel *we* open is
``("tx", n)`` in :attr:`H245Session.channels`, one the far end opens to us is
``("rx", n)``.  Commands name the channel by the number its opener gave it:
a fast update or flow control we receive names one of our tx channels, a
CloseLogicalChannel we receive one of our rx channels.
"""
from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from gateway.catalogue import Catalogue
from gateway.media.codecs import Limits, MediaFormat, NoMatch, rules_for
from gateway.media.codecs import audio as audio_rules
from gateway.media.codecs import h264 as h264_rules

from . import asn1, h2356
from .capabilities import RemoteCapability, parse_capabilities, terminal_capability_set

__all__ = [
    "AUDIO_SESSION",
    "DTMF_SIGNALS",
    "H245Session",
    "LogicalChannel",
    "TERMINAL_TYPES",
    "VIDEO_SESSION",
    "h245_address",
    "parse_h245_address",
]

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))

AUDIO_SESSION = 1   # H.225.0 / H.323: primary audio RTP session
VIDEO_SESSION = 2   # primary video
DATA_SESSION = 3
_SESSION_OF = {"audio": AUDIO_SESSION, "video": VIDEO_SESSION, "data": DATA_SESSION}

# H.323 Table 1 (v4+): terminalType values for master/slave determination.
TERMINAL_TYPES: dict[str, int] = {
    "terminal": 50, "gateway": 60, "terminal+mc": 70, "gateway+mc": 80, "gateway+mc+dataMP": 90,
    "gateway+mc+audioMP": 100, "gateway+mc+avMP": 110, "gatekeeper": 120, "gatekeeper+mc+dataMP": 130,
    "gatekeeper+mc+audioMP": 140, "gatekeeper+mc+avMP": 150, "mcu": 160, "mcu+dataMP": 170,
    "mcu+audioMP": 180, "mcu+avMP": 190,
}

# UserInputIndication signalType (H.245: "0123456789#*ABCD!", ! = hook flash)
DTMF_SIGNALS = "0123456789#*ABCD!"

_DEFAULT_DYNAMIC_PT = 96
_SEQ = 256  # SequenceNumber is INTEGER (0..255)

# Requests and commands we answer with FunctionNotUnderstood when they arrive
_CLC_REASONS = ("unknown", "reopen", "reservationFailure")
_RCC_REASONS = ("unknown", "normal", "reopen", "reservationFailure")


# --------------------------------------------------------------------------- addresses


def h245_address(ip: str, port: int) -> tuple[str, Any]:
    """H.245 TransportAddress (``unicastAddress`` iPAddress / iP6Address) for ``(ip, port)``.

    H.245's TransportAddress differs from H.225.0's: ``network`` and
    ``tsapIdentifier`` inside a ``unicastAddress`` choice.
    """
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise ValueError(f"H.245 TransportAddress: {ip!r} is not an IP address") from None
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"H.245 TransportAddress: port {port!r} is not in 0..65535")
    kind = "iPAddress" if addr.version == 4 else "iP6Address"
    return ("unicastAddress", (kind, {"network": addr.packed, "tsapIdentifier": port}))


def parse_h245_address(value: Any) -> tuple[str, int] | None:
    """``(ip, port)`` of an H.245 unicast IPv4/IPv6 TransportAddress; None for anything else."""
    try:
        kind, inner = value
        if kind != "unicastAddress":
            return None
        ukind, v = inner
        if ukind in ("iPAddress", "iP6Address", "iPSourceRouteAddress"):
            return str(ipaddress.ip_address(v["network"])), int(v["tsapIdentifier"])
    except (TypeError, ValueError, KeyError):
        return None
    return None


def _addr(a: tuple[str, int] | None) -> tuple[str, Any] | None:
    return None if a is None else h245_address(a[0], int(a[1]))


# --------------------------------------------------------------------------- channel


@dataclass
class LogicalChannel:
    """One uni-directional H.245 logical channel, ours (``tx``) or the far end's (``rx``).

    ``format`` is what the channel carries (:class:`~gateway.media.codecs.MediaFormat`:
    codec, payload type, typed parameters, packet time, bitrate cap); ``capability``
    the H.245 DataType value it was opened with (pycrate notation), e.g.
    ``("audioData", ("g722-64k", 20))``.  Addresses:

    * ``remote_media`` / ``remote_rtcp``: where we send RTP / RTCP.  For a tx
      channel both come from the far end's OpenLogicalChannelAck (mediaChannel,
      mediaControlChannel); for an rx channel ``remote_rtcp`` is the
      mediaControlChannel of their OpenLogicalChannel (where our receiver
      reports go) and ``remote_media`` is None.
    * ``local_media`` / ``local_rtcp``: our addresses; for an rx channel the
      ones our OpenLogicalChannelAck carried.
    """

    number: int
    direction: str                       # "tx" (we send) | "rx" (we receive)
    media: str                           # "audio" | "video"
    format: MediaFormat                  # codec, payload type (dynamicRTPPayloadType or static), params
    capability: Any                      # H.245 DataType value
    session_id: int                      # 1 audio, 2 video, 3 data
    remote_media: tuple[str, int] | None = None
    remote_rtcp: tuple[str, int] | None = None
    local_media: tuple[str, int] | None = None
    local_rtcp: tuple[str, int] | None = None
    state: str = "opening"               # opening | open | closing | closed | rejected
    reason: str | None = None            # why it was rejected / closed
    fast_start: bool = False
    #: H.235.6: the channel is h235Media; its media key (from the master's encryptionSync) and the
    #: payload type its encrypted packets carry (synchFlag)
    encrypted: bool = False
    session_key: bytes | None = None
    cipher_pt: int | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.direction, self.number)

    @property
    def codec_name(self) -> str:
        return self.format.codec.name

    @property
    def payload_type(self) -> int:
        return self.format.payload_type


class _Timers:
    """Named one-shot timers on a Twisted clock (``callLater``)."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self._calls: dict[Any, Any] = {}

    def start(self, name: Any, seconds: float, fn: Callable[[], None]) -> None:
        self.stop(name)

        def fire() -> None:
            self._calls.pop(name, None)
            fn()

        self._calls[name] = self.clock.callLater(seconds, fire)

    def stop(self, name: Any) -> None:
        call = self._calls.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    def running(self, name: Any) -> bool:
        return name in self._calls

    def stop_all(self) -> None:
        for name in list(self._calls):
            self.stop(name)


def _choice(value: Any) -> tuple[str, Any]:
    if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str)):
        raise ValueError(f"expected a CHOICE value, got {type(value).__name__}")
    return value


# --------------------------------------------------------------------------- session


class H245Session:
    """One H.245 control session (the H.245 half of an H.323 call).

    Set the ``on_*`` callbacks, call :meth:`start`, feed every received PDU to
    :meth:`receive`.  Callbacks (all optional, exceptions in them are logged):

    * ``on_remote_capabilities(caps: list[RemoteCapability])``
    * ``on_msd_result("master" | "slave")``
    * ``on_ready()``: our TCS acknowledged, theirs received, MSD done
    * ``on_open_request(channel) -> (local_rtp, local_rtcp) | None | str``:
      the far end opens ``channel`` to us; return our addresses to accept,
      None (or an OpenLogicalChannelReject cause name) to refuse
    * ``on_channel_open(channel)``: one of our channels was acknowledged
    * ``on_channel_closed(channel, reason)``: closed or rejected, either side
    * ``on_close_request(channel) -> bool``: the far end asks us to close a tx
      channel (RequestChannelClose); default accept
    * ``on_fast_update(channel_number | None)``, ``on_flow_control(channel_number | None,
      bitrate_100bps | None)``: about our tx channels (None: all / no restriction)
    * ``on_user_input(digit)``: one DTMF digit (``0-9 # * A-D !``)
    * ``on_end_session()``, ``on_failure(reason)``
    """

    def __init__(self, catalogue: Catalogue, *, send: Callable[[bytes], None],
                 terminal_type: int = TERMINAL_TYPES["mcu+avMP"],
                 audio_codecs: Iterable[str] = ("G722", "PCMU", "PCMA"),
                 video_codecs: Iterable[str] = ("H264", "H263"),
                 tcs: Mapping[str, Any] | None = None,
                 tcs_options: Mapping[str, Any] | None = None,
                 clock: Any = None, rng: Any = None,
                 t101: float = 30.0, t103: float = 30.0, t105: float = 10.0,
                 t106: float = 30.0, t108: float = 30.0, retries: int = 3,
                 symmetric_codecs: bool = False, name: str = "h245") -> None:
        if not 0 <= terminal_type <= 255:
            raise ValueError(f"terminalType {terminal_type} is not in 0..255")
        if clock is None:
            from twisted.internet import reactor as clock  # noqa: N813 (the reactor is a clock)
        self.catalogue = catalogue
        self._send_bytes = send
        self.terminal_type = terminal_type
        self.name = name
        self.t101, self.t103, self.t105, self.t106, self.t108 = t101, t103, t105, t106, t108
        self.retries = retries
        self.symmetric_codecs = symmetric_codecs
        self._rng = rng if rng is not None else random.SystemRandom()
        self._timers = _Timers(clock)
        self.clock = clock

        # our capability set (a template; sequenceNumber is set on each send)
        if tcs is None:
            tcs = terminal_capability_set(catalogue, tuple(audio_codecs), tuple(video_codecs),
                                          **dict(tcs_options or {}))
            tcs = dict(tcs)
            tcs["multiplexCapability"] = ("h2250Capability", _h2250_capability(catalogue))
        self.tcs: dict[str, Any] = dict(tcs)
        self.local_capabilities: list[RemoteCapability] = parse_capabilities(self.tcs, catalogue)
        self._local_raw: dict[str, Any] = {}
        for e in self.tcs.get("capabilityTable", ()):
            if "capability" not in e:
                continue
            rc = next((c for c in self.local_capabilities if c.entry == e["capabilityTableEntryNumber"]), None)
            if rc is not None and rc.codec_name and rc.codec_name not in self._local_raw:
                self._local_raw[rc.codec_name] = e["capability"]
        self.audio_codecs = [c.codec_name for c in self.local_capabilities
                             if c.media == "audio" and c.codec_name]
        self.video_codecs = [c.codec_name for c in self.local_capabilities
                             if c.media == "video" and c.codec_name]

        # callbacks
        self.on_remote_capabilities: Callable[[list[RemoteCapability]], None] | None = None
        self.on_msd_result: Callable[[str], None] | None = None
        self.on_ready: Callable[[], None] | None = None
        self.on_open_request: Callable[[LogicalChannel], Any] | None = None
        self.on_channel_open: Callable[[LogicalChannel], None] | None = None
        self.on_channel_closed: Callable[[LogicalChannel, str], None] | None = None
        self.on_close_request: Callable[[LogicalChannel], bool] | None = None
        self.on_fast_update: Callable[[int | None], None] | None = None
        self.on_flow_control: Callable[[int | None, int | None], None] | None = None
        self.on_user_input: Callable[[str], None] | None = None
        self.on_end_session: Callable[[], None] | None = None
        self.on_failure: Callable[[str], None] | None = None

        # MSDSE
        self.msd_state = "idle"          # idle | outgoing | incoming | done | failed
        self.master: bool | None = None
        self._sdn = self._new_sdn()
        self._msd_count = 0
        self._msd_tentative: str | None = None
        # CESE
        self.tcs_state = "idle"          # idle | awaiting | acked | rejected | failed
        self.tcs_sent_acked = False
        self._tcs_seq = 0
        self.remote_tcs: dict[str, Any] | None = None
        self.remote_tcs_received = False
        self.remote_capabilities: list[RemoteCapability] = []
        # LCSE / CLCSE
        self.channels: dict[tuple[str, int], LogicalChannel] = {}
        self._next_number = 1
        self._close_requests: set[int] = set()
        self._reopen_after_conflict: dict[int, LogicalChannel] = {}
        # RTDSE
        self._rtd_seq = 0
        self._rtd_pending: dict[int, tuple[Any, float]] = {}
        # fast start (caller side): our proposals by channel number
        self._fs_offer: dict[int, LogicalChannel] = {}
        # H.235.6 media encryption: we declare it (offer_encryption) once the call layer runs the
        # DH exchange; media_key is the agreed key-encryption key; the far end's TCS says whether it can
        self.offer_encryption = False
        self.media_key: bytes | None = None
        self.remote_encryption = False
        self.ended = False
        self._ready_fired = False
        self.stats: dict[str, int] = {"received": 0, "sent": 0, "malformed": 0, "not_understood": 0}

    # ------------------------------------------------------------------ plumbing

    def _new_sdn(self) -> int:
        return int(self._rng.getrandbits(24)) & 0xFFFFFF

    def _send(self, message: tuple[str, Any]) -> None:
        data = asn1.encode_h245(message)
        self.stats["sent"] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: send %s.%s", self.name, message[0], message[1][0])
        self._send_bytes(data)

    def _emit(self, name: str, *args: Any) -> Any:
        cb = getattr(self, name)
        if cb is None:
            return None
        try:
            return cb(*args)
        except Exception:
            log.exception("%s: %s callback raised", self.name, name)
            return None

    def _fail(self, reason: str) -> None:
        log.warning("%s: %s", self.name, reason)
        self._emit("on_failure", reason)

    def _allocate_number(self) -> int:
        for _ in range(65535):
            n = self._next_number
            self._next_number = n % 65535 + 1
            if ("tx", n) not in self.channels and n not in self._fs_offer:
                return n
        raise RuntimeError("no free logical channel number")

    def _check_ready(self) -> None:
        ready = self.tcs_sent_acked and self.remote_tcs_received and self.msd_state == "done"
        if ready and not self._ready_fired:
            self._ready_fired = True
            self._emit("on_ready")
        elif not ready:
            self._ready_fired = False

    @property
    def ready(self) -> bool:
        return self.tcs_sent_acked and self.remote_tcs_received and self.msd_state == "done"

    @property
    def encrypting(self) -> bool:
        """Channels we open are h235Media: both sides declared H.235.6 and the DH key is agreed."""
        return self.offer_encryption and self.remote_encryption and self.media_key is not None

    # ------------------------------------------------------------------ public API

    def start(self) -> None:
        """Send our TerminalCapabilitySet and a MasterSlaveDetermination (both at once)."""
        if self.ended:
            raise RuntimeError("the H.245 session has ended")
        if self.tcs_state in ("idle", "failed", "rejected"):   # again: send_capabilities()
            self.send_capabilities()
        if self.msd_state in ("idle", "failed"):
            self.determine_master_slave()

    def send_capabilities(self) -> None:
        """(Re)send our TerminalCapabilitySet with the next sequence number (CESE)."""
        self._tcs_seq = (self._tcs_seq + 1) % _SEQ
        tcs = dict(_with_security(self.tcs) if self.offer_encryption else self.tcs, sequenceNumber=self._tcs_seq)
        self.tcs_state = "awaiting"
        self.tcs_sent_acked = False
        self._timers.start("T101", self.t101, self._t101_expired)
        self._send(("request", ("terminalCapabilitySet", tcs)))

    def determine_master_slave(self) -> None:
        """Start master/slave determination (MSDSE outgoing)."""
        self._msd_count = 0
        self._sdn = self._new_sdn()
        self._msd_send()

    def receive(self, pdu: bytes) -> None:
        """Process one MultimediaSystemControlMessage from the far end.  Never raises."""
        self.stats["received"] += 1
        try:
            msg = asn1.decode_h245(pdu)
        except asn1.Asn1Error as exc:
            self.stats["malformed"] += 1
            log.warning("%s: undecodable H.245 PDU (%d bytes): %s", self.name, len(pdu or b""), exc.reason)
            raw = bytes(pdu) if isinstance(pdu, (bytes, bytearray, memoryview)) else b""
            self._function_not_supported("syntaxError", raw[:1024])
            return
        try:
            kind, (what, value) = msg
        except (TypeError, ValueError):
            log.warning("%s: unexpected H.245 message shape %r", self.name, msg)
            return
        if self.ended and not (kind == "command" and what == "endSessionCommand"):
            log.info("%s: %s.%s after EndSession ignored", self.name, kind, what)
            return
        log.debug("%s: received %s.%s", self.name, kind, what)
        handler = getattr(self, f"_on_{kind}_{what}", None)
        if handler is None:
            self._unsupported(kind, what, value)
            return
        try:
            handler(value)
        except Exception as exc:  # a decodable but semantically broken PDU
            self.stats["malformed"] += 1
            log.warning("%s: cannot handle %s.%s: %s: %s", self.name, kind, what, type(exc).__name__, exc)
            if kind in ("request", "command"):
                self._function_not_understood(kind, what, value)

    def open_channel(self, media: str, codec_name: str | None = None,
                     local_rtcp: tuple[str, int] | None = None, payload_type: int | None = None,
                     params: Any = None) -> LogicalChannel:
        """Open a channel we transmit on (OpenLogicalChannel), for a codec the far end can receive.

        ``codec_name`` None picks our most preferred codec the far end declared
        (G722 > PCMU > PCMA, H264 > H263 with the default lists).  The
        DataType is our capability narrowed to theirs by the codec's rules
        (frames per packet, H.263 MPIs, H.264 level; maxBitRate); ``params``
        (typed, :mod:`gateway.media.codecs`) replaces ours before narrowing,
        e.g. ``H264Params(packetization_mode=1, level_idc=31)`` or ``AudioParams(30)``.
        ``ValueError`` if the far end cannot receive it; ``RuntimeError``
        before its capabilities are known.
        """
        if self.ended:
            raise RuntimeError("the H.245 session has ended")
        if not self.remote_tcs_received:
            raise RuntimeError("the far end's capabilities are not known yet (no TerminalCapabilitySet)")
        if media not in ("audio", "video"):
            raise ValueError(f"media {media!r}: only audio and video channels are opened here")
        if codec_name is None:
            codec_name = self.choose_codec(media)
            if codec_name is None:
                raise ValueError(f"no {media} codec in common with the far end "
                                 f"(ours: {', '.join(self._ours(media)) or 'none'}; "
                                 f"theirs: {', '.join(self._theirs(media)) or 'none'})")
        remote = self._remote_receive(codec_name)
        if remote is None:
            raise ValueError(f"the far end declared no receive capability for {codec_name}")
        data_type, chosen, cap = self._tx_data_type(codec_name, remote, params)
        if self.encrypting:
            data_type = _h235_media(data_type)
        ch = self._new_tx_channel(media, codec_name, data_type, chosen, cap, local_rtcp, payload_type)
        self._send_olc(ch)
        return ch

    def choose_codec(self, media: str) -> str | None:
        """Our most preferred codec of ``media`` that the far end can receive."""
        for name in self._ours(media):
            if self._remote_receive(name) is not None:
                return name
        return None

    def close_channel(self, number: int, reason: str = "normal", direction: str = "tx") -> None:
        """Close one of our channels (CloseLogicalChannel); for ``direction="rx"`` ask the
        far end to close theirs (RequestChannelClose).  ``reason``: normal, unknown,
        reopen, reservationFailure."""
        if direction == "rx":
            self.request_channel_close(number, reason)
            return
        ch = self.channels.get(("tx", number))
        if ch is None or ch.state in ("closed", "rejected"):
            raise KeyError(f"no open transmit channel {number}")
        if ch.state == "closing":
            return
        ch.state = "closing"
        ch.reason = reason
        clc: dict[str, Any] = {"forwardLogicalChannelNumber": number, "source": ("user", 0)}
        if reason in _CLC_REASONS:
            clc["reason"] = (reason, 0)
        self._timers.start(("T103", number), self.t103, lambda: self._t103_close_expired(number))
        self._send(("request", ("closeLogicalChannel", clc)))

    def request_channel_close(self, number: int, reason: str = "normal") -> None:
        """Ask the far end to close a channel it transmits to us (RequestChannelClose, CLCSE)."""
        ch = self.channels.get(("rx", number))
        if ch is None or ch.state != "open":
            raise KeyError(f"no open receive channel {number}")
        rcc: dict[str, Any] = {"forwardLogicalChannelNumber": number}
        if reason in _RCC_REASONS:
            rcc["reason"] = (reason, 0)
        self._close_requests.add(number)
        self._timers.start(("T108", number), self.t108, lambda: self._t108_expired(number))
        self._send(("request", ("requestChannelClose", rcc)))

    def request_fast_update(self, number: int) -> None:
        """Ask the sender of our receive channel ``number`` for an intra picture."""
        self._send(("command", ("miscellaneousCommand", {
            "logicalChannelNumber": number, "type": ("videoFastUpdatePicture", 0)})))

    def send_flow_control(self, number: int | None, bitrate: int | None) -> None:
        """FlowControlCommand for receive channel ``number`` (None: the whole multiplex);
        ``bitrate`` in units of 100 bit/s, None lifts the restriction."""
        scope = ("wholeMultiplex", 0) if number is None else ("logicalChannelNumber", number)
        restriction = ("noRestriction", 0) if bitrate is None else ("maximumBitRate", int(bitrate))
        self._send(("command", ("flowControlCommand", {"scope": scope, "restriction": restriction})))

    def send_user_input(self, digits: str, form: str | None = None, duration_ms: int | None = 200) -> None:
        """Send DTMF digits as UserInputIndication, one message per digit.

        ``form``: ``"signal"`` (signalType + duration) or ``"alphanumeric"``;
        None picks signal when the far end declared the ``dtmf`` user-input
        capability, else alphanumeric (basicString, which H.323 requires).
        """
        if form is None:
            caps = {c.capability for c in self.remote_capabilities if c.media == "userInput"}
            form = "signal" if "dtmf" in caps else "alphanumeric"
        if form not in ("signal", "alphanumeric"):
            raise ValueError(f"user input form {form!r}: expected signal or alphanumeric")
        for d in digits.upper():
            if d not in DTMF_SIGNALS:
                raise ValueError(f"{d!r} is not a DTMF signal ({DTMF_SIGNALS})")
        for d in digits.upper():
            if form == "signal":
                sig: dict[str, Any] = {"signalType": d}
                if duration_ms is not None:
                    sig["duration"] = max(1, min(65535, int(duration_ms)))
                self._send(("indication", ("userInput", ("signal", sig))))
            else:
                self._send(("indication", ("userInput", ("alphanumeric", d))))

    def round_trip_delay(self) -> Any:
        """Measure the H.245 round trip (RTDSE): a Deferred firing with seconds, or
        failing with ``TimeoutError`` after T105."""
        from twisted.internet import defer

        self._rtd_seq = (self._rtd_seq + 1) % _SEQ
        seq = self._rtd_seq
        old = self._rtd_pending.pop(seq, None)
        if old is not None:  # 256 outstanding requests: the oldest is given up
            self._timers.stop(("T105", seq))
            old[0].errback(TimeoutError("round trip delay request superseded"))
        d: Any = defer.Deferred()
        self._rtd_pending[seq] = (d, self.clock.seconds())
        self._timers.start(("T105", seq), self.t105, lambda: self._t105_expired(seq))
        self._send(("request", ("roundTripDelayRequest", {"sequenceNumber": seq})))
        return d

    def end_session(self) -> None:
        """EndSessionCommand (disconnect): H.245 is over; every channel is closed."""
        if self.ended:
            return
        self._send(("command", ("endSessionCommand", ("disconnect", 0))))
        self._shutdown()

    def close(self) -> None:
        """Stop every timer without sending anything (the transport is gone)."""
        self._shutdown()

    def _shutdown(self) -> None:
        self.ended = True
        self._timers.stop_all()
        for ch in self.channels.values():
            if ch.state not in ("closed", "rejected"):
                ch.state = "closed"
                ch.reason = ch.reason or "ended"
        for seq, (d, _) in list(self._rtd_pending.items()):
            self._rtd_pending.pop(seq, None)
            d.errback(ConnectionError("H.245 session ended"))

    # ------------------------------------------------------------------ capability helpers

    def _ours(self, media: str) -> list[str]:
        return self.audio_codecs if media == "audio" else self.video_codecs if media == "video" else []

    def _theirs(self, media: str) -> list[str]:
        return [c.codec_name or c.capability for c in self.remote_capabilities if c.media == media]

    def _remote_receive(self, codec_name: str) -> RemoteCapability | None:
        for c in self.remote_capabilities:
            if c.codec_name == codec_name and c.direction in ("receive", "receiveAndTransmit"):
                return c
        return None

    def _describe(self, data_type: Any) -> tuple[str, str | None, RemoteCapability | None]:
        """(media, codec name, the capability read from it) of an H.245 DataType value."""
        kind, v = _choice(data_type)
        if kind == "audioData":
            cap: tuple[str, Any] = ("receiveAudioCapability", v)
        elif kind == "videoData":
            cap = ("receiveVideoCapability", v)
        elif kind == "data":
            return "data", None, None
        else:
            return "other", None, None
        rc = parse_capabilities({"capabilityTable": [{"capabilityTableEntryNumber": 1, "capability": cap}]},
                                self.catalogue)[0]
        return rc.media, rc.codec_name, rc

    def _format(self, codec_name: str, payload_type: int | None, params: Any, bitrate_cap: int | None,
                packetization_mode: int | None = None) -> MediaFormat:
        """The MediaFormat a channel of ``codec_name`` carries (``params`` None: our own)."""
        codec = self.catalogue.get(codec_name)
        if params is None:
            params = rules_for(codec).local(codec, _NO_LIMITS)[0]
        if packetization_mode is not None and isinstance(params, h264_rules.H264Params):
            params = replace(params, packetization_mode=packetization_mode)
        ptime = None
        if isinstance(params, audio_rules.AudioParams):
            ptime = audio_rules.ptime_of_frames(params.frames_per_packet)
        pt = self._payload_type(codec_name, payload_type)
        return MediaFormat(codec, pt if pt is not None else _DEFAULT_DYNAMIC_PT, params, ptime, bitrate_cap)

    def _tx_data_type(self, codec_name: str, remote: RemoteCapability | None,
                      override: Any = None) -> tuple[Any, Any, int | None]:
        """The DataType for a channel we send: our capability narrowed to the far end's, by the
        codec's own rules (:func:`gateway.media.codecs` ``common``) → (DataType, params, bitrate cap).
        ``override`` replaces our own params before they are narrowed (e.g. 30 ms packets, mode 1)."""
        raw = self._local_raw.get(codec_name)
        if raw is None:
            raise ValueError(f"{codec_name} is not in our capability set")
        codec = self.catalogue.get(codec_name)
        rules = rules_for(codec)
        ours = next((c for c in self.local_capabilities if c.codec_name == codec_name), None)
        mine = ours.params if ours is not None and ours.params is not None else rules.local(codec, _NO_LIMITS)[0]
        params = override if override is not None else mine
        if remote is not None and remote.params is not None:
            try:
                params = rules.common(params, remote.params)   # never above what they receive
            except NoMatch:       # no size in common: send at one the far end takes
                params = remote.params
        cap = ours.bitrate_cap if ours is not None else None
        if remote is not None and remote.bitrate_cap is not None:
            cap = min(cap, remote.bitrate_cap) if cap is not None else remote.bitrate_cap
        kind, (choice, _) = raw
        value = rules.to_h245(codec, params, cap)
        if kind.endswith("AudioCapability"):
            return ("audioData", value), params, cap          # value: (choice, frames)
        return ("videoData", (choice, value)), params, cap

    def _payload_type(self, codec_name: str | None, given: int | None) -> int | None:
        if given is not None:
            return given
        if codec_name is None:
            return None
        try:
            codec = self.catalogue.get(codec_name)
        except Exception:
            return None
        return codec.static_pt if codec.static_pt is not None else _DEFAULT_DYNAMIC_PT

    def _is_dynamic(self, codec_name: str | None, pt: int | None) -> bool:
        return pt is not None and 96 <= pt <= 127

    def _h2250_params(self, ch: LogicalChannel, *, media_channel: tuple[str, int] | None = None,
                      control: tuple[str, int] | None = None) -> dict[str, Any]:
        p: dict[str, Any] = {"sessionID": ch.session_id}
        if media_channel is not None:
            p["mediaChannel"] = _addr(media_channel)
        if control is not None:
            p["mediaControlChannel"] = _addr(control)
        if ch.media == "audio":
            p["silenceSuppression"] = False
        if ch.encrypted and ch.cipher_pt is not None:
            p["dynamicRTPPayloadType"] = ch.cipher_pt      # H.235.6: what the encrypted packets carry
        elif self._is_dynamic(ch.codec_name, ch.payload_type):
            p["dynamicRTPPayloadType"] = ch.payload_type
        if isinstance(ch.format.params, h264_rules.H264Params):
            oid = self._h264_packetization_oid(ch.format.params.packetization_mode)
            p["mediaPacketization"] = ("rtpPayloadType", {"payloadDescriptor": ("oid", oid),
                                                          "payloadType": ch.payload_type})
        return p

    def _h264_packetization_oid(self, mode: int) -> tuple[int, ...]:
        codec = self.catalogue.get("H264") if "H264" in self.catalogue else None
        return h264_rules.packetization_oid(codec, mode)

    def _new_tx_channel(self, media: str, codec_name: str, data_type: Any, params: Any, cap: int | None,
                        local_rtcp: tuple[str, int] | None, payload_type: int | None) -> LogicalChannel:
        number = self._allocate_number()
        fmt = self._format(codec_name, payload_type, params, cap)
        ch = LogicalChannel(number=number, direction="tx", media=media, format=fmt,
                            capability=data_type, session_id=_SESSION_OF[media], local_rtcp=local_rtcp)
        if _choice(data_type)[0] == "h235Media":
            ch.encrypted = True
            ch.cipher_pt = h2356.cipher_payload_type(media, fmt.payload_type)
            if self.master:                 # the master makes every channel's key (H.235.6)
                ch.session_key = h2356.new_session_key()
        self.channels[ch.key] = ch
        return ch

    def _encryption_sync(self, ch: LogicalChannel) -> dict[str, Any]:
        """EncryptionSync for ``ch``: its payload type and its key under the DH key (H.235.6)."""
        assert ch.session_key is not None and self.media_key is not None and ch.cipher_pt is not None
        return {"synchFlag": ch.cipher_pt, "h235Key": h2356.encode_session_key(self.media_key, ch.session_key)}

    def _send_olc(self, ch: LogicalChannel) -> None:
        olc = {"forwardLogicalChannelNumber": ch.number,
               "forwardLogicalChannelParameters": {
                   "dataType": ch.capability,
                   "multiplexParameters": ("h2250LogicalChannelParameters",
                                           self._h2250_params(ch, control=ch.local_rtcp))}}
        if ch.encrypted and ch.session_key is not None and self.media_key is not None:
            olc["encryptionSync"] = self._encryption_sync(ch)
        ch.state = "opening"
        self._timers.start(("T103", ch.number), self.t103, lambda n=ch.number: self._t103_open_expired(n))
        self._send(("request", ("openLogicalChannel", olc)))

    # ------------------------------------------------------------------ answers

    def _function_not_understood(self, kind: str, what: str, value: Any) -> None:
        self.stats["not_understood"] += 1
        try:
            self._send(("indication", ("functionNotUnderstood", (kind, (what, value)))))
        except asn1.Asn1Error as exc:  # the value does not re-encode: return its bytes instead
            log.debug("%s: FunctionNotUnderstood did not encode (%s)", self.name, exc.reason)
            self._function_not_supported("unknownFunction", None)

    def _function_not_supported(self, cause: str, returned: bytes | None) -> None:
        fns: dict[str, Any] = {"cause": (cause, 0)}
        if returned:
            fns["returnedFunction"] = returned
        try:
            self._send(("indication", ("functionNotSupported", fns)))
        except asn1.Asn1Error as exc:
            log.warning("%s: FunctionNotSupported not sent: %s", self.name, exc.reason)

    def _unsupported(self, kind: str, what: str, value: Any) -> None:
        if kind in ("request", "command"):
            log.info("%s: %s.%s not supported: FunctionNotUnderstood", self.name, kind, what)
            self._function_not_understood(kind, what, value)
        else:
            log.debug("%s: %s.%s ignored", self.name, kind, what)

    # ------------------------------------------------------------------ MSDSE (H.245 §8.2)

    def _msd_send(self) -> None:
        self.msd_state = "outgoing"
        self._timers.start("T106", self.t106, self._t106_expired)
        self._send(("request", ("masterSlaveDetermination", {
            "terminalType": self.terminal_type, "statusDeterminationNumber": self._sdn})))

    def _msd_compare(self, terminal_type: int, sdn: int) -> str | None:
        if self.terminal_type != terminal_type:
            return "master" if self.terminal_type > terminal_type else "slave"
        diff = (sdn - self._sdn) & 0xFFFFFF
        if diff in (0, 0x800000):
            return None
        return "master" if diff < 0x800000 else "slave"

    @staticmethod
    def _other(decision: str) -> str:
        return "slave" if decision == "master" else "master"

    def _on_request_masterSlaveDetermination(self, v: Mapping[str, Any]) -> None:
        tt, sdn = int(v["terminalType"]), int(v["statusDeterminationNumber"])
        decision = self._msd_compare(tt, sdn)
        if self.msd_state == "outgoing":
            if decision is None:
                self._msd_count += 1
                if self._msd_count >= self.retries:
                    self._msd_failed(f"master/slave determination: identical numbers {self._msd_count} times")
                    return
                log.info("%s: MSD indeterminate (identical numbers), retrying", self.name)
                self._sdn = self._new_sdn()
                self._msd_send()
                return
        elif decision is None:  # idle (or a fresh determination after a result)
            self._send(("response", ("masterSlaveDeterminationReject", {"cause": ("identicalNumbers", 0)})))
            return
        self._msd_tentative = decision
        self.msd_state = "incoming"
        self._timers.start("T106", self.t106, self._t106_expired)
        self._send(("response", ("masterSlaveDeterminationAck", {"decision": (self._other(decision), 0)})))

    def _on_response_masterSlaveDeterminationAck(self, v: Mapping[str, Any]) -> None:
        mine = _choice(v["decision"])[0]     # the Ack tells the receiver its own status
        if mine not in ("master", "slave"):
            raise ValueError(f"decision {mine!r}")
        if self.msd_state == "outgoing":
            self._timers.stop("T106")
            self._send(("response", ("masterSlaveDeterminationAck", {"decision": (self._other(mine), 0)})))
            self._msd_done(mine)
        elif self.msd_state == "incoming":
            self._timers.stop("T106")
            if mine == self._msd_tentative:
                self._msd_done(mine)
            else:
                self._msd_failed(f"master/slave determination: far end says {mine}, we found "
                                 f"{self._msd_tentative}")
        else:
            log.debug("%s: MasterSlaveDeterminationAck in state %s ignored", self.name, self.msd_state)

    def _on_response_masterSlaveDeterminationReject(self, v: Mapping[str, Any]) -> None:
        if self.msd_state == "outgoing":
            self._msd_count += 1
            if self._msd_count >= self.retries:
                self._msd_failed(f"master/slave determination rejected {self._msd_count} times")
                return
            self._sdn = self._new_sdn()
            self._msd_send()
        elif self.msd_state == "incoming":
            self._msd_failed("master/slave determination: far end rejected after our Ack")
        else:
            log.debug("%s: MasterSlaveDeterminationReject in state %s ignored", self.name, self.msd_state)

    def _on_indication_masterSlaveDeterminationRelease(self, v: Any) -> None:
        if self.msd_state in ("outgoing", "incoming"):
            self._msd_failed("master/slave determination released by the far end")

    def _t106_expired(self) -> None:
        if self.msd_state not in ("outgoing", "incoming"):
            return
        try:
            self._send(("indication", ("masterSlaveDeterminationRelease", {})))
        finally:
            self._msd_failed("master/slave determination: no answer within T106")

    def _msd_done(self, decision: str) -> None:
        self.msd_state = "done"
        self.master = decision == "master"
        log.info("%s: master/slave determination: we are %s", self.name, decision)
        self._emit("on_msd_result", decision)
        self._check_ready()

    def _msd_failed(self, reason: str) -> None:
        self._timers.stop("T106")
        self.msd_state = "failed"
        self.master = None
        self._fail(reason)

    # ------------------------------------------------------------------ CESE (H.245 §8.3)

    def _on_request_terminalCapabilitySet(self, v: Mapping[str, Any]) -> None:
        seq = int(v["sequenceNumber"])
        entries = {e["capabilityTableEntryNumber"] for e in v.get("capabilityTable", ()) if "capability" in e}
        for d in v.get("capabilityDescriptors", ()):
            for alt in d.get("simultaneousCapabilities", ()):
                missing = [n for n in alt if n not in entries]
                if missing:
                    log.warning("%s: TerminalCapabilitySet %d uses undefined entries %s: rejected",
                                self.name, seq, missing)
                    self._send(("response", ("terminalCapabilitySetReject", {
                        "sequenceNumber": seq, "cause": ("undefinedTableEntryUsed", 0)})))
                    return
        caps = parse_capabilities(v, self.catalogue)
        self.remote_encryption = any(
            e.get("capability", ("",))[0] == "h235SecurityCapability"
            and _offers_aes128(e["capability"][1].get("encryptionAuthenticationAndIntegrity"))
            for e in v.get("capabilityTable", ()))
        self._send(("response", ("terminalCapabilitySetAck", {"sequenceNumber": seq})))
        empty = "capabilityTable" not in v and "capabilityDescriptors" not in v
        self.remote_tcs = dict(v)
        self.remote_capabilities = caps
        if empty:
            # H.323 §8.4.6: an empty set pauses the call: close what we send, redo MSD later
            log.info("%s: empty TerminalCapabilitySet (third-party pause): closing our channels", self.name)
            self.remote_tcs_received = False
            for ch in list(self.channels.values()):
                if ch.direction == "tx" and ch.state in ("open", "opening"):
                    self.close_channel(ch.number, "unknown")
            self.msd_state = "idle"
            self.master = None
            self._check_ready()
            self._emit("on_remote_capabilities", caps)
            return
        self.remote_tcs_received = True
        log.info("%s: far end capabilities: %s", self.name,
                 ", ".join(c.codec_name or c.capability for c in caps if c.media in ("audio", "video")))
        self._emit("on_remote_capabilities", caps)
        self._check_ready()

    def _on_response_terminalCapabilitySetAck(self, v: Mapping[str, Any]) -> None:
        seq = int(v["sequenceNumber"])
        if self.tcs_state != "awaiting" or seq != self._tcs_seq:
            log.debug("%s: TerminalCapabilitySetAck %d ignored (state %s, ours %d)",
                      self.name, seq, self.tcs_state, self._tcs_seq)
            return
        self._timers.stop("T101")
        self.tcs_state = "acked"
        self.tcs_sent_acked = True
        self._check_ready()

    def _on_response_terminalCapabilitySetReject(self, v: Mapping[str, Any]) -> None:
        seq = int(v["sequenceNumber"])
        if self.tcs_state != "awaiting" or seq != self._tcs_seq:
            return
        self._timers.stop("T101")
        self.tcs_state = "rejected"
        cause = _choice(v["cause"])
        text = cause[0] if cause[0] != "tableEntryCapacityExceeded" else f"{cause[0]} {cause[1]!r}"
        self._fail(f"TerminalCapabilitySet rejected by the far end: {text}")

    def _on_indication_terminalCapabilitySetRelease(self, v: Any) -> None:
        log.info("%s: far end released its TerminalCapabilitySet", self.name)

    def _on_command_sendTerminalCapabilitySet(self, v: Any) -> None:
        self.send_capabilities()

    def _t101_expired(self) -> None:
        if self.tcs_state != "awaiting":
            return
        self.tcs_state = "failed"
        try:
            self._send(("indication", ("terminalCapabilitySetRelease", {})))
        finally:
            self._fail("TerminalCapabilitySet: no answer within T101")

    # ------------------------------------------------------------------ LCSE (H.245 §8.4)

    def _reject_olc(self, number: int, cause: str) -> None:
        self._send(("response", ("openLogicalChannelReject",
                                 {"forwardLogicalChannelNumber": number, "cause": (cause, 0)})))

    def _on_request_openLogicalChannel(self, v: Mapping[str, Any]) -> None:
        number = int(v["forwardLogicalChannelNumber"])
        fwd = v["forwardLogicalChannelParameters"]
        if "reverseLogicalChannelParameters" in v:
            log.info("%s: bi-directional channel %d refused", self.name, number)
            self._reject_olc(number, "unsuitableReverseParameters")
            return
        mux_kind, h2250 = _choice(fwd["multiplexParameters"])
        if mux_kind != "h2250LogicalChannelParameters":
            self._reject_olc(number, "unspecified")
            return
        data_type = fwd["dataType"]
        encrypted = _choice(data_type)[0] == "h235Media"
        if encrypted:
            eai = _choice(data_type)[1]
            if not self.encrypting or not _offers_aes128(eai.get("encryptionAuthenticationAndIntegrity")):
                log.info("%s: channel %d is encrypted (h235Media) but %s: refused", self.name, number,
                         "no H.235.6 key was agreed" if not self.encrypting else "not with AES-128")
                self._reject_olc(number, "dataTypeNotSupported")
                return
            data_type = eai["mediaType"]
        media, codec_name, rc = self._describe(data_type)
        if media not in ("audio", "video") or codec_name is None:
            log.info("%s: channel %d: %s data type not supported", self.name, number, _choice(data_type)[0])
            self._reject_olc(number, "dataTypeNotSupported")
            return
        if codec_name not in self._ours(media):
            log.info("%s: channel %d: %s is not in our capability set", self.name, number, codec_name)
            self._reject_olc(number, "dataTypeNotSupported")
            return
        session = int(h2250.get("sessionID", 0))
        if session == 0:
            if not self.master:
                self._reject_olc(number, "invalidSessionID")
                return
            session = _SESSION_OF[media]        # the master assigns the session (H.245 §8.4)
        pt = h2250.get("dynamicRTPPayloadType")
        packetization = h2250.get("mediaPacketization")
        if pt is None and packetization and packetization[0] == "rtpPayloadType":
            pt = packetization[1].get("payloadType")
        cipher_pt = session_key = None
        if encrypted:
            sync = v.get("encryptionSync")
            cipher_pt = int(sync["synchFlag"]) if sync else (int(pt) if pt is not None else None)
            plain = self._payload_type(codec_name, None)
            pt = plain if plain is not None and not 96 <= plain <= 127 else cipher_pt
            try:
                if sync:
                    session_key = h2356.decode_session_key(self.media_key, sync["h235Key"])
                elif self.master:
                    session_key = h2356.new_session_key()   # the slave's channel: our key, in the Ack
            except ValueError as exc:
                log.warning("%s: channel %d: %s: refused", self.name, number, exc)
                self._reject_olc(number, "unspecified")
                return
            if session_key is None or cipher_pt is None:
                log.warning("%s: channel %d is encrypted but the master sent no key: refused", self.name, number)
                self._reject_olc(number, "unspecified")
                return
        old = self.channels.get(("rx", number))
        if old is not None and old.state == "open":   # re-open of an established channel
            old.state, old.reason = "closed", "replaced"
            self._emit("on_channel_closed", old, "replaced")
        ch = LogicalChannel(number=number, direction="rx", media=media,
                            format=self._format(codec_name, pt, *_described(rc), _packetization_mode(self, h2250)),
                            capability=fwd["dataType"], session_id=session,
                            remote_rtcp=parse_h245_address(h2250.get("mediaControlChannel")),
                            encrypted=encrypted, session_key=session_key, cipher_pt=cipher_pt)
        if self._conflicts(ch):
            log.info("%s: channel %d (%s) conflicts with ours in session %d: masterSlaveConflict",
                     self.name, number, codec_name, session)
            self._reject_olc(number, "masterSlaveConflict")
            return
        answer = self._emit("on_open_request", ch)
        if isinstance(answer, str) or answer is None:
            ch.state, ch.reason = "rejected", answer or "unspecified"
            self._reject_olc(number, answer or "unspecified")
            return
        try:
            local_media, local_rtcp = answer
            ch.local_media, ch.local_rtcp = (str(local_media[0]), int(local_media[1])), \
                (str(local_rtcp[0]), int(local_rtcp[1]))
            ack_params: dict[str, Any] = {"sessionID": session, "mediaChannel": _addr(ch.local_media),
                                          "mediaControlChannel": _addr(ch.local_rtcp)}
        except (TypeError, ValueError, IndexError) as exc:
            log.error("%s: on_open_request gave no usable addresses (%r): %s", self.name, answer, exc)
            ch.state, ch.reason = "rejected", "unspecified"
            self._reject_olc(number, "unspecified")
            return
        if h2250.get("dynamicRTPPayloadType") is not None:
            ack_params["dynamicRTPPayloadType"] = h2250["dynamicRTPPayloadType"]
        ch.state = "open"
        self.channels[ch.key] = ch
        ack: dict[str, Any] = {"forwardLogicalChannelNumber": number,
                               "forwardMultiplexAckParameters": ("h2250LogicalChannelAckParameters", ack_params)}
        if encrypted and not v.get("encryptionSync"):
            ack["encryptionSync"] = self._encryption_sync(ch)       # we are the master: the key we made
        self._send(("response", ("openLogicalChannelAck", ack)))
        self._after_rx_open(ch)

    def _conflicts(self, ch: LogicalChannel) -> bool:
        """H.245 §8.4 / H.323 §8.4.3: when both ends open the same session with different
        codecs and this end needs symmetric codecs, the master refuses the slave's channel."""
        if not (self.symmetric_codecs and self.master):
            return False
        return any(c.direction == "tx" and c.session_id == ch.session_id and c.state in ("opening", "open")
                   and c.codec_name != ch.codec_name for c in self.channels.values())

    def _after_rx_open(self, ch: LogicalChannel) -> None:
        pending = self._reopen_after_conflict.pop(ch.session_id, None)
        if pending is None:
            return
        # we are the slave and our channel met masterSlaveConflict: follow the master's codec
        if self._remote_receive(ch.codec_name or "") is None or ch.codec_name not in self._local_raw:
            self._fail(f"masterSlaveConflict: cannot send {ch.codec_name} back in session {ch.session_id}")
            return
        data_type, chosen, cap = self._tx_data_type(ch.codec_name, self._remote_receive(ch.codec_name))
        new = self._new_tx_channel(pending.media, ch.codec_name, data_type, chosen, cap, pending.local_rtcp,
                                   pending.payload_type if pending.codec_name == ch.codec_name else None)
        log.info("%s: re-opening %s session %d with %s (channel %d)", self.name, new.media,
                 new.session_id, new.codec_name, new.number)
        self._send_olc(new)

    def _on_response_openLogicalChannelAck(self, v: Mapping[str, Any]) -> None:
        number = int(v["forwardLogicalChannelNumber"])
        ch = self.channels.get(("tx", number))
        if ch is None or ch.state != "opening":
            log.debug("%s: OpenLogicalChannelAck %d for no opening channel ignored", self.name, number)
            return
        self._timers.stop(("T103", number))
        fmap = v.get("forwardMultiplexAckParameters")
        if fmap is not None and fmap[0] == "h2250LogicalChannelAckParameters":
            p = fmap[1]
            ch.remote_media = parse_h245_address(p.get("mediaChannel"))
            ch.remote_rtcp = parse_h245_address(p.get("mediaControlChannel"))
            if p.get("sessionID"):
                ch.session_id = int(p["sessionID"])
            if p.get("dynamicRTPPayloadType") is not None and not ch.encrypted:
                ch.format = replace(ch.format, payload_type=int(p["dynamicRTPPayloadType"]))
        if ch.encrypted and ch.session_key is None:
            sync = v.get("encryptionSync")
            try:
                if not sync:
                    raise ValueError("the master's OpenLogicalChannelAck carries no encryptionSync")
                ch.session_key = h2356.decode_session_key(self.media_key, sync["h235Key"])
                ch.cipher_pt = int(sync["synchFlag"])
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s: channel %d (%s): no usable media key (%s): closing it", self.name, number,
                            ch.codec_name, exc)
                ch.state = "open"
                self.close_channel(number, "unknown")
                return
        if ch.remote_media is None:
            log.warning("%s: OpenLogicalChannelAck %d without a mediaChannel", self.name, number)
        ch.state = "open"
        log.info("%s: channel %d (%s) open, RTP to %s", self.name, number, ch.codec_name, ch.remote_media)
        self._emit("on_channel_open", ch)

    def _on_response_openLogicalChannelReject(self, v: Mapping[str, Any]) -> None:
        number = int(v["forwardLogicalChannelNumber"])
        ch = self.channels.get(("tx", number))
        if ch is None or ch.state != "opening":
            return
        self._timers.stop(("T103", number))
        cause = _choice(v["cause"])[0]
        ch.state, ch.reason = "rejected", cause
        log.info("%s: channel %d (%s) rejected: %s", self.name, number, ch.codec_name, cause)
        if cause == "masterSlaveConflict" and self.master is False:
            rx = next((c for c in self.channels.values() if c.direction == "rx" and c.state == "open"
                       and c.session_id == ch.session_id), None)
            self._reopen_after_conflict[ch.session_id] = ch
            if rx is not None:
                self._after_rx_open(rx)
        self._emit("on_channel_closed", ch, f"rejected:{cause}")

    def _on_request_closeLogicalChannel(self, v: Mapping[str, Any]) -> None:
        number = int(v["forwardLogicalChannelNumber"])
        self._send(("response", ("closeLogicalChannelAck", {"forwardLogicalChannelNumber": number})))
        ch = self.channels.get(("rx", number))
        self._timers.stop(("T108", number))
        self._close_requests.discard(number)
        if ch is None or ch.state in ("closed", "rejected"):
            return
        reason = "remote"
        if "reason" in v:
            reason = f"remote:{_choice(v['reason'])[0]}"
        ch.state, ch.reason = "closed", reason
        self._emit("on_channel_closed", ch, reason)

    def _on_response_closeLogicalChannelAck(self, v: Mapping[str, Any]) -> None:
        number = int(v["forwardLogicalChannelNumber"])
        ch = self.channels.get(("tx", number))
        if ch is None or ch.state != "closing":
            return
        self._timers.stop(("T103", number))
        ch.state = "closed"
        self._emit("on_channel_closed", ch, ch.reason or "normal")

    def _t103_open_expired(self, number: int) -> None:
        ch = self.channels.get(("tx", number))
        if ch is None or ch.state != "opening":
            return
        ch.state, ch.reason = "closed", "timeout"
        try:
            self._send(("request", ("closeLogicalChannel", {"forwardLogicalChannelNumber": number,
                                                             "source": ("lcse", 0)})))
        finally:
            log.warning("%s: channel %d: no OpenLogicalChannelAck within T103", self.name, number)
            self._emit("on_channel_closed", ch, "timeout")

    def _t103_close_expired(self, number: int) -> None:
        ch = self.channels.get(("tx", number))
        if ch is None or ch.state != "closing":
            return
        log.warning("%s: channel %d: no CloseLogicalChannelAck within T103", self.name, number)
        ch.state = "closed"
        self._emit("on_channel_closed", ch, ch.reason or "normal")

    # ------------------------------------------------------------------ CLCSE (H.245 §8.5)

    def _on_request_requestChannelClose(self, v: Mapping[str, Any]) -> None:
        number = int(v["forwardLogicalChannelNumber"])
        ch = self.channels.get(("tx", number))
        if ch is None or ch.state not in ("open", "opening"):
            self._send(("response", ("requestChannelCloseReject", {
                "forwardLogicalChannelNumber": number, "cause": ("unspecified", 0)})))
            return
        accept = True if self.on_close_request is None else bool(self._emit("on_close_request", ch))
        if not accept:
            self._send(("response", ("requestChannelCloseReject", {
                "forwardLogicalChannelNumber": number, "cause": ("unspecified", 0)})))
            return
        self._send(("response", ("requestChannelCloseAck", {"forwardLogicalChannelNumber": number})))
        reason = "normal"
        if "reason" in v and _choice(v["reason"])[0] in _CLC_REASONS:
            reason = _choice(v["reason"])[0]
        if ch.state == "opening":
            self._timers.stop(("T103", number))
        ch.state = "open"
        self.close_channel(number, reason)

    def _on_response_requestChannelCloseAck(self, v: Mapping[str, Any]) -> None:
        number = int(v["forwardLogicalChannelNumber"])
        self._timers.stop(("T108", number))
        self._close_requests.discard(number)

    def _on_response_requestChannelCloseReject(self, v: Mapping[str, Any]) -> None:
        number = int(v["forwardLogicalChannelNumber"])
        self._timers.stop(("T108", number))
        if number in self._close_requests:
            self._close_requests.discard(number)
            log.warning("%s: far end refused to close channel %d", self.name, number)

    def _on_indication_requestChannelCloseRelease(self, v: Any) -> None:
        log.debug("%s: RequestChannelCloseRelease %s", self.name, v)

    def _t108_expired(self, number: int) -> None:
        if number not in self._close_requests:
            return
        self._close_requests.discard(number)
        log.warning("%s: RequestChannelClose %d: no answer within T108", self.name, number)
        self._send(("indication", ("requestChannelCloseRelease", {"forwardLogicalChannelNumber": number})))

    # ------------------------------------------------------------------ RTDSE (H.245 §8.9)

    def _on_request_roundTripDelayRequest(self, v: Mapping[str, Any]) -> None:
        self._send(("response", ("roundTripDelayResponse", {"sequenceNumber": int(v["sequenceNumber"])})))

    def _on_response_roundTripDelayResponse(self, v: Mapping[str, Any]) -> None:
        seq = int(v["sequenceNumber"])
        pending = self._rtd_pending.pop(seq, None)
        if pending is None:
            return
        self._timers.stop(("T105", seq))
        d, t0 = pending
        d.callback(self.clock.seconds() - t0)

    def _t105_expired(self, seq: int) -> None:
        pending = self._rtd_pending.pop(seq, None)
        if pending is not None:
            pending[0].errback(TimeoutError("no RoundTripDelayResponse within T105"))

    # ------------------------------------------------------------------ other requests

    def _on_request_requestMode(self, v: Mapping[str, Any]) -> None:
        # we do not change transmit modes on request: say so rather than "not understood"
        self._send(("response", ("requestModeReject", {"sequenceNumber": int(v["sequenceNumber"]),
                                                       "cause": ("modeUnavailable", 0)})))

    # ------------------------------------------------------------------ commands

    def _on_command_miscellaneousCommand(self, v: Mapping[str, Any]) -> None:
        kind = _choice(v["type"])[0]
        number = int(v["logicalChannelNumber"])
        if kind in ("videoFastUpdatePicture", "videoFastUpdateGOB", "videoFastUpdateMB"):
            self._emit("on_fast_update", number)
        else:
            log.debug("%s: miscellaneousCommand %s on channel %d ignored", self.name, kind, number)

    def _on_command_flowControlCommand(self, v: Mapping[str, Any]) -> None:
        scope_kind, scope = _choice(v["scope"])
        number = int(scope) if scope_kind == "logicalChannelNumber" else None
        r_kind, r = _choice(v["restriction"])
        bitrate = int(r) if r_kind == "maximumBitRate" else None
        self._emit("on_flow_control", number, bitrate)

    def _on_command_endSessionCommand(self, v: Any) -> None:
        log.info("%s: far end ended the H.245 session (%s)", self.name, _choice(v)[0])
        self._shutdown()
        self._emit("on_end_session")        # also when we sent ours first: the far end has let go

    # ------------------------------------------------------------------ indications

    def _user_input(self, text: str) -> None:
        for ch in text:
            d = ch.upper()
            if d in DTMF_SIGNALS:
                self._emit("on_user_input", d)
            else:
                log.debug("%s: user input %r is not a DTMF signal: ignored", self.name, ch)

    def _on_indication_userInput(self, v: Any) -> None:
        kind, inner = _choice(v)
        if kind == "alphanumeric":
            self._user_input(str(inner))
        elif kind == "extendedAlphanumeric":
            self._user_input(str(inner["alphanumeric"]))
        elif kind == "signal":
            self._user_input(str(inner["signalType"]))
        else:  # signalUpdate (duration of a digit already reported), support indications ...
            log.debug("%s: userInput %s ignored", self.name, kind)

    def _on_indication_functionNotUnderstood(self, v: Any) -> None:
        kind, (what, _) = _choice(v)
        log.warning("%s: far end did not understand our %s.%s", self.name, kind, what)

    def _on_indication_functionNotSupported(self, v: Mapping[str, Any]) -> None:
        log.warning("%s: far end does not support a function we sent (%s)", self.name, _choice(v["cause"])[0])

    # ------------------------------------------------------------------ fast start (H.323 §8.1.7)

    def _local_data_type(self, codec_name: str) -> Any:
        return self._tx_data_type(codec_name, None)[0]

    def fast_start_offer(self, local_media: Mapping[str, tuple[tuple[str, int], tuple[str, int]]],
                         codecs: Iterable[str] | None = None) -> list[bytes]:
        """The fastStart elements a caller puts in Setup: for each of our codecs (in
        preference order) of each media in ``local_media`` (``{"audio": (rtp, rtcp)}``),
        a transmit proposal (forward dataType, our RTCP) and a receive proposal
        (nullData forward, reverse dataType with our RTP and RTCP)."""
        wanted = list(codecs) if codecs is not None else None
        out: list[bytes] = []
        for media in ("audio", "video"):
            if media not in local_media:
                continue
            rtp, rtcp = local_media[media]
            for name in self._ours(media):
                if wanted is not None and name not in wanted:
                    continue
                dt = self._local_data_type(name)
                _, _, rc = self._describe(dt)
                fmt = self._format(name, None, *_described(rc))
                tx = LogicalChannel(number=self._allocate_number(), direction="tx", media=media,
                                    format=fmt, capability=dt,
                                    session_id=_SESSION_OF[media], local_rtcp=tuple(rtcp), fast_start=True)
                self._fs_offer[tx.number] = tx
                out.append(asn1.encode_open_logical_channel({
                    "forwardLogicalChannelNumber": tx.number,
                    "forwardLogicalChannelParameters": {
                        "dataType": dt,
                        "multiplexParameters": ("h2250LogicalChannelParameters",
                                                self._h2250_params(tx, control=tuple(rtcp)))}}))
                rx = LogicalChannel(number=self._allocate_number(), direction="rx", media=media,
                                    format=fmt, capability=dt,
                                    session_id=_SESSION_OF[media], local_media=tuple(rtp),
                                    local_rtcp=tuple(rtcp), fast_start=True)
                self._fs_offer[rx.number] = rx
                out.append(asn1.encode_open_logical_channel({
                    "forwardLogicalChannelNumber": rx.number,
                    "forwardLogicalChannelParameters": {"dataType": ("nullData", 0),
                                                        "multiplexParameters": ("none", 0)},
                    "reverseLogicalChannelParameters": {
                        "dataType": dt,
                        "multiplexParameters": ("h2250LogicalChannelParameters",
                                                self._h2250_params(rx, media_channel=tuple(rtp),
                                                                   control=tuple(rtcp)))}}))
        return out

    def _read_proposal(self, data: bytes) -> tuple[str, dict[str, Any], Any, dict[str, Any]] | None:
        """(their direction "tx"|"rx", olc, dataType, h2250 params) of a fastStart element."""
        try:
            olc = asn1.decode_open_logical_channel(data)
            fwd = olc["forwardLogicalChannelParameters"]
            if _choice(fwd["dataType"])[0] != "nullData":
                kind, h2250 = _choice(fwd["multiplexParameters"])
                return ("tx", olc, fwd["dataType"], h2250 if kind == "h2250LogicalChannelParameters" else {})
            rev = olc.get("reverseLogicalChannelParameters")
            if rev is None:
                return None
            kind, h2250 = _choice(rev.get("multiplexParameters", ("none", 0)))
            return ("rx", olc, rev["dataType"], h2250 if kind == "h2250LogicalChannelParameters" else {})
        except (asn1.Asn1Error, KeyError, TypeError, ValueError) as exc:
            log.warning("%s: fastStart element ignored: %s", self.name, exc)
            return None

    def fast_start_answer(self, offered: Iterable[bytes],
                          local_media: Mapping[str, tuple[tuple[str, int], tuple[str, int]]]
                          ) -> tuple[list[bytes], list[LogicalChannel]]:
        """Callee side: choose one proposal per media and direction from a caller's
        fastStart (our codec preference order), fill in our addresses, and return
        (the fastStart elements for Connect / Alerting / CallProceeding, the channels).
        No proposal acceptable → ``([], [])`` (fast start refused: use H.245)."""
        proposals: list[tuple[str, dict[str, Any], Any, dict[str, Any], str, str | None]] = []
        for data in offered:
            p = self._read_proposal(data)
            if p is None:
                continue
            media, codec, _ = self._describe(p[2])
            proposals.append((*p, media, codec))
        answers: list[bytes] = []
        chosen: list[LogicalChannel] = []
        for media in ("audio", "video"):
            if media not in local_media:
                continue
            rtp, rtcp = (tuple(a) for a in local_media[media])
            for their_dir in ("tx", "rx"):
                pick = None
                for name in self._ours(media):
                    pick = next((p for p in proposals if p[0] == their_dir and p[4] == media and p[5] == name), None)
                    if pick is not None:
                        break
                if pick is None:
                    continue
                _, olc, data_type, h2250, _, name = pick
                _, _, rc = self._describe(data_type)
                fmt = self._format(name, h2250.get("dynamicRTPPayloadType"), *_described(rc),
                                   _packetization_mode(self, h2250))
                session = int(h2250.get("sessionID") or _SESSION_OF[media])
                olc = dict(olc)
                if their_dir == "tx":          # the caller sends, we receive
                    ch = LogicalChannel(number=int(olc["forwardLogicalChannelNumber"]), direction="rx",
                                        media=media, format=fmt, capability=data_type,
                                        session_id=session, local_media=rtp, local_rtcp=rtcp,
                                        remote_rtcp=parse_h245_address(h2250.get("mediaControlChannel")),
                                        state="open", fast_start=True)
                    params = dict(h2250, mediaChannel=_addr(rtp), mediaControlChannel=_addr(rtcp))
                    fwd = dict(olc["forwardLogicalChannelParameters"],
                               multiplexParameters=("h2250LogicalChannelParameters", params))
                    olc["forwardLogicalChannelParameters"] = fwd
                else:                          # the caller receives, we send
                    ch = LogicalChannel(number=self._allocate_number(), direction="tx", media=media,
                                        format=fmt, capability=data_type,
                                        session_id=session, local_rtcp=rtcp,
                                        remote_media=parse_h245_address(h2250.get("mediaChannel")),
                                        remote_rtcp=parse_h245_address(h2250.get("mediaControlChannel")),
                                        state="open", fast_start=True)
                    if ch.remote_media is None:
                        log.warning("%s: fastStart receive proposal without mediaChannel skipped", self.name)
                        continue
                    params = dict(h2250, mediaControlChannel=_addr(rtcp))
                    rev = dict(olc["reverseLogicalChannelParameters"],
                               multiplexParameters=("h2250LogicalChannelParameters", params))
                    olc["reverseLogicalChannelParameters"] = rev
                    olc["forwardLogicalChannelNumber"] = ch.number
                answers.append(asn1.encode_open_logical_channel(olc))
                self.channels[ch.key] = ch
                chosen.append(ch)
        return answers, chosen

    def fast_start_accepted(self, answered: Iterable[bytes]) -> list[LogicalChannel]:
        """Caller side: the channels the callee accepted in its fastStart answer, with
        the callee's RTP / RTCP addresses.  Our other proposals are dropped."""
        out: list[LogicalChannel] = []
        for data in answered:
            p = self._read_proposal(data)
            if p is None:
                continue
            their_dir, olc, data_type, h2250 = p
            media, name, rc = self._describe(data_type)
            number = int(olc["forwardLogicalChannelNumber"])
            if name is None:
                log.warning("%s: fastStart answer %d with a data type we do not know ignored", self.name, number)
                continue
            if their_dir == "rx":      # reverse parameters: the callee sends, we receive
                offer = next((o for o in self._fs_offer.values() if o.direction == "rx" and o.media == media
                              and o.codec_name == name), None) or next(
                    (o for o in self._fs_offer.values() if o.direction == "rx" and o.media == media), None)
                if offer is None:
                    log.warning("%s: fastStart answer for %s we never offered ignored", self.name, media)
                    continue
                ch = LogicalChannel(number=number, direction="rx", media=media,
                                    format=self._format(name, h2250.get("dynamicRTPPayloadType"), *_described(rc),
                                                        _packetization_mode(self, h2250)),
                                    capability=data_type,
                                    session_id=int(h2250.get("sessionID") or offer.session_id),
                                    local_media=offer.local_media, local_rtcp=offer.local_rtcp,
                                    remote_rtcp=parse_h245_address(h2250.get("mediaControlChannel")),
                                    state="open", fast_start=True)
            else:                      # forward parameters: we send, the callee receives
                offer = self._fs_offer.get(number)
                if offer is None or offer.direction != "tx":
                    offer = next((o for o in self._fs_offer.values() if o.direction == "tx"
                                  and o.media == media and o.codec_name == name), None)
                if offer is None:
                    log.warning("%s: fastStart answer %d matches none of our proposals", self.name, number)
                    continue
                remote_rtp = parse_h245_address(h2250.get("mediaChannel"))
                if remote_rtp is None:
                    log.warning("%s: fastStart answer %d without mediaChannel ignored", self.name, number)
                    continue
                ch = LogicalChannel(number=offer.number, direction="tx", media=media,
                                    format=self._format(name, offer.payload_type, *_described(rc),
                                                        _packetization_mode(self, h2250)),
                                    capability=data_type,
                                    session_id=int(h2250.get("sessionID") or offer.session_id),
                                    local_rtcp=offer.local_rtcp, remote_media=remote_rtp,
                                    remote_rtcp=parse_h245_address(h2250.get("mediaControlChannel")),
                                    state="open", fast_start=True)
            if ch.remote_rtcp == ch.local_rtcp:   # our own address echoed back
                ch.remote_rtcp = None
            self.channels[ch.key] = ch
            out.append(ch)
        self._fs_offer.clear()
        # one RTCP address per session: the callee may give it in only one of the two
        for ch in out:
            if ch.remote_rtcp is None:
                ch.remote_rtcp = next((o.remote_rtcp for o in out if o.session_id == ch.session_id
                                       and o.remote_rtcp is not None), None)
        return out


_NO_LIMITS = Limits()


def _described(rc: RemoteCapability | None) -> tuple[Any, int | None]:
    """(params, bitrate cap) of a DataType's capability, for :meth:`H245Session._format`."""
    return (rc.params, rc.bitrate_cap) if rc is not None else (None, None)


def _packetization_mode(session: H245Session, h2250: Mapping[str, Any]) -> int | None:
    """The H.264 packetization mode an H2250LogicalChannelParameters' mediaPacketization names."""
    p = h2250.get("mediaPacketization")
    if p and p[0] == "rtpPayloadType":
        desc = p[1].get("payloadDescriptor")
        if desc and desc[0] == "oid":
            codec = session.catalogue.get("H264") if "H264" in session.catalogue else None
            return h264_rules.packetization_mode_of(codec, tuple(desc[1]))
    return None


def _h2250_capability(catalogue: Catalogue) -> dict[str, Any]:
    """H2250Capability for our TerminalCapabilitySet's multiplexCapability (H.323 §6.2.8.1):
    centralized (MCU-style) multipoint, RTCP video control, H.264 packetization modes."""
    none = {"multicastCapability": False, "multiUniCastConference": False,
            "mediaDistributionCapability": [{
                "centralizedControl": True, "distributedControl": False, "centralizedAudio": True,
                "distributedAudio": False, "centralizedVideo": True, "distributedVideo": False}]}
    payloads = []
    try:
        pk = catalogue.get("H264").h245.get("packetization") or {}
        for mode in ("mode0", "mode1"):
            if mode in pk:
                payloads.append({"payloadDescriptor": ("oid", tuple(int(x) for x in str(pk[mode]).split(".")))})
    except Exception:
        payloads = []
    mpc: dict[str, Any] = {"h261aVideoPacketization": False}
    if payloads:
        mpc["rtpPayloadType"] = payloads
    return {"maximumAudioDelayJitter": 250, "receiveMultipointCapability": dict(none),
            "transmitMultipointCapability": dict(none), "receiveAndTransmitMultipointCapability": dict(none),
            "mcCapability": {"centralizedConferenceMC": False, "decentralizedConferenceMC": False},
            "rtcpVideoControlCapability": True, "mediaPacketizationCapability": mpc}


# --------------------------------------------------------------------------- H.235.6 helpers

def _encryption_algorithms() -> dict[str, Any]:
    return {"encryptionCapability": [("algorithm", h2356.AES128_OID)]}


def _offers_aes128(eai: Any) -> bool:
    """An EncryptionAuthenticationAndIntegrity that lists AES-128 among its algorithms."""
    if not isinstance(eai, Mapping):
        return False
    for alg in eai.get("encryptionCapability") or ():
        try:
            kind, oid = alg
        except (TypeError, ValueError):
            continue
        if kind == "algorithm" and tuple(oid) == h2356.AES128_OID:
            return True
    return False


def _h235_media(data_type: Any) -> tuple[str, Any]:
    """An OpenLogicalChannel DataType made H.235.6: h235Media {AES-128, the media type}."""
    return ("h235Media", {"encryptionAuthenticationAndIntegrity": _encryption_algorithms(),
                          "mediaType": data_type})


def _with_security(tcs: Mapping[str, Any]) -> dict[str, Any]:
    """Our TerminalCapabilitySet with an h235SecurityCapability (AES-128) for every audio and
    video entry, numbered 100 + n and put in the same alternative set as n (H323Plus' layout)."""
    table = list(tcs.get("capabilityTable", ()))
    media = [e["capabilityTableEntryNumber"] for e in table
             if "capability" in e and e["capability"][0] in (
                 "receiveAudioCapability", "transmitAudioCapability", "receiveAndTransmitAudioCapability",
                 "receiveVideoCapability", "transmitVideoCapability", "receiveAndTransmitVideoCapability")]
    base = 100 if max((e["capabilityTableEntryNumber"] for e in table), default=0) < 100 else 1000
    extra = {n: base + n for n in media}
    table += [{"capabilityTableEntryNumber": extra[n],
               "capability": ("h235SecurityCapability", {"encryptionAuthenticationAndIntegrity":
                                                         _encryption_algorithms(), "mediaCapability": n})}
              for n in media]
    descriptors = []
    for d in tcs.get("capabilityDescriptors", ()):
        d = dict(d)
        d["simultaneousCapabilities"] = [list(alt) + [extra[n] for n in alt if n in extra]
                                         for alt in d.get("simultaneousCapabilities", ())]
        descriptors.append(d)
    return dict(tcs, capabilityTable=table, capabilityDescriptors=descriptors)
