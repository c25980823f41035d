"""The ``sternway`` CLI end to end, as subprocesses against a real dev server and worker."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest
from temporalio.testing import WorkflowEnvironment

from sternway import RunHandle
from tests.cli import Result, cli_env, sternway
from tests.conftest import WorkerFactory
from tests.helpers import until_started
from tests.scripted import EVENTS


@pytest.fixture
def address(dev_env: WorkflowEnvironment) -> str:
    return dev_env.client.service_client.config.target_host


@pytest.fixture
def env(address: str, task_queue: str) -> dict[str, str]:
    return cli_env(address, task_queue)


def clean(result: Result) -> None:
    """No traceback, ever."""
    assert "Traceback" not in result.err and "Traceback" not in result.out, result.err


async def test_submit_then_watch_completes(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, env: dict[str, str], tmp_path
) -> None:
    async with worker_for(dev_env.client):
        submitted = await sternway(
            env,
            "submit",
            "deploy-site",
            "--arg",
            f"root={tmp_path}",
            "--arg",
            "release=v1",
            "--json",
        )
        assert submitted.code == 0, submitted.err
        run_id = submitted.json()["run_id"]
        assert submitted.json()["action"] == "deploy-site"
        assert submitted.json()["ui_url"].endswith(f"/namespaces/default/workflows/{run_id}")
        watched = await sternway(env, "watch", run_id)
        status = await sternway(env, "status", run_id, "--json")
        logs = await sternway(env, "logs", run_id, "--job", "check")
    assert watched.code == 0, watched.err
    assert "COMPLETED" in watched.out and "Web UI: http" in watched.out
    assert status.json()["state"] == "COMPLETED"
    assert [j["state"] for j in status.json()["jobs"]] == ["COMPLETED"] * 4
    assert logs.code == 0 and "check execute attempt 1: COMPLETED" in logs.out
    assert (tmp_path / "current" / "index.html").exists()


async def test_failing_run_with_wait_exits_1(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, env: dict[str, str]
) -> None:
    async with worker_for(dev_env.client):
        result = await sternway(
            env,
            "submit",
            "test-chain3",
            "--arg",
            'fail={"j2": 999}',
            "--arg",
            "non_retryable=j2",
            "--wait",
        )
    clean(result)
    assert result.code == 1
    assert "FAILED" in result.out and "ROLLED_BACK" in result.out


async def test_stop_suspend_resume_change_the_state(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, env: dict[str, str]
) -> None:
    async with worker_for(dev_env.client):
        submitted = await sternway(
            env, "submit", "test-chain3", "--arg", 'sleep={"j2": 120}', "--json"
        )
        run_id = submitted.json()["run_id"]
        await until_started(run_id, "j2")
        detail = await sternway(env, "status", run_id, "--json")
        suspended = await sternway(env, "suspend", run_id)
        state_after_suspend = (await sternway(env, "status", run_id, "--json")).json()["state"]
        resumed = await sternway(env, "resume", run_id)
        state_after_resume = (await sternway(env, "status", run_id, "--json")).json()["state"]
        stopped = await sternway(env, "stop", run_id, "--reason", "enough")
        final = await sternway(env, "watch", run_id)
        again = await sternway(env, "stop", run_id)
    j2 = detail.json()["jobs"][1]
    assert j2["state"] == "RUNNING" and j2["detail"].startswith("tick ")
    assert suspended.code == 0 and "SUSPENDED" in suspended.out
    assert state_after_suspend == "SUSPENDED"
    assert resumed.code == 0 and state_after_resume == "RUNNING"
    assert stopped.code == 0 and "stopping with rollback" in stopped.out
    assert final.code == 1 and "STOPPED" in final.out
    assert [e[1] for e in EVENTS[run_id] if e[0] == "rollback"] == ["j2", "j1"]
    clean(again)
    assert again.code == 0 and "the run is already stopped; the run is STOPPED" in again.out


async def list_json(env: dict[str, str], *args: str, expect: int | None = None) -> list[str]:
    """Run ids ``list --json`` gives, waiting for visibility to show ``expect`` of them."""
    for _ in range(100):
        result = await sternway(env, "list", "--json", *args)
        assert result.code == 0, result.err
        runs = [r["run_id"] for r in result.json()["runs"]]
        if expect is None or len(runs) == expect:
            return runs
        await asyncio.sleep(0.2)
    return runs


async def test_list_filters_by_state_action_requestor_and_time(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, env: dict[str, str], tmp_path
) -> None:
    who = f"lister-{uuid.uuid4().hex[:6]}"
    async with worker_for(dev_env.client):
        ok = await sternway(env, "submit", "test-chain3", "--requestor", who, "--wait", "--json")
        bad = await sternway(
            env, "submit", "test-chain3", "--requestor", who, "--wait", "--json",
            "--arg", 'fail={"j1": 999}', "--arg", "non_retryable=j1",
        )  # fmt: skip
        site = await sternway(
            env, "submit", "deploy-site", "--requestor", who, "--wait", "--json",
            "--arg", f"root={tmp_path}", "--arg", "release=v1",
        )  # fmt: skip
    ok_id, bad_id, site_id = (r.json()["run_id"] for r in (ok, bad, site))
    assert await list_json(env, "--requestor", who, expect=3) == [site_id, bad_id, ok_id]
    assert await list_json(env, "--requestor", who, "--state", "FAILED", expect=1) == [bad_id]
    assert await list_json(env, "--requestor", who, "--action", "deploy-site", expect=1) == [
        site_id
    ]
    assert await list_json(env, "--requestor", who, "--since", "10m", expect=3) == [
        site_id, bad_id, ok_id,
    ]  # fmt: skip
    assert await list_json(env, "--requestor", who, "--until", "1h") == []
    page = await sternway(env, "list", "--json", "--requestor", who, "--limit", "2")
    assert len(page.json()["runs"]) == 2 and page.json()["next_page_token"]
    rest = await sternway(
        env, "list", "--json", "--requestor", who, "--limit", "2",
        "--page-token", page.json()["next_page_token"],
    )  # fmt: skip
    assert [r["run_id"] for r in rest.json()["runs"]] == [ok_id]
    table = await sternway(env, "list", "--requestor", who)
    assert bad_id in table.out and "FAILED" in table.out
    # A mistyped filter says so, rather than printing an empty table.
    typo = await sternway(env, "list", "--requestor", who, "--action", "deploy-stie")
    assert typo.code == 0 and typo.out == "", typo.out
    assert typo.err.strip() == "no runs match these filters"


async def test_retry_creates_a_linked_run(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, env: dict[str, str]
) -> None:
    async with worker_for(dev_env.client):
        first = await sternway(env, "submit", "test-chain3", "--arg", 'sleep={"j2": 120}', "--json")
        run_id = first.json()["run_id"]
        await until_started(run_id, "j2")
        await sternway(env, "stop", run_id, "--no-rollback")
        await sternway(env, "watch", run_id)
        again = await sternway(env, "retry", run_id, "--from-failed", "--json")
        assert again.code == 0, again.err
        new_id = again.json()["run_id"]
        assert again.json()["retry_of"] == run_id and new_id != run_id
        # The new run has the same args (j2 sleeps) and reuses j1's output: stop it once j2 runs.
        await until_started(new_id, "j2")
        await sternway(env, "stop", new_id, "--no-rollback")
        watched = await sternway(env, "watch", new_id)
        plain = await sternway(env, "retry", run_id, "--json")
    assert watched.code == 1
    assert [e[1] for e in EVENTS[new_id] if e[0] == "start"] == ["j2"]
    description = await dev_env.client.get_workflow_handle(new_id).describe()
    assert (await description.memo())["retry_of"] == run_id
    assert plain.code == 0 and plain.json()["run_id"] not in (run_id, new_id)


async def test_delayed_run_is_pending_until_it_starts(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, env: dict[str, str]
) -> None:
    submitted_at = datetime.now(UTC)
    async with worker_for(dev_env.client):
        submitted = await sternway(
            env, "submit", "test-chain3", "--delay", "3s", "--priority", "2", "--json"
        )
        assert submitted.code == 0, submitted.err
        assert submitted.json()["state"] == "PENDING"
        run_id = submitted.json()["run_id"]
        watched = await sternway(env, "watch", run_id)
    assert watched.code == 0 and "COMPLETED" in watched.out
    status = await RunHandle(dev_env.client, run_id).status()
    first = status.job("j1").started_at
    assert first is not None and (first - submitted_at).total_seconds() >= 2.5


async def test_same_id_twice_is_one_run(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, env: dict[str, str]
) -> None:
    run_id = f"fixed-{uuid.uuid4().hex[:8]}"
    async with worker_for(dev_env.client):
        first = await sternway(env, "submit", "test-chain3", "--id", run_id, "--wait", "--json")
        second = await sternway(env, "submit", "test-chain3", "--id", run_id, "--json")
        other_args = await sternway(
            env, "submit", "test-chain3", "--id", run_id, "--arg", "save=j1", "--json"
        )
        other_action = await sternway(env, "submit", "test-chain5", "--id", run_id, "--json")
        stop_completed = await sternway(env, "stop", run_id)
    assert first.code == 0 and second.code == 0
    assert first.json()["run_id"] == second.json()["run_id"] == run_id
    assert [e[1] for e in EVENTS[run_id] if e[0] == "start"] == ["j1", "j2", "j3"]
    query = f"WorkflowId = '{run_id}'"
    assert (await dev_env.client.count_workflows(query)).count == 1
    for refused in (other_args, other_action, stop_completed):
        clean(refused)
        assert refused.code == 5, refused
    assert run_id in other_args.err and run_id in other_action.err
    assert "already exists with other args" in other_args.err
    assert "already exists as a run of 'test-chain3'" in other_action.err
    assert "the run is COMPLETED" in stop_completed.err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["submit", "no-such-action"], 2, "unknown action 'no-such-action'"),
        (["submit", "deploy-site", "--arg", "release=v1"], 2, "root: Field required"),
        (["submit", "test-chain3", "--arg", "fail=oops"], 2, "fail takes an object"),
        (["submit", "deploy-site", "--arg", "pause=soon"], 2, "pause takes a number"),
        (["submit", "test-chain3", "--arg", "fail"], 2, "is not of the form key=value"),
        (["submit", "test-chain3", "--arg", "nope=1"], 2, "unknown arg 'nope'"),
        (
            ["submit", "test-chain3", "--requestor", "bad name!"],
            2,
            "requestor 'bad name!' is invalid",
        ),
        (["submit", "test-chain3", "--requestor", "x" * 65], 2, "is invalid"),
        (["submit", "test-chain3", "--id", "no spaces"], 2, "run id 'no spaces' is invalid"),
        (["submit", "test-chain3", "--id", "x" * 201], 2, "is invalid"),
        (["submit", "test-chain3", "--delay", "soonish"], 2, "not a duration"),
        (["submit", "test-chain3", "--args-file", "/no/such/file"], 2, "cannot read args file"),
        (["validate", "deploy-site", "--arg", "root=/x"], 2, "release: Field required"),
        (["status", "no-such-run"], 3, "no run 'no-such-run'"),
        (["status", "prov acme"], 2, "run id 'prov acme' is invalid"),
        (["stop", "a/b"], 2, "run id 'a/b' is invalid"),
        (["list", "--requestor", ""], 2, "requestor '' is invalid"),
        (["stop", "no-such-run"], 3, "no run 'no-such-run'"),
        (["resume", "no-such-run"], 3, "no run 'no-such-run'"),
        (["list", "--state", "HAPPY"], 2, "Invalid value for '--state'"),
        (["list", "--since", "yesterday-ish"], 2, "neither a duration"),
        (["no-such-command"], 2, "No such command"),
    ],
)
async def test_bad_input_gives_clear_error_and_starts_nothing(
    dev_env: WorkflowEnvironment,
    env: dict[str, str],
    task_queue: str,
    args: list[str],
    code: int,
    message: str,
) -> None:
    result = await sternway(env, *args)
    clean(result)
    assert result.code == code, (result.out, result.err)
    assert message in result.err
    assert len(result.err.strip().splitlines()) <= 3
    count = await dev_env.client.count_workflows(f"TaskQueue = '{task_queue}'")
    assert count.count == 0


async def test_refused_transition_exits_5(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, env: dict[str, str]
) -> None:
    async with worker_for(dev_env.client):
        submitted = await sternway(
            env, "submit", "test-chain3", "--arg", 'sleep={"j1": 120}', "--json"
        )
        run_id = submitted.json()["run_id"]
        refused = await sternway(env, "resume", run_id)
        await sternway(env, "stop", run_id)
        await sternway(env, "watch", run_id)
    clean(refused)
    assert refused.code == 5
    assert "only a SUSPENDED run can be resumed" in refused.err


async def test_unreachable_server_exits_4_quickly(task_queue: str) -> None:
    env = cli_env("127.0.0.1:1", task_queue)
    started = asyncio.get_running_loop().time()
    result = await sternway(env, "status", "anything", timeout=30)
    took = asyncio.get_running_loop().time() - started
    clean(result)
    assert result.code == 4
    assert "cannot reach Temporal at 127.0.0.1:1" in result.err
    assert took < 15


async def test_validate_and_actions(env: dict[str, str]) -> None:
    ok = await sternway(env, "validate", "deploy-site", "--arg", "root=/x", "--arg", "release=v1")
    listed = await sternway(env, "actions", "--json")
    assert ok.code == 0 and "valid" in ok.out
    actions = {a["name"]: a for a in listed.json()}
    assert "deploy-site" in actions and "test-chain3" in actions
    args = {a["name"]: a for a in actions["deploy-site"]["args"]}
    assert args["root"]["required"] and args["root"]["type"] == "string"
    assert args["pause"] == {
        "name": "pause", "type": "number", "format": None, "required": False, "default": 0.0,
        "description": "seconds each step lingers", "constraints": {"min": 0.0, "max": 60.0},
    }  # fmt: skip
    assert args["release"]["constraints"] == {"pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
    version = await sternway(env, "version")
    assert version.code == 0 and version.out.startswith("sternway ")
    assert json.loads(listed.out) == listed.json()
