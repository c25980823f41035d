"""The activities of locks (workflows/_lock.py): ask a key's lock for it, and check which runs
a lock knows still run. Both use the worker's own client."""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributeKey, WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from sternway.workflows._lock import LockWorkflow, lock_id
from sternway.workflows._protocol import (
    LOCK_ACQUIRE,
    LOCK_INSPECT,
    LOCK_RELEASE,
    SEARCH_ATTRIBUTE_STATE,
    Handler,
)
from sternway.workflows.models import (
    LockHolder,
    LockRelease,
    LockRequest,
    LockState,
    RunPresence,
)

__all__ = ["acquire_lock", "inspect_runs", "release_locks", "run_presence"]

_STATE_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_STATE)


@activity.defn(name=LOCK_ACQUIRE)
async def acquire_lock(request: LockRequest) -> bool:
    """Take ``request.key`` if nobody holds or waits for it: start its lock with the run as the
    holder (True). Otherwise ask the running lock (signal-with-start, in case it has just
    ended) and return False: its answer comes as a signal to the run, so no workflow task waits
    on another's (a worker whose slots all held runs waiting for their locks would starve the
    locks that answer them)."""
    client = activity.client()
    queue = activity.info().task_queue
    holder = LockHolder(
        run_id=request.run_id,
        owner=request.owner,
        limit=request.limit,
        since=datetime.now(UTC),
    )
    try:
        await client.start_workflow(
            LockWorkflow.run,
            LockState(key=request.key, holders=[holder]),
            id=lock_id(request.key),
            task_queue=queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            static_summary=f"lock {request.key}",
        )
        return True
    except WorkflowAlreadyStartedError:
        pass
    await client.start_workflow(
        LockWorkflow.run,
        LockState(key=request.key),
        id=lock_id(request.key),
        task_queue=queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal=Handler.ACQUIRE,
        start_signal_args=[request],
        static_summary=f"lock {request.key}",
    )
    return False


@activity.defn(name=LOCK_RELEASE)
async def release_locks(release: LockRelease, keys: list[str]) -> None:
    """Give ``keys`` back (or leave their queues) for ``release.run_id``. A signal sent from
    here costs the run one call to the server inside its last workflow task; a signal from the
    workflow itself would cost a round trip and one more workflow task before the run can end.
    A lock that is gone (terminated by hand) has nothing left to give back."""
    client = activity.client()
    for key in keys:
        try:
            await client.get_workflow_handle(lock_id(key)).signal(Handler.RELEASE, release)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            activity.logger.warning("lock %s is gone: nothing to give back", key)


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
