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
