"""The Temporal Web UI of ``sternway dev``, in a real headless Chromium.

A run submitted with the CLI must show in the UI's workflow list under its action's type with
its ``SternwayState``; its page must show the static summary and, in the event history, a
summary per job. The browser is Debian's ``chromium`` (``make test`` installs it), driven by
Playwright; nothing is downloaded. Without the browser the test fails and says how to get it.

Screenshots go to the test's temporary folder. ``STERNWAY_UPDATE_SCREENSHOTS=1`` writes them
to ``docs/img/`` instead, which is how the README's pictures are made.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeout

from tests.cli import BIN, REPO, cli_env, sternway
from tests.test_processes import free_port, spawn, until_http

CHROMIUM = Path(os.environ.get("STERNWAY_CHROMIUM", "/usr/bin/chromium"))
# Headless, and nothing that phones home or updates itself: the machine has no network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # runs as root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
JOBS = ("build", "switch", "check", "record")


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium; if missing, the test fails (`make test` installs it), never skips."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: `apt-get install -y chromium` "
            "(`make test` does this as root), or set STERNWAY_CHROMIUM to its path"
        )
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path, tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """Chromium with a fresh profile."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(chromium),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1600, "height": 900},
        )
        try:
            yield context
        finally:
            await context.close()


def screenshot_path(tmp_path: Path, name: str) -> Path:
    if os.environ.get("STERNWAY_UPDATE_SCREENSHOTS") == "1":
        return REPO / "docs" / "img" / name
    return tmp_path / name


async def table_rows(page: Page) -> list[dict[str, str]]:
    """The workflow list as one dict per row, keyed by column header."""
    rows: list[dict[str, str]] = await page.evaluate(
        """() => {
            const table = document.querySelector('table');
            if (!table) return [];
            const heads = [...table.querySelectorAll('thead th')].map(th => th.innerText.trim());
            return [...table.querySelectorAll('tbody tr')].map(tr => Object.fromEntries(
                [...tr.querySelectorAll('td')].map((td, i) => [heads[i], td.innerText.trim()])));
        }"""
    )
    return rows


