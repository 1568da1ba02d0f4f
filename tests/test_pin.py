"""The PIN gate as a caller meets it: a prompt is heard, a wrong PIN beeps, the right one admits."""
from __future__ import annotations

import asyncio
import random

from gateway.catalogue import default_catalogue
from gateway.conference.rtp_media import audio_leg
from gateway.conference.pin import PinGate
from gateway.media.codecs import MediaFormat
from gateway.media.clock import MediaClock
from gateway.media.ports import PortAllocator
from gateway.media.rtp import open_rtp_session, read_pending
from interop_tests.peers.rtp_participant import RtpParticipant, band_level_db
from tests.conftest import LOOP, run_for


def caller():
    base = random.randrange(20000, 50000, 2)
    alloc = PortAllocator(base, base + 9)
    session = open_rtp_session(alloc, clock_rate=8000)
    leg = audio_leg(session, MediaFormat(default_catalogue().get("PCMU"), 0), dtmf_pt=101)
    p = RtpParticipant("PCMU", 0, dtmf_pt=101)
    port = LOOP.run_until_complete(p.start())
    session.set_remote("127.0.0.1", port)
    p.set_remote("127.0.0.1", session.local_port)
    return alloc, leg, p


def talk(p: RtpParticipant, seconds: float) -> None:
    LOOP.run_until_complete(p.run(seconds))


def test_prompt_wrong_pin_then_right_pin_admits():
    alloc, leg, p = caller()
    clock = MediaClock()
    clock.add_late_hook(read_pending)  # as the app wires it
    clock.start()
    admitted = []
    gate = PinGate(leg, "2468", clock, on_admit=admitted.append)
    try:
        talk(p, 0.8)
        heard = p.heard(0.8)
        assert band_level_db(heard, 8000, 523) > -40 or band_level_db(heard, 8000, 784) > -40, "no prompt heard"
        p.clear()
        for d in "1111":
            p.send_dtmf(d)
            talk(p, 0.06)
        talk(p, 0.6)
        assert band_level_db(p.heard(0.7), 8000, 330) > -40, "no wrong-PIN beeps"
        assert not admitted and not leg.hung_up
        for d in "2468#":
            p.send_dtmf(d)
            talk(p, 0.06)
        talk(p, 1.0)
        assert admitted == [leg]
        assert not leg.hung_up
    finally:
        gate._stop()
        leg.hangup("test over")
        p.close()
        run_for(0.1)
        clock.stop()
    assert alloc.in_use == 0


def test_three_wrong_pins_hang_up():
    alloc, leg, p = caller()
    clock = MediaClock()
    clock.add_late_hook(read_pending)  # as the app wires it
    clock.start()
    admitted = []
    PinGate(leg, "2468", clock, on_admit=admitted.append)
    try:
        talk(p, 0.2)
        for attempt in range(3):
            for d in "9999":
                p.send_dtmf(d)
                talk(p, 0.06)
            talk(p, 0.8)
        talk(p, 0.6)  # the last wrong-PIN beeps finish, then the gate hangs up
        assert leg.hung_up and "wrong PIN" in leg.hangup_reason
        assert not admitted
    finally:
        leg.hangup("test over")
        p.close()
        run_for(0.1)
        clock.stop()
    assert alloc.in_use == 0


def _key_in(p: RtpParticipant, digits: str, after: float = 0.8) -> None:
    for d in digits:
        p.send_dtmf(d)
        talk(p, 0.06)
    talk(p, after)


def test_guessing_from_one_address_is_locked_out_and_the_room_keeps_its_seats():
    """The finding: 8 parallel callers found a 4-digit PIN in 22 s. Now every wrong PIN counts
    against the address; the fifth locks it out (even with the right PIN), callers at the prompt
    hold seats, and one address may keep only three callers at a prompt."""
    from gateway.conference.registry import RoomRegistry
    from gateway.conference.rtp_media import admit
    from gateway.dialplan import parse_dialplan

    spec = parse_dialplan('version: 1\nrooms:\n  - {id: kin, name: K, numbers: ["7000"], pin: "2468", '
                          'max_participants: 4}\n', "pin.yaml").rooms[0]
    clock = MediaClock()
    clock.add_late_hook(read_pending)
    clock.start()
    registry = RoomRegistry(clock)
    callers, refused, joined = [], [], []

    def call_in():
        alloc, leg, p = caller()
        leg.remote = "198.18.0.7:5060"          # (a label: the RTP itself is on loopback)
        callers.append((alloc, leg, p))
        gate = admit(registry, spec, leg, on_joined=joined.append, on_refused=refused.append)
        return leg, p, gate

    try:
        a_leg, a, _ = call_in()
        b_leg, b, _ = call_in()
        c_leg, c, _ = call_in()
        assert registry.waiting_count("kin") == 3
        d_leg, d, gate = call_in()                       # a fourth from the same address: refused
        assert gate is None and "entering a PIN already" in refused[-1].reason
        _key_in(a, "1111")                               # wrong 1 (a), then a is deaf for 2 s
        _key_in(b, "2222")                               # wrong 2 (b)
        _key_in(c, "3333", after=2.5)                    # wrong 3 (c)
        _key_in(a, "4444", after=2.5)                    # wrong 4 (a, after its pause)
        _key_in(b, "5555", after=1.5)                    # wrong 5: the address is locked out
        assert b_leg.hung_up and "too many wrong PINs" in b_leg.hangup_reason
        assert registry.pin_guard.refused("198.18.0.7", "kin")
        _key_in(c, "2468#", after=1.0)                   # the right PIN, but too late for this address
        assert not joined
        e_leg, e, gate = call_in()                       # a new call from the address: refused at once
        assert gate is None and "too many wrong PINs" in refused[-1].reason
        alarms = registry.pin_guard.alarms()
        assert alarms and alarms[0]["kind"] == "source" and alarms[0]["name"] == "198.18.0.7"
    finally:
        for alloc, leg, p in callers:
            leg.hangup("test over")
            p.close()
        run_for(0.1)
        clock.stop()
    assert registry.waiting_count("kin") == 0
    assert all(alloc.in_use == 0 for alloc, _, _ in callers)


def test_callers_at_the_prompt_hold_seats():
    from gateway.conference.registry import RoomRegistry
    from gateway.conference.room import RoomFull
    from gateway.conference.rtp_media import admit
    from gateway.dialplan import parse_dialplan

    spec = parse_dialplan('version: 1\nrooms:\n  - {id: nho, name: N, numbers: ["7001"], pin: "13579", '
                          'max_participants: 2}\n', "pin.yaml").rooms[0]
    clock = MediaClock()
    clock.start()
    registry = RoomRegistry(clock)
    made, refused = [], []
    try:
        for host in ("198.18.0.1", "198.18.0.2", "198.18.0.3"):
            alloc, leg, p = caller()
            leg.remote = f"{host}:5060"
            made.append((alloc, leg, p))
            admit(registry, spec, leg, on_joined=lambda room: None, on_refused=refused.append)
        assert registry.waiting_count("nho") == 2
        assert len(refused) == 1 and isinstance(refused[0], RoomFull)
    finally:
        for alloc, leg, p in made:
            leg.hangup("test over")
            p.close()
        run_for(0.1)
        clock.stop()
    assert registry.waiting_count("nho") == 0
