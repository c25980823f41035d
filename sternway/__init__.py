"""Sternway: a durable runbook and saga engine on Temporal.

Define actions in Python with :class:`Action`, :class:`Job` and :class:`Retry`, register them in a
:class:`Registry`, run a worker (``worker.create_worker``) and :func:`submit` runs.
"""

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
