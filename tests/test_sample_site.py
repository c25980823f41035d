"""The sample action ``deploy-site`` does real work on disk and undoes it on a failed check."""

from __future__ import annotations

import os
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from sternway import submit
from tests.conftest import WorkerFactory


async def deploy(
    env: WorkflowEnvironment, task_queue: str, root: Path, release: str, **args: object
):
    handle = await submit(
        env.client,
        "deploy-site",
        {"root": str(root), "release": release, **args},
        task_queue=task_queue,
    )
    return await handle.wait()


async def test_deploy_then_broken_release_rolls_back_to_previous(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str, tmp_path: Path
) -> None:
    async with worker_for(dev_env.client):
        good = await deploy(dev_env, task_queue, tmp_path, "v1", message="first")
        assert good.state == "COMPLETED"
        assert os.readlink(tmp_path / "current") == "releases/v1"
        assert "first" in (tmp_path / "current" / "index.html").read_text()

        bad = await deploy(dev_env, task_queue, tmp_path, "v2", broken=True)
    assert bad.state == "FAILED"
    check = bad.job("check")
    assert check.attempts == 3 and check.error is not None
    assert "not healthy" in check.error.message
    assert [bad.job(n).state for n in ("build", "switch", "record")] == [
        "ROLLED_BACK", "ROLLED_BACK", "PENDING",
    ]  # fmt: skip
    assert os.readlink(tmp_path / "current") == "releases/v1"
    assert not (tmp_path / "releases" / "v2").exists()
    assert (tmp_path / "releases" / "v1" / "index.html").exists()
    log = (tmp_path / "deployments.log").read_text().splitlines()
    assert len(log) == 1 and log[0].startswith("v1 deployed by deploy-site-")


async def test_first_broken_release_leaves_nothing_behind(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str, tmp_path: Path
) -> None:
    async with worker_for(dev_env.client):
        bad = await deploy(dev_env, task_queue, tmp_path, "v1", broken=True)
    assert bad.state == "FAILED"
    assert not (tmp_path / "current").exists() and not (tmp_path / "current").is_symlink()
    assert list((tmp_path / "releases").iterdir()) == []
