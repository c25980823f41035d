"""A user project laid out as Temporal's samples teach runs its Python action (must-show 1).

Its own ``workflows.py`` (the action), ``activities.py`` (the job functions), ``worker.py`` and
``starter.py`` (helpers the jobs use) sit on ``PYTHONPATH`` and are named in
``STERNWAY_MODULES``, as the README says. ``sternway worker``, ``submit --wait`` and ``status``
run as processes in the project's folder against a real dev server. When Sternway installed
top-level ``workflows``/``worker``/... packages, the user's modules broke ``from sternway import
Action`` ("'workflows' is not a package"); everything lives under ``sternway`` now.
"""

from __future__ import annotations

import asyncio
import signal
import textwrap
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from tests.cli import BIN, cli_env, sternway

PROJECT = {
    "worker.py": '''
        """The user's worker.py: settings the jobs share."""

        GREETING_FILE = "greeting.txt"
    ''',
    "starter.py": '''
        """The user's starter.py: how a greeting reads."""


        def greeting(name: str) -> str:
            return f"hello, {name}!"
    ''',
    "activities.py": '''
        """The user's job functions."""

        from pathlib import Path
        from typing import Any

        from sternway import JobContext, RollbackContext
        from starter import greeting
        from worker import GREETING_FILE


        def write_greeting(ctx: JobContext) -> dict[str, Any]:
            path = Path(ctx.args.folder) / GREETING_FILE
            path.write_text(greeting(ctx.args.name))
            return {"path": str(path)}


        def remove_greeting(ctx: RollbackContext) -> None:
            (Path(ctx.args.folder) / GREETING_FILE).unlink(missing_ok=True)


        def count_letters(ctx: JobContext) -> dict[str, Any]:
            text = Path(ctx.deps["write"]["path"]).read_text()
            return {"letters": sum(c.isalpha() for c in text)}
    ''',
    "workflows.py": '''
        """The user's action."""

        from pydantic import BaseModel

        from activities import count_letters, remove_greeting, write_greeting
        from sternway import Action, Job


        class GreetArgs(BaseModel):
            name: str
            folder: str


        ACTIONS = [
            Action(
                "user-greet",
                args=GreetArgs,
                jobs=[
                    Job("write", execute=write_greeting, rollback=remove_greeting),
                    Job("count", execute=count_letters, after=["write"]),
                ],
            )
        ]
    ''',
}


async def test_a_project_with_its_own_workflows_worker_and_starter_runs_its_action(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    project, out = tmp_path / "project", tmp_path / "out"
    project.mkdir()
    out.mkdir()
    for name, source in PROJECT.items():
        (project / name).write_text(textwrap.dedent(source).lstrip())
    address = dev_env.client.service_client.config.target_host
    env = cli_env(address, task_queue, STERNWAY_MODULES="workflows", PYTHONPATH=str(project))
    log = tmp_path / "worker.log"
    with log.open("wb") as output:
        worker = await asyncio.create_subprocess_exec(
            str(BIN / "sternway"), "worker", env=env, cwd=project, stdout=output, stderr=output
        )
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while '"worker started"' not in log.read_text():
            assert worker.returncode is None, log.read_text()
            assert asyncio.get_running_loop().time() < deadline, log.read_text()
            await asyncio.sleep(0.2)

        submitted = await sternway(
            env, "submit", "user-greet", "--arg", "name=Ada", "--arg", f"folder={out}",
            "--wait", "--json", cwd=project, timeout=90,
        )  # fmt: skip
        assert submitted.code == 0, submitted.out + submitted.err + log.read_text()
        assert submitted.json()["state"] == "COMPLETED"
        status = await sternway(env, "status", submitted.json()["run_id"], "--json", cwd=project)
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), 45)
    assert status.code == 0, status.err
    run = status.json()
    assert (run["action"], run["state"]) == ("user-greet", "COMPLETED")
    outputs = {job["name"]: job["output"] for job in run["jobs"]}
    assert outputs == {"write": {"path": str(out / "greeting.txt")}, "count": {"letters": 8}}
    assert (out / "greeting.txt").read_text() == "hello, Ada!"
    assert worker.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()
