"""The ``with`` parameters of the built-in job kinds: one rule for each kind, in one place.

The kinds apply it when a job runs (activities/_kinds.py), on the parameters as rendered; the
runbook loader applies the same functions at ``validate`` to every call whose parameters hold no
``${{ }}`` expression, so a literal ``with`` that a run would reject is refused before it is
served (tests/test_kind_schema.py drives one table through both). The loader adds only what it
alone can see: where in the file a value is, and which parameters are expressions.

These are functions rather than pydantic models because their messages say how to fix the value
(``argv must be a list of strings, not one string ('ls -l'): write e.g. ["ls", "-l"]``), which is
what an operator reading a failed job needs; the parameters a kind takes are :data:`KIND_PARAMS`.
The ``python`` kind's function is imported by the worker when the job runs: ``validate`` checks
its name's shape only, since importing a module runs its code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sternway.workflows._argv import argv_text
from sternway.workflows.errors import JobRejected
from sternway.workflows.models import HTTP_METHODS, check_name, parse_duration

__all__ = [
    "KIND_PARAMS",
    "HttpRequest",
    "ShellCommand",
    "action_call",
    "check_params",
    "fail_params",
    "http_request",
    "python_function",
    "rejected",
    "shell_command",
]

KIND_PARAMS: dict[str, frozenset[str] | None] = {
    "shell": frozenset(
        {"argv", "script", "args", "shell", "env", "cwd", "timeout", "non_retryable_exit_codes"}
    ),
    "http": frozenset(
        {
            "method",
            "url",
            "headers",
            "json",
            "body",
            "params",
            "expect",
            "timeout",
            "follow_redirects",
        }
    ),
    "sleep": frozenset({"duration"}),
    "noop": None,  # anything: noop returns its input
    "fail": frozenset({"message", "type", "non_retryable"}),
    "approval": frozenset({"timeout", "on_timeout", "require_token"}),
    "python": None,  # `function`, and the function's input
    "action": frozenset({"action", "args"}),
}
"""The ``with`` parameters each job kind takes (``None``: any)."""

# --------------------------------------------------------------------------------- common


def rejected(kind: str, problem: str) -> JobRejected:
    """The error for bad ``with`` parameters of a ``kind`` job."""
    return JobRejected(f"{kind} job: {problem}")


def _check_keys(kind: str, params: Mapping[str, Any], known: frozenset[str] | None) -> None:
    """Reject parameters the kind does not know (a typo must not be silently ignored)."""
    unknown = sorted(str(key) for key in params if known is not None and key not in known)
    if unknown and known is not None:
        raise rejected(
            kind,
            f"unknown parameter(s) {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(sorted(known))})",
        )


def _duration(kind: str, name: str, value: Any) -> float:
    """A positive duration parameter, in seconds."""
    try:
        seconds = parse_duration(value)
    except ValueError as err:
        raise rejected(kind, f"{name}: {err}") from None
    if seconds <= 0:
        raise rejected(kind, f"{name} must be more than zero, got {value!r}")
    return seconds


def _bool(kind: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise rejected(kind, f"{name} must be true or false, got {value!r}")
    return value


def _string(kind: str, where: str, value: Any) -> str:
    """A string parameter; numbers are accepted and turned into strings."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise rejected(
            kind, f"{where} must be a string, got {type(value).__name__} {value!r} (quote it)"
        )
    text = str(value)
    if "\0" in text:
        raise rejected(kind, f"{where} must not contain a NUL character")
    return text


# ---------------------------------------------------------------------------------- shell


def _argv_item(index: int, value: Any, key: str = "argv") -> str:
    """One argv (or script args) element as an argument: the rule the loader checks too
    (workflows/_argv.py)."""
    try:
        text = argv_text(value)
    except ValueError as err:
        raise rejected("shell", f"{key}[{index}] {err}") from None
    return _string("shell", f"{key}[{index}]", text)


