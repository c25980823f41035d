"""The interpreter's pure parts, without a server: how a failed attempt is classified, what a
job fails with when interpreting it raises, how command inputs are read, and the ledger that
keeps a run's status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    TimeoutType,
)
from temporalio.exceptions import (
    TimeoutError as TemporalTimeoutError,
)

from sternway.workflows._commands import NoInput, command_input, refuse, update_input
from sternway.workflows._expr import ExpressionError
from sternway.workflows._failures import (
    JobFailure,
    classify,
    error_of,
    text_refusal,
    too_large,
)
from sternway.workflows._ledger import Ledger
from sternway.workflows.models import (
    MAX_COMMENT_CHARS,
    ApprovalCommand,
    AttemptReport,
    ErrorInfo,
    JobSpec,
    JobState,
    Reason,
    RunState,
    RunStatus,
    StopCommand,
)


def failed_with(cause: BaseException) -> ActivityError:
    """An attempt's ActivityError caused by ``cause``, as the SDK hands it to the workflow."""
    err = ActivityError(
        "activity failed",
        scheduled_event_id=5,
        started_event_id=6,
        identity="worker",
        activity_type="sternway.execute",
        activity_id="j#1",
        retry_state=None,
    )
    err.__cause__ = cause
    return err


# ------------------------------------------------------------------------------ classify


def test_a_job_error_keeps_its_type_reason_report_and_retry() -> None:
    report = AttemptReport(
        reason=Reason.BAD_EXIT, rollback_data={"undo": 1}, has_rollback_data=True
    )
    cause = ApplicationError("exit 3", report.model_dump(mode="json"), type="BadExit")
    failure = classify(failed_with(cause))
    assert failure.error == ErrorInfo(reason=Reason.BAD_EXIT, type="BadExit", message="exit 3")
    assert failure.report.rollback_data == {"undo": 1}
    assert failure.retryable and not failure.infra


def test_a_non_retryable_error_is_not_retried() -> None:
    cause = ApplicationError("no", type="Fatal", non_retryable=True)
    assert not classify(failed_with(cause)).retryable


def test_a_worker_shutdown_is_not_the_jobs_fault() -> None:
    cause = ApplicationError("the worker shut down", {}, type="WorkerShutdown")
    failure = classify(failed_with(cause))
    assert failure.infra and failure.retryable


def test_details_that_are_not_a_report_give_an_empty_report() -> None:
    cause = ApplicationError("odd", {"reason": "not-a-reason", "extra": 1}, type="Odd")
    failure = classify(failed_with(cause))
    assert failure.report == AttemptReport() and failure.error.type == "Odd"


def test_a_heartbeat_timeout_keeps_the_rollback_data_of_the_last_beat() -> None:
    beat = {"rollback_data": {"pid": 7}, "has_rollback_data": True}
    cause = TemporalTimeoutError(
        "timeout", type=TimeoutType.HEARTBEAT, last_heartbeat_details=[beat]
    )
    failure = classify(failed_with(cause))
    assert failure.error.reason == Reason.TIMEOUT and failure.error.message == "heartbeat timeout"
    assert failure.report.rollback_data == {"pid": 7} and failure.report.has_rollback_data
    assert failure.infra  # a dead worker stops heartbeating


def test_a_start_to_close_timeout_is_the_jobs_own() -> None:
    cause = TemporalTimeoutError("t", type=TimeoutType.START_TO_CLOSE, last_heartbeat_details=[])
    failure = classify(failed_with(cause))
    assert failure.error.message == "start-to-close timeout" and not failure.infra


def test_a_cancelled_attempt_is_cancelled_and_not_retried() -> None:
    failure = classify(failed_with(CancelledError()))
    assert failure.error.reason == Reason.CANCELLED and not failure.retryable


def test_any_other_cause_is_a_retryable_error_named_by_its_class() -> None:
    failure = classify(failed_with(RuntimeError("odd")))
    assert failure.error == ErrorInfo(type="RuntimeError", message="odd") and failure.retryable


