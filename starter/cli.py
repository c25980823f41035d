"""The ``sternway`` command line.

Exit codes: 0 ok · 1 the run ended FAILED, STOPPED or ROLLBACK_FAILED (``--wait``, ``watch``,
``demo``) · 2 bad input · 3 run not found · 4 Temporal unreachable · 5 command refused in the run's
current state. Errors are one or two plain lines on stderr; ``--json`` output is stable.

Every command callback returns a coroutine that :func:`run` awaits, so tests can drive the CLI in
their own event loop with a client of their own; :func:`main` runs it and leaves with ``os._exit``
(the SDK can crash at interpreter exit after a client was used).
"""

from __future__ import annotations

import asyncio
import base64
import getpass
import inspect
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from sternway import _connect
from sternway._args import parse_args, schema_format, schema_type
from sternway._client import (
    RunHandle,
    check_requestor,
    check_run_id,
    list_runs,
    retry,
    submit,
    ui_base,
)
from sternway.starter._locks_cli import locks_command, unlock_command
from sternway.starter._plan_cli import graph_command, plan_command
from sternway.starter._schedules_cli import schedule_group
from sternway.starter._session import (
    POLL_EVERY,
    Session,
    command,
    duration_option,
    exit_code,
    is_runbook_path,
)
from sternway.workflows._protocol import SANDBOX_MODES, TERMINAL_RUN_STATES, RunState
from sternway.workflows.errors import (
    ArgsError,
    SpecError,
    SternwayError,
)

if TYPE_CHECKING:
    from sternway.workflows._actions import Action
    from sternway.workflows._catalog import ServedAction
    from sternway.workflows.models import CommandResult, RunStatus

# Imports that only some commands need (pydantic and the models, rich, yaml, the registry of
# actions and the worker) are made inside them: `sternway status --json` and `list` import
# none of them, and start about as fast as a bare temporalio client (bench/_cli.py).

__all__ = ["cli", "main", "run"]


async def run(argv: Sequence[str] | None = None, *, client: Client | None = None) -> int:
    """Run the CLI on ``argv`` and return its exit code (never exits the process)."""
    session = Session(client)

    def fail(message: str, code: int) -> int:
        session.err.print(f"error: {message}", style="red", markup=False, soft_wrap=True)
        return code

    try:
        result = cli.main(
            args=list(sys.argv[1:] if argv is None else argv),
            prog_name="sternway",
            standalone_mode=False,
            obj=session,
        )
        if inspect.isawaitable(result):
            result = await result
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as err:
        return err.exit_code
    except click.UsageError as err:
        command = err.ctx.command_path if err.ctx else "sternway"
        return fail(f"{err.format_message()}\nsee: {command} --help", 2)
    except click.ClickException as err:
        return fail(err.format_message(), 2)
    except click.Abort:
        return 130
    except SternwayError as err:
        return fail(str(err), exit_code(err))
    except RPCError as err:
        if err.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            return fail(f"Temporal is unreachable: {err}", 4)
        return fail(f"Temporal refused the request: {err}", 1)
    except Exception as err:
        if os.environ.get("STERNWAY_DEBUG"):
            raise
        return fail(
            f"unexpected {type(err).__name__}: {err}\n"
            "(a bug in Sternway: STERNWAY_DEBUG=1 shows the traceback)",
            1,
        )


def main(argv: Sequence[str] | None = None, *, client: Client | None = None) -> NoReturn:
    """The ``sternway`` entry point: run, flush, and leave with ``os._exit``."""
    code = asyncio.run(run(argv, client=client))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Sternway: durable runbooks and sagas on Temporal."""


# ----------------------------------------------------------------------------------- args


def _time_arg(value: str | None, option: str) -> datetime | None:
    """``--since 2h`` (that long ago) or an ISO 8601 time."""
    if value is None:
        return None
    from sternway.workflows.models import parse_duration

    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ArgsError(f"{option}: {value!r} is neither a duration (2h) nor an ISO time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# ------------------------------------------------------------------------------ commands


def _run_id_argument(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A RUN_ID of invalid syntax is bad input (exit 2), not a run that is not found."""
    return check_run_id(value)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@command
