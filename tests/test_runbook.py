"""YAML runbooks: the loader's errors, its robustness, the plans it compiles, the shipped examples,
worker loading and the CLI's ``validate``/``actions``/``approve``/``reject``."""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sternway import ArgsError, RunHandle, SpecError
from sternway.worker import load_registry
from sternway.workflows._expr import render
from sternway.workflows._runbook import (
    load_folder,
    load_runbook,
    load_runbook_text,
    runbook_version,
)
from sternway.workflows.models import (
    CallSpec,
    CommandResult,
    EachSpec,
    GroupRetrySpec,
    JobSpec,
    RetrySpec,
    RunState,
)
from tests.cli import REPO, cli_env, sternway

ACTIONS = REPO / "actions"


def spec(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# ----------------------------------------------------------------------- invalid runbooks

INVALID = [
    (
        "name: x\njobs: [\n  - a\n",
        "3 document: invalid YAML at column 3: while parsing a flow "
        "node, expected the node content, but found '-'",
    ),
    ("name: x\nname: y\njobs: [{name: a, run: noop}]\n", "2 name: this key is given twice"),
    ("- a\n- b\n", "1 document: a runbook must be a mapping with name and jobs, not a list"),
    ("", "1 document: the document is empty: a runbook is a mapping with name and jobs"),
    ("jobs:\n  - {name: a, run: noop}\n", "1 name: is required"),
    ("name: x\ndescription: y\n", "1 jobs: is required"),
    ("name: x\njobs: []\n", "2 jobs: a runbook needs at least one job"),
    (
        "name: bad name\njobs: [{name: a, run: noop}]\n",
        "1 name: action name 'bad name' is "
        "invalid: use 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit",
    ),
    (
        """
        name: x
        descripton: y
        jobs: [{name: a, run: noop}]
        """,
        "2 descripton: unknown field; did you mean 'description'? "
        "(known: name, description, args, jobs, timeout, max_suspended, locks)",
    ),
    (
        """
        name: x
        jobs:
          - {name: a, run: noop}
          - {name: b, run: noop}
          - name: c
            run: noop
            retry:
              max_attempts: 0
        """,
        "8 jobs[2].retry.max_attempts: must be >= 1",
    ),
    (
        """
        name: x
        jobs:
          - name: a
            run: noop
            retry: {attempts: 2}
        """,
        "5 jobs[0].retry.attempts: unknown field: a job's retry takes max_attempts, "
        "initial_interval, backoff, max_interval and non_retryable_error_types (attempts and "
        "wait are for groups)",
    ),
    (
        """
        name: x
        jobs:
          - name: g
            retry: {max_attempts: 3}
            jobs:
              - {name: a, run: noop}
        """,
        "4 jobs[0].retry.max_attempts: unknown field: a group's retry takes attempts and wait "
        "(its jobs have their own retry)",
    ),
    (
        """
        name: x
        jobs:
          - name: a
            run: noop
            timeout: soon
        """,
        "5 jobs[0].timeout: not a duration: 'soon' (use e.g. 30s, 5m, 1h30m, 250ms)",
    ),
    (
        """
        name: x
        jobs:
          - name: a
            run: noop
            continue_on_error: "yes"
        """,
        "5 jobs[0].continue_on_error: must be true or false, not a string",
    ),
    (
        """
        name: x
        jobs:
          - {name: a, run: noop}
          - {name: a, run: noop}
        """,
        "4 jobs[1].name: job name 'a' is used twice (first at jobs[0]): job names are unique "
        "in a runbook",
    ),
    (
        """
        name: x
        jobs:
          - {name: a, run: noop}
          - name: b
            run: noop
            after:
              - a
              - c
        """,
        "8 jobs[1].after[1]: unknown job 'c' (jobs here: a)",
    ),
    (
        """
        name: x
        jobs:
          - name: g
            jobs:
              - {name: a, run: noop}
          - {name: b, run: noop, after: [a]}
        """,
        "6 jobs[1].after[0]: job 'a' is not in the same list (it is at jobs[0].jobs[0]): "
        "after names jobs of the same list",
    ),
    (
        """
        name: x
        jobs:
          - name: g
            jobs:
              - {name: a, run: noop, after: [c]}
              - {name: b, run: noop, after: [a]}
              - {name: c, run: noop, after: [b]}
        """,
        "5 jobs[0].jobs[0].after: jobs form a cycle: a -> c -> b -> a",
    ),
    (
        """
        name: x
        jobs:
          - name: g
            jobs:
              - {name: a, run: noop}
              - name: b
                run: shel
        """,
        "7 jobs[0].jobs[1].run: unknown job kind 'shel'; did you mean 'shell'? "
        "(known: python, shell, http, noop, fail, sleep, approval, action)",
    ),
    (
        """
        name: x
        jobs:
          - name: a
            run: noop
            jobs: [{name: b, run: noop}]
        """,
        "3 jobs[0]: has both run and jobs: a job either runs a job kind or is a group of jobs",
    ),
    (
        "name: x\njobs:\n  - name: a\n",
        "3 jobs[0]: needs run (a job kind) or jobs (a group of jobs)",
    ),
    (
        """
        name: x
        jobs:
          - name: a
            run: noop
            with:
              x: "${{ args.y + }}"
        """,
        "6 jobs[0].with.x: bad expression in '${{ args.y + }}': unexpected 'end of print "
        "statement'",
    ),
    (
        """
        name: x
        jobs:
          - name: a
            run: noop
            with: {x: "${{ host }}"}
        """,
        "5 jobs[0].with.x: unknown name 'host' in '${{ host }}' (expressions here can read: "
        "args, jobs, run)",
    ),
    # Expressions are evaluated in workflow code: nothing random may reach them.
    (
        """
        name: x
        jobs:
          - name: a
            run: noop
            with: {x: "${{ [1, 2] | random }}"}
        """,
        "5 jobs[0].with.x: bad expression in '${{ [1, 2] | random }}': No filter named 'random'.",
    ),
    (
        """
        name: x
        jobs:
          - name: a
            run: noop
            with: {x: "${{ lipsum(1) }}"}
        """,
        "5 jobs[0].with.x: unknown name 'lipsum' in '${{ lipsum(1) }}' (expressions here can "
        "read: args, jobs, run)",
    ),
    (
        """
        name: x
        args:
          required: [{name: hosts, type: "list[str]"}]
        jobs:
          - name: g
            each: {items: "${{ args.hosts }}", as: host}
            jobs:
              - name: a
                run: noop
                with: {x: "${{ hots }}"}
        """,
        "10 jobs[0].jobs[0].with.x: unknown name 'hots' in '${{ hots }}'; did you mean 'host'? "
        "(expressions here can read: args, host, jobs, run)",
    ),
    (
        """
        name: x
        args:
          required: [{name: root}]
        jobs:
          - name: a
            run: noop
            with: {x: "${{ args.rot }}"}
        """,
        "7 jobs[0].with.x: unknown arg 'rot' in '${{ args.rot }}'; did you mean 'root'? "
        "(args: root)",
    ),
    (
        """
        name: x
        jobs:
          - name: a
            run: noop
            if: "${{ jobs.b.output.ok }}"
        """,
        "5 jobs[0].if: unknown job 'b' in '${{ jobs.b.output.ok }}'",
    ),
    (
        """
        name: x
        jobs:
          - name: a
            run: noop
            if: args.enabled
        """,
        "5 jobs[0].if: must be true, false or one ${{ ... }} expression, e.g. "
        '"${{ args.enabled }}"',
    ),
    (
        """
        name: x
        jobs:
          - name: a
            run: noop
            each: {items: 3, as: host}
        """,
        "5 jobs[0].each.items: must be a list or one ${{ ... }} expression, e.g. "
        '"${{ args.hosts }}"',
    ),
    (
        """
        name: x
        args:
          optional:
            - {name: n, type: integer, default: 1}
        jobs: [{name: a, run: noop}]
        """,
        "4 args.optional[0].type: unknown arg type 'integer' (known: str, int, float, bool, "
        "duration, list[str], secret)",
    ),
    (
        """
        name: x
        args:
          optional:
            - name: n
              type: int
              default: three
        jobs: [{name: a, run: noop}]
        """,
        "6 args.optional[0].default: 'three' does not fit type int: input should be a valid "
        "integer, unable to parse string as an integer",
    ),
    (
        """
        name: x
        args:
          required: [{name: host}]
          static:
            - {name: host, value: web1}
        jobs: [{name: a, run: noop}]
        """,
        "5 args.static[0].name: arg 'host' is declared twice (first at args.required[0])",
    ),
    (
        """
        name: x
        jobs:
          - name: a
            run: shell
            with: {agrv: [ls]}
        """,
        "5 jobs[0].with.agrv: unknown parameter of shell jobs; did you mean 'argv'? "
        "(known: args, argv, cwd, env, non_retryable_exit_codes, script, shell, timeout)",
    ),
    (
        """
        name: x
        jobs:
          - name: a
            run: shell
            with: {script: "echo hi"}
        """,
        "5 jobs[0].with.script: is only allowed with shell: true (or give argv, the program and "
        "its arguments)",
    ),
    (
        """
        name: x
        jobs:
          - name: a
            run: shell
            with: {argv: [echo], args: [hi]}
        """,
        "5 jobs[0].with.args: is only allowed with shell: true and script; use argv for a program",
    ),
    (
        """
        name: x
        jobs:
          - name: a
            run: shell
            with: {argv: [/bin/bash, -e, -c, "echo ${{ run.id }}"]}
        """,
        "5 jobs[0].with.argv[3]: a shell's -c script must not hold ${{ }} (a value pasted into "
        "script text is run as shell code); pass values after the script and read them as "
        """"$1": argv: [/bin/bash, -c, 'echo "$1"', sh, "${{ args.msg }}"]""",
    ),
    (
        """
        name: x
        jobs:
          - name: a
            run: approval
            with:
              timeout: 1h
              on_timeout: explode
        """,
        "7 jobs[0].with.on_timeout: must be one of fail, rollback, approve",
    ),
    (
        """
        name: x
        jobs:
          - name: a
            run: noop
            rollback: {run: approval}
        """,
        "5 jobs[0].rollback.run: a rollback cannot be of kind 'approval' (use one of python, "
        "shell, http, noop, fail)",
    ),
    (
        """
        name: x
        jobs:
          - name: g
            timeout: 5m
            jobs: [{name: a, run: noop}]
        """,
        "4 jobs[0].timeout: a group cannot have timeout: give it to the jobs of the group",
    ),
    (
        """
        name: x
        jobs:
          - name: a
            run: noop
            each: {items: [1, 2], as: args}
        """,
        "5 jobs[0].each.as: 'args' is reserved: choose another name",
    ),
    ("name: x\njobs: &a\n  - *a\n", "2 jobs[0]: an alias refers to a node that contains it"),
    (
        "name: x\njobs:\n  - name: a\n    run: noop\n    with: {limit: -.inf}\n",
        "5 jobs[0].with.limit: -.inf is not a finite number, and JSON (a run's plan and args) "
        "has no infinity or NaN: quote it ('-.inf') if it is text",
    ),
    (
        "name: x\nargs:\n  optional:\n    - {name: n, type: float, default: .NaN}\n"
        "jobs: [{name: a, run: noop}]\n",
        "4 args.optional[0].default: .NaN is not a finite number, and JSON (a run's plan and "
        "args) has no infinity or NaN: quote it ('.NaN') if it is text",
    ),
    (
        # Deeper than the workflow's JSON reader would take back from the recorded plan.
        "name: x\njobs:\n  - name: a\n    run: noop\n    with:\n      x: "
        + "[" * 150
        + "1"
        + "]" * 150
        + "\n",
        "6 jobs[0].with.x: nested more than 100 levels deep, the limit",
    ),
    (
        "name: !foo x\njobs: []\n",
        "1 document: invalid YAML at column 7: could not determine a "
        "constructor for the tag '!foo'",
    ),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid_runbooks_name_file_line_and_field(text: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_runbook_text(spec(text), "actions/bad.yaml")
    assert str(caught.value) == f"actions/bad.yaml:{message}"


def test_load_runbook_names_the_file_and_reads_bytes(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"name: x\njobs:\n  - {name: a, run: noop, \xff: 1}\n")
    with pytest.raises(SpecError, match=rf"^{path}:3 document: not UTF-8 text \(byte 39\)$"):
        load_runbook(path)
    with pytest.raises(SpecError, match=r"cannot read the runbook"):
        load_runbook(tmp_path / "missing.yaml")


# --------------------------------------------------------------- only SpecError, whatever


def _check_only_spec_errors(text: str | bytes) -> None:
    try:
        load_runbook_text(text, "fuzz.yaml")
    except SpecError as err:
        message = str(err)
        assert message.startswith("fuzz.yaml:"), message
        assert "\n" not in message, message
        assert "internal error" not in message, message


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, width=32)
    | st.text(max_size=8)
    | st.sampled_from(
        [
            "${{ args.root }}",
            "${{",
            "${{ x | nosuch }}",
            "${{ host }}",
            "1s",
            "-1s",
            "list[str]",
            "shell",
            "noop",
            "approval",
            "secret",
            "duration",
            "a b",
            "${% if %}",
        ]
    )
)
_FIELDS = [
    "name", "jobs", "run", "with", "args", "required", "optional", "static", "type", "default",
    "each", "items", "as", "retry", "after", "if", "rollback", "attempts", "max_attempts",
    "timeout", "argv", "concurrency", "value", "url", "function",
]  # fmt: skip
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values)
def test_random_yaml_documents_raise_only_spec_errors(value: Any) -> None:
    _check_only_spec_errors(yaml.safe_dump(value))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_random_text_raises_only_spec_errors(text: str | bytes) -> None:
    _check_only_spec_errors(text)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*path, i))
    return found


