"""Load and validate a dial plan, collecting every problem with its file:line:col."""
from __future__ import annotations

import difflib
import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from .matcher import CAPTURE_NAME, Matcher, PatternSyntaxError, covers, intersects, placeholders
from .model import LAYOUTS, PROTOCOLS, EndpointSpec, RoomSpec, RouteSpec, TemplateSpec
from .nodes import BOOL, INT, NULL, STR, Reporter, describe_node
from .plan import DialPlan
from .problems import DialPlanError, Problem

TOP_KEYS = ("version", "defaults", "rooms", "templates", "routes", "endpoints", "open_registration")
SETTING_KEYS = ("pin", "max_participants", "layout", "audio", "video", "encryption")
ROOM_KEYS = ("id", "name", "numbers", *SETTING_KEYS, "cascade")
TEMPLATE_KEYS = ("id", "name", *SETTING_KEYS, "cascade")
MATCH_KEYS = ("number", "prefix", "pattern")
ACTION_KEYS = ("room", "template", "dial", "reject")
ROUTE_KEYS = (*MATCH_KEYS, "where", "from", "protocol", "callers", *ACTION_KEYS, "description")
ENDPOINT_KEYS = ("alias", "name", "number", "protocol", "username", "password", "networks", "prefixes", "identity",
                 "encryption", "group")
IDENTITY_POLICIES = ("password", "network", "registration")
AUDIO_KEYS = ("codecs",)
VIDEO_KEYS = ("codecs", "max_resolution", "max_bitrate", "labels")
REJECT_KEYS = ("status", "reason")

