"""SIP header fields (RFC 3261 §7.3, §20, §25.1): names, lists, parameters.

This is the bottom layer of the SIP message model: the typed parse error,
the grammar helpers shared by ``uri`` and ``message`` (token, quoted-string,
generic parameters, comma-separated lists) and :class:`Headers`, the ordered,
multi-valued, case-insensitive header collection.

Header names are case-insensitive (§7.3.1); compact forms (§7.3.3 and the
extensions that define one: RFC 3262, 3515, 3892, 3903, 4028, 4474, 3841)
are stored under the canonical long name, and known names are stored in
their canonical spelling (``cseq`` → ``CSeq``). Unknown header names are
kept verbatim, in order.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from gateway.sip.message import Request

__all__ = [
    "SipParseError",
    "Headers",
    "canonical_name",
    "split_list",
    "parse_params",
    "format_params",
    "is_token",
    "quote_string",
    "unquote_string",
    "SINGLE_VALUED",
]


class SipParseError(ValueError):
    """A SIP message (or one of its parts) does not follow the grammar.

    ``reason`` is short, printable and free of CR/LF, so it can be used as the
    reason phrase of the 4xx answer (or in a Warning header) as is.
    ``status`` is the response code the RFC asks for: 400 by default, 505 for
    an unsupported SIP version. ``partial`` is the request as far as it could
    be read (start line and the well-formed header lines), so the caller can
    still answer with Via/From/To/Call-ID/CSeq copied; it is None when the
    message was a response (responses are never answered: drop them, see
    ``is_response``) or when not even the request line was readable.
    """

    reason: str
    status: int
    partial: "Request | None"
    is_response: bool

    def __init__(
        self,
        reason: str,
        status: int = 400,
        partial: "Request | None" = None,
        is_response: bool = False,
    ) -> None:
        reason = _printable(reason)
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial = partial
        self.is_response = is_response


_CTL_RE = re.compile(r"[\x00-\x1f\x7f]+")


def _printable(text: str, limit: int = 160) -> str:
    """Make ``text`` safe for a reason phrase: no CTLs, bounded length."""
    text = _CTL_RE.sub(" ", text)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def show(text: str, limit: int = 40) -> str:
    """Quote a piece of offending input for an error reason (short, printable)."""
    text = _CTL_RE.sub("?", text)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return "'" + text + "'"


# --- grammar helpers (RFC 3261 §25.1) --------------------------------------

_TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
_TOKEN_RE = re.compile(r"[" + _TOKEN_CHARS + r"]+\Z")
# gen-value = token / host / quoted-string; host may be an IPv6 reference and
# Via received/maddr may hold a bare IPv6 address, hence ':' '[' ']'.
_GEN_VALUE_RE = re.compile(r"[" + _TOKEN_CHARS + r":\[\]]+\Z")


def is_token(text: str) -> bool:
    return _TOKEN_RE.match(text) is not None


def scan_quoted(text: str, start: int) -> int:
    """``text[start]`` is a DQUOTE: return the index just past the closing one.

    quoted-pair (backslash + any octet but CR/LF) is honoured. Raises
    SipParseError("Unterminated quoted string") when there is no closing quote.
    """
    i = start + 1
    n = len(text)
    while True:
        q = text.find('"', i)
        b = text.find("\\", i)
        if q < 0:
            raise SipParseError("Unterminated quoted string")
        if 0 <= b < q:
            i = b + 2
            if i > n:
                raise SipParseError("Unterminated quoted string")
            continue
        return q + 1


def unquote_string(inner: str) -> str:
    """Undo quoted-pair escapes inside a quoted string (without its quotes)."""
    if "\\" not in inner:
        return inner
    out = []
    i = 0
    n = len(inner)
    while i < n:
        c = inner[i]
        if c == "\\" and i + 1 < n:
            out.append(inner[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


_NEEDS_QP_RE = re.compile(r'["\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')


def quote_string(text: str) -> str:
    """Return ``text`` as a quoted-string: DQUOTE and backslash (and CTLs)
    escaped as quoted-pairs; CR and LF, which cannot be escaped, become SP."""
    if "\r" in text or "\n" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    if _NEEDS_QP_RE.search(text):
        text = _NEEDS_QP_RE.sub(lambda m: "\\" + m.group(0), text)
    return '"' + text + '"'


def split_list(value: str) -> list[str]:
    """Split a header value at the commas that separate list elements.

    Commas inside quoted strings and inside ``<...>`` are not separators.
    Elements are stripped of surrounding whitespace; empty elements are kept
    (as ``""``) so a strict caller can reject them (``Via: a,,b``).
    Raises SipParseError on an unterminated quoted string.
    """
    if "," not in value:
        return [value.strip(" \t")]
    if '"' not in value and "<" not in value:
        return [part.strip(" \t") for part in value.split(",")]
    parts: list[str] = []
    begin = 0
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c == '"':
            i = scan_quoted(value, i)
            continue
        if c == "<":
            close = value.find(">", i)
            if close < 0:
                i = n
                break
            i = close + 1
            continue
        if c == ",":
            parts.append(value[begin:i].strip(" \t"))
            begin = i + 1
        i += 1
    parts.append(value[begin:].strip(" \t"))
    return parts


def _split_semicolons(text: str) -> list[str]:
    if '"' not in text:
        return text.split(";")
    parts: list[str] = []
    begin = 0
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i = scan_quoted(text, i)
            continue
        if c == ";":
            parts.append(text[begin:i])
            begin = i + 1
        i += 1
    parts.append(text[begin:])
    return parts


_SIMPLE_PARAMS_RE = re.compile(
    r"(?:[ \t]*;[ \t]*[" + _TOKEN_CHARS + r"]+(?:[ \t]*=[ \t]*[" + _TOKEN_CHARS
    + r":\[\]]+)?)*[ \t]*\Z"
)


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``*( SEMI generic-param )`` (RFC 3261 §25.1).

    ``text`` is empty or starts (after optional whitespace) with ``;``.
    Names are lower-cased (parameter names are case-insensitive); a parameter
    without ``=`` maps to None; quoted-string values keep their quotes so they
    serialize back unchanged. Whitespace around ``;`` and ``=`` is allowed
    (SEMI and EQUAL include SWS). The first occurrence of a name wins.
    Raises SipParseError (reason without the header name: the caller adds it).
    """
    if _SIMPLE_PARAMS_RE.match(text):
        # the usual case, validated by one match: no quoted strings
        params = {}
        for piece in text.split(";")[1:]:
            eq = piece.find("=")
            if eq < 0:
                key = piece.strip(" \t").lower()
                if key not in params:
                    params[key] = None
            else:
                key = piece[:eq].strip(" \t").lower()
                if key not in params:
                    params[key] = piece[eq + 1 :].strip(" \t")
        return params
    text = text.strip(" \t")
    if not text:
        return {}
    if text[0] != ";":
        raise SipParseError(f"unexpected text {show(text)}")
    params = {}
    pieces = _split_semicolons(text)
    for piece in pieces[1:]:
        eq = piece.find("=")
        if eq < 0:
            name = piece.strip(" \t")
            value: str | None = None
        else:
            name = piece[:eq].strip(" \t")
            value = piece[eq + 1 :].strip(" \t")
            if not value:
                raise SipParseError(f"parameter {show(name)} has an empty value")
            if value[0] == '"':
                if scan_quoted(value, 0) != len(value):
                    raise SipParseError(f"bad parameter value {show(value)}")
            elif _GEN_VALUE_RE.match(value) is None:
                raise SipParseError(f"bad parameter value {show(value)}")
        if not name:
            raise SipParseError("empty parameter")
        if _TOKEN_RE.match(name) is None:
            raise SipParseError(f"bad parameter name {show(name)}")
        key = name.lower()
        if key not in params:
            params[key] = value
    return params


