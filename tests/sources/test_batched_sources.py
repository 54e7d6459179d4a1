"""The bulk sources (``k2 import --via-kafka``, replay, the Tardis depth importer) hand whole batches to the
producer (``send_many``, the column-wise encoder), never one ``send`` per row, and every message they
produce decodes with confluent-kafka's own ``AvroDeserializer`` to its source row, with the ``k2.cid`` (or
``k2.replay``) header and a ``k2.mid`` of ``producer:sequence`` in production order (real Tansu broker,
K2's registry, a real Iceberg catalog)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

import k2.sources.files.importer as importer
import k2.sources.tardis_book as tardis_book
from k2.bus import ensure_topics
from k2.bus.producer import MarketDataProducer
from k2.config import Settings
from k2.model import TRADE, RecordType
from k2.model.values import micros_to_datetime, unscaled_to_decimal
from k2.sources import coinbase
from k2.sources.files import import_files
from k2.sources.replay import replay
from k2.sources.tardis_book import import_tardis_book
from tests.sources.helpers import COINBASE_CAPTURE, store_rows
from tests.support.broker import consume_all

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TRADES = FIXTURES / "binance" / "BTCUSDT-trades-2021-01-03.first-minute.csv"


class CountingProducer(MarketDataProducer):
    """The real producer, counting the rows callers hand to ``send`` one by one (the slow path) and the
    batches of dict rows (``send_many``; ``send_table`` encodes from Arrow columns)."""

    instances: list[CountingProducer] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.row_sends = 0
        self.dict_batches = 0
        CountingProducer.instances.append(self)

    def send_many(self, *args: Any, **kwargs: Any) -> int:
        self.dict_batches += 1
        return super().send_many(*args, **kwargs)

    def send(self, *args: Any, **kwargs: Any) -> None:
        self.row_sends += 1
        super().send(*args, **kwargs)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[CountingProducer]]:
    CountingProducer.instances = []
    monkeypatch.setattr(importer, "MarketDataProducer", CountingProducer)
    monkeypatch.setattr(tardis_book, "MarketDataProducer", CountingProducer)
    yield CountingProducer.instances


def decoded(settings: Settings, topic: str, count: int) -> list[tuple[dict[str, Any], bytes, list[Any]]]:
    """(AvroDeserializer's record, key, headers) of ``topic``'s first ``count`` messages."""
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": settings.schema_registry_url}))
    ctx = SerializationContext(topic, MessageField.VALUE)
    return [(deserializer(v, ctx), key, headers) for v, key, headers in consume_all(settings, topic, count)]


def assert_lineage(messages: list[tuple[dict[str, Any], bytes, list[Any]]], first: tuple[str, bytes]) -> None:
    """Headers: ``first`` then ``k2.mid`` = ``<k2.cid>:<sequence>``, sequences 1..n, rising in each partition
    (the messages of one key are in one partition: ``messages`` are in consumed order)."""
    assert all(len(h) == 2 and h[0] == first and h[1][0] == "k2.mid" for _, _, h in messages)
    producer_ids = {h[1][1].split(b":")[0] for _, _, h in messages}
    assert len(producer_ids) == 1
    by_key: dict[bytes, list[int]] = {}
    for _, key, h in messages:
        by_key.setdefault(key, []).append(int(h[1][1].split(b":")[1]))
    assert all(seqs == sorted(seqs) for seqs in by_key.values())
    assert sorted(s for seqs in by_key.values() for s in seqs) == list(range(1, len(messages) + 1))


def test_import_via_kafka_produces_whole_batches_that_decode_to_the_file_rows(
    settings: Settings, private_broker: str, unique: str, counting: list[CountingProducer]
) -> None:
    settings = settings.model_copy(
        update={"kafka_bootstrap_servers": private_broker, "consumer_group": f"imp-{unique}"}
    )
    report = import_files("binance-trades", [TRADES], settings, via_kafka=True)[0]
    assert report.imported == 1_830
    (producer,) = counting
    # One batch encoded from the Arrow columns (send_table): no per-row send, no dict rows.
    assert (producer.row_sends, producer.dict_batches, producer.sent) == (0, 0, 1_830)
    messages = decoded(settings, "market.crypto.trades.binance", 1_830)
    assert len(messages) == 1_830
    assert_lineage(messages, ("k2.cid", producer.correlation_id.encode()))
    source = {int(r[0]): r for r in csv.reader(TRADES.read_text().splitlines())}
    in_key_order = [got["trade_id"] for got, _, _ in messages]
    assert in_key_order == sorted(in_key_order)  # one symbol, one partition: the file's order
    for got, key, _ in messages:
        trade_id, price, qty, quote_qty, ms, maker, best = source.pop(got["trade_id"])
        assert key == b"BTCUSDT" and got["symbol"] == "BTCUSDT" and got["exchange"] == "binance"
        assert (got["price"], got["quantity"], got["quote_quantity"]) == (
            Decimal(price),
            Decimal(qty),
            Decimal(quote_qty),
        )
        assert got["exchange_ts"] == datetime.fromtimestamp(int(ms) / 1000, UTC)
        assert got["side"] == ("SELL" if maker == "True" else "BUY")
        assert got["conditions"] == (["BEST_MATCH"] if best == "True" else [])
    assert source == {}


def test_replay_produces_batches_with_its_header_in_exchange_time_order(
    settings: Settings, unique: str
) -> None:
    trades = [row for record, row, _ in coinbase.iter_capture(COINBASE_CAPTURE) if record is TRADE]
    store_rows(settings, "trades", TRADE, trades)
    expected = sorted(trades, key=lambda r: (r["exchange_ts"], r["trade_id"], r["exchange"], r["symbol"]))
    topic = f"replay.batched.{unique}"
    ensure_topics(settings, [topic], partitions=1)  # one partition: consumed order == produced order
    start, end = expected[0]["exchange_ts"], expected[-1]["exchange_ts"] + 1
    with CountingProducer(settings) as producer:
        stats = replay(
            settings,
            sorted({r["symbol"] for r in trades}),
            micros_to_datetime(start),
            micros_to_datetime(end),
            topic,
            speed=None,
            producer=producer,
        )
        assert stats.rows == len(expected) >= 16  # one window: one batch (< 16 rows would go row by row)
        assert (producer.row_sends, producer.dict_batches, producer.sent) == (0, 0, len(expected))
    messages = decoded(settings, topic, len(expected))
    assert_lineage(messages, ("k2.replay", b"market_data.trades"))
    assert [int(h[1][1].split(b":")[1]) for _, _, h in messages] == list(range(1, len(expected) + 1))
    for (got, key, _), want in zip(messages, expected, strict=True):
        assert key == want["symbol"].encode()
        assert_same_trade(TRADE, got, want)


def assert_same_trade(record: RecordType, got: dict[str, Any], want: dict[str, Any]) -> None:
    for field in record.fields:
        value = want[field.name]
        if field.name == "ingest_ts":  # restamped by the replay's producer
            assert got[field.name] is not None
        elif field.kind == "decimal" and value is not None:
            assert got[field.name] == unscaled_to_decimal(value), field.name
        elif field.kind == "timestamp" and value is not None:
            assert got[field.name] == micros_to_datetime(value), field.name
        else:
            assert got[field.name] == value, field.name


def tardis_l2_file(path: Path, updates: int) -> list[tuple[str, Decimal, Decimal]]:
    """An ``incremental_book_L2`` file: a 4-level BTCUSDT snapshot, then ``updates`` one-level events."""
    t0 = 1723161000000000
    levels = [("ask", "61000.5", "1"), ("ask", "61001", "3"), ("bid", "61000", "1"), ("bid", "60999.5", "2")]
    lines = ["exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount"]
    lines += [f"binance,BTCUSDT,{t0},{t0 + 1000},true,{s},{p},{a}" for s, p, a in levels]
    for i in range(updates):
        side, price = ("bid", f"{60000 - i % 500}.25") if i % 2 else ("ask", f"{62000 + i % 500}.75")
        lines.append(
            f"binance,BTCUSDT,{t0 + 10 * (i + 1)},{t0 + 10 * (i + 1) + 500},false,{side},{price},{i % 7}"
        )
    path.write_text("\n".join(lines) + "\n")
    rows = [line.split(",") for line in lines[1:]]
    return [(r[5].upper(), Decimal(r[6]), Decimal(r[7])) for r in rows]


def test_tardis_depth_import_produces_batches_that_decode_to_the_file_levels(
    settings: Settings, private_broker: str, tmp_path: Path, counting: list[CountingProducer]
) -> None:
    settings = settings.model_copy(update={"kafka_bootstrap_servers": private_broker})
    levels = tardis_l2_file(tmp_path / "binance_incremental_book_L2_2024-08-09_BTCUSDT.csv", 2_500)
    report = import_tardis_book([tmp_path / "binance_incremental_book_L2_2024-08-09_BTCUSDT.csv"], settings)
    assert report.rows == len(levels) == 2_504 and not report.dead_lettered
    (producer,) = counting
    assert (producer.row_sends, producer.sent) == (0, 2_504)
    messages = decoded(settings, "market.crypto.depth.binance", 2_504)
    assert_lineage(messages, ("k2.cid", producer.correlation_id.encode()))
    assert [(m["side"], m["price"], m["size"]) for m, _, _ in messages] == levels
    assert [m["is_snapshot"] for m, _, _ in messages] == [True] * 4 + [False] * 2_500
    ids = [m["last_update_id"] for m, _, _ in messages]
    assert ids == sorted(ids) and all(m["ingest_ts"] is not None for m, _, _ in messages)
