"""Groups, ``each`` fan-out, ``if``, ``sleep`` and approvals in the interpreter, on real servers.

Plans are built directly from the plan model here; the YAML front end compiles to the same model.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from sternway import Action, Registry, RunHandle, submit
from sternway.worker import create_worker
from sternway.workflows._actions import function_ref
from sternway.workflows.models import CallSpec, EachSpec, GroupRetrySpec, JobSpec, Plan, RetrySpec
from tests.helpers import events, rollbacks, wait_for
from tests.scripted import ACTIONS, EVENTS, PEAK, Script, step, track, undo


def py(fn: Any, **params: Any) -> CallSpec:
    return CallSpec(kind="python", ref=function_ref(fn), **{"with": params})


def kind(name: str, **params: Any) -> CallSpec:
    return CallSpec(kind=name, **{"with": params})


def job(name: str, run: CallSpec | None = None, **fields: Any) -> JobSpec:
    fields.setdefault("retry", RetrySpec(max_attempts=1))
    fields.setdefault("heartbeat_timeout", 5)
    return JobSpec(name=name, execute=run, **fields)


def action(name: str, jobs: Sequence[JobSpec]) -> Action:
    return Action.from_plan(Plan(name=name, jobs=list(jobs)), args_model=Script)


async def run(
    env: WorkflowEnvironment, task_queue: str, plan: Action, args: dict[str, Any] | None = None
) -> RunHandle:
    return await submit(env.client, plan.name, args or {}, task_queue=task_queue)


def worker(env: WorkflowEnvironment, task_queue: str, *plans: Action) -> Any:
    return create_worker(env.client, Registry([*ACTIONS, *plans]), task_queue=task_queue)


async def decide(
    handle: RunHandle, update: str, job: str, token: str = "", comment: str = ""
) -> Any:
    workflow = handle.client.get_workflow_handle(handle.run_id)
    return await workflow.execute_update(update, {"job": job, "token": token, "comment": comment})


async def test_each_keeps_a_sliding_window_and_rolls_back_every_item(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    hosts = [f"h{i:02d}" for i in range(12)]
    fan = action(
        "flow-each",
        [
            job(
                "fan",
                py(track, item="${{ host }}", hold=0.4),
                rollback=py(undo),
                each=EachSpec(items=hosts, concurrency=3, **{"as": "host"}),
            ),
            job("after", py(step), rollback=py(undo), after=["fan"]),
        ],
    )
    async with worker(dev_env, task_queue, fan):
        handle = await run(dev_env, task_queue, fan, {"fail": {"after": 9}})
        status = await handle.wait()
    assert status.state == "FAILED"
    assert PEAK[handle.run_id] == 3
    instances = [f"fan[{h}]" for h in hosts]
    started = [e[1] for e in EVENTS[handle.run_id] if e[0] == "start"]
    assert started[:12] == instances and started[12] == "after"
    assert rollbacks(handle.run_id) == ["after", *reversed(instances)]
    assert status.job("fan").output == [{"item": h, "job": f"fan[{h}]"} for h in hosts]
    assert all(status.job(i).state == "ROLLED_BACK" for i in instances)


async def test_group_retry_undoes_the_group_and_runs_it_again(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    grouped = action(
        "flow-group",
        [
            job("first", py(step), rollback=py(undo)),
            JobSpec(
                name="grp",
                after=["first"],
                group_retry=GroupRetrySpec(attempts=2, wait=0.2),
                jobs=[
                    job("g1", py(step), rollback=py(undo)),
                    job("g2", py(step), rollback=py(undo), after=["g1"]),
                ],
            ),
            job("last", py(step), after=["grp"]),
        ],
    )
    async with worker(dev_env, task_queue, grouped):
        handle = await run(dev_env, task_queue, grouped, {"fail": {"grp.g2": 1}})
        status = await handle.wait()
    assert status.state == "COMPLETED", status.error
    assert [(e[1], e[2]) for e in EVENTS[handle.run_id] if e[0] == "start"] == [
        ("first", 1), ("grp.g1", 1), ("grp.g2", 1), ("grp.g1", 2), ("grp.g2", 2), ("last", 1),
    ]  # fmt: skip
    assert rollbacks(handle.run_id) == ["grp.g2", "grp.g1"]
    assert status.job("grp").attempts == 2 and status.job("grp").state == "COMPLETED"
    assert status.job("grp.g2").attempts == 2
    assert [e.state for e in status.job("grp.g2").log] == ["FAILED", "COMPLETED"]


async def test_group_out_of_attempts_fails_the_run_and_everything_is_undone_once(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    grouped = action(
        "flow-group-fail",
        [
            job("first", py(step), rollback=py(undo)),
            JobSpec(
                name="grp",
                after=["first"],
                group_retry=GroupRetrySpec(attempts=2),
                jobs=[
                    job("g1", py(step), rollback=py(undo)),
                    job("g2", py(step), rollback=py(undo), after=["g1"]),
                ],
            ),
        ],
    )
    async with worker(dev_env, task_queue, grouped):
        handle = await run(dev_env, task_queue, grouped, {"fail": {"grp.g2": 999}})
        status = await handle.wait()
    assert status.state == "FAILED"
    assert status.error is not None and status.error.job == "grp.g2"
    assert rollbacks(handle.run_id) == ["grp.g2", "grp.g1", "grp.g2", "grp.g1", "first"]


async def test_each_over_a_group_retries_per_item(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    per_host = action(
        "flow-each-group",
        [
            JobSpec(
                name="host",
                each=EachSpec(items=["a", "b", "c"], concurrency=2, **{"as": "h"}),
                group_retry=GroupRetrySpec(attempts=2),
                jobs=[
                    job("drain", py(step), rollback=py(undo)),
                    job("restart", py(step), rollback=py(undo), after=["drain"]),
                    job(
                        "echo",
                        kind("noop", host="${{ h }}", twice="${{ h * 2 }}"),
                        after=["restart"],
                    ),
                ],
            ),
        ],
    )
    async with worker(dev_env, task_queue, per_host):
        handle = await run(dev_env, task_queue, per_host, {"fail": {"host[b].restart": 1}})
        status = await handle.wait()
    assert status.state == "COMPLETED", status.error
    assert rollbacks(handle.run_id) == ["host[b].restart", "host[b].drain"]
    assert status.job("host[b]").attempts == 2 and status.job("host[a]").attempts == 1
    assert status.job("host[c].echo").output == {"host": "c", "twice": "cc"}


async def test_if_skips_and_dependents_still_run(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    flow = action(
        "flow-if",
        [
            job("maybe", kind("noop"), **{"if": "${{ args.fail | length > 0 }}"}),
            job("always", kind("noop", saw="${{ jobs.maybe.state }}"), after=["maybe"]),
            job("nap", kind("sleep", duration="1s"), after=["always"]),
        ],
    )
    async with worker(dev_env, task_queue, flow):
        status = await (await run(dev_env, task_queue, flow)).wait()
    assert status.state == "COMPLETED"
    assert status.job("maybe").state == "SKIPPED"
    assert status.job("always").output == {"saw": "SKIPPED"}
    assert status.job("nap").output == {"slept": 1.0}


async def test_bad_expression_fails_the_job_clearly(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    flow = action("flow-bad-expr", [job("oops", kind("noop", x="${{ args.missing.deeper }}"))])
    async with worker(dev_env, task_queue, flow):
        status = await (await run(dev_env, task_queue, flow)).wait()
    assert status.state == "FAILED"
    error = status.job("oops").error
    assert error is not None and error.type == "ExpressionError"
    assert "missing" in error.message


GATE = action(
    "flow-gate",
    [
        job("build", py(step), rollback=py(undo)),
        job("gate", kind("approval", require_token=True), after=["build"]),
        job("ship", py(step), after=["gate"]),
    ],
)


async def test_approval_needs_its_token_then_approves(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    async with worker(dev_env, task_queue, GATE):
        handle = await run(dev_env, task_queue, GATE)
        waiting = await wait_for(handle, lambda s: s.job("gate").state == "WAITING")
        detail = waiting.job("gate").detail or ""
        token = detail.split("token ")[1].split(";")[0]
        with pytest.raises(WorkflowUpdateFailedError):
            await decide(handle, "approve", "gate", token="wrong")
        with pytest.raises(WorkflowUpdateFailedError):
            await decide(handle, "approve", "ship", token=token)
        assert (await handle.status()).job("gate").state == "WAITING"
        await decide(handle, "approve", "gate", token=token, comment="looks good")
        status = await handle.wait()
    assert status.state == "COMPLETED"
    assert status.job("gate").output == {"approved": True, "comment": "looks good"}
    assert events(handle.run_id, "start") == ["build", "ship"]


async def test_rejection_fails_the_job_and_rolls_back(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    async with worker(dev_env, task_queue, GATE):
        handle = await run(dev_env, task_queue, GATE)
        waiting = await wait_for(handle, lambda s: s.job("gate").state == "WAITING")
        token = (waiting.job("gate").detail or "").split("token ")[1].split(";")[0]
        await decide(handle, "reject", "gate", token=token, comment="not today")
        status = await handle.wait()
    assert status.state == "FAILED"
    error = status.job("gate").error
    assert error is not None
    assert (error.reason, error.message) == (
        "rejected",
        "not today",
    )
    assert rollbacks(handle.run_id) == ["build"]
    assert "ship" not in events(handle.run_id, "start")


@pytest.mark.parametrize(
    ("on_timeout", "state", "shipped"),
    [("approve", "COMPLETED", True), ("fail", "FAILED", False), ("rollback", "STOPPED", False)],
)
async def test_approval_deadline(
    ts_env: WorkflowEnvironment, task_queue: str, on_timeout: str, state: str, shipped: bool
) -> None:
    gate = action(
        f"flow-deadline-{on_timeout}",
        [
            job("build", py(step), rollback=py(undo)),
            job("gate", kind("approval", timeout="2h", on_timeout=on_timeout), after=["build"]),
            job("ship", py(step), after=["gate"]),
        ],
    )
    async with worker(ts_env, task_queue, gate):
        handle = await run(ts_env, task_queue, gate)
        await wait_for(handle, lambda s: s.job("gate").state == "WAITING")
        await ts_env.sleep(timedelta(hours=3))
        status = await handle.wait()
    assert status.state == state
    # As docs/runbooks.md says: `fail` fails the job, `rollback` cancels it and stops the run.
    gate_state = {"approve": "COMPLETED", "fail": "FAILED", "rollback": "CANCELLED"}[on_timeout]
    assert status.job("gate").state == gate_state
    assert ("ship" in events(handle.run_id, "start")) == shipped
    assert rollbacks(handle.run_id) == ([] if shipped else ["build"])
    if not shipped:
        assert status.error is not None and status.error.reason == "timeout"
