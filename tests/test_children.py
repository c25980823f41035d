"""Actions that call actions (``run: action``) on a real dev server: the saga holds for the
pair, stop reaches the child, a child shares its parent's keys, and circles are refused."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from sternway import RunHandle, submit
from sternway.worker import create_worker
from sternway.workflows._actions import Registry
from sternway.workflows._runbook import load_folder
from sternway.workflows.models import RunState
from tests.cli import cli_env, sternway
from tests.helpers import wait_for, workflow_task_failures

pytestmark = pytest.mark.timeout(180)


def _step(name: str, extra: str = "") -> str:
    """A shell job that logs ``do NAME`` (then runs ``extra``) and undoes with ``undo NAME``."""
    return f"""
  - name: {name}
    run: shell
    with: {{argv: [sh, -c, 'echo do {name} >> "$1"{extra}', x, "${{{{ args.log }}}}",
                   "${{{{ args.hold }}}}", "${{{{ args.fail }}}}"]}}
    rollback: {{run: shell, with: {{argv: [sh, -c, 'echo undo {name} >> "$1"', x,
                                           "${{{{ args.log }}}}"]}}}}"""


ARGS = """
args:
  required: [{name: log, type: str}]
  optional:
    - {name: hold, type: float, default: 0}
    - {name: fail, type: str, default: none}
    - {name: key, type: str, default: k}
"""

KID = f"""
name: kid
{ARGS}
jobs:{_step("c1")}{_step("c2", '; sleep "$2"')}
    after: [c1]
"""

P2 = _step("p2", '; test "$3" != p2')
MOM = f"""
name: mom
{ARGS}
jobs:{_step("p1")}
  - name: call
    after: [p1]
    run: action
    with:
      action: kid
      args: {{log: "${{{{ args.log }}}}", hold: "${{{{ args.hold }}}}"}}{P2}
    after: [call]
"""

LOCKED_KID = """
name: locked-kid
args:
  required: [{name: key, type: str}]
locks: [{key: "fam/${{ args.key }}"}]
jobs:
  - {name: k1, run: sleep, with: {duration: 1s}}
"""

LOCKED_MOM = """
name: locked-mom
args:
  required: [{name: key, type: str}]
locks: [{key: "fam/${{ args.key }}"}]
jobs:
  - name: call
    run: action
    with: {action: locked-kid, args: {key: "${{ args.key }}"}}
  - {name: after-call, after: [call], run: sleep, with: {duration: 1s}}
