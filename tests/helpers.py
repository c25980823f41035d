"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from sternway import RunHandle
from sternway.workflows.models import RunStatus
from tests.scripted import EVENTS


async def wait_for(
    handle: RunHandle, predicate: Callable[[RunStatus], bool], timeout: float = 30.0
) -> RunStatus:
    """Poll the run's status until ``predicate`` holds; fail the test after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = await handle.status()
        try:
            if predicate(status):
                return status
        except KeyError:  # the run has not resolved its jobs yet
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached; last status: {status.model_dump_json()}")
        await asyncio.sleep(0.1)


def events(run_id: str, kind: str) -> list[Any]:
    """The jobs (or full events) of one kind recorded for a run, in order."""
    return [e[1] for e in EVENTS[run_id] if e[0] == kind]


def rollbacks(run_id: str) -> list[str]:
    """Jobs rolled back in the run, in the order the rollbacks ran."""
    return events(run_id, "rollback")


async def until_started(run_id: str, job: str, attempt: int = 1, timeout: float = 30.0) -> None:
    """Wait until the worker has begun ``attempt`` of ``job`` in run ``run_id``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while ("start", job, attempt) not in EVENTS[run_id]:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{job} attempt {attempt} never started: {EVENTS[run_id]}")
        await asyncio.sleep(0.05)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def workflow_task_failures(client: Client, run_id: str) -> list[str]:
    """The failure messages of the run's WorkflowTaskFailed events (there must be none)."""
    events = client.get_workflow_handle(run_id).fetch_history_events()
    return [
        e.workflow_task_failed_event_attributes.failure.message
        async for e in events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
