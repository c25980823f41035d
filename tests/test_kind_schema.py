"""`validate` and the run apply one rule to a job kind's `with` (workflows/_kind_params.py).

One table drives both: each row is loaded as a runbook (what `sternway validate` does) and run
on a real worker, and the two must agree: the loader refuses exactly the rows whose job the run
rejects (reason ``rejected``). The words may differ where the loader knows more (the line, the
key); the rule does not. A row the loader refuses can only reach a worker through the Python
API, which is how it is run here.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from sternway.workflows._actions import Action, Job
from sternway.workflows._runbook import load_runbook_text
from sternway.workflows.errors import SpecError
from tests.test_kinds import action, greet, job, run_all


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


URL = f"http://127.0.0.1:{_closed_port()}/x"

# (kind, with, None when both accept it, else a piece of the message both give)
TABLE: list[tuple[str, dict[str, Any], str | None]] = [
    ("shell", {"argv": ["true"]}, None),
    ("shell", {"argv": ["true", 1, True], "env": {"A": "1"}, "cwd": "/"}, None),
    ("shell", {"argv": ["true"], "non_retryable_exit_codes": 3}, None),
    ("shell", {"shell": True, "script": 'test "$1" = x', "args": ["x"]}, None),
    ("shell", {"script": "echo hi"}, "only allowed with shell: true"),
    ("shell", {"argv": ["true"], "script": "true"}, "not both"),
    ("shell", {"argv": "ls -l"}, "list"),
    ("shell", {"argv": []}, "non-empty list"),
    ("shell", {"argv": [""]}, "argv[0], the program to run, is empty"),
    ("shell", {"argv": ["ls", "a\0b"]}, "NUL"),
    ("shell", {"argv": ["ls", None]}, "argv[1]"),
    ("shell", {"argv": ["true"], "env": {"A=B": "1"}}, "not a valid variable name"),
    ("shell", {"argv": ["true"], "env": {"": "1"}}, "not a valid variable name"),
    ("shell", {"argv": ["true"], "cwd": ""}, "cwd must be a directory path"),
    ("shell", {"argv": ["true"], "timeout": "soon"}, "not a duration"),
    ("shell", {"argv": ["true"], "non_retryable_exit_codes": [300]}, "0"),
    ("shell", {"shell": True, "script": "  "}, "non-empty string"),
    ("shell", {"argv": ["true"], "args": ["x"]}, "only allowed with shell: true"),
    ("shell", {"argv": ["true"], "timout": "1s"}, "timout"),
    ("http", {"url": URL, "timeout": 5}, None),
    ("http", {"url": URL, "method": "post", "json": {"a": 1}, "expect": 201}, None),
    ("http", {}, "url"),
    ("http", {"url": "ftp://example.com/x"}, "http:// or https://"),
    ("http", {"url": "http://"}, "http"),
    ("http", {"url": URL, "method": "FETCH"}, "must be one of"),
    ("http", {"url": URL, "json": {}, "body": "x"}, "not both"),
    ("http", {"url": URL, "headers": {"X": "a\r\nB: c"}}, "line break"),
    ("http", {"url": URL, "headers": {"X Y": "1"}}, "not a valid header name"),
    ("http", {"url": URL, "expect": [200, 700]}, "expect"),
    ("http", {"url": URL, "expect": []}, "expect"),
    ("http", {"url": URL, "follow_redirects": "yes"}, "true or false"),
    ("http", {"url": URL, "verb": "GET"}, "verb"),
    ("fail", {"message": "no", "type": "Planned", "non_retryable": True}, None),
    ("fail", {"message": 5}, None),
    ("fail", {"non_retryable": "yes"}, "true or false"),
    ("fail", {"reason": "x"}, "reason"),
    ("python", {"function": "tests.test_kinds.greet", "name": "w"}, None),
    ("python", {}, "function is required"),
    ("python", {"function": "greet"}, "dotted"),
    ("python", {"function": "tests.test_kinds.greet()"}, "dotted"),
    ("noop", {"anything": [1, {"b": None}]}, None),
]


def validate(kind: str, params: dict[str, Any]) -> str | None:
    """What `validate` says of a runbook with this one job: None, or its message."""
    text = yaml.safe_dump(
        {"name": "kind-table", "jobs": [{"name": "j", "run": kind, "with": params}]}
    )
    try:
        load_runbook_text(text)
    except SpecError as err:
        return str(err)
    return None


def runnable(i: int, kind: str, params: dict[str, Any]) -> Action:
    """The row as the worker gets it: the loaded plan when the loader accepts it, else the
    same `with` through the Python API."""
    name = f"kind-table-{i}"
    if validate(kind, params) is None:
        text = yaml.safe_dump({"name": name, "jobs": [{"name": "j", "run": kind, "with": params}]})
        return load_runbook_text(text)
    return action(name, job("j", kind, params))


@pytest.mark.parametrize(("kind", "params", "problem"), TABLE)
def test_validate_refuses_exactly_the_rows_the_run_rejects(
    kind: str, params: dict[str, Any], problem: str | None
) -> None:
    said = validate(kind, params)
    if problem is None:
        assert said is None
    else:
        assert said is not None and problem in said


async def test_the_run_rejects_exactly_the_rows_validate_refuses(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    actions = [runnable(i, kind, params) for i, (kind, params, _) in enumerate(TABLE)]
    # A runbook's python job calls a function that a Python action registered in the worker.
    registers = Action("kind-table-functions", [Job("greet", greet, input={"name": "w"})])
    *statuses, _ = await run_all(dev_env, task_queue, *actions, registers)
    for (kind, params, problem), status in zip(TABLE, statuses, strict=True):
        ran = status.job("j")
        rejected = ran.error is not None and ran.error.reason == "rejected"
        assert rejected == (problem is not None), f"{kind} {params}: {ran.state} {ran.error}"
