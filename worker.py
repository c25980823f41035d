"""The Sternway worker: hosts the action workflow and the job activities on a task queue.

``create_worker`` builds a worker for a client and a registry of actions (used by tests, the CLI's
``sternway worker`` and ``sternway dev``); ``python worker.py`` runs one until SIGINT/SIGTERM.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities import JobActivities
from workflows import ActionWorkflow
from workflows._actions import Registry
from workflows.models import DEFAULT_TASK_QUEUE

__all__ = ["create_worker"]

# Models and job code are deterministic or never run in workflow code: importing them once,
# outside the sandbox, keeps every workflow task from re-importing pydantic and the models.
_PASSTHROUGH = ("pydantic", "pydantic_core", "annotated_types", "workflows.models", "structlog")


def create_worker(
    client: Client,
    registry: Registry,
    *,
    task_queue: str = DEFAULT_TASK_QUEUE,
    max_concurrent_activities: int = 100,
    max_concurrent_workflow_tasks: int = 100,
    heartbeat_throttle: timedelta = timedelta(seconds=1),
    graceful_shutdown_timeout: timedelta = timedelta(seconds=10),
) -> Worker:
    """A worker running every action of ``registry`` on ``task_queue``.

    ``heartbeat_throttle`` bounds how long a stop takes to reach a running job: Temporal only
    tells an activity it is cancelled in the answer to a heartbeat.
    """
    jobs = JobActivities(registry)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[ActionWorkflow],
        activities=[jobs.resolve, jobs.execute, jobs.rollback],
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*_PASSTHROUGH)
        ),
        max_concurrent_activities=max_concurrent_activities,
        max_concurrent_workflow_tasks=max_concurrent_workflow_tasks,
        max_heartbeat_throttle_interval=heartbeat_throttle,
        default_heartbeat_throttle_interval=heartbeat_throttle,
        graceful_shutdown_timeout=graceful_shutdown_timeout,
    )
