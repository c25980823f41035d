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
import inspect
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pydantic
import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from sternway.workflows._actions import Registry, secrets_of
from sternway.workflows.errors import ArgsError, JobError, JobRejected, SpecError
from sternway.workflows.models import (
    ACTIVITY_EXECUTE,
    ACTIVITY_RESOLVE,
    ACTIVITY_ROLLBACK,
    MAX_OUTPUT_BYTES,
    AttemptReport,
    CallSpec,
    ErrorInfo,
    JobInput,
    JobResult,
    Reason,
    ResolvedRun,
    ResolveInput,
    RollbackInput,
    clip_masked,
    mask_fragments,
    mask_secrets,
)

__all__ = ["JobActivities", "JobContext", "RollbackContext"]

_log = structlog.get_logger("sternway.job")

# Heartbeats carry the live detail line and the rollback data. The first one waits this long so
# that short jobs never heartbeat at all.
_HEARTBEAT_EVERY = 1.0


class _Context:
    """What job and rollback contexts share: identity, args, heartbeats and the log."""

    _phase = "execute"

    def __init__(self, *, run_id: str, action: str, job: str, attempt: int, args: Any) -> None:
        self.run_id = run_id
        self.action = action
        self.job = job
        self.attempt = attempt
        self.args = args
        self.detail: str | None = None
        self.log = _log.bind(run_id=run_id, action=action, job=job, attempt=attempt)
        self._report = AttemptReport()
        self._loop = asyncio.get_running_loop()
        # The run's secret arg values, once the args are parsed: what Sternway reports about
        # the attempt (detail, output tails, error messages, its own log lines) never shows them.
        self._secrets: list[str] = []

    def mask(self, text: str) -> str:
        """``text`` with the run's secret arg values replaced by ``**********``."""
        masked: str = mask_secrets(text, self._secrets)
        return masked

    def clip(
        self,
        text: str,
        limit: int | None = None,
        *,
        keep_end: bool = False,
        cut_start: bool = False,
        cut_end: bool = False,
    ) -> str:
        """``text`` masked and cut to ``limit`` characters, no piece of a secret left at the cut
        (see :func:`workflows.models.clip_masked`): how every shortened text is made."""
        return clip_masked(
            text, self._secrets, limit, keep_end=keep_end, cut_start=cut_start, cut_end=cut_end
        )

    def unpiece(self, text: str, *, start: bool = False, end: bool = False) -> str:
        """``text``, cut at its ``start``/``end``, with a piece of a secret left there masked
        (whole secrets are kept: the text is data a later job may use)."""
        return mask_fragments(text, self._secrets, start=start, end=end)

    def _set_args(self, args: Any, secrets: list[str]) -> None:
        """The parsed args, and the secrets the workflow named plus those the model marks."""
        self.args = args
        found = set(secrets) | set(secrets_of(args))
        self._secrets = sorted(found, key=lambda text: (-len(text), text))

    @property
    def idempotency_key(self) -> str:
        """Stable for one attempt of one job of one run, also when Temporal re-delivers it."""
        return f"{self.run_id}/{self.job}/{self._phase}/{self.attempt}"

    def report(self, detail: str) -> None:
        """Set the job's live detail line (shown by ``sternway status``) and heartbeat it."""
        self.detail = detail
        self.heartbeat()

    def heartbeat(self) -> None:
        """Tell Temporal the job is alive (and learn of a cancel); safe from sync job threads."""
        details = {
            "detail": None if self.detail is None else self.mask(self.detail),
            "rollback_data": self._report.rollback_data,
            "has_rollback_data": self._report.has_rollback_data,
        }
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            activity.heartbeat(details)
        else:  # a sync job function in its thread: the SDK heartbeats from the event loop
            self._loop.call_soon_threadsafe(activity.heartbeat, details)

    def set_exit(
        self, exit_code: int | None, stdout_tail: str | None, stderr_tail: str | None
    ) -> None:
        """Record a process's exit code and output tails in this attempt's log entry."""
        self._report.exit_code = exit_code
        self._report.stdout_tail = None if stdout_tail is None else self.clip(stdout_tail)
        self._report.stderr_tail = None if stderr_tail is None else self.clip(stderr_tail)


