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
    from sternway._client import RunHandle, submit
    from sternway.activities import JobContext, RollbackContext
    from sternway.workflows._actions import Action, Job, Registry, Retry
    from sternway.workflows.errors import (
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
    from sternway.workflows.models import JobState, Reason, RunState, RunStatus

_WHERE = {
    "JobContext": "sternway.activities",
    "RollbackContext": "sternway.activities",
    "RunHandle": "sternway._client",
    "submit": "sternway._client",
    "Action": "sternway.workflows._actions",
    "Job": "sternway.workflows._actions",
    "Registry": "sternway.workflows._actions",
    "Retry": "sternway.workflows._actions",
    "ArgsError": "sternway.workflows.errors",
    "ClientError": "sternway.workflows.errors",
    "CommandRefused": "sternway.workflows.errors",
    "JobError": "sternway.workflows.errors",
    "JobRejected": "sternway.workflows.errors",
    "RunNotFound": "sternway.workflows.errors",
    "ServerUnreachable": "sternway.workflows.errors",
    "SpecError": "sternway.workflows.errors",
    "SternwayError": "sternway.workflows.errors",
    "JobState": "sternway.workflows.models",
    "Reason": "sternway.workflows.models",
    "RunState": "sternway.workflows.models",
    "RunStatus": "sternway.workflows.models",
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
