"""Workflow code: the action workflow (the deterministic interpreter) and the shared models.

``ActionWorkflow`` is imported on first use, so that importing ``workflows.models`` (as every CLI
command does) does not load the interpreter and the template engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workflows._workflow import ActionWorkflow

__all__ = ["ActionWorkflow"]


def __getattr__(name: str) -> Any:
    if name == "ActionWorkflow":
        from workflows._workflow import ActionWorkflow

        return ActionWorkflow
    raise AttributeError(f"module 'workflows' has no attribute {name!r}")
