"""The names Sternway's parts agree on have one home (sternway/workflows/_protocol.py), and a
job's failure reason is a :class:`Reason`."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from sternway import JobError, Reason
from sternway.workflows._protocol import ErrorType, Handler
from tests.conftest import WorkerFactory
from tests.scripted import EVENTS
from tests.test_engine import run_to_end

PACKAGE = Path(__file__).resolve().parent.parent / "sternway"
PROTOCOL = (PACKAGE / "workflows" / "_protocol.py").resolve()
# Calls whose `type=` is a failure's error type, and decorators whose `name=` is a handler name.
_TYPED = {"ApplicationError", "ErrorInfo", "JobError", "JobRejected"}
_HANDLERS = {"signal", "update", "query"}


def _sources() -> list[Path]:
    found = []
    for folder, _, files in os.walk(PACKAGE, followlinks=True):
        found += [Path(folder) / f for f in files if f.endswith(".py")]
    return sorted(found)


def _literal_names(path: Path) -> list[str]:
    """Error types and handler names written as string literals in ``path``."""
    hits = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            wanted = "type" if called in _TYPED else "name" if called in _HANDLERS else None
            for keyword in node.keywords:
                value = keyword.value
                if keyword.arg == wanted and isinstance(value, ast.Constant):
                    hits.append(f"{path.name}:{node.lineno} {called}({wanted}={value.value!r})")
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute):
            right = node.comparators[0]
            if (
                node.left.attr == "type"
                and isinstance(right, ast.Constant)
                and isinstance(right.value, str)
                and right.value[:1].isupper()
            ):
                hits.append(f"{path.name}:{node.lineno} .type == {right.value!r}")
    return hits


def test_error_types_and_handler_names_are_spelled_only_in_the_protocol_module() -> None:
    sources = _sources()
    assert len(sources) > 20
    assert PROTOCOL in [p.resolve() for p in sources]
    literals = [
        hit for path in sources if path.resolve() != PROTOCOL for hit in _literal_names(path)
    ]
    assert literals == []


def test_the_scan_finds_a_literal_error_type(tmp_path: Path) -> None:
    code = tmp_path / "sample.py"
    code.write_text(
        'raise ApplicationError("no", type="CommandRefused")\n'
        '@workflow.update(name="stop")\ndef f(): ...\n'
        'if cause.type == "WorkerShutdown": pass\n'
    )
    assert len(_literal_names(code)) == 3


def test_the_names_are_the_documented_contract() -> None:
    # What `temporal workflow update --name ...` and retry policies are written against.
    assert (Handler.STOP, Handler.APPROVE, Handler.STATUS) == ("stop", "approve", "status")
    assert ErrorType.COMMAND_REFUSED == "CommandRefused"
    assert ErrorType.TOO_LARGE == "TooLarge"
    names = [v for k, v in vars(ErrorType).items() if k.isupper()]
    assert len(names) == len(set(names))


def test_a_job_error_takes_a_reason_and_refuses_anything_else() -> None:
    assert JobError("late", reason=Reason.TIMEOUT).reason is Reason.TIMEOUT
    assert JobError("plain").reason is Reason.ERROR
    with pytest.raises(ValueError, match=r"'timeout', 'bad_exit'.*not 'timed_out'"):
        JobError("late", reason="timed_out")  # type: ignore[arg-type]


async def test_an_unknown_reason_fails_the_attempt_and_its_rollback_data_reaches_rollback(
    dev_env: WorkflowEnvironment, worker_for: WorkerFactory, task_queue: str
) -> None:
    # Before, JobError kept any text and the activity's Reason(...) raised on it: the report
    # (and the rollback data in it) was lost.
    script = {"fail": {"j2": 999}, "save": ["j2"], "reason": {"j2": "timed_out"}}
    async with worker_for(dev_env.client):
        handle, _ = await run_to_end(dev_env, task_queue, "test-chain3", script)
        status = await handle.status()
    j2 = status.job("j2")
    assert status.state == "FAILED"
    assert j2.error is not None and j2.error.type == "ValueError"
    assert "not 'timed_out'" in j2.error.message
    last = EVENTS[handle.run_id][-2:]
    assert last[0][:2] == ("rollback", "j2") and last[0][2]["saved_by"] == "j2"
    assert last[1] == ("rollback", "j1", None)
