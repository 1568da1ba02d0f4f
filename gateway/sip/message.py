"""SIP messages (RFC 3261 §7, §20, §25): model, parser, serializer, TCP framing.

``parse_message(data)`` turns one datagram (or one framed stream message)
into a :class:`Request` or :class:`Response`, or raises
:class:`SipParseError` whose ``reason`` can be used as the reason phrase of
the 400 and whose ``partial`` request lets the caller still form that answer.
RFC 4475 is the yardstick (``tests/test_sip_torture.py`` runs all of it).

What the parser enforces, beyond the grammar of the start line:

* leading CRLFs are skipped; header folding (CRLF + WSP) is unfolded;
  SP/HTAB around the colon are allowed; names are case-insensitive and
  compact forms become the long name (see ``headers``).
* Via (every element), From, To, Call-ID, CSeq, Max-Forwards,
  Content-Length, Contact, Route, Record-Route and Date are parsed and must
  be well formed; other headers are kept verbatim and parsed on demand.
* a request needs Via, From, To, Call-ID and CSeq, and the CSeq method must
  equal the request method. Max-Forwards may be absent (many stacks omit
  it; ``max_forwards`` is then None and a proxy treats it as 70) but must be
  0-255 when present. A response needs Via, From, To, Call-ID and CSeq.
* From, To, Call-ID, CSeq, Max-Forwards, Content-Length and Content-Type
  may not appear twice with different values (RFC 4475 multi01, mcl01).
* CSeq sequence numbers must fit in 32 bits unsigned (§8.1.1.5: "expressible
  as a 32-bit unsigned integer"; we *send* values below 2**31).
* a Request-URI may not carry URI headers (§19.1.1 table; RFC 4475 escruri).
* Content-Length: a body longer than Content-Length (a datagram) is cut to
  Content-Length (RFC 4475 dblreq); shorter is an error; absent means "to
  the end of the datagram" (§18.3, UDP only — ``StreamFramer`` insists).
* the SIP version must be SIP/2.0; another SIP/x.y answers 505.

Typed values: :class:`Via`, :class:`Address` (From/To/Contact/Route...),
:class:`CSeq`, plus :class:`SipUri`/:class:`AbsoluteUri` from ``uri``.
Properties on messages (``vias``, ``from_``, ...) parse on each access and
return fresh objects; to change a message, write back through ``headers``
(``msg.headers.set("To", str(addr))``).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from gateway.sip.headers import (
    SINGLE_VALUED,
    Headers,
    SipParseError,
    _NAME_CACHE,
    canonical_name,
    format_params,
    is_token,
    parse_params,
    quote_string,
    scan_quoted,
    show,
    split_list,
    unquote_string,
)
from gateway.sip.uri import AbsoluteUri, SipUri, format_host, parse_uri

__all__ = [
    "SipParseError",
    "Headers",
    "SipUri",
    "AbsoluteUri",
    "parse_uri",
    "Via",
    "Address",
    "CSeq",
    "Request",
    "Response",
    "Message",
    "parse_message",
    "make_response",
    "reason_phrase",
    "StreamFramer",
    "KEEPALIVE_PING",
    "SIP_VERSION",
    "MAGIC_COOKIE",
]

SIP_VERSION = "SIP/2.0"
MAGIC_COOKIE = "z9hG4bK"
KEEPALIVE_PING = b"\r\n\r\n"

_TOKEN_CLASS = r"A-Za-z0-9\-.!%*_+`'~"
_WORD_CLASS = r"A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}"
_CALL_ID_RE = re.compile(r"[" + _WORD_CLASS + r"]+(?:@[" + _WORD_CLASS + r"]+)?\Z")
_VERSION_RE = re.compile(r"SIP/\d+\.\d+\Z", re.IGNORECASE)
_FOLD_RE = re.compile(r"\r\n[ \t]+")
_VIA_RE = re.compile(
    r"[ \t]*([" + _TOKEN_CLASS + r"]+)[ \t]*/[ \t]*([" + _TOKEN_CLASS + r"]+)"
    r"[ \t]*/[ \t]*([" + _TOKEN_CLASS + r"]+)[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9\-_.]*)"
    r"(?:[ \t]*:[ \t]*([0-9]+))?"
    r"[ \t]*(;.*)?\Z",
    re.DOTALL,
)
_CSEQ_RE = re.compile(r"[ \t]*([0-9]+)[ \t]+([" + _TOKEN_CLASS + r"]+)[ \t]*\Z")
_DATE_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT\Z"
)
_WS_RE = re.compile(r"[ \t]")
_NAME_ADDR_RE = re.compile(
    r'[ \t]*(?:"((?:[^"\\\r\n]|\\[^\r\n])*)"[ \t]*|([' + _TOKEN_CLASS + r"]+(?:[ \t]+["
    + _TOKEN_CLASS + r"]+)*)[ \t]*)?<([^<>\s\"]+)>[ \t]*(;.*)?\Z",
    re.DOTALL,
)

_CSEQ_MAX = 2**32 - 1


# --- typed header values ----------------------------------------------------


@dataclass
class Via:
    """One via-parm (RFC 3261 §20.42): ``SIP/2.0/UDP host:port;branch=...``.

    ``params`` has lower-cased names; a parameter present without a value
    (``;rport``) maps to None. ``transport`` is upper-cased.
    """

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = SIP_VERSION

    @classmethod
    def parse(cls, text: str) -> "Via":
        m = _VIA_RE.match(text)
        if m is None:
            raise SipParseError(f"Bad Via: {show(text.strip())}")
        name, version, transport, host, port_text, ptext = m.groups()
        if name.upper() != "SIP" or version != "2.0":
            raise SipParseError(f"Bad Via: unsupported protocol {name}/{version}")
        if host[0] == "[":
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                raise SipParseError(f"Bad Via: bad IPv6 address {show(host)}") from None
            host = host[1:-1]
        port: int | None = None
        if port_text is not None:
            if len(port_text) > 5 or int(port_text) > 65535:
                raise SipParseError(f"Bad Via: port {show(port_text)} out of range")
            port = int(port_text)
        params: dict[str, str | None] = {}
        if ptext:
            try:
                params = parse_params(ptext)
            except SipParseError as e:
                raise SipParseError(f"Bad Via: {e.reason}") from None
        return cls(transport.upper(), host.lower(), port, params)

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return (
            f"{self.protocol}/{self.transport} {format_host(self.host)}{port}"
            f"{format_params(self.params)}"
        )

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The rport value (RFC 3581) when it holds one."""
        v = self.params.get("rport")
        return int(v) if v is not None and v.isdigit() else None

    @property
    def sent_by(self) -> str:
        h = format_host(self.host)
        return h if self.port is None else f"{h}:{self.port}"

    @property
    def is_rfc3261_branch(self) -> bool:
        """True when the branch starts with the magic cookie (§8.1.1.7)."""
        b = self.params.get("branch")
        return b is not None and b.startswith(MAGIC_COOKIE)


