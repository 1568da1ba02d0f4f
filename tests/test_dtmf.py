"""RFC 4733 DTMF: payload format, one digit per key press, sender packet train."""
from __future__ import annotations

import pytest

from gateway.media.dtmf import DIGITS, DtmfReceiver, DtmfSender, TelephoneEvent, parse_event


def _play(rx: DtmfReceiver, packets: list[tuple[bytes, bool, int]], ts: int) -> list[str]:
    got = []
    for payload, marker, offset in packets:
        d = rx.feed(payload, ts + offset, marker)
        if d is not None:
            got.append(d)
    return got


def test_payload_round_trip() -> None:
    ev = TelephoneEvent(event=11, end=True, volume=10, duration=800)
    raw = ev.serialize()
    assert raw == bytes([11, 0x80 | 10, 0x03, 0x20])
    assert parse_event(raw) == ev and ev.digit == "#"
    assert parse_event(bytes([16, 0x0A, 0, 160])).digit is None  # flash: not a digit


def test_all_sixteen_digits_round_trip() -> None:
    tx, rx = DtmfSender(), DtmfReceiver()
    got: list[str] = []
    ts = 1000
    for digit in DIGITS:
        got += _play(rx, tx.packets(digit), ts)
        ts += 1600
    assert "".join(got) == DIGITS
    assert rx.stats.digits == 16 and rx.stats.errors == 0


def test_sender_follows_rfc4733() -> None:
    pkts = DtmfSender().packets("5", duration_ms=100, ptime_ms=20)
    events = [parse_event(p) for p, _m, _o in pkts]
    assert [m for _p, m, _o in pkts] == [True] + [False] * (len(pkts) - 1)
    assert {o for _p, _m, o in pkts} == {0}  # one timestamp for the whole event
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert all(e.event == 5 and e.volume == 10 for e in events)
    with pytest.raises(ValueError, match="not a DTMF digit"):
        DtmfSender().packets("x")


def test_digit_reported_once_despite_redundant_end_packets() -> None:
    rx = DtmfReceiver()
    pkts = DtmfSender().packets("7", duration_ms=200)
    assert _play(rx, pkts, 5000) == ["7"]
    # a late duplicate of the end packet changes nothing
    assert rx.feed(pkts[-1][0], 5000, False) is None
    assert rx.stats.digits == 1


def test_reported_at_first_packet_even_if_end_is_lost() -> None:
    rx = DtmfReceiver()
    pkts = DtmfSender().packets("1")
    assert rx.feed(pkts[0][0], 0, True) == "1"
    # all end packets lost; the next key press is still a new digit
    assert _play(rx, DtmfSender().packets("2"), 1600) == ["2"]


def test_same_digit_twice_is_two_events() -> None:
    rx, tx = DtmfReceiver(), DtmfSender()
    got = _play(rx, tx.packets("9"), 8000) + _play(rx, tx.packets("9"), 9600)
    assert got == ["9", "9"]


def test_long_event_segments_are_one_digit() -> None:
    rx = DtmfReceiver()
    # RFC 4733 §2.5.1.3: after 65535 units a new segment starts with a new timestamp, no marker
    assert rx.feed(TelephoneEvent(3, False, 10, 160).serialize(), 0, True) == "3"
    assert rx.feed(TelephoneEvent(3, False, 10, 65535).serialize(), 0, False) is None
    assert rx.feed(TelephoneEvent(3, False, 10, 160).serialize(), 65535, False) is None
    assert rx.feed(TelephoneEvent(3, True, 10, 800).serialize(), 65535, False) is None
    assert rx.stats.digits == 1


def test_bad_payloads() -> None:
    for bad in (b"", b"\x01", b"\x01\x02\x03", b"\x01\x02\x03\x04\x05"):
        with pytest.raises(ValueError):
            parse_event(bad)
    rx = DtmfReceiver()
    assert rx.feed(b"\x01\x02", 0, True) is None  # dropped and counted, never raised
    assert rx.stats.errors == 1
    assert rx.feed(bytes([16, 10, 0, 160]), 160, True) is None  # flash: ignored, counted
    assert rx.stats.ignored == 1
    with pytest.raises(ValueError):
        TelephoneEvent(1, False, 64, 0)
