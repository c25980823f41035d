"""Scale points, recorded as figures (no bars, no baseline): one ``each`` over 100,000 items
(listed in the plan, :mod:`bench._listed`), and 5,000 open runs waiting for an approval, each in
a ``sternway worker`` process of its own so that its RSS is the worker's alone.

The fan-out gives its time to COMPLETED, the worker's peak RSS (``VmHWM``) and the longest history
of the run and its chunk runs. The waiting runs give the worker's RSS once all of them have been
loaded (each answered a status query) and have gone quiet: the SDK keeps at most
``max_cached_workflows`` (1,000 by default) of them in memory; the others are replayed from
their history when they next have work.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from bench import _actions, _listed
from bench._fanout import HISTORY_LIMIT, history_lengths
from bench._harness import BIN, REPO, REQUESTOR, Bench, Result, Row, env_for_cli
from bench._memory import in_batches, settled_rss, worker_process
from sternway._client import RunHandle, submit

# The fan-out's action (its items listed in the plan) and how many runs wait for an approval.
SIZES = {"tiny": (_listed.LISTED_TINY, 30), "full": (_listed.LISTED, 5_000)}


async def scale(bench: Bench, size: str, rounds: int | None) -> Result:
    """One measurement of each (``rounds`` is not used)."""
    action, waiting = SIZES[size]
    items = _listed.ITEMS[action]
    log = bench.workdir / "scale-workers.log"

    @contextlib.asynccontextmanager
    async def warm_worker(name: str) -> AsyncIterator[tuple[str, int, int]]:
        """A ``sternway worker`` process on a queue of its own, after one run: its queue, its
        pid and its idle RSS."""
        queue = f"scale-{name}-{uuid.uuid4().hex[:6]}"
        env = env_for_cli(
            bench.server.address,
            STERNWAY_MODULES="bench._actions,bench._listed",
            PYTHONPATH=str(REPO),
            STERNWAY_TASK_QUEUE=queue,
        )
        argv = [str(BIN / "sternway"), "worker", "--task-queue", queue]
        async with worker_process(argv, env, log) as pid:
            await bench.sw_run(_actions.ONE, task_queue=queue)
            idle, _ = await settled_rss(pid)
            yield queue, pid, idle

    async with warm_worker("fan") as (fan_queue, pid, idle_kib):
        started = time.perf_counter()
        # Not through bench.sw_run: the listed actions are only in the scale workers' registry.
        handle = await submit(
            bench.sw_client, action, {}, task_queue=fan_queue, requestor=REQUESTOR
        )
        status = await RunHandle(bench.sw_client, handle.run_id).wait()
        fan_seconds = time.perf_counter() - started
        _, fan_peak_kib = await settled_rss(pid)
    run_id = handle.run_id
    output = status.job("fan").output
    if status.state != "COMPLETED" or output["completed"] != items:
        raise RuntimeError(f"{run_id} ended {status.state}: {output}")
    lengths = await history_lengths(bench.sw_client, [run_id, *output["chunks"]])

    async with warm_worker("hold") as (hold_queue, pid, hold_idle_kib):
        started = time.perf_counter()

        async def hold(_: int) -> None:
            handle = await submit(
                bench.sw_client, _actions.HOLD, {}, task_queue=hold_queue, requestor=REQUESTOR
            )
            await RunHandle(bench.sw_client, handle.run_id).status()  # loaded by the worker

        await in_batches(waiting, hold)
        hold_seconds = time.perf_counter() - started
        hold_kib, hold_peak_kib = await settled_rss(pid)

    mib = 1024.0
    data: dict[str, Any] = {
        "items": items,
        "fan_seconds": fan_seconds,
        "fan_worker_idle_kib": idle_kib,
        "fan_worker_peak_kib": fan_peak_kib,
        "fan_chunks": len(output["chunks"]),
        "fan_longest_history": max(lengths),
        "waiting": waiting,
        "waiting_seconds_to_load": hold_seconds,
        "waiting_worker_idle_kib": hold_idle_kib,
        "waiting_worker_kib": hold_kib,
        "waiting_worker_peak_kib": hold_peak_kib,
    }
    return Result(
        scenario="scale",
        title=f"Scale points: an each over {items:,} items; {waiting:,} runs waiting for an "
        "approval in one worker",
        measured="sternway worker",
        baseline="(none: figures, not bars)",
        rows=[
            Row(
                "scale",
                f"each over {items:,} items: time to COMPLETED",
                "s",
                fan_seconds,
                note=f"{items / fan_seconds:.0f} jobs/s; items listed in the plan; "
                f"{len(output['chunks'])} chunk runs; longest history {max(lengths):,} events "
                f"(limit {HISTORY_LIMIT:,})",
            ),
            Row(
                "scale",
                f"each over {items:,} items: worker peak RSS",
                "MiB",
                fan_peak_kib / mib,
                note=f"idle before: {idle_kib / mib:.0f} MiB",
            ),
            Row(
                "scale",
                f"worker RSS with {waiting:,} runs waiting for an approval",
                "MiB",
                hold_kib / mib,
                note=f"idle before: {hold_idle_kib / mib:.0f} MiB; peak {hold_peak_kib / mib:.0f} "
                f"MiB; all loaded in {hold_seconds:.0f} s; the SDK caches at most 1,000 runs",
            ),
        ],
        data=data,
    )
