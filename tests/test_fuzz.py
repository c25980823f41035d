"""Bad input fuzzing: random ``--arg`` pairs, args files and command payloads only ever meet a
clear error, never a crash of the CLI or of a run's workflow task.

* ``sternway._args.parse_args`` (``--arg k=v`` and ``--args-file``) raises nothing but
  :class:`ArgsError`/:class:`SpecError`, and what it accepts is JSON data the action validates.
* ``stop``/``suspend``/``resume``/``approve``/``reject`` updates and signals with random JSON,
  sent with the official ``temporal`` CLI to a running run, are refused or applied: the run's
  history never holds a ``WorkflowTaskFailed`` event and every run ends cleanly afterwards.

Random YAML runbooks are fuzzed in tests/test_runbook.py. Example counts are modest: the
server-backed test runs ~30 real commands (about a minute).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from sternway import ArgsError, RunHandle, SpecError, submit
from sternway._args import parse_args
from sternway.worker import create_worker, load_registry
from sternway.workflows._actions import Action, Registry
from sternway.workflows.models import TERMINAL_RUN_STATES, RunState, RunStatus
from tests.cli import BIN, REPO
from tests.helpers import wait_for, workflow_task_failures

T = TypeVar("T")

# An action with an arg of every runbook type, a static one and a secret.
EVERY_TYPE = """
name: every-type
description: one arg of each type
args:
  required:
    - {name: text, type: str}
    - {name: count, type: int}
  optional:
    - {name: ratio, type: float, default: 0.5}
    - {name: flag, type: bool, default: false}
    - {name: wait, type: duration, default: 1m}
    - {name: hosts, type: "list[str]", default: []}
    - {name: token, type: secret, default: ""}
  static:
    - {name: fixed, value: 42}
jobs:
  - {name: only, run: noop, with: {text: "${{ args.text }}"}}
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """The shipped actions, the scripted Python ones (object and list args) and every-type."""
    folder = tmp_path_factory.mktemp("fuzz-runbooks")
    (folder / "every-type.yaml").write_text(EVERY_TYPE)
    return load_registry(modules=["tests.scripted"], folders=[REPO / "actions", folder])


def _names(action: Action) -> list[str]:
    """The arg names an action knows (settable or static), to hit known keys often."""
    return [*action.plan.args_schema.get("properties", {}), *action.static]


# Text as argv can carry it: any code point, lone surrogates included (what non-UTF-8 bytes
# become), and the shapes the typed parsers look for.
_SHAPED = st.sampled_from(
    ["", "0", "-1", "1e400", "nan", "inf", "-0", "true", "no", "[]", "{}", "[1,", '{"a": 1}',
     "90s", "1h30m", "3651d", "a,b,,c", "[" * 5000, '{"a":' * 5000, "9" * 5000, "\x00"]
)  # fmt: skip
_TEXT = st.text(st.characters(exclude_categories=()), max_size=40) | _SHAPED
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def arg_pairs(draw: st.DrawFn, names: list[str]) -> list[str]:
    """``--arg`` values: mostly key=value with a known key, sometimes anything at all."""
    pairs = []
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(names) | _TEXT) if names else draw(_TEXT)
        value = draw(_TEXT | _JSON.map(json.dumps))
        pairs.append(draw(st.sampled_from([f"{key}={value}", f"{key}{value}", value])))
    return pairs


@st.composite
def args_files(draw: st.DrawFn, names: list[str]) -> bytes:
    """Args file contents: objects with known and unknown keys, YAML's extras, or garbage."""
    keys = st.sampled_from(names) | st.text(max_size=10) if names else st.text(max_size=10)
    document = st.dictionaries(keys, _JSON, max_size=5)
    return draw(
        document.map(lambda d: json.dumps(d).encode())
        | document.map(lambda d: yaml.safe_dump(d).encode())
        | _JSON.map(lambda v: yaml.safe_dump(v).encode())
        | st.binary(max_size=60)
        | st.text(max_size=60).map(str.encode)
        | st.sampled_from(
            [
                b"root: !!binary aGVsbG8=\nrelease: v1\n",
                b"root: 2026-01-02\nrelease: v1\n",
                b"? [a, b]\n: 1\n",
                b"1: one\n",
                b"a: &a [*a]\n",
                b"hosts: !!set {a, b}\n",
                b"[" * 3000,
                b"{a: " * 3000,
                b"\xff\xfe\x00\x00",
                b"text: !!python/object:os.system echo\n",
            ]
        )
    )


def _check_parsed(action: Action, pairs: list[str], file: str | None) -> None:
    """parse_args raises only ArgsError/SpecError; what it returns is JSON the action accepts."""
    try:
        args = parse_args(action, pairs, file)
    except (ArgsError, SpecError) as err:
        assert str(err) and "Traceback" not in str(err)
        return
    json.dumps(args, allow_nan=True).encode()  # JSON data, and UTF-8 encodable
    action.validate_args(args)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_arg_pairs_raise_only_args_errors(registry: Registry, data: st.DataObject) -> None:
    action = data.draw(st.sampled_from(list(registry)))
    _check_parsed(action, data.draw(arg_pairs(_names(action))), None)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.data())
