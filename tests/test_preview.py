"""``sternway plan`` and ``sternway graph``: what the plan shows is what the run does.

The shipped runbooks are planned and then run: the same job instances, and every job starts
after the jobs its plan entry waits for. A runbook with fault injection fails at each of its
jobs in turn: the rollbacks each run carries out are the plan's ``rollback_if_fails``, in order.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from sternway import submit
from sternway.worker import create_worker
from sternway.workflows._preview import preview
from sternway.workflows._runbook import load_runbook
from sternway.workflows.models import RunStatus
from tests.cli import cli_env, sternway
from tests.helpers import free_port
from tests.test_runbooks_run import REGISTRY, SHIPPED, runbook_args

pytestmark = pytest.mark.timeout(240)

# Every job of this runbook fails when args.fail names it; every job has a rollback. The each
# runs its items one at a time, so what has started when a job fails is certain.
FAULTY = """
name: faulty
args:
  optional: [{name: fail, type: str, default: none}]
jobs:
  - name: a
    run: shell
    with: {argv: [sh, -c, 'test "$1" != a', x, "${{ args.fail }}"]}
    rollback: {run: noop}
  - name: per
    after: [a]
    each: {items: [x, y], as: item, concurrency: 1}
    jobs:
      - name: g1
        run: shell
        with: {argv: [sh, -c, 'test "$1" != "per[$2].g1"', x, "${{ args.fail }}", "${{ item }}"]}
        rollback: {run: noop}
      - name: g2
        after: [g1]
        run: shell
        with: {argv: [sh, -c, 'test "$1" != "per[$2].g2"', x, "${{ args.fail }}", "${{ item }}"]}
        rollback: {run: noop}
  - name: d
    after: [per]
    run: shell
    with: {argv: [sh, -c, 'test "$1" != d', x, "${{ args.fail }}"]}
    rollback: {run: noop}
