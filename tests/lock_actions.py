"""Actions that hold locks, for tests/test_locks.py and the lock crash test (loaded by worker
processes through ``STERNWAY_MODULES``).

The one job of each writes ``begin <run id> <monotonic time>`` when it starts and ``end <run id>
<monotonic time>`` when it finishes to the file named by the ``log`` arg (one ``write`` each, with
``O_APPEND``), so a test can tell, across processes, whether two runs ever held a key at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel

from sternway.activities import JobContext, RollbackContext
from sternway.workflows._actions import Action, Job, Retry
from sternway.workflows.errors import JobError
from tests.reliability.actions import append

__all__ = ["ACTIONS", "LockArgs", "intervals"]


class LockArgs(BaseModel):
    """Which keys, how long the job holds them, and whether it (and its rollback) fail."""

    key: str
    other: str = "none"
    log: str
    hold: float = 0.0
    fail: bool = False
    rollback_fails: bool = False


async def hold(ctx: JobContext) -> dict[str, Any]:
    """Work for ``hold`` seconds between a begin and an end line."""
    args: LockArgs = ctx.args
    append(args.log, f"begin {ctx.run_id} {time.monotonic()}")
    await asyncio.sleep(args.hold)
    append(args.log, f"end {ctx.run_id} {time.monotonic()}")
    if args.fail:
        raise JobError("the job fails, as asked", type="Asked", non_retryable=True)
    return {"held": args.key}


async def undo(ctx: RollbackContext) -> None:
    """Undo the job, or fail for good when the run asks."""
    args: LockArgs = ctx.args
    if args.rollback_fails:
        raise JobError("the rollback fails, as asked", type="Asked", non_retryable=True)


def _action(name: str, *locks: dict[str, Any]) -> Action:
    job = Job(
        "work",
        execute=hold,
        rollback=undo,
        heartbeat_timeout="2s",
        rollback_retry=Retry(max_attempts=1),
    )
    return Action(name, [job], args=LockArgs, locks=list(locks))


ACTIONS = [
    _action("lock-one", {"key": "t/${{ args.key }}"}),
    _action("lock-two", {"key": "t/${{ args.key }}"}, {"key": "t/${{ args.other }}"}),
    _action("lock-sem", {"key": "t/${{ args.key }}", "limit": 2}),
    _action("lock-skip", {"key": "t/${{ args.key }}", "mode": "skip"}),
    _action("lock-timeout", {"key": "t/${{ args.key }}", "timeout": "1s"}),
]


def intervals(log: str) -> dict[str, tuple[float, float]]:
    """Per run, from its first begin to its last end (a job delivered again begins twice)."""
    spans: dict[str, list[float]] = {}
    with open(log) as lines:
        for line in lines:
            kind, run_id, at = line.split()
            span = spans.setdefault(run_id, [float("inf"), float("-inf")])
            if kind == "begin":
                span[0] = min(span[0], float(at))
            else:
                span[1] = max(span[1], float(at))
    return {run: (a, b) for run, (a, b) in spans.items()}


def most_at_once(spans: dict[str, tuple[float, float]]) -> int:
    """The most runs whose spans overlap at one moment."""
    points = sorted([(a, 1) for a, _ in spans.values()] + [(b, -1) for _, b in spans.values()])
    now = peak = 0
    for _, step in points:
        now += step
        peak = max(peak, now)
    return peak
