"""Shell jobs: a clean environment (the worker's credentials never reach them) and scripts that
take values as positional parameters, never as script text."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from sternway import submit
from sternway.activities._shell_host import (
    configure_shell_env,
    kill_recorded_group,
    parse_allowlist,
    record_group,
    state_dir,
)
from sternway.worker import create_worker
from sternway.workflows._actions import Action, Registry
from sternway.workflows._runbook import load_runbook_text
from sternway.workflows.models import CallSpec, JobSpec, Plan
from tests.cli import cli_env, sternway

CODEC_KEY = "k1:" + "Q" * 43 + "="
API_KEY = "tk-api-key-0123456789abcdef"


@pytest.fixture
def worker_secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The test's worker process holds a codec key and a Temporal API key, as a real one would,
    and its operator allows ``SHELL_SAFETY_ALLOWED`` (and tried to allow the API key: refused)."""
    monkeypatch.setenv("STERNWAY_CODEC_KEYS", CODEC_KEY)
    monkeypatch.setenv("TEMPORAL_API_KEY", API_KEY)
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_DATA", "tls-key-data-xyz")
    monkeypatch.setenv("SHELL_SAFETY_ALLOWED", "allowed-value")
    monkeypatch.setenv("SHELL_SAFETY_HIDDEN", "hidden-value")
    monkeypatch.delenv("STERNWAY_SHELL_ENV", raising=False)
    configure_shell_env(["SHELL_SAFETY_ALLOWED"])
    yield
    configure_shell_env([])


def test_the_allowlist_refuses_sternway_and_temporal_variables() -> None:
    assert parse_allowlist(["A,B", " C ", "AWS_*"]) == ("A", "B", "C", "AWS_*")
    for refused in ("TEMPORAL_API_KEY", "STERNWAY_CODEC_KEYS", "temporal_tls_key", "STERNWAY_*"):
        with pytest.raises(ValueError, match="never reach shell jobs"):
            parse_allowlist([refused])
    with pytest.raises(ValueError, match="not a variable name"):
        parse_allowlist(["A=B"])


async def test_worker_refuses_an_allowlisted_credential_at_start() -> None:
    env = cli_env("127.0.0.1:1", "tq-shell-env", STERNWAY_SHELL_ENV="PATH2,TEMPORAL_API_KEY")
    result = await sternway(env, "worker")
    assert result.code == 2, result.err
    assert result.err.strip() == (
        "error: shell environment: 'TEMPORAL_API_KEY' is refused: STERNWAY_* and TEMPORAL_* "
        "variables hold the worker's own settings and credentials and never reach shell jobs "
        "(give a job what it needs in its env)"
    )
    flag = await sternway(cli_env("127.0.0.1:1", "tq"), "worker", "--shell-env", "STERNWAY_*")
    assert flag.code == 2 and "'STERNWAY_*' is refused" in flag.err


async def test_env_of_a_shell_job_shows_no_credential_of_its_worker(
    dev_env: WorkflowEnvironment, task_queue: str, worker_secrets: None, tmp_path: Path
) -> None:
    job = JobSpec(
        name="env",
        execute=CallSpec(kind="shell", **{"with": {"argv": ["env"], "env": {"MINE": "1"}}}),
    )
    # A job that finds the credentials some other way (a file it can read) prints them masked.
    found = tmp_path / "found"
    found.write_text(f"key {CODEC_KEY[3:]}\napi {API_KEY}\n")
    cat = JobSpec(
        name="cat", execute=CallSpec(kind="shell", **{"with": {"argv": ["cat", str(found)]}})
    )
    act = Action.from_plan(Plan(name="shell-env", jobs=[job, cat]))
    async with create_worker(dev_env.client, Registry([act]), task_queue=task_queue):
        handle = await submit(dev_env.client, "shell-env", {}, task_queue=task_queue)
        status = await handle.wait()
        logs = await sternway(cli_env(dev_env.client.service_client.config.target_host, task_queue),
                              "logs", handle.run_id)  # fmt: skip
    assert status.state == "COMPLETED"
    stdout = status.job("env").output["stdout"]
    names = {line.partition("=")[0] for line in stdout.splitlines()}
    assert {"PATH", "MINE", "SHELL_SAFETY_ALLOWED"} <= names
    assert "SHELL_SAFETY_HIDDEN" not in names
    assert not {n for n in names if n.startswith(("STERNWAY_", "TEMPORAL_"))}, names
    assert logs.code == 0 and "MINE=1" in logs.out, logs.err
    assert status.job("cat").output["stdout"] == "key **********\napi **********\n"
    shown = status.model_dump_json() + logs.out + logs.err
    for secret in (CODEC_KEY, CODEC_KEY[3:20], API_KEY, "tls-key-data-xyz", "hidden-value"):
        assert secret not in shown


RUNBOOK = """\
name: {name}
args:
  required:
    - {{name: msg, type: str}}
jobs:
  - name: say
    run: shell
    with: {with_}
"""
UNSAFE = """{shell: true, script: 'echo ${{ args.msg }}'}"""
# The replacement the refusal shows: the value is the script's "$1", never script text.
SAFE = """{shell: true, script: 'echo "said: $1"', args: ["${{ args.msg }}"]}"""


async def test_a_shell_script_with_an_expression_is_refused_and_its_replacement_is_literal(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text(RUNBOOK.format(name="say-unsafe", with_=UNSAFE))
    env = cli_env(dev_env.client.service_client.config.target_host, task_queue)
    refused = await sternway(env, "validate", str(unsafe))
    assert refused.code == 2 and "Traceback" not in refused.err
    assert "jobs[0].with.script: must not hold ${{ }}" in refused.err
    assert """args: ["${{ args.msg }}"]""" in refused.err  # the message shows the new form

    canary = tmp_path / "pwned"
    safe = tmp_path / "actions" / "say.yaml"
    safe.parent.mkdir()
    safe.write_text(RUNBOOK.format(name="say-safe", with_=SAFE))
    env["STERNWAY_ACTIONS_PATH"] = str(safe.parent)
    assert (await sternway(env, "validate", str(safe))).code == 0
    message = f"x; touch {canary}; $(touch {canary}) `touch {canary}`"
    registry = Registry([load_runbook_text(safe.read_text(), str(safe))])
    async with create_worker(dev_env.client, registry, task_queue=task_queue):
        run_id = f"say-safe-{task_queue}"
        done = await sternway(
            env, "submit", "say-safe", "--id", run_id, "--arg", f"msg={message}", "--wait"
        )
        status = await sternway(env, "status", "--json", run_id)
    assert done.code == 0, done.err
    assert not canary.exists()
    assert status.code == 0, status.err
    assert status.json()["jobs"][0]["output"]["stdout"] == f"said: {message}\n"


def test_a_recorded_group_is_killed_once_and_only_if_it_is_the_same_process() -> None:
    key = f"run-{uuid.uuid4().hex}/job/execute/1"
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        record_group(key, sleeper.pid)
        path = state_dir()
        assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o700
        # A record whose leader is another process now (a reused pid) is dropped, not obeyed.
        record = next(f for f in path.iterdir() if key in f.read_text())
        data = json.loads(record.read_text())
        record.write_text(json.dumps({**data, "start": "1"}))
        assert kill_recorded_group(key) is None and sleeper.poll() is None
        record_group(key, sleeper.pid)
        assert kill_recorded_group(key) == sleeper.pid
        assert sleeper.wait(10) == -signal.SIGKILL
        assert kill_recorded_group(key) is None  # the record is gone with the group
    finally:
        sleeper.kill()
        sleeper.wait()
