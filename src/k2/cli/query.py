"""Query commands: ``k2 trades``, ``k2 quotes``, ``k2 bars`` (with ``--plot``), ``k2 vwap``, ``k2 snapshots``, ``k2 sql``.

Every command takes ``--format table|csv|json|parquet`` and ``--output FILE`` (parquet needs a file);
the range commands take ``--start``/``--end`` (ISO-8601 with offset or Z), ``--as-of`` (snapshot id or
time) and ``--include-recent/--no-include-recent`` (default: on when the range ends within
``query_recent_window_seconds`` of now). Bad input exits with code 2 and a message saying what was
expected and what was found.

Example::

    k2 bars BTCUSDT --interval 1m --start 2024-08-08T23:54:00Z --end 2024-08-09T00:06:00Z --plot bars.png
    k2 sql "SELECT symbol, count(*) FROM trades GROUP BY symbol" --format csv
"""

from __future__ import annotations

import html
import io
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import structlog
import typer
from rich.console import Console
from rich.table import Table as RichTable

from k2.cli.safe import cell, markup, plain
from k2.config import Settings, load_settings

if TYPE_CHECKING:  # pyarrow loads where used: ~0.4 s off commands that never touch Arrow (help, config, keys)
    import pyarrow as pa

console = Console()
err_console = Console(stderr=True)
TABLE_ROWS_SHOWN = 1_000
TABLE_COLUMNS = {
    "trades": ("exchange_ts", "exchange", "symbol", "trade_id", "price", "quantity", "side"),
    "quotes": (
        "exchange_ts",
        "exchange",
        "symbol",
        "update_id",
        "bid_price",
        "bid_size",
        "ask_price",
        "ask_size",
    ),
}


class OutputFormat(StrEnum):
    """How results are written."""

    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


T = TypeVar("T")
EXIT_INTERRUPTED = 130  # the shell's code for a command ended by SIGINT
EXIT_TIMEOUT = 124  # as timeout(1)


def decimal_text(value: Decimal) -> str:
    """A decimal in fixed notation, every stored digit kept: ``0.00000000``, never ``0E-8``.

    >>> decimal_text(Decimal("0E-8")), decimal_text(Decimal("1E-8")), decimal_text(Decimal("61837.63000000"))
    ('0.00000000', '0.00000001', '61837.63000000')
    """
    return format(value, "f")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return decimal_text(value)
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return decimal_text(value)  # exact, never a float
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"expected a JSON-serialisable value, found {type(value).__name__}")


