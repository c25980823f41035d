"""The Sternway side of the benchmarks: actions of built-in ``noop``/``fail`` jobs.

Each mirrors a workflow of :mod:`bench._bare`. ``STERNWAY_MODULES=bench._actions`` makes a
``sternway worker`` load them (the memory scenario does).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from sternway.workflows._actions import Action
from sternway.workflows.models import CallSpec, EachSpec, JobSpec, LockSpec, Plan, RetrySpec

CHAIN = "bench-chain"
ONE = "bench-one"
SAGA = "bench-saga"
FAN = "bench-fan"
FAN_SMALL_CHUNKS = "bench-fan-small-chunks"
HOLD = "bench-hold"
KEYED = "bench-keyed"
LOCKED = "bench-locked"

# The chunk size of the tiny fan-out, so that a few dozen items still run in chunk runs.
SMALL_CHUNK = 10


# The window of the fan-out (the figure).
FAN_CONCURRENCY = 100


class FanArgs(BaseModel):
    """How many items to fan out over."""

    n: int = Field(ge=1)


def _noop(**params: object) -> CallSpec:
    return CallSpec(kind="noop", **{"with": params})


def _chain(name: str, jobs: int) -> Action:
    """``jobs`` no-op jobs, each after the one before."""
    return Action.from_plan(
        Plan(
            name=name,
            jobs=[
                JobSpec(
                    name=f"j{n:02d}",
                    execute=_noop(job=n),
                    after=[f"j{n - 1:02d}"] if n > 1 else [],
                )
                for n in range(1, jobs + 1)
            ],
        )
    )


def _saga(name: str, jobs: int) -> Action:
    """``jobs`` jobs with no-op rollbacks; the last one fails for good, so all are undone."""
    return Action.from_plan(
        Plan(
            name=name,
            jobs=[
                JobSpec(
                    name=f"j{n:02d}",
                    execute=_noop(job=n)
                    if n < jobs
                    else CallSpec(kind="fail", **{"with": {"non_retryable": True}}),
                    rollback=_noop(job=n),
                    after=[f"j{n - 1:02d}"] if n > 1 else [],
                )
                for n in range(1, jobs + 1)
            ],
        )
    )


def fan(name: str, chunk_size: int, items: list[int] | None = None) -> Action:
    """One no-op job over ``range(args.n)`` (or over ``items``, written out in the plan),
    ``FAN_CONCURRENCY`` at a time."""
    return Action.from_plan(
        Plan(
            name=name,
            jobs=[
                JobSpec(
                    name="fan",
                    execute=_noop(i="${{ i }}"),
                    retry=RetrySpec(max_attempts=1),
                    each=EachSpec(
                        items="${{ range(args.n) | list }}" if items is None else items,
                        concurrency=FAN_CONCURRENCY,
                        chunk_size=chunk_size,
                        **{"as": "i"},
                    ),
                )
            ],
        ),
        args_model=FanArgs if items is None else None,
    )


class KeyArgs(BaseModel):
    """The key a run locks (or, without a lock, just carries)."""

    key: str


def _keyed(name: str, locked: bool) -> Action:
    """One no-op job, with a lock on ``bench/<key>`` or with the same args and no lock."""
    locks = [LockSpec(key="bench/${{ args.key }}")] if locked else []
    return Action.from_plan(
        Plan(name=name, jobs=[JobSpec(name="j01", execute=_noop(job=1))], locks=locks),
        args_model=KeyArgs,
    )


def _hold(name: str) -> Action:
    """A run that waits for an approval before its one no-op job: it stays open until told."""
    return Action.from_plan(
        Plan(
            name=name,
            jobs=[
                JobSpec(name="gate", execute=CallSpec(kind="approval")),
                JobSpec(name="work", execute=_noop(), after=["gate"]),
            ],
        )
    )


ACTIONS = [
    _chain(CHAIN, 10),
    _chain(ONE, 1),
    _saga(SAGA, 10),
    fan(FAN, 500),
    fan(FAN_SMALL_CHUNKS, SMALL_CHUNK),
    _hold(HOLD),
    _keyed(KEYED, locked=False),
    _keyed(LOCKED, locked=True),
]
