"""Locks: what an uncontended key adds to a 1-job run, and 200 runs sharing 10 keys.

Both sides are Sternway runs of one no-op job with the same args; one side's action locks
``bench/<key>``. The bare SDK has no locks to compare with: the baseline is the same run without
one, and the added time is also given in round trips to the server, measured alongside: a read
(the p50 of a ``DescribeNamespace`` call) and a write (a signal, which the server persists).
Taking a free key is one write (the run starts the key's lock) and giving it back is another.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

from bench import _actions
from bench._harness import Bench, Result, Row, ab_rounds, median, timed

LATENCY = {"tiny": 6, "full": 100}  # runs of each side, one at a time, alternating
SHARED = {"tiny": (20, 4, 2), "full": (200, 10, 4)}  # runs, keys, rounds


def _to_first_job(status: dict[str, Any]) -> float:
    """Milliseconds from the run's start to its first job's start."""
    created = datetime.fromisoformat(status["created_at"])
    first = datetime.fromisoformat(status["jobs"][0]["started_at"])
    return (first - created).total_seconds() * 1000


async def _signal_round_trips(bench: Bench, samples: int) -> list[float]:
    """Milliseconds of each of ``samples`` signals to a workflow that no worker polls for: a
    call the server must persist, as taking and giving back a key are."""
    handle = await bench.sw_client.start_workflow(
        "bench.round-trip", id=f"bench-round-trip-{uuid.uuid4().hex[:8]}", task_queue="bench-none"
    )
    trips = []
    try:
        for _ in range(samples):
            started = time.perf_counter()
            await handle.signal("ping")
            trips.append((time.perf_counter() - started) * 1000)
    finally:
        await handle.terminate("round trips measured")
    return trips


async def locks(bench: Bench, size: str, rounds: int | None) -> Result:
    """Uncontended: submit to done and start to first job, with and without a lock; shared:
    runs/s of N runs over K keys against the same runs with no lock."""
    samples = rounds or LATENCY[size]
    key = uuid.uuid4().hex[:8]
    for _ in range(3):
        await bench.sw_run(_actions.LOCKED, {"key": key})
        await bench.sw_run(_actions.KEYED, {"key": key})
    first_job: dict[str, list[float]] = {"locked": [], "plain": []}

    def side(action: str, name: str) -> Any:
        async def one() -> float:
            started = time.perf_counter()
            _, status = await bench.sw_run(action, {"key": key})
            elapsed = (time.perf_counter() - started) * 1000
            first_job[name].append(_to_first_job(status))
            return elapsed

        return one

    locked, plain = await ab_rounds(
        samples, side(_actions.LOCKED, "locked"), side(_actions.KEYED, "plain")
    )
    trips = []
    for _ in range(samples):
        started = time.perf_counter()
        await bench.sw_client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=bench.sw_client.namespace)
        )
        trips.append((time.perf_counter() - started) * 1000)
    writes = await _signal_round_trips(bench, samples)
    added = median(locked) - median(plain)
    trip, write = median(trips), median(writes)

    runs, keys, default_rounds = SHARED[size]

    def shared(action: str) -> Any:
        async def round_() -> float:
            tag = uuid.uuid4().hex[:6]
            return runs / await timed(
                [bench.sw_run(action, {"key": f"{tag}-{i % keys}"}) for i in range(runs)]
            )

        return round_

    with_locks, without = await ab_rounds(
        rounds or default_rounds, shared(_actions.LOCKED), shared(_actions.KEYED)
    )
    return Result(
        scenario="locks",
        title="Locks: a 1-job run with one uncontended key, and runs sharing keys "
        "(baseline: the same runs without a lock)",
        measured="with a lock",
        baseline="no lock",
        rows=[
            Row(
                "locks",
                "1-job run, uncontended key, submit to COMPLETED p50",
                "ms",
                median(locked),
                median(plain),
                note=f"+{added:.1f} ms = {added / trip:.1f} read round trips (DescribeNamespace "
                f"p50 {trip:.1f} ms; bar: at most 1, {'ok' if added <= trip else 'NOT met'}) = "
                f"{added / write:.1f} write round trips (SignalWorkflow p50 {write:.1f} ms); "
                f"{samples} runs of each side, alternating",
            ),
            Row(
                "locks",
                "1-job run, uncontended key, run start to first job p50",
                "ms",
                median(first_job["locked"]),
                median(first_job["plain"]),
            ),
            Row(
                "locks",
                f"{runs} runs of 1 job sharing {keys} keys",
                "runs/s",
                median(with_locks),
                median(without),
                note=f"median of {len(with_locks)} rounds; ratio: median of per-round ratios; "
                f"at most {keys} runs hold keys at once",
                rounds=(with_locks, without),
            ),
        ],
        data={
            "samples": samples,
            "locked_ms": locked,
            "plain_ms": plain,
            "round_trip_ms": trips,
            "signal_round_trip_ms": writes,
            "locked_first_job_ms": first_job["locked"],
            "plain_first_job_ms": first_job["plain"],
            "runs": runs,
            "keys": keys,
            "with_locks_runs_s": with_locks,
            "without_runs_s": without,
        },
    )
