"""Random valid runbooks, args and command sequences for the property test (tests/test_property.py).

A :class:`Case` is one run to make: a YAML runbook drawn from the runbook grammar (docs/runbooks.md:
jobs of every kind, ``after`` DAGs, ``each`` with concurrency, groups with group retry, ``if``,
``continue_on_error``, job retries, rollbacks, expressions reading args, items and job outputs),
its args, and the commands to send while it runs (stop, suspend, resume, approve, reject, at
random points). :func:`drive` runs a case and :func:`check` states what went wrong with it.

The job functions the runbooks call (``python`` kind) are here too: ``work`` fails its first
``fail_until`` attempts and returns ``size`` bytes of output; ``undo`` fails when told to.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml
from hypothesis import strategies as st
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from sternway import ArgsError, CommandRefused, RunHandle, submit
from sternway.activities import JobContext, RollbackContext
from sternway.workflows._actions import Action, Job, Registry
from sternway.workflows._protocol import SEARCH_ATTRIBUTE_STATE
from sternway.workflows._runbook import load_runbook_text
from sternway.workflows.errors import JobError
from sternway.workflows.models import TERMINAL_RUN_STATES, JobState, RunState, RunStatus

# ------------------------------------------------------------------------- the job functions


async def work(ctx: JobContext) -> Any:
    """Fail attempts up to ``fail_until`` (999: always), else return ``size`` bytes of output."""
    pause = float(ctx.input.get("sleep", 0))
    if pause:
        ctx.report("working")
        await asyncio.sleep(pause)
    if ctx.attempt <= int(ctx.input.get("fail_until", 0)):
        raise JobError(f"{ctx.job} fails on attempt {ctx.attempt}", type="Flaky")
    return {"job": ctx.job, "attempt": ctx.attempt, "blob": "x" * int(ctx.input.get("size", 0))}


async def undo(ctx: RollbackContext) -> None:
    """A rollback that fails (every attempt) when its ``fail`` parameter is true."""
    if ctx.input.get("fail"):
        raise JobError(f"rollback of {ctx.job} fails", type="UndoFailed")


def registry() -> Registry:
    """A registry that knows ``work`` and ``undo``; the cases' runbooks are added to it."""
    return Registry([Action("prop-jobs", [Job("work", execute=work, rollback=undo)])])


WORK = f"{__name__}.work"
UNDO = f"{__name__}.undo"

# --------------------------------------------------------------------------------- the cases

# Output and arg sizes: small, large, and around the per-job output limit (256 KiB).
SIZES = [0, 0, 0, 10, 1_000, 100_000, 200_000, 250_000, 262_000, 300_000]
ITEMS = ["a", "b", "c", "d"]


@dataclass
class Case:
    """One run: its runbook (YAML), its args, the commands to send, and how to answer at the end."""

    yaml: str
    args: dict[str, Any]
    steps: list[tuple[Any, ...]] = field(default_factory=list)
    decisions: list[bool] = field(default_factory=lambda: [True])
    comment_size: int = 0

    def named(self, name: str) -> str:
        """The runbook text with its ``name`` replaced (each run registers its own action)."""
        return re.sub(r"^name: .*$", f"name: {name}", self.yaml, count=1, flags=re.M)


@dataclass
class _Draw:
    """State of one runbook's drawing: a counter for unique job names, the sizes allowed."""

    big: bool
    count: int = 0

    def name(self) -> str:
        self.count += 1
        return f"j{self.count}"


_INTERVALS = st.sampled_from(["100ms", "300ms", "1s"])


