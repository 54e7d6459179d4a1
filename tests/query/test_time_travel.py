"""Time travel (as_of snapshot id / timestamp), snapshot listing, errors, the pool and read-only SQL."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from k2.query.client import Client
from k2.query.errors import (
    InvalidRangeError,
    K2QueryError,
    LimitExceededError,
    QueryError,
    UnknownSymbolError,
)

from .helpers import csv_rows, csv_trades, lake_settings, load


@pytest.fixture(scope="module")
def raw() -> list[dict[str, str]]:
    return csv_rows()


def make_lake(root: Path, raw: list[dict[str, str]]) -> tuple[Client, list[int]]:
    """Three commits of the real trades (first 600, next 600, the rest), with Kafka offsets in the summaries."""
    settings = lake_settings(root, query_max_rows=1500, query_max_range_days=2, query_pool_size=2)
    ids = []
    for lo, hi in ((0, 600), (600, 1200), (1200, len(raw))):
        offsets = {"market.crypto.trades.binance": {"0": hi}}
        ids.append(
            load(settings, "trades", csv_trades(raw[lo:hi]), {"k2.kafka.offsets": json.dumps(offsets)})
        )
        time.sleep(0.01)  # distinct commit milliseconds
    return Client(settings), ids


@pytest.fixture(scope="module")
def lake(
    tmp_path_factory: pytest.TempPathFactory, raw: list[dict[str, str]]
) -> Iterator[tuple[Client, list[int]]]:
    client, ids = make_lake(Path(tmp_path_factory.mktemp("travel")), raw)
    with client:
        yield client, ids


def test_as_of_snapshot_unchanged_after_later_commits(raw: list[dict[str, str]], tmp_path: Path) -> None:
    client, ids = make_lake(tmp_path, raw)
    first = client.trades("BTCUSDT", as_of=ids[0])
    assert first.num_rows == 600 and first.snapshot_ids == {"trades": ids[0]}
    bars_then = client.bars("BTCUSDT", "1m", as_of=ids[1]).to_pylist()
    assert bars_then[0]["trade_count"] == 1200
    # A later commit (more rows, another symbol) changes the latest view but not the pinned one.
    load(client.settings, "trades", csv_trades(raw[:50], symbol="ETHUSDT"))
    assert client.trades("BTCUSDT", as_of=ids[0]).to_pylist() == first.to_pylist()
    assert client.bars("BTCUSDT", "1m", as_of=ids[1]).to_pylist() == bars_then
    assert client.bars("BTCUSDT", "1m", include_recent=False)["trade_count"].to_pylist() == [1830]
    with pytest.raises(UnknownSymbolError):
        client.trades("ETHUSDT", as_of=ids[2])
    assert client.trades("ETHUSDT", include_recent=False).num_rows == 50


def test_as_of_timestamp_and_pinned_client(lake: tuple[Client, list[int]]) -> None:
    client, ids = lake
    snaps = client.snapshots("trades").to_pylist()
    second_at: datetime = snaps[1]["committed_at"]
    assert client.trades("BTCUSDT", as_of=second_at).num_rows == 1200
    assert client.trades("BTCUSDT", as_of=second_at.isoformat()).snapshot_ids == {"trades": ids[1]}
    pinned = client.as_of(ids[0])
    assert pinned.trades("BTCUSDT").num_rows == 600
    assert pinned.snapshot_id("trades") == ids[0]
    assert client.snapshot_id("trades") == ids[2]
    assert pinned.vwap("BTCUSDT", "2021-01-03T00:00:00Z", "2021-01-03T00:01:00Z")[
        "trade_count"
    ].to_pylist() == [600]
    # Before the first commit the table was empty: the symbol was unknown then.
    with pytest.raises(UnknownSymbolError):
        client.as_of(snaps[0]["committed_at"] - timedelta(seconds=5)).trades("BTCUSDT")
    with pytest.raises(QueryError, match="unknown snapshot"):
        client.as_of(12345)
    with pytest.raises(QueryError, match="include_recent"):
        client.trades("BTCUSDT", as_of=ids[0], include_recent=True)


def test_snapshots_list_summaries(lake: tuple[Client, list[int]]) -> None:
    client, ids = lake
    snaps = client.snapshots("trades")
    rows = snaps.to_pylist()
    assert [r["snapshot_id"] for r in rows] == ids
    assert [r["added_rows"] for r in rows] == [600, 600, 630]
    assert [r["total_rows"] for r in rows] == [600, 1200, 1830]
    assert [json.loads(r["kafka_offsets"]) for r in rows] == [
        {"market.crypto.trades.binance": {"0": n}} for n in (600, 1200, 1830)
    ]
    assert rows[1]["parent_id"] == ids[0] and rows[0]["operation"] == "append"
    assert snaps.snapshot_ids == {"trades": ids[2]}
    assert client.as_of(ids[1]).snapshots("trades")["snapshot_id"].to_pylist() == ids[:2]
    assert client.snapshots("quotes").num_rows == 0
    with pytest.raises(QueryError, match="expected a table"):
        client.snapshots("orders")


def test_errors_say_expected_and_found(lake: tuple[Client, list[int]]) -> None:
    client, _ = lake
    with pytest.raises(UnknownSymbolError, match="found 'NOPE'"):
        client.trades("NOPE", include_recent=False)
    with pytest.raises(UnknownSymbolError):
        client.bars("BTCUSDT", exchange="coinbase", include_recent=False)
    with pytest.raises(InvalidRangeError, match="expected start before end"):
        client.trades("BTCUSDT", "2021-01-03T00:01:00Z", "2021-01-03T00:00:00Z")
    with pytest.raises(InvalidRangeError, match="naive"):
        client.trades("BTCUSDT", datetime(2021, 1, 3), "2021-01-03T00:01:00Z")  # noqa: DTZ001 - the error under test
    with pytest.raises(InvalidRangeError, match="naive"):
        client.trades("BTCUSDT", "2021-01-03T00:00:00", "2021-01-03T00:01:00Z")
    with pytest.raises(InvalidRangeError, match="ISO-8601"):
        client.trades("BTCUSDT", "yesterday")
    with pytest.raises(LimitExceededError, match="at most 2 days"):
        client.trades("BTCUSDT", "2021-01-01T00:00:00Z", "2021-01-04T00:00:00Z")
    with pytest.raises(LimitExceededError, match="at most 1,500 rows"):
        client.trades("BTCUSDT", include_recent=False)  # 1,830 rows > query_max_rows (1,500)
    with pytest.raises(LimitExceededError, match="found 5,000"):
        client.trades("BTCUSDT", limit=5000, include_recent=False)
    assert client.trades("BTCUSDT", limit=10, include_recent=False)["trade_id"].to_pylist() == list(
        range(540342126, 540342136)
    )
    with pytest.raises(InvalidRangeError, match="both start and end"):
        client.vwap("BTCUSDT", "2021-01-03T00:00:00Z", None)  # type: ignore[arg-type]
    with pytest.raises(InvalidRangeError, match="tolerance"):
        client.asof_join("BTCUSDT", "2021-01-03T00:00:00Z", "2021-01-03T00:01:00Z", tolerance="soon")
    # Huge tolerances (start - tolerance would overflow a datetime) are a range error naming the bound.
    for huge in ("100000d", "99999999999999d", timedelta.max, 1e300, float("nan")):
        with pytest.raises(
            InvalidRangeError,
            match=r"tolerance: expected a duration from 1us to 2 days \(K2_QUERY_MAX_RANGE_DAYS\)",
        ):
            client.asof_join("BTCUSDT", "2021-01-03T00:00:00Z", "2021-01-03T00:01:00Z", tolerance=huge)  # type: ignore[arg-type]
    assert (
        client.asof_join("BTCUSDT", "2021-01-03T00:00:00Z", "2021-01-03T00:00:01Z", tolerance="2d").num_rows
        > 0
    )
    # A start near year 1 minus a tolerance is not an overflow either.
    assert (
        client.asof_join("BTCUSDT", "0001-01-01T00:00:00Z", "0001-01-02T00:00:00Z", tolerance="1d").num_rows
        == 0
    )
    with pytest.raises(InvalidRangeError, match="between 0001-01-01 and 9999-12-31"):
        client.trades("BTCUSDT", "9999-12-31T23:59:59-05:00")
    assert issubclass(LimitExceededError, K2QueryError) and issubclass(K2QueryError, ValueError)


def test_result_conveniences(lake: tuple[Client, list[int]]) -> None:
    client, _ = lake
    result = client.trades("BTCUSDT", "2021-01-03T00:00:00Z", "2021-01-03T00:00:01Z", include_recent=False)
    assert result.schema.field("exchange_ts").type == pa.timestamp("us", tz="UTC")
    assert result.schema.field("price").type == pa.decimal128(18, 8)
    frame = result.to_pandas()
    assert len(frame) == result.num_rows == len(result) > 0
    assert str(frame["exchange_ts"].dt.tz) == "UTC"
    assert result.to_polars().height == result.num_rows
    assert pa.table(result).num_rows == result.num_rows
    assert result.sort_by([("trade_id", "descending")])["trade_id"][0].as_py() == max(
        result["trade_id"].to_pylist()
    )


def test_pool_under_concurrent_threads(lake: tuple[Client, list[int]]) -> None:
    client, ids = lake
    expected = client.bars("BTCUSDT", "1s", as_of=ids[2]).to_pylist()
    results: list[object] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(3):
                results.append(client.bars("BTCUSDT", "1s", as_of=ids[2]).to_pylist())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 24 and all(r == expected for r in results)
    assert client._pool.created == 2  # query_pool_size bounds the connections


@pytest.mark.parametrize(
    "statement",
    [
        "COPY (SELECT * FROM trades) TO '/tmp/k2-stolen.csv'",
        "ATTACH '/tmp/k2-other.db' AS other",
        "INSERT INTO trades SELECT * FROM trades",
        "CREATE TABLE x AS SELECT 1",
        "DROP VIEW trades",
        "SET enable_external_access = true",
        "SELECT 1; SELECT 2",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/*')",
        "SELECT * FROM 'tests/fixtures/binance/BTCUSDT-trades-2021-01-03.first-minute.csv'",
        "INSTALL httpfs",
        "SELEKT 1",
    ],
)
def test_sql_refuses_anything_but_reads_of_the_views(lake: tuple[Client, list[int]], statement: str) -> None:
    client, _ = lake
    with pytest.raises(QueryError):
        client.sql(statement)


def test_sql_reads_views_with_parameters(lake: tuple[Client, list[int]]) -> None:
    client, ids = lake
    result = client.sql(
        "WITH t AS (SELECT * FROM trades WHERE symbol = ? AND side = ?) SELECT count(*) AS n, sum(quantity) AS v FROM t",
        ["BTCUSDT", "BUY"],
    )
    buys = [r for r in csv_rows() if r["is_buyer_maker"] == "False"]
    assert result.to_pylist() == [
        {"n": len(buys), "v": sum(__import__("decimal").Decimal(r["qty"]) for r in buys)}
    ]
    assert result.snapshot_ids["trades"] == ids[2]
    assert client.as_of(ids[0]).sql("SELECT count(*) AS n FROM trades").to_pylist() == [{"n": 600}]
    assert client.sql("SELECT count(*) AS n FROM quotes").to_pylist() == [{"n": 0}]
    with pytest.raises(LimitExceededError):
        client.sql("SELECT * FROM trades")
    # Locked-down connections are pooled: views are re-pointed per statement, the lock-down stays.
    assert client._sql_pool.created <= client.settings.query_pool_size
    with pytest.raises(QueryError, match="Permission"):
        client.sql("SELECT * FROM read_csv('/etc/passwd')")
    assert client.sql("SELECT count(*) AS n FROM trades").to_pylist() == [{"n": 1830}]


def test_gaps_latest_state_matches_the_ledger(tmp_path: Path) -> None:
    from k2.lake.catalog import ensure_tables, load_catalog
    from k2.landing.ledger import current_gaps
    from k2.model import GAP
    from k2.model.arrow import records_to_arrow

    settings = lake_settings(tmp_path)
    t0 = 1_723_161_255_342_000

    def gap(symbol: str, first: int, last: int, status: str, detected: int) -> dict[str, object]:
        return {
            "exchange": "binance",
            "symbol": symbol,
            "data_type": "trades",
            "first_missing_id": first,
            "last_missing_id": last,
            "missing_count": last - first + 1,
            "start_ts": t0,
            "end_ts": t0 + 1000,
            "detected_ts": detected,
            "source": "landing",
            "status": status,
            "gap_key": f"binance/{symbol}/trades/{first}-{last}",
            "detail": None,
        }

    load(
        settings,
        "gaps",
        records_to_arrow(GAP, [gap("BTCUSDT", 10, 12, "open", t0), gap("ETHUSDT", 5, 5, "open", t0)]),
    )
    load(settings, "gaps", records_to_arrow(GAP, [gap("BTCUSDT", 10, 12, "backfilled", t0 + 5_000_000)]))
    ledger_table = ensure_tables(load_catalog(settings), settings)["gaps"]
    with Client(settings) as client:
        for kwargs in (
            {},
            {"status": "open"},
            {"status": "backfilled"},
            {"symbol": "BTCUSDT"},
            {"exchange": "coinbase"},
        ):
            ours = client.gaps(**kwargs).to_pylist()  # type: ignore[arg-type]
            assert ours == current_gaps(ledger_table, **kwargs).to_pylist(), kwargs  # type: ignore[arg-type]
        assert [(g["symbol"], g["status"]) for g in client.gaps().to_pylist()] == [
            ("BTCUSDT", "backfilled"),
            ("ETHUSDT", "open"),
        ]
        with pytest.raises(QueryError, match="status: expected"):
            client.gaps(status="closed")


def test_include_recent_default_follows_the_window(tmp_path: Path, raw: list[dict[str, str]]) -> None:
    from k2.query.recent import RecentUnavailableError

    # No broker listens on port 1: whether Kafka was tried shows in recent_error.
    settings = lake_settings(
        tmp_path,
        kafka_bootstrap_servers="127.0.0.1:1",
        query_recent_timeout_seconds=0.5,
        query_recent_window_seconds=60,
    )
    load(settings, "trades", csv_trades(raw))
    now = datetime.now(UTC)
    with Client(settings) as client:
        old = client.trades("BTCUSDT", "2021-01-03T00:00:00Z", "2021-01-03T00:01:00Z", limit=5)
        assert old.recent_error is None and old.num_rows == 5  # range ends long ago: Iceberg only
        near = client.trades(
            "BTCUSDT", now - timedelta(days=1), now - timedelta(seconds=30), exchange="binance"
        )
        assert (
            near.recent_error is not None and "127.0.0.1:1" in near.recent_error
        )  # within the window: Kafka tried
        assert client.trades("BTCUSDT", limit=5).recent_error is not None  # open-ended range: Kafka tried
        with pytest.raises(UnknownSymbolError):
            client.trades(
                "BTCUSDT", now - timedelta(days=1), now - timedelta(seconds=30), exchange="coinbase"
            )
        with pytest.raises(RecentUnavailableError, match="expected Kafka"):
            client.trades("BTCUSDT", "2021-01-03T00:00:00Z", "2021-01-03T00:01:00Z", include_recent=True)


def test_sql_views_follow_new_commits_on_a_reused_connection(
    raw: list[dict[str, str]], tmp_path: Path
) -> None:
    settings = lake_settings(tmp_path, query_pool_size=1)
    first = load(settings, "trades", csv_trades(raw[:600]))
    count = "SELECT count(*) AS n FROM trades"
    with Client(settings) as client:
        assert client.sql(count).to_pylist() == [{"n": 600}]
        time.sleep(0.01)
        load(settings, "trades", csv_trades(raw[600:]))
        # Same (only) connection: its cached view is re-pointed because the table's metadata moved on.
        assert client.sql(count).to_pylist() == [{"n": len(raw)}]
        assert client.as_of(first).sql(count).to_pylist() == [{"n": 600}]
        assert client.sql(count).to_pylist() == [{"n": len(raw)}]
        assert client._sql_pool.created == 1


def test_cancel_scope_interrupts_and_frees_the_connection(raw: list[dict[str, str]], tmp_path: Path) -> None:
    from k2.query.cancel import CancelScope
    from k2.query.errors import QueryCancelledError

    settings = lake_settings(
        tmp_path, query_pool_size=1, query_max_rows=50_000_000, query_max_range_days=1000
    )
    load(settings, "trades", csv_trades(raw))
    with Client(settings) as client:
        client.sql("SELECT 1")
        client.trades("BTCUSDT", limit=1, include_recent=False)
        # A statement that would run for hours, cancelled by the scope's timeout.
        started = time.perf_counter()
        with pytest.raises(QueryCancelledError, match="interrupted"), CancelScope(timeout=0.3):
            client.sql("SELECT count(*) FROM range(10000000000000)")
        assert time.perf_counter() - started < 5
        # The query pool path, cancelled from another thread: 4 days of filled 1-second bars take seconds.
        scope = CancelScope()
        threading.Timer(0.3, scope.cancel).start()
        started = time.perf_counter()
        with pytest.raises(QueryCancelledError), scope:
            client.bars(
                "BTCUSDT",
                "1s",
                "2021-01-03T00:00:00Z",
                "2021-01-07T00:00:00Z",
                fill_empty=True,
                include_recent=False,
            )
        assert time.perf_counter() - started < 2
        # A cancelled scope refuses new statements; the connections went back to their pools and work.
        with pytest.raises(QueryCancelledError, match="before it started"), scope:
            client.sql("SELECT 1")
        assert client._pool._idle.qsize() == client._pool.created == 1
        assert client._sql_pool._idle.qsize() == client._sql_pool.created == 1
        assert client.sql("SELECT count(*) AS n FROM trades").to_pylist() == [{"n": len(raw)}]
        assert client.bars("BTCUSDT", "1m", include_recent=False).to_pylist()[0]["trade_count"] == len(raw)
