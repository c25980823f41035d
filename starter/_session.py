"""What every command of the ``sternway`` command line shares: the session (consoles, the
registry of actions, the lazy client), the exit codes of errors, and the decorator that hands a
command its session."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from temporalio.client import Client
from temporalio.runtime import Runtime

from sternway import _connect
from sternway.codec import CodecError
from sternway.workflows._protocol import DEFAULT_TASK_QUEUE
from sternway.workflows.errors import (
    ArgsError,
    CommandRefused,
    RunNotFound,
    ServerUnreachable,
    SpecError,
    SternwayError,
)

if TYPE_CHECKING:
    from rich.console import Console

    from sternway.workflows._actions import Registry

__all__ = [
    "EXIT_CODES",
    "POLL_EVERY",
    "Session",
    "command",
    "duration_option",
    "exit_code",
    "is_runbook_path",
]

EXIT_CODES: dict[type[SternwayError], int] = {
    CodecError: 2,
    SpecError: 2,
    ArgsError: 2,
    RunNotFound: 3,
    ServerUnreachable: 4,
    CommandRefused: 5,
}
POLL_EVERY = 0.5


class Session:
    """What every command shares: consoles, the registry and the (lazy) client."""

    def __init__(self, client: Client | None = None) -> None:
        self._client = client
        self._registry: Registry | None = None
        self._out: Console | None = None
        self._err: Console | None = None

    @property
    def out(self) -> Console:
        """Rich output on stdout, for people."""
        if self._out is None:
            from sternway.starter._render import make_console

            self._out = make_console()
        return self._out

    @property
    def err(self) -> Console:
        """Rich output on stderr: errors and notes."""
        if self._err is None:
            from sternway.starter._render import make_console

            self._err = make_console(stderr=True)
        return self._err

    def show(self, renderable: Any) -> None:
        """Print a view on stdout without cropping its long lines (the Web UI link)."""
        self.out.print(renderable, crop=False)

    def link(self, url: str | None) -> None:
        """The Web UI link on a line of its own, whole however narrow the terminal."""
        if url:
            from sternway.starter._render import web_ui_line

            self.show(web_ui_line(url))

    def print_json(self, data: Any) -> None:
        """Plain JSON on stdout, one document, no colours."""
        if self._out is not None:
            self._out.file.flush()
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        sys.stdout.flush()

    @property
    def registry(self) -> Registry:
        """The actions known here (the same the worker loads)."""
        if self._registry is None:
            from sternway.worker import load_registry

            self._registry = load_registry()
        return self._registry

    @property
    def task_queue(self) -> str:
        """The task queue runs go to (``STERNWAY_TASK_QUEUE``, default ``sternway``)."""
        return os.environ.get("STERNWAY_TASK_QUEUE", DEFAULT_TASK_QUEUE)

    async def client(self, runtime: Runtime | None = None) -> Client:
        """Connect once, from Temporal's environment configuration."""
        if self._client is None:
            self._client = await _connect.connect(runtime=runtime)
        return self._client


def duration_option(value: str | None, option: str) -> timedelta | None:
    """The duration an option gives (``30s``, ``1h``), or None; :class:`ArgsError` if bad."""
    if value is None:
        return None
    from sternway.workflows.models import parse_duration  # pydantic: only when it is needed

    try:
        return timedelta(seconds=parse_duration(value))
    except ValueError as err:
        raise ArgsError(f"{option}: {err}") from None


def is_runbook_path(text: str) -> bool:
    """Whether a command's ACTION|FILE.yaml argument names a runbook file."""
    return text.endswith((".yaml", ".yml")) or Path(text).is_file()


def exit_code(err: SternwayError) -> int:
    """The exit code of a Sternway error (1 for one the table does not name)."""
    for kind, code in EXIT_CODES.items():
        if isinstance(err, kind):
            return code
    return 1


def command(fn: Callable[..., Awaitable[int | None]]) -> Callable[..., Awaitable[int | None]]:
    """Give an async command the session as its first argument."""

    @click.pass_obj
    def wrapper(session: Session, *args: Any, **kwargs: Any) -> Awaitable[int | None]:
        return fn(session, *args, **kwargs)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper
