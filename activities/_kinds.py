"""Built-in job kinds run by the execute and rollback activities.

Each kind is ``async def kind(ctx) -> output`` where ``ctx.input`` holds the job's ``with``
parameters, already rendered by the workflow (expressions resolved). The same functions serve
rollbacks (``ctx`` is then a :class:`~activities._jobs.RollbackContext`).

Kinds and their ``with`` parameters (bad parameters fail the job at once with reason
``rejected``, and are never retried):

``shell``
    ``argv`` (the program and its arguments, a list of strings; bools and numbers
    become their JSON text, see workflows/_argv.py),
    ``env`` (variables the job gets), ``cwd``, ``timeout`` (a duration; without it the
    job's own timeout applies), ``non_retryable_exit_codes`` (a list of ints), ``shell`` (default
    false), ``script`` (only with ``shell: true``, run by ``/bin/sh -c``) and ``args`` (only with
    ``script``: its positional parameters ``"$1"``, ``"$2"``, ...). The program is
    executed directly from ``argv``; no shell ever sees it, so no argument is ever interpreted.
    It starts from a clean environment (:mod:`activities._shell_host`: PATH, HOME, LANG, LC_ALL,
    TZ, the operator's allowlist, then ``env``), never the worker's own.
    It runs in a session (process group) of its own with stdin from ``/dev/null``; a stop, a
    ``timeout`` or a worker shutdown sends SIGTERM to the whole group, then SIGKILL after 5 s.
    The process is SIGKILLed if the worker dies (``PR_SET_PDEATHSIG``), and the group of a
    delivery lost with its worker is killed before the same attempt starts again on this host.
    The last 4 KiB of stdout and stderr go to the attempt log, and the last line of stdout is the
    job's live detail. Output: ``{"exit_code": 0, "stdout": ..., "stderr": ...}``. A non-zero exit
    fails the attempt (type ``BadExit``, reason ``bad_exit``); a program that cannot start fails
    the job for good (type ``BadCommand``); ``timeout`` fails the attempt with type ``Timeout``,
    reason ``timeout``. Background processes the command leaves behind are not waited for (after
    the command exits Sternway waits 1 s for them to close its output pipes, then stops reading)
    and are not killed unless the job is stopped or times out.

``http``
    ``method`` (default GET), ``url`` (http or https), ``headers``, ``params`` (query string),
    ``json`` (a JSON body) or ``body`` (a text body), ``expect`` (accepted statuses, default any
    2xx), ``timeout`` (a duration for the whole request, default 30 s), ``follow_redirects``
    (default false). Output: ``{"status", "headers" (content-type, location, etag, retry-after
    when present), "json" (the parsed body when the response says it is JSON, else null), "text"
    (the body, at most 16 KiB)}``. An unexpected status fails with type ``HTTP<status>``, for
    good on a 4xx other than 408 and 429; network errors and timeouts fail with type
    ``HttpError`` and are retried (reason ``timeout`` for timeouts).

``python``
    ``function``: ``"package.module.qualname"`` of a function importable by the worker, async or
    sync (sync ones run in a thread). It is called with the context, whose ``input`` is the whole
    ``with`` (``function`` included), and its result is the job's output.

``noop`` returns its input; ``fail`` fails with ``message`` (``type``, ``non_retryable``).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import importlib
import inspect
import json
import os
import re
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from sternway.activities import _shell_host
from sternway.activities._context import JobContext, RollbackContext, call_job_function
from sternway.workflows._kind_params import (
    fail_params,
    http_request,
    python_function,
    rejected,
    shell_command,
)
from sternway.workflows._protocol import ErrorType, Reason
from sternway.workflows.errors import JobError, JobRejected
from sternway.workflows.models import mask_secrets

__all__ = ["KINDS", "fail", "http", "noop", "python", "shell"]

Context = JobContext | RollbackContext

# ------------------------------------------------------------------------------------- common


# -------------------------------------------------------------------------------------- shell


TAIL_BYTES = 4096
"""How much of the end of stdout and of stderr a shell job keeps."""
DETAIL_CHARS = 200
"""The longest live detail line a shell job reports."""
KILL_GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL when a shell job's process group is killed."""
_DRAIN_GRACE = 1.0
_REPORT_EVERY = 1.0
_GROUP_POLL = 0.05
_LINE_START_BYTES = 1024
_LINE_BREAK = re.compile(rb"[\r\n]")