def format_params(params: Mapping[str, str | None]) -> str:
    """``{"tag": "x", "lr": None}`` → ``;tag=x;lr``."""
    if not params:
        return ""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


# --- header names -----------------------------------------------------------

_CANONICAL_NAMES = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language",
    "Alert-Info", "Allow", "Allow-Events", "Authentication-Info",
    "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition",
    "Content-Encoding", "Content-Language", "Content-Length", "Content-Type",
    "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity",
    "Identity-Info", "In-Reply-To", "Max-Forwards", "MIME-Version",
    "Min-Expires", "Min-SE", "Organization", "P-Asserted-Identity",
    "P-Preferred-Identity", "Path", "Priority", "Privacy", "Proxy-Authenticate",
    "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route",
    "Refer-To", "Referred-By", "Reject-Contact", "Replaces", "Reply-To",
    "Request-Disposition", "Require", "Retry-After", "Route", "RSeq",
    "Security-Client", "Security-Server", "Security-Verify", "Server",
    "Service-Route", "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject",
    "Subscription-State", "Supported", "Timestamp", "To", "Unsupported",
    "User-Agent", "Via", "Warning", "WWW-Authenticate",
]

# RFC 3261 §7.3.3 plus the compact forms other RFCs define.
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",  # RFC 3841
    "b": "Referred-By",  # RFC 3892
    "c": "Content-Type",
    "d": "Request-Disposition",  # RFC 3841
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",  # RFC 3841
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",  # RFC 4474
    "o": "Event",  # RFC 6665
    "r": "Refer-To",  # RFC 3515
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",  # RFC 6665
    "v": "Via",
    "x": "Session-Expires",  # RFC 4028
    "y": "Identity",  # RFC 4474
}

