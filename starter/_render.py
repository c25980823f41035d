"""How the CLI shows runs: rich tables for people, stable JSON for scripts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from workflows.models import JobStatus, RunStatus

__all__ = ["STATE_STYLES", "progress_bar", "run_summary", "status_view"]

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


def _state(value: str) -> Text:
    return Text(value, style=STATE_STYLES.get(value, ""))


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
        (status.run_id, "bold"),
        f"  {status.action}  ",
        _state(status.state.value),
        f"  {status.progress.done}/{status.progress.total} jobs done",
    )
    if status.requestor:
        text.append(f"  by {status.requestor}")
    return text


def status_view(status: RunStatus) -> Group:
    """The run as a summary line, a job table, the run's error and its Web UI link."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("job", "state", "tries", "started", "took", "detail / error"):
        table.add_column(column, overflow="fold")
    for job in status.jobs:
        table.add_row(
            job.name,
            _state(job.state.value),
            str(job.attempts),
            _time(job.started_at),
            _took(job),
            _note(job),
        )
    parts: list[Any] = [run_summary(status), table]
    if status.error is not None:
        parts.append(Text(f"error ({status.error.reason.value}): {status.error.message}", "red"))
    if status.ui_url:
        parts.append(Text(f"Web UI: {status.ui_url}", no_wrap=True, overflow="ignore"))
    return Group(*parts)


def progress_bar(console: Console) -> Progress:
    """The bar ``watch`` and ``demo`` show while a run goes."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[state]}"),
        console=console,
        transient=True,
    )
