"""Pages larger than one stream chunk, streamed from DuckDB in keyset chunks (issue 10: bounded memory).

A page of up to ``query_max_rows`` rows used to be read whole into an Arrow table that stayed in memory
while its client read the body: sixteen slow clients of large pages held gigabytes. A page larger than
:data:`STREAM_CHUNK_ROWS` is now sent as it is read:

1. **Count** (before the headers): the sort keys only — ``(exchange_ts, exchange, symbol, id)`` — are
   walked in chunks of :data:`KEY_CHUNK_ROWS` to learn how many rows the page holds (``X-Row-Count``,
   ``row_count``), the key of its last row (``X-Next-Cursor``, ``next_cursor``), exactly as the one-query
   page would say them, and the chunk bounds (the keys of rows ``STREAM_CHUNK_ROWS``, ``2 *
   STREAM_CHUNK_ROWS``, ...). No silent short page: a page with a cursor is full.
2. **Rows** (while the body is sent): one range query per chunk (sort key after the previous bound, up to
   and including its own), all on the pinned snapshot, so they return exactly the rows counted. Each runs
   when the encoder needs rows, i.e. when the client has read the previous ones (uvicorn's flow control
   holds the body while the socket is full), and holds a pooled DuckDB connection only for its own
   query, never while a client reads. A range query reads only the rows of its chunk (the time bounds
   let DuckDB skip the rest), where a "next N rows" query would rank every remaining row.

What one streaming request holds: one key chunk while counting (~50 bytes a row), then one row chunk and
its encoded batch. A client that leaves closes the body, which closes the chunk generator: no further
query runs, and the chunk in hand is freed.

Hazards:

* A page of N rows costs about ``N / KEY_CHUNK_ROWS`` key queries (each ranks the remaining keys) plus
  ``N / STREAM_CHUNK_ROWS`` range queries instead of one query (a 1M-row page: 6.1 s in Arrow where the
  single query took 3.9 s). Pages of at most ``STREAM_CHUNK_ROWS`` rows (the default page is 10,000) keep
  the single query.
* Chunk queries run in Starlette's thread pool as the body is sent, outside ``api_request_timeout_seconds``
  (which bounds the counting step like any query); each is bounded by its chunk size.
* A large first page of ``/v1/trades`` / ``/v1/quotes`` whose hybrid read found rows still in Kafka
  (:func:`hybrid_page`) reads the Kafka half once (``Client.recent_part``: the rows not yet in the snapshot
  it names) and holds it whole while the page is sent -- at most ``query_recent_max_rows`` rows, as any
  hybrid read holds -- and counts and reads the table half chunk by chunk on that snapshot, each chunk with
  the Kafka rows of its key range spliced in. The Kafka half is read again after the probe (as the old
  whole-page read did), so rows produced in between may be in the page. Such a page costs the probe, one
  Kafka read and the table's key and range queries.
* Exactness relies on the pinned snapshot and a unique sort key (see :mod:`k2.api.paging`); were a chunk
  to return fewer rows than counted, the body is aborted (the client sees a broken transfer, never a
  short page that looks complete) and the error is logged.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.api import paging
from k2.api.cursor import CursorCodec
from k2.api.formats import LazyRows
from k2.api.paging import Page, PageQuery
from k2.query.errors import UnknownSymbolError

log = logging.getLogger("k2.api")

STREAM_CHUNK_ROWS = 65_536
KEY_CHUNK_ROWS = 262_144
# Kafka rows merged into a chunk of a hybrid page in more runs than this are sorted in (a copy) rather than
# spliced in as slices (a table of thousands of tiny pieces encodes slowly).
MAX_RUNS = 1_024


def streams(query: PageQuery) -> bool:
    """Whether a page of ``query`` may exceed one chunk (then it is streamed)."""
    return paging.fetch_size(query) > STREAM_CHUNK_ROWS


def first_page(
    client: Any, codec: CursorCodec, query: PageQuery, as_of: Any, include_recent: bool | None
) -> Page:
    """The first page of ``/v1/trades`` or ``/v1/quotes``: :func:`paging.first_rows_page`, streamed when large.

    A probe of ``STREAM_CHUNK_ROWS + 1`` rows through the query client resolves the snapshot, the unknown
    symbols (404 for an unknown one) and the Kafka part; when it holds the whole result, it is the page.
    When it found rows in Kafka, :func:`hybrid_page` streams the page.
    """
    if not streams(query):
        return paging.first_rows_page(client, codec, query, as_of, include_recent)
    probe = paging.read_rows(client, query, STREAM_CHUNK_ROWS + 1, as_of, include_recent)
    if probe.data.num_rows <= STREAM_CHUNK_ROWS:  # the whole result: the page (and no more pages)
        extra = {"recent_included": probe.recent > 0}
        return paging.page_of(codec, query, probe.data, probe.snap, probe.result, extra, probe.unknown)
    if probe.recent or probe.snap is None:  # rows from Kafka (a table without snapshot: Kafka rows only)
        return hybrid_page(client, codec, query, include_recent, probe.unknown)
    snap = int(probe.snap)
    return streamed_page(client.as_of(snap), codec, query, snap, None, probe.unknown, probe.result)


def hybrid_page(
    client: Any, codec: CursorCodec, query: PageQuery, include_recent: bool | None, unknown: tuple[str, ...]
) -> Page:
    """A large first page with rows still in Kafka, as :func:`paging.first_rows_page` answers it, streamed.

    The Kafka half (``client.recent_part``: the rows not in the snapshot it names, held whole, at most
    ``query_recent_max_rows``) is read once; the table half is counted by its keys in that snapshot. More
    rows than one page: the page is the pinned snapshot's only (a walk cannot pin Kafka rows), streamed as
    any page. Else the page is every row, the table's chunk by chunk with the Kafka rows of each chunk's
    key range merged in.
    """
    recent = client.recent_part(
        query.table,
        query.client_symbols(),
        query.start,
        query.end,
        exchange=query.exchange,
        include_recent=include_recent,
    )
    recent.table = kafka = paging.conform(recent.table, query.table)  # one copy of the Kafka rows held
    snap = recent.snapshot_ids.get(query.table)
    pinned = None if snap is None else client.as_of(int(snap))
    counted, bounds = (0, []) if pinned is None else count_page(pinned, query, None)
    had_kafka = int(getattr(recent, "recent_rows", 0) or 0) > 0
    if not paging.has_more(min(counted + kafka.num_rows, paging.fetch_size(query)), query):
        lazy = LazyRows(
            paging.schema_of(query.table),
            counted + kafka.num_rows,
            _merged(pinned, query, counted, bounds, kafka),
        )
        return Page(
            lazy, None if snap is None else int(snap), None, recent, {"recent_included": had_kafka}, unknown
        )
    recent.table = kafka = kafka.schema.empty_table()  # the page holds no Kafka row: free them now
    # As first_rows_page: flags of the Kafka read only when it found nothing, or the table lacks the symbols.
    flags = recent if not had_kafka or _unknown_in(client, query, snap, counted) else None
    if pinned is None or snap is None:
        return Page(kafka, None, None, flags, {"recent_included": False}, unknown)
    page = streamed_page(pinned, codec, query, int(snap), None, unknown, flags, (counted, bounds))
    page.extra["recent_included"] = False
    return page


def _unknown_in(client: Any, query: PageQuery, snap: int | None, counted: int) -> bool:
    """Whether snapshot ``snap`` holds no row of any requested symbol (the Kafka rows' only)."""
    if snap is None:
        return True
    if counted:
        return False
    try:
        paging.read_rows(client, query, 1, snap, False)
    except UnknownSymbolError:
        return True
    return False


def next_page(
    client: Any,
    codec: CursorCodec,
    query: PageQuery,
    snapshot_id: int | None,
    last: list[Any] | None,
    unknown: tuple[str, ...] = (),
) -> Page:
    """:func:`paging.keyset_page`, streamed when the page may exceed one chunk."""
    if snapshot_id is None or not streams(query):
        return paging.keyset_page(client, codec, query, snapshot_id, last, unknown)
    return streamed_page(client.as_of(int(snapshot_id)), codec, query, int(snapshot_id), last, unknown)


def streamed_page(
    pinned: Any,
    codec: CursorCodec,
    query: PageQuery,
    snapshot_id: int,
    last: list[Any] | None,
    unknown: tuple[str, ...] = (),
    result: Any = None,
    counted: tuple[int, list[list[Any]]] | None = None,
) -> Page:
    """The page after ``last`` in ``snapshot_id`` (``pinned``: a client pinned to it): counted now (unless
    ``counted`` is :func:`count_page`'s answer already), read lazily. ``result``: a first page's hybrid read."""
    seen, bounds = count_page(pinned, query, last) if counted is None else counted
    rows = min(seen, query.page_size)
    cursor = None
    if paging.has_more(seen, query) and rows:
        cursor = paging.cursor_after(codec, query, snapshot_id, bounds[-1], unknown)
    lazy = LazyRows(paging.schema_of(query.table), rows, _chunks(pinned, query, last, rows, bounds))
    extra = {"recent_included": False} if result is not None else {}
    return Page(lazy, snapshot_id, cursor, result, extra, unknown)


def count_page(pinned: Any, query: PageQuery, last: list[Any] | None) -> tuple[int, list[list[Any]]]:
    """Count the page after ``last`` by its sort keys only: ``(rows, bounds)``.

    ``pinned``: a query client pinned to one snapshot (every key query reads it). ``rows``: the rows after
    ``last`` up to :func:`k2.api.paging.fetch_size` (so ``rows > query.page_size`` says more pages follow);
    ``bounds``: the sort keys of the page's rows number ``STREAM_CHUNK_ROWS``, ``2 * STREAM_CHUNK_ROWS``, ...
    and of its last row (none when it is empty) -- the upper bounds of the chunks that read it.

    The keys are walked ``KEY_CHUNK_ROWS`` at a time (about 50 bytes a row held), never the rows. Used by
    :func:`streamed_page` and by :mod:`k2.api.bigasof` (which sizes ``query`` to the trades it counted).
    """
    fetch = paging.fetch_size(query)
    seen = 0
    bounds: dict[int, list[Any]] = {}  # position in the page (1-based) -> sort key of that row
    while seen < fetch:
        want = min(KEY_CHUNK_ROWS, fetch - seen)
        sql, params = paging.keyset_sql(query, last, want, keys_only=True)
        keys = getattr(pinned.sql(sql, params), "table", None)
        assert keys is not None
        got = keys.num_rows
        page_end = min(query.page_size, seen + got)
        first = -(-(seen + 1) // STREAM_CHUNK_ROWS) * STREAM_CHUNK_ROWS  # the first multiple past `seen`
        for position in [*range(first, page_end + 1, STREAM_CHUNK_ROWS), page_end]:
            if seen < position:
                bounds[position] = paging.key_of(keys, query.table, position - seen - 1)
        seen += got
        if got < want:
            break
        last = paging.key_of(keys, query.table)
        del keys
    rows = min(seen, query.page_size)
    return seen, [key for position, key in sorted(bounds.items()) if position <= rows]


def _chunks(
    pinned: Any, query: PageQuery, last: list[Any] | None, rows: int, bounds: list[list[Any]]
) -> Iterator[pa.Table]:
    """Exactly ``rows`` rows after ``last``, one query per chunk (``last`` < key <= its bound), each read
    when asked for."""
    sent = 0
    for bound in bounds:
        want = min(STREAM_CHUNK_ROWS, rows - sent)
        sql, params = paging.keyset_sql(query, last, want + 1, upto=bound)
        chunk = paging.conform(getattr(pinned.sql(sql, params), "table", None), query.table)
        if chunk.num_rows != want:
            log.error(
                "streamed page of %s: expected %d rows after %s, found %d; body aborted",
                query.table,
                want,
                last,
                chunk.num_rows,
            )
            raise RuntimeError(
                f"streamed page: expected {want} rows in the pinned snapshot, found {chunk.num_rows}"
            )
        sent += want
        last = bound
        yield chunk
    if sent != rows:
        raise RuntimeError(f"streamed page: expected {rows} rows, found {sent}")


def _merged(
    pinned: Any, query: PageQuery, counted: int, bounds: list[list[Any]], kafka: pa.Table
) -> Iterator[pa.Table]:
    """Every row of a hybrid page in sort-key order: the table's ``counted`` rows read chunk by chunk
    (:func:`_chunks`), each with the rows of ``kafka`` (sorted, none in the table) of its key range."""
    taken = 0
    chunks = iter(()) if pinned is None else _chunks(pinned, query, None, counted, bounds)
    for index, chunk in enumerate(chunks):
        upto = kafka.num_rows if index == len(bounds) - 1 else rows_upto(kafka, query.table, bounds[index])
        if upto > taken:
            chunk = _interleave(chunk, kafka.slice(taken, upto - taken), query.table)
            taken = upto
        yield chunk
    if taken < kafka.num_rows:
        yield kafka.slice(taken)


def _interleave(chunk: pa.Table, kafka: pa.Table, table: str) -> pa.Table:
    """``chunk`` and ``kafka`` (each in sort-key order, no key in both) as one table in that order, made of
    slices of the two (no copy of the chunk); many short runs are sorted instead (one copy, fewer pieces)."""
    points = _insertion_points(chunk, kafka, table)
    starts = [0, *(np.flatnonzero(np.diff(points)) + 1).tolist()]
    if len(starts) > MAX_RUNS:
        order = ("exchange_ts", "exchange", "symbol", paging.ID_COLUMN[table])
        return pa.concat_tables([chunk, kafka]).sort_by([(name, "ascending") for name in order])
    pieces, done = [], 0
    for run, begin in enumerate(starts):
        end = starts[run + 1] if run + 1 < len(starts) else kafka.num_rows
        point = int(points[begin])
        pieces += [chunk.slice(done, point - done), kafka.slice(begin, end - begin)]
        done = point
    pieces.append(chunk.slice(done))
    return pa.concat_tables(pieces)


def _times(rows: pa.Table) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.asarray(pc.cast(rows["exchange_ts"], pa.int64()).to_numpy(zero_copy_only=False), np.int64)


def _insertion_points(
    sorted_rows: pa.Table, others: pa.Table, table: str
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """For each row of ``others``: how many rows of ``sorted_rows`` (in sort-key order) have a smaller key."""
    times, wanted = _times(sorted_rows), _times(others)
    points = np.searchsorted(times, wanted, side="left").astype(np.int64)
    high = np.searchsorted(times, wanted, side="right")
    for index in np.flatnonzero(
        high > points
    ).tolist():  # same time as some rows: the rest of the key decides
        key = paging.key_of(others, table, index)
        low = int(points[index])
        points[index] = low + bisect.bisect_left(
            range(low, int(high[index])), key, key=lambda i: paging.key_of(sorted_rows, table, i)
        )
    return points


def rows_upto(sorted_rows: pa.Table, table: str, bound: list[Any]) -> int:
    """How many rows of ``sorted_rows`` (in sort-key order) have a sort key at or before ``bound``.

    >>> from datetime import UTC, datetime
    >>> t = pa.table({"exchange_ts": pa.array([datetime(2024, 1, 1, tzinfo=UTC)] * 3, pa.timestamp("us", "UTC")),
    ...               "exchange": ["b", "b", "c"], "symbol": ["X", "X", "X"], "trade_id": [1, 5, 2]})
    >>> rows_upto(t, "trades", [1704067200000000, "b", "X", 4]), rows_upto(t, "trades", [1704067200000000, "c", "X", 2])
    (1, 3)
    """
    times = _times(sorted_rows)
    low = int(np.searchsorted(times, bound[0], side="left"))
    high = int(np.searchsorted(times, bound[0], side="right"))
    # Within one time, the rest of the key decides (a few rows share a time: bisect them).
    return low + bisect.bisect_right(
        range(low, high), bound, key=lambda i: paging.key_of(sorted_rows, table, i)
    )
