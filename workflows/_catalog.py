"""What the workers of a task queue serve: each action's name, version and source.

A client cannot ask workers directly; it can run a workflow on their task queue. So workers
register the tiny ``sternway.catalog`` workflow, whose one step is a local activity of the same
name that lists the worker's registry as it is at that moment (reloaded runbooks included).
``sternway actions`` and ``sternway validate FILE`` run it (sternway/_catalog.py). It sets no
Sternway search attribute, so ``sternway list`` never shows it.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from sternway.workflows._actions import Registry
    from sternway.workflows._protocol import CATALOG

__all__ = ["CatalogActivity", "CatalogWorkflow", "ServedAction"]


class ServedAction(BaseModel):
    """One action as a worker serves it."""

    name: str
    version: str
    source: str | None = None


class CatalogActivity:
    """The ``sternway.catalog`` local activity of one worker, bound to its registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @activity.defn(name=CATALOG)
    async def catalog(self) -> list[ServedAction]:
        """The worker's actions, now."""
        return [
            ServedAction(name=a.name, version=a.version, source=a.source) for a in self.registry
        ]


@workflow.defn(name=CATALOG)
class CatalogWorkflow:
    """Answers with the catalog of the worker that runs it."""

    @workflow.run
    async def run(self) -> list[ServedAction]:
        """The catalog, from a local activity (so it is the serving worker's own)."""
        served: list[ServedAction] = await workflow.execute_local_activity(
            CATALOG,
            result_type=list[ServedAction],
            start_to_close_timeout=timedelta(seconds=10),
        )
        return served
