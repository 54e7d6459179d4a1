"""Cursor paging for the row endpoints (``/v1/trades``, ``/v1/quotes``, ``/v1/replay``): one helper.

A walk is pinned: the first page resolves the Iceberg snapshot to read, and every later page reads that
same snapshot, whatever lands meanwhile. Pages after the first are **keyset** pages: the cursor carries
the sort key of the last row returned — ``(exchange_ts, exchange, symbol, id)`` — and the next page
selects the rows strictly after it. Ties in time therefore split exactly at any page size, however many
rows share one timestamp (the old "skip N rows of the last time" cursor could not resume inside a tie
group larger than ``query_max_rows``).

Whether more rows exist is known by fetching ``page_size + 1`` rows. When ``page_size`` equals
``query_max_rows`` the extra row cannot be fetched (the query layer refuses more than
``query_max_rows``), so a **full** page then always carries a cursor; the walk may end with an empty
page. A page never ends a walk silently: either it carries a cursor, or it is the last.

Hazards:

* Keyset paging assumes the sort key is unique. The lake de-duplicates on (exchange, symbol, id), so it
  is; were a duplicate row ever stored, a walk would return it once where a one-shot query returns it
  twice.
* ``unknown_symbols`` (the requested symbols the table does not hold) is found by the first page's query
  and carried in the cursor, so every page of the walk names them, pinned like the rows.
* Rows still in Kafka (``include_recent``) cannot be pinned, so they are returned only when the whole
  result fits in the first page; otherwise the walk reads the table snapshot only and the first page
  says ``recent_included: false``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from k2.api.cursor import CursorCodec
from k2.api.errors import APIError
from k2.api.formats import Rows
from k2.api.params import one_or_many
from k2.model import QUOTE, TRADE
from k2.query.errors import UnknownSymbolError

ID_COLUMN = {"trades": "trade_id", "quotes": "update_id"}
_RECORDS = {"trades": TRADE, "quotes": QUOTE}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PageQuery:
    """What one paged walk reads: a table, its filters and the page size (``symbols`` empty: all symbols)."""

    endpoint: str
    table: str
    symbols: tuple[str, ...]
    start: datetime | None
    end: datetime | None
    exchange: str | None
    page_size: int
    max_rows: int
    digest: str
    key_id: str | None = None

    def client_symbols(self) -> str | list[str] | None:
        """What the query client's ``trades``/``quotes`` take for this walk."""
        return one_or_many(list(self.symbols)) if self.symbols else None


@dataclass
class Page:
    """One page: its rows, the snapshot read, the next cursor (None on the last page) and envelope extras.

    ``unknown_symbols``: the requested symbols the table does not hold (found by the first page).
    """

    table: Rows
    snapshot_id: int | None
    next_cursor: str | None
    result: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    unknown_symbols: tuple[str, ...] = ()


def schema_of(table: str) -> pa.Schema:
    """The canonical Arrow schema of a row table (what the query client returns)."""
    return _RECORDS[table].arrow_schema()


def decode_cursor(codec: CursorCodec, cursor: str | None, query: PageQuery) -> dict[str, Any] | None:
    """The payload of ``cursor`` when it belongs to this endpoint, these parameters and this key (else 400/403)."""
    if cursor is None:
        return None
    payload = codec.decode(cursor)
    if (
        payload.get("ep") != query.endpoint
        or payload.get("q") != query.digest
        or not isinstance(payload.get("last"), list)
    ):
        raise APIError(
            400,
            "invalid_cursor",
            "cursor: expected a cursor issued for this endpoint and these parameters (symbol, start, end, exchange, as_of, "
            "include_recent), found one issued for a different query",
            {"parameter": "cursor"},
        )
    if query.key_id is not None and payload.get("k") != query.key_id:
        raise APIError(
            403,
            "cursor_forbidden",
            "cursor: expected a cursor issued to the API key making this request, found one issued to another key",
            {"parameter": "cursor"},
        )
    return payload


def fetch_size(query: PageQuery) -> int:
    # One row more than the page tells whether more exist, unless that would exceed query_max_rows.
    return min(query.page_size + 1, query.max_rows)


def has_more(rows: int, query: PageQuery) -> bool:
    return rows > query.page_size or (rows == query.max_rows == query.page_size)