# ------------------------------------------------------------------------ the last defence


def test_what_interpreting_a_job_raises_becomes_that_jobs_error() -> None:
    assert error_of(ExpressionError("no such arg")).type == "ExpressionError"
    assert error_of(too_large("the input", 10, 5)).type == "TooLarge"
    internal = error_of(KeyError("j2[y]"))
    assert internal.type == "InternalError" and "KeyError" in internal.message
    assert len(error_of(ValueError("x" * 10_000)).message) <= 2000


def test_too_large_names_the_sizes_and_the_budget() -> None:
    failure = too_large("the input of j", 3_000_000, 2_000_000)
    assert isinstance(failure, JobFailure)
    assert "3000000 bytes" in failure.info.message and "2000000" in failure.info.message


def test_comments_over_the_budget_are_refused() -> None:
    assert text_refusal("comment", "ok") is None
    refusal = text_refusal("comment", "x" * (MAX_COMMENT_CHARS + 1))
    assert refusal is not None and str(MAX_COMMENT_CHARS) in refusal


# --------------------------------------------------------------------------- command input


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], StopCommand()),
        ([None], StopCommand()),
        ([{"rollback": False, "reason": "r"}], StopCommand(rollback=False, reason="r")),
    ],
)
def test_a_stop_without_input_takes_the_default(args: list[Any], expected: StopCommand) -> None:
    assert command_input("stop", StopCommand, args, StopCommand()) == expected


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ([{}, {}], "takes one JSON object as its input, not 2 inputs"),
        ([None], "takes a JSON object with job, and got no input"),
        ([{"job": 3}], "approve: invalid input at job"),
        (["text"], "approve: invalid input"),
    ],
)
def test_a_bad_command_input_is_a_one_line_reason(args: list[Any], said: str) -> None:
    found = command_input("approve", ApprovalCommand, args, None)
    assert isinstance(found, str) and said in found and "\n" not in found


def test_an_update_with_a_bad_input_is_refused_and_changes_nothing() -> None:
    with pytest.raises(ApplicationError) as caught:
        update_input("approve", ApprovalCommand, [{"job": None}])
    assert caught.value.type == "CommandRefused"
    with pytest.raises(ApplicationError, match="not now"):
        refuse("not now")
    refuse(None)  # no refusal: nothing raised


def test_resume_takes_any_object() -> None:
    assert isinstance(command_input("resume", NoInput, [{"anything": 1}], NoInput()), NoInput)


