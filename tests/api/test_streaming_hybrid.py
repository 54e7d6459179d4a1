"""Large first pages with rows still in Kafka (``include_recent``) stream too (issue 10 "Bounded memory").

Such a page used to be read whole through the query client -- the table's rows and Kafka's, then, for a
multi-page walk, the table's again -- and held while its client read the body. It is now counted by its
keys and sent chunk by chunk, the Kafka rows (held once, bounded by ``query_recent_max_rows``) merged into
the chunks of their key range. These tests check the answer is the one-shot hybrid answer (rows, order,
row count, cursor, ``recent_included``) and that slow readers keep the server's RSS bounded. Real broker,
registry and catalog; the Kafka rows are produced by K2's producer and never landed.
"""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest

from k2.api import bigpage, paging
from k2.api.keys import KeyStore
from k2.bus.producer import MarketDataProducer
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.writer import append
from k2.model import TRADE
from k2.query.client import Client
from tests.api.conftest import api_settings
from tests.api.helpers import (
    serve,
    shifted_copy,
    slow_readers_rss,
    trades_table,
    wait_until,
)
from tests.landing.helpers import BASE_TS
from tests.support.factories import wire_trade
from tests.support.tables import assert_same_rows

SYMBOL = "HYBUSDT"
MIB = 1 << 20


