"""Sternway: a durable runbook and saga engine on Temporal.

Define actions in Python with :class:`Action`, :class:`Job` and :class:`Retry`, register them in a
:class:`Registry`, run a worker (``worker.create_worker``), :func:`connect` to Temporal and
:func:`submit` runs.

Names are imported on first use, so that a CLI command that only talks to Temporal (``sternway
status``) does not load the job runner and its dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# One table drives the facade: ``__all__``, the lazy ``__getattr__`` and ``__dir__`` all read
# _EXPORTS. The imports under TYPE_CHECKING say the same to type checkers, which cannot read a
# table (``as`` re-exports them explicitly); tests/test_facade.py checks that both agree.
if TYPE_CHECKING:
    from sternway._client import RunHandle as RunHandle
    from sternway._client import submit as submit
    from sternway._connect import connect as connect
    from sternway._connect import wait_for_server as wait_for_server
    from sternway.activities import JobContext as JobContext
    from sternway.activities import RollbackContext as RollbackContext
    from sternway.workflows._actions import Action as Action
    from sternway.workflows._actions import Job as Job
    from sternway.workflows._actions import Registry as Registry
    from sternway.workflows._actions import Retry as Retry
    from sternway.workflows._actions import job_function as job_function
    from sternway.workflows.errors import ArgsError as ArgsError
    from sternway.workflows.errors import ClientError as ClientError
    from sternway.workflows.errors import CommandRefused as CommandRefused
    from sternway.workflows.errors import JobError as JobError
    from sternway.workflows.errors import JobRejected as JobRejected
    from sternway.workflows.errors import RunNotFound as RunNotFound
    from sternway.workflows.errors import ServerUnreachable as ServerUnreachable
    from sternway.workflows.errors import SpecError as SpecError
    from sternway.workflows.errors import SternwayError as SternwayError
    from sternway.workflows.models import JobState as JobState
    from sternway.workflows.models import Reason as Reason
    from sternway.workflows.models import RunState as RunState
    from sternway.workflows.models import RunStatus as RunStatus

_EXPORTS: dict[str, tuple[str, ...]] = {
    "sternway._client": ("RunHandle", "submit"),
    "sternway._connect": ("connect", "wait_for_server"),
    "sternway.activities": ("JobContext", "RollbackContext"),
    "sternway.workflows._actions": ("Action", "Job", "Registry", "Retry", "job_function"),
    "sternway.workflows.errors": (
        "ArgsError",
        "ClientError",
        "CommandRefused",
        "JobError",
        "JobRejected",
        "RunNotFound",
        "ServerUnreachable",
        "SpecError",
        "SternwayError",
    ),
    "sternway.workflows.models": ("JobState", "Reason", "RunState", "RunStatus"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'sternway' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
