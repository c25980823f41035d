"""CLI: wall time of ``sternway status`` and ``sternway list`` against a minimal temporalio client
making the same call, each a fresh process, as a user's shell would run them."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from bench import _actions
from bench._harness import BIN, REPO, Bench, Result, Row, env_for_cli, median

ROUNDS = {"tiny": 2, "full": 15}

# The least a Python program does to ask the same: connect, one call, print JSON, leave (with
# os._exit, as the CLI does, since the SDK can abort at interpreter exit).
MINIMAL_STATUS = """
import asyncio, json, os, sys
from temporalio.client import Client
async def main():
    client = await Client.connect(sys.argv[1])
    status = await client.get_workflow_handle(sys.argv[2]).query("status")
    print(json.dumps(status, indent=2))
asyncio.run(main())
sys.stdout.flush()
os._exit(0)
"""
MINIMAL_LIST = """
import asyncio, json, os, sys
from temporalio.client import Client
async def main():
    client = await Client.connect(sys.argv[1])
    pages = client.list_workflows("SternwayState IS NOT NULL", page_size=20)
    await pages.fetch_next_page()
    runs = [
        {"run_id": w.id, "action": w.workflow_type, "started_at": str(w.start_time)}
        for w in pages.current_page or []
    ]
    print(json.dumps({"runs": runs}, indent=2))
asyncio.run(main())
sys.stdout.flush()
os._exit(0)
"""


async def _wall(argv: list[str], env: dict[str, str]) -> tuple[float, Any]:
    """Seconds from spawning ``argv`` to its exit, and its JSON output."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited {proc.returncode}: {err.decode()[-500:]}")
    return elapsed, json.loads(out)


async def cli(bench: Bench, size: str, rounds: int | None) -> Result:
    """Alternating rounds of the four commands; medians of wall time."""
    rounds = rounds or ROUNDS[size]
    run_id, _ = await bench.sw_run(_actions.CHAIN)
    address = bench.server.address
    env = env_for_cli(address)
    commands = {
        "sternway status": [str(BIN / "sternway"), "status", run_id, "--json"],
        "minimal status": [sys.executable, "-c", MINIMAL_STATUS, address, run_id],
        "sternway list": [str(BIN / "sternway"), "list", "--limit", "20", "--json"],
        "minimal list": [sys.executable, "-c", MINIMAL_LIST, address],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for _ in range(1):  # one unmeasured round: the OS file cache is warm for both sides
        for name in names:
            await _wall(commands[name], env)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            elapsed, output = await _wall(commands[name], env)
            if name.endswith("status") and output["state"] != "COMPLETED":
                raise RuntimeError(f"{name}: unexpected answer {output}")
            if name.endswith("list") and not output["runs"]:
                raise RuntimeError(f"{name}: no runs listed")
            times[name].append(elapsed * 1000)
    return Result(
        scenario="cli",
        title="CLI: wall time of one command in a fresh process (a completed 10-job run)",
        measured="sternway CLI",
        baseline="minimal temporalio client",
        rows=[
            Row(
                "cli",
                "`sternway status RUN --json`",
                "ms",
                median(times["sternway status"]),
                median(times["minimal status"]),
                goal="<= 1.2",
                note=f"median of {rounds}; minimal: Client.connect + query('status'); "
                "ratio: median of per-round ratios",
                rounds=(times["sternway status"], times["minimal status"]),
            ),
            Row(
                "cli",
                "`sternway list --limit 20 --json`",
                "ms",
                median(times["sternway list"]),
                median(times["minimal list"]),
                goal="<= 1.25",
                note=f"median of {rounds}; minimal: Client.connect + list_workflows; "
                "ratio: median of per-round ratios",
                rounds=(times["sternway list"], times["minimal list"]),
            ),
        ],
        data={"rounds": rounds, "ms": times},
    )
