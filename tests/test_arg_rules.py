"""Arg rules (pattern, enum, min/max, min_length/max_length) and the path args of the shipped
actions: refused at submit and at the run's resolve step, shown by ``actions``, and never able to
steer a shipped rollback outside its root."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from sternway import submit
from sternway.activities import RollbackContext
from sternway.activities._kinds import KINDS
from sternway.activities.site import DeploySiteArgs, remove_build
from sternway.worker import create_worker, load_registry
from sternway.workflows._expr import render
from sternway.workflows._runbook import (
    MAX_RUNBOOK_BYTES,
    load_folder,
    load_runbook,
    load_runbook_text,
)
from sternway.workflows.errors import ArgsError, JobError, SpecError
from sternway.workflows.models import CallSpec, JobSpec
from tests.cli import cli_env, sternway

REPO = Path(__file__).resolve().parent.parent
ACTIONS = REPO / "actions"
REGISTRY = load_registry(modules=["tests.scripted"], folders=[ACTIONS])

RULES = """\
name: ruled
args:
  required:
    - {name: release, pattern: '[a-z][a-z0-9]*', max_length: 8}
    - {name: hosts, type: "list[str]", pattern: '[a-z]+[0-9]', enum: [web1, web2, db1]}
  optional:
    - {name: count, type: int, min: 1, max: 10, default: 3}
    - {name: wait, type: duration, min: 1m, max: 1h}
    - {name: token, type: secret, min_length: 8, pattern: 'tok-.*'}
    - {name: color, enum: [red, blue]}
    - {name: ratio, type: float, min: 0, max: 1}
jobs: [{name: a, run: noop}]
"""
GOOD = {"release": "v2", "hosts": ["web1"]}


# ------------------------------------------------------------------------- the rules


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"release": "../../x"}, "release: must match the pattern '[a-z][a-z0-9]*' (the whole"),
        ({"release": "v2/.."}, "release: must match the pattern"),  # a prefix match is not enough
        ({"release": "v2\n"}, "release: must match the pattern"),  # nor one up to a newline
        ({"release": "abcdefghi"}, "release: must be at most 8 characters long"),
        ({"hosts": ["web1", "../x"]}, "hosts.1: must be one of 'web1', 'web2', 'db1'"),
        ({"count": 0}, "count: must be at least 1"),
        ({"count": 11}, "count: must be at most 10"),
        ({"wait": "30s"}, "wait: must be at least 1m"),
        ({"wait": "2h"}, "wait: must be at most 1h"),
        ({"token": "tok-1"}, "token: must be at least 8 characters long"),
        ({"token": "sEcReT-value"}, "token: must match the pattern 'tok-.*'"),
        ({"color": "green"}, "color: must be one of 'red', 'blue'"),
        ({"ratio": 1.5}, "ratio: must be at most 1"),
    ],
)
def test_a_broken_rule_is_refused_naming_the_arg_and_the_rule(
    given: dict[str, Any], message: str
) -> None:
    action = load_runbook_text(RULES)
    with pytest.raises(ArgsError) as caught:
        action.validate_args({**GOOD, **given})
    text = str(caught.value)
    assert text.startswith("invalid args for 'ruled': ") and message in text, text
    assert "\n" not in text and "sEcReT" not in text  # one line; a secret is never quoted


def test_values_that_keep_the_rules_pass_and_the_schema_carries_them() -> None:
    action = load_runbook_text(RULES)
    args, masked = action.validate_args(
        {**GOOD, "hosts": ["web1", "db1"], "count": 10, "wait": "5m", "token": "tok-12345"}
    )
    assert args["wait"] == 300.0 and args["token"] == "tok-12345"
    assert masked["token"] != "tok-12345"
    props = action.plan.args_schema["properties"]
    assert props["release"]["pattern"] == "[a-z][a-z0-9]*" and props["release"]["maxLength"] == 8
    assert props["hosts"]["items"]["enum"] == ["web1", "web2", "db1"]
    assert props["count"]["minimum"] == 1 and props["count"]["maximum"] == 10


@pytest.mark.parametrize(
    ("arg", "line", "message"),
    [
        ("{name: x, pattern: '[a-'}", 4, "args.required[0].pattern: invalid regex '[a-'"),
        ("{name: x, type: int, pattern: a}", 4, "pattern does not apply to an arg of type int"),
        ("{name: x, type: bool, enum: [true]}", 4, "enum does not apply to an arg of type bool"),
        ("{name: x, type: secret, enum: [a]}", 4, "enum does not apply to an arg of type secret"),
        ("{name: x, type: int, min: 5, max: 1}", 4, "args.required[0].max: max is less than min"),
        ("{name: x, min_length: 5, max_length: 2}", 4, "max_length is less than min_length"),
        ("{name: x, enum: []}", 4, "enum needs at least one value"),
        ("{name: x, type: int, enum: [a]}", 4, "enum[0]: 'a' does not fit type int"),
        ("{name: x, type: int, min: '1'}", 4, "min must be a number, not a string"),
        ("{name: x, type: duration, max: soon}", 4, "'soon' does not fit type duration"),
        ("{name: x, min_length: -1}", 4, "args.required[0].min_length: must be >= 0"),
    ],
)
def test_a_wrong_rule_is_a_load_error_at_its_line(arg: str, line: int, message: str) -> None:
    text = f"name: t\nargs:\n  required:\n    - {arg}\njobs: [{{name: a, run: noop}}]\n"
    with pytest.raises(SpecError) as caught:
        load_runbook_text(text, "r.yaml")
    assert str(caught.value).startswith(f"r.yaml:{line} "), caught.value
    assert message in str(caught.value)


def test_a_default_must_keep_its_rules() -> None:
    text = (
        "name: t\nargs:\n  optional:\n"
        "    - {name: x, pattern: '[a-z]+', default: 'Ab'}\njobs: [{name: a, run: noop}]\n"
    )
    with pytest.raises(SpecError, match=r"r.yaml:4 args.optional\[0\].default: 'Ab' does not fit"):
        load_runbook_text(text, "r.yaml")


# ------------------------------------------------------------- the shipped path args

TRAVERSALS = ["../../precious", "..", ".", "a/../../b", "/etc", "v1\n", ""]


@pytest.mark.parametrize("value", TRAVERSALS)
def test_every_shipped_name_arg_refuses_a_path(value: str) -> None:
    cases: list[tuple[str, dict[str, object]]] = [
        ("release-with-approval", {"root": "/srv/site", "release": value}),
        ("rolling-restart", {"root": "/srv/fleet", "hosts": ["web1", value]}),
        ("deploy-site", {"root": "/srv/site", "release": value}),
    ]
    if value:  # fail_host may be empty
        cases.append(("rolling-restart", {"root": "/f", "hosts": ["a"], "fail_host": value}))
    for name, args in cases:
        with pytest.raises(ArgsError, match=r"must match the pattern|should match pattern"):
            REGISTRY.get(name).validate_args(args)


@pytest.mark.parametrize("root", ["relative/site", "/srv/../etc", "/srv/site/..", ""])
def test_every_shipped_root_must_be_absolute_without_dot_dot(root: str) -> None:
    others: list[tuple[str, dict[str, object]]] = [
        ("release-with-approval", {"release": "v1"}),
        ("rolling-restart", {"hosts": ["web1"]}),
        ("deploy-site", {"release": "v1"}),
    ]
    for name, args in others:
        with pytest.raises(ArgsError, match="root: "):
            REGISTRY.get(name).validate_args({**args, "root": root})
    for ok in ["/srv/site", "/", "/srv/.hidden/...x/a..b/./"]:
        REGISTRY.get("release-with-approval").validate_args({"root": ok, "release": "v1"})
        REGISTRY.get("deploy-site").validate_args({"root": ok, "release": "v1"})


@pytest.fixture
def address(dev_env: WorkflowEnvironment) -> str:
    return dev_env.client.service_client.config.target_host


async def test_submit_of_a_traversal_exits_2_and_starts_and_deletes_nothing(
    dev_env: WorkflowEnvironment, address: str, task_queue: str, tmp_path: Path
) -> None:
    """Must-show: the traversal of the security review is refused at the door."""
    root, precious = tmp_path / "site", tmp_path / "x"
    (root / "releases").mkdir(parents=True)
    precious.mkdir()
    (precious / "keep.txt").write_text("precious")
    env = cli_env(address, task_queue)
    for command in ("submit", "validate"):
        result = await sternway(
            env, command, "release-with-approval", "--arg", f"root={root}",
            "--arg", "release=../../x",
        )  # fmt: skip
        assert result.code == 2, (result.out, result.err)
        assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
        assert "invalid args for 'release-with-approval': release: must match the pattern" in (
            result.err
        )
    count = await dev_env.client.count_workflows(f"TaskQueue = '{task_queue}'")
    assert count.count == 0
    assert (precious / "keep.txt").read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["site", "x"]


async def test_the_run_checks_the_same_rules_when_the_client_did_not(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    """A client that skips validation (no registry) meets the same rule in the resolve step."""
    async with create_worker(dev_env.client, REGISTRY, task_queue=task_queue):
        for name in ("release-with-approval", "deploy-site"):
            handle = await submit(
                dev_env.client,
                name,
                {"root": str(tmp_path), "release": "../../x"},
                task_queue=task_queue,
            )
            status = await handle.wait()
            assert status.state == "FAILED", name
            assert status.error is not None and status.error.reason == "rejected"
            assert f"invalid args for {name!r}: release: " in status.error.message
            assert "pattern" in status.error.message
            assert status.jobs == []
    assert os.listdir(tmp_path) == []


# ------------------------------------------------- shipped rollbacks stay inside root


def _rollbacks(jobs: list[JobSpec], each: list[str]) -> list[tuple[str, CallSpec, list[str]]]:
    """Every rollback of ``jobs`` (groups included), with the ``each`` variables in scope."""
    found = []
    for job in jobs:
        names = [*each, job.each.as_] if job.each is not None else each
        if job.rollback is not None:
            found.append((job.name, job.rollback, names))
        found += _rollbacks(job.jobs or [], names)
    return found


def _rollback_context(
    params: dict[str, Any], args: Any = None, data: Any = None
) -> RollbackContext:
    return RollbackContext(
        run_id="run",
        action="act",
        job="job",
        attempt=1,
        args=args,
        output=None,
        completed=True,
        error=None,
        rollback_data=data,
        has_rollback_data=data is not None,
        input=params,
    )


def _tree(base: Path) -> dict[str, str]:
    return {str(p.relative_to(base)): p.read_text() for p in base.rglob("*") if p.is_file()}


@pytest.mark.parametrize("runbook", sorted(p.name for p in ACTIONS.glob("*.yaml")))
@pytest.mark.parametrize("escape", ["traversal", "symlink"])
async def test_every_shipped_rollback_refuses_a_path_outside_its_root(
    runbook: str, escape: str, tmp_path: Path
) -> None:
    """Each rollback runs through the shell kind with a value the arg rules would have refused
    (``../../precious``), or with a valid name whose folder is a symlink out of root: the ones
    that touch a named path fail for good and touch nothing; the others only ever get root."""
    root, precious = tmp_path / "root", tmp_path / "precious"
    precious.mkdir()
    (precious / "state").write_text("precious\n")
    for folder in ("hosts", "releases", "snapshot/v1", "snapshot/precious"):
        (root / folder).mkdir(parents=True)
    for name in ("state", "generation", "service.pid"):
        for snap in ("v1", "precious"):
            (root / "snapshot" / snap / name).write_text("snapshot\n")
    if escape == "symlink":
        name = "v1"  # keeps every rule: the folder it names is what escapes
        (root / "hosts" / "v1").symlink_to(precious)
        (root / "releases" / "v1").symlink_to(precious)
    else:
        name = "../../precious"
    before = _tree(tmp_path)
    action = load_runbook(ACTIONS / runbook)
    args = {"root": str(root), "release": name, "hosts": [name], "fail_host": ""}
    refused = []
    for job, call, variables in _rollbacks(action.plan.jobs, []):
        assert call.kind == "shell", (job, call.kind)
        scope = {"args": args, "jobs": {}, "run": {"id": "run"}, **dict.fromkeys(variables, name)}
        params = render(call.with_, scope)
        if name not in params["argv"]:
            continue  # given only root: it touches fixed names inside root, nothing else
        with pytest.raises(JobError) as caught:
            await KINDS["shell"](_rollback_context(params))
        assert caught.value.non_retryable, (job, caught.value.message)
        assert "refusing" in caught.value.message, (job, caught.value.message)
        refused.append(job)
    assert refused, "a shipped runbook with no rollback that takes a name: update this test"
    assert _tree(tmp_path) == before
    assert (precious / "state").read_text() == "precious\n"


@pytest.mark.parametrize("escape", ["traversal", "symlink"])
async def test_the_sample_actions_rollback_refuses_a_path_outside_its_root(
    escape: str, tmp_path: Path
) -> None:
    root, precious = tmp_path / "site", tmp_path / "precious"
    (root / "releases").mkdir(parents=True)
    precious.mkdir()
    (precious / "index.html").write_text("precious")
    if escape == "symlink":
        (root / "releases" / "v1").symlink_to(precious)
        path = str(root / "releases" / "v1")
    else:
        path = str(root / "releases" / ".." / ".." / "precious")
    args = DeploySiteArgs(root=str(root), release="v1")
    ctx = _rollback_context({}, args, {"path": path, "existed": False})
    with pytest.raises(JobError, match="refusing to remove") as caught:
        remove_build(ctx)
    assert caught.value.non_retryable
    assert (precious / "index.html").read_text() == "precious"
    # The control: a release inside root is removed.
    (root / "releases" / "v2").mkdir()
    remove_build(_rollback_context({}, args, {"path": str(root / "releases" / "v2")}))
    assert not (root / "releases" / "v2").exists()


# --------------------------------------------------------------- file size, metrics


def test_a_runbook_over_the_size_limit_is_refused_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "actions"
    folder.mkdir()
    (folder / "big.yaml").write_text(
        "name: big\njobs: [{name: a, run: noop}]\n" + "#" * MAX_RUNBOOK_BYTES + "\n"
    )
    (folder / "small.yaml").write_text("name: small\njobs: [{name: a, run: noop}]\n")
    with pytest.raises(SpecError) as caught:
        load_runbook(folder / "big.yaml")
    assert str(caught.value) == (
        f"{folder / 'big.yaml'}: the runbook is too large "
        f"(over the limit of {MAX_RUNBOOK_BYTES} bytes)"
    )
    with pytest.raises(SpecError, match="the runbook is too large"):
        load_runbook_text("#" * (MAX_RUNBOOK_BYTES + 1))
    with caplog.at_level(logging.ERROR, logger="sternway.runbooks"):
        loaded = load_folder(folder)
    assert [a.name for a in loaded] == ["small"]
    assert [r.getMessage() for r in caplog.records] == [f"skipped: {caught.value}"]


async def test_validate_refuses_a_too_large_runbook(tmp_path: Path, task_queue: str) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("name: big\njobs: [{name: a, run: noop}]\n" + "#" * MAX_RUNBOOK_BYTES)
    result = await sternway(cli_env("127.0.0.1:1", task_queue), "validate", str(big))
    assert result.code == 2 and "the runbook is too large" in result.err
    assert len(result.err.strip().splitlines()) == 1


async def test_a_busy_metrics_port_is_a_clear_error(task_queue: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = cli_env("127.0.0.1:1", task_queue)
        result = await asyncio.wait_for(sternway(env, "worker", "--metrics-port", str(port)), 60)
    assert result.code == 2, (result.out, result.err)
    assert result.err.strip() == (
        f"error: --metrics-port {port}: cannot serve metrics: Address already in use (os error 98)"
    )
