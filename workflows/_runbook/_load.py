"""Loading: a runbook file, text or folder to an :class:`~workflows._actions.Action`, and its
version (the sha256 of the file)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import yaml

from sternway.workflows._actions import Action
from sternway.workflows._runbook._compile import Compiler
from sternway.workflows._runbook._messages import (
    _MAX_TEXT,
    MAX_RUNBOOK_BYTES,
    Invalid,
    _line_of,
    _one_line,
    format_path,
)
from sternway.workflows._runbook._yaml import LineBuilder, yaml_error
from sternway.workflows.errors import SpecError

__all__ = ["RunbookTooLarge", "load_folder", "load_runbook", "load_runbook_text", "runbook_version"]

# ------------------------------------------------------------------------------ loading


def runbook_version(text: str | bytes) -> str:
    """A runbook's version: the first 12 hex digits of the SHA-256 of its file's bytes."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    return hashlib.sha256(data).hexdigest()[:12]


def load_runbook_text(text: str | bytes, source: str = "<runbook>") -> Action:
    """The action defined by the YAML ``text``; ``source`` names it in errors (a file name).

    Raises :class:`SpecError` (one line, ``<source>:<line> <field path>: <message>``) and nothing
    else, whatever the input.
    """
    try:
        action = _load(text, source)
        action.version = runbook_version(text)
        return action
    except SpecError:
        raise
    except RecursionError:
        raise SpecError(f"{source}:1 document: the document is nested too deeply") from None
    except Exception as err:  # the loader's promise: a SpecError, whatever the input
        detail = _one_line(f"{type(err).__name__}: {err}")[:_MAX_TEXT]
        raise SpecError(f"{source}:1 document: internal error while loading: {detail}") from None


class RunbookTooLarge(SpecError):
    """A runbook file is over :data:`MAX_RUNBOOK_BYTES`."""


def _too_large(source: str, size: int | None = None) -> RunbookTooLarge:
    said = "over" if size is None else f"{size} bytes, over"
    return RunbookTooLarge(
        f"{source}: the runbook is too large ({said} the limit of {MAX_RUNBOOK_BYTES} bytes)"
    )


def _load(text: str | bytes, source: str) -> Action:
    size = len(text) if isinstance(text, bytes | bytearray) else len(text.encode(errors="replace"))
    if size > MAX_RUNBOOK_BYTES:
        raise _too_large(source, size)
    if isinstance(text, bytes | bytearray):
        raw = bytes(text)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            raise SpecError(
                f"{source}:{line} document: not UTF-8 text (byte {err.start})"
            ) from None
    builder = LineBuilder()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = None if node is None else builder.build(node, ())
        return Compiler().runbook(data, source)
    except yaml.YAMLError as err:
        line, message = yaml_error(err, text)
        raise SpecError(f"{source}:{line} document: {_one_line(message)}") from None
    except Invalid as err:
        line = err.line or _line_of(builder.lines, err.path)
        message = _one_line(err.message)
        raise SpecError(f"{source}:{line} {format_path(err.path)}: {message}") from None


def load_runbook(path: str | Path) -> Action:
    """The action defined by the runbook file at ``path`` (its source is ``path`` as given)."""
    source = str(path)
    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_RUNBOOK_BYTES + 1)  # no more: a huge file is not read whole
    except OSError as err:
        raise SpecError(f"{source}: cannot read the runbook: {err.strerror or err}") from None
    if len(data) > MAX_RUNBOOK_BYTES:
        raise _too_large(source)
    return load_runbook_text(data, source)


def load_folder(path: str | Path) -> list[Action]:
    """The actions of every ``*.yaml`` and ``*.yml`` file in the folder, in file name order.

    A file over :data:`MAX_RUNBOOK_BYTES` is skipped, with an error logged (``sternway.runbooks``);
    any other problem is a :class:`SpecError`.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise SpecError(f"{folder}: not a folder of runbooks")
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    actions: list[Action] = []
    seen: dict[str, str] = {}
    for file in files:
        try:
            action = load_runbook(file)
        except RunbookTooLarge as err:
            logging.getLogger("sternway.runbooks").error("skipped: %s", err)
            continue
        if action.name in seen:
            raise SpecError(
                f"{file}: action {action.name!r} is also defined in {seen[action.name]}"
            )
        seen[action.name] = str(file)
        actions.append(action)
    return actions
