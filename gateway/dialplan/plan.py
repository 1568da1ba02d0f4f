"""A validated dial plan and the routing decision: (dialed, caller, protocol) -> RouteResult."""
from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
from typing import Any, Iterable

from .matcher import Matcher, intersects, substitute
from .model import EndpointSpec, RoomSpec, RouteResult, RouteSpec, TemplateSpec, normalise, parse_address

MAX_DIALED = 256  # longer dialed strings are refused before any pattern runs


class DialPlan:
    """An immutable, validated dial plan.  Build it with ``load_dialplan`` / ``parse_dialplan``."""

    def __init__(
        self,
        path: str,
        sha256: str,
        rooms: Iterable[RoomSpec],
        templates: Iterable[TemplateSpec],
        routes: Iterable[RouteSpec],
        endpoints: Iterable[EndpointSpec],
        number_lines: dict[tuple[str, str], int] | None = None,
        *,
        open_registration: Iterable[Any] = (),
    ) -> None:
        self.path = path
        self.sha256 = sha256
        self.rooms: tuple[RoomSpec, ...] = tuple(rooms)
        self.templates: tuple[TemplateSpec, ...] = tuple(templates)
        self.routes: tuple[RouteSpec, ...] = tuple(routes)
        self.endpoints: tuple[EndpointSpec, ...] = tuple(endpoints)
        #: networks from which endpoints that are not in the plan may register (the lab case); none by default
        self.open_registration: tuple[Any, ...] = tuple(open_registration)
        self._short = os.path.basename(path) or path
        self._rooms_by_id = {r.id: r for r in self.rooms}
        self._templates_by_id = {t.id: t for t in self.templates}
        lines = number_lines or {}
        # room numbers are implicit exact routes, tried before ``routes``
        self._room_numbers: dict[str, tuple[RoomSpec, str, int]] = {}
        for room in self.rooms:
            for number in room.numbers:
                self._room_numbers.setdefault(
                    number.casefold(), (room, number, lines.get((room.id, number), room.line))
                )
        self._endpoints_by_key: dict[str, EndpointSpec] = {}
        for ep in self.endpoints:
            self._endpoints_by_key.setdefault(ep.alias.casefold(), ep)
        for ep in self.endpoints:
            if ep.number:
                self._endpoints_by_key.setdefault(ep.number.casefold(), ep)

    # ------------------------------------------------------------------ routing
    def route(self, dialed: str, caller: str | None = None, protocol: str | None = None) -> RouteResult:
        """Decide what a call to ``dialed`` becomes.

        Room numbers are tried first (exact, case-insensitive), then ``routes`` in
        order.  A route with ``from``/``protocol`` conditions only applies when the
        caller / protocol is known and matches.
        """
        number = normalise(dialed)
        if not number:
            return RouteResult("none", "no route matched", None, status=404,
                               reason="nothing was dialed (empty number)")
        if len(number) > MAX_DIALED:
            return RouteResult("none", "no route matched", None, status=404,
                               reason=f"the dialed string is too long ({len(number)} characters, at most {MAX_DIALED})")
        hit = self._room_numbers.get(number.casefold())
        if hit is not None:
            room, written, line = hit
            return RouteResult(
                "room", f"room number {written} of room '{room.id}' ({self._short}:{line})", line,
                room=room, reason=f"room '{room.id}' ({room.name})",
            )
        callers = self._caller_names(caller)
        proto = protocol.strip().lower() if protocol else None
        for r in self.routes:
            captures = r.matcher.match(number)
            if captures is None or not r.where_ok(captures):
                continue
            if r.callers and not any(fnmatch.fnmatchcase(c, g.casefold()) for c in callers for g in r.callers):
                continue
            if r.protocols and proto not in r.protocols:
                continue
            return self._result(r, number, captures)
        return RouteResult("none", "no route matched", None, status=404,
                           reason=f"no room or route answers on '{number}'")

    def _caller_names(self, caller: str | None) -> list[str]:
        name = normalise(caller)
        if not name:
            return []
        names = [name.casefold()]
        ep = self.endpoint(name)
        if ep is not None:
            names.append(ep.alias.casefold())
            if ep.number:
                names.append(ep.number.casefold())
        return names

    def _result(self, r: RouteSpec, number: str, captures: dict[str, str]) -> RouteResult:
        rule = r.describe(self._short)
        if r.action == "room":
            room = self._rooms_by_id[r.room or ""]
            return RouteResult("room", rule, r.line, room=room, reason=f"room '{room.id}' ({room.name})",
                               captures=captures)
        if r.action == "template":
            room = self._instantiate(self._templates_by_id[r.template or ""], captures, (number,))
            return RouteResult("room", rule, r.line, room=room, reason=f"room '{room.id}' ({room.name})",
                               captures=captures)
        if r.action == "dial":
            target = substitute(r.dial or "", captures)
            return RouteResult("dial", rule, r.line, target=target, reason=f"dial out to {target}",
                               captures=captures, route=r)
        return RouteResult("reject", rule, r.line, status=r.status, reason=r.reason, captures=captures)

    def may_bridge(self, result: RouteResult, caller: str | None, source: str | None) -> bool:
        """May this caller (a *checked* endpoint alias or None; the call's source address) be bridged
        out by the dial route that decided ``result``? Only what its ``callers:`` lists: endpoints by
        alias, number or group (globs), or source networks."""
        r = result.route
        if result.kind != "dial" or r is None:
            return False
        if r.bridge_networks and source:
            ip = parse_address(source)
            if ip is not None and any(ip.version == n.version and ip in n for n in r.bridge_networks):
                return True
        if r.bridge_callers and caller:
            names = self._caller_names(caller)
            ep = self.endpoint(caller)
            if ep is not None and ep.group:
                names.append(ep.group.casefold())
            return any(fnmatch.fnmatchcase(n, g.casefold()) for n in names for g in r.bridge_callers)
        return False

    def _instantiate(self, t: TemplateSpec, captures: dict[str, str], numbers: tuple[str, ...]) -> RoomSpec:
        low = {k: v.lower() for k, v in captures.items()}
        return dataclasses.replace(
            t.room, id=substitute(t.id, low), name=substitute(t.name, captures),
            numbers=numbers, template=t.id,
        )

    # ------------------------------------------------------------------ lookups
    def room(self, room_id: str) -> RoomSpec | None:
        """A room by id, including rooms a template route would create (e.g. 'huyen-07')."""
        if room_id in self._rooms_by_id:
            return self._rooms_by_id[room_id]
        for r in self.routes:
            if r.action != "template":
                continue
            t = self._templates_by_id[r.template or ""]
            captures = _reverse_template(t.id, r, room_id)
            if captures is None or not all(
                name not in r.where or r.where_ok({name: captures[name]}) for name in captures
            ):
                continue
            number = r.matcher.build(captures)
            if number is None:
                # several numbers lead to this room; it exists if the captures are allowed
                return self._instantiate(t, captures, ())
            if r.has_conditions():
                if r.where_ok(captures):
                    return self._instantiate(t, captures, (number,))
                continue
            res = self.route(number)
            if res.kind == "room" and res.room is not None and res.room.id == room_id:
                return res.room
        return None

    def endpoint(self, alias_or_number: str) -> EndpointSpec | None:
        """A known endpoint by alias (case-insensitive) or number; URIs are normalised first."""
        key = normalise(alias_or_number).casefold()
        return self._endpoints_by_key.get(key) if key else None

    def registration_open(self, address: str) -> bool:
        """May an endpoint the plan does not list register from ``address``?"""
        ip = parse_address(address)
        return ip is not None and any(ip.version == n.version and ip in n for n in self.open_registration)

    def claimant(self, alias: str) -> str | None:
        """What in the plan already answers on ``alias`` (a room, route or endpoint), None if nothing:
        an endpoint the plan does not list may not register it."""
        ep = self.endpoint(alias)
        if ep is not None:
            return f"endpoint '{ep.alias}'"
        r = self.route(alias)
        return None if r.kind == "none" else r.rule

    def prefix_claimant(self, prefix: str) -> str | None:
        """What in the plan answers on some number beginning with ``prefix``, None if nothing."""
        p = normalise(prefix).casefold()
        if not p:
            return "an empty prefix"
        for number, (room, _, _) in self._room_numbers.items():
            if number.startswith(p):
                return f"room '{room.id}' ({number})"
        for ep in self.endpoints:
            if ep.number and ep.number.casefold().startswith(p):
                return f"endpoint '{ep.alias}' ({ep.number})"
            if any(q.startswith(p) or p.startswith(q) for q in ep.prefixes):
                return f"endpoint '{ep.alias}' (prefix {', '.join(ep.prefixes)})"
        mine = Matcher.prefix(p)
        for r in self.routes:
            if intersects(mine, r.matcher):
                return r.describe(self._short)
        return None

    def summary(self) -> str:
        def n(count: int, word: str) -> str:
            return f"{count} {word}{'' if count == 1 else 's'}"

        return ", ".join([
            n(len(self.rooms), "room"), n(len(self.templates), "template"),
            n(len(self.routes), "route"), n(len(self.endpoints), "endpoint"),
        ])

    def dialable(self) -> list[tuple[str, str]]:
        """(number, description) pairs people can dial: room numbers, then routes in order."""
        out: list[tuple[str, str]] = []
        for room in self.rooms:
            for number in room.numbers:
                out.append((number, f"room '{room.id}': {room.name}"))
        for r in self.routes:
            if r.action == "reject":
                continue
            shown = _show_numbers(r)
            if r.action == "room":
                room = self._rooms_by_id[r.room or ""]
                what = f"room '{room.id}': {room.name}"
            elif r.action == "template":
                t = self._templates_by_id[r.template or ""]
                what = f"rooms '{t.id}': {t.name}"
            else:
                who = ", ".join([*r.bridge_callers, *map(str, r.bridge_networks)])
                what = f"dial out (for {who}) to {r.dial}" if who else \
                    f"dial out to {r.dial} (cascades and the operator only)"
            if r.description:
                what = f"{what} ({r.description})"
            out.append((shown, what))
        return out

    def __repr__(self) -> str:
        return f"<DialPlan {self.path}: {self.summary()}>"