"""


def _planned_order_holds(plan: dict[str, Any], status: RunStatus) -> None:
    """Every job started after the jobs its plan entry waits for had finished."""
    ran = {j.name: j for j in status.jobs}
    for job in plan["jobs"]:
        me = ran[job["name"]]
        if me.started_at is None:
            continue
        for dep in job["after"]:
            before = ran[dep]
            inside = job["name"].startswith((f"{dep}[", f"{dep}."))  # an item of its each
            if inside or job["kind"] in ("each", "group") or before.finished_at is None:
                continue
            assert before.finished_at <= me.started_at, (dep, job["name"])


@pytest.mark.parametrize("name", SHIPPED)
async def test_plan_of_a_shipped_runbook_is_what_its_run_does(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path, name: str
) -> None:
    args = runbook_args(name, tmp_path)
    env = cli_env("127.0.0.1:1", task_queue)  # plan contacts no server
    pairs = [x for k, v in args.items() for x in ("--arg", f"{k}={_arg_text(v)}")]
    shown = await sternway(env, "plan", name, *pairs, "--json")
    assert shown.code == 0, shown.err
    plan = shown.json()
    assert set(plan) == {"action", "args", "locks", "levels", "jobs"}
    async with create_worker(dev_env.client, REGISTRY, task_queue=task_queue):
        handle = await submit(dev_env.client, name, args, task_queue=task_queue)
        status = await handle.wait()
    assert status.state == "COMPLETED"
    assert sorted(j["name"] for j in plan["jobs"]) == sorted(j.name for j in status.jobs)
    leaves = [n for level in plan["levels"] for n in level]
    assert sorted(leaves) == sorted(
        j["name"]
        for j in plan["jobs"]
        if j["kind"] not in ("each", "group") and j.get("if") is not False
    )
    _planned_order_holds(plan, status)
    text = await sternway(env, "plan", name, *pairs)
    assert text.code == 0 and "levels (the jobs of a level can run at once):" in text.out


def _arg_text(value: Any) -> str:
    return ",".join(value) if isinstance(value, list) else str(value)


async def test_each_job_failing_runs_exactly_the_rollbacks_the_plan_lists(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    book = tmp_path / "faulty.yaml"
    book.write_text(FAULTY)
    action = load_runbook(str(book))
    registry = type(REGISTRY)([action])
    leaves = [j for j in preview(action, {}).jobs if j.kind not in ("each", "group")]
    assert [j.name for j in leaves] == [
        "a",
        "per[x].g1",
        "per[x].g2",
        "per[y].g1",
        "per[y].g2",
        "d",
    ]
    async with create_worker(dev_env.client, registry, task_queue=task_queue):
        for job in leaves:
            planned = preview(action, {"fail": job.name}).jobs
            expected = next(j for j in planned if j.name == job.name)
            assert expected.rollback_if_started == []
            handle = await submit(
                dev_env.client, "faulty", {"fail": job.name}, task_queue=task_queue
            )
            status = await handle.wait()
            assert status.state == "FAILED" and status.error is not None
            assert status.error.job == job.name
            undone = sorted(
                (j for j in status.jobs if j.rollback is not None and j.rollback.log),
                key=lambda j: j.rollback.log[0].started_at,  # type: ignore[union-attr]
            )
            assert [j.name for j in undone] == expected.rollback_if_fails, job.name


async def test_plan_of_a_bad_file_or_bad_args_exits_2_and_contacts_nothing(
    tmp_path: Path,
) -> None:
    env = cli_env(f"127.0.0.1:{free_port()}", "unused")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\njobs:\n  - {name: a, run: noop, after: [ghost]}\n")
    result = await sternway(env, "plan", str(bad))
    assert result.code == 2 and "bad.yaml:3" in result.err and "ghost" in result.err
    good = tmp_path / "faulty.yaml"
    good.write_text(FAULTY)
    wrong = await sternway(env, "plan", str(good), "--arg", "nope=1")
    assert wrong.code == 2 and "unknown arg 'nope'" in wrong.err
    ok = await sternway(env, "plan", str(good), "--format", "dot")
    assert ok.code == 0 and ok.out.startswith('digraph "faulty"')
    assert "Traceback" not in result.err + wrong.err


def _check_mermaid(text: str, names: set[str]) -> None:
    lines = text.strip().splitlines()
    assert lines[0] == "flowchart TD"
    nodes = {}
    for line in lines[1:]:
        node = re.fullmatch(r'  (n\d+)\["(.*)"\]', line)
        edge = re.fullmatch(r"  (n\d+) --> (n\d+)", line)
        assert node or edge, line
        if node:
            nodes[node.group(1)] = node.group(2)
        elif edge:
            assert edge.group(1) in nodes and edge.group(2) in nodes, line
    shown = {label.split("<br/>")[0] for label in nodes.values()}
    assert shown == names


async def test_graph_of_a_finished_run_is_valid_dot_and_mermaid(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    name = "rolling-restart"
    args = {**runbook_args(name, tmp_path), "fail_host": "web2"}
    async with create_worker(dev_env.client, REGISTRY, task_queue=task_queue):
        handle = await submit(dev_env.client, name, args, task_queue=task_queue)
        status = await handle.wait()
    assert status.state == "FAILED"
    env = cli_env(dev_env.client.service_client.config.target_host, task_queue)
    names = {j.name for j in status.jobs}
    mermaid = await sternway(env, "graph", handle.run_id)
    assert mermaid.code == 0, mermaid.err
    _check_mermaid(mermaid.out, names)
    as_json = json.loads((await sternway(env, "graph", handle.run_id, "--format", "json")).out)
    assert {n["name"] for n in as_json["nodes"]} == names
    assert {"from": "snapshot", "to": "per-host"} in as_json["edges"]
    assert {"from": "per-host[web1].drain", "to": "per-host[web1].restart"} in as_json["edges"]
    assert any("ROLLED_BACK" in n["label"] for n in as_json["nodes"])
    dot = await sternway(env, "graph", handle.run_id, "--format", "dot")
    assert dot.code == 0 and dot.out.startswith("digraph ")
    renderer = shutil.which("dot")
    if renderer is None:
        pytest.fail("graphviz's dot is missing: `make test` installs it (apt-get install graphviz)")
    svg = await asyncio.to_thread(
        subprocess.run,
        [renderer, "-Tsvg"],
        input=dot.out,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert svg.returncode == 0, svg.stderr
    assert "<svg" in svg.stdout and "host[web2].check" in svg.stdout  # "-" is &#45; there
