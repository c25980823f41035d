"""Fan-outs whose items are listed in the runbook itself, for the scale scenario.

An expression's ``range()`` gives at most 10,000 items and a job output at most 256 KiB, so an
``each`` over 100,000 items needs them in the plan, as a YAML runbook that lists them would.
Kept out of :mod:`bench._actions` so that other scenarios' workers do not hold the list.
"""

from __future__ import annotations

from bench._actions import FAN_CONCURRENCY, SMALL_CHUNK
from sternway.workflows._actions import Action
from sternway.workflows.models import CallSpec, EachSpec, JobSpec, Plan, RetrySpec

LISTED = "bench-fan-listed"
LISTED_TINY = "bench-fan-listed-tiny"
ITEMS = {LISTED: 100_000, LISTED_TINY: 300}


def _listed(name: str, chunk_size: int) -> Action:
    """One no-op job over the items ``0 .. n-1``, written out in the plan."""
    return Action.from_plan(
        Plan(
            name=name,
            jobs=[
                JobSpec(
                    name="fan",
                    execute=CallSpec(kind="noop", **{"with": {"i": "${{ i }}"}}),
                    retry=RetrySpec(max_attempts=1),
                    each=EachSpec(
                        items=list(range(ITEMS[name])),
                        concurrency=FAN_CONCURRENCY,
                        chunk_size=chunk_size,
                        **{"as": "i"},
                    ),
                )
            ],
        )
    )


ACTIONS = [_listed(LISTED, 500), _listed(LISTED_TINY, SMALL_CHUNK)]
