"""A run's side of its locks (workflows/_lock.py): take its keys in order before the first job,
wait in the queue, and give them back at the end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from sternway.workflows._lock import lock_id
    from sternway.workflows._protocol import LOCK_ACQUIRE, ErrorType, Handler, Reason
    from sternway.workflows.models import (
        ErrorInfo,
        LockGrant,
        LockRelease,
        LockReply,
        LockRequest,
        LockSpec,
        LockStatus,
    )

__all__ = ["RunLocks"]

_ACQUIRE_RETRY = RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=5))
HELD, WAITING, RELEASED, KEPT, SKIPPED = "held", "waiting", "released", "kept", "skipped"


class RunLocks:
    """The keys of one run: ``status`` is what its status shows, in the order they are taken."""

    def __init__(self, run_id: str, owner: str, specs: list[LockSpec]) -> None:
        self.run_id = run_id
        self.owner = owner
        self.specs = specs
        self.status = [LockStatus(key=s.key, limit=s.limit) for s in specs]
        self._granted: dict[str, LockGrant] = {}

    def granted(self, grant: LockGrant) -> None:
        """A lock's signal: the key is the run's now (ignored unless the run waits for it)."""
        for entry in self.status:
            if entry.key == grant.key and entry.state == WAITING:
                self._granted[grant.key] = grant

    def waiting_detail(self) -> str | None:
        """``waiting for lock K held by RUN`` while the run waits, else None."""
        for entry in self.status:
            if entry.state == WAITING:
                return f"waiting for lock {entry.key} held by {', '.join(entry.holders) or '?'}"
        return None

    async def take(
        self, stopping: Callable[[], bool], show: Callable[[], None]
    ) -> tuple[ErrorInfo, bool] | None:
        """Take every key, in order. None when all are held (or a stop came: the caller sees
        it); otherwise the error the run ends with, and whether it ends STOPPED (``skip``)
        rather than FAILED."""
        for spec, entry in zip(self.specs, self.status, strict=True):
            if stopping():
                return None
            try:
                reply: LockReply = await workflow.execute_local_activity(
                    LOCK_ACQUIRE,
                    LockRequest(
                        key=spec.key,
                        run_id=self.run_id,
                        owner=self.owner,
                        limit=spec.limit,
                        mode=spec.mode,
                    ),
                    result_type=LockReply,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(
                        maximum_attempts=5, maximum_interval=timedelta(seconds=5)
                    ),
                    summary=f"lock {spec.key}",
                )
            except (ActivityError, ApplicationError) as err:
                cause = err.cause if isinstance(err, ActivityError) else err
                if isinstance(cause, CancelledError):
                    raise asyncio.CancelledError() from None  # a Temporal cancel of the run
                message = getattr(cause, "message", None) or str(cause or err)
                return ErrorInfo(type=ErrorType.LOCK_REFUSED, message=message), False
            entry.holders = reply.holders
            if reply.granted:
                entry.state = HELD
                continue
            if not reply.queued:
                entry.state = SKIPPED
                held_by = ", ".join(reply.holders) or "another run"
                return (
                    ErrorInfo(
                        reason=Reason.LOCKED,
                        type=ErrorType.LOCKED,
                        message=f"lock {spec.key} is held by {held_by} (mode: skip)",
                    ),
                    True,
                )
            entry.state = WAITING
            show()
            try:
                await workflow.wait_condition(
                    lambda key=spec.key: key in self._granted or stopping(),  # type: ignore[misc]
                    timeout=spec.timeout,
                )
            except TimeoutError:
                return (
                    ErrorInfo(
                        reason=Reason.TIMEOUT,
                        type=ErrorType.LOCK_TIMEOUT,
                        message=f"waited longer than {spec.timeout:g}s for lock {spec.key} "
                        f"held by {', '.join(entry.holders) or 'another run'}",
                    ),
                    False,
                )
            grant = self._granted.get(spec.key)
            if grant is None:
                return None  # stopped while waiting: release() leaves the queue
            entry.state, entry.note, entry.holders = HELD, grant.note, []
            show()
        return None

    async def release(self, keep: bool) -> None:
        """Give back every key the run holds or waits for; ``keep`` (ROLLBACK_FAILED) keeps the
        held ones until ``sternway unlock``."""
        for entry in reversed(self.status):
            if entry.state == HELD and keep:
                entry.state = KEPT
                continue
            if entry.state not in (HELD, WAITING):
                continue
            entry.state = RELEASED
            handle = workflow.get_external_workflow_handle(lock_id(entry.key))
            try:
                await handle.signal(Handler.RELEASE, LockRelease(run_id=self.run_id))
            except workflow.NondeterminismError:
                raise
            except Exception as err:
                # The lock was terminated by hand: there is nothing left to give back.
                workflow.logger.warning("lock %s: cannot release: %s", entry.key, err)
