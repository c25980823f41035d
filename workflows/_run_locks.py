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
    from sternway.workflows._protocol import LOCK_ACQUIRE, LOCK_RELEASE, ErrorType, Reason
    from sternway.workflows.models import (
        ErrorInfo,
        LockRelease,
        LockReply,
        LockRequest,
        LockSpec,
        LockStatus,
    )

__all__ = ["RunLocks"]

_LOCK_CALL_RETRY = RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=5))
HELD, WAITING, RELEASED, KEPT, SKIPPED = "held", "waiting", "released", "kept", "skipped"


class RunLocks:
    """The keys of one run: ``status`` is what its status shows, in the order they are taken."""

    def __init__(self, run_id: str, owner: str, specs: list[LockSpec]) -> None:
        self.run_id = run_id
        self.owner = owner
        self.specs = specs
        self.status = [LockStatus(key=s.key, limit=s.limit) for s in specs]
        self._replies: dict[str, LockReply] = {}

    def replied(self, reply: LockReply) -> None:
        """A lock's answer (ignored unless the run asked it and has no grant from it yet)."""
        for entry in self.status:
            if entry.key == reply.key and entry.state == WAITING:
                known = self._replies.get(reply.key)
                if known is None or not known.granted:
                    self._replies[reply.key] = reply

    def waiting_detail(self) -> str | None:
        """``waiting for lock K held by RUN`` while the run waits, else None."""
        for entry in self.status:
            if entry.state == WAITING:
                held = f" held by {', '.join(entry.holders)}" if entry.holders else ""
                return f"waiting for lock {entry.key}{held}"
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
            # Asked from here on: release() gives the key back, or leaves the queue, whatever
            # happens next.
            entry.state = WAITING
            try:
                taken = await workflow.execute_local_activity(
                    LOCK_ACQUIRE,
                    LockRequest(
                        key=spec.key,
                        run_id=self.run_id,
                        owner=self.owner,
                        limit=spec.limit,
                        mode=spec.mode,
                    ),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=_LOCK_CALL_RETRY,
                    result_type=bool,
                    summary=f"lock {spec.key}",
                )
            except (ActivityError, ApplicationError) as err:
                cause = err.cause if isinstance(err, ActivityError) else err
                if isinstance(cause, CancelledError):
                    raise asyncio.CancelledError() from None  # a Temporal cancel of the run
                message = getattr(cause, "message", None) or str(cause or err)
                return ErrorInfo(type=ErrorType.LOCK_REFUSED, message=message), False
            if taken:
                entry.state = HELD
                continue
            show()
            asked = workflow.now()
            try:
                await workflow.wait_condition(
                    lambda key=spec.key: self._answered(key, stopping),  # type: ignore[misc]
                    timeout=spec.timeout,
                )
                reply = self._replies.get(spec.key)
                if reply is not None and reply.queued and not reply.granted:
                    entry.holders = reply.holders
                    show()
                    waited = (workflow.now() - asked).total_seconds()
                    await workflow.wait_condition(
                        lambda key=spec.key: self._granted(key) or stopping(),  # type: ignore[misc]
                        timeout=None if spec.timeout is None else max(spec.timeout - waited, 0.001),
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
            reply = self._replies.get(spec.key)
            if reply is None or (stopping() and not reply.granted):
                return None  # stopped while waiting: release() leaves the queue
            if not reply.granted:
                entry.state, entry.holders = SKIPPED, reply.holders
                held_by = ", ".join(reply.holders) or "another run"
                return (
                    ErrorInfo(
                        reason=Reason.LOCKED,
                        type=ErrorType.LOCKED,
                        message=f"lock {spec.key} is held by {held_by} (mode: skip)",
                    ),
                    True,
                )
            entry.state, entry.note, entry.holders = HELD, reply.note, []
            show()
        return None

    def _answered(self, key: str, stopping: Callable[[], bool]) -> bool:
        return key in self._replies or stopping()

    def _granted(self, key: str) -> bool:
        reply = self._replies.get(key)
        return reply is not None and reply.granted

    async def release(self, keep: bool) -> None:
        """Give back every key the run holds or asked for; ``keep`` (ROLLBACK_FAILED) keeps the
        held ones until ``sternway unlock``."""
        keys = []
        for entry in reversed(self.status):
            if entry.state == HELD and keep:
                entry.state = KEPT
            elif entry.state in (HELD, WAITING):
                entry.state = RELEASED
                keys.append(entry.key)
        if not keys:
            return
        try:
            await workflow.execute_local_activity(
                LOCK_RELEASE,
                args=[LockRelease(run_id=self.run_id), keys],
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=_LOCK_CALL_RETRY,
                summary=f"release {', '.join(keys)}",
            )
        except (ActivityError, ApplicationError) as err:
            # A lock that cannot be told frees the key when it next checks its holders (as soon
            # as a run waits for it).
            workflow.logger.warning("cannot release %s: %s", ", ".join(keys), err)
