"""The shared models of Sternway.

One module of pydantic models imported by the workflow, the activities, the worker, the CLI and the
tests. The workflow only ever runs a :class:`Plan`; both front ends (Python actions and, later, YAML
runbooks) compile to it. Durations are stored as float seconds so plans stay plain JSON in history.

Nothing here does I/O: the module is passed through the workflow sandbox.
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from sternway.workflows._protocol import (
    DEFAULT_TASK_QUEUE,
    SANDBOX_MODES,
    TERMINAL_RUN_STATES,
    ErrorType,
    JobState,
    Reason,
    RunState,
)

__all__ = [
    "ACTIVITY_KINDS",
    "DEFAULT_TASK_QUEUE",
    "HISTORY_HALT_BYTES",
    "HISTORY_HALT_EVENTS",
    "HTTP_METHODS",
    "JOB_KINDS",
    "LOCK_MODES",
    "MASK",
    "MAX_ARGS_BYTES",
    "MAX_ATTEMPTS",
    "MAX_CHILD_DEPTH",
    "MAX_COMMENT_CHARS",
    "MAX_GROUP_ATTEMPTS",
    "MAX_JOB_INPUT_BYTES",
    "MAX_LOCK_KEY_CHARS",
    "MAX_LOCK_LIMIT",
    "MAX_NESTING",
    "MAX_OUTPUT_BYTES",
    "MAX_STATUS_BYTES",
    "MAX_STATUS_FIELD_CHARS",
    "MAX_TASK_INPUT_BYTES",
    "ON_TIMEOUT",
    "SANDBOX_MODES",
    "TERMINAL_RUN_STATES",
    "TRUNCATED",
    "WORKFLOW_KINDS",
    "ApprovalCommand",
    "AttemptLog",
    "AttemptReport",
    "CallSpec",
    "ChildDone",
    "ChunkFinish",
    "ChunkInput",
    "ChunkResult",
    "ChunkSummary",
    "CommandResult",
    "Duration",
    "EachSpec",
    "ErrorInfo",
    "GroupRetrySpec",
    "JobInput",
    "JobResult",
    "JobSpec",
    "JobState",
    "JobStatus",
    "LockHolder",
    "LockRelease",
    "LockReply",
    "LockRequest",
    "LockSpec",
    "LockState",
    "LockStatus",
    "ParentLink",
    "Plan",
    "Progress",
    "Reason",
    "ResolveInput",
    "ResolvedRun",
    "RetrySpec",
    "RollbackInput",
    "RollbackStatus",
    "RunInput",
    "RunOptions",
    "RunPresence",
    "RunState",
    "RunStatus",
    "StopCommand",
    "SuspendCommand",
    "UnlockCommand",
    "args_refusal",
    "bounded_status",
    "clip_masked",
    "find_cycle",
    "holds_secret",
    "item_keys",
    "json_refusal",
    "mask_fragments",
    "mask_secrets",
    "masked_status",
    "parse_duration",
    "secret_values",
    "truncated",
]

# A job output is kept in history and in every status answer; 256 KiB keeps a run far below
# Temporal's 2 MiB payload limit even with several large outputs.
MAX_OUTPUT_BYTES = 256 * 1024

# The size budget (docs/semantics.md, "Size budget"), derived from Temporal's limits: 2 MiB per
# payload, 4 MiB per gRPC message (one workflow task's commands together), 51,200 events and
# 50 MB per history. Each budget keeps what it bounds well below the limit it meets.
MAX_NESTING = 100
"""How deep data may nest (containers in containers): args, job outputs, rollback data, literals.
Payloads wrap it a few levels deeper still, and the workflow's JSON reader stops at about 200."""
MAX_ARGS_BYTES = 256 * 1024
"""A run's args as JSON: in the start event, the recorded plan, the memo and status."""
MAX_JOB_INPUT_BYTES = 1024 * 1024
"""One attempt's input (args, rendered ``with``, dependency outputs, rollback data)."""
MAX_TASK_INPUT_BYTES = 2 * 1024 * 1024
"""All the job inputs one workflow task schedules together (one gRPC message of 4 MiB)."""
MAX_COMMENT_CHARS = 16 * 1024
"""An approval comment or a stop reason."""
MAX_STATUS_FIELD_CHARS = 16 * 1024
"""A text field of the status (detail, log tails, error messages), longer ones are truncated."""
MAX_STATUS_BYTES = 1024 * 1024
"""The whole status answer (and so the run's result): logs, then outputs, are truncated."""
MAX_ATTEMPTS = 100
"""Attempts of one job (and of one rollback): at ~11 history events an attempt, a job's worst
case stays far below the history limit."""
MAX_GROUP_ATTEMPTS = 10
# How deep actions may call actions (a run, its child, the child's child, ...).
MAX_CHILD_DEPTH = 5
"""Attempts of one group."""
HISTORY_HALT_EVENTS = 51_200 * 8 // 10
"""A run halts (and rolls back) when its history reaches this many events: 80% of Temporal's
limit, so the rollback has room."""
HISTORY_HALT_BYTES = 50 * 1000 * 1000 * 8 // 10
"""... or this many bytes of history (80% of Temporal's 50 MB)."""
TRUNCATED = "… [truncated {} bytes]"
"""The marker that ends a value the status shows truncated."""

