"""Locks on a real dev server: one run at a time per key, semaphores, atomic multi-key without
deadlock, skip and timeout, keys kept by a ROLLBACK_FAILED run until ``sternway unlock``, a
stopped waiter leaving the queue and a terminated holder's key freed (DESIGN.md, "Locks")."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from sternway import RunHandle, submit
from sternway.worker import create_worker, load_registry
from sternway.workflows._protocol import Handler
from sternway.workflows.models import RunState, RunStatus
from tests.cli import cli_env, sternway
from tests.helpers import wait_for, workflow_task_failures
from tests.lock_actions import intervals, most_at_once

REGISTRY = load_registry(modules=["tests.lock_actions"])

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def client(dev_env: WorkflowEnvironment, task_queue: str) -> AsyncIterator[Client]:
    """A dev-server client with a worker of the lock actions on the test's queue."""
    worker: Worker = create_worker(dev_env.client, REGISTRY, task_queue=task_queue)
    async with worker:
        yield dev_env.client


def _key() -> str:
    return uuid.uuid4().hex[:10]


async def _submit(
    client: Client, task_queue: str, action: str, log: Path, **args: Any
) -> RunHandle:
    return await submit(client, action, {"log": str(log), **args}, task_queue=task_queue)


def _lock(status: RunStatus, key: str) -> Any:
    """The run's lock on ``key``; KeyError (which wait_for waits past) until it shows."""
    for lock in status.locks:
        if lock.key == key:
            return lock
    raise KeyError(key)


def _queued(status: RunStatus, key: str) -> bool:
    """The run waits in the queue of ``key`` and knows who holds it."""
    lock = _lock(status, key)
    return bool(lock.state == "waiting" and lock.holders)


