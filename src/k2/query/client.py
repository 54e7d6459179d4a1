"""The query client: trades, quotes, bars, VWAP/TWAP, spreads, as-of joins, time travel, hybrid Kafka reads.

See :mod:`k2.query` for the interface contract. Every query reads each Iceberg table through
``iceberg_scan(<exact metadata JSON>, snapshot_from_id => <id>)`` with the symbol and time filters inside
the scan (DuckDB prunes partitions and files by them) and binds every value as a parameter. SQL text is
assembled only from constant fragments, never from user strings.

The client is built from rooms, each a class the next one extends:

* :mod:`k2.query.resolve` (``Resolver``): tables, snapshots, ``as_of`` pins, ``snapshots()``, ``snapshot_id()``;
* :mod:`k2.query.sqlbuild` (``SqlBuilder``): scans, filters, hybrid sources, execution, result assembly;
* :mod:`k2.query.analytics` (``Analytics``): bars, VWAP, TWAP, spread statistics, the as-of join;
* this module (``Client``): lifecycle and pools, ``as_of()``, rows (trades, quotes, klines), reference
  (symbols, gaps) and read-only ``sql()``. Every name that used to live here is still importable from here.

Example::

    import k2
    client = k2.connect()
    bars = client.bars("BTCUSDT", "1m", "2024-08-08T23:54:00Z", "2024-08-09T00:06:00Z")
    bars.to_pandas()
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import structlog
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from k2.config import Settings, load_settings
from k2.lake.catalog import TABLES
from k2.query.analytics import Analytics
from k2.query.book_index import StoredRowIndex
from k2.query.cancel import guard
from k2.query.engine import ConnectionPool
from k2.query.errors import (
    K2QueryError,
    LimitExceededError,
    QueryError,
)
from k2.query.files import FilePlanner
from k2.query.readonly import VIEWS, check_select, lock_down
from k2.query.resolve import AsOf, ClientState, Resolver, _Read
from k2.query.result import QueryResult
from k2.query.sqlbuild import (
    _ID_COLUMN,
    MAX_SYMBOLS,
    SqlBuilder,
    Symbols,
    _columns,
    _empty_select,
    _Source,
    symbol_list,
)
from k2.query.trace import TRACE_TABLES, Trace, parse_trace_id
from k2.query.trace import trace as trace_row

# Re-exported: the client's rooms and the names other modules and tests import from here.
__all__ = [
    "MAX_SYMBOLS",
    "Analytics",
    "AsOf",
    "Client",
    "ClientState",
    "QueryResult",
    "Resolver",
    "SqlBuilder",
    "Symbols",
    "_Read",
    "_Source",
    "connect",
    "symbol_list",
]

log = structlog.get_logger("k2.query")


def connect(**settings: Any) -> Client:
    """A :class:`Client` from ``K2_*`` settings with keyword overrides.

    Example::

        client = k2.query.client.connect(data_dir="/var/lib/k2")
    """
    return Client(load_settings(**settings))


class Client(Analytics):
    """Thread-safe query client over K2's tables (see :mod:`k2.query` for every method's contract)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        _parent: Client | None = None,
        _pin: int | datetime | None = None,
    ) -> None:
        self.settings: Settings
        self._pool: ConnectionPool
        self._catalog: Catalog | None
        self._catalog_lock: threading.Lock
        self._symbols_cache: dict[tuple[Any, ...], pa.Table]
        self._tables: dict[str, Table]
        self._sql_pool: ConnectionPool
        self._sql_views: dict[int, dict[str, tuple[str | None, int | None]]]
        self._stored_rows: StoredRowIndex
        if _parent is not None:
            self.settings = _parent.settings
            self._pool = _parent._pool
            self._catalog = _parent._catalog
            self._catalog_lock = _parent._catalog_lock
            self._symbols_cache = _parent._symbols_cache
            self._tables = _parent._tables
            self._sql_pool = _parent._sql_pool
            self._sql_views = _parent._sql_views
            self._files = _parent._files
            self._stored_rows = _parent._stored_rows
            self._owns_pool = False
        else:
            self.settings = settings or load_settings()
            self._pool = ConnectionPool(self.settings)
            self._catalog = None
            self._catalog_lock = threading.Lock()
            self._symbols_cache = {}
            self._tables = {}
            warehouse = self.settings.warehouse_location
            self._sql_pool = ConnectionPool(self.settings, setup=lambda con: lock_down(con, warehouse))
            # id(connection) -> view name -> (metadata location, snapshot id) the view reads.
            self._sql_views = {}
            self._files = FilePlanner()
            self._stored_rows = StoredRowIndex()  # book(): which stored book rows to start from
            self._owns_pool = True
        self._pin = _pin
        # How book_series calls started: from stored book rows, or from every delta since the restart.
        self._book_series_starts = {"stored": 0, "deltas": 0}
        # Why Kafka could not be read, already logged once by this client (later queries only set recent_error).
        self._recent_warned: set[str] = _parent._recent_warned if _parent is not None else set()

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection pool (pinned clients share their parent's pool and close nothing).

        Example::

            client = k2.connect()
            client.close()
        """
        if self._owns_pool:
            self._pool.close()
            self._sql_pool.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pinned_to(self) -> int | datetime | None:
        """The snapshot id or moment this client is pinned to (None: the latest state).

        Example::

            client.as_of(1234567890).pinned_to  # 1234567890
        """
        return self._pin

    def as_of(self, snapshot_id_or_datetime: AsOf) -> Client:
        """A client pinned to a snapshot id or a moment: every query sees the tables as they were then.

        Example::

            then = client.as_of("2024-08-09T00:00:00Z")
            then.trades("BTCUSDT").num_rows
        """
        pin = self._normalise_as_of(snapshot_id_or_datetime)
        if isinstance(pin, int):
            self._snapshot_owner_time(pin)  # fail now for an unknown id
        return Client(_parent=self, _pin=pin)

    # -- rows ----------------------------------------------------------------------------------------
    def _rows(
        self,
        short: str,
        symbol: Symbols,
        start: datetime | str | None,
        end: datetime | str | None,
        exchange: str | None,
        limit: int | None,
        as_of: AsOf | None,
        include_recent: bool | None,
    ) -> QueryResult:
        s, e = self._range(start, end)
        fetch, strict = self._row_limit(limit)
        source = self._source(short, symbol, exchange, s, e, as_of, include_recent)
        id_column = _ID_COLUMN[short]
        sql = f"WITH src AS ({source.sql}) SELECT * FROM src ORDER BY exchange_ts, exchange, symbol, {id_column} LIMIT ?"  # noqa: S608 - constant fragments
        table = self._execute(sql, [*source.params, fetch], source.register, query="rows")
        if strict and table.num_rows > self.settings.query_max_rows:
            raise LimitExceededError(
                f"expected at most {self.settings.query_max_rows:,} rows (K2_QUERY_MAX_ROWS), found more; "
                "narrow the time range or pass limit="
            )
        unknown = self._unknown_symbols(source, symbol, exchange, table)
        return self._result(self._conform(table, TABLES[short].record), [source], unknown)

    def trades(
        self,
        symbol: Symbols,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        *,
        exchange: str | None = None,
        limit: int | None = None,
        as_of: AsOf | None = None,
        include_recent: bool | None = None,
    ) -> QueryResult:
        """Trades of ``symbol`` in ``[start, end)``, ordered by exchange time (canonical columns, exact decimals).

        Example::

            client.trades("BTCUSDT", "2024-08-08T23:54:00Z", "2024-08-08T23:55:00Z", limit=100)
        """
        return self._rows("trades", symbol, start, end, exchange, limit, as_of, include_recent)

    def quotes(
        self,
        symbol: Symbols,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        *,
        exchange: str | None = None,
        limit: int | None = None,
        as_of: AsOf | None = None,
        include_recent: bool | None = None,
    ) -> QueryResult:
        """Top-of-book quotes of ``symbol`` in ``[start, end)``, ordered by exchange time.

        Example::

            client.quotes("BTCUSDT", "2024-08-08T23:54:00Z", "2024-08-08T23:55:00Z")
        """
        return self._rows("quotes", symbol, start, end, exchange, limit, as_of, include_recent)

    def recent_part(
        self,
        table: str,
        symbol: Symbols,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        *,
        exchange: str | None = None,
        include_recent: bool | None = None,
    ) -> QueryResult:
        """The rows a hybrid ``trades``/``quotes`` read adds from Kafka, alone: the Kafka half of the answer.

        Rows in ``[start, end)`` still in Kafka and not in the latest snapshot (``snapshot_ids[table]``),
        ordered by (exchange_ts, exchange, symbol, id); ``recent_rows``, ``recent_error`` and
        ``recent_truncated*`` as :meth:`trades` sets them. With the rows of that snapshot (read pinned to it)
        they make exactly the hybrid answer of that moment, so a caller can read the Iceberg half in chunks
        (``k2.api.bigpage`` streams large hybrid pages so). Empty when the read would not include Kafka.
        Hazards: every row is held at once (at most ``query_recent_max_rows``, like any hybrid read); no
        unknown-symbol check (a symbol with no row anywhere answers empty, not :class:`UnknownSymbolError`).

        Example::

            kafka = client.recent_part("trades", "BTCUSDT", include_recent=True)
            lake = client.as_of(kafka.snapshot_ids["trades"]).trades("BTCUSDT")
        """
        if table not in _ID_COLUMN:
            raise QueryError(f"expected a table among {sorted(_ID_COLUMN)}, found {table!r}")
        s, e = self._range(start, end)
        source = self._source(table, symbol, exchange, s, e, None, include_recent)
        record = TABLES[table].record
        data = record.arrow_schema().empty_table()
        if source.recent_sql is not None:
            order = f"exchange_ts, exchange, symbol, {_ID_COLUMN[table]}"
            sql = f"WITH k AS ({source.recent_sql}) SELECT * FROM k ORDER BY {order}"  # noqa: S608 - constant fragments
            data = self._execute(sql, source.recent_params, source.register, query="rows")
        return self._result(self._conform(data, record), [source])

    def klines(
        self,
        symbol: Symbols,
        interval: str | None = None,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        *,
        exchange: str | None = None,
        limit: int | None = None,
        as_of: AsOf | None = None,
    ) -> QueryResult:
        """Venue-published OHLCV bars (``k2 import binance-klines``) with ``open_time`` in ``[start, end)``.

        ``interval`` as the venue names it (``1m``, ``1h``, ``1d`` ...; None: every interval stored). Columns:
        the canonical columns of ``k2.model.KLINE``, ordered by (exchange, symbol, interval, open_time).
        Klines never come from Kafka (they are imported directly).

        Example::

            client.klines("BTCUSDT", "1m", "2024-08-08T00:00:00Z", "2024-08-09T00:00:00Z")
        """
        s, e = self._range(start, end)
        fetch, strict = self._row_limit(limit)
        read = self._resolve("klines", as_of)
        where, params = self._filters(symbol, exchange, s, e, time_column="open_time")
        if interval is not None:
            where += ' AND "interval" = ?'
            params.append(interval)
        prune = self._prune(symbol, exchange, s, e, "open_time")
        scan, scan_params = self._scan(read, where, params, _columns(TABLES["klines"].record), prune)
        sql = (
            f'WITH src AS ({scan}) SELECT * FROM src ORDER BY exchange, symbol, "interval", open_time LIMIT ?'  # noqa: S608 - constant fragments
        )
        table = self._execute(sql, [*scan_params, fetch], query="klines")
        if strict and table.num_rows > self.settings.query_max_rows:
            raise LimitExceededError(
                f"expected at most {self.settings.query_max_rows:,} klines (K2_QUERY_MAX_ROWS), found more; narrow the range or pass limit="
            )
        source = _Source(scan, scan_params, read=read)
        unknown = self._unknown_symbols(source, symbol, exchange, table)
        return self._result(self._conform(table, TABLES["klines"].record), [source], unknown)

    # -- reference ---------------------------------------------------------------------------------------
    def symbols(self, exchange: str | None = None) -> QueryResult:
        """Stored symbols: exchange, symbol, trades, quotes (row counts), first_ts, last_ts (cached per snapshot).

        Example::

            client.symbols("binance")["symbol"].to_pylist()
        """
        reads = [self._resolve("trades"), self._resolve("quotes")]
        key = (reads[0].snapshot_id, reads[1].snapshot_id, exchange)
        cached = self._symbols_cache.get(key)
        if cached is None:
            where, params = ("exchange = ?", [exchange]) if exchange is not None else ("true", [])
            prune = self._prune(None, exchange, None, None)
            t_sql, t_params = self._scan(reads[0], where, params, "exchange, symbol, exchange_ts", prune)
            q_sql, q_params = self._scan(reads[1], where, params, "exchange, symbol, exchange_ts", prune)
            sql = (
                f"WITH t AS (SELECT exchange, symbol, count(*) AS n, min(exchange_ts) AS lo, max(exchange_ts) AS hi FROM ({t_sql}) GROUP BY ALL), "  # noqa: S608 - constant fragments
                f"q AS (SELECT exchange, symbol, count(*) AS n, min(exchange_ts) AS lo, max(exchange_ts) AS hi FROM ({q_sql}) GROUP BY ALL) "
                "SELECT coalesce(t.exchange, q.exchange) AS exchange, coalesce(t.symbol, q.symbol) AS symbol, "
                "coalesce(t.n, 0) AS trades, coalesce(q.n, 0) AS quotes, least(t.lo, q.lo) AS first_ts, greatest(t.hi, q.hi) AS last_ts "
                "FROM t FULL OUTER JOIN q ON t.exchange = q.exchange AND t.symbol = q.symbol ORDER BY exchange, symbol"
            )
            cached = self._execute(sql, [*t_params, *q_params], query="symbols")
            if len(self._symbols_cache) > 64:
                self._symbols_cache.clear()
            self._symbols_cache[key] = cached
        return QueryResult(cached, {"trades": reads[0].snapshot_id, "quotes": reads[1].snapshot_id})

    def gaps(
        self, status: str | None = None, exchange: str | None = None, symbol: str | None = None
    ) -> QueryResult:
        """The gap ledger: one row per gap (its latest state), filtered by status/exchange/symbol.

        Example::

            client.gaps(status="open")
        """
        if status is not None and status not in ("open", "backfilled", "lost"):
            raise QueryError(f"status: expected open, backfilled or lost, found {status!r}")
        read = self._resolve("gaps")
        clauses, params = ["true"], []
        for column, value in (("status", status), ("exchange", exchange), ("symbol", symbol)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        inner, inner_params = self._scan(read, "true", [], "*")
        sql = (
            f"SELECT * FROM (SELECT * FROM ({inner}) QUALIFY row_number() OVER (PARTITION BY gap_key "  # noqa: S608 - constant fragments
            "ORDER BY detected_ts DESC, (status <> 'open') DESC) = 1) "
            f"WHERE {' AND '.join(clauses)} ORDER BY exchange, symbol, first_missing_id"
        )
        table = self._execute(sql, [*inner_params, *params], query="gaps")
        return QueryResult(self._conform(table, TABLES["gaps"].record), {"gaps": read.snapshot_id})

    def trace(self, table: str, ident: str) -> Trace:
        """Where one landed row came from (see :mod:`k2.query.trace`): ``ident`` is ``EXCHANGE:SYMBOL:ID``.

        The row (lineage columns included), its Kafka message (topic, partition, offset, message id) or
        file and line, the snapshot that committed it and the adjacent gaps of the ledger. Reads the
        current table state (not the client's pin).

        Example::

            client.trace("trades", "binance:BTCUSDT:3735683259").source
            # {'kind': 'kafka', 'topic': 'market.crypto.trades.binance', 'partition': 0, 'offset': 0, ...}
        """
        if table not in TRACE_TABLES:  # checked before any table is loaded
            parse_trace_id(table, ident)
        return trace_row(self._load(table), self._load("gaps"), table, ident)

    # -- read-only SQL ---------------------------------------------------------------------------------
    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> QueryResult:
        """Run one read-only SELECT over the views trades, quotes, instruments and gaps (as of the pin, if any).

        Only a single SELECT / WITH statement is accepted (DuckDB's parser decides); it runs on a pooled
        connection (at most ``query_pool_size``, separate from the query pool) where file and network access
        are disabled except for the warehouse and the configuration is locked; each connection keeps its views
        and re-points one only when the snapshot to read changed (a new commit, or another ``as_of``). At most
        ``query_max_rows`` rows. ``?`` or ``$name`` parameters are bound, never interpolated.

        Example::

            client.sql("SELECT symbol, count(*) AS n FROM trades WHERE exchange = ? GROUP BY symbol", ["binance"])
        """
        check_select(query)
        reads = {short: self._resolve(short) for short in VIEWS}
        with self._sql_pool.connection() as con, guard(con):
            # The views of a pooled connection are kept between calls and re-created only when the table
            # to read changed (new metadata location or another snapshot, e.g. a pinned client).
            views = self._sql_views.setdefault(id(con), {})
            for short, read in reads.items():
                target = (read.location, read.snapshot_id)
                if views.get(short) == target:
                    continue
                record = TABLES[short].record
                if read.snapshot_id is None or read.location is None:
                    con.execute(f"CREATE OR REPLACE VIEW {short} AS {_empty_select(record)}")
                else:
                    # A view body cannot take bound parameters; both values come from the catalog, not the user.
                    location = read.location.replace("'", "''")
                    con.execute(
                        f"CREATE OR REPLACE VIEW {short} AS SELECT * FROM iceberg_scan('{location}', snapshot_from_id => {int(read.snapshot_id)})"  # noqa: S608
                    )
                views[short] = target
            try:
                reader = con.execute(query, params if params is not None else []).to_arrow_reader(65_536)
                batches = []
                rows = 0
                for batch in reader:
                    rows += batch.num_rows
                    if rows > self.settings.query_max_rows:
                        raise LimitExceededError(
                            f"expected at most {self.settings.query_max_rows:,} rows (K2_QUERY_MAX_ROWS), found more; add LIMIT or filters"
                        )
                    batches.append(batch)
                table = pa.Table.from_batches(batches, schema=reader.schema)
            except K2QueryError:
                raise
            except duckdb.InterruptException:
                raise  # guard() turns it into QueryCancelledError
            except duckdb.Error as exc:
                raise QueryError(
                    f"expected a query over the views {', '.join(VIEWS)}, found an error: {exc}"
                ) from None
        return QueryResult(table, {short: read.snapshot_id for short, read in reads.items()})

    # -- order book (k2.query.book does the work; these only delegate) -------------------------------
    def book(
        self,
        symbol: str,
        at: datetime | str | None = None,
        depth: int = 10,
        *,
        exchange: str | None = None,
        update_id: int | None = None,
        as_of: AsOf | None = None,
        include_recent: bool | None = None,
    ) -> Any:
        """The book of ``symbol`` at ``at`` (top ``depth`` per side); see :func:`k2.query.book.book`."""
        from k2.query import book

        return book.book(
            self,
            symbol,
            at,
            depth,
            exchange=exchange,
            update_id=update_id,
            as_of=as_of,
            include_recent=include_recent,
        )

    def book_series(
        self,
        symbol: str,
        start: datetime | str,
        end: datetime | str,
        every: str | timedelta = "1s",
        depth: int = 10,
        **options: Any,
    ) -> pa.Table:
        """One row per step with the book and its metrics; see :func:`k2.query.book.book_series`."""
        from k2.query import book

        return book.book_series(self, symbol, start, end, every, depth, **options)

    def trades_with_book(
        self, symbol: str, start: datetime | str, end: datetime | str, **options: Any
    ) -> pa.Table:
        """Trades with the best bid/ask just before each; see :func:`k2.query.book.trades_with_book`."""
        from k2.query import book

        return book.trades_with_book(self, symbol, start, end, **options)
