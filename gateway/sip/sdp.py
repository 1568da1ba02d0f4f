"""SDP (RFC 8866, formerly RFC 4566): parse, model and serialize session descriptions.

The model keeps what was on the wire: every ``a=`` line in order, every ``b=``
modifier, the formats of each ``m=`` line as strings.  Convenience views
(``rtpmap``, ``fmtp``, ``rtcp_fb``, ``direction``, ``ptime`` ...) are derived
from the attributes, so there is one source of truth and ``serialize()`` gives
back what was parsed (in canonical line order, CRLF line ends).

Parsing is tolerant where real devices are sloppy and nothing is lost
(LF-only line ends, trailing blanks, blank lines, a missing ``s=`` or ``t=``
from old room systems, unknown line types): such things are recorded in
``SessionDescription.warnings``.  It is strict where meaning would be lost (no
``v=0``, a broken ``o=``, ``c=`` or ``m=`` line, an ``rtpmap`` that cannot be
read): :class:`SdpError` with a reason, ``status`` 400, for the SIP layer to
answer with.

    >>> sd = SessionDescription.parse("v=0\\no=- 1 1 IN IP4 10.0.0.1\\ns=-\\n"
    ...                               "c=IN IP4 10.0.0.1\\nt=0 0\\nm=audio 4000 RTP/AVP 0\\n")
    >>> sd.media[0].rtpmap, sd.connection_address(sd.media[0])
    ({}, '10.0.0.1')
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "DIRECTIONS",
    "Connection",
    "MediaDescription",
    "Origin",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "format_fmtp",
    "parse_fmtp",
]

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


#: formats per m= line we take: real offers list a dozen or two; thousands (8,000 fit in one UDP
#: INVITE) only cost time
MAX_FORMATS = 64
#: m= sections we take in one description (a call has two or three; a cascade a few more)
MAX_MEDIA = 16


def is_number(text: str) -> bool:
    """Decimal ASCII digits, not absurdly many (``str.isdigit`` also takes "²" and other scripts'
    digits, which ``int`` then refuses)."""
    return text.isascii() and text.isdigit() and len(text) <= 18


class SdpError(ValueError):
    """An SDP that cannot be used.  ``reason`` is for a person; ``status`` is the SIP
    response code the SIP layer should answer with (400 unreadable, 488 not acceptable)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status

    def __repr__(self) -> str:
        return f"SdpError({self.status}, {self.reason!r})"


@dataclass(frozen=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>``."""

    username: str
    sess_id: str              # kept as text: it is "a numeric string" (up to 64 bits and more in the wild)
    sess_version: int
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return (f"{self.username} {self.sess_id} {self.sess_version} "
                f"{self.nettype} {self.addrtype} {self.address}")


@dataclass(frozen=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>`` (a multicast TTL/count stays in ``address``'s suffix)."""

    nettype: str
    addrtype: str
    address: str              # the bare host, without /ttl/count
    suffix: str = ""          # "/127" or "/127/3" for multicast, kept verbatim

    @classmethod
    def for_host(cls, host: str) -> Connection:
        return cls("IN", "IP6" if ":" in host else "IP4", host)

    @property
    def is_hold(self) -> bool:
        """RFC 2543-style hold: the unspecified address (RFC 3264 §8.4)."""
        return self.address in ("0.0.0.0", "::")

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}{self.suffix}"


class RtpMap(NamedTuple):
    """``a=rtpmap:<pt> <encoding>/<clock>[/<channels>]``; channels is 1 when absent.
    A tuple: ``encoding, clock, channels = m.rtpmap[pt]``."""

    encoding: str
    clock_rate: int
    channels: int = 1

    def __str__(self) -> str:
        if self.channels != 1:
            return f"{self.encoding}/{self.clock_rate}/{self.channels}"
        return f"{self.encoding}/{self.clock_rate}"


# --------------------------------------------------------------------------- fmtp helpers

