"""Fan-outs whose items are listed in the runbook itself, for the scale scenario.

An expression's ``range()`` gives at most 10,000 items and a job output at most 256 KiB, so an
``each`` over 100,000 items needs them in the plan, as a YAML runbook that lists them would.
Kept out of :mod:`bench._actions` so that other scenarios' workers do not hold the list.
"""

from __future__ import annotations

from bench._actions import SMALL_CHUNK, fan

LISTED = "bench-fan-listed"
LISTED_TINY = "bench-fan-listed-tiny"
ITEMS = {LISTED: 100_000, LISTED_TINY: 300}

ACTIONS = [
    fan(LISTED, 500, list(range(ITEMS[LISTED]))),
    fan(LISTED_TINY, SMALL_CHUNK, list(range(ITEMS[LISTED_TINY]))),
]