async def actions(session: Session, as_json: bool) -> int:
    """List the registered actions (Python and YAML runbooks) and their args.

    ``version`` is the version the workers serve (a runbook's is a hash of its file), asked of
    them; when no worker answers, it is the version of the files this command loaded.
    """
    served = await _served(session)
    if served is None:
        session.err.print(
            f"note: no worker answered on task queue {session.task_queue}: "
            "versions are those of the files here",
            markup=False,
            soft_wrap=True,
        )
    listed = [
        {
            "name": a.name,
            "description": a.description,
            "args": _args_of(a),
            "source": a.source,
            "version": _version_label(a, served),
        }
        for a in session.registry
    ]
    if as_json:
        session.print_json(listed)
        return 0
    from sternway.starter._render import action_lines

    # One block per action, one line per arg: nothing to squash, however narrow the output.
    for item in listed:
        session.out.print("\n".join(action_lines(item)), soft_wrap=not session.out.is_terminal)
    return 0


async def _served(session: Session) -> dict[str, ServedAction] | None:
    """What the workers of the session's task queue serve; ``None`` when that cannot be learnt
    (no server, no worker): these commands work offline, so it is never an error."""
    from sternway._catalog import served_actions

    try:
        client = await asyncio.wait_for(session.client(), 3.0)
    except Exception:  # unreachable, misconfigured: the versions are unknown, nothing more
        return None
    return await served_actions(client, session.task_queue)


def _version_label(action: Action, served: dict[str, ServedAction] | None) -> str:
    """The version the workers serve, with this machine's file version when it differs."""
    if served is None:
        return action.version
    there = served.get(action.name)
    if there is None:
        return "not served"
    if there.version != action.version:
        return f"{there.version} (file here: {action.version})"
    return there.version


def _warn_if_served_differs(
    session: Session, loaded: Action, served: dict[str, ServedAction] | None
) -> None:
    """Say so when the workers serve another version of this runbook, or none."""
    if served is None:
        return  # no worker answered: nothing to compare with
    there = served.get(loaded.name)
    queue = session.task_queue
    if there is None:
        message = (
            f"warning: the workers on task queue {queue} do not serve {loaded.name!r}: "
            "put the file in a folder they watch (STERNWAY_ACTIONS_PATH) to run it"
        )
    elif there.version != loaded.version:
        message = (
            f"warning: the workers on task queue {queue} serve {loaded.name!r} version "
            f"{there.version} (from {there.source or 'Python code'}), not this file's "
            f"{loaded.version}: runs use theirs until this file is in a folder they watch"
        )
    else:
        return
    session.err.print(message, markup=False, soft_wrap=True)


def _args_of(action: Action) -> list[dict[str, Any]]:
    schema = action.plan.args_schema
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "type": schema_type(prop),
            "format": schema_format(prop),
            "required": name in required,
            "default": prop.get("default"),
            "description": prop.get("description", ""),
            "constraints": _constraints_of(prop),
        }
        for name, prop in schema.get("properties", {}).items()
    ]


# JSON schema keywords of an arg's rules, by the names runbooks use (pydantic's ``gt``/``lt`` too).
_RULE_KEYWORDS = {
    "pattern": "pattern",
    "enum": "enum",
    "const": "enum",
    "minimum": "min",
    "maximum": "max",
    "exclusiveMinimum": "gt",
    "exclusiveMaximum": "lt",
    "minLength": "min_length",
    "maxLength": "max_length",
    "minItems": "min_items",
    "maxItems": "max_items",
}


def _constraints_of(prop: dict[str, Any]) -> dict[str, Any]:
    """The rules an arg's value must keep (those of a list's items under ``items``)."""
    found: dict[str, Any] = {}
    for part in [prop, *(o for o in prop.get("anyOf", []) if o.get("type") != "null")]:
        for keyword, name in _RULE_KEYWORDS.items():
            if keyword in part:
                found[name] = [part[keyword]] if keyword == "const" else part[keyword]
        items = part.get("items")
        if isinstance(items, dict) and _constraints_of(items):
            found["items"] = _constraints_of(items)
    return found


