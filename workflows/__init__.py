"""Workflow code: the action workflow (the deterministic interpreter) and the shared models."""

from workflows._workflow import ActionWorkflow

__all__ = ["ActionWorkflow"]