class JobContext(_Context):
    """What a job's execute function (and its hooks) receives.

    ``args`` are the run's args (the action's model), ``deps`` the outputs of the jobs in
    ``after``, ``input`` the job's own parameters (after ``pre`` hooks), ``rollback_data`` what an
    earlier attempt saved.
    """

    def __init__(
        self,
        *,
        run_id: str,
        action: str,
        job: str,
        attempt: int,
        args: Any,
        deps: dict[str, Any],
        input: dict[str, Any],
        rollback_data: Any,
        has_rollback_data: bool,
    ) -> None:
        super().__init__(run_id=run_id, action=action, job=job, attempt=attempt, args=args)
        self.deps = deps
        self.input = input
        self._report.rollback_data = rollback_data
        self._report.has_rollback_data = has_rollback_data

    @property
    def rollback_data(self) -> Any:
        """The rollback data saved so far by this job (by this or an earlier attempt)."""
        return self._report.rollback_data

    def save_rollback_data(self, data: Any) -> None:
        """Keep ``data`` for this job's rollback, even if execute then fails or the worker dies."""
        try:
            json.dumps(data)
        except (TypeError, ValueError) as err:
            raise JobError(f"rollback data must be JSON: {err}", non_retryable=True) from None
        self._report.rollback_data = data
        self._report.has_rollback_data = True
        self.heartbeat()


class RollbackContext(_Context):
    """What a rollback function receives: the job's ``args``, ``output`` (if it completed),
    ``error`` (if it failed), ``rollback_data`` (if execute saved any) and ``input`` (the
    rollback's own ``with`` parameters, for built-in kinds)."""

    _phase = "rollback"

    def __init__(
        self,
        *,
        run_id: str,
        action: str,
        job: str,
        attempt: int,
        args: Any,
        output: Any,
        completed: bool,
        error: ErrorInfo | None,
        rollback_data: Any,
        has_rollback_data: bool,
        input: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(run_id=run_id, action=action, job=job, attempt=attempt, args=args)
        self.input = input or {}
        self.output = output
        self.completed = completed
        self.error = error
        self.rollback_data = rollback_data
        self.has_rollback_data = has_rollback_data


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a job function, sync or async; sync ones run in a thread and cannot be interrupted."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    result = await asyncio.to_thread(fn, *args)
    if inspect.isawaitable(result):
        return await result
    return result


@contextlib.asynccontextmanager
async def _heartbeating(ctx: _Context) -> AsyncIterator[None]:
    """Heartbeat in the background so a cancel reaches jobs that never heartbeat themselves."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(_HEARTBEAT_EVERY)
            ctx.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()


def _failure(ctx: _Context, err: BaseException) -> ApplicationError:
    """The ``ApplicationError`` an attempt ends with, its report in the details."""
    report = ctx._report
    if isinstance(err, asyncio.CancelledError):
        if activity.is_worker_shutdown():
            report.reason = Reason.ERROR
            return ApplicationError(
                "the worker shut down during the attempt",
                report.model_dump(mode="json"),
                type="WorkerShutdown",
            )
        report.reason = Reason.CANCELLED
        return ApplicationError(
            "cancelled", report.model_dump(mode="json"), type="Cancelled", non_retryable=True
        )
    if isinstance(err, JobRejected | ArgsError | SpecError):
        report.reason = Reason.REJECTED
        type_ = err.type if isinstance(err, JobError) else type(err).__name__
        return ApplicationError(
            ctx.mask(str(err)), report.model_dump(mode="json"), type=type_, non_retryable=True
        )
    if isinstance(err, JobError):
        report.reason = Reason(err.reason)
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
            type="InvalidOutput",
            non_retryable=True,
        )
    try:
        size = len(json.dumps(output, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise JobError(
            f"job {job!r} returned something that is not JSON: {err}",
            type="InvalidOutput",
            non_retryable=True,
        ) from None
    if size > MAX_OUTPUT_BYTES:
        raise JobError(
            f"job {job!r} returned {size} bytes of output, more than the limit of "
            f"{MAX_OUTPUT_BYTES} bytes: keep large data outside the run and return a reference",
            type="OutputTooLarge",
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
            async with _heartbeating(ctx):
                # Only Python functions read the run's args (built-in kinds get theirs through
                # their rendered ``with``); the secrets come from the workflow either way.
                args = self._args(ctx, inp.action, inp.args) if inp.call.kind == "python" else None
                ctx._set_args(args, inp.secrets)
                for ref in inp.pre:
                    replaced = await _call(self.registry.function(ref), ctx)
                    if replaced is not None:
                        ctx.input = replaced
                output = await _call(self._runner(inp.call), ctx)
                for ref in inp.post:
                    output = await _call(self.registry.function(ref), ctx, output)
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
            async with _heartbeating(ctx):
                # Only Python functions read the run's args (built-in kinds get theirs through
                # their rendered ``with``); the secrets come from the workflow either way.
                args = self._args(ctx, inp.action, inp.args) if inp.call.kind == "python" else None
                ctx._set_args(args, inp.secrets)
                await _call(self._runner(inp.call), ctx)
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
        from sternway.activities._kinds import KINDS

        if call.kind == "python" and call.ref is not None:
            return self.registry.function(call.ref)
        try:
            return KINDS[call.kind]
        except KeyError:
            raise SpecError(f"job kind {call.kind!r} does not run in an activity") from None

    def _args(self, ctx: _Context, action: str, args: dict[str, Any]) -> Any:
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