_EXAMPLES = [yaml.safe_load(p.read_text()) for p in sorted(ACTIONS.glob("*.yaml"))]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_runbooks_raise_only_spec_errors(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(_EXAMPLES)))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)[1:]))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(_values)
    _check_only_spec_errors(yaml.safe_dump(doc, sort_keys=False))


# ---------------------------------------------------------------------- compiled plans

VALID = """
name: fleet-op
description: a little of everything
timeout: 2h
max_suspended: 30m
args:
  required:
    - {name: hosts, type: "list[str]", desc: the hosts}
    - {name: token, type: secret, desc: API token}
  optional:
    - {name: wait, type: duration, default: 1m30s}
    - {name: retries, type: int, default: 3}
    - {name: dry_run, type: bool, default: false}
    - {name: ratio, type: float}
  static:
    - {name: service, default: web}
    - {name: ports, value: [80, 443]}
jobs:
  - name: prepare
    run: noop
    with: {hosts: "${{ args.hosts }}"}
  - name: per-host
    after: [prepare]
    each: {items: "${{ args.hosts }}", as: host, concurrency: 2}
    retry: {attempts: 3, wait: 10s}
    task_queue: edge
    jobs:
      - name: drain
        run: shell
        with: {argv: [echo, drain, "${{ host }}", 8080], env: {PORT: 80}}
        rollback: {run: shell, with: {argv: [echo, undrain, "${{ host }}"]}}
        rollback_retry: {max_attempts: 5}
      - name: wait
        after: [drain]
        if: "${{ not args.dry_run }}"
        run: sleep
        with: {duration: 2s}
      - name: check
        after: [wait]
        run: http
        retry: {max_attempts: 4, initial_interval: 500ms, backoff: 1.5, max_interval: 5s}
        timeout: 30s
        heartbeat_timeout: 10s
        with: {url: "https://${{ host }}/health", method: get, expect: 200}
  - name: gate
    after: [per-host]
    run: approval
    if: true
    continue_on_error: true
    with: {timeout: 1h, on_timeout: rollback, require_token: true}
  - name: notify
    after: [gate]
    run: python
    with: {function: tests.scripted.step, channel: "#ops", who: "${{ jobs['per-host'] }}"}
"""