def test_random_args_files_raise_only_args_errors(registry: Registry, data: st.DataObject) -> None:
    action = data.draw(st.sampled_from(list(registry)))
    content = data.draw(args_files(_names(action)))
    with tempfile.NamedTemporaryFile(suffix=".yaml") as file:
        file.write(content)
        file.flush()
        _check_parsed(action, data.draw(arg_pairs(_names(action))), file.name)


def test_args_file_edge_cases_are_clear_errors(registry: Registry, tmp_path: Path) -> None:
    """The crashes fuzzing found, pinned: each one is now a one-line ArgsError."""
    site = registry.get("deploy-site")
    cases = {
        b"\xff\xfe\x00": "is not UTF-8 text",
        b"[" * 5000: "nested too deeply",
        b"a: &a [*a]\n": "nested too deeply",
        b"root: !!binary aGVsbG8=\nrelease: v1\n": "root is binary data",
        b"1: one\n": "key 1 is not text",
    }
    for content, message in cases.items():
        file = tmp_path / "args.yaml"
        file.write_bytes(content)
        with pytest.raises(ArgsError, match=message):
            parse_args(site, [], str(file))
    # Dates are read as the ISO text JSON would have held.
    (tmp_path / "dated.yaml").write_text("root: /x\nrelease: v1\nmessage: 2026-01-02\n")
    assert parse_args(site, [], str(tmp_path / "dated.yaml"))["message"] == "2026-01-02"
    with pytest.raises(ArgsError, match="fail takes an object"):
        parse_args(registry.get("test-chain3"), ["fail=" + "[" * 5000], None)
    with pytest.raises(ArgsError, match="not valid UTF-8"):
        parse_args(site, ["root=\udcff", "release=v1"], None)


# ------------------------------------------------------------- commands from the temporal CLI

TARGET = """
name: fuzz-target
description: a job to undo, an approval that waits, a job after it
jobs:
  - name: first
    run: noop
    with: {step: first}
    rollback: {run: noop, with: {undo: first}}
  - {name: gate, after: [first], run: approval}
  - {name: last, after: [gate], run: noop, with: {step: last}}
"""

UPDATES = ["stop", "suspend", "resume", "approve", "reject"]
# Signals also reach the handlers chunks use between themselves; anyone can send them too.
SIGNALS = [*UPDATES, "sternway.chunk_done", "sternway.finish"]
TOKEN = "<token>"  # replaced by the waiting gate's real token when the command is sent

# Payloads shaped like the commands (so that valid ones happen too) with random values mixed in.
_FIELDS = ["job", "token", "comment", "rollback", "reason", "now", "chunk", "error", "x"]
_VALUE = st.sampled_from(["gate", "first", "last", TOKEN, "", True, False, None, 0]) | _JSON
_PAYLOAD = st.dictionaries(st.sampled_from(_FIELDS), _VALUE, max_size=4) | _JSON


@st.composite
def commands(draw: st.DrawFn) -> tuple[str, str, list[Any]]:
    """(``update`` or ``signal``, handler name, the JSON inputs: usually one, maybe 0 or 2)."""
    kind = draw(st.sampled_from(["update", "signal"]))
    name = draw(st.sampled_from(UPDATES if kind == "update" else SIGNALS))
    count = draw(st.sampled_from([1, 1, 1, 1, 0, 2]))
    return kind, name, [draw(_PAYLOAD) for _ in range(count)]


def _with_token(value: Any, token: str) -> Any:
    if value == TOKEN:
        return token
    if isinstance(value, dict):
        return {k: _with_token(v, token) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_token(v, token) for v in value]
    return value