@cli.command()
@click.argument("action", metavar="ACTION|FILE.yaml")
@click.option("--arg", "pairs", multiple=True, metavar="K=V", help="an arg of the action")
@click.option("--args-file", type=click.Path(), help="a JSON or YAML object of args")
@command
async def validate(
    session: Session, action: str, pairs: tuple[str, ...], args_file: str | None
) -> int:
    """Check an action (or a runbook file) and its args; start nothing.

    Given a file, the runbook is checked on its own, and its args too when some are given.
    """
    if not is_runbook_path(action):
        found = session.registry.get(action)
        parse_args(found, pairs, args_file)
        session.out.print(f"{found.name}: the action and its args are valid", markup=False)
        return 0
    from sternway.workflows._runbook import load_runbook

    loaded = load_runbook(action)
    _check_name_clash(session, loaded, action)
    _warn_if_served_differs(session, loaded, await _served(session))
    if pairs or args_file:
        parse_args(loaded, pairs, args_file)
        what = "the runbook and its args are valid"
    else:
        what = "the runbook is valid"
    session.out.print(f"{action}: {loaded.name}: {what}", markup=False, soft_wrap=True)
    return 0


def _check_name_clash(session: Session, loaded: Action, path: str) -> None:
    """A runbook must not take the name of another registered action (it would not load)."""
    try:
        registry = session.registry
    except SternwayError:
        return  # another definition is broken: the worker will say so, this file is fine
    if loaded.name in registry:
        other = registry.get(loaded.name)
        same = other.source is not None and Path(other.source).resolve() == Path(path).resolve()
        if not same:
            where = other.source or "Python code"
            raise SpecError(f"{path}: action {loaded.name!r} is already defined in {where}")
    from sternway.workflows._actions import check_calls

    # With the actions served here, the runbook must not close a circle of calls.
    check_calls({**{a.name: a for a in registry if a.name != loaded.name}, loaded.name: loaded})


@cli.command(name="submit")
@click.argument("action")
@click.option("--arg", "pairs", multiple=True, metavar="K=V", help="an arg of the action")
@click.option("--args-file", type=click.Path(), help="a JSON or YAML object of args")
@click.option(
    "--id",
    "run_id",
    help="run id; the same id, action and args again return that run",
)
@click.option("--requestor", help="who asks (default: your user name)")
@click.option("--delay", help="start later, e.g. 30s")
@click.option("--timeout", help="stop with rollback after this long, e.g. 1h")
@click.option("--priority", type=click.IntRange(1, 5), help="1 (first) to 5 (last)")
@click.option("--wait", is_flag=True, help="watch the run and exit 1 unless it completes")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@command
async def submit_command(
    session: Session,
    action: str,
    pairs: tuple[str, ...],
    args_file: str | None,
    run_id: str | None,
    requestor: str | None,
    delay: str | None,
    timeout: str | None,
    priority: int | None,
    wait: bool,
    as_json: bool,
) -> int:
    """Start a run of ACTION."""
    found = session.registry.get(action)
    args = parse_args(found, pairs, args_file)
    requestor = check_requestor(requestor or getpass.getuser())
    if run_id is not None:
        check_run_id(run_id)
    start_delay = duration_option(delay, "--delay")
    run_timeout = duration_option(timeout, "--timeout")
    client = await session.client()
    handle = await submit(
        client,
        found.name,
        args,
        run_id=run_id,
        requestor=requestor,
        task_queue=session.task_queue,
        timeout=run_timeout,
        delay=start_delay,
        priority=priority,
        registry=session.registry,
    )
    if wait:
        return await _watch(session, handle, as_json=as_json)
    # From visibility, not the status query: a run is submitted even with no worker running.
    state = await handle.state()
    if as_json:
        session.print_json(
            {
                "run_id": handle.run_id,
                "action": found.name,
                "state": state,
                "ui_url": handle.ui_url,
            },
        )
    else:
        session.out.print(f"{handle.run_id}  {found.name}  {state}  by {requestor}", markup=False)
        session.link(handle.ui_url)
    return 0


async def _status_json_with_details(handle: RunHandle) -> dict[str, Any]:
    """The status JSON, with the live detail line of each running job."""
    status = await handle.status_json()
    if status["state"] not in TERMINAL_RUN_STATES:
        details = await handle.live_details()
        for job in status["jobs"]:
            if job["name"] in details and job["state"] in ("RUNNING", "ROLLING_BACK"):
                job["detail"] = details[job["name"]]
    return status


