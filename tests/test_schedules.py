"""Schedules through the CLI on a real dev server (DESIGN.md, "Schedules"): runs every 2 s that
``list --requestor schedule:ID`` finds, pause, trigger, overlap skip, delete, bad input."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tests.cli import Result, cli_env, sternway
from tests.conftest import WorkerFactory

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def env(
    dev_env: WorkflowEnvironment, task_queue: str, worker_for: WorkerFactory
) -> AsyncIterator[dict[str, str]]:
    """The environment of a ``sternway`` subprocess, with a worker serving the queue."""
    async with worker_for(dev_env.client):
        yield cli_env(dev_env.client.service_client.config.target_host, task_queue)


async def _runs(env: dict[str, str], schedule_id: str) -> list[dict[str, Any]]:
    listed = await sternway(env, "list", "--requestor", f"schedule:{schedule_id}", "--json")
    assert listed.code == 0, listed.err
    runs: list[dict[str, Any]] = listed.json()["runs"]
    return runs


async def _until(check: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


def _ok(result: Result) -> Result:
    assert result.code == 0, result.err
    return result


async def test_a_schedule_starts_runs_that_list_finds_and_pause_trigger_delete_work(
    env: dict[str, str], dev_env: WorkflowEnvironment
) -> None:
    sid = f"every-{uuid.uuid4().hex[:8]}"
    _ok(await sternway(env, "schedule", "create", sid, "test-chain3", "--every", "2s"))

    async def two_runs() -> list[dict[str, Any]]:
        runs = await _runs(env, sid)
        return runs if len(runs) >= 2 else []

    runs = await _until(two_runs, "two scheduled runs")
    assert all(r["action"] == "test-chain3" and r["requestor"] == f"schedule:{sid}" for r in runs)
    assert all(r["run_id"].startswith(f"{sid}-") for r in runs)
    described = _ok(await sternway(env, "schedule", "describe", sid, "--json")).json()
    assert described["every"] == [2.0] and described["overlap"] == "skip"
    assert described["recent_runs"]
    listed = _ok(await sternway(env, "schedule", "list", "--json")).json()["schedules"]
    assert sid in [s["id"] for s in listed]
    table = _ok(await sternway(env, "schedule", "list"))
    assert sid in table.out and "test-chain3" in table.out

    _ok(await sternway(env, "schedule", "pause", sid, "--note", "quiet"))
    await asyncio.sleep(1.0)  # a run due at the moment of the pause may still start
    count = len(await _runs(env, sid))
    await asyncio.sleep(5.0)
    assert len(await _runs(env, sid)) == count, "a paused schedule started a run"
    assert _ok(await sternway(env, "schedule", "describe", sid, "--json")).json()["paused"]

    _ok(await sternway(env, "schedule", "trigger", sid))

    async def one_more() -> bool:
        return len(await _runs(env, sid)) == count + 1

    await _until(one_more, "the triggered run")
    _ok(await sternway(env, "schedule", "delete", sid))
    gone = await sternway(env, "schedule", "describe", sid)
    assert gone.code == 3, gone.err
    assert (await sternway(env, "schedule", "pause", sid)).code == 3


async def test_overlap_skip_never_runs_two_at_once(
    env: dict[str, str], dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    sid = f"slow-{uuid.uuid4().hex[:8]}"
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"sleep": {"j1": 3.0}}))
    create = ("create", sid, "test-chain3", "--every", "1s", "--args-file", str(args))
    _ok(await sternway(env, "schedule", *create, "--overlap", "skip"))

    async def two_done() -> list[dict[str, Any]]:
        runs = [r for r in await _runs(env, sid) if r["finished_at"]]
        return runs if len(runs) >= 2 else []

    await _until(two_done, "two slow scheduled runs to finish", 60)
    _ok(await sternway(env, "schedule", "delete", sid))
    client: Client = dev_env.client
    spans = []
    for run in await _runs(env, sid):
        described = await client.get_workflow_handle(run["run_id"]).describe()
        spans.append((described.start_time, described.close_time))
    spans.sort(key=lambda span: span[0])
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end is not None and end <= start, f"two scheduled runs overlapped: {spans}"


async def test_bad_schedules_are_refused_and_create_nothing(env: dict[str, str]) -> None:
    sid = f"bad-{uuid.uuid4().hex[:8]}"
    cases = [
        ("create", sid, "test-chain3", "--every", "2s", "--arg", "nope=1"),
        ("create", sid, "no-such-action", "--every", "2s"),
        ("create", sid, "test-chain3"),
        ("create", sid, "test-chain3", "--every", "2s", "--cron", "* * * * *"),
        ("create", sid, "test-chain3", "--cron", "not a cron"),
        ("create", sid, "test-chain3", "--every", "soon"),
        ("create", "bad id!", "test-chain3", "--every", "2s"),
    ]
    for case in cases:
        result = await sternway(env, "schedule", *case)
        assert result.code == 2, (case, result.out, result.err)
        assert "Traceback" not in result.err and len(result.err.strip().splitlines()) <= 2
    assert (await sternway(env, "schedule", "describe", sid)).code == 3
