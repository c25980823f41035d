"""The README's Python example runs as written: its ``notes.py`` served by a worker, submitted with
the README's own ``sternway submit`` command, against the dev server.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from sternway.worker import create_worker, load_registry
from tests.cli import REPO, cli_env, sternway

README = (REPO / "README.md").read_text()


def readme_example() -> tuple[str, list[str]]:
    """The ``notes.py`` block and the ``sternway submit write-note`` command of the README."""
    code = re.search(r"```python\n(# notes\.py\n.*?)```", README, re.DOTALL)
    command = re.search(
        r"^PYTHONPATH=\. STERNWAY_MODULES=notes (sternway submit .*)$", README, re.M
    )
    assert code is not None and command is not None, "the README's example moved"
    return code.group(1), shlex.split(command.group(1))[1:]


async def test_the_readme_python_example_runs(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    code, argv = readme_example()
    (tmp_path / "notes.py").write_text(code)
    note = tmp_path / "n.txt"
    argv = [arg.replace("/tmp/n.txt", str(note)) for arg in argv]
    sys.path.insert(0, str(tmp_path))
    try:
        registry = load_registry(modules=["notes"], folders=[])
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("notes", None)
    env = cli_env(
        dev_env.client.service_client.config.target_host,
        task_queue,
        STERNWAY_MODULES="notes",
        PYTHONPATH=f"{tmp_path}:{REPO}",
    )
    async with create_worker(dev_env.client, registry, task_queue=task_queue):
        result = await sternway(env, *argv)
    assert argv[:2] == ["submit", "write-note"] and "--wait" in argv
    assert result.code == 0, result.out + result.err
    assert "COMPLETED" in result.out
    assert note.read_text() == "hi"
