"""Make the README screenshot of the console's chart page (docs/images/console-chart.png).

Lands the demo capture (data/samples/binance) into a throw-away lake, serves the real API on a free
loopback port, opens the chart page in Debian's headless Chromium (Playwright, executable_path) and
saves a PNG of the candles and the order book at 2024-08-09T00:00:00Z. No broker is needed: the capture's range is far from "now", so no Kafka read happens.

    PYTHONPATH=src:. .venv/bin/python scripts/console_screenshot.py [--output docs/images/console-chart.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS, enter_key, start_console  # noqa: E402
from tests.console.lake import land_book, land_capture  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "images" / "console-chart.png")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as root:
        console, server = start_console(Path(root), "127.0.0.1:1", "http://127.0.0.1:1")
        try:
            land_capture(console.tables)
            land_book(console.tables)  # the order book panel under the chart
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 1160})
                enter_key(
                    page,
                    console.url,
                    console.read_key,
                    "/console/?page=chart&exchange=binance&symbol=BTCUSDT&interval=1m&book_at=2024-08-09T00:00:00Z",
                )
                page.wait_for_selector("#chart[data-candles='12']")
                page.wait_for_selector("#book[data-state='shown']")
                page.wait_for_timeout(300)  # let Plotly finish its last paint
                args.output.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.output))
                browser.close()
        finally:
            server.stop()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
