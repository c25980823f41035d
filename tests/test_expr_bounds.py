"""Bounded, JSON-only expressions: every ``${{ }}`` gives JSON data or a clear ExpressionError, in
milliseconds, whatever its operators, filters and sizes; the loader refuses what it can see; and a
run that meets the heaviest expression the loader accepts does not hold up another run's worker."""

from __future__ import annotations

import json
import math
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.testing import WorkflowEnvironment

from sternway import SpecError, submit
from sternway.worker import create_worker, load_registry
from sternway.workflows._expr import MAX_RANGE, MAX_SIZE, ExpressionError, render
from sternway.workflows._runbook import load_runbook_text
from tests.helpers import wait_for

CONTEXT: dict[str, Any] = {
    "args": {"n": 9, "hosts": ["web1", "web2"], "big": 10**8},
    "jobs": {"fetch": {"output": {"items": [1, 2], "path": "/srv"}, "state": "COMPLETED"}},
    "run": {"id": "r-1", "action": "a", "requestor": "me"},
}
CPU_BUDGET = 0.5  # seconds of CPU for one expression: generous, the guard is "never seconds"


def timed_render(text: str) -> tuple[Any, float]:
    """``render(text)`` (its value or the ExpressionError raised) and the CPU time it took."""
    started = time.process_time()
    try:
        value: Any = render(text, CONTEXT)
    except ExpressionError as err:
        value = err
    return value, time.process_time() - started


def is_json_data(value: Any) -> bool:
    if value is None or isinstance(value, bool | str | int):
        return type(value) in (type(None), bool, str, int)
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(is_json_data(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json_data(v) for k, v in value.items())
    return False


# --------------------------------------------------------------------------- the reported cases


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${{ 9 ** (9 ** args.n) }}", "'**' would give an integer over 4096 bits"),
        ("${{ 'x' * 10**8 }}", "'*' would give a value over 512 KiB"),
        ("${{ 'x' * args.big }}", "'*' would give a value over 512 KiB"),
        ("${{ range(100000) | list }}", f"range of 100000 items (at most {MAX_RANGE})"),
        ("${{ ('x' * 300000) | replace('x', 'yy') }}", "replace filter would give a value over"),
        ("${{ ['x' * 300000] * 2 }}", "'*' would give a value over 512 KiB"),
        ("${{ ['x' * 300000, 'y' * 300000] | join }}", "join filter would give a value over"),
        ("${{ ('a\n' * 4000) | indent(200) }}", "indent filter would give a value over"),
        ("${{ '%0999999999d' % 1 }}", "'%' would give a value over 512 KiB"),
        ("${{ '%*d' % (999999999, 1) }}", "'%' would give a value over 512 KiB"),
        ("${{ '{:>999999999}'.format(1) }}", "format() would give a value over 512 KiB"),
        ("${{ 'a'.ljust(10**9) }}", "ljust() with 1000000000"),
        ("${{ '\t'.expandtabs(10) }}", "expandtabs() is not available"),
        ("${{ 'ab'.translate({97: 'x'}) }}", "translate() is not available"),
        ("${{ [1] | batch(10**8, 0) | list }}", "the batch filter with 100000000"),
        ("${{ [[1], [2]] | sum(start=[]) }}", "the sum filter adds numbers only"),
        ("${{ [1, 2] | tojson(indent=100000) }}", "the tojson filter with indent 100000"),
        ("${{ range(10000) | map('string') | map('string') | list }}", "steps of work"),
        ("${{ ('ab ' * 80000) | wordwrap(5) }}", "steps of work"),
    ],
)
def test_expressions_that_would_build_huge_values_are_refused_quickly(
    text: str, message: str
) -> None:
    value, cpu = timed_render(text)
    assert isinstance(value, ExpressionError), value
    assert message in str(value)
    assert cpu < CPU_BUDGET


def test_block_loops_are_refused_at_run_time_before_any_loop() -> None:
    nested = (
        "${% for i in range(100000) %}${% for j in range(100000) %}"
        "${{ i }}${% endfor %}${% endfor %}"
    )
    value, cpu = timed_render(nested)
    assert isinstance(value, ExpressionError)
    assert "${% %} blocks are not available" in str(value)
    assert cpu < CPU_BUDGET


