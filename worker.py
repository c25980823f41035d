"""The Sternway worker: hosts the action workflow and the job activities on a task queue.

``create_worker`` builds a worker for a client and a registry (used by tests, ``sternway dev`` and
``sternway demo``); ``run_worker`` runs one until SIGINT or SIGTERM, letting running jobs finish
within a grace period. ``python worker.py`` and ``sternway worker`` both end up there.

Actions: the shipped sample actions, every module named in ``STERNWAY_MODULES``
(comma-separated) that holds ``Action`` objects (or an ``ACTIONS`` list of them), and the YAML
runbooks of every folder in ``STERNWAY_ACTIONS_PATH`` (``os.pathsep``-separated; when it is unset,
the ``actions/`` folder shipped next to this file). ``run_worker`` given those folders
(``watch=``, as ``sternway worker`` and ``sternway dev`` do) reloads their runbooks while it runs
(:class:`RunbookWatcher`). Every worker also answers the ``sternway.catalog`` workflow with the
actions and versions it serves (workflows/_catalog.py).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

import structlog
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from sternway.activities import JobActivities
from sternway.activities._locks import acquire_lock, inspect_runs, release_locks
from sternway.activities.site import deploy_site
from sternway.workflows import ActionWorkflow, ChunkWorkflow
from sternway.workflows._actions import Action, Registry
from sternway.workflows._catalog import CatalogActivity, CatalogWorkflow
from sternway.workflows._lock import LockWorkflow
from sternway.workflows._runbook import load_folder, runbook_version
from sternway.workflows.errors import SpecError
from sternway.workflows.models import DEFAULT_TASK_QUEUE, SANDBOX_MODES

__all__ = [
    "RunbookWatcher",
    "actions_folders",
    "configure_logging",
    "create_worker",
    "load_registry",
    "load_runbooks",
    "run_worker",
    "worker_settings",
    "workflow_runner",
]

# What the strict sandbox imports once, outside it, instead of once per run: libraries and the
# models, none of which run code with side effects in a workflow. The interpreter
# (sternway.workflows._workflow) is not among them, so the sandbox's restrictions apply to it all.
_PASSTHROUGH = (
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "structlog",
    "jinja2",
    "markupsafe",
    "sternway.workflows.models",
    "sternway.workflows._expr",
)

BUILTIN_ACTIONS: tuple[Action, ...] = (deploy_site,)


class _ExpectedActivityFailure(logging.Filter):
    """The SDK's "Completing activity as failed" for a job that failed as jobs do, at debug level.

    Sternway's own ``job attempt failed`` line already says which job, attempt, reason and
    message; the SDK's warning with its traceback would say it again, in several lines. Every
    failure Sternway's activities raise is an ``ApplicationError``; anything else (a bug) keeps
    the SDK's warning.
    """

    def __init__(self, debug: bool) -> None:
        super().__init__()
        self.debug = debug

    def filter(self, record: logging.LogRecord) -> bool:
        """Lower the expected failure to DEBUG: shown only when debug logging is on."""
        exc = record.exc_info[1] if record.exc_info else None
        if (
            getattr(record, "__temporal_error_identifier", None) == "ActivityFailure"
            and isinstance(exc, ApplicationError)
            and record.levelno > logging.DEBUG
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self.debug
        return True


_HANDLER_MARK = "_sternway_handler"


def configure_logging(
    *, json: bool | None = None, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """structlog for the worker and activities, and the SDK's own records, to ``stream``
    (default stderr): console lines in a terminal, JSON lines otherwise, for every logger.

    The standard library's records (the SDK's, the libraries') go through the same renderer, by
    structlog's ``ProcessorFormatter``; they are shown from WARNING up (from ``level`` when that
    is lower). Expected job failures are one line each, Sternway's own.
    """
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
            structlog.processors.format_exc_info,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)  # configured again (tests, dev): replace, never add a second
    if not root.handlers:  # an application's own logging setup is left alone
        root.addHandler(handler)
    root.setLevel(min(level, logging.WARNING))
    sdk = logging.getLogger("temporalio.activity")
    for old_filter in [f for f in sdk.filters if isinstance(f, _ExpectedActivityFailure)]:
        sdk.removeFilter(old_filter)
    sdk.addFilter(_ExpectedActivityFailure(debug=level <= logging.DEBUG))


def _actions_in(module_name: str) -> Iterable[Action]:
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise SpecError(f"cannot import actions module {module_name!r}: {err}") from None
    listed = getattr(module, "ACTIONS", None)
    if listed is not None:
        return list(listed)
    return [value for value in vars(module).values() if isinstance(value, Action)]


def actions_folders() -> list[Path]:
    """The folders of YAML runbooks: ``STERNWAY_ACTIONS_PATH``, or the shipped ``actions/``."""
    configured = os.environ.get("STERNWAY_ACTIONS_PATH")
    if configured is None:
        shipped = Path(__file__).resolve().parent / "actions"
        return [shipped] if shipped.is_dir() else []
    return [Path(p) for p in configured.split(os.pathsep) if p.strip()]


def load_runbooks(folders: Iterable[str | Path]) -> list[Action]:
    """The YAML runbooks of ``folders``; a :class:`SpecError` for the first that does not load,
    or for a name that two files use."""
    found: dict[str, Action] = {}
    for folder in folders:
        for action in load_folder(folder):
            other = found.get(action.name)
            if other is not None:
                raise SpecError(
                    f"action {action.name!r} is defined twice: in {action.source} and in "
                    f"{other.source}"
                )
            found[action.name] = action
    return list(found.values())


def load_registry(
    modules: Iterable[str] | None = None, folders: Iterable[str | Path] | None = None
) -> Registry:
    """The built-in actions, those of ``modules`` (default: ``STERNWAY_MODULES``) and the YAML
    runbooks in ``folders`` (default: :func:`actions_folders`).

    An action name defined twice is a :class:`SpecError` that names both definitions.
    """
    if modules is None:
        modules = [
            m.strip() for m in os.environ.get("STERNWAY_MODULES", "").split(",") if m.strip()
        ]
    registry = Registry()
    seen: set[int] = set()
    for action in [*BUILTIN_ACTIONS, *(a for m in modules for a in _actions_in(m))]:
        if id(action) not in seen:
            seen.add(id(action))
            registry.add(action)
    registry.replace_runbooks(load_runbooks(actions_folders() if folders is None else folders))
    return registry


RELOAD_EVERY = 1.0
"""Seconds between two looks at the runbook folders of a running worker."""


class RunbookWatcher:
    """Keeps the runbooks of a running worker's registry in step with its folders.

    Every :data:`RELOAD_EVERY` seconds it hashes the ``*.yaml``/``*.yml`` files of ``folders``;
    when any was added, changed or removed, it loads them all and swaps them into the registry at
    once. When they do not load (a file does not validate, a name is used twice, a folder is
    gone), the registry keeps the runbooks it has and one error line says why; the next change
    is tried again. Runs in flight are not affected either way: a run's plan is fixed when it
    starts, by the ``sternway.resolve`` local activity, and recorded in its history.
    """

    def __init__(self, registry: Registry, folders: Iterable[str | Path]) -> None:
        self.registry = registry
        self.folders = [Path(f) for f in folders]
        self._log = structlog.get_logger("sternway.worker")
        self._seen = self._snapshot()

    def _snapshot(self) -> dict[str, str]:
        """Each runbook file's path and version (a hash of its bytes), as they are now."""
        found: dict[str, str] = {}
        for folder in self.folders:
            try:
                files = sorted(folder.iterdir())
            except OSError as err:
                found[str(folder)] = f"unreadable: {err}"
                continue
            for file in files:
                if file.suffix not in (".yaml", ".yml"):
                    continue
                try:
                    found[str(file)] = runbook_version(file.read_bytes())
                except OSError as err:  # a file removed or a folder entry: a change to try
                    found[str(file)] = f"unreadable: {err}"
        return found

    def check(self) -> bool:
        """Reload if a runbook file changed since the last look; whether the registry changed."""
        now = self._snapshot()
        if now == self._seen:
            return False
        self._seen = now
        before = {a.name: a.version for a in self.registry if a.source is not None}
        try:
            loaded = load_runbooks(self.folders)
            self.registry.replace_runbooks(loaded)
        except SpecError as err:
            self._log.error("runbooks not reloaded: the last good ones stay served", error=str(err))
            return False
        after = {a.name: a.version for a in loaded}
        changed = sorted(n for n in after if n in before and before[n] != after[n])
        self._log.info(
            "runbooks reloaded",
            added=sorted(after.keys() - before.keys()),
            changed=changed,
            removed=sorted(before.keys() - after.keys()),
        )
        return True

    async def run(self) -> None:
        """Look every :data:`RELOAD_EVERY` seconds until cancelled."""
        while True:
            await asyncio.sleep(RELOAD_EVERY)
            # Reading and parsing files blocks: in a thread, so workflow tasks keep flowing.
            await asyncio.to_thread(self.check)


