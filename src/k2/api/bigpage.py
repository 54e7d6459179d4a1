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
* The first page of ``/v1/trades`` / ``/v1/quotes`` streams only when the hybrid read found no rows in
  Kafka (those cannot be pinned, so re-reading them chunk by chunk could differ); with Kafka rows the page
  is read whole, as before.
* Exactness relies on the pinned snapshot and a unique sort key (see :mod:`k2.api.paging`); were a chunk
  to return fewer rows than counted, the body is aborted (the client sees a broken transfer, never a
  short page that looks complete) and the error is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from k2.api import paging
from k2.api.cursor import CursorCodec
from k2.api.formats import LazyRows
from k2.api.paging import Page, PageQuery

log = logging.getLogger("k2.api")

STREAM_CHUNK_ROWS = 65_536
KEY_CHUNK_ROWS = 262_144


def streams(query: PageQuery) -> bool:
    """Whether a page of ``query`` may exceed one chunk (then it is streamed)."""
    return paging.fetch_size(query) > STREAM_CHUNK_ROWS


def first_page(
    client: Any, codec: CursorCodec, query: PageQuery, as_of: Any, include_recent: bool | None
) -> Page:
    """The first page of ``/v1/trades`` or ``/v1/quotes``: :func:`paging.first_rows_page`, streamed when large.

    A probe of ``STREAM_CHUNK_ROWS + 1`` rows through the query client resolves the snapshot, the unknown
    symbols (404 for an unknown one) and the Kafka part; when it holds the whole result, it is the page.
    """
    if not streams(query):
        return paging.first_rows_page(client, codec, query, as_of, include_recent)
    probe = paging.read_rows(client, query, STREAM_CHUNK_ROWS + 1, as_of, include_recent)
    if probe.data.num_rows <= STREAM_CHUNK_ROWS:  # the whole result: the page (and no more pages)
        extra = {"recent_included": probe.recent > 0}
        return paging.page_of(codec, query, probe.data, probe.snap, probe.result, extra, probe.unknown)
    if probe.recent or probe.snap is None:  # rows from Kafka are not pinnable: read the page whole, as before
        return paging.first_rows_page(client, codec, query, as_of, include_recent)
    snap = int(probe.snap)
    return streamed_page(client.as_of(snap), codec, query, snap, None, probe.unknown, probe.result)


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
) -> Page:
    """The page after ``last`` in ``snapshot_id`` (``pinned``: a client pinned to it): counted now, read lazily."""
    counted, bounds = count_page(pinned, query, last)
    rows = min(counted, query.page_size)
    cursor = None
    if paging.has_more(counted, query) and rows:
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