async def _status_with_details(handle: RunHandle) -> RunStatus:
    from sternway.workflows.models import RunStatus

    return RunStatus.model_validate(await _status_json_with_details(handle))


@cli.command()
@click.argument("run_id", callback=_run_id_argument)
@click.option("--json", "as_json", is_flag=True, help="print the status JSON")
@command
async def status(session: Session, run_id: str, as_json: bool) -> int:
    """Show a run: its state, its jobs and their live detail."""
    handle = RunHandle(await session.client(), run_id)
    current = await _status_json_with_details(handle)
    if as_json:
        session.print_json(current)
    else:
        from sternway.starter._render import status_view
        from sternway.workflows.models import RunStatus

        session.show(status_view(RunStatus.model_validate(current)))
    return 0


async def _watch(session: Session, handle: RunHandle, *, as_json: bool = False) -> int:
    """Follow a run to a terminal state; 0 if it completed, 1 otherwise."""
    from rich.console import Group
    from rich.live import Live

    from sternway.starter._render import progress_bar, status_view

    current = await _status_with_details(handle)
    if session.out.is_terminal and not as_json:
        bar = progress_bar(session.out)
        task = bar.add_task(handle.run_id, total=current.progress.total or 1, state="")
        with Live(Group(bar, status_view(current)), console=session.out, transient=True) as live:
            while current.state not in TERMINAL_RUN_STATES:
                await asyncio.sleep(POLL_EVERY)
                current = await _status_with_details(handle)
                bar.update(
                    task,
                    total=current.progress.total or 1,
                    completed=current.progress.done,
                    state=current.state.value,
                )
                live.update(Group(bar, status_view(current)))
    else:
        current = await handle.wait()
    if as_json:
        session.print_json(current.model_dump(mode="json"))
    else:
        session.show(status_view(current))
    return 0 if current.state == RunState.COMPLETED else 1


@cli.command()
@click.argument("run_id", callback=_run_id_argument)
@command
async def watch(session: Session, run_id: str) -> int:
    """Follow a run live until it ends; exit 1 unless it completes."""
    handle = RunHandle(await session.client(), run_id)
    await handle.status()
    return await _watch(session, handle)


@cli.command()
@click.argument("run_id", callback=_run_id_argument)
@click.option("--job", help="only this job")
@command
async def logs(session: Session, run_id: str, job: str | None) -> int:
    """Show every attempt of every job (and rollback): times, exit codes, output tails, errors."""
    current = await RunHandle(await session.client(), run_id).status()
    jobs = [j for j in current.jobs if job is None or j.name == job]
    if job is not None and not jobs:
        raise ArgsError(f"run {run_id!r} has no job {job!r}")
    for item in jobs:
        entries = [("execute", e) for e in item.log]
        if item.rollback is not None:
            entries += [("rollback", e) for e in item.rollback.log]
        for phase, entry in entries:
            took = (
                f" {(entry.finished_at - entry.started_at).total_seconds():.1f}s"
                if entry.finished_at
                else ""
            )
            head = f"{item.name} {phase} attempt {entry.attempt}: {entry.state.value}{took}"
            session.out.print(head, style="bold", markup=False)
            if entry.exit_code is not None:
                session.out.print(f"  exit code {entry.exit_code}", markup=False)
            for label, tail in (("stdout", entry.stdout_tail), ("stderr", entry.stderr_tail)):
                if tail:
                    session.out.print(f"  {label}:", markup=False)
                    session.out.print("    " + tail.rstrip().replace("\n", "\n    "), markup=False)
            if entry.error is not None:
                session.out.print(
                    f"  {entry.error.reason.value} {entry.error.type}: {entry.error.message}",
                    markup=False,
                )
    return 0


async def _report(session: Session, handle: RunHandle, result: CommandResult) -> int:
    session.out.print(
        f"{handle.run_id}: {result.message}; the run is {result.state.value}", markup=False
    )
    session.link(handle.ui_url)
    return 0


