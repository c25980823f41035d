"""Workflow code: the action workflow (the deterministic interpreter) and the shared models.

``ActionWorkflow`` is imported on first use, so that importing ``workflows.models`` (as every CLI
command does) does not load the interpreter and the template engine.
"""

from __future__ import annotations

# This folder sits at the top of the repository but is installed and imported only as
# sternway.workflows: a second copy under a top-level name would be a second set of classes, and a
# user's own `workflows.py` must not meet it (docs/architecture.md, "One namespace").
if __name__ != "sternway.workflows":
    raise ImportError(f"import sternway.workflows, not {__name__}")


from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sternway.workflows._workflow import ActionWorkflow

__all__ = ["ActionWorkflow"]


def __getattr__(name: str) -> Any:
    if name == "ActionWorkflow":
        from sternway.workflows._workflow import ActionWorkflow

        return ActionWorkflow
    raise AttributeError(f"module 'workflows' has no attribute {name!r}")
