"""The compiler: a checked runbook to the :class:`~workflows.models.Plan` the workflow runs
(names, ``after``, cycles, job kinds, expressions)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

import jinja2
import pydantic
from jinja2 import nodes
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    create_model,
)
from pydantic_core import to_jsonable_python

from sternway.workflows._actions import Action, called_actions
from sternway.workflows._expr import (
    _WHOLE,
    ROOTS,
    ExpressionError,
    _parse,
    has_expression,
    refuse_blocks,
    roots,
)
from sternway.workflows._runbook._format import (
    _ARG_NAME,
    ARG_TYPES,
    ArgsFormat,
    EachFormat,
    GroupRetryFormat,
    JobFormat,
    LockFormat,
    RequiredArgFormat,
    RetryFormat,
    RunbookFormat,
    StaticArgFormat,
    _arg_rules,
    _fit,
    _validate,
    _yaml_name,
)
from sternway.workflows._runbook._messages import (
    FieldPath,
    Invalid,
    _one_line,
    format_path,
    kind_of,
    short,
)
from sternway.workflows._runbook._params import CallParams
from sternway.workflows._suggest import did_you_mean
from sternway.workflows.models import (
    ACTIVITY_KINDS,
    JOB_KINDS,
    LOCK_KEY,
    CallSpec,
    EachSpec,
    GroupRetrySpec,
    JobSpec,
    LockSpec,
    Plan,
    RetrySpec,
    check_name,
    find_cycle,
)

# ------------------------------------------------------------------------- the compiler

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_JINJA_WORDS = frozenset(
    {"and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "loop"}
    | {"True", "False", "None"}
)


@dataclass
class _Context:
    args: set[str] = field(default_factory=set)
    jobs: dict[str, FieldPath] = field(default_factory=dict)


def _references(tree: nodes.Template) -> Iterator[tuple[str, str, bool]]:
    """``("args", "x", True)`` for ``args.x``, ``("args", "x", False)`` for ``args["x"]``, and the
    same for ``jobs``."""
    for node in tree.find_all(nodes.Getattr):
        assert isinstance(node, nodes.Getattr)
        if isinstance(node.node, nodes.Name) and node.node.name in ("args", "jobs"):
            yield node.node.name, node.attr, True
    for item in tree.find_all(nodes.Getitem):
        assert isinstance(item, nodes.Getitem)
        base, key = item.node, item.arg
        named = isinstance(base, nodes.Name) and base.name in ("args", "jobs")
        if named and isinstance(key, nodes.Const) and isinstance(key.value, str):
            assert isinstance(base, nodes.Name)
            yield base.name, key.value, False


def _chain(node: nodes.Node, names: frozenset[str]) -> str | None:
    """``jobs.fetch.output`` for a chain of ``.name`` and ``['key']`` reads from one of ``names``,
    or None for anything else (a call, a filter, a literal)."""
    if isinstance(node, nodes.Name):
        return node.name if node.name in names else None
    if isinstance(node, nodes.Getattr):
        base = _chain(node.node, names)
        return None if base is None else f"{base}.{node.attr}"
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        base = _chain(node.node, names)
        return None if base is None else f"{base}[{node.arg.value!r}]"
    return None


def _uncalled_methods(tree: nodes.Template, names: frozenset[str]) -> Iterator[tuple[str, str]]:
    """``("jobs.fetch.output", "items")`` for ``jobs.fetch.output.items`` not followed by ``()``:
    on a mapping that reads the method, never the value, and a method is not data."""
    called = {id(call.node) for call in tree.find_all(nodes.Call)}
    for node in tree.find_all(nodes.Getattr):
        assert isinstance(node, nodes.Getattr)
        if id(node) in called or node.attr.startswith("_") or not hasattr(dict, node.attr):
            continue
        base = _chain(node.node, names)
        if base is not None:
            yield base, node.attr


def _check_expression(text: str, path: FieldPath, names: frozenset[str], ctx: _Context) -> None:
    try:
        refuse_blocks(text)
        used = roots(text)
        tree = _parse(text)
    except ExpressionError as err:
        raise Invalid(path, _one_line(str(err))) from None
    except jinja2.TemplateError as err:
        first = (err.message or "invalid").splitlines()[0]
        raise Invalid(path, f"bad expression in {short(text)}: {first}") from None
    except RecursionError:
        raise Invalid(path, f"bad expression in {short(text)}: nested too deeply") from None
    allowed = ROOTS | names
    unknown = sorted(used - allowed)
    if unknown:
        raise Invalid(
            path,
            f"unknown name {unknown[0]!r} in {short(text)}{did_you_mean(unknown[0], allowed)} "
            f"(expressions here can read: {', '.join(sorted(allowed))})",
        )
    for root, key, dotted in _references(tree):
        if dotted and hasattr(dict, key):
            raise Invalid(
                path,
                f"write {root}[{key!r}] in {short(text)}: {root}.{key} would read a method of "
                "the mapping, not the value",
            )
        if root == "args" and key not in ctx.args:
            known = ", ".join(sorted(ctx.args)) or "none"
            raise Invalid(
                path,
                f"unknown arg {key!r} in {short(text)}{did_you_mean(key, ctx.args)} "
                f"(args: {known})",
            )
        if root == "jobs" and key not in ctx.jobs:
            hint = did_you_mean(key, ctx.jobs)
            raise Invalid(path, f"unknown job {key!r} in {short(text)}{hint}")
    for base, method in _uncalled_methods(tree, frozenset({"args", "jobs", "run"}) | names):
        raise Invalid(
            path,
            f"{base}.{method} in {short(text)} is a method, not data: "
            f"did you mean {base}[{method!r}]?",
        )


def _check_expressions(value: Any, path: FieldPath, names: frozenset[str], ctx: _Context) -> None:
    if isinstance(value, str):
        if "${{" in value or "${%" in value:
            _check_expression(value, path, names, ctx)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_expressions(item, (*path, key), names, ctx)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_expressions(item, (*path, i), names, ctx)


def _whole_expression(
    value: Any, path: FieldPath, names: frozenset[str], ctx: _Context, what: str
) -> str:
    if not isinstance(value, str) or not _WHOLE.match(value):
        raise Invalid(path, f"must be {what}")
    _check_expression(value, path, names, ctx)
    return value


def _positive(value: float | None, path: FieldPath) -> float | None:
    if value is not None and value <= 0:
        raise Invalid(path, "must be more than 0s")
    return value


class Compiler:
    def __init__(self) -> None:
        self.ctx = _Context()

    def runbook(self, data: Any, source: str) -> Action:
        if data is None:
            raise Invalid((), "the document is empty: a runbook is a mapping with name and jobs")
        if not isinstance(data, dict):
            raise Invalid(
                (), f"a runbook must be a mapping with name and jobs, not {kind_of(data)}"
            )
        book = _validate(RunbookFormat, data, ())
        try:
            check_name("action", book.name)
        except ValueError as err:
            raise Invalid(("name",), str(err)) from None
        args_model, static = self.args(book.args, book.name)
        if not book.jobs:
            raise Invalid(("jobs",), "a runbook needs at least one job")
        self.collect(book.jobs, ("jobs",))
        jobs = self.scope(book.jobs, ("jobs",), frozenset(), None)
        try:
            plan = Plan(
                name=book.name,
                description=book.description,
                jobs=jobs,
                timeout=_positive(book.timeout, ("timeout",)),
                max_suspended=_positive(book.max_suspended, ("max_suspended",)),
                args_schema=args_model.model_json_schema() if args_model is not None else {},
                locks=self.locks(book.locks),
            )
        except (pydantic.ValidationError, ValueError) as err:
            raise self.plan_error(err) from None
        action = Action.from_plan(plan, args_model=args_model, static=static, source=source)
        if book.name in called_actions(plan.jobs):
            raise Invalid(("jobs",), f"action {book.name!r} calls itself: its runs would never end")
        return action

    def locks(self, locks: list[LockFormat]) -> list[LockSpec]:
        """The runbook's ``locks``: keys that read args only (they are taken before any job
        runs), each literal key once."""
        specs: list[LockSpec] = []
        seen: set[str] = set()
        for i, lock in enumerate(locks):
            path: FieldPath = ("locks", i, "key")
            if has_expression(lock.key):
                _check_expression(lock.key, path, frozenset(), self.ctx)
                if roots(lock.key) - {"args"}:
                    raise Invalid(
                        path, "a lock key can read args only: locks are taken before any job runs"
                    )
            elif not LOCK_KEY.match(lock.key):
                raise Invalid(
                    path,
                    f"{short(lock.key)} is not a valid lock key: use 1-200 letters, digits "
                    "and _ . : / @ = + -",
                )
            elif lock.key in seen:
                raise Invalid(path, f"lock {lock.key!r} is listed twice")
            seen.add(lock.key)
            specs.append(
                LockSpec(
                    key=lock.key,
                    mode=lock.mode,
                    limit=lock.limit,
                    timeout=_positive(lock.timeout, ("locks", i, "timeout")),
                )
            )
        return specs

    def plan_error(self, err: Exception) -> Invalid:
        """A plan-level error at the job it names (the checks here should have caught it)."""
        if isinstance(err, pydantic.ValidationError):
            message = str(err.errors()[0]["msg"]).removeprefix("Value error, ")
        else:
            message = str(err)
        named = re.search(r"(?:job|group)(?: name)? '([^']+)'", message)
        path = self.ctx.jobs.get(named.group(1), ("jobs",)) if named else ("jobs",)
        return Invalid(path, _one_line(message))

    # ------------------------------------------------------------------------------ args

    def args(self, args: ArgsFormat, action: str) -> tuple[type[BaseModel] | None, dict[str, Any]]:
        fields: dict[str, Any] = {}
        static: dict[str, Any] = {}
        seen: dict[str, FieldPath] = {}
        stanzas: list[tuple[str, list[Any]]] = [
            ("required", args.required),
            ("optional", args.optional),
            ("static", args.static),
        ]
        for stanza, declared in stanzas:
            for i, arg in enumerate(declared):
                path: FieldPath = ("args", stanza, i)
                self.arg_name(arg.name, path, seen)
                if isinstance(arg, StaticArgFormat):
                    static[arg.name] = self.static_value(arg, path)
                    continue
                tp = _arg_rules(self.arg_type(arg.type, path), arg, arg.type, path)
                info = {"description": arg.desc} if arg.desc else {}
                if isinstance(arg, RequiredArgFormat):
                    fields[arg.name] = (tp, Field(**info))
                elif arg.default is None:
                    fields[arg.name] = (Optional[tp], Field(default=None, **info))  # noqa: UP045
                else:
                    default = _fit(tp, arg.default, arg.type, (*path, "default"))
                    fields[arg.name] = (tp, Field(default=default, **info))
        self.ctx.args = set(seen)
        if not fields:
            return None, static
        model = create_model(action, __config__=ConfigDict(extra="forbid"), **fields)
        return model, static

    def arg_name(self, name: str, path: FieldPath, seen: dict[str, FieldPath]) -> None:
        where = (*path, "name")
        if not _ARG_NAME.match(name):
            raise Invalid(
                where,
                f"arg name {short(name, 60)} is invalid: use 1-64 letters, digits and '_', "
                "starting with a letter",
            )
        if hasattr(BaseModel, name) or name.startswith("model_"):
            raise Invalid(where, f"arg name {name!r} is reserved: choose another name")
        if name in seen:
            raise Invalid(
                where, f"arg {name!r} is declared twice (first at {format_path(seen[name])})"
            )
        seen[name] = path

    def arg_type(self, name: str, path: FieldPath) -> Any:
        if name not in ARG_TYPES:
            raise Invalid(
                (*path, "type"),
                f"unknown arg type {short(name, 60)}{did_you_mean(name, ARG_TYPES)} "
                f"(known: {', '.join(ARG_TYPES)})",
            )
        return ARG_TYPES[name]

    def static_value(self, arg: StaticArgFormat, path: FieldPath) -> Any:
        given = arg.model_fields_set & {"default", "value"}
        if len(given) == 2:
            raise Invalid((*path, "value"), "give default or value, not both")
        if not given:
            raise Invalid(path, "a static arg needs a value (default: or value:)")
        value = arg.value if "value" in given else arg.default
        if arg.type is None:
            return value
        if arg.type == "secret":
            raise Invalid(
                (*path, "type"),
                "a static arg cannot be a secret: static values are shown in status",
            )
        tp = self.arg_type(arg.type, path)
        return to_jsonable_python(_fit(tp, value, arg.type, (*path, next(iter(given)))))

    # ------------------------------------------------------------------------------ jobs

    def collect(self, jobs: list[JobFormat], path: FieldPath) -> None:
        """Every job name, valid and used once in the whole runbook."""
        for i, job in enumerate(jobs):
            where = (*path, i)
            try:
                check_name("job", job.name)
            except ValueError as err:
                raise Invalid((*where, "name"), str(err)) from None
            if job.name in self.ctx.jobs:
                first = format_path(self.ctx.jobs[job.name])
                raise Invalid(
                    (*where, "name"),
                    f"job name {job.name!r} is used twice (first at {first}): job names are "
                    "unique in a runbook",
                )
            self.ctx.jobs[job.name] = where
            if job.jobs:
                self.collect(job.jobs, (*where, "jobs"))

    def scope(
        self,
        jobs: list[JobFormat],
        path: FieldPath,
        names: frozenset[str],
        task_queue: str | None,
    ) -> list[JobSpec]:
        index = {job.name: i for i, job in enumerate(jobs)}
        specs = [self.job(job, (*path, i), names, task_queue, index) for i, job in enumerate(jobs)]
        after = {job.name: job.after for job in jobs}
        cycle = find_cycle(after)
        if cycle:
            raise Invalid(
                (*path, index[cycle[0]], "after"), "jobs form a cycle: " + " -> ".join(cycle)
            )
        return specs

    def job(
        self,
        job: JobFormat,
        path: FieldPath,
        names: frozenset[str],
        task_queue: str | None,
        siblings: dict[str, int],
    ) -> JobSpec:
        if job.run is not None and job.jobs is not None:
            raise Invalid(
                path, "has both run and jobs: a job either runs a job kind or is a group of jobs"
            )
        if job.run is None and job.jobs is None:
            raise Invalid(path, "needs run (a job kind) or jobs (a group of jobs)")
        self.after(job, path, siblings)
        each = None
        inner = names
        if job.each is not None:
            each = self.each(job.each, (*path, "each"), names)
            inner = names | {each.as_}
        condition = self.condition(job.if_, (*path, "if"), inner)
        queue = job.task_queue or task_queue
        common: dict[str, Any] = {
            "name": job.name,
            "description": job.description,
            "after": job.after,
            "each": each,
            "if": condition,
            "continue_on_error": job.continue_on_error,
            "task_queue": queue,
        }
        if job.run is not None:
            execute = self.call(job.run, job.with_ or {}, path, inner, rollback=False)
            rollback = None
            if job.rollback is not None:
                rollback = self.call(
                    job.rollback.run, job.rollback.with_, (*path, "rollback"), inner, rollback=True
                )
            retry = _validate(
                RetryFormat,
                job.retry or {},
                (*path, "retry"),
                hint="a job's retry takes max_attempts, initial_interval, backoff, "
                "max_interval and non_retryable_error_types (attempts and wait are for groups)",
            )
            spec: dict[str, Any] = {
                **common,
                "execute": execute,
                "rollback": rollback,
                "retry": RetrySpec(**retry.model_dump()),
                "timeout": _positive(job.timeout, (*path, "timeout")) or 600.0,
                "heartbeat_timeout": _positive(job.heartbeat_timeout, (*path, "heartbeat_timeout"))
                or 30.0,
            }
            if job.rollback_retry is not None:
                spec["rollback_retry"] = RetrySpec(**job.rollback_retry.model_dump())
        else:
            for name in ("with_", "rollback", "rollback_retry", "timeout", "heartbeat_timeout"):
                if name in job.model_fields_set:
                    key = _yaml_name(JobFormat, name)
                    raise Invalid(
                        (*path, key),
                        f"a group cannot have {key}: give it to the jobs of the group",
                    )
            if not job.jobs:
                raise Invalid((*path, "jobs"), "a group needs at least one job")
            group_retry = _validate(
                GroupRetryFormat,
                job.retry or {},
                (*path, "retry"),
                hint="a group's retry takes attempts and wait (its jobs have their own retry)",
            )
            spec = {
                **common,
                "jobs": self.scope(job.jobs, (*path, "jobs"), inner, queue),
                "group_retry": GroupRetrySpec(**group_retry.model_dump()),
            }
        try:
            return JobSpec.model_validate(spec)
        except pydantic.ValidationError as err:
            raise self.plan_error(err) from None

    def after(self, job: JobFormat, path: FieldPath, siblings: dict[str, int]) -> None:
        for k, dep in enumerate(job.after):
            where = (*path, "after", k)
            if dep == job.name:
                raise Invalid(where, f"job {dep!r} cannot run after itself")
            if dep in siblings:
                continue
            if dep in self.ctx.jobs:
                raise Invalid(
                    where,
                    f"job {dep!r} is not in the same list (it is at "
                    f"{format_path(self.ctx.jobs[dep])}): after names jobs of the same list",
                )
            known = ", ".join(n for n in siblings if n != job.name) or "none"
            raise Invalid(
                where, f"unknown job {dep!r}{did_you_mean(dep, siblings)} (jobs here: {known})"
            )

    def each(self, each: EachFormat, path: FieldPath, names: frozenset[str]) -> EachSpec:
        items: Any = each.items
        if isinstance(items, list):
            _check_expressions(items, (*path, "items"), names, self.ctx)
        else:
            _whole_expression(
                items,
                (*path, "items"),
                names,
                self.ctx,
                'a list or one ${{ ... }} expression, e.g. "${{ args.hosts }}"',
            )
        if not _IDENTIFIER.match(each.as_):
            raise Invalid(
                (*path, "as"), "must be a name: letters, digits and '_', not starting with a digit"
            )
        if each.as_ in ROOTS or each.as_ in _JINJA_WORDS:
            raise Invalid((*path, "as"), f"{each.as_!r} is reserved: choose another name")
        return EachSpec(
            items=items, as_=each.as_, concurrency=each.concurrency, chunk_size=each.chunk_size
        )

    def condition(self, value: Any, path: FieldPath, names: frozenset[str]) -> str | None:
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        return _whole_expression(
            value,
            path,
            names,
            self.ctx,
            'true, false or one ${{ ... }} expression, e.g. "${{ args.enabled }}"',
        )

    def call(
        self,
        kind: str,
        params: dict[str, Any],
        path: FieldPath,
        names: frozenset[str],
        *,
        rollback: bool,
    ) -> CallSpec:
        if kind not in JOB_KINDS:
            raise Invalid(
                (*path, "run"),
                f"unknown job kind {short(kind, 60)}{did_you_mean(kind, JOB_KINDS)} "
                f"(known: {', '.join(JOB_KINDS)})",
            )
        if rollback and kind not in ACTIVITY_KINDS:
            raise Invalid(
                (*path, "run"),
                f"a rollback cannot be of kind {kind!r} (use one of {', '.join(ACTIVITY_KINDS)})",
            )
        where = (*path, "with")
        _check_expressions(params, where, names, self.ctx)
        checked = CallParams(kind, params, where).check()
        ref = None
        if kind == "python":
            ref = checked.pop("function")
        return CallSpec.model_validate({"kind": kind, "ref": ref, "with": checked})
