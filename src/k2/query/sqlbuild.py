"""SQL building: the scans, filters and hybrid (Iceberg + Kafka) sources every query method composes.

The second room of the query client. SQL text is assembled only from constant fragments in this module
and :mod:`k2.query.analytics`, never from user strings; every value is a bound parameter. ``_source``
returns a CTE body named ``src`` over one table (plus the Kafka rows of the hybrid read, anti-joined on the
natural key against the snapshot) and records what the Kafka part did (rows, error, truncation).

Example::

    source = client._source("trades", ["BTCUSDT"], None, start, end, None, False)
    client._execute(f"WITH src AS ({source.sql}) SELECT count(*) FROM src", source.params, query="rows")
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import structlog

from k2.lake.catalog import TABLES
from k2.lake.summary import offsets_from_summary
from k2.model import RecordType, to_unscaled
from k2.query.cancel import guard
from k2.query.errors import (
    InvalidRangeError,
    LimitExceededError,
    QueryError,
    UnknownSymbolError,
)
from k2.query.files import Prune
from k2.query.params import check_range, parse_time
from k2.query.recent import RecentUnavailableError, last_landed, read_recent
from k2.query.resolve import AsOf, Resolver, _Read
from k2.query.result import QueryResult
from k2.telemetry.metrics import metric

log = structlog.get_logger("k2.query")

_EVERYTHING = Prune(None, None, None, None, "")
_ID_COLUMN = {"trades": "trade_id", "quotes": "update_id"}
_SCHEMAS: dict[str, pa.Schema] = {}
# VWAP exact to 8 decimals (half up): integer units of 1e-16 (price x quantity) over units of 1e-8 (quantity),
# in HUGEINT, so no float ever rounds it. decimal(18,8): a VWAP lies between the lowest and highest price.


def units(column: str) -> str:
    """SQL for the exact unscaled BIGINT (value x 10^8) of a decimal(18,8) column (a constant name).

    Whole and fractional parts are scaled separately so every step stays a decimal(18,8) or BIGINT:
    ``CAST(CAST(x AS DECIMAL(38,8)) * 100000000 AS BIGINT)`` gives the same value but DuckDB's 128-bit
    decimal-to-BIGINT cast made it ~10x the cost of reading the rows (a symbol-day VWAP: 245 ms vs 24 ms).
    """
    return f"(CAST(trunc({column}) AS BIGINT) * 100000000 + CAST(({column} - trunc({column})) * 100000000 AS BIGINT))"


_VWAP_EXACT = (
    f"CAST(CAST((2 * sum(CAST({units('price')} AS HUGEINT) * {units('quantity')}) "
    f"+ sum({units('quantity')})) // (2 * CAST(sum({units('quantity')}) AS HUGEINT)) "
    "AS DECIMAL(38,0)) * 0.00000001 AS DECIMAL(18,8))"
)
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


@dataclass
class _Source:
    """A CTE named ``src`` over one table (Iceberg, plus Kafka rows when hybrid) and its parameters."""

    sql: str
    params: list[Any]
    register: dict[str, pa.Table] = field(default_factory=dict)
    read: _Read | None = None
    recent_rows: int = 0
    recent_error: str | None = None
    recent_truncated: bool = False
    recent_truncated_reason: str | None = None
    recent_stopped_at: dict[str, dict[str, int]] = field(default_factory=dict)
    # The Kafka half of the union alone (rows not in the snapshot, in the window) and its parameters.
    recent_sql: str | None = None
    recent_params: list[Any] = field(default_factory=list)


_counter = iter(range(1, 1 << 62))
_counter_lock = threading.Lock()


def _unique(prefix: str) -> str:
    with _counter_lock:
        return f"{prefix}_{next(_counter)}"


def _columns(record: RecordType, alias: str = "") -> str:
    # Quoted: klines has a column named "interval", a DuckDB keyword.
    return ", ".join(f'{alias}"{f.name}"' for f in record.fields)


def _nulls(record: RecordType, names: tuple[str, ...]) -> str:
    """``CAST(NULL AS type) AS "name"`` for model columns a snapshot's schema lacks (names from the model)."""
    return ", ".join(f'CAST(NULL AS {_DUCK_TYPES[record.field(n).kind]}) AS "{n}"' for n in names)


