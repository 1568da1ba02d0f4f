"""Run-time settings of ``cau run``: defaults, an optional YAML file, then flags.

A settings file looks like::

    bind: 0.0.0.0
    advertise: 203.0.113.7         # address put in SDP and Contact (default: bind address)
    sip_port: 5060
    h323_port: 1720
    ras_port: 1719
    http_port: 8080
    rtp_ports: 16384-32767
    dialplan: province.yaml        # relative to this file
    watch_dialplan: true           # reload when the file changes on disk
    register_with: 192.0.2.10:1719 # register Cầu with this external gatekeeper (endpoint mode)
    register_as: cau-tinh          # Cầu's alias there; room numbers are registered as E.164 aliases
    register_password: "..."       # that gatekeeper's password for Cầu: H.235.1 tokens on every RAS message
    sip_realm: cau                 # digest realm for SIP registration
    sip_digest: MD5                # digest algorithms offered, in order, e.g. SHA-256,MD5 (RFC 8760) when every device can
    sip_answer_delay: 0            # seconds of ringing (180) before a SIP call is answered
    api_token: 9f86d081884c7d65... # HTTP API: POSTs must carry "Authorization: Bearer <token>" (without
                                   #   it a token is made on first start and kept in state_dir/api_token)
    video_mtu: 1200                # bytes of RTP payload per video packet (default 1200)
    https_port: 8443               # the join page and WHIP/WHEP over TLS (browsers need it for camera/mic)
    sip_tls_port: 5061             # SIP over TLS (RFC 3261 §26, sips:), with the same certificate
    tls_cert: /etc/cau/cert.pem    # PEM certificate (chain) and key; without them a self-signed pair
    tls_key: /etc/cau/key.pem      #   is made on first start in state_dir and kept
    tls_ca: /etc/cau/national-ca.pem   # CAs that outgoing SIP over TLS trusts ("system": the OS's);
                                   #   the far certificate must name the host dialled (RFC 5922).
                                   #   Unset: outgoing TLS is encrypted but the far end is not checked
    state_dir: /var/lib/cau        # where Cầu keeps what it makes (default ~/.local/state/cau)
    ice_hosts: 10.21.0.5, 203.0.113.7   # addresses offered to browsers as ICE host candidates
    gatekeeper_neighbours: 192.0.2.10   # gatekeepers whose LRQs are answered (none by default)
    ice_servers:                   # STUN/TURN servers handed to browsers (WHIP Link headers, join page)
      - urls: stun:stun.example.vn:3478
      - urls: turn:turn.example.vn:3478
        username: cau
        credential: s3cret

Problems are reported as ``FILE:LINE:COL: message`` like the dial plan's.
"""
from __future__ import annotations

import difflib
import ipaddress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from gateway.resources import default_dialplan


class ConfigError(Exception):
    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    bind: str = "0.0.0.0"
    sip_port: int = 5060
    h323_port: int = 1720
    ras_port: int = 1719
    http_port: int = 8080
    rtp_ports: tuple[int, int] = (16384, 32767)
    dialplan: Path = field(default_factory=default_dialplan)
    watch_dialplan: bool = True
    watch_interval: float = 2.0
    sip_realm: str = "cau"
    sip_digest: str = "MD5"   # e.g. "SHA-256,MD5"; libre-based devices (baresip 1.0) fail on any SHA-256 challenge, sipp 3.6 on a first one
    sip_answer_delay: float = 0.0     # ring (180) this long before answering a SIP call
    register_with: str = ""   # HOST:PORT of an external gatekeeper (e.g. the national one) Cầu registers with
    register_as: str = "cau"  # Cầu's h323-ID there; room numbers go along as E.164 aliases and prefixes
    register_password: str = ""  # H.235.1 password for that gatekeeper ("" = none)
    advertise: str = ""  # address written into SDP/Contact; empty: the bind address (or loopback when bound to any)
    api_token: str = ""  # HTTP POSTs (operator actions) need "Authorization: Bearer <token>"; "" = made on first start
    video_mtu: int = 1200  # bytes of RTP payload per video packet (lower it for VPNs / tunnels with small MTUs)
    https_port: int = 8443   # TLS for the join page and WHIP/WHEP (0 picks a free port)
    sip_tls_port: int = 5061  # SIP over TLS, with the HTTPS certificate (0 picks a free port)
    tls_cert: Path | None = None   # operator's certificate (PEM); None: a self-signed one in state_dir
    tls_key: Path | None = None
    tls_ca: str = ""               # PEM file of CAs outgoing SIP TLS trusts, "system", or "" (not checked)
    state_dir: Path | None = None  # None: $XDG_STATE_HOME/cau or ~/.local/state/cau
    ice_hosts: tuple[str, ...] = ()   # host candidate addresses; empty: the advertised/bind address
    gatekeeper_neighbours: tuple[str, ...] = ()   # gatekeepers (addresses / networks) whose LRQs are answered
    ice_servers: tuple[tuple[tuple[str, str], ...], ...] = ()   # each: (("urls", …), ("username", …), …)
    database: Path | None = None   # call records (SQLite); None: state_dir/cau.sqlite
    cdr_retention_days: float = 90.0   # call records older than this are deleted (0: kept for ever)
    dns: bool = True                   # SIP targets by name (RFC 3263: NAPTR/SRV/A/AAAA); false: IP addresses only
    dns_servers: tuple[str, ...] = ()  # "IP" or "IP:PORT"; empty: the system's (/etc/hosts, /etc/resolv.conf)
    alert_webhook: str = ""            # http(s) URL that gets each alert as a JSON POST ("" = none)
    alert_mos_below: float = 3.6       # a site's audio MOS below this ...
    alert_loss_above: float = 3.0      # ... or its loss above this (%) ...
    alert_after: float = 15.0          # ... for this many seconds raises a quality alert


