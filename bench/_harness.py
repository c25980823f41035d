"""What the scenarios share: the dev server, clients and workers, A/B rounds, result rows.

One :class:`Bench` starts the embedded dev server (``starter._dev.DevServer``, the embedded
default's SQLite pragmas) on free ports, in a temporary folder, and two workers in this process:
Sternway's (``worker.create_worker``) on one task queue and the bare-SDK baseline's
(:mod:`bench._bare`) on another, with the same slot and poller settings. Every scenario runs both
sides on that one server, alternating which goes first from round to round.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from bench import _bare
from bench._actions import ACTIONS
from sternway._client import submit
from sternway.codec import data_converter
from sternway.starter._dev import DevServer
from sternway.worker import configure_logging, create_worker, worker_settings
from sternway.workflows._actions import Registry

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SIZES = ("tiny", "full")
SW_QUEUE = "bench-sternway"
BARE_QUEUE = "bench-bare"
# The baseline again, with no workflow sandbox, as Sternway's worker runs its interpreter.
BARE_UNSANDBOXED_QUEUE = "bench-bare-unsandboxed"
REQUESTOR = "bench"


@dataclass
class Row:
    """One line of the results table: a figure of the measured side against its baseline."""

    scenario: str
    metric: str
    unit: str
    value: float
    baseline: float | None = None
    goal: str | None = None  # a bar on the ratio, e.g. ">= 0.90"
    note: str = ""
    # Per-round figures of both sides, when the rounds alternated: the ratio is then the median
    # of the per-round ratios (which cancels the server's drift over a run), not the ratio of
    # the medians, and the note gives the other one.
    rounds: tuple[Sequence[float], Sequence[float]] | None = None
    ratio: float | None = field(init=False, default=None)
    ok: bool | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.rounds is not None:
            measured, baseline = self.rounds
            self.ratio = median([a / b for a, b in zip(measured, baseline, strict=True)])
            if self.baseline:
                medians = f"ratio of the medians {self.value / self.baseline:.2f}"
                self.note = f"{self.note}; {medians}" if self.note else medians
        elif self.baseline:
            self.ratio = self.value / self.baseline
        if self.goal and self.ratio is not None:
            self.ok = self._meets(self.ratio)

    def _meets(self, ratio: float) -> bool:
        """Whether ``ratio`` meets this row's bar (``goal``)."""
        op, _, bar = (self.goal or "").partition(" ")
        limit = float(bar)
        return {
            ">=": ratio >= limit,
            "<=": ratio <= limit,
            ">": ratio > limit,
            "<": ratio < limit,
        }[op]

    def ratio_text(self) -> str:
        """The ratio to two places, or to three where two would read as the other side of the
        bar (0.947 against ">= 0.95" is not shown as 0.95)."""
        if self.ratio is None:
            return ""
        text = f"{self.ratio:.2f}"
        if self.goal and self._meets(float(text)) != self.ok:
            text = f"{self.ratio:.3f}"
        return text


@dataclass
class Result:
    """What one scenario measured: table rows, and every raw figure for the JSON file."""

    scenario: str
    title: str
    measured: str  # what the value column is
    baseline: str  # what the baseline column is
    rows: list[Row]
    data: dict[str, Any]
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def compile_bytecode() -> None:
    """Write the project's ``.pyc`` files, as installing a package does, so both sides import
    compiled modules even where ``PYTHONDONTWRITEBYTECODE`` is set (the sandbox re-imports a
    workflow module for every run, and the CLI imports the project's modules on every call)."""
    import compileall

    for name in ("workflows", "activities", "starter", "sternway", "bench"):
        compileall.compile_dir(REPO / name, quiet=1)
    compileall.compile_file(REPO / "worker.py", quiet=1)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile (p99 of 100 values is the 99th smallest)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


async def ab_rounds(
    rounds: int,
    measured: Callable[[], Awaitable[float]],
    baseline: Callable[[], Awaitable[float]],
) -> tuple[list[float], list[float]]:
    """Run both sides ``rounds`` times, alternating which goes first; their figures per round."""
    figures = await rotated_rounds(rounds, {"measured": measured, "baseline": baseline})
    return figures["measured"], figures["baseline"]