def workflow_runner(sandbox: str = "off") -> WorkflowRunner:
    """How workers run the interpreter, the only workflow code there is in Sternway.

    ``off``: in the worker's own interpreter, with no sandbox. Users never write workflow code:
    actions are data, job code runs in activities, and the interpreter is deterministic by
    construction (``workflow.now()``, no I/O, expressions in Jinja2's sandbox), which CI checks
    by replaying every recorded history under ``strict``. The sandbox's cost is per payload (the
    SDK enters it for every payload of every workflow task), and an engine passes more payloads
    per job than a hand-written workflow: a quarter of the worker's CPU (docs/BENCHMARKS.md).

    ``strict``: Temporal's sandbox, with the interpreter imported afresh into it for every run,
    so that a clock, random or I/O call anywhere in it fails the workflow task. Slower, and
    about 0.3 MiB more per cached run; for checking a change to the interpreter.
    """
    if sandbox not in SANDBOX_MODES:
        raise ValueError(f"unknown sandbox mode {sandbox!r} (known: {', '.join(SANDBOX_MODES)})")
    if sandbox == "off":
        return UnsandboxedWorkflowRunner()
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*_PASSTHROUGH)
    )


def create_worker(
    client: Client,
    registry: Registry,
    *,
    task_queue: str = DEFAULT_TASK_QUEUE,
    max_concurrent_activities: int = 100,
    max_concurrent_workflow_tasks: int = 100,
    heartbeat_throttle: timedelta = timedelta(seconds=1),
    graceful_shutdown_timeout: timedelta = timedelta(seconds=10),
    sandbox: str = "off",
) -> Worker:
    """A worker running every action of ``registry`` on ``task_queue``.

    ``heartbeat_throttle`` bounds how long a stop takes to reach a running job: Temporal only
    tells an activity it is cancelled in the answer to a heartbeat. ``sandbox``: see
    :func:`workflow_runner`.
    """
    jobs = JobActivities(registry)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[ActionWorkflow, ChunkWorkflow, CatalogWorkflow, LockWorkflow],
        activities=[
            jobs.resolve,
            jobs.execute,
            jobs.rollback,
            CatalogActivity(registry).catalog,
            acquire_lock,
            inspect_runs,
            release_locks,
        ],
        workflow_runner=workflow_runner(sandbox),
        max_heartbeat_throttle_interval=heartbeat_throttle,
        default_heartbeat_throttle_interval=heartbeat_throttle,
        graceful_shutdown_timeout=graceful_shutdown_timeout,
        **worker_settings(
            max_concurrent_activities=max_concurrent_activities,
            max_concurrent_workflow_tasks=max_concurrent_workflow_tasks,
        ),
    )


