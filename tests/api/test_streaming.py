"""Large pages stream from DuckDB in keyset chunks (issue 10 "Bounded memory"): several slow readers of a
one-million-row page keep the server's RSS within a stated bound (the old code held each whole page as an
Arrow table while its client read), a client that leaves frees its slot and its memory, and a streamed
walk returns exactly the rows of the one-shot query, every page with its exact cursor and row count.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from k2.api.keys import KeyStore
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.writer import append
from tests.api.conftest import api_settings
from tests.api.helpers import (
    assert_in_progress,
    serve,
    server_rss,
    shifted_copy,
    slow_readers_rss,
    trades_table,
    wait_until,
)

ROWS = 1_000_000
READERS = 4
MIB = 1 << 20
# What four slow readers of a 1M-row page may add to the server's RSS: each holds one chunk of at most
# STREAM_CHUNK_ROWS rows (about 10 MiB as Arrow) plus its encoded batch, and the DuckDB connections keep
# their scan buffers (measured: +106 MiB in all). The old code held each whole page as Arrow while its
# client read: measured +852 MiB for four readers, and +815 MiB still held a minute after they left.
RSS_BOUND = 320 * MIB
# What may stay after the readers left (DuckDB's buffers and the allocators' caches; measured +92 MiB).
HELD_BOUND = 256 * MIB


def _million_trades() -> pa.Table:
    base = trades_table("BIGUSDT", 0, 20_000)
    span = 20_000 * 2_000  # the base covers 40 s: copies follow each other in time
    return pa.concat_tables(
        [shifted_copy(base, copy, span, "trade_id", 1_000_000) for copy in range(ROWS // 20_000)]
    )


@pytest.mark.timeout(300)
def test_slow_readers_of_a_million_row_page_keep_rss_bounded(
    tmp_path: Path, broker: str, schema_registry: str
) -> None:
    settings = api_settings(
        tmp_path / "k2",
        broker,
        schema_registry,
        query_max_rows=2 * ROWS,
        api_max_concurrent_per_key=READERS,
        api_max_concurrent_requests=READERS + 2,
        api_request_timeout_seconds=120.0,
    )
    data = _million_trades()
    start = data["exchange_ts"][0].as_py()
    end = data["exchange_ts"][ROWS - 1].as_py() + (data["exchange_ts"][1].as_py() - start)
    tables = ensure_tables(load_catalog(settings), settings)
    append(tables["trades"], data, "trades")
    del data
    key = KeyStore.from_settings(settings).create("slow", "read")[0]
    params = {"start": start.isoformat(), "end": end.isoformat(), "limit": ROWS, "format": "csv"}
    with serve(settings) as server:
        admission = server.app.state.k2.admission
        with httpx.Client(base_url=server.url, timeout=120, headers={"X-API-Key": key}) as c:
            warm = c.get("/v1/replay", params={**params, "limit": 10})  # engine loaded before the baseline
            assert warm.status_code == 200, warm.text
        baseline, peak = slow_readers_rss(
            server.url,
            key,
            "/v1/replay",
            params,
            ROWS,
            READERS,
            lambda: assert_in_progress(admission, READERS),
        )
        # Every client left mid-body: its slot is freed and so is what its response held.
        assert wait_until(lambda: admission.total_in_progress() == 0), (
            f"{admission.total_in_progress()} requests still in progress after their clients left"
        )
        freed = wait_until(lambda: server_rss() - baseline < HELD_BOUND)
        after = server_rss()
    print(
        f"{READERS} slow readers of a {ROWS:,}-row CSV page: rss baseline {baseline / MIB:.0f} MiB, "
        f"peak {peak / MIB:.0f} MiB (+{(peak - baseline) / MIB:.0f}), after they left {after / MIB:.0f} MiB"
    )
    assert peak - baseline < RSS_BOUND, (
        f"expected at most {RSS_BOUND / MIB:.0f} MiB more for {READERS} slow readers, found {(peak - baseline) / MIB:.0f} MiB"
    )
    assert freed, (
        f"expected the memory back within {HELD_BOUND / MIB:.0f} MiB of the baseline, found {(after - baseline) / MIB:.0f} MiB held"
    )


def test_a_streamed_walk_equals_the_one_shot_query(
    tmp_path: Path, broker: str, schema_registry: str, small_stream_chunks: int
) -> None:
    """Pages larger than a stream chunk: exact row counts and cursors, rows equal to one-shot, every format."""
    chunk = small_stream_chunks
    settings = api_settings(tmp_path / "k2", broker, schema_registry, query_max_rows=4 * chunk)
    tables = ensure_tables(load_catalog(settings), settings)
    rows = 2 * chunk + 777
    append(tables["trades"], trades_table("WALKUSDT", 0, rows, same_ts=7), "trades")
    key = KeyStore.from_settings(settings).create("walk", "read")[0]
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, timeout=120, headers={"X-API-Key": key}) as c,
    ):
        one_shot = c.get("/v1/trades", params={"symbol": "WALKUSDT", "limit": rows, "format": "csv"})
        assert one_shot.status_code == 200 and int(one_shot.headers["x-row-count"]) == rows
        expected = pacsv.read_csv(io.BytesIO(one_shot.content))["trade_id"].to_pylist()
        assert expected == sorted(expected) and len(set(expected)) == rows
        walks = (("csv", chunk + 5), ("json", chunk + 1), ("arrow", 2 * chunk + 777), ("parquet", 2 * chunk))
        for fmt, page_size in walks:
            got: list[int] = []
            cursor: str | None = None
            pages = 0
            while True:
                params: dict[str, object] = {"symbol": "WALKUSDT", "limit": page_size, "format": fmt}
                if cursor:
                    params["cursor"] = cursor
                page = c.get("/v1/trades", params=params)
                assert page.status_code == 200, page.text[:300]
                if fmt == "json":
                    body = page.json()
                    ids = [int(r["trade_id"]) for r in body["data"]]
                    assert body["row_count"] == len(ids) and body["next_cursor"] == page.headers.get(
                        "x-next-cursor"
                    )
                elif fmt == "csv":
                    ids = (
                        pacsv.read_csv(io.BytesIO(page.content))["trade_id"].to_pylist()
                        if page.content
                        else []
                    )
                elif fmt == "parquet":
                    ids = pq.read_table(io.BytesIO(page.content))["trade_id"].to_pylist()
                else:
                    ids = pa.ipc.open_stream(page.content).read_all()["trade_id"].to_pylist()
                assert int(page.headers["x-row-count"]) == len(ids)
                got += ids
                pages += 1
                cursor = page.headers.get("x-next-cursor")
                if cursor is None:
                    break
                assert len(ids) == page_size, "a page with a cursor is full"
            assert got == expected, f"{fmt}: the walk differs from the one-shot query"
            assert pages == -(-rows // page_size), f"{fmt}: {pages} pages"