def parse_fmtp(text: str, encoding: str | None = None) -> dict[str, str]:
    """``a=fmtp`` parameters → dict (order kept).

    ``key=value`` pairs separated by ``;`` (RFC 4855); blanks around them are
    ignored; a few devices separate H.263 sizes by spaces (``CIF=1 QCIF=1``),
    accepted too.  A token without ``=`` (an H.263 annex flag such as ``F``) maps
    to ``""``.  telephone-event's fmtp is a bare event list (``0-15``, RFC 4733
    §7.1.1): it is returned as ``{"events": "0-15"}``.
    """
    text = text.strip()
    if encoding is not None and encoding.lower() == "telephone-event":
        return {"events": text.replace(" ", "")} if text else {}
    out: dict[str, str] = {}
    for piece in text.split(";"):
        piece = piece.strip()
        if not piece:
            continue
        tokens = piece.split() if piece.count("=") > 1 and " " in piece else [piece]
        for tok in tokens:
            key, sep, value = tok.partition("=")
            key = key.strip()
            if key:
                out[key] = value.strip() if sep else ""
    return out


def format_fmtp(params: Mapping[str, str], encoding: str | None = None) -> str:
    """The inverse of :func:`parse_fmtp`: ``key=value;key2=value2`` (bare flags stay bare)."""
    if encoding is not None and encoding.lower() == "telephone-event":
        return params.get("events", "")
    return ";".join(f"{k}={v}" if v != "" else k for k, v in params.items())


# --------------------------------------------------------------------------- media