def worker_settings(
    *, max_concurrent_activities: int = 100, max_concurrent_workflow_tasks: int = 100
) -> dict[str, Any]:
    """The slot and poller settings of Sternway's worker, as ``Worker`` keyword arguments.

    The benchmarks give the bare-SDK baseline worker the same ones, so that they measure what the
    engine adds, not a different worker configuration.
    """
    return {
        "max_concurrent_activities": max_concurrent_activities,
        "max_concurrent_workflow_tasks": max_concurrent_workflow_tasks,
    }


def metrics_runtime(port: int | None) -> Runtime:
    """An SDK runtime serving Temporal's worker metrics for Prometheus on ``port`` (if any).

    The SDK core's own log lines are forwarded to the ``temporalio.core`` logger, so that they
    are rendered like every other line (JSON off a terminal), not printed in the core's format.
    """
    forwarding = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )
    metrics = PrometheusConfig(bind_address=f"0.0.0.0:{port}") if port else None
    return Runtime(telemetry=TelemetryConfig(logging=forwarding, metrics=metrics))


async def run_worker(
    client: Client,
    registry: Registry,
    *,
    task_queue: str = DEFAULT_TASK_QUEUE,
    concurrency: int = 100,
    grace: timedelta = timedelta(seconds=30),
    stop: asyncio.Event | None = None,
    sandbox: str = "off",
    watch: Iterable[str | Path] | None = None,
) -> None:
    """Run a worker until SIGINT/SIGTERM (or ``stop``); running jobs get ``grace`` to finish.

    With ``watch`` (folders of runbooks, normally :func:`actions_folders`), a
    :class:`RunbookWatcher` serves their added, changed and removed runbooks within seconds.
    """
    log = structlog.get_logger("sternway.worker")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker = create_worker(
        client,
        registry,
        task_queue=task_queue,
        max_concurrent_activities=concurrency,
        graceful_shutdown_timeout=grace,
        sandbox=sandbox,
    )
    watcher = None if watch is None else RunbookWatcher(registry, watch)
    log.info(
        "worker started",
        task_queue=task_queue,
        workflow_sandbox=sandbox,
        namespace=client.namespace,
        actions=[a.name for a in registry],
        watching=None if watcher is None else [str(f) for f in watcher.folders],
    )
    reloading = None if watcher is None else asyncio.create_task(watcher.run())
    try:
        async with worker:
            await stop.wait()
            log.info(
                "worker stopping: running jobs get the grace period", grace_s=grace.total_seconds()
            )
    finally:
        if reloading is not None:
            reloading.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("worker stopped")


if __name__ == "__main__":
    from sternway.starter.cli import main

    main(["worker", *sys.argv[1:]])
