"""The activities of locks (workflows/_lock.py): ask a key's lock for it, and check which runs
a lock knows still run. Both use the worker's own client."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributeKey, WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from sternway.workflows._lock import LockWorkflow, lock_id
from sternway.workflows._protocol import (
    LOCK_ACQUIRE,
    LOCK_INSPECT,
    SEARCH_ATTRIBUTE_STATE,
    Handler,
)
from sternway.workflows.models import LockRequest, LockState, RunPresence

__all__ = ["acquire_lock", "inspect_runs", "run_presence"]

_STATE_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_STATE)


@activity.defn(name=LOCK_ACQUIRE)
async def acquire_lock(request: LockRequest) -> None:
    """Ask the lock of ``request.key`` for it (signal-with-start: the lock starts if it is not
    running). Its answer comes as a signal to the run, so no workflow task waits on another:
    a worker whose slots all hold runs waiting for their locks would otherwise starve the locks.
    """
    await activity.client().start_workflow(
        LockWorkflow.run,
        LockState(key=request.key),
        id=lock_id(request.key),
        task_queue=activity.info().task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal=Handler.ACQUIRE,
        start_signal_args=[request],
        static_summary=f"lock {request.key}",
    )


async def run_presence(client: Client, run_id: str) -> RunPresence:
    """Whether ``run_id`` still runs; if not, how it ended."""
    try:
        found = await client.get_workflow_handle(run_id).describe()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        return RunPresence(run_id=run_id, running=False, closed_as="GONE")
    status = found.status
    running = status in (None, WorkflowExecutionStatus.RUNNING)
    return RunPresence(
        run_id=run_id,
        running=running,
        state=found.typed_search_attributes.get(_STATE_KEY),
        closed_as=None if running or status is None else status.name,
    )


@activity.defn(name=LOCK_INSPECT)
async def inspect_runs(run_ids: list[str]) -> list[RunPresence]:
    """Whether each run still runs; if not, how it ended."""
    client = activity.client()
    return [await run_presence(client, run_id) for run_id in run_ids]