def test_a_valid_runbook_compiles_to_the_expected_plan() -> None:
    action = load_runbook_text(VALID, "fleet.yaml")
    plan = action.plan
    assert (plan.name, plan.description, plan.timeout, plan.max_suspended) == (
        "fleet-op", "a little of everything", 7200.0, 1800.0,
    )  # fmt: skip
    assert action.source == "fleet.yaml"
    assert action.static == {"service": "web", "ports": [80, 443]}
    assert plan.jobs == [
        JobSpec(
            name="prepare",
            execute=CallSpec(kind="noop", **{"with": {"hosts": "${{ args.hosts }}"}}),
        ),
        JobSpec(
            name="per-host",
            after=["prepare"],
            each=EachSpec(items="${{ args.hosts }}", as_="host", concurrency=2),
            group_retry=GroupRetrySpec(attempts=3, wait=10.0),
            task_queue="edge",
            jobs=[
                JobSpec(
                    name="drain",
                    execute=CallSpec(
                        kind="shell",
                        **{
                            "with": {
                                "argv": ["echo", "drain", "${{ host }}", "8080"],
                                "env": {"PORT": "80"},
                            }
                        },
                    ),
                    rollback=CallSpec(
                        kind="shell", **{"with": {"argv": ["echo", "undrain", "${{ host }}"]}}
                    ),
                    rollback_retry=RetrySpec(max_attempts=5),
                    task_queue="edge",
                ),
                JobSpec(
                    name="wait",
                    after=["drain"],
                    if_="${{ not args.dry_run }}",
                    execute=CallSpec(kind="sleep", **{"with": {"duration": 2.0}}),
                    task_queue="edge",
                ),
                JobSpec(
                    name="check",
                    after=["wait"],
                    execute=CallSpec(
                        kind="http",
                        **{
                            "with": {
                                "url": "https://${{ host }}/health",
                                "method": "GET",
                                "expect": [200],
                            }
                        },
                    ),
                    retry=RetrySpec(
                        max_attempts=4, initial_interval=0.5, backoff=1.5, max_interval=5.0
                    ),
                    timeout=30.0,
                    heartbeat_timeout=10.0,
                    task_queue="edge",
                ),
            ],
        ),
        JobSpec(
            name="gate",
            after=["per-host"],
            if_="true",
            continue_on_error=True,
            execute=CallSpec(
                kind="approval",
                **{"with": {"timeout": 3600.0, "on_timeout": "rollback", "require_token": True}},
            ),
        ),
        JobSpec(
            name="notify",
            after=["gate"],
            execute=CallSpec(
                kind="python",
                ref="tests.scripted.step",
                **{"with": {"channel": "#ops", "who": "${{ jobs['per-host'] }}"}},
            ),
        ),
    ]