def _reverse_template(template_id: str, r: RouteSpec, room_id: str) -> dict[str, str] | None:
    parts: list[str] = []
    pos = 0
    for m in re.finditer(r"\{([^{}]*)\}", template_id):
        parts.append(re.escape(template_id[pos:m.start()]))
        cap = r.matcher.capture(m.group(1))
        if cap is None or cap.kind != "digits":
            return None
        body = "[0-9]+" if cap.width is None else f"[0-9]{{{cap.width}}}"
        parts.append(f"(?P<{cap.name}>{body})")
        pos = m.end()
    parts.append(re.escape(template_id[pos:]))
    m2 = re.fullmatch("".join(parts), room_id)
    return None if m2 is None else m2.groupdict()


def _show_numbers(r: RouteSpec) -> str:
    """'8101-8120' for a fixed-width pattern with one ranged capture, else the rule as written."""
    m = r.matcher
    caps = m.captures
    if m.kind == "number":
        return m.text
    if m.kind == "prefix":
        return f"{m.text}…"
    if len(caps) == 1 and caps[0].width is not None and caps[0].name in r.where:
        cap = caps[0]
        shown = []
        for lo, hi in r.where[cap.name]:
            lo_s = m.build({cap.name: str(lo).zfill(cap.width)})
            hi_s = m.build({cap.name: str(min(hi, cap.max_value() or hi)).zfill(cap.width)})
            shown.append(lo_s if lo == hi else f"{lo_s}-{hi_s}")
        return ", ".join(s for s in shown if s)
    text = m.text
    if r.where:
        text += " (" + "; ".join(
            f"{k} " + ", ".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in v) for k, v in r.where.items()
        ) + ")"
    return text