BUILTIN_SETTINGS: dict[str, Any] = {
    "pin": None,
    "max_participants": 50,
    "layout": "voice-switched",
    "audio_codecs": (),
    "video_codecs": (),
    "max_resolution": None,
    "max_bitrate_kbps": None,
    "video_labels": True,
    "encryption": "preferred",
}
ENCRYPTION = ("required", "preferred", "off")
ROOM_ID = re.compile(r"[a-z0-9_-]+\Z")
PIN = re.compile(r"[0-9]{4,10}\Z")
RESOLUTION = re.compile(r"\s*([0-9]+)\s*[xX×]\s*([0-9]+)\s*\Z")
RANGE = re.compile(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?\Z")
DIAL_URI = re.compile(r"(sips?|h323):(.+)\Z", re.IGNORECASE | re.DOTALL)
# characters a dialed number can never contain once normalised (see model.normalise)
_NEVER_DIALED = "@;?<>"
_NOT_IN_NUMBERS = set(_NEVER_DIALED + ":\"'{}/\\,[]()|")
DEFAULT_REJECT_REASON = "call rejected by the dial plan"


def number_problem(text: str, what: str) -> str | None:
    """Why ``text`` cannot be a number/alias, or None when it is fine."""
    for ch in text:
        if ch.isspace() or ch in _NOT_IN_NUMBERS:
            shown = "a space" if ch.isspace() else f"'{ch}'"
            return (f"{what} '{text}' contains {shown}; expected digits (an E.164 number may start with '+') "
                    "or an alias like 'tinh' made of letters, digits, '-', '_', '.', '*', '#'")
    if "+" in text[1:]:
        return f"{what} '{text}' has a '+' after the start; only an E.164 number may start with '+'"
    return None


def parse_dialplan(text: str, filename: str = "<string>", codec_names: set[str] | None = None, *,
                   dns: bool = True) -> DialPlan:
    """Validate a dial plan given as text; raise DialPlanError listing every problem. ``dns=False``:
    the gateway does not look names up, so a dial target must name an IP address."""
    return _Builder(filename, codec_names, dns).build(text, hashlib.sha256(text.encode("utf-8")).hexdigest())


def load_dialplan(path: str | os.PathLike[str], codec_names: set[str] | None = None, *,
                  dns: bool = True) -> DialPlan:
    """Read and validate a dial plan file; raise DialPlanError listing every problem."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise DialPlanError([Problem(p, 0, 0, f"cannot read the dial plan: {exc.strerror or exc}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DialPlanError([Problem(p, line, col, "the file is not valid UTF-8; save it with UTF-8 encoding")]) from None
    return _Builder(p, codec_names, dns).build(text, hashlib.sha256(data).hexdigest())


@dataclass
class _RouteNodes:
    """Value nodes of a route, to point at the right place in cross-checks."""

    node: Node
    match: Node | None = None
    action: Node | None = None
    where: dict[str, Node] = field(default_factory=dict)


class _Builder:
    def __init__(self, filename: str, codec_names: set[str] | None, dns: bool = True) -> None:
        self.file = filename
        self.dns = dns
        self.short = os.path.basename(filename) or filename
        self.r = Reporter(filename, [])
        self.codecs = None if codec_names is None else {c.lower(): c for c in codec_names}
        self.numbers: dict[str, str] = {}   # casefolded number -> who owns it
        self.number_lines: dict[tuple[str, str], int] = {}
        self.cascades: list[tuple[str, str, Node]] = []  # (room/template id, number, node)
        self.template_refs: set[str] = set()  # templates named by any route, even a broken one

    # ================================================================= top level
    def build(self, text: str, sha256: str) -> DialPlan:
        r = self.r
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            detail = f"{exc.context}, {exc.problem}" if exc.context else str(exc.problem)
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            raise DialPlanError([Problem(self.file, line, col, f"YAML syntax error: {detail} "
                                         "(check indentation, colons and quotes)")]) from None
        except yaml.YAMLError as exc:
            raise DialPlanError([Problem(self.file, 1, 1, f"YAML error: {exc}")]) from None
        except RecursionError:
            raise DialPlanError([Problem(self.file, 1, 1, "the YAML is nested too deeply to read; "
                                         "a dial plan needs only a few levels")]) from None
        if root is None:
            raise DialPlanError([Problem(self.file, 1, 1, "the dial plan is empty; expected at least "
                                         "'version: 1' and some rooms")])
        top = r.mapping(root, "the dial plan", TOP_KEYS, required=("version",))
        if top is None:
            raise DialPlanError(r.problems)
        if "version" in top:
            vnode = top["version"][1]
            if not (isinstance(vnode, ScalarNode) and vnode.tag == INT and vnode.value.strip() == "1"):
                r.at(vnode, f"unsupported version {vnode.value if isinstance(vnode, ScalarNode) else describe_node(vnode)}; "
                            "this gateway reads dial plans with 'version: 1'")

        defaults = dict(BUILTIN_SETTINGS)
        if "defaults" in top:
            m = r.mapping(top["defaults"][1], "defaults", SETTING_KEYS)
            if m is not None:
                defaults.update(self.settings(m, "defaults"))

        rooms: list[RoomSpec] = []
        for node in self.items(top, "rooms"):
            room = self.room(node, defaults)
            if room is not None:
                rooms.append(room)
        seen: dict[str, RoomSpec] = {}
        for room in rooms:
            if room.id in seen:
                r.problems.append(Problem(self.file, room.line, 1, f"duplicate room id '{room.id}' "
                                          f"(already used by the room at line {seen[room.id].line}); room ids must be unique"))
            else:
                seen[room.id] = room

        templates: list[TemplateSpec] = []
        template_nodes: dict[str, Node] = {}
        for node in self.items(top, "templates"):
            t = self.template(node, defaults)
            if t is None:
                continue
            if t.id in template_nodes:
                r.at(node, f"duplicate template id '{t.id}' (already used at line "
                           f"{template_nodes[t.id].start_mark.line + 1}); template ids must be unique")
                continue
            templates.append(t)
            template_nodes[t.id] = node

        endpoints: list[EndpointSpec] = []
        aliases: dict[str, int] = {}
        for node in self.items(top, "endpoints"):
            ep = self.endpoint(node)
            if ep is None:
                continue
            key = ep.alias.casefold()
            if key in aliases:
                r.at(node, f"duplicate endpoint alias '{ep.alias}' (already used by the endpoint at line {aliases[key]}); "
                           "aliases must be unique")
                continue
            aliases[key] = ep.line
            endpoints.append(ep)

        routes: list[tuple[RouteSpec, _RouteNodes]] = []
        route_nodes = self.items(top, "routes")
        for index, node in enumerate(route_nodes, start=1):
            parsed = self.route(node, index)
            if parsed is not None:
                routes.append(parsed)

        open_registration = (self.networks(top["open_registration"][1], "networks of open_registration")
                             if "open_registration" in top else [])
        self.cross_check(rooms, templates, template_nodes, routes)
        plan = DialPlan(self.file, sha256, rooms, templates, [rt for rt, _ in routes], endpoints,
                        self.number_lines, open_registration=open_registration)
        self.check_shadowing(rooms, routes)
        self.check_cascades(plan)
        if r.problems:
            raise DialPlanError(r.problems)
        return plan

    def items(self, top: dict[str, tuple[ScalarNode, Node]], key: str) -> list[Node]:
        if key not in top:
            return []
        node = top[key][1]
        if isinstance(node, ScalarNode) and node.tag == NULL:
            return []
        return self.r.sequence(node, f"'{key}'") or []

    # ================================================================= settings
    def settings(self, m: dict[str, tuple[ScalarNode, Node]], what: str) -> dict[str, Any]:
        r = self.r
        out: dict[str, Any] = {}
        if "pin" in m:
            node = m["pin"][1]
            if isinstance(node, ScalarNode) and node.tag == NULL:
                out["pin"] = None
            else:
                pin = r.digits_text(node, f"PIN of {what}")
                if pin is not None:
                    if PIN.match(pin):
                        out["pin"] = pin
                    else:
                        r.at(node, f"PIN of {what} is '{pin}'; expected 4 to 10 digits (0-9), quoted, like \"2468\"")
        if "max_participants" in m:
            value = r.integer(m["max_participants"][1], f"max_participants of {what}", 1, 10000)
            if value is not None:
                out["max_participants"] = value
        if "layout" in m:
            layout = r.choice(m["layout"][1], f"layout in {what}", LAYOUTS)
            if layout is not None:
                out["layout"] = layout
        if "encryption" in m:
            enc = r.choice(m["encryption"][1], f"encryption of {what}", ENCRYPTION)
            if enc is not None:
                out["encryption"] = enc
        if "audio" in m:
            am = r.mapping(m["audio"][1], f"audio of {what}", AUDIO_KEYS)
            if am and "codecs" in am:
                out["audio_codecs"] = self.codec_list(am["codecs"][1], f"audio codecs of {what}")
        if "video" in m:
            vm = r.mapping(m["video"][1], f"video of {what}", VIDEO_KEYS)
            if vm is not None:
                if "codecs" in vm:
                    out["video_codecs"] = self.codec_list(vm["codecs"][1], f"video codecs of {what}")
                if "max_resolution" in vm:
                    node = vm["max_resolution"][1]
                    text = r.text(node, f"max_resolution of {what}")
                    mres = RESOLUTION.match(text) if text is not None else None
                    if text is not None and (mres is None or not all(16 <= int(g) <= 8192 for g in mres.groups())):
                        r.at(node, f"max_resolution of {what} is '{text}'; expected WIDTHxHEIGHT in pixels "
                                   "(16-8192 each), like 1280x720 or 352x288")
                    elif mres is not None:
                        out["max_resolution"] = (int(mres.group(1)), int(mres.group(2)))
                if "max_bitrate" in vm:
                    value = r.integer(vm["max_bitrate"][1], f"max_bitrate (kbit/s) of {what}", 16, 100000)
                    if value is not None:
                        out["max_bitrate_kbps"] = value
                if "labels" in vm:
                    node = vm["labels"][1]
                    if isinstance(node, ScalarNode) and node.tag == BOOL:
                        out["video_labels"] = node.value.lower() in ("true", "yes", "on")
                    else:
                        r.at(node, f"labels of {what} must be true or false (names under the video tiles), "
                                   f"got {describe_node(node)}")
        return out

    def codec_list(self, node: Node, what: str) -> tuple[str, ...]:
        out: list[str] = []
        for item in self.r.sequence(node, what, allow_single=True) or []:
            name = self.r.text(item, f"codec name in {what}")
            if name is None:
                continue
            if self.codecs is not None:
                canonical = self.codecs.get(name.lower())
                if canonical is None:
                    close = difflib.get_close_matches(name.lower(), list(self.codecs), n=1, cutoff=0.5)
                    hint = f"did you mean '{self.codecs[close[0]]}'? " if close else ""
                    self.r.at(item, f"unknown codec '{name}' in {what} ({hint}the codec catalogue has: "
                                    f"{', '.join(sorted(self.codecs.values(), key=str.lower))})")
                    continue
                name = canonical
            if name.lower() in (c.lower() for c in out):
                self.r.at(item, f"codec '{name}' is listed twice in {what}; list each codec once, in order of preference")
                continue
            out.append(name)
        return tuple(out)

    # ================================================================= rooms
    def room(self, node: Node, defaults: dict[str, Any]) -> RoomSpec | None:
        r = self.r
        rid = _peek(node, "id")
        what = f"room '{rid}'" if rid else f"the room at line {node.start_mark.line + 1}"
        m = r.mapping(node, what, ROOM_KEYS, required=("id",))
        if m is None or "id" not in m:
            return None
        room_id = self.room_id(m["id"][1], what)
        if room_id is None:
            return None
        name = r.text(m["name"][1], f"name of {what}") if "name" in m else None
        settings = {**defaults, **self.settings(m, what)}
        numbers: list[str] = []
        if "numbers" in m:
            for item in r.sequence(m["numbers"][1], f"numbers of {what}", allow_single=True) or []:
                number = self.claim_number(item, f"number of {what}", what)
                if number is not None:
                    numbers.append(number)
                    self.number_lines[(room_id, number)] = item.start_mark.line + 1
        cascade = self.cascade(m, room_id, what)
        return RoomSpec(
            id=room_id, name=name or room_id, numbers=tuple(numbers), cascade=cascade, template=None,
            line=node.start_mark.line + 1, **settings,
        )

    def room_id(self, node: Node, what: str) -> str | None:
        text = self.r.text(node, f"id of {what}")
        if text is None:
            return None
        if not ROOM_ID.match(text):
            self.r.at(node, f"room id '{text}' may only contain lower-case a-z, digits, '-' and '_' "
                            f"(try '{_suggest_id(text)}')")
            return None
        return text

    def claim_number(self, node: Node, what: str, owner: str) -> str | None:
        number = self.r.digits_text(node, what)
        if number is None:
            return None
        problem = number_problem(number, what)
        if problem:
            self.r.at(node, problem)
            return None
        key = number.casefold()
        here = f"{owner} (line {node.start_mark.line + 1})"
        if key in self.numbers:
            self.r.at(node, f"number '{number}' of {owner} is already used by {self.numbers[key]}; "
                            "a number must lead to exactly one place")
            return None
        self.numbers[key] = here
        return number

    def cascade(self, m: dict[str, tuple[ScalarNode, Node]], owner_id: str, what: str) -> str | None:
        if "cascade" not in m:
            return None
        node = m["cascade"][1]
        number = self.r.digits_text(node, f"cascade number of {what}")
        if number is None:
            return None
        problem = number_problem(number, f"cascade number of {what}")
        if problem:
            self.r.at(node, problem)
            return None
        self.cascades.append((owner_id, number, node))
        return number

    # ================================================================= templates
    def template(self, node: Node, defaults: dict[str, Any]) -> TemplateSpec | None:
        r = self.r
        tid = _peek(node, "id")
        what = f"template '{tid}'" if tid else f"the template at line {node.start_mark.line + 1}"
        m = r.mapping(node, what, TEMPLATE_KEYS, required=("id",))
        if m is None or "id" not in m:
            return None
        idnode = m["id"][1]
        template_id = r.text(idnode, f"id of {what}")
        if template_id is None:
            return None
        bad = [p for p in placeholders(template_id) if not CAPTURE_NAME.match(p)]
        if bad or not ROOM_ID.match(re.sub(r"\{[^{}]*\}", "0", template_id)):
            r.at(idnode, f"template id '{template_id}' must be a room id (lower-case a-z, digits, '-', '_') "
                         "with {capture} placeholders, like 'huyen-{nn}'")
            return None
        name = template_id
        if "name" in m:
            name = r.text(m["name"][1], f"name of {what}") or template_id
            for p in placeholders(name):
                if not CAPTURE_NAME.match(p):
                    r.at(m["name"][1], f"placeholder '{{{p}}}' in the name of {what} is not a capture name; "
                                       "expected lower-case names like {nn}")
        settings = {**defaults, **self.settings(m, what)}
        cascade = self.cascade(m, template_id, what)
        line = node.start_mark.line + 1
        room = RoomSpec(id=template_id, name=name, numbers=(), cascade=cascade, template=template_id,
                        line=line, **settings)
        return TemplateSpec(template_id, name, room, line)

    # ================================================================= endpoints
    def endpoint(self, node: Node) -> EndpointSpec | None:
        r = self.r
        alias_peek = _peek(node, "alias")
        what = f"endpoint '{alias_peek}'" if alias_peek else f"the endpoint at line {node.start_mark.line + 1}"
        m = r.mapping(node, what, ENDPOINT_KEYS, required=("alias", "protocol"))
        if m is None:
            return None
        alias = r.text(m["alias"][1], f"alias of {what}") if "alias" in m else None
        if alias is not None and (problem := number_problem(alias, f"alias of {what}")):
            r.at(m["alias"][1], problem)
            alias = None
        protocol = r.choice(m["protocol"][1], f"protocol of {what}", PROTOCOLS) if "protocol" in m else None
        number = self.claim_number(m["number"][1], f"number of {what}", what) if "number" in m else None
        username = r.text(m["username"][1], f"username of {what}") if "username" in m else None
        password = r.text(m["password"][1], f"password of {what}", allow_empty=True) if "password" in m else None
        name = r.text(m["name"][1], f"name of {what}") if "name" in m else None
        networks = self.networks(m["networks"][1], f"networks of {what}") if "networks" in m else []
        prefixes: list[str] = []
        if "prefixes" in m:
            for item in r.sequence(m["prefixes"][1], f"prefixes of {what}", allow_single=True) or []:
                text = r.text(item, f"prefix of {what}")
                if text is None:
                    continue
                if not re.fullmatch(r"[0-9*#]{1,32}", text.strip()):
                    r.at(item, f"prefix {text!r} of {what} is not dialled digits; expected e.g. \"5\" or \"0084\" "
                               "(the numbers beginning with it are routed to this endpoint)")
                    continue
                prefixes.append(text.strip())
            if prefixes and protocol is not None and protocol != "h323":
                r.at(m["prefixes"][1], f"prefixes of {what}: only an H.323 gateway or MCU registers prefixes, "
                                       f"and this endpoint is {protocol}")
        identity = None
        if "identity" in m:
            identity = r.choice(m["identity"][1], f"identity of {what}", IDENTITY_POLICIES)
            if identity == "password" and password is None:
                r.at(m["identity"][1], f"identity of {what} is 'password' but the endpoint has no password")
            if identity == "network" and not networks:
                r.at(m["identity"][1], f"identity of {what} is 'network' but the endpoint has no networks; "
                                       "add networks: [...] or choose 'password' / 'registration'")
        encryption = None
        if "encryption" in m:
            encryption = r.choice(m["encryption"][1], f"encryption of {what}", ENCRYPTION)
        group = None
        if "group" in m:
            group = r.text(m["group"][1], f"group of {what}")
            if group is not None and not (0 < len(group.strip()) <= 64 and group.isprintable()):
                r.at(m["group"][1], f"group of {what} must be 1 to 64 printable characters")
                group = None
        if alias is None or protocol is None:
            return None
        return EndpointSpec(alias=alias, number=number, protocol=protocol, username=username or alias,
                            password=password, networks=tuple(networks), line=node.start_mark.line + 1,
                            name=name or alias, prefixes=tuple(prefixes),
                            identity=identity or ("password" if password is not None
                                                  else "network" if networks else "registration"),
                            encryption=encryption, group=group.strip() if group else None)

    def networks(self, node: Node, what: str) -> list[Any]:
        """A list of CIDR networks (one may be written alone)."""
        r = self.r
        out: list[Any] = []
        for item in r.sequence(node, what, allow_single=True) or []:
            text = r.text(item, what)
            if text is None:
                continue
            try:
                out.append(ipaddress.ip_network(text.strip(), strict=True))
            except ValueError as exc:
                hint = ""
                try:
                    hint = f"; did you mean '{ipaddress.ip_network(text.strip(), strict=False)}'?"
                except ValueError:
                    pass
                r.at(item, f"network '{text}' of {what.removeprefix('networks of ')} is not a valid CIDR network "
                           f"({exc}){hint}; expected e.g. 10.21.0.0/16 or 2001:db8::/32")
        return out

    # ================================================================= routes
    def route(self, node: Node, index: int) -> tuple[RouteSpec, _RouteNodes] | None:
        r = self.r
        what = f"route #{index}"
        m = r.mapping(node, what, ROUTE_KEYS)
        if m is None:
            return None
        nodes = _RouteNodes(node)
        ok = True
        matches = [k for k in MATCH_KEYS if k in m]
        actions = [k for k in ACTION_KEYS if k in m]
        if len(matches) != 1:
            found = "none" if not matches else " and ".join(f"'{k}'" for k in matches)
            r.at(node, f"{what} needs exactly one of number, prefix, pattern (what to match); found {found}")
            ok = False
        if len(actions) != 1:
            found = "none" if not actions else " and ".join(f"'{k}'" for k in actions)
            r.at(node, f"{what} needs exactly one of room, template, dial, reject (what to do); found {found}")
            ok = False

        matcher: Matcher | None = None
        if len(matches) == 1:
            key = matches[0]
            mnode = nodes.match = m[key][1]
            matcher = self.matcher(key, mnode, what)

        where: dict[str, tuple[tuple[int, int], ...]] = {}
        if "where" in m:
            wnode = m["where"][1]
            if not isinstance(wnode, MappingNode):
                r.at(wnode, f"'where' of {what} must be a mapping like {{nn: \"01-20\"}}, got {describe_node(wnode)}")
                ok = False
            else:
                names = [c.name for c in matcher.captures] if matcher else []
                wm = None
                if matcher and not names:
                    r.at(wnode, f"'where' of {what} has nothing to constrain: {matcher.describe()} "
                                "captures nothing; remove 'where' or capture digits like 81{nn:2}")
                    ok = False
                elif matcher:
                    wm = r.mapping(wnode, f"'where' of {what}", names)
                for name, (_, vnode) in (wm or {}).items():
                    nodes.where[name] = vnode
                    ranges = self.ranges(vnode, name, matcher, what)  # type: ignore[arg-type]
                    if ranges is None:
                        ok = False
                    else:
                        where[name] = ranges
                if matcher and wm is not None and len(wm) != len(wnode.value):
                    ok = False

        callers: tuple[str, ...] = ()
        if "from" in m:
            globs = [r.text(n, f"'from' of {what}") for n in r.sequence(m["from"][1], f"'from' of {what}", True) or []]
            callers = tuple(g.strip() for g in globs if g)
        protocols: tuple[str, ...] = ()
        if "protocol" in m:
            items = r.sequence(m["protocol"][1], f"protocol of {what}", True) or []
            protocols = tuple(p for p in (r.choice(n, f"protocol in {what}", PROTOCOLS) for n in items) if p)

        bridge: tuple[str, ...] = ()
        bridge_nets: tuple[Any, ...] = ()
        if "callers" in m:
            cnode = m["callers"][1]
            if actions != ["dial"]:
                r.at(cnode, f"'callers' of {what} is for dial routes: who may be bridged out to the target "
                            "(use 'from' to choose whom a route applies to)")
                ok = False
            globs, nets, bad = [], [], False
            for item in r.sequence(cnode, f"'callers' of {what}", True) or []:
                text = (r.text(item, f"'callers' of {what}") or "").strip()
                if not text:
                    continue
                if "/" in text or _looks_like_address(text):
                    try:
                        nets.append(ipaddress.ip_network(text, strict=True))
                    except ValueError as exc:
                        r.at(item, f"caller network '{text}' of {what} is not a valid CIDR network ({exc}); "
                                   "expected e.g. 10.21.0.0/16")
                        ok, bad = False, True
                else:
                    globs.append(text)
            bridge, bridge_nets = tuple(globs), tuple(nets)
            if not bridge and not bridge_nets and not bad:
                r.at(cnode, f"'callers' of {what} is empty: list endpoint aliases or groups (globs like 'xa-*'), "
                            "or networks (10.21.0.0/16)")
                ok = False

        spec: dict[str, Any] = {}
        if len(actions) == 1:
            action = actions[0]
            anode = nodes.action = m[action][1]
            spec["action"] = action
            if action in ("room", "template"):
                target = r.text(anode, f"{action} of {what}")
                if action == "template" and target:
                    self.template_refs.add(target)
                ok = ok and target is not None
                spec[action] = target
            elif action == "dial":
                uri = r.text(anode, f"dial target of {what}")
                if uri is not None and not DIAL_URI.match(uri.strip()):
                    r.at(anode, f"dial target '{uri}' of {what} must be a sip:, sips: or h323: URI, "
                                "like h323:{rest}@192.0.2.10 or sip:{rest}@mcu.example")
                    uri = None
                elif uri is not None and (uri.count("{") != uri.count("}") or
                                          any(not CAPTURE_NAME.match(p) for p in placeholders(uri))):
                    r.at(anode, f"dial target '{uri}' of {what} has a malformed placeholder; "
                                "expected {name} with a capture name, like {rest}")
                    uri = None
                host = _target_host(uri) if uri is not None else None
                if host is not None and not self.dns and not _looks_like_address(host.strip("[]")):
                    r.at(anode, f"dial target '{uri}' of {what} names the host '{host}', and DNS is off "
                                "(dns: false in the settings): write its IP address, or turn dns on")
                    uri = None
                ok = ok and uri is not None
                spec["dial"] = uri.strip() if uri else None
            else:
                status, reason = self.reject(anode, what)
                spec["status"] = status if status is not None else 403
                spec["reason"] = reason or DEFAULT_REJECT_REASON
                ok = ok and status is not False
        description = ""
        if "description" in m:
            description = r.text(m["description"][1], f"description of {what}") or ""
        if not ok or matcher is None or not spec:
            return None
        return RouteSpec(index=index, line=node.start_mark.line + 1, matcher=matcher, where=where,
                         callers=callers, protocols=protocols, description=description,
                         bridge_callers=bridge, bridge_networks=bridge_nets, **spec), nodes

    def matcher(self, key: str, node: Node, what: str) -> Matcher | None:
        r = self.r
        if key == "pattern":
            text = r.digits_text(node, f"pattern of {what}")
            if text is None:
                return None
            try:
                matcher = Matcher.pattern(text)
            except PatternSyntaxError as exc:
                r.at(node, f"bad pattern '{text}' in {what}: {exc}")
                return None
            never = sorted({a.char for a in matcher.atoms if a.kind == "lit" and (a.char in _NEVER_DIALED or a.char.isspace())})
            if never:
                r.at(node, f"{what} never matches: pattern '{text}' contains {' '.join(repr(c) for c in never)}, "
                           "but dialed numbers are normalised (scheme, @host, ;parameters removed) and never contain it")
                return None
            bad = [a.char for a in matcher.atoms if a.kind == "lit" and a.char in _NOT_IN_NUMBERS]
            if bad:
                r.at(node, f"bad pattern '{text}' in {what}: '{bad[0]}' cannot occur in a number; "
                           "use digits, letters and captures like {nn:2}")
                return None
            return matcher
        text = r.digits_text(node, f"{key} of {what}")
        if text is None:
            return None
        problem = number_problem(text, f"{key} of {what}")
        if problem:
            r.at(node, problem)
            return None
        return Matcher.exact(text) if key == "number" else Matcher.prefix(text)

    def ranges(self, node: Node, name: str, matcher: Matcher, what: str) -> tuple[tuple[int, int], ...] | None:
        r = self.r
        cap = matcher.capture(name)
        assert cap is not None
        items = r.sequence(node, f"'where' range of '{name}' in {what}", allow_single=True)
        if not items:
            return None
        out: list[tuple[int, int]] = []
        for item in items:
            if not (isinstance(item, ScalarNode) and item.tag in (STR, INT)):
                r.at(item, f"'where' range of '{name}' in {what} must be text like \"01-20\" or \"7\", "
                           f"got {describe_node(item)}")
                return None
            mr = RANGE.match(item.value)
            if mr is None:
                r.at(item, f"'where' range '{item.value}' of '{name}' in {what} is not a range; "
                           "expected LOW-HIGH with digits, like \"01-20\", or one number")
                return None
            lo = int(mr.group(1))
            hi = int(mr.group(2)) if mr.group(2) is not None else lo
            if lo > hi:
                r.at(item, f"'where' range '{item.value}' of '{name}' in {what} is empty (low {lo} > high {hi}); "
                           "write it as LOW-HIGH")
                return None
            top = cap.max_value()
            if top is not None and lo > top:
                r.at(item, f"{what} never matches: {cap.spec()} captures exactly {cap.width} digit"
                           f"{'s' if cap.width != 1 else ''} (0-{top}), so '{name}' can never be in {lo}-{hi}")
                return None
            if top is not None and hi > top:
                r.at(item, f"'where' range '{item.value}' of '{name}' in {what} goes past what {cap.spec()} captures "
                           f"({cap.width} digit{'s' if cap.width != 1 else ''}, at most {top}): numbers above {top} "
                           f"never reach this route; write {mr.group(1)}-{top}, or capture more digits")
                return None
            out.append((lo, hi))
        return tuple(out)

    def reject(self, node: Node, what: str) -> tuple[int | None | bool, str | None]:
        r = self.r
        if isinstance(node, ScalarNode) and node.tag == NULL:
            return None, None
        m = r.mapping(node, f"reject of {what}", REJECT_KEYS)
        if m is None:
            return False, None
        status: int | None | bool = None
        if "status" in m:
            status = r.integer(m["status"][1], f"reject status of {what} (a SIP status code)", 400, 699)
            if status is None:
                status = False
        reason = r.text(m["reason"][1], f"reject reason of {what}") if "reason" in m else None
        return status, reason

    # ================================================================= cross checks
    def cross_check(self, rooms: list[RoomSpec], templates: list[TemplateSpec],
                    template_nodes: dict[str, Node], routes: list[tuple[RouteSpec, _RouteNodes]]) -> None:
        r = self.r
        room_ids = [x.id for x in rooms]
        by_template = {t.id: t for t in templates}
        used_templates: set[str] = set()
        bad_routes: list[int] = []
        for pos, (route, nodes) in enumerate(routes):
            what = f"route #{route.index}"
            caps = {c.name: c for c in route.matcher.captures}
            if route.action == "room" and route.room not in room_ids:
                r.at(nodes.action, f"{what} sends calls to room '{route.room}', which does not exist"
                                   f"{_did_you_mean(route.room or '', room_ids)}")
                bad_routes.append(pos)
            elif route.action == "template":
                t = by_template.get(route.template or "")
                if t is None:
                    r.at(nodes.action, f"{what} uses template '{route.template}', which does not exist"
                                       f"{_did_you_mean(route.template or '', list(by_template))}")
                    bad_routes.append(pos)
                    continue
                used_templates.add(t.id)
                missing = [p for p in placeholders(t.id) + placeholders(t.name) if p not in caps]
                wild = [p for p in placeholders(t.id) if p in caps and caps[p].kind == "any"]
                if missing:
                    r.at(nodes.action, f"template '{t.id}' (line {t.line}) uses {{{missing[0]}}}, which "
                                       f"{route.matcher.describe()} of {what} does not capture "
                                       f"(captures: {', '.join(caps) or 'none'})")
                    bad_routes.append(pos)
                elif wild:
                    r.at(nodes.action, f"template id '{t.id}' uses {{{wild[0]}}}, which {what} captures with "
                                       f"{caps[wild[0]].spec()} (any characters); a room id needs digits: "
                                       f"capture it with {{{wild[0]}}} or {{{wild[0]}:K}}")
                    bad_routes.append(pos)
            elif route.action == "dial":
                missing = [p for p in placeholders(route.dial or "") if p not in caps]
                if missing:
                    r.at(nodes.action, f"dial target '{route.dial}' of {what} uses {{{missing[0]}}}, which "
                                       f"{route.matcher.describe()} does not capture "
                                       f"(captures: {', '.join(caps) or 'none'})")
                    bad_routes.append(pos)
        for pos in reversed(bad_routes):
            del routes[pos]
        for t in templates:
            if t.id not in used_templates and t.id not in self.template_refs:
                r.at(template_nodes[t.id], f"template '{t.id}' is not used by any route; "
                                           f"add a route with 'template: {t.id}' or remove the template")
            pattern = re.sub(r"\\\{[^{}]*\\\}", "[0-9]+", re.escape(t.id))
            for room in rooms:
                if re.fullmatch(pattern, room.id):
                    r.at(template_nodes[t.id], f"template '{t.id}' can create room id '{room.id}', which is "
                                               f"already the room at line {room.line}; rename one of them")

    def check_shadowing(self, rooms: list[RoomSpec], routes: list[tuple[RouteSpec, _RouteNodes]]) -> None:
        @dataclass
        class Earlier:
            matcher: Matcher
            label: str
            callers: tuple[str, ...] = ()
            protocols: tuple[str, ...] = ()

        @dataclass
        class Partial:
            route: RouteSpec

        earlier: list[Earlier] = []
        partial: list[Partial] = []
        for room in rooms:
            for number in room.numbers:
                line = self.number_lines.get((room.id, number), room.line)
                earlier.append(Earlier(Matcher.exact(number), f"room '{room.id}' (number '{number}' at line {line})"))
        for route, nodes in routes:
            eligible = [
                e for e in earlier
                if (not e.callers or "*" in e.callers or (route.callers and set(route.callers) <= set(e.callers)))
                and (not e.protocols or (route.protocols and set(route.protocols) <= set(e.protocols)))
            ]
            single = next((e for e in eligible if covers([e.matcher], route.matcher)), None)
            hidden = None
            if single is None and route.matcher.kind == "number":
                # an exact number behind a pattern route whose `where` takes that very number
                hidden = next((p for p in partial if p.route.matcher.match(route.matcher.text) is not None
                               and p.route.where_ok(p.route.matcher.match(route.matcher.text) or {})
                               and (not p.route.callers or "*" in p.route.callers
                                    or (route.callers and set(route.callers) <= set(p.route.callers)))
                               and (not p.route.protocols
                                    or (route.protocols and set(route.protocols) <= set(p.route.protocols)))), None)
            if single is not None:
                # room numbers are tried before every route: moving the route cannot help
                hint = "remove it or give the room another number" if single.label.startswith("room ") \
                    else "remove it or move it above"
                self.r.at(nodes.node, f"route #{route.index} never matches: every number it matches is taken by "
                                      f"{single.label}; {hint}")
            elif hidden is not None:
                self.r.at(nodes.node, f"route #{route.index} never matches: its number '{route.matcher.text}' is "
                                      f"taken by the route at line {hidden.route.line} "
                                      f"({hidden.route.matcher.describe()}, whose 'where' includes it); "
                                      "move it above that route or narrow the 'where'")
            else:
                overlapping = [e for e in eligible if intersects(e.matcher, route.matcher)]
                if len(overlapping) > 1 and covers([e.matcher for e in overlapping], route.matcher):
                    self.r.at(nodes.node, f"route #{route.index} never matches: every number it matches is taken by "
                                          f"earlier rules: {'; '.join(e.label for e in overlapping)}")
            if not route.where:
                earlier.append(Earlier(route.matcher, f"the route at line {route.line} ({route.matcher.describe()})",
                                       route.callers, route.protocols))
            else:   # only partly known: it hides the exact numbers its `where` takes (checked above)
                partial.append(Partial(route))

    def check_cascades(self, plan: DialPlan) -> None:
        for owner, number, node in self.cascades:
            res = plan.route(number, caller=owner)
            if res.kind == "dial":
                continue
            if res.kind == "none":
                why = "no route matches it"
            else:
                why = f"it leads to {res.rule} ({res.kind})"
            self.r.at(node, f"cascade number '{number}' of '{owner}' must route to a dial rule, but {why}; "
                            "add a route like {prefix: \"00\", dial: \"h323:{rest}@mcu.example\"}")


def _peek(node: Node, key: str) -> str | None:
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.value == key and isinstance(v, ScalarNode) and v.value:
                return v.value
    return None


def _did_you_mean(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if options:
        shown = ", ".join(options[:10]) + (", ..." if len(options) > 10 else "")
        return f" (known: {shown})"
    return " (none are defined)"


def _suggest_id(text: str) -> str:
    import unicodedata

    folded = unicodedata.normalize("NFKD", text.replace("đ", "d").replace("Đ", "D"))
    folded = "".join(c for c in folded if not unicodedata.combining(c)).lower()
    return re.sub(r"[^a-z0-9_-]+", "-", folded).strip("-") or "room-1"


def _looks_like_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _target_host(uri: str) -> str | None:
    """The host of a dial target (``sip:x@host:port;…``, ``h323:x@host``), None without one; a
    placeholder in the host is not a name."""
    rest = uri.strip().split(":", 1)[-1]
    if "@" not in rest:
        return None
    host = rest.rsplit("@", 1)[1].split(";", 1)[0]
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return None if "{" in host or not host else host
