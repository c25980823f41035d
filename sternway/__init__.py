"""Sternway: a durable runbook and saga engine on Temporal.

Define actions in Python with :class:`Action`, :class:`Job` and :class:`Retry`, register them in a
:class:`Registry`, run a worker (``worker.create_worker``) and :func:`submit` runs.

Names are imported on first use, so that a CLI command that only talks to Temporal (``sternway
status``) does not load the job runner and its dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from activities import JobContext, RollbackContext
    from sternway._client import RunHandle, submit
    from workflows._actions import Action, Job, Registry, Retry
    from workflows.errors import (
        ArgsError,
        ClientError,
        CommandRefused,
        JobError,
        JobRejected,
        RunNotFound,
        ServerUnreachable,
        SpecError,
        SternwayError,
    )
    from workflows.models import JobState, Reason, RunState, RunStatus

_WHERE = {
    "JobContext": "activities",
    "RollbackContext": "activities",
    "RunHandle": "sternway._client",
    "submit": "sternway._client",
    "Action": "workflows._actions",
    "Job": "workflows._actions",
    "Registry": "workflows._actions",
    "Retry": "workflows._actions",
    "ArgsError": "workflows.errors",
    "ClientError": "workflows.errors",
    "CommandRefused": "workflows.errors",
    "JobError": "workflows.errors",
    "JobRejected": "workflows.errors",
    "RunNotFound": "workflows.errors",
    "ServerUnreachable": "workflows.errors",
    "SpecError": "workflows.errors",
    "SternwayError": "workflows.errors",
    "JobState": "workflows.models",
    "Reason": "workflows.models",
    "RunState": "workflows.models",
    "RunStatus": "workflows.models",
}

__all__ = [
    "Action",
    "ArgsError",
    "ClientError",
    "CommandRefused",
    "Job",
    "JobContext",
    "JobError",
    "JobRejected",
    "JobState",
    "Reason",
    "Registry",
    "Retry",
    "RollbackContext",
    "RunHandle",
    "RunNotFound",
    "RunState",
    "RunStatus",
    "ServerUnreachable",
    "SpecError",
    "SternwayError",
    "submit",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'sternway' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