@dataclass
class Address:
    """name-addr / addr-spec with header parameters (From, To, Contact, Route,
    Record-Route, Reply-To, Refer-To, ...; RFC 3261 §20.10, §25.1).

    ``display_name`` is unquoted (None when absent). ``params`` are the
    header parameters (tag, expires, q, ...) with lower-cased names: in the
    addr-spec form (no ``<>``) everything after the first ``;`` belongs to
    the header, not to the URI. ``str()`` always writes the ``<>`` form.
    """

    display_name: str | None
    uri: SipUri | AbsoluteUri
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "Address":
        m = _NAME_ADDR_RE.match(text)
        if m is not None:
            quoted, plain, uri_text, ptext = m.groups()
            if quoted is not None:
                display: str | None = unquote_string(quoted)
            elif plain is not None:
                display = " ".join(plain.split()) if (" " in plain or "\t" in plain) else plain
            else:
                display = None
            return cls(display, parse_uri(uri_text), parse_params(ptext) if ptext else {})
        return cls._parse_slow(text)

    @classmethod
    def _parse_slow(cls, text: str) -> "Address":
        s = text.strip(" \t")
        if not s:
            raise SipParseError("empty address")
        display: str | None = None
        if s[0] == '"':
            try:
                end = scan_quoted(s, 0)
            except SipParseError:
                raise SipParseError("unterminated quoted string in display name") from None
            display = unquote_string(s[1 : end - 1])
            rest = s[end:].lstrip(" \t")
            if not rest.startswith("<"):
                raise SipParseError("display name not followed by <URI>")
        else:
            lt = s.find("<")
            if lt < 0:
                return cls._addr_spec(s)
            raw = s[:lt].strip(" \t")
            if raw:
                words = raw.split()
                for w in words:
                    if not is_token(w):
                        raise SipParseError(
                            f"display name {show(raw)} has characters that need quotes"
                        )
                display = " ".join(words)
            rest = s[lt:]
        gt = rest.find(">")
        if gt < 0:
            raise SipParseError("missing '>' after the URI")
        uri_text = rest[1:gt]
        if not uri_text:
            raise SipParseError("empty URI in <>")
        if _WS_RE.search(uri_text):
            raise SipParseError(f"whitespace inside <{show(uri_text)[1:-1]}>")
        uri = parse_uri(uri_text)
        params = parse_params(rest[gt + 1 :])
        return cls(display, uri, params)

    @classmethod
    def _addr_spec(cls, s: str) -> "Address":
        semi = s.find(";")
        uri_text = (s if semi < 0 else s[:semi]).rstrip(" \t")
        if _WS_RE.search(uri_text):
            raise SipParseError(f"whitespace inside the URI {show(uri_text)}")
        if "?" in uri_text or "," in uri_text:
            # §20.10: a URI with a comma, question mark or semicolon MUST be
            # enclosed in angle brackets (RFC 4475 regbadct).
            raise SipParseError(
                f"URI {show(uri_text)} with '?' or ',' must be enclosed in <>"
            )
        uri = parse_uri(uri_text)
        params = parse_params(s[semi:]) if semi >= 0 else {}
        return cls(None, uri, params)

    def __str__(self) -> str:
        dn = "" if self.display_name is None else quote_string(self.display_name) + " "
        return f"{dn}<{self.uri}>{format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def copy(self) -> "Address":
        uri = self.uri.copy() if isinstance(self.uri, SipUri) else self.uri
        return Address(self.display_name, uri, dict(self.params))


