"""Locks: one run at a time per target (DESIGN.md, "Locks").

A key is one workflow of type ``sternway.lock`` (id ``sternway/lock/<key>``), so a lock is
Temporal state: it survives worker and server restarts and serves any number of workers. A run
takes a free key by starting its lock with itself as the holder, from a local activity
(``sternway.lock.acquire``): one call to the server. When the lock already runs, the activity
asks it with the ``acquire`` signal (signal-with-start); the lock answers with the
``sternway.lock_reply`` signal (granted, queued or refused), and signals a queued run again when
its turn comes (FIFO). No workflow task waits on another's: a worker whose slots all held runs
waiting for answers would starve the locks that give them. A run gives a key back, or leaves its
queue, with the ``release`` signal, sent by a local activity (``sternway.lock.release``) in its
last workflow task.

``limit`` holders at once make a key a semaphore. A key is re-entrant for a family of runs: a
request whose ``owner`` already holds it is granted at once. A lock with waiters checks, with
``sternway.lock.inspect``, that its holders still run: a holder that was terminated (or ended
without releasing) loses the key, which is logged in the lock's history; one that ended
ROLLBACK_FAILED keeps it until ``sternway unlock KEY --reason`` (the ``unlock`` update). A lock
nobody holds or waits for ends at once; a busy one continues as new to stay small.

A run takes its keys one at a time in the order of the keys (the resolved plan sorts them), so
two runs never each hold a key the other waits for: no deadlock, whatever the runbooks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from sternway.workflows._commands import refuse, signal_input, update_input
    from sternway.workflows._expr import ExpressionError, render
    from sternway.workflows._failures import text_refusal
    from sternway.workflows._protocol import (
        LOCK_ID_PREFIX,
        LOCK_INSPECT,
        LOCK_WORKFLOW,
        ErrorType,
        Handler,
    )
    from sternway.workflows.errors import ArgsError
    from sternway.workflows.models import (
        LOCK_KEY,
        MAX_LOCK_KEY_CHARS,
        LockHolder,
        LockRelease,
        LockReply,
        LockRequest,
        LockSpec,
        LockState,
        RunPresence,
        RunState,
        UnlockCommand,
        holds_secret,
    )

__all__ = ["LockWorkflow", "lock_id", "resolve_locks"]

# A lock with waiters checks its holders this often at first, then less often while nothing
# changes (a ROLLBACK_FAILED holder may keep its key for days).
_CHECK_FIRST = 2.0
_CHECK_MAX = 300.0
# A lock continues as new past this many events; its history keeps this many entries.
_CONTINUE_AT = 2_000
_KEPT_HISTORY = 50


def lock_id(key: str) -> str:
    """The workflow id of the lock of ``key``."""
    return LOCK_ID_PREFIX + key


def resolve_locks(
    specs: Sequence[LockSpec], args: Mapping[str, Any], secrets: Sequence[str]
) -> list[LockSpec]:
    """The plan's locks with their keys rendered from ``args``, sorted by key: the order every
    run takes its keys in. Raises :class:`ArgsError` for a key that is not valid."""
    resolved: dict[str, LockSpec] = {}
    for i, spec in enumerate(specs):
        where = f"locks[{i}].key"
        try:
            key = render(spec.key, {"args": dict(args)})
        except ExpressionError as err:
            raise ArgsError(f"{where}: {err}") from None
        if isinstance(key, bool) or not isinstance(key, str | int | float):
            raise ArgsError(f"{where}: the key must be text, not {type(key).__name__}")
        key = str(key)
        if holds_secret(key, secrets):
            raise ArgsError(f"{where}: the key would show a secret arg: build it from others")
        if not LOCK_KEY.match(key):
            raise ArgsError(
                f"{where}: {key[:60]!r} is not a valid lock key: use 1-{MAX_LOCK_KEY_CHARS} "
                "letters, digits and _ . : / @ = + -"
            )
        if key in resolved:
            raise ArgsError(f"{where}: the run would take lock {key!r} twice")
        resolved[key] = spec.model_copy(update={"key": key})
    return [resolved[key] for key in sorted(resolved)]


@workflow.defn(name=LOCK_WORKFLOW)
class LockWorkflow:
    """The lock of one key: its holders, its queue and its history."""

    @workflow.init
    def __init__(self, state: LockState) -> None:
        self._state = state
        self._tick = 0
        # Answers still to be signalled to their runs.
        self._to_tell: list[tuple[str, LockReply]] = []

    @workflow.run
    async def run(self, state: LockState) -> None:
        """Serve the key until nobody holds or waits for it."""
        check = _CHECK_FIRST
        if workflow.info().continued_run_id is None:
            for holder in self._state.holders:  # taken by starting the lock
                self._log(f"granted to {holder.run_id}")
        while True:
            tick = self._tick
            await self._tell()
            if self._tick != tick:
                continue
            if not self._state.holders and not self._state.waiters:
                # Nobody holds or waits: end now, so that the next run takes the key by
                # starting the lock (one call) rather than by asking it (two workflow tasks).
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._state.holders and not self._state.waiters and not self._to_tell:
                    return
                continue
            elif self._state.waiters:
                if await self._changes(tick, check):
                    check = _CHECK_FIRST
                else:
                    await self._inspect()
                    check = min(check * 2, _CHECK_MAX)
            else:
                await self._changes(tick, None)
            info = workflow.info()
            if info.get_current_history_length() > _CONTINUE_AT or (
                info.is_continue_as_new_suggested()
            ):
                await self._tell()
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._state)

    async def _changes(self, tick: int, seconds: float | None) -> bool:
        """Whether something changed within ``seconds`` (None: waits for a change)."""
        try:
            await workflow.wait_condition(lambda: self._tick != tick, timeout=seconds)
        except TimeoutError:
            return False
        return True

    # ----------------------------------------------------------------------------- the queue

    def _log(self, text: str) -> None:
        workflow.logger.info("lock %s: %s", self._state.key, text)
        stamp = workflow.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        self._state.history = [*self._state.history, f"{stamp} {text}"][-_KEPT_HISTORY:]
        holders = ", ".join(h.run_id for h in self._state.holders) or "nobody"
        workflow.set_current_details(
            f"**{self._state.key}** held by {holders} · {len(self._state.waiters)} waiting"
        )
        self._tick += 1

    def _fits(self, request: LockHolder | LockRequest) -> bool:
        owners = {h.owner for h in self._state.holders}
        return request.owner in owners or len(owners) < request.limit

    def _promote(self, note: str | None = None) -> None:
        """Grant the key to the waiters at the head of the queue, while they fit."""
        while self._state.waiters and self._fits(self._state.waiters[0]):
            waiter = self._state.waiters.pop(0)
            waiter.since = workflow.now()
            self._state.holders.append(waiter)
            self._to_tell.append(
                (waiter.run_id, LockReply(key=self._state.key, granted=True, note=note))
            )
            self._log(f"granted to {waiter.run_id} (was waiting)")

    def _drop(self, run_id: str) -> bool:
        """Take ``run_id`` out of the holders and the queue; whether it was in either."""
        before = len(self._state.holders) + len(self._state.waiters)
        self._state.holders = [h for h in self._state.holders if h.run_id != run_id]
        self._state.waiters = [w for w in self._state.waiters if w.run_id != run_id]
        return len(self._state.holders) + len(self._state.waiters) != before

    async def _tell(self) -> None:
        """Signal each answer to its run; a granted run that no longer runs gives the key back
        at once, and a queued one leaves the queue."""
        while self._to_tell:
            run_id, reply = self._to_tell.pop(0)
            known = [h.run_id for h in (*self._state.holders, *self._state.waiters)]
            if (reply.granted or reply.queued) and run_id not in known:
                continue  # it left before it was told
            handle = workflow.get_external_workflow_handle(run_id)
            try:
                await handle.signal(Handler.LOCK_REPLY, reply)
            except workflow.NondeterminismError:
                raise
            except Exception as err:
                if self._drop(run_id):
                    self._log(f"{run_id} no longer runs ({err}): it leaves the lock")
                    self._promote()

    async def _presence(self, run_ids: list[str]) -> dict[str, RunPresence]:
        found: list[RunPresence] = await workflow.execute_local_activity(
            LOCK_INSPECT,
            run_ids,
            result_type=list[RunPresence],
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3),
            summary=f"{self._state.key} › check that holders and waiters still run",
        )
        return {p.run_id: p for p in found}

    async def _inspect(self) -> None:
        """Free the key from holders that ended without releasing it (terminated, timed out by
        Temporal), except those that ended ROLLBACK_FAILED; drop waiters that no longer run."""
        runs = [h.run_id for h in (*self._state.holders, *self._state.waiters)]
        try:
            found = await self._presence(runs)
        except workflow.NondeterminismError:
            raise
        except Exception as err:
            workflow.logger.warning("lock %s: cannot check its runs: %s", self._state.key, err)
            return
        notes = []
        for run_id in runs:
            seen = found.get(run_id)
            if seen is None or seen.running or seen.state == RunState.ROLLBACK_FAILED:
                continue
            self._drop(run_id)
            how = (seen.closed_as or "gone").lower()
            notes.append(f"{run_id} was {how} without releasing the key: freed")
            self._log(notes[-1])
        if notes:
            self._promote("; ".join(notes))

    # ------------------------------------------------------------------------------- handlers

    @workflow.signal(name=Handler.ACQUIRE)
    def acquire(self, *args: Any) -> None:
        """Grant the key now, queue the run, or (mode ``skip``) refuse it; the answer goes to
        the run as a signal. Idempotent per run: a repeated request gets the same answer."""
        request = signal_input(Handler.ACQUIRE, LockRequest, args)
        if request is None or text_refusal("run id", request.run_id):
            return
        self._to_tell.append((request.run_id, self._answer(request)))
        self._tick += 1

    def _answer(self, request: LockRequest) -> LockReply:
        state, key = self._state, self._state.key
        holders = [h.run_id for h in state.holders]
        if request.run_id in holders:
            return LockReply(key=key, granted=True)
        for position, waiter in enumerate(state.waiters, 1):
            if waiter.run_id == request.run_id:
                return LockReply(key=key, queued=True, holders=holders, position=position)
        entry = LockHolder(
            run_id=request.run_id,
            owner=request.owner,
            limit=request.limit,
            since=workflow.now(),
        )
        reentrant = any(h.owner == request.owner for h in state.holders)
        if reentrant or (not state.waiters and self._fits(request)):
            state.holders.append(entry)
            self._log(f"granted to {request.run_id}")
            return LockReply(key=key, granted=True)
        if request.mode == "skip":
            self._log(f"refused to {request.run_id} (busy, mode skip)")
            return LockReply(key=key, holders=holders)
        state.waiters.append(entry)
        self._log(f"{request.run_id} waits (position {len(state.waiters)})")
        return LockReply(key=key, queued=True, holders=holders, position=len(state.waiters))

    @workflow.signal(name=Handler.RELEASE)
    def release(self, *args: Any) -> None:
        """The run no longer holds the key, or no longer waits for it."""
        cmd = signal_input(Handler.RELEASE, LockRelease, args)
        if cmd is not None and self._drop(cmd.run_id):
            self._log(f"released by {cmd.run_id}")
            self._promote()

    @workflow.update(name=Handler.UNLOCK)
    async def unlock(self, *args: Any) -> str:
        """Free the key from the runs that ended holding it (ROLLBACK_FAILED ones); a holder
        that still runs is refused: stop it instead."""
        cmd = update_input(Handler.UNLOCK, UnlockCommand, args)
        holders = [h.run_id for h in self._state.holders]
        if not holders:
            raise ApplicationError(
                f"lock {self._state.key!r} is not held", type=ErrorType.LOCK_REFUSED
            )
        found = await self._presence(holders)
        freed = [r for r in holders if r in found and not found[r].running]
        if not freed:
            raise ApplicationError(
                f"lock {self._state.key!r} is held by {', '.join(holders)}, which still "
                "runs: stop it instead",
                type=ErrorType.LOCK_REFUSED,
            )
        for run_id in freed:
            self._drop(run_id)
        by = f" by {cmd.by}" if cmd.by else ""
        note = f"unlocked{by}: {cmd.reason} (was held by {', '.join(freed)})"
        self._log(note)
        self._promote(note)
        return note

    @unlock.validator
    def _validate_unlock(self, *args: Any) -> None:
        cmd = update_input(Handler.UNLOCK, UnlockCommand, args)
        if not cmd.reason.strip():
            refuse("unlock needs a reason: it is recorded in the lock's history")
        refuse(text_refusal("unlock reason", cmd.reason) or text_refusal("by", cmd.by or ""))

    @workflow.query(name=Handler.LOCK_STATE)
    def state(self) -> LockState:
        """The holders, the queue in order and the recent history."""
        return self._state