@st.composite
def _leaf(draw: st.DrawFn, d: _Draw, deps: list[str], item: str | None) -> dict[str, Any]:
    name = d.name()
    kind = draw(st.sampled_from(["noop", "python", "python", "python", "fail", "sleep", "approval",
                                 "shell"]))  # fmt: skip
    job: dict[str, Any] = {"name": name, "run": kind}
    params: dict[str, Any] = {}
    sizes = SIZES if d.big else [0, 0, 10, 1_000]
    if kind == "noop":
        params = {"n": "${{ args.n }}", "text": draw(st.sampled_from(["x", "${{ args.blob }}"]))}
        for dep in deps:
            if draw(st.booleans()):
                params[f"from_{dep}"] = "${{ jobs." + dep + ".output }}"
    elif kind == "python":
        params = {
            "function": WORK,
            "fail_until": draw(st.sampled_from([0, 0, 0, 1, 2, 999])),
            "size": draw(st.sampled_from(sizes)),
            "sleep": draw(st.sampled_from([0, 0, 0.05, 0.5])),
            "n": "${{ args.n }}",
        }
    elif kind == "fail":
        params = {"message": "boom", "non_retryable": draw(st.booleans())}
    elif kind == "sleep":
        params = {"duration": draw(st.sampled_from(["500ms", "2s", "${{ args.n }}s"]))}
    elif kind == "approval":
        params = {"require_token": draw(st.booleans())}
        if draw(st.booleans()):
            params["timeout"] = draw(st.sampled_from(["2s", "6s"]))
            params["on_timeout"] = draw(st.sampled_from(["fail", "rollback", "approve"]))
    elif kind == "shell":
        params = {"argv": ["echo", "${{ args.n }}", "${{ run.id }}"]}
    if item is not None and kind in ("noop", "python", "shell"):
        if kind == "shell":
            params["argv"].append("${{ " + item + " }}")
        else:
            params["item"] = "${{ " + item + " }}"
    job["with"] = params
    if kind in ("noop", "python", "fail", "shell") and draw(st.booleans()):
        job["retry"] = {
            "max_attempts": draw(st.integers(1, 3)),
            "initial_interval": draw(_INTERVALS),
            "backoff": draw(st.sampled_from([1.0, 2.0])),
        }
    rollback = draw(
        st.sampled_from([None, None, "noop", "fail", "python", "python", "python-fail"])
    )
    if rollback is not None:
        job["rollback"] = (
            {"run": "python", "with": {"function": UNDO, "fail": rollback == "python-fail"}}
            if rollback.startswith("python")
            else {"run": "fail", "with": {"message": "undo of ${{ args.n }} fails"}}
            if rollback == "fail"
            else {"run": "noop", "with": {"job": name, "n": "${{ args.n }}"}}
        )
        job["rollback_retry"] = {
            "max_attempts": draw(st.integers(1, 2)),
            "initial_interval": "100ms",
        }
    return job


@st.composite
def _node(
    draw: st.DrawFn, d: _Draw, siblings: list[str], depth: int, item: str | None
) -> dict[str, Any]:
    deps = sorted(draw(st.sets(st.sampled_from(siblings), max_size=2))) if siblings else []
    each = depth < 2 and draw(st.integers(0, 4)) == 0
    inner_item = f"it{depth}" if each else item
    if depth < 2 and draw(st.integers(0, 4)) == 0:
        node: dict[str, Any] = {"name": d.name(), "jobs": []}
        names: list[str] = []
        for _ in range(draw(st.integers(1, 3))):
            child = draw(_node(d, names, depth + 1, inner_item))
            node["jobs"].append(child)
            names.append(child["name"])
        if draw(st.booleans()):
            node["retry"] = {
                "attempts": draw(st.integers(1, 3)),
                "wait": draw(st.sampled_from(["0s", "1s"])),
            }
    else:
        node = draw(_leaf(d, deps, inner_item))
    if deps:
        node["after"] = deps
    if each:
        items: Any = draw(st.sampled_from(["${{ args.hosts }}", ["a", "b"], ["x", "y", "z"]]))
        node["each"] = {"items": items, "as": inner_item, "concurrency": draw(st.integers(1, 3))}
    condition = draw(
        st.sampled_from([None, None, None, None, True, False, "${{ args.flag }}",
                         "${{ args.n > 1 }}"])
    )  # fmt: skip
    if condition is not None:
        node["if"] = condition
    if draw(st.integers(0, 6)) == 0:
        node["continue_on_error"] = True
    return node