def test_args_are_typed_defaulted_static_and_secrets_masked() -> None:
    action = load_runbook_text(VALID, "fleet.yaml")
    args, masked = action.validate_args({"hosts": ["a", "b"], "token": "s3cret", "wait": "2m"})
    assert args == {
        "hosts": ["a", "b"], "token": "s3cret", "wait": 120.0, "retries": 3, "dry_run": False,
        "ratio": None, "service": "web", "ports": [80, 443],
    }  # fmt: skip
    assert masked["token"] == "**********" and "s3cret" not in str(masked)
    assert {k: v for k, v in masked.items() if k != "token"} == {
        k: v for k, v in args.items() if k != "token"
    }
    with pytest.raises(ArgsError, match="arg 'service' of 'fleet-op' is static"):
        action.validate_args({"hosts": [], "token": "x", "service": "db"})
    with pytest.raises(ArgsError, match="token: Field required"):
        action.validate_args({"hosts": []})
    with pytest.raises(ArgsError, match="wait: not a duration: 'soon'"):
        action.validate_args({"hosts": [], "token": "x", "wait": "soon"})
    with pytest.raises(ArgsError, match="nope: Extra inputs are not permitted"):
        action.validate_args({"hosts": [], "token": "x", "nope": 1})
    schema = action.plan.args_schema["properties"]
    assert schema["hosts"]["description"] == "the hosts"
    assert schema["wait"] == {
        "type": "string", "format": "duration", "default": 90.0, "title": "Wait"
    }  # fmt: skip
    assert action.plan.args_schema["required"] == ["hosts", "token"]


