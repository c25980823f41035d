"""The action workflow: the deterministic interpreter of a :class:`~workflows.models.Plan`.

One dynamic workflow class serves every action: the workflow type is the action's name, and the
run fixes its plan at start through the ``sternway.resolve`` local activity, so a plan recorded in
history never changes under a run in flight.

Forward phase: jobs whose ``after`` jobs are done start in parallel; each attempt is one activity
execution (retries are driven here so every attempt is logged and rollback data survives failed
attempts). Halting (a job failed for good, a stop, a run timeout): no new job starts, running
activities are cancelled and awaited, then every started job with a rollback is rolled back, one
at a time, in reverse start order, in a task no cancellation reaches.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy, SearchAttributeKey
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    TimeoutType,
)
from temporalio.exceptions import (
    TimeoutError as TemporalTimeoutError,
)

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from workflows.models import (
        ACTIVITY_EXECUTE,
        ACTIVITY_RESOLVE,
        ACTIVITY_ROLLBACK,
        SEARCH_ATTRIBUTE_REQUESTOR,
        SEARCH_ATTRIBUTE_STATE,
        TERMINAL_RUN_STATES,
        AttemptLog,
        AttemptReport,
        CommandResult,
        ErrorInfo,
        JobInput,
        JobResult,
        JobSpec,
        JobState,
        JobStatus,
        Plan,
        Progress,
        Reason,
        ResolvedRun,
        ResolveInput,
        RetrySpec,
        RollbackInput,
        RollbackStatus,
        RunInput,
        RunState,
        RunStatus,
        StopCommand,
        SuspendCommand,
    )

__all__ = ["ActionWorkflow"]

STATE_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_STATE)
REQUESTOR_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_REQUESTOR)

_NO_RETRY = RetryPolicy(maximum_attempts=1)
# Attempts lost to a dead or stopping worker are re-run on another one, this many times at most.
_INFRA_RETRIES = 20
_INFRA_WAIT = timedelta(seconds=1)
_DONE_STATES = frozenset({JobState.COMPLETED, JobState.SKIPPED})


class _Failure:
    """A failed attempt: its error, its report, and how it may be retried."""

    def __init__(
        self, error: ErrorInfo, report: AttemptReport, retryable: bool, infra: bool = False
    ) -> None:
        self.error = error
        self.report = report
        self.retryable = retryable
        # The worker died or shut down under the attempt: not the job's fault, so it does not
        # count against the job's retry policy.
        self.infra = infra


def _classify(err: ActivityError) -> _Failure:
    """Reason, type and message of a failed attempt, its report, and whether it may be retried."""
    cause = err.cause
    if isinstance(cause, TemporalTimeoutError):
        report = AttemptReport(reason=Reason.TIMEOUT)
        if cause.last_heartbeat_details and isinstance(cause.last_heartbeat_details[0], dict):
            beat = cause.last_heartbeat_details[0]
            report.rollback_data = beat.get("rollback_data")
            report.has_rollback_data = bool(beat.get("has_rollback_data"))
        kind = cause.type.name.lower().replace("_", "-") if cause.type else "activity"
        info = ErrorInfo(reason=Reason.TIMEOUT, type="Timeout", message=f"{kind} timeout")
        return _Failure(info, report, True, infra=cause.type == TimeoutType.HEARTBEAT)
    if isinstance(cause, CancelledError):
        info = ErrorInfo(reason=Reason.CANCELLED, type="Cancelled", message="cancelled")
        return _Failure(info, AttemptReport(reason=Reason.CANCELLED), False)
    if isinstance(cause, ApplicationError):
        report = AttemptReport()
        if cause.details and isinstance(cause.details[0], dict):
            try:
                report = AttemptReport.model_validate(cause.details[0])
            except ValidationError:
                report = AttemptReport()
        info = ErrorInfo(
            reason=report.reason, type=cause.type or "ApplicationError", message=cause.message
        )
        return _Failure(info, report, not cause.non_retryable, infra=cause.type == "WorkerShutdown")
    message = str(cause) if cause is not None else str(err)
    return _Failure(ErrorInfo(type=type(cause).__name__, message=message), AttemptReport(), True)


@workflow.defn(dynamic=True)
class ActionWorkflow:
    """Runs any action: the workflow type names the action, the plan comes from the registry."""

    def __init__(self) -> None:
        info = workflow.info()
        self._status = RunStatus(
            run_id=info.workflow_id, action=info.workflow_type, created_at=info.start_time
        )
        self._plan: Plan | None = None
        self._args: dict[str, Any] = {}
        self._specs: dict[str, JobSpec] = {}
        self._jobs: dict[str, JobStatus] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._handles: dict[str, workflow.ActivityHandle[JobResult]] = {}
        self._start_order: list[str] = []
        self._rollback_data: dict[str, tuple[Any, bool]] = {}
        self._suspended = False
        self._suspended_since: datetime | None = None
        self._suspend_cancelled: set[str] = set()
        self._stop: StopCommand | None = None
        self._stop_error: ErrorInfo | None = None
        self._cancel_requested = False
        self._failure: ErrorInfo | None = None
        self._rollback_failed: str | None = None
        self._changed = False
        self._timers: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------------------------- run

    @workflow.run
    async def run(self, raw: Sequence[RawValue]) -> RunStatus:
        """Run the action to a terminal state; the result is the final status."""
        try:
            inp = (
                workflow.payload_converter().from_payload(raw[0].payload, RunInput)
                if raw
                else RunInput()
            )
        except Exception as err:
            return await self._reject("InvalidInput", f"the run input is not valid: {err}")
        self._status.requestor = inp.requestor
        if inp.requestor and workflow.info().typed_search_attributes.get(REQUESTOR_KEY) is None:
            workflow.upsert_search_attributes([REQUESTOR_KEY.value_set(inp.requestor)])
        try:
            resolved = await workflow.execute_local_activity(
                ACTIVITY_RESOLVE,
                ResolveInput(action=self._status.action, args=inp.args),
                result_type=ResolvedRun,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary=f"{self._status.action} › resolve plan and args",
            )
        except (ActivityError, ApplicationError) as err:
            # A local activity's failure arrives unwrapped, as the ApplicationError itself.
            cause = err.cause if isinstance(err, ActivityError) else err
            if isinstance(cause, ApplicationError):
                return await self._reject(cause.type or "InvalidArgs", cause.message)
            return await self._reject("InvalidArgs", str(cause or err))
        except asyncio.CancelledError:
            self._request_stop(StopCommand(reason="cancel requested through Temporal"), True)
            return await self._finish()
        self._start(resolved, inp)
        await self._forward()
        if self._halted_with_rollback():
            await self._shielded(asyncio.create_task(self._rollback_all()))
        return await self._finish()

    def _start(self, resolved: ResolvedRun, inp: RunInput) -> None:
        plan = resolved.plan
        self._plan = plan
        self._args = resolved.args
        self._specs = {job.name: job for job in plan.jobs}
        self._status.args = resolved.masked_args
        self._status.jobs = [JobStatus(name=job.name) for job in plan.jobs]
        self._jobs = {job.name: job for job in self._status.jobs}
        for name, output in inp.options.reuse_outputs.items():
            if name in self._jobs:
                self._jobs[name].state = JobState.COMPLETED
                self._jobs[name].output = output
        if "args" not in workflow.memo():
            workflow.upsert_memo({"args": resolved.masked_args, "requestor": inp.requestor})
        self._status.started_at = workflow.now()
        self._set_state(RunState.SUSPENDED if self._suspended else RunState.RUNNING)
        timeout = inp.options.timeout if inp.options.timeout is not None else plan.timeout
        if timeout is not None:
            self._timer(
                timeout,
                ErrorInfo(
                    reason=Reason.TIMEOUT,
                    type="RunTimeout",
                    message=f"the run took longer than its timeout of {timeout:g}s",
                ),
                lambda: True,
            )

    async def _reject(self, kind: str, message: str) -> RunStatus:
        """End a run that cannot start (bad input or args): nothing ran, nothing to undo."""
        self._failure = ErrorInfo(reason=Reason.REJECTED, type=kind, message=message)
        return await self._finish()

    async def _forward(self) -> None:
        """Start jobs as their dependencies finish until all are done or the run halts."""
        plan = self._plan
        if plan is None:
            return
        while True:
            if not self._halting() and not self._suspended:
                for spec in plan.jobs:
                    if self._ready(spec):
                        self._tasks[spec.name] = asyncio.create_task(self._run_job(spec))
            # Every pending job has a chain of pending dependencies ending in a ready job, so
            # with no task running the run is either halting, suspended or done.
            if not self._tasks and (
                self._halting() or all(self._dependency_done(name) for name in self._jobs)
            ):
                return
            self._changed = False
            await self._wait(lambda: self._changed)

    def _ready(self, spec: JobSpec) -> bool:
        job = self._jobs[spec.name]
        return (
            job.state == JobState.PENDING
            and spec.name not in self._tasks
            and all(self._dependency_done(dep) for dep in spec.after)
        )

    def _dependency_done(self, name: str) -> bool:
        job = self._jobs[name]
        if job.state in _DONE_STATES:
            return True
        return job.state == JobState.FAILED and self._specs[name].continue_on_error

    def _halting(self) -> bool:
        return self._failure is not None or self._stop is not None

    def _halted_with_rollback(self) -> bool:
        return self._failure is not None or (self._stop is not None and self._stop.rollback)

    async def _wait(self, condition: Callable[[], bool]) -> None:
        """Wait in the main coroutine; a Temporal cancel becomes a stop with rollback."""
        while True:
            try:
                await workflow.wait_condition(condition)
                return
            except asyncio.CancelledError:
                self._request_stop(StopCommand(reason="cancel requested through Temporal"), True)

    async def _shielded(self, task: asyncio.Task[None]) -> None:
        """Await ``task`` so that no cancellation of the run reaches it."""
        while True:
            try:
                await asyncio.shield(task)
                return
            except asyncio.CancelledError:
                self._request_stop(StopCommand(reason="cancel requested through Temporal"), True)

    # ----------------------------------------------------------------------------------- jobs

    async def _run_job(self, spec: JobSpec) -> None:
        job = self._jobs[spec.name]
        failures = 0
        infra_failures = 0
        try:
            while True:
                if self._suspended and not self._halting():
                    await workflow.wait_condition(lambda: not self._suspended or self._halting())
                if self._halting():
                    if job.attempts:
                        self._end_job(job, JobState.CANCELLED, job.error)
                    return
                outcome = await self._attempt(spec, job)
                if outcome is None:
                    return
                error, retryable = outcome.error, outcome.retryable
                if outcome.infra and infra_failures < _INFRA_RETRIES and not self._halting():
                    infra_failures += 1
                    await workflow.sleep(_INFRA_WAIT)
                    continue
                if error.reason == Reason.CANCELLED and spec.name in self._suspend_cancelled:
                    # Suspended with --now: the job runs again from scratch on resume.
                    self._suspend_cancelled.discard(spec.name)
                    job.state = JobState.PENDING
                    continue
                if error.reason == Reason.CANCELLED and self._halting():
                    self._end_job(job, JobState.CANCELLED, error)
                    return
                failures += 1
                if self._may_retry(spec.retry, error, retryable, failures):
                    delay = spec.retry.delay_before(failures)
                    with contextlib.suppress(TimeoutError):
                        await workflow.wait_condition(
                            self._halting, timeout=timedelta(seconds=delay)
                        )
                    continue
                self._end_job(job, JobState.FAILED, error)
                if not spec.continue_on_error and not self._halting():
                    self._failure = error.model_copy(update={"job": spec.name})
                    self._cancel_running()
                return
        finally:
            self._tasks.pop(spec.name, None)
            self._changed = True

    async def _attempt(self, spec: JobSpec, job: JobStatus) -> _Failure | None:
        """One attempt of a job; None when it completed, else its error and retryability."""
        action = self._status.action
        job.attempts += 1
        job.state = JobState.RUNNING
        job.error = None
        now = workflow.now()
        if job.started_at is None:
            job.started_at = now
            self._start_order.append(spec.name)
        entry = AttemptLog(attempt=job.attempts, started_at=now)
        job.log.append(entry)
        data, has_data = self._rollback_data.get(spec.name, (None, False))
        handle = workflow.start_activity(
            ACTIVITY_EXECUTE,
            JobInput(
                run_id=self._status.run_id,
                action=action,
                job=spec.name,
                attempt=job.attempts,
                call=spec.execute,
                pre=spec.pre,
                post=spec.post,
                args=self._args,
                deps={dep: self._jobs[dep].output for dep in spec.after},
                rollback_data=data,
                has_rollback_data=has_data,
            ),
            result_type=JobResult,
            task_queue=spec.task_queue,
            start_to_close_timeout=timedelta(seconds=spec.timeout),
            heartbeat_timeout=timedelta(seconds=spec.heartbeat_timeout),
            retry_policy=_NO_RETRY,
            activity_id=f"{spec.name}#{job.attempts}",
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"{action} › {spec.name}"
            + (f" (attempt {job.attempts})" if job.attempts > 1 else ""),
        )
        self._handles[spec.name] = handle
        try:
            result = await handle
        except ActivityError as err:
            failure = _classify(err)
            self._keep_rollback_data(spec.name, failure.report)
            cancelled = failure.error.reason == Reason.CANCELLED
            state = JobState.CANCELLED if cancelled else JobState.FAILED
            self._log_attempt(entry, failure.report, state, failure.error)
            job.error = failure.error
            return failure
        finally:
            self._handles.pop(spec.name, None)
        self._suspend_cancelled.discard(spec.name)
        self._keep_rollback_data(spec.name, result.report)
        self._log_attempt(entry, result.report, JobState.COMPLETED, None)
        job.output = result.output
        self._end_job(job, JobState.COMPLETED, None)
        return None

    @staticmethod
    def _may_retry(retry: RetrySpec, error: ErrorInfo, retryable: bool, failures: int) -> bool:
        return (
            retryable
            and failures < retry.max_attempts
            and error.reason not in (Reason.REJECTED, Reason.CANCELLED)
            and error.type not in retry.non_retryable_error_types
        )

    def _keep_rollback_data(self, name: str, report: AttemptReport) -> None:
        if report.has_rollback_data:
            self._rollback_data[name] = (report.rollback_data, True)

    @staticmethod
    def _log_attempt(
        entry: AttemptLog, report: AttemptReport, state: JobState, error: ErrorInfo | None
    ) -> None:
        entry.finished_at = workflow.now()
        entry.state = state
        entry.exit_code = report.exit_code
        entry.stdout_tail = report.stdout_tail
        entry.stderr_tail = report.stderr_tail
        entry.error = error

    def _end_job(self, job: JobStatus, state: JobState, error: ErrorInfo | None) -> None:
        job.state = state
        job.error = error
        job.finished_at = workflow.now()
        self._changed = True

    def _cancel_running(self) -> None:
        for handle in self._handles.values():
            handle.cancel()

    # ------------------------------------------------------------------------------- rollback

    async def _rollback_all(self) -> None:
        """Undo every started job that has a rollback, one at a time, newest first."""
        self._set_state(RunState.ROLLING_BACK)
        for name in reversed(self._start_order):
            spec = self._specs[name]
            if spec.rollback is None:
                continue
            if not await self._rollback_job(spec):
                self._rollback_failed = name
                return

    async def _rollback_job(self, spec: JobSpec) -> bool:
        job = self._jobs[spec.name]
        call = spec.rollback
        if call is None:
            return True
        rollback = job.rollback = RollbackStatus(state=JobState.RUNNING)
        job.state = JobState.ROLLING_BACK
        data, has_data = self._rollback_data.get(spec.name, (None, False))
        failures = 0
        infra_failures = 0
        while True:
            rollback.attempts += 1
            entry = AttemptLog(attempt=rollback.attempts, started_at=workflow.now())
            rollback.log.append(entry)
            try:
                await workflow.execute_activity(
                    ACTIVITY_ROLLBACK,
                    RollbackInput(
                        run_id=self._status.run_id,
                        action=self._status.action,
                        job=spec.name,
                        attempt=rollback.attempts,
                        call=call,
                        args=self._args,
                        output=job.output,
                        completed=job.output is not None,
                        error=job.error,
                        rollback_data=data,
                        has_rollback_data=has_data,
                    ),
                    task_queue=spec.task_queue,
                    start_to_close_timeout=timedelta(seconds=spec.timeout),
                    heartbeat_timeout=timedelta(seconds=spec.heartbeat_timeout),
                    retry_policy=_NO_RETRY,
                    activity_id=f"rollback:{spec.name}#{rollback.attempts}",
                    summary=f"{self._status.action} › rollback {spec.name}"
                    + (f" (attempt {rollback.attempts})" if rollback.attempts > 1 else ""),
                )
            except ActivityError as err:
                failure = _classify(err)
                self._log_attempt(entry, failure.report, JobState.FAILED, failure.error)
                rollback.error = failure.error
                if failure.infra and infra_failures < _INFRA_RETRIES:
                    infra_failures += 1
                    await workflow.sleep(_INFRA_WAIT)
                    continue
                failures += 1
                if self._may_retry(spec.rollback_retry, failure.error, failure.retryable, failures):
                    await workflow.sleep(spec.rollback_retry.delay_before(failures))
                    continue
                rollback.state = JobState.ROLLBACK_FAILED
                job.state = JobState.ROLLBACK_FAILED
                return False
            self._log_attempt(entry, AttemptReport(), JobState.COMPLETED, None)
            rollback.state = JobState.ROLLED_BACK
            rollback.error = None
            job.state = JobState.ROLLED_BACK
            return True

    # --------------------------------------------------------------------------------- finish

    async def _finish(self) -> RunStatus:
        error: ErrorInfo | None
        if self._rollback_failed is not None:
            state = RunState.ROLLBACK_FAILED
            failed = self._jobs[self._rollback_failed]
            cause = failed.rollback.error if failed.rollback else None
            error = ErrorInfo(
                reason=(self._failure or self._stop_error or ErrorInfo()).reason,
                type="RollbackFailed",
                message=f"rollback of job {self._rollback_failed!r} failed and needs a human: "
                + (cause.message if cause else "unknown error"),
                job=self._rollback_failed,
            )
        elif self._failure is not None:
            state, error = RunState.FAILED, self._failure
        elif self._stop is not None:
            state, error = RunState.STOPPED, self._stop_error
        else:
            state, error = RunState.COMPLETED, None
        self._status.error = error
        self._status.finished_at = workflow.now()
        self._set_state(state)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if state == RunState.COMPLETED:
            return self.status()
        message = error.message if error else state.value
        if state == RunState.STOPPED and self._cancel_requested:
            raise CancelledError(message)
        kinds = {RunState.FAILED: "RunFailed", RunState.STOPPED: "RunStopped"}
        # The final status rides in the failure so it can be read with no worker running.
        raise ApplicationError(
            message, self.status(), type=kinds.get(state, "RollbackFailed"), non_retryable=True
        )

    def _set_state(self, state: RunState) -> None:
        if state == self._status.state and state != RunState.PENDING:
            return
        self._status.state = state
        workflow.upsert_search_attributes([STATE_KEY.value_set(state.value)])
        progress = self._progress()
        workflow.set_current_details(
            f"**{state.value}** · {progress.done}/{progress.total} jobs done"
        )

    def _progress(self) -> Progress:
        done = sum(
            1
            for j in self._status.jobs
            if j.state in _DONE_STATES
            or (j.state == JobState.FAILED and self._specs[j.name].continue_on_error)
        )
        return Progress(done=done, total=len(self._status.jobs))

    def _timer(self, seconds: float, error: ErrorInfo, still: Callable[[], bool]) -> None:
        """After ``seconds``, stop the run with rollback if ``still()`` holds and it is running."""

        async def fire() -> None:
            await workflow.sleep(seconds)
            if still() and self._status.state not in TERMINAL_RUN_STATES:
                self._request_stop(StopCommand(rollback=True, reason=error.message), False, error)

        self._timers.add(asyncio.create_task(fire()))

    # ------------------------------------------------------------------------------- commands

    def _request_stop(
        self, cmd: StopCommand, via_cancel: bool, error: ErrorInfo | None = None
    ) -> CommandResult:
        self._cancel_requested = self._cancel_requested or via_cancel
        if self._halting():
            return CommandResult(state=self._status.state, message="the run is already stopping")
        self._stop = cmd
        self._stop_error = error or ErrorInfo(
            reason=Reason.CANCELLED, type="Stopped", message=cmd.reason or "stopped by request"
        )
        self._cancel_running()
        self._changed = True
        return CommandResult(
            state=self._status.state,
            message="stopping" + (" with rollback" if cmd.rollback else " without rollback"),
        )

    def _refuse_stop(self) -> str | None:
        if self._status.state in TERMINAL_RUN_STATES:
            return f"the run is {self._status.state.value}: there is nothing to stop"
        return None

    def _refuse_suspend(self, cmd: SuspendCommand) -> str | None:
        state = self._status.state
        if state in TERMINAL_RUN_STATES or self._halting():
            return f"the run is {state.value} and stopping: it cannot be suspended"
        if state == RunState.SUSPENDED and not (cmd.now and self._handles):
            return "the run is already SUSPENDED"
        return None

    def _refuse_resume(self) -> str | None:
        if self._status.state != RunState.SUSPENDED or self._halting():
            return f"the run is {self._status.state.value}: only a SUSPENDED run can be resumed"
        return None

    def _do_suspend(self, cmd: SuspendCommand) -> CommandResult:
        self._suspended = True
        if cmd.now:
            self._suspend_cancelled.update(self._handles)
            self._cancel_running()
        self._set_state(RunState.SUSPENDED)
        plan = self._plan
        if plan is not None and plan.max_suspended is not None:
            suspended_at = workflow.now()
            limit = plan.max_suspended
            self._timer(
                limit,
                ErrorInfo(
                    reason=Reason.TIMEOUT,
                    type="SuspendedTooLong",
                    message=f"the run stayed suspended longer than {limit:g}s",
                ),
                lambda: self._suspended and self._suspended_since == suspended_at,
            )
            self._suspended_since = suspended_at
        self._changed = True
        running = len(self._handles)
        note = f"; {running} running job(s) " + ("cancelled" if cmd.now else "finishing")
        return CommandResult(
            state=RunState.SUSPENDED, message="suspended" + (note if running else "")
        )

    def _do_resume(self) -> CommandResult:
        self._suspended = False
        self._set_state(RunState.RUNNING)
        self._changed = True
        return CommandResult(state=RunState.RUNNING, message="resumed")

    @workflow.update(name="stop")
    def stop(self, cmd: StopCommand) -> CommandResult:
        """Stop the run: cancel running jobs, then roll back unless ``rollback`` is false."""
        return self._request_stop(cmd, False)

    @stop.validator
    def _validate_stop(self, cmd: StopCommand) -> None:
        refusal = self._refuse_stop()
        if refusal:
            raise ApplicationError(refusal, type="CommandRefused")

    @workflow.update(name="suspend")
    def suspend(self, cmd: SuspendCommand) -> CommandResult:
        """Start no new jobs (``now``: also cancel running ones, which re-run on resume)."""
        return self._do_suspend(cmd)

    @suspend.validator
    def _validate_suspend(self, cmd: SuspendCommand) -> None:
        refusal = self._refuse_suspend(cmd)
        if refusal:
            raise ApplicationError(refusal, type="CommandRefused")

    @workflow.update(name="resume")
    def resume(self, cmd: dict[str, Any] | None = None) -> CommandResult:
        """Resume a suspended run."""
        return self._do_resume()

    @resume.validator
    def _validate_resume(self, cmd: dict[str, Any] | None = None) -> None:
        refusal = self._refuse_resume()
        if refusal:
            raise ApplicationError(refusal, type="CommandRefused")

    @workflow.signal(name="stop")
    def stop_signal(self, cmd: StopCommand | None = None) -> None:
        """``stop`` as a signal, for the Web UI and ``temporal workflow signal``."""
        refusal = self._refuse_stop()
        if refusal:
            workflow.logger.warning("stop signal ignored: %s", refusal)
            return
        self._request_stop(cmd or StopCommand(), False)

    @workflow.signal(name="suspend")
    def suspend_signal(self, cmd: SuspendCommand | None = None) -> None:
        """``suspend`` as a signal."""
        cmd = cmd or SuspendCommand()
        refusal = self._refuse_suspend(cmd)
        if refusal:
            workflow.logger.warning("suspend signal ignored: %s", refusal)
            return
        self._do_suspend(cmd)

    @workflow.signal(name="resume")
    def resume_signal(self, cmd: dict[str, Any] | None = None) -> None:
        """``resume`` as a signal."""
        refusal = self._refuse_resume()
        if refusal:
            workflow.logger.warning("resume signal ignored: %s", refusal)
            return
        self._do_resume()

    @workflow.query(name="status")
    def status(self) -> RunStatus:
        """The status JSON of the run; also answered on closed runs."""
        self._status.progress = self._progress()
        return self._status