def test_a_method_is_not_data_and_the_error_says_what_was_meant() -> None:
    with pytest.raises(ExpressionError) as caught:
        render("${{ jobs.fetch.output.items }}", CONTEXT)
    assert str(caught.value) == (
        "`jobs.fetch.output.items` is a method, not data: "
        "did you mean `jobs.fetch.output['items']`?"
    )
    with pytest.raises(ExpressionError, match=r"one of its \$\{\{ \}\} is a method, not data"):
        render("codes: ${{ jobs.fetch.output.items }}", CONTEXT)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${{ args.hosts | map('upper') }}", "is a generator, not data: add `| list`"),
        ("${{ range(3) }}", "is a range, not data: add `| list`"),
        ("${{ (args.hosts[0][:0] ~ 'nan') | float }}", "is nan, not a finite number"),
        ("${{ 'nan' | float }}", "cannot evaluate"),  # Jinja folds it to code that fails
        ("${{ {1: 'a'} }}", "has the map key 1: map keys must be strings"),
        ("${{ [args.hosts.count] }}", "is a method, not data"),
    ],
)
def test_values_that_are_not_json_data_are_expression_errors(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        render(text, CONTEXT)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("${{ args.hosts | map('upper') | list }}", ["WEB1", "WEB2"]),
        ("${{ (1, 'a') }}", [1, "a"]),  # a tuple becomes a list, as JSON would have it
        ("${{ args.hosts | join(',') }}", "web1,web2"),
        ("${{ jobs.fetch.output['items'] }}", [1, 2]),
        ("${{ jobs.fetch.output.get('items') }}", [1, 2]),
        ("${{ jobs.fetch.output.items() | list }}", [["items", [1, 2]], ["path", "/srv"]]),
        ("${{ 2 ** 4000 == 2 ** 4000 }}", True),
        ("${{ range(MAX) | list | length }}".replace("MAX", str(MAX_RANGE)), MAX_RANGE),
        ("${{ ('x' * SIZE) | length }}".replace("SIZE", str(MAX_SIZE)), MAX_SIZE),
        ("${{ '%05d' % 7 }}", "00007"),
        ("${{ 'a-b'.replace('-', '+') }}", "a+b"),
        ("${{ 1.5 }}", 1.5),
        ("at ${{ jobs.fetch.output.path }}/x", "at /srv/x"),
    ],
)
def test_ordinary_expressions_still_give_their_values(text: str, value: Any) -> None:
    assert render(text, CONTEXT) == value


def test_an_output_at_its_cap_can_still_be_read_and_passed_as_json() -> None:
    output = {"rows": [{"host": f"web{i}", "ok": True} for i in range(8000)]}
    assert len(json.dumps(output, separators=(",", ":"))) > 200 * 1024
    context = {**CONTEXT, "jobs": {"big": {"output": output, "state": "COMPLETED"}}}
    assert render("${{ jobs.big.output }}", context) == output
    assert json.loads(render("${{ jobs.big.output | tojson }}", context)) == output
    assert render("${{ jobs.big.output.rows | length }}", context) == 8000


def test_rendered_text_is_capped() -> None:
    half = MAX_SIZE // 2 + 1
    with pytest.raises(ExpressionError, match="the rendered text is over 512 KiB"):
        render(f"${{{{ 'x' * {half} }}}} and ${{{{ 'y' * {half} }}}}", CONTEXT)


# ------------------------------------------------------------------------ refused at validate


def runbook(with_: str) -> str:
    return textwrap.dedent(
        f"""\
        name: x
        args:
          required:
            - {{name: n, type: int}}
        jobs:
          - name: fetch
            run: noop
          - name: use
            after: [fetch]
            run: noop
            with: {{value: "{with_}"}}
        """
    )


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (
            "${{ jobs.fetch.output.items }}",
            "jobs.fetch.output.items in '${{ jobs.fetch.output.items }}' is a method, not data: "
            "did you mean jobs.fetch.output['items']?",
        ),
        (
            "${{ jobs['fetch'].output.keys | list }}",
            "jobs['fetch'].output.keys in \"${{ jobs['fetch'].output.keys | list }}\" is a method, "
            "not data: did you mean jobs['fetch'].output['keys']?",
        ),
        (
            "${% for i in range(100000) %}${% for j in range(100000) %}x${% endfor %}${% endfor %}",
            "${% %} blocks are not available in runbooks: write one ${{ }} expression instead",
        ),
    ],
)
def test_validate_refuses_what_it_can_see_with_file_line_and_field(
    expression: str, message: str
) -> None:
    with pytest.raises(SpecError) as caught:
        load_runbook_text(runbook(expression), "actions/x.yaml")
    assert str(caught.value).startswith("actions/x.yaml:11 jobs[1].with.value: ")
    assert message in str(caught.value)


def test_validate_accepts_a_called_method_and_brackets() -> None:
    text = "${{ jobs.fetch.output.get('items') }} ${{ jobs.fetch.output['items'] }}"
    assert load_runbook_text(runbook(text), "actions/x.yaml").name == "x"


# ----------------------------------------------------------------------------- property test