@st.composite
def runbooks(draw: st.DrawFn, big: bool = True) -> str:
    """The YAML text of a random valid runbook (``big``: outputs and args near the limits)."""
    d = _Draw(big=big)
    jobs: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 5))):
        node = draw(_node(d, [j["name"] for j in jobs], 0, None))
        jobs.append(node)
    book: dict[str, Any] = {
        "name": "prop",
        "description": "generated by tests/propgen.py",
        "args": {
            "required": [{"name": "n", "type": "int"}],
            "optional": [
                {"name": "hosts", "type": "list[str]", "default": ["a", "b"]},
                {"name": "flag", "type": "bool", "default": False},
                {"name": "blob", "type": "str", "default": ""},
            ],
        },
        "jobs": jobs,
    }
    if draw(st.integers(0, 5)) == 0:
        book["timeout"] = draw(st.sampled_from(["4s", "30s"]))
    if draw(st.integers(0, 5)) == 0:
        book["max_suspended"] = "3s"
    return yaml.safe_dump(book, sort_keys=False, width=1000)


_TRIGGER = (
    st.tuples(st.just("skip"), st.sampled_from([0.2, 1.0, 3.0]))
    | st.tuples(st.just("poll"), st.integers(1, 5))
    | st.tuples(st.just("until"), st.sampled_from(["RUNNING", "WAITING", "COMPLETED"]))
)
_COMMAND = st.sampled_from(
    [("stop", True), ("stop", False), ("suspend", False), ("suspend", True), ("resume",),
     ("approve", True), ("approve", False), ("reject", True), ("none",)]
)  # fmt: skip


@st.composite
def cases(draw: st.DrawFn, big: bool = True) -> Case:
    """A runbook, its args, a command sequence and the answers to approvals at the end."""
    text = draw(runbooks(big=big))
    args: dict[str, Any] = {"n": draw(st.integers(0, 4))}
    if draw(st.booleans()):
        args["hosts"] = draw(st.lists(st.sampled_from(ITEMS), unique=True, max_size=4))
    if draw(st.booleans()):
        args["flag"] = draw(st.booleans())
    if draw(st.booleans()):
        args["blob"] = "b" * draw(st.sampled_from(SIZES if big else [0, 10, 1_000]))
    steps = draw(st.lists(st.tuples(_TRIGGER, _COMMAND), max_size=4))
    return Case(
        yaml=text,
        args=args,
        steps=[(*trigger, *command) for trigger, command in steps],
        decisions=draw(st.lists(st.booleans(), min_size=1, max_size=4)),
        comment_size=draw(st.sampled_from([0, 0, 20, 300_000] if big else [0, 20])),
    )


# ------------------------------------------------------------------------------- running


@dataclass
class Outcome:
    """What happened to one case's run."""

    case: Case
    run_id: str = ""
    final: RunStatus | None = None
    temporal_status: str = ""
    problems: list[str] = field(default_factory=list)
    stop_rollback: bool | None = None  # the accepted stop (None: no stop of ours took effect)
    scheduled: list[tuple[int, str]] = field(default_factory=list)  # (event id, activity id)
    task_failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rolling_back_at: int = 0  # the event that set ROLLING_BACK: the run's own undoing began
    refused: str = ""  # args over the size budget: refused at submit, nothing started

    @property
    def state(self) -> str:
        if self.final is not None:
            return self.final.state.value
        if self.refused:
            return "REFUSED"
        return self.temporal_status or "STUCK"


def _token(job: Any) -> str:
    detail = job.detail or ""
    return detail.split("token ")[1].split(";")[0] if "token " in detail else ""


