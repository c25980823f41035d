"""The guarantee (docs/semantics.md): whatever its input, an accepted run ends through Sternway's
own path, with its started jobs rolled back, and ``status`` answers all along; input that could
break this is refused before anything starts. Each case below wedged a run before (issue 11).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from sternway import Action, ArgsError, CommandRefused, Job, JobContext, Retry, RunHandle, submit
from sternway.worker import create_worker
from sternway.workflows._actions import Registry
from sternway.workflows._runbook import load_runbook_text
from sternway.workflows.errors import SpecError
from sternway.workflows.models import (
    HISTORY_HALT_EVENTS,
    MAX_ARGS_BYTES,
    MAX_ATTEMPTS,
    MAX_COMMENT_CHARS,
    MAX_STATUS_BYTES,
    RunStatus,
    bounded_status,
    json_refusal,
)
from tests.cli import cli_env, sternway
from tests.conftest import WorkerFactory
from tests.helpers import rollbacks, wait_for, workflow_task_failures
from tests.scripted import ACTIONS, REGISTRY, Script, step, undo

# A typo: `items` of a dict is its bound method, which no payload can carry.
BOUND_METHOD = """
name: bound-method
jobs:
  - name: fetch
    run: noop
    with: {found: {a: 1, b: 2}}
    rollback: {run: noop}
  - name: use
    after: [fetch]
    run: noop
    with: {codes: "${{ jobs.fetch.output.items }}"}
"""
# The same typo where the loader cannot see it: a method read through a filter.
BOUND_METHOD_HIDDEN = BOUND_METHOD.replace(
    "jobs.fetch.output.items", "jobs.fetch.output | attr('items')"
)

# Ten items whose outputs are each under the output cap, and together over a job's input budget.
FAN_IN = """
name: fan-in
args:
  required:
    - {name: blob, type: str}
jobs:
  - name: prep
    run: noop
    rollback: {run: noop}
  - name: make
    after: [prep]
    each: {items: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], concurrency: 10}
    run: noop
    with: {blob: "${{ args.blob }}"}
    rollback: {run: noop}
  - name: use
    after: [make]
    run: noop
    rollback: {run: noop}
"""

APPROVAL = """
name: gated
jobs:
  - name: prep
    run: noop
    rollback: {run: noop}
  - name: gate
    after: [prep]
    run: approval
"""

# Every attempt fails, and no failure halts the run before the history is full: each item's group
# runs its job 100 times, undoes it, and runs again, 10 times, and the next item follows
# (continue_on_error): 5 x 10 x 100 = 5,000 attempts of about 11 events, one at a time.
RETRY_STORM = """
name: retry-storm
args:
  required:
    - {name: hosts, type: "list[str]"}
jobs:
  - name: prep
    run: noop
    rollback: {run: noop}
  - name: storm
    after: [prep]
    each: {items: "${{ args.hosts }}", concurrency: 1}
    retry: {attempts: 10, wait: 10ms}
    continue_on_error: true
    jobs:
      - name: flaky
        run: fail
        with: {message: always}
        retry: {max_attempts: 100, initial_interval: 10ms, backoff: 1}
        rollback: {run: noop}