MASK = "**********"
"""What a secret looks like wherever Sternway shows it (pydantic's mask for ``SecretStr``)."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Turn ``"1h30m"``, ``"2s"``, ``"250ms"``, a number of seconds or a timedelta into seconds.

    Raises ``ValueError`` with a message fit for a user on anything else.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(
                    f"not a duration: {value!r} (use e.g. 30s, 5m, 1h30m, 250ms)"
                ) from None
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        raise ValueError(f"not a duration: {value!r}")
    if not math.isfinite(seconds):
        # float() reads "nan" and "inf": no timer or timeout can be made of them.
        raise ValueError(f"not a duration: {value!r} (a finite number of seconds)")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, accepted as a number, a timedelta or a string such as ``"1m30s"``."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)


class _Compact(_Model):
    """A model only Sternway's own code reads back: a plan in history, an activity's input and
    result. Fields at their defaults are left out when it is serialized and come back as the
    defaults when it is read, which keeps histories small (a 10-job plan: 0.8 KB, not 5.5 KB).
    What users read (the status, command results) keeps every field."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        # Each optional field is left out while it equals its default, decided in pydantic's
        # serializer (worked out once per model: pydantic inspects a default factory's
        # signature on every call).
        for field in cls.model_fields.values():
            if not field.is_required() and field.exclude_if is None:
                field.exclude_if = _equals(field.get_default(call_default_factory=True))


def _equals(default: Any) -> Callable[[Any], bool]:
    """Whether a value is ``default``: what leaves a field out of a compact dump."""
    if default is None:
        return lambda value: value is None
    return lambda value: bool(value == default)


class RetrySpec(_Compact):
    """When to try a job again. Sternway drives attempts itself (see docs/semantics.md)."""

    max_attempts: int = Field(default=1, ge=1)
    initial_interval: Duration = 1.0
    backoff: float = Field(default=2.0, ge=1.0)
    max_interval: Duration | None = None
    non_retryable_error_types: list[str] = Field(default_factory=list)

    def delay_before(self, failures: int) -> float:
        """Seconds to wait before the attempt that follows ``failures`` failed attempts."""
        delay = self.initial_interval * self.backoff ** max(failures - 1, 0)
        return min(delay, self.max_interval) if self.max_interval is not None else delay


# Kinds run by the execute/rollback activities, and kinds the workflow itself carries out.
ACTIVITY_KINDS = ("python", "shell", "http", "noop", "fail")
WORKFLOW_KINDS = ("sleep", "approval", "action")
JOB_KINDS = ACTIVITY_KINDS + WORKFLOW_KINDS


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ON_TIMEOUT = ("fail", "rollback", "approve")


class CallSpec(_Compact):
    """What a job or rollback runs: a job kind and its parameters.

    ``ref`` names a Python function registered by a Python action (kind ``python``); ``with``
    holds the kind's parameters, where strings may carry ``${{ }}`` expressions.
    """

    kind: str = "python"
    ref: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


class EachSpec(_Compact):
    """Fan a job or group out over a list, at most ``concurrency`` items at a time."""

    items: Any
    as_: str = Field(default="item", alias="as")
    concurrency: int = Field(default=1, ge=1)
    # More items than this run in child workflows of this many items (see docs/semantics.md).
    chunk_size: int = Field(default=500, ge=2, le=1000)


class GroupRetrySpec(_Compact):
    """Retry of a group: undo its started jobs and run it again from its first job."""

    attempts: int = Field(default=1, ge=1)
    wait: Duration = 0.0


