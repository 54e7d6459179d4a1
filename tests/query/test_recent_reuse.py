"""The Kafka half of the hybrid query keeps its decoder between reads (issue 15 §3: hybrid p99 <= 1 s).

Building a decoder (a registry client with its SSL context, a DuckDB connection loading the Avro
extension) was measured at ~0.1-0.2 s of a ~0.4 s read of a small topic; these tests pin that reads of
the same registry and record type build it once, and that concurrent reads still each get their own
decoder and the same rows. Real Tansu broker and K2's registry; nothing mocked.
"""

from __future__ import annotations

import threading
from typing import Any

from k2.bus.producer import MarketDataProducer
from k2.config import Settings
from k2.model import TRADE
from k2.model.values import now_micros
from k2.query import recent
from tests.support.factories import wire_trade


def _trades(exchange: str, count: int) -> list[dict[str, Any]]:
    base = now_micros() - 60_000_000
    return [{**wire_trade(exchange, i, base + i), "ingest_ts": base + i} for i in range(1, count + 1)]


def _ids(settings: Settings, exchange: str) -> list[int]:
    read = recent.read_recent(settings, "trades", {}, "BTCUSDT", exchange)
    assert not read.truncated, read.reason
    return sorted(read.table["trade_id"].to_pylist())


def test_sequential_reads_build_one_decoder(settings: Settings, unique: str) -> None:
    exchange = f"rr{unique}"
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, _trades(exchange, 200))  # >= 64 rows: the block decoder's path
    recent.clear_decoders()
    before = recent.decoders_built(settings.registry_url, TRADE)
    reads = [_ids(settings, exchange) for _ in range(3)]
    assert reads == [list(range(1, 201))] * 3
    assert recent.decoders_built(settings.registry_url, TRADE) - before == 1
    # A forgotten pool builds again (the escape hatch for a registry replaced at the same URL).
    recent.clear_decoders()
    assert _ids(settings, exchange) == list(range(1, 201))
    assert recent.decoders_built(settings.registry_url, TRADE) - before == 2


def test_concurrent_reads_each_get_a_decoder_and_the_same_rows(settings: Settings, unique: str) -> None:
    exchange = f"rc{unique}"
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, _trades(exchange, 150))
    recent.clear_decoders()
    before = recent.decoders_built(settings.registry_url, TRADE)
    results: list[list[int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def read() -> None:
        try:
            start.wait(30)
            results.append(_ids(settings, exchange))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert results == [list(range(1, 151))] * 4
    built = recent.decoders_built(settings.registry_url, TRADE) - before
    assert 1 <= built <= 4
    assert _ids(settings, exchange) == list(range(1, 151))  # a later read reuses one of them
    assert recent.decoders_built(settings.registry_url, TRADE) - before == built
