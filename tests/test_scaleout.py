"""Scale-out on one machine: three ``sternway worker`` processes share one task queue.

Sixty runs of a three-job action go to the queue; one worker is killed with SIGKILL while they
run. Every run must still complete, each of the three workers must have run jobs, and the
attempts lost with the killed worker must have been re-run by the others.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from sternway import RunHandle, submit
from sternway.workflows._actions import Registry
from sternway.workflows.models import Reason, RunStatus
from tests import fleet
from tests.cli import BIN, REPO, cli_env

RUNS = 60
WORKERS = 3
JOBS = ("fetch", "apply", "verify")


async def _pollers(client: Client, task_queue: str, kind: TaskQueueType.ValueType) -> set[str]:
    """Identities (``pid@host``) of the workers polling ``task_queue`` for ``kind`` tasks."""
    answer = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=kind,
        )
    )
    return {poller.identity for poller in answer.pollers}


async def _until_polling(client: Client, task_queue: str, pids: list[int]) -> None:
    """Wait until every worker polls both workflow and activity tasks."""
    wanted = {str(pid) for pid in pids}
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        seen = [
            {identity.split("@")[0] for identity in await _pollers(client, task_queue, kind)}
            for kind in (
                TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            )
        ]
        if all(wanted <= s for s in seen):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"workers {sorted(wanted)} never all polled: {seen}")
        await asyncio.sleep(0.2)


def _finished(log: Path) -> list[tuple[int, str, str]]:
    """``(pid, run id, job)`` of every job finished so far, in order."""
    if not log.exists():
        return []
    lines = [line.split() for line in log.read_text().splitlines()]
    return [(int(pid), run, job) for pid, run, job in (ln for ln in lines if len(ln) == 3)]


async def test_three_workers_share_sixty_runs_and_one_killed_loses_nothing(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    client = dev_env.client
    address = client.service_client.config.target_host
    log = tmp_path / "finished.log"
    env = cli_env(
        address,
        task_queue,
        STERNWAY_MODULES="tests.scripted,tests.fleet",
        STERNWAY_FLEET_LOG=str(log),
    )
    # Four job slots each: the sixty runs keep every worker busy, so none can take it all,
    # and the killed worker has attempts in flight when it dies.
    argv = [str(BIN / "sternway"), "worker", "--concurrency", "4", "--grace", "5s"]
    workers = []
    for n in range(WORKERS):
        with (tmp_path / f"worker-{n}.log").open("wb") as stderr:  # kept by the child
            workers.append(
                await asyncio.create_subprocess_exec(
                    *argv, env=env, cwd=REPO, stdout=asyncio.subprocess.DEVNULL, stderr=stderr
                )
            )
    pids = [w.pid for w in workers]
    victim, survivors = workers[0], workers[1:]
    try:
        await _until_polling(client, task_queue, pids)
        started = asyncio.get_running_loop().time()
        registry = Registry(fleet.ACTIONS)
        handles = await asyncio.gather(
            *(
                submit(client, "test-fleet", {}, task_queue=task_queue, registry=registry)
                for _ in range(RUNS)
            )
        )

        # Kill the first worker mid-way: once it has finished some jobs, and well before all
        # 180 jobs are done.
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            done = _finished(log)
            if len(done) >= RUNS * len(JOBS) // 4 and any(p == victim.pid for p, _, _ in done):
                break
            assert asyncio.get_running_loop().time() < deadline, f"too slow: {len(done)} done"
            await asyncio.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        done_at_kill = len(_finished(log))

        statuses: list[RunStatus] = await asyncio.wait_for(
            asyncio.gather(*(RunHandle(client, h.run_id).wait() for h in handles)), 90
        )
        took = asyncio.get_running_loop().time() - started
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            await asyncio.wait_for(worker.wait(), 30)

    assert [s.state for s in statuses] == ["COMPLETED"] * RUNS
    by_pid = Counter(
        job.output["pid"] for status in statuses for job in status.jobs if job.name in JOBS
    )
    assert sum(by_pid.values()) == RUNS * len(JOBS)
    assert set(by_pid) == set(pids), f"jobs per worker pid: {dict(by_pid)}"
    # After the kill only the survivors finished jobs.
    after_kill = {pid for pid, _, _ in _finished(log)[done_at_kill:]}
    assert after_kill <= {w.pid for w in survivors}
    assert done_at_kill < RUNS * len(JOBS)
    # The attempts the killed worker had in flight timed out on their heartbeat and ran again
    # elsewhere, although each job allows a single attempt: a dead worker is not the job's fault.
    lost = [
        (status.run_id, job.name)
        for status in statuses
        for job in status.jobs
        if any(
            entry.error is not None and entry.error.reason == Reason.TIMEOUT for entry in job.log
        )
    ]
    assert lost, "no attempt was in flight on the killed worker"
    print(  # shown with -s: the figures of this run
        f"{RUNS} runs in {took:.1f}s; jobs per worker {dict(by_pid)}; "
        f"killed pid {victim.pid} after {done_at_kill} jobs; re-run attempts {len(lost)}"
    )