class _Clock:
    """A clock that moves one second each time it is read."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def _ledger(continuing: frozenset[str] = frozenset()) -> tuple[Ledger, list[str]]:
    changes: list[str] = []
    ledger = Ledger(
        RunStatus(run_id="r", action="a", created_at=datetime(2026, 1, 1, tzinfo=UTC)),
        clock=_Clock(),
        changed=lambda: changes.append("changed"),
        continues_on_error=lambda name: name in continuing,
    )
    return ledger, changes


def test_the_ledger_lists_pending_jobs_and_logs_each_attempt_and_redelivery() -> None:
    ledger, changes = _ledger()
    ledger.add_entries("", [JobSpec(name="build"), JobSpec(name="ship")])
    assert [j.name for j in ledger.status.jobs] == ["build", "ship"]
    assert ledger.entry("build") is ledger.jobs["build"]  # asked again: the same entry
    build = ledger.jobs["build"]
    first = ledger.begin("build", build)
    ledger.log_attempt(first, AttemptReport(exit_code=1), JobState.FAILED, ErrorInfo(message="x"))
    again = ledger.begin("build", build, redelivery=True)  # its worker died: same attempt
    second = ledger.begin("build", build)
    ledger.log_attempt(second, AttemptReport(exit_code=0), JobState.COMPLETED, None)
    ledger.end_job(build, JobState.COMPLETED, None)
    assert [e.attempt for e in build.log] == [1, 1, 2] and again.attempt == 1
    assert build.attempts == 2 and first.exit_code == 1 and second.state == JobState.COMPLETED
    assert build.started_at == first.started_at and build.finished_at is not None
    assert ledger.start_order == ["build"] and changes == ["changed"]
    assert ledger.done("build", continue_on_error=False)
    assert not ledger.done("ship", continue_on_error=False)


def test_a_reset_group_is_pending_again_but_keeps_its_attempt_counts() -> None:
    ledger, _ = _ledger()
    for name in ("g", "g[a].step", "g.step", "gx"):
        job = ledger.entry(name)
        ledger.begin(name, job)
        ledger.end_job(job, JobState.COMPLETED, None)
        job.output = {"n": 1}
    assert sorted(ledger.reset("g")) == ["g", "g.step", "g[a].step"]  # not "gx"
    step = ledger.jobs["g.step"]
    assert step.state == JobState.PENDING and step.output is None and step.started_at is None
    assert step.attempts == 1 and len(step.log) == 1
    assert ledger.jobs["gx"].state == JobState.COMPLETED


def test_progress_counts_skipped_and_continuing_failures_as_done() -> None:
    ledger, _ = _ledger(continuing=frozenset({"lenient"}))
    for name, state in (
        ("ok", JobState.COMPLETED),
        ("skipped", JobState.SKIPPED),
        ("lenient", JobState.FAILED),
        ("strict", JobState.FAILED),
        ("undone", JobState.ROLLED_BACK),
    ):
        ledger.end_job(ledger.entry(name), state, None)
    progress = ledger.progress()
    assert (progress.done, progress.total, progress.rolled_back) == (3, 5, 1)


def test_the_state_changes_once_and_the_view_masks_secrets_without_touching_the_run() -> None:
    ledger, _ = _ledger()
    assert ledger.set_state(RunState.RUNNING) and not ledger.set_state(RunState.RUNNING)
    ledger.secrets = ["hunter2"]
    job = ledger.entry("login")
    ledger.end_job(job, JobState.FAILED, ErrorInfo(message="bad password hunter2"))
    view = ledger.view()
    assert view.state == RunState.RUNNING and view.progress.total == 1
    assert "hunter2" not in view.model_dump_json()
    assert job.error is not None and "hunter2" in job.error.message  # the run's own state


def test_payloads_only_sternway_reads_leave_their_defaults_out() -> None:
    """Activity inputs and results, and the recorded plan, are written without the fields at
    their defaults (nested models too) and read back whole; the status keeps every field."""
    from sternway.codec import data_converter
    from sternway.workflows.models import CallSpec, JobInput, JobResult, Plan, RetrySpec

    converter = data_converter().payload_converter
    job_input = JobInput(
        run_id="r",
        action="a",
        job="j",
        attempt=1,
        call=CallSpec(kind="noop", **{"with": {"x": 1}}),
        args={},
        deps={"before": None},
    )
    job = JobSpec(name="j", execute=CallSpec(kind="noop"), retry=RetrySpec(max_attempts=3))
    plan = Plan(name="p", jobs=[job])
    written = {
        "input": (job_input, b'{"run_id":"r","action":"a","job":"j","attempt":1,'
                  b'"call":{"kind":"noop","with":{"x":1}},"args":{},"deps":{"before":null}}'),
        "result": (JobResult(output=None), b'{"output":null}'),
        "report": (JobResult(output=1, report=AttemptReport(exit_code=0)),
                   b'{"output":1,"report":{"exit_code":0}}'),
        "plan": (plan, b'{"name":"p","jobs":[{"name":"j","execute":{"kind":"noop"},'
                 b'"retry":{"max_attempts":3}}]}'),
    }  # fmt: skip
    for name, (value, data) in written.items():
        (payload,) = converter.to_payloads([value])
        assert payload.data == data, name
        assert converter.from_payloads([payload], [type(value)]) == [value], name
    status = RunStatus(run_id="r", action="a", created_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert '"locks":[]' in status.model_dump_json() and '"error":null' in status.model_dump_json()
