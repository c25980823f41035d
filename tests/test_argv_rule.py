"""One rule for the values of a shell job's ``argv`` (workflows/_argv.py): ``validate`` (the
loader) and the shell kind at run time treat each value the same way. Scalars become their JSON
text; null, lists and mappings are refused with the same message, naming a form that works."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from sternway import submit
from sternway.worker import create_worker
from sternway.workflows._actions import Registry
from sternway.workflows._runbook import load_runbook_text
from sternway.workflows.errors import SpecError
from tests.cli import cli_env, sternway

PRINT_ARGV = "import sys, json; print(json.dumps(sys.argv[1:]))"

# (case, the YAML of the argv element, what the expression gives, argument or refusal)
TABLE: list[tuple[str, str, str, str]] = [
    ("true", "true", "${{ args.flag }}", '"true"'),
    ("false", "false", "${{ args.off }}", '"false"'),
    ("int", "3", "${{ args.n }}", '"3"'),
    ("float", "2.5", "${{ args.x }}", '"2.5"'),
    ("string", "'yes'", "${{ args.word }}", '"yes"'),
    ("null", "null", "${{ args.note }}", "is null"),
    ("list", "[a, b]", "${{ args.hosts }}", "is a list"),
    ("mapping", "{a: 1}", "${{ {'a': 1} }}", "is a mapping"),
]

ARGS = """
args:
  required:
    - {name: hosts, type: "list[str]"}
  optional:
    - {name: flag, type: bool, default: true}
    - {name: "off", type: bool, default: false}
    - {name: n, type: int, default: 3}
    - {name: x, type: float, default: 2.5}
    - {name: word, type: str, default: "yes"}
    - {name: note, type: str}
"""


def _job(name: str, element: str) -> str:
    argv = json.dumps([sys.executable, "-c", PRINT_ARGV])[:-1]
    return (
        f"  - {{name: {name}, run: shell, continue_on_error: true,\n"
        f"     with: {{argv: {argv}, {element}]}}}}\n"
    )


def runbook(name: str, jobs: str) -> str:
    return f"name: {name}\n{ARGS}jobs:\n{jobs}"


def _outcome(expected: str) -> tuple[bool, str]:
    """(accepted, the argument as JSON or the refusal's words)."""
    return expected.startswith('"'), expected


@pytest.mark.parametrize(("case", "literal", "expr", "expected"), TABLE, ids=[t[0] for t in TABLE])
def test_validate_applies_the_rule_to_literals(
    case: str, literal: str, expr: str, expected: str
) -> None:
    text = runbook("argv-literal", _job("j", literal))
    accepted, words = _outcome(expected)
    if accepted:
        execute = load_runbook_text(text, "t.yaml").plan.jobs[0].execute
        assert execute is not None and execute.with_["argv"][3] == json.loads(words)
    else:
        with pytest.raises(SpecError) as caught:
            load_runbook_text(text, "t.yaml")
        assert f"jobs[0].with.argv[3]: {words}" in str(caught.value)
    # An expression is checked when the run renders it: validate accepts it as it is.
    load_runbook_text(runbook("argv-expr", _job("j", json.dumps(expr))), "t.yaml")


async def test_validate_cli_shows_the_refusal_with_a_working_form(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(runbook("argv-bad", _job("j", "[a, b]")))
    result = await sternway(cli_env("127.0.0.1:1", "tq"), "validate", str(path))
    assert result.code == 2, result
    assert "argv[3]: is a list" in result.err and "join(',')" in result.err


async def test_a_run_applies_the_same_rule(dev_env: WorkflowEnvironment, task_queue: str) -> None:
    """Literals and expression results, one job each: the argument each job got, or its
    refusal, is what the loader gives or says for the same literal."""
    accepted_literals = "".join(
        _job(f"lit-{case}", literal) for case, literal, _, exp in TABLE if exp.startswith('"')
    )
    exprs = "".join(_job(f"expr-{case}", json.dumps(expr)) for case, _, expr, _ in TABLE)
    # In text around expressions, a bool and a number are written the same way.
    exprs += _job("text", json.dumps("--flag=${{ args.flag }},${{ args.off }},${{ args.x }}"))
    action = load_runbook_text(runbook("argv-run", accepted_literals + exprs), "t.yaml")
    async with create_worker(dev_env.client, Registry([action]), task_queue=task_queue):
        handle = await submit(
            dev_env.client, "argv-run", {"hosts": ["a", "b"]}, task_queue=task_queue
        )
        status = await handle.wait()
    seen: dict[str, Any] = {}
    for job in status.jobs:
        if job.error is not None:
            seen[job.name] = job.error.message
        else:
            seen[job.name] = json.loads(job.output["stdout"])[0]
    assert seen["text"] == "--flag=true,false,2.5"
    for case, literal, _, expected in TABLE:
        accepted, words = _outcome(expected)
        if accepted:
            assert seen[f"lit-{case}"] == json.loads(words), case
            assert seen[f"expr-{case}"] == json.loads(words), case
        else:
            # The loader refuses the literal (above); the run refuses the value, same words.
            with pytest.raises(SpecError) as caught:
                load_runbook_text(runbook("x", _job("j", literal)), "t.yaml")
            said = str(caught.value).split("argv[3]: ", 1)[1]
            assert seen[f"expr-{case}"] == f"shell job: argv[3] {said}", case
