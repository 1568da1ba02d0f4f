"""Conference core: legs, rooms, roster, the registry's open/close life cycle."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np
import pytest
from twisted.internet.task import Clock

from gateway.catalogue import default_catalogue
from gateway.conference import Leg, MediaStream, Room, RoomClosed, RoomFull, RoomRegistry
from gateway.media.codecs import MediaFormat
from gateway.media.clock import MediaClock
from tests.test_mixer import Silent, Sink, Tone, magnitude


@dataclass
class Spec:  # the attributes of the dial plan's RoomSpec that the conference uses
    id: str
    name: str = ""
    max_participants: int | None = None
    layout: str = "auto"
    numbers: list[str] = field(default_factory=list)


def audio_leg(name: str, src=None, protocol: str = "sip") -> Leg:
    sink = Sink([0])
    g722 = MediaFormat(default_catalogue().get("G722"), 9)
    leg = Leg(display_name=name, protocol=protocol, remote=f"sip:{name}@192.0.2.1")
    leg.add_stream(MediaStream("audio", "audio", g722, g722, source=src or Silent(), sink=sink))
    return leg


def recorder(target, events):
    out: list[tuple] = []
    for ev in events:
        target.on(ev, lambda *a, _ev=ev: out.append((_ev, *a)))
    return out


def test_join_leave_and_roster():
    room = Room(Spec("tinh", "Tỉnh"))
    ev = recorder(room, ["joined", "left"])
    a, b = audio_leg("Hà Giang"), Leg(display_name="Video only", protocol="h323", remote="10.0.0.9")
    room.join(a)
    room.join(b)
    room.join(a)  # joining twice is harmless
    assert ev == [("joined", a), ("joined", b)]
    assert a.state == b.state == "joined"
    roster = room.roster()
    json.dumps(roster)  # for the HTTP API
    assert [r["id"] for r in roster] == [a.id, b.id]
    assert roster[0]["name"] == "Hà Giang" and roster[0]["protocol"] == "sip" and roster[0]["audio"] == "G722"
    assert roster[1]["protocol"] == "h323" and roster[1]["remote"] == "10.0.0.9" and roster[1]["audio"] is None
    assert roster[0]["streams"] == {"audio": {"kind": "audio", "direction": "sendrecv",
                                              "rx": "G722/8000 (pt 9)", "tx": "G722/8000 (pt 9)"}}
    assert roster[1]["streams"] == {}
    assert roster[0]["joined_at"] > 0 and roster[0]["speaking"] is False and roster[0]["muted"] is False
    room.leave(a, "moved")
    room.leave(a, "moved")  # idempotent
    assert ev[-1] == ("left", a, "moved") and len(ev) == 3
    assert a.state == "left" and not a.hung_up  # leave does not hang up
    assert a.id not in room.mixer.members
    json.dumps(room.info())


def test_room_full_rejects_with_a_reason_adapters_can_use():
    room = Room(Spec("xa-01", max_participants=2))
    room.join(audio_leg("a"))
    room.join(audio_leg("b"))
    c = audio_leg("c")
    with pytest.raises(RoomFull) as exc:
        room.join(c)
    assert exc.value.sip_status == 486 and exc.value.q850_cause == 17
    assert "xa-01" in str(exc.value) and "full (2 participants)" in str(exc.value)
    assert c.state == "new" and len(room.legs) == 2 and c.id not in room.mixer.members
    unlimited = Room(Spec("big", max_participants=0))
    for i in range(30):
        unlimited.join(Leg())
    assert len(unlimited.legs) == 30


def test_hangup_removes_the_leg_once():
    room = Room(Spec("r"))
    ev = recorder(room, ["left"])
    leg = audio_leg("a")
    seen: list[str] = []
    leg.on("hangup", lambda reason: seen.append(reason))
    room.join(leg)
    leg.hangup("BYE from far end")
    leg.hangup("again")
    assert seen == ["BYE from far end"]
    assert ev == [("left", leg, "BYE from far end")]
    assert leg.id not in room.legs and leg.state == "left"
    with pytest.raises(ValueError, match="already hung up"):
        room.join(leg)


def test_audio_flows_through_the_room_and_speaking_is_reported():
    room = Room(Spec("r"))
    ev = recorder(room, ["speaking", "dominant"])
    a, b = audio_leg("a", Tone(400)), audio_leg("b")
    room.join(a)
    room.join(b)
    for _ in range(20):
        room.tick()
    sink_b = b.audio.sink
    assert magnitude(sink_b.audio(10), 400) > 5000
    assert ev == [("speaking", a, True), ("dominant", a)]
    assert room.roster()[0]["speaking"] is True and room.roster()[0]["dominant"] is True


def test_mute_events_map_to_the_mixer_both_ways():
    room = Room(Spec("r"))
    a, b = audio_leg("a", Tone(400)), audio_leg("b")
    room.join(a)
    room.join(b)
    a.mute("in", True)  # the endpoint muted its microphone (adapter-originated)
    for _ in range(20):
        room.tick()
    assert not b.audio.sink.audio(10).any()
    assert room.roster()[0]["muted"] is True
    told: list[tuple[str, bool]] = []
    b.on("mute", lambda direction, on: told.append((direction, on)))  # the adapter listens
    room.set_mute(b.id, mute_out=True)  # operator action
    assert told == [("out", True)]
    assert room.mixer.members[b.id].mute_out and room.roster()[1]["muted_out"] is True
    a.mute("both", False)
    assert not room.mixer.members[a.id].mute_in
    with pytest.raises(ValueError):
        a.mute("sideways")


def test_leg_events_are_validated_and_isolated(caplog):
    leg = Leg()
    with pytest.raises(ValueError, match="unknown leg event 'dmtf'"):
        leg.on("dmtf", print)
    digits: list[str] = []

    def broken(digit):
        raise RuntimeError("adapter bug")

    leg.on("dtmf", broken)
    unsub = leg.on("dtmf", lambda digit: digits.append(digit))
    with caplog.at_level(logging.ERROR):
        leg.emit("dtmf", digit="5")
    unsub()
    leg.emit("dtmf", digit="6")
    assert digits == ["5"] and "adapter bug" in caplog.text
    assert Leg().id != Leg().id and Leg().id.startswith("leg-")


def registry(grace: float = 60.0):
    reactor = Clock()
    clock = MediaClock(0.020, reactor=reactor)
    clock.start()
    reg = RoomRegistry(clock, grace_period=grace, reactor=reactor)
    return reg, clock, reactor


def test_registry_creates_one_room_per_id_and_drives_it_from_the_clock():
    reg, clock, reactor = registry()
    opened = []
    reg.on("room_opened", opened.append)
    r1 = reg.join(Spec("tinh"), audio_leg("a"))
    r2 = reg.join(Spec("tinh"), audio_leg("b"))
    r3 = reg.join(Spec("huyen-07"), audio_leg("c"))
    assert r1 is r2 and r1 is not r3
    assert opened == [r1, r3] and set(reg.rooms) == {"tinh", "huyen-07"}
    assert reg.get("tinh") is r1 and reg.get("nope") is None
    assert clock.subscribers == 2
    reactor.advance(0.1)
    assert r1.mixer.stats.ticks == 5 and r3.mixer.stats.ticks == 5


def test_a_dialplan_reload_does_not_change_a_room_in_progress():
    reg, _, _ = registry()
    room = reg.join(Spec("tinh", max_participants=2), audio_leg("a"))
    reg.join(Spec("tinh", max_participants=1), audio_leg("b"))  # reloaded plan says 1
    assert room.max_participants == 2 and len(room.legs) == 2


def test_room_closes_after_the_grace_period_and_rejoin_cancels_it():
    reg, clock, reactor = registry(grace=30.0)
    closed = []
    roster = []
    reg.on("room_closed", closed.append)
    reg.on("roster", lambda room, event, *args: roster.append((room.id, event)))
    a = audio_leg("a")
    room = reg.join(Spec("r"), a)
    a.hangup("BYE")
    reactor.advance(29.0)
    assert reg.get("r") is room and not closed
    b = audio_leg("b")
    reg.join(Spec("r"), b)  # rejoin within the grace period
    reactor.advance(60.0)
    assert reg.get("r") is room and not closed
    b.hangup("BYE")
    reactor.advance(30.0)
    assert closed == [room] and room.closed and reg.get("r") is None
    assert clock.subscribers == 0
    assert roster == [("r", "joined"), ("r", "left"), ("r", "joined"), ("r", "left")]
    with pytest.raises(RoomClosed) as exc:
        room.join(audio_leg("late"))
    assert exc.value.sip_status == 480
    fresh = reg.join(Spec("r"), audio_leg("c"))  # a new meeting in the same room
    assert fresh is not room and reg.get("r") is fresh


def test_close_hangs_up_every_leg_with_the_reason():
    reg, clock, _ = registry()
    legs = [audio_leg(n) for n in "abc"]
    reasons: list[str] = []
    for leg in legs:
        leg.on("hangup", lambda reason: reasons.append(reason))
        reg.join(Spec("r"), leg)
    assert reg.close("r", "meeting over")
    assert reasons == ["meeting over"] * 3
    assert all(leg.hung_up and leg.state == "left" for leg in legs)
    assert reg.get("r") is None and clock.subscribers == 0
    assert reg.close("r") is False


def test_a_room_nobody_could_join_does_not_linger():
    reg, _, reactor = registry(grace=5.0)
    leg = Leg()
    leg.hangup("CANCEL")  # the caller gave up while the call was being routed
    with pytest.raises(ValueError):
        reg.join(Spec("r"), leg)
    reactor.advance(5.0)
    assert reg.get("r") is None


def test_registry_rooms_mix_independently():
    reg, _, reactor = registry()
    a, b = audio_leg("a", Tone(400)), audio_leg("b")
    c, d = audio_leg("c", Tone(1000)), audio_leg("d")
    reg.join(Spec("x"), a)
    reg.join(Spec("x"), b)
    reg.join(Spec("y"), c)
    reg.join(Spec("y"), d)
    reactor.advance(0.4)
    hb, hd = b.audio.sink.audio(10), d.audio.sink.audio(10)
    assert magnitude(hb, 400) > 5000 and magnitude(hb, 1000) < 1
    assert magnitude(hd, 1000) > 5000 and magnitude(hd, 400) < 1
    assert isinstance(hb, np.ndarray)
