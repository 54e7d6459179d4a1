"""Large ``/v1/asof`` answers stream in keyset chunks of trades (issue 10 "Bounded memory") and say exactly
what the one-shot join says: the same rows at the chunk edges (a chunk edge inside a group of trades that
share a time, a trade whose quote lies before its chunk's first trade, trades whose last quote is older
than the tolerance), the same snapshots, pinned while the body is sent, and a bounded RSS for slow readers.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from k2.api import bigasof, bigpage
from k2.api.formats import LazyRows
from k2.api.keys import KeyStore
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.tags import create_tag
from k2.lake.writer import append
from k2.query.client import Client
from tests.api.conftest import api_settings
from tests.api.helpers import (
    assert_in_progress,
    normalise,
    quotes_table,
    serve,
    shifted_copy,
    slow_readers_rss,
    trades_table,
)
from tests.landing.helpers import BASE_TS
from tests.support.tables import assert_rows_differ, assert_same_rows

SAME_TS = (
    7  # trades per timestamp: 65,536 and 16,384 are not multiples of 7, so chunk edges split a tie group
)
TRADE_STEP_US = 2_000  # trades_table: one timestamp every 2 ms
QUOTE_STEP_US = 3_000  # quotes_table: one quote every 3 ms
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ts(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def _trade_ts(index: int) -> int:
    return BASE_TS + (index // SAME_TS) * TRADE_STEP_US


def _quotes(trades: int) -> pa.Table:
    """Quotes every 3 ms, except: none in the 60 ms before the first chunk edge but one 50 ms before it (the
    quote in force at the edge lies before the chunk's first trade), and none in the 3 s before the second
    edge (the last quote of those trades is older than the 1 s tolerance: null quote columns)."""
    count = (_trade_ts(trades - 1) - BASE_TS) // QUOTE_STEP_US + 2
    table = quotes_table("EDGEUSDT", 1, count)
    ts = table["exchange_ts"].cast(pa.int64())
    chunk = bigpage.STREAM_CHUNK_ROWS  # at call time: the tests that ask for small_stream_chunks patch it
    edge1, edge2 = _trade_ts(chunk), _trade_ts(2 * chunk)
    keep = pc.invert(
        pc.or_(
            pc.and_(pc.greater_equal(ts, edge1 - 60_000), pc.less_equal(ts, edge1 + 3_000)),
            pc.and_(pc.greater_equal(ts, edge2 - 3_000_000), pc.less_equal(ts, edge2)),
        )
    )
    lone = quotes_table("EDGEUSDT", 10_000_000, 1, ts0=edge1 - 50_000)
    return pa.concat_tables([table.filter(keep), lone])


def _seed(settings: Settings, trades: int) -> tuple[datetime, datetime]:
    tables = ensure_tables(load_catalog(settings), settings)
    append(tables["trades"], trades_table("EDGEUSDT", 0, trades, same_ts=SAME_TS), "trades")
    append(tables["quotes"], _quotes(trades), "quotes")
    return _ts(BASE_TS), _ts(_trade_ts(trades - 1) + 1)


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    types = {f.name: f.type for f in table.schema}
    return [{k: normalise(v, types[k]) for k, v in row.items()} for row in table.to_pylist()]


@pytest.mark.timeout(300)
def test_a_streamed_asof_answer_equals_the_one_shot_join(
    tmp_path: Path, broker: str, schema_registry: str, small_stream_chunks: int
) -> None:
    chunk = small_stream_chunks
    settings = api_settings(tmp_path / "k2", broker, schema_registry, query_max_rows=4 * chunk)
    trades = 2 * chunk + 777
    start, end = _seed(settings, trades)
    with Client(settings) as direct:
        one_shot = direct.asof_join("EDGEUSDT", start, end, tolerance="1s")
        snaps = direct.asof_snapshots()
        # What the route sends: lazy chunks (not one table), exactly the one-shot rows.
        lazy, lazy_snaps = bigasof.asof_rows(
            direct, settings.query_max_rows, "EDGEUSDT", start, end, exchange=None, tolerance="1s", as_of=None
        )
        assert isinstance(lazy, LazyRows) and lazy.num_rows == trades and lazy_snaps == snaps
        chunks = list(lazy.chunks)
        assert [part.num_rows for part in chunks] == [chunk, chunk, 777]
        assert_same_rows(pa.concat_tables(chunks), one_shot.table, rows=_rows)
        del chunks
    assert one_shot.num_rows == trades and snaps == one_shot.snapshot_ids
    # The rows at the chunk edges (and the ends), normalised: the JSON answer is checked against them.
    edges = (0, chunk - 1, chunk, 2 * chunk - 1, 2 * chunk, trades - 1)
    expected = dict(zip(edges, _rows(one_shot.table.take(list(edges))), strict=True))
    # The data are what the edges need: the first edge's quote lies before its chunk, the second's is stale.
    first2, last1 = expected[chunk], expected[chunk - 1]
    assert first2["quote_ts"] is not None and first2["quote_ts"] < last1["exchange_ts"]
    assert first2["quote_ts"] == normalise(_ts(_trade_ts(chunk) - 50_000))
    assert expected[2 * chunk]["quote_ts"] is None and expected[2 * chunk - 1]["quote_ts"] is None
    assert last1["exchange_ts"] == first2["exchange_ts"], (
        "the first edge splits a group of trades sharing a time"
    )
    key = KeyStore.from_settings(settings).create("asof", "read")[0]
    params = {"symbol": "EDGEUSDT", "start": start.isoformat(), "end": end.isoformat(), "tolerance": "1s"}
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, timeout=120, headers={"X-API-Key": key}) as c,
    ):
        arrow = c.get("/v1/asof", params={**params, "format": "arrow"})
        assert arrow.status_code == 200, arrow.text[:300]
        assert int(arrow.headers["x-row-count"]) == trades
        assert arrow.headers["x-snapshot-ids"].replace(" ", "") == (
            f'{{"trades":{snaps["trades"]},"quotes":{snaps["quotes"]}}}'
        )
        got = pa.ipc.open_stream(arrow.content).read_all()
        assert got.schema.equals(one_shot.table.schema), f"{got.schema} != {one_shot.table.schema}"
        assert_same_rows(got, one_shot.table, "the streamed answer differs from the one-shot join", _rows)
        body = c.get("/v1/asof", params={**params, "format": "json", "exchange": "binance"}).json()
        assert body["row_count"] == trades == len(body["data"])
        assert body["snapshot_ids"] == snaps
        for index in edges:
            assert body["data"][index] == expected[index], f"row {index}"


@pytest.mark.timeout(300)
def test_a_streamed_asof_answer_is_pinned_while_it_is_sent(
    tmp_path: Path, broker: str, schema_registry: str
) -> None:
    """Quotes landing between the headers and the last chunk change nothing: both snapshots are pinned once.

    At the real chunk size (not small_stream_chunks): the new quotes change the end of the second chunk, and
    the test proves the pin only when the server has not read that chunk before they are committed; larger
    chunks (about 10 MiB each) make it less likely that the server ran that far ahead of a 4 KiB read."""
    chunk = bigpage.STREAM_CHUNK_ROWS
    settings = api_settings(tmp_path / "k2", broker, schema_registry, query_max_rows=4 * chunk)
    trades = 2 * chunk + 777
    start, end = _seed(settings, trades)
    with Client(settings) as direct:
        expected = direct.asof_join("EDGEUSDT", start, end, tolerance="1s").table
    key = KeyStore.from_settings(settings).create("asof", "read")[0]
    params = {"symbol": "EDGEUSDT", "start": start.isoformat(), "end": end.isoformat(), "format": "arrow"}
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, timeout=120, headers={"X-API-Key": key}) as c,
        c.stream("GET", "/v1/asof", params=params) as response,
    ):
        assert response.status_code == 200
        raw = response.iter_bytes(4096)
        parts = [next(raw)]  # the body has started: the snapshots are pinned
        # New quotes inside the stale gap of the second edge: an unpinned later chunk would join them.
        fresh = quotes_table("EDGEUSDT", 20_000_000, 50, ts0=_trade_ts(2 * chunk) - 200_000)
        append(ensure_tables(load_catalog(settings), settings)["quotes"], fresh, "quotes")
        parts += list(raw)
    got = pa.ipc.open_stream(b"".join(parts)).read_all()
    assert_same_rows(got, expected, "a quote committed while the body was sent changed the answer", _rows)
    with Client(settings) as direct:
        changed = direct.asof_join("EDGEUSDT", start, end, tolerance="1s").table
    assert_rows_differ(
        changed,
        expected,
        "the new quotes should change a fresh answer (else this test proves nothing)",
        _rows,
    )


@pytest.mark.timeout(300)
def test_a_streamed_asof_answer_at_an_older_snapshot_equals_the_one_shot_join_then(
    tmp_path: Path, broker: str, schema_registry: str, small_stream_chunks: int
) -> None:
    """``as_of`` an older snapshot id, tag or time: the streamed answer is the one-shot join at that as_of;
    trades and quotes committed after it (inside the window) appear in neither."""
    chunk = small_stream_chunks
    settings = api_settings(tmp_path / "k2", broker, schema_registry, query_max_rows=4 * chunk)
    trades = 2 * chunk + 777
    start, end = _seed(settings, trades)
    tables = ensure_tables(load_catalog(settings), settings)
    create_tag(tables["quotes"], "before-more")  # quotes were committed last: the tag implies both snapshots
    with Client(settings) as direct:
        then = direct.asof_snapshots()
    moment = datetime.now(UTC)
    time.sleep(0.05)  # commit times are in ms: the later commits must come after `moment`
    # Later commits inside the window: trades between the old ones, quotes in the second edge's stale gap.
    append(tables["trades"], trades_table("EDGEUSDT", 50_000_000, 2_000, ts0=BASE_TS + 1_000), "trades")
    append(
        tables["quotes"],
        quotes_table("EDGEUSDT", 30_000_000, 50, ts0=_trade_ts(2 * chunk) - 200_000),
        "quotes",
    )
    key = KeyStore.from_settings(settings).create("asof", "read")[0]
    params = {"symbol": "EDGEUSDT", "start": start.isoformat(), "end": end.isoformat(), "format": "arrow"}
    with Client(settings) as direct:
        assert direct.asof_snapshots() != then
        for as_of in (then["quotes"], "tag:before-more", moment.isoformat()):
            assert direct.asof_snapshots(as_of) == then, f"as_of={as_of} names the snapshots of then"
        one_shot = direct.asof_join("EDGEUSDT", start, end, tolerance="1s", as_of=then["quotes"])
        assert one_shot.snapshot_ids == then and one_shot.num_rows == trades, "later trades are not in it"
        expected = one_shot.table
        del one_shot
        lazy, snaps = bigasof.asof_rows(
            direct,
            settings.query_max_rows,
            "EDGEUSDT",
            start,
            end,
            exchange=None,
            tolerance="1s",
            as_of=moment,
        )
        assert isinstance(lazy, LazyRows) and lazy.num_rows == trades and snaps == then, "streamed"
        lazy.close()
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, timeout=120, headers={"X-API-Key": key}) as c,
    ):
        for as_of in (then["quotes"], "tag:before-more"):
            response = c.get("/v1/asof", params={**params, "as_of": as_of})
            assert response.status_code == 200, response.text[:300]
            assert int(response.headers["x-row-count"]) == trades
            assert response.headers["x-snapshot-ids"].replace(" ", "") == (
                f'{{"trades":{then["trades"]},"quotes":{then["quotes"]}}}'
            )
            got = pa.ipc.open_stream(response.content).read_all()
            assert_same_rows(
                got,
                expected,
                f"as_of={as_of}: the streamed answer differs from the one-shot join then",
                _rows,
            )


ROWS = 500_000
READERS = 3
MIB = 1 << 20
# What three slow readers of a 500,000-trade CSV answer may add to the server's RSS: each holds one chunk
# (65,536 joined trades) and its encoded batch, plus DuckDB's scan buffers (measured: +119 MiB). Reading each
# answer whole held every answer as Arrow while its client read: measured +573 MiB.
RSS_BOUND = 200 * MIB


def _big_market() -> tuple[pa.Table, pa.Table]:
    """``ROWS`` trades (one every 2 ms) and a quote every 3 ms over the same time, as copies of 20,000 trades."""
    base_trades = trades_table("SLOWUSDT", 0, 20_000)
    base_quotes = quotes_table("SLOWUSDT", 0, 20_000 * TRADE_STEP_US // QUOTE_STEP_US)
    span = 20_000 * TRADE_STEP_US
    copies = range(ROWS // 20_000)
    trades = pa.concat_tables([shifted_copy(base_trades, c, span, "trade_id", 1_000_000) for c in copies])
    quotes = pa.concat_tables([shifted_copy(base_quotes, c, span, "update_id", 1_000_000) for c in copies])
    return trades, quotes


@pytest.mark.timeout(400)
def test_slow_readers_of_a_large_asof_answer_keep_rss_bounded(
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
    trades, quotes = _big_market()
    start = trades["exchange_ts"][0].as_py()
    end = trades["exchange_ts"][ROWS - 1].as_py() + timedelta(microseconds=1)
    tables = ensure_tables(load_catalog(settings), settings)
    append(tables["trades"], trades, "trades")
    append(tables["quotes"], quotes, "quotes")
    del trades, quotes
    key = KeyStore.from_settings(settings).create("slow", "read")[0]
    params = {"symbol": "SLOWUSDT", "start": start.isoformat(), "end": end.isoformat(), "format": "csv"}
    with serve(settings) as server:
        admission = server.app.state.k2.admission
        with httpx.Client(base_url=server.url, timeout=120, headers={"X-API-Key": key}) as c:
            warm_end = (start + timedelta(seconds=1)).isoformat()
            warm = c.get("/v1/asof", params={**params, "end": warm_end})  # engine loaded before the baseline
            assert warm.status_code == 200, warm.text
        baseline, peak = slow_readers_rss(
            server.url,
            key,
            "/v1/asof",
            params,
            ROWS,
            READERS,
            lambda: assert_in_progress(admission, READERS),
        )
        deadline = time.monotonic() + 60
        while admission.total_in_progress() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert admission.total_in_progress() == 0, "requests still in progress after their clients left"
    print(
        f"{READERS} slow readers of a {ROWS:,}-trade CSV asof answer: rss baseline {baseline / MIB:.0f} MiB, "
        f"peak {peak / MIB:.0f} MiB (+{(peak - baseline) / MIB:.0f})"
    )
    assert peak - baseline < RSS_BOUND, (
        f"expected at most {RSS_BOUND / MIB:.0f} MiB more for {READERS} slow readers, found {(peak - baseline) / MIB:.0f} MiB"
    )
