"""What the CLI prints is data, whole: no markup, no raw control characters, no cut links or names.

Every command runs as a real subprocess against the dev server, with its output piped, both at
``COLUMNS=80`` and with no width set (how CI logs and ``make demo > log`` see it).
"""

from __future__ import annotations

import asyncio
import os
import pty
import re
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from sternway import submit
from sternway.worker import create_worker, load_registry
from tests.cli import BIN, REPO, Result, cli_env, sternway
from tests.helpers import wait_for

# Markup rich would read ([/oops] raised MarkupError, [db-1] vanished as a style), a screen clear,
# an OSC 0 window title and an OSC 52 clipboard write.
NASTY = r"x [/oops] [db-1] \e[2J \e]0;pwned\a \e]52;c;aGk=\a"
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

RUNBOOK = f"""
name: markup-mess
description: "describes {NASTY}"
args:
  optional:
    - {{name: hosts, type: "list[str]", default: [web1, web2]}}
jobs:
  - name: canary
    each: {{items: "${{{{ args.hosts }}}}", as: host}}
    jobs:
      - name: canary-deploy
        run: shell
        with:
          argv: [printf, "out {NASTY}\\n"]
  - name: broken
    after: [canary]
    run: fail
    with: {{message: "boom {NASTY}", non_retryable: true}}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "markup-mess.yaml").write_text(RUNBOOK)
    return tmp_path


def envs(dev_env: WorkflowEnvironment, task_queue: str, folder: Path) -> list[dict[str, str]]:
    address = dev_env.client.service_client.config.target_host
    narrow = cli_env(address, task_queue, STERNWAY_ACTIONS_PATH=str(folder), COLUMNS="80")
    piped = {k: v for k, v in narrow.items() if k not in ("COLUMNS", "LINES")}
    return [narrow, piped]


def literal(result: Result) -> str:
    """The output, checked to hold no raw control character and no traceback."""
    for stream in (result.out, result.err):
        assert not RAW_CONTROL.search(stream), stream
        assert "Traceback" not in stream and "MarkupError" not in stream, stream
    return result.out + result.err


def whole(text: str, run_id: str) -> None:
    """Each-item names, bracketed text and the full Web UI link, each on one line."""
    assert "canary[web1].canary-deploy" in text and "canary[web2].canary-deploy" in text, text
    assert "[/oops] [db-1]" in text and "\\x1b[2J" in text and "\\x1b]52;c;aGk=\\x07" in text
    assert re.search(rf"Web UI: http\S+/namespaces/default/workflows/{run_id}\n", text), text


async def test_status_watch_submit_logs_print_literal_and_whole_text(
    dev_env: WorkflowEnvironment, task_queue: str, folder: Path
) -> None:
    registry = load_registry(modules=["tests.scripted"], folders=[folder])
    async with create_worker(dev_env.client, registry, task_queue=task_queue):
        for env in envs(dev_env, task_queue, folder):
            waited = await sternway(env, "submit", "markup-mess", "--wait")
            run_id = waited.out.split()[0]
            status = await sternway(env, "status", run_id)
            watched = await sternway(env, "watch", run_id)
            logs = await sternway(env, "logs", run_id)
            assert (waited.code, status.code, watched.code, logs.code) == (1, 0, 1, 0)
            for result in (waited, status, watched):
                whole(literal(result), run_id)
            text = literal(logs)
            assert "canary[web2].canary-deploy execute attempt 1: COMPLETED" in text
            assert f"out {NASTY}".replace(r"\e", r"\x1b").replace(r"\a", r"\x07") in text
            assert "boom x [/oops] [db-1] \\x1b[2J" in text


async def test_actions_and_errors_print_literal_text(
    dev_env: WorkflowEnvironment, task_queue: str, folder: Path
) -> None:
    for env in envs(dev_env, task_queue, folder):
        listed = await sternway(env, "actions")
        assert listed.code == 0
        text = literal(listed)
        assert "describes x [/oops] [db-1] \\x1b[2J \\x1b]0;pwned\\x07" in text
        # Not squashed: each action's row starts with its whole name.
        assert re.search(r"^markup-mess\s", listed.out, re.MULTILINE), listed.out
        assert re.search(r"^deploy-site\s", listed.out, re.MULTILINE), listed.out
        missing = await sternway(env, "status", "no-such-[/oops]-run")
        assert missing.code == 2 and "[/oops]" in literal(missing)
        bad = await sternway(env, "submit", "markup-mess", "--arg", "nope\x1b[2J=1")
        assert bad.code == 2 and "nope\\x1b[2J" in literal(bad)


UNDONE = """
name: undo-mess
args:
  optional:
    - {name: hosts, type: "list[str]", default: [web1, web2]}
