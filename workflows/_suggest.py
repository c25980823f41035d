"""The "did you mean" hint shared by the runbook loader and the action registry."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean"]


def did_you_mean(word: str, known: Iterable[object]) -> str:
    """``; did you mean 'x'?`` for the closest of ``known`` to ``word``, or an empty string."""
    close = difflib.get_close_matches(word, [str(k) for k in known], n=1, cutoff=0.7)
    return f"; did you mean {close[0]!r}?" if close else ""
