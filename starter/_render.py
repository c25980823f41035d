"""How the CLI shows runs: rich tables for people, stable JSON for scripts."""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import datetime
from typing import Any

from rich.console import Console, Group, HighlighterType, JustifyMethod, OverflowMethod
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.style import Style
from rich.table import Table
from rich.text import Text

from sternway.workflows.models import JobStatus, RunStatus

__all__ = [
    "STATE_STYLES",
    "LiteralConsole",
    "action_lines",
    "duration_text",
    "literal",
    "lock_lines",
    "make_console",
    "progress_bar",
    "run_summary",
    "shown",
    "state_text",
    "status_view",
    "web_ui_line",
]

STATE_STYLES = {
    "PENDING": "dim",
    "RUNNING": "cyan",
    "WAITING": "magenta",
    "SUSPENDED": "yellow",
    "ROLLING_BACK": "yellow",
    "COMPLETED": "green",
    "ROLLED_BACK": "yellow",
    "SKIPPED": "dim",
    "CANCELLED": "yellow",
    "FAILED": "red",
    "STOPPED": "red",
    "ROLLBACK_FAILED": "bold red",
}


# C0 and C1 control characters but newline and tab: ESC starts screen clears, window titles and
# clipboard writes (OSC 52), CR and backspace overwrite what was printed before them.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Lines printed off a terminal are never wrapped: a log or a pipe gets whole lines.
_UNWRAPPED = 100_000


