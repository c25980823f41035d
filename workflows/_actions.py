"""The Python front end: ``Action``, ``Job``, ``Retry`` and the ``Registry`` of actions.

An :class:`Action` compiles at once to a :class:`~workflows.models.Plan`, so a bad definition fails
where it is written, not when a run starts.

A plan names each job and hook function by an id, which the registry maps back to the function
in the worker. The id is ``module.qualname`` unless the function was given one with
:func:`job_function`; that id, not the module's path, is then what histories record, so the
function can move without breaking runs in flight. The names it had before go in ``aliases``:
a run recorded under an old name still finds it (Sternway's own sample jobs carry the
``activities.site.*`` names of their first layout this way).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic_core import to_jsonable_python

from sternway.workflows._lock import resolve_locks
from sternway.workflows._suggest import did_you_mean
from sternway.workflows.errors import ArgsError, SpecError
from sternway.workflows.models import (
    MAX_ATTEMPTS,
    RESOLVER_GENERATION,
    CallSpec,
    JobSpec,
    LockSpec,
    Plan,
    ResolvedRun,
    RetrySpec,
    find_cycle,
    json_refusal,
    parse_duration,
    secret_values,
)

__all__ = [
    "PYTHON_VERSION",
    "Action",
    "Job",
    "Registry",
    "Retry",
    "called_actions",
    "check_calls",
    "function_ref",
    "job_function",
    "secrets_of",
]

PYTHON_VERSION = "python"
"""The version shown for an action defined in Python code."""

DurationLike = str | float | int | timedelta
JobFunction = Callable[..., Any]
F = TypeVar("F", bound=JobFunction)


_ID = "__sternway_id__"
_ALIASES = "__sternway_aliases__"
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def job_function(id: str, *, aliases: Iterable[str] = ()) -> Callable[[F], F]:
    """Give a job or hook function a stable ``id`` (and the ``aliases`` it was recorded under
    before): plans record the id, and a worker finds the function under any of these names."""
    for name in (id, *aliases):
        if not isinstance(name, str) or not _DOTTED.match(name):
            raise SpecError(f"function id {name!r} must be a dotted name, like 'site.build'")

    def mark(fn: F) -> F:
        given = getattr(fn, _ID, id)
        if given != id:
            raise SpecError(f"{fn!r} already has the id {given!r}, not {id!r}")
        setattr(fn, _ID, id)
        setattr(fn, _ALIASES, tuple(aliases))
        return fn

    return mark


def _function_names(fn: JobFunction) -> tuple[str, ...]:
    """Every name a worker knows ``fn`` by: its id first, then its aliases."""
    return (function_ref(fn), *getattr(fn, _ALIASES, ()))


def function_ref(fn: JobFunction) -> str:
    """The id a plan records for a job or hook function: the one given by :func:`job_function`,
    else ``module.qualname``."""
    given = getattr(fn, _ID, None)
    if isinstance(given, str):
        return given
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<lambda>" in qualname or "<locals>" in qualname:
        raise SpecError(
            f"{fn!r} cannot be a job or hook function: use a function defined at module level "
            "so every worker finds it under the same name"
        )
    return f"{module}.{qualname}"


@dataclasses.dataclass(frozen=True)
class Retry:
    """A job's retry policy: up to ``max_attempts`` attempts, ``initial_interval`` apart, the wait
    growing by ``backoff`` up to ``max_interval``; error types in ``non_retryable`` end retries."""

    max_attempts: int = 1
    initial_interval: DurationLike = "1s"
    backoff: float = 2.0
    max_interval: DurationLike | None = None
    non_retryable: Sequence[str] = ()

    def __post_init__(self) -> None:
        # Attempts are driven by the workflow and each one stays in its history.
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS:
            raise SpecError(
                f"retry max_attempts must be between 1 and {MAX_ATTEMPTS}, not "
                f"{self.max_attempts} (each attempt is kept in the run's history)"
            )

    def spec(self) -> RetrySpec:
        """The plan form of this policy."""
        return RetrySpec(
            max_attempts=self.max_attempts,
            initial_interval=parse_duration(self.initial_interval),
            backoff=self.backoff,
            max_interval=None if self.max_interval is None else parse_duration(self.max_interval),
            non_retryable_error_types=list(self.non_retryable),
        )


@dataclasses.dataclass(frozen=True)
class Job:
    """One step of an action: ``execute``, an optional ``rollback`` and how to run them.

    ``execute(ctx)`` returns the job's output (JSON, never None); ``rollback(ctx)`` undoes it.
    ``pre`` hooks run before execute and may return a new ``ctx.input``; ``post`` hooks get
    ``(ctx, output)`` and return the output to keep. Use :meth:`rename` and :meth:`extend` to reuse
    a job under another name or with more hooks.
    """

    name: str
    execute: JobFunction
    rollback: JobFunction | None = None
    after: Sequence[str] = ()
    retry: Retry = Retry()
    rollback_retry: Retry = Retry(max_attempts=3)
    timeout: DurationLike = "10m"
    heartbeat_timeout: DurationLike = "30s"
    continue_on_error: bool = False
    pre: Sequence[JobFunction] = ()
    post: Sequence[JobFunction] = ()
    input: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    task_queue: str | None = None
    description: str = ""

    def rename(self, name: str, *, after: Sequence[str] | None = None) -> Job:
        """The same job under another name (and, if given, other dependencies)."""
        return dataclasses.replace(self, name=name, after=self.after if after is None else after)

    def extend(self, *, pre: Iterable[JobFunction] = (), post: Iterable[JobFunction] = ()) -> Job:
        """The same job with more hooks: new ``pre`` hooks run first, new ``post`` hooks last."""
        return dataclasses.replace(self, pre=(*pre, *self.pre), post=(*self.post, *post))

    def functions(self) -> list[JobFunction]:
        """Every function this job refers to."""
        fns = [self.execute, *self.pre, *self.post]
        return fns + ([self.rollback] if self.rollback is not None else [])

    def spec(self) -> JobSpec:
        """The plan form of this job."""
        return JobSpec(
            name=self.name,
            description=self.description,
            execute=CallSpec(
                kind="python", ref=function_ref(self.execute), **{"with": dict(self.input)}
            ),
            rollback=None
            if self.rollback is None
            else CallSpec(kind="python", ref=function_ref(self.rollback)),
            after=list(self.after),
            retry=self.retry.spec(),
            rollback_retry=self.rollback_retry.spec(),
            timeout=parse_duration(self.timeout),
            heartbeat_timeout=parse_duration(self.heartbeat_timeout),
            continue_on_error=self.continue_on_error,
            pre=[function_ref(f) for f in self.pre],
            post=[function_ref(f) for f in self.post],
            task_queue=self.task_queue,
        )


class Action:
    """A named definition: typed args (a pydantic model), a graph of jobs and run options."""

    def __init__(
        self,
        name: str,
        jobs: Sequence[Job],
        *,
        args: type[BaseModel] | None = None,
        description: str = "",
        timeout: DurationLike | None = None,
        max_suspended: DurationLike | None = None,
        locks: Sequence[LockSpec | Mapping[str, Any]] = (),
    ) -> None:
        self.args_model = args
        self.static: dict[str, Any] = {}
        self.source: str | None = None
        # What ``sternway actions`` shows as the version a worker serves: a runbook's is a hash
        # of its file (workflows._runbook.runbook_version); Python code has no file to hash.
        self.version = PYTHON_VERSION
        self.jobs = list(jobs)
        try:
            self.plan = Plan(
                name=name,
                description=description,
                jobs=[job.spec() for job in self.jobs],
                timeout=None if timeout is None else parse_duration(timeout),
                max_suspended=None if max_suspended is None else parse_duration(max_suspended),
                args_schema=args.model_json_schema() if args is not None else {},
                locks=[LockSpec.model_validate(lock) for lock in locks],
            )
        except (pydantic.ValidationError, ValueError) as err:
            raise SpecError(f"action {name!r}: {_first_error(err)}") from None
        # What a payload cannot carry (an args model's default of float("inf") reaches the
        # schema). A runbook's is refused as it is read, with its line.
        found = [json_refusal(self.plan.args_schema, "args_schema")]
        found += [json_refusal(dict(job.input), f"job {job.name!r} input") for job in self.jobs]
        bad = next((message for message in found if message), None)
        if bad:
            raise SpecError(f"action {name!r}: {bad}")

    @classmethod
    def from_plan(
        cls,
        plan: Plan,
        *,
        args_model: type[BaseModel] | None = None,
        static: Mapping[str, Any] | None = None,
        source: str | None = None,
    ) -> Action:
        """An action made from a plan (YAML runbooks) that calls built-in job kinds.

        ``static`` args are fixed by the definition; ``source`` names the file it came from.
        """
        action = cls.__new__(cls)
        action.args_model = args_model
        action.static = dict(static or {})
        action.source = source
        action.version = PYTHON_VERSION
        action.jobs = []
        action.plan = plan
        return action

    @property
    def name(self) -> str:
        """The action's name, which is also its Temporal workflow type."""
        return self.plan.name

    @property
    def description(self) -> str:
        """One line saying what the action does."""
        return self.plan.description

    def validate_args(self, raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Validated args as JSON, and the same with secrets masked. Raises :class:`ArgsError`."""
        fixed = [key for key in raw if key in self.static]
        if fixed:
            raise ArgsError(f"arg {fixed[0]!r} of {self.name!r} is static: it cannot be set")
        if self.args_model is None:
            if raw:
                raise ArgsError(f"action {self.name!r} takes no args, got: {', '.join(raw)}")
            return dict(self.static), dict(self.static)
        try:
            model = self.args_model.model_validate(dict(raw))
        except pydantic.ValidationError as err:
            raise ArgsError(f"invalid args for {self.name!r}: {_first_error(err)}") from None
        masked = {**model.model_dump(mode="json"), **self.static}
        revealed = {**to_jsonable_python(_reveal(model.model_dump(mode="python"))), **self.static}
        # A float field reads the text "inf" or "1e999" as infinity, which JSON (the plan, the
        # status, the memo) would carry as null or as invalid JSON.
        bad = json_refusal(revealed, "args")
        if bad:
            raise ArgsError(bad)
        return revealed, masked

    def resolve(self, raw: Mapping[str, Any]) -> ResolvedRun:
        """The plan and validated args of a run of this action, its lock keys rendered: what
        a run fixes at its start, and what submit and validate check. Raises
        :class:`ArgsError`."""
        args, masked = self.validate_args(raw)
        locks = resolve_locks(self.plan.locks, args, secret_values(args, masked))
        # The masked copy is recorded only when it differs: args are stored once in history.
        return ResolvedRun(
            plan=self.plan,
            args=args,
            masked_args=masked if masked != args else None,
            locks=locks,
            generation=RESOLVER_GENERATION,
        )

    def parse_args(self, data: Mapping[str, Any]) -> Any:
        """The args as the action's model instance (or the plain dict when it has none).

        Static args are part of the run's args but not of the model callers fill in.
        """
        if self.args_model is None:
            return dict(data)
        return self.args_model.model_validate(
            {key: value for key, value in data.items() if key not in self.static}
        )


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr | SecretBytes):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reveal(v) for v in value]
    return value


def secrets_of(value: Any) -> list[str]:
    """The values of every ``SecretStr``/``SecretBytes`` in ``value`` (an args model instance,
    or dicts and lists of them), longest first: what job code sees and must never be shown."""
    found: set[str] = set()

    def walk(item: Any) -> None:
        if isinstance(item, SecretStr | SecretBytes):
            real = item.get_secret_value()
            text = real.decode(errors="replace") if isinstance(real, bytes) else real
            if text:
                found.add(text)
        elif isinstance(item, BaseModel):
            for name in type(item).model_fields:
                walk(getattr(item, name, None))
        elif isinstance(item, dict):
            for child in item.values():
                walk(child)
        elif isinstance(item, list | tuple | set | frozenset):
            for child in item:
                walk(child)

    walk(value)
    return sorted(found, key=lambda text: (-len(text), text))


def _defined_in(action: Action) -> str:
    """Where an action was defined, for error messages."""
    if action.source:
        return action.source
    modules = sorted({job.execute.__module__ for job in action.jobs})
    return f"Python module {', '.join(modules)}" if modules else "Python code"


def _first_error(err: Exception) -> str:
    """A one-line message for a validation error: the field path and what is wrong."""
    if isinstance(err, pydantic.ValidationError):
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        return f"{where}: {message}{more}" if where else f"{message}{more}"
    return str(err)


def called_actions(jobs: Iterable[JobSpec]) -> set[str]:
    """The actions ``jobs`` run as child runs (``run: action`` with a literal name)."""
    found: set[str] = set()
    for job in jobs:
        call = job.execute
        if call is not None and call.kind == "action":
            name = call.with_.get("action")
            if isinstance(name, str) and "${{" not in name:
                found.add(name)
        found |= called_actions(job.jobs or [])
    return found


def check_calls(actions: Mapping[str, Action]) -> None:
    """Actions that call each other in a circle are refused: such runs would never end."""
    calls = {name: sorted(called_actions(a.plan.jobs)) for name, a in actions.items()}
    cycle = find_cycle(calls)
    if cycle:
        raise SpecError(f"actions call each other in a cycle: {' -> '.join(cycle)}")


class Registry:
    """The actions a worker runs and a client may submit, and the functions they refer to."""

    def __init__(self, actions: Iterable[Action] = ()) -> None:
        self._actions: dict[str, Action] = {}
        self._functions: dict[str, JobFunction] = {}
        for action in actions:
            self.add(action)

    def add(self, action: Action) -> Action:
        """Register ``action``; its name and function names must not clash with others."""
        if action.name in self._actions:
            raise SpecError(f"action {action.name!r} is registered twice")
        found: dict[str, JobFunction] = {}
        for job in action.jobs:
            for fn in job.functions():
                for ref in _function_names(fn):
                    known = self._functions.get(ref, found.get(ref))
                    if known is not None and known is not fn:
                        raise SpecError(f"two different functions are both named {ref!r}")
                    found[ref] = fn
        check_calls({**self._actions, action.name: action})
        self._functions.update(found)
        self._actions[action.name] = action
        return action

    def get(self, name: str) -> Action:
        """The action called ``name``; :class:`SpecError` names the known ones otherwise."""
        try:
            return self._actions[name]
        except KeyError:
            known = ", ".join(sorted(self._actions)) or "none"
            hint = did_you_mean(name, self._actions)
            raise SpecError(f"unknown action {name!r}{hint} (known: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    def __iter__(self) -> Any:
        return iter(sorted(self._actions.values(), key=lambda a: a.name))

    def replace_runbooks(self, actions: Iterable[Action]) -> None:
        """Serve ``actions`` instead of every action that came from a file (``source`` set).

        All or nothing: a name used twice (among ``actions``, or by a Python action) is a
        :class:`SpecError` and the registry stays as it was. The swap is one assignment, so a
        lookup sees the old set or the new one, never a mix. Runbooks call no registered
        functions, so the functions stay as they are.
        """
        kept = {name: a for name, a in self._actions.items() if a.source is None}
        new: dict[str, Action] = dict(kept)
        for action in actions:
            other = new.get(action.name)
            if other is not None:
                where = _defined_in(other)
                raise SpecError(
                    f"action {action.name!r} is defined twice: in {action.source} and in {where}"
                )
            new[action.name] = action
        check_calls(new)
        self._actions = new

    def function(self, ref: str) -> JobFunction:
        """The job or hook function a plan calls ``ref``."""
        try:
            return self._functions[ref]
        except KeyError:
            raise SpecError(f"no function {ref!r} is registered in this worker") from None

    def resolve(self, name: str, raw_args: Mapping[str, Any]) -> ResolvedRun:
        """The plan of ``name`` and its validated args: what a run fixes at its start."""
        return self.get(name).resolve(raw_args)