def _empty_select(record: RecordType) -> str:
    cols = ", ".join(f'CAST(NULL AS {_DUCK_TYPES[f.kind]}) AS "{f.name}"' for f in record.fields)
    return f"SELECT {cols} WHERE false"


Symbols = str | Sequence[str]
MAX_SYMBOLS = 100


def symbol_list(symbol: Symbols) -> list[str]:
    """One symbol or several (a list, or one string with commas) as a list without repeats, order kept.

    >>> symbol_list("BTCUSDT"), symbol_list(["BTCUSDT", "ETHUSDT", "BTCUSDT"]), symbol_list("BTCUSDT, ETHUSDT")
    (['BTCUSDT'], ['BTCUSDT', 'ETHUSDT'], ['BTCUSDT', 'ETHUSDT'])
    """
    items = (
        [part.strip() for part in symbol.split(",")]
        if isinstance(symbol, str)
        else list(symbol)
        if isinstance(symbol, Sequence)
        else [symbol]
    )
    if not items or any(not isinstance(item, str) or not item for item in items):
        raise UnknownSymbolError(f"expected a symbol such as BTCUSDT (or a list of them), found {symbol!r}")
    names = list(dict.fromkeys(items))
    if len(names) > MAX_SYMBOLS:
        raise QueryError(f"symbols: expected at most {MAX_SYMBOLS} symbols per query, found {len(names)}")
    return names


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


