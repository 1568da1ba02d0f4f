"""Routes that can never be reached are errors that name the rule taking their numbers."""
from __future__ import annotations

import textwrap

import pytest

from gateway.dialplan import DialPlanError, parse_dialplan
from gateway.dialplan.matcher import Matcher, covers, intersects

HEAD = """\
version: 1
rooms:
  - id: tinh
    numbers: ["8000", "tinh"]
"""


def plan_problems(routes: str) -> list[str]:
    template = 'templates:\n  - id: "huyen-{nn}"\n' if "huyen" in routes else ""
    text = HEAD + template + "routes:\n" + textwrap.indent(textwrap.dedent(routes).strip("\n"), "  ") + "\n"
    try:
        parse_dialplan(text, "plan.yaml")
    except DialPlanError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_prefix_covers_later_pattern() -> None:
    found = plan_problems("""
        - prefix: "8"
          reject: {}
        - pattern: "81{nn:2}"
          template: "huyen-{nn}"
        """)
    assert found == [
        "plan.yaml:10:5: route #2 never matches: every number it matches is taken by "
        "the route at line 8 (prefix '8'); remove it or move it above"
    ]


def test_pattern_covers_later_exact_number() -> None:
    found = plan_problems("""
        - pattern: "81{nn:2}"
          template: "huyen-{nn}"
        - number: "8107"
          room: tinh
        """)
    assert len(found) == 1 and found[0].startswith("plan.yaml:10:5: route #2 never matches")
    assert "the route at line 8 (pattern 81{nn:2})" in found[0]


def test_room_number_shadows_route_case_insensitively() -> None:
    found = plan_problems("""
        - number: "TINH"
          reject: {}
        """)
    assert found == [
        "plan.yaml:6:5: route #1 never matches: every number it matches is taken by "
        "room 'tinh' (number 'tinh' at line 4); remove it or give the room another number"
    ], "rooms are tried before every route: moving the route cannot help"


def test_a_number_behind_a_pattern_whose_where_takes_it_is_caught() -> None:
    found = plan_problems("""
        - pattern: "81{nn:2}"
          where: {nn: "01-20"}
          template: "huyen-{nn}"
        - number: "8107"
          reject: {}
        - number: "8150"
          reject: {}
        """)
    assert found == [
        "plan.yaml:11:5: route #2 never matches: its number '8107' is taken by the route at line 8 "
        "(pattern 81{nn:2}, whose 'where' includes it); move it above that route or narrow the 'where'"
    ], "8150 is outside 01-20 and reaches its own route"


def test_union_of_earlier_routes_shadows() -> None:
    found = plan_problems("""
        - pattern: "8{a:1}{b}"
          reject: {}
        - pattern: "8{x:*}"
          reject: {}
        """)
    # 8{x:*} also matches "8a", so it is not shadowed ...
    assert found == []
    found = plan_problems("""
        - pattern: "9{d}"
          reject: {}
        - pattern: "9{c:*}x{e:*}"
          reject: {}
        - pattern: "9{any:*}"
          reject: {}
        """)
    # "9ab": neither earlier route takes it -> fine
    assert found == []
    found = plan_problems("""
        - pattern: "7{a:1}{b}"
          reject: {}
        - pattern: "7{x:1}"
          reject: {}
        - pattern: "7{d}"
          reject: {}
        """)
    # 7 + one digit, and 7 + two or more digits: together they take every 7{d}
    assert found == [
        "plan.yaml:10:5: route #3 never matches: every number it matches is taken by earlier rules: "
        "the route at line 6 (pattern 7{a:1}{b}); the route at line 8 (pattern 7{x:1})"
    ]


def test_not_shadowed_when_later_conditions_are_broader_or_earlier_narrower() -> None:
    assert plan_problems("""
        - prefix: "00"
          from: ["tinh"]
          dial: "h323:{rest}@192.0.2.10"
        - prefix: "00"
          reject: {}
        """) == []
    assert plan_problems("""
        - prefix: "19"
          protocol: [sip]
          reject: {}
        - prefix: "19"
          protocol: [sip, h323]
          reject: {}
        """) == []


def test_shadowed_when_earlier_conditions_are_no_narrower() -> None:
    found = plan_problems("""
        - prefix: "19"
          protocol: [sip, h323]
          reject: {}
        - prefix: "190"
          protocol: [h323]
          reject: {}
        - prefix: "191"
          from: ["xa-*"]
          protocol: [sip]
          reject: {}
        - prefix: "192"
          from: ["xa-*"]
          reject: {}
        """)
    assert [f.split(": route")[0] for f in found] == ["plan.yaml:9:5", "plan.yaml:12:5"]


def test_route_with_where_never_shadows_but_can_be_shadowed() -> None:
    assert plan_problems("""
        - pattern: "81{nn:2}"
          where: {nn: "01-20"}
          template: "huyen-{nn}"
        - pattern: "81{nn:2}"
          reject: {status: 404, reason: "no such district"}
        """) == []
    found = plan_problems("""
        - prefix: "81"
          reject: {}
        - pattern: "81{nn:2}"
          where: {nn: "01-20"}
          template: "huyen-{nn}"
        """)
    assert len(found) == 1 and "route #2 never matches" in found[0]


@pytest.mark.parametrize(
    ("earlier", "later", "expected"),
    [
        (["prefix:8"], "pattern:8{a}", True),        # prefix 8 takes 8 + anything
        (["pattern:8{a}"], "prefix:8", False),       # 8x is not digits
        (["pattern:{a}"], "pattern:1{b:3}", True),
        (["pattern:{a:3}"], "pattern:{b}", False),
        (["pattern:1{a:*}", "pattern:{b:1}{c:*}"], "pattern:{d}", False),  # "1" alone is not matched
        (["pattern:1{a:*}", "pattern:{b:1}"], "pattern:{d:1}", True),
        (["number:123"], "pattern:12{x:1}", False),
    ],
)
def test_language_inclusion(earlier: list[str], later: str, expected: bool) -> None:
    def m(spec: str) -> Matcher:
        kind, text = spec.split(":", 1)
        return {"prefix": Matcher.prefix, "pattern": Matcher.pattern, "number": Matcher.exact}[kind](text)

    assert covers([m(e) for e in earlier], m(later)) is expected


def test_intersection() -> None:
    assert intersects(Matcher.pattern("8{a:2}"), Matcher.prefix("81"))
    assert not intersects(Matcher.pattern("8{a:2}"), Matcher.pattern("8{a:3}"))
    assert not intersects(Matcher.exact("abc"), Matcher.pattern("{d}"))
