"""Large ``each`` fan-outs run in child chunk runs and keep the saga's promises.

Chunks are made small here (``chunk_size``) so a dozen items exercise the same paths as 10,000.
"""

from __future__ import annotations

from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from sternway import Action, Registry, submit
from sternway._client import list_runs
from sternway.worker import create_worker
from sternway.workflows._actions import function_ref
from sternway.workflows.models import CallSpec, EachSpec, JobSpec, Plan, RetrySpec
from tests.helpers import events, rollbacks, until_started
from tests.scripted import ACTIONS, PEAK, Script, step, track, undo

ITEMS = [f"i{n:02d}" for n in range(12)]


def py(fn: Any, **params: Any) -> CallSpec:
    return CallSpec(kind="python", ref=function_ref(fn), **{"with": params})


def fan_action(name: str, *, hold: float = 0.2, concurrency: int = 4) -> Action:
    return Action.from_plan(
        Plan(
            name=name,
            jobs=[
                JobSpec(name="before", execute=py(step), rollback=py(undo)),
                JobSpec(
                    name="fan",
                    after=["before"],
                    execute=py(track, item="${{ it }}", hold=hold),
                    rollback=py(undo),
                    retry=RetrySpec(max_attempts=1),
                    heartbeat_timeout=5,
                    each=EachSpec(
                        items=ITEMS, concurrency=concurrency, chunk_size=5, **{"as": "it"}
                    ),
                ),
                JobSpec(name="after", execute=py(step), rollback=py(undo), after=["fan"]),
            ],
        ),
        args_model=Script,
    )


def instances() -> list[str]:
    return [f"fan[{item}]" for item in ITEMS]


