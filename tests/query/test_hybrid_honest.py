"""The hybrid query is honest: bounded reads say so, refused rows stay out, duplicates once, a reset log is found.

Real Tansu brokers and K2's registry; nothing mocked (issue 10 §3, issue 12 §7).
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from k2.bus.broker import tansu_process
from k2.bus.producer import MarketDataProducer
from k2.bus.topics import topic_name
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.landing.consumer import LandingConsumer
from k2.model import TRADE
from k2.model.arrow import records_to_arrow
from k2.model.values import micros_to_datetime, now_micros
from k2.query.client import Client
from k2.telemetry.procs import free_port
from tests.support.broker import stop_memory_broker
from tests.support.factories import wire_trade
from tests.support.landing import land_messages

from .helpers import load


def _trade(
    exchange: str, trade_id: int, price: str = "100", ts: int | None = None, quantity: str = "1"
) -> dict[str, Any]:
    ts = ts if ts is not None else now_micros() - 5_000_000
    return {**wire_trade(exchange, trade_id, ts, price=price, quantity=quantity), "ingest_ts": ts}


def _window(base: int) -> tuple[Any, Any]:
    return micros_to_datetime(base - 3_600_000_000), micros_to_datetime(base + 3_600_000_000)


def test_backlog_over_max_rows_is_flagged_with_where_it_stopped(settings: Settings, unique: str) -> None:
    exchange = f"hb{unique}"
    ensure_tables(load_catalog(settings), settings)
    base = now_micros() - 60_000_000
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, [_trade(exchange, i, ts=base + i) for i in range(1, 51)])
    client = Client(settings.model_copy(update={"query_recent_max_rows": 20}))
    rows = client.trades("BTCUSDT", exchange=exchange)
    assert rows["trade_id"].to_pylist() == list(range(1, 21))
    assert rows.recent_truncated and rows.recent_truncated_reason == "max_rows" and rows.recent_rows == 20
    topic = topic_name("crypto", "trades", exchange)
    assert (
        sum(rows.recent_stopped_at[topic].values()) == 20
    )  # one partition holds the symbol; it stopped at offset 20
    # Aggregates over the truncated read are flagged, never silently partial.
    bars = client.bars("BTCUSDT", "1h", exchange=exchange)
    assert bars.recent_truncated and bars.recent_truncated_reason == "max_rows"
    vwap = client.vwap("BTCUSDT", *_window(base), exchange=exchange, include_recent=True)
    assert vwap.recent_truncated and vwap["trade_count"].to_pylist() == [20]
    # Below the bound: not truncated.
    whole = Client(settings).trades("BTCUSDT", exchange=exchange)
    assert whole.num_rows == 50 and not whole.recent_truncated and whole.recent_stopped_at == {}
    client.close()


def test_time_bound_read_is_flagged(settings: Settings, unique: str) -> None:
    """A Kafka read cut by query_recent_timeout_seconds says so (here the bound passes before the first fetch)."""
    exchange = f"ht{unique}"
    ensure_tables(load_catalog(settings), settings)
    base = now_micros() - 60_000_000
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, [_trade(exchange, i, ts=base + i) for i in range(1, 101)])
    # A bound shorter than any broker round trip: on a quiet machine a whole read of 100 messages (metadata,
    # end offsets, one fetch) took under 10 ms, so a 0.01 s bound was met and the read rightly called complete.
    client = Client(settings.model_copy(update={"query_recent_timeout_seconds": 1e-6}))
    rows = client.trades("BTCUSDT", exchange=exchange, include_recent=True)
    assert rows.recent_truncated and rows.recent_truncated_reason == "time_bound"
    topic = topic_name("crypto", "trades", exchange)
    # Where it stopped matches what it returned (one partition holds the symbol, read from offset 0).
    assert sum(rows.recent_stopped_at[topic].values()) == rows.num_rows == rows.recent_rows <= 100
    client.close()


def test_rows_the_landing_refuses_are_not_returned(settings: Settings, unique: str) -> None:
    exchange = f"hv{unique}"
    ensure_tables(load_catalog(settings), settings)
    base = now_micros() - 60_000_000
    with MarketDataProducer(settings) as producer:
        producer.send(TRADE, _trade(exchange, 1, "100", base))
        producer.send(
            TRADE, _trade(exchange, 2, "-999999", base + 1)
        )  # the landing dead-letters: non_positive_price
        producer.send(TRADE, _trade(exchange, 3, "100", now_micros() + 3 * 86_400_000_000))  # 3 days ahead
        producer.send(TRADE, _trade(exchange, 4, "100", base + 2))
    client = Client(settings)
    assert client.trades("BTCUSDT", exchange=exchange)["trade_id"].to_pylist() == [1, 4]
    vwap = client.vwap("BTCUSDT", *_window(base), exchange=exchange, include_recent=True)
    assert vwap["vwap"].to_pylist()[0] == 100 and vwap["trade_count"].to_pylist() == [2]
    client.close()


def test_duplicates_across_iceberg_and_kafka_returned_once(settings: Settings, unique: str) -> None:
    exchange = f"hd{unique}"
    base = now_micros() - 60_000_000
    load(
        settings,
        "trades",
        records_to_arrow(TRADE, [_trade(exchange, 1, ts=base), _trade(exchange, 2, ts=base + 1)]),
    )
    with MarketDataProducer(settings) as producer:
        producer.send_many(
            TRADE,
            [
                _trade(exchange, 2, ts=base + 1),
                _trade(exchange, 3, ts=base + 2),
                _trade(exchange, 3, ts=base + 2),
            ],
        )
    client = Client(settings)
    result = client.trades("BTCUSDT", exchange=exchange, include_recent=True)
    assert result["trade_id"].to_pylist() == [1, 2, 3]
    client.close()


def test_rows_still_in_kafka_found_after_a_broker_restart(
    tmp_path: Path, schema_registry: str, unique: str
) -> None:
    """A memory broker restarted: its log starts at offset 0 again, below the offsets the snapshot stores."""
    port = free_port()
    settings = Settings(
        data_dir=tmp_path / "k2",
        kafka_bootstrap_servers=f"127.0.0.1:{port}",
        schema_registry_url=schema_registry,
        consumer_session_timeout_ms=2000,
        landing_commit_interval_seconds=0.5,
        landing_metrics_port=0,
        consumer_group=f"g-{unique}",
        topic_partitions=1,
    )
    exchange = f"hr{unique}"
    base = now_micros() - 600_000_000
    broker = tansu_process(port, tmp_path / "tansu1.log").start()
    try:
        with MarketDataProducer(settings) as producer:
            producer.send_many(TRADE, [_trade(exchange, i, ts=base + i) for i in range(1, 301)])
        land_messages(LandingConsumer(settings), 300)
    finally:
        stop_memory_broker(broker)
    broker = tansu_process(port, tmp_path / "tansu2.log").start()  # empty log
    try:
        client = Client(settings)
        with MarketDataProducer(settings) as producer:
            producer.send_many(TRADE, [_trade(exchange, i, ts=base + i) for i in range(301, 351)])
        shorter = client.trades(
            "BTCUSDT", exchange=exchange
        )  # the new log (50) is shorter than the stored offset (300)
        assert shorter["trade_id"].to_pylist() == list(range(1, 351)) and shorter.recent_rows == 50
        with MarketDataProducer(settings) as producer:
            producer.send_many(TRADE, [_trade(exchange, i, ts=base + i) for i in range(351, 651)])
        longer = client.trades(
            "BTCUSDT", exchange=exchange
        )  # now longer than it: offsets 300.. are other messages
        assert longer["trade_id"].to_pylist() == list(range(1, 651)) and longer.recent_rows == 350
        assert sum(client.bars("BTCUSDT", "1d", exchange=exchange)["trade_count"].to_pylist()) == 650
        client.close()
    finally:
        stop_memory_broker(broker)


def test_no_broker_answers_from_iceberg_at_once(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Issue 12 §7: no broker running -> one warning, Iceberg's answer, no 3 s of reconnects."""
    settings = Settings(
        data_dir=tmp_path / "k2",
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        query_recent_timeout_seconds=3.0,
    )
    base = now_micros() - 60_000_000
    load(settings, "trades", records_to_arrow(TRADE, [_trade("binance", 1, ts=base)]))
    client = Client(settings)
    client.trades("BTCUSDT", include_recent=False)  # warm up DuckDB and the catalog: time only the Kafka part
    started = time.monotonic()
    result = client.trades("BTCUSDT")
    elapsed = time.monotonic() - started
    assert result["trade_id"].to_pylist() == [1]
    assert result.recent_error is not None and "no broker answering" in result.recent_error
    assert elapsed < 1.5, elapsed
    client.close()
    time.sleep(0.2)
    err = capfd.readouterr().err
    assert err.count("Connection refused") <= 1, err


def test_quote_price_exact_decimal_survives(settings: Settings, unique: str) -> None:
    """Validation keeps good rows exact (a regression guard for the reordering by log position)."""
    exchange = f"hq{unique}"
    ensure_tables(load_catalog(settings), settings)
    base = now_micros() - 60_000_000
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, [_trade(exchange, i, "61837.63000001", base + i) for i in (5, 3, 4)])
    result = Client(settings).trades("BTCUSDT", exchange=exchange)
    assert result["trade_id"].to_pylist() == [3, 4, 5]
    assert set(result["price"].to_pylist()) == {Decimal("61837.63000001")}
