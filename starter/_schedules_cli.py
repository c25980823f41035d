"""``sternway schedule create|list|describe|pause|unpause|trigger|delete``."""

from __future__ import annotations

import click

from sternway.starter._session import Session, command, duration_option

__all__ = ["schedule_group"]


@click.group(name="schedule")
def schedule_group() -> None:
    """Start runs on a timetable (Temporal Schedules, shown in the Web UI)."""


@schedule_group.command(name="create")
@click.argument("schedule_id", metavar="ID")
@click.argument("action")
@click.option("--cron", help="a cron expression, e.g. '0 3 * * *'")
@click.option("--every", help="an interval, e.g. 10m")
@click.option("--arg", "pairs", multiple=True, metavar="K=V", help="an arg of the action")
@click.option("--args-file", type=click.Path(), help="a JSON or YAML object of args")
@click.option(
    "--overlap",
    type=click.Choice(["skip", "buffer-one", "buffer-all", "cancel-other", "allow-all"]),
    default="skip",
    show_default=True,
    help="what to do when a run is due while the last one still runs",
)
@click.option("--pause-on-failure", is_flag=True, help="pause when a run ends unsuccessfully")
@click.option("--jitter", help="start each run up to this much later, e.g. 30s")
@click.option("--note", help="a note shown with the schedule")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@command
async def create(
    session: Session,
    schedule_id: str,
    action: str,
    cron: str | None,
    every: str | None,
    pairs: tuple[str, ...],
    args_file: str | None,
    overlap: str,
    pause_on_failure: bool,
    jitter: str | None,
    note: str | None,
    as_json: bool,
) -> int:
    """Create schedule ID: runs of ACTION with these args on --cron or --every."""
    from sternway._args import parse_args
    from sternway._schedules import check_schedule_id, create_schedule

    check_schedule_id(schedule_id)
    found = session.registry.get(action)
    args = parse_args(found, pairs, args_file)
    interval = duration_option(every, "--every")
    spread = duration_option(jitter, "--jitter")
    view = await create_schedule(
        await session.client(),
        schedule_id,
        found.name,
        args,
        registry=session.registry,
        cron=cron,
        every=interval,
        overlap=overlap,
        pause_on_failure=pause_on_failure,
        jitter=spread,
        note=note,
        task_queue=session.task_queue,
    )
    if as_json:
        session.print_json(view.model_dump(mode="json"))
    else:
        session.out.print(f"schedule {view.id}: runs {view.action} (requestor schedule:{view.id})")
        session.link(view.ui_url)
    return 0


@schedule_group.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@command
async def list_(session: Session, as_json: bool) -> int:
    """List Sternway's schedules."""
    from sternway._schedules import list_schedules

    views = await list_schedules(await session.client())
    if as_json:
        session.print_json({"schedules": [v.model_dump(mode="json") for v in views]})
        return 0
    if not views:
        session.out.print("no schedules")
        return 0
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("schedule", "action", "paused", "next run", "last run", "note"):
        table.add_column(column, overflow="fold")
    for view in views:
        table.add_row(
            view.id,
            view.action,
            "yes" if view.paused else "",
            view.next_runs[0].strftime("%Y-%m-%d %H:%M:%S") if view.next_runs else "",
            view.recent_runs[-1].run_id if view.recent_runs else "",
            view.note or "",
        )
    session.out.print(table)
    return 0


@schedule_group.command(name="describe")
@click.argument("schedule_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@command
async def describe(session: Session, schedule_id: str, as_json: bool) -> int:
    """Show schedule ID: its action, args, timetable, policy and recent runs."""
    from sternway._schedules import describe_schedule
    from sternway.starter._render import duration_text

    view = await describe_schedule(await session.client(), schedule_id)
    if as_json:
        session.print_json(view.model_dump(mode="json"))
        return 0
    when = view.cron + [f"every {duration_text(s)}" for s in view.every]
    lines = [
        f"schedule {view.id}: runs {view.action}" + (" (paused)" if view.paused else ""),
        f"when: {', '.join(when)}"
        + (f", jitter {duration_text(view.jitter)}" if view.jitter else ""),
        f"overlap: {view.overlap}" + (", pauses on failure" if view.pause_on_failure else ""),
        f"args: {view.args}",
    ]
    if view.note:
        lines.append(f"note: {view.note}")
    if view.next_runs:
        lines.append("next: " + ", ".join(t.strftime("%Y-%m-%d %H:%M:%S") for t in view.next_runs))
    for run in view.recent_runs[-5:]:
        lines.append(f"ran: {run.run_id}")
    for run_id in view.running:
        lines.append(f"running: {run_id}")
    for line in lines:
        session.out.print(line)
    session.link(view.ui_url)
    return 0


@schedule_group.command(name="pause")
@click.argument("schedule_id", metavar="ID")
@click.option("--note", help="why, shown with the schedule")
@command
async def pause(session: Session, schedule_id: str, note: str | None) -> int:
    """Pause schedule ID: it starts no new runs until unpaused."""
    from sternway._schedules import pause_schedule

    await pause_schedule(await session.client(), schedule_id, paused=True, note=note)
    session.out.print(f"schedule {schedule_id}: paused")
    return 0


@schedule_group.command(name="unpause")
@click.argument("schedule_id", metavar="ID")
@command
async def unpause(session: Session, schedule_id: str) -> int:
    """Unpause schedule ID."""
    from sternway._schedules import pause_schedule

    await pause_schedule(await session.client(), schedule_id, paused=False)
    session.out.print(f"schedule {schedule_id}: unpaused")
    return 0


@schedule_group.command(name="trigger")
@click.argument("schedule_id", metavar="ID")
@command
async def trigger(session: Session, schedule_id: str) -> int:
    """Start one run of schedule ID now (its overlap policy applies)."""
    from sternway._schedules import trigger_schedule

    await trigger_schedule(await session.client(), schedule_id)
    session.out.print(f"schedule {schedule_id}: triggered")
    return 0


@schedule_group.command(name="delete")
@click.argument("schedule_id", metavar="ID")
@command
async def delete(session: Session, schedule_id: str) -> int:
    """Delete schedule ID (the runs it started go on)."""
    from sternway._schedules import delete_schedule

    await delete_schedule(await session.client(), schedule_id)
    session.out.print(f"schedule {schedule_id}: deleted")
    return 0
