"""Worker ``kill -9``: attempts on a dead worker are delivered again under the same key.

Workers are real ``sternway worker`` subprocesses; the server is the dev server on a SQLite file.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sternway import RunHandle, submit
from sternway.workflows.models import RunStatus
from tests.reliability.actions import CHAIN, DAG
from tests.reliability.conftest import Server
from tests.reliability.helpers import (
    WorkerProcess,
    by_run,
    count_events,
    duplicate_keys,
    history,
    lost_deliveries,
    read_effects,
    record,
    rollback_order,
    scheduled,
    task_timeouts,
    until,
)

SEED = int(os.environ.get("STERNWAY_RELIABILITY_SEED", "20261129"))
KILLS = 6
RUNS_PER_KILL = 4  # submitted before each kill: 24 runs in all


async def _final(handle: RunHandle) -> RunStatus | None:
    status = await handle.status()
    return status if status.finished_at is not None else None


@pytest.mark.timeout(300)
async def test_a_killed_attempt_is_delivered_again_under_the_same_idempotency_key(
    rel_server: Server, tmp_path: Path
) -> None:
    """Kill the worker in the middle of j2's execute, then in the middle of j2's rollback."""
    queue = f"rel-redeliver-{uuid.uuid4().hex[:8]}"
    effects = tmp_path / "effects.log"
    args = {
        "effects": str(effects),
        "sleep": {"j2": 4.0},
        "rollback_sleep": {"j2": 4.0},
        "fail": ["j3"],
    }
    first = await WorkerProcess.start(rel_server.address, queue, tmp_path / "worker-1.log")
    handle = await submit(rel_server.client, "rel-chain6", args, task_queue=queue)
    run = handle.run_id

    async def line(kind: str, job: str) -> bool | None:
        found = any(x.kind == kind and x.job == job for x in read_effects(effects))
        return True if found else None

    await until(lambda: line("effect", "j2"), "j2's effect", 60)
    await first.kill9()  # j2 did its effect and has two more seconds of work
    second = await WorkerProcess.start(rel_server.address, queue, tmp_path / "worker-2.log")
    await until(lambda: line("undo", "j2"), "j2's rollback", 90)
    await second.kill9()  # the rollback of j2 is under way
    third = await WorkerProcess.start(rel_server.address, queue, tmp_path / "worker-3.log")
    try:
        status = await until(lambda: _final(handle), "the run to end", 90, every=0.5)
    finally:
        assert await third.stop() == 0

    assert status.state == "FAILED"
    assert status.error is not None and status.error.job == "j3"
    j2 = status.job("j2")
    # The attempt lost with the worker is the same attempt delivered again, not a new one.
    # (A slow machine may add a delivery lost to a missed heartbeat: the asserts allow for it.)
    assert j2.attempts == 1
    assert [e.attempt for e in j2.log] == [1] * len(j2.log) and len(j2.log) >= 2
    assert j2.log[0].error is not None and j2.log[0].error.message == "heartbeat timeout"
    assert j2.log[-1].state == "COMPLETED"
    assert j2.rollback is not None and j2.rollback.state == "ROLLED_BACK"
    assert j2.rollback.attempts == 1
    rollback_log = j2.rollback.log
    assert [e.attempt for e in rollback_log] == [1] * len(rollback_log) and len(rollback_log) >= 2
    assert rollback_log[0].error is not None
    assert rollback_log[0].error.message == "heartbeat timeout"
    assert rollback_log[-1].state == "COMPLETED"

    lines = [x for x in read_effects(effects) if x.job == "j2"]
    executed = [x for x in lines if x.kind == "effect"]
    undone = [x for x in lines if x.kind == "undo"]
    # Same key on re-delivery: the duplicate effect is there to see, from two processes.
    assert {x.key for x in executed} == {f"{run}/j2/execute/1"} and len(executed) >= 2
    assert [x.pid for x in executed][:2] == [first.pid, second.pid]
    assert {x.key for x in undone} == {f"{run}/j2/rollback/1"} and len(undone) >= 2

    events = await history(rel_server.client, run)
    ids = scheduled(events)
    assert "j2#1" in ids and "j2#1.2" in ids
    assert "rollback:j2#1" in ids and "rollback:j2#1.2" in ids
    assert rollback_order(events) == ["j3", "j2", "j1"]
    assert count_events(events, "workflow_task_failed_event_attributes") == 0


@pytest.mark.timeout(400)
async def test_worker_kill_9_at_random_moments_loses_no_effect(
    rel_server: Server, tmp_path: Path
) -> None:
    """24 runs of a 6-job chain and a 7-job DAG; the only worker is killed 6 times at random
    moments and a fresh one started each time. Every run completes, with every job's effect."""
    rng = random.Random(SEED)
    loop = asyncio.get_running_loop()
    queue = f"rel-kill-{uuid.uuid4().hex[:8]}"
    effects = tmp_path / "effects.log"
    began = loop.time()
    worker = await WorkerProcess.start(rel_server.address, queue, tmp_path / "worker-0.log")
    handles: list[RunHandle] = []
    kills: list[dict[str, Any]] = []
    for kill in range(1, KILLS + 1):
        await asyncio.sleep(rng.uniform(0.0, 1.5))
        for _ in range(RUNS_PER_KILL):
            action = CHAIN if len(handles) % 2 == 0 else DAG
            sleep = {j.name: round(rng.uniform(0.4, 2.0), 2) for j in action.jobs}
            handles.append(
                await submit(
                    rel_server.client,
                    action.name,
                    {"effects": str(effects), "sleep": sleep},
                    task_queue=queue,
                    requestor="reliability",
                )
            )
        await asyncio.sleep(rng.uniform(1.0, 4.0))
        await worker.kill9()
        kills.append({"at_s": round(loop.time() - began, 1), "effects": len(read_effects(effects))})
        worker = await WorkerProcess.start(
            rel_server.address, queue, tmp_path / f"worker-{kill}.log"
        )
    try:
        statuses = await asyncio.wait_for(asyncio.gather(*(h.wait() for h in handles)), 240)
    finally:
        assert await worker.stop() == 0
    elapsed = loop.time() - began

    lines = by_run(read_effects(effects))
    redelivered = duplicates = 0
    for status in statuses:
        run = status.run_id
        assert status.state == "COMPLETED", status.model_dump_json()
        mine = lines.get(run, [])
        assert not [x for x in mine if x.kind == "undo"]
        for job in status.jobs:
            # A worker's death is not the job's failure: one attempt, delivered once or more.
            assert job.state == "COMPLETED" and job.attempts == 1, job.model_dump_json()
            assert [e.attempt for e in job.log] == [1] * len(job.log)
            lost = job.log[:-1]
            assert lost_deliveries(lost) == len(lost), job.model_dump_json()
            keys = [x.key for x in mine if x.job == job.name]
            # No effect is missing, and every delivery of the attempt used the same key.
            assert keys and set(keys) == {f"{run}/{job.name}/execute/1"}, (run, job.name, keys)
            # A key written twice is a delivery again after an effect was done: each needs one.
            assert len(keys) - 1 <= len(lost), (run, job.name, keys, job.log)
            redelivered += len(lost)
        duplicates += sum(n - 1 for n in duplicate_keys(mine).values())
    histories = await asyncio.gather(*(history(rel_server.client, h.run_id) for h in handles))
    assert sum(count_events(e, "workflow_task_failed_event_attributes") for e in histories) == 0
    timed_out = sum((task_timeouts(e) for e in histories), Counter[str]())
    # The kills did land in the middle of jobs.
    assert redelivered >= 1
    durations = [
        (s.finished_at - s.created_at).total_seconds()
        for s in statuses
        if s.finished_at is not None and s.created_at is not None
    ]
    record(
        "worker kill -9",
        seed=SEED,
        runs=len(statuses),
        completed=sum(s.state == "COMPLETED" for s in statuses),
        jobs=sum(len(s.jobs) for s in statuses),
        kills=KILLS,
        workers_started=KILLS + 1,
        kills_at=kills,
        deliveries_lost_with_a_worker=redelivered,
        duplicate_effects=duplicates,
        missing_effects=0,
        workflow_tasks_timed_out=dict(timed_out),
        workflow_tasks_failed=0,
        run_seconds_median=round(statistics.median(durations), 1),
        run_seconds_max=round(max(durations), 1),
        wall_seconds=round(elapsed, 1),
    )