@dataclass
class CSeq:
    """CSeq (RFC 3261 §20.16): sequence number and method."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> "CSeq":
        m = _CSEQ_RE.match(text)
        if m is None:
            stripped = text.strip()
            first = stripped.split(None, 1)[0] if stripped else ""
            if first and not first.isdigit():
                raise SipParseError("Bad CSeq: non-numeric sequence number")
            raise SipParseError(f"Bad CSeq: {show(stripped)}")
        digits, method = m.groups()
        if len(digits) > 10 or int(digits) > _CSEQ_MAX:
            raise SipParseError("Bad CSeq: sequence number out of range")
        return cls(int(digits), method)

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


# --- messages ---------------------------------------------------------------


class Message:
    """Fields and helpers shared by Request and Response."""

    headers: Headers
    body: bytes
    version: str

    def _start_line(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def serialize(self) -> bytes:
        """Wire form: CRLF line ends, long header names, Content-Length set to
        ``len(body)`` (in place of the first Content-Length, else last)."""
        body = bytes(self.body)
        lines = [self._start_line()]
        cl_done = False
        for name, value in self.headers.items():
            if name == "Content-Length":
                if cl_done:
                    continue
                value = str(len(body))
                cl_done = True
            lines.append(f"{name}: {value}")
        if not cl_done:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("")
        lines.append("")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body

    def __bytes__(self) -> bytes:
        return self.serialize()

    # -- typed views of the main header fields --
    @property
    def call_id(self) -> str | None:
        return self.headers.get("Call-ID")

    @property
    def cseq(self) -> CSeq | None:
        v = self.headers.get("CSeq")
        return None if v is None else CSeq.parse(v)

    @property
    def from_(self) -> Address | None:
        v = self.headers.get("From")
        return None if v is None else Address.parse(v)

    @property
    def to(self) -> Address | None:
        v = self.headers.get("To")
        return None if v is None else Address.parse(v)

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via | None:
        v = self.headers.get("Via")
        return None if v is None else Via.parse(v)

    @property
    def max_forwards(self) -> int | None:
        v = self.headers.get("Max-Forwards")
        if v is None:
            return None
        return _max_forwards(v)

    @property
    def content_type(self) -> str | None:
        """The media type of the body, lower-cased, without parameters
        (``application/sdp``); None when there is no Content-Type."""
        v = self.headers.get("Content-Type")
        if v is None:
            return None
        return v.split(";", 1)[0].strip(" \t").lower()

    @property
    def contacts(self) -> list[Address]:
        """Every Contact as an Address (a ``*`` Contact is left out)."""
        return [Address.parse(v) for v in self.headers.get_all("Contact") if v != "*"]

    @property
    def record_routes(self) -> list[Address]:
        return [Address.parse(v) for v in self.headers.get_all("Record-Route")]

    @property
    def routes(self) -> list[Address]:
        return [Address.parse(v) for v in self.headers.get_all("Route")]


@dataclass(eq=False)
class Request(Message):
    method: str
    uri: SipUri | AbsoluteUri
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"


@dataclass(eq=False)
class Response(Message):
    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def _start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"



# --- parsing ----------------------------------------------------------------


def _max_forwards(v: str) -> int:
    if not (v.isdigit() and v.isascii()) or len(v) > 10:
        raise SipParseError(f"Bad Max-Forwards: {show(v)}")
    n = int(v)
    if n > 255:
        raise SipParseError(f"Bad Max-Forwards: {n} is above 255")
    return n


def _content_length(lines: list[str]) -> int | None:
    if not lines:
        return None
    if len(lines) > 1 and len(set(lines)) > 1:
        raise SipParseError("Multiple Content-Length values")
    v = lines[0]
    if not (v.isdigit() and v.isascii()) or len(v) > 10:
        raise SipParseError(f"Bad Content-Length: {show(v)}")
    return int(v)


def _split_strict(value: str, what: str) -> list[str]:
    try:
        parts = split_list(value)
    except SipParseError as e:
        raise SipParseError(f"Bad {what}: {e.reason}") from None
    if "" in parts:
        raise SipParseError(f"Bad {what}: empty element in list {show(value)}")
    return parts


def _check_headers(index: dict[str, list[str]], method: str | None) -> None:
    """Validate the header fields of a parsed message (see module doc).

    ``index`` maps lower-cased long header names to their raw line values.
    """
    get = index.get
    for name, key in _SINGLE_KEYS:
        lines = get(key)
        if lines is not None and len(lines) > 1 and len(set(lines)) > 1:
            if key == "content-length":
                raise SipParseError("Multiple Content-Length values")
            raise SipParseError(f"Multiple {name} header fields")
    missing = [name for name, key in _REQUIRED_KEYS if key not in index]
    if missing:
        raise SipParseError("Missing " + ", ".join(missing))
    for line in index["via"]:
        if "," in line:
            for part in _split_strict(line, "Via"):
                Via.parse(part)
        else:
            Via.parse(line)
    for name, key in (("From", "from"), ("To", "to")):
        try:
            Address.parse(index[key][0])
        except SipParseError as e:
            raise SipParseError(f"Bad {name}: {e.reason}") from None
    call_id = index["call-id"][0]
    if _CALL_ID_RE.match(call_id) is None:
        raise SipParseError(f"Bad Call-ID: {show(call_id)}")
    cseq = CSeq.parse(index["cseq"][0])
    if method is not None and cseq.method != method:
        raise SipParseError(
            f"CSeq method {show(cseq.method)} does not match the request method"
        )
    mf = get("max-forwards")
    if mf:
        _max_forwards(mf[0])
    for name, key in (("Contact", "contact"), ("Route", "route"),
                      ("Record-Route", "record-route")):
        lines = get(key)
        if not lines:
            continue
        for line in lines:
            if key == "contact" and line == "*":
                continue
            parts = _split_strict(line, name) if "," in line else (line,)
            for part in parts:
                try:
                    Address.parse(part)
                except SipParseError as e:
                    raise SipParseError(f"Bad {name}: {e.reason}") from None
    dates = get("date")
    if dates:
        for line in dates:
            if _DATE_RE.match(line) is None:
                raise SipParseError(
                    f"Bad Date: {show(line)} is not an RFC 1123 date in GMT"
                )


_SINGLE_KEYS = tuple((n, n.lower()) for n in SINGLE_VALUED)
_REQUIRED_KEYS = tuple((n, n.lower()) for n in ("Via", "From", "To", "Call-ID", "CSeq"))


def parse_message(data: bytes) -> Request | Response:
    """Parse one SIP message (a UDP datagram or a framed stream message).

    Raises SipParseError on anything malformed; see the module doc for the
    rules. Octets after Content-Length are ignored (RFC 4475 dblreq).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("parse_message() needs bytes")
    data = bytes(data)
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    if start >= len(data):
        raise SipParseError("Empty message")
    end = data.find(b"\r\n\r\n", start)
    if end >= 0:
        body_start = end + 4
    elif data.endswith(b"\r\n"):
        # A datagram whose last header line is not followed by the empty
        # line: the datagram boundary ends the message (no body).
        end = body_start = len(data) - 2
    else:
        raise SipParseError("Missing empty line after the header fields")
    head = data[start:end].decode("utf-8", "surrogateescape")
    if "\r\n " in head or "\r\n\t" in head:
        head = _FOLD_RE.sub(" ", head)
    lines = head.split("\r\n")
    start_line = lines[0]

    problem: SipParseError | None = None
    crlf = head.count("\r\n")
    if head.count("\r") != crlf or head.count("\n") != crlf:
        problem = SipParseError("Bare CR or LF in the header section")

    # start line
    is_response = start_line[:4].upper() == "SIP/"
    method = ""
    uri: SipUri | AbsoluteUri = AbsoluteUri("", "")
    status = 0
    reason = ""
    if is_response:
        parts = start_line.split(" ", 2)
        version = parts[0]
        if version.upper() != SIP_VERSION:
            if _VERSION_RE.match(version):
                raise SipParseError(
                    f"SIP version not supported: {show(version)}", 505, is_response=True
                )
            raise SipParseError(f"Bad Status-Line: {show(start_line)}", is_response=True)
        code = parts[1] if len(parts) > 1 else ""
        if not (len(code) == 3 and code.isdigit() and code.isascii()):
            raise SipParseError(f"Bad status code {show(code)}", is_response=True)
        status = int(code)
        if not 100 <= status <= 699:
            raise SipParseError(f"Bad status code {status}", is_response=True)
        reason = parts[2] if len(parts) > 2 else ""
    else:
        parts = start_line.split(" ")
        if len(parts) == 3 and "" not in parts:
            method, uri_text, version = parts
            uri = AbsoluteUri("", uri_text)
            if version.upper() != SIP_VERSION:
                if _VERSION_RE.match(version):
                    problem = SipParseError(
                        f"SIP version not supported: {show(version)}", 505
                    )
                else:
                    problem = SipParseError(f"Bad Request-Line: bad version {show(version)}")
            elif not is_token(method):
                problem = SipParseError(f"Bad Request-Line: bad method {show(method)}")
            else:
                try:
                    uri = parse_uri(uri_text)
                except SipParseError as e:
                    problem = problem or SipParseError(f"Bad Request-URI: {e.reason}")
                else:
                    if isinstance(uri, SipUri) and uri.headers:
                        problem = problem or SipParseError(
                            "Bad Request-URI: URI headers are not allowed in a Request-URI"
                        )
        else:
            if not start_line.strip():
                raise SipParseError("Empty start line")
            if start_line != start_line.rstrip(" \t"):
                why = "whitespace at the end of the Request-Line"
            elif "  " in start_line or "\t" in start_line:
                why = "elements must be separated by a single SP"
            elif len(parts) > 3:
                why = "whitespace inside the Request-URI"
            else:
                why = f"expected 'Method SP Request-URI SP SIP/2.0', got {show(start_line)}"
            problem = problem or SipParseError(f"Bad Request-Line: {why}")
            method = parts[0] if is_token(parts[0]) else ""
            if len(parts) > 1 and parts[1]:
                uri = AbsoluteUri("", parts[1])

    # header lines
    items: list[tuple[str, str, str]] = []
    index: dict[str, list[str]] = {}
    for line in lines[1:]:
        colon = line.find(":")
        if colon <= 0:
            problem = problem or SipParseError(f"Malformed header line {show(line)}")
            continue
        name = line[:colon]
        hit = _NAME_CACHE.get(name)
        if hit is None:
            try:
                hit = canonical_name(name.rstrip(" \t"))
            except SipParseError as e:
                problem = problem or e
                continue
        key = hit[0]
        value = line[colon + 1 :].strip(" \t")
        items.append((key, hit[1], value))
        lst = index.get(key)
        if lst is None:
            index[key] = [value]
        else:
            lst.append(value)
    headers = Headers._from_parsed(items)

    msg: Request | Response
    if is_response:
        msg = Response(status, reason, headers)
    else:
        msg = Request(method, uri, headers)

    # body
    rest = data[body_start:]
    if problem is None:
        try:
            length = _content_length(index.get("content-length", []))
            if length is not None:
                if length > len(rest):
                    raise SipParseError(
                        f"Content-Length larger than the body ({length} > {len(rest)} octets)"
                    )
                rest = rest[:length]
            msg.body = rest
            _check_headers(index, None if is_response else method)
        except SipParseError as e:
            problem = e
    if problem is not None:
        if is_response:
            problem.is_response = True
            problem.partial = None
        else:
            msg.body = rest
            problem.partial = msg  # type: ignore[assignment]
        raise problem
    return msg