"""


@pytest.fixture
def books(tmp_path: Path) -> Path:
    folder = tmp_path / "books"
    folder.mkdir()
    for name, text in [
        ("kid", KID),
        ("mom", MOM),
        ("locked-kid", LOCKED_KID),
        ("locked-mom", LOCKED_MOM),
    ]:
        (folder / f"{name}.yaml").write_text(text)
    return folder


@pytest.fixture
async def client(dev_env: WorkflowEnvironment, task_queue: str, books: Path) -> Any:
    registry = Registry(load_folder(books))
    async with create_worker(dev_env.client, registry, task_queue=task_queue):
        yield dev_env.client


def _log(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_a_failure_after_the_child_undoes_the_parent_job_then_the_child_then_the_rest(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    log = tmp_path / "effects.log"
    handle = await submit(client, "mom", {"log": str(log), "fail": "p2"}, task_queue=task_queue)
    final = await handle.wait()
    assert final.state == RunState.FAILED and final.error is not None
    assert final.error.job == "p2"
    assert _log(log) == [
        "do p1", "do c1", "do c2", "do p2",
        "undo p2", "undo c2", "undo c1", "undo p1",
    ]  # fmt: skip
    call = final.job("call")
    assert call.state == "ROLLED_BACK" and call.detail == f"child run {handle.run_id}/call"
    assert set(call.output or {}) == {"c1", "c2"}  # the outputs of the child's jobs
    child = await RunHandle(client, f"{handle.run_id}/call").status()
    assert child.state == RunState.STOPPED and child.parent == handle.run_id
    assert [j.state for j in child.jobs] == ["ROLLED_BACK", "ROLLED_BACK"]
    for run_id in (handle.run_id, child.run_id):
        assert await workflow_task_failures(client, run_id) == []


async def test_a_completed_pair_ends_completed_and_nothing_is_undone(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    log = tmp_path / "effects.log"
    final = await (await submit(client, "mom", {"log": str(log)}, task_queue=task_queue)).wait()
    assert final.state == RunState.COMPLETED
    assert _log(log) == ["do p1", "do c1", "do c2", "do p2"]
    child = await RunHandle(client, f"{final.run_id}/call").status()
    assert child.state == RunState.COMPLETED


async def test_stopping_the_parent_stops_the_child_which_undoes_itself_then_the_parent(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    log = tmp_path / "effects.log"
    handle = await submit(client, "mom", {"log": str(log), "hold": 30}, task_queue=task_queue)
    child = RunHandle(client, f"{handle.run_id}/call")

    # The child exists once its c2 has begun (its log line is written then).
    await wait_for(handle, lambda s: "do c2" in _log(log), timeout=60)
    await wait_for(child, lambda s: s.job("c2").state == "RUNNING", timeout=60)
    await handle.stop(reason="wrong cluster")
    final = await handle.wait()
    assert final.state == RunState.STOPPED
    assert _log(log) == ["do p1", "do c1", "do c2", "undo c2", "undo c1", "undo p1"]
    child_final = await child.status()
    assert child_final.state == RunState.STOPPED
    assert final.job("p2").attempts == 0


async def test_a_child_shares_its_parents_key_and_another_run_waits(
    client: Client, task_queue: str
) -> None:
    handle = await submit(client, "locked-mom", {"key": "a1"}, task_queue=task_queue)
    await wait_for(handle, lambda s: s.job("call").state == "RUNNING")
    other = await submit(client, "locked-kid", {"key": "a1"}, task_queue=task_queue)
    waiting = await wait_for(other, lambda s: bool(s.locks and s.locks[0].holders))
    assert handle.run_id in waiting.locks[0].holders  # and its child, re-entrant
    final = await asyncio.wait_for(handle.wait(), 60)
    assert final.state == RunState.COMPLETED
    child = await RunHandle(client, f"{handle.run_id}/call").status()
    assert child.state == RunState.COMPLETED and child.locks[0].state == "released"
    done = await other.wait()
    assert done.state == RunState.COMPLETED
    assert done.started_at is not None and final.finished_at is not None
    assert done.started_at >= final.job("after-call").finished_at  # type: ignore[operator]


async def test_actions_that_call_each_other_in_a_circle_are_refused(tmp_path: Path) -> None:
    env = cli_env("127.0.0.1:1", "unused")
    itself = tmp_path / "loop.yaml"
    itself.write_text("name: loop\njobs:\n  - {name: a, run: action, with: {action: loop}}\n")
    result = await sternway(env, "validate", str(itself))
    assert result.code == 2 and "calls itself" in result.err, result.err
    folder = tmp_path / "pair"
    folder.mkdir()
    (folder / "a.yaml").write_text(
        "name: ping\njobs:\n  - {name: a, run: action, with: {action: pong}}\n"
    )
    (folder / "b.yaml").write_text(
        "name: pong\njobs:\n  - {name: b, run: action, with: {action: ping}}\n"
    )
    served = await sternway({**env, "STERNWAY_ACTIONS_PATH": str(folder)}, "actions")
    assert served.code == 2 and "cycle: p" in served.err, served.err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\njobs:\n  - {name: a, run: action, with: {action: 'no good'}}\n")
    refused = await sternway(env, "validate", str(bad))
    assert refused.code == 2 and "action name 'no good' is invalid" in refused.err, refused.err
