"""Plans record job functions by stable ids, and a worker finds a function under any name a
history recorded for it (docs/architecture.md, "Function ids").

Every history in tests/histories/ also replays on today's code: tests/test_replay.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from sternway import Action, Job, JobContext, Registry, SpecError, job_function, submit
from sternway.activities.site import build, deploy_site
from sternway.worker import create_worker, load_registry
from sternway.workflows._actions import function_ref
from tests.helpers import wait_for

HISTORIES = Path(__file__).parent / "histories"


def recorded_refs() -> set[str]:
    """The function names the recorded histories hold (in the plans their resolve returned)."""
    refs: set[str] = set()
    for path in HISTORIES.glob("*.json"):
        text = path.read_text()
        for data in re.findall(r'"data": "([A-Za-z0-9+/=]+)"', text):
            decoded = base64.b64decode(data).decode("utf-8", "replace")
            refs.update(re.findall(r'"ref":"([^"]+)"', decoded))
    return refs


def test_the_sample_jobs_are_recorded_by_their_ids_not_their_module() -> None:
    assert function_ref(build) == "site.build"
    plan = json.dumps(deploy_site.plan.model_dump(mode="json"))
    assert '"site.build"' in plan and "activities." not in plan


def test_every_function_a_recorded_history_names_is_found_by_todays_worker() -> None:
    refs = recorded_refs()
    # Recorded before the one namespace and before ids: the first layout's module paths.
    assert "activities.site.build" in refs and len(refs) >= 7
    registry = load_registry(modules=[], folders=[])
    for ref in sorted(refs):
        assert registry.function(ref).__module__ == "sternway.activities.site", ref


def test_an_unknown_function_is_a_clear_spec_error() -> None:
    with pytest.raises(SpecError, match=r"no function 'activities\.site\.gone' is registered"):
        load_registry(modules=[], folders=[]).function("activities.site.gone")


def test_an_id_must_be_a_dotted_name_and_two_functions_may_not_share_one() -> None:
    with pytest.raises(SpecError, match="must be a dotted name"):
        job_function("not a name")
    first = job_function("dup.step")(_dup_one)
    second = job_function("x.step", aliases=("dup.step",))(_dup_two)
    with pytest.raises(SpecError, match=r"both named 'dup\.step'"):
        Registry([Action("a1", [Job("j", first)]), Action("a2", [Job("j", second)])])
    with pytest.raises(SpecError, match="already has the id"):
        job_function("other.id")(first)


def _dup_one(ctx: JobContext) -> dict[str, Any]:
    return {}


def _dup_two(ctx: JobContext) -> dict[str, Any]:
    return {}


# Module level, so workers find them. The same job before and after its function moved: the
# new one keeps the old id as an alias.
async def _wait_a_little(ctx: JobContext) -> dict[str, Any]:
    await asyncio.sleep(2)
    return {}


def _step_before(ctx: JobContext) -> dict[str, Any]:
    return {"ran": "before"}


def _step_after(ctx: JobContext) -> dict[str, Any]:
    return {"ran": "after"}


BEFORE = job_function("moved.step")(_step_before)
AFTER = job_function("moved.step_v2", aliases=("moved.step",))(_step_after)


def _moving(step: Any) -> Action:
    return Action(
        "test-moved-function", [Job("wait", _wait_a_little), Job("step", step, after=["wait"])]
    )


async def test_a_run_recorded_under_an_old_id_finishes_on_a_worker_where_the_function_moved(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    async with create_worker(dev_env.client, Registry([_moving(BEFORE)]), task_queue=task_queue):
        handle = await submit(dev_env.client, "test-moved-function", {}, task_queue=task_queue)
        await handle.suspend()  # takes effect once `wait` is done, before `step` starts
        await wait_for(handle, lambda status: status.state == "SUSPENDED")
    async with create_worker(dev_env.client, Registry([_moving(AFTER)]), task_queue=task_queue):
        await handle.resume()
        status = await handle.wait()
    assert status.state == "COMPLETED"
    assert status.job("step").output == {"ran": "after"}