_atoms = st.one_of(
    st.integers(min_value=-3, max_value=12).map(str),
    st.sampled_from(["10**8", "9 ** 9", "args.n", "args.big", "999999999", "0.5", "1e308"]),
    st.sampled_from(["'x'", "'ab '", "'%05d'", "'{:>9}'", "'a\\n'", "'\\t'", "''"]),
    st.sampled_from(["[1, 2]", "args.hosts", "[[1], [2]]", "(1, 2)", "{'a': 1}"]),
    st.integers(min_value=0, max_value=200_000).map(lambda n: f"range({n})"),
    st.integers(min_value=0, max_value=300_000).map(lambda n: f"('x' * {n})"),
)
_FILTERS = [
    "list", "join(',')", "length", "upper", "sort", "unique | list", "map('string') | list",
    "replace('x', 'yy')", "batch(3) | list", "indent(50)", "center(1000)", "string", "tojson",
    "sum", "first", "reverse | list", "wordwrap(3)", "title", "format(1)", "int", "float",
    "map('string')", "select | list", "trim", "truncate(5)", "dictsort", "pprint", "abs",
]  # fmt: skip
_OPERATORS = ["+", "-", "*", "**", "%", "//", "/", "~", "==", "in"]


def _combine(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, st.sampled_from(_OPERATORS), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        st.tuples(inner, st.sampled_from(_FILTERS)).map(lambda t: f"({t[0]} | {t[1]})"),
        st.tuples(
            inner, st.sampled_from(["ljust(", "replace('x', ", "split(", "zfill("]), inner
        ).map(lambda t: f"{t[0]}.{t[1]}{t[2]})"),
        st.lists(inner, max_size=3).map(lambda items: f"[{', '.join(items)}]"),
    )


EXPRESSIONS = st.recursive(_atoms, _combine, max_leaves=8)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(expression=EXPRESSIONS, inside_text=st.booleans())
def test_any_expression_gives_json_data_or_an_expression_error_in_milliseconds(
    expression: str, inside_text: bool
) -> None:
    text = f"value: ${{{{ {expression} }}}}" if inside_text else f"${{{{ {expression} }}}}"
    value, cpu = timed_render(text)
    assert cpu < CPU_BUDGET, f"{text} took {cpu:.3f}s of CPU"
    if not isinstance(value, ExpressionError):
        assert is_json_data(value), f"{text} gave {type(value).__name__}"
        json.dumps(value, allow_nan=False)


# ----------------------------------------------- must show 2: the worker keeps serving other runs

HEAVY = """\
name: expr-heavy
args:
  required:
    - {name: n, type: int}
    - {name: log, type: str}
jobs:
  - name: fetch
    run: shell
    with: {argv: [sh, -c, 'echo fetched >> "$1"', fetch, "${{ args.log }}"]}
    rollback:
      run: shell
      with: {argv: [sh, -c, 'echo undone >> "$1"', undo, "${{ args.log }}"]}
  - name: heavy   # the heaviest expressions the loader accepts: each is refused at its budget
    after: [fetch]
    run: noop
    with:
      a: "${{ (range(10000) | map('string') | join(',') | length) > 0 }}"
      b: "${{ (range(10000) | batch(3) | map('join', ',') | join(';') | length) > 0 }}"
      c: "${{ (range(10000) | map('string') | list | sort | groupby('0') | list) }}"
      d: "${{ ('ab ' * 87000) | wordwrap(5) | length }}"
    continue_on_error: true
  - name: boom
    after: [heavy]
    run: noop
    with: {value: "${{ 9 ** (9 ** args.n) }}", text: "${{ 'x' * 10**8 }}"}
"""
STEADY = """\
name: expr-steady
jobs:
  - name: beat   # heartbeats every second; a worker frozen for 2 s would time it out
    run: shell
    heartbeat_timeout: 2s
    retry: {max_attempts: 1}
    with: {argv: [sleep, "4"]}
"""


async def test_heavy_expressions_do_not_hold_up_another_run_on_the_same_worker(
    ts_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    folder = tmp_path / "actions"
    folder.mkdir()
    (folder / "expr-heavy.yaml").write_text(HEAVY)
    (folder / "expr-steady.yaml").write_text(STEADY)
    log = tmp_path / "log"
    registry = load_registry(modules=[], folders=[folder])
    async with create_worker(ts_env.client, registry, task_queue=task_queue):
        steady = await submit(ts_env.client, "expr-steady", {}, task_queue=task_queue)
        await wait_for(steady, lambda s: s.job("beat").state == "RUNNING")
        heavy = await submit(
            ts_env.client, "expr-heavy", {"n": 9, "log": str(log)}, task_queue=task_queue
        )
        failed = await heavy.wait()
        done = await steady.wait()
    assert done.state == "COMPLETED", done.model_dump_json(indent=1)
    assert done.job("beat").attempts == 1
    assert failed.state == "FAILED"
    assert failed.job("heavy").state == "FAILED"  # over its budget, continue_on_error
    heavy_error = failed.job("heavy").error
    assert heavy_error is not None and heavy_error.type == "ExpressionError"
    error = failed.job("boom").error
    assert error is not None
    assert (error.reason, error.type) == ("error", "ExpressionError")
    assert "'**' would give an integer over 4096 bits" in error.message
    assert failed.job("fetch").state == "ROLLED_BACK"
    assert log.read_text() == "fetched\nundone\n"
