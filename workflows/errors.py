"""Sternway's exceptions.

One base class, with structured subclasses::

    SternwayError
    ├── SpecError            an action definition is invalid (names, cycles, unknown jobs)
    ├── ArgsError            a run's args do not fit the action's args
    ├── JobError             raised by a job to fail its attempt (retryable unless said otherwise)
    │   └── JobRejected      the job's input was rejected (by a pre hook): never retried
    └── ClientError          a request about a run could not be carried out
        ├── RunNotFound      no run has that id
        ├── CommandRefused   the run's state does not allow the command
        └── ServerUnreachable  Temporal could not be reached

At the activity boundary a ``JobError`` becomes a Temporal ``ApplicationError`` whose ``type`` is
the error's ``type`` and which is non-retryable when the error says so.
"""

from __future__ import annotations

from sternway.workflows._protocol import ErrorType, Reason

__all__ = [
    "ArgsError",
    "ClientError",
    "CommandRefused",
    "JobError",
    "JobRejected",
    "RunNotFound",
    "ServerUnreachable",
    "SpecError",
    "SternwayError",
]


class SternwayError(Exception):
    """Base class of every error Sternway raises on purpose."""


class SpecError(SternwayError):
    """An action definition is invalid."""


class ArgsError(SternwayError):
    """A run's args do not fit its action."""


class JobError(SternwayError):
    """Raised inside a job to fail the current attempt with a clear message.

    ``type`` names the error for retry policies (``non_retryable_error_types``) and status;
    ``non_retryable=True`` ends the job's retries at once; ``reason`` is a :class:`Reason`
    (``ERROR`` by default). A reason that is not one is refused where the error is made: the
    attempt then fails with that ``ValueError``, its rollback data kept like any failure's.
    """

    def __init__(
        self,
        message: str,
        *,
        type: str | None = None,
        non_retryable: bool = False,
        reason: Reason = Reason.ERROR,
    ):
        try:
            checked = Reason(reason)
        except ValueError:
            known = ", ".join(repr(r.value) for r in Reason)
            raise ValueError(f"JobError reason must be one of {known}, not {reason!r}") from None
        super().__init__(message)
        self.message = message
        self.type = type or self.__class__.__name__
        self.non_retryable = non_retryable
        self.reason = checked


class JobRejected(JobError):
    """The job's input was rejected: never retried, reported with reason ``rejected``."""

    def __init__(self, message: str, *, type: str | None = None):
        super().__init__(
            message, type=type or ErrorType.JOB_REJECTED, non_retryable=True, reason=Reason.REJECTED
        )


class ClientError(SternwayError):
    """A request about a run could not be carried out."""


class RunNotFound(ClientError):
    """No run has the given id."""


class CommandRefused(ClientError):
    """The run's current state does not allow the command; nothing changed."""


class ServerUnreachable(ClientError):
    """Temporal could not be reached."""
