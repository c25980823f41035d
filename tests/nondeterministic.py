"""Deliberately non-deterministic variants of the action workflow, for tests/test_replay.py.

Each is a change a developer could plausibly make to ``workflows/_workflow.py``; replaying the
recorded histories with it must fail with a ``NondeterminismError`` (this module is imported in
the workflow sandbox, so it imports nothing but the workflow), or, for a call that issues no
command, with a restricted-access error under the strict sandbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue

from sternway.workflows._protocol import CHUNK_WORKFLOW
from sternway.workflows._workflow import ActionWorkflow, ChunkWorkflow
from sternway.workflows.models import ChunkInput, ChunkResult, RunState


@workflow.defn(dynamic=True)
class ExtraTimerWorkflow(ActionWorkflow):
    """Waits a moment before it starts: a timer that no recorded history has."""

    @workflow.run
    async def run(self, raw: Sequence[RawValue]) -> dict[str, Any]:
        """Sleep, then run as usual."""
        await workflow.sleep(0.01)
        return await super().run(raw)


@workflow.defn(name=CHUNK_WORKFLOW)
class ExtraTimerChunkWorkflow(ChunkWorkflow):
    """The same extra timer in a fan-out chunk."""

    @workflow.run
    async def run(self, inp: ChunkInput) -> ChunkResult:
        """Sleep, then run as usual."""
        await workflow.sleep(0.01)
        return await super().run(inp)


@workflow.defn(dynamic=True)
class OldestFirstRollbackWorkflow(ActionWorkflow):
    """Rolls jobs back oldest first: the rollback activities come in another order."""

    @workflow.run
    async def run(self, raw: Sequence[RawValue]) -> dict[str, Any]:
        """Run as usual."""
        return await super().run(raw)

    async def _rollback_all(self) -> None:
        self._ledger.start_order.reverse()
        await super()._rollback_all()


def _stamp_with_the_host_clock(run: ActionWorkflow | ChunkWorkflow) -> None:
    run._ledger.status.finished_at = datetime.now(UTC)


@workflow.defn(dynamic=True)
class WallClockWorkflow(ActionWorkflow):
    """Stamps state changes with the host's clock instead of ``workflow.now()``.

    It issues the same commands, so replay without a sandbox cannot see the mistake; the strict
    sandbox refuses the clock read.
    """

    @workflow.run
    async def run(self, raw: Sequence[RawValue]) -> dict[str, Any]:
        """Run as usual."""
        return await super().run(raw)

    def _set_state(self, state: RunState) -> None:
        super()._set_state(state)
        _stamp_with_the_host_clock(self)


@workflow.defn(name=CHUNK_WORKFLOW)
class WallClockChunkWorkflow(ChunkWorkflow):
    """The same host clock in a fan-out chunk."""

    @workflow.run
    async def run(self, inp: ChunkInput) -> ChunkResult:
        """Run as usual."""
        return await super().run(inp)

    def _set_state(self, state: RunState) -> None:
        super()._set_state(state)
        _stamp_with_the_host_clock(self)