def key_of(page: pa.Table, table: str, index: int = -1) -> list[Any]:
    """The full sort key of row ``index`` (default: the last), read from the row (a walk may cover several
    symbols and venues)."""
    last = page.slice(index % page.num_rows, 1)
    ts = int(pc.cast(last["exchange_ts"], pa.int64())[0].as_py())
    return [
        ts,
        last["exchange"][0].as_py(),
        last["symbol"][0].as_py(),
        int(last[ID_COLUMN[table]][0].as_py()),
    ]


def finish(
    codec: CursorCodec,
    query: PageQuery,
    data: pa.Table,
    snapshot_id: int | None,
    unknown: tuple[str, ...] = (),
) -> tuple[pa.Table, str | None]:
    """The page out of ``data`` (fetched with :func:`fetch_size`) and its cursor when more rows may exist.

    The cursor carries ``unknown`` (the requested symbols the table does not hold) to the next pages.
    """
    page = data.slice(0, query.page_size)
    if not (has_more(data.num_rows, query) and page.num_rows and snapshot_id is not None):
        return page, None
    return page, cursor_after(codec, query, snapshot_id, key_of(page, query.table), unknown)


def cursor_after(
    codec: CursorCodec, query: PageQuery, snapshot_id: int, last: list[Any], unknown: tuple[str, ...] = ()
) -> str:
    """The cursor of the page after the row whose sort key is ``last``, in snapshot ``snapshot_id``."""
    payload: dict[str, Any] = {
        "ep": query.endpoint,
        "q": query.digest,
        "snap": int(snapshot_id),
        "last": last,
    }
    if unknown:
        payload["u"] = list(unknown)
    if query.key_id is not None:
        payload["k"] = query.key_id
    return codec.encode(payload)


def _key_bound(id_col: str, after: bool) -> str:
    # Rows after (or up to and including) a sort key. The first conjunct is implied by the second; it lets
    # DuckDB skip row groups and vectors by their time range.
    if after:
        return f"exchange_ts >= ? AND (exchange_ts > ? OR (exchange_ts = ? AND (exchange > ? OR (exchange = ? AND (symbol > ? OR (symbol = ? AND {id_col} > ?))))))"
    return f"exchange_ts <= ? AND (exchange_ts < ? OR (exchange_ts = ? AND (exchange < ? OR (exchange = ? AND (symbol < ? OR (symbol = ? AND {id_col} <= ?))))))"


def _key_params(key: list[Any]) -> list[Any]:
    ts, ex, sym, ident = _EPOCH + timedelta(microseconds=int(key[0])), str(key[1]), str(key[2]), int(key[3])
    return [ts, ts, ts, ex, ex, sym, sym, ident]


def keyset_sql(
    query: PageQuery,
    last: list[Any] | None,
    limit: int,
    *,
    keys_only: bool = False,
    upto: list[Any] | None = None,
) -> tuple[str, list[Any]]:
    """A keyset-paged SELECT over the pinned view; table and id column come from a fixed map, values are bound.

    ``keys_only``: select the sort key columns only (what :mod:`k2.api.bigpage` counts a page with);
    ``upto``: only rows up to and including this sort key (a chunk of a streamed page).

    >>> q = PageQuery("trades", "trades", ("BTCUSDT",), None, None, None, 2, 10, "d")
    >>> sql, params = keyset_sql(q, None, 3)
    >>> sql.endswith("ORDER BY exchange_ts, exchange, symbol, trade_id LIMIT 3"), params
    (True, ['BTCUSDT'])
    """
    id_col = ID_COLUMN[query.table]
    where: list[str] = []
    params: list[Any] = []
    if query.symbols:
        where.append(f"symbol IN ({', '.join('?' for _ in query.symbols)})")
        params += list(query.symbols)
    for column, op, value in (
        ("exchange", "=", query.exchange),
        ("exchange_ts", ">=", query.start),
        ("exchange_ts", "<", query.end),
    ):
        if value is not None:
            where.append(f"{column} {op} ?")
            params.append(value)
    for key, after in ((last, True), (upto, False)):
        if key is not None:
            where.append(_key_bound(id_col, after))
            params += _key_params(key)
    names = ("exchange_ts", "exchange", "symbol", id_col) if keys_only else schema_of(query.table).names
    columns = ", ".join(names)
    sql = (
        f"SELECT {columns} FROM {query.table} WHERE {' AND '.join(where) or 'true'} "  # noqa: S608 - identifiers from fixed maps, values bound
        f"ORDER BY exchange_ts, exchange, symbol, {id_col} LIMIT {int(limit)}"
    )
    return sql, params