def test_a_runbook_without_args_takes_none_and_keeps_its_statics() -> None:
    action = load_runbook_text(
        spec(
            """
            name: tiny
            args: {static: [{name: env, type: str, default: prod}]}
            jobs: [{name: a, run: noop, with: {env: "${{ args.env }}"}}]
            """
        ),
        "tiny.yaml",
    )
    assert action.args_model is None and action.plan.args_schema == {}
    assert action.validate_args({}) == ({"env": "prod"}, {"env": "prod"})
    with pytest.raises(ArgsError, match="static"):
        action.validate_args({"env": "dev"})


def test_yaml_conveniences_merge_keys_and_plain_values() -> None:
    merged = load_runbook_text(
        spec(
            """
            name: merged
            jobs:
              - name: a
                run: noop
                retry: &retry {max_attempts: 3, initial_interval: 2s}
              - name: b
                run: noop
                retry: {<<: *retry, max_attempts: 5}
                with: {when: 2024-01-02, on: yes, text: '.inf', .nan: 1.0e+3}
            """
        ),
        "m.yaml",
    )
    b = merged.plan.job("b")
    assert (b.retry.max_attempts, b.retry.initial_interval) == (5, 2.0)
    assert b.execute is not None
    assert b.execute.with_ == {"when": "2024-01-02", "on": True, "text": ".inf", ".nan": 1000.0}


# ------------------------------------------------------------------- the shipped runbooks

SAMPLE_ARGS: dict[str, dict[str, Any]] = {
    "rolling-restart": {"root": "/tmp/fleet", "hosts": ["web1", "web2", "web3"]},
    "release-with-approval": {"root": "/tmp/site", "release": "v2"},
}


