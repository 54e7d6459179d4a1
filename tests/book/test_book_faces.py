"""``Client.book`` / ``book_series`` / ``trades_with_book``, ``k2 book`` and ``GET /v1/book`` over a lake
seeded with the first minute of the real BTCUSDT capture (parsed by the import's own reader)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest
from typer.testing import CliRunner

from k2.api.keys import KeyStore
from k2.cli import app
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.writer import append
from k2.model import BOOK_DELTA, TRADE, RecordType
from k2.model.arrow import records_to_arrow
from k2.model.book import OrderBook
from k2.model.values import datetime_to_micros, to_unscaled
from k2.query.client import Client
from k2.query.errors import QueryError, UnknownSymbolError
from k2.sources.binance import iter_capture_lines
from k2.sources.binance_capture import CaptureReader
from tests.api.helpers import ServerThread
from tests.sources.helpers import BINANCE_CAPTURES

AT = "2024-08-08T23:55:00Z"


@dataclass
class Lake:
    settings: Settings
    deltas: list[dict[str, object]]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    settings = Settings(data_dir=tmp_path_factory.mktemp("book") / "k2", query_pool_size=2)
    rows: dict[str, list[dict[str, object]]] = {"depth": [], "trades": []}

    def emit(record: RecordType, row: dict[str, object]) -> None:
        if record in (BOOK_DELTA, TRADE):
            rows[record.data_type.value].append({**row, "ingest_ts": row["receipt_ts"]})

    reader = CaptureReader(emit, lambda *bad: pytest.fail(f"unexpected reject {bad}"))
    for ns, raw in iter_capture_lines(BINANCE_CAPTURES[0]):
        if ns > 1_723_161_253_937_085_768 + 120 * 10**9:
            break
        reader.feed(ns, raw, "capture")
    tables = ensure_tables(load_catalog(settings), settings)
    append(tables["book_deltas"], records_to_arrow(BOOK_DELTA, rows["depth"]), "book_deltas")
    append(tables["trades"], records_to_arrow(TRADE, rows["trades"]), "trades")
    return Lake(settings, rows["depth"])


def _expected(lake: Lake, at_us: int, depth: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int]:
    book = OrderBook()
    book.apply_rows(r for r in lake.deltas if int(r["exchange_ts"]) <= at_us)  # type: ignore[call-overload]
    assert book.last_update_id is not None
    return book.top("BID", depth), book.top("ASK", depth), book.last_update_id


def test_book_at_a_moment_equals_the_replayed_book(lake: Lake) -> None:
    with Client(lake.settings) as client:
        for at in ("2024-08-08T23:54:16Z", AT, "2024-08-08T23:55:40.5Z"):
            book = client.book("BTCUSDT", at, depth=25)
            bids, asks, last = _expected(
                lake, datetime_to_micros(book.exchange_ts) if book.exchange_ts else 0, 25
            )
            assert [(to_unscaled(p), to_unscaled(s)) for p, s in book.side("BID")] == bids
            assert [(to_unscaled(p), to_unscaled(s)) for p, s in book.side("ASK")] == asks
            assert book.last_update_id == last and book.exchange == "binance"
        with pytest.raises(UnknownSymbolError, match="expected a book snapshot of 'ETHUSDT'"):
            client.book("ETHUSDT", AT)
        with pytest.raises(QueryError, match="depth: expected an integer between 1 and 1000, found 0"):
            client.book("BTCUSDT", AT, depth=0)


def test_book_series_steps_and_metrics(lake: Lake) -> None:
    with Client(lake.settings) as client:
        series = client.book_series(
            "BTCUSDT", "2024-08-08T23:54:20Z", "2024-08-08T23:55:20Z", "10s", depth=5, quantity=Decimal("1")
        )
        assert series.num_rows == 6
        for row in series.to_pylist():
            bids, asks, last = _expected(lake, datetime_to_micros(row["ts"]), 5)
            assert row["last_update_id"] == last
            assert [to_unscaled(p) for p in row["bid_prices"]] == [p for p, _ in bids]
            best_bid, best_ask = row["bid_prices"][0], row["ask_prices"][0]
            assert row["spread"] == best_ask - best_bid and row["mid"] == (best_bid + best_ask) / 2
            assert best_bid <= row["microprice"] <= best_ask
            assert -1 <= row["imbalance"] <= 1
            assert row["buy_fill_price"] >= best_ask and row["sell_fill_price"] <= best_bid
            assert row["buy_slippage_bps"] >= 0 and row["sell_slippage_bps"] >= 0


def test_trades_joined_to_the_book_just_before_them(lake: Lake) -> None:
    with Client(lake.settings) as client:
        joined = client.trades_with_book(
            "BTCUSDT", "2024-08-08T23:54:20Z", "2024-08-08T23:55:00Z"
        ).to_pylist()
    assert len(joined) > 100
    for trade in joined[::25]:
        bids, asks, last = _expected(lake, datetime_to_micros(trade["exchange_ts"]) - 1, 1)
        assert trade["book_update_id"] == last
        assert (to_unscaled(trade["bid_price"]), to_unscaled(trade["ask_price"])) == (bids[0][0], asks[0][0])
    assert all(t["bid_price"] < t["ask_price"] for t in joined)


def test_cli_book_json_and_bad_input(lake: Lake) -> None:
    """In process (typer's runner; a `python -m k2.cli` process costs ~2 s of CPU in imports): `k2 book` as
    a real process, its stdout JSON and stderr, is test_book_hybrid's CLI test."""
    env = {"K2_DATA_DIR": str(lake.settings.data_dir)}
    command = ["book", "BTCUSDT", "--at", AT, "--depth", "3", "--format", "json"]
    done = CliRunner().invoke(app, command, env=env)
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    bids, asks, last = _expected(
        lake, datetime_to_micros(Client(lake.settings).book("BTCUSDT", AT).exchange_ts), 3
    )  # type: ignore[arg-type]
    assert doc["last_update_id"] == last
    assert [(to_unscaled(b["price"]), to_unscaled(b["size"])) for b in doc["bids"]] == bids
    bad = CliRunner().invoke(app, [*command[:-2], "--depth", "0"], env=env)
    assert bad.exit_code == 2 and "expected an integer between 1 and 1000, found 0" in bad.stderr


@pytest.fixture(scope="module")
def server(lake: Lake) -> Iterator[tuple[str, str]]:
    store = KeyStore.from_settings(lake.settings)
    key, _ = store.create("reader", "read")
    thread = ServerThread(lake.settings).start()
    yield thread.url, key
    thread.stop()


def test_rest_book(lake: Lake, server: tuple[str, str]) -> None:
    url, key = server
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as http:
        answer = http.get("/v1/book", params={"symbol": "BTCUSDT", "at": AT, "depth": 2})
        assert answer.status_code == 200, answer.text
        doc = answer.json()
        assert isinstance(doc["bids"][0]["price"], str)  # exact decimals, never floats
        expected = Client(lake.settings).book("BTCUSDT", AT, depth=2)
        assert doc["last_update_id"] == expected.last_update_id
        assert [(Decimal(b["price"]), Decimal(b["size"])) for b in doc["bids"]] == expected.side("BID")
        missing = http.get("/v1/book", params={"symbol": "ETHUSDT", "at": AT})
        assert missing.status_code == 404 and "expected a book snapshot" in missing.json()["error"]["message"]
        assert http.get("/v1/book", params={"symbol": "BTCUSDT", "depth": 0}).status_code in (400, 422)
    assert httpx.get(f"{url}/v1/book", params={"symbol": "BTCUSDT"}, timeout=30).status_code == 401


def test_book_snapshots_are_written_once_consistently_and_used_by_book(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    from k2.lake.book_snapshots import write_book_snapshots
    from k2.query import book as book_module

    written = write_book_snapshots(lake.settings)
    assert written[("binance", "BTCUSDT")] >= 12  # a restart + one per 10 s bucket of 2 minutes
    assert write_book_snapshots(lake.settings) == {}  # idempotent: nothing new to write
    stored = (
        ensure_tables(load_catalog(lake.settings), lake.settings)["book_snapshots"]
        .scan()
        .to_arrow()
        .to_pylist()
    )
    assert len(stored) == written[("binance", "BTCUSDT")]
    assert len({r["last_update_id"] for r in stored}) == len(stored)
    for row in stored[::3]:
        book = OrderBook()
        book.apply_rows(r for r in lake.deltas if int(r["last_update_id"]) <= row["last_update_id"])  # type: ignore[call-overload]
        assert [
            (to_unscaled(p), to_unscaled(q)) for p, q in zip(row["bid_prices"], row["bid_sizes"], strict=True)
        ] == book.top("BID", lake.settings.book_snapshot_depth)
        assert [
            (to_unscaled(p), to_unscaled(q)) for p, q in zip(row["ask_prices"], row["ask_sizes"], strict=True)
        ] == book.top("ASK", lake.settings.book_snapshot_depth)

    with Client(lake.settings) as client:
        answers = {
            u: client.book("BTCUSDT", "2030-01-01T00:00:00Z", 5, update_id=u)
            for u in [r["last_update_id"] + 40 for r in stored]
        }
        assert any(b.read_from == "book_snapshots" for b in answers.values())
        monkeypatch.setattr(book_module, "_from_stored_snapshot", lambda *args, **kwargs: None)
        for u, fast in answers.items():
            slow = client.book("BTCUSDT", "2030-01-01T00:00:00Z", 5, update_id=u)
            assert slow.read_from == "deltas"
            assert (fast.levels.to_pylist(), fast.last_update_id, fast.exchange_ts) == (
                slow.levels.to_pylist(),
                slow.last_update_id,
                slow.exchange_ts,
            )
