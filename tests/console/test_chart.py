"""The chart page in headless Chromium: the demo capture's 1-minute candles exactly as `k2 bars` shows them,
time travel by snapshot and by tag, panning, and the order book at the cursor's time as `Client.book` has it."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from k2.lake.tags import create_tag
from k2.query.client import Client
from tests.console.conftest import REPO, Console, enter_key
from tests.console.lake import land_book

BOOK_AT = "2024-08-09T00:00:00Z"


def k2_bars(console: Console) -> list[list[str]]:
    """`k2 bars BTCUSDT --interval 1m --format csv` on the same lake: the reference the page must match."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update(
        {
            "PYTHONPATH": str(REPO / "src"),
            "K2_DATA_DIR": str(console.settings.data_dir),
            "K2_KAFKA_BOOTSTRAP_SERVERS": console.settings.kafka_bootstrap_servers,
            "K2_QUERY_RECENT_TIMEOUT_SECONDS": "0.3",
        }
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "k2.cli",
            "bars",
            "BTCUSDT",
            "--interval",
            "1m",
            "--no-include-recent",
            "--format",
            "csv",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return list(csv.reader(io.StringIO(out.stdout.strip())))


def test_chart_shows_the_12_candles_of_k2_bars(demo_console: Console, page: Any, artifacts: Path) -> None:
    enter_key(
        page, demo_console.url, demo_console.read_key, "/console/?page=chart&symbol=BTCUSDT&interval=1m"
    )
    page.wait_for_selector("#chart[data-candles='12']")
    page.wait_for_function("document.querySelectorAll('#chart g.boxlayer path.box').length === 12")
    page.screenshot(path=str(artifacts / "chart.png"), full_page=True)
    page.click("#candles-details summary")  # the bars as a table, under the chart
    page.wait_for_selector("#candles tr.candle")  # built on the (asynchronous) toggle event
    candles = page.eval_on_selector_all(
        "#candles tr.candle",
        "rows => rows.map(r => [r.dataset.openTime, r.dataset.open, r.dataset.high, r.dataset.low, r.dataset.close, r.dataset.volume])",
    )
    reference = k2_bars(demo_console)
    header, rows = reference[0], reference[1:]
    columns = [header.index(name) for name in ("open_time", "open", "high", "low", "close", "volume")]
    expected = [[row[i] for i in columns] for row in rows]
    assert len(candles) == len(expected) == 12
    for shown, wanted in zip(candles, expected, strict=True):
        assert shown[0].removesuffix("Z").startswith(wanted[0].replace(" ", "T")[:16]), (shown, wanted)
        assert [Decimal(v) for v in shown[1:]] == [Decimal(v) for v in wanted[1:]], (shown, wanted)
    # What is drawn is what the table says: the Plotly trace holds the same numbers.
    drawn = page.evaluate(
        "() => { const t = document.getElementById('chart').data[0]; return [t.open, t.high, t.low, t.close]; }"
    )
    assert [list(x) for x in zip(*drawn, strict=True)] == [[float(v) for v in row[1:5]] for row in expected]


def test_time_travel_redraws_as_of_the_chosen_snapshot(
    demo_console: Console, page: Any, artifacts: Path
) -> None:
    enter_key(
        page, demo_console.url, demo_console.read_key, "/console/?page=chart&symbol=BTCUSDT&interval=1m"
    )
    page.wait_for_selector("#chart[data-candles='12']")
    options = page.eval_on_selector_all(
        "#as-of > option, #as-of optgroup[label=snapshots] option",
        "o => o.map(x => [x.value, x.textContent])",
    )
    assert options[0] == ["", "latest"] and len(options) == 3  # latest + the two trade commits, newest first
    first_commit = options[-1][0]
    assert first_commit.isdigit() and len(first_commit) > 15  # an exact 64-bit id, not a rounded float
    page.select_option("#as-of", first_commit)
    page.wait_for_selector("#chart[data-candles='6']")  # only the trades before midnight existed then
    assert f"as_of={first_commit}" in page.url
    page.click("#candles-details summary")
    page.wait_for_selector("#candles tr.candle")
    times = page.eval_on_selector_all("#candles tr.candle", "rows => rows.map(r => r.dataset.openTime)")
    assert times[0].startswith("2024-08-08T23:54") and times[-1].startswith("2024-08-08T23:59")
    assert first_commit in (page.text_content("#chart-status") or "")
    page.screenshot(path=str(artifacts / "as-of.png"), full_page=True)


