"""YAML with lines: a runbook parsed into plain values and a map from each field's path to its
line, with the document's size bounded."""

from __future__ import annotations

import math
import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from sternway.workflows._runbook._messages import MAX_VALUES, FieldPath, Invalid, short
from sternway.workflows.models import MAX_NESTING

# ------------------------------------------------------------------------ YAML with lines


class LineBuilder:
    """Plain values from a composed YAML node tree, recording the line of every field."""

    def __init__(self) -> None:
        self.lines: dict[FieldPath, int] = {}
        self._constructor = yaml.constructor.SafeConstructor()
        self._count = 0
        self._active: set[int] = set()
        self._explicit: dict[int, set[int]] = {}

    def build(self, node: Node, path: FieldPath) -> Any:
        self._count += 1
        if self._count > MAX_VALUES:
            raise Invalid((), f"the document is too large (over {MAX_VALUES} values)")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._active:
            raise Invalid(path, "an alias refers to a node that contains it")
        # Counted from the document's top: the recorded plan holds all of it. The error shows
        # the path to where it starts, not all 100 levels of it.
        if len(path) >= MAX_NESTING:
            raise Invalid(
                path[:4],
                f"nested more than {MAX_NESTING} levels deep, the limit",
                node.start_mark.line + 1,
            )
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            if isinstance(node, SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            raise Invalid(path, f"unsupported YAML node {type(node).__name__}")
        finally:
            self._active.discard(id(node))

    def _scalar(self, node: ScalarNode, path: FieldPath) -> Any:
        value = self._constructor.construct_object(node)
        if isinstance(value, float) and not math.isfinite(value):
            raise Invalid(
                path,
                f"{node.value} is not a finite number, and JSON (a run's plan and args) has no "
                f"infinity or NaN: quote it ('{node.value}') if it is text",
                node.start_mark.line + 1,
            )
        if value is None or isinstance(value, str | bool | int | float):
            return value
        # Timestamps, binary and the like stay the text they were written as: plans are JSON.
        return str(node.value)

    def _mapping(self, node: MappingNode, path: FieldPath) -> dict[str, Any]:
        merge = "tag:yaml.org,2002:merge"
        explicit = self._explicit.setdefault(
            id(node), {id(k) for k, _ in node.value if k.tag != merge}
        )
        self._constructor.flatten_mapping(node)  # `<<: *anchor` merge keys
        out: dict[str, Any] = {}
        merged: dict[str, bool] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                raise Invalid(path, "a key must be a plain name, not a list or a mapping", line)
            raw = self._constructor.construct_object(key_node)
            key = raw if isinstance(raw, str) else str(key_node.value)
            is_merged = id(key_node) not in explicit
            if key in out:
                if is_merged:
                    continue  # the mapping's own key, or an earlier merge, wins
                if not merged[key]:
                    raise Invalid((*path, key), "this key is given twice", line)
            merged[key] = is_merged
            self.lines[(*path, key)] = line
            out[key] = self.build(value_node, (*path, key))
        return out


_BRACKETED = re.compile(r"""(?<!["'])\b[A-Za-z_]+\[""")


def yaml_error(err: yaml.YAMLError, text: str) -> tuple[int, str]:
    """The line and a one-line message of a YAML error."""
    if isinstance(err, yaml.reader.ReaderError):
        line = text[: max(err.position, 0)].count("\n") + 1
        char = err.character
        shown = f"#x{char:04x}" if isinstance(char, int) else short(char)
        return line, f"invalid YAML: unacceptable character {shown}"
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        problem = ", ".join(p for p in (err.context, err.problem) if p) or "invalid YAML"
        if mark is not None:
            lines = text.splitlines()
            here = lines[mark.line] if mark.line < len(lines) else ""
            if "flow" in problem and _BRACKETED.search(here):
                # `{name: hosts, type: list[str]}`: inside { } the brackets start a list.
                problem += '; quote text with brackets, e.g. type: "list[str]"'
            return mark.line + 1, f"invalid YAML at column {mark.column + 1}: {problem}"
        return 1, f"invalid YAML: {problem}"
    return 1, f"invalid YAML: {err}"
