"""The inputs of a run's commands (stop, suspend, resume, approve, reject and the chunk signals).

An update's invalid input refuses the update and changes nothing; a signal cannot be refused, so
an invalid one is logged and ignored (raising would fail the workflow task). Pure helpers, unit
tested without a server (tests/test_interp_units.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ConfigDict, ValidationError

    from sternway.workflows._protocol import ErrorType

__all__ = ["NoInput", "command_input", "ignored", "refuse", "signal_input", "update_input"]


class NoInput(BaseModel):
    """The input of ``resume``: any JSON object (or none), which says nothing so far."""

    model_config = ConfigDict(extra="allow")


_Command = TypeVar("_Command", bound=BaseModel)


def command_input(
    command: str, model: type[_Command], args: Sequence[Any], default: _Command | None
) -> _Command | str:
    """The one input of a command as ``model`` (``default`` when there is none, or it is
    null), or a one-line reason why the input is not one."""
    if len(args) > 1:
        return f"{command} takes one JSON object as its input, not {len(args)} inputs"
    value = args[0] if args else None
    if value is None:
        if default is not None:
            return default.model_copy()
        fields = ", ".join(name for name, f in model.model_fields.items() if f.is_required())
        return f"{command} takes a JSON object with {fields}, and got no input"
    try:
        return model.model_validate(value)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{command}: invalid input{' at ' + where if where else ''}: {first['msg']}"


def update_input(
    command: str, model: type[_Command], args: Sequence[Any], default: _Command | None = None
) -> _Command:
    """The update's input as ``model``; an invalid one refuses the update (nothing changes)."""
    found = command_input(command, model, args, default)
    if isinstance(found, str):
        raise ApplicationError(found, type=ErrorType.COMMAND_REFUSED)
    return found


def signal_input(
    command: str, model: type[_Command], args: Sequence[Any], default: _Command | None = None
) -> _Command | None:
    """The signal's input as ``model``; None, logged, when it is not one (signals cannot be
    refused, and raising would fail the workflow task)."""
    found = command_input(command, model, args, default)
    if isinstance(found, str):
        workflow.logger.warning("%s signal ignored: %s", command, found)
        return None
    return found


def refuse(refusal: str | None) -> None:
    """Validators refuse a command by raising; nothing changes in the run."""
    if refusal:
        raise ApplicationError(refusal, type=ErrorType.COMMAND_REFUSED)


def ignored(command: str, refusal: str | None) -> bool:
    """Signals cannot be refused: an invalid one is logged and ignored."""
    if refusal:
        workflow.logger.warning("%s signal ignored: %s", command, refusal)
    return refusal is not None
