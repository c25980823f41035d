"""Determinism: recorded histories of every shipped action replay on today's workflow code, a
non-deterministic change is caught, and editing a YAML runbook never breaks a run in flight.

The histories in tests/histories/ are written by ``python -m tests.histories.record`` (see
docs/RELIABILITY.md); replaying needs no server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from sternway import RunHandle, submit
from sternway.worker import create_worker, load_registry, workflow_runner
from sternway.workflows import ActionWorkflow, ChunkWorkflow
from sternway.workflows._protocol import CHUNK_WORKFLOW
from sternway.workflows.models import SANDBOX_MODES
from tests.cli import REPO
from tests.helpers import wait_for
from tests.nondeterministic import (
    ExtraTimerChunkWorkflow,
    ExtraTimerWorkflow,
    OldestFirstRollbackWorkflow,
    WallClockChunkWorkflow,
    WallClockWorkflow,
)

HISTORIES = sorted((REPO / "tests" / "histories").glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    """A recorded history. Its workflow id is ``history-<file stem>``, as recorded, with ``~``
    for ``/`` in chunk runs' ids (``fanout~fan~0`` is ``history-fanout/fan/0``): a parent's
    child-workflow commands carry the ids of its chunks, so replay needs the real id."""
    workflow_id = f"history-{path.stem.replace('~', '/')}"
    return WorkflowHistory.from_json(workflow_id, json.loads(path.read_text()))


def workflow_type(history: WorkflowHistory) -> str:
    return history.events[0].workflow_execution_started_event_attributes.workflow_type.name


def replayer(
    action: type = ActionWorkflow, chunk: type = ChunkWorkflow, sandbox: str = "off"
) -> Replayer:
    """A replayer set up as workers are: the action and chunk workflows, the same converter,
    and the runner of ``sandbox``."""
    return Replayer(
        workflows=[action, chunk],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(sandbox),
    )


async def all_histories() -> AsyncIterator[WorkflowHistory]:
    for path in HISTORIES:
        yield load(path)


def test_every_shipped_action_has_a_recorded_history() -> None:
    shipped = {action.name for action in load_registry(modules=[], folders=[REPO / "actions"])}
    recorded = {workflow_type(load(path)) for path in HISTORIES}
    assert shipped == {"deploy-site", "rolling-restart", "release-with-approval"}
    assert shipped <= recorded, f"record a history of {sorted(shipped - recorded)}"


def test_chunk_runs_of_a_large_each_have_recorded_histories() -> None:
    """Large fan-outs run in child runs: the parent's and the chunks' histories replay too."""
    types = [workflow_type(load(path)) for path in HISTORIES]
    assert types.count(CHUNK_WORKFLOW) >= 4, types
    started = EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    for name in ("fanout", "fanout-rollback", "fanout-together", "fanout-start-together"):
        history = load(REPO / "tests" / "histories" / f"{name}.json")
        children = [e for e in history.events if e.event_type == started]
        assert len(children) == 3, name  # five items in chunks of two
        for event in children:
            child = event.start_child_workflow_execution_initiated_event_attributes.workflow_id
            assert (REPO / "tests/histories" / f"{child[8:].replace('/', '~')}.json").exists()


@pytest.mark.parametrize("sandbox", SANDBOX_MODES)
@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path, sandbox: str) -> None:
    """Workers run the interpreter with no sandbox; replaying under the strict one (the
    interpreter imported into it afresh) is the check that it reads no clock, randomness or I/O."""
    result = await replayer(sandbox=sandbox).replay_workflow(load(path))
    assert result.replay_failure is None


async def test_an_extra_timer_is_caught_in_every_history() -> None:
    results = await replayer(ExtraTimerWorkflow, ExtraTimerChunkWorkflow).replay_workflows(
        all_histories(), raise_on_replay_failure=False
    )
    assert len(results.replay_failures) == len(HISTORIES)
    for failure in results.replay_failures.values():
        assert isinstance(failure, NondeterminismError), repr(failure)


async def test_rollback_in_another_order_is_caught_where_a_rollback_ran() -> None:
    broken = replayer(OldestFirstRollbackWorkflow)
    with pytest.raises(NondeterminismError, match=r"(?i)nondetermin"):
        await broken.replay_workflow(load(REPO / "tests/histories/deploy-site-rollback.json"))
    # A run that rolled nothing back issued the same commands, so it still replays.
    ok = await broken.replay_workflow(load(REPO / "tests/histories/deploy-site.json"))
    assert ok.replay_failure is None


async def test_a_wall_clock_read_is_caught_only_by_the_strict_sandbox() -> None:
    """The mistake issues no command of its own, so plain replay passes; strict replay fails
    every history, as it would any clock, random or I/O call in the interpreter."""
    plain = await replayer(WallClockWorkflow, WallClockChunkWorkflow).replay_workflows(
        all_histories(), raise_on_replay_failure=False
    )
    assert plain.replay_failures == {}
    strict = await replayer(WallClockWorkflow, WallClockChunkWorkflow, "strict").replay_workflows(
        all_histories(), raise_on_replay_failure=False
    )
    assert len(strict.replay_failures) == len(HISTORIES)
    for failure in strict.replay_failures.values():
        assert "datetime.datetime.now" in str(failure), repr(failure)


# -------------------------------------------------------- runbook edits and runs in flight

BEFORE = """
name: evolving
description: version 1
jobs:
  - {name: first, run: noop, with: {version: 1}}
  - {name: gate, after: [first], run: approval}
  - name: last
    after: [gate]
    run: noop
    with: {version: 1, first_saw: "${{ jobs.first.output.version }}"}
