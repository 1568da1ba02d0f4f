"""A room as its participants hear it: real RTP on loopback, real codecs, the real mixer.

Each participant is an independent RTP peer (interop_tests.peers.rtp_participant:
PyAV codecs, its own sockets); the gateway side is the media plane exactly as the
adapters will use it (RtpSession → AudioStream → Room/AudioMixer → RtpSession).
"""
from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

from gateway.catalogue import default_catalogue
from gateway.conference.plane import media_plane
from gateway.conference.rtp_media import audio_leg
from gateway.dialplan import load_dialplan
from gateway.media.codecs import MediaFormat
from gateway.media.rtp import open_rtp_session
from gateway.resources import default_dialplan
from interop_tests.peers.rtp_participant import RtpParticipant, band_level_db, tone_level_db, spectrum_peak
from tests.conftest import LOOP, run_for

CAT = default_catalogue()
SPEC = load_dialplan(default_dialplan()).room("demo")
ALL = [("PCMU", 0), ("PCMA", 8), ("G722", 9), ("opus", 111)]
DTMF_PT = 101


class Harness:
    def __init__(self, rtp_timeout: float = 10.0):
        # below the kernel's ephemeral ports (32768.. by default), where the peers' sockets land
        base = random.randrange(10000, 32000, 2)
        plane = media_plane((base, base + 199), grace_period=0.2, start_clock=True)  # as the app wires it
        self.plane = plane
        self.allocator, self.clock, self.registry = plane.ports, plane.clock, plane.registry
        self.rtp_timeout = rtp_timeout
        self.parts: list[RtpParticipant] = []
        self.legs = []
        self.closed = False

    def add(self, codec: str, pt: int, timeout: float | None = None):
        c = CAT.get(codec)
        session = open_rtp_session(self.allocator, clock_rate=c.clock_rate, timeout=timeout or self.rtp_timeout)
        leg = audio_leg(session, MediaFormat(c, pt), dtmf_pt=DTMF_PT, display_name=codec)
        p = RtpParticipant(codec, pt, dtmf_pt=DTMF_PT, seed=len(self.parts))
        port = LOOP.run_until_complete(p.start())
        session.set_remote("127.0.0.1", port)
        p.set_remote("127.0.0.1", session.local_port)
        self.room = self.registry.join(SPEC, leg)
        self.parts.append(p)
        self.legs.append(leg)
        return p, leg

    def talk(self, seconds: float, parts=None) -> None:
        parts = self.parts if parts is None else parts
        LOOP.run_until_complete(asyncio.gather(*(p.run(seconds) for p in parts)))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for leg in self.legs:
            leg.hangup("test over")
        for p in self.parts:
            p.close()
        run_for(0.1)
        self.plane.stop()


@pytest.fixture
def harness():
    hs: list[Harness] = []

    def make(**kw) -> Harness:
        h = Harness(**kw)
        hs.append(h)
        return h

    yield make
    for h in hs:
        h.close()


def check_unless_stalled(measure, tries: int = 3) -> None:
    """``measure()`` talks and returns ``(harness, its clock's resyncs before the window
    measured, check)``; then ``check()`` asserts what was heard. When a check fails and the
    media clock had to resync in that window (the whole test process froze beyond its
    catch-up: a VM pause), the talkers in this process froze too, which no remote talker
    would do, and the window was not what the check assumes: measure again, at most
    ``tries`` times in all. A failure without a stall fails at once."""
    for attempt in range(tries):
        h, resyncs, check = measure()
        stalled = h.clock.stats.resyncs != resyncs
        try:
            check()
            return
        except AssertionError as e:
            if not stalled or attempt == tries - 1:
                if stalled:
                    e.args = (f"{e.args[0] if e.args else ''} (the test machine stalled in each of "
                              f"{tries} tries: {h.clock.stats.skipped} ticks skipped)",)
                raise


def talk_and_check(h: Harness, seconds: float, check, tries: int = 3, settle: float = 0.0) -> None:
    """Talk for ``settle`` + ``seconds`` (a stall while settling does not count), then
    ``check()`` what was heard, by :func:`check_unless_stalled`."""
    def measure():
        for p in h.parts:
            p.clear()
        if settle:
            h.talk(settle)
        resyncs = h.clock.stats.resyncs
        h.talk(seconds)
        return h, resyncs, check

    check_unless_stalled(measure, tries)


def test_a_tone_in_each_codec_is_heard_at_1khz_in_every_other_codec_and_not_by_its_sender(harness):
    h = harness()
    for codec, pt in ALL:
        h.add(codec, pt)

    def check_round(talker):
        for p in h.parts:
            heard = p.heard(0.5)
            freq, level = spectrum_peak(heard, p.rate)
            if p is talker:
                assert level < -50, f"{p.codec} hears itself at {level:.1f} dBFS"
            else:
                assert abs(freq - 1000) < 25, f"{talker.codec} → {p.codec}: heard {freq:.0f} Hz"
                assert -24 < level < -9, f"{talker.codec} → {p.codec}: level {level:.1f} dBFS"

    for talker in h.parts:
        for p in h.parts:
            p.play_silence()
        talker.play_tone(1000, level_dbfs=-12)
        talk_and_check(h, 1.2, lambda: check_round(talker))


