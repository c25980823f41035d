"""The one rule for the values of a shell job's ``argv``, shared by the runbook loader (literal
values, checked by ``sternway validate``) and the shell kind (values rendered at run time), so a
value that passes one passes the other and becomes the same argument.

Scalars become text the way JSON writes them: a string as it is, a bool as ``true``/``false``, a
number as its JSON text (``3``, ``2.5``). ``null``, lists and mappings are refused with a message
that shows a form that works: one argv element is exactly one argument.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["argv_text"]


def argv_text(value: Any) -> str:
    """``value`` as one argv argument; :class:`ValueError` says why it cannot be one."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"is {value!r}, which is not a number an argument can hold")
        return json.dumps(value)
    if value is None:
        raise ValueError(
            "is null (an arg with no value?): give the arg a default, or write "
            "\"${{ args.name or '' }}\" for an empty argument"
        )
    if isinstance(value, list | tuple):
        raise ValueError(
            "is a list, and one argv element is one argument: join it, e.g. "
            "\"${{ args.hosts | join(',') }}\", or list the elements one by one"
        )
    if isinstance(value, dict):
        raise ValueError(
            "is a mapping, and one argv element is one argument: pass it as JSON, e.g. "
            '"${{ jobs.build.output | tojson }}"'
        )
    raise ValueError(f"is a {type(value).__name__}, not a string, number or bool")
