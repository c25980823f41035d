"""Submitting runs and talking to them from Python (the CLI is built on this)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    Priority,
    RawValue,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from sternway.workflows._protocol import (
    DEFAULT_TASK_QUEUE,
    SEARCH_ATTRIBUTE_REQUESTOR,
    SEARCH_ATTRIBUTE_STATE,
    TERMINAL_RUN_STATES,
    ErrorType,
    Handler,
    JobState,
    RunState,
)
from sternway.workflows.errors import ArgsError, CommandRefused, RunNotFound

# The models (and pydantic) are imported by the calls that use them: `sternway status --json`
# and `list` need neither, and importing pydantic costs a fresh process a fifth of its time.
if TYPE_CHECKING:
    from sternway.workflows._actions import Registry
    from sternway.workflows.models import CommandResult, RunInput, RunOptions, RunStatus

__all__ = [
    "RunHandle",
    "RunSummary",
    "check_requestor",
    "check_run_id",
    "list_runs",
    "retry",
    "submit",
    "ui_base",
    "ui_url",
]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
_REQUESTOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+:-]{0,63}$")
STATE_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_STATE)
REQUESTOR_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_REQUESTOR)


def check_run_id(run_id: str) -> str:
    """A run id is 1-200 letters, digits, ``_ . : -``; raises :class:`ArgsError` otherwise."""
    if not _RUN_ID.match(run_id):
        raise ArgsError(
            f"run id {run_id[:60]!r} is invalid: use 1-200 letters, digits, '_', '.', ':' or '-'"
        )
    return run_id


def check_requestor(requestor: str) -> str:
    """A requestor is 1-64 letters, digits, ``_ . @ + : -`` (``schedule:ID`` names a schedule);
    raises :class:`ArgsError` otherwise."""
    if not _REQUESTOR.match(requestor):
        raise ArgsError(
            f"requestor {requestor[:60]!r} is invalid: use 1-64 letters, digits, "
            "'_', '.', '@', '+', ':' or '-'"
        )
    return requestor


def ui_base(client: Client) -> str | None:
    """Where the Web UI is: ``STERNWAY_UI_URL``, else the dev server's UI for a local server."""
    base = os.environ.get("STERNWAY_UI_URL")
    if base:
        return base.rstrip("/")
    host, _, port = client.service_client.config.target_host.rpartition(":")
    if host in ("localhost", "127.0.0.1", "[::1]") and port.isdigit():
        # `temporal server start-dev` serves its UI 1000 ports above the frontend.
        return f"http://localhost:{int(port) + 1000}"
    return None


def ui_url(client: Client, run_id: str) -> str | None:
    """The run's page in the Temporal Web UI, when it is known where the UI is."""
    base = ui_base(client)
    if base is None:
        return None
    return f"{base}/namespaces/{client.namespace}/workflows/{run_id}"