class _Tail:
    """The last :data:`TAIL_BYTES` of a stream, and its last non-empty line."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._truncated = False
        self._line_start = b""
        self.last_line = ""

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk of output."""
        self._data += chunk
        if len(self._data) > TAIL_BYTES:
            del self._data[:-TAIL_BYTES]
            self._truncated = True
        # Lines end at \n or \r (progress bars redraw with \r); only their start is kept.
        pending = self._line_start + chunk
        ends = [m.start() for m in _LINE_BREAK.finditer(pending)]
        if not ends:
            self._line_start = pending[:_LINE_START_BYTES]
            return
        starts = [0, *(end + 1 for end in ends[:-1])]
        for start, end in zip(reversed(starts), reversed(ends), strict=True):
            line = pending[start:end].decode("utf-8", "replace").strip()
            if line:
                self.last_line = line
                break
        self._line_start = pending[ends[-1] + 1 :][:_LINE_START_BYTES]

    def text(self) -> str:
        """The tail as text (UTF-8; undecodable bytes replaced)."""
        data = bytes(self._data)
        if self._truncated:  # do not start in the middle of a UTF-8 character
            skip = 0
            while skip < min(3, len(data)) and data[skip] & 0xC0 == 0x80:
                skip += 1
            data = data[skip:]
        return data.decode("utf-8", "replace")

    @property
    def truncated(self) -> bool:
        """Whether the stream's start was dropped (the tail may start in the middle of a secret)."""
        return self._truncated


class _Process(asyncio.SubprocessProtocol):
    """Collects a process's output tails and tells when it exits and when its pipes close."""

    def __init__(self) -> None:
        self.stdout = _Tail()
        self.stderr = _Tail()
        self.exited = asyncio.Event()
        self.closed = asyncio.Event()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        """Output from the process (fd 1: stdout, 2: stderr)."""
        (self.stdout if fd == 1 else self.stderr).feed(data)

    def process_exited(self) -> None:
        """The process ended (its pipes may still be held open by processes it started)."""
        self.exited.set()

    def connection_lost(self, exc: Exception | None) -> None:
        """The process ended and every pipe is closed."""
        self.exited.set()
        self.closed.set()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies, which cannot run, do not count:
    an init that does not reap orphans would keep them forever)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


async def _kill_group(pgid: int, process: _Process) -> None:
    """SIGTERM to the whole process group, up to :data:`KILL_GRACE` seconds, then SIGKILL.

    Also when cancelled again while waiting: the SIGKILL is then sent at once.
    """
    loop = asyncio.get_running_loop()
    _signal_group(pgid, signal.SIGTERM)
    deadline = loop.time() + KILL_GRACE
    try:
        while loop.time() < deadline:
            if not _group_alive(pgid):
                break
            await asyncio.sleep(_GROUP_POLL)
    finally:
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            await process.exited.wait()


async def _report_progress(ctx: Context, tail: _Tail, hidden: list[str]) -> None:
    """Report the last line of stdout as the job's live detail, when it changes."""
    shown = ""
    while True:
        await asyncio.sleep(_REPORT_EVERY)
        line = ctx.clip(mask_secrets(tail.last_line, hidden), DETAIL_CHARS)
        if line and line != shown:
            ctx.report(line)
            shown = line


