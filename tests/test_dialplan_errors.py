"""Every kind of dial plan mistake is reported as FILE:LINE:COL with an actionable message."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.dialplan import DialPlanError, Problem, load_dialplan, parse_dialplan

DATA = Path(__file__).parent / "data" / "dialplans"
CODECS = {"PCMU", "PCMA", "G722", "opus", "telephone-event", "H263", "H263-1998", "H264", "VP8"}


def problems(text: str, codec_names: set[str] | None = CODECS) -> list[Problem]:
    with pytest.raises(DialPlanError) as info:
        parse_dialplan(textwrap.dedent(text).lstrip("\n"), "plan.yaml", codec_names)
    return info.value.problems


def only(text: str, codec_names: set[str] | None = CODECS) -> Problem:
    found = problems(text, codec_names)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def test_problem_format_and_error_joins_all() -> None:
    p = Problem("plan.yaml", 12, 5, "unknown key")
    assert str(p) == "plan.yaml:12:5: unknown key"
    err = DialPlanError([Problem("a", 3, 1, "x"), Problem("a", 1, 1, "y")])
    assert str(err) == "a:1:1: y\na:3:1: x"


def test_yaml_syntax_error_reports_pyyaml_mark() -> None:
    with pytest.raises(DialPlanError) as info:
        load_dialplan(DATA / "syntax_error.yaml")
    (p,) = info.value.problems
    assert (p.line, p.col) == (5, 3)
    assert str(p).startswith(f"{DATA / 'syntax_error.yaml'}:5:3: YAML syntax error")
    assert "expected ',' or ']'" in p.message


def test_unknown_key_suggests_closest() -> None:
    p = only("""
        version: 1
        rooms:
          - id: tinh
            numbrs: ["8000"]
        """)
    assert (p.line, p.col) == (4, 5)
    assert "unknown key 'numbrs' in room 'tinh'" in p.message
    assert "did you mean 'numbers'?" in p.message
    assert "expected one of: id, name, numbers" in p.message


def test_unknown_top_level_key() -> None:
    p = only("""
        version: 1
        room:
          - id: tinh
        """)
    assert p.line == 2 and "did you mean 'rooms'?" in p.message


def test_wrong_type() -> None:
    p = only("""
        version: 1
        rooms:
          - id: tinh
            max_participants: "many"
        """)
    assert p.line == 4 and p.col == 23
    assert "max_participants of room 'tinh' must be a whole number from 1 to 10000, got text 'many'" in p.message


@pytest.mark.parametrize("value", ["8000", "0123", "+842103800000"])
def test_unquoted_numbers_are_refused(value: str) -> None:
    p = only(f"""
        version: 1
        rooms:
          - id: tinh
            numbers: [{value}]
        """)
    assert p.line == 4
    assert f'must be quoted: "{value}"' in p.message


def test_unquoted_pin_is_refused() -> None:
    p = only("""
        version: 1
        rooms:
          - id: tinh
            numbers: ["8000"]
            pin: 0246
        """)
    assert p.line == 5 and 'quoted: "0246"' in p.message


def test_bad_pin() -> None:
    p = only("""
        version: 1
        rooms:
          - id: tinh
            pin: "12"
        """)
    assert p.line == 4 and "4 to 10 digits" in p.message


def test_missing_required_keys() -> None:
    found = problems("""
        version: 1
        rooms:
          - name: "no id"
        endpoints:
          - alias: xa-a
        """)
    assert [(p.line, p.message.split(" (")[0]) for p in found] == [
        (3, "the room at line 3 is missing required key 'id'"),
        (5, "endpoint 'xa-a' is missing required key 'protocol'"),
    ]


def test_missing_version_and_bad_version() -> None:
    assert "missing required key 'version'" in only("rooms: []\n").message
    p = only("version: 2\n")
    assert p.line == 1 and "version: 1" in p.message


def test_duplicate_mapping_key_is_detected() -> None:
    p = only("""
        version: 1
        rooms:
          - id: tinh
            pin: "1111"
            layout: cp-2x2
            pin: "2222"
        """)
    assert p.line == 6
    assert "duplicate key 'pin' in room 'tinh' (first given at line 4)" in p.message


def test_duplicate_room_ids() -> None:
    p = only("""
        version: 1
        rooms:
          - id: tinh
          - id: huyen
          - id: tinh
        """)
    assert p.line == 5 and "duplicate room id 'tinh' (already used by the room at line 3)" in p.message


def test_same_number_on_two_rooms_and_on_room_and_endpoint() -> None:
    found = problems("""
        version: 1
        rooms:
          - id: a
            numbers: ["8000", "Tinh"]
          - id: b
            numbers: ["tinh"]
        endpoints:
          - alias: ep
            protocol: sip
            number: "8000"
        """)
    assert [p.line for p in found] == [6, 10]
    assert "number 'tinh' of room 'b' is already used by room 'a' (line 4)" in found[0].message
    assert "number '8000' of endpoint 'ep' is already used by room 'a' (line 4)" in found[1].message


def test_unknown_layout() -> None:
    p = only("""
        version: 1
        defaults:
          layout: cp3x3
        """)
    assert p.line == 3 and "did you mean 'cp-3x3'?" in p.message


def test_codec_names_checked_case_insensitively_against_catalogue() -> None:
    text = """
        version: 1
        rooms:
          - id: a
            audio: {codecs: [OPUS, g722, G729]}
        """
    p = only(text)
    assert p.line == 4 and "unknown codec 'G729'" in p.message and "PCMU" in p.message
    good = parse_dialplan("version: 1\nrooms: [{id: a, audio: {codecs: [OPUS, g722]}}]\n", codec_names=CODECS)
    assert good.rooms[0].audio_codecs == ("opus", "G722")
    # without a catalogue the names are not checked
    unchecked = parse_dialplan(textwrap.dedent(text), codec_names=None)
    assert unchecked.rooms[0].audio_codecs == ("OPUS", "g722", "G729")


def test_bad_max_resolution_and_bitrate() -> None:
    found = problems("""
        version: 1
        rooms:
          - id: a
            video:
              max_resolution: 1280*720
              max_bitrate: 0
        """)
    assert [p.line for p in found] == [5, 6]
    assert "expected WIDTHxHEIGHT" in found[0].message
    assert "from 16 to 100000" in found[1].message


def test_route_to_missing_room_or_template() -> None:
    found = problems("""
        version: 1
        rooms:
          - id: tinh
        routes:
          - number: "8888"
            room: tinhh
          - pattern: "81{nn:2}"
            template: "huyen-{n}"
        """)
    assert [p.line for p in found] == [6, 8]
    assert "room 'tinhh', which does not exist (did you mean 'tinh'?)" in found[0].message
    assert "template 'huyen-{n}', which does not exist" in found[1].message


def test_template_placeholder_not_captured() -> None:
    p = only("""
        version: 1
        templates:
          - id: "huyen-{nn}"
        routes:
          - pattern: "81{n:2}"
            template: "huyen-{nn}"
        """)
    assert p.line == 6
    assert "uses {nn}, which pattern 81{n:2} of route #1 does not capture (captures: n)" in p.message


def test_where_names_unknown_capture_or_impossible_range() -> None:
    found = problems("""
        version: 1
        templates:
          - id: "huyen-{nn}"
        routes:
          - pattern: "81{nn:2}"
            where: {n: "01-20"}
            template: "huyen-{nn}"
          - pattern: "82{nn:2}"
            where: {nn: "100-200"}
            template: "huyen-{nn}"
          - pattern: "83{nn:2}"
            where: {nn: "20-10"}
            template: "huyen-{nn}"
          - pattern: "84{nn:2}"
            where: {nn: "01-200"}
            template: "huyen-{nn}"
        """)
    assert [p.line for p in found] == [6, 9, 12, 15]
    assert "unknown key 'n' in 'where' of route #1 (did you mean 'nn'?" in found[0].message
    assert "route #2 never matches: {nn:2} captures exactly 2 digits (0-99)" in found[1].message
    assert "is empty (low 20 > high 10)" in found[2].message
    assert "'01-200' of 'nn' in route #4 goes past what {nn:2} captures (2 digits, at most 99)" in found[3].message
    assert "write 01-99" in found[3].message


def test_route_needs_exactly_one_match_and_one_action() -> None:
    found = problems("""
        version: 1
        rooms:
          - id: a
        routes:
          - room: a
          - number: "1"
            prefix: "2"
            room: a
          - number: "3"
          - number: "4"
            room: a
            reject: {status: 403}
        """)
    assert [p.line for p in found] == [5, 6, 9, 10]
    assert "exactly one of number, prefix, pattern" in found[0].message and "found none" in found[0].message
    assert "found 'number' and 'prefix'" in found[1].message
    assert "exactly one of room, template, dial, reject" in found[2].message
    assert "found 'room' and 'reject'" in found[3].message


def test_bad_dial_targets() -> None:
    found = problems("""
        version: 1
        routes:
          - prefix: "00"
            dial: "http://{rest}.example"
          - prefix: "01"
            dial: "h323:{number}@192.0.2.10"
        """)
    assert [p.line for p in found] == [4, 6]
    assert "must be a sip:, sips: or h323: URI" in found[0].message
    assert "uses {number}, which prefix '01' does not capture (captures: rest)" in found[1].message


def test_cascade_must_reach_a_dial_rule() -> None:
    found = problems("""
        version: 1
        rooms:
          - id: tinh
            numbers: ["8000"]
            cascade: "0090001"
          - id: b
            cascade: "8000"
        """)
    assert [p.line for p in found] == [5, 7]
    assert "cascade number '0090001' of 'tinh' must route to a dial rule, but no route matches it" in found[0].message
    assert "it leads to room number 8000 of room 'tinh'" in found[1].message


def test_bad_cidr_suggests_network() -> None:
    found = problems("""
        version: 1
        endpoints:
          - alias: xa-a
            protocol: h323
            networks: ["10.21.0.1/16", "10.300.0.0/16"]
        """)
    assert [p.line for p in found] == [5, 5]
    assert "did you mean '10.21.0.0/16'?" in found[0].message
    assert "'10.300.0.0/16' of endpoint 'xa-a' is not a valid CIDR network" in found[1].message


def test_duplicate_endpoint_alias_and_number() -> None:
    found = problems("""
        version: 1
        endpoints:
          - {alias: xa-a, protocol: h323, number: "8101001"}
          - {alias: XA-A, protocol: sip}
          - {alias: xa-b, protocol: sip, number: "8101001"}
        """)
    assert [p.line for p in found] == [4, 5]
    assert "duplicate endpoint alias 'XA-A' (already used by the endpoint at line 3)" in found[0].message
    assert "number '8101001' of endpoint 'xa-b' is already used by endpoint 'xa-a' (line 3)" in found[1].message


def test_unknown_protocol_suggests() -> None:
    p = only("""
        version: 1
        endpoints:
          - {alias: xa-a, protocol: h.323}
        """)
    assert p.line == 3 and "did you mean 'h323'?" in p.message


def test_pattern_that_can_never_be_dialed() -> None:
    found = problems("""
        version: 1
        routes:
          - pattern: "{user:*}@example.org"
            reject: {}
          - pattern: "81{nn"
            reject: {}
        """)
    assert [p.line for p in found] == [3, 5]
    assert "route #1 never matches" in found[0].message and "'@'" in found[0].message
    assert "unclosed '{'" in found[1].message


def test_unused_template_and_template_colliding_with_room() -> None:
    found = problems("""
        version: 1
        rooms:
          - id: huyen-07
        templates:
          - id: "huyen-{nn}"
          - id: "spare-{n}"
        routes:
          - pattern: "81{nn:2}"
            template: "huyen-{nn}"
        """)
    assert [p.line for p in found] == [5, 6]
    assert "can create room id 'huyen-07', which is already the room at line 3" in found[0].message
    assert "template 'spare-{n}' is not used by any route" in found[1].message


def test_all_problems_are_collected_in_file_order() -> None:
    with pytest.raises(DialPlanError) as info:
        load_dialplan(DATA / "many_errors.yaml", CODECS)
    lines = [p.line for p in info.value.problems]
    assert lines == [6, 7, 9, 10, 11, 14, 18]
    text = str(info.value)
    assert text.count("\n") == 6
    assert text.splitlines()[0].startswith(f"{DATA / 'many_errors.yaml'}:6:5: unknown key 'numbrs'")


def test_file_level_problems() -> None:
    with pytest.raises(DialPlanError) as info:
        load_dialplan(DATA / "latin1.yaml")
    assert (info.value.problems[0].line, info.value.problems[0].col) == (4, 14)
    assert "not valid UTF-8" in str(info.value)
    with pytest.raises(DialPlanError) as info:
        load_dialplan(DATA / "does-not-exist.yaml")
    assert str(info.value) == f"{DATA / 'does-not-exist.yaml'}: cannot read the dial plan: No such file or directory"
    assert "is empty" in only("# nothing here\n").message
    assert "must be a mapping" in only("- just\n- a list\n").message


@pytest.mark.parametrize("garbage", ["version: 1\nrooms: 5\n", "version: 1\nrooms: [[1]]\n",
                                     "version: 1\nroutes: [{pattern: [1]}]\n", "{{{", "version: 1\n? [a]\n: b\n",
                                     "version: 1\nroutes: [{prefix: '', dial: 'sip:x@y'}]\n", "\t\n"])
def test_garbage_never_crashes(garbage: str) -> None:
    with pytest.raises(DialPlanError) as info:
        parse_dialplan(garbage)
    assert info.value.problems and all(p.message for p in info.value.problems)


def test_where_on_a_route_without_captures() -> None:
    p = only("""
        version: 1
        routes:
          - number: "8888"
            where: {nn: "1-2"}
            reject: {}
        """)
    assert p.line == 4 and "number '8888' captures nothing" in p.message


def test_template_id_needs_digit_captures_and_unique_ids() -> None:
    found = problems("""
        version: 1
        templates:
          - id: "room-{who}"
          - id: "room-{who}"
          - id: "Bad Id {x}"
        routes:
          - prefix: "7"
            template: "room-{rest}"
          - pattern: "6{who:*}"
            template: "room-{who}"
        """)
    assert [p.line for p in found] == [4, 5, 8, 10]
    assert "duplicate template id 'room-{who}'" in found[0].message
    assert "template id 'Bad Id {x}' must be a room id" in found[1].message
    assert "template 'room-{rest}', which does not exist (did you mean 'room-{who}'?)" in found[2].message
    assert "uses {who}, which route #2 captures with {who:*} (any characters)" in found[3].message


def test_reject_status_must_be_a_sip_error_code() -> None:
    # both problems are on the same line; the unknown key and the bad status are both reported
    found = problems("""
        version: 1
        routes:
          - prefix: "19"
            reject: {status: 200, reson: "x"}
        """)
    assert [(p.line, p.col) for p in found] == [(4, 22), (4, 27)]
    assert any("did you mean 'reason'?" in f.message for f in found)
    assert any("from 400 to 699" in f.message for f in found)


def test_absurdly_nested_yaml_is_a_clear_error_not_a_crash():
    from gateway.dialplan import DialPlanError, parse_dialplan

    with pytest.raises(DialPlanError) as e:
        parse_dialplan("version: 1\nrooms: " + "[" * 5000 + "]" * 5000 + "\n", "deep.yaml")
    assert "deep.yaml:1:1: the YAML is nested too deeply" in str(e.value)


def test_registration_keys_are_checked() -> None:
    found = problems("""
        version: 1
        open_registration: ["10.99.0.1/16"]
        endpoints:
          - {alias: mcu, protocol: h323, prefixes: ["5", "5x"]}
          - {alias: phone, protocol: sip, prefixes: ["7"]}
          - {alias: hdx, protocol: h323, identity: password}
          - {alias: box, protocol: h323, identity: network}
          - {alias: pc, protocol: sip, identity: magic}
    """)
    text = "\n".join(map(str, found))
    assert "plan.yaml:2:" in text and "did you mean '10.99.0.0/16'" in text
    assert "prefix '5x' of endpoint 'mcu' is not dialled digits" in text
    assert "only an H.323 gateway or MCU registers prefixes, and this endpoint is sip" in text
    assert "identity of endpoint 'hdx' is 'password' but the endpoint has no password" in text
    assert "identity of endpoint 'box' is 'network' but the endpoint has no networks" in text
    assert "plan.yaml:8:" in text and "magic" in text
    assert len(found) == 6, text


def test_identity_defaults_follow_what_the_endpoint_has() -> None:
    plan = parse_dialplan(textwrap.dedent("""
        version: 1
        open_registration: "127.0.0.0/8"
        endpoints:
          - {alias: a, protocol: sip, password: "x"}
          - {alias: b, protocol: h323, networks: ["10.0.0.0/8"]}
          - {alias: c, protocol: h323}
          - {alias: d, protocol: h323, password: "y", networks: ["10.0.0.0/8"], identity: network}
    """), "plan.yaml")
    assert [plan.endpoint(x).identity for x in "abcd"] == ["password", "network", "registration", "network"]
    assert plan.registration_open("127.0.0.9") and not plan.registration_open("10.1.1.1")


def test_an_endpoint_may_set_its_own_encryption() -> None:
    plan = parse_dialplan(textwrap.dedent("""
        version: 1
        endpoints:
          - {alias: a, protocol: sip, password: "x", encryption: required}
          - {alias: b, protocol: sip, password: "x"}
    """), "plan.yaml")
    assert plan.endpoint("a").encryption == "required" and plan.endpoint("b").encryption is None
    p = only("""
        version: 1
        endpoints:
          - {alias: a, protocol: sip, password: "x", encryption: always}
    """)
    assert p.line == 3 and "encryption of endpoint" in p.message and "required" in p.message


def test_an_endpoint_may_name_its_group() -> None:
    plan = parse_dialplan(textwrap.dedent("""
        version: 1
        endpoints:
          - {alias: a, protocol: sip, group: "huyen-01"}
          - {alias: b, protocol: sip}
    """), "plan.yaml")
    assert plan.endpoint("a").group == "huyen-01" and plan.endpoint("b").group is None
    p = only("""
        version: 1
        endpoints:
          - {alias: a, protocol: sip, group: ""}
    """)
    assert p.line == 3 and "group of endpoint" in p.message


def test_callers_are_for_dial_routes_and_must_be_aliases_groups_or_networks() -> None:
    p = only("""
        version: 1
        rooms: [{id: r, numbers: ["1"]}]
        routes:
          - prefix: "2"
            room: r
            callers: ["xa-*"]
        """)
    assert (p.line, p.col) == (6, 14) and "'callers' of route #1 is for dial routes" in p.message
    p = only("""
        version: 1
        routes:
          - prefix: "00"
            dial: "h323:{rest}@192.0.2.10"
            callers: ["10.21.0.1/16"]
        """)
    assert p.line == 5 and "caller network '10.21.0.1/16'" in p.message and "host bits" in p.message


def test_who_a_dial_route_bridges() -> None:
    plan = parse_dialplan(textwrap.dedent("""
        version: 1
        routes:
          - prefix: "00"
            dial: "h323:{rest}@192.0.2.10"
            callers: ["huyen-01", "tinh", "10.30.0.0/16"]
          - prefix: "01"
            dial: "sip:{rest}@192.0.2.11"
        endpoints:
          - {alias: xa-a, number: "5101", protocol: sip, password: "mat-khau-5101", group: huyen-01}
          - {alias: xa-b, number: "5201", protocol: sip, password: "mat-khau-5201", group: huyen-02}
          - {alias: tinh, number: "5000", protocol: h323}
        """).lstrip("\n"), "plan.yaml", CODECS)
    r = plan.route("0090001")
    assert plan.may_bridge(r, "xa-a", "192.0.2.99")           # by its group
    assert plan.may_bridge(r, "5000", None)                   # by alias, given as its number
    assert not plan.may_bridge(r, "xa-b", "192.0.2.99")       # another district
    assert not plan.may_bridge(r, None, "192.0.2.99")         # anonymous, from elsewhere
    assert plan.may_bridge(r, None, "10.30.4.5")              # from the listed network
    assert not plan.may_bridge(plan.route("0190001"), "tinh", "10.30.4.5")   # no callers: nobody
    assert dict(plan.dialable())["00…"] == "dial out (for huyen-01, tinh, 10.30.0.0/16) to h323:{rest}@192.0.2.10"


def test_a_host_name_target_is_an_error_when_dns_is_off() -> None:
    text = """
        version: 1
        routes:
          - prefix: "00"
            dial: "h323:{rest}@national.example.vn"
          - prefix: "01"
            dial: "sip:{rest}@[2001:db8::1]:5060"
          - prefix: "02"
            dial: "sip:{rest}@192.0.2.7"
        """
    parse_dialplan(textwrap.dedent(text).lstrip("\n"), "plan.yaml", CODECS)          # DNS on: fine
    with pytest.raises(DialPlanError) as info:
        parse_dialplan(textwrap.dedent(text).lstrip("\n"), "plan.yaml", CODECS, dns=False)
    (p,) = info.value.problems
    assert p.line == 4 and "names the host 'national.example.vn', and DNS is off" in p.message