class SqlBuilder(Resolver):
    """Scans, filters, hybrid sources, execution and result assembly shared by every query method."""

    # -- building blocks ---------------------------------------------------------------------------
    def _want_recent(self, include_recent: bool | None, end: datetime | None, read: _Read) -> bool:
        if read.pinned:
            if include_recent:
                raise QueryError(
                    "include_recent: expected False with as_of (a pinned query never reads Kafka), found True"
                )
            return False
        if include_recent is not None:
            return bool(include_recent)
        if end is None:
            return True
        return end >= datetime.now(UTC) - timedelta(seconds=self.settings.query_recent_window_seconds)

    def _scan(
        self, read: _Read, where: str, params: list[Any], select: str, prune: Prune | None = None
    ) -> tuple[str, list[Any]]:
        """``SELECT <select> FROM <the snapshot's rows> WHERE <where>`` (constant fragments) and its parameters.

        The rows come from the snapshot's data files that ``prune`` cannot rule out, read directly with
        ``read_parquet`` (:mod:`k2.query.files`); ``iceberg_scan`` when the snapshot cannot be read that way.
        """
        record = TABLES[read.short].record
        if read.snapshot_id is None or read.location is None:
            return f"SELECT {select} FROM ({_empty_select(record)}) WHERE {where}", list(params)  # noqa: S608 - constant fragments
        planned = None
        if read.table is not None:
            try:
                planned = self._files.files(read.table, read.snapshot_id, prune or _EVERYTHING)
            except (OSError, ValueError) as exc:
                # e.g. a manifest removed by hand; DuckDB's iceberg_scan aborts the process on that (seen with
                # duckdb-extension-iceberg 1.5.5), so the error is reported here rather than falling back.
                raise QueryError(
                    f"expected the metadata of snapshot {read.snapshot_id} of {read.short} to be readable, "
                    f"found {type(exc).__name__}: {exc}"
                ) from exc
        if planned is None:
            scan = "iceberg_scan(?, snapshot_from_id => ?)"
            if (
                read.missing
            ):  # a snapshot from before a schema upgrade: the model's newer columns read as NULL
                scan = f"(SELECT *, {_nulls(record, read.missing)} FROM {scan})"  # noqa: S608 - model names
            return (
                f"SELECT {select} FROM {scan} WHERE {where}",  # noqa: S608 - constant fragments
                [read.location, read.snapshot_id, *params],
            )
        paths, schema = planned
        if not paths:
            return f"SELECT {select} FROM ({_empty_select(record)}) WHERE {where}", list(params)  # noqa: S608 - constant fragments
        # Column names come from the table's Iceberg schema (the catalog), quoted; never from the user.
        columns = ", ".join('"' + f.name.replace('"', '""') + '"' for f in schema.fields)
        present = {f.name for f in schema.fields}
        absent = tuple(f.name for f in record.fields if f.name not in present)  # added by a later schema
        if absent:
            columns += ", " + _nulls(record, absent)
        return (
            f"SELECT {select} FROM (SELECT {columns} FROM read_parquet(?, hive_partitioning = false)) WHERE {where}",  # noqa: S608 - constant fragments
            [paths, *params],
        )

    @staticmethod
    def _prune(
        symbol: Symbols | None,
        exchange: str | None,
        start: datetime | None,
        end: datetime | None,
        time_column: str = "exchange_ts",
    ) -> Prune:
        """What :meth:`_scan` may prune data files by (the same values as :meth:`_filters`)."""
        return Prune(
            tuple(symbol_list(symbol)) if symbol is not None else None,
            exchange,
            _micros(start) if start is not None else None,
            _micros(end) if end is not None else None,
            time_column,
        )

    def _filters(
        self,
        symbol: Symbols,
        exchange: str | None,
        start: datetime | None,
        end: datetime | None,
        alias: str = "",
        time_column: str = "exchange_ts",
    ) -> tuple[str, list[Any]]:
        names = symbol_list(symbol)
        # One symbol: an equality DuckDB pushes into the Iceberg scan; several: IN with one placeholder each.
        clauses = [
            f"{alias}symbol = ?" if len(names) == 1 else f"{alias}symbol IN ({', '.join('?' * len(names))})"
        ]
        params: list[Any] = list(names)
        if exchange is not None:
            clauses.append(f"{alias}exchange = ?")
            params.append(exchange)
        if start is not None:
            clauses.append(f"{alias}{time_column} >= ?")
            params.append(start)
        if end is not None:
            clauses.append(f"{alias}{time_column} < ?")
            params.append(end)
        return " AND ".join(clauses), params

    def _source(
        self,
        short: str,
        symbol: Symbols,
        exchange: str | None,
        start: datetime | None,
        end: datetime | None,
        as_of: AsOf | None,
        include_recent: bool | None,
    ) -> _Source:
        symbol = symbol_list(symbol)
        read = self._resolve(short, as_of)
        record = TABLES[short].record
        where, params = self._filters(symbol, exchange, start, end)
        prune = self._prune(symbol, exchange, start, end)
        base_sql, base_params = self._scan(read, where, params, _columns(record), prune)
        source = _Source(base_sql, base_params, read=read)
        if not self._want_recent(include_recent, end, read):
            return source
        try:
            recent = read_recent(
                self.settings,
                short,
                offsets_from_summary(read.summary),
                symbol,
                exchange,
                last=last_landed(read.summary),
            )
        except RecentUnavailableError as exc:
            if include_recent:
                raise
            if str(exc) not in self._recent_warned:
                self._recent_warned.add(str(exc))
                log.warning("hybrid query: Kafka part skipped; answering from Iceberg only", error=str(exc))
            source.recent_error = str(exc)
            return source
        if recent.truncated:
            log.warning(
                "hybrid query: Kafka read truncated",
                reason=recent.reason,
                rows=recent.table.num_rows,
                max_rows=self.settings.query_recent_max_rows,
                stopped_at=recent.stopped_at,
            )
            source.recent_truncated = True
            source.recent_truncated_reason = recent.reason
            source.recent_stopped_at = recent.stopped_at
        if recent.invalid or recent.undecodable:
            log.info(
                "hybrid query: Kafka rows the landing would refuse were skipped",
                invalid=recent.invalid,
                undecodable=recent.undecodable,
            )
        if recent.resets:
            log.warning(
                "hybrid query: Kafka log reset since the last landing; partitions read from the start",
                partitions=recent.resets,
            )
        if recent.table.num_rows == 0:
            return source
        name = _unique("k2_recent")
        id_column = _ID_COLUMN[short]
        r_where, r_params = self._filters(symbol, exchange, start, end, alias="r.")
        # Kafka rows already in the snapshot (producer retries landed once) are dropped by natural key.
        source.recent_sql = (
            f"SELECT {_columns(record, 'r.')} FROM {name} r "  # noqa: S608 - constant fragments
            f"ANTI JOIN ({base_sql}) b ON r.exchange = b.exchange AND r.symbol = b.symbol AND r.{id_column} = b.{id_column} "
            f"WHERE {r_where}"
        )
        source.recent_params = [*base_params, *r_params]
        source.sql = f"SELECT * FROM ({base_sql}) UNION ALL {source.recent_sql}"  # noqa: S608 - constant fragments
        source.params = [*base_params, *source.recent_params]
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

    def _check_symbol(self, source: _Source, symbol: Symbols, exchange: str | None) -> None:
        """Raise UnknownSymbolError when every symbol asked is unknown (see :meth:`_unknown_symbols`)."""
        self._unknown_symbols(source, symbol, exchange, None)

    def _unknown_symbols(
        self, source: _Source, symbol: Symbols, exchange: str | None, answer: pa.Table | None
    ) -> tuple[str, ...]:
        """The symbols asked that the table does not hold; UnknownSymbolError when that is every one of them.

        Unknown: no row of the symbol (on ``exchange`` when given) in the table at the snapshot read, nor
        among the Kafka rows read; a known symbol without rows in the window is not unknown. Symbols present
        in ``answer`` (a ``symbol`` column) or in the Kafka rows cost nothing; each other one costs a
        ``LIMIT 1`` scan pruned to it. A truncated Kafka read proves nothing: nothing is reported unknown.
        """
        read = source.read
        assert read is not None
        if source.recent_truncated:
            return ()  # a cut Kafka read proves nothing about a symbol: the answer is flagged partial already
        names = symbol_list(symbol)
        seen: set[str] = set()
        for data in [*source.register.values(), *([answer] if answer is not None else [])]:
            if "symbol" in data.column_names and data.num_rows:
                if exchange is not None and "exchange" in data.column_names:
                    data = data.filter(pc.equal(data["exchange"], exchange))
                seen.update(str(s) for s in pc.unique(data["symbol"]).to_pylist() if s is not None)
        unknown = []
        for name in names:
            if name in seen:
                continue
            where, params = self._filters(name, exchange, None, None)
            sql, all_params = self._scan(read, where, params, "1", self._prune(name, exchange, None, None))
            if not self._execute(sql + " LIMIT 1", all_params, query="check_symbol").num_rows:
                unknown.append(name)
        if len(unknown) < len(names):
            return tuple(unknown)
        on = f" on exchange {exchange!r}" if exchange else ""
        found = repr(unknown[0]) if len(unknown) == 1 else ", ".join(map(repr, unknown))
        raise UnknownSymbolError(
            f"expected a symbol stored in {TABLES[read.short].full_name}{on}"
            f"{' at snapshot ' + str(read.snapshot_id) if read.pinned else ''}, found {found} with no rows"
        )

    def _result(
        self, table: pa.Table, sources: Sequence[_Source], unknown: tuple[str, ...] = ()
    ) -> QueryResult:
        snapshot_ids = {s.read.short: s.read.snapshot_id for s in sources if s.read is not None}
        errors = [s.recent_error for s in sources if s.recent_error]
        truncated = [s for s in sources if s.recent_truncated]
        stopped: dict[str, dict[str, int]] = {}
        for s in truncated:
            for topic, parts in s.recent_stopped_at.items():
                stopped.setdefault(topic, {}).update(parts)
        return QueryResult(
            table,
            snapshot_ids,
            sum(s.recent_rows for s in sources),
            errors[0] if errors else None,
            recent_truncated=bool(truncated),
            recent_truncated_reason=truncated[0].recent_truncated_reason if truncated else None,
            recent_stopped_at=stopped,
            unknown_symbols=unknown,
        )

    def _row_limit(self, limit: int | None) -> tuple[int, bool]:
        """(rows to fetch, whether exceeding means an error)."""
        maximum = self.settings.query_max_rows
        if limit is None:
            return maximum + 1, True
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise QueryError(f"limit: expected a positive integer, found {limit!r}")
        if limit > maximum:
            raise LimitExceededError(
                f"limit: expected at most {maximum:,} rows (K2_QUERY_MAX_ROWS), found {limit:,}"
            )
        return limit, False

    def _range(
        self, start: datetime | str | None, end: datetime | str | None, required: bool = False
    ) -> tuple[datetime | None, datetime | None]:
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