jobs:
  - name: canary
    each: {items: "${{ args.hosts }}", as: host}
    jobs:
      - name: deploy
        run: noop
        rollback: {run: noop}
  - name: broken
    after: [canary]
    run: fail
    with: {non_retryable: true}
"""


async def test_a_rolled_back_group_and_run_say_so(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    (tmp_path / "undo-mess.yaml").write_text(UNDONE)
    registry = load_registry(modules=[], folders=[tmp_path])
    address = dev_env.client.service_client.config.target_host
    env = cli_env(address, task_queue, STERNWAY_ACTIONS_PATH=str(tmp_path), STERNWAY_MODULES="")
    async with create_worker(dev_env.client, registry, task_queue=task_queue):
        waited = await sternway(env, "submit", "undo-mess", "--wait", "--json")
        shown = await sternway(env, "status", waited.json()["run_id"])
    status = waited.json()
    states = {job["name"]: job["state"] for job in status["jobs"]}
    assert status["state"] == "FAILED" and states == {
        "canary": "ROLLED_BACK",
        "canary[web1]": "ROLLED_BACK",
        "canary[web1].deploy": "ROLLED_BACK",
        "canary[web2]": "ROLLED_BACK",
        "canary[web2].deploy": "ROLLED_BACK",
        "broken": "FAILED",
    }
    canary = next(job for job in status["jobs"] if job["name"] == "canary")
    assert canary["detail"] == "2/2 items completed; rolled back"
    assert status["progress"] == {"done": 0, "total": 6, "rolled_back": 5}
    assert "0/6 jobs done, 5 rolled back" in shown.out, shown.out


FANNED = """
name: fan-suspend
args:
  optional:
    - {name: hosts, type: "list[str]", default: [a, b, c]}
jobs:
  - name: fan
    each: {items: "${{ args.hosts }}", as: host, concurrency: 2}
    run: sleep
    with: {duration: 1s}
"""


async def test_a_suspended_each_shows_what_still_runs(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    (tmp_path / "fan-suspend.yaml").write_text(FANNED)
    registry = load_registry(modules=[], folders=[tmp_path])
    async with create_worker(dev_env.client, registry, task_queue=task_queue):
        handle = await submit(dev_env.client, "fan-suspend", {}, task_queue=task_queue)
        await wait_for(handle, lambda s: s.job("fan[b]").state == "RUNNING")
        await handle.suspend()
        done = await wait_for(
            handle, lambda s: [s.job(j).state for j in ("fan[a]", "fan[b]")] == ["COMPLETED"] * 2
        )
        await handle.resume()
        final = await handle.wait()
    assert done.state == "SUSPENDED" and done.job("fan").detail == "0 running, 2/3 started"
    assert final.state == "COMPLETED" and final.job("fan").detail == "3/3 items completed"


async def in_terminal(env: dict[str, str], *args: str) -> str:
    """``sternway`` with stdout on a pseudo-terminal: its output, colours and CRs removed."""
    main, side = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "sternway"), *args, env=env, cwd=REPO, stdout=side, stderr=side
        )
        os.close(side)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = await asyncio.to_thread(os.read, main, 65536)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        await asyncio.wait_for(proc.wait(), 60)
    finally:
        os.close(main)
    text = b"".join(chunks).decode()
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "")


async def test_an_80_column_terminal_gets_whole_names_and_links(
    dev_env: WorkflowEnvironment, task_queue: str, folder: Path
) -> None:
    registry = load_registry(modules=["tests.scripted"], folders=[folder])
    narrow = envs(dev_env, task_queue, folder)[0]
    async with create_worker(dev_env.client, registry, task_queue=task_queue):
        submitted = await sternway(narrow, "submit", "markup-mess", "--wait", "--json")
        run_id = submitted.json()["run_id"]
        for command in ("status", "watch"):
            shown = await in_terminal(narrow, command, run_id)
            assert not RAW_CONTROL.search(shown.replace("\n", "")), shown
            whole(shown, run_id)
            table = shown.split("Web UI:")[0]
            assert max(len(line) for line in table.splitlines()) <= 80, shown
