"""``k2 book SYMBOL``: the order book at a moment (top N levels per side) as a table, CSV or JSON.

The levels come from :func:`k2.query.book.book` (the same query the Python client and ``/v1/book`` use);
the output says which update id and exchange time the book reflects. Bad input exits with code 2 and a
message saying what was expected and what was found.

Example::

    k2 book BTCUSDT --at 2024-08-09T00:00:00Z --depth 5
    k2 book BTCUSDT --update-id 50093421612 --format json
    k2 book-snapshots          # write the due market_data.book_snapshots rows (exactly once)
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum

import typer
from rich.console import Console
from rich.table import Table as RichTable

from k2.cli.query import RECENT, _client, _json_default, report_recent
from k2.cli.safe import markup

console = Console()


class BookFormat(StrEnum):
    """How the book is written."""

    table = "table"
    csv = "csv"
    json = "json"


def register(app: typer.Typer) -> None:
    """Add ``k2 book`` and ``k2 book-snapshots`` to ``app``."""

    @app.command("book-snapshots")
    def book_snapshots_command() -> None:
        """Write the due market_data.book_snapshots rows (every K2_BOOK_SNAPSHOT_INTERVAL_SECONDS, top K2_BOOK_SNAPSHOT_DEPTH)."""
        from k2.config import load_settings
        from k2.lake.book_snapshots import write_book_snapshots

        written = write_book_snapshots(load_settings())
        if not written:
            console.print("book_snapshots: nothing new to write")
        for (exchange, symbol), count in sorted(written.items()):
            console.print(f"book_snapshots: {markup(exchange)}/{markup(symbol)}: {count} row(s) written")

    @app.command("book")
    def book_command(
        symbol: str = typer.Argument(..., help="Exchange-native symbol, e.g. BTCUSDT."),
        at: str | None = typer.Option(None, "--at", help="Moment (ISO-8601 with offset or Z); default: now."),
        depth: int = typer.Option(10, "--depth", help="Levels per side (1..1000)."),
        exchange: str | None = typer.Option(
            None, "--exchange", help="Venue code (default: the one of the latest snapshot)."
        ),
        update_id: int | None = typer.Option(None, "--update-id", help="Only events up to this update id."),
        as_of: str | None = typer.Option(None, "--as-of", help="Table snapshot id or time to read at."),
        fmt: BookFormat = typer.Option(BookFormat.table, "--format", help="table, csv or json."),
        include_recent: bool | None = RECENT,
    ) -> None:
        """The order book of SYMBOL at --at: best levels per side, with the update id and exchange time it reflects."""
        with _client() as client:
            book = client.book(
                symbol,
                at,
                depth,
                exchange=exchange,
                update_id=update_id,
                as_of=as_of,
                include_recent=include_recent,
            )
        report_recent(book)  # a Kafka read cut short is said on stderr
        rows = book.levels.to_pylist()
        reflects = {
            "symbol": book.symbol,
            "exchange": book.exchange,
            "last_update_id": book.last_update_id,
            "exchange_ts": book.exchange_ts.isoformat() if book.exchange_ts else None,
        }
        if fmt is BookFormat.json:
            doc = {
                **reflects,
                "bids": [r for r in rows if r["side"] == "BID"],
                "asks": [r for r in rows if r["side"] == "ASK"],
            }
            sys.stdout.write(json.dumps(doc, default=_json_default, indent=1) + "\n")
        elif fmt is BookFormat.csv:
            sys.stdout.write("side,level,price,size,last_update_id,exchange_ts\n")
            for r in rows:
                sys.stdout.write(
                    f"{r['side']},{r['level']},{r['price']},{r['size']},{book.last_update_id},{reflects['exchange_ts']}\n"
                )
        else:
            title = markup(
                f"{book.symbol} on {book.exchange}: update id {book.last_update_id} at {reflects['exchange_ts']}"
            )
            table = RichTable("bid size", "bid", "level", "ask", "ask size", title=title)
            bids, asks = book.side("BID"), book.side("ASK")
            for level in range(max(len(bids), len(asks))):
                bid = bids[level] if level < len(bids) else ("", "")
                ask = asks[level] if level < len(asks) else ("", "")
                table.add_row(str(bid[1]), str(bid[0]), str(level + 1), str(ask[0]), str(ask[1]))
            console.print(table)