@dataclass
class MediaDescription:
    """One ``m=`` section.  ``attributes`` is authoritative; the properties are views on it."""

    media: str                                   # "audio" | "video" | "application" | "image" | ...
    port: int
    proto: str                                   # "RTP/AVP", "RTP/AVPF", "RTP/SAVP", "udptl", ...
    formats: list[str]
    port_count: int = 1
    connection: Connection | None = None         # media-level c=
    bandwidth: dict[str, int] = field(default_factory=dict)     # b=AS / TIAS / CT / RR / RS ...
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    info: str | None = None                      # i=
    key: str | None = None                       # k= (obsolete, kept for round trip)
    #: the views below, computed once per state of ``attributes`` / ``formats`` (an offer's
    #: negotiation asks for them per payload type: recomputing made a long m= line quadratic)
    _views: dict = field(default_factory=dict, repr=False, compare=False)

    def _view(self, name: str, make: Any) -> Any:
        key = (name, id(self.attributes), len(self.attributes), id(self.formats), len(self.formats))
        got = self._views.get(name)
        if got is None or got[0] != key:
            got = self._views[name] = (key, make())
        return got[1]

    # ---- generic attribute access
    def attr(self, name: str) -> str | None:
        """Value of the first ``a=name`` (``""`` for a property attribute), None if absent."""
        for k, v in self.attributes:
            if k == name:
                return v if v is not None else ""
        return None

    def attrs(self, name: str) -> list[str]:
        return [v if v is not None else "" for k, v in self.attributes if k == name]

    def add(self, name: str, value: str | None = None) -> None:
        self.attributes.append((name, value))

    # ---- RTP views
    @property
    def is_rtp(self) -> bool:
        return "RTP/" in self.proto.upper()

    @property
    def payload_types(self) -> list[int]:
        """The formats as payload type numbers (RTP profiles only; non-numbers skipped)."""
        if not self.is_rtp:
            return []
        return [int(f) for f in self.formats if is_number(f)]

    @property
    def rtpmap(self) -> dict[int, RtpMap]:
        """``a=rtpmap`` per payload type of the m= line (rtpmaps for other numbers are ignored)."""
        return self._view("rtpmap", self._rtpmap)

    def _rtpmap(self) -> dict[int, RtpMap]:
        pts = set(self.payload_types)
        out: dict[int, RtpMap] = {}
        for value in self.attrs("rtpmap"):
            got = _parse_rtpmap(value)
            if got is not None and got[0] in pts and got[0] not in out:
                out[got[0]] = got[1]
        return out

    @property
    def fmtp(self) -> dict[int, str]:
        """Raw fmtp text per payload type (see :meth:`fmtp_params` for the parsed form)."""
        return self._view("fmtp", self._fmtp)

    def _fmtp(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for value in self.attrs("fmtp"):
            pt_text, _, rest = value.strip().partition(" ")
            if is_number(pt_text) and int(pt_text) not in out:
                out[int(pt_text)] = rest.strip()
        return out

    def fmtp_params(self, pt: int) -> dict[str, str]:
        text = self.fmtp.get(pt)
        if text is None:
            return {}
        rm = self.rtpmap.get(pt)
        return parse_fmtp(text, rm.encoding if rm else None)

    @property
    def rtcp_fb(self) -> dict[int | str, list[str]]:
        """``a=rtcp-fb`` (RFC 4585 §4.2) per payload type, ``"*"`` for all: ``{96: ["nack", "nack pli"]}``."""
        return self._view("rtcp_fb", self._rtcp_fb)

    def _rtcp_fb(self) -> dict[int | str, list[str]]:
        out: dict[int | str, list[str]] = {}
        for value in self.attrs("rtcp-fb"):
            pt_text, _, rest = value.strip().partition(" ")
            rest = " ".join(rest.split())
            if not rest:
                continue
            key: int | str = int(pt_text) if is_number(pt_text) else pt_text
            out.setdefault(key, []).append(rest)
        return out

    def rtcp_fb_for(self, pt: int) -> list[str]:
        fb = self.rtcp_fb
        seen: list[str] = []
        for v in fb.get("*", []) + fb.get(pt, []):
            if v not in seen:
                seen.append(v)
        return seen

    @property
    def direction(self) -> str:
        """The media-level direction attribute, ``sendrecv`` when there is none (RFC 8866 §6.7).

        Use :meth:`SessionDescription.direction_of` to include a session-level one."""
        return self.explicit_direction or "sendrecv"

    @property
    def explicit_direction(self) -> str | None:
        for k, v in self.attributes:
            if v is None and k in DIRECTIONS:
                return k
        return None

    def set_direction(self, direction: str) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
        self.attributes = [(k, v) for k, v in self.attributes if not (v is None and k in DIRECTIONS)]
        self.attributes.append((direction, None))

    @property
    def ptime(self) -> int | None:
        return _int_attr(self.attr("ptime"))

    @property
    def maxptime(self) -> int | None:
        return _int_attr(self.attr("maxptime"))

    @property
    def rtcp(self) -> int | None:
        """The RTCP port of ``a=rtcp`` (RFC 3605), None if absent."""
        v = self.attr("rtcp")
        if not v:
            return None
        first = v.split()[0]
        return int(first) if is_number(first) else None

    @property
    def rtcp_address(self) -> str | None:
        """The address of ``a=rtcp:<port> IN IP4 <addr>`` when given."""
        v = self.attr("rtcp")
        parts = v.split() if v else []
        return parts[3] if len(parts) >= 4 else None

    def lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count != 1 else str(self.port)
        out = [f"m={self.media} {port} {self.proto} {' '.join(self.formats)}"]
        if self.info is not None:
            out.append(f"i={self.info}")
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(f"b={k}:{v}" for k, v in self.bandwidth.items())
        if self.key is not None:
            out.append(f"k={self.key}")
        out.extend(f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes)
        return out


def _int_attr(v: str | None) -> int | None:
    if v is None:
        return None
    v = v.strip()
    # "a=ptime:20", and the odd "a=ptime:20.0" / "a=ptime:30 " seen in the wild
    m = re.match(r"^(\d+)(?:\.\d*)?$", v)
    return int(m.group(1)) if m else None


_RTPMAP_RE = re.compile(r"^\s*(\d{1,3})\s+([^/\s]+)/(\d+)(?:/(\d+))?\s*$")


def _parse_rtpmap(value: str) -> tuple[int, RtpMap] | None:
    m = _RTPMAP_RE.match(value)
    if not m:
        return None
    return int(m.group(1)), RtpMap(m.group(2), int(m.group(3)), int(m.group(4)) if m.group(4) else 1)


# --------------------------------------------------------------------------- session

@dataclass
class SessionDescription:
    """A whole SDP body (RFC 8866 §5)."""

    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    bandwidth: dict[str, int] = field(default_factory=dict)
    timing: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)])
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    version: int = 0
    # lines kept for a faithful round trip: i= u= e= p= (session), r= z= k=
    info: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    repeats: list[str] = field(default_factory=list)
    zone: str | None = None
    key: str | None = None
    warnings: list[str] = field(default_factory=list, compare=False)   # tolerated quirks, for logs

    # ---- views
    def connection_address(self, m: MediaDescription) -> str | None:
        """Where media of ``m`` goes: the media-level ``c=`` else the session-level one."""
        c = m.connection or self.connection
        return c.address if c is not None else None

    def connection_of(self, m: MediaDescription) -> Connection | None:
        return m.connection or self.connection

    def attr(self, name: str) -> str | None:
        for k, v in self.attributes:
            if k == name:
                return v if v is not None else ""
        return None

    def direction_of(self, m: MediaDescription) -> str:
        """Direction of a stream: media-level attribute, else session-level, else sendrecv."""
        explicit = m.explicit_direction
        if explicit:
            return explicit
        for k, v in self.attributes:
            if v is None and k in DIRECTIONS:
                return k
        return "sendrecv"

    # ---- parsing
    @classmethod
    def parse(cls, text: str | bytes) -> SessionDescription:
        """Parse an SDP body; :class:`SdpError` (status 400) when it cannot be understood."""
        try:
            return cls._parse(text)
        except SdpError:
            raise
        except ValueError as exc:   # a "number" int() refuses (non-ASCII digits, thousands of them)
            raise SdpError(f"a number in the SDP cannot be read ({str(exc)[:60]})") from None

    @classmethod
    def _parse(cls, text: str | bytes) -> SessionDescription:
        if isinstance(text, (bytes, bytearray)):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError:
                text = bytes(text).decode("latin-1")   # s=/i= in a legacy charset: keep going
        if "\x00" in text:
            raise SdpError("SDP contains a NUL byte")
        raw_lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        warnings: list[str] = []
        lines: list[tuple[int, str, str]] = []
        for n, line in enumerate(raw_lines, 1):
            stripped = line.strip()
            if not stripped:
                continue
            if len(stripped) < 2 or stripped[1] != "=" or not stripped[0].isalpha():
                # a "key = value" with blanks around "=" is seen from some devices
                m = re.match(r"^([a-zA-Z])\s+=\s*(.*)$", stripped)
                if m:
                    warnings.append(f"line {n}: blanks around '=' ({stripped!r})")
                    lines.append((n, m.group(1), m.group(2)))
                    continue
                if not lines:
                    raise SdpError(f"SDP line {n} is not <type>=<value>: {stripped[:60]!r}")
                warnings.append(f"line {n}: not <type>=<value>, ignored: {stripped[:60]!r}")
                continue
            lines.append((n, stripped[0], stripped[2:]))
        if not lines:
            raise SdpError("empty SDP body")
        n, t, v = lines[0]
        if t != "v":
            raise SdpError(f"SDP must start with v=0, line {n} is {t}={v[:40]}")
        if v.strip() != "0":
            raise SdpError(f"unsupported SDP version v={v} (only v=0 exists)")

        origin: Origin | None = None
        sd_kwargs: dict = {}
        session_name: str | None = None
        connection: Connection | None = None
        bandwidth: dict[str, int] = {}
        timing: list[tuple[int, int]] = []
        attributes: list[tuple[str, str | None]] = []
        media: list[MediaDescription] = []
        emails: list[str] = []
        phones: list[str] = []
        repeats: list[str] = []
        cur: MediaDescription | None = None

        for n, t, v in lines[1:]:
            if t == "m":
                if len(media) >= MAX_MEDIA:
                    raise SdpError(f"line {n}: more than {MAX_MEDIA} m= sections; a call takes a few", status=488)
                cur = _parse_m(n, v)
                media.append(cur)
                continue
            if cur is not None:
                if t == "c":
                    if cur.connection is not None:
                        warnings.append(f"line {n}: more than one c= in m= #{len(media)}, the first is used")
                        continue
                    cur.connection = _parse_c(n, v)
                elif t == "b":
                    _parse_b(n, v, cur.bandwidth, warnings)
                elif t == "a":
                    if not v.partition(":")[0].strip():
                        warnings.append(f"line {n}: a= with no attribute name, ignored")
                        continue
                    cur.attributes.append(_parse_a(n, v))
                elif t == "i":
                    cur.info = v
                elif t == "k":
                    cur.key = v
                else:
                    warnings.append(f"line {n}: {t}= is not valid inside a media section, ignored")
                continue
            if t == "o":
                if origin is not None:
                    warnings.append(f"line {n}: second o= line ignored")
                    continue
                origin = _parse_o(n, v)
            elif t == "s":
                session_name = v if v.strip() else " "
            elif t == "c":
                if connection is not None:
                    warnings.append(f"line {n}: second session-level c= ignored")
                    continue
                connection = _parse_c(n, v)
            elif t == "b":
                _parse_b(n, v, bandwidth, warnings)
            elif t == "t":
                parts = v.split()
                if len(parts) != 2 or not all(is_number(p) for p in parts):
                    warnings.append(f"line {n}: t={v!r} is not two numbers; taken as t=0 0")
                    timing.append((0, 0))
                else:
                    timing.append((int(parts[0]), int(parts[1])))
            elif t == "a":
                if not v.partition(":")[0].strip():
                    warnings.append(f"line {n}: a= with no attribute name, ignored")
                    continue
                attributes.append(_parse_a(n, v))
            elif t == "i":
                sd_kwargs["info"] = v
            elif t == "u":
                sd_kwargs["uri"] = v
            elif t == "e":
                emails.append(v)
            elif t == "p":
                phones.append(v)
            elif t == "r":
                repeats.append(v)
            elif t == "z":
                sd_kwargs["zone"] = v
            elif t == "k":
                sd_kwargs["key"] = v
            elif t == "v":
                raise SdpError(f"line {n}: a second v= line: two SDP bodies glued together?")
            else:
                warnings.append(f"line {n}: unknown line type {t}= ignored")

        if origin is None:
            raise SdpError("SDP has no o= line (RFC 8866 §5.2: it names the session and its version)")
        if session_name is None:
            warnings.append("no s= line (RFC 8866 requires one); taken as s=-")
            session_name = "-"
        if not timing:
            warnings.append("no t= line (RFC 8866 requires one); taken as t=0 0")
            timing = [(0, 0)]
        sd = cls(origin=origin, session_name=session_name, connection=connection, bandwidth=bandwidth,
                 timing=timing, attributes=attributes, media=media, emails=emails, phones=phones,
                 repeats=repeats, warnings=warnings, **sd_kwargs)
        for i, m in enumerate(media, 1):
            _check_media(i, m, warnings)
        return sd

    # ---- output
    def serialize(self) -> str:
        """The SDP text, lines in RFC 8866 order, CRLF line ends."""
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        if self.info is not None:
            out.append(f"i={self.info}")
        if self.uri is not None:
            out.append(f"u={self.uri}")
        out.extend(f"e={e}" for e in self.emails)
        out.extend(f"p={p}" for p in self.phones)
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(f"b={k}:{v}" for k, v in self.bandwidth.items())
        for start, stop in self.timing or [(0, 0)]:
            out.append(f"t={start} {stop}")
        out.extend(f"r={r}" for r in self.repeats)
        if self.zone is not None:
            out.append(f"z={self.zone}")
        if self.key is not None:
            out.append(f"k={self.key}")
        out.extend(f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes)
        for m in self.media:
            out.extend(m.lines())
        return "\r\n".join(out) + "\r\n"

    def __bytes__(self) -> bytes:
        return self.serialize().encode("utf-8")


