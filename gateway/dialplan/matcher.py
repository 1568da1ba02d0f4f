"""Number matchers (exact number, prefix, pattern) and language checks on them.

A matcher is a sequence of *atoms*: a literal character, a run of digits (exactly K,
or one or more) or a run of any characters (one or more).  Besides matching dialed
strings with a regular expression, a matcher can be turned into a small NFA over a
finite alphabet partition (every literal character used by the matchers being
compared, plus "any other digit" and "any other character"), which lets the loader
decide whether one route's numbers are all taken by earlier routes (language
inclusion by an on-the-fly subset construction).
"""
from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

DIGITS = "0123456789"
_OTHER_DIGIT = "\x00digit"
_OTHER_CHAR = "\x00char"
CAPTURE_NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")
_CAPTURE = re.compile(r"\{([^{}]*)\}")

MatchKind = Literal["number", "prefix", "pattern"]


class PatternSyntaxError(ValueError):
    """A pattern could not be parsed; the message says what is expected."""


@dataclass(frozen=True)
class Atom:
    kind: Literal["lit", "digits", "any"]
    char: str = ""            # for "lit": the (lower-cased) character
    count: int | None = None  # for "digits": exact count, None = one or more
    name: str | None = None   # capture name for "digits"/"any"


@dataclass(frozen=True)
class Capture:
    name: str
    kind: Literal["digits", "any"]
    width: int | None  # exact number of digits, or None

    def max_value(self) -> int | None:
        """Largest number this capture can hold, None when unbounded."""
        if self.kind == "digits" and self.width is not None:
            return 10 ** self.width - 1
        return None

    def spec(self) -> str:
        if self.kind == "any":
            return f"{{{self.name}:*}}"
        if self.width is None:
            return f"{{{self.name}}}"
        return f"{{{self.name}:{self.width}}}"


@dataclass(frozen=True, eq=False)
class Matcher:
    kind: MatchKind
    text: str
    atoms: tuple[Atom, ...]
    regex: re.Pattern[str]

    # ----------------------------------------------------------------- building
    @classmethod
    def exact(cls, text: str) -> "Matcher":
        return cls._build("number", text, tuple(Atom("lit", c) for c in text.lower()))

    @classmethod
    def prefix(cls, text: str) -> "Matcher":
        atoms = tuple(Atom("lit", c) for c in text.lower()) + (Atom("any", name="rest"),)
        return cls._build("prefix", text, atoms)

    @classmethod
    def pattern(cls, text: str) -> "Matcher":
        return cls._build("pattern", text, parse_pattern(text))

    @classmethod
    def _build(cls, kind: MatchKind, text: str, atoms: tuple[Atom, ...]) -> "Matcher":
        parts: list[str] = []
        for a in atoms:
            if a.kind == "lit":
                parts.append(re.escape(a.char))
            else:
                body = "[0-9]" + ("+" if a.count is None else f"{{{a.count}}}") if a.kind == "digits" else ".+"
                parts.append(f"(?P<{a.name}>{body})")
        return cls(kind, text, atoms, re.compile("".join(parts), re.IGNORECASE | re.DOTALL))

    # ----------------------------------------------------------------- using
    @property
    def captures(self) -> tuple[Capture, ...]:
        return tuple(
            Capture(a.name, "digits" if a.kind == "digits" else "any", a.count)
            for a in self.atoms
            if a.name is not None
        )

    def capture(self, name: str) -> Capture | None:
        return next((c for c in self.captures if c.name == name), None)

    def match(self, number: str) -> dict[str, str] | None:
        m = self.regex.fullmatch(number)
        return None if m is None else {k: v for k, v in m.groupdict().items()}

    def describe(self) -> str:
        if self.kind == "pattern":
            return f"pattern {self.text}"
        return f"{self.kind} '{self.text}'"

    def literal_chars(self) -> set[str]:
        return {a.char for a in self.atoms if a.kind == "lit"}

    def build(self, captures: dict[str, str]) -> str | None:
        """The number this matcher matches with the given captures, None if one is missing."""
        out: list[str] = []
        for a in self.atoms:
            if a.kind == "lit":
                out.append(a.char)
            elif a.name in captures:
                out.append(captures[a.name])
            else:
                return None
        return "".join(out)