_PORT_KEYS = ("sip_port", "h323_port", "ras_port", "http_port", "https_port", "sip_tls_port")
_KEYS = ("bind", "advertise", *_PORT_KEYS, "rtp_ports", "dialplan", "watch_dialplan", "watch_interval",
         "sip_realm", "sip_digest", "sip_answer_delay", "register_with", "register_as", "register_password", "api_token", "video_mtu",
         "tls_cert", "tls_key", "tls_ca", "state_dir", "ice_hosts", "ice_servers", "gatekeeper_neighbours",
         "database", "cdr_retention_days", "alert_webhook", "alert_mos_below", "alert_loss_above", "alert_after",
         "dns", "dns_servers")
#: keys whose value may be a YAML list / mapping
_STRUCTURED = ("ice_hosts", "ice_servers", "gatekeeper_neighbours", "dns_servers")


def _address_list(value: Any, parse: Any, problem: str) -> tuple[str, ...]:
    """A YAML list or a comma-separated string of addresses, each checked by ``parse``."""
    items = value if isinstance(value, list) else str(value or "").split(",")
    out = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            parse(text)
        except ValueError:
            raise ValueError(f"{problem}, not {text!r}") from None
        out.append(text)
    return tuple(out)


def check_ice_hosts(value: Any) -> tuple[str, ...]:
    hosts = _address_list(value, ipaddress.ip_address, "ice_hosts must list IP addresses (e.g. 10.21.0.5, 203.0.113.7)")
    if not hosts:
        raise ValueError("ice_hosts must list at least one IP address")
    return hosts


def check_networks(key: str, value: Any) -> tuple[str, ...]:
    return _address_list(value, lambda t: ipaddress.ip_network(t, strict=False),
                         f"{key} must list addresses or networks (e.g. 192.0.2.10, 10.0.0.0/8)")


def check_ice_servers(value: Any) -> tuple[tuple[tuple[str, str], ...], ...]:
    if not isinstance(value, list):
        raise ValueError("ice_servers must be a list of servers like - urls: stun:stun.example.vn:3478")
    servers = []
    for i, item in enumerate(value, 1):
        if isinstance(item, str):
            item = {"urls": item}
        if not isinstance(item, dict) or not isinstance(item.get("urls"), str):
            raise ValueError(f"ice_servers entry {i} needs urls: stun:HOST[:PORT] or turn:HOST[:PORT]")
        unknown = set(item) - {"urls", "username", "credential"}
        if unknown:
            raise ValueError(f"ice_servers entry {i}: unknown key {sorted(unknown)[0]!r} (urls, username, credential)")
        url = item["urls"].strip()
        if not url.split(":", 1)[0] in ("stun", "stuns", "turn", "turns") or any(c in url for c in '<>" \r\n'):
            raise ValueError(f"ice_servers entry {i}: {url!r} is not a stun:, stuns:, turn: or turns: URL")
        entry = [("urls", url)]
        for k in ("username", "credential"):
            v = item.get(k)
            if v is not None:
                if not isinstance(v, (str, int)) or any(c in str(v) for c in '"\r\n'):
                    raise ValueError(f"ice_servers entry {i}: {k} must be text without quotes or line breaks")
                entry.append((k, str(v)))
        if url.startswith("turn") and len(entry) != 3:
            raise ValueError(f"ice_servers entry {i}: a TURN server needs username and credential")
        servers.append(tuple(entry))
    return tuple(servers)


