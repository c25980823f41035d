"""Workflow code: the action and chunk workflows (the deterministic interpreter) and the shared
models.

``ActionWorkflow`` and ``ChunkWorkflow`` are imported on first use, so that importing
``workflows.models`` (as every CLI command does) does not load the interpreter and the template
engine.
"""

from __future__ import annotations

# This folder sits at the top of the repository but is installed and imported only as
# sternway.workflows: a second copy under a top-level name would be a second set of classes, and a
# user's own `workflows.py` must not meet it (docs/architecture.md, "One namespace").
if __name__ != "sternway.workflows":
    raise ImportError(f"import sternway.workflows, not {__name__}")


from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sternway.workflows._workflow import ActionWorkflow, ChunkWorkflow

__all__ = ["ActionWorkflow", "ChunkWorkflow"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from sternway.workflows import _workflow

        return getattr(_workflow, name)
    raise AttributeError(f"module 'workflows' has no attribute {name!r}")
