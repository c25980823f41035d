"""``${{ ... }}`` expressions in runbooks, evaluated by Jinja2's immutable sandbox.

A string that is one whole expression (``"${{ args.hosts }}"``) evaluates to the value itself (a
list stays a list); a string with expressions inside text is rendered to a string. Undefined names
are errors, never empty strings. Evaluation is pure, so the workflow may evaluate expressions
itself; the module is passed through the workflow sandbox.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache, wraps
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, meta, nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "MAX_INT_BITS",
    "MAX_RANGE",
    "MAX_SIZE",
    "MAX_STEPS",
    "ROOTS",
    "ExpressionError",
    "has_expression",
    "refuse_blocks",
    "render",
    "roots",
    "truthy",
]

ROOTS = frozenset({"args", "jobs", "run"})
"""Names every expression may read; ``each`` adds its ``as`` name inside its job or group."""

MAX_SIZE = 512 * 1024
"""The most characters (strings) or JSON size (lists, maps) a value an expression builds may have:
twice a job output's cap, so ``${{ jobs.x.output | tojson }}`` (with its spaces) still fits."""
MAX_RANGE = 10_000
"""The most items ``range()`` gives."""
MAX_INT_BITS = 4096
"""The largest integer an expression may build (about 1,200 digits)."""
MAX_STEPS = 10_000
"""The work one string's expressions may do: a step is an item a filter, call or operator makes
or goes through, a character of a string a filter goes through one by one, or 64 characters of
a string handled whole (about a microsecond each: some 10 ms of CPU at most)."""
# str methods an expression may call: each one's result is at most about as large as its input
# and its int arguments, which are capped. Left out: translate, expandtabs, format_map, encode and
# maketrans, whose results can be far larger than what goes in.
_STR_METHODS = frozenset(
    {"capitalize", "casefold", "center", "count", "endswith", "find", "format", "index"}
    | {"isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower"}
    | {"isnumeric", "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower"}
    | {"lstrip", "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex"}
    | {"rjust", "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip"}
    | {"swapcase", "title", "upper", "zfill"}
)
# Filters that treat a string as a whole, in C: their input costs a step every 64 characters.
# Every other filter goes through a string character by character, in Python (sort, unique,
# groupby, min, join, batch, map, wordwrap, title, ...): a step per character.
_TEXT_FILTERS = frozenset(
    {"upper", "lower", "capitalize", "replace", "trim", "center", "escape", "e", "forceescape"}
    | {"string", "float", "int", "format", "safe", "tojson", "filesizeformat", "reverse", "list"}
)
# Filters that do not go through their input.
_CONSTANT_TIME = frozenset({"length", "count", "first", "last", "default", "d", "attr"})
_FORMAT_NUMBER = re.compile(r"\d+")


class ExpressionError(ValueError):
    """An expression that does not parse, cannot be evaluated, gives something other than JSON
    data, or would exceed the bounds (:data:`MAX_SIZE`, :data:`MAX_RANGE`, :data:`MAX_INT_BITS`)."""


class _TooBig(ExpressionError):
    """A bound met while evaluating; the caller adds the expression to the message."""


class _NotData(ExpressionError):
    """A value in a rendered string that is not JSON data; the caller adds the expression."""


def _size(value: Any, budget: int = MAX_SIZE + 1) -> int:
    """About the length of ``value`` as JSON, counting no further than ``budget``."""
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, bool) or value is None:
        return 4
    if isinstance(value, int):
        return value.bit_length() // 3 + 1
    if isinstance(value, float):
        return 8
    if isinstance(value, Mapping):
        total = 2
        for key, item in value.items():
            total += _size(key, budget - total) + _size(item, budget - total) + 2
            if total >= budget:
                break
        return total
    if isinstance(value, list | tuple):
        total = 2
        for item in value:
            total += _size(item, budget - total) + 1
            if total >= budget:
                break
        return total
    return 8


_budget = threading.local()  # steps left for the string being rendered (one per thread)