async def test_a_second_run_on_the_key_waits_until_the_first_ends_then_runs(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    key, log = _key(), tmp_path / "spans.log"
    first = await _submit(client, task_queue, "lock-one", log, key=key, hold=15.0)
    await wait_for(first, lambda s: s.state == RunState.RUNNING)
    second = await _submit(client, task_queue, "lock-one", log, key=key, hold=0.1)
    waiting = await wait_for(second, lambda s: _queued(s, f"t/{key}"))
    assert waiting.state == RunState.PENDING and waiting.progress.done == 0
    assert _lock(waiting, f"t/{key}").holders == [first.run_id]
    # A run on another key is not held up by either.
    other = await _submit(client, task_queue, "lock-one", log, key=_key(), hold=0.1)
    assert (await other.wait()).state == RunState.COMPLETED
    assert (await first.status()).state == RunState.RUNNING
    # The CLI shows the waiting detail, and `locks` the holder and the queue.
    env = cli_env(client.service_client.config.target_host, task_queue)
    shown = await sternway(env, "status", second.run_id)
    assert shown.code == 0 and f"lock t/{key}: waiting, held by {first.run_id}" in shown.out
    listed = (await sternway(env, "locks", "--json")).json()["locks"]
    mine = next(lock for lock in listed if lock["key"] == f"t/{key}")
    assert [h["run_id"] for h in mine["holders"]] == [first.run_id]
    assert [w["run_id"] for w in mine["waiters"]] == [second.run_id]
    table = await sternway(env, "locks")
    assert table.code == 0 and f"t/{key}" in table.out and second.run_id in table.out

    assert (await first.wait()).state == RunState.COMPLETED
    done = await second.wait()
    assert done.state == RunState.COMPLETED
    assert _lock(done, f"t/{key}").state == "released"
    spans = intervals(str(log))
    assert spans[first.run_id][1] <= spans[second.run_id][0]
    assert spans[other.run_id][0] < spans[first.run_id][1]  # it overlapped the first
    for handle in (first, second, other):
        assert await workflow_task_failures(client, handle.run_id) == []
    # A free key is taken by starting its lock: the uncontended run got no answer by signal
    # and sent none; the waiter was answered twice (queued, then granted).
    assert await _signals(client, other.run_id) == (0, 0)
    assert await _signals(client, second.run_id) == (2, 0)
    # Nobody holds or waits any more: the lock has ended.
    lock = client.get_workflow_handle(f"sternway/lock/t/{key}")
    assert await _eventually(lambda: _closed(lock))


async def _signals(client: Client, run_id: str) -> tuple[int, int]:
    """Signals a run received, and signals it sent itself, by its history."""
    received = sent = 0
    async for event in client.get_workflow_handle(run_id).fetch_history_events():
        received += event.HasField("workflow_execution_signaled_event_attributes")
        sent += event.HasField("signal_external_workflow_execution_initiated_event_attributes")
    return received, sent


async def _closed(handle: Any) -> bool:
    return (await handle.describe()).status != WorkflowExecutionStatus.RUNNING


async def _eventually(check: Any, seconds: float = 10.0) -> bool:
    for _ in range(int(seconds / 0.1)):
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_limit_2_key_never_has_three_holders(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    key, log = _key(), tmp_path / "spans.log"
    handles = [
        await _submit(client, task_queue, "lock-sem", log, key=key, hold=1.0) for _ in range(5)
    ]
    finals = await asyncio.gather(*(h.wait() for h in handles))
    assert [s.state for s in finals] == [RunState.COMPLETED] * 5
    spans = intervals(str(log))
    assert most_at_once(spans) == 2, spans


async def test_two_runs_taking_two_keys_in_opposite_orders_never_deadlock(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    log = tmp_path / "spans.log"
    handles = []
    for _ in range(50):
        x, y = _key(), _key()
        handles.append(await _submit(client, task_queue, "lock-two", log, key=x, other=y))
        handles.append(await _submit(client, task_queue, "lock-two", log, key=y, other=x))
    finals = await asyncio.wait_for(asyncio.gather(*(h.wait() for h in handles)), 180)
    assert [s.state for s in finals] == [RunState.COMPLETED] * 100
    spans = intervals(str(log))
    for a, b in zip(handles[::2], handles[1::2], strict=True):
        first, second = sorted((spans[a.run_id], spans[b.run_id]))
        assert first[1] <= second[0], "two runs held the same keys at once"


async def test_mode_skip_stops_at_once_and_a_lock_timeout_fails(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    key, log = _key(), tmp_path / "spans.log"
    holder = await _submit(client, task_queue, "lock-one", log, key=key, hold=3.0)
    await wait_for(holder, lambda s: s.state == RunState.RUNNING)
    skipped = await (await _submit(client, task_queue, "lock-skip", log, key=key)).wait()
    assert skipped.state == RunState.STOPPED
    assert skipped.error is not None and skipped.error.reason == "locked"
    assert holder.run_id in skipped.error.message
    assert skipped.jobs[0].state == "PENDING" and skipped.jobs[0].attempts == 0
    timed_out = await (await _submit(client, task_queue, "lock-timeout", log, key=key)).wait()
    assert timed_out.state == RunState.FAILED
    assert timed_out.error is not None and timed_out.error.reason == "timeout"
    assert "lock t/" in timed_out.error.message
    assert timed_out.jobs[0].attempts == 0
    assert (await holder.wait()).state == RunState.COMPLETED
    assert set(intervals(str(log))) == {holder.run_id}  # neither ran its job
    # The timed-out run left the queue: the key is free for the next run at once.
    after = await (await _submit(client, task_queue, "lock-skip", log, key=key)).wait()
    assert after.state == RunState.COMPLETED


async def test_a_rollback_failed_run_keeps_its_key_until_unlock(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    key, log = _key(), tmp_path / "spans.log"
    env = cli_env(client.service_client.config.target_host, task_queue)
    broken = await _submit(
        client, task_queue, "lock-one", log, key=key, fail=True, rollback_fails=True
    )
    final = await broken.wait()
    assert final.state == RunState.ROLLBACK_FAILED
    assert _lock(final, f"t/{key}").state == "kept"
    nxt = await _submit(client, task_queue, "lock-one", log, key=key)
    await wait_for(nxt, lambda s: _queued(s, f"t/{key}"))
    await asyncio.sleep(3)  # the lock checks its holder: a ROLLBACK_FAILED one keeps the key
    assert (await nxt.status()).state == RunState.PENDING
    # Bad input changes nothing: no reason, a malformed key, a key nobody holds.
    no_reason = await sternway(env, "unlock", f"t/{key}")
    assert no_reason.code == 2 and "--reason" in no_reason.err
    bad = await sternway(env, "unlock", "a b", "--reason", "x")
    assert bad.code == 2 and "invalid" in bad.err
    unknown = await sternway(env, "unlock", f"t/{_key()}", "--reason", "x")
    assert unknown.code == 3, unknown.err
    assert (await nxt.status()).state == RunState.PENDING

    freed = await sternway(env, "unlock", f"t/{key}", "--reason", "restored the target by hand")
    assert freed.code == 0, freed.err
    done = await nxt.wait()
    assert done.state == RunState.COMPLETED
    note = _lock(done, f"t/{key}").note or ""
    assert "restored the target by hand" in note and broken.run_id in note
    # The reason is in the history of the lock and of the run that got the key.
    lock_history = await _history_text(client, f"sternway/lock/t/{key}")
    assert "restored the target by hand" in lock_history
    assert "restored the target by hand" in await _history_text(client, nxt.run_id)
    # A key whose holder still runs cannot be unlocked.
    busy = await _submit(client, task_queue, "lock-one", log, key=key, hold=3.0)
    await wait_for(busy, lambda s: s.state == RunState.RUNNING)
    refused = await sternway(env, "unlock", f"t/{key}", "--reason", "no")
    assert refused.code == 5 and "still runs" in refused.err
    assert (await busy.wait()).state == RunState.COMPLETED


async def _history_text(client: Client, workflow_id: str) -> str:
    """Every event of the workflow's history as raw bytes, decoded: payloads show as JSON."""
    events = client.get_workflow_handle(workflow_id).fetch_history_events()
    return "".join([e.SerializeToString().decode(errors="replace") async for e in events])


async def test_a_stopped_waiter_leaves_the_queue_and_a_terminated_holder_frees_the_key(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    key, log = _key(), tmp_path / "spans.log"
    holder = await _submit(client, task_queue, "lock-one", log, key=key, hold=60.0)
    await wait_for(holder, lambda s: s.state == RunState.RUNNING)
    quitter = await _submit(client, task_queue, "lock-one", log, key=key)
    await wait_for(quitter, lambda s: _queued(s, f"t/{key}"))
    patient = await _submit(client, task_queue, "lock-one", log, key=key)
    await wait_for(patient, lambda s: _queued(s, f"t/{key}"))
    await quitter.stop(reason="not needed")
    stopped = await quitter.wait()
    assert stopped.state == RunState.STOPPED and stopped.jobs[0].attempts == 0
    lock = client.get_workflow_handle(f"sternway/lock/t/{key}")
    state = await lock.query(Handler.LOCK_STATE)
    assert [w["run_id"] for w in state["waiters"]] == [patient.run_id]
    # Terminate skips Sternway's own end: the lock notices and frees the key.
    await client.get_workflow_handle(holder.run_id).terminate(reason="by hand")
    done = await patient.wait()
    assert done.state == RunState.COMPLETED
    assert "terminated" in (_lock(done, f"t/{key}").note or "")
    assert "terminated" in await _history_text(client, lock.id)


async def test_a_temporal_cancel_of_a_waiting_run_stops_it_and_leaves_the_queue(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    key, log = _key(), tmp_path / "spans.log"
    holder = await _submit(client, task_queue, "lock-one", log, key=key, hold=2.0)
    await wait_for(holder, lambda s: s.state == RunState.RUNNING)
    waiter = await _submit(client, task_queue, "lock-one", log, key=key)
    await wait_for(waiter, lambda s: _queued(s, f"t/{key}"))
    await client.get_workflow_handle(waiter.run_id).cancel()
    final = await waiter.wait()
    assert final.state == RunState.STOPPED and _lock(final, f"t/{key}").state == "released"
    assert (await holder.wait()).state == RunState.COMPLETED
    again = await (await _submit(client, task_queue, "lock-skip", log, key=key)).wait()
    assert again.state == RunState.COMPLETED


@pytest.mark.parametrize(
    ("locks", "message"),
    [
        ('[{key: "c/${{ jobs.a.output }}"}]', "locks[0].key: a lock key can read args only"),
        ('[{key: "a b"}]', "locks[0].key: 'a b' is not a valid lock key"),
        ('[{key: "x"}, {key: "x"}]', "locks[1].key: lock 'x' is listed twice"),
        ('[{key: "x", mode: maybe}]', "locks[0].mode"),
        ('[{key: "x", limit: 0}]', "locks[0].limit"),
        ('[{key: "x", timeout: 0s}]', "locks[0].timeout: must be more than 0s"),
        ('[{key: "${{ args.nope }}"}]', "locks[0].key: unknown arg 'nope'"),
    ],
)
async def test_validate_refuses_a_bad_locks_field_with_its_line(
    tmp_path: Path, locks: str, message: str
) -> None:
    book = tmp_path / "book.yaml"
    book.write_text(
        "name: lockbook\nargs:\n  required: [{name: c, type: str}]\n"
        f"locks: {locks}\njobs:\n  - {{name: a, run: noop}}\n"
    )
    result = await sternway(cli_env("127.0.0.1:1", "unused"), "validate", str(book))
    assert result.code == 2 and f"book.yaml:4 {message}" in result.err, result.err


async def test_a_key_args_make_invalid_or_secret_is_refused_before_anything_starts(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    book = tmp_path / "book.yaml"
    book.write_text(
        "name: lockbook-secret\nargs:\n  required: [{name: c, type: str},"
        " {name: token, type: secret}]\nlocks: [{key: 'k/${{ args.c }}'}, "
        "{key: 'k/${{ args.token }}-x'}]\njobs:\n  - {name: a, run: noop}\n"
    )
    env = cli_env(client.service_client.config.target_host, task_queue)
    for args, message in [
        (["c=a b", "token=s3cr3t-value"], "'k/a b' is not a valid lock key"),
        (["c=ok", "token=s3cr3t-value"], "the key would show a secret arg"),
    ]:
        pairs = [x for a in args for x in ("--arg", a)]
        for command in ("validate", "submit"):
            target = str(book) if command == "validate" else "lockbook-secret"
            result = await sternway(
                {**env, "STERNWAY_ACTIONS_PATH": str(tmp_path)}, command, target, *pairs
            )
            assert result.code == 2 and message in result.err, (command, result.err)
            assert "s3cr3t" not in result.err + result.out
    listed = (await sternway(env, "list", "--action", "lockbook-secret", "--json")).json()
    assert listed["runs"] == []
