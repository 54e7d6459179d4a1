"""Large ``/v1/asof`` answers, streamed in keyset chunks of trades (issue 10: bounded memory).

``/v1/asof`` (each trade with the quote in force at its time) used to build its whole answer before
sending it: sixteen slow clients of a 121 MB CSV took the API from 0.6 to 5.7 GB. An answer of more than
:data:`k2.api.bigpage.STREAM_CHUNK_ROWS` trades is now sent as it is read, with the same rows as the
one-shot join:

1. **Pin** both tables once: :meth:`k2.query.Client.asof_snapshots` names the trades and quotes snapshots
   the one-shot join would read now (the latest of each, or the ones ``as_of`` implies). Every chunk reads
   exactly those two snapshots, whatever lands meanwhile.
2. **Count** the trades of the window in the pinned trades snapshot (``X-Row-Count``, ``row_count`` are
   exact and in the headers), then walk their sort keys (:func:`k2.api.bigpage.count_page`) for the chunk
   bounds (the keys of trades ``STREAM_CHUNK_ROWS``, ``2 * STREAM_CHUNK_ROWS``, ... and of the last).
3. **Join** chunk by chunk, each when the client has read the previous one: ``asof_join(after=, upto=)``
   on the pinned snapshots. The quotes of a chunk are read from ``tolerance`` before its first trade, so
   a quote in force for that trade that lies before the chunk (even in the previous chunk) is found; an
   older one could only have been matched with null quote columns, so every row equals the one-shot row.

Unchanged (read whole, as before): answers of at most ``STREAM_CHUNK_ROWS`` trades, a window with no
trade (the one-shot query says 404 ``unknown_symbol``), more than ``query_max_rows`` trades (the one-shot
query refuses them with the same error), an empty trades or quotes table, and a symbol holding a comma or
edge spaces (the join reads ``"A,B"`` as two symbols, ordered otherwise than the keyset).

Hazards:

* A streamed answer of N trades costs a count, about ``N / KEY_CHUNK_ROWS`` key queries and
  ``N / STREAM_CHUNK_ROWS`` joins (each scanning its chunk's trades and quotes) instead of one join.
* Chunk joins run in Starlette's thread pool as the body is sent, outside ``api_request_timeout_seconds``.
* Exactness relies on the pinned snapshots and the unique sort key (the lake de-duplicates trades on
  (exchange, symbol, trade_id)). A chunk with another row count than counted aborts the body (a broken
  transfer, never a short answer that looks complete) and is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa

from k2.api import bigpage
from k2.api.formats import LazyRows, Rows
from k2.api.paging import PageQuery
from k2.api.respond import as_table, snapshot_ids_of

log = logging.getLogger("k2.api")


def asof_rows(
    client: Any,
    max_rows: int,
    symbol: str,
    start: datetime | None,
    end: datetime | None,
    *,
    exchange: str | None,
    tolerance: str,
    as_of: Any,
) -> tuple[Rows, dict[str, int | None]]:
    """The ``/v1/asof`` answer and the snapshot ids it read: streamed when it holds more than one chunk."""
    snaps = client.asof_snapshots(as_of)
    trades_snap, quotes_snap = snaps.get("trades"), snaps.get("quotes")
    # One plain symbol only: the join reads "A,B" as two symbols and orders them by (time, exchange, id),
    # not by the keyset's (time, exchange, symbol, id); such requests keep the single join.
    single = "," not in symbol and symbol == symbol.strip()
    if (
        single
        and trades_snap is not None
        and quotes_snap is not None
        and start is not None
        and end is not None
    ):
        query = PageQuery("asof", "trades", (symbol,), start, end, exchange, max_rows, max_rows, "")
        pinned = client.as_of(int(trades_snap))
        count = _count_trades(pinned, query)
        if bigpage.STREAM_CHUNK_ROWS < count <= max_rows:
            sized = PageQuery("asof", "trades", (symbol,), start, end, exchange, count, count, "")
            counted, bounds = bigpage.count_page(pinned, sized, None)
            join = _Join(client, symbol, start, end, exchange, tolerance, int(trades_snap), int(quotes_snap))
            chunks = _chunks(join, counted, bounds)
            first = next(chunks)  # before the headers: its schema, and any error, come out now
            rows = LazyRows(first.schema, counted, _prepend(first, chunks))
            return rows, {"trades": int(trades_snap), "quotes": int(quotes_snap)}
    result = client.asof_join(symbol, start, end, exchange=exchange, tolerance=tolerance, as_of=as_of)
    return as_table(result), snapshot_ids_of(result)


def _count_trades(pinned: Any, query: PageQuery) -> int:
    sql, params = _count_sql(query)
    table = getattr(pinned.sql(sql, params), "table", None)
    assert table is not None
    return int(table.column(0)[0].as_py())


def _count_sql(query: PageQuery) -> tuple[str, list[Any]]:
    """``count(*)`` of the window's trades (the WHERE clause of the keyset walk, values bound)."""
    where = ["symbol = ?", "exchange_ts >= ?", "exchange_ts < ?"]
    params: list[Any] = [query.symbols[0], query.start, query.end]
    if query.exchange is not None:
        where.append("exchange = ?")
        params.append(query.exchange)
    return f"SELECT count(*) AS n FROM trades WHERE {' AND '.join(where)}", params  # noqa: S608 - constant


class _Join:
    """One chunk of the as-of join on the pinned snapshots."""

    def __init__(
        self,
        client: Any,
        symbol: str,
        start: datetime,
        end: datetime,
        exchange: str | None,
        tolerance: str,
        trades_snap: int,
        quotes_snap: int,
    ) -> None:
        self.client, self.symbol, self.start, self.end = client, symbol, start, end
        self.exchange, self.tolerance = exchange, tolerance
        self.trades_snap, self.quotes_snap = trades_snap, quotes_snap

    def __call__(self, after: list[Any] | None, upto: list[Any]) -> pa.Table:
        result = self.client.asof_join(
            self.symbol,
            self.start,
            self.end,
            exchange=self.exchange,
            tolerance=self.tolerance,
            as_of=self.trades_snap,
            quotes_as_of=self.quotes_snap,
            after=after,
            upto=upto,
        )
        return as_table(result)


def _chunks(join: _Join, rows: int, bounds: list[list[Any]]) -> Iterator[pa.Table]:
    """Exactly ``rows`` joined trades, one join per chunk (previous bound < key <= its bound)."""
    sent = 0
    last: list[Any] | None = None
    for bound in bounds:
        want = min(bigpage.STREAM_CHUNK_ROWS, rows - sent)
        chunk = join(last, bound)
        if chunk.num_rows != want:
            log.error(
                "streamed asof: expected %d trades after %s, found %d; body aborted",
                want,
                last,
                chunk.num_rows,
            )
            raise RuntimeError(
                f"streamed asof: expected {want} trades in the pinned snapshot, found {chunk.num_rows}"
            )
        sent += want
        last = bound
        yield chunk
    if sent != rows:
        raise RuntimeError(f"streamed asof: expected {rows} trades, found {sent}")


def _prepend(first: pa.Table, rest: Iterator[pa.Table]) -> Iterator[pa.Table]:
    try:
        yield first
        del first
        yield from rest
    finally:
        close = getattr(rest, "close", None)
        if close is not None:
            close()