async def test_large_each_runs_in_chunks_and_completes(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    fan = fan_action("fan-ok")
    async with create_worker(dev_env.client, Registry([*ACTIONS, fan]), task_queue=task_queue):
        handle = await submit(dev_env.client, fan.name, {}, task_queue=task_queue, requestor="fan")
        status = await handle.wait()
        runs, _ = await list_runs(dev_env.client, requestor="fan", limit=100)
    assert status.state == "COMPLETED", status.error
    fan_job = status.job("fan")
    assert fan_job.output["completed"] == 12 and len(fan_job.output["chunks"]) == 3
    assert sorted(e for e in events(handle.run_id, "start") if e.startswith("fan[")) == instances()
    assert 1 <= PEAK[handle.run_id] <= 4
    # Chunks are parts of the run, not runs of their own: list shows the run only.
    assert handle.run_id in [r.run_id for r in runs]
    assert not any(r.run_id.startswith(handle.run_id + "/") for r in runs)
    for chunk in fan_job.output["chunks"]:
        chunk_run = await dev_env.client.get_workflow_handle(chunk).describe()
        assert chunk_run.status == WorkflowExecutionStatus.COMPLETED
    # Nothing was undone, so the chunks are told to end all at once, not one after the other.
    history = await dev_env.client.get_workflow_handle(handle.run_id).fetch_history()
    kinds = [e.event_type for e in history.events]
    told = [
        i
        for i, k in enumerate(kinds)
        if k == EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED
    ]
    ended = [
        i
        for i, k in enumerate(kinds)
        if k == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED
    ]
    assert len(told) == len(ended) == 3 and max(told) < min(ended), kinds
    # The chunks that fit the window (all 3 here) are started by one workflow task, together.
    starts = [
        e.start_child_workflow_execution_initiated_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    ]
    assert len(starts) == 3
    assert len({s.workflow_task_completed_event_id for s in starts}) == 1, starts


async def test_a_chunk_run_terminated_after_its_items_does_not_keep_the_run_from_ending(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    """Someone terminates a chunk run in the Web UI while it waits for the parent's last word:
    the parent cannot tell it to end, and still completes (there is nothing to undo)."""
    fan = fan_action("fan-terminated-chunk")
    async with create_worker(dev_env.client, Registry([*ACTIONS, fan]), task_queue=task_queue):
        handle = await submit(
            dev_env.client, fan.name, {"sleep": {"after": 2.0}}, task_queue=task_queue
        )
        await until_started(handle.run_id, "after")
        await dev_env.client.get_workflow_handle(f"{handle.run_id}/fan/0").terminate("by hand")
        status = await handle.wait()
    assert status.state == "COMPLETED", status.error
    assert status.job("fan").output["completed"] == 12
    assert rollbacks(handle.run_id) == []


async def test_a_chunk_run_terminated_before_its_rollback_fails_the_rollback_naming_the_job(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    """Its items cannot be undone any more: the run ends ROLLBACK_FAILED naming the each job,
    after the newer chunks undid theirs, and leaves the jobs before it as they are."""
    fan = fan_action("fan-terminated-before-rollback")
    async with create_worker(dev_env.client, Registry([*ACTIONS, fan]), task_queue=task_queue):
        handle = await submit(
            dev_env.client,
            fan.name,
            {"sleep": {"after": 2.0}, "fail": {"after": 99}},
            task_queue=task_queue,
        )
        await until_started(handle.run_id, "after")
        await dev_env.client.get_workflow_handle(f"{handle.run_id}/fan/0").terminate("by hand")
        status = await handle.wait()
    assert status.state == "ROLLBACK_FAILED", status.error
    assert status.job("fan").state == "ROLLBACK_FAILED"
    assert status.error is not None
    assert f"chunk run {handle.run_id}/fan/0 ended before it could undo" in status.error.message
    undone = rollbacks(handle.run_id)
    assert undone[0] == "after" and "before" not in undone
    assert sorted(undone[1:]) == instances()[5:]  # chunks 2 and 1; chunk 0 was terminated


async def test_a_later_failure_undoes_every_item_of_every_chunk_once(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    fan = fan_action("fan-later-failure")
    async with create_worker(dev_env.client, Registry([*ACTIONS, fan]), task_queue=task_queue):
        handle = await submit(
            dev_env.client, fan.name, {"fail": {"after": 99}}, task_queue=task_queue
        )
        status = await handle.wait()
    assert status.state == "FAILED"
    undone = rollbacks(handle.run_id)
    assert undone[0] == "after" and undone[-1] == "before"
    assert sorted(undone[1:-1]) == instances()
    # Newest chunk first, and newest item first within a chunk.
    chunks = [instances()[i : i + 5] for i in range(0, 12, 5)]
    started = [e for e in events(handle.run_id, "start") if e.startswith("fan[")]
    expected = [
        name
        for chunk in reversed(chunks)
        for name in sorted(chunk, key=started.index, reverse=True)
    ]
    assert undone[1:-1] == expected
    assert status.job("fan").state == "ROLLED_BACK"


async def test_an_item_whose_rollback_fails_is_named_with_its_error(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    """The run ends ROLLBACK_FAILED naming the item, and says why its rollback failed (the
    error is the chunk run's: the parent only hears which item it was)."""
    fan = fan_action("fan-item-rollback-fails")
    async with create_worker(dev_env.client, Registry([*ACTIONS, fan]), task_queue=task_queue):
        handle = await submit(
            dev_env.client,
            fan.name,
            {"fail": {"after": 99}, "rollback_fail": ["fan[i07]"]},
            task_queue=task_queue,
        )
        status = await handle.wait()
    assert status.state == "ROLLBACK_FAILED", status.error
    assert status.error is not None and status.error.job == "fan[i07]"
    assert "rollback of fan[i07] failed" in status.error.message, status.error.message
    assert "unknown error" not in status.error.message
    # The item's rollback ran; undoing halted there, so the job before the each was left.
    undone = rollbacks(handle.run_id)
    assert "fan[i07]" in undone and "before" not in undone


async def test_a_failing_item_stops_the_other_chunks_and_undoes_what_started(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    fan = fan_action("fan-item-failure", hold=0.5, concurrency=3)
    async with create_worker(dev_env.client, Registry([*ACTIONS, fan]), task_queue=task_queue):
        handle = await submit(dev_env.client, fan.name, {}, task_queue=task_queue)
        await until_started(handle.run_id, "fan[i01]")
        await handle.stop(reason="enough fanning")
        status = await handle.wait()
    assert status.state == "STOPPED"
    started = [e for e in events(handle.run_id, "start") if e.startswith("fan[")]
    undone = [name for name in rollbacks(handle.run_id) if name.startswith("fan[")]
    assert 1 <= len(started) < 12
    assert sorted(undone) == sorted(started)
    assert rollbacks(handle.run_id)[-1] == "before"
    assert "after" not in events(handle.run_id, "start")


async def test_a_chunk_whose_start_fails_still_has_its_siblings_undone(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    # The second chunk's id is taken by a workflow already running (anyone with access to the
    # namespace can start one), so its start fails while the first and third, started in the
    # same workflow task, run: the run must still know them, and undo their items.
    fan = fan_action("fan-start-clash", hold=0.5)
    run_id = f"fan-start-clash-{task_queue}"
    squatter = await dev_env.client.start_workflow(
        "squatter", id=f"{run_id}/fan/1", task_queue=f"{task_queue}-nobody"
    )
    async with create_worker(dev_env.client, Registry([*ACTIONS, fan]), task_queue=task_queue):
        handle = await submit(dev_env.client, fan.name, {}, task_queue=task_queue, run_id=run_id)
        status = await handle.wait()
    await squatter.terminate()
    assert status.state == "FAILED", status.state
    assert status.error is not None and status.error.job == "fan"
    assert "already started" in status.error.message
    assert status.job("fan").detail == "2 of 3 chunk runs started, 12 items"
    started = [e for e in events(run_id, "start") if e.startswith("fan[")]
    assert started and set(started) <= {f"fan[{i}]" for i in ITEMS[:5] + ITEMS[10:]}
    undone = rollbacks(run_id)
    assert sorted(u for u in undone if u.startswith("fan[")) == sorted(started)
    assert undone[-1] == "before"
    for index in (0, 2):
        chunk = await dev_env.client.get_workflow_handle(f"{run_id}/fan/{index}").describe()
        # Told to undo its items and ended by itself, not terminated with its parent.
        assert chunk.status == WorkflowExecutionStatus.COMPLETED, chunk.status
