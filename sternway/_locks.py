"""Locks from a client: every held or awaited key, and ``unlock`` (workflows/_lock.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from sternway.workflows._lock import lock_id
from sternway.workflows._protocol import LOCK_ID_PREFIX, LOCK_WORKFLOW, Handler
from sternway.workflows.errors import ArgsError, CommandRefused, RunNotFound
from sternway.workflows.models import LOCK_KEY, LockState, UnlockCommand

__all__ = ["check_lock_key", "list_locks", "unlock"]

# A lock whose task queue has no worker cannot answer: `locks` says so instead of hanging.
_QUERY_TIMEOUT = timedelta(seconds=5)
# How `locks` marks such a lock: the last line of its history says why its state is unknown.
_UNKNOWN = "state unknown: "


def check_lock_key(key: str) -> str:
    """A lock key as runs render them; raises :class:`ArgsError` otherwise."""
    if not LOCK_KEY.match(key):
        raise ArgsError(
            f"lock key {key[:60]!r} is invalid: use 1-200 letters, digits and _ . : / @ = + -"
        )
    return key


async def list_locks(client: Client, limit: int = 1000) -> list[LockState]:
    """Every key a run holds or waits for, by key; each with its holders and its queue."""
    ids = [
        w.id
        async for w in client.list_workflows(
            f"WorkflowType = '{LOCK_WORKFLOW}' AND ExecutionStatus = 'Running'", limit=limit
        )
    ]

    async def state(workflow_id: str) -> LockState | None:
        try:
            found: LockState = await client.get_workflow_handle(workflow_id).query(
                Handler.LOCK_STATE, result_type=LockState, rpc_timeout=_QUERY_TIMEOUT
            )
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None  # it ended since it was listed
            # No worker of its task queue answers: the lock is there, its holders unknown.
            key = workflow_id.removeprefix(LOCK_ID_PREFIX)
            return LockState(key=key, history=[_UNKNOWN + err.message])
        return found

    states = await asyncio.gather(*(state(i) for i in ids))
    shown = [s for s in states if s is not None and (s.holders or s.waiters or _unknown(s))]
    return sorted(shown, key=lambda s: s.key)


def _unknown(state: LockState) -> bool:
    return bool(state.history) and state.history[-1].startswith(_UNKNOWN)


async def unlock(client: Client, key: str, reason: str, by: str | None = None) -> str:
    """Free ``key`` from runs that ended holding it (ROLLBACK_FAILED); returns the note the lock
    records. :class:`RunNotFound` when no run holds or waits for it, :class:`CommandRefused`
    when its holder still runs."""
    check_lock_key(key)
    if not reason.strip():
        raise ArgsError("unlock needs --reason: it is recorded in the lock's history")
    handle = client.get_workflow_handle(lock_id(key))
    try:
        note: str = await handle.execute_update(
            Handler.UNLOCK, UnlockCommand(reason=reason, by=by), result_type=str
        )
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        raise CommandRefused(
            cause.message if isinstance(cause, ApplicationError) else str(cause or err)
        ) from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise RunNotFound(f"no run holds or waits for lock {key!r}") from None
        raise
    return note
