"""A call's ``with``, checked at load: the literal values by the kind's own rule
(workflows/_kind_params.py), expressions left to the run."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sternway.workflows._argv import argv_text
from sternway.workflows._kind_params import (
    KIND_PARAMS,
    action_call,
    check_params,
    python_function,
)
from sternway.workflows._runbook._format import seconds
from sternway.workflows._runbook._messages import FieldPath, Invalid, kind_of, short
from sternway.workflows._suggest import did_you_mean
from sternway.workflows.errors import JobRejected
from sternway.workflows.models import (
    HTTP_METHODS,
    ON_TIMEOUT,
)

# ---------------------------------------------------------------------- kind parameters


def _is_expr(value: Any) -> bool:
    return isinstance(value, str) and "${{" in value


def _holds_expression(value: Any) -> bool:
    """Whether an expression is anywhere in ``value`` (its keys included)."""
    if isinstance(value, dict):
        return any(_holds_expression(k) or _holds_expression(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_expression(item) for item in value)
    return isinstance(value, str) and ("${{" in value or "${%" in value)


_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"})
_SHELL_C = re.compile(r"^-[A-Za-z]*c[A-Za-z]*$")


def _shell_script_index(argv: list[Any]) -> int | None:
    """Where the script of ``argv`` is when it runs a shell with ``-c`` (``sh -ec SCRIPT``)."""
    if not isinstance(argv[0], str) or argv[0].rsplit("/", 1)[-1] not in _SHELLS:
        return None
    for i, item in enumerate(argv[1:], 1):
        if not isinstance(item, str) or not item.startswith("-"):
            return None
        if _SHELL_C.match(item):
            return i + 1 if i + 1 < len(argv) else None
    return None


class CallParams:
    """Checks of one call's ``with``: literal values are checked and normalised, expressions are
    left to the run (their type is only known then)."""

    def __init__(self, kind: str, params: dict[str, Any], path: FieldPath) -> None:
        self.kind = kind
        self.params = dict(params)
        self.path = path

    def fail(self, key: str | None, message: str) -> Invalid:
        return Invalid(self.path if key is None else (*self.path, key), message)

    def literal(self, key: str) -> Any:
        """The value of ``key`` if given and not an expression, else ``None``."""
        value = self.params.get(key)
        return None if _is_expr(value) else value

    def string(self, key: str) -> None:
        value = self.literal(key)
        if value is not None and not isinstance(value, str):
            raise self.fail(key, f"must be a string, not {kind_of(value)}")

    def boolean(self, key: str) -> None:
        value = self.literal(key)
        if value is not None and not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, not {kind_of(value)}")

    def duration(self, key: str) -> None:
        value = self.literal(key)
        if value is None:
            return
        try:
            value = seconds(value)
        except ValueError as err:
            raise self.fail(key, str(err)) from None
        if value <= 0:
            raise self.fail(key, "must be more than 0s")
        self.params[key] = value

    def mapping(self, key: str, *, scalars: bool) -> None:
        value = self.literal(key)
        if value is None:
            return
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping, not {kind_of(value)}")
        if scalars:
            fixed: dict[str, Any] = {}
            for name, item in value.items():
                if isinstance(item, bool) or not isinstance(item, str | int | float):
                    raise Invalid((*self.path, key, name), f"must be a string, not {kind_of(item)}")
                fixed[name] = item if isinstance(item, str) else str(item)
            self.params[key] = fixed

    def strings(self, key: str) -> None:
        """A list of arguments under the shell kind's rule at run time (workflows/_argv.py):
        bools and numbers become their JSON text; expressions are strings, kept."""
        value = self.literal(key)
        if value is None:
            return
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list of strings, not {kind_of(value)}")
        fixed: list[Any] = []
        for i, item in enumerate(value):
            try:
                fixed.append(argv_text(item))
            except ValueError as err:
                raise Invalid((*self.path, key, i), str(err)) from None
        self.params[key] = fixed

    def integers(self, key: str, low: int, high: int) -> None:
        value = self.literal(key)
        if value is None:
            return
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            where = (*self.path, key, i) if isinstance(value, list) else (*self.path, key)
            if isinstance(item, bool) or not isinstance(item, int) or not low <= item <= high:
                raise Invalid(where, f"must be a whole number from {low} to {high}")
        self.params[key] = items

    def run_rule(self, rule: Callable[[dict[str, Any]], object], params: dict[str, Any]) -> None:
        """Apply the kind's own rule (workflows/_kind_params.py), as the run will."""
        try:
            rule(params)
        except JobRejected as err:
            raise self.fail(None, str(err).removeprefix(f"{self.kind} job: ")) from None

    def check(self) -> dict[str, Any]:
        known = KIND_PARAMS[self.kind]
        if known is not None:
            for key in self.params:
                if key not in known:
                    raise self.fail(
                        key,
                        f"unknown parameter of {self.kind} jobs{did_you_mean(key, known)} "
                        f"(known: {', '.join(sorted(known))})",
                    )
        getattr(self, f"_{self.kind}")()
        if not _holds_expression(self.params):
            # Every value is known: the run's rule decides, so validate and run agree.
            self.run_rule(lambda params: check_params(self.kind, params), self.params)
        return self.params

    def _shell(self) -> None:
        if "argv" not in self.params and "script" not in self.params:
            raise self.fail(None, "a shell job needs argv (a list: program and arguments)")
        if "argv" in self.params and "script" in self.params:
            raise self.fail("script", "give argv or script, not both")
        script = self.params.get("script")
        use_shell = self.params.get("shell")
        if script is not None and use_shell is not True and not _is_expr(use_shell):
            raise self.fail(
                "script",
                "is only allowed with shell: true (or give argv, the program and its arguments)",
            )
        if isinstance(script, str) and ("${{" in script or "${%" in script):
            raise self.fail(
                "script",
                "must not hold ${{ }} (a value pasted into script text is run as shell code); "
                "pass values as positional parameters, e.g. "
                """with: {shell: true, script: 'echo "$1"', args: ["${{ args.msg }}"]}, """
                'or in env and quote them in the script ("$NAME")',
            )
        if "args" in self.params:
            if script is None:
                raise self.fail(
                    "args", "is only allowed with shell: true and script; use argv for a program"
                )
            self.strings("args")
        argv = self.literal("argv")
        if argv is not None:
            if not isinstance(argv, list) or not argv:
                raise self.fail("argv", "must be a non-empty list: the program and its arguments")
            self.strings("argv")
            script_at = _shell_script_index(argv)
            if script_at is not None and _is_expr(argv[script_at]):
                raise Invalid(
                    (*self.path, "argv", script_at),
                    "a shell's -c script must not hold ${{ }} (a value pasted into script text is "
                    'run as shell code); pass values after the script and read them as "$1": '
                    f"""argv: [{argv[0]}, -c, 'echo "$1"', sh, "${{{{ args.msg }}}}"]""",
                )
        self.string("script")
        self.boolean("shell")
        self.mapping("env", scalars=True)
        self.string("cwd")
        self.duration("timeout")
        self.integers("non_retryable_exit_codes", 0, 255)

    def _http(self) -> None:
        if "url" not in self.params:
            raise self.fail(None, "an http job needs a url")
        self.string("url")
        url = self.literal("url")
        if isinstance(url, str) and not url.startswith(("http://", "https://")):
            raise self.fail("url", f"must start with http:// or https://, not {short(url, 60)}")
        method = self.literal("method")
        if method is not None:
            if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
                raise self.fail("method", f"must be one of {', '.join(HTTP_METHODS)}")
            self.params["method"] = method.upper()
        self.mapping("headers", scalars=True)
        self.mapping("params", scalars=True)
        self.string("body")
        if "json" in self.params and "body" in self.params:
            raise self.fail("body", "give json or body, not both")
        self.integers("expect", 100, 599)
        self.duration("timeout")
        self.boolean("follow_redirects")

    def _sleep(self) -> None:
        if "duration" not in self.params:
            raise self.fail(None, "a sleep job needs a duration")
        value = self.literal("duration")
        if value is not None:
            try:
                self.params["duration"] = seconds(value)
            except ValueError as err:
                raise self.fail("duration", str(err)) from None

    def _noop(self) -> None:
        pass

    def _fail(self) -> None:
        pass  # the run's rule (fail_params) covers it

    def _approval(self) -> None:
        self.duration("timeout")
        on_timeout = self.literal("on_timeout")
        if on_timeout is not None and on_timeout not in ON_TIMEOUT:
            raise self.fail("on_timeout", f"must be one of {', '.join(ON_TIMEOUT)}")
        if "on_timeout" in self.params and "timeout" not in self.params:
            raise self.fail("on_timeout", "needs a timeout")
        self.boolean("require_token")

    def _action(self) -> None:
        if "action" not in self.params:
            raise self.fail(None, "an action job needs action: the name of the action to run")
        name = self.params.get("action")
        if not _is_expr(name):
            self.run_rule(action_call, {"action": name})
        args = self.literal("args")
        if args is not None and not isinstance(args, dict):
            raise self.fail("args", "must be a mapping of the action's args")

    def _python(self) -> None:
        function = self.params.get("function")
        if not _is_expr(function):
            self.run_rule(python_function, {"function": function})
