"""How the interpreter turns what went wrong into a job's error.

Pure helpers, unit tested without a server (tests/test_interp_units.py): the classification of
a failed attempt (:func:`classify`), the last line of defence that turns any exception met while
a job is interpreted into that job's error (:func:`error_of`), and the size budget checks of what
a command would carry (:func:`encoded_size`).
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    TimeoutType,
)
from temporalio.exceptions import (
    TimeoutError as TemporalTimeoutError,
)

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from sternway.workflows._expr import ExpressionError
    from sternway.workflows._protocol import ErrorType
    from sternway.workflows.models import MAX_COMMENT_CHARS, AttemptReport, ErrorInfo, Reason

__all__ = [
    "Failure",
    "JobFailure",
    "classify",
    "encoded_size",
    "error_of",
    "text_refusal",
    "too_large",
]


class JobFailure(Exception):
    """Raised by the interpreter where a job cannot go on (its input is too large or cannot be
    serialised): the job fails with ``info``, and its scope halts as for any failure."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info


def error_of(err: Exception) -> ErrorInfo:
    """The error a job (or the run) fails with when the interpreter meets ``err``.

    The last line of defence: whatever is raised while a job is interpreted (rendering,
    serialising its input, bookkeeping) fails that job, never the workflow task, which would
    fail again at every retry and leave the run wedged with nothing rolled back.
    """
    if isinstance(err, JobFailure):
        return err.info
    if isinstance(err, ExpressionError):
        return ErrorInfo(type=ErrorType.EXPRESSION_ERROR, message=str(err))
    return ErrorInfo(type=ErrorType.INTERNAL_ERROR, message=f"{type(err).__name__}: {err}"[:2000])


def too_large(what: str, size: int, budget: int) -> JobFailure:
    return JobFailure(
        ErrorInfo(
            type=ErrorType.TOO_LARGE,
            message=f"{what} is {size} bytes, more than the budget of {budget} bytes "
            "(docs/semantics.md, Size budget): keep large data outside the run",
        )
    )


def encoded_size(value: Any, what: str, budget: int) -> int:
    """The size of ``value`` as the payload Temporal would get; :class:`JobFailure` when it
    cannot be serialised or is over ``budget``. Checked here, before a command carries it, as
    an oversized or unserialisable payload fails the workflow task instead."""
    try:
        payload = workflow.payload_converter().to_payload(value)
    except Exception as err:
        raise JobFailure(
            ErrorInfo(
                type=ErrorType.NOT_SERIALIZABLE,
                message=f"{what} cannot be serialised: {err}"[:2000],
            )
        ) from None
    size = len(payload.data)
    if size > budget:
        raise too_large(what, size, budget)
    return size


def text_refusal(what: str, text: str) -> str | None:
    """Why a comment or reason is refused: it is over its budget."""
    if len(text) > MAX_COMMENT_CHARS:
        return f"the {what} is {len(text)} characters, more than the limit of {MAX_COMMENT_CHARS}"
    return None


class Failure:
    """A failed attempt: its error, its report, and how it may be retried."""

    def __init__(
        self, error: ErrorInfo, report: AttemptReport, retryable: bool, infra: bool = False
    ) -> None:
        self.error = error
        self.report = report
        self.retryable = retryable
        # The worker died or shut down under the attempt: not the job's fault, so it does not
        # count against the job's retry policy.
        self.infra = infra


def classify(err: ActivityError) -> Failure:
    """Reason, type and message of a failed attempt, its report, and whether it may be retried."""
    cause = err.cause
    if isinstance(cause, TemporalTimeoutError):
        report = AttemptReport(reason=Reason.TIMEOUT)
        if cause.last_heartbeat_details and isinstance(cause.last_heartbeat_details[0], dict):
            beat = cause.last_heartbeat_details[0]
            report.rollback_data = beat.get("rollback_data")
            report.has_rollback_data = bool(beat.get("has_rollback_data"))
        kind = cause.type.name.lower().replace("_", "-") if cause.type else "activity"
        info = ErrorInfo(reason=Reason.TIMEOUT, type=ErrorType.TIMEOUT, message=f"{kind} timeout")
        return Failure(info, report, True, infra=cause.type == TimeoutType.HEARTBEAT)
    if isinstance(cause, CancelledError):
        info = ErrorInfo(reason=Reason.CANCELLED, type=ErrorType.CANCELLED, message="cancelled")
        return Failure(info, AttemptReport(reason=Reason.CANCELLED), False)
    if isinstance(cause, ApplicationError):
        report = AttemptReport()
        if cause.details and isinstance(cause.details[0], dict):
            try:
                report = AttemptReport.model_validate(cause.details[0])
            except ValidationError:
                report = AttemptReport()
        info = ErrorInfo(
            reason=report.reason, type=cause.type or "ApplicationError", message=cause.message
        )
        return Failure(
            info, report, not cause.non_retryable, infra=cause.type == ErrorType.WORKER_SHUTDOWN
        )
    message = str(cause) if cause is not None else str(err)
    return Failure(ErrorInfo(type=type(cause).__name__, message=message), AttemptReport(), True)