@cli.command()
@click.argument("run_id", callback=_run_id_argument)
@click.option("--no-rollback", is_flag=True, help="leave completed work in place")
@click.option("--reason", default="", help="why, kept in the run's status")
@command
async def stop(session: Session, run_id: str, no_rollback: bool, reason: str) -> int:
    """Stop a run: cancel running jobs, then roll back (unless --no-rollback)."""
    handle = RunHandle(await session.client(), run_id)
    result = await handle.stop(rollback=not no_rollback, reason=reason)
    return await _report(session, handle, result)


@cli.command()
@click.argument("run_id", callback=_run_id_argument)
@click.option("--now", is_flag=True, help="also cancel running jobs (they re-run on resume)")
@command
async def suspend(session: Session, run_id: str, now: bool) -> int:
    """Suspend a run: start no new jobs until resumed."""
    handle = RunHandle(await session.client(), run_id)
    result = await handle.suspend(now=now)
    return await _report(session, handle, result)


@cli.command()
@click.argument("run_id", callback=_run_id_argument)
@command
async def resume(session: Session, run_id: str) -> int:
    """Resume a suspended run."""
    handle = RunHandle(await session.client(), run_id)
    result = await handle.resume()
    return await _report(session, handle, result)


@cli.command()
@click.argument("run_id", callback=_run_id_argument)
@click.argument("job")
@click.option("--token", help="the approval job's token (see `sternway status`)")
@click.option("--comment", default="", help="a note kept with the approval")
@command
async def approve(session: Session, run_id: str, job: str, token: str | None, comment: str) -> int:
    """Approve the approval job JOB of a run; the run goes on."""
    handle = RunHandle(await session.client(), run_id)
    result = await handle.approve(job, token=token, comment=comment)
    return await _report(session, handle, result)


@cli.command()
@click.argument("run_id", callback=_run_id_argument)
@click.argument("job")
@click.option("--token", help="the approval job's token (see `sternway status`)")
@click.option("--reason", default="", help="why, kept in the run's status")
@command
async def reject(session: Session, run_id: str, job: str, token: str | None, reason: str) -> int:
    """Reject the approval job JOB of a run: the job fails and the run rolls back."""
    handle = RunHandle(await session.client(), run_id)
    result = await handle.reject(job, token=token, reason=reason)
    return await _report(session, handle, result)


@cli.command(name="retry")
@click.argument("run_id", callback=_run_id_argument)
@click.option("--from-failed", is_flag=True, help="reuse outputs of jobs that completed")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@command
async def retry_command(session: Session, run_id: str, from_failed: bool, as_json: bool) -> int:
    """Start a new run with the same action and args, linked to RUN_ID."""
    client = await session.client()
    handle = await retry(client, run_id, from_failed=from_failed, task_queue=session.task_queue)
    current = await handle.status()
    if as_json:
        session.print_json(
            {
                "run_id": handle.run_id,
                "action": current.action,
                "state": current.state.value,
                "ui_url": handle.ui_url,
                "retry_of": run_id,
            },
        )
    else:
        session.out.print(f"{handle.run_id}: retry of {run_id}", markup=False)
        session.link(handle.ui_url)
    return 0


