"""The saga engine against a real Temporal dev server: order, failure, rollback, stop, status."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from sternway import CommandRefused, RunHandle, RunStatus, submit
from sternway.workflows.models import TERMINAL_RUN_STATES
from tests.conftest import WorkerFactory
from tests.helpers import events, rollbacks, until_started, wait_for
from tests.scripted import EVENTS


async def run_to_end(
    env: WorkflowEnvironment, task_queue: str, action: str, args: Mapping[str, object]
) -> tuple[RunHandle, RunStatus]:
    handle = await submit(env.client, action, args, task_queue=task_queue, requestor="tester")
    return handle, await handle.wait()


async def test_chain_failure_rolls_back_started_jobs_in_reverse(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    async with worker_for(dev_env.client):
        handle, _ = await run_to_end(dev_env, task_queue, "test-chain5", {"fail": {"j4": 999}})
        status = await handle.status()
    assert status.state == "FAILED"
    assert rollbacks(handle.run_id) == ["j4", "j3", "j2", "j1"]
    assert "j5" not in events(handle.run_id, "start")
    assert status.job("j5").state == "PENDING" and status.job("j5").attempts == 0
    j4 = status.job("j4")
    assert j4.attempts == 3
    assert [entry.state for entry in j4.log] == ["FAILED", "FAILED", "FAILED"]
    assert j4.error is not None and j4.error.reason == "error" and j4.error.type == "Boom"
    assert [status.job(f"j{i}").state for i in range(1, 5)] == ["ROLLED_BACK"] * 4
    assert status.error is not None and status.error.job == "j4"
    description = await dev_env.client.get_workflow_handle(handle.run_id).describe()
    assert description.status == WorkflowExecutionStatus.FAILED


async def test_parallel_branch_failure_cancels_sibling_and_rolls_back_started_jobs(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    script = {"sleep": {"slow": 60}, "fail": {"c": 999}, "non_retryable": ["c"]}
    async with worker_for(dev_env.client):
        handle, _ = await run_to_end(dev_env, task_queue, "test-dag", script)
        status = await handle.status()
    run = handle.run_id
    assert status.state == "FAILED"
    assert ("cancelled", "slow", 1) in EVENTS[run]
    assert "slow" not in events(run, "done")
    assert "d" not in events(run, "start")
    started = sorted(
        (j for j in status.jobs if j.started_at is not None),
        key=lambda j: (j.started_at, [x.name for x in status.jobs].index(j.name)),
    )
    assert [j.name for j in started] == ["root", "slow", "b", "c"]
    assert rollbacks(run) == ["c", "b", "slow", "root"]
    assert status.job("slow").state == "ROLLED_BACK"
    assert status.job("slow").log[0].state == "CANCELLED"


async def test_stop_cancels_running_job_and_rolls_back(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    async with worker_for(dev_env.client):
        handle = await submit(
            dev_env.client, "test-chain3", {"sleep": {"j2": 120}}, task_queue=task_queue
        )
        await until_started(handle.run_id, "j2")
        first = await handle.stop(reason="operator changed their mind")
        second = await handle.stop()
        status = await handle.wait()
    run = handle.run_id
    assert "stopping" in first.message
    assert second.message == "the run is already stopping"
    assert ("cancelled", "j2", 1) in EVENTS[run]
    assert rollbacks(run) == ["j2", "j1"]
    assert "j3" not in events(run, "start")
    assert status.state == "STOPPED"
    assert status.error is not None and status.error.reason == "cancelled"
    assert status.error.message == "operator changed their mind"
    again = await handle.stop()  # idempotent, also once the run has closed (DESIGN.md)
    assert (again.state, again.message) == ("STOPPED", "the run is already stopped")


async def test_stop_without_rollback_keeps_completed_work(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    async with worker_for(dev_env.client):
        handle = await submit(
            dev_env.client, "test-chain3", {"sleep": {"j2": 120}}, task_queue=task_queue
        )
        await until_started(handle.run_id, "j2")
        await handle.stop(rollback=False)
        status = await handle.wait()
    assert status.state == "STOPPED"
    assert rollbacks(handle.run_id) == []
    assert status.job("j1").state == "COMPLETED" and status.job("j1").output is not None
    assert status.job("j2").state == "CANCELLED"
    assert status.job("j3").state == "PENDING"


async def test_stop_of_completed_run_is_refused_with_reason(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    async with worker_for(dev_env.client):
        handle, _ = await run_to_end(dev_env, task_queue, "test-chain3", {})
    with pytest.raises(CommandRefused, match="the run is COMPLETED"):
        await handle.stop()
    with pytest.raises(CommandRefused, match="COMPLETED"):
        await handle.suspend()
    assert (await handle.status()).state == "COMPLETED"


async def test_temporal_cancel_is_a_stop_with_rollback(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    async with worker_for(dev_env.client):
        handle = await submit(
            dev_env.client, "test-chain3", {"sleep": {"j2": 120}}, task_queue=task_queue
        )
        await until_started(handle.run_id, "j2")
        await dev_env.client.get_workflow_handle(handle.run_id).cancel()
        status = await handle.wait()
    assert status.state == "STOPPED"
    assert rollbacks(handle.run_id) == ["j2", "j1"]
    description = await dev_env.client.get_workflow_handle(handle.run_id).describe()
    assert description.status == WorkflowExecutionStatus.CANCELED


async def test_suspend_now_cancels_running_job_which_reruns_after_resume(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    async with worker_for(dev_env.client):
        handle = await submit(
            dev_env.client, "test-chain3", {"sleep_first": {"j2": 120}}, task_queue=task_queue
        )
        await until_started(handle.run_id, "j2")
        await handle.suspend(now=True)
        suspended = await wait_for(handle, lambda s: s.job("j2").state == "PENDING")
        assert suspended.state == "SUSPENDED"
        assert suspended.job("j2").log[0].state == "CANCELLED"
        assert ("cancelled", "j2", 1) in EVENTS[handle.run_id]
        with pytest.raises(CommandRefused, match="already SUSPENDED"):
            await handle.suspend()
        await handle.resume()
        with pytest.raises(CommandRefused, match="only a SUSPENDED run can be resumed"):
            await handle.resume()
        status = await handle.wait()
    assert status.state == "COMPLETED"
    assert status.job("j2").attempts == 2
    assert ("done", "j2", 2) in EVENTS[handle.run_id]
    assert rollbacks(handle.run_id) == []


async def test_rollback_that_fails_for_good_names_the_job(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    script = {"fail": {"j3": 999}, "non_retryable": ["j3"], "rollback_fail": ["j2"]}
    async with worker_for(dev_env.client):
        handle, _ = await run_to_end(dev_env, task_queue, "test-chain3", script)
        status = await handle.status()
    assert status.state == "ROLLBACK_FAILED"
    assert status.error is not None and status.error.job == "j2"
    assert "rollback of job 'j2' failed" in status.error.message
    assert status.job("j2").state == "ROLLBACK_FAILED"
    rollback = status.job("j2").rollback
    assert rollback is not None and rollback.attempts == 2
    # Undoing stops at the failed rollback: j1 was done before j2 and may depend on it.
    assert rollbacks(handle.run_id) == ["j3", "j2", "j2"]
    assert status.job("j1").state == "COMPLETED"


async def test_job_timeout_has_reason_timeout(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    async with worker_for(dev_env.client):
        handle, _ = await run_to_end(
            dev_env, task_queue, "test-fast-timeout", {"sleep": {"only": 10}, "save": ["only"]}
        )
        status = await handle.status()
    only = status.job("only")
    assert status.state == "FAILED"
    assert only.error is not None and only.error.reason == "timeout"
    assert only.attempts == 3 and all(e.error and e.error.reason == "timeout" for e in only.log)
    # Rollback data saved (and heartbeated) before the timeout reaches the rollback.
    assert [e for e in EVENTS[handle.run_id] if e[0] == "rollback"] == [
        ("rollback", "only", {"saved_by": "only", "attempt": 3})
    ]


async def test_continue_on_error_lets_the_run_complete(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    async with worker_for(dev_env.client):
        handle, _ = await run_to_end(dev_env, task_queue, "test-continue", {"fail": {"b": 999}})
        status = await handle.status()
    assert status.state == "COMPLETED"
    assert status.job("b").state == "FAILED" and status.job("b").attempts == 3
    assert status.job("c").state == "COMPLETED"
    assert status.progress.done == 3 and status.progress.total == 3
    assert rollbacks(handle.run_id) == []


@pytest.mark.parametrize(
    ("script", "attempts"),
    [
        ({"fail": {"j1": 999}, "error_type": {"j1": "Boom"}}, 3),
        ({"fail": {"j1": 999}, "non_retryable": ["j1"]}, 1),
        ({"fail": {"j1": 1}}, 2),
    ],
    ids=["retried-to-the-limit", "non-retryable-error", "succeeds-on-retry"],
)
async def test_retry_policy(
    dev_env: WorkflowEnvironment,
    worker_for: WorkerFactory,
    task_queue: str,
    script: dict[str, object],
    attempts: int,
) -> None:
    async with worker_for(dev_env.client):
        handle, _ = await run_to_end(dev_env, task_queue, "test-chain3", script)
        status = await handle.status()
    assert status.job("j1").attempts == attempts


async def test_non_retryable_error_type_stops_retrying_at_once(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    from sternway import Action, Job, Registry, Retry
    from sternway.worker import create_worker
    from tests.scripted import Script, step

    action = Action(
        "test-fatal",
        [Job("j1", execute=step, retry=Retry(max_attempts=5, non_retryable=["Fatal"]))],
        args=Script,
    )
    async with create_worker(dev_env.client, Registry([action]), task_queue=task_queue):
        handle, _ = await run_to_end(
            dev_env, task_queue, "test-fatal", {"fail": {"j1": 999}, "error_type": {"j1": "Fatal"}}
        )
        status = await handle.status()
    assert status.state == "FAILED"
    assert status.job("j1").attempts == 1
    error = status.job("j1").error
    assert error is not None and error.type == "Fatal"


async def test_rollback_data_saved_by_failed_execute_reaches_rollback(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    script = {"fail": {"j2": 999}, "non_retryable": ["j2"], "save": ["j2"]}
    async with worker_for(dev_env.client):
        handle, _ = await run_to_end(dev_env, task_queue, "test-chain3", script)
    assert EVENTS[handle.run_id][-2:] == [
        ("rollback", "j2", {"saved_by": "j2", "attempt": 1}),
        ("rollback", "j1", None),
    ]


async def test_none_output_is_rejected(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    async with worker_for(dev_env.client):
        handle, _ = await run_to_end(dev_env, task_queue, "test-chain3", {"none_output": ["j1"]})
        status = await handle.status()
    j1 = status.job("j1")
    assert status.state == "FAILED"
    assert j1.attempts == 1
    assert j1.error is not None and j1.error.type == "InvalidOutput"
    assert "returned None" in j1.error.message


async def test_oversized_output_is_rejected(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    async with worker_for(dev_env.client):
        handle, _ = await run_to_end(dev_env, task_queue, "test-chain3", {"big_output": ["j1"]})
        status = await handle.status()
    j1 = status.job("j1")
    assert status.state == "FAILED" and j1.attempts == 1
    assert j1.error is not None and j1.error.type == "OutputTooLarge"
    assert "more than the limit" in j1.error.message


async def test_hooks_and_reused_job(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    async with worker_for(dev_env.client):
        handle, _ = await run_to_end(dev_env, task_queue, "test-hooks", {})
        status = await handle.status()
    assert status.state == "COMPLETED"
    assert status.job("echo").output == {"greeting": "hello"}
    assert status.job("loud").output == {"greeting": "HELLO", "stamped": True}


async def test_invalid_args_fail_the_run_at_once(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    async with worker_for(dev_env.client):
        handle, _ = await run_to_end(dev_env, task_queue, "test-chain3", {"fail": "not-a-dict"})
        status = await handle.status()
    assert status.state == "FAILED"
    assert status.error is not None and status.error.reason == "rejected"
    assert "fail" in status.error.message
    assert status.jobs == []


async def test_idempotent_submit_returns_the_same_run(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    run_id = f"idem-{uuid.uuid4().hex[:8]}"
    async with worker_for(dev_env.client):
        first = await submit(
            dev_env.client, "test-chain3", {}, run_id=run_id, task_queue=task_queue
        )
        await first.wait()
        second = await submit(
            dev_env.client, "test-chain3", {}, run_id=run_id, task_queue=task_queue
        )
        await second.wait()
    assert second.run_id == first.run_id
    assert events(run_id, "start") == ["j1", "j2", "j3"]


STATUS_FIELDS = {
    "run_id", "action", "state", "requestor", "args", "created_at", "started_at", "finished_at",
    "progress", "error", "ui_url", "parent", "locks", "jobs",
}  # fmt: skip
JOB_FIELDS = {
    "name", "state", "attempts", "started_at", "finished_at", "detail", "error", "output",
    "rollback", "log",
}  # fmt: skip
LOG_FIELDS = {
    "attempt", "started_at", "finished_at", "state", "exit_code", "stdout_tail", "stderr_tail",
    "error",
}  # fmt: skip


async def test_status_query_fields_and_visibility(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    async with worker_for(dev_env.client):
        handle = await submit(
            dev_env.client,
            "test-chain3",
            {"fail": {"j2": 2}, "sleep": {"j3": 60}},
            task_queue=task_queue,
            requestor="carol",
        )
        await until_started(handle.run_id, "j3")
        running = await dev_env.client.get_workflow_handle(handle.run_id).query("status")
        await handle.stop(rollback=False)
        await handle.wait()
        raw = await dev_env.client.get_workflow_handle(handle.run_id).query("status")
    assert running["state"] == "RUNNING"
    assert set(raw) == STATUS_FIELDS
    assert raw["requestor"] == "carol"
    assert raw["args"]["fail"] == {"j2": 2}
    assert raw["progress"] == {"done": 2, "total": 3, "rolled_back": 0}
    for job in raw["jobs"]:
        assert set(job) == JOB_FIELDS
    j2 = raw["jobs"][1]
    assert [e["state"] for e in j2["log"]] == ["FAILED", "FAILED", "COMPLETED"]
    assert set(j2["log"][0]) == LOG_FIELDS
    assert j2["log"][0]["error"]["message"] == "j2 failed on attempt 1"
    assert {e["attempt"] for e in j2["log"]} == {1, 2, 3}

    query = f"WorkflowId = '{handle.run_id}' AND SternwayState = 'STOPPED'"
    for _ in range(100):
        found = [w.id async for w in dev_env.client.list_workflows(query)]
        if found:
            break
        await asyncio.sleep(0.1)
    assert found == [handle.run_id]
    requestor_query = f"WorkflowId = '{handle.run_id}' AND SternwayRequestor = 'carol'"
    assert [w.id async for w in dev_env.client.list_workflows(requestor_query)] == [handle.run_id]
    description = await dev_env.client.get_workflow_handle(handle.run_id).describe()
    assert (await description.memo())["args"]["fail"] == {"j2": 2}
    assert await description.static_summary() == "**test-chain3** run by carol"


async def test_terminal_states_are_final(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    async with worker_for(dev_env.client):
        _, status = await run_to_end(dev_env, task_queue, "test-chain3", {})
    assert status.state in TERMINAL_RUN_STATES
    assert status.finished_at is not None and status.started_at is not None
    assert all(j.state == "COMPLETED" for j in status.jobs)
    assert [j.output["deps"] for j in status.jobs] == [[], ["j1"], ["j2"]]
