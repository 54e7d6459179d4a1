"""Source commands: ``k2 stream binance|coinbase`` (exchange -> Kafka), ``k2 fake-exchange serve``,
``k2 replay`` (Iceberg -> Kafka in exchange-time order) and ``k2 reference binance|unknown``.

Example::

    k2 stream binance --symbols BTCUSDT,ETHUSDT
    k2 stream binance --symbols BTCUSDT --market usdm
    k2 fake-exchange serve --port 9100 --drop-every 2000 --reconnect-advance 40 &
    k2 stream binance --symbols BTCUSDT --url ws://127.0.0.1:9100 --rest-url http://127.0.0.1:9100 --idle-exit 5
    k2 replay --symbols BTCUSDT --start 2024-08-08T23:54:00Z --end 2024-08-09T00:06:00Z --speed 10x --to-topic backtest.trades
    k2 reference binance --symbols BTCUSDT,ETHUSDT
    k2 reference unknown
"""

from __future__ import annotations

import asyncio
import signal
import threading
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table as RichTable

from k2.cli.safe import cell, markup
from k2.config import Settings, load_settings

console = Console()


def _summary(names: list[str], stats: list[object]) -> None:
    from k2.sources.live import FeedStats

    table = RichTable(
        "feed",
        "trades",
        "quotes",
        "duplicates",
        "backfilled",
        "malformed",
        "reconnects",
        "gaps",
        title="Feed summary",
    )
    for name, item in zip(names, stats, strict=True):
        assert isinstance(item, FeedStats)
        reconnects = ", ".join(f"{k}={v}" for k, v in sorted(item.reconnects.items())) or "0"
        gaps = ", ".join(f"{k}={v}" for k, v in sorted(item.gaps.items())) or "0"
        table.add_row(
            cell(name),
            str(item.trades),
            str(item.quotes),
            str(item.duplicates),
            str(item.backfilled_trades),
            str(item.malformed),
            cell(reconnects),
            cell(gaps),
        )
    console.print(table)


def _early_stop_handlers() -> threading.Event:
    """SIGINT/SIGTERM before the feeds' own handlers exist (imports, producer, registry) set an event.

    Without it a SIGTERM in the first seconds (a service manager stopping a stream it just started) killed
    the process with the default action: no summary, no flush, exit -15.
    """
    requested = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: requested.set())
    return requested


def _run(settings: Settings, feeds: list, idle_exit: float | None, metrics_port: int) -> None:  # type: ignore[type-arg]
    stop_requested = _early_stop_handlers()
    from k2.sources.live import run_feeds
    from k2.telemetry.metrics import declare_all

    def stop_if_requested(runners: list) -> None:  # type: ignore[type-arg]
        if stop_requested.is_set():  # the feeds' handlers are installed now; honour what came before
            for runner in runners:
                runner.stop()

    declare_all()
    metrics_port = metrics_port or settings.source_metrics_port  # ops: K2_SOURCE_METRICS_PORT default
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1")
    for feed in feeds:
        console.print(f"[bold]{feed.source}[/bold] {feed.url()}")
    stats = asyncio.run(run_feeds(settings, feeds, idle_exit_seconds=idle_exit, on_start=stop_if_requested))
    _summary([f"{f.source} #{i + 1}" for i, f in enumerate(feeds)], list(stats))


