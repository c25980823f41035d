"""The built-in job kinds (shell, http, python, noop, fail), run by a worker on the dev server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from temporalio.testing import WorkflowEnvironment

from sternway import RunHandle, submit
from sternway.activities import JobContext
from sternway.activities._kinds import KINDS, TAIL_BYTES
from sternway.worker import create_worker
from sternway.workflows._actions import Action, Registry
from sternway.workflows.errors import JobError, JobRejected
from sternway.workflows.models import CallSpec, JobSpec, Plan, RetrySpec, RunStatus

# --------------------------------------------------------------------------------- helpers


def job(name: str, kind: str, params: dict[str, Any], **fields: Any) -> JobSpec:
    """A job running a built-in ``kind`` with ``params`` as its ``with``."""
    return JobSpec(name=name, execute=CallSpec(kind=kind, **{"with": params}), **fields)


def action(name: str, *jobs: JobSpec) -> Action:
    return Action.from_plan(Plan(name=name, jobs=list(jobs)))


def quick(max_attempts: int) -> RetrySpec:
    return RetrySpec(max_attempts=max_attempts, initial_interval=0.1)


async def run_all(env: WorkflowEnvironment, task_queue: str, *actions: Action) -> list[RunStatus]:
    """Run each action once, all at the same time; their final statuses, in order."""
    async with create_worker(env.client, Registry(actions), task_queue=task_queue):
        handles = [await submit(env.client, a.name, {}, task_queue=task_queue) for a in actions]
        return list(await asyncio.gather(*(h.wait() for h in handles)))


def context(params: dict[str, Any]) -> JobContext:
    return JobContext(
        run_id="run",
        action="act",
        job="job",
        attempt=1,
        args=None,
        deps={},
        input=params,
        rollback_data=None,
        has_rollback_data=False,
    )


def real_path(path: Path) -> str:
    return os.path.realpath(path)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs: gone and zombie processes (which this container's init may never
    reap) do not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return re.search(r"^State:\s+[ZX]", status, re.MULTILINE) is None


def pids_in(path: Path) -> list[int]:
    """The pids written to ``path``, one a line (lines still being written left out)."""
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    return [int(line) for line in lines if line.endswith("\n") and line.strip()]


async def read_pids(path: Path, count: int, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        complete = pids_in(path)
        if len(complete) >= count:
            return complete
        assert time.monotonic() < deadline, f"only {complete} in {path}"
        await asyncio.sleep(0.05)


async def live_detail(handle: RunHandle, job_name: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        detail = (await handle.live_details()).get(job_name)
        if detail:
            return detail
        assert time.monotonic() < deadline, f"{job_name} reported no detail"
        await asyncio.sleep(0.1)


# Functions for the python kind: module level, so a worker finds them by name.


async def greet(ctx: JobContext) -> dict[str, Any]:
    """An async job function."""
    return {"greeting": f"hello {ctx.input['name']}", "job": ctx.job, "attempt": ctx.attempt}


def shout(ctx: JobContext) -> str:
    """A sync job function (run in a thread)."""
    return str(ctx.input["name"]).upper()


NOT_A_FUNCTION = 42


# ------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    ("kind", "params", "problem"),
    [
        ("shell", {}, "argv is required"),
        ("shell", {"argv": "ls -l /tmp"}, "not one string"),
        ("shell", {"argv": []}, "non-empty list of strings"),
        ("shell", {"argv": ["ls", ["-l"]]}, r"argv\[1\] is a list.*join"),
        ("shell", {"argv": ["ls", None]}, r"argv\[1\] is null"),
        ("shell", {"argv": ["ls", {"a": 1}]}, r"argv\[1\] is a mapping.*tojson"),
        ("shell", {"argv": [""]}, "program to run, is empty"),
        ("shell", {"argv": ["ls", "a\0b"]}, "NUL"),
        ("shell", {"argv": ["ls"], "script": "ls"}, "only allowed with shell: true"),
        ("shell", {"shell": True}, "needs script"),
        ("shell", {"shell": True, "script": "ls", "argv": ["ls"]}, "not both"),
        ("shell", {"shell": "yes", "script": "ls"}, "true or false"),
        ("shell", {"argv": ["ls"], "args": ["x"]}, "only allowed with shell: true"),
        ("shell", {"shell": True, "script": "ls", "args": "x"}, "args must be a list"),
        ("shell", {"shell": True, "script": "ls", "args": [None]}, r"args\[0\] is null"),
        ("shell", {"argv": ["ls"], "env": ["A=1"]}, "env must be a mapping"),
        ("shell", {"argv": ["ls"], "env": {"A": {"b": 1}}}, "env.A must be a string"),
        ("shell", {"argv": ["ls"], "env": {"A=B": "1"}}, "not a valid variable name"),
        ("shell", {"argv": ["ls"], "cwd": 7}, "cwd must be a directory path"),
        ("shell", {"argv": ["ls"], "timeout": "soon"}, "not a duration"),
        ("shell", {"argv": ["ls"], "timeout": 0}, "more than zero"),
        ("shell", {"argv": ["ls"], "non_retryable_exit_codes": [300]}, r"exit codes \(0-255\)"),
        ("shell", {"argv": ["ls"], "non_retryable_exit_codes": "3"}, "list of exit codes"),
        ("shell", {"argv": ["ls"], "timout": "1s"}, "unknown parameter.*'timout'"),
        ("http", {}, "url is required"),
        ("http", {"url": "ftp://example.com/x"}, "http:// or https://"),
        ("http", {"url": "/relative/path"}, "http:// or https://"),
        ("http", {"url": "http://example.com", "method": "FETCH"}, "method must be one of"),
        ("http", {"url": "http://example.com", "json": {}, "body": "x"}, "not both"),
        ("http", {"url": "http://example.com", "headers": {"X": "a\r\nB: c"}}, "line break"),
        ("http", {"url": "http://example.com", "headers": {"X Y": "1"}}, "not a valid header"),
        ("http", {"url": "http://example.com", "expect": [200, 700]}, "expect must be"),
        ("http", {"url": "http://example.com", "timeout": -1}, "cannot be negative"),
        ("http", {"url": "http://example.com", "verb": "GET"}, "unknown parameter"),
        ("python", {}, "function is required"),
        ("python", {"function": "greet"}, "dotted"),
        ("python", {"function": "tests.test_kinds.no_such_function"}, "has no function"),
        ("python", {"function": "no_such_module_xyz.run"}, "no module found"),
        ("python", {"function": "tests.test_kinds.NOT_A_FUNCTION"}, "not a Python function"),
        ("python", {"function": "os.system"}, "not a Python function"),
    ],
)
async def test_bad_parameters_are_rejected_with_a_clear_message(
    kind: str, params: dict[str, Any], problem: str
) -> None:
    with pytest.raises(JobRejected, match=problem) as caught:
        await KINDS[kind](context(params))
    assert caught.value.reason == "rejected" and caught.value.non_retryable


async def test_http_keeps_credentials_in_the_url_out_of_its_messages() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = context({"url": f"http://admin:hunter2@127.0.0.1:{port}/x", "timeout": 5})
    with pytest.raises(JobError, match=f"GET http://\\*\\*\\*@127.0.0.1:{port}/x failed") as caught:
        await KINDS["http"](ctx)
    assert caught.value.type == "HttpError" and not caught.value.non_retryable
    assert "hunter2" not in caught.value.message and "hunter2" not in str(ctx.detail)


# ------------------------------------------------------------------------------------ shell


async def test_shell_success_gives_exit_code_and_output_tails(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    script = (
        "import os, sys; print('hello', os.environ['GREETING']); print(os.getcwd()); "
        "print('a warning', file=sys.stderr)"
    )
    many_lines = "print('\\n'.join(f'line {i}' for i in range(5000)))"
    act = action(
        "kinds-shell-ok",
        job(
            "greet",
            "shell",
            {
                "argv": [sys.executable, "-c", script],
                "env": {"GREETING": "sternway"},
                "cwd": str(tmp_path),
            },
        ),
        job("chatty", "shell", {"argv": [sys.executable, "-c", many_lines]}),
    )
    [status] = await run_all(dev_env, task_queue, act)
    assert status.state == "COMPLETED"
    greet_job = status.job("greet")
    stdout = f"hello sternway\n{real_path(tmp_path)}\n"
    assert greet_job.output == {"exit_code": 0, "stdout": stdout, "stderr": "a warning\n"}
    [entry] = greet_job.log
    assert entry.state == "COMPLETED" and entry.exit_code == 0
    assert entry.stdout_tail == stdout and entry.stderr_tail == "a warning\n"
    tail = status.job("chatty").log[0].stdout_tail
    assert tail is not None and len(tail) <= TAIL_BYTES
    assert tail.endswith("line 4998\nline 4999\n")


async def test_shell_bad_exit_is_retried_unless_its_code_is_non_retryable(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    failing = action(
        "kinds-shell-exit1",
        job(
            "check",
            "shell",
            {"argv": [sys.executable, "-c", "import sys; sys.exit('disk full')"]},
            retry=quick(2),
        ),
    )
    permanent = action(
        "kinds-shell-exit3",
        job(
            "check",
            "shell",
            {"argv": ["/bin/sh", "-c", "echo no such host >&2; exit 3"]}
            | {"non_retryable_exit_codes": [3]},
            retry=quick(2),
        ),
    )
    retried, once = await run_all(dev_env, task_queue, failing, permanent)
    assert retried.state == "FAILED"
    check = retried.job("check")
    assert check.attempts == 2
    assert check.error is not None
    assert (check.error.reason, check.error.type) == ("bad_exit", "BadExit")
    assert check.error.message == "exit code 1: disk full"
    assert [(e.exit_code, e.stderr_tail) for e in check.log] == [(1, "disk full\n")] * 2
    assert once.state == "FAILED"
    check = once.job("check")
    assert check.attempts == 1
    assert check.error is not None and check.error.reason == "bad_exit"
    assert check.error.message == "exit code 3: no such host"


async def test_shell_command_that_cannot_start_or_bad_input_is_not_retried(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    missing = action(
        "kinds-shell-missing", job("run", "shell", {"argv": ["/no/such/tool"]}, retry=quick(3))
    )
    no_dir = action(
        "kinds-shell-nodir",
        job("run", "shell", {"argv": ["ls"], "cwd": str(tmp_path / "nope")}, retry=quick(3)),
    )
    bad = action("kinds-shell-bad", job("run", "shell", {"argv": "ls -l"}, retry=quick(3)))
    statuses = await run_all(dev_env, task_queue, missing, no_dir, bad)
    errors = []
    for status in statuses:
        assert status.state == "FAILED"
        assert status.job("run").attempts == 1
        error = status.job("run").error
        assert error is not None
        errors.append((error.reason, error.type, error.message))
    assert errors[0] == (
        "bad_exit",
        "BadCommand",
        "cannot start '/no/such/tool': No such file or directory",
    )
    assert errors[1][:2] == ("bad_exit", "BadCommand") and "nope" in errors[1][2]
    assert errors[2][:2] == ("rejected", "JobRejected") and "not one string" in errors[2][2]


async def test_shell_timeout_kills_the_command_and_has_reason_timeout(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    act = action(
        "kinds-shell-timeout",
        job(
            "slow",
            "shell",
            {"argv": ["/bin/sh", "-c", "echo waiting; sleep 30"], "timeout": "300ms"},
            retry=quick(2),
        ),
    )
    started = time.monotonic()
    [status] = await run_all(dev_env, task_queue, act)
    assert time.monotonic() - started < 12
    slow = status.job("slow")
    assert status.state == "FAILED" and slow.attempts == 2
    assert slow.error is not None
    assert (slow.error.reason, slow.error.type) == ("timeout", "Timeout")
    assert all(e.exit_code == -15 and e.stdout_tail == "waiting\n" for e in slow.log)


async def test_shell_stop_kills_the_whole_process_group(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    script = (
        'echo $$ > "$PIDFILE"; '
        'sleep 300 & echo $! >> "$PIDFILE"; '
        'sleep 300 & echo $! >> "$PIDFILE"; '
        "echo two sleepers started; wait"
    )
    act = action(
        "kinds-shell-stop",
        job(
            "sleepers", "shell", {"shell": True, "script": script, "env": {"PIDFILE": str(pidfile)}}
        ),
    )
    pids: list[int] = []
    try:
        async with create_worker(dev_env.client, Registry([act]), task_queue=task_queue):
            handle = await submit(dev_env.client, act.name, {}, task_queue=task_queue)
            pids = await read_pids(pidfile, 3)
            assert all(alive(pid) for pid in pids)
            assert await live_detail(handle, "sleepers") == "two sleepers started"
            await handle.stop(reason="enough sleeping")
            status = await handle.wait()
        assert status.state == "STOPPED"
        sleepers = status.job("sleepers")
        assert sleepers.state == "CANCELLED"
        assert sleepers.error is not None and sleepers.error.reason == "cancelled"
        [entry] = sleepers.log
        assert entry.state == "CANCELLED" and entry.stdout_tail == "two sleepers started\n"
        for _ in range(50):  # the processes are gone (or zombies) within 5 s
            if not any(alive(pid) for pid in pids):
                break
            await asyncio.sleep(0.1)
        assert [pid for pid in pids if alive(pid)] == []
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


async def test_shell_leaves_background_processes_and_does_not_wait_for_them(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    # The background sleep keeps the command's stdout open: the job still ends about when the
    # command does, not when the sleep does.
    act = action(
        "kinds-shell-daemon",
        job("spawn", "shell", {"shell": True, "script": "sleep 60 & echo $!"}),
    )
    started = time.monotonic()
    [status] = await run_all(dev_env, task_queue, act)
    output = status.job("spawn").output
    pid = int(output["stdout"])
    try:
        assert status.state == "COMPLETED"
        assert time.monotonic() - started < 10
        assert alive(pid)
    finally:
        os.kill(pid, 9)


async def test_shell_argv_element_full_of_metacharacters_is_one_argument(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    canary = tmp_path / "pwned"
    weird = (
        f'\'; touch {canary}; $(touch {canary}) `touch {canary}` "quoted" |&<>* '
        f"${{HOME}} $HOME \\ && touch {canary} #\nnext line"
    )
    act = action(
        "kinds-shell-meta",
        job(
            "argv",
            "shell",
            {
                "argv": [
                    sys.executable,
                    "-c",
                    "import sys,json; print(json.dumps(sys.argv[1:]))",
                    weird,
                ]
            },
        ),
        # The safe way to hand a value to a script: through env, quoted in the script.
        job(
            "env", "shell", {"shell": True, "script": 'printf %s "$WEIRD"', "env": {"WEIRD": weird}}
        ),
    )
    [status] = await run_all(dev_env, task_queue, act)
    assert status.state == "COMPLETED"
    assert json.loads(status.job("argv").output["stdout"]) == [weird]
    assert status.job("env").output["stdout"] == weird
    assert not canary.exists()


# ------------------------------------------------------------------------------------- http


class _Server(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client timed out
            self._answer()

    def do_POST(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._answer()

    def _answer(self) -> None:
        url = urlsplit(self.path)
        with self.server.lock:
            self.server.hits[url.path] += 1
            hits = self.server.hits[url.path]
        if url.path == "/flaky":
            if hits <= 2:
                self._send(503, {"error": "busy"})
            else:
                self._send(200, {"ok": True, "hits": hits})
        elif url.path == "/echo":
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            echo = {
                "method": self.command,
                "query": parse_qs(url.query),
                "body": json.loads(body) if body else None,
                "x-test": self.headers.get("x-test"),
            }
            self._send(200, echo)
        elif url.path == "/text":
            self._send(200, "plain text, not JSON", content_type="text/plain; charset=utf-8")
        elif url.path == "/slow":
            time.sleep(2)
            self._send(200, {})
        else:
            self._send(404, {"error": "not found"})

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Set-Cookie", "session=secret")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    """A local HTTP server of the test's own; its base URL."""
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_http_retries_server_errors_but_not_a_404(
    dev_env: WorkflowEnvironment, task_queue: str, http_server: str
) -> None:
    flaky = action(
        "kinds-http-flaky", job("call", "http", {"url": f"{http_server}/flaky"}, retry=quick(3))
    )
    missing = action(
        "kinds-http-404", job("call", "http", {"url": f"{http_server}/missing"}, retry=quick(3))
    )
    completed, failed = await run_all(dev_env, task_queue, flaky, missing)
    assert completed.state == "COMPLETED"
    call = completed.job("call")
    assert call.attempts == 3
    assert [e.state for e in call.log] == ["FAILED", "FAILED", "COMPLETED"]
    assert call.log[0].error is not None and call.log[0].error.type == "HTTP503"
    assert call.output["status"] == 200
    assert call.output["json"] == {"ok": True, "hits": 3}
    assert call.output["headers"] == {"content-type": "application/json"}
    assert failed.state == "FAILED"
    call = failed.job("call")
    assert call.attempts == 1
    assert call.error is not None
    assert (call.error.reason, call.error.type) == ("error", "HTTP404")
    assert call.error.message == f"HTTP 404 from GET {http_server}/missing"