async def rotated_rounds(
    rounds: int, sides: dict[str, Callable[[], Awaitable[float]]]
) -> dict[str, list[float]]:
    """Run every side ``rounds`` times; each round starts one side later than the one before
    (A B, B A, ... for two sides), so drift in the machine's load falls on all alike.

    ``rounds`` is rounded up to a multiple of the number of sides, so that every side takes every
    place in a round equally often: the server slows as its database grows, within a round too,
    and a side that went last more often than the others would be measured slower.
    """
    names = list(sides)
    figures: dict[str, list[float]] = {name: [] for name in names}
    for n in range(-(-rounds // len(names)) * len(names)):
        shift = n % len(names)
        for name in names[shift:] + names[:shift]:
            figures[name].append(await sides[name]())
    return figures


def rss_kib(pid: int) -> tuple[int, int]:
    """A process's resident set size and its peak, in KiB (``/proc/PID/status``)."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Bench:
    """A dev server, Sternway's and the baseline's clients and workers, for one bench run."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.registry = Registry(ACTIONS)
        self._stack = contextlib.AsyncExitStack()
        self._servers: list[DevServer] = []
        self.server: DevServer
        self.sw_client: Client
        self.bare_client: Client

    async def __aenter__(self) -> Bench:
        try:
            return await self._start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise

    async def _start(self) -> Bench:
        # Worker and SDK logs of both sides go to a file, at the levels a worker runs with.
        configure_logging(json=True, stream=(self.workdir / "bench.log").open("a"))
        self.server = await self.start_server("wal")
        # The converter `sternway worker` and the CLI use when no codec key is set.
        self.sw_client = await Client.connect(self.server.address, data_converter=data_converter())
        self.bare_client = await Client.connect(self.server.address)
        await self._stack.enter_async_context(
            create_worker(self.sw_client, self.registry, task_queue=SW_QUEUE)
        )
        await self._stack.enter_async_context(self.bare_worker(self.bare_client))
        await self._stack.enter_async_context(
            self.bare_worker(self.bare_client, BARE_UNSANDBOXED_QUEUE, sandboxed=False)
        )
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._stack.aclose()
        finally:
            for server in self._servers:
                server.stop()

    async def start_server(self, name: str, *, pragmas: Sequence[str] | None = None) -> DevServer:
        """A dev server of this run, with its database in ``workdir/name``; stopped at the end.

        ``pragmas`` None: the embedded default's SQLite settings; empty: the dev server's own.
        """
        db = self.workdir / name / "temporal.db"
        port, ui_port = free_port(), free_port()
        if pragmas is None:
            server = await DevServer.ensure(db=db, port=port, ui_port=ui_port)
        else:
            server = await DevServer.ensure(db=db, port=port, ui_port=ui_port, pragmas=pragmas)
        self._servers.append(server)
        return server

    @staticmethod
    def bare_worker(
        client: Client, task_queue: str = BARE_QUEUE, *, sandboxed: bool = True
    ) -> Worker:
        """A baseline worker: the SDK's default sandbox, as a Temporal user's worker has, or
        (``sandboxed=False``) none, as Sternway's worker runs its interpreter."""
        settings = worker_settings()
        if not sandboxed:
            settings["workflow_runner"] = UnsandboxedWorkflowRunner()
        return _bare.create_bare_worker(client, task_queue, **settings)

    async def keep(self, manager: contextlib.AbstractAsyncContextManager[Any]) -> Any:
        """Keep ``manager`` open until the bench run ends."""
        return await self._stack.enter_async_context(manager)

    # ------------------------------------------------------------------ one run of each side

    async def sw_run(
        self,
        action: str,
        args: dict[str, Any] | None = None,
        *,
        expect: str = "COMPLETED",
        task_queue: str = SW_QUEUE,
    ) -> tuple[str, dict[str, Any]]:
        """Submit a Sternway run as the CLI does, wait for its end; its id and final status."""
        handle = await submit(
            self.sw_client,
            action,
            args or {},
            task_queue=task_queue,
            requestor=REQUESTOR,
            registry=self.registry,
        )
        raw = self.sw_client.get_workflow_handle(handle.run_id)
        try:
            status: dict[str, Any] = await raw.result()
        except WorkflowFailureError as err:
            details = getattr(err.cause, "details", None)
            status = details[0] if details else {"state": type(err.cause).__name__}
        if status.get("state") != expect:
            raise RuntimeError(f"{action} run {handle.run_id} ended {status.get('state')}")
        return handle.run_id, status

    async def bare_run(
        self,
        workflow: str,
        arg: Any,
        *,
        client: Client | None = None,
        task_queue: str = BARE_QUEUE,
        fails: bool = False,
    ) -> tuple[str, Any]:
        """Start a baseline run and wait for its end; its id and result."""
        run_id = new_id(workflow)
        handle = await (client or self.bare_client).start_workflow(
            workflow, arg, id=run_id, task_queue=task_queue
        )
        try:
            result = await handle.result()
        except WorkflowFailureError:
            if not fails:
                raise
            return run_id, None
        if fails:
            raise RuntimeError(f"{workflow} run {run_id} did not fail")
        return run_id, result


async def timed(runs: Sequence[Awaitable[Any]]) -> float:
    """Seconds until every one of ``runs`` (started together) has ended."""
    started = time.perf_counter()
    await asyncio.gather(*runs)
    return time.perf_counter() - started


def env_for_cli(address: str, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess bound to the bench's server and task queue."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "STERNWAY_"))}
    env.update(TEMPORAL_ADDRESS=address, STERNWAY_TASK_QUEUE=SW_QUEUE, COLUMNS="200")
    env.update(extra)
    return env
