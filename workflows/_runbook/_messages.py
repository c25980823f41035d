"""The loader's messages: one-line :class:`~workflows.errors.SpecError` texts that name the
file, the line and the field, and the limits they speak of."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

FieldPath = tuple[str | int, ...]

# A document may hold at most this many values (aliases count each time they are used), which
# keeps "billion laughs" documents from eating the worker's memory.
MAX_VALUES = 100_000
MAX_RUNBOOK_BYTES = 1024 * 1024
"""The largest runbook file loaded: larger ones are refused (and skipped by workers)."""
_MAX_TEXT = 200  # characters of a value quoted in a message


# ----------------------------------------------------------------------------- errors


class Invalid(Exception):
    """A problem at a field path (and, for keys, at an explicit line)."""

    def __init__(self, path: FieldPath, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        self.line = line


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def short(value: Any, limit: int = _MAX_TEXT) -> str:
    """``repr`` of a value, cut to ``limit`` characters (it is quoted in a one-line message)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_path(path: FieldPath) -> str:
    """``("jobs", 1, "jobs", 0, "run")`` as ``jobs[1].jobs[0].run``; the root is ``document``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += ("." if out else "") + part
        else:
            out += f"[{short(part, 60)}]"
    return out or "document"


def _one_line(text: str) -> str:
    return " ".join(text.splitlines()).strip()


def _line_of(lines: Mapping[FieldPath, int], path: FieldPath) -> int:
    """The line of ``path``, or of the nearest enclosing node that has one."""
    for end in range(len(path), -1, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return 1


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
