"""Any Temporal client drives a run: the official ``temporal`` CLI starts, queries, signals and
cancels Sternway runs."""

from __future__ import annotations

import json
import uuid

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from sternway import RunHandle
from sternway.workflows.models import RunStatus
from tests.cli import temporal
from tests.conftest import WorkerFactory
from tests.helpers import rollbacks, until_started


@pytest.fixture
def address(dev_env: WorkflowEnvironment) -> str:
    return dev_env.client.service_client.config.target_host


async def start(address: str, task_queue: str, action: str, args: dict[str, object]) -> str:
    run_id = f"{action}-cli-{uuid.uuid4().hex[:8]}"
    result = await temporal(
        address,
        "workflow", "start",
        "--type", action,
        "--task-queue", task_queue,
        "--workflow-id", run_id,
        "--input", json.dumps({"args": args, "requestor": "temporal-cli"}),
    )  # fmt: skip
    assert result.code == 0, result.err
    return run_id


async def test_start_and_query_with_the_official_cli(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str, address: str
) -> None:
    async with worker_for(dev_env.client):
        run_id = await start(address, task_queue, "test-chain3", {})
        status = await RunHandle(dev_env.client, run_id).wait()
        answered = await dev_env.client.get_workflow_handle(run_id).query(
            "status", result_type=RunStatus
        )
        queried = await temporal(
            address, "workflow", "query", "--workflow-id", run_id, "--name", "status", "-o", "json"
        )
    assert status.state == "COMPLETED"
    assert queried.code == 0, queried.err
    answer = json.loads(queried.out)
    body = answer["queryResult"][0] if "queryResult" in answer else answer
    assert body["state"] == "COMPLETED" and body["requestor"] == "temporal-cli"
    assert [j["name"] for j in body["jobs"]] == ["j1", "j2", "j3"]
    # The result is the status the query answers, without its null fields (docs/semantics.md).
    result = await dev_env.client.get_workflow_handle(run_id).result()
    assert "error" not in result and None not in result["jobs"][0].values()
    assert RunStatus.model_validate(result) == answered


async def test_signal_stop_rolls_back(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str, address: str
) -> None:
    async with worker_for(dev_env.client):
        run_id = await start(address, task_queue, "test-chain3", {"sleep": {"j2": 120}})
        await until_started(run_id, "j2")
        signalled = await temporal(
            address, "workflow", "signal", "--workflow-id", run_id, "--name", "stop",
            "--input", json.dumps({"rollback": True, "reason": "from the temporal CLI"}),
        )  # fmt: skip
        assert signalled.code == 0, signalled.err
        status = await RunHandle(dev_env.client, run_id).wait()
    assert status.state == "STOPPED"
    assert status.error is not None and status.error.message == "from the temporal CLI"
    assert rollbacks(run_id) == ["j2", "j1"]
    # A run that did not complete carries its final status in its failure, null fields left out.
    with pytest.raises(WorkflowFailureError) as failed:
        await dev_env.client.get_workflow_handle(run_id).result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "RunStopped"
    details = cause.details[0]
    assert details["state"] == "STOPPED" and "ui_url" not in details
    assert RunStatus.model_validate(details) == status.model_copy(update={"ui_url": None})


async def test_cancel_rolls_back(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str, address: str
) -> None:
    async with worker_for(dev_env.client):
        run_id = await start(address, task_queue, "test-chain3", {"sleep": {"j2": 120}})
        await until_started(run_id, "j2")
        cancelled = await temporal(address, "workflow", "cancel", "--workflow-id", run_id)
        assert cancelled.code == 0, cancelled.err
        status = await RunHandle(dev_env.client, run_id).wait()
        description = await dev_env.client.get_workflow_handle(run_id).describe()
    assert status.state == "STOPPED"
    assert rollbacks(run_id) == ["j2", "j1"]
    assert description.status == WorkflowExecutionStatus.CANCELED


async def test_invalid_args_from_any_client_fail_at_once(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str, address: str
) -> None:
    async with worker_for(dev_env.client):
        run_id = await start(address, task_queue, "deploy-site", {"release": 3})
        status = await RunHandle(dev_env.client, run_id).wait()
        unknown = await start(address, task_queue, "no-such-action", {})
        missing = await RunHandle(dev_env.client, unknown).wait()
    assert status.state == "FAILED"
    assert status.error is not None and status.error.reason == "rejected"
    assert "root" in status.error.message
    assert missing.state == "FAILED"
    assert missing.error is not None and "unknown action 'no-such-action'" in missing.error.message
