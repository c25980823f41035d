"""Worker memory: the RSS of a worker process holding N open, suspended runs in its cache.

Sternway's side is ``sternway worker`` (``STERNWAY_MODULES=bench._actions``); the baseline a bare
SDK worker process (``python -m bench._bare``) whose runs wait for a signal after a ``suspend``
update. Each process gets one warm-up run, then its RSS is read (``/proc/PID/status``), N runs are
started and suspended, and it is read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.client import Client

from bench import _actions, _bare
from bench._harness import BIN, REPO, REQUESTOR, Bench, Result, Row, env_for_cli, new_id, rss_kib
from sternway._client import RunHandle, submit

RUNS = {"tiny": 20, "full": 1_000}
PARALLEL = 50  # submits and updates in flight at once


@contextlib.asynccontextmanager
async def worker_process(argv: list[str], env: dict[str, str], log: Path) -> AsyncIterator[int]:
    """A worker process for the block; SIGTERM and a wait at the end."""
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 (spawning does not block)
            argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


async def in_batches(count: int, one: Callable[[int], Awaitable[Any]]) -> None:
    """``one(n)`` for every n below ``count``, at most PARALLEL at once."""
    window = asyncio.Semaphore(PARALLEL)

    async def run(n: int) -> None:
        async with window:
            await one(n)

    await asyncio.gather(*(run(n) for n in range(count)))


async def settled_rss(pid: int) -> tuple[int, int]:
    """RSS once the process has gone quiet (after a moment for pending work and GC)."""
    await asyncio.sleep(2.0)
    return rss_kib(pid)


async def memory(bench: Bench, size: str, rounds: int | None) -> Result:
    """One measurement per side (``rounds`` is not used: each holds N runs open once)."""
    runs = RUNS[size]
    address = bench.server.address
    sw_queue, bare_queue = f"mem-sw-{uuid.uuid4().hex[:6]}", f"mem-bare-{uuid.uuid4().hex[:6]}"
    figures: dict[str, dict[str, int]] = {}

    async def sternway_side(pid: int) -> None:
        client = bench.sw_client
        first = await submit(client, _actions.ONE, {}, task_queue=sw_queue, requestor=REQUESTOR)
        await client.get_workflow_handle(first.run_id).result()
        before = await settled_rss(pid)

        async def hold(_: int) -> None:
            handle = await submit(
                client, _actions.HOLD, {}, task_queue=sw_queue, requestor=REQUESTOR
            )
            await RunHandle(client, handle.run_id).suspend()

        await in_batches(runs, hold)
        after = await settled_rss(pid)
        figures["sternway"] = _figures(before, after)

    async def bare_side(pid: int) -> None:
        client: Client = bench.bare_client
        await bench.bare_run(_bare.CHAIN, 1, task_queue=bare_queue)
        before = await settled_rss(pid)

        async def hold(_: int) -> None:
            handle = await client.start_workflow(
                _bare.HOLD, id=new_id(_bare.HOLD), task_queue=bare_queue
            )
            await handle.execute_update("suspend")

        await in_batches(runs, hold)
        after = await settled_rss(pid)
        figures["bare"] = _figures(before, after)

    log = bench.workdir / "workers.log"
    sw_env = env_for_cli(
        address,
        STERNWAY_MODULES="bench._actions",
        PYTHONPATH=str(REPO),
        STERNWAY_TASK_QUEUE=sw_queue,
    )
    sw_argv = [str(BIN / "sternway"), "worker", "--task-queue", sw_queue]
    bare_argv = [
        sys.executable,
        "-m",
        "bench._bare",
        "--address",
        address,
        "--task-queue",
        bare_queue,
    ]
    bare_env = {**os.environ, "PYTHONPATH": str(REPO)}
    async with worker_process(sw_argv, sw_env, log) as pid:
        await sternway_side(pid)
    async with worker_process(bare_argv, bare_env, log) as pid:
        await bare_side(pid)

    sw, bare = figures["sternway"], figures["bare"]
    mib = 1024.0
    return Result(
        scenario="memory",
        title=f"Worker memory: one worker process holding {runs:,} open suspended runs",
        measured="sternway worker",
        baseline="bare SDK worker",
        rows=[
            Row(
                "memory",
                f"worker RSS with {runs:,} suspended runs",
                "MiB",
                sw["after_kib"] / mib,
                bare["after_kib"] / mib,
                note=f"idle after one run: {sw['before_kib'] / mib:.0f} MiB "
                f"(bare {bare['before_kib'] / mib:.0f} MiB)",
            ),
            Row(
                "memory",
                "RSS growth per suspended run",
                "KiB",
                sw["growth_kib"] / runs,
                bare["growth_kib"] / runs,
            ),
        ],
        data={"runs": runs, "sternway": sw, "bare": bare},
    )


def _figures(before: tuple[int, int], after: tuple[int, int]) -> dict[str, int]:
    return {
        "before_kib": before[0],
        "after_kib": after[0],
        "peak_kib": after[1],
        "growth_kib": after[0] - before[0],
    }
