"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import random
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


# Ports are drawn below the kernel's ephemeral range (32768-60999 by default): a port from
# bind(0) comes from that range, which every outgoing connection also draws from, so one could
# be taken between here and the server's own bind (seen in CI: "bind: address already in use"
# for a dev server's Web UI port).
_PORTS = range(20_000, 32_768)
_PICK = random.SystemRandom()


def free_port() -> int:
    """A TCP port nothing listens on right now, outside the ephemeral range."""
    for _ in range(200):
        port = _PICK.choice(_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORTS}")


async def workflow_task_failures(client: Client, run_id: str) -> list[str]:
    """The failure messages of the run's WorkflowTaskFailed events (there must be none)."""
    events = client.get_workflow_handle(run_id).fetch_history_events()
    return [
        e.workflow_task_failed_event_attributes.failure.message
        async for e in events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
