"""The query client: trades, quotes, bars, VWAP/TWAP, spreads, as-of joins, time travel, hybrid Kafka reads.

See :mod:`k2.query` for the interface contract. Every query reads each Iceberg table through
``iceberg_scan(<exact metadata JSON>, snapshot_from_id => <id>)`` with the symbol and time filters inside
the scan (DuckDB prunes partitions and files by them) and binds every value as a parameter. SQL text is
assembled only from constant fragments in this module, never from user strings.

Example::

    import k2
    client = k2.connect()
    bars = client.bars("BTCUSDT", "1m", "2024-08-08T23:54:00Z", "2024-08-09T00:06:00Z")
    bars.to_pandas()
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import structlog
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from k2.config import Settings, load_settings
from k2.lake.catalog import TABLES, load_catalog, metadata_location
from k2.lake.summary import OFFSETS_KEY, RANGES_KEY, offsets_from_summary
from k2.model import RecordType, to_unscaled
from k2.query.cancel import guard
from k2.query.engine import ConnectionPool
from k2.query.errors import (
    InvalidRangeError,
    K2QueryError,
    LimitExceededError,
    QueryError,
    UnknownSymbolError,
)
from k2.query.params import check_range, parse_duration, parse_interval, parse_time
from k2.query.readonly import VIEWS, check_select, lock_down
from k2.query.recent import RecentUnavailableError, read_recent
from k2.query.result import QueryResult
from k2.telemetry.metrics import metric

log = structlog.get_logger("k2.query")

AsOf = int | datetime | str
_ID_COLUMN = {"trades": "trade_id", "quotes": "update_id"}
_SCHEMAS: dict[str, pa.Schema] = {}
_DUCK_TYPES = {
    "string": "VARCHAR",
    "long": "BIGINT",
    "decimal": "DECIMAL(18,8)",
    "timestamp": "TIMESTAMPTZ",
    "date": "DATE",
    "boolean": "BOOLEAN",
    "string_list": "VARCHAR[]",
    "string_map": "MAP(VARCHAR, VARCHAR)",
}


def connect(**settings: Any) -> Client:
    """A :class:`Client` from ``K2_*`` settings with keyword overrides.

    Example::

        client = k2.query.client.connect(data_dir="/var/lib/k2")
    """
    return Client(load_settings(**settings))


@dataclass(frozen=True)
class _Read:
    """What one table read resolves to: the metadata JSON and the snapshot id (None: no data then)."""

    short: str
    location: str | None
    snapshot_id: int | None
    summary: dict[str, str]
    pinned: bool


@dataclass
class _Source:
    """A CTE named ``src`` over one table (Iceberg, plus Kafka rows when hybrid) and its parameters."""

    sql: str
    params: list[Any]
    register: dict[str, pa.Table] = field(default_factory=dict)
    read: _Read | None = None
    recent_rows: int = 0
    recent_error: str | None = None


_counter = iter(range(1, 1 << 62))
_counter_lock = threading.Lock()


def _unique(prefix: str) -> str:
    with _counter_lock:
        return f"{prefix}_{next(_counter)}"


def _columns(record: RecordType, alias: str = "") -> str:
    return ", ".join(f"{alias}{f.name}" for f in record.fields)


def _empty_select(record: RecordType) -> str:
    cols = ", ".join(f"CAST(NULL AS {_DUCK_TYPES[f.kind]}) AS {f.name}" for f in record.fields)
    return f"SELECT {cols} WHERE false"


def _micros(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _to_decimal(value: Any, name: str) -> Decimal:
    try:
        unscaled = to_unscaled(str(value))
    except (ValueError, TypeError):
        raise InvalidRangeError(f"{name}: expected a positive decimal number, found {value!r}") from None
    if unscaled <= 0:
        raise InvalidRangeError(f"{name}: expected a positive decimal number, found {value!r}")
    return Decimal(unscaled).scaleb(-8)


class Client:
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
        if _parent is not None:
            self.settings = _parent.settings
            self._pool = _parent._pool
            self._catalog = _parent._catalog
            self._catalog_lock = _parent._catalog_lock
            self._symbols_cache = _parent._symbols_cache
            self._tables = _parent._tables
            self._sql_pool = _parent._sql_pool
            self._sql_views = _parent._sql_views
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
            self._owns_pool = True
        self._pin = _pin

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

    # -- snapshots ---------------------------------------------------------------------------------
    def _current_location(self, short: str) -> str | None:
        """The table's metadata location straight from a SQL catalog's table (None: ask the catalog API)."""
        engine = getattr(self._catalog, "engine", None)
        if engine is None:
            return None
        import sqlalchemy as sa

        namespace, name = TABLES[short].identifier
        try:
            with engine.connect() as conn:
                row = conn.execute(
                    sa.text(
                        "SELECT metadata_location FROM iceberg_tables "
                        "WHERE catalog_name = :c AND table_namespace = :ns AND table_name = :t"
                    ),
                    {"c": self.settings.catalog_name, "ns": namespace, "t": name},
                ).first()
        except sa.exc.SQLAlchemyError:
            return None
        return None if row is None else str(row[0])

    def _load(self, short: str) -> Table | None:
        with self._catalog_lock:
            if self._catalog is None:
                self._catalog = load_catalog(self.settings)
            # Parsing the metadata JSON costs milliseconds per query; a SQL catalog tells in ~0.2 ms whether
            # the table moved, so the parsed table is reused until it does.
            cached = self._tables.get(short)
            if cached is not None and self._current_location(short) == cached.metadata_location:
                return cached
            try:
                table = self._catalog.load_table(TABLES[short].identifier)
            except NoSuchTableError:
                return None
            self._tables[short] = table
            return table

    @staticmethod
    def _normalise_as_of(as_of: AsOf | None) -> int | datetime | None:
        if as_of is None:
            return None
        if isinstance(as_of, bool):
            raise QueryError(f"as_of: expected a snapshot id or a timezone-aware time, found {as_of!r}")
        if isinstance(as_of, int):
            return as_of
        if isinstance(as_of, str) and as_of.strip().lstrip("-").isdigit():
            return int(as_of.strip())
        try:
            return parse_time(as_of, "as_of")
        except InvalidRangeError as exc:
            raise InvalidRangeError(f"{exc} (or a snapshot id)") from None

    def _snapshot_owner_time(self, snapshot_id: int) -> datetime:
        for short in TABLES:
            table = self._load(short)
            if table is not None and table.snapshot_by_id(snapshot_id) is not None:
                snap = table.snapshot_by_id(snapshot_id)
                assert snap is not None
                return datetime.fromtimestamp(snap.timestamp_ms / 1000, tz=UTC)
        raise QueryError(f"as_of: expected a snapshot id of one of K2's tables, found unknown snapshot {snapshot_id}")

    def _resolve(self, short: str, as_of: AsOf | None = None) -> _Read:
        pin = self._normalise_as_of(as_of)
        if pin is None:
            pin = self._pin
        table = self._load(short)
        if table is None:
            return _Read(short, None, None, {}, pin is not None)
        if pin is None:
            snap = table.current_snapshot()
        elif isinstance(pin, int):
            snap = table.snapshot_by_id(pin)
            if snap is None:
                moment = self._snapshot_owner_time(pin)
                snap = table.snapshot_as_of_timestamp(int(moment.timestamp() * 1000))
        else:
            snap = table.snapshot_as_of_timestamp(int(pin.timestamp() * 1000))
        if snap is None:
            return _Read(short, metadata_location(table), None, {}, pin is not None)
        summary = dict(snap.summary.additional_properties) if snap.summary is not None else {}
        return _Read(short, metadata_location(table), int(snap.snapshot_id), summary, pin is not None)

    def snapshot_id(self, table: str = "trades", as_of: AsOf | None = None) -> int | None:
        """The snapshot id a query on ``table`` reads now (or at ``as_of``); None when the table is empty.

        Pass it as ``as_of=`` to later queries to see exactly the same data (pagination).

        Example::

            sid = client.snapshot_id("trades")
            page2 = client.trades("BTCUSDT", start, end, as_of=sid)
        """
        self._check_table(table)
        return self._resolve(table, as_of).snapshot_id

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

    @staticmethod
    def _check_table(table: str) -> None:
        if table not in TABLES:
            raise QueryError(f"expected a table among {sorted(TABLES)}, found {table!r}")

    def snapshots(self, table: str = "trades") -> QueryResult:
        """The table's commits, oldest first: id, parent, time, operation, rows added, total rows, Kafka offsets.

        Example::

            client.snapshots("trades").to_pylist()[-1]["kafka_offsets"]
        """
        self._check_table(table)
        loaded = self._load(table)
        rows: dict[str, list[Any]] = {k: [] for k in (
            "snapshot_id", "parent_id", "committed_at", "operation", "added_rows", "total_rows",
            "kafka_offsets", "kafka_ranges", "summary")}
        latest: int | None = None
        if loaded is not None:
            limit_ms = None
            if self._pin is not None:
                pinned = self._resolve(table)
                latest = pinned.snapshot_id
                snap = loaded.snapshot_by_id(latest) if latest is not None else None
                limit_ms = snap.timestamp_ms if snap is not None else -1
            else:
                current = loaded.current_snapshot()
                latest = int(current.snapshot_id) if current is not None else None
            for snap in sorted(loaded.metadata.snapshots, key=lambda s: (s.timestamp_ms, s.sequence_number or 0)):
                if limit_ms is not None and snap.timestamp_ms > limit_ms:
                    continue
                props = dict(snap.summary.additional_properties) if snap.summary is not None else {}
                rows["snapshot_id"].append(int(snap.snapshot_id))
                rows["parent_id"].append(snap.parent_snapshot_id)
                rows["committed_at"].append(datetime.fromtimestamp(snap.timestamp_ms / 1000, tz=UTC))
                rows["operation"].append(snap.summary.operation.value if snap.summary is not None else None)
                rows["added_rows"].append(int(props.get("added-records", 0)))
                rows["total_rows"].append(int(props.get("total-records", 0)))
                rows["kafka_offsets"].append(json.dumps(offsets_from_summary(props)) if OFFSETS_KEY in props else None)
                rows["kafka_ranges"].append(props.get(RANGES_KEY))
                rows["summary"].append(json.dumps(props, sort_keys=True))
        schema = pa.schema([
            ("snapshot_id", pa.int64()), ("parent_id", pa.int64()), ("committed_at", pa.timestamp("us", tz="UTC")),
            ("operation", pa.string()), ("added_rows", pa.int64()), ("total_rows", pa.int64()),
            ("kafka_offsets", pa.string()), ("kafka_ranges", pa.string()), ("summary", pa.string()),
        ])
        return QueryResult(pa.table(rows, schema=schema), {table: latest})

    # -- building blocks ---------------------------------------------------------------------------
    def _want_recent(self, include_recent: bool | None, end: datetime | None, read: _Read) -> bool:
        if read.pinned:
            if include_recent:
                raise QueryError("include_recent: expected False with as_of (a pinned query never reads Kafka), found True")
            return False
        if include_recent is not None:
            return bool(include_recent)
        if end is None:
            return True
        return end >= datetime.now(UTC) - timedelta(seconds=self.settings.query_recent_window_seconds)

    def _scan(self, read: _Read, where: str, params: list[Any], select: str) -> tuple[str, list[Any]]:
        """``SELECT <select> FROM iceberg_scan(...) WHERE <where>`` (constant fragments) and its parameters."""
        record = TABLES[read.short].record
        if read.snapshot_id is None or read.location is None:
            return f"SELECT {select} FROM ({_empty_select(record)}) WHERE {where}", list(params)  # noqa: S608 - constant fragments
        return (
            f"SELECT {select} FROM iceberg_scan(?, snapshot_from_id => ?) WHERE {where}",  # noqa: S608 - constant fragments
            [read.location, read.snapshot_id, *params],
        )

    def _filters(self, symbol: str, exchange: str | None, start: datetime | None, end: datetime | None, alias: str = "") -> tuple[str, list[Any]]:
        clauses = [f"{alias}symbol = ?"]
        params: list[Any] = [symbol]
        if exchange is not None:
            clauses.append(f"{alias}exchange = ?")
            params.append(exchange)
        if start is not None:
            clauses.append(f"{alias}exchange_ts >= ?")
            params.append(start)
        if end is not None:
            clauses.append(f"{alias}exchange_ts < ?")
            params.append(end)
        return " AND ".join(clauses), params

    def _source(
        self,
        short: str,
        symbol: str,
        exchange: str | None,
        start: datetime | None,
        end: datetime | None,
        as_of: AsOf | None,
        include_recent: bool | None,
    ) -> _Source:
        if not isinstance(symbol, str) or not symbol:
            raise UnknownSymbolError(f"expected a symbol such as BTCUSDT, found {symbol!r}")
        read = self._resolve(short, as_of)
        record = TABLES[short].record
        where, params = self._filters(symbol, exchange, start, end)
        base_sql, base_params = self._scan(read, where, params, _columns(record))
        source = _Source(base_sql, base_params, read=read)
        if not self._want_recent(include_recent, end, read):
            return source
        try:
            recent = read_recent(self.settings, short, offsets_from_summary(read.summary), symbol, exchange)
        except RecentUnavailableError as exc:
            if include_recent:
                raise
            log.warning("hybrid query: Kafka part skipped", error=str(exc))
            source.recent_error = str(exc)
            return source
        if recent.truncated:
            log.warning("hybrid query: Kafka rows truncated", max_rows=self.settings.query_recent_max_rows)
        if recent.table.num_rows == 0:
            return source
        name = _unique("k2_recent")
        id_column = _ID_COLUMN[short]
        r_where, r_params = self._filters(symbol, exchange, start, end, alias="r.")
        # Kafka rows already in the snapshot (producer retries landed once) are dropped by natural key.
        source.sql = (
            f"SELECT * FROM ({base_sql}) UNION ALL SELECT {_columns(record, 'r.')} FROM {name} r "  # noqa: S608 - constant fragments
            f"ANTI JOIN ({base_sql}) b ON r.exchange = b.exchange AND r.symbol = b.symbol AND r.{id_column} = b.{id_column} "
            f"WHERE {r_where}"
        )
        source.params = [*base_params, *base_params, *r_params]
        source.register[name] = recent.table
        source.recent_rows = recent.table.num_rows
        return source

    def _execute(
        self, sql: str, params: Sequence[Any], register: dict[str, pa.Table] | None = None, *, query: str
    ) -> pa.Table:
        # ops: k2_query_seconds / k2_query_errors_total, labelled `query` by the caller (rows, bars, vwap, ...:
        # a small fixed set, named explicitly rather than read from the call stack).
        kind = query
        started = time.perf_counter()
        with self._pool.connection() as con, guard(con):
            for name, data in (register or {}).items():
                con.register(name, data)
            try:
                return con.execute(sql, list(params)).to_arrow_table()
            except duckdb.InterruptException:
                raise  # guard() turns it into QueryCancelledError
            except duckdb.Error as exc:
                metric("k2_query_errors_total").labels(query=kind, error=type(exc).__name__).inc()
                raise QueryError(f"expected the query to run, found DuckDB error: {exc}") from exc
            finally:
                for name in register or {}:
                    con.unregister(name)
                metric("k2_query_seconds").labels(query=kind).observe(time.perf_counter() - started)

    def _check_symbol(self, source: _Source, symbol: str, exchange: str | None) -> None:
        """Raise UnknownSymbolError when the table (at the snapshot read) holds no row of the symbol."""
        read = source.read
        assert read is not None
        if source.recent_rows:
            return
        where, params = self._filters(symbol, exchange, None, None)
        sql, all_params = self._scan(read, where, params, "1")
        if self._execute(sql + " LIMIT 1", all_params, query="check_symbol").num_rows:
            return
        on = f" on exchange {exchange!r}" if exchange else ""
        raise UnknownSymbolError(
            f"expected a symbol stored in {TABLES[read.short].full_name}{on}"
            f"{' at snapshot ' + str(read.snapshot_id) if read.pinned else ''}, found {symbol!r} with no rows"
        )

    def _result(self, table: pa.Table, sources: Sequence[_Source]) -> QueryResult:
        snapshot_ids = {s.read.short: s.read.snapshot_id for s in sources if s.read is not None}
        errors = [s.recent_error for s in sources if s.recent_error]
        return QueryResult(table, snapshot_ids, sum(s.recent_rows for s in sources), errors[0] if errors else None)

    def _row_limit(self, limit: int | None) -> tuple[int, bool]:
        """(rows to fetch, whether exceeding means an error)."""
        maximum = self.settings.query_max_rows
        if limit is None:
            return maximum + 1, True
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise QueryError(f"limit: expected a positive integer, found {limit!r}")
        if limit > maximum:
            raise LimitExceededError(f"limit: expected at most {maximum:,} rows (K2_QUERY_MAX_ROWS), found {limit:,}")
        return limit, False

    def _range(self, start: datetime | str | None, end: datetime | str | None, required: bool = False) -> tuple[datetime | None, datetime | None]:
        s, e = parse_time(start, "start"), parse_time(end, "end")
        if required and (s is None or e is None):
            raise InvalidRangeError(f"expected both start and end, found start={start!r} end={end!r}")
        check_range(s, e, self.settings.query_max_range_days)
        return s, e

    @staticmethod
    def _conform(table: pa.Table, record: RecordType) -> pa.Table:
        schema = _SCHEMAS.get(record.name)
        if schema is None:
            schema = _SCHEMAS[record.name] = record.arrow_schema()
        try:
            return table.cast(schema)
        except (pa.ArrowInvalid, ValueError):
            return table

    # -- rows ----------------------------------------------------------------------------------------
    def _rows(
        self, short: str, symbol: str, start: datetime | str | None, end: datetime | str | None,
        exchange: str | None, limit: int | None, as_of: AsOf | None, include_recent: bool | None,
    ) -> QueryResult:
        s, e = self._range(start, end)
        fetch, strict = self._row_limit(limit)
        source = self._source(short, symbol, exchange, s, e, as_of, include_recent)
        id_column = _ID_COLUMN[short]
        sql = f"WITH src AS ({source.sql}) SELECT * FROM src ORDER BY exchange_ts, exchange, {id_column} LIMIT ?"  # noqa: S608 - constant fragments
        table = self._execute(sql, [*source.params, fetch], source.register, query="rows")
        if strict and table.num_rows > self.settings.query_max_rows:
            raise LimitExceededError(
                f"expected at most {self.settings.query_max_rows:,} rows (K2_QUERY_MAX_ROWS), found more; "
                "narrow the time range or pass limit="
            )
        if table.num_rows == 0:
            self._check_symbol(source, symbol, exchange)
        return self._result(self._conform(table, TABLES[short].record), [source])

    def trades(
        self, symbol: str, start: datetime | str | None = None, end: datetime | str | None = None, *,
        exchange: str | None = None, limit: int | None = None, as_of: AsOf | None = None, include_recent: bool | None = None,
    ) -> QueryResult:
        """Trades of ``symbol`` in ``[start, end)``, ordered by exchange time (canonical columns, exact decimals).

        Example::

            client.trades("BTCUSDT", "2024-08-08T23:54:00Z", "2024-08-08T23:55:00Z", limit=100)
        """
        return self._rows("trades", symbol, start, end, exchange, limit, as_of, include_recent)

    def quotes(
        self, symbol: str, start: datetime | str | None = None, end: datetime | str | None = None, *,
        exchange: str | None = None, limit: int | None = None, as_of: AsOf | None = None, include_recent: bool | None = None,
    ) -> QueryResult:
        """Top-of-book quotes of ``symbol`` in ``[start, end)``, ordered by exchange time.

        Example::

            client.quotes("BTCUSDT", "2024-08-08T23:54:00Z", "2024-08-08T23:55:00Z")
        """
        return self._rows("quotes", symbol, start, end, exchange, limit, as_of, include_recent)

    # -- bars ------------------------------------------------------------------------------------------
    _BAR_AGGREGATES = (
        "arg_min(price, (exchange_ts, trade_id)) AS open, max(price) AS high, min(price) AS low, "
        "arg_max(price, (exchange_ts, trade_id)) AS close, CAST(sum(quantity) AS DECIMAL(38,8)) AS volume, "
        "CAST(sum(coalesce(quote_quantity, CAST(price AS DECIMAL(38,8)) * quantity)) AS DECIMAL(38,8)) AS quote_volume, "
        "count(*) AS trade_count, "
        "CAST(coalesce(sum(quantity) FILTER (WHERE side = 'BUY'), 0) AS DECIMAL(38,8)) AS taker_buy_base_volume, "
        "CAST(coalesce(sum(coalesce(quote_quantity, CAST(price AS DECIMAL(38,8)) * quantity)) FILTER (WHERE side = 'BUY'), 0) AS DECIMAL(38,8)) AS taker_buy_quote_volume, "
        "CAST(sum(CAST(price AS DECIMAL(38,8)) * quantity) AS DOUBLE) / CAST(sum(quantity) AS DOUBLE) AS vwap, "
        "min(trade_id) AS first_trade_id, max(trade_id) AS last_trade_id"
    )
    _BAR_COLUMNS = (
        "exchange, symbol, open_time, open, high, low, close, volume, close_time, quote_volume, trade_count, "
        "taker_buy_base_volume, taker_buy_quote_volume, vwap, first_trade_id, last_trade_id"
    )

    def bars(
        self, symbol: str, interval: str | timedelta = "1m", start: datetime | str | None = None, end: datetime | str | None = None, *,
        exchange: str | None = None, kind: str = "time", size: Any = None, fill_empty: bool = False,
        as_of: AsOf | None = None, include_recent: bool | None = None,
    ) -> QueryResult:
        """OHLCV bars with Binance kline fields and rules (time bars), or volume / tick bars.

        Time bars: bucket ``[t, t+interval)`` on trade time, ``t`` a multiple of the interval since the
        epoch (UTC); open/close are the first/last trade by (time, trade id); ``close_time`` is
        ``open_time + interval - 1 ms`` as in Binance klines; taker-buy volumes sum trades whose buyer was
        not the maker (side BUY); ``quote_volume`` sums each trade's quote quantity (price x quantity when
        absent). ``fill_empty`` adds bars for intervals without trades (between ``start`` and ``end``, or
        the first and last bar) with open=high=low=close = the previous close and zero volumes.

        Volume bars (``kind="volume"``, ``size`` = base volume): boundaries at multiples of ``size`` of
        the cumulative volume since the range start; a trade belongs to the bar in which its cumulative
        volume starts (trades are never split). Tick bars (``kind="tick"``, ``size`` = trades per bar).
        For both, ``open_time``/``close_time`` are the first/last trade times; the last bar may be partial.

        Example::

            client.bars("BTCUSDT", "1m", "2021-01-03T00:00:00Z", "2021-01-03T00:01:00Z").to_pylist()[0]["trade_count"]
        """
        if kind not in ("time", "volume", "tick"):
            raise InvalidRangeError(f"kind: expected 'time', 'volume' or 'tick', found {kind!r}")
        s, e = self._range(start, end)
        params: list[Any]
        if kind == "time":
            if size is not None:
                raise InvalidRangeError(f"size: expected None for time bars (use interval), found {size!r}")
            step = parse_interval(interval)
            step_us = step // timedelta(microseconds=1)
            if fill_empty and s is not None and e is not None and (e - s) / step > self.settings.query_max_rows:
                raise LimitExceededError(
                    f"expected at most {self.settings.query_max_rows:,} bars (K2_QUERY_MAX_ROWS), found {(e - s) / step:,.0f} intervals"
                )
            source = self._source("trades", symbol, exchange, s, e, as_of, include_recent)
            sql = (
                f"WITH src AS ({source.sql}), agg AS (SELECT exchange, symbol, epoch_us(exchange_ts) // ? AS bucket, "  # noqa: S608 - constant fragments
                f"{self._BAR_AGGREGATES} FROM src GROUP BY exchange, symbol, bucket)"
            )
            params = [*source.params, step_us]
            if fill_empty:
                # Buckets whose open time lies in [start, end): floor(start / step) .. ceil(end / step) - 1.
                lo = None if s is None else _micros(s) // step_us
                hi = None if e is None else -(-_micros(e) // step_us)
                sql += (
                    ", span AS (SELECT exchange, symbol, coalesce(?::BIGINT, min(bucket)) AS lo, coalesce(?::BIGINT, max(bucket) + 1) AS hi "
                    "FROM agg GROUP BY exchange, symbol), "
                    "grid AS (SELECT exchange, symbol, unnest(range(lo, hi)) AS bucket FROM span), "
                    "joined AS (SELECT g.exchange, g.symbol, g.bucket, a.* EXCLUDE (exchange, symbol, bucket), "
                    "last_value(a.close IGNORE NULLS) OVER (PARTITION BY g.exchange, g.symbol ORDER BY g.bucket "
                    "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS prev_close "
                    "FROM grid g LEFT JOIN agg a ON a.exchange = g.exchange AND a.symbol = g.symbol AND a.bucket = g.bucket), "
                    "filled AS (SELECT exchange, symbol, bucket, coalesce(open, prev_close) AS open, coalesce(high, prev_close) AS high, "
                    "coalesce(low, prev_close) AS low, coalesce(close, prev_close) AS close, coalesce(volume, 0) AS volume, "
                    "coalesce(quote_volume, 0) AS quote_volume, coalesce(trade_count, 0) AS trade_count, "
                    "coalesce(taker_buy_base_volume, 0) AS taker_buy_base_volume, coalesce(taker_buy_quote_volume, 0) AS taker_buy_quote_volume, "
                    "vwap, first_trade_id, last_trade_id FROM joined) "
                )
                params += [lo, hi]
                body = "filled"
            else:
                body = "agg"
            sql += (
                f" SELECT * EXCLUDE (bucket) FROM (SELECT exchange, symbol, make_timestamp(bucket * ?)::TIMESTAMPTZ AS open_time, "  # noqa: S608 - constant fragments
                f"make_timestamp(bucket * ? + ? - 1000)::TIMESTAMPTZ AS close_time, * EXCLUDE (exchange, symbol) FROM {body}) "
                "ORDER BY exchange, symbol, open_time"
            )
            params += [step_us, step_us, step_us]
        else:
            if fill_empty:
                raise InvalidRangeError(f"fill_empty: expected False for {kind} bars (they have no empty intervals), found True")
            if size is None:
                raise InvalidRangeError(f"size: expected the {'base volume' if kind == 'volume' else 'trade count'} per bar, found None")
            if kind == "tick":
                if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
                    raise InvalidRangeError(f"size: expected a positive whole number of trades per bar, found {size!r}")
                key, key_params = "(rn - 1) // ?", [size]
            else:
                key, key_params = "(cum - qty_units) // ?", [to_unscaled(str(_to_decimal(size, "size")))]
            source = self._source("trades", symbol, exchange, s, e, as_of, include_recent)
            sql = (
                f"WITH src AS ({source.sql}), seq AS (SELECT *, CAST(CAST(quantity AS DECIMAL(38,8)) * 100000000 AS BIGINT) AS qty_units, "  # noqa: S608 - constant fragments
                "row_number() OVER w AS rn, sum(CAST(CAST(quantity AS DECIMAL(38,8)) * 100000000 AS BIGINT)) OVER w AS cum FROM src "
                "WINDOW w AS (PARTITION BY exchange, symbol ORDER BY exchange_ts, trade_id ROWS UNBOUNDED PRECEDING)), "
                f"keyed AS (SELECT *, {key} AS bucket FROM seq) "
                f"SELECT exchange, symbol, min(exchange_ts) AS open_time, {self._BAR_AGGREGATES.replace('AS vwap, ', 'AS vwap, max(exchange_ts) AS close_time, ')} "
                "FROM keyed GROUP BY exchange, symbol, bucket ORDER BY exchange, symbol, open_time, first_trade_id"
            )
            params = [*source.params, *key_params]
        table = self._execute(sql, params, source.register, query="bars")
        if table.num_rows == 0:
            self._check_symbol(source, symbol, exchange)
        if table.num_rows > self.settings.query_max_rows:
            raise LimitExceededError(f"expected at most {self.settings.query_max_rows:,} bars (K2_QUERY_MAX_ROWS), found {table.num_rows:,}")
        return self._result(table.select(self._BAR_COLUMNS.split(", ")), [source])

    # -- analytics --------------------------------------------------------------------------------------
    def vwap(
        self, symbol: str, start: datetime | str, end: datetime | str, *, exchange: str | None = None,
        as_of: AsOf | None = None, include_recent: bool | None = None,
    ) -> QueryResult:
        """Volume-weighted average price over ``[start, end)``: sum(price x qty) / sum(qty), per exchange.

        Columns: exchange, symbol, vwap (double), volume, notional (exact), trade_count, first_ts, last_ts.

        Example::

            client.vwap("BTCUSDT", "2024-08-08T23:54:00Z", "2024-08-09T00:06:00Z")["vwap"][0]
        """
        s, e = self._range(start, end, required=True)
        source = self._source("trades", symbol, exchange, s, e, as_of, include_recent)
        sql = (
            f"WITH src AS ({source.sql}) SELECT exchange, symbol, "  # noqa: S608 - constant fragments
            "CAST(sum(CAST(price AS DECIMAL(38,8)) * quantity) AS DOUBLE) / CAST(sum(quantity) AS DOUBLE) AS vwap, "
            "CAST(sum(quantity) AS DECIMAL(38,8)) AS volume, sum(CAST(price AS DECIMAL(38,8)) * quantity) AS notional, count(*) AS trade_count, "
            "min(exchange_ts) AS first_ts, max(exchange_ts) AS last_ts FROM src GROUP BY exchange, symbol ORDER BY exchange, symbol"
        )
        table = self._execute(sql, source.params, source.register, query="vwap")
        if table.num_rows == 0:
            self._check_symbol(source, symbol, exchange)
        return self._result(table, [source])

    def twap(
        self, symbol: str, start: datetime | str, end: datetime | str, *, exchange: str | None = None,
        as_of: AsOf | None = None, include_recent: bool | None = None,
    ) -> QueryResult:
        """Time-weighted average price over ``[start, min(end, now))``: each price weighted by how long it prevailed.

        The price prevailing at ``start`` is the last trade before it (by time, then trade id) within the
        ``query_max_range_days`` before ``start``; it holds from ``start`` until the first trade in the window.
        Each trade's price then holds until the next trade, the last one until the window end. Without an
        earlier trade, the average starts at the first trade in the window. One row per (exchange, symbol)
        with a trade in the window or a prevailing price. Columns: exchange, symbol, twap (double),
        trade_count (trades in the window), first_ts, last_ts (of those trades), seconds (time weighted),
        prevailing_price, prevailing_ts (the trade before ``start``; null when none).

        Example::

            client.twap("BTCUSDT", "2024-08-08T23:54:00Z", "2024-08-09T00:06:00Z")["twap"][0]
        """
        s, e = self._range(start, end, required=True)
        assert s is not None and e is not None
        stop = min(e, datetime.now(UTC))
        try:
            lookback = s - timedelta(days=self.settings.query_max_range_days)
        except OverflowError:
            lookback = datetime.min.replace(tzinfo=UTC)
        # One scan (and one Kafka read when hybrid) covers the lookback and the window; SQL splits them at start.
        source = self._source("trades", symbol, exchange, lookback, e, as_of, include_recent)
        sql = (
            f"WITH src AS ({source.sql}), "  # noqa: S608 - constant fragments
            "prev AS (SELECT exchange, symbol, arg_max(price, (exchange_ts, trade_id)) AS price, max(exchange_ts) AS ts "
            "FROM src WHERE exchange_ts < ?::TIMESTAMPTZ GROUP BY exchange, symbol), "
            "pts AS (SELECT exchange, symbol, price, ?::TIMESTAMPTZ AS exchange_ts, 0 AS is_trade, NULL::BIGINT AS trade_id FROM prev "
            "UNION ALL SELECT exchange, symbol, price, exchange_ts, 1, trade_id FROM src WHERE exchange_ts >= ?::TIMESTAMPTZ), "
            "w AS (SELECT *, greatest(epoch_us(coalesce(lead(exchange_ts) OVER (PARTITION BY exchange, symbol "
            "ORDER BY exchange_ts, is_trade, trade_id), ?::TIMESTAMPTZ)) - epoch_us(exchange_ts), 0) AS dur FROM pts), "
            "agg AS (SELECT exchange, symbol, CASE WHEN sum(dur) > 0 THEN CAST(sum(price * dur) AS DOUBLE) / sum(dur) "
            "ELSE CAST(arg_max(price, (exchange_ts, is_trade, trade_id)) AS DOUBLE) END AS twap, "
            "count(*) FILTER (WHERE is_trade = 1) AS trade_count, min(exchange_ts) FILTER (WHERE is_trade = 1) AS first_ts, "
            "max(exchange_ts) FILTER (WHERE is_trade = 1) AS last_ts, sum(dur) / 1e6 AS seconds FROM w GROUP BY exchange, symbol) "
            "SELECT agg.*, prev.price AS prevailing_price, prev.ts AS prevailing_ts FROM agg "
            "LEFT JOIN prev ON prev.exchange = agg.exchange AND prev.symbol = agg.symbol ORDER BY agg.exchange, agg.symbol"
        )
        table = self._execute(sql, [*source.params, s, s, s, stop], source.register, query="twap")
        if table.num_rows == 0:
            self._check_symbol(source, symbol, exchange)
        return self._result(table, [source])

    def spread_stats(
        self, symbol: str, start: datetime | str, end: datetime | str, *, exchange: str | None = None, as_of: AsOf | None = None,
    ) -> QueryResult:
        """Bid-ask spread statistics from quotes in ``[start, end)`` (quotes with both sides > 0).

        Columns: exchange, symbol, quote_count, mean_spread, median_spread, min_spread, max_spread,
        time_weighted_spread (each quote weighted by how long it stood, the last until ``end``),
        mean_spread_bps ((ask - bid) / mid x 10,000, averaged), crossed_count (ask < bid), locked_count
        (ask = bid), first_ts, last_ts.

        Example::

            client.spread_stats("BTCUSDT", "2024-08-08T23:54:00Z", "2024-08-09T00:06:00Z")
        """
        s, e = self._range(start, end, required=True)
        source = self._source("quotes", symbol, exchange, s, e, as_of, False)
        sql = (
            f"WITH src AS ({source.sql}), q AS (SELECT exchange, symbol, exchange_ts, ask_price - bid_price AS spread, "  # noqa: S608 - constant fragments
            "(CAST(ask_price AS DECIMAL(38,8)) + bid_price) * 0.5 AS mid, "
            "epoch_us(coalesce(lead(exchange_ts) OVER (PARTITION BY exchange, symbol ORDER BY exchange_ts, update_id), ?::TIMESTAMPTZ)) "
            "- epoch_us(exchange_ts) AS dur FROM src WHERE bid_price > 0 AND ask_price > 0) "
            "SELECT exchange, symbol, count(*) AS quote_count, CAST(avg(spread) AS DOUBLE) AS mean_spread, "
            "CAST(median(spread) AS DOUBLE) AS median_spread, min(spread) AS min_spread, max(spread) AS max_spread, "
            "CASE WHEN sum(dur) > 0 THEN CAST(sum(spread * dur) AS DOUBLE) / sum(dur) END AS time_weighted_spread, "
            "avg(CAST(spread AS DOUBLE) / CAST(mid AS DOUBLE)) * 10000 AS mean_spread_bps, "
            "count(*) FILTER (WHERE spread < 0) AS crossed_count, count(*) FILTER (WHERE spread = 0) AS locked_count, "
            "min(exchange_ts) AS first_ts, max(exchange_ts) AS last_ts FROM q GROUP BY exchange, symbol ORDER BY exchange, symbol"
        )
        table = self._execute(sql, [*source.params, e], source.register, query="spread_stats")
        if table.num_rows == 0:
            self._check_symbol(source, symbol, exchange)
        return self._result(table, [source])

    def asof_join(
        self, symbol: str, start: datetime | str, end: datetime | str, *, exchange: str | None = None,
        tolerance: str | timedelta = "1s", as_of: AsOf | None = None,
    ) -> QueryResult:
        """Each trade in ``[start, end)`` with the quote prevailing at its time (latest quote at or before it,
        at most ``tolerance`` old; otherwise null quote columns): the transaction-cost-analysis join.
        ``tolerance`` is positive and at most ``query_max_range_days`` days (else :class:`InvalidRangeError`).

        Columns: exchange, symbol, trade_id, exchange_ts, price, quantity, side, quote_ts, bid_price,
        bid_size, ask_price, ask_size, mid = (bid + ask) / 2 and spread = ask - bid (exact),
        effective_spread = 2 x |price - mid| (exact), effective_spread_bps (double), quote_age_us.
        Quotes with the same time keep the highest update id.

        Example::

            client.asof_join("BTCUSDT", "2024-08-08T23:54:00Z", "2024-08-08T23:55:00Z", tolerance="500ms")
        """
        s, e = self._range(start, end, required=True)
        assert s is not None
        # The quotes scanned span (end - start) + tolerance, so the tolerance is bounded like a range.
        tol = parse_duration(
            tolerance, "tolerance", maximum=timedelta(days=self.settings.query_max_range_days), maximum_hint=" (K2_QUERY_MAX_RANGE_DAYS)"
        )
        tol_us = tol // timedelta(microseconds=1)
        try:
            quotes_from = s - tol
        except OverflowError:  # a start near year 1: every earlier quote qualifies
            quotes_from = datetime.min.replace(tzinfo=UTC)
        trades = self._source("trades", symbol, exchange, s, e, as_of, False)
        quote_as_of: AsOf | None = as_of
        if as_of is not None and isinstance(self._normalise_as_of(as_of), int):
            quote_as_of = self._snapshot_owner_time(int(self._normalise_as_of(as_of)))  # type: ignore[arg-type]
        quotes = self._source("quotes", symbol, exchange, quotes_from, e, quote_as_of, False)
        fetch = self.settings.query_max_rows + 1
        sql = (
            f"WITH t AS ({trades.sql}), q AS (SELECT * FROM ({quotes.sql}) "  # noqa: S608 - constant fragments
            "QUALIFY row_number() OVER (PARTITION BY exchange, symbol, exchange_ts ORDER BY update_id DESC) = 1), "
            "j AS (SELECT t.exchange, t.symbol, t.trade_id, t.exchange_ts, t.price, t.quantity, t.side, "
            "q.exchange_ts AS q_ts, q.bid_price AS q_bid, q.bid_size AS q_bid_size, q.ask_price AS q_ask, q.ask_size AS q_ask_size, "
            "q.exchange_ts IS NOT NULL AND epoch_us(t.exchange_ts) - epoch_us(q.exchange_ts) <= ? AS ok "
            "FROM t ASOF LEFT JOIN q ON t.exchange = q.exchange AND t.symbol = q.symbol AND t.exchange_ts >= q.exchange_ts) "
            "SELECT exchange, symbol, trade_id, exchange_ts, price, quantity, side, "
            "CASE WHEN ok THEN q_ts END AS quote_ts, CASE WHEN ok THEN q_bid END AS bid_price, "
            "CASE WHEN ok THEN q_bid_size END AS bid_size, CASE WHEN ok THEN q_ask END AS ask_price, "
            "CASE WHEN ok THEN q_ask_size END AS ask_size, CASE WHEN ok THEN (CAST(q_bid AS DECIMAL(38,8)) + q_ask) * 0.5 END AS mid, "
            "CASE WHEN ok THEN q_ask - q_bid END AS spread, CASE WHEN ok THEN abs(2 * price - q_bid - q_ask) END AS effective_spread, "
            "CASE WHEN ok AND q_bid + q_ask > 0 THEN CAST(abs(2 * price - q_bid - q_ask) AS DOUBLE) / CAST((CAST(q_bid AS DECIMAL(38,8)) + q_ask) * 0.5 AS DOUBLE) * 10000 END "
            "AS effective_spread_bps, CASE WHEN ok THEN epoch_us(exchange_ts) - epoch_us(q_ts) END AS quote_age_us "
            "FROM j ORDER BY exchange_ts, exchange, trade_id LIMIT ?"
        )
        table = self._execute(sql, [*trades.params, *quotes.params, tol_us, fetch], query="asof_join")
        if table.num_rows > self.settings.query_max_rows:
            raise LimitExceededError(f"expected at most {self.settings.query_max_rows:,} trades (K2_QUERY_MAX_ROWS), found more")
        if table.num_rows == 0:
            self._check_symbol(trades, symbol, exchange)
        return self._result(table, [trades, quotes])

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
            t_sql, t_params = self._scan(reads[0], where, params, "exchange, symbol, exchange_ts")
            q_sql, q_params = self._scan(reads[1], where, params, "exchange, symbol, exchange_ts")
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

    def gaps(self, status: str | None = None, exchange: str | None = None, symbol: str | None = None) -> QueryResult:
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
                raise QueryError(f"expected a query over the views {', '.join(VIEWS)}, found an error: {exc}") from None
        return QueryResult(table, {short: read.snapshot_id for short, read in reads.items()})

    # -- order book (k2.query.book does the work; these only delegate) -------------------------------
    def book(self, symbol: str, at: datetime | str | None = None, depth: int = 10, *, exchange: str | None = None,
             update_id: int | None = None, as_of: AsOf | None = None) -> Any:
        """The book of ``symbol`` at ``at`` (top ``depth`` per side); see :func:`k2.query.book.book`."""
        from k2.query import book

        return book.book(self, symbol, at, depth, exchange=exchange, update_id=update_id, as_of=as_of)

    def book_series(self, symbol: str, start: datetime | str, end: datetime | str, every: str | timedelta = "1s",
                    depth: int = 10, **options: Any) -> pa.Table:
        """One row per step with the book and its metrics; see :func:`k2.query.book.book_series`."""
        from k2.query import book

        return book.book_series(self, symbol, start, end, every, depth, **options)

    def trades_with_book(self, symbol: str, start: datetime | str, end: datetime | str, **options: Any) -> pa.Table:
        """Trades with the best bid/ask just before each; see :func:`k2.query.book.trades_with_book`."""
        from k2.query import book

        return book.trades_with_book(self, symbol, start, end, **options)