def register(app: typer.Typer) -> None:
    """Add ``k2 stream ...``, ``k2 fake-exchange serve``, ``k2 replay`` and ``k2 reference ...`` to the ``k2`` app."""
    stream_app = typer.Typer(
        help="Live exchange feeds into Kafka (trades and best bid/offer).", no_args_is_help=True
    )

    @stream_app.command("binance")
    def stream_binance(
        symbols: str = typer.Option(..., help="Comma-separated symbols, e.g. BTCUSDT,ETHUSDT."),
        market: str = typer.Option(None, help="spot, us or usdm (default: inferred from K2_BINANCE_WS_URL)."),
        url: str = typer.Option(
            None, help="WebSocket base URL (default: the market preset or K2_BINANCE_WS_URL)."
        ),
        rest_url: str = typer.Option(
            None, help="REST base URL for gap backfill (default: the market preset or K2_BINANCE_REST_URL)."
        ),
        no_quotes: bool = typer.Option(False, "--no-quotes", help="Trades only (no bookTicker)."),
        no_depth: bool = typer.Option(
            False, "--no-depth", help="No order-book depth (depth@100ms diffs + REST snapshots)."
        ),
        idle_exit: float = typer.Option(None, help="Exit after this many seconds without data."),
        metrics_port: int = typer.Option(0, help="Serve Prometheus /metrics on 127.0.0.1:PORT (0: off)."),
    ) -> None:
        """Stream Binance trades, best bid/offer and book depth into Kafka, backfilling gaps from REST, until Ctrl-C."""
        from k2.sources.binance import MARKETS, feeds_for_symbols

        settings = load_settings()
        if market is not None and market not in MARKETS:
            raise typer.BadParameter(
                f"expected one of {sorted(MARKETS)}, found {market!r}", param_hint="--market"
            )
        try:
            feeds = feeds_for_symbols(
                settings,
                symbols.split(","),
                MARKETS[market] if market else None,
                url,
                rest_url,
                quotes=not no_quotes,
                depth=not no_depth,
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--symbols") from None
        _run(settings, feeds, idle_exit, metrics_port)

    @stream_app.command("coinbase")
    def stream_coinbase(
        products: str = typer.Option(..., help="Comma-separated product ids, e.g. BTC-USD,ETH-USD."),
        url: str = typer.Option(None, help="WebSocket URL (default: K2_COINBASE_WS_URL)."),
        rest_url: str = typer.Option(
            None, help="REST base URL for gap backfill (default: K2_COINBASE_REST_URL)."
        ),
        idle_exit: float = typer.Option(None, help="Exit after this many seconds without data."),
        metrics_port: int = typer.Option(0, help="Serve Prometheus /metrics on 127.0.0.1:PORT (0: off)."),
        no_depth: bool = typer.Option(
            False, "--no-depth", help="No order-book depth (the level2 channel: snapshot + l2update)."
        ),
    ) -> None:
        """Stream Coinbase matches, ticker and level2 depth into Kafka, backfilling gaps from REST, until Ctrl-C."""
        from k2.sources.coinbase import CoinbaseFeed

        settings = load_settings()
        try:
            feed = CoinbaseFeed(
                products.split(","),
                url or settings.coinbase_ws_url,
                rest_url or settings.coinbase_rest_url,
                depth=not no_depth,
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--products") from None
        _run(settings, [feed], idle_exit, metrics_port)

    app.add_typer(stream_app, name="stream")

    fake_app = typer.Typer(
        help="A local fake exchange replaying real captures, with fault injection.", no_args_is_help=True
    )

    @fake_app.command("serve")
    def fake_serve(
        port: int = typer.Option(9100, help="Port on 127.0.0.1 (WebSocket and REST)."),
        host: str = typer.Option("127.0.0.1", help="Bind address."),
        mode: str = typer.Option("binance", help="binance or coinbase."),
        capture: list[Path] = typer.Option(
            None, help="Capture file(s) (default for binance: the captures shipped in k2.sources.samples)."
        ),
        speed: float = typer.Option(
            0.0, help="Replay speed: 1 = real time, 10 = ten times faster, 0 = as fast as possible."
        ),
        drop_every: int = typer.Option(0, help="Drop the connection after every N messages sent on it."),
        max_drops: int = typer.Option(None, help="Stop dropping after this many drops."),
        drop_mode: str = typer.Option("mixed", help="close (close frame), abort (TCP reset) or mixed."),
        skip_every: int = typer.Option(0, help="Skip (never send) --skip-count messages after every N."),
        skip_count: int = typer.Option(1, help="Messages skipped each time."),
        stall_every: int = typer.Option(0, help="Stall before every N-th message."),
        stall_seconds: float = typer.Option(0.0, help="How long each stall lasts."),
        malformed_every: int = typer.Option(0, help="Inject a malformed frame before every N-th message."),
        reconnect_advance: int = typer.Option(
            0, help="Messages that pass while a client is disconnected (negative: re-send)."
        ),
        rest_missing: str = typer.Option("", help="Trade id ranges REST cannot supply, e.g. 5-9,12."),
        rest_weight_limit: int = typer.Option(6000, help="REST request weight per window (Binance mode)."),
        rest_weight_window: float = typer.Option(60.0, help="REST weight window in seconds."),
        max_messages: int = typer.Option(None, help="Serve only the first N capture messages."),
        at_end: str = typer.Option(
            "idle", help="At the end of the capture: idle (keep the connection) or close."
        ),
        exchange_info: Path = typer.Option(
            None, help="JSON served at GET /api/v3/exchangeInfo (default: the test fixture)."
        ),
    ) -> None:
        """Serve a capture as a Binance or Coinbase feed (WebSocket + REST) until Ctrl-C."""
        from k2.sources.fake_exchange import FakeExchange, Faults, parse_ranges

        if (
            mode not in ("binance", "coinbase")
            or drop_mode not in ("close", "abort", "mixed")
            or at_end not in ("idle", "close")
        ):
            raise typer.BadParameter(
                f"expected --mode binance|coinbase, --drop-mode close|abort|mixed, --at-end idle|close; found {mode}, {drop_mode}, {at_end}"
            )
        try:
            faults = Faults(
                drop_every=drop_every,
                max_drops=max_drops,
                drop_mode=drop_mode,  # type: ignore[arg-type]
                skip_every=skip_every,
                skip_count=skip_count,
                stall_every=stall_every,
                stall_seconds=stall_seconds,
                malformed_every=malformed_every,
                reconnect_advance=reconnect_advance,
                rest_missing=parse_ranges(rest_missing),
                rest_weight_limit=rest_weight_limit,
                rest_weight_window_seconds=rest_weight_window,
                max_messages=max_messages,
                at_end=at_end,  # type: ignore[arg-type]
            )
            fake = FakeExchange(
                mode,  # type: ignore[arg-type]
                list(capture) if capture else None,
                faults,
                speed,
                host,
                port,
                exchange_info=exchange_info,
            )
        except (ValueError, OSError) as exc:
            raise typer.BadParameter(str(exc)) from None

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, fake.stop)

            def ready(server: FakeExchange) -> None:
                console.print(
                    f"fake {mode} exchange: {len(server.messages):,} messages; WebSocket {server.ws_url}, REST {server.rest_url}",
                    highlight=False,
                )

            await fake.serve_forever(ready)

        asyncio.run(main())
        console.print(f"stopped: {fake.stats}")

    app.add_typer(fake_app, name="fake-exchange")

    _register_replay(app)
    _register_reference(app)


def _parse_time(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"expected an ISO-8601 time like 2024-08-08T23:54:00Z, found {text!r}", param_hint=option
        ) from None
    if moment.tzinfo is None:
        raise typer.BadParameter(
            f"expected a time with a zone (Z or +hh:mm), found {text!r}", param_hint=option
        )
    return moment


def _register_replay(app: typer.Typer) -> None:
    @app.command("replay")
    def replay_command(
        symbols: str = typer.Option(..., help="Comma-separated exchange symbols, e.g. BTCUSDT,ETHUSDT."),
        start: str = typer.Option(..., help="First exchange time (inclusive), ISO-8601 with zone."),
        end: str = typer.Option(..., help="Last exchange time (exclusive), ISO-8601 with zone."),
        to_topic: str = typer.Option(..., help="Kafka topic to publish to (Avro, key = symbol)."),
        speed: str = typer.Option(
            "max", help="10x, 1x, 0.5x ... (exchange-time deltas divided by the factor) or max."
        ),
        table: str = typer.Option("trades", help="trades, quotes or book_deltas."),
        exchange: str = typer.Option(
            None, help="Only this exchange's rows (default: every exchange with these symbols)."
        ),
        window_seconds: float = typer.Option(
            900.0, help="Exchange-time window read from Iceberg at a time (bounds memory)."
        ),
    ) -> None:
        """Re-publish stored trades or quotes to a topic in exchange-time order, at a chosen speed."""
        from k2.sources.replay import parse_speed, replay
        from k2.telemetry.metrics import declare_all

        names = [s.strip() for s in symbols.split(",") if s.strip()]
        if not names:
            raise typer.BadParameter(
                f"expected comma-separated symbols, found {symbols!r}", param_hint="--symbols"
            )
        if table not in ("trades", "quotes", "book_deltas"):
            raise typer.BadParameter(
                f"expected trades, quotes or book_deltas, found {table!r}", param_hint="--table"
            )
        try:
            pace = parse_speed(speed)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--speed") from None
        first, last = _parse_time(start, "--start"), _parse_time(end, "--end")
        if last <= first:
            raise typer.BadParameter(
                f"expected --end after --start, found {start} .. {end}", param_hint="--end"
            )
        if window_seconds <= 0:
            raise typer.BadParameter(
                f"expected a positive window, found {window_seconds}", param_hint="--window-seconds"
            )
        declare_all()
        stats = replay(load_settings(), names, first, last, to_topic, pace, table, exchange, window_seconds)
        rate = stats.rows / stats.seconds if stats.seconds > 0 else 0.0
        console.print(
            f"replayed {stats.rows:,} {table} rows to {to_topic} in {stats.seconds:.2f}s ({rate:,.0f} rows/s, "
            f"{stats.windows} windows read, speed {speed})",
            highlight=False,
        )


def _register_reference(app: typer.Typer) -> None:
    ref_app = typer.Typer(
        help="Reference data: instruments (reference.instruments) and unknown symbols.", no_args_is_help=True
    )

    @ref_app.command("binance")
    def reference_binance(
        symbols: str = typer.Option(None, help="Only these symbols (default: every symbol the venue lists)."),
        market: str = typer.Option(
            None, help="spot, us or usdm (default: inferred from K2_BINANCE_REST_URL)."
        ),
        rest_url: str = typer.Option(
            None, help="REST base URL (default: the market preset or K2_BINANCE_REST_URL)."
        ),
    ) -> None:
        """Load Binance's exchange info into reference.instruments (replaces rows of the same exchange and symbol)."""
        from k2.sources.binance import MARKETS
        from k2.sources.live import RestRefused, RestUnavailable
        from k2.sources.reference import ReferenceDataError, load_binance_instruments

        if market is not None and market not in MARKETS:
            raise typer.BadParameter(
                f"expected one of {sorted(MARKETS)}, found {market!r}", param_hint="--market"
            )
        wanted = [s for s in symbols.split(",") if s.strip()] if symbols else None
        try:
            result = load_binance_instruments(
                load_settings(), wanted, MARKETS[market] if market else None, rest_url
            )
        except (ReferenceDataError, RestRefused, RestUnavailable) as exc:
            console.print(f"[red]error[/red] {markup(exc)}", highlight=False)
            raise typer.Exit(1) from None
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--symbols") from None
        console.print(
            f"{result.exchange}: {result.written} instruments written to reference.instruments "
            f"({result.active} trading, {result.symbols - result.active} not trading)",
            highlight=False,
        )

    @ref_app.command("unknown")
    def reference_unknown(
        exchange: str = typer.Option(None, help="Only this exchange."),
        fail: bool = typer.Option(
            False, "--fail", help="Exit with status 1 when any symbol is unknown (for checks)."
        ),
    ) -> None:
        """Report symbols seen in market_data.trades but missing from reference.instruments."""
        from k2.sources.reference import unknown_symbols

        rows = unknown_symbols(load_settings(), exchange)
        if not rows:
            console.print("every traded symbol is in reference.instruments")
            return
        table = RichTable(
            "exchange", "symbol", "trades", title=f"{len(rows)} symbols unknown in reference.instruments"
        )
        for ex, sym, count in rows:
            table.add_row(cell(ex), cell(sym), f"{count:,}")
        console.print(table)
        if fail:
            raise typer.Exit(1)

    app.add_typer(ref_app, name="reference")
