"""A key held by one run and awaited by two, through ``kill -9`` of the worker and of the dev
server (restarted on the same database): all three complete, in FIFO order, one at a time."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from sternway import RunHandle, connect, submit
from sternway.starter._dev import DevServer
from sternway.workflows.models import RunState, RunStatus
from tests.helpers import free_port, wait_for, workflow_task_failures
from tests.lock_actions import intervals, most_at_once
from tests.reliability.helpers import WorkerProcess, record, until
from tests.reliability.test_server_kill import final_status, kill9


def _waiting(status: RunStatus) -> bool:
    return (
        bool(status.locks) and status.locks[0].state == "waiting" and bool(status.locks[0].holders)
    )


@pytest.mark.timeout(300)
async def test_lock_holder_and_waiters_survive_worker_and_server_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "temporal.db"
    port, ui_port = free_port(), free_port()
    server = await DevServer.ensure(db=db, port=port, ui_port=ui_port)
    queue = f"rel-lock-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "spans.log"
    workers: list[WorkerProcess] = []
    try:
        client = await connect(address=server.address)

        async def start_worker(n: int) -> WorkerProcess:
            worker = await WorkerProcess.start(
                server.address, queue, tmp_path / f"worker{n}.log", modules="tests.lock_actions"
            )
            workers.append(worker)
            return worker

        first = await start_worker(1)
        key = uuid.uuid4().hex[:10]
        args = {"key": key, "log": str(log), "hold": 4.0}
        handles: list[RunHandle] = []
        for i in range(3):
            handles.append(await submit(client, "lock-one", args, task_queue=queue))
            if i == 0:
                await wait_for(handles[0], lambda s: s.state == RunState.RUNNING)
            else:
                await wait_for(handles[i], _waiting)
        await asyncio.sleep(1.0)  # the holder's job is under way
        await first.kill9()
        await start_worker(2)
        await asyncio.sleep(1.0)
        kill9(server)
        await asyncio.sleep(2.0)
        server = await DevServer.ensure(db=db, port=port, ui_port=ui_port)

        async def all_ended() -> list[RunStatus] | None:
            found = await asyncio.gather(*(final_status(client, h.run_id) for h in handles))
            ended = [s for s in found if s is not None]
            return ended if len(ended) == len(handles) else None

        finals = await until(all_ended, "the three runs to end", 180, every=1.0)
        failures = [await workflow_task_failures(client, h.run_id) for h in handles]
    finally:
        for worker in workers:
            await worker.stop()
        server.stop()

    assert [s.state for s in finals] == [RunState.COMPLETED] * 3
    spans = intervals(str(log))
    assert most_at_once(spans) == 1, spans
    starts = sorted(spans, key=lambda run: spans[run][0])
    assert starts == [h.run_id for h in handles], "the key was not granted in FIFO order"
    assert failures == [[], [], []]
    record("lock through worker and server kill -9", runs=3, holders_at_once=1, fifo=True)
