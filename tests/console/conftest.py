"""Fixtures of the console tests: the demo capture in a real lake, the real API (uvicorn), headless Chromium.

Chromium is Debian's (``/usr/bin/chromium``, installed by scripts/install-system-deps.sh), driven by
Playwright from PyPI pointed at it with ``executable_path`` (Playwright's own browser download cannot
work offline). Every test saves a screenshot under ``.k2/test-artifacts/console/`` (``K2_TEST_ARTIFACTS``
overrides the folder).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from k2.api.keys import KeyStore
from k2.bus.broker import tansu_process
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.telemetry.procs import start_on_free_port
from tests.api.conftest import api_settings
from tests.api.helpers import ServerThread
from tests.console.lake import land_capture

REPO = Path(__file__).resolve().parents[2]
MIDNIGHT_US = 1_723_161_600_000_000  # 2024-08-09T00:00:00Z: the demo's trades land in two commits split here
CHROMIUM = os.environ.get("K2_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@dataclass
class Console:
    """A running API over a lake: its settings, URL and keys."""

    settings: Settings
    url: str
    read_key: str
    admin_key: str
    tables: dict[str, Any]


def start_console(
    root: Path, broker: str, registry: str, **overrides: object
) -> tuple[Console, ServerThread]:
    settings = api_settings(root / "k2", broker, registry, **{"query_max_rows": 100_000, **overrides})
    tables = ensure_tables(load_catalog(settings), settings)
    store = KeyStore.from_settings(settings)
    read_key, _ = store.create("reader", "read")
    admin_key, _ = store.create("admin", "admin")
    server = ServerThread(settings).start()
    return Console(settings, server.url, read_key, admin_key, tables), server


@pytest.fixture(scope="module")
def console_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Tansu broker of the module's own: the overview lists every dead-letter topic of its broker, and
    other tests leave dead letters on the session's shared one (seen on the page under load)."""
    log = tmp_path_factory.mktemp("tansu-console") / "tansu.log"
    proc = start_on_free_port(lambda port: tansu_process(port, log))
    yield f"127.0.0.1:{proc.port}"
    proc.stop()


@pytest.fixture(scope="module")
def demo_console(
    tmp_path_factory: pytest.TempPathFactory, console_broker: str, schema_registry: str
) -> Iterator[Console]:
    """The demo capture (19,904 BTCUSDT trades and its quotes) in a lake, served by the real API.

    The trades land in two commits (before / after midnight UTC), so time travel has two snapshots.
    """
    console, server = start_console(tmp_path_factory.mktemp("console"), console_broker, schema_registry)
    land_capture(console.tables, split_at_us=MIDNIGHT_US)
    yield console
    server.stop()


@pytest.fixture(scope="module")  # not session: Playwright's event loop must not outlive the module (xdist)
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"expected Chromium at {CHROMIUM} (scripts/install-system-deps.sh installs Debian's chromium), found none"
        )
    from playwright.sync_api import sync_playwright

    # Playwright starts each browser with a fresh, empty profile of its own (a new --user-data-dir).
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """Where this test saves its screenshots (kept after the run)."""
    base = Path(os.environ.get("K2_TEST_ARTIFACTS", REPO / ".k2" / "test-artifacts")) / "console"
    folder = base / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def enter_key(page: Any, url: str, key: str, path: str = "/console/") -> None:
    """Open the console and type the key into its form (as a user does once per browser session)."""
    page.goto(url + path)
    page.fill("#key-input", key)
    page.click("#key-form button[type=submit]")