class _Driver:
    def __init__(
        self, env: WorkflowEnvironment, handle: RunHandle, case: Case, out: Outcome
    ) -> None:
        self.env, self.handle, self.case, self.out = env, handle, case, out
        self.decided = 0
        self.wedged = False

    async def status(self) -> RunStatus | None:
        """The run's status; a query that errors is a problem (the run must always answer).

        The bound leaves room for ``RunHandle.status``'s own fallback: a closed run whose query
        is not answered in time (a busy worker replaying it) is read from its result."""
        try:
            return await asyncio.wait_for(self.handle.status(), 75)
        except Exception as err:
            self.problem("status query failed", err)
            return None

    def problem(self, what: str, err: Exception) -> None:
        message = f"{what}: {type(err).__name__}: {err}"[:300]
        if "unexpected workflow task failure" in str(err):
            # A command that met the server's UnhandledCommand retry of a task (the run was
            # finishing): the RPC fails, the run goes on. Counted, not a broken property.
            self.out.notes.append(message)
            return
        self.out.problems.append(message)
        # A failing workflow task never heals by itself: no need to wait for this run's end.
        self.wedged = self.wedged or "Workflow Task in failed state" in str(err)

    async def command(self, name: str, flag: bool, short: bool = False) -> None:
        status = await self.status()
        if status is None:
            return
        try:
            if name == "stop":
                result = await self.handle.stop(rollback=flag, reason="property test")
                if result.message.startswith("stopping") and self.out.stop_rollback is None:
                    self.out.stop_rollback = flag
            elif name == "suspend":
                await self.handle.suspend(now=flag)
            elif name == "resume":
                await self.handle.resume()
            elif name in ("approve", "reject"):
                waiting = [j for j in status.jobs if j.state == JobState.WAITING]
                if not waiting:
                    return
                job = waiting[0]
                token = _token(job) if flag or name == "reject" else ""
                comment = "c" * (20 if short else self.case.comment_size)
                if name == "approve":
                    await self.handle.approve(job.name, token=token, comment=comment)
                else:
                    await self.handle.reject(job.name, token=token, reason=comment)
        except CommandRefused:
            pass  # refused with a reason: nothing changed
        except Exception as err:
            self.problem(f"{name} failed", err)

    async def trigger(self, kind: str, value: Any) -> None:
        if kind == "skip":
            # Let the run go on for ``value`` seconds (timers fire, jobs end), unless it ends.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.handle.wait(), value)
        elif kind == "poll":
            for _ in range(value):
                await self.status()
                await asyncio.sleep(0.05)
        else:
            for _ in range(40):
                status = await self.status()
                if status is None or status.state in TERMINAL_RUN_STATES:
                    return
                if any(j.state == value for j in status.jobs):
                    return
                await asyncio.sleep(0.05)

    async def finish(self, deadline: float) -> RunStatus | None:
        """Let the run end: resume it when suspended, answer its approvals; until ``deadline``."""
        while time.monotonic() < deadline and not self.wedged:
            try:
                await asyncio.wait_for(self.handle.wait(), 3)
            except TimeoutError:
                pass
            except Exception as err:
                self.problem("waiting failed", err)
                return None
            status = await self.status()
            if status is None:
                await asyncio.sleep(1)
                continue
            if status.state in TERMINAL_RUN_STATES:
                return status
            if status.state == RunState.SUSPENDED:
                await self.command("resume", False)
            for job in status.jobs:
                if job.state == JobState.WAITING:
                    approve = self.case.decisions[self.decided % len(self.case.decisions)]
                    self.decided += 1
                    # An operator whose comment was refused as over its budget answers again
                    # with a short one: the run must then end.
                    short = self.decided > len(self.case.decisions)
                    await self.command("approve" if approve else "reject", True, short=short)
                    break
        return None


_ENGINE_ENDS = (WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.FAILED)