@dataclass(frozen=True)
class ShellCommand:
    """A validated shell job."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    timeout: float | None
    non_retryable_exit_codes: frozenset[int]


def shell_command(params: Mapping[str, Any]) -> ShellCommand:
    """Validate a shell job's ``with``; raises :class:`JobRejected` with what is wrong."""
    _check_keys("shell", params, KIND_PARAMS["shell"])
    use_shell = _bool("shell", "shell", params.get("shell", False))
    argv_in, script = params.get("argv"), params.get("script")
    if use_shell:
        if argv_in is not None:
            raise rejected(
                "shell",
                "give either argv or (with shell: true) script, not both; "
                'pass values to a script through args ("$1", ...) or env',
            )
        if not isinstance(script, str) or not script.strip():
            raise rejected(
                "shell", "shell: true needs script, a non-empty string run by /bin/sh -c"
            )
        args_in = params.get("args")
        if args_in is None:
            args_in = []
        if not isinstance(args_in, list):
            raise rejected("shell", f"args must be a list of strings, got {args_in!r}")
        args = [_argv_item(i, arg, "args") for i, arg in enumerate(args_in)]
        # $0 is the name the shell reports errors under; args are "$1", "$2", ...
        argv = ["/bin/sh", "-c", _string("shell", "script", script), "sh", *args]
    else:
        if params.get("args") is not None:
            raise rejected(
                "shell",
                "args (a script's positional parameters) is only allowed with shell: true; "
                "put a program's arguments in argv",
            )
        if script is not None:
            raise rejected(
                "shell",
                "script is only allowed with shell: true; "
                "otherwise give argv, the program and its arguments as a list",
            )
        if argv_in is None:
            raise rejected("shell", "argv is required: the program and its arguments, as a list")
        if isinstance(argv_in, str):
            raise rejected(
                "shell",
                f"argv must be a list of strings, not one string ({argv_in!r}): write e.g. "
                '["ls", "-l", "/tmp"]; a command line is never split or run by a shell',
            )
        if not isinstance(argv_in, list) or not argv_in:
            raise rejected("shell", f"argv must be a non-empty list of strings, got {argv_in!r}")
        argv = [_argv_item(i, arg) for i, arg in enumerate(argv_in)]
        if not argv[0]:
            raise rejected("shell", "argv[0], the program to run, is empty")
    env_in = params.get("env")
    if env_in is None:
        env_in = {}
    if not isinstance(env_in, dict):
        raise rejected("shell", f"env must be a mapping of names to values, got {env_in!r}")
    env: dict[str, str] = {}
    for key, value in env_in.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise rejected("shell", f"env: {key!r} is not a valid variable name")
        env[key] = _string("shell", f"env.{key}", value)
    cwd = params.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd or "\0" in cwd):
        raise rejected("shell", f"cwd must be a directory path, got {cwd!r}")
    timeout = params.get("timeout")
    codes = params.get("non_retryable_exit_codes")
    if codes is None:
        codes = []
    if isinstance(codes, int) and not isinstance(codes, bool):
        codes = [codes]
    if not isinstance(codes, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in codes
    ):
        raise rejected(
            "shell", f"non_retryable_exit_codes must be a list of exit codes (0-255), got {codes!r}"
        )
    return ShellCommand(
        argv=argv,
        env=env,
        cwd=cwd,
        timeout=None if timeout is None else _duration("shell", "timeout", timeout),
        non_retryable_exit_codes=frozenset(codes),
    )


# ----------------------------------------------------------------------------------- http


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
ParamValue = str | int | float | bool | None


