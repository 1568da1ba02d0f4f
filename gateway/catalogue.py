"""The codec catalogue: codec facts loaded from ``codecs/*.yaml``, validated.

Every fact signaling and media need about a codec (SDP name, RTP clock, static
payload type, fmtp, H.245 capability, PyAV codec names, quirks) lives in the
YAML files; this module only loads and checks them.  Problems are reported as
``FILE:LINE:COL: message`` (all of them at once) in a :class:`CatalogueError`.

    >>> cat = default_catalogue()
    >>> cat.get("g722").rtpmap()
    'G722/8000'
"""
from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "Catalogue",
    "CatalogueError",
    "Codec",
    "Quirk",
    "default_catalogue",
    "load_catalogue",
]

_EMPTY: Mapping[str, str] = MappingProxyType({})


class CatalogueError(Exception):
    """The catalogue could not be loaded; ``problems`` lists ``FILE:LINE:COL: message``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        head = f"codec catalogue: {n} problem{'s' if n != 1 else ''}"
        super().__init__(head + "\n  " + "\n  ".join(self.problems))


@dataclass(frozen=True)
class Quirk:
    """A known trap about a codec, kept as data (``id`` is stable, ``text`` explains)."""

    id: str
    text: str


@dataclass(frozen=True)
class Codec:
    """One codec as the catalogue describes it."""

    name: str                    # catalogue name: "PCMU", "G722", "opus", "H264", ...
    media: str                   # "audio" | "video"
    encoding_name: str           # SDP rtpmap encoding name
    clock_rate: int              # RTP clock rate (rtpmap)
    sample_rate: int             # sample rate the codec really runs at
    channels: int                # SDP channel count (opus: 2, always)
    static_pt: int | None        # static RTP payload type (RFC 3551) or None: dynamic
    fmtp: Mapping[str, str]      # default fmtp we offer
    ptime_ms: int | None         # default packet time (audio)
    h245: Mapping[str, Any] | None  # H.245 capability identity and parameters, None if H.323 lacks it
    av_encoder: str | None       # PyAV / FFmpeg encoder name
    av_decoder: str | None       # PyAV / FFmpeg decoder name
    rfc: str                     # RTP payload format, e.g. "RFC 3551"
    bitrate_kbps: int            # typical bitrate
    quirks: tuple[Quirk, ...]
    source: str                  # "file:line" where the entry starts
    fmtp_implied: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # meaning of an absent fmtp parameter
    fmtp_variants: tuple[Mapping[str, str], ...] = ()        # further fmtp sets to offer (H264 mode 0)

    def __hash__(self) -> int:  # mappings inside are not hashable; name+source identify an entry
        return hash((self.name, self.source))

    def rtpmap(self) -> str:
        """The SDP ``a=rtpmap`` value: ``PCMU/8000``, ``G722/8000``, ``opus/48000/2``."""
        if self.channels > 1:
            return f"{self.encoding_name}/{self.clock_rate}/{self.channels}"
        return f"{self.encoding_name}/{self.clock_rate}"

    def timestamp_increment(self, ptime_ms: int | None = None) -> int:
        """RTP timestamp units per packet of ``ptime_ms`` (default: the codec's ptime)."""
        ms = ptime_ms if ptime_ms is not None else (self.ptime_ms or 20)
        return self.clock_rate * ms // 1000

    def quirk(self, quirk_id: str) -> Quirk | None:
        for q in self.quirks:
            if q.id == quirk_id:
                return q
        return None


class Catalogue:
    """A validated, read-only set of :class:`Codec` entries."""

    def __init__(self, codecs: list[Codec] | tuple[Codec, ...]) -> None:
        self._codecs: tuple[Codec, ...] = tuple(codecs)
        self._by_name: dict[str, Codec] = {c.name.lower(): c for c in self._codecs}
        self._by_pt: dict[int, Codec] = {c.static_pt: c for c in self._codecs if c.static_pt is not None}
        self._by_rtpmap: dict[tuple[str, int], list[Codec]] = {}
        for c in self._codecs:
            self._by_rtpmap.setdefault((c.encoding_name.lower(), c.clock_rate), []).append(c)

    def get(self, name: str) -> Codec:
        try:
            return self._by_name[name.lower()]
        except KeyError:
            known = ", ".join(sorted(c.name for c in self._codecs))
            raise KeyError(f"no codec named {name!r} in the catalogue (known: {known})") from None

    def find(self, encoding_name: str, clock_rate: int, channels: int | None = None) -> Codec | None:
        """The codec matching an SDP rtpmap (encoding name is case-insensitive, RFC 4855 §3).

        ``channels`` None means "not given"; an SDP rtpmap without channels means 1
        for audio, which the caller should pass explicitly if it wants it checked.
        """
        for c in self._by_rtpmap.get((encoding_name.lower(), clock_rate), ()):
            if channels is None or c.channels == channels:
                return c
        return None

    def by_static_pt(self, pt: int) -> Codec | None:
        return self._by_pt.get(pt)

    def audio(self) -> list[Codec]:
        return [c for c in self._codecs if c.media == "audio"]

    def video(self) -> list[Codec]:
        return [c for c in self._codecs if c.media == "video"]

    def names(self) -> set[str]:
        return {c.name for c in self._codecs}

    def __iter__(self) -> Iterator[Codec]:
        return iter(self._codecs)

    def __len__(self) -> int:
        return len(self._codecs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name

    def __repr__(self) -> str:
        return f"Catalogue({', '.join(c.name for c in self._codecs)})"


# --------------------------------------------------------------------------- loading

_INT = "tag:yaml.org,2002:int"
_STR = "tag:yaml.org,2002:str"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_FLOAT = "tag:yaml.org,2002:float"

_REQUIRED = (
    "name", "media", "encoding_name", "clock_rate", "sample_rate", "channels", "static_pt",
    "fmtp", "ptime_ms", "h245", "av_encoder", "av_decoder", "rfc", "bitrate_kbps",
)
_OPTIONAL = ("quirks", "fmtp_implied", "fmtp_variants")
_KNOWN = frozenset(_REQUIRED + _OPTIONAL)
_MEDIA = ("audio", "video")
_H245_CAPABILITIES = (
    "audioCapability", "videoCapability", "userInputCapability",
    "genericAudioCapability", "genericVideoCapability", "dataApplicationCapability",
)
_RFC_RE = re.compile(r"^RFC \d{3,5}$")
_ENCODING_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class _Checker:
    """Collects problems for one file, each tagged with the node's position."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[str] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def where(self, node: Node) -> str:
        m = node.start_mark
        return f"{self.path}:{m.line + 1}:{m.column + 1}"

    def line(self, node: Node) -> str:
        return f"{self.path}:{node.start_mark.line + 1}"

    def problem(self, node: Node, message: str) -> None:
        self.problems.append(f"{self.where(node)}: {message}")

    def value(self, node: Node) -> Any:
        """Plain Python value of a node (for free-form data such as h245)."""
        self._constructor.constructed_objects = {}
        self._constructor.recursive_objects = {}
        return self._constructor.construct_object(node, deep=True)

    def mapping_items(self, node: MappingNode, what: str) -> dict[str, tuple[Node, Node]]:
        """Keys of a mapping (must be plain strings, no duplicates) → (key node, value node)."""
        out: dict[str, tuple[Node, Node]] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, ScalarNode) or knode.tag not in (_STR, _INT):
                self.problem(knode, f"{what}: keys must be plain names")
                continue
            key = str(knode.value)
            if key in out:
                first = out[key][0]
                self.problem(knode, f"{what}: duplicate key {key!r} (first at line {first.start_mark.line + 1})")
                continue
            out[key] = (knode, vnode)
        return out

    # typed getters: return a sentinel-free value or None after recording a problem
    def get_str(self, node: Node, key: str, *, nullable: bool = False) -> str | None:
        if isinstance(node, ScalarNode) and node.tag == _NULL and nullable:
            return None
        if not isinstance(node, ScalarNode) or node.tag != _STR or node.value == "":
            expected = "a non-empty string" + (" or null" if nullable else "")
            self.problem(node, f"{key}: expected {expected}, got {_describe(node)}")
            return None
        return node.value

    def get_int(self, node: Node, key: str, lo: int, hi: int, *, nullable: bool = False) -> int | None:
        if isinstance(node, ScalarNode) and node.tag == _NULL and nullable:
            return None
        if not isinstance(node, ScalarNode) or node.tag != _INT:
            expected = "an integer" + (" or null" if nullable else "")
            self.problem(node, f"{key}: expected {expected}, got {_describe(node)}")
            return None
        v = int(self.value(node))
        if not lo <= v <= hi:
            self.problem(node, f"{key}: {v} is out of range, expected {lo}..{hi}")
            return None
        return v

    def get_params(self, node: Node, key: str) -> Mapping[str, str] | None:
        """An fmtp-style mapping: name → scalar (kept as its text)."""
        if isinstance(node, ScalarNode) and node.tag == _NULL:
            return _EMPTY
        if not isinstance(node, MappingNode):
            self.problem(node, f"{key}: expected a mapping of parameter: value, got {_describe(node)}")
            return None
        out: dict[str, str] = {}
        ok = True
        for name, (knode, vnode) in self.mapping_items(node, key).items():
            if not isinstance(vnode, ScalarNode) or vnode.tag not in (_STR, _INT, _FLOAT) or vnode.value == "":
                self.problem(vnode, f"{key}.{name}: expected a string or number, got {_describe(vnode)}")
                ok = False
                continue
            out[name] = str(vnode.value)
        return MappingProxyType(out) if ok else None


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    kind = {_INT: "integer", _STR: "string", _BOOL: "boolean", _NULL: "null", _FLOAT: "number"}.get(
        node.tag, node.tag)
    return f"{kind} {node.value!r}" if node.tag != _NULL else "null"


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _check_entry(ck: _Checker, node: Node) -> Codec | None:
    if not isinstance(node, MappingNode):
        ck.problem(node, f"each codec must be a mapping of fields, got {_describe(node)}")
        return None
    before = len(ck.problems)
    items = ck.mapping_items(node, "codec")
    for key, (knode, _v) in items.items():
        if key not in _KNOWN:
            ck.problem(knode, f"unknown key {key!r} (expected one of: {', '.join(sorted(_KNOWN))})")
    missing = [k for k in _REQUIRED if k not in items]
    if missing:
        ck.problem(node, f"codec entry is missing {', '.join(repr(k) for k in missing)}")
        return None
    v = {k: n for k, (_kn, n) in items.items()}

    name = ck.get_str(v["name"], "name")
    media = ck.get_str(v["media"], "media")
    if media is not None and media not in _MEDIA:
        ck.problem(v["media"], f"media: {media!r} is not one of {', '.join(_MEDIA)}")
    encoding = ck.get_str(v["encoding_name"], "encoding_name")
    if encoding is not None and not _ENCODING_RE.match(encoding):
        ck.problem(v["encoding_name"], f"encoding_name: {encoding!r} is not an RTP encoding name token")
    clock = ck.get_int(v["clock_rate"], "clock_rate", 1000, 1_000_000)
    rate = ck.get_int(v["sample_rate"], "sample_rate", 1000, 1_000_000)
    channels = ck.get_int(v["channels"], "channels", 1, 8)
    static_pt = ck.get_int(v["static_pt"], "static_pt", 0, 95, nullable=True)
    fmtp = ck.get_params(v["fmtp"], "fmtp")
    ptime = ck.get_int(v["ptime_ms"], "ptime_ms", 1, 1000, nullable=True)
    if media == "audio" and ptime is None and not ck.problems[before:]:
        ck.problem(v["ptime_ms"], "ptime_ms: an audio codec needs a default packet time in ms")
    h245: Mapping[str, Any] | None = None
    hnode = v["h245"]
    if isinstance(hnode, MappingNode):
        hitems = ck.mapping_items(hnode, "h245")
        cap = hitems.get("capability")
        if cap is None:
            ck.problem(hnode, f"h245: missing 'capability' (one of {', '.join(_H245_CAPABILITIES)})")
        else:
            capname = ck.get_str(cap[1], "h245.capability")
            if capname is not None and capname not in _H245_CAPABILITIES:
                ck.problem(cap[1], f"h245.capability: {capname!r} is not one of {', '.join(_H245_CAPABILITIES)}")
        h245 = _freeze(ck.value(hnode))
    elif not (isinstance(hnode, ScalarNode) and hnode.tag == _NULL):
        ck.problem(hnode, f"h245: expected a mapping or null, got {_describe(hnode)}")
    av_enc = ck.get_str(v["av_encoder"], "av_encoder", nullable=True)
    av_dec = ck.get_str(v["av_decoder"], "av_decoder", nullable=True)
    rfc = ck.get_str(v["rfc"], "rfc")
    if rfc is not None and not _RFC_RE.match(rfc):
        ck.problem(v["rfc"], f"rfc: {rfc!r} should look like 'RFC 3551'")
    bitrate = ck.get_int(v["bitrate_kbps"], "bitrate_kbps", 0, 1_000_000)

    quirks: list[Quirk] = []
    if "quirks" in v:
        qnode = v["quirks"]
        if not isinstance(qnode, SequenceNode):
            ck.problem(qnode, f"quirks: expected a list of {{id, text}}, got {_describe(qnode)}")
        else:
            seen: set[str] = set()
            for q in qnode.value:
                if not isinstance(q, MappingNode):
                    ck.problem(q, f"quirks: each quirk must be a mapping {{id, text}}, got {_describe(q)}")
                    continue
                qi = ck.mapping_items(q, "quirk")
                extra = [k for k in qi if k not in ("id", "text")]
                for k in extra:
                    ck.problem(qi[k][0], f"quirk: unknown key {k!r} (expected id, text)")
                if "id" not in qi or "text" not in qi:
                    ck.problem(q, "quirk: needs both 'id' and 'text'")
                    continue
                qid = ck.get_str(qi["id"][1], "quirk.id")
                qtext = ck.get_str(qi["text"][1], "quirk.text")
                if qid is not None and qid in seen:
                    ck.problem(qi["id"][1], f"quirk: duplicate id {qid!r}")
                if qid is not None and qtext is not None:
                    seen.add(qid)
                    quirks.append(Quirk(qid, qtext))
    implied: Mapping[str, str] | None = _EMPTY
    if "fmtp_implied" in v:
        implied = ck.get_params(v["fmtp_implied"], "fmtp_implied")
    variants: list[Mapping[str, str]] = []
    if "fmtp_variants" in v:
        vn = v["fmtp_variants"]
        if not isinstance(vn, SequenceNode):
            ck.problem(vn, f"fmtp_variants: expected a list of fmtp mappings, got {_describe(vn)}")
        else:
            for item in vn.value:
                p = ck.get_params(item, "fmtp_variants[]")
                if p is not None:
                    variants.append(p)

    if len(ck.problems) > before:
        return None
    assert name and media and encoding and clock and rate and channels and fmtp is not None
    assert rfc and bitrate is not None and implied is not None
    return Codec(
        name=name, media=media, encoding_name=encoding, clock_rate=clock, sample_rate=rate,
        channels=channels, static_pt=static_pt, fmtp=fmtp, ptime_ms=ptime, h245=h245,
        av_encoder=av_enc, av_decoder=av_dec, rfc=rfc, bitrate_kbps=bitrate,
        quirks=tuple(quirks), source=ck.line(node), fmtp_implied=implied,
        fmtp_variants=tuple(variants),
    )


def _load_file(path: Path, shown: str) -> tuple[list[Codec], list[str]]:
    ck = _Checker(shown)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"{shown}:1:1: cannot read the file: {exc}"]
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        m = exc.problem_mark or exc.context_mark
        pos = f"{m.line + 1}:{m.column + 1}" if m else "1:1"
        return [], [f"{shown}:{pos}: not valid YAML: {exc.problem or exc.context}"]
    except yaml.YAMLError as exc:
        return [], [f"{shown}:1:1: not valid YAML: {exc}"]
    if root is None:
        return [], [f"{shown}:1:1: the file is empty; expected 'codecs:' with a list of codecs"]
    if not isinstance(root, MappingNode):
        ck.problem(root, f"expected a mapping with a 'codecs' list at the top, got {_describe(root)}")
        return [], ck.problems
    top = ck.mapping_items(root, "top level")
    for key, (knode, _v) in top.items():
        if key != "codecs":
            ck.problem(knode, f"unknown top-level key {key!r} (expected only 'codecs')")
    if "codecs" not in top:
        ck.problem(root, "missing the top-level 'codecs' list")
        return [], ck.problems
    seq = top["codecs"][1]
    if not isinstance(seq, SequenceNode):
        ck.problem(seq, f"codecs: expected a list of codec entries, got {_describe(seq)}")
        return [], ck.problems
    codecs: list[Codec] = []
    for entry in seq.value:
        c = _check_entry(ck, entry)
        if c is not None:
            codecs.append(c)
    return codecs, ck.problems


def load_catalogue(directory: str | os.PathLike[str] | None = None) -> Catalogue:
    """Load and validate every ``*.yaml`` in ``directory`` (default: the shipped ``codecs/``).

    Raises :class:`CatalogueError` listing every problem found, each as ``FILE:LINE:COL: message``.
    """
    if directory is None:
        from gateway.resources import data_dir

        directory = data_dir("codecs")
    root = Path(directory)
    if not root.is_dir():
        raise CatalogueError([f"{root}: no such directory (expected a folder of codec *.yaml files)"])
    files = sorted(list(root.glob("*.yaml")) + list(root.glob("*.yml")))
    if not files:
        raise CatalogueError([f"{root}: no *.yaml codec files found"])
    problems: list[str] = []
    codecs: list[Codec] = []
    for f in files:
        got, probs = _load_file(f, str(f))
        codecs.extend(got)
        problems.extend(probs)
    # whole-catalogue checks
    by_name: dict[str, Codec] = {}
    by_pt: dict[int, Codec] = {}
    by_map: dict[tuple[str, int, int], Codec] = {}
    for c in codecs:
        key = c.name.lower()
        if key in by_name:
            problems.append(f"{c.source}: duplicate codec name {c.name!r} (also at {by_name[key].source})")
        else:
            by_name[key] = c
        if c.static_pt is not None:
            if c.static_pt in by_pt:
                problems.append(f"{c.source}: static_pt {c.static_pt} of {c.name} is already used by "
                                f"{by_pt[c.static_pt].name} ({by_pt[c.static_pt].source})")
            else:
                by_pt[c.static_pt] = c
        mkey = (c.encoding_name.lower(), c.clock_rate, c.channels)
        if mkey in by_map and by_map[mkey].name.lower() != key:
            problems.append(f"{c.source}: rtpmap {c.rtpmap()} of {c.name} is already used by "
                            f"{by_map[mkey].name} ({by_map[mkey].source})")
        else:
            by_map.setdefault(mkey, c)
    if problems:
        raise CatalogueError(problems)
    return Catalogue(codecs)


@functools.lru_cache(maxsize=1)
def default_catalogue() -> Catalogue:
    """The shipped catalogue, loaded once."""
    return load_catalogue(None)