async def drive(
    env: WorkflowEnvironment,
    reg: Registry,
    case: Case,
    run_name: str,
    task_queue: str,
    bound: float = 180.0,
) -> Outcome:
    """Register and submit the case's runbook, send its commands, let it end (within ``bound``
    seconds of real time: a run still open then is stuck), and collect its history."""
    out = Outcome(case)
    action = load_runbook_text(case.named(run_name), f"<{run_name}>")
    reg.add(action)
    client = env.client
    try:
        handle = await submit(client, run_name, case.args, task_queue=task_queue, registry=reg)
    except ArgsError as err:  # the size budget: refused at the door, which the guarantee allows
        out.refused = str(err)
        return out
    out.run_id = handle.run_id
    driver = _Driver(env, handle, case, out)
    deadline = time.monotonic() + bound
    for kind, value, name, *flag in case.steps:
        try:
            await driver.trigger(kind, value)
            if name != "none":
                await driver.command(name, bool(flag and flag[0]))
        except Exception as err:
            driver.problem(f"{name} after {kind}", err)
        await driver.status()
    out.final = await driver.finish(deadline)
    description = await client.get_workflow_handle(out.run_id).describe()
    out.temporal_status = description.status.name if description.status else "?"
    async for event in client.get_workflow_handle(out.run_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            attributes = event.workflow_task_failed_event_attributes
            # UnhandledCommand is the server asking for the task again with the events that
            # arrived meanwhile (a command or an activity's end as the run finished), not a
            # failure of the workflow code: the retried task goes on.
            if (
                attributes.cause
                != WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND
            ):
                out.task_failures.append(attributes.failure.message[:300])
        elif event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            state = fields.indexed_fields.get(SEARCH_ATTRIBUTE_STATE)
            if state is not None and b"ROLLING_BACK" in state.data and not out.rolling_back_at:
                out.rolling_back_at = event.event_id
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            activity_id = event.activity_task_scheduled_event_attributes.activity_id
            out.scheduled.append((event.event_id, activity_id))
    if out.final is None and description.status in _ENGINE_ENDS:
        # It ended through the engine after the bound (a loaded machine): its final status.
        out.final = await driver.status()
    if description.status == WorkflowExecutionStatus.RUNNING:
        # Stuck: end it so it does not hold the worker; the test fails on it anyway.
        await client.get_workflow_handle(out.run_id).terminate("stuck in the property test")
    return out


# ------------------------------------------------------------------------------ checking


def _specs(text: str) -> dict[str, dict[str, Any]]:
    """The runbook's job and group definitions by their path of names (``g.child``)."""
    found: dict[str, dict[str, Any]] = {}

    def walk(nodes: list[dict[str, Any]], prefix: str) -> None:
        for node in nodes:
            found[prefix + node["name"]] = node
            if "jobs" in node:
                walk(node["jobs"], prefix + node["name"] + ".")

    walk(yaml.safe_load(text)["jobs"], "")
    return found


_KEY = re.compile(r"\[[^\]]*\]")


def _undoable(name: str, specs: dict[str, dict[str, Any]]) -> bool:
    """Whether status entry ``name`` is a job instance with a rollback (not a group, not the
    entry of an ``each`` that stands for all its items)."""
    spec = specs.get(_KEY.sub("", name))
    if spec is None or "run" not in spec or "rollback" not in spec:
        return False
    return "each" not in spec or name.endswith("]")


def _in_retried_group(name: str, specs: dict[str, dict[str, Any]]) -> bool:
    """Whether status entry ``name`` lies inside a group that retries (undoing its started jobs
    before each new attempt)."""
    parts = _KEY.sub("", name).split(".")
    groups = (specs.get(".".join(parts[:i]), {}) for i in range(1, len(parts)))
    return any(group.get("retry", {}).get("attempts", 1) > 1 for group in groups)


def _first_scheduled(out: Outcome, prefix: str) -> int | None:
    """The event id of the last scheduling of an activity whose id is ``prefix``."""
    found = [eid for eid, aid in out.scheduled if aid == prefix or aid.startswith(prefix + ".")]
    return found[-1] if found else None


def check(out: Outcome) -> list[str]:
    """What is wrong with the outcome: empty when every property holds."""
    problems = list(dict.fromkeys(out.problems))  # each problem once
    if out.refused:
        return problems
    if out.task_failures:
        problems.insert(0, f"workflow task failed: {out.task_failures[0]}")
    final = out.final
    if final is None:
        return [*problems, f"no terminal state (Temporal: {out.temporal_status})"]
    if out.temporal_status not in ("COMPLETED", "FAILED"):
        problems.append(f"closed by Temporal as {out.temporal_status}, not through the engine")
    specs = _specs(out.case.yaml)
    by_name = {job.name: job for job in final.jobs}
    undone = [j for j in final.jobs if j.rollback is not None]

    def rolled_at(name: str) -> int:
        return _first_scheduled(out, f"rollback:{name}#1") or 0

    actual = [j.name for j in sorted(undone, key=lambda j: rolled_at(j.name))]

    def start_key(name: str) -> tuple[datetime, int | None]:
        job = by_name[name]
        assert job.started_at is not None
        first = next((e.attempt for e in job.log if e.started_at >= job.started_at), None)
        event = _first_scheduled(out, f"{name}#{first}") if first is not None else None
        return job.started_at, event

    def started_before(a: str, b: str) -> bool:
        (ta, ea), (tb, eb) = start_key(a), start_key(b)
        return ta < tb or (ta == tb and ea is not None and eb is not None and ea < eb)

    started = [j.name for j in final.jobs if j.started_at is not None and _undoable(j.name, specs)]
    with_rollback = final.state in (RunState.FAILED, RunState.ROLLBACK_FAILED) or (
        final.state == RunState.STOPPED and out.stop_rollback is not False
    )
    if final.state == RunState.ROLLBACK_FAILED:
        # Undoing halts at a rollback that fails for good: the run's, or that of each group
        # instance being retried (several instances may fail their rollbacks at once).
        failed = [j.name for j in undone if j.rollback and j.rollback.state == "ROLLBACK_FAILED"]
        if not failed:
            problems.append(f"ROLLBACK_FAILED, yet no rollback failed; rollbacks {actual}")
        if not set(actual) <= set(started):
            problems.append(f"rolled back {actual}, not among the started jobs {started}")
        expected_set = set(actual)
    else:
        # A run that is not undone keeps its jobs, but a retried group undoes its own started
        # jobs before each new attempt, whatever later becomes of the run.
        expected_set = (
            set(started)
            if with_rollback
            else {name for name in actual if name in started and _in_retried_group(name, specs)}
        )
        if set(actual) != expected_set:
            problems.append(
                f"{final.state.value}: rolled back {sorted(actual)}, "
                f"expected {sorted(expected_set)} (started with a rollback)"
            )
    for job in undone:
        if job.name not in expected_set:
            continue
        want = JobState.ROLLBACK_FAILED if final.state == RunState.ROLLBACK_FAILED else None
        if job.state != JobState.ROLLED_BACK and job.state != want:
            problems.append(f"{job.name} is {job.state.value} after its rollback")

    def undone_at(name: str) -> datetime:
        rollback = by_name[name].rollback
        assert rollback is not None and rollback.log
        return rollback.log[0].started_at

    # Newest first. In the run's own undoing (after it turned ROLLING_BACK) strictly so; a group
    # retry undoes its own jobs earlier, so those are compared with the jobs of their group only,
    # and only with jobs that had started when they were undone.
    def final_phase(name: str) -> bool:
        return bool(out.rolling_back_at) and rolled_at(name) > out.rolling_back_at

    for i, a in enumerate(actual):
        for b in actual[i + 1 :]:
            job_a, job_b = by_name[a], by_name[b]
            if not (
                job_a.started_at and job_b.started_at and job_a.rollback and job_a.rollback.log
            ):
                continue
            if not final_phase(a):
                group = a.rpartition(".")[0] + "."
                if not b.startswith(group) or job_b.started_at > undone_at(a):
                    continue
            if started_before(a, b):
                problems.append(f"{a} was undone before {b}, which started after it")
    return problems
