"""Scenarios of whole runs: throughput, 1-job latency, rollback cost, SQLite settings."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench import _actions, _bare
from bench._harness import (
    BARE_QUEUE,
    BARE_UNSANDBOXED_QUEUE,
    Bench,
    Result,
    Row,
    ab_rounds,
    median,
    percentile,
    rotated_rounds,
    timed,
)

THROUGHPUT = {"tiny": (5, 3), "full": (200, 6)}  # runs of 10 jobs per round, rounds
LATENCY = {"tiny": 6, "full": 150}  # runs of each side, one after the other
ROLLBACK = {"tiny": (3, 2), "full": (50, 6)}  # runs per round, rounds
SQLITE = {"tiny": (5, 2), "full": (200, 4)}
JOBS = 10


async def _jobs_per_s(runs: int, start: Callable[[], Awaitable[Any]]) -> float:
    """Jobs per second of ``runs`` 10-job runs, each from ``start()``, all started at once."""
    return runs * JOBS / await timed([start() for _ in range(runs)])


async def _warm_up(bench: Bench) -> None:
    """A few runs of each side first: imports, caches and connections are warm before timing."""
    await timed([bench.sw_run(_actions.CHAIN) for _ in range(3)])
    await timed([bench.bare_run(_bare.CHAIN, JOBS) for _ in range(3)])


async def throughput(bench: Bench, size: str, rounds: int | None) -> Result:
    """N runs of 10 chained no-op jobs started at once, until all completed: jobs/s.

    The bar is against the baseline as a Temporal user runs it, in the SDK's default sandbox. A
    third side runs the baseline with no sandbox, as Sternway's worker runs its interpreter:
    what the engine itself adds, without the difference in sandboxing.
    """
    runs, default_rounds = THROUGHPUT[size]
    rounds = rounds or default_rounds
    await _warm_up(bench)
    await timed(
        [bench.bare_run(_bare.CHAIN, JOBS, task_queue=BARE_UNSANDBOXED_QUEUE) for _ in range(3)]
    )

    async def sternway() -> float:
        return await _jobs_per_s(runs, lambda: bench.sw_run(_actions.CHAIN))

    async def bare() -> float:
        return await _jobs_per_s(runs, lambda: bench.bare_run(_bare.CHAIN, JOBS))

    async def bare_unsandboxed() -> float:
        return await _jobs_per_s(
            runs, lambda: bench.bare_run(_bare.CHAIN, JOBS, task_queue=BARE_UNSANDBOXED_QUEUE)
        )

    figures = await rotated_rounds(
        rounds, {"sternway": sternway, "bare": bare, "bare_unsandboxed": bare_unsandboxed}
    )
    sw, base, base_ns = figures["sternway"], figures["bare"], figures["bare_unsandboxed"]
    return Result(
        scenario="throughput",
        title=f"Throughput: {runs} runs × {JOBS} chained no-op jobs, started at once",
        measured="Sternway",
        baseline="bare SDK (SDK-default sandbox; second row: no sandbox)",
        rows=[
            Row(
                "throughput",
                f"{runs} runs × {JOBS} no-op jobs",
                "jobs/s",
                median(sw),
                median(base),
                goal=">= 0.95",
                note=f"median of {len(sw)} rounds; ratio: median of per-round ratios",
                rounds=(sw, base),
            ),
            Row(
                "throughput",
                f"{runs} runs × {JOBS} no-op jobs, against a baseline with no sandbox",
                "jobs/s",
                median(sw),
                median(base_ns),
                note=f"median of {len(sw)} rounds; ratio: median of per-round ratios",
                rounds=(sw, base_ns),
            ),
        ],
        data={
            "runs": runs,
            "jobs": JOBS,
            "sternway_jobs_s": sw,
            "bare_jobs_s": base,
            "bare_unsandboxed_jobs_s": base_ns,
        },
    )


async def latency(bench: Bench, size: str, rounds: int | None) -> Result:
    """One run of one no-op job at a time, from submit until its result: p50 and p99."""
    samples = rounds or LATENCY[size]
    await _warm_up(bench)

    async def sternway() -> float:
        started = time.perf_counter()
        await bench.sw_run(_actions.ONE)
        return (time.perf_counter() - started) * 1000

    async def bare() -> float:
        started = time.perf_counter()
        await bench.bare_run(_bare.CHAIN, 1)
        return (time.perf_counter() - started) * 1000

    sw, base = await ab_rounds(samples, sternway, bare)
    return Result(
        scenario="latency",
        title="Latency: a 1-job run, submit to COMPLETED, one run at a time",
        measured="Sternway",
        baseline="bare SDK",
        rows=[
            Row(
                "latency",
                "1-job run, p50",
                "ms",
                median(sw),
                median(base),
                goal="<= 1.25",
                note=f"{samples} runs of each side, alternating",
            ),
            Row("latency", "1-job run, p99", "ms", percentile(sw, 99), percentile(base, 99)),
        ],
        data={"samples": samples, "sternway_ms": sw, "bare_ms": base},
    )


async def rollback(bench: Bench, size: str, rounds: int | None) -> Result:
    """Runs of 10 jobs whose 10th fails for good, then 10 rollbacks, newest first: runs/s."""
    runs, default_rounds = ROLLBACK[size]
    rounds = rounds or default_rounds
    await _warm_up(bench)

    async def sternway() -> float:
        return runs / await timed(
            [bench.sw_run(_actions.SAGA, expect="FAILED") for _ in range(runs)]
        )

    async def bare() -> float:
        return runs / await timed(
            [bench.bare_run(_bare.SAGA, JOBS, fails=True) for _ in range(runs)]
        )

    sw, base = await ab_rounds(rounds, sternway, bare)
    return Result(
        scenario="rollback",
        title=f"Rollback cost: {runs} runs of {JOBS} jobs failing at job {JOBS}, "
        f"then {JOBS} rollbacks (bare: a saga written by hand)",
        measured="Sternway",
        baseline="bare SDK saga",
        rows=[
            Row(
                "rollback",
                f"{runs} failing runs, {JOBS} jobs + {JOBS} rollbacks each",
                "runs/s",
                median(sw),
                median(base),
                goal=">= 0.95",
                note=f"median of {len(sw)} rounds; ratio: median of per-round ratios; "
                f"activities/s = runs/s × {2 * JOBS}",
                rounds=(sw, base),
            )
        ],
        data={"runs": runs, "sternway_runs_s": sw, "bare_runs_s": base},
    )


async def sqlite(bench: Bench, size: str, rounds: int | None) -> Result:
    """The bare throughput on the embedded default (WAL) and on the dev server's own SQLite
    settings: two servers of this run, the same workload, alternating."""
    from temporalio.client import Client

    runs, default_rounds = SQLITE[size]
    rounds = rounds or default_rounds
    plain = await bench.start_server("default-pragmas", pragmas=())
    client = await Client.connect(plain.address)
    await bench.keep(bench.bare_worker(client))
    await timed([bench.bare_run(_bare.CHAIN, JOBS) for _ in range(3)])
    await timed([bench.bare_run(_bare.CHAIN, JOBS, client=client) for _ in range(3)])

    async def wal() -> float:
        return await _jobs_per_s(runs, lambda: bench.bare_run(_bare.CHAIN, JOBS))

    async def default() -> float:
        return await _jobs_per_s(
            runs, lambda: bench.bare_run(_bare.CHAIN, JOBS, client=client, task_queue=BARE_QUEUE)
        )

    tuned, plain_figures = await ab_rounds(rounds, wal, default)
    data: dict[str, Any] = {
        "runs": runs,
        "jobs": JOBS,
        "embedded_default_pragmas": list(_pragmas()),
        "wal_jobs_s": tuned,
        "dev_server_default_jobs_s": plain_figures,
    }
    return Result(
        scenario="sqlite",
        title="SQLite settings: the bare throughput on the embedded default "
        f"({', '.join(_pragmas())}) against the dev server's own defaults",
        measured="embedded default (WAL)",
        baseline="dev server defaults",
        rows=[
            Row(
                "sqlite",
                f"bare SDK, {runs} runs × {JOBS} no-op jobs",
                "jobs/s",
                median(tuned),
                median(plain_figures),
                goal="> 1.0",
                note=f"two dev servers of this run, median of {len(tuned)} rounds; "
                "ratio: median of per-round ratios",
                rounds=(tuned, plain_figures),
            )
        ],
        data=data,
    )


def _pragmas() -> tuple[str, ...]:
    from sternway.starter._dev import SQLITE_PRAGMAS

    return SQLITE_PRAGMAS
