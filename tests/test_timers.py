"""Timers on the time-skipping test server: suspension, run timeouts, backoff; skipped, not slept.

Handles got by id do not skip time on their own while waiting, so each test skips explicitly.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from sternway import submit
from tests.conftest import WorkerFactory
from tests.helpers import events, rollbacks, until_started, wait_for


async def test_suspend_lets_running_job_finish_and_starts_nothing_until_resume(
    ts_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    async with worker_for(ts_env.client):
        handle = await submit(
            ts_env.client, "test-chain3", {"sleep": {"j1": 2}}, task_queue=task_queue
        )
        await until_started(handle.run_id, "j1")
        result = await handle.suspend()
        assert result.state == "SUSPENDED"
        await wait_for(handle, lambda s: s.job("j1").state == "COMPLETED")
        await ts_env.sleep(timedelta(hours=6))  # skipped forward, not slept
        held = await handle.status()
        assert held.state == "SUSPENDED"
        assert held.job("j2").state == "PENDING" and held.job("j2").attempts == 0
        assert events(handle.run_id, "start") == ["j1"]
        await handle.resume()
        status = await handle.wait()
    assert status.state == "COMPLETED"
    assert events(handle.run_id, "start") == ["j1", "j2", "j3"]


async def test_run_timeout_stops_the_run_with_rollback(
    ts_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    async with worker_for(ts_env.client):
        handle = await submit(
            ts_env.client, "test-slow-retry", {"fail": {"j2": 999}}, task_queue=task_queue
        )
        await until_started(handle.run_id, "j2")
        await ts_env.sleep(timedelta(hours=2))
        status = await handle.wait()
    assert status.state == "STOPPED"
    assert status.error is not None
    assert (status.error.reason, status.error.type) == ("timeout", "RunTimeout")
    # 10 minutes apart within one hour: the timeout, not the retry limit, ended the job.
    assert 2 <= status.job("j2").attempts <= 7
    assert status.job("j2").state == "ROLLED_BACK"
    assert rollbacks(handle.run_id) == ["j2", "j1"]


async def test_submit_timeout_overrides_the_action_timeout(
    ts_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    async with worker_for(ts_env.client):
        handle = await submit(
            ts_env.client,
            "test-slow-retry",
            {"fail": {"j2": 999}},
            task_queue=task_queue,
            timeout=timedelta(minutes=15),
        )
        await until_started(handle.run_id, "j2")
        await ts_env.sleep(timedelta(hours=2))
        status = await handle.wait()
    assert status.state == "STOPPED"
    assert status.job("j2").attempts == 2
    assert status.error is not None and "900s" in status.error.message


async def test_staying_suspended_too_long_stops_with_rollback(
    ts_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    async with worker_for(ts_env.client):
        handle = await submit(
            ts_env.client, "test-max-suspended", {"sleep": {"j1": 1}}, task_queue=task_queue
        )
        await until_started(handle.run_id, "j1")
        await handle.suspend()
        await wait_for(handle, lambda s: s.job("j1").state == "COMPLETED")
        await ts_env.sleep(timedelta(hours=1))
        status = await handle.wait()
    assert status.state == "STOPPED"
    assert status.error is not None and status.error.type == "SuspendedTooLong"
    assert rollbacks(handle.run_id) == ["j1"]
    assert events(handle.run_id, "start") == ["j1"]