class JobSpec(_Compact):
    """One job of a plan."""

    name: str
    description: str = ""
    execute: CallSpec | None = None
    jobs: list[JobSpec] | None = None
    rollback: CallSpec | None = None
    after: list[str] = Field(default_factory=list)
    each: EachSpec | None = None
    if_: str | None = Field(default=None, alias="if")
    retry: RetrySpec = Field(default_factory=RetrySpec)
    group_retry: GroupRetrySpec = Field(default_factory=GroupRetrySpec)
    rollback_retry: RetrySpec = Field(default_factory=lambda: RetrySpec(max_attempts=3))
    timeout: Duration = Field(default=600.0, gt=0)
    heartbeat_timeout: Duration = Field(default=30.0, gt=0)
    continue_on_error: bool = False
    pre: list[str] = Field(default_factory=list)
    post: list[str] = Field(default_factory=list)
    task_queue: str | None = None


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_name(kind: str, name: str) -> str:
    """Names of actions and jobs: 1-100 characters, letters, digits, ``_ . -``."""
    if not _NAME.match(name):
        raise ValueError(
            f"{kind} name {name!r} is invalid: use 1-100 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


LOCK_MODES = ("wait", "skip")
MAX_LOCK_KEY_CHARS = 200
MAX_LOCK_LIMIT = 1000
# What a rendered lock key may hold: it becomes part of a workflow id and of a visibility query.
LOCK_KEY = re.compile(rf"^[A-Za-z0-9_.:/@=+-]{{1,{MAX_LOCK_KEY_CHARS}}}$")


class LockSpec(_Compact):
    """A key a run holds from before its first job until it ends (see docs/semantics.md).

    ``key`` may read ``${{ args.* }}`` in a plan; a run's resolved plan has it rendered.
    ``limit`` holders at once (a semaphore when above 1); ``mode`` ``skip`` ends the run at once
    when the key is busy; ``timeout`` bounds the wait.
    """

    key: str
    mode: str = "wait"
    limit: int = Field(default=1, ge=1, le=MAX_LOCK_LIMIT)
    timeout: Duration | None = None

    @field_validator("mode")
    @classmethod
    def _valid_mode(cls, mode: str) -> str:
        if mode not in LOCK_MODES:
            raise ValueError(f"lock mode must be one of {', '.join(LOCK_MODES)}, not {mode!r}")
        return mode

    @field_validator("timeout")
    @classmethod
    def _valid_timeout(cls, timeout: float | None) -> float | None:
        if timeout is not None and timeout <= 0:
            raise ValueError("lock timeout must be more than 0s")
        return timeout


class Plan(_Compact):
    """A validated action: what the workflow interprets."""

    name: str
    description: str = ""
    jobs: list[JobSpec]
    timeout: Duration | None = None
    max_suspended: Duration | None = None
    args_schema: dict[str, Any] = Field(default_factory=dict)
    locks: list[LockSpec] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        return check_name("action", name)

    @model_validator(mode="after")
    def _valid_graph(self) -> Plan:
        if not self.jobs:
            raise ValueError(f"action {self.name!r} has no jobs")
        _check_scope(self.jobs, f"action {self.name!r}")
        return self

    def job(self, name: str) -> JobSpec:
        """The job called ``name``."""
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(name)


def _check_scope(jobs: list[JobSpec], where: str) -> None:
    """Names unique, dependencies known and acyclic, one of execute or jobs: here and below."""
    seen: set[str] = set()
    for job in jobs:
        check_name("job", job.name)
        if job.name in seen:
            raise ValueError(f"job name {job.name!r} is used twice in {where}")
        seen.add(job.name)
        if (job.execute is None) == (job.jobs is None):
            raise ValueError(f"job {job.name!r} needs either something to run or a list of jobs")
        for call in (job.execute, job.rollback):
            if call is not None and call.kind not in JOB_KINDS:
                raise ValueError(
                    f"job {job.name!r}: unknown job kind {call.kind!r} "
                    f"(known: {', '.join(JOB_KINDS)})"
                )
        if job.rollback is not None and job.rollback.kind in WORKFLOW_KINDS:
            kind = job.rollback.kind
            raise ValueError(f"job {job.name!r}: a rollback cannot be of kind {kind!r}")
        if job.execute is not None and job.execute.kind == "action":
            if job.rollback is not None:
                raise ValueError(
                    f"job {job.name!r}: an action job takes no rollback: its child run undoes "
                    "its own jobs"
                )
            if job.retry.max_attempts > 1:
                raise ValueError(
                    f"job {job.name!r}: an action job runs once: retry inside the action it calls"
                )
        if job.jobs is not None:
            if not job.jobs:
                raise ValueError(f"group {job.name!r} has no jobs")
            _check_scope(job.jobs, f"group {job.name!r}")
    for job in jobs:
        for dep in job.after:
            if dep == job.name:
                raise ValueError(f"job {job.name!r} cannot run after itself")
            if dep not in seen:
                raise ValueError(f"job {job.name!r} runs after unknown job {dep!r}")
    cycle = find_cycle({j.name: j.after for j in jobs})
    if cycle:
        raise ValueError("jobs form a cycle: " + " -> ".join(cycle))


def find_cycle(after: dict[str, list[str]]) -> list[str]:
    """One dependency cycle as a path of names (``a -> b -> a``), or an empty list."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for dep in after.get(node, []):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and dep in after:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for name in after:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return []


class ParentLink(_Model):
    """A child run's parent: the run, the job that started it, the top of the family (its
    locks are re-entrant for the child) and how deep the child is."""

    run_id: str
    job: str
    owner: str
    depth: int = Field(default=1, ge=1)


class RunOptions(_Model):
    """Per-run options given at submit time (``parent`` only by a parent run)."""

    timeout: Duration | None = None
    retry_of: str | None = None
    reuse_outputs: dict[str, Any] = Field(default_factory=dict)
    parent: ParentLink | None = None


class RunInput(_Model):
    """The one input of every action workflow.

    As JSON: ``{"args": {...}, "requestor": "...", "options": {...}}``.
    """

    args: dict[str, Any] = Field(default_factory=dict)
    requestor: str | None = None
    options: RunOptions = Field(default_factory=RunOptions)


class ResolveInput(_Model):
    """Input of the resolve activity: which action, with which raw args."""

    action: str
    args: dict[str, Any]


# Generation 1: a run whose SternwayState already holds its new state (a run submitted as
# RUNNING) writes nothing for it.
RESOLVER_GENERATION = 1


class ResolvedRun(_Compact):
    """The plan of a run and its validated args, fixed once per run and recorded in history."""

    plan: Plan
    args: dict[str, Any]
    # Only when it differs from ``args`` (the run has secrets): args are recorded once otherwise.
    masked_args: dict[str, Any] | None = None
    # The plan's locks with their keys rendered, one per key, in the order they are taken.
    locks: list[LockSpec] = Field(default_factory=list)
    # Which generation of the resolver recorded this plan (RESOLVER_GENERATION; 0: before
    # there were generations). Recorded in the run's history with the plan, it tells a replay
    # how the code that ran the run behaved where that changed, as a patch would, but without
    # the search attribute write a patch makes.
    generation: int = 0

    def shown_args(self) -> dict[str, Any]:
        """The args as status and memo show them (secrets masked)."""
        return self.args if self.masked_args is None else self.masked_args


class ErrorInfo(_Model):
    """Why something failed: a reason, an error type and a message."""

    reason: Reason = Reason.ERROR
    type: str = ErrorType.ERROR
    message: str = ""
    job: str | None = None


class AttemptReport(_Compact):
    """What an attempt reports besides its output, on success and in failure details."""

    reason: Reason = Reason.ERROR
    rollback_data: Any = None
    has_rollback_data: bool = False
    exit_code: int | None = None
    stdout_tail: str | None = None
    stderr_tail: str | None = None


class JobInput(_Compact):
    """Input of the execute activity for one attempt of one job."""

    run_id: str
    action: str
    job: str
    attempt: int
    call: CallSpec
    pre: list[str] = Field(default_factory=list)
    post: list[str] = Field(default_factory=list)
    args: dict[str, Any]
    deps: dict[str, Any] = Field(default_factory=dict)
    rollback_data: Any = None
    has_rollback_data: bool = False
    # The run's secret arg values, so that what the attempt reports can mask them whatever the
    # action's definition is now (it may have changed since the run started).
    secrets: list[str] = Field(default_factory=list)


class JobResult(_Compact):
    """Result of a successful execute attempt."""

    output: Any
    report: AttemptReport = Field(default_factory=AttemptReport)


class RollbackInput(_Compact):
    """Input of the rollback activity: everything known about the job being undone."""

    run_id: str
    action: str
    job: str
    attempt: int
    call: CallSpec
    args: dict[str, Any]
    output: Any = None
    completed: bool = False
    error: ErrorInfo | None = None
    rollback_data: Any = None
    has_rollback_data: bool = False
    secrets: list[str] = Field(default_factory=list)


class AttemptLog(_Model):
    """One attempt of a job (or of its rollback) in the job log."""

    attempt: int
    started_at: datetime
    finished_at: datetime | None = None
    state: JobState = JobState.RUNNING
    exit_code: int | None = None
    stdout_tail: str | None = None
    stderr_tail: str | None = None
    error: ErrorInfo | None = None


class RollbackStatus(_Model):
    """How the rollback of one job went."""

    state: JobState = JobState.PENDING
    attempts: int = 0
    error: ErrorInfo | None = None
    log: list[AttemptLog] = Field(default_factory=list)


class JobStatus(_Model):
    """One job in the status JSON."""

    name: str
    state: JobState = JobState.PENDING
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    detail: str | None = None
    error: ErrorInfo | None = None
    output: Any = None
    rollback: RollbackStatus | None = None
    log: list[AttemptLog] = Field(default_factory=list)


class Progress(_Model):
    """Jobs done out of jobs in the run, and how many of them were rolled back."""

    done: int = 0
    total: int = 0
    rolled_back: int = 0


class LockStatus(_Model):
    """One key of a run, in its status: ``waiting`` (for ``holders``), ``held``, ``released``,
    ``kept`` (the run ended ROLLBACK_FAILED and keeps it until ``sternway unlock``), or
    ``skipped`` (busy, with mode ``skip``)."""

    key: str
    limit: int = 1
    state: str = "pending"
    holders: list[str] = Field(default_factory=list)
    note: str | None = None


class RunStatus(_Model):
    """The status JSON: the ``status`` query and ``sternway status --json`` return this."""

    run_id: str
    action: str
    state: RunState = RunState.PENDING
    requestor: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress = Field(default_factory=Progress)
    error: ErrorInfo | None = None
    ui_url: str | None = None
    parent: str | None = None
    locks: list[LockStatus] = Field(default_factory=list)
    jobs: list[JobStatus] = Field(default_factory=list)

    def job(self, name: str) -> JobStatus:
        """The job called ``name``."""
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(name)

    def as_result(self) -> dict[str, Any]:
        """The status as a closed run's result (or its failure's details) records it: the same
        JSON without the fields that are null, which reads back as the same status. The final
        status is the largest event of most runs' histories; this makes it a quarter smaller."""
        return self.model_dump(mode="json", exclude_none=True)