def test_pan_fetches_only_the_new_range_and_zoom_shows_trades(
    demo_console: Console, page: Any, artifacts: Path
) -> None:
    enter_key(
        page,
        demo_console.url,
        demo_console.read_key,
        "/console/?page=chart&symbol=BTCUSDT&interval=1m&start=2024-08-09T00:00:00Z&end=2024-08-09T00:06:00Z",
    )
    page.wait_for_selector("#chart[data-candles='6']")
    # Pan six minutes back: only [23:54, 00:00) is requested, and the six earlier candles join the chart.
    page.evaluate(
        "Plotly.relayout('chart', {'xaxis.range[0]': '2024-08-08 23:54:00', 'xaxis.range[1]': '2024-08-09 00:00:00'})"
    )
    page.wait_for_selector("#chart[data-candles='12']")
    fetches = page.evaluate("window.k2Chart.fetches.map(f => [f.start, f.end, f.rows])")
    assert fetches == [
        ["2024-08-09T00:00:00Z", "2024-08-09T00:06:00Z", 6],
        ["2024-08-08T23:54:00Z", "2024-08-09T00:00:00Z", 6],
    ]
    assert "start=2024-08-08T23%3A54%3A00Z" in page.url
    # Zoom into two minutes: no bar request (loaded already), the trades appear as buy/sell points.
    page.evaluate(
        "Plotly.relayout('chart', {'xaxis.range[0]': '2024-08-08 23:58:00', 'xaxis.range[1]': '2024-08-09 00:00:00'})"
    )
    page.wait_for_function("document.getElementById('chart').data.some(t => t.name === 'buy trades')")
    names = page.evaluate("document.getElementById('chart').data.map(t => [t.name, t.x.length])")
    points = dict(names)
    trades_in_range = sum(n for name, n in names if name in ("buy trades", "sell trades"))
    assert points["buy trades"] > 0 and points["sell trades"] > 0
    assert trades_in_range == int(page.evaluate("window.k2Chart.trades.length"))
    assert len(page.evaluate("window.k2Chart.fetches")) == 2
    page.screenshot(path=str(artifacts / "zoomed-trades.png"), full_page=True)


@pytest.fixture(scope="module")
def book_console(demo_console: Console) -> Console:
    """The demo console with the capture's depth landed too (snapshot + diffs, 300k rows)."""
    land_book(demo_console.tables)
    return demo_console


def _ladder(page: Any) -> list[list[str]]:
    return page.eval_on_selector_all(
        "#book-ladder tr.level",
        "rows => rows.map(r => [r.dataset.bid, r.dataset.bidSize, r.dataset.ask, r.dataset.askSize])",
    )


