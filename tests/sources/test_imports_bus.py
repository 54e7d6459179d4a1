"""``k2 import`` with the real broker: bad lines to the DLQ (with file and line), and ``--via-kafka``
through the real schema registry and landing consumer into Iceberg."""

from __future__ import annotations

import csv
import json
import time
from decimal import Decimal
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from k2.bus.dlq import DeadLetter
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.summary import OFFSETS_KEY
from k2.landing import LandingConsumer
from k2.sources.files import import_files
from k2.telemetry.procs import free_port
from tests.support.landing import land_messages

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TRADES = FIXTURES / "binance" / "BTCUSDT-trades-2021-01-03.first-minute.csv"


def _dead_letters(
    bootstrap: str, topic: str, file_name: str, expected: int, timeout: float = 20.0
) -> list[DeadLetter]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"dlq-reader-{file_name}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 2000,
        }
    )
    consumer.subscribe([topic])
    found: list[DeadLetter] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            letter = DeadLetter.from_message(msg)
            if dict(letter.original_headers).get("k2.source.file") == file_name.encode():
                found.append(letter)
    finally:
        consumer.close()
    return found


def test_bad_lines_go_to_the_dlq_with_file_and_line_and_the_rest_lands(
    tmp_path: Path, broker: str, unique: str
) -> None:
    lines = TRADES.read_bytes().split(b"\n")
    broken = {
        5: b",".join([lines[4].split(b",")[0], b"32176.4x", *lines[4].split(b",")[2:]]),  # not a number
        100: lines[99].rsplit(b",", 1)[0],  # a field missing
        1_000: b",".join(
            [lines[999].split(b",")[0], b"-" + lines[999].split(b",")[1], *lines[999].split(b",")[2:]]
        ),  # price < 0
    }
    for line, raw in broken.items():
        lines[line - 1] = raw
    path = tmp_path / f"BTCUSDT-trades-2021-01-03.{unique}.csv"
    path.write_bytes(b"\n".join(lines))
    settings = Settings(data_dir=tmp_path / "k2", kafka_bootstrap_servers=broker)
    report = import_files("binance-trades", [path], settings)[0]
    assert (report.imported, report.rejected) == (1_827, 3)
    assert report.rejects_destination == "dlq:market.crypto.trades.binance.dlq"
    letters = _dead_letters(broker, "market.crypto.trades.binance.dlq", path.name, 3)
    by_line = {int(dict(d.original_headers)["k2.source.line"]): d for d in letters}
    assert set(by_line) == set(broken)
    for line, raw in broken.items():
        letter = by_line[line]
        assert letter.value == raw  # the original line, byte for byte
        assert letter.source_topic == "market.crypto.trades.binance" and letter.source_offset == -1
        assert f"{path.name}:{line}" in letter.detail
    assert by_line[5].reason == "bad_number" and by_line[100].reason == "bad_field_count"
    assert by_line[1_000].reason == "non_positive_price"  # the landing validator's rule, applied at import
    table = ensure_tables(load_catalog(settings), settings)["trades"]
    stored = set(table.scan().to_arrow()["trade_id"].to_pylist())
    expected = {
        int(r[0])
        for i, r in enumerate(csv.reader(TRADES.read_text().splitlines()), start=1)
        if i not in broken
    }
    assert stored == expected


def test_via_kafka_lands_through_the_landing_consumer(
    settings: Settings, private_broker: str, unique: str
) -> None:
    settings = settings.model_copy(
        update={"kafka_bootstrap_servers": private_broker, "consumer_group": f"imp-{unique}"}
    )
    report = import_files("binance-trades", [TRADES], settings, via_kafka=True)[0]
    assert report.imported == 1_830 and report.topic == "market.crypto.trades.binance"
    consumer = LandingConsumer(settings, topics=["market.crypto.trades.binance"])
    stats = land_messages(consumer, report.imported, max_seconds=60)
    assert stats.landed == 1_830
    data = consumer.tables["trades"].scan().to_arrow()
    stored = {r["trade_id"]: r for r in data.to_pylist()}
    source = list(csv.reader(TRADES.read_text().splitlines()))
    assert len(stored) == len(source) == 1_830
    for trade_id, price, qty, quote_qty, _ms, maker, best in source:
        row = stored[int(trade_id)]
        assert (str(row["price"]), str(row["quantity"]), str(row["quote_quantity"])) == (
            price,
            qty,
            quote_qty,
        )
        assert row["side"] == ("SELL" if maker == "True" else "BUY")
        assert row["conditions"] == (["BEST_MATCH"] if best == "True" else [])
    # The landing commit records Kafka offsets; a second import via Kafka is deduplicated before producing.
    assert json.loads(consumer.tables["trades"].current_snapshot().summary.additional_properties[OFFSETS_KEY])
    again = import_files("binance-trades", [TRADES], settings, via_kafka=True)[0]
    assert (again.imported, again.duplicates) == (0, 1_830)
    consumer.close()


def test_asx_trades_via_kafka_keep_times_conditions_and_vendor(
    settings: Settings, private_broker: str, unique: str
) -> None:
    from k2.sources.files import ImportOptions
    from k2.sources.files.asx_reference import ticker_map

    settings = settings.model_copy(
        update={"kafka_bootstrap_servers": private_broker, "consumer_group": f"asx-{unique}"}
    )
    asx = FIXTURES / "asx"
    options = ImportOptions(tickers=ticker_map(asx / "reference-data" / "company_info.csv"))
    report = import_files("asx-trades", [asx / "trades" / "7458.csv"], settings, options, via_kafka=True)[0]
    assert report.imported == 151 and report.topic == "market.equities.trades.asx"
    consumer = LandingConsumer(settings, topics=["market.equities.trades.asx"])
    assert land_messages(consumer, report.imported, max_seconds=60).landed == 151
    rows = consumer.tables["trades"].scan().to_arrow().to_pylist()
    consumer.close()
    source = list(csv.reader((asx / "trades" / "7458.csv").read_text().splitlines()))
    assert sorted(str(r["price"]) for r in rows) == sorted(f"{Decimal(r[2]):.8f}" for r in source)
    auction = [r for r in rows if r["conditions"] == ["AUCTION"]]
    assert len(auction) == sum(1 for r in source if r[5] == "X") and all(
        dict(r["vendor"])["venue"] == "X" for r in auction
    )
    assert {r["asset_class"] for r in rows} == {"equities"} and {r["symbol"] for r in rows} == {"RIO"}


@pytest.mark.parametrize("missing", ["broker", "registry"])
def test_import_via_kafka_without_a_stack_part_fails_in_one_clear_line(
    tmp_path: Path, broker: str, missing: str
) -> None:
    """No broker, or no schema registry: `k2 import --via-kafka` exits 1 naming what it expected, no traceback."""
    import os
    import subprocess
    import sys

    closed = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "K2_DATA_DIR": str(tmp_path / "k2"),
        "K2_KAFKA_BOOTSTRAP_SERVERS": closed if missing == "broker" else broker,
        "K2_SCHEMA_REGISTRY_URL": f"http://{closed}",
        "K2_PRODUCER_DELIVERY_TIMEOUT_SECONDS": "20",
    }
    result = subprocess.run(
        [sys.executable, "-m", "k2.cli", "import", "binance-trades", str(TRADES), "--via-kafka"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    said = " ".join(result.stderr.split())
    assert "import failed: expected" in said
    assert ("Kafka broker" if missing == "broker" else "registry") in said, said[-1000:]
