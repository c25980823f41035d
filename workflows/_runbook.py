"""The YAML front end: load ``actions/*.yaml`` runbooks and compile them to a :class:`Plan`.

A runbook is parsed with PyYAML's safe loader into a node tree, which is turned into plain Python
values plus a map from each field's path (``("jobs", 2, "retry", "max_attempts")``) to its line.
The values are validated against pydantic models of the YAML format (unknown fields are errors, so
typos are caught), then checked further (names, ``after``, cycles, job kinds and their parameters,
expressions) and compiled to the plan model the workflow runs.

Every problem is a :class:`~workflows.errors.SpecError` of one line::

    actions/x.yaml:14 jobs[2].retry.max_attempts: must be >= 1

and nothing else ever escapes the loader, whatever the input. The format is documented in
``docs/runbooks.md``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar, get_args

import jinja2
import pydantic
import yaml
from jinja2 import nodes
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    SecretStr,
    TypeAdapter,
    WithJsonSchema,
    create_model,
)
from pydantic_core import core_schema, to_jsonable_python
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from sternway.workflows._actions import Action
from sternway.workflows._argv import argv_text
from sternway.workflows._expr import _WHOLE, ROOTS, ExpressionError, _parse, refuse_blocks, roots
from sternway.workflows._kind_params import KIND_PARAMS, check_params, python_function
from sternway.workflows._suggest import did_you_mean
from sternway.workflows.errors import JobRejected, SpecError
from sternway.workflows.models import (
    ACTIVITY_KINDS,
    HTTP_METHODS,
    JOB_KINDS,
    MAX_ATTEMPTS,
    MAX_GROUP_ATTEMPTS,
    ON_TIMEOUT,
    CallSpec,
    EachSpec,
    GroupRetrySpec,
    JobSpec,
    Plan,
    RetrySpec,
    check_name,
    find_cycle,
    parse_duration,
)

__all__ = [
    "ARG_TYPES",
    "MAX_RUNBOOK_BYTES",
    "ArgRules",
    "RunbookTooLarge",
    "load_folder",
    "load_runbook",
    "load_runbook_text",
]

FieldPath = tuple[str | int, ...]

# A document may hold at most this many values (aliases count each time they are used), which
# keeps "billion laughs" documents from eating the worker's memory.
_MAX_VALUES = 100_000
MAX_RUNBOOK_BYTES = 1024 * 1024
"""The largest runbook file loaded: larger ones are refused (and skipped by workers)."""
_MAX_TEXT = 200  # characters of a value quoted in a message


# ----------------------------------------------------------------------------- errors


class _Invalid(Exception):
    """A problem at a field path (and, for keys, at an explicit line)."""

    def __init__(self, path: FieldPath, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        self.line = line


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _short(value: Any, limit: int = _MAX_TEXT) -> str:
    """``repr`` of a value, cut to ``limit`` characters (it is quoted in a one-line message)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_path(path: FieldPath) -> str:
    """``("jobs", 1, "jobs", 0, "run")`` as ``jobs[1].jobs[0].run``; the root is ``document``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += ("." if out else "") + part
        else:
            out += f"[{_short(part, 60)}]"
    return out or "document"


def _one_line(text: str) -> str:
    return " ".join(text.splitlines()).strip()


def _line_of(lines: Mapping[FieldPath, int], path: FieldPath) -> int:
    """The line of ``path``, or of the nearest enclosing node that has one."""
    for end in range(len(path), -1, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return 1


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# ------------------------------------------------------------------------ YAML with lines


class _Builder:
    """Plain values from a composed YAML node tree, recording the line of every field."""

    def __init__(self) -> None:
        self.lines: dict[FieldPath, int] = {}
        self._constructor = yaml.constructor.SafeConstructor()
        self._count = 0
        self._active: set[int] = set()
        self._explicit: dict[int, set[int]] = {}

    def build(self, node: Node, path: FieldPath) -> Any:
        self._count += 1
        if self._count > _MAX_VALUES:
            raise _Invalid((), f"the document is too large (over {_MAX_VALUES} values)")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, ScalarNode):
            return self._scalar(node)
        if id(node) in self._active:
            raise _Invalid(path, "an alias refers to a node that contains it")
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            if isinstance(node, SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            raise _Invalid(path, f"unsupported YAML node {type(node).__name__}")
        finally:
            self._active.discard(id(node))

    def _scalar(self, node: ScalarNode) -> Any:
        value = self._constructor.construct_object(node)
        if value is None or isinstance(value, str | bool | int | float):
            return value
        # Timestamps, binary and the like stay the text they were written as: plans are JSON.
        return str(node.value)

    def _mapping(self, node: MappingNode, path: FieldPath) -> dict[str, Any]:
        merge = "tag:yaml.org,2002:merge"
        explicit = self._explicit.setdefault(
            id(node), {id(k) for k, _ in node.value if k.tag != merge}
        )
        self._constructor.flatten_mapping(node)  # `<<: *anchor` merge keys
        out: dict[str, Any] = {}
        merged: dict[str, bool] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                raise _Invalid(path, "a key must be a plain name, not a list or a mapping", line)
            raw = self._scalar(key_node)
            key = raw if isinstance(raw, str) else str(key_node.value)
            is_merged = id(key_node) not in explicit
            if key in out:
                if is_merged:
                    continue  # the mapping's own key, or an earlier merge, wins
                if not merged[key]:
                    raise _Invalid((*path, key), "this key is given twice", line)
            merged[key] = is_merged
            self.lines[(*path, key)] = line
            out[key] = self.build(value_node, (*path, key))
        return out


_BRACKETED = re.compile(r"""(?<!["'])\b[A-Za-z_]+\[""")


def _yaml_error(err: yaml.YAMLError, text: str) -> tuple[int, str]:
    """The line and a one-line message of a YAML error."""
    if isinstance(err, yaml.reader.ReaderError):
        line = text[: max(err.position, 0)].count("\n") + 1
        char = err.character
        shown = f"#x{char:04x}" if isinstance(char, int) else _short(char)
        return line, f"invalid YAML: unacceptable character {shown}"
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        problem = ", ".join(p for p in (err.context, err.problem) if p) or "invalid YAML"
        if mark is not None:
            lines = text.splitlines()
            here = lines[mark.line] if mark.line < len(lines) else ""
            if "flow" in problem and _BRACKETED.search(here):
                # `{name: hosts, type: list[str]}`: inside { } the brackets start a list.
                problem += '; quote text with brackets, e.g. type: "list[str]"'
            return mark.line + 1, f"invalid YAML at column {mark.column + 1}: {problem}"
        return 1, f"invalid YAML: {problem}"
    return 1, f"invalid YAML: {err}"


# ---------------------------------------------------------------------- the YAML format


MAX_DURATION = 3650 * 86400.0  # ten years: far below what Temporal's timers can hold


def seconds(value: Any) -> float:
    """A duration in seconds (``parse_duration``), finite and at most ten years."""
    result = parse_duration(value)
    if not math.isfinite(result) or result > MAX_DURATION:
        raise ValueError(f"not a duration: {_short(value, 60)} (at most 3650d)")
    return result


def _duration(value: Any) -> float:
    return seconds(value)


DurationField = Annotated[float, BeforeValidator(_duration)]


class _Format(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _ArgRulesFormat(_Format):
    """The constraints a required or optional arg may declare (checked by :class:`ArgRules`)."""

    pattern: str | None = None
    enum: list[Any] | None = None
    min: int | float | str | None = None
    max: int | float | str | None = None
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=0)


class RequiredArgFormat(_ArgRulesFormat):
    """``args.required[]``: an arg every run must give."""

    name: str
    type: str = "str"
    desc: str = ""


class OptionalArgFormat(_ArgRulesFormat):
    """``args.optional[]``: an arg with a default."""

    name: str
    type: str = "str"
    default: Any = None
    desc: str = ""


class StaticArgFormat(_Format):
    """``args.static[]``: a value fixed by the runbook, which callers cannot set."""

    name: str
    type: str | None = None
    default: Any = None
    value: Any = None
    desc: str = ""


class ArgsFormat(_Format):
    """``args``: Spin Cycle's three stanzas."""

    required: list[RequiredArgFormat] = Field(default_factory=list)
    optional: list[OptionalArgFormat] = Field(default_factory=list)
    static: list[StaticArgFormat] = Field(default_factory=list)


class CallFormat(_Format):
    """``rollback``: a job kind and its parameters."""

    run: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


class RetryFormat(_Format):
    """``retry`` of a job that runs something (and ``rollback_retry``)."""

    # Attempts are driven by the workflow, and each stays in its history (docs/semantics.md).
    max_attempts: int = Field(default=1, ge=1, le=MAX_ATTEMPTS)
    initial_interval: DurationField = 1.0
    backoff: float = Field(default=2.0, ge=1.0, le=100.0)
    max_interval: DurationField | None = None
    non_retryable_error_types: list[str] = Field(default_factory=list)


class GroupRetryFormat(_Format):
    """``retry`` of a group: run the whole group again."""

    attempts: int = Field(default=1, ge=1, le=MAX_GROUP_ATTEMPTS)
    wait: DurationField = 0.0


class EachFormat(_Format):
    """``each``: fan a job or group out over a list."""

    items: Any
    as_: str = Field(default="item", alias="as")
    concurrency: int = Field(default=1, ge=1)
    chunk_size: int = Field(default=500, ge=2, le=1000)


class JobFormat(_Format):
    """One entry of ``jobs``: a job (``run``) or a group (``jobs``)."""

    name: str
    description: str = ""
    run: str | None = None
    with_: dict[str, Any] | None = Field(default=None, alias="with")
    jobs: list[JobFormat] | None = None
    rollback: CallFormat | None = None
    rollback_retry: RetryFormat | None = None
    after: list[str] = Field(default_factory=list)
    retry: dict[str, Any] | None = None
    timeout: DurationField | None = None
    heartbeat_timeout: DurationField | None = None
    if_: Any = Field(default=None, alias="if")
    continue_on_error: bool = False
    task_queue: str | None = None
    each: EachFormat | None = None


class RunbookFormat(_Format):
    """A whole runbook file."""

    name: str
    description: str = ""
    args: ArgsFormat = Field(default_factory=ArgsFormat)
    jobs: list[JobFormat]
    timeout: DurationField | None = None
    max_suspended: DurationField | None = None


def _yaml_name(model: type[BaseModel], name: str) -> str:
    alias = model.model_fields[name].alias
    return alias or name


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The format model that holds the last element of a pydantic error location."""
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        if current is None:
            return None
        if isinstance(part, int):
            continue
        found = next(
            (f for n, f in current.model_fields.items() if part in (n, f.alias)),
            None,
        )
        if found is None:
            return None
        current = _inner_model(found.annotation)
    return current


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        inner = _inner_model(arg)
        if inner is not None:
            return inner
    return None


def _loc_path(loc: tuple[Any, ...], value: Any) -> FieldPath:
    """A pydantic error location as a path in the document (union member tags dropped)."""
    path: list[str | int] = []
    current = value
    for i, part in enumerate(loc):
        in_dict = isinstance(current, dict) and isinstance(part, str) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            path.append(part)
            current = current[part]
        elif isinstance(current, dict) and isinstance(part, str) and i == len(loc) - 1:
            path.append(part)  # a missing field
    return tuple(path)


_TYPE_MESSAGES = {
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
}


def _error_message(error: Any, model: type[BaseModel], hint: str) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        holder = _model_at(model, tuple(error["loc"]))
        key = str(error["loc"][-1])
        if holder is None:
            return "unknown field"
        if hint and key in _HINTED:
            return f"unknown field: {hint}"
        known = [_yaml_name(holder, n) for n in holder.model_fields]
        suggestion = did_you_mean(key, known)
        if not suggestion and _SYNONYMS.get(key) in known:
            suggestion = f"; did you mean {_SYNONYMS[key]!r}?"
        return f"unknown field{suggestion} (known: {', '.join(known)})"
    if kind == "string_type" and error["loc"][-1] == "type" and isinstance(error["input"], list):
        # `type: [str]` or `type: list[str]` in a flow mapping: YAML read a list, not a type.
        return 'must be a string, not a list: quote a type with brackets, type: "list[str]"'
    if kind in _TYPE_MESSAGES:
        return f"{_TYPE_MESSAGES[kind]}, not {_kind_of(error.get('input'))}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}"
    if kind == "greater_than":
        return f"must be > {ctx.get('gt')}"
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


_HINTED = {"attempts", "wait", "max_attempts", "initial_interval", "backoff", "max_interval"}
# Fields other tools name differently (Argo's `dependencies`, GitHub Actions' `needs`, ...).
_SYNONYMS = {
    "depends": "after",
    "depends_on": "after",
    "dependencies": "after",
    "needs": "after",
    "requires": "after",
}


_M = TypeVar("_M", bound=BaseModel)


def _validate(model: type[_M], value: Any, path: FieldPath, hint: str = "") -> _M:
    """``value`` as the format model, or :class:`_Invalid` at the first problem in the file."""
    try:
        return model.model_validate(value)
    except pydantic.ValidationError as err:
        errors = err.errors()
        first = errors[0]
        raise _Invalid(
            (*path, *_loc_path(tuple(first["loc"]), value)), _error_message(first, model, hint)
        ) from None


# --------------------------------------------------------------------------- arg types


def _duration_arg(value: Any) -> float:
    return seconds(value)


ARG_TYPES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    # Given as "90s", "5m" or seconds; the CLI passes the text, the model turns it into seconds.
    "duration": Annotated[
        float,
        BeforeValidator(_duration_arg),
        WithJsonSchema({"type": "string", "format": "duration"}),
    ],
    "list[str]": list[str],
    "secret": SecretStr,
}
"""The types a runbook arg may have, and the Python type each one validates as."""

_ARG_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


def _fit(tp: Any, value: Any, type_name: str, path: FieldPath) -> Any:
    """``value`` validated as the arg type ``tp`` (a default or a static value)."""
    try:
        return TypeAdapter(tp).validate_python(value)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        why = str(first["msg"]).removeprefix("Value error, ")
        raise _Invalid(
            path, f"{_short(value, 60)} does not fit type {type_name}: {why[:1].lower()}{why[1:]}"
        ) from None


# --------------------------------------------------------------------------- arg rules


@dataclass(frozen=True)
class ArgRules:
    """The constraints of a runbook arg, as pydantic metadata: ``Annotated[str, ArgRules(...)]``.

    The same model checks the args at submit (CLI and Python client) and in the run's resolve
    step, so a rule has one home. ``pattern`` must match the whole value (``re.fullmatch``, with
    Python's regex syntax); ``min``/``max`` bound numbers (durations in seconds),
    ``min_length``/``max_length`` the length of text. Messages never quote the value (it may be
    a secret). The JSON schema carries the rules (``pattern``, ``enum``, ``minimum``, ...), which is
    where ``sternway actions`` reads them.
    """

    pattern: str | None = None
    enum: tuple[Any, ...] | None = None
    min: int | float | None = None
    max: int | float | None = None
    min_length: int | None = None
    max_length: int | None = None
    shown_min: str | None = None  # the bounds as the runbook wrote them ("1m", not 60.0)
    shown_max: str | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> Any:
        out = dict(handler(schema))
        keys = {
            "pattern": self.pattern,
            "enum": None if self.enum is None else list(self.enum),
            "minimum": self.min,
            "maximum": self.max,
            "minLength": self.min_length,
            "maxLength": self.max_length,
        }
        out.update({key: value for key, value in keys.items() if value is not None})
        return out

    def check(self, value: Any) -> Any:
        """``value`` if it keeps every rule; ValueError naming the rule otherwise."""
        plain = value.get_secret_value() if isinstance(value, SecretStr) else value
        if self.enum is not None and plain not in self.enum:
            raise ValueError(f"must be one of {', '.join(repr(v) for v in self.enum)}")
        if isinstance(plain, str):
            if self.min_length is not None and len(plain) < self.min_length:
                raise ValueError(f"must be at least {self.min_length} characters long")
            if self.max_length is not None and len(plain) > self.max_length:
                raise ValueError(f"must be at most {self.max_length} characters long")
            if self.pattern is not None and re.fullmatch(self.pattern, plain) is None:
                raise ValueError(f"must match the pattern {self.pattern!r} (the whole value)")
        elif isinstance(plain, int | float):
            if self.min is not None and plain < self.min:
                raise ValueError(f"must be at least {self.shown_min or self.min}")
            if self.max is not None and plain > self.max:
                raise ValueError(f"must be at most {self.shown_max or self.max}")
        return value


# Which rules fit which arg type (of a list[str], the text rules apply to each item).
_RULES_FOR: dict[str, frozenset[str]] = {
    "str": frozenset({"pattern", "enum", "min_length", "max_length"}),
    "secret": frozenset({"pattern", "min_length", "max_length"}),  # an enum would show it
    "list[str]": frozenset({"pattern", "enum", "min_length", "max_length"}),
    "int": frozenset({"enum", "min", "max"}),
    "float": frozenset({"enum", "min", "max"}),
    "duration": frozenset({"min", "max"}),
    "bool": frozenset(),
}
_RULE_NAMES = ("pattern", "enum", "min", "max", "min_length", "max_length")


def _arg_rules(tp: Any, arg: _ArgRulesFormat, type_name: str, path: FieldPath) -> Any:
    """``tp`` with the arg's declared rules, or :class:`_Invalid` at a rule that is wrong."""
    given = [name for name in _RULE_NAMES if getattr(arg, name) is not None]
    if not given:
        return tp
    allowed = _RULES_FOR.get(type_name, frozenset())
    for name in given:
        if name not in allowed:
            fits = ", ".join(n for n in _RULE_NAMES if n in allowed) or "none"
            raise _Invalid(
                (*path, name),
                f"{name} does not apply to an arg of type {type_name} (its rules: {fits})",
            )
    item = str if type_name == "list[str]" else tp
    if arg.pattern is not None:
        try:
            re.compile(arg.pattern)
        except (re.error, OverflowError, RecursionError, ValueError) as err:
            shown = _short(arg.pattern, 80)
            raise _Invalid((*path, "pattern"), f"invalid regex {shown}: {err}") from None
    enum: tuple[Any, ...] | None = None
    if arg.enum is not None:
        if not arg.enum:
            raise _Invalid((*path, "enum"), "enum needs at least one value")
        enum = tuple(
            to_jsonable_python(_fit(item, value, type_name, (*path, "enum", i)))
            for i, value in enumerate(arg.enum)
        )
    bounds: dict[str, int | float] = {}
    for name in ("min", "max"):
        value = getattr(arg, name)
        if value is not None:
            if isinstance(value, str) and type_name != "duration":
                raise _Invalid((*path, name), f"{name} must be a number, not a string")
            bounds[name] = _fit(tp, value, type_name, (*path, name))
    if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
        raise _Invalid((*path, "max"), "max is less than min")
    lengths = (arg.min_length, arg.max_length)
    if lengths[0] is not None and lengths[1] is not None and lengths[0] > lengths[1]:
        raise _Invalid((*path, "max_length"), "max_length is less than min_length")
    rules = ArgRules(
        pattern=arg.pattern,
        enum=enum,
        min=bounds.get("min"),
        max=bounds.get("max"),
        min_length=arg.min_length,
        max_length=arg.max_length,
        shown_min=None if arg.min is None else str(arg.min),
        shown_max=None if arg.max is None else str(arg.max),
    )
    if type_name == "list[str]":
        return list[Annotated[str, rules]]
    return Annotated[tp, rules]


# ---------------------------------------------------------------------- kind parameters


def _is_expr(value: Any) -> bool:
    return isinstance(value, str) and "${{" in value


def _holds_expression(value: Any) -> bool:
    """Whether an expression is anywhere in ``value`` (its keys included)."""
    if isinstance(value, dict):
        return any(_holds_expression(k) or _holds_expression(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_expression(item) for item in value)
    return isinstance(value, str) and ("${{" in value or "${%" in value)


_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"})
_SHELL_C = re.compile(r"^-[A-Za-z]*c[A-Za-z]*$")


def _shell_script_index(argv: list[Any]) -> int | None:
    """Where the script of ``argv`` is when it runs a shell with ``-c`` (``sh -ec SCRIPT``)."""
    if not isinstance(argv[0], str) or argv[0].rsplit("/", 1)[-1] not in _SHELLS:
        return None
    for i, item in enumerate(argv[1:], 1):
        if not isinstance(item, str) or not item.startswith("-"):
            return None
        if _SHELL_C.match(item):
            return i + 1 if i + 1 < len(argv) else None
    return None


class _Params:
    """Checks of one call's ``with``: literal values are checked and normalised, expressions are
    left to the run (their type is only known then)."""

    def __init__(self, kind: str, params: dict[str, Any], path: FieldPath) -> None:
        self.kind = kind
        self.params = dict(params)
        self.path = path

    def fail(self, key: str | None, message: str) -> _Invalid:
        return _Invalid(self.path if key is None else (*self.path, key), message)

    def literal(self, key: str) -> Any:
        """The value of ``key`` if given and not an expression, else ``None``."""
        value = self.params.get(key)
        return None if _is_expr(value) else value

    def string(self, key: str) -> None:
        value = self.literal(key)
        if value is not None and not isinstance(value, str):
            raise self.fail(key, f"must be a string, not {_kind_of(value)}")

    def boolean(self, key: str) -> None:
        value = self.literal(key)
        if value is not None and not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, not {_kind_of(value)}")

    def duration(self, key: str) -> None:
        value = self.literal(key)
        if value is None:
            return
        try:
            value = seconds(value)
        except ValueError as err:
            raise self.fail(key, str(err)) from None
        if value <= 0:
            raise self.fail(key, "must be more than 0s")
        self.params[key] = value

    def mapping(self, key: str, *, scalars: bool) -> None:
        value = self.literal(key)
        if value is None:
            return
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping, not {_kind_of(value)}")
        if scalars:
            fixed: dict[str, Any] = {}
            for name, item in value.items():
                if isinstance(item, bool) or not isinstance(item, str | int | float):
                    raise _Invalid(
                        (*self.path, key, name), f"must be a string, not {_kind_of(item)}"
                    )
                fixed[name] = item if isinstance(item, str) else str(item)
            self.params[key] = fixed

    def strings(self, key: str) -> None:
        """A list of arguments under the shell kind's rule at run time (workflows/_argv.py):
        bools and numbers become their JSON text; expressions are strings, kept."""
        value = self.literal(key)
        if value is None:
            return
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list of strings, not {_kind_of(value)}")
        fixed: list[Any] = []
        for i, item in enumerate(value):
            try:
                fixed.append(argv_text(item))
            except ValueError as err:
                raise _Invalid((*self.path, key, i), str(err)) from None
        self.params[key] = fixed

    def integers(self, key: str, low: int, high: int) -> None:
        value = self.literal(key)
        if value is None:
            return
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            where = (*self.path, key, i) if isinstance(value, list) else (*self.path, key)
            if isinstance(item, bool) or not isinstance(item, int) or not low <= item <= high:
                raise _Invalid(where, f"must be a whole number from {low} to {high}")
        self.params[key] = items

    def run_rule(self, rule: Callable[[dict[str, Any]], object], params: dict[str, Any]) -> None:
        """Apply the kind's own rule (workflows/_kind_params.py), as the run will."""
        try:
            rule(params)
        except JobRejected as err:
            raise self.fail(None, str(err).removeprefix(f"{self.kind} job: ")) from None

    def check(self) -> dict[str, Any]:
        known = KIND_PARAMS[self.kind]
        if known is not None:
            for key in self.params:
                if key not in known:
                    raise self.fail(
                        key,
                        f"unknown parameter of {self.kind} jobs{did_you_mean(key, known)} "
                        f"(known: {', '.join(sorted(known))})",
                    )
        getattr(self, f"_{self.kind}")()
        if not _holds_expression(self.params):
            # Every value is known: the run's rule decides, so validate and run agree.
            self.run_rule(lambda params: check_params(self.kind, params), self.params)
        return self.params

    def _shell(self) -> None:
        if "argv" not in self.params and "script" not in self.params:
            raise self.fail(None, "a shell job needs argv (a list: program and arguments)")
        if "argv" in self.params and "script" in self.params:
            raise self.fail("script", "give argv or script, not both")
        script = self.params.get("script")
        use_shell = self.params.get("shell")
        if script is not None and use_shell is not True and not _is_expr(use_shell):
            raise self.fail(
                "script",
                "is only allowed with shell: true (or give argv, the program and its arguments)",
            )
        if isinstance(script, str) and ("${{" in script or "${%" in script):
            raise self.fail(
                "script",
                "must not hold ${{ }} (a value pasted into script text is run as shell code); "
                "pass values as positional parameters, e.g. "
                """with: {shell: true, script: 'echo "$1"', args: ["${{ args.msg }}"]}, """
                'or in env and quote them in the script ("$NAME")',
            )
        if "args" in self.params:
            if script is None:
                raise self.fail(
                    "args", "is only allowed with shell: true and script; use argv for a program"
                )
            self.strings("args")
        argv = self.literal("argv")
        if argv is not None:
            if not isinstance(argv, list) or not argv:
                raise self.fail("argv", "must be a non-empty list: the program and its arguments")
            self.strings("argv")
            script_at = _shell_script_index(argv)
            if script_at is not None and _is_expr(argv[script_at]):
                raise _Invalid(
                    (*self.path, "argv", script_at),
                    "a shell's -c script must not hold ${{ }} (a value pasted into script text is "
                    'run as shell code); pass values after the script and read them as "$1": '
                    f"""argv: [{argv[0]}, -c, 'echo "$1"', sh, "${{{{ args.msg }}}}"]""",
                )
        self.string("script")
        self.boolean("shell")
        self.mapping("env", scalars=True)
        self.string("cwd")
        self.duration("timeout")
        self.integers("non_retryable_exit_codes", 0, 255)

    def _http(self) -> None:
        if "url" not in self.params:
            raise self.fail(None, "an http job needs a url")
        self.string("url")
        url = self.literal("url")
        if isinstance(url, str) and not url.startswith(("http://", "https://")):
            raise self.fail("url", f"must start with http:// or https://, not {_short(url, 60)}")
        method = self.literal("method")
        if method is not None:
            if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
                raise self.fail("method", f"must be one of {', '.join(HTTP_METHODS)}")
            self.params["method"] = method.upper()
        self.mapping("headers", scalars=True)
        self.mapping("params", scalars=True)
        self.string("body")
        if "json" in self.params and "body" in self.params:
            raise self.fail("body", "give json or body, not both")
        self.integers("expect", 100, 599)
        self.duration("timeout")
        self.boolean("follow_redirects")

    def _sleep(self) -> None:
        if "duration" not in self.params:
            raise self.fail(None, "a sleep job needs a duration")
        value = self.literal("duration")
        if value is not None:
            try:
                self.params["duration"] = seconds(value)
            except ValueError as err:
                raise self.fail("duration", str(err)) from None

    def _noop(self) -> None:
        pass

    def _fail(self) -> None:
        pass  # the run's rule (fail_params) covers it

    def _approval(self) -> None:
        self.duration("timeout")
        on_timeout = self.literal("on_timeout")
        if on_timeout is not None and on_timeout not in ON_TIMEOUT:
            raise self.fail("on_timeout", f"must be one of {', '.join(ON_TIMEOUT)}")
        if "on_timeout" in self.params and "timeout" not in self.params:
            raise self.fail("on_timeout", "needs a timeout")
        self.boolean("require_token")

    def _python(self) -> None:
        function = self.params.get("function")
        if not _is_expr(function):
            self.run_rule(python_function, {"function": function})


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
        raise _Invalid(path, _one_line(str(err))) from None
    except jinja2.TemplateError as err:
        first = (err.message or "invalid").splitlines()[0]
        raise _Invalid(path, f"bad expression in {_short(text)}: {first}") from None
    except RecursionError:
        raise _Invalid(path, f"bad expression in {_short(text)}: nested too deeply") from None
    allowed = ROOTS | names
    unknown = sorted(used - allowed)
    if unknown:
        raise _Invalid(
            path,
            f"unknown name {unknown[0]!r} in {_short(text)}{did_you_mean(unknown[0], allowed)} "
            f"(expressions here can read: {', '.join(sorted(allowed))})",
        )
    for root, key, dotted in _references(tree):
        if dotted and hasattr(dict, key):
            raise _Invalid(
                path,
                f"write {root}[{key!r}] in {_short(text)}: {root}.{key} would read a method of "
                "the mapping, not the value",
            )
        if root == "args" and key not in ctx.args:
            known = ", ".join(sorted(ctx.args)) or "none"
            raise _Invalid(
                path,
                f"unknown arg {key!r} in {_short(text)}{did_you_mean(key, ctx.args)} "
                f"(args: {known})",
            )
        if root == "jobs" and key not in ctx.jobs:
            hint = did_you_mean(key, ctx.jobs)
            raise _Invalid(path, f"unknown job {key!r} in {_short(text)}{hint}")
    for base, method in _uncalled_methods(tree, frozenset({"args", "jobs", "run"}) | names):
        raise _Invalid(
            path,
            f"{base}.{method} in {_short(text)} is a method, not data: "
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
        raise _Invalid(path, f"must be {what}")
    _check_expression(value, path, names, ctx)
    return value


def _positive(value: float | None, path: FieldPath) -> float | None:
    if value is not None and value <= 0:
        raise _Invalid(path, "must be more than 0s")
    return value


class _Compiler:
    def __init__(self) -> None:
        self.ctx = _Context()

    def runbook(self, data: Any, source: str) -> Action:
        if data is None:
            raise _Invalid((), "the document is empty: a runbook is a mapping with name and jobs")
        if not isinstance(data, dict):
            raise _Invalid(
                (), f"a runbook must be a mapping with name and jobs, not {_kind_of(data)}"
            )
        book = _validate(RunbookFormat, data, ())
        try:
            check_name("action", book.name)
        except ValueError as err:
            raise _Invalid(("name",), str(err)) from None
        args_model, static = self.args(book.args, book.name)
        if not book.jobs:
            raise _Invalid(("jobs",), "a runbook needs at least one job")
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
            )
        except (pydantic.ValidationError, ValueError) as err:
            raise self.plan_error(err) from None
        return Action.from_plan(plan, args_model=args_model, static=static, source=source)

    def plan_error(self, err: Exception) -> _Invalid:
        """A plan-level error at the job it names (the checks here should have caught it)."""
        if isinstance(err, pydantic.ValidationError):
            message = str(err.errors()[0]["msg"]).removeprefix("Value error, ")
        else:
            message = str(err)
        named = re.search(r"(?:job|group)(?: name)? '([^']+)'", message)
        path = self.ctx.jobs.get(named.group(1), ("jobs",)) if named else ("jobs",)
        return _Invalid(path, _one_line(message))

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
            raise _Invalid(
                where,
                f"arg name {_short(name, 60)} is invalid: use 1-64 letters, digits and '_', "
                "starting with a letter",
            )
        if hasattr(BaseModel, name) or name.startswith("model_"):
            raise _Invalid(where, f"arg name {name!r} is reserved: choose another name")
        if name in seen:
            raise _Invalid(
                where, f"arg {name!r} is declared twice (first at {format_path(seen[name])})"
            )
        seen[name] = path

    def arg_type(self, name: str, path: FieldPath) -> Any:
        if name not in ARG_TYPES:
            raise _Invalid(
                (*path, "type"),
                f"unknown arg type {_short(name, 60)}{did_you_mean(name, ARG_TYPES)} "
                f"(known: {', '.join(ARG_TYPES)})",
            )
        return ARG_TYPES[name]

    def static_value(self, arg: StaticArgFormat, path: FieldPath) -> Any:
        given = arg.model_fields_set & {"default", "value"}
        if len(given) == 2:
            raise _Invalid((*path, "value"), "give default or value, not both")
        if not given:
            raise _Invalid(path, "a static arg needs a value (default: or value:)")
        value = arg.value if "value" in given else arg.default
        if arg.type is None:
            return value
        if arg.type == "secret":
            raise _Invalid(
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
                raise _Invalid((*where, "name"), str(err)) from None
            if job.name in self.ctx.jobs:
                first = format_path(self.ctx.jobs[job.name])
                raise _Invalid(
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
            raise _Invalid(
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
            raise _Invalid(
                path, "has both run and jobs: a job either runs a job kind or is a group of jobs"
            )
        if job.run is None and job.jobs is None:
            raise _Invalid(path, "needs run (a job kind) or jobs (a group of jobs)")
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
                    raise _Invalid(
                        (*path, key),
                        f"a group cannot have {key}: give it to the jobs of the group",
                    )
            if not job.jobs:
                raise _Invalid((*path, "jobs"), "a group needs at least one job")
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
                raise _Invalid(where, f"job {dep!r} cannot run after itself")
            if dep in siblings:
                continue
            if dep in self.ctx.jobs:
                raise _Invalid(
                    where,
                    f"job {dep!r} is not in the same list (it is at "
                    f"{format_path(self.ctx.jobs[dep])}): after names jobs of the same list",
                )
            known = ", ".join(n for n in siblings if n != job.name) or "none"
            raise _Invalid(
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
            raise _Invalid(
                (*path, "as"), "must be a name: letters, digits and '_', not starting with a digit"
            )
        if each.as_ in ROOTS or each.as_ in _JINJA_WORDS:
            raise _Invalid((*path, "as"), f"{each.as_!r} is reserved: choose another name")
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
            raise _Invalid(
                (*path, "run"),
                f"unknown job kind {_short(kind, 60)}{did_you_mean(kind, JOB_KINDS)} "
                f"(known: {', '.join(JOB_KINDS)})",
            )
        if rollback and kind not in ACTIVITY_KINDS:
            raise _Invalid(
                (*path, "run"),
                f"a rollback cannot be of kind {kind!r} (use one of {', '.join(ACTIVITY_KINDS)})",
            )
        where = (*path, "with")
        _check_expressions(params, where, names, self.ctx)
        checked = _Params(kind, params, where).check()
        ref = None
        if kind == "python":
            ref = checked.pop("function")
        return CallSpec.model_validate({"kind": kind, "ref": ref, "with": checked})


# ------------------------------------------------------------------------------ loading


def runbook_version(text: str | bytes) -> str:
    """A runbook's version: the first 12 hex digits of the SHA-256 of its file's bytes."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    return hashlib.sha256(data).hexdigest()[:12]


def load_runbook_text(text: str | bytes, source: str = "<runbook>") -> Action:
    """The action defined by the YAML ``text``; ``source`` names it in errors (a file name).

    Raises :class:`SpecError` (one line, ``<source>:<line> <field path>: <message>``) and nothing
    else, whatever the input.
    """
    try:
        action = _load(text, source)
        action.version = runbook_version(text)
        return action
    except SpecError:
        raise
    except RecursionError:
        raise SpecError(f"{source}:1 document: the document is nested too deeply") from None
    except Exception as err:  # the loader's promise: a SpecError, whatever the input
        detail = _one_line(f"{type(err).__name__}: {err}")[:_MAX_TEXT]
        raise SpecError(f"{source}:1 document: internal error while loading: {detail}") from None


class RunbookTooLarge(SpecError):
    """A runbook file is over :data:`MAX_RUNBOOK_BYTES`."""


def _too_large(source: str, size: int | None = None) -> RunbookTooLarge:
    said = "over" if size is None else f"{size} bytes, over"
    return RunbookTooLarge(
        f"{source}: the runbook is too large ({said} the limit of {MAX_RUNBOOK_BYTES} bytes)"
    )


def _load(text: str | bytes, source: str) -> Action:
    size = len(text) if isinstance(text, bytes | bytearray) else len(text.encode(errors="replace"))
    if size > MAX_RUNBOOK_BYTES:
        raise _too_large(source, size)
    if isinstance(text, bytes | bytearray):
        raw = bytes(text)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            raise SpecError(
                f"{source}:{line} document: not UTF-8 text (byte {err.start})"
            ) from None
    builder = _Builder()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = None if node is None else builder.build(node, ())
        return _Compiler().runbook(data, source)
    except yaml.YAMLError as err:
        line, message = _yaml_error(err, text)
        raise SpecError(f"{source}:{line} document: {_one_line(message)}") from None
    except _Invalid as err:
        line = err.line or _line_of(builder.lines, err.path)
        message = _one_line(err.message)
        raise SpecError(f"{source}:{line} {format_path(err.path)}: {message}") from None


def load_runbook(path: str | Path) -> Action:
    """The action defined by the runbook file at ``path`` (its source is ``path`` as given)."""
    source = str(path)
    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_RUNBOOK_BYTES + 1)  # no more: a huge file is not read whole
    except OSError as err:
        raise SpecError(f"{source}: cannot read the runbook: {err.strerror or err}") from None
    if len(data) > MAX_RUNBOOK_BYTES:
        raise _too_large(source)
    return load_runbook_text(data, source)


def load_folder(path: str | Path) -> list[Action]:
    """The actions of every ``*.yaml`` and ``*.yml`` file in the folder, in file name order.

    A file over :data:`MAX_RUNBOOK_BYTES` is skipped, with an error logged (``sternway.runbooks``);
    any other problem is a :class:`SpecError`.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise SpecError(f"{folder}: not a folder of runbooks")
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    actions: list[Action] = []
    seen: dict[str, str] = {}
    for file in files:
        try:
            action = load_runbook(file)
        except RunbookTooLarge as err:
            logging.getLogger("sternway.runbooks").error("skipped: %s", err)
            continue
        if action.name in seen:
            raise SpecError(
                f"{file}: action {action.name!r} is also defined in {seen[action.name]}"
            )
        seen[action.name] = str(file)
        actions.append(action)
    return actions
