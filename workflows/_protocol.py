"""The names Sternway's parts agree on over Temporal: one home for each.

The interpreter, the activities, the client, the CLI and the worker meet only through Temporal,
by name: the workflow and activity types, the handler names of the commands and the status
query, the search attribute keys, the reasons and the error types of failures. Each is defined
here once and imported wherever it is used; none is spelled out anywhere else in the package
(tests/test_protocol.py checks the error types). The tests spell the names out on purpose: they
check the contract operators and ``temporal`` CLI users rely on, which a renamed constant would
otherwise change silently.

Kept free of third-party imports: the workflow sandbox imports it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "ACTIVITY_EXECUTE",
    "ACTIVITY_RESOLVE",
    "ACTIVITY_ROLLBACK",
    "CATALOG",
    "CHUNK_WORKFLOW",
    "DEFAULT_TASK_QUEUE",
    "LOCK_ACQUIRE",
    "LOCK_ID_PREFIX",
    "LOCK_INSPECT",
    "LOCK_RELEASE",
    "LOCK_WORKFLOW",
    "SANDBOX_MODES",
    "SEARCH_ATTRIBUTE_REQUESTOR",
    "SEARCH_ATTRIBUTE_STATE",
    "TERMINAL_RUN_STATES",
    "ErrorType",
    "Handler",
    "JobState",
    "Reason",
    "RunState",
]

# ---------------------------------------------------------------- workflow and activity types

ACTIVITY_RESOLVE: Final = "sternway.resolve"
ACTIVITY_EXECUTE: Final = "sternway.execute"
ACTIVITY_ROLLBACK: Final = "sternway.rollback"
CHUNK_WORKFLOW: Final = "sternway.each"
"""The workflow type of fan-out chunks: child runs that carry a slice of a large ``each``."""
CATALOG: Final = "sternway.catalog"
"""The name of the catalog workflow and of its local activity."""
LOCK_WORKFLOW: Final = "sternway.lock"
"""The workflow type of locks: one workflow per key holds its holders and waiters."""
LOCK_ID_PREFIX: Final = "sternway/lock/"
"""A lock's workflow id is this and its key (run ids cannot hold ``/``, so none clashes)."""
LOCK_ACQUIRE: Final = "sternway.lock.acquire"
"""The local activity a run asks a lock for its key with (signal-with-start)."""
LOCK_INSPECT: Final = "sternway.lock.inspect"
"""The activity a lock checks whether its holders and waiters still run with."""
LOCK_RELEASE: Final = "sternway.lock.release"
"""The local activity a run gives its keys back with, in its last workflow task."""

# ----------------------------------------------------------------------- search attributes

SEARCH_ATTRIBUTE_STATE: Final = "SternwayState"
SEARCH_ATTRIBUTE_REQUESTOR: Final = "SternwayRequestor"


class Handler:
    """Handler names of a run: each command is both an update (answered) and a signal (for
    ``temporal workflow signal``); ``status`` is the query."""

    STOP: Final = "stop"
    SUSPEND: Final = "suspend"
    RESUME: Final = "resume"
    APPROVE: Final = "approve"
    REJECT: Final = "reject"
    STATUS: Final = "status"
    CHUNK_DONE: Final = "sternway.chunk_done"
    """Signal from a fan-out chunk to its parent run: the chunk's summary."""
    FINISH: Final = "sternway.finish"
    """Signal from a parent run to its fan-out chunks: end (with or without rollback)."""
    CHILD_DONE: Final = "sternway.child_done"
    """Signal from a child run (``run: action``) to its parent: its jobs completed."""
    LOCK_REPLY: Final = "sternway.lock_reply"
    """Signal from a lock to a run: granted, queued or refused; later, granted."""
    ACQUIRE: Final = "acquire"
    """Signal to a lock: a run asks for the key (sent with signal-with-start)."""
    RELEASE: Final = "release"
    """Signal to a lock: the run no longer holds (or waits for) the key."""
    UNLOCK: Final = "unlock"
    """Update of a lock: free the key from runs that ended holding it (``sternway unlock``)."""
    LOCK_STATE: Final = "state"
    """Query of a lock: its holders and waiters."""


class Reason(StrEnum):
    """Why a job or run failed (the Fn call reasons)."""

    TIMEOUT = "timeout"
    BAD_EXIT = "bad_exit"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    LOCKED = "locked"
    ERROR = "error"


class ErrorType:
    """The ``type`` of the failures Sternway itself raises (``ApplicationError.type`` and a
    status's ``error.type``), which retry policies (``non_retryable``) and operators match."""

    ERROR: Final = "Error"
    """A failure with no more precise type."""
    COMMAND_REFUSED: Final = "CommandRefused"
    """The run's state does not allow the command; nothing changed."""
    WORKER_SHUTDOWN: Final = "WorkerShutdown"
    """The worker stopped during the attempt; retried elsewhere, not counted against the job."""
    CANCELLED: Final = "Cancelled"
    STOPPED: Final = "Stopped"
    TIMEOUT: Final = "Timeout"
    RUN_TIMEOUT: Final = "RunTimeout"
    APPROVAL_TIMEOUT: Final = "ApprovalTimeout"
    SUSPENDED_TOO_LONG: Final = "SuspendedTooLong"
    REJECTED: Final = "Rejected"
    JOB_REJECTED: Final = "JobRejected"
    ROLLBACK_FAILED: Final = "RollbackFailed"
    HISTORY_LIMIT: Final = "HistoryLimit"
    TOO_LARGE: Final = "TooLarge"
    OUTPUT_TOO_LARGE: Final = "OutputTooLarge"
    INVALID_OUTPUT: Final = "InvalidOutput"
    NOT_SERIALIZABLE: Final = "NotSerializable"
    EXPRESSION_ERROR: Final = "ExpressionError"
    INTERNAL_ERROR: Final = "InternalError"
    TRUNCATED: Final = "Truncated"
    BAD_EXIT: Final = "BadExit"
    BAD_COMMAND: Final = "BadCommand"
    HTTP_ERROR: Final = "HttpError"
    OUTSIDE_ROOT: Final = "OutsideRoot"
    CHILD_FAILED: Final = "ChildFailed"
    """The child run of an ``action`` job did not complete (it undid its own jobs)."""
    LOCKED: Final = "Locked"
    """A key of the run was busy and its mode is ``skip``: the run ended before any job."""
    LOCK_TIMEOUT: Final = "LockTimeout"
    """A key of the run stayed busy longer than its ``timeout``."""
    LOCK_REFUSED: Final = "LockRefused"
    """A lock refused a request or an ``unlock`` (e.g. the holder still runs)."""


# ------------------------------------------------------------------------- states and queues
# Here rather than in models.py so that the CLI's quick commands (status, list) need no pydantic.

DEFAULT_TASK_QUEUE: Final = "sternway"
# How workers run the interpreter: with no sandbox (the default) or in Temporal's strict one.
SANDBOX_MODES: Final = ("off", "strict")


class RunState(StrEnum):
    """The state of a run, as shown in status and in the ``SternwayState`` search attribute."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    ROLLING_BACK = "ROLLING_BACK"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"


TERMINAL_RUN_STATES = frozenset(
    {RunState.COMPLETED, RunState.FAILED, RunState.STOPPED, RunState.ROLLBACK_FAILED}
)


class JobState(StrEnum):
    """The state of one job in a run."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELLED = "CANCELLED"
    ROLLING_BACK = "ROLLING_BACK"
    ROLLED_BACK = "ROLLED_BACK"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"
