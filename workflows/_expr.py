"""``${{ ... }}`` expressions in runbooks, evaluated by Jinja2's immutable sandbox.

A string that is one whole expression (``"${{ args.hosts }}"``) evaluates to the value itself (a
list stays a list); a string with expressions inside text is rendered to a string. Undefined names
are errors, never empty strings. Evaluation is pure, so the workflow may evaluate expressions
itself; the module is passed through the workflow sandbox.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["ROOTS", "ExpressionError", "has_expression", "render", "roots", "truthy"]

ROOTS = frozenset({"args", "jobs", "run"})
"""Names every expression may read; ``each`` adds its ``as`` name inside its job or group."""


def _finalize(value: Any) -> Any:
    """How a value is written into text around it: a bool as ``true``/``false``, the way a whole
    expression's bool becomes an argv argument (workflows/_argv.py), not Python's ``True``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


_ENV = ImmutableSandboxedEnvironment(
    variable_start_string="${{",
    variable_end_string="}}",
    block_start_string="${%",
    block_end_string="%}",
    comment_start_string="${#",
    comment_end_string="#}",
    undefined=StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    finalize=_finalize,
)
# The interpreter evaluates expressions in workflow code, so they must give the same value on
# every replay: Jinja2's two sources of randomness are taken away.
del _ENV.filters["random"]
del _ENV.globals["lipsum"]
_WHOLE = re.compile(r"^\s*\$\{\{(?P<expr>(?:(?!\}\}|\$\{\{).)*)\}\}\s*$", re.DOTALL)


class ExpressionError(ValueError):
    """An expression that does not parse or cannot be evaluated."""


def has_expression(text: str) -> bool:
    """Whether ``text`` holds a ``${{ }}`` expression."""
    return "${{" in text


@lru_cache(maxsize=4096)
def _parse(text: str) -> nodes.Template:
    try:
        return _ENV.parse(text)
    except TemplateError as err:
        raise ExpressionError(f"bad expression in {text!r}: {err.message}") from None


def roots(text: str) -> set[str]:
    """The top-level names the expressions of ``text`` read (raises :class:`ExpressionError`)."""
    return set(meta.find_undeclared_variables(_parse(text)))


@lru_cache(maxsize=4096)
def _compiled(text: str) -> Any:
    whole = _WHOLE.match(text)
    try:
        if whole:
            return _ENV.compile_expression(whole.group("expr"), undefined_to_none=False)
        return _ENV.from_string(text)
    except TemplateError as err:
        raise ExpressionError(f"bad expression in {text!r}: {err.message}") from None


def _render_text(text: str, context: Mapping[str, Any]) -> Any:
    if not has_expression(text):
        return text
    compiled = _compiled(text)
    try:
        if _WHOLE.match(text):
            value = compiled(**context)
            if isinstance(value, StrictUndefined):
                str(value)  # raises the undefined error with its message
            return value
        return compiled.render(**context)
    except TemplateError as err:
        raise ExpressionError(f"cannot evaluate {text.strip()!r}: {err.message}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as err:
        raise ExpressionError(f"cannot evaluate {text.strip()!r}: {err}") from None


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """``value`` with every expression in its strings evaluated against ``context``."""
    if isinstance(value, str):
        return _render_text(value, context)
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, context) for item in value]
    return value


def truthy(value: Any) -> bool:
    """How ``if:`` reads a value: false, no, off, 0 and empty strings are false."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "no", "off", "0", "none", "null")
    return bool(value)
