"""``k2 demo``: the whole pipeline on real data in one command (what ``make demo`` runs).

1. ``k2 up``: the Tansu broker, K2's schema registry, the landing service (and the REST API).
2. Replays the real Binance capture in the package data (``k2.sources.samples``: 19,904 BTCUSDT trades and the
   bookTicker quotes) through Kafka as Avro, exactly as the live feed would produce it.
3. Waits for the landing service to commit them to Iceberg, then prints row counts, 1-minute OHLCV bars,
   the last trades and the Iceberg snapshot it committed (with the Kafka offsets it covers), and checks
   every landed price and quantity against the source JSON, bit for bit.
4. Lands the capture's depth (REST snapshot + diff events, through the same sync as the live feed) and
   prints the top-5 book K2 rebuilds at one update id next to the capture's own bookTicker for that id.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table as RichTable

from k2.config import Settings, load_settings
from k2.sources.samples import samples_dir

console = Console()
SAMPLES = samples_dir() / "binance"  # package data: found by an installed K2 too, not only in a checkout
EXPECTED_TRADES = 19_904
FIRST_ID, LAST_ID = 3_735_683_259, 3_735_703_162


def _captures(sample_dir: Path) -> list[Path]:
    paths = sorted(sample_dir.glob("spot_btcusdt_*.gz"))
    if not paths:
        raise typer.BadParameter(f"expected the Binance capture files in {sample_dir}, found none")
    return paths


def _wait_for_landing(settings: Settings, expected_trades: int, expected_quotes: int, timeout: float) -> None:
    from k2.lake.catalog import ensure_tables, load_catalog

    tables = ensure_tables(load_catalog(settings), settings)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = []
        for short, expected in (("trades", expected_trades), ("quotes", expected_quotes)):
            table = tables[short]
            table.refresh()
            data = (
                table.scan(
                    row_filter="exchange == 'binance' and symbol == 'BTCUSDT'", selected_fields=("exchange",)
                ).to_arrow()
                if table.current_snapshot()
                else None
            )
            counts.append((data.num_rows if data is not None else 0) >= expected)
        if all(counts):
            return
        time.sleep(0.5)
    log = settings.data_dir.resolve() / "logs" / "landing.log"
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no landing log)"
    raise RuntimeError(
        f"expected {expected_trades} trades to land within {timeout}s; landing log tail:\n{tail}"
    )


# long: a narrated script; each step prints what it shows, in the order the README tells it.
def run_demo(settings: Settings, sample_dir: Path = SAMPLES, timeout: float = 120.0) -> None:
    """Run the demo end to end (see the module docstring)."""
    from k2.bus import MarketDataProducer
    from k2.lake.catalog import ensure_tables, load_catalog
    from k2.lake.summary import OFFSETS_KEY
    from k2.model import QUOTE, TRADE
    from k2.ops import stack
    from k2.sources.binance import iter_capture

    started = time.monotonic()
    console.rule("[bold]K2 demo: Binance capture -> Kafka -> Iceberg -> DuckDB")
    for name, state in stack.up(settings):
        console.print(f"  {name:9} {state}")
    tables = ensure_tables(load_catalog(settings), settings)

    trades = quotes = 0
    source_values: dict[int, tuple[str, str]] = {}
    quote_ids: set[int] = set()
    t0 = time.monotonic()
    with MarketDataProducer(settings) as producer:
        for record_type, row, raw in iter_capture(_captures(sample_dir)):
            producer.send(record_type, row)
            if record_type is TRADE:
                trades += 1
                source_values[row["trade_id"]] = (raw["p"], raw["q"])
            elif record_type is QUOTE:
                quotes += 1
                quote_ids.add(row["update_id"])
    produce_s = time.monotonic() - t0
    console.print(
        f"produced {trades:,} trades and {quotes:,} quotes to Kafka in {produce_s:.1f}s ({(trades + quotes) / produce_s:,.0f} msgs/s)"
    )

    t0 = time.monotonic()
    _wait_for_landing(settings, len(source_values), len(quote_ids), timeout)
    console.print(f"landed by the landing service in {time.monotonic() - t0:.1f}s")

    import k2

    client = k2.connect(**{k: v for k, v in settings.model_dump().items() if v is not None})
    trades_table = client.trades("BTCUSDT", include_recent=False, limit=None)
    counts = RichTable("table", "rows", title="Row counts")
    for short in ("trades", "quotes", "gaps"):
        table = tables[short]
        table.refresh()
        snap = table.current_snapshot()
        counts.add_row(
            f"{table.name()[0]}.{table.name()[1]}" if isinstance(table.name(), tuple) else str(table.name()),
            str(snap.summary.additional_properties.get("total-records", 0) if snap and snap.summary else 0),
        )
    console.print(counts)

    # Exactness: every landed trade equals the source JSON strings.
    ids = trades_table["trade_id"].to_pylist()
    prices = trades_table["price"].to_pylist()
    quantities = trades_table["quantity"].to_pylist()
    mismatches = sum(
        1
        for i, p, q in zip(ids, prices, quantities, strict=True)
        if (f"{p:.8f}", f"{q:.8f}") != source_values.get(i)
    )
    distinct = len(set(ids))
    ok = (
        len(ids) == distinct == EXPECTED_TRADES
        and min(ids) == FIRST_ID
        and max(ids) == LAST_ID
        and mismatches == 0
    )
    console.print(
        f"trades in Iceberg: {len(ids):,} ({distinct:,} distinct, ids {min(ids)}..{max(ids)}); "
        f"price/quantity mismatches against the source JSON: {mismatches} -> "
        + ("[green]exact[/green]" if ok else "[red]NOT EXACT[/red]")
    )

    bars = client.bars("BTCUSDT", interval="1m", include_recent=False)
    bar_table = RichTable(
        "open time (UTC)",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "trades",
        "vwap",
        title="1-minute OHLCV bars, BTCUSDT",
    )
    for bar in bars.to_pylist():
        bar_table.add_row(
            bar["open_time"].astimezone(UTC).strftime("%Y-%m-%d %H:%M"),
            f"{bar['open']:.2f}",
            f"{bar['high']:.2f}",
            f"{bar['low']:.2f}",
            f"{bar['close']:.2f}",
            f"{bar['volume']:.5f}",
            str(bar["trade_count"]),
            f"{bar['vwap']:.2f}",
        )
    console.print(bar_table)

    last = trades_table.sort_by([("exchange_ts", "descending"), ("trade_id", "descending")]).slice(0, 10)
    last_table = RichTable("time (UTC)", "trade id", "price", "quantity", "side", title="Last 10 trades")
    for row in last.to_pylist():
        last_table.add_row(
            row["exchange_ts"].astimezone(UTC).isoformat(timespec="milliseconds"),
            str(row["trade_id"]),
            f"{row['price']}",
            f"{row['quantity']}",
            row["side"],
        )
    console.print(last_table)

    trades_iceberg = tables["trades"]
    trades_iceberg.refresh()
    snap = trades_iceberg.current_snapshot()
    if snap is not None and snap.summary is not None:
        props = snap.summary.additional_properties
        console.print(
            f"Iceberg snapshot {snap.snapshot_id} at {datetime.fromtimestamp(snap.timestamp_ms / 1000, tz=UTC).isoformat()}: "
            f"{props.get('added-records', '?')} rows added, {props.get('total-records', '?')} in total, "
            f"{len(trades_iceberg.metadata.snapshots)} snapshots; Kafka offsets stored with it: {json.loads(props.get(OFFSETS_KEY, '{}'))}"
        )
    ok = _show_book(settings, sample_dir, client, timeout) and ok
    console.print(
        f"demo finished in {time.monotonic() - started:.1f}s. The stack is still running: try `.venv/bin/k2 status`, "
        "`.venv/bin/k2 bars BTCUSDT --interval 1m`; stop it with `.venv/bin/k2 down`."
    )
    from k2.console import console_url

    console.print(
        f"research console: {console_url(settings.api_host, settings.api_port)} "
        "(a key: `.venv/bin/k2 keys create --name me --scope read`)"
    )
    if not ok:
        raise typer.Exit(1)


def _show_book(settings: Settings, sample_dir: Path, client: Any, timeout: float) -> bool:
    """Land the capture's depth (snapshot + diffs, via Kafka) and print the top-5 book at one update id
    next to the capture's own bookTicker for that id; True when best bid/ask and sizes are equal."""
    from pyiceberg import expressions

    at_least: Any = expressions.GreaterThanOrEqual  # positional at runtime; the stubs only describe keywords
    from k2.bus import MarketDataProducer
    from k2.lake.catalog import ensure_tables, load_catalog
    from k2.model import BOOK_DELTA, RecordType
    from k2.sources.binance import iter_capture_lines
    from k2.sources.binance_capture import CaptureReader

    ends: list[int] = []
    tickers: dict[int, dict[str, str]] = {}
    with MarketDataProducer(settings) as producer:

        def emit(record: RecordType, row: dict[str, Any]) -> None:
            if record is BOOK_DELTA:
                producer.send(record, row)
                if row["is_event_end"] and not row["is_snapshot"]:
                    ends.append(row["last_update_id"])

        reader = CaptureReader(
            emit, lambda *bad: console.print(f"[red]rejected depth message[/red] {bad[2]}: {bad[3]}")
        )
        for ns, raw in iter_capture_lines(_captures(sample_dir)):
            if b"@bookTicker" in raw[:48]:
                data = json.loads(raw)["data"]
                tickers[data["u"]] = data
            else:
                reader.feed(ns, raw, "capture")
        reader.finish()
    shared = [u for u in ends if u in tickers]
    table = ensure_tables(load_catalog(settings), settings)["book_deltas"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        table.refresh()
        landed = (
            table.scan(row_filter=at_least("last_update_id", shared[-1]), selected_fields=("last_update_id",))
            .to_arrow()
            .num_rows
        )
        if landed:
            break
        time.sleep(0.5)
    moment = shared[len(shared) // 2]
    book = client.book("BTCUSDT", "2100-01-01T00:00:00Z", 5, update_id=moment)
    ticker = tickers[moment]
    view = RichTable(
        "level",
        "bid size",
        "bid",
        "ask",
        "ask size",
        title=f"Order book BTCUSDT at update id {moment} (K2 book())",
    )
    for level, ((bid, bid_size), (ask, ask_size)) in enumerate(
        zip(book.side("BID"), book.side("ASK"), strict=False), 1
    ):
        view.add_row(str(level), str(bid_size), str(bid), str(ask), str(ask_size))
    console.print(view)
    (bid, bid_size), (ask, ask_size) = book.side("BID")[0], book.side("ASK")[0]
    same = (f"{bid:.8f}", f"{bid_size:.8f}", f"{ask:.8f}", f"{ask_size:.8f}") == (
        ticker["b"],
        ticker["B"],
        ticker["a"],
        ticker["A"],
    )
    console.print(
        f"capture bookTicker u={moment}: bid {ticker['b']} ({ticker['B']}) ask {ticker['a']} ({ticker['A']}) -> "
        + ("[green]book matches the bookTicker[/green]" if same else "[red]BOOK DIFFERS[/red]")
        + f" ({len(shared):,} update ids shared by depth and bookTicker in the capture)"
    )
    return same


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(timeout: float = typer.Option(120.0, help="Seconds to wait for landing.")) -> None:
        """Start the local stack, replay a real Binance capture through Kafka into Iceberg, show the results."""
        run_demo(load_settings(), timeout=timeout)
