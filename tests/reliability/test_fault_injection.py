"""A failure injected at every job position of a 6-job chain and a 7-job DAG.

For every position the rollbacks are exactly the started jobs, each once, in reverse start order;
the start order is read from the run's history (the order of the execute activities' scheduled
events). Then the same with a rollback that fails for good: the run ends ROLLBACK_FAILED, undoing
halts at that job, and ``sternway list --state ROLLBACK_FAILED`` shows the run.

All 26 runs go at once in a module fixture (one in-process worker); each case asserts its own run.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.api.history.v1 import HistoryEvent

from sternway import submit
from sternway.worker import create_worker, load_registry
from sternway.workflows._actions import Action
from sternway.workflows.models import RunStatus
from tests.cli import cli_env, sternway
from tests.reliability.actions import CHAIN, DAG, INJECTED
from tests.reliability.conftest import Server
from tests.reliability.helpers import (
    MODULE,
    Line,
    count_events,
    history,
    lost_deliveries,
    parse_key,
    read_effects,
    record,
    rollback_order,
    start_order,
    undone,
    until,
)

SHAPES = {"chain": CHAIN, "dag": DAG}
CASES = [(shape, job.name) for shape, action in SHAPES.items() for job in action.jobs]
IDS = [f"{shape}-{job}" for shape, job in CASES]
FAULT_SLEEP = 0.2  # the failing job fails quickly, while its parallel siblings still run
SLEEP = 1.5  # long enough for the cancel to reach them (it rides a heartbeat)


def after(action: Action) -> dict[str, list[str]]:
    """Each job's dependencies."""
    return {job.name: list(job.after) for job in action.jobs}


def ancestors(action: Action, name: str) -> set[str]:
    """Every job ``name`` depends on, directly or not."""
    deps = after(action)
    found: set[str] = set()
    todo = list(deps[name])
    while todo:
        job = todo.pop()
        if job not in found:
            found.add(job)
            todo.extend(deps[job])
    return found


def descendants(action: Action, name: str) -> set[str]:
    """Every job that depends on ``name``, directly or not."""
    return {job.name for job in action.jobs if name in ancestors(action, job.name)}


def blocker(action: Action, fault: str) -> str:
    """The job whose rollback fails in the second variant: the failing job's first dependency
    (so newer jobs are undone first and older ones stay), or the failing job itself."""
    deps = after(action)[fault]
    return deps[0] if deps else fault


@dataclass
class Outcome:
    """One run with a fault: its final status, effects and history."""

    status: RunStatus
    lines: list[Line]
    events: list[HistoryEvent]

    @property
    def undone(self) -> list[str]:
        """Jobs in the order their rollbacks ran, one entry per rollback attempt.

        A rollback attempt delivered again after a lost heartbeat (a slow machine) writes its
        line twice under one key: it counts once here, and :meth:`check_redeliveries` checks it.
        """
        keys, _ = undone(self.lines)
        return [parse_key(key)[1] for key in keys]

    def check_redeliveries(self) -> None:
        """Every repeated rollback line matches a rollback delivery lost in the status."""
        _, repeated = undone(self.lines)
        lost = sum(lost_deliveries(j.rollback.log) for j in self.status.jobs if j.rollback)
        assert repeated <= lost, (repeated, lost)


@dataclass
class Faults:
    """Every case's outcome, and what ``sternway list --state ...`` showed."""

    outcomes: dict[tuple[str, str, bool], Outcome]
    listed: dict[str, set[str]]


async def _run(
    server: Server, queue: str, requestor: str, tmp: Path, shape: str, fault: str, bad: bool
) -> Outcome:
    action = SHAPES[shape]
    effects = tmp / f"{shape}-{fault}-{'rollback-fails' if bad else 'rollback-ok'}.log"
    handle = await submit(
        server.client,
        action.name,
        {
            "effects": str(effects),
            "sleep": {job.name: FAULT_SLEEP if job.name == fault else SLEEP for job in action.jobs},
            "fail": [fault],
            "rollback_fail": [blocker(action, fault)] if bad else [],
        },
        task_queue=queue,
        requestor=requestor,
    )
    status = await asyncio.wait_for(handle.wait(), 120)
    return Outcome(status, read_effects(effects), await history(server.client, handle.run_id))


async def _listed(env: dict[str, str], state: str, requestor: str, count: int) -> set[str]:
    """The runs ``sternway list --state STATE --requestor R --json`` shows, once all are there."""

    async def listed() -> set[str] | None:
        result = await sternway(
            env, "list", "--state", state, "--requestor", requestor, "--limit", "100", "--json"
        )
        assert result.code == 0, result.err
        runs = {r["run_id"] for r in result.json()["runs"]}
        assert all(r["state"] == state for r in result.json()["runs"])
        return runs if len(runs) >= count else None

    return await until(listed, f"{count} {state} runs in `sternway list`", 60, every=0.5)