def test_three_talkers_each_hear_the_other_two_but_not_themselves(harness):
    h = harness()
    tones = {"PCMU": 500.0, "G722": 1000.0, "opus": 1500.0}
    for codec, pt in [("PCMU", 0), ("G722", 9), ("opus", 111), ("PCMA", 8)]:
        p, _ = h.add(codec, pt)
        if codec in tones:
            p.play_tone(tones[codec], level_dbfs=-16)

    def check():
        for p in h.parts:
            heard = p.heard(0.6)
            for codec, f in tones.items():
                if codec == p.codec:
                    level = band_level_db(heard, p.rate, f)
                    assert level < -45, f"{p.codec} hears its own {f} Hz at {level:.1f} dB"
                else:
                    level = tone_level_db(heard, p.rate, f)
                    assert level > -35, f"{p.codec} does not hear {codec}'s {f} Hz ({level:.1f} dB)"
        assert sorted(h.room.mixer.speakers) == sorted(leg.id for leg in h.legs if leg.display_name in tones)

    talk_and_check(h, 1.5, check)


def test_five_percent_loss_and_reordering_still_give_continuous_audio(harness):
    h = harness()
    talker, _ = h.add("G722", 9)
    talker.loss, talker.reorder = 0.05, 0.05
    talker.play_tone(800, level_dbfs=-12)
    listener, _ = h.add("PCMU", 0)

    def check():
        # the last 1.5 s before the talker stopped: the last 0.1 s the listener received may
        # already be the end (the talker's final packet lost or held back by the reordering,
        # never sent: concealed, then silence) - not a gap
        heard = listener.heard(1.6)[: -listener.rate // 10]
        blocks = heard[: len(heard) // 160 * 160].reshape(-1, 160).astype(np.float64)
        rms_db = 20 * np.log10(np.sqrt((blocks**2).mean(axis=1)) / 32768 + 1e-12)
        assert (rms_db < -40).sum() == 0, f"{(rms_db < -40).sum()} silent 20 ms gaps in what the listener heard"
        freq, _ = spectrum_peak(heard, listener.rate)
        assert abs(freq - 800) < 25
        stream = h.legs[0].audio.source
        assert stream.jitter.stats.lost + stream.jitter.stats.late > 0, "the loss was not even seen"

    talk_and_check(h, 1.8, check, tries=4, settle=0.7)


def test_dtmf_digit_arrives_as_an_event_on_the_leg(harness):
    h = harness()
    p, leg = h.add("PCMA", 8)
    digits: list[str] = []
    leg.on("dtmf", lambda digit: digits.append(digit))
    h.talk(0.2)
    for d in "19#":
        p.send_dtmf(d)
        h.talk(0.1)
    assert digits == ["1", "9", "#"]


def test_a_silent_leg_times_out_is_removed_and_its_ports_are_released(harness):
    h = harness()
    keeps, _ = h.add("PCMU", 0, timeout=10)
    goes, leg = h.add("G722", 9, timeout=0.6)
    in_use = h.allocator.in_use
    assert in_use == 2
    h.talk(0.3)
    goes.close()  # the far end vanishes without a word
    deadline = LOOP.time() + 5
    while leg.state != "left" and LOOP.time() < deadline:
        h.talk(0.1, [keeps])
    assert leg.state == "left" and "no media" in leg.hangup_reason
    assert leg.id not in h.room.legs
    run_for(0.1)
    assert h.allocator.in_use == 1


def test_ports_are_released_after_many_calls(harness):
    h = harness()
    for _ in range(40):
        c = CAT.get("PCMU")
        session = open_rtp_session(h.allocator, clock_rate=8000)
        leg = audio_leg(session, MediaFormat(c, 0))
        h.registry.join(SPEC, leg)
        leg.hangup("done")
    run_for(0.2)
    assert h.allocator.in_use == 0


def test_the_roster_shows_each_sites_loss_and_an_estimated_mos(harness):
    import json

    sites: list[Harness] = []

    def call_two_sites():
        if sites:
            sites[-1].close()  # figures are cumulative: a measurement again needs new sites
        h = harness()
        sites.append(h)
        clean, _ = h.add("PCMU", 0)
        clean.play_tone(500, level_dbfs=-12)
        lossy, _ = h.add("G722", 9)
        lossy.play_tone(800, level_dbfs=-12)
        lossy.loss = 0.10  # a commune's bad uplink: 10 % of its packets never arrive
        h.talk(3.0)
        for p in h.parts:
            p.send_rtcp_rr()  # each site reports what it receives from the bridge
        run_for(0.2)
        roster = {e["name"]: e for e in json.loads(json.dumps(h.room.roster()))}  # JSON as the API serves it
        return h, 0, lambda: check(roster["PCMU"]["quality"], roster["G722"]["quality"])

    def check(good, bad):
        # a stall of a second or so makes the in-process "clean" site's packets come in a
        # late burst: its line is then not clean, and its MOS rightly says so
        assert good["rx"]["packets"] > 100 and good["rx"]["loss_pct"] < 1 and good["rx"]["mos"] >= 4.0, good
        assert 5 < bad["rx"]["loss_pct"] < 16, bad
        assert bad["rx"]["mos"] < good["rx"]["mos"] - 0.3 and bad["rx"]["concealed"] > 0
        # the other direction, from the sites' RTCP receiver reports: both get clean audio
        assert good["tx"] is not None and good["tx"]["loss_pct"] < 1 and good["tx"]["mos"] >= 4.0, good
        assert bad["tx"] is not None and bad["tx"]["loss_pct"] < 1

    check_unless_stalled(call_two_sites)
