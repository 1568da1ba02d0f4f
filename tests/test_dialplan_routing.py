"""Routing decisions: what a caller dialing a number actually gets."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.dialplan import DialPlan, load_dialplan, normalise, parse_dialplan

ROOT = Path(__file__).resolve().parent.parent
CODECS = {"PCMU", "PCMA", "G722", "opus", "telephone-event", "H263", "H263-1998", "H264", "VP8"}

PLAN = textwrap.dedent("""\
    version: 1
    defaults:
      max_participants: 30
      layout: cp-2x2
    rooms:
      - id: tinh
        name: "Phòng họp UBND tỉnh"
        numbers: ["8000", "Tinh", "+842103800000"]
        pin: "2468"
        layout: cp-3x3
        cascade: "0090001"
      - id: lab
        numbers: ["8100"]
    templates:
      - id: "huyen-{nn}"
        name: "Phòng họp huyện {nn}"
        max_participants: 40
    routes:
      - pattern: "81{nn:2}"
        where: {nn: ["01-05", "07"]}
        template: "huyen-{nn}"
      - number: "8888"
        room: tinh
      - prefix: "00"
        from: ["tinh", "xa-an-*"]
        dial: "h323:{rest}@mcu.quocgia.example"
      - prefix: "19"
        protocol: [sip, h323]
        reject: {status: 488, reason: "Không được phép gọi số dịch vụ"}
      - prefix: "19"
        reject: {}
      - pattern: "{user:*}.{site}"
        dial: "sip:{user}@site{site}.example"
    endpoints:
      - alias: xa-an-binh
        number: "8101001"
        protocol: h323
        networks: ["10.21.1.0/24", "2001:db8:21::/48"]
      - alias: xa-tan-lap
        protocol: webrtc
    """)


@pytest.fixture(scope="module")
def plan() -> DialPlan:
    return parse_dialplan(PLAN, "plan.yaml", CODECS)


def test_room_numbers_come_first_and_say_which_rule(plan: DialPlan) -> None:
    r = plan.route("8000")
    assert (r.kind, r.room.id, r.line) == ("room", "tinh", 8)
    assert r.rule == "room number 8000 of room 'tinh' (plan.yaml:8)"
    assert r.room.pin == "2468" and r.room.layout == "cp-3x3" and r.room.max_participants == 30
    # 8100 is a room number; the pattern 81{nn:2} comes later and does not get it
    assert plan.route("8100").room.id == "lab"


def test_aliases_case_insensitive_and_e164(plan: DialPlan) -> None:
    assert plan.route("TINH").room.id == "tinh"
    assert plan.route("tinh").room.id == "tinh"
    assert plan.route("+842103800000").room.id == "tinh"
    assert plan.route("842103800000").kind == "none"


@pytest.mark.parametrize("dialed", ["sip:8000@gw.example", "sips:8000@gw.example:5061;transport=tls",
                                    "<sip:8000@10.0.0.1>", "h323:8000@192.0.2.1", "tel:8000",
                                    " 8000 ", "SIP:8000@host?subject=x", "8000;user=phone",
                                    '"Phòng họp" <sip:8000@gw.example>;tag=1'])
def test_uri_normalisation(plan: DialPlan, dialed: str) -> None:
    assert plan.route(dialed).room.id == "tinh"


def test_normalise() -> None:
    assert normalise("sip:Tinh@gw;transport=udp") == "Tinh"
    assert normalise("") == "" and normalise(None) == ""


def test_template_pattern_with_where(plan: DialPlan) -> None:
    r = plan.route("8107")
    assert r.kind == "room" and r.captures == {"nn": "07"}
    room = r.room
    assert (room.id, room.name, room.template, room.numbers) == ("huyen-07", "Phòng họp huyện 07", "huyen-{nn}", ("8107",))
    assert room.max_participants == 40 and room.layout == "cp-2x2" and room.pin is None
    assert r.rule == "route #1 pattern 81{nn:2} (plan.yaml:19)"
    assert plan.route("8103").room.id == "huyen-03"
    for outside in ("8106", "8108", "8199", "81070"):
        r = plan.route(outside)
        assert (r.kind, r.status, r.rule) == ("none", 404, "no route matched")
        assert outside in r.reason


def test_exact_route_to_room(plan: DialPlan) -> None:
    r = plan.route("sip:8888@gw")
    assert (r.kind, r.room.id, r.line) == ("room", "tinh", 22)


def test_dial_target_substitution_and_from_condition(plan: DialPlan) -> None:
    r = plan.route("0090001", caller="tinh")
    assert (r.kind, r.target, r.captures) == ("dial", "h323:90001@mcu.quocgia.example", {"rest": "90001"})
    # a caller matched by glob, given as a URI
    assert plan.route("0090001", caller="sip:xa-an-binh@10.21.1.5").kind == "dial"
    # a known endpoint calling by its number matches the glob on its alias
    assert plan.route("0090001", caller="8101001").kind == "dial"
    # anybody else, or an unknown caller, gets no route
    assert plan.route("0090001", caller="xa-tan-lap").kind == "none"
    assert plan.route("0090001").kind == "none"
    assert plan.route("00", caller="tinh").kind == "none"  # a prefix needs something after it


def test_reject_with_protocol_condition(plan: DialPlan) -> None:
    r = plan.route("1900", protocol="SIP")
    assert (r.kind, r.status, r.reason, r.line) == ("reject", 488, "Không được phép gọi số dịch vụ", 27)
    r = plan.route("1900", protocol="webrtc")
    assert (r.kind, r.status, r.reason, r.line) == ("reject", 403, "call rejected by the dial plan", 30)


def test_any_char_captures(plan: DialPlan) -> None:
    r = plan.route("sip:Nguyen.Van.A.12@gw")
    assert r.kind == "dial" and r.target == "sip:Nguyen.Van.A@site12.example"


def test_room_lookup_resolves_template_rooms(plan: DialPlan) -> None:
    assert plan.room("tinh").name == "Phòng họp UBND tỉnh"
    room = plan.room("huyen-07")
    assert room is not None and room.numbers == ("8107",) and room.name == "Phòng họp huyện 07"
    assert plan.room("huyen-06") is None   # outside the where ranges
    assert plan.room("huyen-7") is None
    assert plan.room("nope") is None


def test_endpoint_lookup_and_networks(plan: DialPlan) -> None:
    ep = plan.endpoint("XA-AN-BINH")
    assert ep is not None and plan.endpoint("8101001") is ep and plan.endpoint("h323:8101001@x") is ep
    assert ep.username == "xa-an-binh" and ep.protocol == "h323" and ep.password is None
    assert ep.allows("10.21.1.77") and ep.allows("10.21.1.77:1720") and ep.allows("[2001:db8:21::5]:5060")
    assert not ep.allows("10.21.2.1") and not ep.allows("not an address") and not ep.allows("")
    assert plan.endpoint("xa-tan-lap").allows("203.0.113.9")  # no networks = any
    assert plan.endpoint("nobody") is None


def test_summary_and_dialable(plan: DialPlan) -> None:
    assert plan.summary() == "2 rooms, 1 template, 6 routes, 2 endpoints"
    dialable = dict(plan.dialable())
    assert dialable["8000"] == "room 'tinh': Phòng họp UBND tỉnh"
    assert "8101-8105, 8107" in dialable
    assert "00…" in dialable and "19…" not in dialable


def test_bad_input_never_crashes(plan: DialPlan) -> None:
    for junk in ["", "   ", "sip:@", "@@@", "{nn}", "\x00\xff", "8" * 5000, "sip:", ";;", "é" * 10]:
        r = plan.route(junk, caller=junk, protocol=junk)
        assert r.kind in ("none", "dial", "reject", "room")


# ---------------------------------------------------------------- shipped plans
def test_default_plan() -> None:
    plan = load_dialplan(ROOT / "dialplans" / "default.yaml", CODECS)
    first = plan.rooms[0]
    assert first.pin is None and plan.route(first.numbers[0]).room is first
    assert any(r.pin for r in plan.rooms[1:])
    assert plan.templates and plan.endpoints
    team = plan.route("3005").room
    assert team is not None and team.template == "team-{n}" and team.id == "team-5"
    assert ("3001-3009", "rooms 'team-{n}': Phòng nhóm {n} / Team room {n} (team rooms)") in plan.dialable()


def test_province_plan() -> None:
    plan = load_dialplan(ROOT / "dialplans" / "province.yaml", CODECS)
    r = plan.route("8000")
    assert r.room.id == "tinh" and r.room.max_participants == 250 and r.room.cascade == "0090001"
    cascade = plan.route(r.room.cascade, caller="tinh")
    assert cascade.kind == "dial" and cascade.target.startswith("h323:90001@")
    districts = [plan.route(f"81{nn:02d}").room for nn in range(1, 21)]
    assert [d.id for d in districts] == [f"huyen-{nn:02d}" for nn in range(1, 21)]
    assert plan.route("8107").room.id == "huyen-07"
    assert (plan.route("8121").kind, plan.route("8121").status) == ("none", 404)
    assert plan.route("8100").kind == "none"
    communes = [e for e in plan.endpoints if e.alias.startswith("xa-")]
    assert 150 <= len(communes) <= 200
    assert {e.protocol for e in communes} == {"h323", "sip", "webrtc"}
    ep = communes[0]
    assert plan.endpoint(ep.alias) is ep and plan.endpoint(ep.number) is ep
    assert ep.number.startswith("81") and len(ep.number) == 7
    # a commune's own number is not a conference room
    assert plan.route(ep.number).kind == "none"
    # anybody may call the national MCU; service numbers are refused, communes get 403
    assert plan.route("00123").target.startswith("h323:123@")
    h323_commune = next(e for e in communes if e.protocol == "h323")
    r = plan.route("1900", caller=h323_commune.alias, protocol="h323")
    assert (r.kind, r.status) == ("reject", 403)
    assert (plan.route("1900", caller="tinh", protocol="h323").status) == 404
