"""SIP and SIPS URIs (RFC 3261 §19.1, grammar §25.1) and other absolute URIs.

``SipUri`` holds the *unescaped* values: ``sip:%61lice@example.com`` and
``sip:alice@example.com`` parse to the same user ``"alice"`` (§19.1.2,
§19.1.4); ``str()`` escapes again whatever the grammar requires for each
component. Escaped octets that are not valid UTF-8 survive a round trip
(they are kept as surrogate escapes). Host names are lower-cased; an IPv6
reference is stored without its brackets.

Any other scheme (``tel:``, ``h323:``, ``http:``, ``urn:``, schemes nobody
knows as in RFC 4475 ``unkscm``) is an :class:`AbsoluteUri` kept verbatim.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from gateway.sip.headers import SipParseError, show

__all__ = ["SipUri", "AbsoluteUri", "parse_uri"]

_ESC = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
# user = 1*( unreserved / escaped / user-unreserved ); user-unreserved = & = + $ , ; ? /
_USER_RE = re.compile(r"(?:[" + _UNRESERVED + r"&=+$,;?/]|" + _ESC + r")+\Z")
# password = *( unreserved / escaped / & = + $ , )
_PASSWORD_RE = re.compile(r"(?:[" + _UNRESERVED + r"&=+$,]|" + _ESC + r")*\Z")
# paramchar = param-unreserved / unreserved / escaped; param-unreserved = [ ] / : & + $
_PARAM_RE = re.compile(r"(?:[" + _UNRESERVED + r"\[\]/:&+$]|" + _ESC + r")+\Z")
# hname = 1*( hnv-unreserved / unreserved / escaped ); hvalue = *( ... )
_HNAME_RE = re.compile(r"(?:[" + _UNRESERVED + r"\[\]/?:+$]|" + _ESC + r")+\Z")
_HVALUE_RE = re.compile(r"(?:[" + _UNRESERVED + r"\[\]/?:+$]|" + _ESC + r")*\Z")
# hostname / IPv4address (underscore tolerated: seen in the wild)
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9\-_.]*)\Z")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")
_ABS_BAD_RE = re.compile(r'[\x00-\x20\x7f<>"]')

# Characters str() leaves as they are, per component.
_USER_SAFE = "-_.!~*'()&=+$,;?/"
_PASSWORD_SAFE = "-_.!~*'()&=+$,"
_PARAM_SAFE = "-_.!~*'()[]/:&+$"
_HEADER_SAFE = "-_.!~*'()[]/?:+$"
# One-match fast path for the usual URI: no escapes, no IPv6, no headers.
_PCHAR = _UNRESERVED + r"\[\]/:&+$"
_FAST_SIP_RE = re.compile(
    r"(?i:(sips?)):"
    r"(?:([" + _UNRESERVED + r"&=+$,;?/]+)(?::([" + _UNRESERVED + r"&=+$,]*))?@)?"
    r"([A-Za-z0-9_][A-Za-z0-9\-_.]*)"
    r"(?::([0-9]{1,5}))?"
    r"((?:;[" + _PCHAR + r"]+(?:=[" + _PCHAR + r"]+)?)*)\Z"
)
_USER_PLAIN_RE = re.compile(r"[" + _UNRESERVED + r"&=+$,;?/]*\Z")
_PASSWORD_PLAIN_RE = re.compile(r"[" + _UNRESERVED + r"&=+$,]*\Z")
_PARAM_PLAIN_RE = re.compile(r"[" + _UNRESERVED + r"\[\]/:&+$]*\Z")
_HEADER_PLAIN_RE = re.compile(r"[" + _UNRESERVED + r"\[\]/?:+$]*\Z")


def _unescape(text: str) -> str:
    if "%" not in text:
        return text
    return unquote(text, encoding="utf-8", errors="surrogateescape")


def _escape(text: str, plain: re.Pattern[str], safe: str) -> str:
    if plain.match(text):
        return text
    return quote(text, safe=safe, encoding="utf-8", errors="surrogateescape")


def _parse_host(text: str, uri: str) -> str:
    if not text:
        raise SipParseError(f"Bad URI {show(uri)}: no host")
    if text[0] == "[":
        if text[-1] != "]":
            raise SipParseError(f"Bad URI {show(uri)}: unterminated IPv6 reference")
        inner = text[1:-1]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise SipParseError(f"Bad URI {show(uri)}: bad IPv6 address") from None
        return inner.lower()
    if _HOSTNAME_RE.match(text) is None:
        raise SipParseError(f"Bad URI {show(uri)}: bad host {show(text)}")
    return text.lower()


def _parse_port(text: str, uri: str) -> int:
    if not (text.isdigit() and text.isascii() and len(text) <= 5):
        raise SipParseError(f"Bad URI {show(uri)}: bad port {show(text)}")
    port = int(text)
    if port > 65535:
        raise SipParseError(f"Bad URI {show(uri)}: port {port} out of range")
    return port


def format_host(host: str) -> str:
    """Host as it appears in a URI or Via: IPv6 addresses get their brackets."""
    return f"[{host}]" if ":" in host else host


@dataclass
class SipUri:
    """A ``sip:`` or ``sips:`` URI with unescaped components.

    ``params`` (uri-parameters) has lower-cased names and unescaped values
    (None for a parameter without ``=``: ``;lr``); ``headers`` holds the
    unescaped ``?name=value&...`` part.
    """

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "SipUri":
        if "%" not in text:
            m = _FAST_SIP_RE.match(text)
            if m is not None:
                scheme, user, password, host, port_text, ptext = m.groups()
                port = None
                if port_text is not None:
                    port = int(port_text)
                    if port > 65535:
                        raise SipParseError(f"Bad URI {show(text)}: port {port} out of range")
                params: dict[str, str | None] = {}
                if ptext:
                    for piece in ptext[1:].split(";"):
                        eq = piece.find("=")
                        if eq < 0:
                            name, value = piece.lower(), None
                        else:
                            name, value = piece[:eq].lower(), piece[eq + 1 :]
                        if name not in params:
                            params[name] = value
                return cls(scheme.lower(), user, password, host.lower(), port, params, {})
        return cls._parse_general(text)

    @classmethod
    def _parse_general(cls, text: str) -> "SipUri":
        colon = text.find(":")
        scheme = text[:colon].lower() if colon > 0 else ""
        if scheme not in ("sip", "sips"):
            raise SipParseError(f"Bad URI {show(text)}: not a sip or sips URI")
        rest = text[colon + 1 :]
        user: str | None = None
        password: str | None = None
        at = rest.find("@")
        if at >= 0:
            userinfo = rest[:at]
            rest = rest[at + 1 :]
            pc = userinfo.find(":")
            raw_user = userinfo if pc < 0 else userinfo[:pc]
            if _USER_RE.match(raw_user) is None:
                raise SipParseError(f"Bad URI {show(text)}: bad user part")
            user = _unescape(raw_user)
            if pc >= 0:
                raw_pw = userinfo[pc + 1 :]
                if _PASSWORD_RE.match(raw_pw) is None:
                    raise SipParseError(f"Bad URI {show(text)}: bad password")
                password = _unescape(raw_pw)
        # hostport ends at the first ';' (uri-parameters) or '?' (headers)
        end = len(rest)
        semi = rest.find(";")
        if semi >= 0:
            end = semi
        qm = rest.find("?", 0, end)
        if qm >= 0:
            end = qm
        hostport = rest[:end]
        tail = rest[end:]
        port: int | None = None
        if hostport.startswith("["):
            close = hostport.find("]")
            if close < 0:
                raise SipParseError(f"Bad URI {show(text)}: unterminated IPv6 reference")
            host = _parse_host(hostport[: close + 1], text)
            after = hostport[close + 1 :]
            if after:
                if after[0] != ":":
                    raise SipParseError(f"Bad URI {show(text)}: bad host")
                port = _parse_port(after[1:], text)
        else:
            pc = hostport.find(":")
            if pc >= 0:
                port = _parse_port(hostport[pc + 1 :], text)
                hostport = hostport[:pc]
            host = _parse_host(hostport, text)
        params: dict[str, str | None] = {}
        headers: dict[str, str] = {}
        if tail:
            qm = tail.find("?")
            ptext = tail if qm < 0 else tail[:qm]
            if ptext:
                for piece in ptext[1:].split(";"):
                    eq = piece.find("=")
                    raw_name = piece if eq < 0 else piece[:eq]
                    if _PARAM_RE.match(raw_name) is None:
                        raise SipParseError(
                            f"Bad URI {show(text)}: bad parameter {show(piece)}"
                        )
                    value: str | None = None
                    if eq >= 0:
                        raw_value = piece[eq + 1 :]
                        if _PARAM_RE.match(raw_value) is None:
                            raise SipParseError(
                                f"Bad URI {show(text)}: bad parameter {show(piece)}"
                            )
                        value = _unescape(raw_value)
                    name = _unescape(raw_name).lower()
                    if name not in params:
                        params[name] = value
            if qm >= 0:
                htext = tail[qm + 1 :]
                for piece in htext.split("&"):
                    eq = piece.find("=")
                    if eq < 0:
                        raise SipParseError(
                            f"Bad URI {show(text)}: bad header {show(piece)}"
                        )
                    hname, hvalue = piece[:eq], piece[eq + 1 :]
                    if _HNAME_RE.match(hname) is None or _HVALUE_RE.match(hvalue) is None:
                        raise SipParseError(
                            f"Bad URI {show(text)}: bad header {show(piece)}"
                        )
                    headers[_unescape(hname)] = _unescape(hvalue)
        return cls(scheme, user, password, host, port, params, headers)

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(_escape(self.user, _USER_PLAIN_RE, _USER_SAFE))
            if self.password is not None:
                out.append(":")
                out.append(_escape(self.password, _PASSWORD_PLAIN_RE, _PASSWORD_SAFE))
            out.append("@")
        out.append(format_host(self.host))
        if self.port is not None:
            out.append(f":{self.port}")
        for name, value in self.params.items():
            out.append(";")
            out.append(_escape(name, _PARAM_PLAIN_RE, _PARAM_SAFE))
            if value is not None:
                out.append("=")
                out.append(_escape(value, _PARAM_PLAIN_RE, _PARAM_SAFE))
        if self.headers:
            out.append("?")
            out.append(
                "&".join(
                    _escape(k, _HEADER_PLAIN_RE, _HEADER_SAFE)
                    + "="
                    + _escape(v, _HEADER_PLAIN_RE, _HEADER_SAFE)
                    for k, v in self.headers.items()
                )
            )
        return "".join(out)

    # -- conveniences --
    @property
    def transport(self) -> str | None:
        """The ``transport`` uri-parameter, lower-cased, if any."""
        t = self.params.get("transport")
        return t.lower() if t else None

    @property
    def host_port(self) -> str:
        """``host[:port]`` with IPv6 brackets, as in a Via sent-by."""
        h = format_host(self.host)
        return h if self.port is None else f"{h}:{self.port}"

    def copy(self) -> "SipUri":
        return SipUri(
            self.scheme, self.user, self.password, self.host, self.port,
            dict(self.params), dict(self.headers),
        )


@dataclass
class AbsoluteUri:
    """Any URI that is not sip/sips (``tel:``, ``h323:``, ``urn:``, ...),
    kept verbatim after the scheme (the scheme is lower-cased).

    A ``scheme`` of ``""`` marks text that is not a URI at all; it only
    appears in ``SipParseError.partial`` for an unreadable Request-URI.
    """

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}" if self.scheme else self.rest


def parse_uri(text: str) -> SipUri | AbsoluteUri:
    """Parse any absolute URI: sip/sips → SipUri, other schemes → AbsoluteUri.

    Raises SipParseError when ``text`` is not an absolute URI (no scheme,
    whitespace, ``<``/``>``/DQUOTE, control characters).
    """
    colon = text.find(":")
    if colon <= 0:
        raise SipParseError(f"Bad URI {show(text)}: no scheme")
    scheme = text[:colon]
    lower = scheme.lower()
    if lower == "sip" or lower == "sips":
        return SipUri.parse(text)
    if _SCHEME_RE.match(scheme) is None:
        raise SipParseError(f"Bad URI {show(text)}: bad scheme")
    rest = text[colon + 1 :]
    if not rest or _ABS_BAD_RE.search(rest):
        raise SipParseError(f"Bad URI {show(text)}")
    return AbsoluteUri(lower, rest)