def _last_line(ctx: Context, text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return ctx.clip(line.strip(), DETAIL_CHARS)
    return ""


def _exit_message(ctx: Context, code: int, stderr: str) -> str:
    message = f"exit code {code}"
    if code < 0:
        with contextlib.suppress(ValueError):
            message += f" (killed by {signal.Signals(-code).name})"
    last = _last_line(ctx, stderr)
    return f"{message}: {last}" if last else message


def _tails(ctx: Context, process: _Process, hidden: list[str]) -> tuple[str, str]:
    """stdout and stderr tails, the worker's own credentials (``hidden``) masked and a piece of
    a secret where a tail was cut masked."""
    out, err = process.stdout, process.stderr
    return (
        ctx.unpiece(mask_secrets(out.text(), hidden), start=out.truncated),
        ctx.unpiece(mask_secrets(err.text(), hidden), start=err.truncated),
    )


def _bad_command(message: str) -> JobError:
    return JobError(message, type=ErrorType.BAD_COMMAND, reason=Reason.BAD_EXIT, non_retryable=True)


async def shell(ctx: Context) -> Any:
    """Run a program from ``argv`` (or a ``script`` with ``shell: true``); see the module doc."""
    command = shell_command(ctx.input)
    loop = asyncio.get_running_loop()
    # loop.subprocess_exec is what asyncio.create_subprocess_exec runs on: the same exec of an
    # argv list, but its protocol tells when the process exits even while a background child
    # still holds the pipes (Process.wait() would wait for the pipes too).
    # A delivery of this attempt lost with its worker may have left processes on this host: they
    # go before this delivery starts, so that the two never run side by side.
    survivors = _shell_host.kill_recorded_group(ctx.idempotency_key)
    if survivors is not None:
        ctx.log.warning(
            "killed the process group an earlier delivery of this attempt left", pgid=survivors
        )
    try:
        # The fork happens on this thread, the worker's event loop thread, which lives as long as
        # the worker: PR_SET_PDEATHSIG (tied to the forking thread) fires when the worker dies.
        environment = _shell_host.job_environment(command.env)
        transport, process = await loop.subprocess_exec(
            _Process,
            *_shell_host.dying_with_worker(command.argv, environment.get("PATH")),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment,
            cwd=command.cwd,
            start_new_session=True,
        )
    except OSError as err:  # the program or cwd is missing, not executable, ...
        problem = err.strerror or str(err)
        if err.filename is not None and err.filename != command.argv[0]:
            problem += f": {err.filename!r}"
        raise _bad_command(f"cannot start {command.argv[0]!r}: {problem}") from None
    pgid = transport.get_pid()
    _shell_host.record_group(ctx.idempotency_key, pgid)
    ctx.log.info("shell job started", pid=pgid, program=ctx.mask(command.argv[0]))
    # The worker's credentials never reach the job's environment; should the job find one
    # anyway (a file it can read), its output does not show it.
    hidden = _shell_host.host_secrets()
    reporter = asyncio.create_task(_report_progress(ctx, process.stdout, hidden))
    timed_out = False
    try:
        try:
            async with asyncio.timeout(command.timeout):
                await process.exited.wait()
        except TimeoutError:
            timed_out = True
            await _kill_group(pgid, process)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN_GRACE):
                await process.closed.wait()
    except asyncio.CancelledError:
        ctx.log.info("shell job cancelled: killing its process group", pgid=pgid)
        await _kill_group(pgid, process)
        ctx.set_exit(transport.get_returncode(), *_tails(ctx, process, hidden))
        raise
    finally:
        reporter.cancel()
        transport.close()
        # Only a worker that dies before this point leaves the record for a re-delivery to find.
        _shell_host.forget_group(ctx.idempotency_key)
    code = transport.get_returncode()
    stdout, stderr = _tails(ctx, process, hidden)
    ctx.set_exit(code, stdout, stderr)
    if timed_out:
        assert command.timeout is not None
        raise JobError(
            f"timed out after {command.timeout:g}s: the process group was killed",
            type=ErrorType.TIMEOUT,
            reason=Reason.TIMEOUT,
        )
    if code == 0:
        return {"exit_code": 0, "stdout": stdout, "stderr": stderr}
    if code is None:  # pragma: no cover - the exit event is set only once the code is known
        raise JobError(
            "the process ended with no exit code", type=ErrorType.BAD_EXIT, reason=Reason.BAD_EXIT
        )
    raise JobError(
        _exit_message(ctx, code, stderr),
        type=ErrorType.BAD_EXIT,
        reason=Reason.BAD_EXIT,
        non_retryable=code in command.non_retryable_exit_codes,
    )


# --------------------------------------------------------------------------------------- http

TEXT_BYTES = 16 * 1024
"""How much of a response body an http job returns as ``text``."""
READ_LIMIT = 1024 * 1024
"""How much of a response body an http job reads at most (larger JSON is not parsed)."""
SELECTED_HEADERS = ("content-type", "location", "etag", "retry-after")
"""Response headers an http job returns (others may carry secrets, such as cookies)."""


