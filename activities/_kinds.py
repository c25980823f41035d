"""Built-in job kinds run by the execute and rollback activities.

Each kind is ``async def kind(ctx) -> output`` where ``ctx.input`` holds the job's ``with``
parameters, already rendered by the workflow (expressions resolved). The same functions serve
rollbacks (``ctx`` is then a :class:`~activities._jobs.RollbackContext`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from activities._jobs import JobContext, RollbackContext
from workflows.errors import JobError

__all__ = ["KINDS"]

Context = JobContext | RollbackContext


async def noop(ctx: Context) -> Any:
    """Return the job's input (used by tests, benchmarks and placeholders)."""
    return dict(ctx.input)


async def fail(ctx: Context) -> Any:
    """Fail with ``message`` (and ``type``, ``non_retryable`` if given)."""
    raise JobError(
        str(ctx.input.get("message", "failed on purpose")),
        type=str(ctx.input.get("type", "Fail")),
        non_retryable=bool(ctx.input.get("non_retryable", False)),
    )


KINDS: dict[str, Callable[[Context], Awaitable[Any]]] = {
    "noop": noop,
    "fail": fail,
}
