"""Typing a run's args from the command line: ``--arg key=value`` pairs and ``--args-file``.

Each value is typed by the action's args schema (an ``integer`` arg takes ``3``, a ``list`` takes
``a,b`` or JSON), an args file (JSON or YAML) becomes plain JSON data, and the whole is checked by
the action and against the size budget before anything starts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sternway.workflows.errors import ArgsError

if TYPE_CHECKING:
    from sternway.workflows._actions import Action

__all__ = ["parse_args", "schema_format", "schema_type"]


def schema_type(schema: dict[str, Any]) -> str:
    if "type" in schema:
        return str(schema["type"])
    for option in schema.get("anyOf", []):
        if option.get("type") not in (None, "null"):
            return str(option["type"])
    return "string"


def schema_format(schema: dict[str, Any]) -> str | None:
    """``duration``, ``password`` (a secret) or another JSON schema format, if any."""
    for option in [schema, *schema.get("anyOf", [])]:
        if isinstance(option.get("format"), str):
            return str(option["format"])
    return None


def _typed(key: str, value: str, schema: dict[str, Any]) -> Any:
    kind = schema_type(schema)
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
        if kind == "boolean":
            lowered = value.lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
            raise ValueError(value)
        if kind == "array":
            if value.lstrip().startswith("["):
                parsed = json.loads(value)
                if not isinstance(parsed, list):
                    raise ValueError(value)
                return parsed
            return [item.strip() for item in value.split(",") if item.strip()]
        if kind == "object":
            parsed = json.loads(value)
            if not isinstance(parsed, dict):
                raise ValueError(value)
            return parsed
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deeply to decode
        article = "an" if kind[0] in "aeiou" else "a"
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise ArgsError(f"--arg {key}={shown!r}: {key} takes {article} {kind}") from None
    return value


def _read_args_file(path: str) -> dict[str, Any]:
    """The JSON or YAML object of an args file, as plain JSON data.

    YAML can say more than JSON: dates become ISO text (what JSON would have held), while
    binary data, sets and non-text keys are refused, so that what is submitted is exactly what
    the run's input will hold.
    """
    import yaml  # only args files need it: keep it off the CLI's start-up path

    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ArgsError(f"cannot read args file {path}: {err}") from None
    except UnicodeDecodeError:
        raise ArgsError(f"args file {path} is not UTF-8 text") from None
    except RecursionError:
        raise ArgsError(f"args file {path} is nested too deeply") from None
    if not isinstance(loaded, dict):
        raise ArgsError(f"args file {path} must hold a JSON or YAML object")
    try:
        plain: dict[str, Any] = _json_data(loaded, "")
    except RecursionError:
        raise ArgsError(f"args file {path} is nested too deeply") from None
    except ValueError as err:
        raise ArgsError(f"args file {path}: {err}") from None
    return plain


def _json_data(value: Any, where: str) -> Any:
    """``value`` (loaded from YAML) as JSON data; ValueError naming ``where`` if it is not."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    if isinstance(value, list):
        return [_json_data(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        plain: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"key {key!r}{' in ' + where if where else ''} is not text")
            plain[key] = _json_data(item, f"{where}.{key}" if where else key)
        return plain
    kind = "binary data" if isinstance(value, bytes) else f"a {type(value).__name__}"
    raise ValueError(f"{where or 'the value'} is {kind}, which JSON cannot hold")


def parse_args(action: Action, pairs: Sequence[str], args_file: str | None) -> dict[str, Any]:
    """Args from ``--args-file`` (JSON or YAML) and ``--arg k=v`` pairs, typed by the action."""
    properties: dict[str, Any] = action.plan.args_schema.get("properties", {})
    args: dict[str, Any] = {}
    if args_file:
        args.update(_read_args_file(args_file))
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            pair.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 reach argv as lone surrogates
            # The key only: the value may be a secret.
            raise ArgsError(f"--arg {key[:60]!r}...: not valid UTF-8 text") from None
        if not sep or not key:
            raise ArgsError(f"--arg {pair!r} is not of the form key=value")
        if key in action.static:
            raise ArgsError(f"arg {key!r} of {action.name!r} is static: it cannot be set")
        if key not in properties:
            known = ", ".join(properties) or "none"
            raise ArgsError(f"unknown arg {key!r} for action {action.name!r} (args: {known})")
        args[key] = _typed(key, value, properties[key])
    unknown = [key for key in args if key not in properties]
    if unknown and unknown[0] in action.static:
        raise ArgsError(f"arg {unknown[0]!r} of {action.name!r} is static: it cannot be set")
    if unknown:
        known = ", ".join(properties) or "none"
        raise ArgsError(f"unknown arg {unknown[0]!r} for action {action.name!r} (args: {known})")
    action.resolve(args)  # the args and what they decide before a run starts (lock keys)
    from sternway.workflows.models import args_refusal  # pydantic: off `status`'s start-up

    refusal = args_refusal(args)  # over the size budget: refused here, nothing starts
    if refusal:
        raise ArgsError(refusal)
    return args