async def _read_body(response: httpx.Response) -> tuple[bytes, bool]:
    """At most :data:`READ_LIMIT` bytes of the body, and whether there was more."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        room = READ_LIMIT - len(body)
        if len(chunk) > room:
            body += chunk[:room]
            return bytes(body), True
        body += chunk
    return bytes(body), False


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode_text(response: httpx.Response, body: bytes) -> str:
    """The start of the body as text, at most :data:`TEXT_BYTES` bytes of it."""
    encoding = response.charset_encoding or "utf-8"
    try:
        decoder = codecs.getincrementaldecoder(encoding)("replace")
    except LookupError:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
    if len(body) <= TEXT_BYTES:
        return decoder.decode(body, final=True)
    return decoder.decode(body[:TEXT_BYTES], final=False)  # drops a character cut in two


async def http(ctx: Context) -> Any:
    """Make one HTTP request and check its status; see the module doc."""
    request = http_request(ctx.input)
    what = f"{request.method} {request.shown_url}"
    ctx.detail = what  # sent with the next heartbeat, if the request is still running by then
    try:
        async with (
            asyncio.timeout(request.timeout),
            httpx.AsyncClient(
                timeout=request.timeout, follow_redirects=request.follow_redirects
            ) as client,
        ):
            built = client.build_request(
                request.method,
                request.url,
                headers=request.headers,
                params=request.params,
                json=request.json if request.has_json else None,
                content=request.body,
            )
            response = await client.send(built, stream=True)
            try:
                body, truncated = await _read_body(response)
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
        raise JobError(
            f"{what} timed out after {request.timeout:g}s",
            type=ErrorType.HTTP_ERROR,
            reason=Reason.TIMEOUT,
        ) from None
    except httpx.HTTPError as err:
        raise JobError(
            f"{what} failed: {type(err).__name__}: {err}", type=ErrorType.HTTP_ERROR
        ) from None
    status = response.status_code
    expected = 200 <= status < 300 if request.expect is None else status in request.expect
    if not expected:
        raise JobError(
            f"HTTP {status} from {what}",
            type=f"HTTP{status}",
            non_retryable=400 <= status < 500 and status not in (408, 429),
        )
    content_type = response.headers.get("content-type", "")
    parsed: Any = None
    if body and not truncated and _is_json(content_type):
        try:
            parsed = json.loads(body, parse_constant=_no_constant)
        except ValueError:
            parsed = None
    return {
        "status": status,
        "headers": {h: response.headers[h] for h in SELECTED_HEADERS if h in response.headers},
        "json": parsed,
        "text": ctx.unpiece(_decode_text(response, body), end=len(body) > TEXT_BYTES),
    }


# ------------------------------------------------------------------------------------- python


# The top-level packages of the first layout, now sternway.<name> (docs/architecture.md).
_MOVED_PACKAGES = frozenset({"activities", "workflows", "starter", "worker"})


def _import_function(name: str) -> Callable[..., Any]:
    """The function named ``package.module.qualname``; :class:`JobRejected` if there is none.

    A name in a package of the first layout (``activities.site.build``) that does not import as
    it is is looked up under ``sternway.`` too, so runbooks written for that layout still run;
    a user's own module of the same name comes first.
    """
    try:
        return _import_dotted(name)
    except JobRejected as err:
        if name.split(".")[0] not in _MOVED_PACKAGES:
            raise
        first_error = err
    try:
        return _import_dotted(f"sternway.{name}")
    except JobRejected:
        raise first_error from None


def _import_dotted(name: str) -> Callable[..., Any]:
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            missing = err.name or ""
            if module_name == missing or module_name.startswith(missing + "."):
                continue  # not a module: the name may be an attribute of a shorter prefix
            raise rejected("python", f"cannot import module {module_name!r}: {err}") from None
        except Exception as err:
            raise rejected(
                "python", f"cannot import module {module_name!r}: {type(err).__name__}: {err}"
            ) from None
        target: Any = module
        for attr in parts[split:]:
            try:
                target = getattr(target, attr)
            except AttributeError:
                qualname = ".".join(parts[split:])
                raise rejected(
                    "python", f"module {module_name!r} has no function {qualname!r}"
                ) from None
        if (
            inspect.isclass(target)
            or inspect.ismodule(target)
            or inspect.isbuiltin(target)
            or not callable(target)
        ):
            raise rejected("python", f"{name!r} is not a Python function")
        function: Callable[..., Any] = target
        return function
    raise rejected("python", f"no module found for function {name!r}")


async def python(ctx: Context) -> Any:
    """Call the function named by ``function`` with the context and return its result."""
    function = _import_function(python_function(ctx.input))
    return await call_job_function(function, ctx)


# ---------------------------------------------------------------------------------- test kinds


async def noop(ctx: Context) -> Any:
    """Return the job's input (used by tests, benchmarks and placeholders)."""
    return dict(ctx.input)


async def fail(ctx: Context) -> Any:
    """Fail with ``message`` (and ``type``, ``non_retryable`` if given)."""
    message, type_, non_retryable = fail_params(ctx.input)
    raise JobError(message, type=type_, non_retryable=non_retryable)


KINDS: dict[str, Callable[[Context], Awaitable[Any]]] = {
    "shell": shell,
    "http": http,
    "python": python,
    "noop": noop,
    "fail": fail,
}
"""The built-in kinds the execute and rollback activities run, by name."""