@cli.command(name="list")
@click.option("--action", help="only runs of this action")
@click.option(
    "--state",
    type=click.Choice([s.value for s in RunState], case_sensitive=False),
    help="only runs in this state",
)
@click.option("--requestor", help="only runs submitted by this requestor")
@click.option("--since", help="started at or after: 2h (ago) or an ISO time")
@click.option("--until", help="started at or before: 30m (ago) or an ISO time")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--page-token", help="next_page_token of an earlier --json answer")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@command
async def list_command(
    session: Session,
    action: str | None,
    state: str | None,
    requestor: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    page_token: str | None,
    as_json: bool,
) -> int:
    """List runs, newest first."""
    if requestor is not None:
        check_requestor(requestor)  # an empty or invalid one is bad input, never a dropped filter
    token = None
    if page_token:
        try:
            token = base64.urlsafe_b64decode(page_token.encode())
        except ValueError:
            raise ArgsError("--page-token is not a token from an earlier answer") from None
    runs, next_token = await list_runs(
        await session.client(),
        action=action,
        state=state.upper() if state else None,
        requestor=requestor,
        since=_time_arg(since, "--since"),
        until=_time_arg(until, "--until"),
        limit=limit,
        page_token=token,
    )
    encoded = base64.urlsafe_b64encode(next_token).decode() if next_token else None
    if as_json:
        session.print_json(
            {"runs": [r.to_json() for r in runs], "next_page_token": encoded},
        )
        return 0
    if not runs:
        # As kubectl says "No resources found": an empty table would look like a broken command,
        # and a mistyped filter (--action deploy-stie) would pass for "nothing ran".
        filtered = any(v is not None for v in (action, state, requestor, since, until))
        session.err.print(
            "no runs match these filters" if filtered else "no runs yet", markup=False
        )
        return 0
    from rich.table import Table

    from sternway.starter._render import state_text

    table = Table(box=None, header_style="bold")
    for column in ("run", "action", "state", "requestor", "started", "finished"):
        table.add_column(column, overflow="fold")
    for r in runs:
        table.add_row(
            r.run_id,
            r.action,
            state_text(r.state or ""),
            r.requestor or "",
            r.started_at.strftime("%Y-%m-%d %H:%M:%S") if r.started_at else "",
            r.finished_at.strftime("%Y-%m-%d %H:%M:%S") if r.finished_at else "",
        )
    session.out.print(table)
    base = ui_base(await session.client())
    if base:
        session.link(f"{base}/namespaces/{(await session.client()).namespace}/workflows")
    if encoded:
        session.out.print(f"more: --page-token {encoded}")
    return 0


@cli.command()
@command
async def version(session: Session) -> int:
    """Print the versions of Sternway and the Temporal SDK."""
    from importlib.metadata import version as installed

    session.out.print(
        f"sternway {installed('sternway')} (temporalio {installed('temporalio')})", markup=False
    )
    return 0


def _configure_shell_env(names: tuple[str, ...]) -> None:
    """The shell jobs' environment allowlist of this worker; a refused name is bad input."""
    from sternway.activities._shell_host import configure_shell_env

    try:
        configure_shell_env(names)
    except ValueError as err:
        raise ArgsError(str(err)) from None


@cli.command()
@click.option("--task-queue", default=None, help="default: STERNWAY_TASK_QUEUE or sternway")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 10000),
    default=100,
    show_default=True,
    envvar="STERNWAY_CONCURRENCY",
    help="most job attempts at once [env: STERNWAY_CONCURRENCY]",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    envvar="STERNWAY_METRICS_PORT",
    help="serve Prometheus metrics [env: STERNWAY_METRICS_PORT]",
)
@click.option(
    "--grace",
    default="30s",
    show_default=True,
    envvar="STERNWAY_GRACE",
    help="time running jobs get at shutdown [env: STERNWAY_GRACE]",
)
@click.option(
    "--wait-for-server",
    "wait_for_server",
    type=click.FloatRange(0),
    default=0,
    envvar="STERNWAY_WAIT_FOR_SERVER",
    metavar="SECONDS",
    help="retry connecting this long at start [env: STERNWAY_WAIT_FOR_SERVER]",
)
@click.option(
    "--workflow-sandbox",
    "sandbox",
    type=click.Choice(SANDBOX_MODES),
    default="off",
    show_default=True,
    envvar="STERNWAY_WORKFLOW_SANDBOX",
    help="run the interpreter in Temporal's sandbox [env: STERNWAY_WORKFLOW_SANDBOX]",
)
@click.option(
    "--shell-env",
    "shell_env",
    multiple=True,
    metavar="NAME",
    help="a variable of the worker's environment that shell jobs get too (NAME or PREFIX*; "
    "repeatable) [env: STERNWAY_SHELL_ENV, comma-separated]",
)
@command
async def worker(
    session: Session,
    task_queue: str | None,
    concurrency: int,
    metrics_port: int | None,
    grace: str,
    wait_for_server: float,
    sandbox: str,
    shell_env: tuple[str, ...],
) -> int:
    """Run a worker until SIGINT or SIGTERM."""
    from sternway.worker import actions_folders, configure_logging, metrics_runtime, run_worker

    _configure_shell_env(shell_env)
    configure_logging()
    grace_period = duration_option(grace, "--grace") or timedelta(0)
    try:
        runtime = metrics_runtime(metrics_port)
    except ValueError as err:  # the SDK's "Failed starting Prometheus exporter: <reason>"
        reason = str(err).removeprefix("Failed starting Prometheus exporter: ")
        raise ArgsError(f"--metrics-port {metrics_port}: cannot serve metrics: {reason}") from None
    if wait_for_server > 0:
        client = session._client = await _connect.wait_for_server(
            runtime=runtime, seconds=wait_for_server
        )
    else:
        client = await session.client(runtime=runtime)
    await run_worker(
        client,
        session.registry,
        task_queue=task_queue or session.task_queue,
        concurrency=concurrency,
        grace=grace_period,
        sandbox=sandbox,
        watch=actions_folders(),
    )
    return 0


