"""The activities that run jobs: resolve a run's plan, execute one attempt, roll one job back.

Each attempt of a job is one activity execution: the workflow drives retries so that every attempt
has its own log entry and rollback data survives failed attempts. Job functions get a
:class:`JobContext`; rollback functions get a :class:`RollbackContext`.

At this boundary every exception becomes an ``ApplicationError`` whose details carry an
:class:`~workflows.models.AttemptReport` (reason, rollback data, exit code, output tails).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pydantic
from temporalio import activity
from temporalio.exceptions import ApplicationError

from sternway.activities._context import (
    HEARTBEAT_EVERY,
    BaseContext,
    JobContext,
    RollbackContext,
    call_job_function,
)
from sternway.activities._kinds import KINDS
from sternway.workflows._actions import Registry
from sternway.workflows._protocol import (
    ACTIVITY_EXECUTE,
    ACTIVITY_RESOLVE,
    ACTIVITY_ROLLBACK,
    ErrorType,
)
from sternway.workflows.errors import ArgsError, JobError, JobRejected, SpecError
from sternway.workflows.models import (
    MAX_OUTPUT_BYTES,
    AttemptReport,
    CallSpec,
    JobInput,
    JobResult,
    Reason,
    ResolvedRun,
    ResolveInput,
    RollbackInput,
    json_refusal,
)

__all__ = ["JobActivities", "JobContext", "RollbackContext"]


@contextlib.contextmanager
def _heartbeating(ctx: BaseContext) -> Iterator[None]:
    """Heartbeat in the background so a cancel reaches jobs that never heartbeat themselves.

    A timer callback rather than a task: most attempts end before the first beat is due."""
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle

    def beat() -> None:
        nonlocal timer
        ctx.heartbeat()
        timer = loop.call_later(HEARTBEAT_EVERY, beat)

    timer = loop.call_later(HEARTBEAT_EVERY, beat)
    try:
        yield
    finally:
        timer.cancel()


def _failure(ctx: BaseContext, err: BaseException) -> ApplicationError:
    """The ``ApplicationError`` an attempt ends with, its report in the details."""
    report = ctx._report
    if isinstance(err, asyncio.CancelledError):
        if activity.is_worker_shutdown():
            report.reason = Reason.ERROR
            return ApplicationError(
                "the worker shut down during the attempt",
                report.model_dump(mode="json"),
                type=ErrorType.WORKER_SHUTDOWN,
            )
        report.reason = Reason.CANCELLED
        return ApplicationError(
            "cancelled",
            report.model_dump(mode="json"),
            type=ErrorType.CANCELLED,
            non_retryable=True,
        )
    if isinstance(err, JobRejected | ArgsError | SpecError):
        report.reason = Reason.REJECTED
        type_ = err.type if isinstance(err, JobError) else type(err).__name__
        return ApplicationError(
            ctx.mask(str(err)), report.model_dump(mode="json"), type=type_, non_retryable=True
        )
    if isinstance(err, JobError):
        report.reason = err.reason
        return ApplicationError(
            ctx.mask(err.message),
            report.model_dump(mode="json"),
            type=err.type,
            non_retryable=err.non_retryable,
        )
    if isinstance(err, ApplicationError):
        return ApplicationError(
            ctx.mask(err.message),
            report.model_dump(mode="json"),
            type=err.type or "ApplicationError",
            non_retryable=err.non_retryable,
        )
    if isinstance(err, TimeoutError):
        report.reason = Reason.TIMEOUT
    return ApplicationError(
        ctx.mask(str(err) or type(err).__name__),
        report.model_dump(mode="json"),
        type=type(err).__name__,
    )


def _check_output(job: str, output: Any) -> None:
    if output is None:
        raise JobError(
            f"job {job!r} returned None: a job must return a JSON value "
            "(return True or {} when there is nothing to report)",
            type=ErrorType.INVALID_OUTPUT,
            non_retryable=True,
        )
    bad = json_refusal(output, f"job {job!r} output")
    if bad:
        raise JobError(bad, type=ErrorType.INVALID_OUTPUT, non_retryable=True)
    try:
        size = len(json.dumps(output))  # infinity and NaN: refused above
    except (TypeError, ValueError) as err:
        raise JobError(
            f"job {job!r} returned something that is not JSON: {err}",
            type=ErrorType.INVALID_OUTPUT,
            non_retryable=True,
        ) from None
    if size > MAX_OUTPUT_BYTES:
        raise JobError(
            f"job {job!r} returned {size} bytes of output, more than the limit of "
            f"{MAX_OUTPUT_BYTES} bytes: keep large data outside the run and return a reference",
            type=ErrorType.OUTPUT_TOO_LARGE,
            non_retryable=True,
        )


class JobActivities:
    """The job activities of one worker, bound to its registry of actions."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @activity.defn(name=ACTIVITY_RESOLVE)
    async def resolve(self, inp: ResolveInput) -> ResolvedRun:
        """Fix a run's plan and validate its args (a local activity, recorded in history)."""
        try:
            return self.registry.resolve(inp.action, inp.args)
        except (SpecError, ArgsError) as err:
            raise ApplicationError(str(err), type=type(err).__name__, non_retryable=True) from None

    @activity.defn(name=ACTIVITY_EXECUTE)
    async def execute(self, inp: JobInput) -> JobResult:
        """Run one attempt of a job: pre hooks, execute, post hooks, output checks."""
        ctx = JobContext(
            run_id=inp.run_id,
            action=inp.action,
            job=inp.job,
            attempt=inp.attempt,
            args=None,
            deps=inp.deps,
            input=dict(inp.call.with_),
            rollback_data=inp.rollback_data,
            has_rollback_data=inp.has_rollback_data,
        )
        try:
            with _heartbeating(ctx):
                # Only Python functions read the run's args (built-in kinds get theirs through
                # their rendered ``with``); the secrets come from the workflow either way.
                args = self._args(ctx, inp.action, inp.args) if inp.call.kind == "python" else None
                ctx._set_args(args, inp.secrets)
                for ref in inp.pre:
                    replaced = await call_job_function(self.registry.function(ref), ctx)
                    if replaced is not None:
                        ctx.input = replaced
                output = await call_job_function(self._runner(inp.call), ctx)
                for ref in inp.post:
                    output = await call_job_function(self.registry.function(ref), ctx, output)
                _check_output(inp.job, output)
        except BaseException as err:
            if not isinstance(err, Exception | asyncio.CancelledError):
                raise
            failure = _failure(ctx, err)
            ctx.log.info(
                "job attempt failed",
                reason=ctx._report.reason.value,
                error_type=failure.type,
                error=failure.message,
            )
            raise failure from None
        return JobResult(output=output, report=ctx._report)

    @activity.defn(name=ACTIVITY_ROLLBACK)
    async def rollback(self, inp: RollbackInput) -> AttemptReport:
        """Run one attempt of a job's rollback; its report keeps a process's exit and output."""
        ctx = RollbackContext(
            run_id=inp.run_id,
            action=inp.action,
            job=inp.job,
            attempt=inp.attempt,
            args=None,
            output=inp.output,
            completed=inp.completed,
            error=inp.error,
            rollback_data=inp.rollback_data,
            has_rollback_data=inp.has_rollback_data,
            input=dict(inp.call.with_),
        )
        try:
            with _heartbeating(ctx):
                # Only Python functions read the run's args (built-in kinds get theirs through
                # their rendered ``with``); the secrets come from the workflow either way.
                args = self._args(ctx, inp.action, inp.args) if inp.call.kind == "python" else None
                ctx._set_args(args, inp.secrets)
                await call_job_function(self._runner(inp.call), ctx)
        except BaseException as err:
            if not isinstance(err, Exception | asyncio.CancelledError):
                raise
            failure = _failure(ctx, err)
            ctx.log.warning(
                "rollback attempt failed", error_type=failure.type, error=failure.message
            )
            raise failure from None
        return ctx._report

    def _runner(self, call: CallSpec) -> Callable[..., Any]:
        """The function that runs ``call``: a registered Python function or a built-in kind."""
        if call.kind == "python" and call.ref is not None:
            return self.registry.function(call.ref)
        try:
            return KINDS[call.kind]
        except KeyError:
            raise SpecError(f"job kind {call.kind!r} does not run in an activity") from None

    def _args(self, ctx: BaseContext, action: str, args: dict[str, Any]) -> Any:
        """The run's args as the action's model, which job functions expect.

        The args were validated when the run started, against the definition of that time. A
        runbook edited or removed since then may not fit them any more; its built-in job kinds
        take everything from their rendered ``with``, so such a job gets the run's args as a
        plain dict instead of failing a run in flight. A Python action's functions need the
        model, so for them a mismatch stays an error.
        """
        found = self.registry.get(action) if action in self.registry else None
        if found is None:
            ctx.log.warning("the run's action is no longer registered: args passed as a dict")
            return dict(args)
        try:
            return found.parse_args(args)
        except pydantic.ValidationError as err:
            if found.source is None:
                message = err.errors()[0]["msg"]
                raise ArgsError(f"invalid args for {action!r}: {message}") from None
            ctx.log.warning(
                "the runbook's args changed since the run started: args passed as a dict",
                source=found.source,
            )
            return dict(args)