def test_order_book_at_the_cursor_equals_client_book(
    book_console: Console, page: Any, artifacts: Path
) -> None:
    enter_key(
        page,
        book_console.url,
        book_console.read_key,
        f"/console/?page=chart&symbol=BTCUSDT&interval=1m&book_at={BOOK_AT}",
    )
    page.wait_for_selector(f"#book[data-state='shown'][data-at='{BOOK_AT.replace('Z', '.000Z')}']")
    page.screenshot(path=str(artifacts / "book.png"), full_page=True)
    with Client(book_console.settings) as client:
        expected = client.book("BTCUSDT", BOOK_AT, 20)
    ladder = _ladder(page)
    assert len(ladder) == 20
    shown = [(Decimal(r[0]), Decimal(r[1])) for r in ladder], [(Decimal(r[2]), Decimal(r[3])) for r in ladder]
    assert shown == (expected.side("BID"), expected.side("ASK"))
    assert ladder[0] == ["61685.99000000", "1.38154000", "61686.00000000", "4.14682000"]  # best bid/ask
    assert page.get_attribute("#book", "data-last-update-id") == str(expected.last_update_id)
    # The depth chart draws the same levels, cumulated from the best price outwards.
    depth = page.evaluate("document.getElementById('depth').data.map(t => [t.name, t.x, t.y])")
    bids = dict((name, (x, y)) for name, x, y in depth)["bids"]
    assert bids[0][0] == float(expected.side("BID")[0][0])
    assert bids[1][-1] == pytest.approx(float(sum(size for _, size in expected.side("BID"))))
    # A click on the chart pins the book at that time (URL state) and redraws it.
    page.evaluate(
        "document.getElementById('chart').emit('plotly_click', {points: [{x: '2024-08-08 23:58:30'}]})"
    )
    page.wait_for_selector("#book[data-at='2024-08-08T23:58:30.000Z'][data-state='shown']")
    assert "book_at=2024-08-08T23%3A58%3A30Z" in page.url
    with Client(book_console.settings) as client:
        earlier = client.book("BTCUSDT", "2024-08-08T23:58:30Z", 20)
    assert [(Decimal(r[0]), Decimal(r[1])) for r in _ladder(page)] == earlier.side("BID")


def test_tags_in_the_time_travel_selector(book_console: Console, page: Any, artifacts: Path) -> None:
    table = book_console.tables["trades"]
    table.refresh()
    first = min(table.metadata.snapshots, key=lambda s: s.timestamp_ms).snapshot_id
    if "before-midnight" not in table.metadata.refs:
        create_tag(table, "before-midnight", snapshot_id=first)
    enter_key(
        page, book_console.url, book_console.read_key, "/console/?page=chart&symbol=BTCUSDT&interval=1m"
    )
    page.wait_for_selector("#chart[data-candles='12']")
    tags = page.eval_on_selector_all(
        "#as-of optgroup[label=tags] option", "o => o.map(x => [x.value, x.textContent])"
    )
    assert [value for value, _ in tags] == ["tag:before-midnight"]
    assert str(first) in tags[0][1]
    page.select_option("#as-of", "tag:before-midnight")
    page.wait_for_selector("#chart[data-candles='6']")  # the tagged commit held the trades before midnight
    assert "as_of=tag%3Abefore-midnight" in page.url
    page.screenshot(path=str(artifacts / "tag.png"), full_page=True)
    # The shared URL restores the same view.
    page.goto(page.url)
    page.wait_for_selector("#chart[data-candles='6']")
    assert page.input_value("#as-of") == "tag:before-midnight"


def test_candles_are_drawn_before_the_chart_library_loads(
    demo_console: Console, page: Any, artifacts: Path
) -> None:
    """The first candles come from a plain SVG drawn on the bars answer, not from the 4.8 MB library: with
    the library unavailable the 12 candles are still shown (with the error), equal to the client's bars."""
    page.route("**/vendor/plotly.min.js", lambda route: route.abort())
    enter_key(
        page, demo_console.url, demo_console.read_key, "/console/?page=chart&symbol=BTCUSDT&interval=1m"
    )
    page.wait_for_selector("#chart-quick[data-candles='12']")
    page.wait_for_function(
        "(document.getElementById('chart-status').textContent || '').includes('expected the chart library')"
    )
    page.screenshot(path=str(artifacts / "quick.png"), full_page=True)
    drawn = page.eval_on_selector_all(
        "#chart-quick g.candle",
        "gs => gs.map(g => [g.dataset.openTime, g.dataset.open, g.dataset.high, g.dataset.low, g.dataset.close])",
    )
    assert page.eval_on_selector_all("#chart-quick rect.candle-body", "r => r.length") == 12
    with Client(demo_console.settings) as client:
        bars = client.bars("BTCUSDT", "1m", include_recent=False).table.to_pylist()
    assert [[Decimal(v) for v in row[1:]] for row in drawn] == [
        [b["open"], b["high"], b["low"], b["close"]] for b in bars
    ]
    assert [row[0][:16] for row in drawn] == [b["open_time"].isoformat()[:16] for b in bars]
    assert page.evaluate("performance.getEntriesByName('k2-first-candle').length") == 1