"""


def registry(*texts: str) -> Registry:
    return Registry([load_runbook_text(text) for text in texts])


async def ended(client: Client, handle: RunHandle, timeout: float = 600.0) -> RunStatus:
    """The run's final status, after checking that no workflow task of it failed.

    Polled (the time-skipping server's long poll of a long run's result gives up after 20 s)."""
    raw = client.get_workflow_handle(handle.run_id)
    deadline = asyncio.get_running_loop().time() + timeout
    while (await raw.describe()).status == WorkflowExecutionStatus.RUNNING:
        assert asyncio.get_running_loop().time() < deadline, "the run did not end"
        await asyncio.sleep(0.5)
    status = await handle.status()
    assert await workflow_task_failures(client, handle.run_id) == []
    return status


async def test_unserialisable_expression_result_fails_the_job_and_rolls_back(
    ts_env: WorkflowEnvironment, task_queue: str
) -> None:
    with pytest.raises(SpecError, match=r"is a method, not data: did you mean"):
        registry(BOUND_METHOD)  # refused by validate where it can tell
    client = ts_env.client
    async with create_worker(client, registry(BOUND_METHOD_HIDDEN), task_queue=task_queue):
        handle = await submit(client, "bound-method", {}, task_queue=task_queue)
        status = await ended(client, handle)
    assert status.state == "FAILED", status.model_dump_json(indent=1)
    use = status.job("use")
    assert use.state == "FAILED" and use.error is not None
    assert use.error.reason == "error"
    # Refused by render (ExpressionError) or, whatever render returns, by the interpreter.
    assert use.error.type in ("ExpressionError", "NotSerializable"), use.error
    assert use.attempts == 0  # its input could not be sent: it never started
    assert status.job("fetch").state == "ROLLED_BACK"


async def test_args_over_budget_are_refused_at_submit(
    ts_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    big = {"sleep": {f"k{i}": 0 for i in range(150_000)}}  # about 1.5 MB of JSON
    assert len(json.dumps(big)) > MAX_ARGS_BYTES
    path = tmp_path / "args.json"
    path.write_text(json.dumps(big))
    address = ts_env.client.service_client.config.target_host
    env = cli_env(address, task_queue)
    result = await sternway(env, "submit", "test-chain3", "--args-file", str(path), "--id", "big")
    assert result.code == 2, result
    assert f"more than the limit of {MAX_ARGS_BYTES} bytes" in result.err
    assert "Traceback" not in result.err
    with pytest.raises(ArgsError, match="more than the limit"):
        await submit(ts_env.client, "test-chain3", big, task_queue=task_queue)
    listed = await sternway(env, "status", "big")
    assert listed.code == 3, listed  # nothing started


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("args", "error_type", "message"),
    [
        # Over the budget, under Temporal's 2 MiB.
        ({"sleep": {f"k{i}": 0 for i in range(40_000)}}, "TooLarge", "bytes"),
        # Python's JSON writes these as Infinity / NaN, which no other reader accepts.
        ({"fail": {"x": [1.0, float("-inf")]}}, "InvalidInput", "args.fail.x[1] is -inf"),
        ({"sleep": float("nan")}, "InvalidInput", "args.sleep is nan"),
        # The workflow's JSON reader stops at about 200 levels; a payload is a few deeper.
        ({"sleep": nested(150)}, "InvalidInput", "args is nested more than 100 levels deep"),
    ],
)
async def test_args_the_cli_refuses_sent_past_it_reject_the_run_before_its_plan(
    ts_env: WorkflowEnvironment,
    worker_for: WorkerFactory,
    task_queue: str,
    args: dict[str, Any],
    error_type: str,
    message: str,
) -> None:
    client = ts_env.client
    async with worker_for(client):
        with pytest.raises(ArgsError, match=re.escape(message)):
            await submit(client, "test-chain3", args, task_queue=task_queue)
        # As a plain object: RunInput would write a non-finite number as null on the way out.
        raw = await client.start_workflow(
            "test-chain3", {"args": args}, id="refused-args", task_queue=task_queue
        )
        handle = RunHandle(client, raw.id)
        status = await ended(client, handle)
    assert status.state == "FAILED"
    assert status.error is not None and status.error.type == error_type
    assert message in status.error.message
    assert status.error.reason == "rejected"
    assert all(job.attempts == 0 for job in status.jobs)


async def test_a_text_the_args_model_reads_as_infinite_rejects_the_run(
    ts_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    # The args hold the text "inf", which passes the check of raw args; the action's model
    # (Script.sleep: dict[str, float]) reads it as infinity when the run fixes its args.
    client = ts_env.client
    args = {"sleep": {"j1": "inf"}}
    with pytest.raises(ArgsError, match=re.escape("args.sleep.j1 is inf")):
        await submit(client, "test-chain3", args, task_queue=task_queue, registry=REGISTRY)
    async with worker_for(client):
        handle = await submit(client, "test-chain3", args, task_queue=task_queue)
        status = await ended(client, handle)
    assert status.state == "FAILED"
    assert status.error is not None and status.error.type == "ArgsError"
    assert "args.sleep.j1 is inf: JSON has no infinity or NaN" in status.error.message
    assert status.error.reason == "rejected"
    assert all(job.attempts == 0 for job in status.jobs)


async def unfit_data(ctx: JobContext) -> Any:
    """A job whose output, or rollback data, holds what a payload cannot carry."""
    what = ctx.input["what"]
    value = nested(ctx.input["depth"]) if what == "deep" else {"limits": [1.0, float("inf")]}
    if ctx.input["save"]:
        ctx.save_rollback_data(value)
    return value


@pytest.mark.parametrize(
    ("what", "depth", "save", "message"),
    [
        # Python's JSON writes Infinity (which no other reader takes) and the pydantic converter
        # null: the run completed, and a rollback would have got other data than was saved.
        ("inf", 0, True, "rollback data.limits[1] is inf: JSON has no infinity or NaN"),
        ("inf", 0, False, "job 'make' output.limits[1] is inf: JSON has no infinity or NaN"),
        # 210: the run's workflow task failed to read the output back, again and again (the
        # run never ended); 150: under that reader's limit, but over the one this sets.
        ("deep", 210, False, "job 'make' output is nested more than 100 levels deep, the limit"),
        ("deep", 150, False, "job 'make' output is nested more than 100 levels deep, the limit"),
        ("deep", 150, True, "rollback data is nested more than 100 levels deep, the limit"),
    ],
)
async def test_unfit_output_or_rollback_data_fails_the_job_and_rolls_back(
    ts_env: WorkflowEnvironment, task_queue: str, what: str, depth: int, save: bool, message: str
) -> None:
    unfit = Action(
        "unfit-data",
        [
            Job("first", execute=step, rollback=undo),
            Job(
                "make",
                execute=unfit_data,
                rollback=undo,
                input={"what": what, "depth": depth, "save": save},
                after=["first"],
                retry=Retry(max_attempts=3),
            ),
            Job("use", execute=step, after=["make"]),
        ],
        args=Script,
    )
    client = ts_env.client
    async with create_worker(client, Registry([*ACTIONS, unfit]), task_queue=task_queue):
        handle = await submit(client, unfit.name, {}, task_queue=task_queue)
        status = await ended(client, handle, timeout=60)
    assert await workflow_task_failures(client, handle.run_id) == []
    assert status.state == "FAILED"
    make = status.job("make")
    assert make.attempts == 1 and make.error is not None and make.error.message == message
    assert rollbacks(handle.run_id) == ["make", "first"]  # a failed job is undone too


def test_a_hundred_levels_are_data_like_any_other() -> None:
    assert json_refusal({"a": nested(99)}, "x") is None
    assert json_refusal({"a": nested(100)}, "x") == (
        "x is nested more than 100 levels deep, the limit"
    )


async def test_fan_in_over_the_input_budget_fails_the_job_and_rolls_back(
    ts_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = ts_env.client
    async with create_worker(client, registry(FAN_IN), task_queue=task_queue):
        handle = await submit(client, "fan-in", {"blob": "x" * 250_000}, task_queue=task_queue)
        status = await ended(client, handle)
        answer = await handle.status()  # the status answers after the end, within budget
    assert status.state == "FAILED", status.error
    use = status.job("use")
    assert use.error is not None and use.error.type == "TooLarge" and use.error.reason == "error"
    assert use.attempts == 0
    items = [status.job(f"make[{i}]") for i in range(10)]
    assert [item.state for item in items] == ["ROLLED_BACK"] * 10
    assert status.job("prep").state == "ROLLED_BACK"
    assert len(answer.model_dump_json()) <= MAX_STATUS_BYTES


async def test_oversized_approval_comment_is_refused_and_the_run_still_ends(
    ts_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = ts_env.client
    comment = "c" * 1_200_000
    async with create_worker(client, registry(APPROVAL), task_queue=task_queue):
        handle = await submit(client, "gated", {}, task_queue=task_queue)
        await wait_for(handle, lambda s: s.job("gate").state == "WAITING")
        with pytest.raises(CommandRefused, match=f"more than the limit of {MAX_COMMENT_CHARS}"):
            await handle.approve("gate", comment=comment)
        with pytest.raises(CommandRefused, match="limit"):
            await handle.stop(reason=comment)
        # Signals cannot be refused: an oversized one is ignored.
        await client.get_workflow_handle(handle.run_id).signal(
            "approve", {"job": "gate", "comment": comment}
        )
        status = await handle.status()
        assert status.job("gate").state == "WAITING"
        await handle.reject("gate", reason="no")
        status = await ended(client, handle)
    assert status.state == "FAILED"
    assert status.job("prep").state == "ROLLED_BACK"
    error = status.job("gate").error
    assert error is not None and error.message == "no"


def test_retry_policies_whose_worst_case_cannot_fit_the_history_are_refused() -> None:
    text = RETRY_STORM.replace("max_attempts: 100", f"max_attempts: {MAX_ATTEMPTS + 1}")
    with pytest.raises(SpecError, match="max_attempts"):
        load_runbook_text(text)
    from sternway.workflows._actions import Retry

    with pytest.raises(SpecError, match="max_attempts"):
        Retry(max_attempts=5000)


def test_status_over_budget_is_truncated_with_a_marker() -> None:
    status = RunStatus(run_id="r", action="a")
    from sternway.workflows.models import JobStatus

    status.jobs = [JobStatus(name=f"j{i}", output={"blob": "x" * 200_000}) for i in range(10)]
    status.jobs[0].detail = "d" * 100_000
    view = bounded_status(status)
    assert len(view.model_dump_json()) <= MAX_STATUS_BYTES
    assert view.jobs[0].detail is not None and view.jobs[0].detail.endswith("bytes]")
    assert any(isinstance(j.output, str) and "truncated" in j.output for j in view.jobs)
    assert status.jobs[0].detail == "d" * 100_000  # the run's own state is left as it was


@pytest.mark.heavy
@pytest.mark.timeout(900)
async def test_a_retry_storm_halts_before_the_history_limit_and_rolls_back(
    ts_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = ts_env.client
    async with create_worker(client, registry(RETRY_STORM), task_queue=task_queue):
        handle = await submit(
            client, "retry-storm", {"hosts": [str(i) for i in range(5)]}, task_queue=task_queue
        )
        status = await ended(client, handle)
        answer = await handle.status()
    assert status.state == "FAILED", status.error
    assert status.error is not None and status.error.type == "HistoryLimit"
    assert status.error.job is not None and status.error.job.endswith(".flaky")
    halted = status.job(status.error.job)
    assert halted.error is not None and halted.error.type == "HistoryLimit"
    assert status.job("prep").state == "ROLLED_BACK"
    info = (await client.get_workflow_handle(handle.run_id).describe()).raw_description
    length = info.workflow_execution_info.history_length
    # Halted at 80% of the limit, and the rollback fitted in the room left.
    assert HISTORY_HALT_EVENTS <= length < 51_200
    assert len(answer.model_dump_json()) <= MAX_STATUS_BYTES
    print(f"retry storm: {length} events, {info.workflow_execution_info.history_size_bytes} bytes")
