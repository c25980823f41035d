"""Fixtures of the reliability suite: a dev server on a SQLite file, as ``sternway dev`` runs it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from temporalio.client import Client

from sternway import connect
from sternway.starter._dev import DevServer
from tests.helpers import free_port
from tests.reliability.helpers import FIGURES


@dataclass
class Server:
    """A dev server this suite started, and a client of it (made by the CLI's own code)."""

    dev: DevServer
    client: Client

    @property
    def address(self) -> str:
        """The frontend's ``host:port``."""
        return self.dev.address


@pytest.fixture(scope="session")
async def rel_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """``temporal server start-dev`` on a SQLite file with WAL pragmas and search attributes."""
    db = tmp_path_factory.mktemp("reliability") / "temporal.db"
    dev = await DevServer.ensure(db=db, port=free_port(), ui_port=free_port())
    try:
        yield Server(dev, await connect(address=dev.address))
    finally:
        dev.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures the scenarios produced (they go into docs/RELIABILITY.md)."""
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for scenario, figures in FIGURES.items():
        terminalreporter.write_line(f"{scenario}:")
        for key, value in figures.items():
            terminalreporter.write_line(f"    {key}: {value}")