# --- responses --------------------------------------------------------------

REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 412: "Conditional Request Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small",
    423: "Interval Too Brief", 428: "Use Identity Header",
    429: "Provide Referrer Identity", 430: "Flow Failed",
    433: "Anonymity Disallowed", 436: "Bad Identity-Info",
    437: "Unsupported Certificate", 438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support", 440: "Max-Breadth Exceeded",
    469: "Bad Info Package", 470: "Consent Needed",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete",
    485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending",
    493: "Undecipherable", 494: "Security Agreement Required",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large",
    555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable", 607: "Unwanted", 608: "Rejected",
}
_CLASS_PHRASES = {1: "Trying", 2: "OK", 3: "Redirection", 4: "Client Error",
                  5: "Server Error", 6: "Global Failure"}


def reason_phrase(status: int) -> str:
    """Default reason phrase for a status code (by class when unknown)."""
    return REASON_PHRASES.get(status) or _CLASS_PHRASES.get(status // 100, "Unknown")


def _one_line(value: str) -> str:
    """A copied header value without the bare CR/LF a malformed request may carry (its 400 must
    still go out)."""
    return value.replace("\r", " ").replace("\n", " ") if ("\r" in value or "\n" in value) else value


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    to_tag: str | None = None,
) -> Response:
    """Build a response to ``request`` (RFC 3261 §8.2.6.2).

    Copies every Via (in order), From, To, Call-ID and CSeq verbatim; adds
    ``;tag=to_tag`` to To when given and To has no tag yet. A 100 also
    copies Timestamp (§8.2.6.1). Works on ``SipParseError.partial``
    (headers that are missing or unreadable are copied as far as present).
    """
    if not 100 <= status <= 699:
        raise ValueError(f"status {status} is not in 100..699")
    src = request.headers
    h = Headers()
    for v in src.get_lines("Via"):
        h.add("Via", _one_line(v))
    for name in ("From", "To", "Call-ID", "CSeq"):
        lines = src.get_lines(name)
        if not lines:
            continue
        v = _one_line(lines[0])
        if name == "To" and to_tag:
            try:
                has_tag = Address.parse(v).tag is not None
            except SipParseError:
                has_tag = True  # unreadable To: copy as is
            if not has_tag:
                v = f"{v};tag={to_tag}"
        h.add(name, v)
    if status == 100:
        for v in src.get_lines("Timestamp"):
            h.add("Timestamp", v)
    if reason is None:
        reason = reason_phrase(status)
    else:
        reason = reason.replace("\r", " ").replace("\n", " ")
    return Response(status, reason, h)


