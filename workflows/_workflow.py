"""The action workflow: the deterministic interpreter of a :class:`~workflows.models.Plan`.

One dynamic workflow class, :class:`ActionWorkflow`, serves every action: the workflow type is
the action's name, and the run fixes its plan at start through the ``sternway.resolve`` local
activity, so a plan recorded in history never changes under a run in flight. A large ``each``
runs in child workflows of :class:`ChunkWorkflow`, which share the interpreter.

A plan is a tree of scopes: the run's jobs, and the jobs of each group (once per ``each`` item).
In a scope, jobs whose ``after`` jobs are done start in parallel; ``each`` starts its items in a
sliding window of ``concurrency``. Each attempt of a job is one activity execution: retries are
driven here so every attempt is logged and rollback data survives failed attempts. A job that
fails for good fails its scope: a group with attempts left undoes what it started and runs again,
otherwise the failure reaches the run. Halting (a failure, a stop, a run timeout): no new job
starts, running activities are cancelled and awaited, then every started job with a rollback is
rolled back, one at a time, newest start first, in a task no cancellation reaches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy, SearchAttributeKey
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
)

with workflow.unsafe.imports_passed_through():
    from sternway.workflows._commands import NoInput, ignored, refuse, signal_input, update_input
    from sternway.workflows._expr import ExpressionError, render, truthy
    from sternway.workflows._failures import (
        Failure,
        JobFailure,
        classify,
        encoded_size,
        error_of,
        text_refusal,
    )
    from sternway.workflows._kind_params import action_call
    from sternway.workflows._ledger import DONE_STATES, Ledger
    from sternway.workflows._protocol import (
        ACTIVITY_EXECUTE,
        ACTIVITY_RESOLVE,
        ACTIVITY_ROLLBACK,
        CHUNK_WORKFLOW,
        SEARCH_ATTRIBUTE_REQUESTOR,
        SEARCH_ATTRIBUTE_STATE,
        ErrorType,
        Handler,
    )
    from sternway.workflows._run_locks import RunLocks
    from sternway.workflows.models import (
        HISTORY_HALT_BYTES,
        HISTORY_HALT_EVENTS,
        MAX_ARGS_BYTES,
        MAX_CHILD_DEPTH,
        MAX_JOB_INPUT_BYTES,
        MAX_TASK_INPUT_BYTES,
        TERMINAL_RUN_STATES,
        ApprovalCommand,
        AttemptLog,
        AttemptReport,
        CallSpec,
        ChildDone,
        ChunkFinish,
        ChunkInput,
        ChunkResult,
        ChunkSummary,
        CommandResult,
        ErrorInfo,
        JobInput,
        JobResult,
        JobSpec,
        JobState,
        JobStatus,
        LockReply,
        ParentLink,
        Plan,
        Reason,
        ResolvedRun,
        ResolveInput,
        RetrySpec,
        RollbackInput,
        RollbackStatus,
        RunInput,
        RunOptions,
        RunState,
        RunStatus,
        StopCommand,
        SuspendCommand,
        item_keys,
        json_refusal,
        parse_duration,
        secret_values,
    )

__all__ = ["ActionWorkflow", "ChunkWorkflow"]

STATE_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_STATE)
REQUESTOR_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_REQUESTOR)

_NO_RETRY = RetryPolicy(maximum_attempts=1)
# Attempts lost to a dead or stopping worker are re-run on another one, this many times at most.
_INFRA_RETRIES = 20
_INFRA_WAIT = timedelta(seconds=1)
# Since this patch an attempt lost to a dead or stopping worker is delivered again as the same
# attempt (same number, same idempotency key); runs recorded before it replay as they ran, when
# such a re-run was a new attempt.
_REDELIVERY_PATCH = "redeliver-lost-attempts"
# Since this patch the chunk runs nothing rolled back are told to end all at once, not one after
# the other (a round trip each: 20 of them made a 10,000-item each 4 s slower); runs recorded
# before it replay as they ran.
_RELEASE_TOGETHER_PATCH = "release-chunks-together"
# Since this patch the chunk runs that fit the window are started together, in one workflow
# task, not one after the other (a round trip each, paid most by eaches of a few chunks); runs
# recorded before it replay as they ran.
_START_TOGETHER_PATCH = "start-chunks-together"
_TEMPORAL_CANCEL = "cancel requested through Temporal"
# An each over more than each.chunk_size items runs in child workflows of that many items, this
# many at a time, so no history nears Temporal's 51,200 events and no status the 2 MiB limit.
_FANOUT_PARALLEL = 4


class _Scope:
    """Jobs run together: the run's top level, or one attempt of a group (for one item)."""

    def __init__(
        self,
        prefix: str,
        specs: list[JobSpec],
        variables: dict[str, Any],
        parent: _Scope | None,
    ) -> None:
        self.prefix = prefix
        self.specs = specs
        self.variables = variables
        self.parent = parent
        self.failure: ErrorInfo | None = None

    def failed(self) -> bool:
        """Whether this scope or one around it has failed."""
        return self.failure is not None or (self.parent is not None and self.parent.failed())

    def chain(self) -> list[_Scope]:
        """This scope and those around it, outermost first."""
        return [*(self.parent.chain() if self.parent else []), self]


class _Instance:
    """One job instance (a job, or one ``each`` item of it) and where it ran."""

    def __init__(self, spec: JobSpec, scope: _Scope, variables: dict[str, Any]) -> None:
        self.spec = spec
        self.scope = scope
        self.variables = variables


class _Approval:
    """An approval job waiting for its decision."""

    def __init__(self, token: str, require_token: bool) -> None:
        self.token = token
        self.require_token = require_token
        self.decision: ApprovalCommand | None = None
        self.approved = False


async def _await_starts(
    starting: list[asyncio.Task[workflow.ChildWorkflowHandle[Any, ChunkResult]]],
    started: list[workflow.ChildWorkflowHandle[Any, ChunkResult]],
) -> None:
    """Add the chunk runs whose start commands went out together to ``started``, then raise
    the first start that failed: one failed start (its id taken) must not hide the chunk runs
    that did start, whose items the run has to be able to undo."""
    failed: Exception | None = None
    for task in starting:
        try:
            started.append(await task)
        except workflow.NondeterminismError:
            raise
        except Exception as err:
            failed = failed or err
    starting.clear()
    if failed is not None:
        raise failed


