"""Ask the workers of a task queue which actions (and which versions) they serve."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from sternway.workflows._catalog import ServedAction
from sternway.workflows._protocol import CATALOG

__all__ = ["served_actions"]


async def served_actions(
    client: Client, task_queue: str, *, timeout: float = 5.0
) -> dict[str, ServedAction] | None:
    """The actions the workers of ``task_queue`` serve, by name; ``None`` when no worker polls
    the queue or none answers within ``timeout`` seconds (the caller then knows nothing).

    When workers disagree (a rolling update, a folder not shared), this is the answer of the
    one that ran the catalog workflow.
    """
    try:
        return await asyncio.wait_for(_ask(client, task_queue, timeout), timeout)
    except Exception:  # no server, no worker, an old worker without the catalog: unknown
        return None


async def _ask(client: Client, task_queue: str, timeout: float) -> dict[str, ServedAction] | None:
    # Without a worker polling, the workflow would only wait: look first (one cheap call).
    polled = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    if not polled.pollers:
        return None
    served = await client.execute_workflow(
        CATALOG,
        id=f"sternway-catalog-{uuid.uuid4().hex[:12]}",
        task_queue=task_queue,
        execution_timeout=timedelta(seconds=timeout),
        result_type=list[ServedAction],
    )
    return {item.name: item for item in served}