def _fixed_decimals(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A decimal column as text in fixed notation (Arrow writes 0 and values below 1e-6 as ``0E-8``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.cast(column, pa.string())
    scientific = pc.match_substring(text, "E")
    if not pc.any(scientific).as_py():
        return text
    values = column.to_pylist()
    fixed = [None if v is None else decimal_text(v) for v in values]
    return pa.chunked_array([pa.array(fixed, pa.string())])


def _flatten(table: pa.Table, terminal: bool = False) -> pa.Table:
    """Nested columns (conditions, vendor) as JSON text and decimals in fixed notation, for CSV.

    ``terminal``: text columns with control characters escaped (the CSV goes to a terminal, not a file).
    """
    import pyarrow as pa

    columns = []
    for column in table.columns:
        if pa.types.is_decimal(column.type):
            column = _fixed_decimals(column)
        elif terminal and pa.types.is_string(column.type):
            column = pa.chunked_array(
                [pa.array([None if v is None else plain(v) for v in column.to_pylist()], pa.string())]
            )
        if pa.types.is_nested(column.type):
            values = [
                None
                if v is None
                else json.dumps(dict(v) if isinstance(v, list) and v and isinstance(v[0], tuple) else v)
                for v in column.to_pylist()
            ]
            column = pa.chunked_array([pa.array(values, type=pa.string())])
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def render(table: pa.Table, fmt: OutputFormat, output: Path | None, title: str | None = None) -> None:
    """Write ``table`` in ``fmt`` to ``output`` (or stdout).

    Example::

        render(pa.table({"x": [1]}), OutputFormat.csv, None)
    """
    if fmt is OutputFormat.parquet:
        if output is None:
            raise typer.BadParameter(
                "expected --output FILE with --format parquet, found none (parquet is binary)"
            )
        import pyarrow.parquet as pq

        pq.write_table(table, output)
        err_console.print(f"wrote {table.num_rows:,} rows to {markup(output)}")
        return
    if fmt is OutputFormat.csv:
        import pyarrow.csv as pacsv

        buffer = io.BytesIO()
        pacsv.write_csv(_flatten(table, terminal=output is None and sys.stdout.isatty()), buffer)
        text = buffer.getvalue().decode()
    elif fmt is OutputFormat.json:
        text = json.dumps(table.to_pylist(), default=_json_default, indent=1) + "\n"
    else:
        rich = RichTable(
            *(markup(c) for c in table.column_names),
            title=None if title is None else cell(title),
            show_lines=False,
        )
        for row in table.slice(0, TABLE_ROWS_SHOWN).to_pylist():
            rich.add_row(*(cell(_cell(v)) for v in row.values()))
        if output is None:
            console.print(rich)
            if table.num_rows > TABLE_ROWS_SHOWN:
                console.print(
                    f"... {table.num_rows - TABLE_ROWS_SHOWN:,} more rows (use --format csv/json/parquet --output FILE)"
                )
            return
        capture = Console(file=io.StringIO(), width=max(120, 14 * len(table.column_names)))
        capture.print(rich)
        text = capture.file.getvalue()  # type: ignore[attr-defined]
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        err_console.print(f"wrote {table.num_rows:,} rows to {markup(output)}")


def plot_bars(bars: pa.Table, path: Path, title: str) -> None:
    """Draw a candlestick chart (with volume) of time bars: PNG (matplotlib) or a self-contained HTML/SVG.

    Example::

        plot_bars(client.bars("BTCUSDT", "1m").table, Path("bars.png"), "BTCUSDT 1m")
    """
    rows = [r for r in bars.to_pylist() if r["open"] is not None]
    if not rows:
        raise typer.BadParameter("expected at least one bar with trades to plot, found none")
    suffix = path.suffix.lower()
    if suffix == ".png":
        _plot_png(rows, path, title)
    elif suffix in (".html", ".htm", ".svg"):
        svg = _svg(rows, title)
        path.write_text(
            svg
            if suffix == ".svg"
            else f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>{svg}</body></html>\n"
        )
    else:
        raise typer.BadParameter(f"expected --plot FILE ending in .png, .html or .svg, found {path.name!r}")
    err_console.print(f"wrote candlestick chart of {len(rows)} bars to {markup(path)}")


def _plot_png(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    times = [float(mdates.date2num(r["open_time"])) for r in rows]  # type: ignore[no-untyped-call]
    width = (times[1] - times[0]) * 0.7 if len(times) > 1 else 1 / 1440 * 0.7
    fig, (ax, axv) = plt.subplots(2, 1, sharex=True, figsize=(12, 6), gridspec_kw={"height_ratios": [3, 1]})
    for t, r in zip(times, rows, strict=True):
        o, h, lo, c = (float(r[k]) for k in ("open", "high", "low", "close"))
        color = "#26a69a" if c >= o else "#ef5350"
        ax.vlines(t, lo, h, color=color, linewidth=1)
        ax.add_patch(Rectangle((t - width / 2, min(o, c)), width, max(abs(c - o), 1e-12), color=color))
        axv.bar(t, float(r["volume"]), width=width, color=color)
    ax.set_title(title)
    ax.set_ylabel("price")
    axv.set_ylabel("volume")
    ax.autoscale_view()
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    axv.xaxis.set_major_locator(locator)
    axv.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _svg(rows: list[dict[str, Any]], title: str) -> str:
    width, height, pad, vol_h = 1000, 520, 50, 100
    price_h = height - vol_h - 2 * pad
    lows = [float(r["low"]) for r in rows]
    highs = [float(r["high"]) for r in rows]
    lo, hi = min(lows), max(highs)
    span = (hi - lo) or 1.0
    vmax = max(float(r["volume"]) for r in rows) or 1.0
    step = (width - 2 * pad) / len(rows)

    def y(price: float) -> float:
        return pad + (hi - price) / span * price_h

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}' font-family='sans-serif' font-size='11'>",
        f"<text x='{pad}' y='20' font-size='14'>{html.escape(title)}</text>",
        f"<text x='5' y='{pad + 4}'>{hi:.8g}</text><text x='5' y='{pad + price_h}'>{lo:.8g}</text>",
    ]
    for i, r in enumerate(rows):
        o, h, low, c = (float(r[k]) for k in ("open", "high", "low", "close"))
        x = pad + i * step + step / 2
        color = "#26a69a" if c >= o else "#ef5350"
        tip = html.escape(
            f"{r['open_time'].isoformat()} O {r['open']} H {r['high']} L {r['low']} C {r['close']} V {r['volume']} N {r['trade_count']}"
        )
        body_top, body_h = y(max(o, c)), max(abs(y(o) - y(c)), 1.0)
        vh = float(r["volume"]) / vmax * vol_h
        parts.append(
            f"<g><title>{tip}</title><line x1='{x:.2f}' x2='{x:.2f}' y1='{y(h):.2f}' y2='{y(low):.2f}' stroke='{color}'/>"
            f"<rect x='{x - step * 0.35:.2f}' y='{body_top:.2f}' width='{step * 0.7:.2f}' height='{body_h:.2f}' fill='{color}'/>"
            f"<rect x='{x - step * 0.35:.2f}' y='{height - pad - vh:.2f}' width='{step * 0.7:.2f}' height='{vh:.2f}' fill='{color}' opacity='0.6'/></g>"
        )
    first, last = rows[0]["open_time"].isoformat(), rows[-1]["open_time"].isoformat()
    parts.append(f"<text x='{pad}' y='{height - 10}'>{html.escape(first)}</text>")
    parts.append(
        f"<text x='{width - pad}' y='{height - 10}' text-anchor='end'>{html.escape(last)}</text></svg>"
    )
    return "".join(parts)


def _exit_now(code: int) -> NoReturn:
    """Leave the process at once after a cancelled statement.

    DuckDB's worker threads may still be unwinding the interrupted statement; running its C++
    destructors at interpreter exit then aborts the process ("terminate called without an active
    exception", exit -6 instead of the documented code; seen in 4 of 6 Ctrl-C runs). Output is flushed
    first; nothing else is pending in a CLI query that was cancelled.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _Interrupted(Exception):
    """The user pressed Ctrl-C while a query ran (it was cancelled)."""


class _TimedOut(Exception):
    """The query ran longer than ``query_cli_timeout_seconds`` (it was cancelled)."""


def run_query(settings: Settings, work: Callable[[], T]) -> T:
    """Run ``work`` (client calls) in a worker thread that Ctrl-C and ``query_cli_timeout_seconds`` cancel.

    DuckDB holds the main thread inside C++ while a statement runs, so a SIGINT handler would only run after
    the statement ended (606 s for a cross join): the statement runs in a worker under a
    :class:`k2.query.cancel.CancelScope` while the main thread waits in short, interruptible joins; Ctrl-C (or
    the timeout) interrupts the DuckDB connection. A Kafka read in progress is bounded by
    ``query_recent_timeout_seconds``; the main thread waits for the worker at most 5 s more.

    Example::

        result = run_query(settings, lambda: client.sql("SELECT count(*) FROM trades"))
    """
    from k2.query.cancel import CancelScope
    from k2.query.errors import QueryCancelledError

    scope = CancelScope(timeout=settings.query_cli_timeout_seconds)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            with scope:
                structlog.get_logger("k2.cli").debug(
                    "cli query running", timeout_seconds=settings.query_cli_timeout_seconds
                )
                outcome["value"] = work()
        except BaseException as exc:  # handed to the main thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="k2-cli-query", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
    except KeyboardInterrupt:
        scope.cancel()
        with suppress(KeyboardInterrupt):
            worker.join(5.0)
        raise _Interrupted from None
    error = outcome.get("error")
    if isinstance(error, QueryCancelledError):
        raise _TimedOut from None
    if error is not None:
        raise error
    return outcome["value"]


def report_recent(result: Any) -> None:
    """Say on stderr when a result is partial (the data on stdout stays clean): symbols asked that the table
    does not hold, or a Kafka part of a hybrid read that stopped early.

    Example::

        report_recent(client.trades(["BTCUSDT", "ETHUSDT"]))
    """
    unknown = tuple(getattr(result, "unknown_symbols", ()) or ())
    if unknown:
        err_console.print(
            f"warning: partial result: no rows for {markup(', '.join(map(repr, unknown)))}: "
            "expected symbols stored in the table, found none of them (unknown symbols); the other symbols are answered.",
            soft_wrap=True,
        )
    if not getattr(result, "recent_truncated", False):
        return
    reason = result.recent_truncated_reason
    why = (
        "it read K2_QUERY_RECENT_MAX_ROWS rows"
        if reason == "max_rows"
        else "K2_QUERY_RECENT_TIMEOUT_SECONDS passed"
    )
    where = ", ".join(
        f"{t}[{p}]@{o}"
        for t, parts in sorted(result.recent_stopped_at.items())
        for p, o in sorted(parts.items())
    )
    err_console.print(
        f"warning: partial result: the Kafka read stopped early ({markup(reason)}: {why}) after "
        f"{result.recent_rows:,} rows; stopped at {markup(where) or 'the start'}. Rows and aggregates after that are missing.",
        soft_wrap=True,
    )


@contextmanager
def _client() -> Iterator[Any]:
    from k2.query.client import Client
    from k2.query.errors import K2QueryError
    from k2.query.recent import RecentUnavailableError
    from k2.telemetry.logging import configure_logging

    settings = load_settings()
    configure_logging(settings)  # logs to stderr: stdout carries the data
    client = Client(settings)
    # SIGINT must raise KeyboardInterrupt in the main thread even where a parent process ignored it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield client
    except K2QueryError as exc:
        err_console.print(f"error: {markup(exc)}", soft_wrap=True)
        raise typer.Exit(2) from None
    except RecentUnavailableError as exc:
        err_console.print(
            f"error: {markup(exc)} (use --no-include-recent to query Iceberg only)", soft_wrap=True
        )
        raise typer.Exit(1) from None
    except _Interrupted:
        err_console.print("error: expected the query to finish, found it cancelled by Ctrl-C")
        _exit_now(EXIT_INTERRUPTED)
    except _TimedOut:
        err_console.print(
            f"error: expected the query to finish within {settings.query_cli_timeout_seconds:g} s "
            "(K2_QUERY_CLI_TIMEOUT_SECONDS), found it still running; it was cancelled"
        )
        _exit_now(EXIT_TIMEOUT)
    finally:
        client.close()


FORMAT = typer.Option(
    OutputFormat.table, "--format", "-f", help="Output format: table, csv, json or parquet."
)
OUTPUT = typer.Option(
    None, "--output", "-o", help="Write to this file instead of stdout (required for parquet)."
)
START = typer.Option(
    None, "--start", help="Inclusive start, ISO-8601 with offset or Z (e.g. 2024-08-08T23:54:00Z)."
)
END = typer.Option(None, "--end", help="Exclusive end, ISO-8601 with offset or Z.")
AS_OF = typer.Option(None, "--as-of", help="Read the tables as of a snapshot id or an ISO-8601 time.")
RECENT = typer.Option(
    None,
    "--include-recent/--no-include-recent",
    help="Add messages still in Kafka (default: when the range ends near now).",
)
EXCHANGE = typer.Option(None, "--exchange", "-e", help="Only this exchange (e.g. binance).")
SYMBOL = typer.Argument(None, help="Exchange-native symbol, e.g. BTCUSDT, or several: BTCUSDT,ETHUSDT.")
SYMBOLS = typer.Option(
    None, "--symbols", "-s", help="Several symbols, comma-separated (instead of the argument)."
)


def symbols_of(symbol: str | None, symbols: str | None) -> str | list[str]:
    """The symbol argument or ``--symbols`` (exactly one of them) as one symbol or a list.

    >>> symbols_of("BTCUSDT", None), symbols_of(None, "BTCUSDT,ETHUSDT")
    ('BTCUSDT', ['BTCUSDT', 'ETHUSDT'])
    """
    if (symbol is None) == (symbols is None):
        raise typer.BadParameter(
            f"expected a SYMBOL argument or --symbols A,B, found {'both' if symbol else 'neither'}"
        )
    text = symbol if symbol is not None else symbols
    assert text is not None
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise typer.BadParameter(f"expected at least one symbol, found {text!r}")
    return names[0] if len(names) == 1 else names


def _label(names: str | list[str]) -> str:
    return names if isinstance(names, str) else ",".join(names)


def register(app: typer.Typer) -> None:
    """Add the query commands to ``app``.

    Example::

        app = typer.Typer()
        register(app)
    """

    def rows_command(kind: str) -> Callable[..., None]:
        def command(
            symbol: str | None = SYMBOL,
            start: str | None = START,
            end: str | None = END,
            exchange: str | None = EXCHANGE,
            limit: int | None = typer.Option(
                None, "--limit", "-n", help="At most this many rows (default: up to K2_QUERY_MAX_ROWS)."
            ),
            as_of: str | None = AS_OF,
            include_recent: bool | None = RECENT,
            fmt: OutputFormat = FORMAT,
            output: Path | None = OUTPUT,
            symbols: str | None = SYMBOLS,
        ) -> None:
            names = symbols_of(symbol, symbols)
            with _client() as client:
                method = client.trades if kind == "trades" else client.quotes
                result = run_query(
                    client.settings,
                    lambda: method(
                        names,
                        start,
                        end,
                        exchange=exchange,
                        limit=limit,
                        as_of=as_of,
                        include_recent=include_recent,
                    ),
                )
                report_recent(result)
                table = result.table
                if fmt is OutputFormat.table:  # the terminal gets the columns that fit; files get all of them
                    table = table.select(list(TABLE_COLUMNS[kind]))
                render(table, fmt, output, f"{kind} {_label(names)}")

        command.__doc__ = f"Print the {kind} of a symbol in [start, end), oldest first."
        return command

    app.command("trades")(rows_command("trades"))
    app.command("quotes")(rows_command("quotes"))

    @app.command("bars")
    def bars(
        symbol: str | None = SYMBOL,
        interval: str = typer.Option(
            "1m", "--interval", "-i", help="Time-bar interval 1s..1d (1s, 5s, 1m, 5m, 15m, 1h, 4h, 1d ...)."
        ),
        start: str | None = START,
        end: str | None = END,
        exchange: str | None = EXCHANGE,
        kind: str = typer.Option("time", "--kind", help="time, volume or tick."),
        size: str | None = typer.Option(
            None, "--size", help="Volume per bar (volume bars) or trades per bar (tick bars)."
        ),
        fill_empty: bool = typer.Option(
            False, "--fill-empty", help="Add bars for intervals without trades (forward-filled close)."
        ),
        plot: Path | None = typer.Option(
            None, "--plot", help="Also draw a candlestick chart: FILE.png or FILE.html."
        ),
        as_of: str | None = AS_OF,
        include_recent: bool | None = RECENT,
        fmt: OutputFormat = FORMAT,
        output: Path | None = OUTPUT,
        symbols: str | None = SYMBOLS,
    ) -> None:
        """Print OHLCV bars (Binance kline fields) of a symbol; optionally plot them."""
        names = symbols_of(symbol, symbols)
        with _client() as client:
            bar_size: Any = size
            if kind == "tick" and size is not None:
                try:
                    bar_size = int(size)
                except ValueError:
                    raise typer.BadParameter(
                        f"--size: expected a whole number of trades for tick bars, found {size!r}"
                    ) from None
            result = run_query(
                client.settings,
                lambda: client.bars(
                    names,
                    interval,
                    start,
                    end,
                    exchange=exchange,
                    kind=kind,
                    size=bar_size,
                    fill_empty=fill_empty,
                    as_of=as_of,
                    include_recent=include_recent,
                ),
            )
            report_recent(result)
            title = f"{_label(names)} {interval if kind == 'time' else kind + ' ' + str(size)} bars"
            render(result.table, fmt, output, title)
            if plot is not None:
                plot_bars(result.table, plot, title)

    @app.command("vwap")
    def vwap(
        symbol: str | None = SYMBOL,
        start: str = typer.Option(..., "--start", help="Inclusive start, ISO-8601 with offset or Z."),
        end: str = typer.Option(..., "--end", help="Exclusive end, ISO-8601 with offset or Z."),
        exchange: str | None = EXCHANGE,
        twap: bool = typer.Option(False, "--twap", help="Also compute the time-weighted average price."),
        as_of: str | None = AS_OF,
        include_recent: bool | None = RECENT,
        fmt: OutputFormat = FORMAT,
        output: Path | None = OUTPUT,
        symbols: str | None = SYMBOLS,
    ) -> None:
        """Print the volume-weighted average price (exact decimal) of symbols over [start, end)."""
        names = symbols_of(symbol, symbols)
        with _client() as client:
            answer = run_query(
                client.settings,
                lambda: client.vwap(
                    names, start, end, exchange=exchange, as_of=as_of, include_recent=include_recent
                ),
            )
            report_recent(answer)
            result = answer.table
            if twap:
                t_answer = run_query(
                    client.settings,
                    lambda: client.twap(
                        names, start, end, exchange=exchange, as_of=as_of, include_recent=include_recent
                    ),
                )
                report_recent(t_answer)
                t = t_answer.table
                # TWAP may also have rows for venues with only a prevailing price (no trade in the window): match by key.
                by_key = {
                    (r["exchange"], r["symbol"]): r["twap"]
                    for r in t.select(["exchange", "symbol", "twap"]).to_pylist()
                }
                keys = zip(result["exchange"].to_pylist(), result["symbol"].to_pylist(), strict=True)
                import pyarrow as pa

                result = result.append_column("twap", pa.array([by_key.get(k) for k in keys], pa.float64()))
            render(result, fmt, output, f"VWAP {_label(names)}")

    @app.command("klines")
    def klines(
        symbol: str | None = SYMBOL,
        interval: str | None = typer.Option(
            None, "--interval", "-i", help="As the venue names it (1m, 1h, 1d ...); default: all."
        ),
        start: str | None = START,
        end: str | None = END,
        exchange: str | None = EXCHANGE,
        limit: int | None = typer.Option(
            None, "--limit", "-n", help="At most this many klines (default: up to K2_QUERY_MAX_ROWS)."
        ),
        as_of: str | None = AS_OF,
        fmt: OutputFormat = FORMAT,
        output: Path | None = OUTPUT,
        symbols: str | None = SYMBOLS,
    ) -> None:
        """Print venue-published klines (imported with k2 import binance-klines) with open_time in [start, end)."""
        names = symbols_of(symbol, symbols)
        with _client() as client:
            result = run_query(
                client.settings,
                lambda: client.klines(
                    names, interval, start, end, exchange=exchange, limit=limit, as_of=as_of
                ),
            )
            report_recent(result)  # names the unknown symbols (klines never read Kafka)
            table = result.table
            if fmt is OutputFormat.table:
                table = table.drop_columns(
                    [
                        c
                        for c in ("instrument", "asset_class", "receipt_ts", "vendor")
                        if c in table.column_names
                    ]
                )
            render(table, fmt, output, f"klines {_label(names)}")

    @app.command("snapshots")
    def snapshots(
        table: str = typer.Argument("trades", help="trades, quotes, instruments or gaps."),
        as_of: str | None = AS_OF,
        fmt: OutputFormat = FORMAT,
        output: Path | None = OUTPUT,
    ) -> None:
        """List a table's Iceberg commits with rows added and the Kafka offsets each covers."""
        with _client() as client:
            source = client.as_of(as_of) if as_of is not None else client
            result = run_query(client.settings, lambda: source.snapshots(table)).table
            if fmt is OutputFormat.table:
                result = result.drop_columns(["summary", "kafka_ranges", "parent_id"])
            render(result, fmt, output, f"snapshots of {table}")

    @app.command("sql")
    def sql(
        query: str = typer.Argument(
            ..., help="One SELECT over the views trades, quotes, instruments, gaps, klines."
        ),
        param: list[str] = typer.Option(
            [], "--param", "-p", help="A positional ? parameter (repeatable), bound as text."
        ),
        as_of: str | None = AS_OF,
        fmt: OutputFormat = FORMAT,
        output: Path | None = OUTPUT,
    ) -> None:
        """Run a read-only SQL query (SELECT/WITH only) over the views of K2's tables."""
        with _client() as client:
            source = client.as_of(as_of) if as_of is not None else client
            render(
                run_query(client.settings, lambda: source.sql(query, list(param) if param else None)).table,
                fmt,
                output,
            )
