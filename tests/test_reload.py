"""A running worker serves edited runbooks within seconds (issue 13): an edit is served, an
invalid edit keeps the last good version with one error line, a run in flight keeps its plan,
and added and removed runbooks come and go. A real worker (``run_worker``, the start path of
``sternway worker`` and ``sternway dev``) on the dev server."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from temporalio.testing import WorkflowEnvironment

from sternway import submit
from sternway._catalog import served_actions
from sternway.worker import create_worker, load_registry, run_worker
from sternway.workflows._actions import Registry
from sternway.workflows._catalog import ServedAction
from sternway.workflows._runbook import runbook_version
from sternway.workflows.models import JobState
from tests.cli import cli_env, sternway
from tests.helpers import wait_for

SAY = "import sys; print(sys.argv[1])"


def greet(word: str) -> str:
    """A runbook that waits for an approval when asked, then prints ``word``."""
    argv = json.dumps([sys.executable, "-c", SAY, word])
    return f"""
name: reload-greet
args:
  optional:
    - {{name: gate, type: bool, default: false}}
jobs:
  - {{name: gate, run: approval, if: "${{{{ args.gate }}}}"}}
  - {{name: say, run: shell, after: [gate], with: {{argv: {argv}}}}}
"""


async def served(registry: Registry, name: str, version: str | None) -> None:
    """Wait until the worker's registry serves ``version`` of ``name`` (None: not at all)."""
    deadline = asyncio.get_running_loop().time() + 5.0  # the promise: within 5 s
    while True:
        now = registry.get(name).version if name in registry else None
        if now == version:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{name}: still {now}"
        await asyncio.sleep(0.1)


async def catalog(env: WorkflowEnvironment, task_queue: str) -> dict[str, ServedAction]:
    """The workers' catalog, once their pollers show on the queue (a moment after they start;
    until then there is no worker to ask)."""
    deadline = asyncio.get_running_loop().time() + 10.0
    while (served := await served_actions(env.client, task_queue)) is None:
        assert asyncio.get_running_loop().time() < deadline, "the catalog never answered"
        await asyncio.sleep(0.2)
    return served


