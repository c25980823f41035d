"""The YAML front end: load ``actions/*.yaml`` runbooks and compile them to a :class:`Plan`.

A runbook is parsed with PyYAML's safe loader into a node tree, which is turned into plain Python
values plus a map from each field's path (``("jobs", 2, "retry", "max_attempts")``) to its line.
The values are validated against pydantic models of the YAML format (unknown fields are errors, so
typos are caught), then checked further (names, ``after``, cycles, job kinds and their parameters,
expressions) and compiled to the plan model the workflow runs.

Every problem is a :class:`~workflows.errors.SpecError` of one line::

    actions/x.yaml:14 jobs[2].retry.max_attempts: must be >= 1

and nothing else ever escapes the loader, whatever the input. The format is documented in
``docs/runbooks.md``.

The loader is a small package: ``_yaml`` (YAML with lines), ``_format`` (the format's models, arg
types and rules), ``_messages`` (one-line errors and limits), ``_params`` (a call's ``with``),
``_compile`` (to a plan) and ``_load`` (files and folders).
"""

from __future__ import annotations

from sternway.workflows._runbook._format import ARG_TYPES, ArgRules
from sternway.workflows._runbook._load import (
    RunbookTooLarge,
    load_folder,
    load_runbook,
    load_runbook_text,
    runbook_version,
)
from sternway.workflows._runbook._messages import MAX_RUNBOOK_BYTES

__all__ = [
    "ARG_TYPES",
    "MAX_RUNBOOK_BYTES",
    "ArgRules",
    "RunbookTooLarge",
    "load_folder",
    "load_runbook",
    "load_runbook_text",
    "runbook_version",
]
