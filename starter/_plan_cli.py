"""``sternway plan`` (what a run would do, before it runs) and ``sternway graph`` (a run's jobs
with their states), from workflows/_preview.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from sternway.starter._session import Session, command, is_runbook_path

if TYPE_CHECKING:
    from sternway.workflows._actions import Action
    from sternway.workflows._preview import PlannedJob, PlanView

__all__ = ["graph_command", "plan_command"]


@click.command(name="plan")
@click.argument("action", metavar="ACTION|FILE.yaml")
@click.option("--arg", "pairs", multiple=True, metavar="K=V", help="an arg of the action")
@click.option("--args-file", type=click.Path(), help="a JSON or YAML object of args")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option("--format", "fmt", type=click.Choice(["text", "mermaid", "dot"]), default="text")
@command
async def plan_command(
    session: Session,
    action: str,
    pairs: tuple[str, ...],
    args_file: str | None,
    as_json: bool,
    fmt: str,
) -> int:
    """Show what a run of ACTION (or of a runbook file) would do; start nothing.

    Needs no worker; a FILE needs no server at all.
    """
    from sternway._args import parse_args
    from sternway.workflows._preview import plan_graph, preview

    found: Action
    if is_runbook_path(action):
        from sternway.workflows._runbook import load_runbook

        found = load_runbook(action)
    else:
        found = session.registry.get(action)
    view = preview(found, parse_args(found, pairs, args_file))
    if as_json:
        session.print_json(view.model_dump(mode="json", by_alias=True))
    elif fmt != "text":
        session.out.file.write(plan_graph(view, fmt))
    else:
        for line in plan_lines(view):
            session.out.print(line, soft_wrap=True)
    return 0


def _when(job: PlannedJob) -> str:
    parts = [job.kind]
    if isinstance(job.each, str):
        parts.append(f"each: {job.each}")
    elif job.each is not None:
        parts.append(
            f"each over {job.each.items} items as {job.each.as_}, {job.each.concurrency} at a time"
        )
    if job.if_ is False:
        parts.append("skipped: its if is false")
    elif job.if_ is not None:
        parts.append(
            "if: decided at run time" if job.if_ == "run time" else f"if: {job.if_}".lower()
        )
    attempts = job.retry.get("max_attempts", 1)
    if attempts > 1:
        parts.append(f"up to {attempts} attempts")
    if job.approval is not None:
        deadline = job.approval.timeout
        parts.append(
            "approval, no deadline"
            if deadline is None
            else f"approval within {deadline}{'s' if isinstance(deadline, float) else ''}, "
            f"then {job.approval.on_timeout}"
        )
    if job.after:
        parts.append("after " + ", ".join(job.after))
    return "; ".join(parts)


def plan_lines(view: PlanView) -> list[str]:
    """The plan as text: args, locks, levels, then every job with what a failure undoes."""
    from sternway.starter._render import duration_text

    lines = [f"plan of {view.action}", f"args: {view.args}"]
    for lock in view.locks:
        wait = f", wait at most {duration_text(lock.timeout)}" if lock.timeout else ""
        lines.append(f"lock: {lock.key} ({lock.mode}, limit {lock.limit}{wait})")
    lines.append("levels (the jobs of a level can run at once):")
    lines += [f"  {n}. {', '.join(names)}" for n, names in enumerate(view.levels, 1)]
    lines.append("jobs:")
    for job in view.jobs:
        depth = job.name.count("[") + job.name.count(".")
        lines.append(f"  {'  ' * min(depth, 6)}{job.name}: {_when(job)}")
        if job.kind in ("group", "each") or job.if_ is False:
            continue  # containers do no work; a job skipped by its if runs nothing
        undone = ", ".join(job.rollback_if_fails) or "nothing"
        lines.append(f"  {'  ' * min(depth, 6)}  if it fails for good, undone: {undone}")
        if job.rollback_if_started:
            beside = ", ".join(job.rollback_if_started)
            lines.append(f"  {'  ' * min(depth, 6)}  and, if they had started: {beside}")
    return lines


@click.command(name="graph")
@click.argument("run_id")
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot", "json"]), default="mermaid")
@command
async def graph_command(session: Session, run_id: str, fmt: str) -> int:
    """Draw a run's jobs with their states and rollback states (Mermaid, DOT or JSON)."""
    from sternway._client import RunHandle, check_run_id
    from sternway.workflows._preview import run_graph
    from sternway.workflows.errors import SternwayError

    handle = RunHandle(await session.client(), check_run_id(run_id))
    status = await handle.status()
    try:
        plan = session.registry.get(status.action).plan
    except SternwayError:
        plan = None  # an action this CLI does not know: items and groups are still drawn
    session.out.file.write(run_graph(status, plan, fmt))
    return 0
