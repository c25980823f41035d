"""Load: 500 runs submitted at once, and 200 concurrent control commands from several clients.

Both tests are marked ``heavy``: ``make test`` and ``.ci/run`` run them; ``-m 'not heavy'`` skips
them for a quick local round.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from sternway import CommandRefused, RunHandle, connect, submit
from sternway._client import list_runs
from sternway.worker import load_registry
from sternway.workflows.models import TERMINAL_RUN_STATES, RunStatus
from tests.cli import cli_env, sternway
from tests.reliability.actions import CHAIN
from tests.reliability.conftest import Server
from tests.reliability.helpers import (
    MODULE,
    WorkerProcess,
    by_run,
    count_events,
    history,
    lost_deliveries,
    parse_key,
    read_effects,
    record,
    start_order,
    undone,
    until,
)

pytestmark = [pytest.mark.heavy, pytest.mark.timeout(600)]

LOAD_RUNS = 500
LOAD_WORKERS = 2


async def _count(server: Server, query: str) -> int:
    return (await server.client.count_workflows(query)).count


async def _histories(
    server: Server, run_ids: list[str], at_once: int = 25
) -> list[list[HistoryEvent]]:
    """Histories of many runs, a few requests at a time."""
    gate = asyncio.Semaphore(at_once)

    async def one(run_id: str) -> list[HistoryEvent]:
        async with gate:
            return await history(server.client, run_id)

    return list(await asyncio.gather(*(one(r) for r in run_ids)))


async def test_500_runs_submitted_at_once_all_complete_and_list_counts_match(
    rel_server: Server, tmp_path: Path
) -> None:
    """500 runs of the 6-job chain through the CLI's client code; two worker processes."""
    loop = asyncio.get_running_loop()
    queue = f"rel-load-{uuid.uuid4().hex[:8]}"
    requestor = f"rel-load-{uuid.uuid4().hex[:8]}"
    effects = tmp_path / "effects.log"
    registry = load_registry([MODULE], folders=[])
    workers = [
        await WorkerProcess.start(rel_server.address, queue, tmp_path / f"worker-{i}.log")
        for i in range(LOAD_WORKERS)
    ]
    try:
        client = await connect(address=rel_server.address)  # as `sternway submit` connects
        began = loop.time()
        handles = await asyncio.gather(
            *(
                submit(
                    client,
                    CHAIN.name,
                    {"effects": str(effects)},
                    task_queue=queue,
                    requestor=requestor,
                    registry=registry,
                )
                for _ in range(LOAD_RUNS)
            )
        )
        submitted_in = loop.time() - began
        mine = f"SternwayRequestor = '{requestor}'"

        async def all_closed() -> bool | None:
            total = await _count(rel_server, mine)
            running = await _count(rel_server, f"{mine} AND ExecutionStatus = 'Running'")
            return True if total == LOAD_RUNS and running == 0 else None

        await until(all_closed, f"{LOAD_RUNS} runs to finish", 420, every=1.0)
        done_in = loop.time() - began
    finally:
        codes = [await w.stop() for w in workers]
    assert codes == [0] * LOAD_WORKERS

    ids = {h.run_id for h in handles}
    assert len(ids) == LOAD_RUNS
    # Visibility: every run COMPLETED, none left in any other state.
    assert await _count(rel_server, f"{mine} AND SternwayState = 'COMPLETED'") == LOAD_RUNS
    assert await _count(rel_server, f"{mine} AND SternwayState != 'COMPLETED'") == 0
    assert await _count(rel_server, f"{mine} AND ExecutionStatus = 'Completed'") == LOAD_RUNS
    # list_runs (what `sternway list` calls), page by page, finds exactly those runs.
    listed: list[str] = []
    token = None
    while True:
        page, token = await list_runs(
            client, requestor=requestor, state="COMPLETED", limit=200, page_token=token
        )
        listed += [r.run_id for r in page]
        if token is None:
            break
    assert len(listed) == LOAD_RUNS and set(listed) == ids
    # The CLI itself, in one page of up to 1000.
    env = cli_env(rel_server.address, queue, STERNWAY_MODULES=MODULE, STERNWAY_ACTIONS_PATH="")
    result = await sternway(
        env, "list", "--requestor", requestor, "--state", "COMPLETED", "--limit", "1000", "--json"
    )
    assert result.code == 0, result.err
    assert {r["run_id"] for r in result.json()["runs"]} == ids
    # Every job of every run left its effect, under the key of its one attempt.
    lines = by_run(read_effects(effects))
    assert set(lines) == ids
    for run_id, run_lines in lines.items():
        keys = {x.key for x in run_lines}
        assert keys >= {f"{run_id}/{job.name}/execute/1" for job in CHAIN.jobs}
    histories = await _histories(rel_server, sorted(ids))
    failed_tasks = sum(count_events(e, "workflow_task_failed_event_attributes") for e in histories)
    assert failed_tasks == 0
    record(
        "load: 500 runs",
        runs=LOAD_RUNS,
        jobs=LOAD_RUNS * len(CHAIN.jobs),
        workers=LOAD_WORKERS,
        submit_seconds=round(submitted_in, 1),
        all_done_seconds=round(done_in, 1),
        runs_per_second=round(LOAD_RUNS / done_in, 1),
        completed=LOAD_RUNS,
        listed=len(listed),
        stuck=0,
        duplicate_effects=sum(len(x) - len({y.key for y in x}) for x in lines.values()),
        workflow_tasks_failed=failed_tasks,
    )