class StopCommand(_Model):
    """Payload of the ``stop`` update and signal."""

    rollback: bool = True
    reason: str = ""


class SuspendCommand(_Model):
    """Payload of the ``suspend`` update and signal."""

    now: bool = False


class ChunkInput(_Compact):
    """Input of a fan-out chunk: a child run of one ``each`` job over a slice of its items."""

    parent_run_id: str
    action: str
    prefix: str
    job: JobSpec
    keys: list[str]
    args: dict[str, Any]
    masked_args: dict[str, Any] = Field(default_factory=dict)
    requestor: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    jobs: dict[str, Any] = Field(default_factory=dict)


class ChunkSummary(_Compact):
    """What a chunk tells its parent when its items are done (or it halted)."""

    chunk: str
    completed: int = 0
    total: int = 0
    error: ErrorInfo | None = None


class ChildDone(_Compact):
    """Signal from a child run to its parent: its jobs completed, with these outputs; it waits
    for the parent's ``sternway.finish`` (undo them, or end)."""

    job: str
    run_id: str
    outputs: dict[str, Any] = Field(default_factory=dict)


class ChunkFinish(_Compact):
    """The parent's last word to a chunk: undo its items, or just end."""

    rollback: bool = False


class ChunkResult(_Compact):
    """How a chunk ended: the job whose rollback failed for good, if one did, and why (the
    parent's final error quotes it; the parent's own status knows nothing of a chunk's items)."""

    rollback_failed: str | None = None
    error: ErrorInfo | None = None
    rollback_error: ErrorInfo | None = None