@dataclass(frozen=True)
class HttpRequest:
    """A validated http job."""

    method: str
    url: str
    shown_url: str
    headers: dict[str, str]
    params: dict[str, ParamValue | list[ParamValue]]
    json: Any
    has_json: bool
    body: str | None
    expect: frozenset[int] | None
    timeout: float
    follow_redirects: bool


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def http_request(params: Mapping[str, Any]) -> HttpRequest:
    """Validate an http job's ``with``; raises :class:`JobRejected` with what is wrong."""
    _check_keys("http", params, KIND_PARAMS["http"])
    import httpx  # parses the URL as the request will; off the CLI's start-up path

    url = params.get("url")
    if not isinstance(url, str) or not url.strip():
        raise rejected("http", "url is required: the address to call, e.g. https://host/path")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as err:
        raise rejected("http", f"url {url!r} is not valid: {err}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise rejected("http", f"url {url!r} must be an absolute http:// or https:// address")
    # Credentials in the URL stay out of messages and the live detail.
    shown_url = str(parsed.copy_with(userinfo=b"***")) if parsed.userinfo else url
    method = params.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
        raise rejected("http", f"method must be one of {', '.join(HTTP_METHODS)}, got {method!r}")
    headers_in = params.get("headers") or {}
    if not isinstance(headers_in, dict):
        raise rejected("http", f"headers must be a mapping of names to values, got {headers_in!r}")
    headers: dict[str, str] = {}
    for name, value in headers_in.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise rejected("http", f"headers: {name!r} is not a valid header name")
        text = _string("http", f"headers.{name}", value)
        if "\r" in text or "\n" in text:
            raise rejected("http", f"headers.{name} must not contain a line break")
        headers[name] = text
    query_in = params.get("params") or {}
    if not isinstance(query_in, dict):
        raise rejected("http", f"params must be a mapping of names to values, got {query_in!r}")
    query: dict[str, ParamValue | list[ParamValue]] = {}
    for name, value in query_in.items():
        if not isinstance(name, str) or not (
            _scalar(value) or (isinstance(value, list) and all(_scalar(v) for v in value))
        ):
            raise rejected("http", f"params.{name} must be a value or a list of values")
        query[name] = value
    has_json = params.get("json") is not None
    body = params.get("body")
    if has_json and body is not None:
        raise rejected("http", "give either json or body, not both")
    if body is not None and not isinstance(body, str):
        raise rejected("http", "body must be a string (use json for structured data)")
    if has_json:
        try:
            json.dumps(params["json"], allow_nan=False)
        except (TypeError, ValueError) as err:
            raise rejected("http", f"json is not JSON: {err}") from None
    expect_in = params.get("expect")
    expect: frozenset[int] | None = None
    if expect_in is not None:
        if isinstance(expect_in, int) and not isinstance(expect_in, bool):
            expect_in = [expect_in]
        if (
            not isinstance(expect_in, list)
            or not expect_in
            or not all(
                isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599
                for s in expect_in
            )
        ):
            raise rejected("http", f"expect must be a list of HTTP statuses, got {expect_in!r}")
        expect = frozenset(expect_in)
    return HttpRequest(
        method=method.upper(),
        url=url,
        shown_url=shown_url,
        headers=headers,
        params=query,
        json=params.get("json"),
        has_json=has_json,
        body=body,
        expect=expect,
        timeout=_duration("http", "timeout", params.get("timeout", 30.0)),
        follow_redirects=_bool("http", "follow_redirects", params.get("follow_redirects", False)),
    )


# ------------------------------------------------------------------------ fail and python


def fail_params(params: Mapping[str, Any]) -> tuple[str, str, bool]:
    """A fail job's message, error type and whether it is non-retryable."""
    _check_keys("fail", params, KIND_PARAMS["fail"])
    return (
        _string("fail", "message", params.get("message", "failed on purpose")),
        _string("fail", "type", params.get("type", "Fail")),
        _bool("fail", "non_retryable", params.get("non_retryable", False)),
    )


_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def python_function(params: Mapping[str, Any]) -> str:
    """The ``package.module.function`` a python job calls (its shape; the worker imports it)."""
    name = params.get("function")
    if not isinstance(name, str) or not name:
        raise rejected(
            "python", "function is required: the 'package.module.function' to call, a string"
        )
    if not _DOTTED.match(name) or not all(part.isidentifier() for part in name.split(".")):
        raise rejected("python", f"function {name!r} must be a dotted 'package.module.function'")
    return name


def action_call(params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The action an ``action`` job runs as a child run, and the args it gives it."""
    _check_keys("action", params, KIND_PARAMS["action"])
    name = params.get("action")
    if not isinstance(name, str) or not name:
        raise rejected("action", "action is required: the name of the action to run, a string")
    try:
        check_name("action", name)
    except ValueError as err:
        raise rejected("action", str(err)) from None
    args = params.get("args", {})
    if not isinstance(args, dict):
        raise rejected("action", f"args must be a mapping of the action's args, not {args!r}")
    return name, args


_CHECKS = {
    "action": action_call,
    "shell": shell_command,
    "http": http_request,
    "fail": fail_params,
    "python": python_function,
}


def check_params(kind: str, params: Mapping[str, Any]) -> None:
    """Apply the run's rule for ``kind`` to ``params``; :class:`JobRejected` says what is wrong.

    ``sleep`` and ``approval`` are run by the interpreter, whose rules the loader checks itself;
    ``noop`` takes anything."""
    check = _CHECKS.get(kind)
    if check is not None:
        check(params)