# --- stream framing ---------------------------------------------------------

_CL_RE = re.compile(
    rb"\r\n(?:content-length|l)[ \t]*:[ \t]*((?:\r\n[ \t]+)?[^\r\n]*)", re.IGNORECASE
)


class StreamFramer:
    """Split a TCP/TLS byte stream into SIP messages (RFC 3261 §18.3).

    ``feed(data)`` returns, in order, complete messages (bytes, ready for
    ``parse_message``), ``KEEPALIVE_PING`` (``b"\\r\\n\\r\\n"``, RFC 5626
    §4.4.1: answer with a single CRLF "pong") and at most one
    SipParseError. A single CRLF between messages (a pong, or the optional
    CRLF before a start line) is skipped. On an error — Content-Length
    missing, not a number, repeated with different values, or a message
    larger than ``max_message`` — the framer cannot find the next message:
    ``broken`` becomes True, later ``feed`` calls return nothing, and the
    caller should answer (``error.partial`` when available) and close.
    """

    def __init__(self, max_message: int = 65536) -> None:
        self.max_message = max_message
        self.broken = False
        self._buf = bytearray()
        self._scan_from = 0

    @property
    def buffered(self) -> int:
        """Octets received but not yet returned as a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | SipParseError]:
        out: list[bytes | SipParseError] = []
        if self.broken:
            return out
        buf = self._buf
        buf += data
        while buf:
            if buf[0] == 0x0D or buf[0] == 0x0A:
                if buf.startswith(b"\r\n\r\n"):
                    out.append(KEEPALIVE_PING)
                    del buf[:4]
                    self._scan_from = 0
                    continue
                if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                    break  # maybe the start of a ping: wait for more
                if buf.startswith(b"\r\n"):
                    del buf[:2]
                else:
                    del buf[:1]
                self._scan_from = 0
                continue
            end = buf.find(b"\r\n\r\n", self._scan_from)
            if end < 0:
                if len(buf) > self.max_message:
                    out.append(self._fail(
                        SipParseError(f"Message larger than {self.max_message} octets", 513)
                    ))
                    break
                self._scan_from = max(0, len(buf) - 3)
                break
            head = bytes(buf[:end])
            values = [v.strip() for v in _CL_RE.findall(b"\r\n" + head)]
            error: SipParseError | None = None
            length = 0
            if not values:
                error = SipParseError("Missing Content-Length on a stream transport")
            elif len(set(values)) > 1:
                error = SipParseError("Multiple Content-Length values")
            elif not (values[0].isdigit() and len(values[0]) <= 10):
                error = SipParseError(
                    f"Bad Content-Length: {show(values[0].decode('latin-1'))}"
                )
            else:
                length = int(values[0])
                if end + 4 + length > self.max_message:
                    error = SipParseError(
                        f"Message larger than {self.max_message} octets", 513
                    )
            if error is not None:
                error.partial = _partial_of(head)
                out.append(self._fail(error))
                break
            total = end + 4 + length
            if len(buf) < total:
                self._scan_from = end  # header end known: wait for the body
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
            self._scan_from = 0
        return out

    def _fail(self, error: SipParseError) -> SipParseError:
        self.broken = True
        self._buf.clear()
        return error


def _partial_of(head: bytes) -> Request | None:
    """The request in ``head`` as far as readable (for a 400 before closing)."""
    try:
        msg = parse_message(head + b"\r\n\r\n")
    except SipParseError as e:
        return e.partial
    return msg if isinstance(msg, Request) else None