def _charge(steps: int, what: str) -> None:
    """Spend ``steps`` of the :data:`MAX_STEPS` of the string being rendered."""
    left = getattr(_budget, "left", MAX_STEPS) - steps
    _budget.left = left
    if left < 0:
        raise _TooBig(f"{what}: the expression does more than {MAX_STEPS} steps of work")


def _counted(items: Iterable[Any], what: str) -> Iterator[Any]:
    """``items``, charging two steps for each: lazy filters such as ``map`` and ``select`` call
    Python code per item."""
    for item in items:
        _charge(2, what)
        yield item


def _limit(value: Any, what: str) -> Any:
    """``value``, or :class:`_TooBig` when it is over :data:`MAX_SIZE` or :data:`MAX_INT_BITS`;
    the work of building it is charged, and a lazy result counts its items as they are read."""
    if isinstance(value, str):
        _charge(len(value) // 64 + 1, what)
    elif isinstance(value, list | tuple | Mapping):
        _charge(len(value), what)
    elif isinstance(value, Iterator):
        return _counted(value, what)
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INT_BITS:
            raise _TooBig(f"{what} gives an integer over {MAX_INT_BITS} bits")
    elif (len(value) if isinstance(value, str) else _size(value)) > MAX_SIZE:
        raise _TooBig(f"{what} gives a value over {MAX_SIZE // 1024} KiB")
    return value


def _planned(size: int, what: str) -> None:
    """Refuse, before building it, a value that would be over :data:`MAX_SIZE`."""
    if size > MAX_SIZE:
        raise _TooBig(f"{what} would give a value over {MAX_SIZE // 1024} KiB")


def _int_args(args: tuple[Any, ...], kwargs: Mapping[str, Any], what: str) -> None:
    """Widths, counts and lengths passed to filters and methods stay under :data:`MAX_SIZE`."""
    for arg in (*args, *kwargs.values()):
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_SIZE:
            raise _TooBig(f"{what} with {arg} (at most {MAX_SIZE} here)")


def _format_size(fmt: str, args: Any) -> int:
    """An upper bound on the length of ``fmt`` formatted with ``args`` (``%`` or ``str.format``):
    the widths and precisions written in it, plus those taken from the args (``*``, ``{:{}}``)."""
    total = len(fmt) + _size(args) + sum(int(n[:7]) for n in _FORMAT_NUMBER.findall(fmt))
    if "*" in fmt or re.search(r"\{[^{}]*\{", fmt):
        values = args.values() if isinstance(args, Mapping) else args
        items = values if isinstance(values, list | tuple) or not isinstance(values, str) else ()
        try:
            total += sum(abs(a) for a in items if isinstance(a, int))
        except TypeError:
            total += MAX_SIZE
    return total


def _replace_size(text: str, old: str, new: str, count: int | None) -> int:
    found = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        found = min(found, count)
    return len(text) + found * max(0, len(new) - len(old))


def _bounded_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise _TooBig(f"range of {len(rng)} items (at most {MAX_RANGE})")
    return rng  # lazy: what goes through it is charged


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with every operator, call and filter that can build a large
    value checked *before* it does: a worker must never spend more than milliseconds on one
    expression, and Python's big-integer and string operations hold the GIL while they run."""

    intercepted_binops = frozenset({"+", "-", "*", "**", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        what = f"{operator!r}"
        if operator == "**":
            _check_power(left, right)
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    size = len(seq) if isinstance(seq, str) else _size(seq)
                    _planned(size * max(times, 0), what)
            if (
                _is_int(left)
                and _is_int(right)
                and (left.bit_length() + right.bit_length() > MAX_INT_BITS + 1)
            ):
                raise _TooBig(f"{what} would give an integer over {MAX_INT_BITS} bits")
        elif operator == "+":
            if isinstance(left, str) and isinstance(right, str):
                _planned(len(left) + len(right), what)
            elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
                _planned(_size(left) + _size(right), what)
        elif operator == "%" and isinstance(left, str):
            _planned(_format_size(left, right), what)
        return _limit(super().call_binop(context, operator, left, right), what)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """A call in an expression: str methods from an allow list, int arguments capped, the
        known amplifiers (``replace``, ``join``, ``format``) sized before they run."""
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        name = getattr(method, "__name__", "call")
        owner = getattr(method, "__self__", None)
        what = f"{name}()"
        if isinstance(owner, str):
            _charge(len(owner) // 64, what)
            if name not in _STR_METHODS:
                raise _TooBig(f"the string method {name}() is not available in expressions")
            if name == "replace" and len(args) >= 2:
                count = args[2] if len(args) > 2 else kwargs.get("count")
                _planned(_replace_size(owner, str(args[0]), str(args[1]), count), what)
            elif name == "join" and args:
                items = list(args[0])
                _charge(len(items), what)
                _planned(sum(_size(i) for i in items) + len(owner) * len(items), what)
                args = (items, *args[1:])
            elif name == "format":
                _planned(_format_size(owner, [*args, *kwargs.values()]), what)
        _int_args(args, kwargs, what)
        return _limit(super().call(__context, __obj, *args, **kwargs), what)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_power(base: Any, exponent: Any) -> None:
    """Refuse ``base ** exponent`` that would be a huge integer, before computing it."""
    if not (_is_int(base) and _is_int(exponent)) or exponent <= 1 or abs(base) <= 1:
        return  # floats overflow quickly with an error; negative exponents give floats
    if exponent > MAX_INT_BITS or exponent * math.log2(abs(base)) > MAX_INT_BITS:
        raise _TooBig(f"'**' would give an integer over {MAX_INT_BITS} bits")


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (a Jinja filter) with int arguments capped, the amplifiers sized first and
    the result checked."""
    what = f"the {name} filter"

    @wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        values = [a for a in args if not isinstance(a, Context | _BoundedEnvironment)]
        values = [a for a in values if type(a).__name__ != "EvalContext"]
        value, params = (values[0], values[1:]) if values else (None, [])
        _int_args(tuple(params), kwargs, what)
        if name in _CONSTANT_TIME:
            pass
        elif isinstance(value, str):
            _charge(len(value) // 64 if name in _TEXT_FILTERS else len(value), what)
        elif isinstance(value, list | tuple | Mapping):
            _charge(len(value), what)
        if name == "replace" and len(params) >= 2:
            count = params[2] if len(params) > 2 else kwargs.get("count")
            _planned(_replace_size(str(value), str(params[0]), str(params[1]), count), what)
        elif name == "join":
            value = list(value or ())
            separator = str(params[0]) if params else str(kwargs.get("d", ""))
            _planned(sum(_size(i) for i in value) + len(separator) * len(value), what)
            args = tuple(value if a is values[0] else a for a in args)
        elif name == "indent":
            width = params[0] if params else kwargs.get("width", 4)
            per_line = width if _is_int(width) else len(str(width))
            _planned(len(str(value)) + (str(value).count("\n") + 1) * per_line, what)
        elif name == "format":
            _planned(_format_size(str(value), [*params, *kwargs.values()]), what)
        elif name == "tojson":
            indent = params[0] if params else kwargs.get("indent")
            if indent is not None and (not _is_int(indent) or indent > 8):
                raise _TooBig(f"{what} with indent {indent!r} (at most 8)")
        elif name == "sum":
            # Python's sum copies a growing list or string on every step (quadratic time):
            # a start that is not a number is the only way to add lists, so it is refused.
            start = params[1] if len(params) > 1 else kwargs.get("start", 0)
            if not isinstance(start, int | float):
                raise _TooBig(f"{what} adds numbers only")
        return _limit(function(*args, **kwargs), what)

    return bounded


_WHOLE = re.compile(r"^\s*\$\{\{(?P<expr>(?:(?!\}\}|\$\{\{).)*)\}\}\s*$", re.DOTALL)

_BLOCKS = (
    "${% %} blocks are not available in runbooks: write one ${{ }} expression instead, e.g. "
    "${{ args.hosts | join(',') }} or ${{ 'on' if args.enabled else 'off' }}"
)


def refuse_blocks(text: str) -> None:
    """Raise :class:`ExpressionError` when ``text`` holds a ``${% %}`` block: a block can loop,
    and its loops could hold a worker for as long as they like."""
    if "${%" in text:
        raise ExpressionError(f"{_BLOCKS} (in {text.strip()[:80]!r})")


def _describe(value: Any, expression: str) -> str:
    """Why ``value``, given by ``expression``, is not data, with what was probably meant."""
    shown = f"`{expression}`" if expression else "one of its ${{ }}"
    if callable(value):
        head, dot, name = expression.rpartition(".")
        hint = (
            f"did you mean `{head}[{name!r}]`?"
            if dot and name.isidentifier()
            else "did you mean to call it, or to write a map key with brackets (x['items'])?"
        )
        return f"{shown} is a method, not data: {hint}"
    if isinstance(value, float):
        return f"{shown} is {value}, not a finite number"
    kind = type(value).__name__
    if hasattr(value, "__iter__") and not isinstance(value, Mapping):
        return f"{shown} is a {kind}, not data: add `| list` to make it a list"
    return (
        f"{shown} is a Python {kind}, not data "
        "(expressions give strings, numbers, booleans, null, lists and maps)"
    )


def _data(value: Any, expression: str) -> Any:
    """``value`` as JSON data (tuples become lists, str subclasses str), or
    :class:`ExpressionError` naming ``expression`` and the Python type that is not data."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ExpressionError(_describe(value, expression))
        return float(value)
    if isinstance(value, list | tuple):
        return [_data(item, expression) for item in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                shown = f"`{expression}`" if expression else "one of its ${{ }}"
                raise ExpressionError(f"{shown} has the map key {key!r}: map keys must be strings")
        return {key: _data(item, expression) for key, item in value.items()}
    if isinstance(value, Undefined):
        str(value)  # raises the undefined error with its message
    raise ExpressionError(_describe(value, expression))


def _finalize(value: Any) -> Any:
    """Every ``${{ }}`` inside text must give data too: ``str()`` of a method or a generator
    would put a memory address into a command. A bool is written as ``true``/``false``, the way a
    whole expression's bool becomes an argv argument (workflows/_argv.py), not Python's ``True``."""
    if isinstance(value, Undefined):
        return value  # Jinja raises its own undefined error
    try:
        _data(value, "")
    except ExpressionError as err:
        raise _NotData(str(err)) from None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


_ENV = _BoundedEnvironment(
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
# HTML filters whose regular expressions take quadratic time on crafted text, and the helpers of
# ``${% %}`` blocks (which runbooks cannot use).
for _name in ("striptags", "urlize"):
    del _ENV.filters[_name]
for _name in ("cycler", "joiner", "namespace"):
    del _ENV.globals[_name]
_ENV.filters.update({n: _bounded_filter(n, f) for n, f in _ENV.filters.items()})
_ENV.globals["range"] = _bounded_range


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
    refuse_blocks(text)
    compiled = _compiled(text)
    _budget.left = MAX_STEPS
    try:
        whole = _WHOLE.match(text)
        if whole:
            return _data(compiled(**context), whole.group("expr").strip())
        pieces, length = [], 0
        for piece in compiled.generate(**context):
            length += len(piece)
            if length > MAX_SIZE:
                raise _TooBig(f"the rendered text is over {MAX_SIZE // 1024} KiB")
            pieces.append(piece)
        return "".join(pieces)
    except (_TooBig, _NotData) as err:
        raise ExpressionError(f"cannot evaluate {text.strip()!r}: {err}") from None
    except ExpressionError:
        raise
    except TemplateError as err:
        raise ExpressionError(f"cannot evaluate {text.strip()!r}: {err.message}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as err:
        raise ExpressionError(f"cannot evaluate {text.strip()!r}: {err}") from None
    except (RecursionError, MemoryError):
        raise ExpressionError(f"cannot evaluate {text.strip()!r}: nested too deeply") from None
    except Exception as err:
        # Whatever a user's expression raises is its error: Jinja's constant folding can even
        # emit code that raises NameError (for a folded nan)
        kind = type(err).__name__
        raise ExpressionError(f"cannot evaluate {text.strip()!r}: {kind}: {err}") from None


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