class Target:
    """The run commands are sent to: a fresh one whenever the last has ended (and was checked)."""

    def __init__(self, client: Client, registry: Registry, task_queue: str) -> None:
        self.client, self.registry, self.task_queue = client, registry, task_queue
        self.handle: RunHandle | None = None
        self.token = ""
        self.runs: list[str] = []
        self.ended: dict[str, int] = {}

    async def ready(self) -> RunHandle:
        """The current run, running or suspended; a new one once the last has ended."""
        if self.handle is not None:
            status = await self.handle.status()
            if status.state not in TERMINAL_RUN_STATES:
                return self.handle
            await self.check_ended(self.handle, status)
        self.handle = await submit(
            self.client, "fuzz-target", {}, task_queue=self.task_queue, registry=self.registry
        )
        self.runs.append(self.handle.run_id)
        waiting = await wait_for(self.handle, lambda s: s.job("gate").state == "WAITING")
        self.token = (waiting.job("gate").detail or "").split("token ")[1].split(";")[0]
        return self.handle

    async def check_ended(self, handle: RunHandle, status: RunStatus) -> None:
        """An ended run ended cleanly: stopped, completed, or failed by a rejection, undone."""
        final = await asyncio.wait_for(handle.wait(), 30)
        assert final.state in ("COMPLETED", "STOPPED", "FAILED"), final.model_dump_json()
        if final.state == "FAILED":
            gate = final.job("gate")
            assert gate.error is not None and gate.error.reason == "rejected", gate
        if final.state in ("FAILED", "STOPPED") and final.job("first").state != "COMPLETED":
            assert final.job("first").state == "ROLLED_BACK", final.model_dump_json()
        self.ended[final.state.value] = self.ended.get(final.state.value, 0) + 1

    async def settle(self) -> None:
        """Let the last run finish its plan: resume it if suspended, approve its gate."""
        if self.handle is None:
            return
        status = await self.handle.status()
        if status.state == RunState.SUSPENDED:
            await self.handle.resume()
        if status.state not in TERMINAL_RUN_STATES and status.job("gate").state == "WAITING":
            await self.handle.approve("gate", token=self.token)
        await self.check_ended(self.handle, await self.handle.status())


def _temporal(address: str, kind: str, name: str, run_id: str, inputs: list[str]) -> Any:
    """``temporal workflow update execute`` or ``temporal workflow signal``, to its end."""
    argv = [str(BIN / "temporal"), "workflow", kind]
    argv += ["execute"] if kind == "update" else []
    argv += ["--workflow-id", run_id, "--name", name, "--address", address]
    for value in inputs:
        argv += ["--input", value]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=dict(os.environ))


async def test_random_updates_and_signals_from_the_temporal_cli_never_fail_a_workflow_task(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    folder = tmp_path / "runbooks"
    folder.mkdir()
    (folder / "fuzz-target.yaml").write_text(TARGET)
    registry = load_registry(modules=[], folders=[folder])
    client = dev_env.client
    address = client.service_client.config.target_host
    loop = asyncio.get_running_loop()
    target = Target(client, registry, task_queue)
    sent: list[tuple[str, str, int]] = []
    deadline = time.monotonic() + 240  # a bound on the whole test, whatever the examples are

    def on_loop(coro: Awaitable[T]) -> T:
        """Run a coroutine on the test's loop (where the worker runs) from hypothesis' thread."""
        return asyncio.run_coroutine_threadsafe(coro, loop).result(90)  # type: ignore[arg-type]

    @settings(max_examples=30, deadline=None, database=None)
    @given(commands())
    # The paths random payloads reach only by luck, tried every time (in reverse order).
    @example(("update", "approve", [{"job": "gate", "token": TOKEN, "comment": "fuzz"}]))
    @example(("signal", "resume", []))
    @example(("update", "resume", [{"anything": [1, 2]}]))
    @example(("update", "suspend", [{"now": True}]))
    @example(("signal", "reject", [{"job": "gate", "token": TOKEN, "comment": "no"}]))
    @example(("signal", "approve", [{"job": "gate"}, {"job": "gate"}]))
    @example(("update", "reject", []))
    @example(("signal", "stop", [None]))
    @example(("update", "stop", [{"rollback": "maybe"}]))
    @example(("signal", "sternway.chunk_done", [{"chunk": "x", "error": {"message": 1}}]))
    def send(command: tuple[str, str, list[Any]]) -> None:
        if time.monotonic() > deadline:
            return
        kind, name, inputs = command
        handle = on_loop(target.ready())
        payloads = [json.dumps(_with_token(v, target.token)) for v in inputs]
        result = _temporal(address, kind, name, handle.run_id, payloads)
        sent.append((kind, name, result.returncode))
        # Refusals and bad payloads are errors of the CLI call, stated in a line, not a crash.
        assert "panic" not in result.stderr and "goroutine" not in result.stderr, result.stderr
        if result.returncode != 0:
            assert result.stderr.strip(), result
        # The run answers its status query afterwards, whatever it was sent.
        on_loop(handle.status())

    async with create_worker(client, registry, task_queue=task_queue):
        await asyncio.to_thread(send)
        await target.settle()

    assert len(sent) >= 20, sent
    assert {kind for kind, _, _ in sent} == {"update", "signal"}
    assert any(code == 0 for *_, code in sent) and any(code != 0 for *_, code in sent)
    for run_id in target.runs:
        assert await workflow_task_failures(client, run_id) == [], run_id
    print(f"{len(sent)} commands over {len(target.runs)} runs; runs ended: {target.ended}")
    assert sum(target.ended.values()) == len(target.runs)


def test_payload_fields_cover_every_command_model() -> None:
    """The fuzzed field names stay in step with the command models they aim at."""
    from sternway.workflows.models import ApprovalCommand, ChunkSummary, StopCommand, SuspendCommand

    for model in (ApprovalCommand, StopCommand, SuspendCommand, ChunkSummary):
        assert set(model.model_fields) - {"completed", "total"} <= set(_FIELDS), model
