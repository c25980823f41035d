"""The worker process (SIGTERM grace, metrics), ``sternway dev`` and ``sternway demo`` for real."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from sternway import RunHandle, submit
from sternway.starter._dev import SERVER_SETTINGS, SQLITE_PRAGMAS, port_open
from tests.cli import BIN, REPO, cli_env, sternway
from tests.helpers import free_port, wait_for


async def spawn(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(BIN / "sternway"),
        *args,
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode(errors="replace")


async def until_http(url: str, timeout: float = 60.0) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            status, body = await asyncio.to_thread(http_get, url)
            if status == 200:
                return body
        except OSError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{url} never answered")
        await asyncio.sleep(0.2)


async def test_sigterm_lets_the_running_job_finish_then_a_new_worker_completes_the_run(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    address = dev_env.client.service_client.config.target_host
    env = cli_env(address, task_queue)
    metrics = free_port()
    first = await spawn(env, "worker", "--grace", "30s", "--metrics-port", str(metrics))
    body = await until_http(f"http://127.0.0.1:{metrics}/metrics")
    handle = await submit(
        dev_env.client, "test-chain3", {"sleep": {"j2": 3}}, task_queue=task_queue
    )
    await wait_for(handle, lambda s: s.job("j2").state == "RUNNING")
    await asyncio.sleep(0.5)  # j2 is inside its three seconds of work
    body = await until_http(f"http://127.0.0.1:{metrics}/metrics")
    first.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(first.communicate(), 30)
    assert first.returncode == 0, err.decode()
    assert "worker stopping" in err.decode()
    # No worker now, so no query: the history shows j2 finished and the run is still open.
    workflow = dev_env.client.get_workflow_handle(handle.run_id)
    completed = [
        e
        async for e in workflow.fetch_history_events()
        if e.HasField("activity_task_completed_event_attributes")
    ]
    assert len(completed) == 2  # j1 and j2
    assert (await workflow.describe()).status == WorkflowExecutionStatus.RUNNING
    assert "temporal_" in body and "task_queue" in body

    second = await spawn(env, "worker")
    try:
        status = await asyncio.wait_for(handle.wait(), 60)
    finally:
        second.send_signal(signal.SIGINT)
        await asyncio.wait_for(second.communicate(), 30)
    assert status.state == "COMPLETED"
    assert [status.job(j).attempts for j in ("j1", "j2", "j3")] == [1, 1, 1]
    assert second.returncode == 0


async def test_demo_runs_a_sample_action_to_completion(tmp_path: Path) -> None:
    port, ui_port = free_port(), free_port()
    env = cli_env(f"localhost:{port}", "unused", COLUMNS="80")  # the link is whole, even so
    result = await sternway(
        env, "demo", "--db", str(tmp_path / "t.db"), "--port", str(port), "--ui-port", str(ui_port),
        timeout=120,
    )  # fmt: skip
    assert result.code == 0, result.out + result.err
    assert "COMPLETED" in result.out
    link = rf"\nWeb UI: http://localhost:{ui_port}/namespaces/default/workflows/deploy-site-\w+\n"
    assert re.search(link, result.out), result.out
    assert (tmp_path / "demo-site" / "current").is_symlink()
    assert not port_open("127.0.0.1", port)  # the demo stopped the server it started


def _child_command_lines(pid: int) -> list[str]:
    """The command lines of the processes whose parent is ``pid``."""
    lines = []
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ValueError, IndexError):
            continue  # not a process, or gone meanwhile
    return lines


async def test_demo_reuses_a_running_dev_server(tmp_path: Path) -> None:
    port, ui_port = free_port(), free_port()
    env = cli_env(f"localhost:{port}", "sternway")
    del env["COLUMNS"]  # piped with no width: whole lines
    db = str(tmp_path / "shared.db")
    dev = await spawn(env, "dev", "--db", db, "--port", str(port), "--ui-port", str(ui_port))
    try:
        await until_http(f"http://127.0.0.1:{ui_port}/")
        demo = await sternway(
            env, "demo", "--db", db, "--port", str(port), "--ui-port", str(ui_port), timeout=120
        )
        assert demo.code == 0, demo.out + demo.err
        link = (
            rf"\nWeb UI: http://localhost:{ui_port}/namespaces/default/workflows/deploy-site-\w+\n"
        )
        assert re.search(link, demo.out), demo.out
        assert port_open("127.0.0.1", port)  # the demo left the server it found running
        # The embedded server runs with Sternway's SQLite pragmas and dynamic config.
        server = _child_command_lines(dev.pid)
        assert len(server) == 1 and "start-dev" in server[0], server
        for pragma in SQLITE_PRAGMAS:
            assert f"--sqlite-pragma {pragma}" in server[0]
        for setting in SERVER_SETTINGS:
            assert f"--dynamic-config-value {setting}" in server[0]
    finally:
        dev.send_signal(signal.SIGINT)
        await asyncio.wait_for(dev.communicate(), 30)
    assert dev.returncode == 0


async def test_dev_serves_the_web_ui_and_runs_actions_until_ctrl_c(tmp_path: Path) -> None:
    port, ui_port = free_port(), free_port()
    env = cli_env(f"localhost:{port}", "sternway")
    dev = await spawn(
        env, "dev", "--db", str(tmp_path / "dev.db"),
        "--port", str(port), "--ui-port", str(ui_port), "--retention", "7d",
    )  # fmt: skip
    try:
        page = await until_http(f"http://127.0.0.1:{ui_port}/")
        assert "<html" in page.lower()
        client = await Client.connect(f"localhost:{port}", data_converter=pydantic_data_converter)
        handle = await submit(
            client, "deploy-site", {"root": str(tmp_path / "site"), "release": "v1"}
        )
        status = await asyncio.wait_for(RunHandle(client, handle.run_id).wait(), 60)
        assert status.state == "COMPLETED"
        namespace = await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace="default")
        )
        assert namespace.config.workflow_execution_retention_ttl.ToTimedelta() == timedelta(days=7)
    finally:
        dev.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(dev.communicate(), 30)
    assert dev.returncode == 0, err.decode()
    assert f"Web UI at http://localhost:{ui_port}" in err.decode()
    assert "closed runs kept 7d" in err.decode()
    assert not port_open("127.0.0.1", port)


@pytest.mark.parametrize("retention", ["30m", "soon"])
async def test_dev_refuses_a_retention_it_cannot_set_before_starting_anything(
    tmp_path: Path, retention: str
) -> None:
    port, ui_port = free_port(), free_port()
    env = cli_env(f"localhost:{port}", "sternway")
    result = await sternway(
        env, "dev", "--db", str(tmp_path / "dev.db"),
        "--port", str(port), "--ui-port", str(ui_port), "--retention", retention,
    )  # fmt: skip
    assert result.code == 2, result.out + result.err
    assert result.err.startswith("error: --retention") and result.err.count("\n") == 1, result.err
    assert not port_open("127.0.0.1", port) and not (tmp_path / "dev.db").exists()


async def test_an_expected_job_failure_is_one_json_log_line(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    env = cli_env(dev_env.client.service_client.config.target_host, task_queue)
    worker = await spawn(env, "worker")  # stdout and stderr piped: off a terminal
    try:
        handle = await submit(
            dev_env.client,
            "test-chain3",
            {"fail": {"j2": 999}, "non_retryable": ["j2"]},
            task_queue=task_queue,
        )
        status = await asyncio.wait_for(handle.wait(), 60)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(worker.communicate(), 30)
    assert status.state == "FAILED"
    lines = (out + err).decode().splitlines()
    records = [json.loads(line) for line in lines]  # every line, the SDK's too, is JSON
    failure = [r for r in records if "j2 failed on attempt 1" in json.dumps(r)]
    assert len(failure) == 1, lines
    assert failure[0]["job"] == "j2" and failure[0]["attempt"] == 1, failure
    assert failure[0]["reason"] == "error" and failure[0]["error_type"] == "Boom", failure
    assert not any("Traceback" in line for line in lines), lines