_KNOWN: dict[str, str] = {n.lower(): n for n in _CANONICAL_NAMES}
_KNOWN.update(COMPACT_FORMS)

# Header fields whose values may hold commas that do not separate elements
# (challenges and credentials, dates, free text, single name-addr values):
# get_all() never splits these.
_NO_SPLIT = {
    n.lower()
    for n in (
        "Authorization", "Proxy-Authorization", "WWW-Authenticate",
        "Proxy-Authenticate", "Authentication-Info", "Date", "Subject",
        "User-Agent", "Server", "Organization", "Call-ID", "CSeq", "From", "To",
        "Max-Forwards", "Content-Length", "Content-Type", "Content-Disposition",
        "Expires", "Min-Expires", "MIME-Version", "Retry-After", "Timestamp",
        "Priority", "Reply-To", "Refer-To", "Referred-By", "Replaces",
        "Session-Expires", "Min-SE", "Event", "Subscription-State", "RSeq",
        "RAck", "Identity", "Identity-Info", "SIP-ETag", "SIP-If-Match",
    )
}

# Header fields that may appear once only (RFC 3261 §7.3.1, §20).
SINGLE_VALUED = (
    "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length",
    "Content-Type",
)

_NAME_CACHE: dict[str, tuple[str, str]] = {}
_NAME_CACHE_MAX = 2048


def canonical_name(name: str) -> tuple[str, str]:
    """Return ``(key, display_name)`` for a header name.

    ``key`` is the lower-cased long name used for lookups; ``display_name``
    is the canonical spelling for known headers, the name as given for
    unknown ones. Raises SipParseError when ``name`` is not a token.
    """
    hit = _NAME_CACHE.get(name)
    if hit is not None:
        return hit
    if _TOKEN_RE.match(name) is None:
        raise SipParseError(f"Bad header name {show(name)}")
    lower = name.lower()
    canon = _KNOWN.get(lower)
    result = (canon.lower(), canon) if canon else (lower, name)
    if len(_NAME_CACHE) < _NAME_CACHE_MAX:
        _NAME_CACHE[name] = result
    return result


def _check_value(value: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"header value must be str, not {type(value).__name__}")
    if "\r" in value or "\n" in value:
        raise ValueError("header value must not contain CR or LF")
    return value