def test_every_shipped_runbook_loads_and_takes_sample_args() -> None:
    actions = load_folder(ACTIONS)
    assert sorted(a.name for a in actions) == sorted(SAMPLE_ARGS)
    for action in actions:
        assert action.source is not None and action.source.startswith(str(ACTIONS))
        args, _ = action.validate_args(SAMPLE_ARGS[action.name])
        assert set(SAMPLE_ARGS[action.name]) <= set(args)
    restart = next(a for a in actions if a.name == "rolling-restart")
    group = restart.plan.job("per-host")
    assert group.each is not None and group.each.concurrency == 2
    assert group.group_retry.attempts == 2
    assert [j.name for j in group.jobs or []] == ["drain", "restart", "settle", "check", "undrain"]


class _Simulation:
    """Runs a runbook's jobs in file order on this machine, without Temporal: every shell job
    for real, http checks with urllib, sleeps and approvals skipped. It proves the shipped
    scripts work on any machine; the engine's own semantics are tested elsewhere."""

    def __init__(self, action: Any, args: dict[str, Any]) -> None:
        self.args, _ = action.validate_args(args)
        self.action = action
        self.started: list[tuple[JobSpec, dict[str, Any]]] = []

    def run(self) -> None:
        self._jobs(self.action.plan.jobs, {})

    def _jobs(self, jobs: list[JobSpec], scope: dict[str, Any]) -> None:
        done: set[str] = set()
        for job in jobs:
            assert set(job.after) <= done, f"{job.name} is listed before a job it runs after"
            items = [None]
            if job.each is not None:
                items = render(job.each.items, self._context(scope))
            for item in items:
                inner = scope if job.each is None else {**scope, job.each.as_: item}
                if job.if_ is not None and not render(job.if_, self._context(inner)):
                    continue
                if job.jobs is not None:
                    self._jobs(job.jobs, inner)
                else:
                    assert job.execute is not None
                    self.started.append((job, inner))
                    self._call(job.execute, inner, job.retry.max_attempts)
            done.add(job.name)

    def rollback(self) -> None:
        for job, scope in reversed(self.started):
            if job.rollback is not None:
                self._call(job.rollback, scope, 1)

    def _context(self, scope: dict[str, Any]) -> dict[str, Any]:
        return {"args": self.args, "jobs": {}, "run": {"id": "sim"}, **scope}

    def _call(self, call: CallSpec, scope: dict[str, Any], attempts: int) -> None:
        params = render(call.with_, self._context(scope))
        if call.kind == "shell":
            done = subprocess.run(params["argv"], capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, (params["argv"][0], done.stdout, done.stderr)
        elif call.kind == "http":
            for attempt in range(attempts):
                try:
                    with urllib.request.urlopen(params["url"], timeout=5) as answer:
                        assert answer.status in params.get("expect", [200])
                        return
                except OSError:
                    if attempt == attempts - 1:
                        raise
                    time.sleep(0.3)
        else:
            assert call.kind in ("sleep", "approval", "noop"), call.kind


def test_rolling_restart_scripts_restart_and_roll_back(tmp_path: Path) -> None:
    (tmp_path / "hosts" / "web1").mkdir(parents=True)
    (tmp_path / "hosts" / "web1" / "generation").write_text("7\n")
    action = load_runbook(ACTIONS / "rolling-restart.yaml")
    sim = _Simulation(action, {"root": str(tmp_path), "hosts": ["web1", "web2"], "settle": 0})
    sim.run()
    hosts = tmp_path / "hosts"
    assert (hosts / "web1" / "generation").read_text().strip() == "8"
    assert (hosts / "web2" / "generation").read_text().strip() == "2"
    assert {(hosts / h / "state").read_text().strip() for h in ("web1", "web2")} == {"serving"}
    assert (tmp_path / "snapshot" / "web1" / "generation").read_text().strip() == "7"
    pid_before = (tmp_path / "snapshot" / "web2" / "service.pid").read_text()
    sim.rollback()
    assert (hosts / "web1" / "generation").read_text().strip() == "7"
    assert (hosts / "web2" / "generation").read_text().strip() == "1"
    assert (hosts / "web2" / "service.pid").read_text() == pid_before
    assert {(hosts / h / "state").read_text().strip() for h in ("web1", "web2")} == {"serving"}


def test_rolling_restart_check_fails_for_the_fail_host(tmp_path: Path) -> None:
    action = load_runbook(ACTIONS / "rolling-restart.yaml")
    sim = _Simulation(action, {"root": str(tmp_path), "hosts": ["a", "b"], "fail_host": "b"})
    with pytest.raises(AssertionError, match="health check failed"):
        sim.run()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_release_with_approval_scripts_release_and_roll_back(tmp_path: Path) -> None:
    action = load_runbook(ACTIONS / "release-with-approval.yaml")
    args = {"root": str(tmp_path), "release": "v2", "port": _free_port()}
    sim = _Simulation(action, args)
    try:
        sim.run()
        assert os.readlink(tmp_path / "current") == os.path.join("releases", "v2")
        assert "release v2" in (tmp_path / "current" / "index.html").read_text()
        assert not (tmp_path / "preview.pid").exists()  # stop-preview stopped it
        sim.rollback()
        assert not (tmp_path / "current").exists()
        assert not (tmp_path / "releases" / "v2").exists()
    finally:
        pidfile = tmp_path / "preview.pid"
        if pidfile.exists():  # a failed run must not leave the server behind
            os.kill(int(pidfile.read_text()), signal.SIGTERM)


# --------------------------------------------------------------------- worker loading


def test_registry_loads_the_shipped_folder_and_actions_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STERNWAY_ACTIONS_PATH", raising=False)
    monkeypatch.delenv("STERNWAY_MODULES", raising=False)
    shipped = load_registry()
    assert {"deploy-site", "rolling-restart", "release-with-approval"} <= {a.name for a in shipped}
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    (one / "a.yml").write_text("name: yaml-a\njobs: [{name: j, run: noop}]\n")
    (two / "b.yaml").write_text("name: yaml-b\njobs: [{name: j, run: noop}]\n")
    (two / "notes.txt").write_text("not a runbook")
    monkeypatch.setenv("STERNWAY_ACTIONS_PATH", f"{one}{os.pathsep}{two}")
    names = {a.name for a in load_registry()}
    assert {"yaml-a", "yaml-b", "deploy-site"} <= names and "rolling-restart" not in names
    assert load_registry().get("yaml-b").source == str(two / "b.yaml")
    monkeypatch.setenv("STERNWAY_ACTIONS_PATH", "")
    assert "rolling-restart" not in {a.name for a in load_registry()}


def test_a_runbook_named_like_a_python_action_names_both_sources(tmp_path: Path) -> None:
    (tmp_path / "deploy.yaml").write_text("name: deploy-site\njobs: [{name: j, run: noop}]\n")
    with pytest.raises(SpecError) as caught:
        load_registry([], [tmp_path])
    assert str(caught.value) == (
        f"action 'deploy-site' is defined twice: in {tmp_path / 'deploy.yaml'} and in "
        "Python module sternway.activities.site"
    )
    (tmp_path / "deploy.yaml").write_text("name: same\njobs: [{name: j, run: noop}]\n")
    (tmp_path / "same.yaml").write_text("name: same\njobs: [{name: j, run: noop}]\n")
    with pytest.raises(SpecError, match=r"same.yaml: action 'same' is also defined in .*deploy"):
        load_registry([], [tmp_path])
    with pytest.raises(SpecError, match="not a folder of runbooks"):
        load_registry([], [tmp_path / "missing"])


# -------------------------------------------------------------------- approve and reject


async def test_approve_and_reject_send_their_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, Any]] = []

    async def command(self: RunHandle, name: str, payload: Any) -> CommandResult:
        sent.append((name, payload))
        return CommandResult(state=RunState.RUNNING, message="ok")

    monkeypatch.setattr(RunHandle, "_command", command)
    handle = RunHandle.__new__(RunHandle)
    await handle.approve("gate", token="t0k", comment="looks good")
    await handle.approve("gate")
    await handle.reject("gate", reason="not today")
    assert sent == [
        ("approve", {"job": "gate", "token": "t0k", "comment": "looks good"}),
        ("approve", {"job": "gate", "token": "", "comment": ""}),
        ("reject", {"job": "gate", "token": "", "comment": "not today"}),
    ]