def _lake(settings: Settings, exchange: str, rows: int) -> None:
    """``rows`` trades in the table, ids 0.., one every 2 ms from BASE_TS (written directly: no Kafka offsets)."""
    base = trades_table(SYMBOL, 0, min(rows, 20_000), exchange=exchange)
    copies = [
        shifted_copy(base, i, base.num_rows * 2_000, "trade_id", base.num_rows)
        for i in range(-(-rows // base.num_rows))
    ]
    tables = ensure_tables(load_catalog(settings), settings)
    append(tables["trades"], pa.concat_tables(copies).slice(0, rows), "trades")


def _kafka(settings: Settings, exchange: str, lake_rows: int, count: int) -> int:
    """``count`` trades in Kafka only, spread over the table's time range and past it: between table rows,
    at a table row's very time (ties broken by id), plus re-sends of table rows (dropped: already landed).
    Returns how many of them are new."""
    step = lake_rows // count * 2_000
    rows = []
    for i in range(count):
        at = BASE_TS + i * step + (1_000 if i % 2 else 0)  # odd: between two table rows; even: on one
        rows.append(wire_trade(exchange, 10_000_000 + i, at, symbol=SYMBOL, instrument="HYB-USDT"))
    rows += [
        wire_trade(
            exchange,
            10_000_000 + count + i,
            BASE_TS + lake_rows * 2_000 + i,
            symbol=SYMBOL,
            instrument="HYB-USDT",
        )
        for i in range(50)
    ]
    resent = [
        wire_trade(exchange, k, BASE_TS + k * 2_000, symbol=SYMBOL, instrument="HYB-USDT") for k in range(3)
    ]
    with MarketDataProducer(settings) as producer:
        for row in [*rows, *resent]:
            producer.send(TRADE, row)
    return len(rows)


def _window(lake_rows: int) -> dict[str, Any]:
    start = datetime.fromtimestamp(BASE_TS / 1e6, UTC)
    end = datetime.fromtimestamp((BASE_TS + lake_rows * 2_000 + 1_000_000) / 1e6, UTC)
    return {"start": start, "end": end}


def _arrow(response: httpx.Response) -> pa.Table:
    assert response.status_code == 200, response.text[:500]
    return pa.ipc.open_stream(io.BytesIO(response.content)).read_all()


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count, from now on, the Kafka reads of the query client and the table rows its SQL reads return (whole
    trade rows, not the keys the page is counted by); the in-process server shares the class."""
    reads = {"recent": 0, "table_rows": 0}
    sql, recent_part = Client.sql, Client.recent_part

    def counted_sql(self: Client, *args: Any, **kwargs: Any) -> Any:
        result = sql(self, *args, **kwargs)
        if {"price", "quantity", "trade_id"} <= set(result.table.column_names):
            reads["table_rows"] += result.table.num_rows
        return result

    def counted_recent(self: Client, *args: Any, **kwargs: Any) -> Any:
        reads["recent"] += 1
        return recent_part(self, *args, **kwargs)

    monkeypatch.setattr(Client, "sql", counted_sql)
    monkeypatch.setattr(Client, "recent_part", counted_recent)
    return reads


@pytest.mark.timeout(300)
def test_a_streamed_hybrid_page_equals_the_one_shot_answer(
    tmp_path: Path,
    broker: str,
    schema_registry: str,
    monkeypatch: pytest.MonkeyPatch,
    small_stream_chunks: int,
) -> None:
    chunk = small_stream_chunks
    exchange = f"hy{uuid.uuid4().hex[:8]}"
    lake_rows = 2 * chunk + 500
    settings = api_settings(
        tmp_path / "k2", broker, schema_registry, query_max_rows=4 * chunk, api_request_timeout_seconds=120.0
    )
    _lake(settings, exchange, lake_rows)
    new = _kafka(settings, exchange, lake_rows, 2_000)
    window = _window(lake_rows)
    total = lake_rows + new
    with Client(settings) as client:
        one_shot = client.trades(SYMBOL, **window, exchange=exchange, limit=total + 1, include_recent=True)
        assert one_shot.num_rows == total and one_shot.recent_rows > 0
        snap = one_shot.snapshot_ids["trades"]
        lake = client.as_of(snap).trades(SYMBOL, **window, exchange=exchange, limit=chunk + 1001)
        # The Kafka half alone: the new rows (re-sent table rows dropped), in order, against the same snapshot.
        kafka = client.recent_part("trades", SYMBOL, **window, exchange=exchange, include_recent=True)
        assert kafka.num_rows == new and kafka.snapshot_ids == one_shot.snapshot_ids
        assert kafka["trade_id"].to_pylist() == [
            r for r in one_shot["trade_id"].to_pylist() if r >= 10_000_000
        ]
    key = KeyStore.from_settings(settings).create("hybrid", "read")[0]
    params = {
        "symbol": SYMBOL,
        "exchange": exchange,
        "start": window["start"].isoformat(),
        "end": window["end"].isoformat(),
        "include_recent": "true",
        "format": "arrow",
    }
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, timeout=120, headers={"X-API-Key": key}) as c,
    ):
        # The whole answer fits in the page: every row, the Kafka ones merged in order, no cursor.
        reads = _count_reads(monkeypatch)
        page = c.get("/v1/trades", params={**params, "limit": total})
        got = _arrow(page)
        # Each half read once: Kafka by one recent read, every table row by exactly one chunk query.
        assert reads["recent"] == 1, reads
        assert reads["table_rows"] == lake_rows, reads
        monkeypatch.undo()
        assert int(page.headers["x-row-count"]) == total and "x-next-cursor" not in page.headers
        assert page.headers["x-recent-included"] == "true" and page.headers["x-recent-truncated"] == "false"
        assert_same_rows(got, one_shot.table, "the streamed hybrid page differs from the one-shot answer")
        # More than one page: the pinned table's rows only (Kafka rows cannot be pinned), with a cursor.
        page = c.get("/v1/trades", params={**params, "limit": chunk + 1000})
        got = _arrow(page)
        assert (
            int(page.headers["x-row-count"]) == chunk + 1000 and page.headers["x-recent-included"] == "false"
        )
        assert_same_rows(got, lake.table.slice(0, chunk + 1000))
        assert "x-next-cursor" in page.headers
        rest = _arrow(
            c.get(
                "/v1/trades",
                params={**params, "limit": chunk + 1000, "cursor": page.headers["x-next-cursor"]},
            )
        )
        assert rest.num_rows == lake_rows - chunk - 1000, "the walk goes on over the pinned table"


RSS_ROWS = 800_000
READERS = 3
# What three slow readers of an 800k-row include_recent page may add to the server's RSS: each holds one
# chunk of the table's rows with the Kafka rows of its key range spliced in (the ~2,000 Kafka rows held
# once) and DuckDB keeps its scan buffers: measured +116 to +161 MiB. The old code read each page whole through the
# query client and held it while its client read: measured +573 MiB.
RSS_BOUND = 280 * MIB


@pytest.mark.timeout(300)
def test_slow_readers_of_a_large_hybrid_page_keep_rss_bounded(
    tmp_path: Path, broker: str, schema_registry: str
) -> None:
    exchange = f"hy{uuid.uuid4().hex[:8]}"
    settings = api_settings(
        tmp_path / "k2",
        broker,
        schema_registry,
        query_max_rows=2 * RSS_ROWS,
        api_max_concurrent_per_key=READERS,
        api_max_concurrent_requests=READERS + 2,
        api_request_timeout_seconds=120.0,
    )
    _lake(settings, exchange, RSS_ROWS)
    total = RSS_ROWS + _kafka(settings, exchange, RSS_ROWS, 2_000)
    window = _window(RSS_ROWS)
    key = KeyStore.from_settings(settings).create("slow", "read")[0]
    params = {
        "symbol": SYMBOL,
        "exchange": exchange,
        "start": window["start"].isoformat(),
        "end": window["end"].isoformat(),
        "include_recent": "true",
        "limit": total,
        "format": "csv",
    }
    with serve(settings) as server:
        admission = server.app.state.k2.admission
        with httpx.Client(base_url=server.url, timeout=120, headers={"X-API-Key": key}) as c:
            warm = c.get("/v1/trades", params={**params, "limit": 10})  # engine and Kafka client loaded
            assert warm.status_code == 200, warm.text[:300]
        baseline, peak = slow_readers_rss(server.url, key, "/v1/trades", params, total, READERS)
        assert wait_until(lambda: admission.total_in_progress() == 0)
    print(
        f"{READERS} slow readers of a {total:,}-row include_recent CSV page: rss baseline {baseline / MIB:.0f} MiB, "
        f"peak {peak / MIB:.0f} MiB (+{(peak - baseline) / MIB:.0f})"
    )
    assert peak - baseline < RSS_BOUND, (
        f"expected at most {RSS_BOUND / MIB:.0f} MiB more for {READERS} slow readers, found {(peak - baseline) / MIB:.0f} MiB"
    )


def _keys(n: int, ts: list[int], exchanges: list[str], ids: list[int]) -> pa.Table:
    return pa.table(
        {
            "exchange_ts": pa.array(ts, pa.int64()).cast(pa.timestamp("us", "UTC")),
            "exchange": exchanges,
            "symbol": ["X"] * n,
            "trade_id": ids,
        }
    )


@pytest.mark.parametrize("max_runs", [1_024, 1])
def test_kafka_rows_are_spliced_into_a_chunk_in_key_order(
    monkeypatch: pytest.MonkeyPatch, max_runs: int
) -> None:
    """Ties in time are ordered by exchange, symbol and id; before, between and after the chunk's rows;
    spliced as slices, or sorted in when there are many runs (``max_runs`` 1 forces that path)."""
    monkeypatch.setattr(bigpage, "MAX_RUNS", max_runs)
    chunk = _keys(6, [10, 20, 20, 20, 30, 40], ["b", "a", "b", "b", "b", "b"], [1, 9, 2, 5, 3, 4])
    kafka = _keys(6, [5, 20, 20, 20, 35, 50], ["b", "a", "b", "c", "b", "b"], [7, 1, 4, 0, 8, 6])
    merged = bigpage._interleave(chunk, kafka, "trades")
    expected = pa.concat_tables([chunk, kafka]).sort_by(
        [(name, "ascending") for name in ("exchange_ts", "exchange", "symbol", "trade_id")]
    )
    assert merged.to_pylist() == expected.to_pylist()
    assert [bigpage.rows_upto(kafka, "trades", paging.key_of(chunk, "trades", i)) for i in range(6)] == [
        1, 2, 2, 3, 4, 5,
    ]  # fmt: skip


@pytest.mark.timeout(300)
def test_a_large_page_of_a_symbol_only_in_kafka(
    tmp_path: Path, broker: str, schema_registry: str, small_stream_chunks: int
) -> None:
    """A symbol with rows in Kafka only, the table empty (no snapshot) or holding other symbols: the page is
    every Kafka row when they fit (no snapshot id, no cursor), else empty and says the Kafka rows were left
    out (a walk reads the table only); as the whole-page read answered."""
    chunk = small_stream_chunks
    exchange = f"hy{uuid.uuid4().hex[:8]}"
    rows = chunk + 3_000
    settings = api_settings(tmp_path / "k2", broker, schema_registry, query_max_rows=4 * chunk)
    trades = [
        wire_trade(exchange, i, BASE_TS + i * 1_000, symbol="KONLYUSDT", instrument="KONLY-USDT")
        for i in range(rows)
    ]
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, trades)
    del trades
    tables = ensure_tables(load_catalog(settings), settings)
    key = KeyStore.from_settings(settings).create("konly", "read")[0]
    params = {"symbol": "KONLYUSDT", "exchange": exchange, "include_recent": "true", "format": "arrow"}
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, timeout=120, headers={"X-API-Key": key}) as c,
    ):
        for table_state in ("empty", "other symbols"):
            with Client(settings) as client:
                one_shot = client.trades("KONLYUSDT", exchange=exchange, limit=rows + 1, include_recent=True)
            assert one_shot.num_rows == rows, table_state
            page = c.get("/v1/trades", params={**params, "limit": rows})
            assert_same_rows(_arrow(page), one_shot.table, table_state)
            assert page.headers["x-recent-included"] == "true" and "x-next-cursor" not in page.headers
            if table_state == "empty":
                assert page.headers["x-snapshot-ids"] == '{"trades":null}'
            walk = c.get("/v1/trades", params={**params, "limit": rows - 1})
            assert _arrow(walk).num_rows == 0 and int(walk.headers["x-row-count"]) == 0, table_state
            assert walk.headers["x-recent-included"] == "false" and "x-next-cursor" not in walk.headers
            append(tables["trades"], trades_table("OTHERUSDT", 0, 10, exchange=exchange), "trades")