# --------------------------------------------------------------------------- line parsers

def _parse_o(n: int, v: str) -> Origin:
    parts = v.split()
    if len(parts) != 6:
        raise SdpError(f"line {n}: o= needs 6 fields (username sess-id sess-version nettype addrtype "
                       f"address), got {len(parts)}: {v!r}")
    user, sess_id, sess_version, nettype, addrtype, address = parts
    if not is_number(sess_version):
        raise SdpError(f"line {n}: o= sess-version must be a number (RFC 3264 §8 counts on it): {v!r}")
    return Origin(user, sess_id, int(sess_version), nettype, addrtype, address)


def _parse_c(n: int, v: str) -> Connection:
    parts = v.split()
    if len(parts) != 3:
        raise SdpError(f"line {n}: c= needs 'IN IP4|IP6 <address>', got {v!r}")
    nettype, addrtype, addr = parts
    if nettype.upper() != "IN":
        raise SdpError(f"line {n}: c= network type {nettype!r} is not IN")
    if addrtype.upper() not in ("IP4", "IP6"):
        raise SdpError(f"line {n}: c= address type {addrtype!r} is not IP4 or IP6")
    host, slash, rest = addr.partition("/")
    if not host:
        raise SdpError(f"line {n}: c= has no address: {v!r}")
    return Connection(nettype, addrtype, host, slash + rest)


