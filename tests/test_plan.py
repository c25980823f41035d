"""The plan model and the Python front end: bad definitions fail where they are written."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr

from sternway import Action, ArgsError, Job, Registry, Retry, SpecError
from sternway.workflows.models import RetrySpec, parse_duration
from tests.scripted import step, undo


def job(name: str, *after: str) -> Job:
    return Job(name, execute=step, rollback=undo, after=list(after))


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ([], "has no jobs"),
        ([job("a"), job("a")], "job name 'a' is used twice"),
        ([job("a", "ghost")], "job 'a' runs after unknown job 'ghost'"),
        ([job("a", "a")], "job 'a' cannot run after itself"),
        ([job("a", "c"), job("b", "a"), job("c", "b")], "jobs form a cycle: a -> c -> b -> a"),
        ([job("bad name")], "job name 'bad name' is invalid"),
        (
            [Job("a", execute=step, input={"limits": [1, float("inf")]})],
            r"job 'a' input.limits\[1\] is inf: JSON has no infinity or NaN",
        ),
        (
            [Job("a", execute=step, input={"deep": json.loads("[" * 100 + "]" * 100)})],
            "job 'a' input is nested more than 100 levels deep, the limit",
        ),
    ],
)
def test_invalid_actions_are_rejected_with_a_clear_message(jobs: list[Job], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        Action("x", jobs)


def test_invalid_retry_is_rejected() -> None:
    with pytest.raises(SpecError, match=r"jobs\.0\.retry\.max_attempts|max_attempts"):
        Action("x", [Job("a", execute=step, retry=Retry(max_attempts=0))])


def test_functions_must_be_module_level() -> None:
    with pytest.raises(SpecError, match="module level"):
        Action("x", [Job("a", execute=lambda ctx: 1)])


def test_registry_rejects_duplicates_and_names_known_actions() -> None:
    registry = Registry([Action("one", [job("a")])])
    with pytest.raises(SpecError, match="registered twice"):
        registry.add(Action("one", [job("a")]))
    with pytest.raises(SpecError, match=r"unknown action 'two' \(known: one\)"):
        registry.get("two")


class Args(BaseModel):
    host: str
    count: int = 1
    token: SecretStr


def test_args_are_validated_and_secrets_masked() -> None:
    action = Action("with-args", [job("a")], args=Args)
    args, masked = action.validate_args({"host": "h1", "token": "s3cret"})
    assert args == {"host": "h1", "count": 1, "token": "s3cret"}
    assert masked["token"] != "s3cret" and "s3cret" not in str(masked)
    with pytest.raises(ArgsError, match="count: Input should be a valid integer"):
        action.validate_args({"host": "h1", "token": "x", "count": "many"})
    with pytest.raises(ArgsError, match="takes no args"):
        Action("no-args", [job("a")]).validate_args({"x": 1})


class Limits(BaseModel):
    limit: float = 1.0


@pytest.mark.parametrize("text", ["inf", "1e999", "-Infinity", "nan"])
def test_a_number_the_args_model_reads_as_infinite_is_refused(text: str) -> None:
    # pydantic reads these texts into a float field as infinity or NaN: the args then hold a
    # number the plan, status and memo (JSON) cannot carry.
    action = Action("limits", [job("a")], args=Limits)
    with pytest.raises(
        ArgsError, match=r"^args\.limit is (-?inf|nan): JSON has no infinity or NaN$"
    ):
        action.validate_args({"limit": text})
    assert action.validate_args({"limit": "2.5"})[0] == {"limit": 2.5}


def test_an_args_model_with_an_infinite_default_is_refused_when_defined() -> None:
    class Unbounded(BaseModel):
        limit: float = float("inf")

    with pytest.raises(SpecError, match=r"args_schema\.properties\.limit\.default is inf"):
        Action("unbounded", [job("a")], args=Unbounded)


def test_rename_and_extend_make_new_jobs() -> None:
    base = job("a")
    renamed = base.rename("b", after=["a"]).extend(pre=[step])
    assert (base.name, base.pre) == ("a", ())
    assert (renamed.name, list(renamed.after), list(renamed.pre)) == ("b", ["a"], [step])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("2s", 2), ("5m", 300), ("1h30m", 5400), ("1d", 86400), (3, 3), ("1.5", 1.5)],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(timedelta(seconds=seconds)) == seconds


@pytest.mark.parametrize("value", ["nan", "inf", float("nan"), float("inf"), 1e400])
def test_parse_duration_refuses_what_is_not_a_finite_number(value: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(value)


@given(st.text(max_size=12))
@example("NAN")  # float() reads these: found by this test in CI
@example("-inf")
@example("Infinity")
def test_parse_duration_only_raises_value_error(text: str) -> None:
    try:
        assert parse_duration(text) >= 0
    except ValueError as err:
        assert "duration" in str(err)


@given(st.integers(1, 10), st.floats(0.01, 100), st.floats(1, 4), st.integers(1, 20))
def test_backoff_grows_and_respects_max_interval(
    attempts: int, initial: float, backoff: float, failures: int
) -> None:
    spec = RetrySpec(
        max_attempts=attempts, initial_interval=initial, backoff=backoff, max_interval=60
    )
    delay = spec.delay_before(failures)
    assert delay <= 60
    assert spec.delay_before(failures + 1) >= delay


def test_plans_are_recorded_without_their_defaults_and_read_back_whole() -> None:
    """The resolve step records the plan in every run's history: only what differs from the
    defaults is written, and reading it back gives the same plan (every shipped and test plan)."""
    from temporalio.contrib.pydantic import pydantic_data_converter

    from sternway.worker import load_registry
    from sternway.workflows.models import CallSpec, JobSpec, ResolvedRun
    from tests.scripted import REGISTRY

    converter = pydantic_data_converter.payload_converter
    spec = JobSpec(name="a", execute=CallSpec(kind="noop", **{"with": {"n": 1}}))
    assert (
        converter.to_payloads([spec])[0].data
        == b'{"name":"a","execute":{"kind":"noop","with":{"n":1}}}'
    )
    actions = [*load_registry(), *REGISTRY]
    assert len(actions) > 10
    for action in actions:
        resolved = ResolvedRun(plan=action.plan, args={"x": 1}, masked_args={"x": 1})
        payload = converter.to_payloads([resolved])[0]
        for default in (b'"ref":null', b'"continue_on_error":false', b'"pre":[]', b'"each":null'):
            assert default not in payload.data, (action.name, default)
        assert converter.from_payloads([payload], [ResolvedRun])[0] == resolved, action.name


# JSON data as a run holds it: no infinity or NaN, which args, runbooks and outputs refuse.
_USER_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    args=st.dictionaries(st.text(max_size=6), _USER_JSON, max_size=3),
    output=_USER_JSON,
    failed=st.booleans(),
)
@example(args={"token": None}, output={"deps": [], "note": None}, failed=True)
def test_a_final_status_leaves_out_its_null_fields_and_reads_back_whole(
    args: dict[str, object], output: object, failed: bool
) -> None:
    """A closed run's result drops the status's null fields, never a null inside what a user
    gave or a job returned, and reads back as the status the query answers."""
    from datetime import UTC, datetime

    from sternway.workflows.models import (
        AttemptLog,
        ErrorInfo,
        JobStatus,
        RollbackStatus,
        RunStatus,
    )

    when = datetime(2026, 1, 1, tzinfo=UTC)
    error = ErrorInfo(message="boom") if failed else None
    status = RunStatus(
        run_id="r",
        action="a",
        args=args,
        error=error,
        jobs=[
            JobStatus(
                name="j",
                output=output,
                error=error,
                rollback=RollbackStatus(error=error) if failed else None,
                log=[AttemptLog(attempt=1, started_at=when, error=error)],
            )
        ],
    )
    result = status.as_result()
    assert result["args"] == status.model_dump(mode="json")["args"]
    assert ("output" in result["jobs"][0]) == (output is not None)
    assert "ui_url" not in result and "exit_code" not in result["jobs"][0]["log"][0]
    assert RunStatus.model_validate(result) == status
