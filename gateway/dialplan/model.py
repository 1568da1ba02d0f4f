"""Plain data the dial plan is made of: rooms, templates, routes, endpoints, results."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from .matcher import Matcher

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
RouteKind = Literal["room", "dial", "reject", "none"]

LAYOUTS = ("voice-switched", "cp-2x2", "cp-3x3", "cp-1+5", "cp-1+7")
PROTOCOLS = ("sip", "h323", "webrtc")


@dataclass(frozen=True)
class RoomSpec:
    """A conference room.

    ``audio_codecs`` / ``video_codecs`` are in order of preference; an empty tuple
    means "no restriction: every codec of the catalogue".  ``template`` is the
    template id a room was instantiated from (None for rooms written in the plan).
    """

    id: str
    name: str
    numbers: tuple[str, ...]
    pin: str | None
    max_participants: int
    layout: str
    audio_codecs: tuple[str, ...]
    video_codecs: tuple[str, ...]
    max_resolution: tuple[int, int] | None
    max_bitrate_kbps: int | None
    cascade: str | None
    template: str | None
    line: int
    video_labels: bool = True        # names along the bottom of the video tiles
    #: media encryption: "required" (unencrypted callers refused), "preferred" (SRTP when the
    #: caller offers it over a protected signalling path), "off" (plain RTP only)
    encryption: str = "preferred"


@dataclass(frozen=True)
class TemplateSpec:
    """A room template; ``room`` holds its settings, with ``{capture}`` placeholders in id and name."""

    id: str
    name: str
    room: RoomSpec
    line: int


@dataclass(frozen=True)
class RouteSpec:
    """One entry of ``routes:``; ``index`` is 1-based (route #index)."""

    index: int
    line: int
    matcher: Matcher
    action: Literal["room", "template", "dial", "reject"]
    room: str | None = None
    template: str | None = None
    dial: str | None = None
    status: int = 403
    reason: str = ""
    where: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    callers: tuple[str, ...] = ()     # glob patterns; empty = any caller
    protocols: tuple[str, ...] = ()   # empty = any protocol
    description: str = ""
    # ``callers:`` of a dial route: who is bridged out to its target (checked endpoints by alias,
    # number or group glob; source networks); nobody when both are empty
    bridge_callers: tuple[str, ...] = ()
    bridge_networks: tuple[Any, ...] = ()

    def where_ok(self, captures: dict[str, str]) -> bool:
        for name, ranges in self.where.items():
            value = captures.get(name, "")
            if not (value.isascii() and value.isdigit()):
                return False
            n = int(value)
            if not any(lo <= n <= hi for lo, hi in ranges):
                return False
        return True

    def has_conditions(self) -> bool:
        return bool(self.callers or self.protocols)

    def describe(self, filename: str) -> str:
        return f"route #{self.index} {self.matcher.describe()} ({filename}:{self.line})"


@dataclass(frozen=True)
class EndpointSpec:
    """A known endpoint (registration credentials and where it may connect from)."""

    alias: str
    number: str | None
    protocol: str
    username: str
    password: str | None
    networks: tuple[IPNetwork, ...]
    line: int
    name: str = ""
    #: dialled-digit prefixes an H.323 gateway/MCU endpoint may register (supportedPrefixes)
    prefixes: tuple[str, ...] = ()
    #: what proves a call comes from this endpoint: "password" (its registration from that address, or
    #: digest on the INVITE), "network" (its registration, or a source address in ``networks``),
    #: "registration" (only its current registration)
    identity: str = "registration"
    #: media encryption for this site's calls (required | preferred | off); None: the room's
    encryption: str | None = None
    #: where the site belongs for the operator (e.g. its district): the console groups by it
    group: str | None = None

    def allows(self, address: str) -> bool:
        """May a request from ``address`` (an IP, optionally ``ip:port`` / ``[v6]:port``) come from here?"""
        if not self.networks:
            return True
        ip = parse_address(address)
        if ip is None:
            return False
        return any(ip.version == net.version and ip in net for net in self.networks)


def combined_encryption(room: str | None, endpoint: str | None) -> str:
    """The policy for one site in one room: "required" on either side wins (the room then
    refuses a site that says "off"), else "off" on either side, else "preferred"."""
    both = (room or "preferred", endpoint or "preferred")
    if "required" in both:
        return "required"
    return "off" if "off" in both else "preferred"


def parse_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = (address or "").strip()
    candidates = [text]
    m = re.fullmatch(r"\[([^\]]+)\](?::\d+)?", text)
    if m:
        candidates = [m.group(1)]
    elif text.count(":") == 1:
        candidates.append(text.split(":")[0])
    for c in candidates:
        try:
            return ipaddress.ip_address(c.split("%")[0])
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class RouteResult:
    """What to do with a call.

    ``status`` is the SIP status for "reject" (default 403) and 404 for "none".
    """

    kind: RouteKind
    rule: str
    line: int | None
    room: RoomSpec | None = None
    target: str | None = None
    status: int | None = None
    reason: str = ""
    captures: dict[str, str] = field(default_factory=dict)
    route: "RouteSpec | None" = None     # the route that decided (None: a room number, or nothing)


_SCHEME = re.compile(r"(?:sips?|h323|tel):", re.IGNORECASE)


def normalise(dialed: str | None) -> str:
    """The user part of what was dialed: ``sip:8000@host;transport=tcp`` -> ``8000``.

    Keeps only the ``<...>`` part of a name-addr, strips whitespace, a ``sip:``/``sips:``/``h323:``/``tel:``
    scheme, the ``@host`` part, URI parameters (``;...``) and headers (``?...``).
    Case is kept; matching is case-insensitive.
    """
    if not dialed:
        return ""
    text = dialed.strip()
    if "<" in text and ">" in text.split("<", 1)[1]:  # '"Name" <sip:8000@host>'
        text = text.split("<", 1)[1].split(">", 1)[0]
    text = text.strip("<>").strip()
    m = _SCHEME.match(text)
    if m:
        text = text[m.end():]
    for sep in ("@", ";", "?"):
        text = text.split(sep, 1)[0]
    return text.strip()
