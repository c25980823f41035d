"""Test actions whose jobs do what their args script: fail, sleep, save rollback data, return None.

Every execute, cancel and rollback is recorded in ``EVENTS[run_id]`` in the order the worker saw
it, so tests can assert exactly which jobs ran and were undone, and in which order.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from pydantic import BaseModel, Field

from sternway.activities import JobContext, RollbackContext
from sternway.activities.site import deploy_site
from sternway.workflows._actions import Action, Job, Registry, Retry
from sternway.workflows.errors import JobError
from sternway.workflows.models import Reason

EVENTS: defaultdict[str, list[tuple[Any, ...]]] = defaultdict(list)


class Script(BaseModel):
    """What each job should do, by job name."""

    fail: dict[str, int] = Field(default_factory=dict)  # attempts that fail (999: forever)
    error_type: dict[str, str] = Field(default_factory=dict)
    non_retryable: list[str] = Field(default_factory=list)
    sleep_first: dict[str, float] = Field(default_factory=dict)  # seconds on attempt 1 only
    sleep: dict[str, float] = Field(default_factory=dict)  # seconds on every attempt
    save: list[str] = Field(default_factory=list)  # save rollback data before running
    none_output: list[str] = Field(default_factory=list)
    big_output: list[str] = Field(default_factory=list)  # return more than the output limit
    rollback_fail: list[str] = Field(default_factory=list)
    reason: dict[str, str] = Field(default_factory=dict)  # the JobError reason, checked or not


async def step(ctx: JobContext) -> Any:
    """A scripted job."""
    script: Script = ctx.args
    job = ctx.job
    EVENTS[ctx.run_id].append(("start", job, ctx.attempt))
    if job in script.save:
        ctx.save_rollback_data({"saved_by": job, "attempt": ctx.attempt})
    seconds = script.sleep.get(job, 0.0) + (
        script.sleep_first.get(job, 0.0) if ctx.attempt == 1 else 0.0
    )
    try:
        for tick in range(int(seconds * 10)):
            ctx.report(f"tick {tick}")
            await asyncio.sleep(0.1)
    except asyncio.CancelledError:
        EVENTS[ctx.run_id].append(("cancelled", job, ctx.attempt))
        raise
    if ctx.attempt <= script.fail.get(job, 0):
        raise JobError(
            f"{job} failed on attempt {ctx.attempt}",
            type=script.error_type.get(job, "Boom"),
            non_retryable=job in script.non_retryable,
            reason=script.reason.get(job, Reason.ERROR),  # type: ignore[arg-type]
        )
    EVENTS[ctx.run_id].append(("done", job, ctx.attempt))
    if job in script.none_output:
        return None
    if job in script.big_output:
        return {"blob": "x" * 300_000}
    return {"job": job, "attempt": ctx.attempt, "deps": sorted(ctx.deps)}


async def undo(ctx: RollbackContext) -> None:
    """A scripted rollback."""
    script: Script = ctx.args
    EVENTS[ctx.run_id].append(("rollback", ctx.job, ctx.rollback_data))
    if ctx.job in script.rollback_fail:
        raise JobError(f"rollback of {ctx.job} failed")


def upper_input(ctx: JobContext) -> dict[str, Any]:
    """A pre hook that transforms the job's input."""
    return {k: str(v).upper() for k, v in ctx.input.items()}


def echo_input(ctx: JobContext) -> Any:
    """A job returning its input."""
    return ctx.input


def add_stamp(ctx: JobContext, output: Any) -> Any:
    """A post hook that transforms the job's output."""
    return {**output, "stamped": True}


def _job(name: str, *, after: list[str] | None = None, **kw: Any) -> Job:
    kw.setdefault("retry", Retry(max_attempts=3, initial_interval="100ms", backoff=1.0))
    kw.setdefault("rollback_retry", Retry(max_attempts=2, initial_interval="100ms"))
    return Job(name, execute=step, rollback=undo, after=after or [], heartbeat_timeout="5s", **kw)


def chain(name: str, n: int, **kw: Any) -> Action:
    """j1 -> j2 -> ... -> jn."""
    jobs = [_job(f"j{i}", after=[f"j{i - 1}"] if i > 1 else []) for i in range(1, n + 1)]
    return Action(name, jobs, args=Script, **kw)


def dag() -> Action:
    """root -> (slow) and root -> b -> c -> d."""
    return Action(
        "test-dag",
        [
            _job("root"),
            _job("slow", after=["root"]),
            _job("b", after=["root"]),
            _job("c", after=["b"]),
            _job("d", after=["c"]),
        ],
        args=Script,
    )


def continue_on_error() -> Action:
    """a -> b (its failure ignored) -> c."""
    return Action(
        "test-continue",
        [
            _job("a"),
            _job("b", after=["a"], continue_on_error=True),
            _job("c", after=["b"]),
        ],
        args=Script,
    )


def hooks() -> Action:
    """A job reused under another name with extra hooks."""
    base = Job("echo", execute=echo_input, input={"greeting": "hello"})
    return Action(
        "test-hooks",
        [base, base.rename("loud", after=["echo"]).extend(pre=[upper_input], post=[add_stamp])],
    )


ACTIVE: defaultdict[str, int] = defaultdict(int)
PEAK: defaultdict[str, int] = defaultdict(int)


async def track(ctx: JobContext) -> Any:
    """A job that holds a slot for a moment and records how many ran at once in its run."""
    EVENTS[ctx.run_id].append(("start", ctx.job, ctx.attempt))
    ACTIVE[ctx.run_id] += 1
    PEAK[ctx.run_id] = max(PEAK[ctx.run_id], ACTIVE[ctx.run_id])
    try:
        await asyncio.sleep(float(ctx.input.get("hold", 0.3)))
    finally:
        ACTIVE[ctx.run_id] -= 1
    return {"item": ctx.input.get("item"), "job": ctx.job}


ACTIONS = [
    chain("test-chain5", 5),
    chain("test-chain3", 3),
    dag(),
    continue_on_error(),
    hooks(),
    Action("test-fast-timeout", [_job("only", timeout="1s")], args=Script),
    Action(
        "test-slow-retry",
        [
            _job("j1"),
            _job("j2", after=["j1"], retry=Retry(max_attempts=100, initial_interval="10m")),
        ],
        args=Script,
        timeout="1h",
    ),
    chain("test-max-suspended", 2, max_suspended="30m"),
    deploy_site,
    # Registers `track` with the worker: the flow tests build plans that call it.
    Action("test-track", [Job("t", execute=track, rollback=undo)], args=Script),
]
REGISTRY = Registry(ACTIONS)