class RunHandle:
    """A run of an action, by id: status, commands, waiting for the end."""

    def __init__(self, client: Client, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self._handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(run_id)

    @property
    def ui_url(self) -> str | None:
        """The run's Web UI page, if the UI's address is known."""
        return ui_url(self.client, self.run_id)

    @contextlib.contextmanager
    def _existing(self) -> Iterator[None]:
        """Turn Temporal's "not found" about this run into :class:`RunNotFound`."""
        try:
            yield
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise RunNotFound(f"no run {self.run_id!r}") from None
            raise

    async def _describe(self) -> WorkflowExecutionDescription:
        with self._existing():
            return await self._handle.describe()

    async def status(self) -> RunStatus:
        """The run's status (running or closed). Raises :class:`RunNotFound`."""
        from sternway.workflows.models import RunStatus

        return RunStatus.model_validate(await self.status_json())

    async def status_json(self) -> dict[str, Any]:
        """The run's status JSON as the workflow answers it, unvalidated.

        ``sternway status --json`` prints it as it is: building a pydantic validator in a fresh
        process costs as much again as the query itself.
        """
        try:
            raw = await self._handle.query(Handler.STATUS, result_type=RawValue)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise RunNotFound(f"no run {self.run_id!r}") from None
            final = await self._final_status()
            if final is None:
                raise
            data = final.model_dump(mode="json")
        else:
            # Already decrypted (the codec runs before any type is applied); the status query
            # always answers JSON.
            data = json.loads(raw.payload.data)
        data["ui_url"] = self.ui_url
        return data

    async def _final_status(self) -> RunStatus | None:
        """A closed run's status from its result, for when no worker can answer the query."""
        from sternway.workflows.models import RunStatus

        description = await self._handle.describe()
        if description.status == WorkflowExecutionStatus.COMPLETED:
            return RunStatus.model_validate(await self._handle.result())
        if description.status != WorkflowExecutionStatus.FAILED:
            return None
        try:
            await self._handle.result()
        except WorkflowFailureError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.details:
                return RunStatus.model_validate(cause.details[0])
        return None

    async def state(self) -> str:
        """The run's state as visibility knows it (``SternwayState``); needs no worker.

        A run Temporal closed by itself (terminated, timed out) shows Temporal's status.
        """
        description = await self._describe()
        return _state_of(description.status, description.typed_search_attributes.get(STATE_KEY))

    async def live_details(self) -> dict[str, str]:
        """The live ``detail`` line of each running job, from the run's pending activities."""
        description = await self._describe()
        details: dict[str, str] = {}
        for pending in description.raw_description.pending_activities:
            job, _, _ = pending.activity_id.partition("#")
            if job.startswith("rollback:") or not pending.heartbeat_details.payloads:
                continue
            decoded = await self.client.data_converter.decode(pending.heartbeat_details.payloads)
            beat = decoded[0] if decoded else None
            if isinstance(beat, dict) and beat.get("detail"):
                details[job] = str(beat["detail"])
        return details

    async def run_input(self) -> RunInput:
        """The input the run was started with (args unmasked), from its first history event."""
        from sternway.workflows.models import RunInput

        with self._existing():
            async for event in self._handle.fetch_history_events():
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                values = await self.client.data_converter.decode(payloads, [RunInput])
                return values[0] if values else RunInput()
        raise RunNotFound(f"no run {self.run_id!r}")

    async def wait(self) -> RunStatus:
        """Wait until the run reaches a terminal state and return its final status."""
        with self._existing(), contextlib.suppress(WorkflowFailureError):
            await self._handle.result()
        return await self.status()

    async def stop(self, *, rollback: bool = True, reason: str = "") -> CommandResult:
        """Stop the run, rolling back its started jobs unless ``rollback`` is false."""
        from sternway.workflows.models import StopCommand

        return await self._command(Handler.STOP, StopCommand(rollback=rollback, reason=reason))

    async def suspend(self, *, now: bool = False) -> CommandResult:
        """Start no new jobs; ``now`` also cancels running jobs, which re-run on resume."""
        from sternway.workflows.models import SuspendCommand

        return await self._command(Handler.SUSPEND, SuspendCommand(now=now))

    async def resume(self) -> CommandResult:
        """Resume a suspended run."""
        return await self._command(Handler.RESUME, {})

    async def approve(
        self, job: str, *, token: str | None = None, comment: str = ""
    ) -> CommandResult:
        """Approve the approval job ``job`` (with its ``token`` when the job requires one)."""
        return await self._command(
            Handler.APPROVE, {"job": job, "token": token or "", "comment": comment}
        )

    async def reject(
        self, job: str, *, token: str | None = None, reason: str = ""
    ) -> CommandResult:
        """Reject the approval job ``job``: it fails, and the run rolls back."""
        return await self._command(
            Handler.REJECT, {"job": job, "token": token or "", "comment": reason}
        )

    async def _command(self, name: str, payload: Any) -> CommandResult:
        from sternway.workflows.models import CommandResult

        try:
            result: CommandResult = await self._handle.execute_update(
                name, payload, result_type=CommandResult
            )
            return result
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == ErrorType.COMMAND_REFUSED:
                raise CommandRefused(cause.message) from None
            # Any other failed update (e.g. a worker too old to know the command) is a refusal
            # too: nothing changed in the run.
            message = getattr(cause, "message", None) or str(cause or err)
            raise CommandRefused(f"the run refused {name}: {message}") from None
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        # The run does not exist, or it has closed and can take no more commands.
        description = await self._describe()
        state = _state_of(description.status, description.typed_search_attributes.get(STATE_KEY))
        if name == Handler.STOP and state == RunState.STOPPED.value:
            # Stop is idempotent (DESIGN.md): a stopped run is what the caller asked for.
            return CommandResult(state=RunState.STOPPED, message="the run is already stopped")
        raise CommandRefused(f"the run is {state}: it has finished and takes no {name}") from None


async def submit(
    client: Client,
    action: str,
    args: Mapping[str, Any] | None = None,
    *,
    run_id: str | None = None,
    requestor: str | None = None,
    task_queue: str = DEFAULT_TASK_QUEUE,
    timeout: timedelta | None = None,
    delay: timedelta | None = None,
    priority: int | None = None,
    registry: Registry | None = None,
    options: RunOptions | None = None,
) -> RunHandle:
    """Start a run of ``action`` and return its handle.

    With ``registry`` the args are validated here and nothing starts when they are wrong
    (:class:`~workflows.errors.ArgsError`, :class:`~workflows.errors.SpecError`). With an explicit
    ``run_id`` submitting the same action and args twice returns the same run; another action or
    other args under that id are refused (:class:`~workflows.errors.CommandRefused`).
    """
    from sternway.workflows.models import RunInput, RunOptions, args_refusal

    args = dict(args or {})
    explicit_id = run_id is not None
    refusal = args_refusal(args)  # over the size budget: nothing starts
    if refusal:
        raise ArgsError(refusal)
    # Without the registry secrets cannot be told apart: the workflow then writes the masked
    # args into the memo itself once it has validated them.
    resolved = registry.resolve(action, args) if registry is not None else None
    masked = resolved.shown_args() if resolved is not None else None
    if run_id is not None:
        check_run_id(run_id)
    if requestor is not None:
        check_requestor(requestor)
    run_id = run_id or f"{action}-{uuid.uuid4().hex[:10]}"
    # With its plan fixed here and nothing to wait for (a start delay, lock keys), the run is
    # RUNNING from its start, and the workflow has no state to write before its first job.
    waits = resolved is None or bool(delay) or bool(resolved.locks)
    state = RunState.PENDING if waits else RunState.RUNNING
    attributes = [SearchAttributePair(STATE_KEY, state.value)]
    if requestor:
        attributes.append(SearchAttributePair(REQUESTOR_KEY, requestor))
    options = (options or RunOptions()).model_copy(
        update={"timeout": timeout.total_seconds() if timeout else None}
    )
    memo: dict[str, Any] = {"requestor": requestor}
    if masked is not None:
        memo["args"] = masked
    if options.retry_of:
        memo["retry_of"] = options.retry_of
    # REJECT_DUPLICATE: the same id ran before, and idempotent submit returns that run.
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await client.start_workflow(
            action,
            RunInput(args=args, requestor=requestor, options=options),
            id=run_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            memo=memo,
            search_attributes=TypedSearchAttributes(attributes),
            static_summary=f"**{action}** run by {requestor or 'unknown'}",
            start_delay=delay,
            priority=Priority(priority_key=priority) if priority else Priority.default,
        )
    handle = RunHandle(client, run_id)
    if explicit_id:
        await _check_same_run(handle, action, args)
    return handle


async def _check_same_run(handle: RunHandle, action: str, args: Mapping[str, Any]) -> None:
    """The run under a caller's id is this action with these args; refused otherwise.

    Submitting the same id again is idempotent only for the same request: other args under an
    existing id would otherwise print the old run as if the new request had started it.
    """
    from pydantic_core import to_jsonable_python

    description = await handle._describe()
    if description.workflow_type != action:
        raise CommandRefused(
            f"run {handle.run_id!r} already exists as a run of {description.workflow_type!r}: "
            "submit with another --id"
        )
    existing = (await handle.run_input()).args
    if to_jsonable_python(existing) != to_jsonable_python(dict(args)):
        raise CommandRefused(
            f"run {handle.run_id!r} already exists with other args: submit with another --id "
            f"(or see it with `sternway status {handle.run_id}`)"
        )


async def retry(
    client: Client,
    run_id: str,
    *,
    from_failed: bool = False,
    task_queue: str = DEFAULT_TASK_QUEUE,
    requestor: str | None = None,
) -> RunHandle:
    """Start a new run of the same action with the same args, linked to ``run_id``.

    ``from_failed`` reuses the outputs of jobs that completed and were not rolled back, so the new
    run starts at the jobs that did not finish.
    """
    old = RunHandle(client, run_id)
    status = await old.status()
    if status.state not in TERMINAL_RUN_STATES:
        raise CommandRefused(f"the run is {status.state.value}: only a finished run can be retried")
    if from_failed and any(j.rollback is not None for j in status.jobs):
        raise CommandRefused(
            "the run was rolled back, so no output can be reused: retry it without --from-failed"
        )
    original = await old.run_input()
    reuse = (
        {j.name: j.output for j in status.jobs if j.state == JobState.COMPLETED}
        if from_failed
        else {}
    )
    options = original.options.model_copy(
        update={"retry_of": run_id, "reuse_outputs": reuse, "timeout": None}
    )
    timeout = original.options.timeout
    return await submit(
        client,
        status.action,
        original.args,
        requestor=requestor or original.requestor,
        task_queue=task_queue,
        timeout=timedelta(seconds=timeout) if timeout else None,
        options=options,
    )


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """One run in ``list``, as visibility knows it."""

    run_id: str
    action: str
    state: str | None
    requestor: str | None
    started_at: datetime | None
    finished_at: datetime | None
    ui_url: str | None

    def to_json(self) -> dict[str, Any]:
        """The run as ``sternway list --json`` prints it: times in ISO 8601, UTC as ``Z`` (as
        the status JSON writes them)."""
        data = dataclasses.asdict(self)
        for name in ("started_at", "finished_at"):
            if data[name] is not None:
                data[name] = data[name].isoformat().replace("+00:00", "Z")
        return data


_CLOSED_BY_TEMPORAL = (WorkflowExecutionStatus.TERMINATED, WorkflowExecutionStatus.TIMED_OUT)


def _state_of(status: WorkflowExecutionStatus | None, state: str | None) -> str:
    """A run's state: ``SternwayState``, unless Temporal itself ended the run."""
    if status in _CLOSED_BY_TEMPORAL and status is not None:
        return status.name
    if state:
        return state
    if status is not None and status != WorkflowExecutionStatus.RUNNING:
        return status.name
    return RunState.PENDING.value


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


async def list_runs(
    client: Client,
    *,
    action: str | None = None,
    state: str | None = None,
    requestor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    page_token: bytes | None = None,
) -> tuple[list[RunSummary], bytes | None]:
    """Runs newest first, filtered; returns one page and the token of the next one (or None)."""
    clauses = [f"{SEARCH_ATTRIBUTE_STATE} IS NOT NULL"]
    if action:
        clauses.append(f"WorkflowType = {_quote(action)}")
    if state:
        clauses.append(f"{SEARCH_ATTRIBUTE_STATE} = {_quote(state)}")
    if requestor:
        clauses.append(f"{SEARCH_ATTRIBUTE_REQUESTOR} = {_quote(requestor)}")
    if since:
        clauses.append(f"StartTime >= {_quote(since.astimezone(UTC).isoformat())}")
    if until:
        clauses.append(f"StartTime <= {_quote(until.astimezone(UTC).isoformat())}")
    query = " AND ".join(clauses) + " ORDER BY StartTime DESC"
    try:
        pages = client.list_workflows(query, page_size=limit, next_page_token=page_token)
        await pages.fetch_next_page()
    except RPCError as err:
        if "ORDER BY" not in str(err):
            raise
        # SQLite visibility orders by start time already and refuses an explicit ORDER BY.
        query = query.removesuffix(" ORDER BY StartTime DESC")
        pages = client.list_workflows(query, page_size=limit, next_page_token=page_token)
        await pages.fetch_next_page()
    runs = [
        RunSummary(
            run_id=w.id,
            action=w.workflow_type,
            state=_state_of(w.status, w.typed_search_attributes.get(STATE_KEY)),
            requestor=w.typed_search_attributes.get(REQUESTOR_KEY),
            started_at=w.start_time,
            finished_at=w.close_time,
            ui_url=ui_url(client, w.id),
        )
        for w in (pages.current_page or [])
    ]
    return runs, pages.next_page_token or None
