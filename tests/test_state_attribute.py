"""``SternwayState`` is kept current with one visibility write fewer per run: a run ``submit``
starts as RUNNING (its plan fixed, nothing to wait for) writes no state until it ends; a run
recorded by the resolver before generation 1 wrote it, and replays so; a run whose worker finds
locks its submitter did not know of shows PENDING while it waits."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from sternway import submit
from sternway.worker import create_worker
from sternway.workflows import _actions as actions_module
from sternway.workflows._actions import Action, Registry
from sternway.workflows._protocol import SEARCH_ATTRIBUTE_STATE
from sternway.workflows.models import CallSpec, JobSpec, LockSpec, Plan, RunState
from tests.helpers import wait_for
from tests.test_replay import replayer

NAME = "state-writes"


def _action(*locks: LockSpec, sleep: float = 0.0) -> Action:
    """Two no-op jobs (the first a durable sleep when ``sleep``), with ``locks``."""
    first = (
        CallSpec(kind="sleep", **{"with": {"duration": sleep}}) if sleep else CallSpec(kind="noop")
    )
    return Action.from_plan(
        Plan(
            name=NAME,
            locks=list(locks),
            jobs=[
                JobSpec(name="first", execute=first),
                JobSpec(name="second", execute=CallSpec(kind="noop"), after=["first"]),
            ],
        )
    )


async def _state_writes(client: Client, run_id: str) -> list[str]:
    """The values the run's history upserted into ``SternwayState``, in order."""
    history = await client.get_workflow_handle(run_id).fetch_history()
    written = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            payload = fields.indexed_fields.get(SEARCH_ATTRIBUTE_STATE)
            if payload is not None:
                written.append(payload.data.decode().strip('"'))
    return written


async def _replays(client: Client, run_id: str) -> bool:
    history = await client.get_workflow_handle(run_id).fetch_history()
    return (await replayer().replay_workflow(history)).replay_failure is None


async def test_a_submitted_run_starts_running_and_writes_its_state_once(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = dev_env.client
    registry = Registry([_action()])
    # No worker yet: visibility already says RUNNING, from the start itself.
    handle = await submit(client, NAME, {}, task_queue=task_queue, registry=registry)
    assert await handle.state() == RunState.RUNNING
    async with create_worker(client, registry, task_queue=task_queue):
        status = await handle.wait()
    assert status.state == RunState.COMPLETED
    assert await _state_writes(client, handle.run_id) == ["COMPLETED"]
    assert await handle.state() == RunState.COMPLETED
    assert await _replays(client, handle.run_id)
    # A delayed run waits for its start: PENDING until then, and it writes RUNNING itself.
    delayed = await submit(
        client, NAME, {}, task_queue=task_queue, registry=registry, delay=timedelta(seconds=1)
    )
    assert await delayed.state() == RunState.PENDING
    async with create_worker(client, registry, task_queue=task_queue):
        assert (await delayed.wait()).state == RunState.COMPLETED
    assert await _state_writes(client, delayed.run_id) == ["RUNNING", "COMPLETED"]


async def test_a_run_recorded_before_generation_1_wrote_running_and_replays_so(
    dev_env: WorkflowEnvironment, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newer `submit` and an older worker: the older resolver (generation 0) wrote RUNNING
    although the start had set it, and today's code replays that history as it ran."""
    client = dev_env.client
    registry = Registry([_action()])
    monkeypatch.setattr(actions_module, "RESOLVER_GENERATION", 0)
    handle = await submit(client, NAME, {}, task_queue=task_queue, registry=registry)
    async with create_worker(client, registry, task_queue=task_queue):
        assert (await handle.wait()).state == RunState.COMPLETED
    assert await _state_writes(client, handle.run_id) == ["RUNNING", "COMPLETED"]
    monkeypatch.undo()
    assert await _replays(client, handle.run_id)


async def test_locks_the_submitter_did_not_know_of_show_the_run_pending(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    """The worker's version of the action takes a key the submitter's version has not: the
    run, started as RUNNING, shows PENDING while it waits for the key, then RUNNING."""
    client = dev_env.client
    key = f"state/{uuid.uuid4().hex[:8]}"
    worker_side = Registry([_action(LockSpec(key=key), sleep=3.0)])
    submitter_side = Registry([_action()])
    async with create_worker(client, worker_side, task_queue=task_queue):
        holder = await submit(client, NAME, {}, task_queue=task_queue, registry=worker_side)
        assert await holder.state() == RunState.PENDING  # the submitter knew of the lock
        await wait_for(holder, lambda s: s.state == RunState.RUNNING)
        waiter = await submit(client, NAME, {}, task_queue=task_queue, registry=submitter_side)
        waiting = await wait_for(waiter, lambda s: bool(s.locks and s.locks[0].holders))
        assert waiting.state == RunState.PENDING
        assert await waiter.state() == RunState.PENDING
        assert (await waiter.wait()).state == RunState.COMPLETED
    assert await _state_writes(client, waiter.run_id) == ["PENDING", "RUNNING", "COMPLETED"]
    assert await _replays(client, waiter.run_id)
