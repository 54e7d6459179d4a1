"""Order-book reads: the book at a moment, a book series for backtests/ML, per-step metrics, trades as-of book.

The book of a symbol at moment ``at`` is rebuilt from ``market_data.book_deltas``, first from the stored
``book_snapshots`` when that is provably exact (:func:`_from_stored_snapshot`: the newest stored rows and
the bounded run of deltas after them), else from the deltas alone:

1. the latest snapshot that restarts the book at or before ``at`` (rows with ``is_snapshot``, the largest
   ``last_update_id``) fixes the starting point: every earlier row is ignored;
2. for each (side, price) the row with the largest ``last_update_id`` since then (events with
   ``exchange_ts <= at``, and ``last_update_id <= update_id`` when given) gives the level's size;
   a size of 0 means the level is gone. Row order inside an event never matters: each level appears once.

The delta read is one DuckDB query (``arg_max`` per level, top N per side by ``row_number``), the stored
read two plain scans merged in numpy (:mod:`k2.query.book_stored`), both over the data files the
planned-file cache (:mod:`k2.query.files`, pruned by :mod:`k2.query.book_files`) keeps for the symbol and
update-id range, every value bound as a parameter. With ``include_recent`` the depth rows still in Kafka (:mod:`k2.query.recent`) are
unioned into the deltas. Trade joins read the rows once and replay them with
:class:`k2.model.book.OrderBook` (the same rules the sources use); series are one pass over numpy arrays
(:mod:`k2.query.book_series`) with the same answer as ``book()`` at each step.

Hazards: the delta read's cost grows with the run of deltas since the starting snapshot (it runs when
no stored rows answer exactly: none yet, or the price left the stored levels for ten minutes);
``book_series``/``trades_with_book`` always start from the restart (the series aggregates the deltas
since it) and read Iceberg only; a moment inside
a depth gap shows the last good book before the gap (the gap is in ``quality.gaps``).

Example (needs a catalog with landed depth)::

    book = client.book("BTCUSDT", at="2024-08-09T00:00:00Z", depth=5)
    book.levels.to_pylist()[0]   # {'side': 'BID', 'level': 1, 'price': Decimal('...'), 'size': Decimal('...')}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from k2.lake.summary import offsets_from_summary
from k2.model.arrow import unscaled_from_decimal
from k2.model.book import Level, OrderBook
from k2.model.values import datetime_to_micros, unscaled_to_decimal
from k2.query.book_files import select_files
from k2.query.errors import InvalidRangeError, QueryError, UnknownSymbolError
from k2.query.params import check_range, parse_duration, parse_time
from k2.query.recent import RecentUnavailableError, last_landed, read_recent

if TYPE_CHECKING:
    from k2.query.client import AsOf, Client

_SHORT = "book_deltas"
_MAX_DEPTH = 1000
_MAX_STEPS = 100_000
# Stored book snapshots one read may combine: the newest row, then a minute, then ten minutes of rows
# (at the default 10 s cadence); each try reads the deltas after its oldest row.
_STORED_TRIES = (1, 6, 60)
LEVELS_SCHEMA = pa.schema(
    [
        ("side", pa.string()),
        ("level", pa.int64()),
        ("price", pa.decimal128(18, 8)),
        ("size", pa.decimal128(18, 8)),
    ]
)


@dataclass(frozen=True)
class Book:
    """The book of one symbol at one moment: ``levels`` (side, level 1 = best, price, size) and what it reflects."""

    symbol: str
    exchange: str | None
    levels: pa.Table
    last_update_id: int | None
    exchange_ts: datetime | None
    snapshot_id: int | None
    read_from: str = "deltas"  # or "book_snapshots" (stored snapshots + the deltas after them)
    # The hybrid read (``include_recent``): depth rows still in Kafka applied on top, said like the rest.
    recent_rows: int = 0
    recent_truncated: bool = False
    recent_truncated_reason: str | None = None
    recent_stopped_at: dict[str, dict[str, int]] = field(default_factory=dict)
    recent_error: str | None = None

    def side(self, side: str) -> list[tuple[Decimal, Decimal]]:
        """(price, size) of one side, best first."""
        rows = self.levels.to_pylist()
        return [(r["price"], r["size"]) for r in rows if r["side"] == side]


def _check_depth(depth: int) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= _MAX_DEPTH:
        raise QueryError(f"depth: expected an integer between 1 and {_MAX_DEPTH}, found {depth!r}")
    return depth


def _scan(location: str | None, snapshot_id: int | None) -> tuple[str, list[Any]]:
    if location is None or snapshot_id is None:
        raise UnknownSymbolError("expected book deltas in market_data.book_deltas, found the table empty")
    return "iceberg_scan(?, snapshot_from_id => ?)", [location, snapshot_id]


def last_restart(
    client: Client,
    source: str,
    params: list[Any],
    symbol: str,
    exchange: str | None,
    at: datetime,
    update_id: int | None,
) -> tuple[str, int]:
    """(exchange, last_update_id) of the latest restarting snapshot at or before ``at`` / ``update_id``."""
    where = "symbol = ? AND is_snapshot AND exchange_ts <= ?"
    args: list[Any] = [symbol, at]
    if exchange is not None:
        where += " AND exchange = ?"
        args.append(exchange)
    if update_id is not None:
        where += " AND last_update_id <= ?"
        args.append(update_id)
    sql = f"SELECT arg_max(exchange, last_update_id), max(last_update_id) FROM {source} WHERE {where}"  # noqa: S608 - constant fragments
    row = client._execute(sql, [*params, *args], query="book").to_pylist()[0]
    values = list(row.values())
    if values[1] is None:
        raise no_snapshot_error(symbol, exchange, at, update_id)
    return str(values[0]), int(values[1])


_DELTA_COLUMNS = "exchange, symbol, side, price, size, last_update_id, exchange_ts, is_snapshot"


@dataclass
class RecentDepth:
    """Depth rows still in Kafka (the hybrid read), registered as a DuckDB view named ``name``."""

    name: str | None = None
    table: pa.Table | None = None
    truncated: bool = False
    reason: str | None = None
    stopped_at: dict[str, dict[str, int]] = field(default_factory=dict)
    error: str | None = None

    @property
    def register(self) -> dict[str, pa.Table]:
        return {} if self.name is None or self.table is None else {self.name: self.table}

    def flag(self, book: Book) -> Book:
        rows = 0 if self.table is None else self.table.num_rows
        return replace(
            book,
            recent_rows=rows,
            recent_truncated=self.truncated,
            recent_truncated_reason=self.reason,
            recent_stopped_at=self.stopped_at,
            recent_error=self.error,
        )


_recent_names = iter(range(1, 1 << 62))


def _recent(
    client: Client,
    read: Any,
    symbol: str,
    exchange: str | None,
    moment: datetime,
    include_recent: bool | None,
) -> RecentDepth:
    """The Kafka part of a hybrid book read (:mod:`k2.query.recent`), or nothing when not wanted.

    Rows already landed may come back too (a producer retry, a race with the landing): harmless here,
    a level's size is the one of its largest update id either way.
    """
    if not client._want_recent(include_recent, moment, read):
        return RecentDepth()
    try:
        recent = read_recent(
            client.settings,
            _SHORT,
            offsets_from_summary(read.summary),
            symbol,
            exchange,
            last=last_landed(read.summary),
        )
    except RecentUnavailableError as exc:
        if include_recent:
            raise
        return RecentDepth(error=str(exc))
    table = recent.table.select(_DELTA_COLUMNS.split(", ")) if recent.table.num_rows else None
    name = f"k2_recent_book_{next(_recent_names)}" if table is not None else None
    return RecentDepth(name, table, recent.truncated, recent.reason, recent.stopped_at)


def planned_paths(
    client: Client,
    read: Any,
    symbol: str,
    *,
    above: int | None = None,
    through: int | None = None,
    until: datetime | None = None,
) -> list[str] | None:
    """The data files of ``read`` that may hold ``symbol``'s rows asked for ([] when none can); None when
    the read cannot be planned file by file (no snapshot, no table, or delete files: read it through
    ``iceberg_scan``). The plan is the client's, cached per snapshot (:mod:`k2.query.files`), pruned by
    :mod:`k2.query.book_files` (symbol, update id and exchange time)."""
    if read.location is None or read.snapshot_id is None or read.table is None:
        return None
    # The table ``read`` resolved (no second catalog look-up); its plan is cached per snapshot.
    files = client._files.planned(read.table, read.snapshot_id)
    if files is None:
        return None
    return select_files(files, symbol, above=above, through=through, until=until)


def delta_source(
    client: Client,
    read: Any,
    symbol: str,
    *,
    above: int | None = None,
    through: int | None = None,
    until: datetime | None = None,
    recent: RecentDepth | None = None,
) -> tuple[str, list[Any]] | None:
    """FROM fragment reading the files of ``read`` that may hold the rows asked for; None when none can.

    The client's planned-file cache (:mod:`k2.query.files`) pruned by :mod:`k2.query.book_files` (symbol,
    update id and exchange time); tables with delete files go through ``iceberg_scan``. With ``recent`` rows (the hybrid read) they are
    a union with the Kafka rows.
    """
    found: tuple[str, list[Any]] | None = None
    if read.location is not None and read.snapshot_id is not None:
        paths = planned_paths(client, read, symbol, above=above, through=through, until=until)
        if paths is None:
            found = _scan(read.location, read.snapshot_id)
        else:
            found = ("read_parquet(?)", [paths]) if paths else None
    if recent is None or recent.name is None:
        return found
    if found is None:
        return recent.name, []
    union = f"(SELECT {_DELTA_COLUMNS} FROM {found[0]} UNION ALL SELECT {_DELTA_COLUMNS} FROM {recent.name})"  # noqa: S608 - constant fragments
    return union, found[1]


def run_book_sql(
    client: Client, sql: str, params: list[Any], register: dict[str, pa.Table] | None = None
) -> pa.Table:
    """``client._execute`` on a connection that keeps Parquet footers between queries.

    Book reads open the same few data files again and again; DuckDB re-parses each footer per query unless
    ``parquet_metadata_cache`` is on (about 40% of a stored-snapshot read in benchmarks/book_scale_bench.py).
    Every pool connection sets it once, at setup (:func:`k2.query.engine.new_connection`).
    """
    return client._execute(sql, params, register, query="book")


def moment_filter(
    symbol: str, moment: datetime, exchange: str | None, update_id: int | None
) -> tuple[str, list[Any]]:
    """The WHERE clause (constant text) and parameters of a book's rows at ``moment``: one symbol, rows at
    or before the moment, of one exchange and through one update id when given.

    >>> from datetime import UTC, datetime
    >>> moment_filter("BTCUSDT", datetime(2024, 8, 8, tzinfo=UTC), "binance", None)[0]
    'symbol = ? AND exchange_ts <= ? AND exchange = ?'
    """
    where, args = "symbol = ? AND exchange_ts <= ?", [symbol, moment]
    if exchange is not None:
        where, args = where + " AND exchange = ?", [*args, exchange]
    if update_id is not None:
        where, args = where + " AND last_update_id <= ?", [*args, update_id]
    return where, args


def no_snapshot_error(
    symbol: str, exchange: str | None, moment: datetime, update_id: int | None
) -> UnknownSymbolError:
    on = f" on {exchange}" if exchange else ""
    bound = "" if update_id is None else f" and update id {update_id}"
    return UnknownSymbolError(
        f"expected a book snapshot of {symbol!r}{on} at or before {moment.isoformat()}{bound}, found none"
    )


def book(
    client: Client,
    symbol: str,
    at: datetime | str | None = None,
    depth: int = 10,
    *,
    exchange: str | None = None,
    update_id: int | None = None,
    as_of: AsOf | None = None,
    include_recent: bool | None = None,
) -> Book:
    """The top ``depth`` levels per side of ``symbol`` at ``at`` (default: now) - see the module docstring.

    First from the stored ``book_snapshots`` (a few rows and the deltas after the oldest of them) when
    that is provably exact; else one query over the deltas: filtered once (symbol, time, update id), the
    starting snapshot found in it and the levels reduced from the rows after it. ``include_recent`` (as
    for trades: default on when ``at`` is within ``query_recent_window_seconds`` of now, never with
    ``as_of``) applies the depth rows still in Kafka too; the Book says how many and whether that read
    was cut short (``recent_truncated``: the book is then the one through the last row read).
    """
    depth = _check_depth(depth)
    moment = parse_time(at, "at") if at is not None else datetime.now(UTC)
    assert moment is not None
    read = client._resolve(_SHORT, as_of)
    recent = _recent(client, read, symbol, exchange, moment, include_recent)
    fast = _from_stored_snapshot(client, read, symbol, moment, depth, exchange, update_id, as_of, recent)
    if fast is not None:
        return recent.flag(fast)
    found = delta_source(client, read, symbol, through=update_id, until=moment, recent=recent)
    if found is None:
        if read.snapshot_id is None:
            _scan(read.location, read.snapshot_id)  # raises: the table is empty
        raise no_snapshot_error(symbol, exchange, moment, update_id)
    source, params = found
    where, args = moment_filter(symbol, moment, exchange, update_id)
    sql = (
        f"WITH base AS MATERIALIZED (SELECT exchange, side, price, size, last_update_id, exchange_ts, is_snapshot FROM {source} WHERE {where}), "  # noqa: S608 - constant fragments
        "start AS (SELECT arg_max(exchange, last_update_id) AS ex, max(last_update_id) AS u FROM base WHERE is_snapshot), "
        "d AS (SELECT b.* FROM base b, start s WHERE b.exchange = s.ex AND b.last_update_id >= s.u "
        "AND (b.last_update_id > s.u OR b.is_snapshot)), "
        "latest AS (SELECT side, price, arg_max(size, last_update_id) AS size FROM d GROUP BY side, price), "
        "ranked AS (SELECT side, price, size, row_number() OVER (PARTITION BY side ORDER BY "
        "CASE WHEN side = 'BID' THEN -price ELSE price END) AS level FROM latest WHERE size > 0) "
        "SELECT side, level, price, size, NULL::VARCHAR AS ex, NULL::BIGINT AS u, NULL::TIMESTAMPTZ AS ts FROM ranked WHERE level <= ? "
        "UNION ALL SELECT NULL, NULL, NULL, NULL, (SELECT ex FROM start), max(last_update_id), max(exchange_ts) FROM d"
    )
    table = run_book_sql(client, sql, [*params, *args, depth], recent.register)
    meta = table.filter(pa.compute.is_null(table["side"]))
    venue, last_u, last_ts = meta["ex"][0].as_py(), meta["u"][0].as_py(), meta["ts"][0].as_py()
    if venue is None:
        raise no_snapshot_error(symbol, exchange, moment, update_id)
    levels = table.filter(pa.compute.is_valid(table["side"])).select(["side", "level", "price", "size"])
    levels = levels.sort_by([("side", "descending"), ("level", "ascending")]).cast(LEVELS_SCHEMA)
    return recent.flag(Book(symbol, venue, levels, last_u, last_ts, read.snapshot_id))


def _from_stored_snapshot(
    client: Client,
    read: Any,
    symbol: str,
    moment: datetime,
    depth: int,
    exchange: str | None,
    update_id: int | None,
    as_of: AsOf | None,
    recent: RecentDepth | None = None,
) -> Book | None:
    """The book from the newest stored ``book_snapshots`` rows + the deltas after the oldest row used.

    Sizes are absolute, so a level changed since the oldest row has its latest delta's size, and an
    unchanged level the size the newest row listing it gives (a covering row that does not list it: 0).
    Exact when no book restart happened after the oldest row used (rows before a restart are dropped:
    K2 stores a row at every restart) and on each side the best ``depth`` levels lie inside what the rows
    cover. Tried with the newest row, then more (``_STORED_TRIES``); else None (read the deltas).
    ``read`` is the book_deltas read the caller resolved (the one its Kafka part starts after).
    The merge itself is :mod:`k2.query.book_stored`.
    """
    from k2.query import book_stored

    snaps = client._resolve("book_snapshots", as_of)
    stored = client._stored_rows.newest(client, snaps, symbol, moment, exchange, update_id, _STORED_TRIES[-1])
    tries = [stored[:n] for n in _STORED_TRIES if n == 1 or len(stored) > n // 2]
    while tries:
        rows = tries.pop(0)
        if not rows or depth > min(r["depth"] for r in rows):
            return None
        answer = book_stored.combine(
            client, snaps, read, symbol, rows, moment, depth, update_id, recent or RecentDepth()
        )
        if isinstance(answer, Book):
            return answer
        if answer is not None:  # a restart after the oldest row: only the rows from it on are usable
            tries = [[r for r in rows if r["u"] >= answer]]
    return None


def _read_rows(
    client: Client, symbol: str, exchange: str | None, start: datetime, end: datetime, as_of: AsOf | None
) -> tuple[str, dict[str, np.ndarray], int | None]:
    """Delta rows from the snapshot restarting the book before ``start`` through ``end``, in update-id order."""
    read = client._resolve(_SHORT, as_of)
    source, params = _scan(read.location, read.snapshot_id)
    venue, first = last_restart(client, source, params, symbol, exchange, start, None)
    sql = (
        "SELECT side = 'ASK' AS ask, price, size, last_update_id, epoch_us(exchange_ts) AS ts, is_snapshot "  # noqa: S608
        f"FROM {source} WHERE symbol = ? AND exchange = ? AND last_update_id >= ? AND exchange_ts <= ? "
        "AND (last_update_id > ? OR is_snapshot) ORDER BY last_update_id"
    )
    table = client._execute(sql, [*params, symbol, venue, first, end, first], query="book_series")
    columns = {
        "ask": np.asarray(table["ask"].to_numpy(zero_copy_only=False), dtype=bool),
        "price": unscaled_from_decimal(table["price"]),
        "size": unscaled_from_decimal(table["size"]),
        "u": np.asarray(table["last_update_id"].to_numpy(zero_copy_only=False), dtype=np.int64),
        "ts": np.asarray(table["ts"].to_numpy(zero_copy_only=False), dtype=np.int64),
        "snap": np.asarray(table["is_snapshot"].to_numpy(zero_copy_only=False), dtype=bool),
    }
    return venue, columns, read.snapshot_id


class _Replay:
    """Walks delta rows (from :func:`_read_rows`) forward in time, applying them to an OrderBook."""

    def __init__(self, columns: dict[str, np.ndarray]) -> None:
        self.c = columns
        self.book = OrderBook()
        self.i = 0
        self.n = len(columns["u"])
        self._ask = columns["ask"].tolist()
        self._price = columns["price"].tolist()
        self._size = columns["size"].tolist()
        self._u = columns["u"].tolist()
        self._ts = columns["ts"].tolist()
        self._snap = columns["snap"].tolist()
        self._loaded_snapshot: int | None = None

    def advance(self, until_us: int, inclusive: bool = True) -> OrderBook:
        """Apply every row with exchange time <= ``until_us`` (< when not ``inclusive``); whole events only."""
        book = self.book
        while self.i < self.n and (
            self._ts[self.i] <= until_us if inclusive else self._ts[self.i] < until_us
        ):
            i = self.i
            if self._snap[i] and self._loaded_snapshot != self._u[i]:
                book.clear()
                self._loaded_snapshot = self._u[i]
            elif not self._snap[i]:
                self._loaded_snapshot = None
            book.apply("ASK" if self._ask[i] else "BID", self._price[i], self._size[i])
            book.last_update_id, book.exchange_ts = self._u[i], self._ts[i]
            self.i += 1
        return book


def book_metrics(
    bids: Sequence[Level],
    asks: Sequence[Level],
    levels: int = 10,
    bps: Decimal | int = 10,
    quantity: Decimal | None = None,
    depth_within: Callable[[Decimal, Decimal], tuple[Decimal, Decimal]] | None = None,
) -> dict[str, Decimal | None]:
    """Spread, mid, microprice, imbalance (top ``levels``), depth within ``bps`` of mid, market-order cost.

    ``bids``/``asks`` are (unscaled price, unscaled size), best first. ``buy_fill_price`` is the average
    price of a market buy of ``quantity`` walking the asks (None when the visible book is too thin);
    ``buy_slippage_bps`` its distance from mid in basis points (sells alike on the bids). Exact decimals
    (division results rounded to 8 places for prices, 6 for ratios). ``depth_within(low, high)``, when
    given, returns the bid size priced ``>= low`` and the ask size ``<= high`` over the caller's whole book
    (so ``bids``/``asks`` need only the levels the imbalance and the fill walks use).

    >>> m = book_metrics([(10000000000, 100000000)], [(10200000000, 300000000)], quantity=Decimal("2"))
    >>> m["spread"], m["mid"], m["microprice"], m["imbalance"], m["buy_fill_price"]
    (Decimal('2.00000000'), Decimal('101.00000000'), Decimal('100.50000000'), Decimal('-0.500000'), Decimal('102.00000000'))
    """
    q8, q6 = Decimal("0.00000001"), Decimal("0.000001")
    out: dict[str, Decimal | None] = dict.fromkeys(
        (
            "spread",
            "mid",
            "microprice",
            "imbalance",
            "bid_depth_bps",
            "ask_depth_bps",
            "buy_fill_price",
            "buy_slippage_bps",
            "sell_fill_price",
            "sell_slippage_bps",
        )
    )
    if not bids or not asks:
        return out
    dec = unscaled_to_decimal
    bid, bid_size, ask, ask_size = dec(bids[0][0]), dec(bids[0][1]), dec(asks[0][0]), dec(asks[0][1])
    mid = (bid + ask) / 2
    out["spread"], out["mid"] = (ask - bid).quantize(q8), mid.quantize(q8)
    out["microprice"] = ((bid * ask_size + ask * bid_size) / (bid_size + ask_size)).quantize(q8)
    bid_volume = dec(sum(s for _, s in bids[:levels]))  # summed unscaled: exact, one Decimal per side
    ask_volume = dec(sum(s for _, s in asks[:levels]))
    out["imbalance"] = ((bid_volume - ask_volume) / (bid_volume + ask_volume)).quantize(q6)
    band = mid * Decimal(bps) / Decimal(10_000)
    if depth_within is not None:  # the caller sums its whole sides: (bid size >= low, ask size <= high)
        out["bid_depth_bps"], out["ask_depth_bps"] = depth_within(mid - band, mid + band)
    else:
        out["bid_depth_bps"] = sum((dec(s) for p, s in bids if dec(p) >= mid - band), Decimal(0))
        out["ask_depth_bps"] = sum((dec(s) for p, s in asks if dec(p) <= mid + band), Decimal(0))
    if quantity is not None:
        out.update(fills(asks, bids, mid, Decimal(quantity)))
    return out


def fills(
    asks: Sequence[Level], bids: Sequence[Level], mid: Decimal, quantity: Decimal
) -> dict[str, Decimal | None]:
    """Average fill price (8 decimals) and slippage against ``mid`` (bps, 6 decimals) of a market order of
    ``quantity`` per side: ``buy_*`` walks the asks, ``sell_*`` the bids; None when a side is too thin."""
    q8, q6 = Decimal("0.00000001"), Decimal("0.000001")
    out: dict[str, Decimal | None] = {}
    for name, side, sign in (("buy", asks, 1), ("sell", bids, -1)):
        price = fill_price(side, quantity)
        out[f"{name}_fill_price"] = None if price is None else price.quantize(q8)
        out[f"{name}_slippage_bps"] = (
            None if price is None else (sign * (price - mid) / mid * 10_000).quantize(q6)
        )
    return out


def fill_price(levels: Sequence[Level], quantity: Decimal) -> Decimal | None:
    if quantity <= 0:
        raise InvalidRangeError(f"quantity: expected a positive number, found {quantity}")
    remaining, cost = quantity, Decimal(0)
    for price, size in levels:
        take = min(remaining, unscaled_to_decimal(size))
        cost += take * unscaled_to_decimal(price)
        remaining -= take
        if remaining == 0:
            return cost / quantity
    return None


def book_series(
    client: Client,
    symbol: str,
    start: datetime | str,
    end: datetime | str,
    every: str | timedelta = "1s",
    depth: int = 10,
    *,
    exchange: str | None = None,
    as_of: AsOf | None = None,
    metrics_levels: int = 10,
    bps: Decimal | int = 10,
    quantity: Decimal | None = None,
) -> pa.Table:
    """One row per step ``start, start+every, ... < end``: the book at that moment (top ``depth`` as lists) + metrics."""
    depth = _check_depth(depth)
    s, e = parse_time(start, "start"), parse_time(end, "end")
    if s is None or e is None:
        raise InvalidRangeError(f"expected both start and end, found start={start!r} end={end!r}")
    check_range(s, e, client.settings.query_max_range_days)
    step = parse_duration(every, "every")
    steps = int((e - s) / step)
    if steps > _MAX_STEPS:
        raise QueryError(
            f"every: expected at most {_MAX_STEPS:,} steps between start and end, found {steps:,}"
        )
    from k2.query.book_series import series_table

    count = 0 if e <= s else -(-(e - s) // step)  # moments start, start+every, ... < end
    return series_table(
        client,
        symbol,
        s,
        count,
        step,
        depth,
        exchange=exchange,
        as_of=as_of,
        metrics_levels=metrics_levels,
        bps=bps,
        quantity=quantity,
    )


def trades_with_book(
    client: Client,
    symbol: str,
    start: datetime | str,
    end: datetime | str,
    *,
    exchange: str | None = None,
    as_of: AsOf | None = None,
) -> pa.Table:
    """Each trade in ``[start, end)`` with the best bid/ask and sizes of the book just *before* it (as-of join).

    "Before" is by exchange time: the book after every event with ``exchange_ts`` strictly earlier than
    the trade's. Columns: the trade's, plus ``bid_price``, ``bid_size``, ``ask_price``, ``ask_size``,
    ``book_update_id`` (None before the first snapshot).
    """
    trades = client.trades(symbol, start, end, exchange=exchange, as_of=as_of).table
    s, e = parse_time(start, "start"), parse_time(end, "end")
    assert s is not None and e is not None
    _, columns, _ = _read_rows(client, symbol, exchange, s, e, as_of)
    replay = _Replay(columns)
    extra: dict[str, list[Any]] = {
        k: [] for k in ("bid_price", "bid_size", "ask_price", "ask_size", "book_update_id")
    }
    for ts in trades["exchange_ts"].to_pylist():
        book = replay.advance(datetime_to_micros(ts), inclusive=False)
        bid, ask = book.best_bid(), book.best_ask()
        extra["bid_price"].append(None if bid is None else unscaled_to_decimal(bid[0]))
        extra["bid_size"].append(None if bid is None else unscaled_to_decimal(bid[1]))
        extra["ask_price"].append(None if ask is None else unscaled_to_decimal(ask[0]))
        extra["ask_size"].append(None if ask is None else unscaled_to_decimal(ask[1]))
        extra["book_update_id"].append(book.last_update_id)
    for name, values in extra.items():
        kind = pa.int64() if name == "book_update_id" else pa.decimal128(18, 8)
        trades = trades.append_column(name, pa.array(values, type=kind))
    return trades
