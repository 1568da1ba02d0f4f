"""Reading YAML as composed nodes, so every value keeps its line and column."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Sequence

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .problems import Problem

STR = "tag:yaml.org,2002:str"
INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"
BOOL = "tag:yaml.org,2002:bool"
NULL = "tag:yaml.org,2002:null"

_constructor = yaml.constructor.SafeConstructor()


def describe_node(node: Node) -> str:
    """How a value looks to the operator, for "got ..." in messages."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == NULL:
        return "nothing"
    kind = {INT: "a whole number", FLOAT: "a decimal number", BOOL: "yes/no", STR: "text"}.get(node.tag, "a value")
    return f"{kind} {node.value!r}" if node.value else kind


@dataclass
class Reporter:
    """Collects problems for one file."""

    file: str
    problems: list[Problem]

    def at(self, node: Node | None, message: str, line: int | None = None) -> None:
        if node is None:
            self.problems.append(Problem(self.file, line or 1, 1, message))
        else:
            self.problems.append(Problem(self.file, node.start_mark.line + 1, node.start_mark.column + 1, message))

    # ------------------------------------------------------------- containers
    def mapping(
        self,
        node: Node | None,
        what: str,
        allowed: Sequence[str],
        required: Sequence[str] = (),
    ) -> dict[str, tuple[ScalarNode, Node]] | None:
        """Check a mapping's keys; return {key: (key node, value node)} or None if not a mapping."""
        if not isinstance(node, MappingNode):
            self.at(node, f"{what} must be a mapping of 'key: value' lines, got {describe_node(node) if node else 'nothing'}")
            return None
        out: dict[str, tuple[ScalarNode, Node]] = {}
        expected = ", ".join(allowed)
        for knode, vnode in node.value:
            if not isinstance(knode, ScalarNode) or knode.tag not in (STR, INT, BOOL, FLOAT, NULL):
                self.at(knode, f"{what} has a key that is {describe_node(knode)}; keys are plain words (expected one of: {expected})")
                continue
            key = knode.value
            if key in out:
                first = out[key][0].start_mark.line + 1
                self.at(knode, f"duplicate key '{key}' in {what} (first given at line {first}); "
                               "YAML would silently keep only the last one: remove or merge one of them")
                continue
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'? " if close else ""
                self.at(knode, f"unknown key '{key}' in {what} ({hint}expected one of: {expected})")
                continue
            out[key] = (knode, vnode)
        for key in required:
            if key not in out:
                self.at(node, f"{what} is missing required key '{key}' (expected keys: {expected})")
        return out

    def sequence(self, node: Node, what: str, allow_single: bool = False) -> list[Node] | None:
        if isinstance(node, SequenceNode):
            return list(node.value)
        if allow_single and isinstance(node, ScalarNode) and node.tag != NULL:
            return [node]
        self.at(node, f"{what} must be a list (lines starting with '- ' or [a, b]), got {describe_node(node)}")
        return None

    # ------------------------------------------------------------- scalars
    def text(self, node: Node, what: str, allow_empty: bool = False) -> str | None:
        if isinstance(node, ScalarNode) and node.tag == STR:
            if not node.value.strip() and not allow_empty:
                self.at(node, f"{what} is empty; expected some text")
                return None
            return node.value
        hint = ""
        if isinstance(node, ScalarNode) and node.tag in (INT, FLOAT, BOOL):
            hint = f" (quote it: \"{node.value}\")"
        self.at(node, f"{what} must be text, got {describe_node(node)}{hint}")
        return None

    def digits_text(self, node: Node, what: str) -> str | None:
        """Numbers and PINs: must be quoted strings (YAML ints lose leading zeros)."""
        if isinstance(node, ScalarNode) and node.tag in (INT, FLOAT):
            self.at(node, f"{what} must be quoted: \"{node.value}\" (unquoted, YAML reads {node.value} "
                          "as an integer, and leading zeros or a leading '+' are lost)")
            return None
        return self.text(node, what)

    def integer(self, node: Node, what: str, low: int, high: int) -> int | None:
        if isinstance(node, ScalarNode) and node.tag == INT:
            value = _constructor.construct_object(node)
            if not low <= value <= high:
                self.at(node, f"{what} is {value}; expected a whole number from {low} to {high}")
                return None
            return int(value)
        self.at(node, f"{what} must be a whole number from {low} to {high}, got {describe_node(node)}")
        return None

    def choice(self, node: Node, what: str, choices: Sequence[str]) -> str | None:
        value = self.text(node, what)
        if value is None:
            return None
        for c in choices:
            if value.lower() == c.lower():
                return c
        close = difflib.get_close_matches(value.lower(), [c.lower() for c in choices], n=1, cutoff=0.5)
        hint = f"did you mean '{next(c for c in choices if c.lower() == close[0])}'? " if close else ""
        self.at(node, f"unknown {what}: '{value}' ({hint}expected one of: {', '.join(choices)})")
        return None


def scalar_value(node: Node) -> Any:
    return _constructor.construct_object(node, deep=True)