async def test_a_cli_run_shows_in_the_web_ui_with_its_state_summary_and_jobs(
    tmp_path: Path, browser: BrowserContext
) -> None:
    port, ui_port = free_port(), free_port()
    ui = f"http://localhost:{ui_port}"
    env = cli_env(f"localhost:{port}", "sternway", STERNWAY_UI_URL=ui)
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        dev = await asyncio.create_subprocess_exec(
            str(BIN / "sternway"), "dev", "--db", str(tmp_path / "dev.db"),
            "--port", str(port), "--ui-port", str(ui_port),
            env=env, cwd=REPO, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        await until_http(f"{ui}/")
        run_id = f"site-{uuid.uuid4().hex[:8]}"
        submitted = await sternway(
            env, "submit", "deploy-site", "--arg", f"root={tmp_path / 'site'}",
            "--arg", "release=v1", "--arg", "pause=0.3", "--id", run_id,
            "--requestor", "ops-alice", "--wait", "--json", timeout=90,
        )  # fmt: skip
        assert submitted.code == 0, submitted.out + submitted.err + log.read_text()
        assert submitted.json()["state"] == "COMPLETED"
        assert submitted.json()["ui_url"] == f"{ui}/namespaces/default/workflows/{run_id}"

        page = await browser.new_page()
        await list_shows_the_run(page, ui, run_id, tmp_path)
        await run_page_shows_summary_and_jobs(page, ui, run_id, tmp_path)
    finally:
        dev.send_signal(signal.SIGINT)
        await asyncio.wait_for(dev.wait(), 30)
    assert dev.returncode == 0, log.read_text()


async def list_shows_the_run(page: Page, ui: str, run_id: str, tmp_path: Path) -> None:
    """The workflow list, with the SternwayState and SternwayRequestor columns added."""
    await page.goto(f"{ui}/namespaces/default/workflows")
    # The list is read from visibility, which may lag the run's end by a moment.
    for attempt in range(6):
        try:
            await page.get_by_role("link", name=run_id, exact=True).wait_for(timeout=5000)
            break
        except PlaywrightTimeout:
            assert attempt < 5, await page.inner_text("main")
            await page.reload()
    # Temporal's own columns come first; Sternway's search attributes are offered under
    # "Custom Search Attributes" in the column settings, where any user would add them.
    await page.get_by_test_id("workflows-summary-table-configuration-button").click()
    for name in ("SternwayState", "SternwayRequestor"):
        await page.get_by_test_id(f"orderable-list-item-{name}-add-button").click()
    await page.get_by_test_id("orderable-list-item-Run ID-remove-button").click()  # room
    await page.get_by_test_id("drawer-close-button").click()
    await page.get_by_text("Configure Workflows Table").wait_for(state="hidden")
    (row,) = [r for r in await table_rows(page) if r.get("Workflow ID") == run_id]
    assert row["Type"] == "deploy-site"
    assert row["SternwayState"] == "COMPLETED"
    assert row["SternwayRequestor"] == "ops-alice"
    await page.mouse.move(0, 0)  # no hover effect in the picture
    await page.screenshot(
        path=screenshot_path(tmp_path, "web-ui-list.png"),
        clip={"x": 0, "y": 0, "width": 1600, "height": 400},  # the rows, not the empty pane
    )


async def run_page_shows_summary_and_jobs(page: Page, ui: str, run_id: str, tmp_path: Path) -> None:
    """The run's page: its summary (user metadata) and a summary per job in the history."""
    await page.get_by_role("link", name=run_id, exact=True).first.click()
    await page.wait_for_url(f"{ui}/namespaces/default/workflows/{run_id}/**")
    main = page.locator("main")
    await main.get_by_text("deploy-site › record").first.wait_for()  # the timeline is drawn
    timeline = await main.inner_text()
    for job in JOBS:
        assert f"deploy-site › {job}" in timeline
    await page.wait_for_load_state("networkidle")
    await page.mouse.move(0, 0)  # no hover effect in the picture
    # The page scrolls inside its own pane: a taller window shows the whole timeline.
    await page.set_viewport_size({"width": 1600, "height": 1150})
    await page.wait_for_timeout(500)
    await page.screenshot(path=screenshot_path(tmp_path, "web-ui-run.png"))

    await page.get_by_role("tab", name="Event History").click()
    await main.get_by_text("Activity Task Scheduled").first.wait_for()
    history = await main.inner_text()
    for job in JOBS:
        assert f"deploy-site › {job}" in history, job

    await page.get_by_role("tab", name="User Metadata").click()
    # The UI renders the markdown summary in a sandboxed frame of its own.
    frame = "iframe#user-metadata-summary, iframe[name=user-metadata-summary]"
    summary = page.frame_locator(frame).locator("body")
    await summary.get_by_text("run by").wait_for()
    assert (await summary.inner_text()).split() == ["deploy-site", "run", "by", "ops-alice"]
    assert await summary.locator("strong").inner_text() == "deploy-site"


async def test_with_a_codec_key_the_web_ui_decodes_through_the_codec_server_and_its_token(
    tmp_path: Path, browser: BrowserContext
) -> None:
    """Encrypted history: the UI shows the job summaries only because the codec server decodes
    them, asked with the token its endpoint carries (every codec request answered 200)."""
    from sternway.codec import new_key

    port, ui_port, codec_port = free_port(), free_port(), free_port()
    ui, token = f"http://localhost:{ui_port}", f"ui-{uuid.uuid4().hex}"
    codec_url = f"http://127.0.0.1:{codec_port}"
    env = cli_env(
        f"localhost:{port}", "sternway", STERNWAY_UI_URL=ui,
        STERNWAY_CODEC_KEYS=f"k1:{new_key()}", STERNWAY_CODEC_TOKEN=token,
    )  # fmt: skip
    codec = await spawn(env, "codec-server", "--port", str(codec_port), "--cors-origin", ui)
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        dev = await asyncio.create_subprocess_exec(
            str(BIN / "sternway"), "dev", "--db", str(tmp_path / "dev.db"),
            "--port", str(port), "--ui-port", str(ui_port),
            "--ui-codec-endpoint", f"{codec_url}/{token}",
            env=env, cwd=REPO, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        await until_http(f"{ui}/")
        run_id = f"site-{uuid.uuid4().hex[:8]}"
        submitted = await sternway(
            env, "submit", "deploy-site", "--arg", f"root={tmp_path / 'site'}",
            "--arg", "release=v1", "--arg", "pause=0", "--id", run_id, "--wait", timeout=90,
        )  # fmt: skip
        assert submitted.code == 0, submitted.out + submitted.err + log.read_text()
        page = await browser.new_page()
        decoded: list[int] = []
        page.on(
            "response",
            lambda response: (
                decoded.append(response.status)
                if response.url.startswith(codec_url) and response.request.method == "POST"
                else None
            ),
        )
        await page.goto(f"{ui}/namespaces/default/workflows/{run_id}")
        main = page.locator("main")
        await main.get_by_text("deploy-site › record").first.wait_for(timeout=30000)
        assert decoded and set(decoded) == {200}, decoded
    finally:
        for process in (dev, codec):
            process.send_signal(signal.SIGINT)
        await asyncio.wait_for(dev.wait(), 30)
        _, codec_err = await asyncio.wait_for(codec.communicate(), 30)
    assert dev.returncode == 0, log.read_text()
    assert codec.returncode == 0, codec_err.decode()
