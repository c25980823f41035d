"""What a job function is handed: :class:`JobContext` (execute) and :class:`RollbackContext`.

Kept apart from the activities that build them (``_jobs``) so that the job kinds (``_kinds``),
which the activities call, can use the contexts without importing the activities back.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
from collections.abc import Callable
from typing import Any

import structlog
from temporalio import activity

from sternway.workflows._actions import secrets_of
from sternway.workflows.errors import JobError
from sternway.workflows.models import (
    AttemptReport,
    ErrorInfo,
    clip_masked,
    json_refusal,
    mask_fragments,
    mask_secrets,
)

__all__ = ["HEARTBEAT_EVERY", "BaseContext", "JobContext", "RollbackContext", "call_job_function"]

_log = structlog.get_logger("sternway.job")

# Heartbeats carry the live detail line and the rollback data. The first one waits this long so
# that short jobs never heartbeat at all.
HEARTBEAT_EVERY = 1.0


class BaseContext:
    """What job and rollback contexts share: identity, args, heartbeats and the log."""

    _phase = "execute"

    def __init__(self, *, run_id: str, action: str, job: str, attempt: int, args: Any) -> None:
        self.run_id = run_id
        self.action = action
        self.job = job
        self.attempt = attempt
        self.args = args
        self.detail: str | None = None
        self._report = AttemptReport()
        self._loop = asyncio.get_running_loop()
        # The run's secret arg values, once the args are parsed: what Sternway reports about
        # the attempt (detail, output tails, error messages, its own log lines) never shows them.
        self._secrets: list[str] = []

    @functools.cached_property
    def log(self) -> Any:
        """A structlog logger bound to the run, action, job and attempt.

        Bound on first use: most attempts never log, and binding costs as much as the rest of
        setting up the context."""
        return _log.bind(run_id=self.run_id, action=self.action, job=self.job, attempt=self.attempt)

    def mask(self, text: str) -> str:
        """``text`` with the run's secret arg values replaced by ``**********``."""
        masked: str = mask_secrets(text, self._secrets)
        return masked

    def clip(
        self,
        text: str,
        limit: int | None = None,
        *,
        keep_end: bool = False,
        cut_start: bool = False,
        cut_end: bool = False,
    ) -> str:
        """``text`` masked and cut to ``limit`` characters, no piece of a secret left at the cut
        (see :func:`workflows.models.clip_masked`): how every shortened text is made."""
        return clip_masked(
            text, self._secrets, limit, keep_end=keep_end, cut_start=cut_start, cut_end=cut_end
        )

    def unpiece(self, text: str, *, start: bool = False, end: bool = False) -> str:
        """``text``, cut at its ``start``/``end``, with a piece of a secret left there masked
        (whole secrets are kept: the text is data a later job may use)."""
        return mask_fragments(text, self._secrets, start=start, end=end)

    def _set_args(self, args: Any, secrets: list[str]) -> None:
        """The parsed args, and the secrets the workflow named plus those the model marks."""
        self.args = args
        found = set(secrets) | set(secrets_of(args))
        self._secrets = sorted(found, key=lambda text: (-len(text), text))

    @property
    def idempotency_key(self) -> str:
        """Stable for one attempt of one job of one run, also when Temporal re-delivers it."""
        return f"{self.run_id}/{self.job}/{self._phase}/{self.attempt}"

    def report(self, detail: str) -> None:
        """Set the job's live detail line (shown by ``sternway status``) and heartbeat it."""
        self.detail = detail
        self.heartbeat()

    def heartbeat(self) -> None:
        """Tell Temporal the job is alive (and learn of a cancel); safe from sync job threads."""
        details = {
            "detail": None if self.detail is None else self.mask(self.detail),
            "rollback_data": self._report.rollback_data,
            "has_rollback_data": self._report.has_rollback_data,
        }
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            activity.heartbeat(details)
        else:  # a sync job function in its thread: the SDK heartbeats from the event loop
            self._loop.call_soon_threadsafe(activity.heartbeat, details)

    def set_exit(
        self, exit_code: int | None, stdout_tail: str | None, stderr_tail: str | None
    ) -> None:
        """Record a process's exit code and output tails in this attempt's log entry."""
        self._report.exit_code = exit_code
        self._report.stdout_tail = None if stdout_tail is None else self.clip(stdout_tail)
        self._report.stderr_tail = None if stderr_tail is None else self.clip(stderr_tail)


class JobContext(BaseContext):
    """What a job's execute function (and its hooks) receives.

    ``args`` are the run's args (the action's model), ``deps`` the outputs of the jobs in
    ``after``, ``input`` the job's own parameters (after ``pre`` hooks), ``rollback_data`` what an
    earlier attempt saved.
    """

    def __init__(
        self,
        *,
        run_id: str,
        action: str,
        job: str,
        attempt: int,
        args: Any,
        deps: dict[str, Any],
        input: dict[str, Any],
        rollback_data: Any,
        has_rollback_data: bool,
    ) -> None:
        super().__init__(run_id=run_id, action=action, job=job, attempt=attempt, args=args)
        self.deps = deps
        self.input = input
        self._report.rollback_data = rollback_data
        self._report.has_rollback_data = has_rollback_data

    @property
    def rollback_data(self) -> Any:
        """The rollback data saved so far by this job (by this or an earlier attempt)."""
        return self._report.rollback_data

    def save_rollback_data(self, data: Any) -> None:
        """Keep ``data`` for this job's rollback, even if execute then fails or the worker dies."""
        bad = json_refusal(data, "rollback data")  # json.dumps would take what payloads cannot
        if bad:
            raise JobError(bad, non_retryable=True)
        try:
            json.dumps(data)
        except (TypeError, ValueError) as err:
            raise JobError(f"rollback data must be JSON: {err}", non_retryable=True) from None
        self._report.rollback_data = data
        self._report.has_rollback_data = True
        self.heartbeat()


class RollbackContext(BaseContext):
    """What a rollback function receives: the job's ``args``, ``output`` (if it completed),
    ``error`` (if it failed), ``rollback_data`` (if execute saved any) and ``input`` (the
    rollback's own ``with`` parameters, for built-in kinds)."""

    _phase = "rollback"

    def __init__(
        self,
        *,
        run_id: str,
        action: str,
        job: str,
        attempt: int,
        args: Any,
        output: Any,
        completed: bool,
        error: ErrorInfo | None,
        rollback_data: Any,
        has_rollback_data: bool,
        input: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(run_id=run_id, action=action, job=job, attempt=attempt, args=args)
        self.input = input or {}
        self.output = output
        self.completed = completed
        self.error = error
        self.rollback_data = rollback_data
        self.has_rollback_data = has_rollback_data


async def call_job_function(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a job function, sync or async; sync ones run in a thread and cannot be interrupted."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    result = await asyncio.to_thread(fn, *args)
    if inspect.isawaitable(result):
        return await result
    return result