def parse_port_range(text: str) -> tuple[int, int]:
    """``"16384-32767"`` → (16384, 32767); ValueError with what is expected."""
    try:
        lo_s, hi_s = str(text).split("-", 1)
        lo, hi = int(lo_s), int(hi_s)
    except ValueError:
        raise ValueError(f"RTP port range {text!r} is not LOW-HIGH, e.g. 16384-32767") from None
    if not (1024 <= lo < hi <= 65535):
        raise ValueError(f"RTP port range {text!r} must lie within 1024-65535 with LOW < HIGH")
    if hi - lo + 1 < 4:
        raise ValueError(f"RTP port range {text!r} holds fewer than two RTP/RTCP port pairs")
    return lo, hi


def check_port(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (0 <= value <= 65535):
        raise ValueError(f"{name} must be a port number 0-65535 (0 picks a free port), not {value!r}")
    return value


def check_bind(value: Any) -> str:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        raise ValueError(f"bind must be an IP address such as 0.0.0.0 or 127.0.0.1, not {value!r}") from None
    return str(value)


def load_settings(path: str | Path) -> Settings:
    """Read a settings file; raise ConfigError with every problem found."""
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read settings file: {exc.strerror}"]) from None
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        raise ConfigError([f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    settings = Settings()
    if root is None:
        return settings
    if not isinstance(root, yaml.MappingNode):
        m = root.start_mark
        raise ConfigError([f"{name}:{m.line + 1}:{m.column + 1}: the settings file must be a mapping of key: value"])
    problems: list[str] = []
    values: dict[str, Any] = {}
    seen: set[str] = set()
    for key_node, value_node in root.value:
        m = key_node.start_mark
        where = f"{name}:{m.line + 1}:{m.column + 1}"
        key = key_node.value
        if key in seen:
            problems.append(f"{where}: duplicate key {key!r}")
            continue
        seen.add(key)
        if key not in _KEYS:
            close = difflib.get_close_matches(key, _KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{where}: unknown key {key!r}{hint}; expected one of: {', '.join(_KEYS)}")
            continue
        vm = value_node.start_mark
        vwhere = f"{name}:{vm.line + 1}:{vm.column + 1}"
        if not isinstance(value_node, yaml.ScalarNode) and key not in _STRUCTURED:
            problems.append(f"{vwhere}: {key} must be a single value")
            continue
        if isinstance(value_node, yaml.ScalarNode):
            value = yaml.safe_load(yaml.serialize(value_node)) if value_node.value != "" else None
        else:
            try:
                value = yaml.safe_load(yaml.serialize(value_node))
            except yaml.YAMLError:
                problems.append(f"{vwhere}: {key} is not a plain list")
                continue
        try:
            if key in _PORT_KEYS:
                values[key] = check_port(key, value)
            elif key in ("bind", "advertise"):
                values[key] = check_bind(value)
            elif key == "rtp_ports":
                values[key] = parse_port_range(value)
            elif key in ("tls_cert", "tls_key", "state_dir", "database"):
                if not isinstance(value, str) or not value:
                    raise ValueError(f"{key} must be a file path")
                p = Path(value)
                values[key] = p if p.is_absolute() else (path.parent / p)
            elif key == "tls_ca":
                if not isinstance(value, str) or not value.strip():
                    raise ValueError("tls_ca must be a PEM file of CA certificates or the word system")
                p = Path(value.strip())
                values[key] = "system" if value.strip() == "system" else str(p if p.is_absolute() else path.parent / p)
            elif key == "ice_hosts":
                values[key] = check_ice_hosts(value)
            elif key == "ice_servers":
                values[key] = check_ice_servers(value)
            elif key == "gatekeeper_neighbours":
                values[key] = check_networks(key, value)
            elif key == "dialplan":
                if not isinstance(value, str) or not value:
                    raise ValueError("dialplan must be a file path")
                p = Path(value)
                values[key] = p if p.is_absolute() else (path.parent / p)
            elif key == "watch_dialplan":
                if not isinstance(value, bool):
                    raise ValueError(f"watch_dialplan must be true or false, not {value!r}")
                values[key] = value
            elif key == "register_with":
                host, _, port_text = str(value).rpartition(":")
                try:
                    check_bind(host)
                    port = int(port_text)
                    if not 0 < port < 65536:
                        raise ValueError
                except ValueError:
                    raise ValueError(f"register_with must be the gatekeeper's IP:PORT, e.g. 192.0.2.10:1719, not {value!r}") from None
                values[key] = f"{host}:{port}"
            elif key == "register_as":
                if not isinstance(value, str) or not value.strip():
                    raise ValueError(f"register_as must be an H.323 alias (h323-ID), not {value!r}")
                values[key] = value.strip()
            elif key == "register_password":
                if not isinstance(value, str):
                    raise ValueError("register_password must be a string (quote it)")
                values[key] = value
            elif key == "sip_realm":
                if not isinstance(value, str) or not value or '"' in value:
                    raise ValueError(f"sip_realm must be a non-empty name without quotes, not {value!r}")
                values[key] = value
            elif key == "sip_digest":
                algs = [a.strip().upper() for a in str(value).split(",") if a.strip()]
                bad = [a for a in algs if a not in ("SHA-256", "MD5")]
                if not algs or bad:
                    raise ValueError(f"sip_digest must list SHA-256 and/or MD5, most preferred first, not {value!r}")
                values[key] = ",".join(algs)
            elif key == "sip_answer_delay":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 30:
                    raise ValueError(f"sip_answer_delay must be 0 to 30 seconds, not {value!r}")
                values[key] = float(value)
            elif key == "api_token":
                if not isinstance(value, str) or len(value) < 16 or any(c.isspace() for c in value):
                    raise ValueError("api_token must be a secret of at least 16 characters without spaces "
                                     "(e.g. the output of: openssl rand -hex 24)")
                values[key] = value
            elif key == "cdr_retention_days":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 36500:
                    raise ValueError(f"cdr_retention_days must be 0 (keep) to 36500 days, not {value!r}")
                values[key] = float(value)
            elif key == "dns":
                if not isinstance(value, bool):
                    raise ValueError(f"dns must be true or false, not {value!r}")
                values[key] = value
            elif key == "dns_servers":
                items = value if isinstance(value, list) else str(value or "").split(",")
                servers = []
                for item in items:
                    text = str(item).strip()
                    host, port = text, "53"
                    if text.startswith("["):
                        host, _, rest = text[1:].partition("]")
                        port = rest.lstrip(":") or "53"
                    elif text.count(":") == 1:
                        host, _, port = text.partition(":")
                    try:
                        check_bind(host)
                        if not port.isdigit() or not 0 < int(port) < 65536:
                            raise ValueError
                    except ValueError:
                        raise ValueError(f"dns_servers: {text!r} is not an IP address or IP:PORT "
                                         "(e.g. 10.21.0.2 or 127.0.0.1:5353)") from None
                    servers.append(text)
                values[key] = tuple(servers)
            elif key == "alert_webhook":
                from urllib.parse import urlsplit

                u = urlsplit(str(value)) if isinstance(value, str) else None
                if u is None or u.scheme not in ("http", "https") or not u.hostname or u.username or u.password:
                    raise ValueError(f"alert_webhook must be an http:// or https:// URL (no user:password@), "
                                     f"not {value!r}")
                values[key] = value
            elif key in ("alert_mos_below", "alert_loss_above", "alert_after"):
                limits = {"alert_mos_below": (1.0, 4.5), "alert_loss_above": (0.0, 100.0), "alert_after": (1.0, 3600.0)}
                lo, hi = limits[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                    raise ValueError(f"{key} must be a number from {lo:g} to {hi:g}, not {value!r}")
                values[key] = float(value)
            elif key == "video_mtu":
                if isinstance(value, bool) or not isinstance(value, int) or not 300 <= value <= 1452:
                    raise ValueError(f"video_mtu must be 300 to 1452 bytes of RTP payload, not {value!r}")
                values[key] = value
            elif key == "watch_interval":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                    raise ValueError(f"watch_interval must be a positive number of seconds, not {value!r}")
                values[key] = float(value)
        except ValueError as exc:
            problems.append(f"{vwhere}: {exc}")
    if ("tls_cert" in values) != ("tls_key" in values):
        problems.append(f"{name}: tls_cert and tls_key go together (a certificate and its private key)")
    if problems:
        raise ConfigError(problems)
    return replace(settings, **values)