@cli.command()
@click.option("--db", default=".sternway/temporal.db", show_default=True, type=click.Path())
@click.option("--port", default=7233, show_default=True, type=click.IntRange(1, 65535))
@click.option("--ui-port", default=8233, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--ui-codec-endpoint",
    metavar="URL",
    help="remote codec the Web UI uses to decrypt payloads (see `sternway codec-server`)",
)
@click.option(
    "--retention",
    metavar="DURATION",
    help="keep closed runs this long, e.g. 24h or 7d (at least 1h; default: the server's, 24h); "
    "older ones are deleted, which keeps the database small and the server fast",
)
@command
async def dev(
    session: Session,
    db: str,
    port: int,
    ui_port: int,
    ui_codec_endpoint: str | None,
    retention: str | None,
) -> int:
    """Run the embedded Temporal dev server and a worker in the foreground (Ctrl-C stops both)."""
    from sternway.starter._dev import (
        MIN_RETENTION,
        DevServer,
        keep_closed_runs,
        register_search_attributes,
    )
    from sternway.starter._render import duration_text
    from sternway.worker import actions_folders, configure_logging, run_worker

    _configure_shell_env(())
    configure_logging()
    if ui_codec_endpoint and not ui_codec_endpoint.startswith(("http://", "https://")):
        raise ArgsError(f"--ui-codec-endpoint {ui_codec_endpoint!r} must be an http(s) URL")
    keep = duration_option(retention, "--retention")
    if keep is not None and keep < MIN_RETENTION:
        least = duration_text(MIN_RETENTION.total_seconds())
        raise ArgsError(f"--retention {retention}: the server keeps closed runs at least {least}")
    server = await DevServer.ensure(
        db=Path(db), port=port, ui_port=ui_port, ui_codec_endpoint=ui_codec_endpoint
    )
    try:
        client = await _connect.connect(address=server.address)
        await register_search_attributes(client)
        kept = await keep_closed_runs(client, keep)
        session.err.print(
            f"Temporal at {server.address} ({'started' if server.process else 'already running'}), "
            f"Web UI at {server.ui_url}, task queue {session.task_queue}; closed runs kept "
            f"{duration_text(kept.total_seconds())}",
            markup=False,
            soft_wrap=True,  # one line, however narrow: scripts and logs grep it
        )
        if ui_port != port + 1000:
            session.err.print(
                f"for Web UI links in other terminals: export STERNWAY_UI_URL={server.ui_url}",
                markup=False,
            )
        if ui_codec_endpoint and server.process is None:
            session.err.print(
                "note: the server was already running, so --ui-codec-endpoint is not applied; "
                "set the codec endpoint in the Web UI instead",
                markup=False,
            )
        await run_worker(
            client, session.registry, task_queue=session.task_queue, watch=actions_folders()
        )
    finally:
        server.stop()
    return 0


