"""Dev server ``kill -9`` in the middle of runs, and a restart on the same SQLite file and port."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.service import RPCError

from sternway import RunHandle, connect, submit
from sternway.starter._dev import DevServer
from sternway.workflows.models import TERMINAL_RUN_STATES, RunStatus
from tests.helpers import free_port
from tests.reliability.actions import CHAIN, DAG
from tests.reliability.helpers import (
    WorkerProcess,
    by_run,
    count_events,
    history,
    read_effects,
    record,
    until,
)

SEED = int(os.environ.get("STERNWAY_RELIABILITY_SEED", "20261129"))
RUNS = 10


def kill9(server: DevServer) -> None:
    """``kill -9`` the server's whole process group (it runs in a session of its own)."""
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()


async def final_status(client: Client, run_id: str) -> RunStatus | None:
    """The run's status once it has ended; None while it runs or the server cannot answer."""
    try:
        status = await RunHandle(client, run_id).status()
    except RPCError:
        return None
    return status if status.state in TERMINAL_RUN_STATES else None


@pytest.mark.timeout(300)
async def test_dev_server_kill_9_and_restart_on_the_same_database(tmp_path: Path) -> None:
    """10 runs with jobs of 1-3 s; the server dies with jobs running and comes back on its file."""
    rng = random.Random(SEED)
    loop = asyncio.get_running_loop()
    db = tmp_path / "temporal.db"
    port, ui_port = free_port(), free_port()
    server = await DevServer.ensure(db=db, port=port, ui_port=ui_port)
    worker: WorkerProcess | None = None
    try:
        client = await connect(address=server.address)
        queue = f"rel-server-{uuid.uuid4().hex[:8]}"
        effects = tmp_path / "effects.log"
        worker = await WorkerProcess.start(server.address, queue, tmp_path / "worker.log")
        handles = []
        for i in range(RUNS):
            action = CHAIN if i % 2 == 0 else DAG
            sleep = {j.name: round(rng.uniform(1.0, 3.0), 2) for j in action.jobs}
            handles.append(
                await submit(
                    client,
                    action.name,
                    {"effects": str(effects), "sleep": sleep},
                    task_queue=queue,
                    requestor="reliability",
                )
            )

        async def some_effects() -> bool | None:
            return True if len(read_effects(effects)) >= 2 * RUNS else None

        await until(some_effects, "the runs to be under way", 120)
        await asyncio.sleep(rng.uniform(0.0, 1.0))  # somewhere in the middle of jobs
        effects_at_kill = len(read_effects(effects))
        kill9(server)
        killed_at = loop.time()
        await asyncio.sleep(3.0)  # the worker's polls and completions fail meanwhile
        server = await DevServer.ensure(db=db, port=port, ui_port=ui_port)
        restarted_in = loop.time() - killed_at
        assert server.process is not None  # a new server, not one left listening

        async def all_ended() -> list[RunStatus] | None:
            found = await asyncio.gather(*(final_status(client, h.run_id) for h in handles))
            ended = [s for s in found if s is not None]
            return ended if len(ended) == len(handles) else None

        statuses = await until(all_ended, "every run to end after the restart", 180, every=1.0)
        finished_in = loop.time() - killed_at
        # The worker rode the outage out by itself: no restart was needed.
        assert worker.alive()
        histories = await asyncio.gather(*(history(client, h.run_id) for h in handles))
    finally:
        if worker is not None:
            await worker.stop()
        server.stop()

    lines = by_run(read_effects(effects))
    redelivered = 0
    for status in statuses:
        assert status.state == "COMPLETED", status.model_dump_json()
        for job in status.jobs:
            assert job.state == "COMPLETED" and job.attempts == 1, job.model_dump_json()
            keys = {x.key for x in lines[status.run_id] if x.job == job.name}
            assert keys == {f"{status.run_id}/{job.name}/execute/1"}
            redelivered += len(job.log) - 1
        assert not [x for x in lines[status.run_id] if x.kind == "undo"]
    # Each history runs whole from its start to its completion; no workflow task failed.
    for events in histories:
        assert events[0].HasField("workflow_execution_started_event_attributes")
        assert events[-1].HasField("workflow_execution_completed_event_attributes")
        assert count_events(events, "workflow_task_failed_event_attributes") == 0
    record(
        "dev server kill -9",
        seed=SEED,
        runs=len(statuses),
        completed=sum(s.state == "COMPLETED" for s in statuses),
        jobs=sum(len(s.jobs) for s in statuses),
        effects_before_kill=effects_at_kill,
        server_down_and_restarted_s=round(restarted_in, 1),
        all_runs_done_after_kill_s=round(finished_in, 1),
        deliveries_lost_to_the_outage=redelivered,
        duplicate_effects=sum(len(x) - len({y.key for y in x}) for x in lines.values()),
        worker_restarted=False,
    )