class LockRequest(_Compact):
    """A run asks a lock for its key (the ``acquire`` signal of the lock workflow).

    ``owner`` is the run at the top of a family of runs (a run and the child runs it starts):
    a key one of them holds is granted to the others at once.
    """

    key: str
    run_id: str
    owner: str
    limit: int = 1
    mode: str = "wait"


class LockReply(_Model):
    """A lock's answer to a run (the ``sternway.lock_reply`` signal): the key is granted,
    the run is queued (behind ``holders``), or refused (``mode: skip`` on a busy key). A grant
    that follows a queue carries in ``note`` what freed the key when that was not a plain
    release (an ``unlock``, a holder that was terminated)."""

    key: str
    granted: bool = False
    queued: bool = False
    holders: list[str] = Field(default_factory=list)
    position: int = 0
    note: str | None = None


class LockRelease(_Model):
    """Payload of a lock's ``release`` signal: the run no longer holds or waits for the key."""

    run_id: str


class LockHolder(_Model):
    """A run holding, or waiting for, a key."""

    run_id: str
    owner: str
    limit: int = 1
    since: datetime


class LockState(_Model):
    """A lock workflow's state: its query answer and what it carries when it continues as new."""

    key: str
    holders: list[LockHolder] = Field(default_factory=list)
    waiters: list[LockHolder] = Field(default_factory=list)
    history: list[str] = Field(default_factory=list)