@cli.command()
@click.option("--db", default=".sternway/temporal.db", show_default=True, type=click.Path())
@click.option("--port", default=7233, show_default=True, type=click.IntRange(1, 65535))
@click.option("--ui-port", default=8233, show_default=True, type=click.IntRange(1, 65535))
@command
async def demo(session: Session, db: str, port: int, ui_port: int) -> int:
    """One sample run end to end: dev server, worker, a deploy-site run watched live."""
    from sternway.starter._dev import DevServer, register_search_attributes
    from sternway.worker import configure_logging, create_worker

    configure_logging(level=40)  # errors only: the progress view is the demo's output
    server = await DevServer.ensure(db=Path(db), port=port, ui_port=ui_port)
    try:
        client = await _connect.connect(address=server.address)
        await register_search_attributes(client)
        session._client = client
        os.environ["STERNWAY_UI_URL"] = server.ui_url
        site = Path(db).parent / "demo-site"
        release = datetime.now(UTC).strftime("r%Y%m%d-%H%M%S")
        session.out.print(
            f"Temporal dev server at {server.address}, Web UI at {server.ui_url}\n"
            f"Deploying release {release} of a static site into {site} ...",
            markup=False,
            soft_wrap=True,
        )
        queue = f"{session.task_queue}-demo"
        async with create_worker(client, session.registry, task_queue=queue):
            handle = await submit(
                client,
                "deploy-site",
                {"root": str(site.resolve()), "release": release, "pause": 0.7},
                requestor=check_requestor(getpass.getuser()),
                task_queue=queue,
                registry=session.registry,
            )
            code = await _watch(session, handle)
        session.out.print(f"Site: {site / 'current' / 'index.html'}", markup=False)
        return code
    finally:
        server.stop()


@cli.command(name="codec-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=8081, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="URL",
    help="a Web UI origin allowed to call it, e.g. http://localhost:8233 (repeatable; * for any)",
)
@command
async def codec_server(
    session: Session, host: str, port: int, cors_origins: tuple[str, ...]
) -> int:
    """Serve POST /encode and /decode for the Web UI's codec endpoint, until SIGINT/SIGTERM.

    Uses the keys of STERNWAY_CODEC_KEYS or STERNWAY_CODEC_KEY_FILE. Requests need the token of
    STERNWAY_CODEC_TOKEN (or the one printed at start), as `Authorization: Bearer <token>` or in
    the endpoint: `sternway dev --ui-codec-endpoint http://127.0.0.1:8081/<token>`. Only the bind
    address is accepted as Host. Whoever has the token can read every payload.
    """
    import signal

    from sternway.codec import KEY_FILE_ENV, KEYS_ENV, CodecConfigError, codec_from_env
    from sternway.codec_server import TOKEN_ENV, make_codec_server, new_token, serve_in_thread

    codec = codec_from_env()
    if codec is None:
        raise CodecConfigError(f"no codec key: set {KEYS_ENV} or {KEY_FILE_ENV}")
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token and not (
        16 <= len(token) <= 200
        and token.isascii()
        and all(c.isalnum() or c in "._~-" for c in token)
    ):
        raise ArgsError(f"{TOKEN_ENV} must be 16-200 letters, digits, '.', '_', '~' or '-'")
    generated = not token
    token = token or new_token()
    try:
        server = make_codec_server(
            codec, host=host, port=port, cors_origins=cors_origins, token=token
        )
    except OSError as err:
        raise ArgsError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    bound_host, bound_port = server.server_address[:2]
    serve_in_thread(server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    session.err.print(
        f"codec server at http://{bound_host!s}:{bound_port} "
        f"(keys: {', '.join(codec.key_ids)}; encrypting with {codec.current})"
        + (f"; CORS for {', '.join(cors_origins)}" if cors_origins else ""),
        markup=False,
        soft_wrap=True,
    )
    if generated:  # printed once, on stdout only: set STERNWAY_CODEC_TOKEN to keep one
        session.out.print(
            f"token {token} (Web UI endpoint: http://{bound_host!s}:{bound_port}/{token})",
            markup=False,
            soft_wrap=True,
        )
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await asyncio.to_thread(server.shutdown)
        server.server_close()
    return 0


@cli.command(name="codec-key")
@click.option("--id", "key_id", default=None, help="the key id (default: k<date>)")
@command
async def codec_key(session: Session, key_id: str | None) -> int:
    """Print a new random AES-256 key as id:base64, for STERNWAY_CODEC_KEYS."""
    from sternway.codec import new_key, parse_keys

    key_id = key_id or datetime.now(UTC).strftime("k%Y%m%d")
    entry = f"{key_id}:{new_key()}"
    parse_keys(entry, "--id")  # a bad id is refused here, not when the key is used
    session.out.print(entry, markup=False, soft_wrap=True)
    return 0


cli.add_command(locks_command)
cli.add_command(unlock_command)
cli.add_command(schedule_group)
cli.add_command(plan_command)
cli.add_command(graph_command)