@pytest.fixture
async def watched(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> AsyncIterator[tuple[Path, Registry, list[MutableMapping[str, Any]]]]:
    """A folder with greet('v1'), and a worker serving it with reload; the worker's log."""
    folder = tmp_path / "actions"
    folder.mkdir()
    (folder / "greet.yaml").write_text(greet("v1"))
    registry = load_registry(modules=[], folders=[folder])
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(
            run_worker(dev_env.client, registry, task_queue=task_queue, stop=stop, watch=[folder])
        )
        try:
            yield folder, registry, logs
        finally:
            stop.set()
            await task


async def say(env: WorkflowEnvironment, task_queue: str, **args: Any) -> str:
    handle = await submit(env.client, "reload-greet", args, task_queue=task_queue)
    status = await handle.wait()
    assert status.state == "COMPLETED", status.model_dump_json()
    return str(status.job("say").output["stdout"]).strip()


async def test_edit_is_served_bad_edit_is_not_and_runs_in_flight_keep_their_plan(
    dev_env: WorkflowEnvironment,
    task_queue: str,
    watched: tuple[Path, Registry, list[MutableMapping[str, Any]]],
) -> None:
    folder, registry, logs = watched
    file = folder / "greet.yaml"
    assert await say(dev_env, task_queue) == "v1"
    # A run that starts with v1 and waits for a person.
    in_flight = await submit(dev_env.client, "reload-greet", {"gate": True}, task_queue=task_queue)
    await wait_for(in_flight, lambda s: s.job("gate").state == JobState.WAITING)

    # An edit is served within 5 s: a run submitted after prints the new text.
    file.write_text(greet("v2"))
    await served(registry, "reload-greet", runbook_version(greet("v2")))
    assert await say(dev_env, task_queue) == "v2"
    assert [e for e in logs if e["event"] == "runbooks reloaded"][-1]["changed"] == ["reload-greet"]

    # An invalid edit keeps v2 and logs one error line, however long it stays.
    file.write_text(greet("v3").replace("run: shell", "run: shel"))
    deadline = asyncio.get_running_loop().time() + 5.0
    while not [e for e in logs if e["log_level"] == "error"]:
        assert asyncio.get_running_loop().time() < deadline, logs
        await asyncio.sleep(0.1)
    await asyncio.sleep(2.5)  # two more looks at the folder: no second line for the same file
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1, errors
    assert "unknown job kind 'shel'" in errors[0]["error"] and "greet.yaml:" in errors[0]["error"]
    assert errors[0]["event"] == "runbooks not reloaded: the last good ones stay served"
    assert await say(dev_env, task_queue) == "v2"

    # The run in flight finishes with the plan it started with.
    await in_flight.approve("gate")
    status = await in_flight.wait()
    assert status.state == "COMPLETED"
    assert status.job("say").output["stdout"].strip() == "v1"


async def test_added_and_removed_runbooks_come_and_go(
    dev_env: WorkflowEnvironment,
    task_queue: str,
    watched: tuple[Path, Registry, list[MutableMapping[str, Any]]],
) -> None:
    folder, registry, _ = watched
    other = greet("added").replace("reload-greet", "reload-other")
    (folder / "other.yml").write_text(other)
    await served(registry, "reload-other", runbook_version(other))
    handle = await submit(dev_env.client, "reload-other", {}, task_queue=task_queue)
    assert (await handle.wait()).job("say").output["stdout"].strip() == "added"

    (folder / "other.yml").unlink()
    await served(registry, "reload-other", None)
    gone = await submit(dev_env.client, "reload-other", {}, task_queue=task_queue)
    status = await gone.wait()
    assert status.state == "FAILED" and status.error is not None
    assert "unknown action 'reload-other'" in status.error.message


async def test_actions_and_validate_show_the_version_the_workers_serve(
    dev_env: WorkflowEnvironment,
    task_queue: str,
    tmp_path: Path,
    watched: tuple[Path, Registry, list[MutableMapping[str, Any]]],
) -> None:
    folder, _, _ = watched
    address = dev_env.client.service_client.config.target_host
    v1 = runbook_version(greet("v1"))
    elsewhere = tmp_path / "draft.yaml"
    elsewhere.write_text(greet("draft"))
    assert (await catalog(dev_env, task_queue))["reload-greet"].version == v1

    # The CLI loads the draft's folder, the workers serve v1: `actions` shows theirs.
    env = cli_env(address, task_queue, STERNWAY_ACTIONS_PATH=str(tmp_path), STERNWAY_MODULES="")
    listed = await sternway(env, "actions", "--json")
    assert listed.code == 0, listed
    [greeting] = [a for a in listed.json() if a["name"] == "reload-greet"]
    assert greeting["version"] == f"{v1} (file here: {runbook_version(greet('draft'))})"

    # validate of a file the workers serve in another version warns, and still exits 0.
    checked = await sternway(env, "validate", str(elsewhere))
    assert checked.code == 0, checked
    assert f"serve 'reload-greet' version {v1}" in checked.err, checked.err
    # The file they serve: no warning.
    served = cli_env(address, task_queue, STERNWAY_ACTIONS_PATH=str(folder))
    same = await sternway(served, "validate", str(folder / "greet.yaml"))
    assert same.code == 0 and "warning" not in same.err, same

    # No worker on the queue: versions of the files here, said plainly; no warning.
    alone = cli_env(address, f"{task_queue}-none", STERNWAY_ACTIONS_PATH=str(folder))
    listed = await sternway(alone, "actions", "--json")
    [greeting] = [a for a in listed.json() if a["name"] == "reload-greet"]
    assert greeting["version"] == v1 and "no worker answered" in listed.err


@pytest.mark.parametrize("sandbox", ["off", "strict"])
async def test_the_catalog_answers_under_either_sandbox(
    dev_env: WorkflowEnvironment, task_queue: str, sandbox: str
) -> None:
    registry = load_registry(modules=[], folders=[])
    async with create_worker(dev_env.client, registry, task_queue=task_queue, sandbox=sandbox):
        served = await catalog(dev_env, task_queue)
    assert served["deploy-site"].version == "python"
    assert served["deploy-site"].source is None
