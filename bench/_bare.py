"""The baseline: what a Temporal user writes by hand with the bare SDK, no Sternway involved.

Plain ``@workflow.defn`` workflows and ``@activity.defn`` no-op activities with the same activity
options as Sternway's jobs (start-to-close and heartbeat timeouts, one attempt), run by a plain
``Worker`` with the same slot and poller settings as Sternway's worker, on its own task queue of
the same server. The module imports nothing but the SDK, so the workflow sandbox re-imports it
cheaply, as it would a user's own workflow module.

``python -m bench._bare --address HOST:PORT --task-queue Q`` runs such a worker in a process of
its own (the memory scenario measures it).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

NOOP = "bench.noop"
FAIL = "bench.fail"
UNDO = "bench.undo"

CHAIN = "bench-bare-chain"
SAGA = "bench-bare-saga"
FAN = "bench-bare-fan"
FAN_CHUNK = "bench-bare-fan-chunk"
HOLD = "bench-bare-hold"

# Sternway's job defaults: 10 minutes start-to-close, 30 s heartbeat, one attempt per activity
# (Sternway drives retries itself); rollbacks get three attempts.
_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=10),
    "heartbeat_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(maximum_attempts=1),
}
_UNDO_RETRY = RetryPolicy(maximum_attempts=3)
# Sternway runs a large each in child workflows of 500 items, 4 at a time: so does the baseline.
FAN_CHUNK_SIZE = 500
FAN_PARALLEL = 4


@activity.defn(name=NOOP)
async def noop(data: dict[str, Any]) -> dict[str, Any]:
    """Return the input, like Sternway's ``noop`` kind."""
    return data


@activity.defn(name=FAIL)
async def fail(data: dict[str, Any]) -> dict[str, Any]:
    """Fail for good, like Sternway's ``fail`` kind with ``non_retryable``."""
    raise ApplicationError("failed on purpose", type="Fail", non_retryable=True)


@activity.defn(name=UNDO)
async def undo(data: dict[str, Any]) -> dict[str, Any]:
    """A compensation that does nothing."""
    return data


ACTIVITIES = [noop, fail, undo]


@workflow.defn(name=CHAIN)
class BareChain:
    """``jobs`` no-op activities, one after the other."""

    @workflow.run
    async def run(self, jobs: int) -> list[dict[str, Any]]:
        outputs: list[dict[str, Any]] = []
        for n in range(1, jobs + 1):
            outputs.append(
                await workflow.execute_activity(NOOP, {"job": n}, result_type=dict, **_OPTIONS)
            )
        return outputs


@workflow.defn(name=SAGA)
class BareSaga:
    """A saga written by hand: ``jobs`` activities, the last one fails, then compensations run
    newest first (each registered before its activity starts, so the failed one is undone too)."""

    @workflow.run
    async def run(self, jobs: int) -> None:
        compensations: list[int] = []
        try:
            for n in range(1, jobs + 1):
                compensations.append(n)
                await workflow.execute_activity(
                    FAIL if n == jobs else NOOP, {"job": n}, result_type=dict, **_OPTIONS
                )
        except ActivityError as err:
            for n in reversed(compensations):
                await workflow.execute_activity(
                    UNDO,
                    {"job": n},
                    result_type=dict,
                    start_to_close_timeout=_OPTIONS["start_to_close_timeout"],
                    heartbeat_timeout=_OPTIONS["heartbeat_timeout"],
                    retry_policy=_UNDO_RETRY,
                )
            raise ApplicationError(
                "the saga failed", type="SagaFailed", non_retryable=True
            ) from err


@workflow.defn(name=FAN)
class BareFan:
    """``n`` no-op activities, ``concurrency`` at a time, in child workflows of ``chunk_size``
    items, ``FAN_PARALLEL`` children at a time (the window shared by the running children)."""

    @workflow.run
    async def run(self, inp: dict[str, int]) -> int:
        n, size = inp["n"], inp.get("chunk_size", FAN_CHUNK_SIZE)
        parallel = min(FAN_PARALLEL, math.ceil(n / size))
        per_chunk = max(1, inp["concurrency"] // parallel)
        window = asyncio.Semaphore(parallel)
        base = workflow.info().workflow_id

        async def chunk(index: int, first: int) -> int:
            async with window:
                done: int = await workflow.execute_child_workflow(
                    FAN_CHUNK,
                    {"first": first, "count": min(size, n - first), "concurrency": per_chunk},
                    id=f"{base}/{index}",
                    result_type=int,
                )
                return done

        done = await asyncio.gather(
            *(chunk(index, first) for index, first in enumerate(range(0, n, size)))
        )
        return sum(done)


@workflow.defn(name=FAN_CHUNK)
class BareFanChunk:
    """A slice of a fan-out: ``count`` no-op activities, ``concurrency`` at a time."""

    @workflow.run
    async def run(self, inp: dict[str, int]) -> int:
        window = asyncio.Semaphore(inp["concurrency"])

        async def item(i: int) -> dict[str, Any]:
            async with window:
                result: dict[str, Any] = await workflow.execute_activity(
                    NOOP, {"i": i}, result_type=dict, **_OPTIONS
                )
                return result

        first = inp["first"]
        outputs = await asyncio.gather(*(item(i) for i in range(first, first + inp["count"])))
        return len(outputs)


@workflow.defn(name=HOLD)
class BareHold:
    """A run that waits until it is suspended (an update) and then resumed (a signal)."""

    def __init__(self) -> None:
        self.suspended = False
        self.resumed = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.suspended and self.resumed)
        return "done"

    @workflow.update(name="suspend")
    def suspend(self) -> str:
        self.suspended = True
        return "SUSPENDED"

    @workflow.signal(name="resume")
    def resume(self) -> None:
        self.resumed = True


WORKFLOWS = [BareChain, BareSaga, BareFan, BareFanChunk, BareHold]


def create_bare_worker(client: Client, task_queue: str, **settings: Any) -> Worker:
    """A plain SDK worker of the baseline workflows, with ``settings`` (Sternway's worker
    settings, from :func:`worker.worker_settings`) and the SDK's default sandbox."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=ACTIVITIES,
        **settings,
    )


async def _serve(address: str, task_queue: str) -> None:
    from sternway.worker import worker_settings

    client = await Client.connect(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with create_bare_worker(client, task_queue, **worker_settings()):
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="a bare-SDK baseline worker")
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    options = parser.parse_args()
    asyncio.run(_serve(options.address, options.task_queue))


if __name__ == "__main__":
    main()