COMMAND_RUNS = 50
COMMANDS = 200
CLIENTS = 4
WINDOW = 8.0  # seconds over which the commands are sent
KINDS = ("stop", "stop-no-rollback", "suspend", "suspend-now", "resume")
WEIGHTS = (10, 5, 30, 10, 45)
SEED = 20261129


async def _command(handle: RunHandle, kind: str) -> str:
    """Send one command; the answer is ``accepted`` or ``refused``."""
    try:
        if kind == "stop":
            await handle.stop(reason="reliability")
        elif kind == "stop-no-rollback":
            await handle.stop(rollback=False, reason="reliability")
        elif kind == "suspend":
            await handle.suspend()
        elif kind == "suspend-now":
            await handle.suspend(now=True)
        else:
            await handle.resume()
    except CommandRefused:
        return "refused"
    return "accepted"


async def _accepted_updates(client: Client, events: list[HistoryEvent]) -> list[tuple[str, Any]]:
    """The updates the run accepted, in order, with their decoded input."""
    found: list[tuple[str, Any]] = []
    for event in events:
        if event.HasField("workflow_execution_update_accepted_event_attributes"):
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            values = await client.data_converter.decode(request.input.args.payloads)
            found.append((request.input.name, values[0] if values else None))
    return found


async def test_200_concurrent_commands_from_4_clients_leave_every_run_consistent(
    rel_server: Server, tmp_path: Path
) -> None:
    """50 runs of 6 jobs of 1-2 s; 200 random stop/suspend/resume from 4 connections at once."""
    rng = random.Random(SEED)
    loop = asyncio.get_running_loop()
    queue = f"rel-cmd-{uuid.uuid4().hex[:8]}"
    effects = tmp_path / "effects.log"
    workers = [
        await WorkerProcess.start(rel_server.address, queue, tmp_path / f"worker-{i}.log")
        for i in range(LOAD_WORKERS)
    ]
    try:
        clients = [await connect(address=rel_server.address) for _ in range(CLIENTS)]
        run_ids = [
            (
                await submit(
                    clients[0],
                    CHAIN.name,
                    {
                        "effects": str(effects),
                        "sleep": {j.name: round(rng.uniform(1.0, 2.0), 2) for j in CHAIN.jobs},
                    },
                    task_queue=queue,
                    requestor="reliability",
                )
            ).run_id
            for _ in range(COMMAND_RUNS)
        ]
        plan = sorted(
            (
                rng.uniform(0.0, WINDOW),
                rng.randrange(CLIENTS),
                rng.choice(run_ids),
                rng.choices(KINDS, WEIGHTS)[0],
            )
            for _ in range(COMMANDS)
        )
        began = loop.time()

        async def fire(at: float, client: int, run_id: str, kind: str) -> tuple[str, str]:
            await asyncio.sleep(at)
            return kind, await _command(RunHandle(clients[client], run_id), kind)

        answers = await asyncio.gather(*(fire(*p) for p in plan))
        sent_in = loop.time() - began

        # Then end what is left: a suspended run is resumed or stopped, a running one finishes.
        settling: dict[str, int] = {"resume": 0, "stop": 0}

        async def settled() -> list[RunStatus] | None:
            statuses = [await RunHandle(clients[1], r).status() for r in run_ids]
            for status in statuses:
                if status.state == "SUSPENDED":
                    kind = rng.choice(("resume", "stop"))
                    outcome = await _command(RunHandle(clients[2], status.run_id), kind)
                    settling[kind] += outcome == "accepted"
            done = all(s.state in TERMINAL_RUN_STATES for s in statuses)
            return statuses if done else None

        statuses = await until(settled, "every run to end", 240, every=1.0)
        settled_in = loop.time() - began
    finally:
        codes = [await w.stop() for w in workers]
    assert codes == [0] * LOAD_WORKERS

    lines = by_run(read_effects(effects))
    histories = await _histories(rel_server, run_ids)
    stopped_with_rollback = stopped_without = rerun_after_suspend_now = 0
    for status, events in zip(statuses, histories, strict=True):
        run = status.run_id
        mine = lines.get(run, [])
        keys, repeated = undone(mine)
        undo = [parse_key(key)[1] for key in keys]
        lost = sum(lost_deliveries(j.rollback.log) for j in status.jobs if j.rollback)
        assert repeated <= lost, (run, repeated, lost)
        assert count_events(events, "workflow_task_failed_event_attributes") == 0, run
        assert not [j for j in status.jobs if j.state in ("RUNNING", "ROLLING_BACK", "WAITING")]
        # Every job that completed did its work, under the key of its completed attempt.
        for job in status.jobs:
            completed = [e.attempt for e in job.log if e.state == "COMPLETED"]
            assert len(completed) <= 1
            if completed:
                assert f"{run}/{job.name}/execute/{completed[0]}" in {x.key for x in mine}
            rerun_after_suspend_now += sum(e.state == "CANCELLED" for e in job.log[:-1])
        stops = [
            cmd
            for name, cmd in await _accepted_updates(rel_server.client, events)
            if name == "stop"
        ]
        if not stops:
            assert status.state == "COMPLETED", status.model_dump_json()
            assert all(j.state == "COMPLETED" and j.rollback is None for j in status.jobs)
            assert undo == []
            continue
        # The first accepted stop decides; the later ones changed nothing.
        assert status.state == "STOPPED", status.model_dump_json()
        order = start_order(events)
        assert order == [j.name for j in status.jobs if j.attempts > 0]
        if stops[0]["rollback"]:
            stopped_with_rollback += 1
            assert undo == order[::-1]
            for job in status.jobs:
                if job.name in order:
                    assert job.state == "ROLLED_BACK", job.model_dump_json()
                    assert job.rollback is not None and job.rollback.attempts == 1
                else:
                    assert job.state == "PENDING" and job.rollback is None
        else:
            stopped_without += 1
            assert undo == []
            for job in status.jobs:
                assert job.rollback is None
                assert job.state in (("COMPLETED", "CANCELLED") if job.attempts else ("PENDING",))
    tally = {
        kind: {
            answer: sum(1 for k, a in answers if k == kind and a == answer)
            for answer in ("accepted", "refused")
        }
        for kind in KINDS
    }
    states = {s.state.value: sum(1 for x in statuses if x.state == s.state) for s in statuses}
    record(
        "load: 200 concurrent commands",
        runs=COMMAND_RUNS,
        clients=CLIENTS,
        commands=COMMANDS,
        commands_by_kind=tally,
        accepted=sum(a == "accepted" for _, a in answers),
        refused=sum(a == "refused" for _, a in answers),
        commands_sent_seconds=round(sent_in, 1),
        settling_commands=settling,
        final_states=states,
        stopped_with_rollback=stopped_with_rollback,
        stopped_without_rollback=stopped_without,
        attempts_rerun_after_suspend_now=rerun_after_suspend_now,
        all_ended_seconds=round(settled_in, 1),
        workflow_tasks_failed=0,
    )