class RunPresence(_Model):
    """Whether a run a lock knows still runs: what ``sternway.lock.inspect`` finds."""

    run_id: str
    running: bool
    # The run's SternwayState, and how Temporal closed it (COMPLETED, FAILED, TERMINATED, ...).
    state: str | None = None
    closed_as: str | None = None


class UnlockCommand(_Model):
    """Payload of a lock's ``unlock`` update: free the key from runs that ended holding it."""

    reason: str
    by: str | None = None


class ApprovalCommand(_Model):
    """Payload of the ``approve`` and ``reject`` updates and signals."""

    job: str
    token: str = ""
    comment: str = ""


class CommandResult(_Model):
    """What an accepted command answers."""

    state: RunState
    message: str = ""


# ------------------------------------------------------------------------------- secrets


def secret_values(revealed: Any, masked: Any) -> list[str]:
    """The secrets of a run: the strings of ``revealed`` args that ``masked`` shows as MASK.

    Longest first, so that masking a secret never leaves a piece of a longer one showing.
    """
    found: set[str] = set()

    def walk(real: Any, shown: Any) -> None:
        if shown == MASK and isinstance(real, str):
            if real and real != MASK:
                found.add(real)
        elif isinstance(real, dict) and isinstance(shown, dict):
            for key, value in real.items():
                if key in shown:
                    walk(value, shown[key])
        elif isinstance(real, list) and isinstance(shown, list) and len(real) == len(shown):
            for value, hidden in zip(real, shown, strict=True):
                walk(value, hidden)

    walk(revealed, masked)
    return sorted(found, key=lambda text: (-len(text), text))


MIN_FRAGMENT = 6
"""The shortest piece of a secret, left at the edge of a cut text, that is masked too."""


