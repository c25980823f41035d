"""Connecting to Temporal, the one way every Sternway client is made.

:func:`connect` builds a client from Temporal's environment configuration with Sternway's data
converter (pydantic JSON, encrypted when a codec key is set); :func:`wait_for_server` retries it
until the server answers and knows the namespace. The CLI, the worker, ``dev``, ``demo`` and the
tests all come here, so they read and write the same payloads.
"""

from __future__ import annotations

import asyncio

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from sternway.codec import data_converter_from_env
from sternway.workflows.errors import ArgsError, ServerUnreachable

__all__ = ["CONNECT_TIMEOUT", "connect", "wait_for_server"]

CONNECT_TIMEOUT = 5.0
"""Seconds one connection attempt may take."""


async def connect(*, runtime: Runtime | None = None, address: str | None = None) -> Client:
    """A client from ``temporalio.envconfig`` (``TEMPORAL_ADDRESS``, profiles, TLS, API key).

    Its data converter is pydantic JSON, encrypted with the AES-GCM codec when a key is set in
    ``STERNWAY_CODEC_KEYS`` or ``STERNWAY_CODEC_KEY_FILE`` (see :mod:`sternway.codec`). Every
    client Sternway builds comes from here, so the CLI, the worker, ``dev`` and ``demo`` all
    read and write the same payloads.
    """
    try:
        config = ClientConfig.load_client_connect_config()
    except Exception as err:
        raise ArgsError(f"the Temporal client configuration is invalid: {err}") from None
    converter = data_converter_from_env()
    if address:
        config["target_host"] = address
    config.setdefault("target_host", "localhost:7233")
    target = config["target_host"]
    try:
        return await asyncio.wait_for(
            Client.connect(**config, data_converter=converter, runtime=runtime),
            CONNECT_TIMEOUT,
        )
    except (TimeoutError, RuntimeError, RPCError) as err:
        text = str(err)
        if "ConnectionRefused" in text or "Connection refused" in text:
            reason = "connection refused"
        elif not text:
            reason = f"no answer within {CONNECT_TIMEOUT:g}s"
        else:
            reason = text.splitlines()[0][:160]
        raise ServerUnreachable(
            f"cannot reach Temporal at {target}: {reason}\n"
            "start one with `sternway dev`, or set TEMPORAL_ADDRESS"
        ) from None


_DENIED = (RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED)


async def wait_for_server(*, runtime: Runtime | None = None, seconds: float) -> Client:
    """Connect, retrying for up to ``seconds`` until the server answers and knows the namespace.

    A container started together with its Temporal server (``docker compose up``) comes up
    before the server does, or before the namespace is created: waiting here, instead of
    exiting and relying on a restart policy, keeps the logs readable and the start quick.
    """
    import structlog  # here: `sternway status` and the other client commands never log

    log = structlog.get_logger("sternway.worker")
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            client = await connect(runtime=runtime)
            await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=client.namespace)
            )
            return client
        except (ServerUnreachable, RPCError) as err:
            if isinstance(err, RPCError) and err.status in _DENIED:
                raise  # a wrong API key or certificate does not get better with time
            if isinstance(err, RPCError):
                reason = f"namespace not ready: {err.message}"
            else:
                reason = str(err).splitlines()[0]
            if asyncio.get_running_loop().time() >= deadline:
                raise ServerUnreachable(f"{reason} (waited {seconds:g}s)") from None
            log.info("waiting for Temporal", reason=reason)
            await asyncio.sleep(1.0)