def shown(text: str) -> str:
    """``text`` with each control character but newline and tab as an escape (``\\x1b``)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def literal(text: str, style: str | Style = "") -> Text:
    """Data as rich text: never read as markup, control characters shown escaped."""
    return Text(shown(text), style=style)


class LiteralConsole(Console):
    """A console that prints every string as data: no markup, no emoji codes, no raw controls.

    Tables and ``print`` turn strings into text here, so a job name like ``canary[web1]`` or a
    message holding ``[/oops]`` or an escape sequence is printed as it is, wherever it goes.
    """

    def render_str(
        self,
        text: str,
        *,
        style: str | Style = "",
        justify: JustifyMethod | None = None,
        overflow: OverflowMethod | None = None,
        emoji: bool | None = None,
        markup: bool | None = None,
        highlight: bool | None = None,
        highlighter: HighlighterType | None = None,
    ) -> Text:
        """``text`` as literal text (``emoji`` and ``markup`` are ignored: always off)."""
        return super().render_str(
            shown(text),
            style=style,
            justify=justify,
            overflow=overflow,
            emoji=False,
            markup=False,
            highlight=highlight,
            highlighter=highlighter,
        )


def make_console(*, stderr: bool = False) -> LiteralConsole:
    """The CLI's console on stdout or stderr.

    In a terminal it is as wide as the terminal (or ``COLUMNS``); piped, as wide as ``COLUMNS``
    when that is set and unbounded otherwise, so that logs and CI output hold whole lines.
    """
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not stream.isatty() and not os.environ.get("COLUMNS", "").strip().isdigit():
        width = _UNWRAPPED
    return LiteralConsole(stderr=stderr, highlight=False, emoji=False, markup=False, width=width)


def state_text(value: str) -> Text:
    """A run or job state, coloured."""
    return Text(value, style=STATE_STYLES.get(value, ""))


_state = state_text


def _time(value: datetime | None) -> str:
    return value.strftime("%H:%M:%S") if value else ""


def _took(job: JobStatus) -> str:
    if job.started_at is None:
        return ""
    if job.finished_at is None:
        return "…"
    return f"{(job.finished_at - job.started_at).total_seconds():.1f}s"


def _note(job: JobStatus) -> str:
    if job.rollback is not None and job.rollback.error is not None:
        return f"rollback: {job.rollback.error.message}"
    if job.error is not None:
        return f"{job.error.reason.value}: {job.error.message}"
    return job.detail or ""


def run_summary(status: RunStatus) -> Text:
    """One line: run id, action, state, requestor and progress."""
    text = Text.assemble(
        literal(status.run_id, "bold"),
        literal(f"  {status.action}  "),
        _state(status.state.value),
        f"  {status.progress.done}/{status.progress.total} jobs done",
    )
    if status.progress.rolled_back:
        text.append(f", {status.progress.rolled_back} rolled back")
    if status.requestor:
        text.append_text(literal(f"  by {status.requestor}"))
    return text


def status_view(status: RunStatus) -> Group:
    """The run as a summary line, a job table, the run's error and its Web UI link."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    # Names and the short columns are never wrapped: the detail column folds to make room.
    for column in ("job", "state", "tries", "started", "took"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail / error", overflow="fold", ratio=1)
    for job in status.jobs:
        table.add_row(
            literal(job.name),
            _state(job.state.value),
            str(job.attempts),
            _time(job.started_at),
            _took(job),
            literal(_note(job)),
        )
    parts: list[Any] = [run_summary(status), *lock_lines(status), table]
    if status.error is not None:
        parts.append(literal(f"error ({status.error.reason.value}): {status.error.message}", "red"))
    if status.ui_url:
        parts.append(web_ui_line(status.ui_url))
    return Group(*parts)


def lock_lines(status: RunStatus) -> list[Text]:
    """One line per key of the run: ``lock K: held``, ``lock K: waiting, held by RUN``."""
    lines = []
    for lock in status.locks:
        text = f"lock {lock.key}: {lock.state}"
        if lock.state in ("waiting", "skipped") and lock.holders:
            text += f", held by {', '.join(lock.holders)}"
        if lock.limit > 1:
            text += f" (limit {lock.limit})"
        if lock.note:
            text += f" ({lock.note})"
        lines.append(literal(text, "yellow" if lock.state in ("waiting", "kept") else ""))
    return lines


def web_ui_line(url: str) -> Text:
    """``Web UI: <url>`` on a line of its own that is never wrapped or cut, however narrow."""
    return Text(f"Web UI: {shown(url)}", no_wrap=True, overflow="ignore", end="\n")


def duration_text(seconds: float) -> str:
    """Seconds as the shortest duration text that says them exactly: ``1h``, ``90s``, ``0.5s``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def constraints_text(rules: dict[str, Any]) -> str:
    """``rules`` as one phrase for ``sternway actions``, e.g. ``pattern [a-z]+, max 10``."""
    parts = []
    for name, value in rules.items():
        if name == "items":
            parts.append(f"each item: {constraints_text(value)}")
        elif name == "enum":
            parts.append("one of " + "|".join(str(v) for v in value))
        else:
            parts.append(f"{name.replace('_', ' ')} {value}")
    return ", ".join(parts)


def _arg_line(arg: dict[str, Any]) -> str:
    kind = {"duration": "duration", "password": "secret"}.get(arg.get("format") or "", arg["type"])
    if kind == "array":
        kind = "list"
    line = f"  {arg['name']}: {kind}"
    if arg["required"]:
        line += " (required)"
    elif arg["default"] is not None:
        default = arg["default"]
        if kind == "duration" and isinstance(default, int | float):
            line += f" = {duration_text(default)}"
        else:
            line += f" = {json.dumps(default, ensure_ascii=False)}"
    if arg.get("constraints"):
        line += f" ({constraints_text(arg['constraints'])})"
    if arg.get("description"):
        line += f"  {arg['description']}"
    return line


def action_lines(action: dict[str, Any]) -> list[str]:
    """An action of ``sternway actions --json`` as lines: name and source, description, args."""
    source = action["source"] or "Python"
    lines = [f"{action['name']}  ({source}; version {action.get('version', '?')})"]
    if action["description"]:
        lines.append(f"  {action['description']}")
    lines += [_arg_line(arg) for arg in action["args"]] or ["  no args"]
    return lines


def progress_bar(console: Console) -> Progress:
    """The bar ``watch`` and ``demo`` show while a run goes."""
    return Progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[state]}", markup=False),
        console=console,
        transient=True,
    )