async def test_http_request_parts_expected_statuses_and_network_errors(
    dev_env: WorkflowEnvironment, task_queue: str, http_server: str
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    post = {
        "method": "post",
        "url": f"{http_server}/echo",
        "params": {"dry_run": True, "host": ["a", "b"]},
        "headers": {"X-Test": "yes"},
        "json": {"release": "v2", "hosts": 3},
    }
    parts = action(
        "kinds-http-parts",
        job("post", "http", post),
        job("text", "http", {"url": f"{http_server}/text"}),
        job("expected-404", "http", {"url": f"{http_server}/gone", "expect": [404, 410]}),
    )
    refused = action(
        "kinds-http-refused",
        job("call", "http", {"url": f"http://127.0.0.1:{closed_port}/"}, retry=quick(2)),
    )
    slow = action(
        "kinds-http-slow", job("call", "http", {"url": f"{http_server}/slow", "timeout": "300ms"})
    )
    done, not_connected, timed_out = await run_all(dev_env, task_queue, parts, refused, slow)
    assert done.state == "COMPLETED"
    assert done.job("post").output["json"] == {
        "method": "POST",
        "query": {"dry_run": ["true"], "host": ["a", "b"]},
        "body": {"release": "v2", "hosts": 3},
        "x-test": "yes",
    }
    text = done.job("text").output
    assert text["json"] is None and text["text"] == "plain text, not JSON"
    assert done.job("expected-404").output["status"] == 404
    call = not_connected.job("call")
    assert not_connected.state == "FAILED" and call.attempts == 2
    assert call.error is not None and (call.error.reason, call.error.type) == ("error", "HttpError")
    call = timed_out.job("call")
    assert timed_out.state == "FAILED"
    assert call.error is not None
    assert (call.error.reason, call.error.type) == ("timeout", "HttpError")


# ----------------------------------------------------------------------------------- python


async def test_python_kind_calls_a_function_by_name(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    calls = action(
        "kinds-python",
        job("async-fn", "python", {"function": "tests.test_kinds.greet", "name": "world"}),
        job("sync-fn", "python", {"function": "tests.test_kinds.shout", "name": "world"}),
    )
    unknown = action(
        "kinds-python-unknown",
        job("call", "python", {"function": "tests.test_kinds.no_such_function"}, retry=quick(3)),
    )
    done, failed = await run_all(dev_env, task_queue, calls, unknown)
    assert done.state == "COMPLETED"
    assert done.job("async-fn").output == {
        "greeting": "hello world",
        "job": "async-fn",
        "attempt": 1,
    }
    assert done.job("sync-fn").output == "WORLD"
    assert failed.state == "FAILED"
    call = failed.job("call")
    assert call.attempts == 1
    assert call.error is not None and call.error.reason == "rejected"
    assert "has no function 'no_such_function'" in call.error.message


# ------------------------------------------------------------------------------- noop, fail


async def test_noop_returns_its_input_and_fail_fails_with_its_message(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    params = {"a": 1, "nested": {"list": [1, "two"], "none": None}}
    noop = action("kinds-noop", job("echo", "noop", params))
    undo_marker = tmp_path / "undone"
    undo = [sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write('undone')"]
    fail = action(
        "kinds-fail",
        job(
            "work",
            "noop",
            {},
            rollback=CallSpec(kind="shell", **{"with": {"argv": [*undo, str(undo_marker)]}}),
        ),
        job("boom", "fail", {"message": "nope", "type": "Nope"}, after=["work"], retry=quick(2)),
    )
    fatal = action("kinds-fail-fatal", job("boom", "fail", {"non_retryable": True}, retry=quick(3)))
    echoed, failed, fatal_status = await run_all(dev_env, task_queue, noop, fail, fatal)
    assert echoed.state == "COMPLETED" and echoed.job("echo").output == params
    assert failed.state == "FAILED"
    boom = failed.job("boom")
    assert boom.attempts == 2
    assert boom.error is not None
    assert (boom.error.reason, boom.error.type, boom.error.message) == ("error", "Nope", "nope")
    # A built-in kind serves as a rollback too.
    assert failed.job("work").state == "ROLLED_BACK"
    assert undo_marker.read_text() == "undone"
    boom = fatal_status.job("boom")
    assert boom.attempts == 1
    assert boom.error is not None and boom.error.message == "failed on purpose"