@pytest.fixture(scope="module")
async def faults(
    rel_server: Server, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Faults]:
    """Run every case at once on one worker; list the runs through the CLI."""
    queue = f"rel-fault-{uuid.uuid4().hex[:8]}"
    requestor = f"rel-fault-{uuid.uuid4().hex[:8]}"
    tmp = tmp_path_factory.mktemp("faults")
    registry = load_registry([MODULE], folders=[])
    began = asyncio.get_running_loop().time()
    keys = [(shape, fault, bad) for shape, fault in CASES for bad in (False, True)]
    async with create_worker(rel_server.client, registry, task_queue=queue):
        outcomes = await asyncio.gather(
            *(_run(rel_server, queue, requestor, tmp, *key) for key in keys)
        )
    elapsed = asyncio.get_running_loop().time() - began
    env = cli_env(rel_server.address, queue, STERNWAY_MODULES=MODULE, STERNWAY_ACTIONS_PATH="")
    listed = {
        state: await _listed(env, state, requestor, len(CASES))
        for state in ("FAILED", "ROLLBACK_FAILED")
    }
    results = dict(zip(keys, outcomes, strict=True))
    record(
        "fault injection",
        positions=len(CASES),
        runs=len(keys),
        rollbacks=sum(len(o.undone) for o in outcomes),
        rollback_deliveries_repeated=sum(undone(o.lines)[1] for o in outcomes),
        jobs_started=sum(len(start_order(o.events)) for o in outcomes),
        jobs_cancelled_by_the_failure=sum(
            1 for o in outcomes for j in o.status.jobs if j.log and j.log[-1].state == "CANCELLED"
        ),
        failed=sum(o.status.state == "FAILED" for o in outcomes),
        rollback_failed=sum(o.status.state == "ROLLBACK_FAILED" for o in outcomes),
        wall_seconds=round(elapsed, 1),
    )
    yield Faults(results, listed)


@pytest.mark.parametrize(("shape", "fault"), CASES, ids=IDS)
def test_failure_at_every_position_undoes_the_started_jobs_in_reverse_start_order(
    faults: Faults, shape: str, fault: str
) -> None:
    """Every started job is rolled back exactly once, newest start first; nothing else is."""
    action = SHAPES[shape]
    outcome = faults.outcomes[(shape, fault, False)]
    status, events = outcome.status, outcome.events
    run = status.run_id
    order = start_order(events)
    started = set(order)

    assert status.state == "FAILED"
    assert status.error is not None and status.error.job == fault
    assert status.error.type == INJECTED
    assert run in faults.listed["FAILED"]
    # What started: the failing job and all it needs, never what needs it.
    assert ancestors(action, fault) | {fault} <= started
    assert not started & descendants(action, fault)
    assert started == {job.name for job in status.jobs if job.attempts > 0}
    # The history's start order agrees with the status' start times.
    times = [status.job(name).started_at for name in order]
    assert times == sorted(times)  # type: ignore[type-var]

    assert outcome.undone == order[::-1]
    assert rollback_order(events) == order[::-1]
    assert undone(outcome.lines)[0] == [f"{run}/{name}/rollback/1" for name in order[::-1]]
    outcome.check_redeliveries()
    for job in status.jobs:
        if job.name in started:
            assert job.state == "ROLLED_BACK"
            assert job.rollback is not None and job.rollback.attempts == 1
        else:
            assert job.state == "PENDING" and job.rollback is None
    assert count_events(events, "workflow_task_failed_event_attributes") == 0


@pytest.mark.parametrize(("shape", "fault"), CASES, ids=IDS)
def test_a_rollback_failing_for_good_halts_undoing_and_the_run_is_rollback_failed(
    faults: Faults, shape: str, fault: str
) -> None:
    """Undoing runs newest first down to the rollback that fails, and stops there."""
    action = SHAPES[shape]
    stuck = blocker(action, fault)
    outcome = faults.outcomes[(shape, fault, True)]
    status = outcome.status
    order = start_order(outcome.events)
    at = order.index(stuck)
    newer, older = order[at + 1 :][::-1], order[:at]

    assert status.state == "ROLLBACK_FAILED"
    assert status.error is not None and status.error.job == stuck
    assert status.error.type == "RollbackFailed"
    assert f"rollback of job {stuck!r} failed and needs a human" in status.error.message
    assert status.run_id in faults.listed["ROLLBACK_FAILED"]
    # Each newer job undone once, the stuck one tried twice (its rollback_retry), none older.
    assert outcome.undone == [*newer, stuck, stuck]
    outcome.check_redeliveries()
    assert rollback_order(outcome.events) == [*newer, stuck]
    for name in newer:
        assert status.job(name).state == "ROLLED_BACK"
    job = status.job(stuck)
    assert job.state == "ROLLBACK_FAILED"
    assert job.rollback is not None and job.rollback.attempts == 2
    assert job.rollback.error is not None and job.rollback.error.type == "InjectedRollbackFailure"
    for name in older:
        assert status.job(name).state == "COMPLETED" and status.job(name).rollback is None
