"""DTMF as RFC 4733 telephone-events: the 4-byte payload, a receiver and a sender.

Payload (RFC 4733 §2.3)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    |     event     |E|R| volume    |          duration             |

An event is identified by its RTP timestamp (the event's start): every packet of
one event carries the same timestamp, the duration grows, the first packet has
the marker bit, and the end packet (E=1) is sent three times (§2.5.1.4).

**The receiver reports a digit at the first packet of the event** (not at its end):
PIN entry then reacts without waiting for the key to be released, and a digit
whose end packets are all lost is still reported.  It is reported exactly once.
"""
from __future__ import annotations

import logging
import struct
from collections import deque
from dataclasses import dataclass

__all__ = ["DIGITS", "DtmfReceiver", "DtmfSender", "DtmfStats", "TelephoneEvent", "digit_event", "parse_event"]

log = logging.getLogger("cau" + __name__.removeprefix("gateway"))

DIGITS = "0123456789*#ABCD"      # event codes 0..15 (RFC 4733 §3.2, Table 7)
_EVENT_OF = {d: i for i, d in enumerate(DIGITS)}
_EVENT_OF.update({d.lower(): i for i, d in enumerate(DIGITS) if d.isalpha()})
_STRUCT = struct.Struct("!BBH")


@dataclass(frozen=True)
class TelephoneEvent:
    event: int      # 0..255; 0-15 are the DTMF digits
    end: bool       # E bit: this is (a copy of) the final packet of the event
    volume: int     # 0..63, power level in -dBm0 (DTMF only)
    duration: int   # 0..65535, in RTP timestamp units since the event began

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise ValueError(f"telephone-event code {self.event} out of range 0..255")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"telephone-event volume {self.volume} out of range 0..63")
        if not 0 <= self.duration <= 0xFFFF:
            raise ValueError(f"telephone-event duration {self.duration} out of range 0..65535")

    @property
    def digit(self) -> str | None:
        """'0'-'9', '*', '#', 'A'-'D' for DTMF events, None for other events."""
        return DIGITS[self.event] if self.event < 16 else None

    def serialize(self) -> bytes:
        return _STRUCT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


def parse_event(payload: bytes) -> TelephoneEvent:
    """Parse a telephone-event payload (the first event if several are packed, §2.5.1.5)."""
    if len(payload) < 4:
        raise ValueError(f"telephone-event payload is {len(payload)} bytes, expected at least 4")
    if len(payload) % 4:
        raise ValueError(f"telephone-event payload is {len(payload)} bytes, not a multiple of 4")
    event, evol, duration = _STRUCT.unpack_from(payload)
    return TelephoneEvent(event=event, end=bool(evol & 0x80), volume=evol & 0x3F, duration=duration)


def digit_event(digit: str) -> int:
    """The RFC 4733 event code of a DTMF digit."""
    try:
        return _EVENT_OF[digit]
    except KeyError:
        raise ValueError(f"{digit!r} is not a DTMF digit (expected one of {DIGITS})") from None


@dataclass
class DtmfStats:
    packets: int = 0    # payloads fed
    digits: int = 0     # digits reported
    errors: int = 0     # malformed payloads (dropped)
    ignored: int = 0    # valid non-DTMF events (flash, tones ...) (dropped)


class DtmfReceiver:
    """Turns a stream of telephone-event packets into digits, each reported once."""

    def __init__(self, memory: int = 16) -> None:
        self.stats = DtmfStats()
        self._recent: deque[tuple[int, int]] = deque(maxlen=memory)  # (timestamp, event) seen
        self._current: tuple[int, int] | None = None                 # event in progress
        self._current_ended = True

    def feed(self, payload: bytes, rtp_timestamp: int, marker: bool) -> str | None:
        """One telephone-event RTP packet → the digit if this packet starts a new event, else None."""
        self.stats.packets += 1
        try:
            ev = parse_event(payload)
        except ValueError as exc:
            self.stats.errors += 1
            log.debug("dropping bad telephone-event payload: %s", exc)
            return None
        key = (rtp_timestamp & 0xFFFFFFFF, ev.event)
        if key == self._current:
            if ev.end:
                self._current_ended = True
            return None
        if key in self._recent:          # late / reordered copy of an event already seen
            return None
        # A long event is cut into segments with new timestamps and no marker (§2.5.1.3):
        # same event code, previous not ended, no marker → still the same key press.
        continuation = (not marker and self._current is not None and not self._current_ended
                        and self._current[1] == ev.event)
        self._recent.append(key)
        self._current = key
        self._current_ended = ev.end
        if continuation:
            return None
        digit = ev.digit
        if digit is None:
            self.stats.ignored += 1
            return None
        self.stats.digits += 1
        return digit


class DtmfSender:
    """Builds the RTP payloads of one key press per RFC 4733 §2.5.1."""

    def __init__(self, clock_rate: int = 8000, volume: int = 10) -> None:
        if not 0 <= volume <= 63:
            raise ValueError(f"volume {volume} out of range 0..63 (-dBm0)")
        self.clock_rate = clock_rate
        self.volume = volume

    def packets(self, digit: str, duration_ms: int = 100, ptime_ms: int = 20) -> list[tuple[bytes, bool, int]]:
        """``(payload, marker, timestamp_offset)`` for every packet of one event.

        All packets share the event's RTP timestamp, so ``timestamp_offset`` is 0 for
        each (add it to the timestamp the audio stream has at the key press).  Packet
        i is meant to be sent ``i * ptime_ms`` after the first.  The marker is set on
        the first packet only; the duration grows by one ptime per packet; the final
        packet (E bit, full duration) is sent three times.
        """
        event = digit_event(digit)
        if duration_ms <= 0 or ptime_ms <= 0:
            raise ValueError("duration_ms and ptime_ms must be positive")
        step = self.clock_rate * ptime_ms // 1000
        total = min(self.clock_rate * duration_ms // 1000, 0xFFFF)
        out: list[tuple[bytes, bool, int]] = []
        d = step
        first = True
        while d < total:
            out.append((TelephoneEvent(event, False, self.volume, d).serialize(), first, 0))
            first = False
            d += step
        end = TelephoneEvent(event, True, self.volume, total).serialize()
        for _ in range(3):
            out.append((end, first, 0))
            first = False
        return out