def parse_pattern(text: str) -> tuple[Atom, ...]:
    """Parse ``81{nn:2}``-style patterns; raise PatternSyntaxError with a helpful message."""
    atoms: list[Atom] = []
    names: set[str] = set()
    pos = 0
    while pos < len(text):
        ch = text[pos]
        if ch == "}":
            raise PatternSyntaxError(f"stray '}}' at position {pos + 1}; captures look like {{nn:2}}, {{nn}} or {{rest:*}}")
        if ch != "{":
            atoms.append(Atom("lit", ch.lower()))
            pos += 1
            continue
        end = text.find("}", pos)
        inner = text[pos + 1:end] if end != -1 else ""
        if end == -1 or "{" in inner:
            raise PatternSyntaxError(f"unclosed '{{' at position {pos + 1}; captures look like {{nn:2}}, {{nn}} or {{rest:*}}")
        name, _, spec = inner.partition(":")
        name = name.strip()
        if not CAPTURE_NAME.match(name):
            raise PatternSyntaxError(
                f"bad capture name '{name}' in {{{inner}}}; expected a lower-case name like nn or rest"
            )
        if name in names:
            raise PatternSyntaxError(f"capture '{name}' appears twice; give each capture its own name")
        names.add(name)
        spec = spec.strip()
        if not _:
            atoms.append(Atom("digits", count=None, name=name))
        elif spec == "*":
            atoms.append(Atom("any", name=name))
        elif spec.isdigit() and spec.isascii() and 1 <= int(spec) <= 30:
            atoms.append(Atom("digits", count=int(spec), name=name))
        else:
            raise PatternSyntaxError(
                f"bad capture {{{inner}}}; expected {{{name}:K}} (exactly K digits, 1-30), "
                f"{{{name}}} (one or more digits) or {{{name}:*}} (one or more of any character)"
            )
        pos = end + 1
    if not atoms:
        raise PatternSyntaxError("the pattern is empty; write literal digits and captures like 81{nn:2}")
    return tuple(atoms)


def placeholders(text: str) -> list[str]:
    """Names used as ``{name}`` placeholders in a template id/name or dial URI."""
    return [m.group(1) for m in _CAPTURE.finditer(text)]


def substitute(text: str, values: dict[str, str]) -> str:
    return _CAPTURE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


# --------------------------------------------------------------------- automata
_Trans = list[list[tuple[str, int]]]  # per state: (class, target); class is a char, "D" (digit) or "*" (any)


def _nfa(matcher: Matcher) -> tuple[_Trans, int]:
    trans: _Trans = [[]]
    state = 0

    def new() -> int:
        trans.append([])
        return len(trans) - 1

    for a in matcher.atoms:
        if a.kind == "lit":
            nxt = new()
            trans[state].append(("=" + a.char, nxt))
            state = nxt
            continue
        cls = "D" if a.kind == "digits" else "*"
        if a.kind == "digits" and a.count is not None:
            for _ in range(a.count):
                nxt = new()
                trans[state].append((cls, nxt))
                state = nxt
        else:
            nxt = new()
            trans[state].append((cls, nxt))
            trans[nxt].append((cls, nxt))
            state = nxt
    return trans, state


def _accepts(cls: str, sym: str) -> bool:
    if cls == "*":
        return True
    if cls == "D":
        return sym == _OTHER_DIGIT or (len(sym) == 1 and sym in DIGITS)
    return cls[1:] == sym


def _alphabet(matchers: Iterable[Matcher]) -> list[str]:
    chars: set[str] = set()
    for m in matchers:
        chars |= m.literal_chars()
    return sorted(chars) + [_OTHER_DIGIT, _OTHER_CHAR]


def _step(nfa: _Trans, states: Iterable[int], sym: str) -> frozenset[int]:
    return frozenset(t for s in states for cls, t in nfa[s] if _accepts(cls, sym))


def covers(earlier: Sequence[Matcher], later: Matcher) -> bool:
    """True when every string ``later`` matches is matched by one of ``earlier``."""
    if not earlier:
        return False
    alphabet = _alphabet([later, *earlier])
    a_nfa, a_acc = _nfa(later)
    b = [_nfa(m) for m in earlier]
    start = (frozenset({0}), tuple(frozenset({0}) for _ in b))
    seen = {start}
    todo = deque([start])
    while todo:
        a_set, b_sets = todo.popleft()
        if a_acc in a_set and not any(acc in bs for (_, acc), bs in zip(b, b_sets)):
            return False
        for sym in alphabet:
            a2 = _step(a_nfa, a_set, sym)
            if not a2:
                continue
            nxt = (a2, tuple(_step(n, bs, sym) for (n, _), bs in zip(b, b_sets)))
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return True


def intersects(x: Matcher, y: Matcher) -> bool:
    """True when some string is matched by both."""
    alphabet = _alphabet([x, y])
    (xn, xa), (yn, ya) = _nfa(x), _nfa(y)
    start = (frozenset({0}), frozenset({0}))
    seen = {start}
    todo = deque([start])
    while todo:
        xs, ys = todo.popleft()
        if xa in xs and ya in ys:
            return True
        for sym in alphabet:
            nxt = (_step(xn, xs, sym), _step(yn, ys, sym))
            if nxt[0] and nxt[1] and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False
