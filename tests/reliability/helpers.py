"""Helpers of the reliability suite: worker processes, effects files, histories, figures."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from temporalio.api.enums.v1 import TimeoutType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from sternway.workflows.models import AttemptLog
from tests.cli import BIN, REPO, cli_env

T = TypeVar("T")

MODULE = "tests.reliability.actions"
# The errors of a delivery lost with its worker (killed, or shut down), delivered again after.
LOST = ("heartbeat timeout", "the worker shut down during the attempt")
# Figures each scenario produced, printed at the end of the session (see conftest.py) and, when
# STERNWAY_RELIABILITY_JSON names a file, written there as JSON.
FIGURES: dict[str, dict[str, Any]] = {}


async def until(
    check: Callable[[], Awaitable[T | None]], what: str, timeout: float, every: float = 0.2
) -> T:
    """Poll ``check`` until it returns something other than None; fail after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await check()
        if found is not None:
            return found
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(every)


class WorkerProcess:
    """A ``sternway worker`` subprocess running the reliability actions, its output in a file."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    @classmethod
    async def start(
        cls,
        address: str,
        task_queue: str,
        log: Path,
        actions_path: str = "",
        modules: str = MODULE,
    ) -> WorkerProcess:
        """Start a worker (its output in ``log``, one file per worker) and wait until it polls.

        ``actions_path``: folders of YAML runbooks it loads too (none by default); ``modules``:
        the Python modules of its actions (the reliability actions by default).
        """
        env = cli_env(
            address, task_queue, STERNWAY_MODULES=modules, STERNWAY_ACTIONS_PATH=actions_path
        )
        with log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                str(BIN / "sternway"),
                "worker",
                "--task-queue",
                task_queue,
                "--grace",
                "5s",
                env=env,
                cwd=REPO,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        worker = cls(proc, log)
        await until(worker._started, f"worker {proc.pid} to start (see {log})", 60)
        return worker

    async def _started(self) -> bool | None:
        if self.proc.returncode is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}; see {self.log}")
        return True if "worker started" in self.log.read_text(errors="replace") else None

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.returncode is None

    async def kill9(self) -> None:
        """``kill -9`` the worker and reap it."""
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGINT, as Ctrl-C would, and wait for a clean exit; kill it if it hangs."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                await self.kill9()
        return self.proc.returncode if self.proc.returncode is not None else -1


@dataclass(frozen=True)
class Line:
    """One line of an effects file: a job's effect, or a rollback (``undo``)."""

    kind: str  # "effect" or "undo"
    run_id: str
    job: str
    phase: str
    attempt: int
    key: str
    pid: int | None


def parse_key(key: str) -> tuple[str, str, str, int]:
    """``<run_id>/<job>/<phase>/<attempt>`` split into its parts."""
    run_id, job, phase, attempt = key.rsplit("/", 3)
    return run_id, job, phase, int(attempt)


def read_effects(path: Path) -> list[Line]:
    """Every line of an effects file, in the order they were written."""
    lines: list[Line] = []
    if not path.exists():
        return lines
    for text in path.read_text().splitlines():
        parts = text.split()
        if parts[0] == "undo":
            _, job, key = parts
            run_id, _, phase, attempt = parse_key(key)
            lines.append(Line("undo", run_id, job, phase, attempt, key, None))
        else:
            key, job, pid = parts
            run_id, _, phase, attempt = parse_key(key)
            lines.append(Line("effect", run_id, job, phase, attempt, key, int(pid)))
    return lines


def by_run(lines: list[Line]) -> dict[str, list[Line]]:
    """Lines grouped by run, in order."""
    grouped: dict[str, list[Line]] = {}
    for line in lines:
        grouped.setdefault(line.run_id, []).append(line)
    return grouped


def undone(lines: list[Line]) -> tuple[list[str], int]:
    """The rollback keys in the order they were first written, and how many lines repeated a key.

    A repeated key is a rollback attempt delivered again after its worker was lost (a slow machine
    can miss a heartbeat too); each must match a lost delivery in the job's rollback log.
    """
    keys = [line.key for line in lines if line.kind == "undo"]
    first = list(dict.fromkeys(keys))
    return first, len(keys) - len(first)


def lost_deliveries(log: list[AttemptLog]) -> int:
    """Entries of an execute or rollback log that are deliveries lost with their worker."""
    return sum(1 for e in log if e.error is not None and e.error.message in LOST)


def duplicate_keys(lines: list[Line]) -> Counter[str]:
    """Keys written more than once (the same attempt executed again), with their counts."""
    counts = Counter(line.key for line in lines)
    return Counter({key: n for key, n in counts.items() if n > 1})


async def history(client: Client, run_id: str) -> list[HistoryEvent]:
    """The run's history events."""
    handle = client.get_workflow_handle(run_id)
    return [event async for event in handle.fetch_history_events()]


def scheduled(events: list[HistoryEvent]) -> list[str]:
    """Activity ids in the order their ``ActivityTaskScheduled`` events were written."""
    return [
        e.activity_task_scheduled_event_attributes.activity_id
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]


def start_order(events: list[HistoryEvent]) -> list[str]:
    """Jobs in the order of their first execute activity in history: the start order."""
    order: list[str] = []
    for activity_id in scheduled(events):
        if activity_id.startswith("rollback:"):
            continue
        job = activity_id.partition("#")[0]
        if job not in order:
            order.append(job)
    return order


def rollback_order(events: list[HistoryEvent]) -> list[str]:
    """Jobs in the order their rollbacks were first scheduled."""
    order: list[str] = []
    for activity_id in scheduled(events):
        if activity_id.startswith("rollback:"):
            job = activity_id.removeprefix("rollback:").partition("#")[0]
            if job not in order:
                order.append(job)
    return order


def count_events(events: list[HistoryEvent], field: str) -> int:
    """How many events carry ``field`` (e.g. ``workflow_task_failed_event_attributes``)."""
    return sum(1 for e in events if e.WhichOneof("attributes") == field)


def task_timeouts(events: list[HistoryEvent]) -> Counter[str]:
    """Workflow task timeouts by kind: ``SCHEDULE_TO_START`` (the task waited on the sticky queue
    of a worker that is gone) and ``START_TO_CLOSE`` (a worker took the task, then died)."""
    return Counter(
        TimeoutType.Name(e.workflow_task_timed_out_event_attributes.timeout_type).removeprefix(
            "TIMEOUT_TYPE_"
        )
        for e in events
        if e.WhichOneof("attributes") == "workflow_task_timed_out_event_attributes"
    )


def record(scenario: str, **figures: Any) -> None:
    """Keep a scenario's figures for the session summary (and the JSON file, if asked for)."""
    FIGURES.setdefault(scenario, {}).update(figures)
    target = os.environ.get("STERNWAY_RELIABILITY_JSON")
    if target:
        Path(target).write_text(json.dumps(FIGURES, indent=2, default=str) + "\n")