def conform(data: pa.Table, table: str) -> pa.Table:
    try:
        return data.cast(schema_of(table))
    except (pa.ArrowInvalid, ValueError):  # pragma: no cover - the view has the canonical columns
        return data


def keyset_page(
    client: Any,
    codec: CursorCodec,
    query: PageQuery,
    snapshot_id: int | None,
    last: list[Any] | None,
    unknown: tuple[str, ...] = (),
) -> Page:
    """A page of the pinned snapshot after ``last`` (the first page of a table-only walk when ``last`` is None).

    ``unknown``: the requested symbols the first page found the table does not hold (from the cursor).
    """
    if snapshot_id is None:
        return Page(schema_of(query.table).empty_table(), None, None)
    sql, params = keyset_sql(query, last, fetch_size(query))
    result = client.as_of(int(snapshot_id)).sql(sql, params)
    data = conform(getattr(result, "table", result), query.table)
    page, cursor = finish(codec, query, data, snapshot_id, unknown)
    return Page(page, int(snapshot_id), cursor, result, unknown_symbols=unknown)


def unknown_of(payload: dict[str, Any]) -> tuple[str, ...]:
    """The unknown symbols a cursor carries (none when it carries none)."""
    carried = payload.get("u")
    return tuple(str(name) for name in carried) if isinstance(carried, list) else ()


@dataclass(frozen=True)
class RowsRead:
    """One read of ``/v1/trades`` or ``/v1/quotes`` rows through the query client, unpacked."""

    result: Any
    data: pa.Table
    snap: int | None  # the table's snapshot the read used (None: the table is empty at it)
    recent: int  # rows that came from Kafka
    # Unknown as the hybrid read found it: a symbol seen only in Kafka is known, though a walk omits its rows.
    unknown: tuple[str, ...]


def read_rows(client: Any, query: PageQuery, limit: int, as_of: Any, include_recent: bool | None) -> RowsRead:
    """Read up to ``limit`` rows of ``query`` (404 for an unknown symbol)."""
    method: Callable[..., Any] = client.trades if query.table == "trades" else client.quotes
    result = method(
        query.client_symbols(),
        query.start,
        query.end,
        exchange=query.exchange,
        limit=limit,
        as_of=as_of,
        include_recent=include_recent,
    )
    return RowsRead(
        result,
        getattr(result, "table", result),
        (getattr(result, "snapshot_ids", None) or {}).get(query.table),
        int(getattr(result, "recent_rows", 0) or 0),
        tuple(getattr(result, "unknown_symbols", ()) or ()),
    )


def first_rows_page(
    client: Any, codec: CursorCodec, query: PageQuery, as_of: Any, include_recent: bool | None
) -> Page:
    """The first page of ``/v1/trades`` or ``/v1/quotes`` through the query client (404 for an unknown symbol).

    With rows still in Kafka and more than one page, the page is re-read from the pinned snapshot only.
    """
    fetch = fetch_size(query)
    read = read_rows(client, query, fetch, as_of, include_recent)
    snap, unknown = read.snap, read.unknown
    if read.recent and has_more(read.data.num_rows, query):
        # A multi-page walk reads the pinned snapshot only (Kafka rows are not pinnable).
        result, data = read.result, schema_of(query.table).empty_table()
        try:
            if snap is None:  # the table is empty at this snapshot: nothing pinnable to walk
                raise UnknownSymbolError(str(query.client_symbols()))
            pinned = read_rows(client, query, fetch, snap, False)
            result, data = pinned.result, pinned.data
        except UnknownSymbolError:  # the symbol exists only in Kafka so far
            pass
        return page_of(codec, query, data, snap, result, {"recent_included": False}, unknown)
    return page_of(codec, query, read.data, snap, read.result, {"recent_included": read.recent > 0}, unknown)


def page_of(
    codec: CursorCodec,
    query: PageQuery,
    data: pa.Table,
    snap: int | None,
    result: Any,
    extra: dict[str, Any],
    unknown: tuple[str, ...],
) -> Page:
    page, cursor = finish(codec, query, data, snap, unknown)
    return Page(page, None if snap is None else int(snap), cursor, result, extra, unknown)
