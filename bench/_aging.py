"""Aging: the bare throughput of the embedded default (``sternway dev``'s SQLite settings) on a
fresh database, and again after it holds 2,500 and 10,000 more closed runs.

Sternway's side is left out on purpose: what ages is the server's database, and the bare SDK
measures it without anything of Sternway's in the way (the throughput scenario gives Sternway
against bare on one server). Runs are added as 1-job runs of the bare chain, 100 at a time (ten
times quicker to add than the measured 10-job runs); each figure is the median of its rounds of
N runs started at once. A last figure serves the oldest database from a server restarted right
after those rounds: the state the server process built up in memory is gone, what the database
holds (its size, tasks not yet done) stays (docs/BENCHMARKS.md, "Aging of the embedded default").
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from temporalio.client import Client

from bench import _bare
from bench._harness import Bench, Result, Row, median, timed

AGES = {"tiny": (0, 40, 120), "full": (0, 2_500, 10_000)}
MEASURE = {"tiny": (10, 1), "full": (200, 3)}  # runs per round, rounds
JOBS = 10
FILL_JOBS = 1
QUEUE = "bench-aging"
FILL_PARALLEL = 100


def _db_mib(db: Path) -> float:
    """The database with its write-ahead log, in MiB."""
    files = [db, db.with_name(db.name + "-wal")]
    return sum(f.stat().st_size for f in files if f.exists()) / 2**20


async def _one(bench: Bench, client: Client, jobs: int = JOBS) -> Any:
    return await bench.bare_run(_bare.CHAIN, jobs, client=client, task_queue=QUEUE)


async def _fill(bench: Bench, client: Client, count: int) -> None:
    """Add ``count`` closed 1-job runs, at most FILL_PARALLEL at a time."""
    window = asyncio.Semaphore(FILL_PARALLEL)

    async def limited() -> None:
        async with window:
            await _one(bench, client, FILL_JOBS)

    await asyncio.gather(*(limited() for _ in range(count)))


async def aging(bench: Bench, size: str, rounds: int | None) -> Result:
    """Fill, measure, fill again: jobs/s at each age of the database; then once more at the
    last age with the server restarted on that database (its process's state gone)."""
    ages = AGES[size]
    runs, default_rounds = MEASURE[size]
    rounds = rounds or default_rounds
    figures: dict[int, list[float]] = {}
    sizes: dict[int, float] = {}

    async def measure(client: Client) -> list[float]:
        return [
            runs * JOBS / await timed([_one(bench, client) for _ in range(runs)])
            for _ in range(rounds)
        ]

    server = await bench.start_server("aging")
    client = await Client.connect(server.address)
    async with bench.bare_worker(client, QUEUE):
        await _fill(bench, client, 3)
        held = 0
        for age in ages:
            await _fill(bench, client, max(age - held, 0))
            held = max(age, held)
            figures[age] = await measure(client)
            held += runs * rounds
            sizes[age] = _db_mib(server.db)
    server.stop()
    server = await bench.start_server("aging")
    client = await Client.connect(server.address)
    async with bench.bare_worker(client, QUEUE):
        await _fill(bench, client, 3)  # the first runs of a new server start its workers' caches
        restarted = await measure(client)
    fresh = median(figures[ages[0]])
    rows = [
        Row(
            "aging",
            f"bare SDK on the embedded default, after {age:,} runs",
            "jobs/s",
            median(figures[age]),
            fresh,
            goal=">= 0.90" if age == ages[-1] else None,
            note=f"median of {rounds} rounds of {runs} runs; database {sizes[age]:,.0f} MiB",
        )
        for age in ages
    ]
    rows.append(
        Row(
            "aging",
            f"the same database after {ages[-1]:,} runs, served by a restarted server",
            "jobs/s",
            median(restarted),
            fresh,
            note=f"median of {rounds} rounds of {runs} runs",
        )
    )
    return Result(
        scenario="aging",
        title="Aging: the bare throughput of the embedded default as its database fills "
        f"(baseline: the same on the fresh database; runs of {JOBS} jobs)",
        measured="after N runs",
        baseline="fresh database",
        rows=rows,
        data={
            "ages": list(ages),
            "runs": runs,
            "jobs": JOBS,
            "jobs_s": {str(a): f for a, f in figures.items()},
            "db_mib": {str(a): s for a, s in sizes.items()},
            "restarted_jobs_s": restarted,
        },
    )