class Headers:
    """Ordered, multi-valued, case-insensitive SIP header fields.

    Each stored entry is one header line (``name``, ``value``); the order of
    lines is kept. ``get``/``get_all`` split comma-separated lists (quoted
    strings and ``<...>`` respected) except for the header fields whose
    values may contain commas (Authorization, WWW-Authenticate, Date, ...).
    """

    __slots__ = ("_items",)

    def __init__(
        self, items: Iterable[tuple[str, str]] | Mapping[str, str] | None = None
    ) -> None:
        self._items: list[tuple[str, str, str]] = []
        if items is not None:
            pairs = items.items() if isinstance(items, Mapping) else items
            for name, value in pairs:
                self.add(name, value)

    @classmethod
    def _from_parsed(cls, items: list[tuple[str, str, str]]) -> "Headers":
        h = cls.__new__(cls)
        h._items = items
        return h

    # -- reading --
    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (first list element for list headers)."""
        key = canonical_name(name)[0]
        for k, _, v in self._items:
            if k == key:
                if key in _NO_SPLIT or "," not in v:
                    return v
                for part in split_list(v):
                    if part:
                        return part
                return ""
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``: all lines, list headers split at commas.

        Empty list elements are dropped. Raises SipParseError when a list
        value holds an unterminated quoted string.
        """
        key = canonical_name(name)[0]
        out: list[str] = []
        split = key not in _NO_SPLIT
        for k, _, v in self._items:
            if k == key:
                if split and "," in v:
                    out.extend(p for p in split_list(v) if p)
                else:
                    out.append(v)
        return out

    def get_lines(self, name: str) -> list[str]:
        """The raw value of every line of ``name`` (no comma splitting)."""
        key = canonical_name(name)[0]
        return [v for k, _, v in self._items if k == key]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name)[0]
        return any(k == key for k, _, _ in self._items)

    def items(self) -> Iterator[tuple[str, str]]:
        """(name, value) per header line, in order."""
        for _, n, v in self._items:
            yield n, v

    def names(self) -> list[str]:
        """Distinct header names, in order of first appearance."""
        seen: dict[str, str] = {}
        for k, n, _ in self._items:
            seen.setdefault(k, n)
        return list(seen.values())

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return self.items()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [
            (k, v) for k, _, v in other._items
        ]

    def __repr__(self) -> str:
        return f"Headers({[(n, v) for _, n, v in self._items]!r})"

    def copy(self) -> "Headers":
        return Headers._from_parsed(list(self._items))

    # -- writing --
    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` with one line holding ``value``
        (at the position of the first replaced line, else at the end)."""
        key, canon = canonical_name(name)
        _check_value(value)
        new: list[tuple[str, str, str]] = []
        placed = False
        for item in self._items:
            if item[0] == key:
                if not placed:
                    new.append((key, canon, value))
                    placed = True
            else:
                new.append(item)
        if not placed:
            new.append((key, canon, value))
        self._items = new

    def add(self, name: str, value: str, first: bool = False) -> None:
        """Add a line. ``first=True`` puts it above the existing lines of the
        same name (e.g. a new top Via), or at the top when there are none."""
        key, canon = canonical_name(name)
        _check_value(value)
        entry = (key, canon, value)
        if first:
            for i, item in enumerate(self._items):
                if item[0] == key:
                    self._items.insert(i, entry)
                    return
            self._items.insert(0, entry)
        else:
            self._items.append(entry)

    def remove(self, name: str) -> None:
        """Remove every line of ``name`` (no error when absent)."""
        key = canonical_name(name)[0]
        self._items = [item for item in self._items if item[0] != key]

    def remove_first(self, name: str) -> str | None:
        """Remove the first value of ``name`` (first list element when the
        line holds a list, e.g. the top Via) and return it."""
        key = canonical_name(name)[0]
        for i, (k, n, v) in enumerate(self._items):
            if k == key:
                if key not in _NO_SPLIT and "," in v:
                    parts = [p for p in split_list(v) if p]
                    if len(parts) > 1:
                        self._items[i] = (k, n, ", ".join(parts[1:]))
                        return parts[0]
                del self._items[i]
                return v
        return None