def _parse_b(n: int, v: str, into: dict[str, int], warnings: list[str]) -> None:
    mod, sep, value = v.partition(":")
    mod, value = mod.strip(), value.strip()
    if not sep or not mod or not is_number(value):
        warnings.append(f"line {n}: b={v!r} is not <modifier>:<number>, ignored")
        return
    into[mod] = int(value)


def _parse_a(n: int, v: str) -> tuple[str, str | None]:
    name, sep, value = v.partition(":")
    return (name.strip(), value.rstrip() if sep else None)


def _parse_m(n: int, v: str) -> MediaDescription:
    parts = v.split()
    if len(parts) < 3:
        raise SdpError(f"line {n}: m= needs '<media> <port> <proto> <fmt> ...', got {v!r}")
    media, port_text, proto, *formats = parts
    port_s, slash, count_s = port_text.partition("/")
    if not is_number(port_s) or (slash and not is_number(count_s)):
        raise SdpError(f"line {n}: m= port {port_text!r} is not a number")
    port = int(port_s)
    if port > 65535:
        raise SdpError(f"line {n}: m= port {port} is out of range 0..65535")
    count = int(count_s) if slash else 1
    if not formats:
        if port != 0:
            raise SdpError(f"line {n}: m={media} has no formats")
        formats = []
    if len(formats) > MAX_FORMATS:
        raise SdpError(f"line {n}: m={media} lists {len(formats)} formats; at most {MAX_FORMATS} are taken",
                       status=488)
    if "RTP/" in proto.upper():
        bad = [f for f in formats if not is_number(f) or int(f) > 127]
        if bad:
            shown = ", ".join(b[:8] for b in bad[:8]) + (", …" if len(bad) > 8 else "")
            raise SdpError(f"line {n}: m={media} {proto}: payload types must be 0..127, got {shown}")
    formats = list(dict.fromkeys(formats))       # a payload type listed twice counts once
    return MediaDescription(media=media.lower(), port=port, port_count=count, proto=proto, formats=formats)


def _check_media(i: int, m: MediaDescription, warnings: list[str]) -> None:
    if not m.is_rtp:
        return
    pts = set(m.payload_types)
    for value in m.attrs("rtpmap"):
        got = _parse_rtpmap(value)
        if got is None:
            # only that format loses its meaning: it is left unidentified (skipped in negotiation)
            warnings.append(f"m= #{i} ({m.media}): unreadable a=rtpmap:{value} "
                            "(expected '<pt> <encoding>/<clock>[/<channels>]'), ignored")
        elif got[0] not in pts:
            warnings.append(f"m= #{i}: a=rtpmap for payload type {got[0]} not in the m= line, ignored")
    for value in m.attrs("fmtp"):
        pt_text = value.strip().partition(" ")[0]
        if is_number(pt_text) and int(pt_text) not in pts:
            warnings.append(f"m= #{i}: a=fmtp for payload type {pt_text} not in the m= line, ignored")
    for value in m.attrs("ptime") + m.attrs("maxptime"):
        if _int_attr(value) is None:
            warnings.append(f"m= #{i}: unreadable ptime {value!r}, ignored")

