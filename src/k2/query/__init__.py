"""K2's query layer: DuckDB over the Iceberg tables, time travel and the hybrid Kafka + Iceberg query.

Interface contract (the REST API builds on exactly these names and keywords)
==========================================================================

``k2.connect(**settings) -> Client`` (same as ``k2.query.client.connect``). ``Client(settings)`` also works.
A client is thread-safe: it holds a bounded pool of ``query_pool_size`` DuckDB connections.

Client methods (every time argument accepts a timezone-aware ``datetime`` or an ISO-8601 string with an
offset or ``Z``; naive values raise :class:`InvalidRangeError`; ``start`` is inclusive, ``end`` exclusive)::

    # symbol: one symbol ("BTCUSDT"), a list (["BTCUSDT", "ETHUSDT"]) or a comma string ("BTCUSDT,ETHUSDT"),
    # at most 100 (trades, quotes, bars, vwap, twap, klines); rows are ordered with the symbol as a tie-breaker.
    trades(symbol, start=None, end=None, *, exchange=None, limit=None, as_of=None, include_recent=None) -> QueryResult
    quotes(symbol, start=None, end=None, *, exchange=None, limit=None, as_of=None, include_recent=None) -> QueryResult
    klines(symbol, interval=None, start=None, end=None, *, exchange=None, limit=None, as_of=None) -> QueryResult
        # venue-published bars (k2 import binance-klines), open_time in [start, end); never from Kafka
    bars(symbol, interval="1m", start=None, end=None, *, exchange=None, kind="time", size=None,
         fill_empty=False, as_of=None, include_recent=None) -> QueryResult
        # kind="time": interval "1s".."1d" (units s, m, h, d; e.g. "1s", "5m", "1h", "1d").
        # kind="volume": size = base volume per bar (Decimal/str/float); kind="tick": size = trades per bar (int).
    vwap(symbol, start, end, *, exchange=None, as_of=None, include_recent=None) -> QueryResult   # one row per (exchange, symbol)
    twap(symbol, start, end, *, exchange=None, as_of=None, include_recent=None) -> QueryResult   # one row per (exchange, symbol)
    spread_stats(symbol, start, end, *, exchange=None, as_of=None) -> QueryResult
    asof_join(symbol, start, end, *, exchange=None, tolerance="1s", as_of=None) -> QueryResult   # tolerance: "500ms", "1s", "2m" or timedelta,
        # positive and at most query_max_range_days days (else InvalidRangeError, never OverflowError);
        # keyword-only quotes_as_of, after, upto read one chunk on pinned snapshots (k2.api.bigasof streams so)
    asof_snapshots(as_of=None) -> dict              # {"trades": id, "quotes": id} that asof_join reads now / at as_of
    recent_part(table, symbol, start=None, end=None, *, exchange=None, include_recent=None) -> QueryResult
        # the rows a hybrid trades/quotes read adds from Kafka, alone, and the snapshot (snapshot_ids) they
        # complete; k2.api.bigpage streams large hybrid pages with it
    snapshots(table="trades") -> QueryResult        # snapshot_id, parent_id, committed_at, operation, added_rows, total_rows,
                                                    # kafka_offsets, kafka_ranges, summary (JSON text columns)
    as_of(snapshot_id_or_datetime) -> Client        # a client pinned to that moment for every table
    snapshot_id(table="trades", as_of=None) -> int | None   # resolve the snapshot a query would read now
    gaps(status=None, exchange=None, symbol=None) -> QueryResult
    symbols(exchange=None) -> QueryResult           # exchange, symbol, trades, quotes, first_ts, last_ts
    sql(query, params=None) -> QueryResult          # read-only SELECT/WITH over views trades, quotes, instruments, gaps, klines
    close()                                         # also a context manager

``as_of`` may be an ``int`` snapshot id (or a string of digits) of any of K2's tables: the table that
owns it is read at exactly that snapshot, every other table at its latest snapshot committed at or
before that snapshot's commit time (so ``asof_join(as_of=<trades snapshot>)`` reads quotes as they were
then); or a timezone-aware datetime / ISO string: per table, the latest snapshot committed at or before
it (no snapshot then -> the table reads as empty). An unknown id raises :class:`QueryError`.
A pinned query never reads Kafka (``include_recent`` is forced off; passing ``include_recent=True``
with ``as_of`` raises :class:`QueryError`).

``include_recent=None`` means on when ``end`` is None or within ``query_recent_window_seconds`` of now
(only for trades/quotes/bars/vwap/twap). Recent rows come from Kafka after the offsets stored in the
latest snapshot, bounded by ``query_recent_timeout_seconds`` and ``query_recent_max_rows``, checked with
the landing's rules (``k2.model.validate``: a row the landing would dead-letter is never returned) and
deduplicated by natural key (exchange, symbol, trade_id / update_id) against the table and within the batch
(``k2.model.dedup``). A Kafka log reset since the last landing (broker restarted) is detected by the last
landed message's offset and CRC and read from its start. A bounded read that stopped early sets
``result.recent_truncated`` (``recent_truncated_reason`` "max_rows" or "time_bound", ``recent_stopped_at``
{topic: {partition: next offset not read}}), for rows and for aggregates (bars, vwap, twap) alike. When no
broker accepts a connection the Kafka part is skipped at once (``recent_error``; logged once per client).

Results: :class:`QueryResult`, a thin wrapper around a ``pyarrow.Table``:

* ``result.table`` is the ``pyarrow.Table``; attribute access, ``len()``, ``result["col"]`` and
  ``pa.table(result)`` (Arrow C stream) delegate to it, so ``.to_pylist()``, ``.num_rows``,
  ``.sort_by(...)``, ``.column_names`` work as on a table.
* ``result.to_pandas()``, ``result.to_polars()``.
* ``result.snapshot_ids``: ``{"trades": 123456789, ...}`` the Iceberg snapshot id each table was read at
  (``None`` for a table that has no snapshot yet); ``result.recent_rows``: rows read from Kafka for the
  query (after in-batch de-duplication, before dropping those already in the snapshot);
  ``result.recent_error``: why the Kafka part was skipped when ``include_recent`` was defaulted on;
  ``result.recent_truncated`` / ``recent_truncated_reason`` / ``recent_stopped_at``: the Kafka part is partial.
* Types: timestamps are ``timestamp[us, tz=UTC]``; trade/quote prices and sizes are exact
  ``decimal128(18, 8)`` (``Decimal`` in Python); bar open/high/low/close are exact decimals,
  volume/quote_volume/taker_buy_* are ``decimal128(38, 8)``; vwap (of ``vwap()`` and of bars) is an exact
  ``decimal128(18, 8)`` (rounded half up to 8 decimals in integer arithmetic); twap and spread statistics are
  ``double``.

Cancelling: queries run inside ``with k2.query.cancel.CancelScope(timeout=None):`` (in the calling thread) are
interrupted when the scope is cancelled from any thread (``scope.cancel()``) or its ``timeout`` passes: DuckDB's
``interrupt()`` stops the running statement, its pooled connection goes back to the pool ready for the next
query, and the method raises ``QueryCancelledError`` (``RuntimeError``; the REST API answers 504).

How the API should pin pagination: read ``result.snapshot_ids[table]`` from the first page (or call
``client.snapshot_id(table)`` before querying) and pass that id as ``as_of=`` for every later page:
pinned results never change and never include Kafka rows.

Result columns: trades/quotes: the canonical columns of ``k2.model.TRADE`` / ``QUOTE``, ordered by
(exchange_ts, exchange, trade_id / update_id). bars: exchange, symbol, open_time, open, high, low,
close, volume, close_time, quote_volume, trade_count, taker_buy_base_volume, taker_buy_quote_volume,
vwap, first_trade_id, last_trade_id. vwap: exchange, symbol, vwap, volume, notional, trade_count,
first_ts, last_ts. twap: exchange, symbol, twap, trade_count, first_ts, last_ts, seconds, prevailing_price,
prevailing_ts (the TWAP weights each price by how long it prevailed in [start, min(end, now)), starting with
the last trade before start, looked up within query_max_range_days, when there is one).
spread_stats / asof_join: see their docstrings in :mod:`k2.query.client`.

Errors (:mod:`k2.query.errors`), all subclasses of ``K2QueryError(ValueError)``, messages say expected
vs found -> map to HTTP 4xx: ``UnknownSymbolError`` (404), ``InvalidRangeError`` (400, inverted or
naive or unparsable time, bad interval/kind/size), ``LimitExceededError`` (400/413: more than
``query_max_rows`` rows, or a range longer than ``query_max_range_days``), ``QueryError`` (400: bad SQL,
write attempts, unknown snapshot, ...). Not a user error: ``k2.query.recent.RecentUnavailableError``
(``RuntimeError``, -> 503) when ``include_recent=True`` was passed explicitly and Kafka or the schema
registry cannot be read (with ``include_recent=None`` the Kafka part is skipped with a warning and
``result.recent_error`` set instead).

Example:
    >>> from k2.query.errors import K2QueryError, UnknownSymbolError
    >>> issubclass(UnknownSymbolError, K2QueryError) and issubclass(K2QueryError, ValueError)
    True
"""

from __future__ import annotations

from k2.query.errors import (
    InvalidRangeError,
    K2QueryError,
    LimitExceededError,
    QueryError,
    UnknownSymbolError,
)

__all__ = ["InvalidRangeError", "K2QueryError", "LimitExceededError", "QueryError", "UnknownSymbolError"]
