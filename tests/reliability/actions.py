"""Actions for the reliability suite, loaded by worker subprocesses via ``STERNWAY_MODULES``.

Every job appends one line ``<idempotency_key> <job> <pid>`` to the effects file named in the run's
args, halfway through its work, so a worker killed in the second half leaves an effect behind and
the re-delivered attempt writes a second line under the same key: duplicate effects are visible.
Every rollback appends ``undo <job> <idempotency_key>`` before it does anything else. Each line is
one ``write`` on a file opened with ``O_APPEND``, so lines from several processes never interleave.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pydantic import BaseModel, Field

from sternway.activities import JobContext, RollbackContext
from sternway.workflows._actions import Action, Job, Retry
from sternway.workflows.errors import JobError

__all__ = ["ACTIONS", "CHAIN", "DAG", "RelArgs", "undo", "work"]

INJECTED = "Injected"
INJECTED_ROLLBACK = "InjectedRollbackFailure"


class RelArgs(BaseModel):
    """What the jobs of one run do, by job name."""

    effects: str = Field(description="file the jobs and rollbacks append their lines to")
    sleep: dict[str, float] = Field(default_factory=dict)  # seconds of work per job
    default_sleep: float = 0.0  # seconds of work of the jobs not in ``sleep``
    fail: list[str] = Field(default_factory=list)  # these jobs fail for good after their work
    rollback_fail: list[str] = Field(default_factory=list)  # these rollbacks always fail
    rollback_sleep: dict[str, float] = Field(default_factory=dict)  # seconds after the undo line


def append(path: str, line: str) -> None:
    """Append one line with a single ``write`` (atomic with ``O_APPEND`` for short lines)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


async def work(ctx: JobContext) -> dict[str, Any]:
    """Work for a while, with the job's effect written halfway; fail if the run says so."""
    args: RelArgs = ctx.args
    seconds = args.sleep.get(ctx.job, args.default_sleep)
    await asyncio.sleep(seconds / 2)
    append(args.effects, f"{ctx.idempotency_key} {ctx.job} {os.getpid()}")
    await asyncio.sleep(seconds / 2)
    if ctx.job in args.fail:
        raise JobError(f"failure injected into {ctx.job}", type=INJECTED, non_retryable=True)
    return {"job": ctx.job, "key": ctx.idempotency_key}


async def undo(ctx: RollbackContext) -> None:
    """Record the rollback; fail if the run says this rollback cannot be done."""
    args: RelArgs = ctx.args
    append(args.effects, f"undo {ctx.job} {ctx.idempotency_key}")
    await asyncio.sleep(args.rollback_sleep.get(ctx.job, 0.0))
    if ctx.job in args.rollback_fail:
        raise JobError(f"rollback of {ctx.job} cannot be done", type=INJECTED_ROLLBACK)


def job(name: str, after: list[str] | None = None) -> Job:
    """A job with one attempt (worker deaths do not count as attempts) and a quick rollback.

    The 2 s heartbeat timeout makes an attempt on a killed worker time out, and be delivered
    again, about 2 s after the kill; the rollback may be tried twice.
    """
    return Job(
        name,
        execute=work,
        rollback=undo,
        after=after or [],
        timeout="2m",
        heartbeat_timeout="2s",
        rollback_retry=Retry(max_attempts=2, initial_interval="200ms"),
    )


def _chain(n: int) -> list[Job]:
    return [job(f"j{i}", [f"j{i - 1}"] if i > 1 else []) for i in range(1, n + 1)]


# root ─┬─ a1 ── a2 ─┐
#       ├─ b ────────┼─ join
#       └─ c1 ── c2 ─┘
_DAG = [
    job("root"),
    job("a1", ["root"]),
    job("a2", ["a1"]),
    job("b", ["root"]),
    job("c1", ["root"]),
    job("c2", ["c1"]),
    job("join", ["a2", "b", "c2"]),
]

CHAIN = Action("rel-chain6", _chain(6), args=RelArgs, description="six jobs in a row")
DAG = Action("rel-dag7", _DAG, args=RelArgs, description="seven jobs, three parallel branches")
ACTIONS = [CHAIN, DAG]