@lru_cache(maxsize=256)
def _forms(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """Each secret as it may be written: as is, ``repr()``-escaped, JSON-escaped (ASCII or not)
    and URL-quoted; longest first, so a longer form is masked before a shorter one inside it."""
    found: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        found.add(secret)
        found.add(repr(secret)[1:-1])
        found.add(json.dumps(secret)[1:-1])
        found.add(json.dumps(secret, ensure_ascii=False)[1:-1])
        found.add(urllib.parse.quote(secret, safe=""))
        found.add(urllib.parse.quote(secret))
        found.add(urllib.parse.quote_plus(secret))
    found.discard("")
    return tuple(sorted(found, key=lambda text: (-len(text), text)))


def _mask_text(text: str, secrets: Sequence[str]) -> str:
    for form in _forms(tuple(secrets)):
        if form in text:
            text = text.replace(form, MASK)
    return text


def mask_fragments(text: str, secrets: Sequence[str], *, start: bool, end: bool) -> str:
    """``text``, which was cut at its ``start`` and/or ``end``, with the piece of a secret (of at
    least :data:`MIN_FRAGMENT` characters) that the cut left at that edge replaced by MASK.

    Whole secrets are not masked here (see :func:`mask_secrets`): a cut can only leave a piece
    where it cut, so the edges are all there is to look at."""
    if not secrets or not (start or end):
        return text
    for form in _forms(tuple(secrets)):
        if start:  # the text starts with the end of a secret
            for size in range(min(len(form) - 1, len(text)), MIN_FRAGMENT - 1, -1):
                if text.startswith(form[-size:]):
                    text = MASK + text[size:]
                    break
        if end:  # the text ends with the start of a secret
            for size in range(min(len(form) - 1, len(text)), MIN_FRAGMENT - 1, -1):
                if text.endswith(form[:size]):
                    text = text[: len(text) - size] + MASK
                    break
    return text


_ITEM_KEY = re.compile(r"^[A-Za-z0-9_.:@-]{1,40}$")


def item_keys(items: Sequence[Any], secrets: Sequence[str]) -> list[str]:
    """The keys of an ``each``'s instances (``job[key]``): the items themselves, or their
    indexes when any is not a short plain name, repeats, or holds a secret. A key is in activity
    ids, history and the UI, which no masking reaches."""
    keys = [str(i) for i in items]
    if (
        len(set(keys)) != len(keys)
        or not all(_ITEM_KEY.match(k) for k in keys)
        or any(holds_secret(key, secrets) for key in keys)
    ):
        keys = [str(i) for i in range(len(items))]
    return keys


def holds_secret(text: str, secrets: Sequence[str]) -> bool:
    """Whether ``text`` holds a secret, an escaped form of one, or a piece of one of at least
    :data:`MIN_FRAGMENT` characters (a slice): for names, which are shown whole or not at all."""
    if not secrets or len(text) < MIN_FRAGMENT:
        return any(form in text for form in _forms(tuple(secrets)))
    windows = {text[i : i + MIN_FRAGMENT] for i in range(len(text) - MIN_FRAGMENT + 1)}
    return any(
        form[i : i + MIN_FRAGMENT] in windows
        for form in _forms(tuple(secrets))
        for i in range(max(1, len(form) - MIN_FRAGMENT + 1))
    ) or any(form in text for form in _forms(tuple(secrets)))


def clip_masked(
    text: str,
    secrets: Sequence[str],
    limit: int | None = None,
    *,
    keep_end: bool = False,
    cut_start: bool = False,
    cut_end: bool = False,
) -> str:
    """``text`` masked, then cut to at most ``limit`` characters (its start, or its end with
    ``keep_end``), then masked again where it was cut: the one way Sternway shortens text that
    may hold a secret, so that no cut leaves a piece of one showing.

    ``cut_start``/``cut_end`` say that ``text`` was cut already (e.g. a stream's last bytes)."""
    text = _mask_text(text, secrets) if secrets else text
    if limit is not None and len(text) > limit:
        if keep_end:
            text, cut_start = text[len(text) - limit :], True
        else:
            text, cut_end = text[:limit], True
    return mask_fragments(text, secrets, start=cut_start, end=cut_end)


def mask_secrets(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` with every occurrence of each of ``secrets`` in its strings (and mapping keys)
    replaced by MASK, also where a secret is ``repr()``-, JSON- or URL-escaped; ``value`` itself
    is left unchanged."""
    if not secrets:
        return value
    if isinstance(value, str):
        return _mask_text(value, secrets)
    if isinstance(value, dict):
        return {mask_secrets(k, secrets): mask_secrets(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_secrets(item, secrets) for item in value]
    return value


def masked_status(status: RunStatus, secrets: Sequence[str]) -> RunStatus:
    """A copy of ``status`` in which no secret shows: in outputs, details, output tails and error
    messages (args are masked already). Names and times are left as they are."""
    if not secrets:
        return status
    view = status.model_copy(deep=True)

    def error(info: ErrorInfo | None) -> None:
        if info is not None:
            info.message = mask_secrets(info.message, secrets)

    def log(entries: list[AttemptLog]) -> None:
        for entry in entries:
            entry.stdout_tail = mask_secrets(entry.stdout_tail, secrets)
            entry.stderr_tail = mask_secrets(entry.stderr_tail, secrets)
            error(entry.error)

    error(view.error)
    for job in view.jobs:
        job.output = mask_secrets(job.output, secrets)
        job.detail = mask_secrets(job.detail, secrets)
        error(job.error)
        log(job.log)
        if job.rollback is not None:
            error(job.rollback.error)
            log(job.rollback.log)
    return view


# --------------------------------------------------------------------------------- budget


def truncated(text: str, limit: int = MAX_STATUS_FIELD_CHARS) -> str:
    """``text``, or its first ``limit`` characters and a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + TRUNCATED.format(len(text[limit:].encode("utf-8", "replace")))


def _json_size(value: Any) -> int:
    return len(
        json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "replace"
        )
    )


def json_refusal(value: Any, where: str) -> str | None:
    """Why ``value`` cannot travel as JSON data in a payload, or None. Two things Python's JSON
    and YAML readers accept but Temporal's payloads do not:

    - a number JSON has no form for, said as ``"<where>.key[2] is inf: JSON has no infinity or
      NaN"``: left in, it is written as invalid JSON or read back as null;
    - nesting deeper than :data:`MAX_NESTING` levels: the workflow's JSON reader (pydantic's)
      stops at about 200, and a payload it cannot read fails the workflow task again and again,
      so the run would never end.
    """
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:  # not recursive: deeply nested data must not exhaust the stack
        item, path = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            shown = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
            return f"{where}{shown} is {item}: JSON has no infinity or NaN"
        if isinstance(item, dict | list | tuple) and len(path) >= MAX_NESTING:
            return f"{where} is nested more than {MAX_NESTING} levels deep, the limit"
        if isinstance(item, dict):
            stack.extend((child, (*path, key)) for key, child in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((child, (*path, i)) for i, child in enumerate(item))
    return None


def args_refusal(args: Any) -> str | None:
    """Why ``args`` cannot be submitted, or None: data a payload cannot carry
    (:func:`json_refusal`), or over :data:`MAX_ARGS_BYTES` of JSON."""
    bad = json_refusal(args, "args")
    if bad:
        return bad
    size = _json_size(args)
    if size <= MAX_ARGS_BYTES:
        return None
    return (
        f"the args are {size} bytes of JSON, more than the limit of {MAX_ARGS_BYTES} bytes: "
        "pass large data by reference (a path or a URL)"
    )


# How many attempts of one job's log a status over budget still shows: the newest.
_KEPT_ATTEMPTS = 10


def _fold_log(entries: list[AttemptLog]) -> list[AttemptLog]:
    """The newest entries of a log; the older ones folded into one entry saying so."""
    if len(entries) <= _KEPT_ATTEMPTS + 1:
        return entries
    old, kept = entries[:-_KEPT_ATTEMPTS], entries[-_KEPT_ATTEMPTS:]
    note = ErrorInfo(
        type=ErrorType.TRUNCATED,
        message=f"attempts {old[0].attempt}-{old[-1].attempt}: "
        + TRUNCATED.format(sum(len(e.model_dump_json()) for e in old)),
    )
    folded = AttemptLog(
        attempt=old[0].attempt,
        started_at=old[0].started_at,
        finished_at=old[-1].finished_at,
        state=old[-1].state,
        error=note,
    )
    return [folded, *kept]


def _long_texts(status: RunStatus) -> bool:
    """Whether a text field of ``status`` is over its budget."""

    def long(text: str | None) -> bool:
        return text is not None and len(text) > MAX_STATUS_FIELD_CHARS

    def error(info: ErrorInfo | None) -> bool:
        return info is not None and long(info.message)

    def log(entries: list[AttemptLog]) -> bool:
        return any(long(e.stdout_tail) or long(e.stderr_tail) or error(e.error) for e in entries)

    return error(status.error) or any(
        long(job.detail)
        or error(job.error)
        or log(job.log)
        or (job.rollback is not None and (error(job.rollback.error) or log(job.rollback.log)))
        for job in status.jobs
    )


def _cut_texts(status: RunStatus) -> None:
    def error(info: ErrorInfo | None) -> None:
        if info is not None:
            info.message = truncated(info.message)

    def log(entries: list[AttemptLog]) -> None:
        for entry in entries:
            if entry.stdout_tail is not None:
                entry.stdout_tail = truncated(entry.stdout_tail)
            if entry.stderr_tail is not None:
                entry.stderr_tail = truncated(entry.stderr_tail)
            error(entry.error)

    error(status.error)
    for job in status.jobs:
        if job.detail is not None:
            job.detail = truncated(job.detail)
        error(job.error)
        log(job.log)
        if job.rollback is not None:
            error(job.rollback.error)
            log(job.rollback.log)


def bounded_status(status: RunStatus, budget: int = MAX_STATUS_BYTES) -> RunStatus:
    """``status`` within the status budget: text fields over theirs truncated, and when the
    whole is over ``budget``, old attempts folded, then the largest outputs replaced by a marker.
    ``status`` itself is left unchanged (a copy is cut when anything must be)."""
    long = _long_texts(status)
    size = len(status.model_dump_json())
    if not long and size <= budget:
        return status
    view = status.model_copy(deep=True)
    if long:
        _cut_texts(view)
        size = len(view.model_dump_json())
    if size > budget:
        for job in view.jobs:
            job.log = _fold_log(job.log)
            if job.rollback is not None:
                job.rollback.log = _fold_log(job.rollback.log)
        size = len(view.model_dump_json())
    if size > budget:
        outputs = sorted(
            ((_json_size(job.output), job) for job in view.jobs if job.output is not None),
            key=lambda pair: -pair[0],
        )
        for cut, job in outputs:
            if size <= budget:
                break
            job.output = TRUNCATED.format(cut)
            size -= cut
    if size > budget:
        for job in view.jobs:
            job.log = job.log[-1:]
            if job.rollback is not None:
                job.rollback.log = job.rollback.log[-1:]
    return view
