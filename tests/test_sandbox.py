"""The interpreter under Temporal's strict workflow sandbox (``--workflow-sandbox strict``).

Workers run it with no sandbox by default; a worker told ``strict`` imports it afresh into the
sandbox for every run, where any clock, random or I/O call fails the workflow task. Here a strict
worker runs every construct of the language live (chunked ``each``, groups, ``if``, ``sleep``,
approvals, expressions, a suspend, rollbacks into the chunks) and no workflow task may fail;
tests/test_replay.py replays every recorded history under the same sandbox.
"""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from sternway import Registry, RunHandle, submit
from sternway.worker import create_worker
from sternway.workflows.models import EachSpec, JobSpec
from tests.helpers import rollbacks, until_started, wait_for
from tests.scripted import ACTIONS, step, undo
from tests.test_flow import action, decide, job, kind, py


async def workflow_task_failures(client: Client, workflow_id: str) -> int:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    failed = EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    return sum(1 for event in history.events if event.event_type == failed)


async def test_a_strict_sandbox_worker_runs_every_construct_and_rolls_back(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    hosts = ["a", "b", "c", "d", "e"]
    plan = action(
        "strict-all",
        [
            job("prep", py(step), rollback=py(undo)),
            JobSpec(
                name="per-host",
                after=["prep"],
                each=EachSpec(items=hosts, concurrency=2, chunk_size=2, **{"as": "host"}),
                jobs=[
                    job(
                        "touch",
                        py(step, host="${{ host }}", prep="${{ jobs.prep.output.job }}"),
                        rollback=py(undo),
                    ),
                ],
            ),
            job("skipped", py(step), after=["prep"], **{"if": "${{ run.requestor == 'x' }}"}),
            job("pause", kind("sleep", duration="200ms"), after=["per-host"]),
            job("gate", kind("approval"), after=["pause"]),
            job("last", py(step), rollback=py(undo), after=["gate"]),
        ],
    )
    async with create_worker(
        dev_env.client, Registry([*ACTIONS, plan]), task_queue=task_queue, sandbox="strict"
    ):
        handle = await submit(
            dev_env.client, plan.name, {"fail": {"last": 999}}, task_queue=task_queue
        )
        await until_started(handle.run_id, "prep")
        await handle.suspend()
        await wait_for(handle, lambda s: s.state == "SUSPENDED")
        await handle.resume()
        await wait_for(handle, lambda s: s.job("gate").state == "WAITING")
        await decide(handle, "approve", "gate")
        final = await RunHandle(dev_env.client, handle.run_id).wait()
    assert final.state == "FAILED", final.error
    assert final.error is not None and final.error.job == "last"
    assert final.job("skipped").state == "SKIPPED"
    assert final.job("pause").state == "COMPLETED"
    # Newest first: the failed job, every host (from the chunk runs), then prep.
    undone = rollbacks(handle.run_id)
    assert undone[0] == "last" and undone[-1] == "prep"
    assert sorted(undone[1:-1]) == sorted(f"per-host[{h}].touch" for h in hosts)
    assert await workflow_task_failures(dev_env.client, handle.run_id) == 0
    chunks = [f"{handle.run_id}/per-host/{n}" for n in range(3)]
    for chunk in chunks:
        assert await workflow_task_failures(dev_env.client, chunk) == 0
