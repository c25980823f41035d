"""Fan-out: one ``each`` job over 1,000, 5,000 and 10,000 no-op items, 100 at a time.

Sternway runs an ``each`` over more than ``chunk_size`` (500) items in child chunk runs; the
baseline is the same shape written by hand (child workflows of 500 items, 4 at a time, the window
of 100 shared between them). Both record the longest history, which must stay far below Temporal's
51,200-event limit.
"""

from __future__ import annotations

import time
from typing import Any

from temporalio.client import Client

from bench import _actions, _bare
from bench._harness import Bench, Result, Row, median

SIZES = {"tiny": ((30,), 1), "full": ((1_000, 5_000, 10_000), 2)}
HISTORY_LIMIT = 51_200


async def history_lengths(client: Client, ids: list[str]) -> list[int]:
    lengths: list[int] = []
    for run_id in ids:
        description = await client.get_workflow_handle(run_id).describe()
        lengths.append(description.raw_description.workflow_execution_info.history_length)
    return lengths


async def fanout(bench: Bench, size: str, rounds: int | None) -> Result:
    """Each size, both sides, alternating; time to COMPLETED, jobs/s and history lengths."""
    counts, default_rounds = SIZES[size]
    rounds = rounds or default_rounds
    # The tiny size uses small chunks, so that it still goes through chunk runs.
    action = _actions.FAN if size == "full" else _actions.FAN_SMALL_CHUNKS
    chunk_size = _bare.FAN_CHUNK_SIZE if size == "full" else _actions.SMALL_CHUNK
    data: dict[str, Any] = {"concurrency": _actions.FAN_CONCURRENCY, "sizes": {}}
    rows: list[Row] = []

    async def sternway(n: int) -> tuple[float, list[int]]:
        started = time.perf_counter()
        run_id, status = await bench.sw_run(action, {"n": n})
        elapsed = time.perf_counter() - started
        output = status["jobs"][0]["output"]
        if output["completed"] != n:
            raise RuntimeError(f"{run_id}: {output['completed']} of {n} items completed")
        return elapsed, await history_lengths(bench.sw_client, [run_id, *output["chunks"]])

    async def bare(n: int) -> tuple[float, list[int]]:
        started = time.perf_counter()
        arg = {"n": n, "concurrency": _actions.FAN_CONCURRENCY, "chunk_size": chunk_size}
        run_id, done = await bench.bare_run(_bare.FAN, arg)
        elapsed = time.perf_counter() - started
        if done != n:
            raise RuntimeError(f"{run_id}: {done} of {n} items completed")
        chunks = [f"{run_id}/{i}" for i in range(-(-n // chunk_size))]
        return elapsed, await history_lengths(bench.bare_client, [run_id, *chunks])

    for n in counts:
        sw_times: list[float] = []
        bare_times: list[float] = []
        sw_history: list[int] = []
        bare_history: list[int] = []
        for r in range(rounds):
            order = (sternway, bare) if r % 2 == 0 else (bare, sternway)
            for side in order:
                elapsed, lengths = await side(n)
                (sw_times if side is sternway else bare_times).append(elapsed)
                (sw_history if side is sternway else bare_history).append(max(lengths))
        sw_t, bare_t = median(sw_times), median(bare_times)
        longest = max(sw_history)
        rows += [
            Row(
                "fanout",
                f"each over {n:,} items: time to COMPLETED",
                "s",
                sw_t,
                bare_t,
                note=f"median of {rounds}; longest history {longest:,} events "
                f"(bare {max(bare_history):,}; limit {HISTORY_LIMIT:,})",
            ),
            Row(
                "fanout",
                f"each over {n:,} items: throughput",
                "jobs/s",
                n / sw_t,
                n / bare_t,
                goal=">= 0.95" if n == 10_000 else None,
                note="ratio: median of per-round ratios",
                rounds=([n / t for t in sw_times], [n / t for t in bare_times]),
            ),
        ]
        data["sizes"][str(n)] = {
            "sternway_s": sw_times,
            "bare_s": bare_times,
            "sternway_longest_history": sw_history,
            "bare_longest_history": bare_history,
            "chunk_size": chunk_size,
        }
    return Result(
        scenario="fanout",
        title=f"Fan-out: one each job over N no-op items, {_actions.FAN_CONCURRENCY} at a time",
        measured="Sternway",
        baseline="bare SDK (child workflows by hand)",
        rows=rows,
        data=data,
    )