# ---------------------------------------------------------------------------- the CLI


@pytest.fixture
def env() -> dict[str, str]:
    """No server is needed: these commands never connect (the address goes nowhere)."""
    return cli_env("127.0.0.1:1", "tq-runbook")


def clean(result: Any) -> None:
    assert "Traceback" not in result.err and "Traceback" not in result.out, result.err


async def test_cli_validates_runbook_files(env: dict[str, str], tmp_path: Path) -> None:
    ok = await sternway(env, "validate", "actions/rolling-restart.yaml")
    assert ok.code == 0, ok.err
    assert "actions/rolling-restart.yaml: rolling-restart: the runbook is valid" in ok.out
    with_args = await sternway(
        env, "validate", "actions/rolling-restart.yaml", "--arg", "root=/tmp/f",
        "--arg", "hosts=a,b", "--arg", "settle=2s",
    )  # fmt: skip
    assert with_args.code == 0 and "the runbook and its args are valid" in with_args.out
    bad_args = await sternway(
        env, "validate", "actions/rolling-restart.yaml", "--arg", "root=/x", "--arg", "service=db"
    )
    clean(bad_args)
    assert bad_args.code == 2 and "arg 'service' of 'rolling-restart' is static" in bad_args.err
    numbers = tmp_path / "numbers.yaml"
    numbers.write_text(
        "name: numbers\nargs:\n  optional:\n    - {name: n, type: float, default: 1.5}\n"
        "jobs: [{name: a, run: noop}]\n"
    )
    args_file = tmp_path / "args.yaml"
    args_file.write_text("n: -.inf\n")
    for options, where in (
        (["--arg", "n=nan"], "args.n is nan"),
        (["--arg", "n=-Infinity"], "args.n is -inf"),
        (["--args-file", str(args_file)], "args.n is -inf"),
    ):
        refused = await sternway(env, "validate", str(numbers), *options)
        clean(refused)
        assert refused.code == 2, refused
        assert refused.err.strip() == (f"error: {where}: JSON has no infinity or NaN")

    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "name: broken\njobs:\n  - name: a\n    run: noop\n    retry: {max_attempts: 0}\n"
    )
    result = await sternway(env, "validate", str(broken))
    clean(result)
    assert result.code == 2
    assert result.err.strip() == f"error: {broken}:5 jobs[0].retry.max_attempts: must be >= 1"
    missing = await sternway(env, "validate", str(tmp_path / "nope.yml"))
    clean(missing)
    assert missing.code == 2 and "cannot read the runbook" in missing.err

    clash = tmp_path / "clash.yaml"
    clash.write_text("name: deploy-site\njobs: [{name: a, run: noop}]\n")
    clashed = await sternway(env, "validate", str(clash))
    assert clashed.code == 2 and "action 'deploy-site' is already defined in" in clashed.err


