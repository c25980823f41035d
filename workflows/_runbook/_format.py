"""The runbook format: pydantic models of the YAML (unknown fields are errors), arg types and
arg rules."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, get_args

import pydantic
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
)
from pydantic_core import core_schema, to_jsonable_python

from sternway.workflows._runbook._messages import FieldPath, Invalid, kind_of, short
from sternway.workflows._suggest import did_you_mean
from sternway.workflows.models import (
    MAX_ATTEMPTS,
    MAX_GROUP_ATTEMPTS,
    MAX_LOCK_LIMIT,
    parse_duration,
)

# ---------------------------------------------------------------------- the YAML format


MAX_DURATION = 3650 * 86400.0  # ten years: far below what Temporal's timers can hold


def seconds(value: Any) -> float:
    """A duration in seconds (``parse_duration``), finite and at most ten years."""
    result = parse_duration(value)
    if not math.isfinite(result) or result > MAX_DURATION:
        raise ValueError(f"not a duration: {short(value, 60)} (at most 3650d)")
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


class LockFormat(_Format):
    """One entry of ``locks``: a key the run holds from before its first job until it ends."""

    key: str
    mode: Literal["wait", "skip"] = "wait"
    limit: int = Field(default=1, ge=1, le=MAX_LOCK_LIMIT)
    timeout: DurationField | None = None


class RunbookFormat(_Format):
    """A whole runbook file."""

    name: str
    description: str = ""
    args: ArgsFormat = Field(default_factory=ArgsFormat)
    jobs: list[JobFormat]
    timeout: DurationField | None = None
    max_suspended: DurationField | None = None
    locks: list[LockFormat] = Field(default_factory=list)


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
        return f"{_TYPE_MESSAGES[kind]}, not {kind_of(error.get('input'))}"
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
    """``value`` as the format model, or :class:`Invalid` at the first problem in the file."""
    try:
        return model.model_validate(value)
    except pydantic.ValidationError as err:
        errors = err.errors()
        first = errors[0]
        raise Invalid(
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
        raise Invalid(
            path, f"{short(value, 60)} does not fit type {type_name}: {why[:1].lower()}{why[1:]}"
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
    """``tp`` with the arg's declared rules, or :class:`Invalid` at a rule that is wrong."""
    given = [name for name in _RULE_NAMES if getattr(arg, name) is not None]
    if not given:
        return tp
    allowed = _RULES_FOR.get(type_name, frozenset())
    for name in given:
        if name not in allowed:
            fits = ", ".join(n for n in _RULE_NAMES if n in allowed) or "none"
            raise Invalid(
                (*path, name),
                f"{name} does not apply to an arg of type {type_name} (its rules: {fits})",
            )
    item = str if type_name == "list[str]" else tp
    if arg.pattern is not None:
        try:
            re.compile(arg.pattern)
        except (re.error, OverflowError, RecursionError, ValueError) as err:
            shown = short(arg.pattern, 80)
            raise Invalid((*path, "pattern"), f"invalid regex {shown}: {err}") from None
    enum: tuple[Any, ...] | None = None
    if arg.enum is not None:
        if not arg.enum:
            raise Invalid((*path, "enum"), "enum needs at least one value")
        enum = tuple(
            to_jsonable_python(_fit(item, value, type_name, (*path, "enum", i)))
            for i, value in enumerate(arg.enum)
        )
    bounds: dict[str, int | float] = {}
    for name in ("min", "max"):
        value = getattr(arg, name)
        if value is not None:
            if isinstance(value, str) and type_name != "duration":
                raise Invalid((*path, name), f"{name} must be a number, not a string")
            bounds[name] = _fit(tp, value, type_name, (*path, name))
    if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
        raise Invalid((*path, "max"), "max is less than min")
    lengths = (arg.min_length, arg.max_length)
    if lengths[0] is not None and lengths[1] is not None and lengths[0] > lengths[1]:
        raise Invalid((*path, "max_length"), "max_length is less than min_length")
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