class _Interpreter:
    """The interpreter both workflows share: scopes, attempts, timers, approvals, rollback,
    commands and the status query. :class:`ActionWorkflow` runs an action's plan;
    :class:`ChunkWorkflow` runs one slice of a large ``each`` for its parent run."""

    def __init__(self) -> None:
        info = workflow.info()
        self._ledger = Ledger(
            RunStatus(
                run_id=info.workflow_id, action=info.workflow_type, created_at=info.start_time
            ),
            clock=workflow.now,
            changed=self._changed,
            continues_on_error=lambda name: (
                name in self._instances and self._instances[name].spec.continue_on_error
            ),
        )
        self._plan: Plan | None = None
        self._generation = 0  # of the resolver that recorded the plan; known once it is
        self._args: dict[str, Any] = {}
        self._requestor: str | None = None
        self._instances: dict[str, _Instance] = {}
        self._handles: dict[str, workflow.ActivityHandle[JobResult]] = {}
        self._approvals: dict[str, _Approval] = {}
        self._rollback_data: dict[str, tuple[Any, bool]] = {}
        self._suspended = False
        self._suspended_since: datetime | None = None
        self._suspend_cancelled: set[str] = set()
        self._stop: StopCommand | None = None
        self._stop_error: ErrorInfo | None = None
        self._cancel_requested = False
        self._failure: ErrorInfo | None = None
        self._rollback_failed: str | None = None
        self._tick = 0
        self._timers: set[asyncio.Task[None]] = set()
        # Fan-out: the chunk this run is (if it is one), and the chunks this run started.
        self._chunk: ChunkInput | None = None
        self._chunk_finish: ChunkFinish | None = None
        self._chunks: dict[str, list[workflow.ChildWorkflowHandle[Any, ChunkResult]]] = {}
        self._chunk_owner: dict[str, tuple[_Scope, JobSpec]] = {}
        self._chunk_done: dict[str, ChunkSummary] = {}
        self._chunk_results: dict[str, ChunkResult] = {}
        self._signals: set[asyncio.Task[None]] = set()
        # The run's top scope, which a halt for the history limit fails whatever the job's scope.
        self._root: _Scope | None = None
        # Bytes of job input scheduled in the current workflow task (keyed by history length),
        # so one task's commands stay within a gRPC message.
        self._task_key = -1
        self._task_bytes = 0
        # The run's keys (none for a chunk: it runs under its parent's).
        self._locks: RunLocks | None = None
        # Actions this run calls (``run: action``), by job: their handles, the word of those
        # that completed, the end of those that did not, and which were told to finish.
        self._children: dict[str, workflow.ChildWorkflowHandle[Any, Any]] = {}
        self._child_done: dict[str, ChildDone] = {}
        self._child_ended: dict[str, ErrorInfo | None] = {}
        self._child_told: set[str] = set()
        # The run that called this one, if any, and the top of the family (for its locks).
        self._parent: ParentLink | None = None
        self._owner = info.workflow_id

    # ----------------------------------------------------------------------------------- run

    def _start(self, resolved: ResolvedRun, inp: RunInput) -> _Scope:
        plan = resolved.plan
        self._plan = plan
        self._generation = resolved.generation
        self._args = resolved.args
        shown = resolved.shown_args()
        self._ledger.secrets = secret_values(resolved.args, shown)
        self._ledger.status.args = shown
        root = _Scope("", plan.jobs, {}, None)
        self._ledger.add_entries("", plan.jobs)
        self._ledger.reuse(inp.options.reuse_outputs)
        if "args" not in workflow.memo():
            workflow.upsert_memo({"args": shown, "requestor": inp.requestor})
        return root

    def _set_running(self, inp: RunInput) -> None:
        """The run's jobs may start: it holds its locks, if it has any."""
        plan = self._plan
        if plan is None:
            return
        self._ledger.status.started_at = workflow.now()
        self._set_state(RunState.SUSPENDED if self._suspended else RunState.RUNNING)
        timeout = inp.options.timeout if inp.options.timeout is not None else plan.timeout
        if timeout is not None:
            self._timer(
                timeout,
                ErrorInfo(
                    reason=Reason.TIMEOUT,
                    type=ErrorType.RUN_TIMEOUT,
                    message=f"the run took longer than its timeout of {timeout:g}s",
                ),
                lambda: True,
            )

    async def _reject(self, kind: str, message: str) -> dict[str, Any]:
        """End a run that cannot start (bad input or args): nothing ran, nothing to undo."""
        self._failure = ErrorInfo(reason=Reason.REJECTED, type=kind, message=message)
        return await self._finish()

    def _halting(self) -> bool:
        return self._failure is not None or self._stop is not None

    async def _halt_internal(self, err: Exception) -> None:
        """The run met an error outside any job: it fails with it, and what runs is awaited so
        that the rollback that follows undoes finished work only."""
        error = error_of(err)
        workflow.logger.error("run %s halts: %s", self._ledger.status.run_id, error.message)
        if self._root is not None:
            self._fail(self._root, error)
        self._failure = self._failure or error
        self._cancel_running()
        await self._wait(lambda: not self._handles)

    def _history_error(self) -> ErrorInfo | None:
        """The error a run halts with when its history nears Temporal's limits, or None.

        Temporal terminates a run whose history exceeds 51,200 events or 50 MB, with no
        rollback. A run halts at 80% of either, which leaves room for its rollbacks.
        (``is_continue_as_new_suggested`` comes far earlier, at a few thousand events, and
        is not a reason to halt.)
        """
        info = workflow.info()
        events, size = info.get_current_history_length(), info.get_current_history_size()
        if events < HISTORY_HALT_EVENTS and size < HISTORY_HALT_BYTES:
            return None
        return ErrorInfo(
            type=ErrorType.HISTORY_LIMIT,
            message=f"the run's history reached {events} events and {size} bytes, near "
            "Temporal's limits of 51,200 events and 50 MB: the run halts and rolls back",
        )

    def _history_halt(self) -> bool:
        """Whether the run must halt for its history now (it is not halting already)."""
        return not self._halting() and self._history_error() is not None

    async def _task_room(self, size: int) -> None:
        """Wait, if need be, for a workflow task whose commands have room for ``size`` more
        bytes of input: several large inputs scheduled at once would exceed a gRPC message."""
        while True:
            task = workflow.info().get_current_history_length()
            if task != self._task_key:
                self._task_key, self._task_bytes = task, 0
            if not self._task_bytes or self._task_bytes + size <= MAX_TASK_INPUT_BYTES:
                self._task_bytes += size
                return
            await workflow.sleep(timedelta(milliseconds=1))

    def _scope_halting(self, scope: _Scope) -> bool:
        return self._stop is not None or scope.failed()

    def _changed(self) -> None:
        self._tick += 1

    async def _wait(self, condition: Callable[[], bool]) -> None:
        """Wait for ``condition``; a Temporal cancel becomes a stop with rollback."""
        while True:
            try:
                await workflow.wait_condition(condition)
                return
            except asyncio.CancelledError:
                self._request_stop(StopCommand(reason=_TEMPORAL_CANCEL), True)

    async def _pause(self, seconds: float, scope: _Scope) -> bool:
        """Wait ``seconds`` unless ``scope`` halts first; True if the time ran out."""
        try:
            await workflow.wait_condition(
                lambda: self._scope_halting(scope), timeout=timedelta(seconds=seconds)
            )
        except TimeoutError:
            return True
        return False

    async def _shielded(self, task: asyncio.Task[None]) -> None:
        """Await ``task`` so that no cancellation of the run reaches it."""
        while True:
            try:
                await asyncio.shield(task)
                return
            except asyncio.CancelledError:
                self._request_stop(StopCommand(reason=_TEMPORAL_CANCEL), True)

    # --------------------------------------------------------------------------------- scopes

    def _context(self, scope: _Scope, variables: dict[str, Any]) -> dict[str, Any]:
        """What expressions see: args, run, jobs in scope (innermost wins) and ``each`` names."""
        jobs: dict[str, Any] = dict(self._chunk.jobs) if self._chunk is not None else {}
        for outer in scope.chain():
            for spec in outer.specs:
                entry = self._ledger.jobs.get(outer.prefix + spec.name)
                if entry is not None:
                    jobs[spec.name] = {"output": entry.output, "state": entry.state.value}
        run = {
            "id": self._ledger.status.run_id,
            "action": self._ledger.status.action,
            "requestor": self._requestor,
        }
        return {**variables, "args": self._args, "run": run, "jobs": jobs}

    async def _run_scope(self, scope: _Scope) -> None:
        """Start the scope's jobs as their dependencies finish, until all are done or it halts."""
        specs = {spec.name: spec for spec in scope.specs}
        tasks: dict[str, asyncio.Task[None]] = {}
        while True:
            if self._history_halt() and self._root is not None:
                self._fail(self._root, self._history_error() or ErrorInfo())
            if not self._scope_halting(scope) and not self._suspended:
                for spec in scope.specs:
                    name = scope.prefix + spec.name
                    if (
                        spec.name not in tasks
                        and self._ledger.jobs[name].state == JobState.PENDING
                        and self._ledger.jobs[name].started_at is None
                        and all(
                            # A chunk's each job runs after jobs of its parent run: done there.
                            d not in specs
                            or self._ledger.done(scope.prefix + d, specs[d].continue_on_error)
                            for d in spec.after
                        )
                    ):
                        tasks[spec.name] = asyncio.create_task(self._run_node(scope, spec))
            for key in [key for key, task in tasks.items() if task.done()]:
                tasks.pop(key).result()
            # A pending job always has a chain of pending dependencies ending in a ready job, so
            # with nothing running the scope is halting, suspended or done.
            if not tasks and (
                self._scope_halting(scope)
                or all(
                    self._ledger.done(scope.prefix + s.name, s.continue_on_error)
                    for s in scope.specs
                )
            ):
                return
            seen = self._tick
            await self._wait(
                lambda seen=seen: (
                    self._tick != seen  # type: ignore[misc]
                    or any(task.done() for task in tasks.values())
                    or self._history_halt()
                )
            )

    def _fail(self, scope: _Scope, error: ErrorInfo) -> None:
        """A job failed for good: its scope fails, and its running jobs are cancelled."""
        if scope.failure is not None:
            return
        scope.failure = error
        if scope.parent is None:
            self._failure = error
        self._cancel_running(scope.prefix)
        self._changed()

    async def _run_node(self, scope: _Scope, spec: JobSpec) -> None:
        name = scope.prefix + spec.name

        async def node() -> None:
            if spec.if_ is not None:
                condition = render(spec.if_, self._context(scope, scope.variables))
                if not truthy(condition):
                    self._ledger.end_job(self._ledger.jobs[name], JobState.SKIPPED, None)
                    self._ledger.jobs[name].detail = f"skipped: {spec.if_.strip()} is false"
                    return
            if spec.each is not None:
                await self._run_each(scope, spec, name)
            elif spec.jobs is not None:
                await self._run_group(scope, spec, name, scope.variables)
            else:
                await self._run_job(scope, spec, name, scope.variables)

        await self._guard(scope, spec, name, node())

    async def _guard(
        self, scope: _Scope, spec: JobSpec, name: str, work: Coroutine[Any, Any, None]
    ) -> None:
        """Run a job's ``work``; whatever it raises fails the job (never the workflow task)."""
        try:
            await work
        except workflow.NondeterminismError:
            raise  # a changed workflow, not an input: Temporal retries the task, as it should
        except Exception as err:
            error = error_of(err).model_copy(update={"job": name})
            self._ledger.end_job(self._ledger.entry(name), JobState.FAILED, error)
            if error.type == ErrorType.HISTORY_LIMIT and self._root is not None:
                if self._failure is not None and self._failure.type == error.type:
                    # The run halted for its history as this job met it: the job names the cause.
                    self._failure = self._root.failure = self._failure.model_copy(
                        update={"job": self._failure.job or name}
                    )
                self._fail(self._root, error)  # no group retry, no continue_on_error: halt
            elif not spec.continue_on_error:
                self._fail(scope, error)
        finally:
            self._changed()

    async def _run_each(self, scope: _Scope, spec: JobSpec, name: str) -> None:
        """Run a job or group once per item, at most ``concurrency`` at a time."""
        each = spec.each
        if each is None:
            return
        entry = self._ledger.jobs[name]
        items = render(each.items, self._context(scope, scope.variables))
        if not isinstance(items, list):
            raise ExpressionError(f"each.items of {name!r} is not a list: {items!r}")
        entry.state, entry.started_at = JobState.RUNNING, workflow.now()
        keys = item_keys(items, self._ledger.secrets)
        if self._chunk is not None and name == self._chunk.prefix + self._chunk.job.name:
            keys = self._chunk.keys
        elif len(items) > each.chunk_size:
            await self._run_each_in_chunks(scope, spec, name, items, keys)
            return
        names = [f"{name}[{key}]" for key in keys]
        running: set[asyncio.Task[None]] = set()
        counted = [0]

        def note(_: object = None) -> None:
            entry.detail = f"{len(running)} running, {counted[0]}/{len(names)} started"

        for started, (item, instance) in enumerate(zip(items, names, strict=True), start=1):
            await workflow.wait_condition(
                lambda: (
                    (len(running) < each.concurrency and not self._suspended)
                    or self._scope_halting(scope)
                )
            )
            if self._scope_halting(scope):
                break
            variables = {**scope.variables, each.as_: item}
            self._ledger.entry(instance)
            work = (
                self._run_group(scope, spec, instance, variables)
                if spec.jobs is not None
                else self._run_job(scope, spec, instance, variables)
            )
            task = asyncio.create_task(self._guard(scope, spec, instance, work))
            running.add(task)
            task.add_done_callback(running.discard)
            # Kept true as items end too: a suspended run shows what still runs, not 2 running.
            counted[0] = started
            task.add_done_callback(note)
            note()
        await workflow.wait_condition(lambda: not running)
        states = [self._ledger.jobs[n].state for n in names if n in self._ledger.jobs]
        entry.output = [self._ledger.jobs[n].output for n in names if n in self._ledger.jobs]
        entry.detail = f"{states.count(JobState.COMPLETED)}/{len(names)} items completed"
        if len(states) == len(names) and all(s in DONE_STATES for s in states):
            self._ledger.end_job(entry, JobState.COMPLETED, None)
        elif self._scope_halting(scope) and scope.failure is None:
            self._ledger.end_job(entry, JobState.CANCELLED, None)
        else:
            # Items after a halt never started, and have no entry.
            failed = next(
                (j.error for n in names if (j := self._ledger.jobs.get(n)) and j.error), None
            )
            self._ledger.end_job(entry, JobState.FAILED, failed)

    async def _run_each_in_chunks(
        self, scope: _Scope, spec: JobSpec, name: str, items: list[Any], keys: list[str]
    ) -> None:
        """Run a large ``each`` as child runs of ``chunk_size`` items, a few at a time.

        The window of ``concurrency`` is shared by the chunks running at once. Chunks stay open
        after their items are done so that a later failure can still undo every item: the
        parent tells each one, newest first, to roll back or to end.
        """
        each = spec.each
        if each is None:
            return
        entry = self._ledger.jobs[name]
        size = each.chunk_size
        chunks = -(-len(items) // size)
        parallel = min(_FANOUT_PARALLEL, chunks)
        per_chunk = max(1, each.concurrency // parallel)
        self._ledger.start_order.append(name)
        self._instances[name] = _Instance(spec, scope, scope.variables)
        started = self._chunks.setdefault(name, [])
        jobs = self._context(scope, scope.variables)["jobs"]
        together = workflow.patched(_START_TOGETHER_PATCH)  # asked by chunked eaches only
        starting: list[asyncio.Task[workflow.ChildWorkflowHandle[Any, ChunkResult]]] = []

        def room() -> bool:
            running = sum(1 for h in started if h.id not in self._chunk_done) + len(starting)
            return running < parallel and not self._suspended

        async def confirm_starts() -> None:
            # Said once the server has started them: a start can fail (its id taken).
            try:
                await _await_starts(starting, started)
            finally:
                entry.detail = f"{len(started)} of {chunks} chunk runs started, {len(items)} items"

        for index, first in enumerate(range(0, len(items), size)):
            if not (together and room() and not self._scope_halting(scope)):
                await confirm_starts()
                await workflow.wait_condition(lambda: room() or self._scope_halting(scope))
            if self._scope_halting(scope):
                break
            part = slice(first, first + size)
            chunk_spec = spec.model_copy(
                update={
                    "each": each.model_copy(update={"items": items[part], "concurrency": per_chunk})
                }
            )
            chunk_id = f"{self._ledger.status.run_id}/{name}/{index}"
            chunk_input = ChunkInput(
                parent_run_id=self._ledger.status.run_id,
                action=self._ledger.status.action,
                prefix=scope.prefix,
                job=chunk_spec,
                keys=keys[part],
                args=self._args,
                masked_args=self._ledger.status.args,
                requestor=self._requestor,
                variables=scope.variables,
                jobs=jobs,
            )
            await self._task_room(
                encoded_size(chunk_input, f"the input of {name}'s chunk", MAX_JOB_INPUT_BYTES)
            )
            self._chunk_owner[chunk_id] = (scope, spec)
            start = workflow.start_child_workflow(
                CHUNK_WORKFLOW,
                chunk_input,
                id=chunk_id,
                result_type=ChunkResult,
                static_summary=f"**{self._ledger.status.action}** › {name} items {first + 1}-"
                f"{min(first + size, len(items))} of {len(items)}",
            )
            if together:
                starting.append(asyncio.ensure_future(start))
            else:  # as runs recorded before the patch did: awaited in place
                started.append(await start)
                await confirm_starts()
        await confirm_starts()
        await workflow.wait_condition(lambda: all(h.id in self._chunk_done for h in started))
        summaries = [self._chunk_done[h.id] for h in started]
        completed = sum(s.completed for s in summaries)
        entry.detail = f"{completed}/{len(items)} items completed in {len(started)} chunk runs"
        entry.output = {
            "items": len(items),
            "completed": completed,
            "chunks": [h.id for h in started],
        }
        error = next((s.error for s in summaries if s.error is not None), None)
        if completed == len(items):
            self._ledger.end_job(entry, JobState.COMPLETED, None)
        elif error is None:
            self._ledger.end_job(entry, JobState.CANCELLED, None)
        else:
            self._ledger.end_job(entry, JobState.FAILED, error)

    async def _wait_for_chunks(self) -> None:
        """Every chunk started has reported that its items are done (or halted)."""
        await self._wait(
            lambda: all(h.id in self._chunk_done for hs in self._chunks.values() for h in hs)
        )

    async def _finish_chunks(
        self, handles: list[workflow.ChildWorkflowHandle[Any, ChunkResult]], rollback: bool
    ) -> ChunkResult | None:
        """Tell chunks, newest first, to undo their items or to end; the result of the chunk
        with an item that could not be undone, if any (then the older chunks are left as they
        are)."""
        for handle in reversed(handles):
            if handle.id in self._chunk_results:
                continue
            result = await self._finish_chunk(handle, rollback)
            if result.rollback_failed is not None:
                return result
        return None

    async def _finish_chunk(
        self, handle: workflow.ChildWorkflowHandle[Any, ChunkResult], rollback: bool
    ) -> ChunkResult:
        """Tell one chunk to undo its items or to end, and wait for its end."""
        try:
            await handle.signal(Handler.FINISH, ChunkFinish(rollback=rollback))
            result: ChunkResult = await handle
        except workflow.NondeterminismError:
            raise
        except Exception as err:
            # Ended by someone else (terminated in the Web UI): its items were not undone, which
            # only matters when they had to be.
            workflow.logger.warning("chunk run %s ended before it was told: %s", handle.id, err)
            result = ChunkResult()
            if rollback:
                scope, spec = self._chunk_owner[handle.id]
                result.rollback_failed = scope.prefix + spec.name
                result.rollback_error = ErrorInfo(
                    type=ErrorType.CHILD_FAILED,
                    message=f"chunk run {handle.id} ended before it could undo its items: {err}",
                )
        self._chunk_results[handle.id] = result
        return result

    async def _release_chunks(self) -> None:
        """End the chunks nothing rolled back, all at once: nothing is undone, so no order."""
        left = [h for hs in self._chunks.values() for h in hs if h.id not in self._chunk_results]
        # Asked only when there are chunks, so that no other run records the patch's marker.
        if left and workflow.patched(_RELEASE_TOGETHER_PATCH):
            await asyncio.gather(*(self._finish_chunk(h, rollback=False) for h in left))
            return
        for handles in self._chunks.values():
            await self._finish_chunks(handles, rollback=False)

    def _tell_chunks(self, prefix: str, command: str, payload: Any) -> None:
        """Pass a command on to the chunks under ``prefix`` whose items are still running."""
        for name, handles in self._chunks.items():
            if not name.startswith(prefix):
                continue
            for handle in handles:
                if handle.id not in self._chunk_done:
                    task = asyncio.create_task(handle.signal(command, payload))
                    self._signals.add(task)
                    task.add_done_callback(self._signals.discard)

    # ------------------------------------------------------------------------------ child runs

    async def _call_action(
        self, scope: _Scope, spec: JobSpec, name: str, variables: dict[str, Any]
    ) -> None:
        """Run another action as a child run (id ``<run>/<job>``) and wait for its jobs.

        A child that completes reports its outputs and waits for this run's last word: undo
        its jobs (when this run rolls back, at the job's place) or end. A child that does not
        complete has undone its own jobs, and the job fails with its error.
        """
        job = self._ledger.jobs[name]
        call = spec.execute or CallSpec(kind="action")
        action, args = action_call(render(call.with_, self._context(scope, variables)))
        depth = (self._parent.depth if self._parent else 0) + 1
        if depth > MAX_CHILD_DEPTH:
            raise JobFailure(
                ErrorInfo(
                    reason=Reason.REJECTED,
                    type=ErrorType.JOB_REJECTED,
                    message=f"actions call actions more than {MAX_CHILD_DEPTH} deep",
                )
            )
        if self._scope_halting(scope):
            return
        child_input = RunInput(
            args=args,
            requestor=self._requestor,
            options=RunOptions(
                parent=ParentLink(
                    run_id=self._ledger.status.run_id, job=name, owner=self._owner, depth=depth
                )
            ),
        )
        await self._task_room(
            encoded_size(child_input, f"the args payload of {name!r}", MAX_ARGS_BYTES)
        )
        self._ledger.begin(name, job)
        child_id = f"{self._ledger.status.run_id}/{name}"
        handle = await workflow.start_child_workflow(
            action,
            child_input,
            id=child_id,
            static_summary=f"**{action}** run by {self._ledger.status.action} › {name}",
        )
        self._children[name] = handle
        job.detail = f"child run {child_id}"
        watcher = asyncio.create_task(self._watch_child(name, handle))
        self._signals.add(watcher)
        watcher.add_done_callback(self._signals.discard)
        await self._wait(lambda: name in self._child_done or name in self._child_ended)
        done = self._child_done.get(name)
        if done is not None:
            job.output = done.outputs
            self._ledger.end_job(job, JobState.COMPLETED, None)
            return
        error = self._child_ended.get(name) or ErrorInfo(message="the child run ended")
        if error.type == ErrorType.ROLLBACK_FAILED:
            job.rollback = RollbackStatus(state=JobState.ROLLBACK_FAILED, error=error)
        else:
            # It undid its own jobs: nothing is left for this run to undo at its place.
            self._ledger.start_order.remove(name)
            job.rollback = RollbackStatus(state=JobState.ROLLED_BACK)
        halted = self._scope_halting(scope) and error.reason == Reason.CANCELLED
        self._ledger.end_job(job, JobState.CANCELLED if halted else JobState.FAILED, error)

    async def _watch_child(self, name: str, handle: workflow.ChildWorkflowHandle[Any, Any]) -> None:
        """Record how a child run ended: None when it completed, else its error."""
        try:
            await handle
            self._child_ended[name] = None
        except ChildWorkflowError as err:
            self._child_ended[name] = _child_error(handle.id, err)
        self._changed()

    async def _undo_child(self, name: str) -> bool:
        """Have a completed child run undo its jobs (newest first); whether it could."""
        job = self._ledger.jobs[name]
        if name not in self._child_done:
            return job.rollback is None or job.rollback.state != JobState.ROLLBACK_FAILED
        job.state = JobState.ROLLING_BACK
        job.rollback = RollbackStatus(state=JobState.RUNNING)
        error = await self._tell_child_to_finish(name, rollback=True)
        broken = error is not None and error.type == ErrorType.ROLLBACK_FAILED
        job.rollback = RollbackStatus(
            state=JobState.ROLLBACK_FAILED if broken else JobState.ROLLED_BACK,
            error=error if broken else None,
        )
        job.state = JobState.ROLLBACK_FAILED if broken else JobState.ROLLED_BACK
        return not broken

    async def _tell_child_to_finish(self, name: str, rollback: bool) -> ErrorInfo | None:
        """Send a completed child its last word and wait for it to end; its error, if any."""
        if name in self._child_told:
            return self._child_ended.get(name)
        self._child_told.add(name)
        handle = self._children[name]
        try:
            await handle.signal(Handler.FINISH, ChunkFinish(rollback=rollback))
        except workflow.NondeterminismError:
            raise
        except Exception as err:
            workflow.logger.warning("child run %s: cannot be told to finish: %s", handle.id, err)
        await self._wait(lambda: name in self._child_ended)
        return self._child_ended.get(name)

    async def _release_children(self) -> None:
        """End the completed child runs nothing rolled back."""
        for name in list(self._child_done):
            await self._tell_child_to_finish(name, rollback=False)

    def _tell_children(self, prefix: str, command: str, payload: Any) -> None:
        """Pass a command on to the child runs under ``prefix`` that still run their jobs."""
        for name, handle in self._children.items():
            if name.startswith(prefix) and name not in self._child_done:
                if name in self._child_ended:
                    continue
                task = asyncio.create_task(handle.signal(command, payload))
                self._signals.add(task)
                task.add_done_callback(self._signals.discard)

    @workflow.signal(name=Handler.CHILD_DONE)
    def child_done_signal(self, *args: Any) -> None:
        """A child run's jobs completed: its outputs are the job's output."""
        done = signal_input(Handler.CHILD_DONE, ChildDone, args)
        if done is not None and done.job in self._children:
            self._child_done[done.job] = done
            self._changed()

    async def _run_group(
        self, scope: _Scope, spec: JobSpec, name: str, variables: dict[str, Any]
    ) -> None:
        """Run a group; when one of its jobs fails for good, undo it and run it again."""
        entry = self._ledger.entry(name)
        entry.state, entry.started_at = JobState.RUNNING, workflow.now()
        attempts = spec.group_retry.attempts
        for attempt in range(1, attempts + 1):
            entry.attempts = attempt
            child = _Scope(f"{name}.", spec.jobs or [], variables, scope)
            self._ledger.add_entries(child.prefix, child.specs)
            await self._run_scope(child)
            if child.failure is None and not self._scope_halting(scope):
                entry.output = {
                    s.name: self._ledger.jobs[child.prefix + s.name].output for s in child.specs
                }
                self._ledger.end_job(entry, JobState.COMPLETED, None)
                return
            if self._scope_halting(scope) or child.failure is None:
                self._ledger.end_job(entry, JobState.CANCELLED, child.failure)
                return
            if attempt == attempts:
                break
            entry.detail = f"attempt {attempt} failed: {child.failure.message}; rolling back"
            if not await self._rollback_started(child.prefix):
                self._ledger.end_job(entry, JobState.ROLLBACK_FAILED, child.failure)
                self._fail(scope, child.failure.model_copy(update={"job": name}))
                return
            if not await self._pause(spec.group_retry.wait, scope):
                self._ledger.end_job(entry, JobState.CANCELLED, child.failure)
                return
            for sub in child.specs:
                self._reset(child.prefix + sub.name)
        failure = child.failure or ErrorInfo()
        self._ledger.end_job(entry, JobState.FAILED, failure)
        if not spec.continue_on_error:
            self._fail(scope, failure)

    def _reset(self, prefix: str) -> None:
        """Make a group's jobs pending again for its next attempt.

        Their logs and attempt counts go on, so every attempt keeps its own idempotency key.
        """
        for name in self._ledger.reset(prefix):
            self._rollback_data.pop(name, None)

    # ----------------------------------------------------------------------------------- jobs

    async def _run_job(
        self, scope: _Scope, spec: JobSpec, name: str, variables: dict[str, Any]
    ) -> None:
        job = self._ledger.entry(name)
        self._instances[name] = _Instance(spec, scope, variables)
        call = spec.execute
        if call is None:
            return
        try:
            if call.kind == "sleep":
                await self._sleep(scope, spec, name, variables)
            elif call.kind == "approval":
                await self._approval(scope, spec, name, variables)
            elif call.kind == "action":
                await self._call_action(scope, spec, name, variables)
            else:
                await self._attempts(scope, spec, name, variables, call)
        finally:
            self._changed()
        if job.state == JobState.FAILED and not spec.continue_on_error:
            self._fail(scope, (job.error or ErrorInfo()).model_copy(update={"job": name}))

    async def _attempts(
        self,
        scope: _Scope,
        spec: JobSpec,
        name: str,
        variables: dict[str, Any],
        call: CallSpec,
    ) -> None:
        """Run attempts of an activity job until it completes, fails for good or halts."""
        job = self._ledger.jobs[name]
        failures = infra_failures = 0
        redeliver = False
        while True:
            if self._suspended and not self._scope_halting(scope):
                await workflow.wait_condition(
                    lambda: not self._suspended or self._scope_halting(scope)
                )
            full = self._history_error()
            if full is not None and (self._failure is None or self._failure.type == full.type):
                # Another attempt could take the run past Temporal's limit, where the server
                # would end it with nothing undone: the job fails, and the run rolls back.
                raise JobFailure(full)
            if self._scope_halting(scope):
                if job.attempts:
                    self._ledger.end_job(job, JobState.CANCELLED, job.error)
                return
            rendered = call.model_copy(
                update={"with_": render(call.with_, self._context(scope, variables))}
            )
            outcome = await self._attempt(scope, spec, name, job, rendered, redeliver)
            if outcome is None:
                return
            redeliver = False
            error = outcome.error
            if outcome.infra and infra_failures < _INFRA_RETRIES and not self._halting():
                infra_failures += 1
                # Not the job's doing: the same attempt is delivered again, under the same
                # idempotency key, so the job can tell that it may have done its work already.
                redeliver = workflow.patched(_REDELIVERY_PATCH)
                await workflow.sleep(_INFRA_WAIT)
                continue
            if error.reason == Reason.CANCELLED and name in self._suspend_cancelled:
                # Suspended with --now: the job runs again from scratch on resume.
                self._suspend_cancelled.discard(name)
                job.state = JobState.PENDING
                continue
            if error.reason == Reason.CANCELLED and self._scope_halting(scope):
                self._ledger.end_job(job, JobState.CANCELLED, error)
                return
            failures += 1
            if self._may_retry(spec.retry, error, outcome.retryable, failures):
                await self._pause(spec.retry.delay_before(failures), scope)
                continue
            self._ledger.end_job(job, JobState.FAILED, error)
            return

    async def _attempt(
        self,
        scope: _Scope,
        spec: JobSpec,
        name: str,
        job: JobStatus,
        call: CallSpec,
        redelivery: bool = False,
    ) -> Failure | None:
        """One attempt (or a delivery again of it) of a job; None when it completed, else how it
        failed."""
        action = self._ledger.status.action
        data, has_data = self._rollback_data.get(name, (None, False))
        inp = JobInput(
            run_id=self._ledger.status.run_id,
            action=action,
            job=name,
            attempt=job.attempts if redelivery else job.attempts + 1,
            call=call,
            pre=spec.pre,
            post=spec.post,
            args=self._job_args(call),
            deps={dep: self._output(scope, dep) for dep in spec.after},
            rollback_data=data,
            has_rollback_data=has_data,
            secrets=self._ledger.secrets,
        )
        # Before the attempt starts: a job whose input cannot be sent has not started.
        await self._task_room(encoded_size(inp, f"the input of job {name!r}", MAX_JOB_INPUT_BYTES))
        if self._scope_halting(scope):
            error = ErrorInfo(
                reason=Reason.CANCELLED, type=ErrorType.CANCELLED, message="cancelled"
            )
            return Failure(error, AttemptReport(reason=Reason.CANCELLED), False)
        entry = self._ledger.begin(name, job, redelivery)
        delivery = sum(1 for e in job.log if e.attempt == job.attempts)
        handle = workflow.start_activity(
            ACTIVITY_EXECUTE,
            inp,
            result_type=JobResult,
            task_queue=spec.task_queue,
            start_to_close_timeout=timedelta(seconds=spec.timeout),
            heartbeat_timeout=timedelta(seconds=spec.heartbeat_timeout),
            retry_policy=_NO_RETRY,
            activity_id=f"{name}#{_numbered(job.attempts, delivery)}",
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"{action} › {name}{_note(job.attempts, delivery)}",
        )
        self._handles[name] = handle
        try:
            result = await handle
        except ActivityError as err:
            failure = classify(err)
            self._keep_rollback_data(name, failure.report)
            cancelled = failure.error.reason == Reason.CANCELLED
            state = JobState.CANCELLED if cancelled else JobState.FAILED
            self._ledger.log_attempt(entry, failure.report, state, failure.error)
            job.error = failure.error
            return failure
        finally:
            self._handles.pop(name, None)
        self._suspend_cancelled.discard(name)
        self._keep_rollback_data(name, result.report)
        self._ledger.log_attempt(entry, result.report, JobState.COMPLETED, None)
        job.output = result.output
        self._ledger.end_job(job, JobState.COMPLETED, None)
        return None

    def _output(self, scope: _Scope, dep: str) -> Any:
        """The output of job ``dep`` of ``scope`` (in a chunk: of the parent run's job)."""
        job = self._ledger.jobs.get(scope.prefix + dep)
        if job is not None:
            return job.output
        known = self._chunk.jobs.get(dep, {}) if self._chunk is not None else {}
        return known.get("output")

    def _job_args(self, call: CallSpec) -> dict[str, Any]:
        """Only Python functions read the run's args; built-in kinds get theirs through ``with``,
        which keeps a large args object out of every other activity's input in history."""
        return self._args if call.kind == "python" else {}

    async def _sleep(
        self, scope: _Scope, spec: JobSpec, name: str, variables: dict[str, Any]
    ) -> None:
        """The ``sleep`` kind: a durable timer, cut short by a halt."""
        job = self._ledger.jobs[name]
        params = render((spec.execute or CallSpec()).with_, self._context(scope, variables))
        try:
            seconds = parse_duration(params.get("duration", 0))
        except ValueError as err:
            raise ExpressionError(f"sleep of {name!r}: {err}") from None
        entry = self._ledger.begin(name, job)
        job.detail = f"sleeping {seconds:g}s"
        if await self._pause(seconds, scope):
            job.output = {"slept": seconds}
            self._ledger.log_attempt(entry, AttemptReport(), JobState.COMPLETED, None)
            self._ledger.end_job(job, JobState.COMPLETED, None)
        else:
            error = ErrorInfo(
                reason=Reason.CANCELLED, type=ErrorType.CANCELLED, message="cancelled"
            )
            self._ledger.log_attempt(entry, AttemptReport(), JobState.CANCELLED, error)
            self._ledger.end_job(job, JobState.CANCELLED, error)

    async def _approval(
        self, scope: _Scope, spec: JobSpec, name: str, variables: dict[str, Any]
    ) -> None:
        """The ``approval`` kind: wait in WAITING for ``approve`` or ``reject``, or a deadline."""
        job = self._ledger.jobs[name]
        params = render((spec.execute or CallSpec()).with_, self._context(scope, variables))
        try:
            deadline = parse_duration(params["timeout"]) if params.get("timeout") else None
        except ValueError as err:
            raise ExpressionError(f"approval {name!r}: {err}") from None
        on_timeout = str(params.get("on_timeout", "fail"))
        approval = self._approvals[name] = _Approval(
            token=workflow.uuid4().hex[:12], require_token=bool(params.get("require_token"))
        )
        entry = self._ledger.begin(name, job)
        job.state = JobState.WAITING
        job.detail = f"waiting for approval; token {approval.token}" + (
            f"; on timeout after {deadline:g}s: {on_timeout}" if deadline else ""
        )
        self._changed()
        try:
            await workflow.wait_condition(
                lambda: approval.decision is not None or self._scope_halting(scope),
                timeout=timedelta(seconds=deadline) if deadline else None,
            )
        except TimeoutError:
            if on_timeout == "approve":
                approval.approved = True
                approval.decision = ApprovalCommand(job=name, comment="approved at the deadline")
        finally:
            self._approvals.pop(name, None)
        decision = approval.decision
        if decision is not None and approval.approved:
            job.output = {"approved": True, "comment": decision.comment}
            job.detail = f"approved: {decision.comment}" if decision.comment else "approved"
            self._ledger.log_attempt(entry, AttemptReport(), JobState.COMPLETED, None)
            self._ledger.end_job(job, JobState.COMPLETED, None)
            return
        if decision is not None:
            error = ErrorInfo(
                reason=Reason.REJECTED,
                type=ErrorType.REJECTED,
                message=decision.comment or "rejected",
            )
            state = JobState.FAILED
        elif self._scope_halting(scope):
            error = ErrorInfo(
                reason=Reason.CANCELLED, type=ErrorType.CANCELLED, message="cancelled"
            )
            state = JobState.CANCELLED
        else:
            error = ErrorInfo(
                reason=Reason.TIMEOUT,
                type=ErrorType.APPROVAL_TIMEOUT,
                message=f"no decision within {deadline:g}s",
            )
            state = JobState.FAILED
            if on_timeout == "rollback":
                state = JobState.CANCELLED
                self._request_stop(StopCommand(reason=error.message), False, error)
        job.detail = None
        self._ledger.log_attempt(entry, AttemptReport(reason=error.reason), state, error)
        self._ledger.end_job(job, state, error)

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

    def _cancel_running(self, prefix: str = "") -> None:
        for name, handle in self._handles.items():
            if name.startswith(prefix):
                handle.cancel()
        self._tell_chunks(prefix, Handler.STOP, StopCommand(rollback=False))
        rollback = self._stop.rollback if self._stop is not None else True
        reason = f"stopped by its parent run {self._ledger.status.run_id}"
        self._tell_children(prefix, Handler.STOP, StopCommand(rollback=rollback, reason=reason))

    # ------------------------------------------------------------------------------- rollback

    async def _rollback_all(self) -> None:
        """Undo every started job that has a rollback, one at a time, newest first."""
        self._set_state(RunState.ROLLING_BACK)
        await self._rollback_started("")

    async def _rollback_started(self, prefix: str) -> bool:
        """Undo the started jobs under ``prefix``, newest first; False if one cannot be undone.

        Undone jobs leave the start order, so nothing is undone twice. Undoing halts at the first
        rollback that fails for good: the jobs before it may depend on it.
        """
        started = [name for name in self._ledger.start_order if name.startswith(prefix)]
        for name in reversed(started):
            self._ledger.start_order.remove(name)
            if name in self._chunks:
                self._ledger.jobs[name].state = JobState.ROLLING_BACK
                failed = await self._finish_chunks(self._chunks[name], rollback=True)
                self._ledger.jobs[name].state = (
                    JobState.ROLLED_BACK if failed is None else JobState.ROLLBACK_FAILED
                )
                if failed is not None and failed.rollback_failed is not None:
                    job = self._rollback_failed = failed.rollback_failed
                    # Recorded where the run's final error looks for why a rollback failed (a
                    # chunk's item has no entry of its own here). Results of chunks from before
                    # the cause was carried have none: the error then says "unknown error".
                    entry = self._ledger.jobs.setdefault(job, JobStatus(name=job))
                    if failed.rollback_error is not None:
                        entry.rollback = RollbackStatus(
                            state=JobState.ROLLBACK_FAILED, error=failed.rollback_error
                        )
                    return False
                continue
            if name in self._children:
                if not await self._undo_child(name):
                    self._rollback_failed = name
                    return False
                continue
            instance = self._instances.get(name)
            if instance is None or instance.spec.rollback is None:
                continue
            if not await self._rollback_job(name, instance, instance.spec.rollback):
                self._rollback_failed = name
                return False
        return True

    async def _rollback_job(self, name: str, instance: _Instance, call: CallSpec) -> bool:
        spec = instance.spec
        job = self._ledger.jobs[name]
        rollback = job.rollback = RollbackStatus(state=JobState.RUNNING)
        job.state = JobState.ROLLING_BACK
        data, has_data = self._rollback_data.get(name, (None, False))
        failures = infra_failures = 0
        redeliver = False
        while True:
            if not redeliver:
                rollback.attempts += 1
            redeliver = False
            entry = AttemptLog(attempt=rollback.attempts, started_at=workflow.now())
            rollback.log.append(entry)
            delivery = sum(1 for e in rollback.log if e.attempt == rollback.attempts)
            try:
                params = render(call.with_, self._context(instance.scope, instance.variables))
                inp = RollbackInput(
                    run_id=self._ledger.status.run_id,
                    action=self._ledger.status.action,
                    job=name,
                    attempt=rollback.attempts,
                    call=call.model_copy(update={"with_": params}),
                    args=self._job_args(call),
                    output=job.output,
                    completed=job.output is not None,
                    error=job.error,
                    rollback_data=data,
                    has_rollback_data=has_data,
                    secrets=self._ledger.secrets,
                )
                encoded_size(inp, f"the rollback input of job {name!r}", MAX_JOB_INPUT_BYTES)
                report = await workflow.execute_activity(
                    ACTIVITY_ROLLBACK,
                    inp,
                    task_queue=spec.task_queue,
                    start_to_close_timeout=timedelta(seconds=spec.timeout),
                    heartbeat_timeout=timedelta(seconds=spec.heartbeat_timeout),
                    retry_policy=_NO_RETRY,
                    result_type=AttemptReport,
                    activity_id=f"rollback:{name}#{_numbered(rollback.attempts, delivery)}",
                    summary=f"{self._ledger.status.action} › rollback {name}"
                    + _note(rollback.attempts, delivery),
                )
            except ActivityError as err:
                failure = classify(err)
                self._ledger.log_attempt(entry, failure.report, JobState.FAILED, failure.error)
                rollback.error = failure.error
                if failure.infra and infra_failures < _INFRA_RETRIES:
                    infra_failures += 1
                    redeliver = workflow.patched(_REDELIVERY_PATCH)
                    await workflow.sleep(_INFRA_WAIT)
                    continue
                failures += 1
                if self._may_retry(spec.rollback_retry, failure.error, failure.retryable, failures):
                    await workflow.sleep(spec.rollback_retry.delay_before(failures))
                    continue
            except workflow.NondeterminismError:
                raise
            except Exception as err:
                # Its input cannot be rendered, serialised or sent: no retry will change that.
                error = error_of(err)
                self._ledger.log_attempt(entry, AttemptReport(), JobState.FAILED, error)
                rollback.error = error
            else:
                self._ledger.log_attempt(entry, report, JobState.COMPLETED, None)
                rollback.state = job.state = JobState.ROLLED_BACK
                rollback.error = None
                return True
            rollback.state = job.state = JobState.ROLLBACK_FAILED
            return False

    # --------------------------------------------------------------------------------- finish

    async def _finish(self) -> dict[str, Any]:
        error: ErrorInfo | None
        if self._rollback_failed is not None:
            state = RunState.ROLLBACK_FAILED
            failed = self._ledger.jobs[self._rollback_failed]
            cause = failed.rollback.error if failed.rollback else None
            error = ErrorInfo(
                reason=(self._failure or self._stop_error or ErrorInfo()).reason,
                type=ErrorType.ROLLBACK_FAILED,
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
        self._ledger.status.error = error
        self._ledger.status.finished_at = workflow.now()
        self._set_state(state)
        await workflow.wait_condition(workflow.all_handlers_finished)
        final = self.status()
        if state == RunState.COMPLETED:
            return final.as_result()
        message = final.error.message if final.error else state.value
        if state == RunState.STOPPED and self._cancel_requested:
            raise CancelledError(message)
        kinds = {RunState.FAILED: "RunFailed", RunState.STOPPED: "RunStopped"}
        # The final status rides in the failure so it can be read with no worker running.
        raise ApplicationError(
            message, final.as_result(), type=kinds.get(state, "RollbackFailed"), non_retryable=True
        )

    def _set_state(self, state: RunState) -> None:
        if not self._ledger.set_state(state) or self._chunk is not None:
            return  # chunks are part of their parent's run, not runs of their own in lists
        self._write_state()
        progress = self._ledger.progress()
        workflow.set_current_details(
            f"**{state.value}** · {progress.done}/{progress.total} jobs done"
        )

    def _write_state(self) -> None:
        """Write the run's state into ``SternwayState`` unless it holds it already.

        A run `submit` started as RUNNING (its plan fixed and nothing to wait for) then writes
        nothing before its first job, which saves the server a visibility write per run. Runs
        whose plan a resolver before generation 1 recorded always wrote it, and replay so.
        """
        state = self._ledger.status.state.value
        held = workflow.info().typed_search_attributes.get(STATE_KEY)
        if self._generation < 1 or held != state:
            workflow.upsert_search_attributes([STATE_KEY.value_set(state)])

    def _timer(self, seconds: float, error: ErrorInfo, still: Callable[[], bool]) -> None:
        """After ``seconds``, stop the run with rollback if ``still()`` holds and it is running."""

        async def fire() -> None:
            await workflow.sleep(seconds)
            if still() and self._ledger.status.state not in TERMINAL_RUN_STATES:
                self._request_stop(StopCommand(rollback=True, reason=error.message), False, error)

        self._timers.add(asyncio.create_task(fire()))

    # ------------------------------------------------------------------------------- commands

    def _request_stop(
        self, cmd: StopCommand, via_cancel: bool, error: ErrorInfo | None = None
    ) -> CommandResult:
        self._cancel_requested = self._cancel_requested or via_cancel
        if self._halting():
            done = self._ledger.status.state == RunState.STOPPED
            message = "the run is already " + ("stopped" if done else "stopping")
            return CommandResult(state=self._ledger.status.state, message=message)
        self._stop = cmd
        self._stop_error = error or ErrorInfo(
            reason=Reason.CANCELLED,
            type=ErrorType.STOPPED,
            message=cmd.reason or "stopped by request",
        )
        self._cancel_running()
        self._changed()
        return CommandResult(
            state=self._ledger.status.state,
            message="stopping" + (" with rollback" if cmd.rollback else " without rollback"),
        )

    def _refuse_stop(self, cmd: StopCommand | None = None) -> str | None:
        if cmd is not None and text_refusal("stop reason", cmd.reason):
            return text_refusal("stop reason", cmd.reason)
        # A stop of a STOPPED run answers ok, as a repeated stop does (DESIGN.md, Idempotent stop).
        if (
            self._ledger.status.state in TERMINAL_RUN_STATES
            and self._ledger.status.state != RunState.STOPPED
        ):
            return f"the run is {self._ledger.status.state.value}: there is nothing to stop"
        return None

    def _refuse_suspend(self, cmd: SuspendCommand) -> str | None:
        state = self._ledger.status.state
        if state in TERMINAL_RUN_STATES or self._halting():
            return f"the run is {state.value} and stopping: it cannot be suspended"
        if state == RunState.SUSPENDED and not (cmd.now and self._handles):
            return "the run is already SUSPENDED"
        return None

    def _refuse_resume(self) -> str | None:
        if self._ledger.status.state != RunState.SUSPENDED or self._halting():
            return (
                f"the run is {self._ledger.status.state.value}: only a SUSPENDED run can be resumed"
            )
        return None

    def _refuse_decision(self, cmd: ApprovalCommand) -> str | None:
        refusal = text_refusal("comment", cmd.comment)
        if refusal:
            return refusal
        approval = self._approvals.get(cmd.job)
        if approval is None:
            waiting = ", ".join(sorted(self._approvals)) or "none"
            return f"job {cmd.job!r} is not waiting for approval (waiting: {waiting})"
        if approval.decision is not None:
            return f"job {cmd.job!r} already has a decision"
        if approval.require_token and cmd.token != approval.token:
            return f"job {cmd.job!r} needs its approval token, and this one is missing or wrong"
        return None

    def _do_suspend(self, cmd: SuspendCommand) -> CommandResult:
        self._suspended = True
        self._tell_chunks("", Handler.SUSPEND, cmd)
        self._tell_children("", Handler.SUSPEND, cmd)
        if cmd.now:
            self._suspend_cancelled.update(self._handles)
            for handle in self._handles.values():
                handle.cancel()
        self._set_state(RunState.SUSPENDED)
        plan = self._plan
        if plan is not None and plan.max_suspended is not None:
            suspended_at = self._suspended_since = workflow.now()
            limit = plan.max_suspended
            self._timer(
                limit,
                ErrorInfo(
                    reason=Reason.TIMEOUT,
                    type=ErrorType.SUSPENDED_TOO_LONG,
                    message=f"the run stayed suspended longer than {limit:g}s",
                ),
                lambda: self._suspended and self._suspended_since == suspended_at,
            )
        self._changed()
        running = len(self._handles)
        note = f"; {running} running job(s) " + ("cancelled" if cmd.now else "finishing")
        return CommandResult(
            state=RunState.SUSPENDED, message="suspended" + (note if running else "")
        )

    def _do_resume(self) -> CommandResult:
        self._suspended = False
        self._tell_chunks("", Handler.RESUME, {})
        self._tell_children("", Handler.RESUME, {})
        self._set_state(RunState.RUNNING)
        self._changed()
        return CommandResult(state=RunState.RUNNING, message="resumed")

    def _decide(self, cmd: ApprovalCommand, approved: bool) -> CommandResult:
        approval = self._approvals[cmd.job]
        approval.decision = cmd
        approval.approved = approved
        self._changed()
        verb = "approved" if approved else "rejected"
        return CommandResult(state=self._ledger.status.state, message=f"job {cmd.job!r} {verb}")

    # Commands take their inputs as they come (``*args``) and check them here. Anyone can send
    # any JSON, any number of times (``temporal workflow signal --input ...``), and Temporal hands
    # a handler its payloads as they are: a typed parameter would raise on no input or two, and an
    # exception in a signal handler fails the workflow task, again at every retry, so the run
    # would be stuck. A bad update input is refused; a bad signal is logged and ignored.

    @workflow.update(name=Handler.STOP)
    def stop(self, *args: Any) -> CommandResult:
        """Stop the run: cancel running jobs, then roll back unless ``rollback`` is false."""
        return self._request_stop(
            update_input(Handler.STOP, StopCommand, args, StopCommand()), False
        )

    @stop.validator
    def _validate_stop(self, *args: Any) -> None:
        refuse(self._refuse_stop(update_input(Handler.STOP, StopCommand, args, StopCommand())))

    @workflow.update(name=Handler.SUSPEND)
    def suspend(self, *args: Any) -> CommandResult:
        """Start no new jobs (``now``: also cancel running ones, which re-run on resume)."""
        return self._do_suspend(
            update_input(Handler.SUSPEND, SuspendCommand, args, SuspendCommand())
        )

    @suspend.validator
    def _validate_suspend(self, *args: Any) -> None:
        refuse(
            self._refuse_suspend(
                update_input(Handler.SUSPEND, SuspendCommand, args, SuspendCommand())
            )
        )

    @workflow.update(name=Handler.RESUME)
    def resume(self, *args: Any) -> CommandResult:
        """Resume a suspended run (its input, if any, is an object and says nothing yet)."""
        update_input(Handler.RESUME, NoInput, args, NoInput())
        return self._do_resume()

    @resume.validator
    def _validate_resume(self, *args: Any) -> None:
        update_input(Handler.RESUME, NoInput, args, NoInput())
        refuse(self._refuse_resume())

    @workflow.update(name=Handler.APPROVE)
    def approve(self, *args: Any) -> CommandResult:
        """Approve a waiting approval job."""
        return self._decide(update_input(Handler.APPROVE, ApprovalCommand, args), True)

    @approve.validator
    def _validate_approve(self, *args: Any) -> None:
        refuse(self._refuse_decision(update_input(Handler.APPROVE, ApprovalCommand, args)))

    @workflow.update(name=Handler.REJECT)
    def reject(self, *args: Any) -> CommandResult:
        """Reject a waiting approval job: it fails, and the run rolls back."""
        return self._decide(update_input(Handler.REJECT, ApprovalCommand, args), False)

    @reject.validator
    def _validate_reject(self, *args: Any) -> None:
        refuse(self._refuse_decision(update_input(Handler.REJECT, ApprovalCommand, args)))

    @workflow.signal(name=Handler.STOP)
    def stop_signal(self, *args: Any) -> None:
        """``stop`` as a signal, for the Web UI and ``temporal workflow signal``."""
        cmd = signal_input(Handler.STOP, StopCommand, args, StopCommand())
        if cmd is not None and not ignored(Handler.STOP, self._refuse_stop(cmd)):
            self._request_stop(cmd, False)

    @workflow.signal(name=Handler.SUSPEND)
    def suspend_signal(self, *args: Any) -> None:
        """``suspend`` as a signal."""
        cmd = signal_input(Handler.SUSPEND, SuspendCommand, args, SuspendCommand())
        if cmd is not None and not ignored(Handler.SUSPEND, self._refuse_suspend(cmd)):
            self._do_suspend(cmd)

    @workflow.signal(name=Handler.RESUME)
    def resume_signal(self, *args: Any) -> None:
        """``resume`` as a signal."""
        cmd = signal_input(Handler.RESUME, NoInput, args, NoInput())
        if cmd is not None and not ignored(Handler.RESUME, self._refuse_resume()):
            self._do_resume()

    @workflow.signal(name=Handler.APPROVE)
    def approve_signal(self, *args: Any) -> None:
        """``approve`` as a signal."""
        cmd = signal_input(Handler.APPROVE, ApprovalCommand, args)
        if cmd is not None and not ignored(Handler.APPROVE, self._refuse_decision(cmd)):
            self._decide(cmd, True)

    @workflow.signal(name=Handler.REJECT)
    def reject_signal(self, *args: Any) -> None:
        """``reject`` as a signal."""
        cmd = signal_input(Handler.REJECT, ApprovalCommand, args)
        if cmd is not None and not ignored(Handler.REJECT, self._refuse_decision(cmd)):
            self._decide(cmd, False)

    @workflow.signal(name=Handler.CHUNK_DONE)
    def chunk_done_signal(self, *args: Any) -> None:
        """A chunk's items are done (or it halted); a failure there fails the each job."""
        summary = signal_input(Handler.CHUNK_DONE, ChunkSummary, args)
        if summary is None:
            return
        self._chunk_done[summary.chunk] = summary
        owner = self._chunk_owner.get(summary.chunk)
        if owner is not None and summary.error is not None and not owner[1].continue_on_error:
            self._fail(owner[0], summary.error)
        self._changed()

    @workflow.signal(name=Handler.FINISH)
    def finish_signal(self, *args: Any) -> None:
        """The parent's last word to a chunk."""
        cmd = signal_input(Handler.FINISH, ChunkFinish, args)
        if cmd is not None:
            self._chunk_finish = cmd
            self._changed()

    @workflow.query(name=Handler.STATUS)
    def status(self) -> RunStatus:
        """The status JSON of the run; also answered on closed runs.

        Secret arg values are masked wherever they show (outputs, details, output tails, error
        messages): a copy is masked, the run's own state keeps the real values for its jobs.
        """
        return self._ledger.view()


@workflow.defn(dynamic=True)
class ActionWorkflow(_Interpreter):
    """Runs any action: the workflow type names the action, the plan comes from the registry."""

    @workflow.run
    async def run(self, raw: Sequence[RawValue]) -> dict[str, Any]:
        """Run the action to a terminal state; the result is the final status."""
        try:
            inp = (
                workflow.payload_converter().from_payload(raw[0].payload, RunInput)
                if raw
                else RunInput()
            )
        except Exception as err:
            return await self._reject("InvalidInput", f"the run input is not valid: {err}")
        try:
            # Checked before the plan (which holds the args) is recorded.
            encoded_size(inp.args, "the args payload", MAX_ARGS_BYTES)
        except JobFailure as err:
            return await self._reject(err.info.type, err.info.message)
        bad = json_refusal(inp.args, "args")  # sent past `submit`, which refuses it first
        if bad:
            return await self._reject("InvalidInput", f"the run input is not valid: {bad}")
        self._requestor = self._ledger.status.requestor = inp.requestor
        self._parent = inp.options.parent
        if self._parent is not None:
            self._ledger.status.parent = self._parent.run_id
            self._owner = self._parent.owner
        if inp.requestor and workflow.info().typed_search_attributes.get(REQUESTOR_KEY) is None:
            workflow.upsert_search_attributes([REQUESTOR_KEY.value_set(inp.requestor)])
        try:
            resolved = await workflow.execute_local_activity(
                ACTIVITY_RESOLVE,
                ResolveInput(action=self._ledger.status.action, args=inp.args),
                result_type=ResolvedRun,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary=f"{self._ledger.status.action} › resolve plan and args",
            )
        except (ActivityError, ApplicationError) as err:
            # A local activity's failure arrives unwrapped, as the ApplicationError itself.
            cause = err.cause if isinstance(err, ActivityError) else err
            if isinstance(cause, ApplicationError):
                return await self._reject(cause.type or "InvalidArgs", cause.message)
            return await self._reject("InvalidArgs", str(cause or err))
        except asyncio.CancelledError:
            self._request_stop(StopCommand(reason=_TEMPORAL_CANCEL), True)
            return await self._finish()
        try:
            root = self._root = self._start(resolved, inp)
            if await self._take_locks(resolved):
                self._set_running(inp)
                await self._run_scope(root)
                await self._wait_for_chunks()
        except workflow.NondeterminismError:
            raise
        except Exception as err:
            await self._halt_internal(err)
        if self._parent is not None and not self._halting() and self._rollback_failed is None:
            await self._shielded(asyncio.create_task(self._report_to_parent(self._parent)))
        halted_with_rollback = self._failure is not None or (
            self._stop is not None and self._stop.rollback
        )
        # A group's rollback that failed for good already halted all undoing.
        if halted_with_rollback and self._rollback_failed is None:
            await self._shielded(asyncio.create_task(self._rollback_all()))
        await self._shielded(asyncio.create_task(self._release_chunks()))
        await self._shielded(asyncio.create_task(self._release_children()))
        if self._locks is not None:
            keep = self._rollback_failed is not None
            await self._shielded(asyncio.create_task(self._locks.release(keep)))
        return await self._finish()

    async def _take_locks(self, resolved: ResolvedRun) -> bool:
        """Take the run's keys (PENDING while it waits); whether its jobs may start."""
        if not resolved.locks:
            return True
        run_id = self._ledger.status.run_id
        locks = self._locks = RunLocks(run_id, self._owner, resolved.locks)
        self._ledger.status.locks = locks.status
        if self._generation >= 1:
            self._write_state()  # PENDING, if a submitter that saw no locks wrote RUNNING

        def show() -> None:
            detail = locks.waiting_detail()
            state = self._ledger.status.state.value
            workflow.set_current_details(f"**{state}** · {detail}" if detail else f"**{state}**")

        try:
            outcome = await locks.take(self._halting, show)
        except asyncio.CancelledError:
            self._request_stop(StopCommand(reason=_TEMPORAL_CANCEL), True)
            return False
        if outcome is not None:
            error, stopped = outcome
            if stopped:
                self._stop, self._stop_error = StopCommand(rollback=False), error
            else:
                self._failure = error
        return not self._halting()

    async def _report_to_parent(self, parent: ParentLink) -> None:
        """A child whose jobs completed gives its parent their outputs, then waits for the
        parent's word: undo them (at the calling job's place in the parent's rollback) or end."""
        plan = self._plan
        outputs = {j.name: self._ledger.jobs[j.name].output for j in (plan.jobs if plan else [])}
        done = ChildDone(job=parent.job, run_id=self._ledger.status.run_id, outputs=outputs)
        try:
            encoded_size(done, "the outputs of the run", MAX_JOB_INPUT_BYTES)
        except JobFailure as err:
            self._failure = err.info  # the parent could not take them: fail, and undo
            return
        try:
            await workflow.get_external_workflow_handle(parent.run_id).signal(
                Handler.CHILD_DONE, done
            )
        except workflow.NondeterminismError:
            raise
        except Exception as err:
            workflow.logger.warning("parent run %s is gone: %s", parent.run_id, err)
            return
        workflow.set_current_details(f"**RUNNING** · jobs done; parent {parent.run_id} decides")
        await self._wait(lambda: self._chunk_finish is not None or self._halting())
        finish = self._chunk_finish
        if finish is not None and finish.rollback and not self._halting():
            self._stop = StopCommand(rollback=True, reason=f"undone by {parent.run_id}")
            self._stop_error = ErrorInfo(
                reason=Reason.CANCELLED,
                type=ErrorType.STOPPED,
                message=f"undone by its parent run {parent.run_id}, which rolled back",
            )

    @workflow.signal(name=Handler.LOCK_REPLY)
    def lock_reply_signal(self, *args: Any) -> None:
        """A lock's answer: the key is the run's, the run is queued, or refused."""
        reply = signal_input(Handler.LOCK_REPLY, LockReply, args)
        if reply is not None and self._locks is not None:
            self._locks.replied(reply)
            self._changed()


@workflow.defn(name=CHUNK_WORKFLOW)
class ChunkWorkflow(_Interpreter):
    """One slice of a large ``each``, started by its parent run as a child workflow: its jobs
    belong to the parent's run, and it undoes them, or not, when the parent says so."""

    @workflow.run
    async def run(self, inp: ChunkInput) -> ChunkResult:
        """Run one slice of a large ``each`` for the parent run, then undo it or not, as told."""
        self._chunk = inp
        # Its jobs belong to the parent run: they see its id (and idempotency keys use it).
        self._ledger.status.run_id = inp.parent_run_id
        self._ledger.status.action = inp.action
        self._args, self._ledger.status.args, self._requestor = (
            inp.args,
            inp.masked_args,
            inp.requestor,
        )
        # Computed as the parent does: the chunk's status and job inputs mask the same secrets.
        self._ledger.secrets = secret_values(inp.args, inp.masked_args)
        root = self._root = _Scope(inp.prefix, [inp.job], inp.variables, None)
        try:
            self._ledger.add_entries(root.prefix, root.specs)
            self._set_state(RunState.RUNNING)
            await self._run_scope(root)
        except workflow.NondeterminismError:
            raise
        except Exception as err:
            await self._halt_internal(err)
        instances = [f"{inp.prefix}{inp.job.name}[{key}]" for key in inp.keys]
        summary = ChunkSummary(
            chunk=workflow.info().workflow_id,
            completed=sum(
                1
                for n in instances
                if n in self._ledger.jobs and self._ledger.jobs[n].state in DONE_STATES
            ),
            total=len(instances),
            error=self._failure,
        )
        parent = workflow.get_external_workflow_handle(inp.parent_run_id)
        await parent.signal(Handler.CHUNK_DONE, summary)
        await self._wait(lambda: self._chunk_finish is not None)
        if self._chunk_finish is not None and self._chunk_finish.rollback:
            await self._shielded(asyncio.create_task(self._rollback_all()))
        await workflow.wait_condition(workflow.all_handlers_finished)
        failed = self._rollback_failed
        rollback = self._ledger.jobs[failed].rollback if failed is not None else None
        return ChunkResult(
            rollback_failed=failed,
            error=self._failure,
            rollback_error=rollback.error if rollback is not None else None,
        )


def _child_error(child_id: str, err: ChildWorkflowError) -> ErrorInfo:
    """The error of an action job whose child run did not complete: its final state and
    message, from the status its failure carries."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        final = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
        raw = final.get("error")
        inner: dict[str, Any] = raw if isinstance(raw, dict) else {}
        try:
            reason = Reason(inner.get("reason", Reason.ERROR))
        except ValueError:
            reason = Reason.ERROR
        broken = cause.type == ErrorType.ROLLBACK_FAILED
        return ErrorInfo(
            reason=reason,
            type=ErrorType.ROLLBACK_FAILED if broken else ErrorType.CHILD_FAILED,
            message=f"child run {child_id} ended {final.get('state', 'FAILED')}: {cause.message}",
        )
    if isinstance(cause, CancelledError):
        return ErrorInfo(
            reason=Reason.CANCELLED,
            type=ErrorType.CHILD_FAILED,
            message=f"child run {child_id} was cancelled",
        )
    return ErrorInfo(type=ErrorType.CHILD_FAILED, message=f"child run {child_id} ended: {err}")


def _numbered(attempt: int, delivery: int) -> str:
    """``<attempt>``, or ``<attempt>.<delivery>`` for an attempt delivered again: the end of an
    activity id, unique in the run."""
    return f"{attempt}.{delivery}" if delivery > 1 else str(attempt)


def _note(attempt: int, delivery: int) -> str:
    """What an activity summary adds after the job: ``(attempt 2)``, ``(attempt 1, delivery 2)``."""
    parts = [f"attempt {attempt}"] if attempt > 1 or delivery > 1 else []
    if delivery > 1:
        parts.append(f"delivery {delivery}")
    return f" ({', '.join(parts)})" if parts else ""