async def test_cli_lists_yaml_actions_with_their_source(env: dict[str, str]) -> None:
    listed = await sternway(env, "actions", "--json")
    assert listed.code == 0, listed.err
    actions = {a["name"]: a for a in listed.json()}
    assert actions["deploy-site"]["source"] is None
    restart = actions["rolling-restart"]
    assert set(restart) == {"name", "description", "args", "source", "version"}
    assert restart["source"] == str(ACTIONS / "rolling-restart.yaml")
    # No worker answers here: the version of the file this command loaded.
    assert restart["version"] == runbook_version((ACTIONS / "rolling-restart.yaml").read_bytes())
    assert actions["deploy-site"]["version"] == "python"
    args = {a["name"]: a for a in restart["args"]}
    assert args["hosts"] == {
        "name": "hosts", "type": "array", "format": None, "required": True, "default": None,
        "description": "the hosts to restart",
        "constraints": {"items": {"pattern": "[A-Za-z0-9][A-Za-z0-9._-]{0,63}"}},
    }  # fmt: skip
    assert "service" not in args  # static: not an arg callers give
    table = await sternway(env, "actions")
    assert table.code == 0 and "rolling-restart" in table.out
    assert "settle: duration = 1s" in table.out and "rolling-restart.yaml; version " in table.out
    # The rules show as written: "[A-Za-z0-9]" is data, not markup that would vanish.
    assert "each item: pattern [A-Za-z0-9][A-Za-z0-9._-]{0,63}" in table.out


async def test_cli_approve_and_reject_need_a_server(env: dict[str, str]) -> None:
    for command in (["approve", "run-1", "gate", "--token", "t"], ["reject", "run-1", "gate"]):
        result = await sternway(env, *command, timeout=30)
        clean(result)
        assert result.code == 4 and "cannot reach Temporal" in result.err
    usage = await sternway(env, "approve", "run-1")
    assert usage.code == 2 and "Missing argument 'JOB'" in usage.err
