"""Console benchmark in Debian's headless Chromium (Playwright): how fast the chart page draws.

Measured from the page's own ``performance`` marks (set by chart.js), ``--runs`` fresh page loads each:

1. **first candle visible after navigation**: the demo capture (19,904 trades, 12 one-minute candles);
   ``k2-first-candle`` (the candles drawn: the SVG first paint on a cold browser, else Plotly's) and
   ``k2-first-draw`` (the interactive Plotly chart drawn) relative to the navigation start, the key already
   in the tab. Cold browser cache per run: the 4.8 MB plotly.min.js is fetched and parsed each time.
2. **1,440 candles drawn after the response**: one symbol-day of 1-minute bars (a day of trades, one every
   ``--spacing`` seconds, written with the lake writer); ``k2-first-draw`` minus the later of
   ``k2-bars-response`` (the JSON parsed) and ``k2-plotly-ready`` (the chart library parsed), i.e. the
   client's cost of turning the response into a drawn chart plus its table.
3. **plotly.min.js ready after navigation** (``k2-plotly-ready``), reported apart: on a loaded machine
   parsing the 4.8 MB library dominates the first paint.
4. **the API calls apart from the drawing**: each run's ``/v1/symbols`` and ``/v1/bars`` request times
   from the browser's resource timing (request start to response end), so a slow first candle says
   whether the server or the page was slow. The first run hits a freshly started API process (cold).
5. **panning a day back fetches only the new range**: the synthetic symbol has two days; the chart opens
   on the second, is panned to the first, and the benchmark records which ranges were requested (it fails
   if anything but the new day was) and the time from the pan to the 2,880 candles drawn.

Run::

    PYTHONPATH=src:. .venv/bin/python benchmarks/console_bench.py --runs 5 [--no-warm-up]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.api.helpers import ServerThread  # noqa: E402
from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS, start_console  # noqa: E402
from tests.console.lake import land_capture  # noqa: E402
from tests.landing.helpers import make_trades  # noqa: E402

from k2.lake.writer import append  # noqa: E402
from k2.model import TRADE  # noqa: E402
from k2.model.arrow import records_to_arrow  # noqa: E402

VERBOSE = "--verbose" in sys.argv
DEMO_PATH = "/console/?page=chart&exchange=binance&symbol=BTCUSDT&interval=1m"
DAY_START_US = 1_724_976_000_000_000  # 2024-08-30T00:00:00Z: two days of trades from here
DAY_PATH = "/console/?page=chart&exchange=binance&symbol=DAYUSDT&interval=1m&start=2024-08-31T00:00:00Z&end=2024-09-01T00:00:00Z"


def day_of_trades(spacing_s: float, days: int = 2) -> Any:
    count = int(days * 86_400 / spacing_s)
    rows = make_trades("DAYUSDT", 1, count)
    for i, row in enumerate(rows):
        row["exchange_ts"] = DAY_START_US + int(i * spacing_s * 1_000_000)
        row["receipt_ts"] = row["exchange_ts"] + 1_000
        row["ingest_ts"] = row["receipt_ts"] + 1_000
    return records_to_arrow(TRADE, rows)


def measure(
    browser: Any,
    url: str,
    key: str,
    path: str,
    candles: int,
    warm: bool = False,
    pan: bool = False,
    day_before: date = date(2024, 8, 30),
    before_rows: int = 1440,
) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(
        f"sessionStorage.setItem('k2.apiKey', {key!r}); sessionStorage.setItem('k2.scope', 'read');"
    )
    page = context.new_page()
    if warm:  # a returning user: plotly.min.js in the HTTP cache and V8's code cache
        for _ in range(2):
            page.goto(url + path)
            page.wait_for_selector(f"#chart[data-candles='{candles}']", timeout=60_000)
    page.goto(url + path)
    page.wait_for_selector(f"#chart[data-candles='{candles}']", timeout=60_000)
    marks = page.evaluate(
        "() => Object.fromEntries(['k2-bars-response', 'k2-plotly-ready', 'k2-first-draw', 'k2-first-candle'].map(n => [n, (performance.getEntriesByName(n)[0] || {}).startTime ?? null]))"
    )
    resources = page.evaluate(
        "() => performance.getEntriesByType('resource').map(r => [r.name.split('/').slice(3).join('/').slice(0, 60), Math.round(r.startTime), Math.round(r.responseEnd)])"
    )
    if VERBOSE:
        print(marks, *resources, sep="\n  ")
    api_ms = {name: end - begin for name, begin, end in resources if name.startswith("v1/")}
    result = {
        # Older pages (before the SVG first paint) have no k2-first-candle: their first candle is Plotly's.
        "first_candle_ms": marks["k2-first-candle"] or marks["k2-first-draw"],
        "first_draw_ms": marks["k2-first-draw"],
        "draw_after_response_ms": marks["k2-first-draw"]
        - max(marks["k2-bars-response"], marks["k2-plotly-ready"]),
        "plotly_ready_ms": marks["k2-plotly-ready"],
        "symbols_api_ms": next((v for k, v in api_ms.items() if k.startswith("v1/symbols")), 0.0),
        "bars_api_ms": next((v for k, v in api_ms.items() if k.startswith("v1/bars")), 0.0),
    }
    if pan:
        result.update(pan_back_a_day(page, day_before, before_rows, candles + before_rows))
    context.close()
    return result


def pan_back_a_day(
    page: Any, day_before: date = date(2024, 8, 30), rows: int = 1440, total: int = 2880
) -> dict[str, float]:
    """Pan the day chart to ``day_before``; check only that day was fetched (``rows`` bars); time until the
    ``total`` candles are drawn."""
    before = len(page.evaluate("window.k2Chart.fetches"))
    first, last = day_before.isoformat(), (day_before + timedelta(days=1)).isoformat()
    started = page.evaluate(
        "([a, b]) => { const t = performance.now(); Plotly.relayout('chart', {'xaxis.range[0]': a + ' 00:00:00', 'xaxis.range[1]': b + ' 00:00:00'}); return t; }",
        [first, last],
    )
    page.wait_for_selector(f"#chart[data-candles='{total}']", timeout=60_000)
    drawn = page.evaluate("performance.now()")
    fetches = page.evaluate("window.k2Chart.fetches.map(f => [f.start, f.end, f.rows])")[before:]
    if fetches != [[f"{first}T00:00:00Z", f"{last}T00:00:00Z", rows]]:
        raise SystemExit(f"expected the pan to fetch only the new day, found {fetches}")
    return {"pan_ms": drawn - started}


def over_lake(data_dir: Path, runs: int, symbol: str, day: date) -> None:
    """The 1,440-candle page over an existing lake (e.g. query_bench.py's 50M-trade table): ``symbol`` on
    ``day``, then panned to the day before. Creates a read key in the lake's key store."""
    from playwright.sync_api import sync_playwright
    from tests.api.conftest import api_settings

    from k2.api.keys import KeyStore
    from k2.query.client import Client

    settings = api_settings(data_dir, "127.0.0.1:1", "http://127.0.0.1:1", query_max_rows=100_000)
    key, _ = KeyStore.from_settings(settings).create("console-bench", "read")
    end = day + timedelta(days=1)
    client = Client(settings)
    candles, before = (
        client.bars(symbol, "1m", f"{d}T00:00:00Z", f"{d + timedelta(days=1)}T00:00:00Z").num_rows
        for d in (day, day - timedelta(days=1))
    )
    client.close()
    print(f"{symbol} {day}: {candles} one-minute bars ({before} the day before)", flush=True)
    path = f"/console/?page=chart&exchange=binance&symbol={symbol}&interval=1m&start={day}T00:00:00Z&end={end}T00:00:00Z"
    server = ServerThread(settings).start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            results = [
                measure(browser, server.url, key, path, candles, True, True, day - timedelta(days=1), before)
                for _ in range(runs)
            ]
            browser.close()
    finally:
        server.stop()
    report(
        results,
        [
            (f"{candles:,} candles drawn after the response", "draw_after_response_ms"),
            (f"{candles:,} candles, first candle visible after navigation", "first_candle_ms"),
            (f"{candles:,} candles, interactive chart drawn after navigation", "first_draw_ms"),
            (f"/v1/bars request ({candles:,} bars)", "bars_api_ms"),
            (
                f"pan a day back: new day fetched ({before:,} bars), {candles + before:,} candles drawn",
                "pan_ms",
            ),
        ],
    )


def report(runs: list[dict[str, float]], lines: list[tuple[str, str]]) -> None:
    for name, key in lines:
        values = sorted(r[key] for r in runs)
        print(
            f"{name}: median {statistics.median(values):.0f} ms, min {values[0]:.0f}, max {values[-1]:.0f} ({len(values)} runs)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="console chart benchmark (headless Chromium)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--verbose", action="store_true", help="print each run's marks and resource timings")
    parser.add_argument(
        "--spacing", type=float, default=2.0, help="seconds between the synthetic day's trades"
    )
    parser.add_argument(
        "--no-warm-up", action="store_true", help="K2_API_WARM_UP=false: the cold first request as before"
    )
    parser.add_argument(
        "--lake", type=Path, default=None,
        help="instead: the 1,440-candle page over this lake (query_bench.py's data dir, e.g. the 50M-trade table)",
    )  # fmt: skip
    parser.add_argument("--symbol", default="BTCUSDT", help="with --lake: the symbol")
    parser.add_argument(
        "--day", default="2024-09-15", help="with --lake: the day (UTC), panned to the day before"
    )
    args = parser.parse_args()
    if args.lake is not None:
        over_lake(args.lake, args.runs, args.symbol, date.fromisoformat(args.day))
        return
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as root:
        console, server = start_console(Path(root), "127.0.0.1:1", "http://127.0.0.1:1")
        land_capture(console.tables)
        append(console.tables["trades"], day_of_trades(args.spacing), "trades")
        server.stop()
        # A freshly started API over the landed lake, as after `k2 up`: the first run meets a cold process.
        server = ServerThread(
            console.settings.model_copy(update={"api_warm_up": not args.no_warm_up})
        ).start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                demo = [
                    measure(
                        browser,
                        server.url,
                        console.read_key,
                        DEMO_PATH,
                        12,
                    )
                    for _ in range(args.runs)
                ]
                day = [
                    measure(browser, server.url, console.read_key, DAY_PATH, 1440, pan=True)
                    for _ in range(args.runs)
                ]
                demo_warm = [
                    measure(browser, server.url, console.read_key, DEMO_PATH, 12, warm=True)
                    for _ in range(args.runs)
                ]
                browser.close()
        finally:
            server.stop()
    print(f"first run (cold API process): {demo[0]}")
    for name, runs, key in (
        ("demo, first candle visible after navigation (SVG first paint)", demo, "first_candle_ms"),
        ("demo, interactive chart drawn after navigation (Plotly)", demo, "first_draw_ms"),
        ("demo, first candle after navigation, warm browser cache", demo_warm, "first_draw_ms"),
        ("1,440 candles drawn after the response", day, "draw_after_response_ms"),
        ("1,440 candles, first candle visible after navigation", day, "first_candle_ms"),
        ("1,440 candles, interactive chart drawn after navigation", day, "first_draw_ms"),
        ("plotly.min.js loaded and parsed after navigation", demo + day, "plotly_ready_ms"),
        ("demo, /v1/symbols request (browser: start to response end)", demo, "symbols_api_ms"),
        ("demo, /v1/bars request (12 bars)", demo, "bars_api_ms"),
        ("day, /v1/bars request (1,440 bars)", day, "bars_api_ms"),
        ("pan a day back: new day fetched (1,440 bars) and 2,880 candles drawn", day, "pan_ms"),
    ):
        report(runs, [(name, key)])


if __name__ == "__main__":
    main()
