"""Schedules: runs started on a timetable by Temporal Schedules (DESIGN.md, "Schedules").

A schedule is a plain Temporal Schedule, visible and editable in the Web UI. Its action starts
the Sternway action with ``{"args": ..., "requestor": "schedule:<ID>"}``, the search attributes a
submitted run gets and the masked args in the memo, so each run it starts is a normal run that
``sternway list --requestor schedule:ID`` finds. Args are validated when the schedule is created.
The schedule's memo (``sternway_action``, masked ``args``) marks it as Sternway's: ``schedule
list`` shows only those.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from sternway._client import REQUESTOR_KEY, STATE_KEY, ui_base
from sternway.workflows.errors import ArgsError, CommandRefused, RunNotFound
from sternway.workflows.models import DEFAULT_TASK_QUEUE, RunInput, RunState, args_refusal

if TYPE_CHECKING:
    from sternway.workflows._actions import Registry

__all__ = [
    "OVERLAP",
    "ScheduleView",
    "create_schedule",
    "delete_schedule",
    "describe_schedule",
    "list_schedules",
    "pause_schedule",
    "trigger_schedule",
]

OVERLAP: dict[str, ScheduleOverlapPolicy] = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer-one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer-all": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancel-other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "allow-all": ScheduleOverlapPolicy.ALLOW_ALL,
}
_OVERLAP_NAMES = {policy: name for name, policy in OVERLAP.items()}
# Temporal names a scheduled run ``<schedule id>-<timestamp>``, and the requestor is
# ``schedule:<id>``: both must stay within the run id and requestor rules.
_SCHEDULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,54}$")
_MARK = "sternway_action"


class ScheduledRun(BaseModel):
    """A run a schedule started."""

    run_id: str
    scheduled_at: datetime | None = None
    started_at: datetime | None = None


class ScheduleView(BaseModel):
    """A schedule as ``schedule list`` and ``describe`` show it (``--json``)."""

    id: str
    action: str
    args: dict[str, Any] = Field(default_factory=dict)
    cron: list[str] = Field(default_factory=list)
    every: list[float] = Field(default_factory=list)
    jitter: float | None = None
    overlap: str | None = None
    pause_on_failure: bool | None = None
    paused: bool = False
    note: str | None = None
    next_runs: list[datetime] = Field(default_factory=list)
    recent_runs: list[ScheduledRun] = Field(default_factory=list)
    running: list[str] = Field(default_factory=list)
    ui_url: str | None = None


def check_schedule_id(schedule_id: str) -> str:
    """A schedule id is 1-55 letters, digits, ``_ . -``; raises :class:`ArgsError` otherwise."""
    if not _SCHEDULE_ID.match(schedule_id):
        raise ArgsError(
            f"schedule id {schedule_id[:60]!r} is invalid: use 1-55 letters, digits, '_', '.' "
            "or '-', starting with a letter or digit"
        )
    return schedule_id


def _ui_url(client: Client, schedule_id: str) -> str | None:
    base = ui_base(client)
    return f"{base}/namespaces/{client.namespace}/schedules/{schedule_id}" if base else None


async def create_schedule(
    client: Client,
    schedule_id: str,
    action: str,
    args: Mapping[str, Any],
    *,
    registry: Registry,
    cron: str | None = None,
    every: timedelta | None = None,
    overlap: str = "skip",
    pause_on_failure: bool = False,
    jitter: timedelta | None = None,
    note: str | None = None,
    task_queue: str = DEFAULT_TASK_QUEUE,
) -> ScheduleView:
    """Create a schedule that runs ``action`` with ``args`` on ``cron`` or ``every``.

    Bad input (id, timetable, action, args) raises :class:`ArgsError` or ``SpecError`` and
    creates nothing; an id in use raises :class:`CommandRefused`.
    """
    check_schedule_id(schedule_id)
    if (cron is None) == (every is None):
        raise ArgsError("give one of --cron and --every")
    if every is not None and every < timedelta(seconds=1):
        raise ArgsError("--every must be at least 1s")
    if overlap not in OVERLAP:
        raise ArgsError(f"--overlap must be one of {', '.join(OVERLAP)}")
    refusal = args_refusal(dict(args))
    if refusal:
        raise ArgsError(refusal)
    masked = registry.resolve(action, args).shown_args()
    requestor = f"schedule:{schedule_id}"
    start = ScheduleActionStartWorkflow(
        action,
        RunInput(args=dict(args), requestor=requestor),
        id=schedule_id,
        task_queue=task_queue,
        memo={"requestor": requestor, "args": masked},
        typed_search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(STATE_KEY, RunState.PENDING.value),
                SearchAttributePair(REQUESTOR_KEY, requestor),
            ]
        ),
        static_summary=f"**{action}** run by {requestor}",
    )
    spec = ScheduleSpec(
        cron_expressions=[cron] if cron is not None else [],
        intervals=[ScheduleIntervalSpec(every=every)] if every is not None else [],
        jitter=jitter,
    )
    schedule = Schedule(
        action=start,
        spec=spec,
        policy=SchedulePolicy(overlap=OVERLAP[overlap], pause_on_failure=pause_on_failure),
        state=ScheduleState(note=note),
    )
    try:
        await client.create_schedule(schedule_id, schedule, memo={_MARK: action, "args": masked})
    except ScheduleAlreadyRunningError:
        raise CommandRefused(f"schedule {schedule_id!r} already exists") from None
    except RPCError as err:
        if err.status == RPCStatusCode.INVALID_ARGUMENT:
            raise ArgsError(f"Temporal refused the schedule: {err.message}") from None
        raise
    return await describe_schedule(client, schedule_id)


def _handle(client: Client, schedule_id: str) -> ScheduleHandle:
    return client.get_schedule_handle(check_schedule_id(schedule_id))


def _not_found(err: RPCError, schedule_id: str) -> Exception:
    if err.status == RPCStatusCode.NOT_FOUND:
        return RunNotFound(f"no schedule {schedule_id!r}")
    return err


async def describe_schedule(client: Client, schedule_id: str) -> ScheduleView:
    """The schedule: its action, args (masked), timetable, policy, state and runs."""
    try:
        found = await _handle(client, schedule_id).describe()
    except RPCError as err:
        raise _not_found(err, schedule_id) from None
    memo = await found.memo()
    schedule, info = found.schedule, found.info
    action = schedule.action
    workflow = action.workflow if isinstance(action, ScheduleActionStartWorkflow) else ""
    jitter = schedule.spec.jitter
    return ScheduleView(
        id=schedule_id,
        action=str(memo.get(_MARK, workflow)),
        args=memo.get("args") or {},
        cron=list(schedule.spec.cron_expressions),
        every=[i.every.total_seconds() for i in schedule.spec.intervals],
        jitter=jitter.total_seconds() if jitter else None,
        overlap=_OVERLAP_NAMES.get(schedule.policy.overlap),
        pause_on_failure=schedule.policy.pause_on_failure,
        paused=schedule.state.paused,
        note=schedule.state.note or None,
        next_runs=list(info.next_action_times[:5]),
        recent_runs=[
            ScheduledRun(
                run_id=getattr(r.action, "workflow_id", ""),
                scheduled_at=r.scheduled_at,
                started_at=r.started_at,
            )
            for r in info.recent_actions
        ],
        running=[getattr(a, "workflow_id", "") for a in info.running_actions],
        ui_url=_ui_url(client, schedule_id),
    )


async def list_schedules(client: Client) -> list[ScheduleView]:
    """Sternway's schedules (those whose memo marks them), by id."""
    views = []
    async for entry in await client.list_schedules():
        memo = await entry.memo()
        if _MARK not in memo:
            continue
        state = entry.schedule.state if entry.schedule else None
        info = entry.info
        views.append(
            ScheduleView(
                id=entry.id,
                action=str(memo[_MARK]),
                args=memo.get("args") or {},
                paused=bool(state and state.paused),
                note=(state.note or None) if state else None,
                next_runs=list(info.next_action_times[:1]) if info else [],
                recent_runs=[
                    ScheduledRun(
                        run_id=getattr(r.action, "workflow_id", ""),
                        scheduled_at=r.scheduled_at,
                        started_at=r.started_at,
                    )
                    for r in (info.recent_actions[-1:] if info else [])
                ],
                ui_url=_ui_url(client, entry.id),
            )
        )
    return sorted(views, key=lambda v: v.id)


async def pause_schedule(
    client: Client, schedule_id: str, *, paused: bool, note: str | None = None
) -> None:
    """Pause the schedule (no new runs) or unpause it."""
    handle = _handle(client, schedule_id)
    try:
        if paused:
            await handle.pause(note=note or "paused with sternway")
        else:
            await handle.unpause(note=note or "unpaused with sternway")
    except RPCError as err:
        raise _not_found(err, schedule_id) from None


async def trigger_schedule(client: Client, schedule_id: str) -> None:
    """Start one run now (the schedule's overlap policy applies)."""
    try:
        await _handle(client, schedule_id).trigger()
    except RPCError as err:
        raise _not_found(err, schedule_id) from None


async def delete_schedule(client: Client, schedule_id: str) -> None:
    """Delete the schedule; the runs it started go on."""
    try:
        await _handle(client, schedule_id).delete()
    except RPCError as err:
        raise _not_found(err, schedule_id) from None
