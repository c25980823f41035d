"""The shipped runbooks in actions/ run for real on a dev server: to COMPLETED, and undone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from sternway import RunHandle, submit
from sternway.starter._dev import port_open
from sternway.worker import create_worker, load_registry
from tests.cli import REPO, cli_env, sternway
from tests.helpers import free_port, wait_for

REGISTRY = load_registry(modules=["tests.scripted"])


def runbook_args(name: str, tmp_path: Path) -> dict[str, Any]:
    """Args that make each shipped runbook run here, quickly and unattended."""
    return {
        "rolling-restart": {
            "root": str(tmp_path),
            "hosts": ["web1", "web2", "web3", "web4"],
            "settle": 0.2,
        },
        "release-with-approval": {
            "root": str(tmp_path),
            "release": "v1",
            "port": free_port(),
            "require_approval": False,
        },
    }[name]


SHIPPED = sorted(p.stem for p in (REPO / "actions").glob("*.yaml"))


def test_every_shipped_runbook_has_test_args(tmp_path: Path) -> None:
    for name in SHIPPED:
        runbook_args(name, tmp_path)
        assert name in REGISTRY


@pytest.mark.parametrize("name", SHIPPED)
async def test_shipped_runbook_completes(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path, name: str
) -> None:
    async with create_worker(dev_env.client, REGISTRY, task_queue=task_queue):
        handle = await submit(
            dev_env.client, name, runbook_args(name, tmp_path), task_queue=task_queue
        )
        status = await handle.wait()
    assert status.state == "COMPLETED", status.model_dump_json(indent=1)


def host_files(root: Path, host: str) -> tuple[str, str]:
    folder = root / "hosts" / host
    return (folder / "state").read_text(), (folder / "generation").read_text()


async def test_rolling_restart_failure_restores_every_host(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    args = {**runbook_args("rolling-restart", tmp_path), "fail_host": "web3"}
    async with create_worker(dev_env.client, REGISTRY, task_queue=task_queue):
        handle = await submit(dev_env.client, "rolling-restart", args, task_queue=task_queue)
        status = await handle.wait()
    assert status.state == "FAILED"
    assert status.error is not None and status.error.job == "per-host[web3].check"
    assert status.job("per-host[web3]").attempts == 2  # the group was retried once
    for host in ("web1", "web2", "web3", "web4"):
        assert host_files(tmp_path, host) == ("serving\n", "1\n"), host
    undone = [j.name for j in status.jobs if j.state == "ROLLED_BACK"]
    assert "per-host[web1].restart" in undone and "per-host[web3].drain" in undone


async def test_release_waits_for_approval_given_through_the_cli(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    env = cli_env(dev_env.client.service_client.config.target_host, task_queue)
    port = free_port()
    args = {"root": str(tmp_path), "release": "v2", "port": port}
    async with create_worker(dev_env.client, REGISTRY, task_queue=task_queue):
        handle = await submit(dev_env.client, "release-with-approval", args, task_queue=task_queue)
        waiting = await wait_for(handle, lambda s: s.job("approve").state == "WAITING")
        assert port_open("127.0.0.1", port)  # the preview is up while we decide
        token = (waiting.job("approve").detail or "").split("token ")[1].split(";")[0]
        refused = await sternway(env, "approve", handle.run_id, "approve", "--token", "nope")
        approved = await sternway(env, "approve", handle.run_id, "approve", "--token", token)
        status = await handle.wait()
    assert refused.code == 5 and "token" in refused.err
    assert approved.code == 0, approved.err
    assert status.state == "COMPLETED"
    assert (tmp_path / "current").resolve() == (tmp_path / "releases" / "v2").resolve()
    assert not port_open("127.0.0.1", port)


async def test_release_rejected_through_the_cli_rolls_back(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    env = cli_env(dev_env.client.service_client.config.target_host, task_queue)
    port = free_port()
    args = {"root": str(tmp_path), "release": "v3", "port": port}
    async with create_worker(dev_env.client, REGISTRY, task_queue=task_queue):
        handle = await submit(dev_env.client, "release-with-approval", args, task_queue=task_queue)
        waiting = await wait_for(handle, lambda s: s.job("approve").state == "WAITING")
        token = (waiting.job("approve").detail or "").split("token ")[1].split(";")[0]
        rejected = await sternway(
            env, "reject", handle.run_id, "approve", "--token", token, "--reason", "not today"
        )
        status = await RunHandle(dev_env.client, handle.run_id).wait()
    assert rejected.code == 0, rejected.err
    assert status.state == "FAILED"
    error = status.job("approve").error
    assert error is not None and error.reason == "rejected"
    assert not (tmp_path / "releases" / "v3").exists()
    assert not (tmp_path / "current").exists()
    assert not port_open("127.0.0.1", port)
