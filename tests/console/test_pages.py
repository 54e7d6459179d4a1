"""The quality, SQL and overview pages, the key check and offline /docs, in headless Chromium.

The browser reaches nothing but the test's API on 127.0.0.1 (every other request is aborted and
recorded), so these tests also prove the pages and /docs need no internet.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import Console, enter_key, start_console
from tests.console.lake import capture_rows, land_capture, record_gaps


def offline(page: Any, url: str) -> list[str]:
    """Abort every request that does not go to ``url``; returns the list of aborted URLs."""
    blocked: list[str] = []

    def route(r: Any) -> None:
        if r.request.url.startswith(url):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return blocked


def test_quality_calendar_shows_the_demo_days_complete(
    demo_console: Console, page: Any, artifacts: Path
) -> None:
    blocked = offline(page, demo_console.url)
    enter_key(
        page,
        demo_console.url,
        demo_console.read_key,
        "/console/?page=quality&exchange=binance&symbol=BTCUSDT",
    )
    page.wait_for_selector("#page[data-loaded='true'] #calendar")
    page.screenshot(path=str(artifacts / "quality.png"), full_page=True)
    verdicts = page.eval_on_selector_all(
        "#calendar tbody tr", "rows => rows.map(r => [r.dataset.day, r.dataset.verdict])"
    )
    assert verdicts == [["2024-08-08", "complete"], ["2024-08-09", "complete"]]
    cells = page.eval_on_selector_all(
        "td.cell[data-state='ok']", "cells => cells.map(c => [c.dataset.hour, Number(c.dataset.rows)])"
    )
    trades, quotes = capture_rows()
    assert [hour for hour, _ in cells] == ["2024-08-08T23:00:00.000Z", "2024-08-09T00:00:00.000Z"]
    assert sum(rows for _, rows in cells) == len(trades) + len(quotes)
    assert page.eval_on_selector_all("td.cell.gap-open, td.cell.gap-lost", "c => c.length") == 0
    assert not blocked


@pytest.fixture
def gapped_console(tmp_path: Path, broker: str, schema_registry: str) -> Iterator[tuple[Console, list[int]]]:
    """The capture landed with 3 trade ids missing (00:02 UTC), and the open gap landing records for them."""
    console, server = start_console(tmp_path, broker, schema_registry)
    trades, _ = capture_rows()
    in_minute = [t["trade_id"] for t in trades if 1723161720_000_000 <= t["exchange_ts"] < 1723161780_000_000]
    dropped = in_minute[100:103]
    land_capture(console.tables, dropped)
    record_gaps(console.tables, trades, dropped)
    yield console, dropped
    server.stop()


def test_quality_cell_turns_and_lists_the_missing_ids(
    gapped_console: tuple[Console, list[int]], page: Any, artifacts: Path
) -> None:
    console, dropped = gapped_console
    enter_key(page, console.url, console.read_key, "/console/?page=quality&exchange=binance&symbol=BTCUSDT")
    page.wait_for_selector("#page[data-loaded='true'] #calendar")
    cell = page.locator("td.cell[data-hour='2024-08-09T00:00:00.000Z']")
    assert cell.get_attribute("data-state") == "gap-open"
    verdicts = dict(
        page.eval_on_selector_all(
            "#calendar tbody tr", "rows => rows.map(r => [r.dataset.day, r.dataset.verdict])"
        )
    )
    assert verdicts == {"2024-08-08": "complete", "2024-08-09": "incomplete"}
    cell.click()
    page.wait_for_selector("#cell-gaps")
    page.screenshot(path=str(artifacts / "quality-gap.png"), full_page=True)
    row = page.eval_on_selector("#cell-gaps tbody tr", "r => [...r.cells].map(c => c.textContent)")
    assert row[0] == "open" and row[1] == "trades"
    assert (int(row[2]), int(row[3]), int(row[4])) == (dropped[0], dropped[-1], len(dropped))
    assert "cell=2024-08-09T00" in page.url  # the chosen cell is in the address


def test_sql_page_shows_a_result_and_k2s_error_text(
    demo_console: Console, page: Any, artifacts: Path
) -> None:
    enter_key(page, demo_console.url, demo_console.read_key, "/console/?page=sql")
    page.wait_for_selector("#views details summary")
    assert sorted(page.eval_on_selector_all("#views summary", "s => s.map(x => x.textContent)")) == [
        "gaps",
        "instruments",
        "quotes",
        "trades",
    ]
    page.fill(
        "#sql-text", "SELECT symbol, count(*) AS n, min(trade_id) AS first_id FROM trades GROUP BY symbol"
    )
    page.click("#sql-run")
    page.wait_for_selector("#sql-grid tbody tr")
    assert page.eval_on_selector("#sql-grid tbody tr", "r => [...r.cells].map(c => c.textContent)") == [
        "BTCUSDT",
        "19904",
        "3735683259",
    ]
    meta = page.text_content("#sql-meta") or ""
    assert "1 rows" in meta and "query" in meta and '"trades":' in meta
    page.screenshot(path=str(artifacts / "sql-result.png"), full_page=True)
    with page.expect_download() as download:
        page.click("#sql-csv")
    assert download.value.suggested_filename == "k2-query.csv"
    page.fill("#sql-text", "SELECT no_such_column FROM trades")
    page.click("#sql-run")
    page.wait_for_function("document.getElementById('sql-error').textContent.length > 0")
    error = page.text_content("#sql-error") or ""
    assert error.startswith(
        "invalid_query: expected a query over the views trades, quotes, instruments, gaps, found an error"
    )
    assert "no_such_column" in error
    page.fill("#sql-text", "COPY trades TO '/tmp/x.csv'")
    page.click("#sql-run")
    page.wait_for_function("document.getElementById('sql-error').textContent.includes('COPY')")
    assert "expected one read-only SELECT" in (page.text_content("#sql-error") or "")
    page.screenshot(path=str(artifacts / "sql-error.png"), full_page=True)


def test_a_wrong_key_is_refused(demo_console: Console, page: Any, artifacts: Path) -> None:
    enter_key(page, demo_console.url, "k2_notakey_0123456789abcdef", "/console/?page=chart")
    page.wait_for_function("document.getElementById('key-error').textContent.startsWith('Key refused')")
    page.screenshot(path=str(artifacts / "wrong-key.png"), full_page=True)
    assert "expected a valid, unrevoked API key" in (page.text_content("#key-error") or "")
    assert page.evaluate("sessionStorage.getItem('k2.apiKey')") is None
    assert page.locator("#chart").count() == 0


def test_overview_shows_parts_tables_and_sources(demo_console: Console, page: Any, artifacts: Path) -> None:
    enter_key(page, demo_console.url, demo_console.admin_key)
    page.wait_for_selector("#page[data-loaded='true'] #sources")
    page.screenshot(path=str(artifacts / "overview.png"), full_page=True)
    parts = dict(
        page.eval_on_selector_all(
            "#parts tbody tr", "rows => rows.map(r => [r.dataset.part, r.dataset.state])"
        )
    )
    assert parts == {"api": "ok", "catalog": "ok", "engine": "ok", "broker": "ok"}
    source = page.eval_on_selector("#sources tbody tr", "r => [...r.cells].map(c => c.textContent)")
    assert source[:3] == ["binance", "BTCUSDT", "19,904"]
    assert page.text_content("#commits") and "none" in (page.text_content("#page") or "")


def test_docs_render_offline(demo_console: Console, page: Any, artifacts: Path) -> None:
    blocked = offline(page, demo_console.url)
    page.goto(demo_console.url + "/docs")
    page.wait_for_selector(".swagger-ui .opblock-summary-path")
    paths = page.eval_on_selector_all(".opblock-summary-path", "p => p.map(x => x.textContent)")
    assert "/v1/bars" in paths and "/v1/sql" in paths
    page.screenshot(path=str(artifacts / "docs.png"), full_page=False)
    assert not blocked, blocked