"""

# Jobs renamed, removed and rewired, a required arg added: nothing of it fits the old run.
AFTER = """
name: evolving
description: version 2
args:
  required: [{name: ticket, type: str}]
jobs:
  - {name: prepare, run: fail, with: {message: version 2 ran, non_retryable: true}}
  - {name: last, after: [prepare], run: noop, with: {version: 2}}
"""


async def workflow_task_failures(env: WorkflowEnvironment, run_id: str) -> int:
    events = env.client.get_workflow_handle(run_id).fetch_history_events()
    return len(
        [e async for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    )


async def test_editing_a_runbook_does_not_change_a_run_in_flight(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    folder = tmp_path / "runbooks"
    folder.mkdir()
    runbook = folder / "evolving.yaml"
    runbook.write_text(BEFORE)
    old = load_registry(modules=[], folders=[folder])
    async with create_worker(dev_env.client, old, task_queue=task_queue):
        handle = await submit(dev_env.client, "evolving", {}, task_queue=task_queue, registry=old)
        await wait_for(handle, lambda s: s.job("gate").state == "WAITING")

    # The operator edits the runbook and restarts the workers while the run waits.
    runbook.write_text(AFTER)
    new = load_registry(modules=[], folders=[folder])
    assert [j.name for j in new.get("evolving").plan.jobs] == ["prepare", "last"]
    async with create_worker(dev_env.client, new, task_queue=task_queue):
        await RunHandle(dev_env.client, handle.run_id).approve("gate")
        status = await handle.wait()
        fresh = await submit(
            dev_env.client, "evolving", {"ticket": "T-1"}, task_queue=task_queue, registry=new
        )
        fresh_status = await fresh.wait()

    # The run in flight finished the plan it started with...
    assert status.state == "COMPLETED", status.model_dump_json(indent=1)
    assert [j.name for j in status.jobs] == ["first", "gate", "last"]
    assert status.job("last").output == {"version": 1, "first_saw": 1}
    assert await workflow_task_failures(dev_env, handle.run_id) == 0
    history = await dev_env.client.get_workflow_handle(handle.run_id).fetch_history()
    assert (await replayer().replay_workflow(history)).replay_failure is None
    # ...while a new run gets the edited one.
    assert fresh_status.state == "FAILED"
    assert [j.name for j in fresh_status.jobs] == ["prepare", "last"]
    error = fresh_status.job("prepare").error
    assert error is not None and error.message == "version 2 ran"


NAPPING = """
name: napping
description: sleeps between two jobs
args:
  optional: [{name: greeting, type: str, default: hello}]
jobs:
  - {name: first, run: noop, with: {said: "${{ args.greeting }}"}}
  - {name: nap, after: [first], run: sleep, with: {duration: 4s}}
  - name: last
    after: [nap]
    run: noop
    with: {first_said: "${{ jobs.first.output.said }}", slept: "${{ jobs.nap.output.slept }}"}
"""


async def test_removing_a_runbook_does_not_break_a_run_in_flight(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    """The runbook's file is deleted while a run sleeps; a worker that no longer knows the
    action finishes it, from the plan fixed in its history."""
    folder = tmp_path / "runbooks"
    folder.mkdir()
    runbook = folder / "napping.yaml"
    runbook.write_text(NAPPING)
    old = load_registry(modules=[], folders=[folder])
    async with create_worker(dev_env.client, old, task_queue=task_queue):
        handle = await submit(
            dev_env.client, "napping", {"greeting": "hi"}, task_queue=task_queue, registry=old
        )
        await wait_for(handle, lambda s: s.job("nap").state == "RUNNING")

    runbook.unlink()
    new = load_registry(modules=[], folders=[folder])
    assert "napping" not in new
    async with create_worker(dev_env.client, new, task_queue=task_queue):
        status = await handle.wait()

    assert status.state == "COMPLETED", status.model_dump_json(indent=1)
    assert [j.name for j in status.jobs] == ["first", "nap", "last"]
    assert status.job("last").output == {"first_said": "hi", "slept": 4}
    assert await workflow_task_failures(dev_env, handle.run_id) == 0
    history = await dev_env.client.get_workflow_handle(handle.run_id).fetch_history()
    assert (await replayer().replay_workflow(history)).replay_failure is None
