"""The cost model's arithmetic, checked against hand computations (the model K2 replaces was off by 100x)."""

from __future__ import annotations

import decimal
import json
import math
import os
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.writer import append
from k2.model import TRADE
from k2.ops.cost import CostError, default_prices_path, estimate, load_prices

# A complete price book with round numbers, so every line can be computed by hand below.
BOOK = """
[billing]
bytes_per_gb = 1073741824
days_per_month = 30
[workload]
iceberg_bytes_per_message = 10
kafka_bytes_per_message = 100
retention_days = 365
kafka_retention_hours = 24
kafka_replication_factor = 3
commit_interval_seconds = 5
commit_rows = 100000
data_files_per_commit = 4
metadata_puts_per_commit = 3
compaction_target_file_bytes = 134217728
queries_per_month = 1000
gets_per_query = 10
[broker]
brokers = 3
broker_per_hour_usd = 0.2
storage_per_gb_month_usd = 0.1
[object_storage]
storage_per_gb_month_usd = 0.023
put_per_1000_usd = 0.005
get_per_1000_usd = 0.0004
[catalog_db]
instance_per_hour_usd = 0.1
storage_gb = 20
storage_per_gb_month_usd = 0.1
[compute]
vcpus_per_instance = 2
instance_per_hour_usd = 0.1
landing_msgs_per_sec_per_vcpu = 100000
min_landing_instances = 2
api_instances = 1
[transfer]
cross_az_per_gb_usd = 0.02
cross_az_fraction = 0.5
"""

GIB = 1_073_741_824


@pytest.fixture
def book(tmp_path: Path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(BOOK)
    return path


def test_known_scenario_to_the_cent(book: Path) -> None:
    result = estimate(load_prices(book), msgs_per_sec=1000, retention_days=30, bytes_per_message=100)
    # 1,000 msg/s x 86,400 s x 30 days
    assert result.messages_per_month == 2_592_000_000
    hand = {
        "broker instances": 3 * 0.2 * 720,  # 432.00
        "broker storage": 1000 * 100 * 24 * 3600 * 3 / GIB * 0.1,  # 24.14 GiB -> 2.41
        "object storage": 2_592_000_000 * 100 / GIB * 0.023,  # 241.40 GiB -> 5.55
        # commits every 5 s (1000 msg/s never fills 100,000 rows): 518,400 commits x 7 PUTs,
        # + 259.2 GB / 128 MiB = 1,931.2 compacted files
        "PUT requests": (518_400 * 7 + 259_200_000_000 / 134_217_728) / 1000 * 0.005,  # 18.15
        "GET requests": (518_400 * 4 + 1000 * 10) / 1000 * 0.0004,  # 0.83
        "catalog database": 0.1 * 720 + 20 * 0.1,  # 74.00
        "landing compute": 2 * 0.1 * 720,  # 0.01 vCPU needed, minimum 2 instances: 144.00
        "API compute": 1 * 0.1 * 720,  # 72.00
        "cross-AZ transfer": 2_592_000_000 * 100 * 2 / GIB * 0.5 * 0.02,  # 4.83
    }
    assert {i.item for i in result.items} == set(hand)
    for name, usd in hand.items():
        assert round(result.item(name).monthly_usd, 2) == round(usd, 2), name
    assert round(result.total_usd, 2) == 753.78
    # cost per million = total / (2,592 million messages)
    assert math.isclose(result.cost_per_million_usd, sum(hand.values()) / 2592, rel_tol=1e-12)


def test_unit_guards_per_gb_and_per_hour(book: Path) -> None:
    result = estimate(load_prices(book), msgs_per_sec=1000, retention_days=30, bytes_per_message=100)
    # per-GB, not per-MB: 259.2e9 bytes is ~241 GiB, costing $5.55 (x1024 if GB were read as MB).
    assert 5 < result.item("object storage").monthly_usd < 6
    # per-hour x 720 h, not per-month or per-second.
    assert result.item("broker instances").monthly_usd == pytest.approx(432.0)
    # 1 million messages cost cents, not dollars or hundredths of a cent, in this scenario.
    assert 0.2 < result.cost_per_million_usd < 0.4


def test_doubling_volume_doubles_volume_lines_only(book: Path) -> None:
    prices = load_prices(book)
    # 200k and 400k msg/s: commits are triggered by rows (>= 2/s), so request counts follow volume.
    one = estimate(prices, msgs_per_sec=200_000, retention_days=90, bytes_per_message=10)
    two = estimate(prices, msgs_per_sec=400_000, retention_days=90, bytes_per_message=10)
    for name in ("broker storage", "object storage", "PUT requests", "cross-AZ transfer"):
        assert two.item(name).monthly_usd == pytest.approx(2 * one.item(name).monthly_usd, rel=1e-12), name
    for name in ("broker instances", "catalog database", "API compute"):
        assert two.item(name).monthly_usd == one.item(name).monthly_usd, name
    # Compute steps: 2 vCPU -> 1 instance (min 2), 4 vCPU -> 2 instances (min 2) -> unchanged here.
    assert two.item("landing compute").monthly_usd == one.item("landing compute").monthly_usd == 2 * 0.1 * 720
    big = estimate(prices, msgs_per_sec=1_000_000, retention_days=90, bytes_per_message=10)
    assert big.item("landing compute").monthly_usd == pytest.approx(5 * 0.1 * 720)  # 10 vCPU / 2 per instance
    for result in (one, two, big):
        assert result.cost_per_million_usd == pytest.approx(
            result.total_usd / (result.messages_per_month / 1e6), rel=1e-12
        )
    # At low rates commits happen on the interval: the landing PUTs do not grow with volume.
    low, low2 = (
        estimate(prices, msgs_per_sec=1000, bytes_per_message=10),
        estimate(prices, msgs_per_sec=2000, bytes_per_message=10),
    )
    assert (
        low.item("PUT requests").monthly_usd
        < low2.item("PUT requests").monthly_usd
        < 1.01 * low.item("PUT requests").monthly_usd
    )
    # Retention scales object storage linearly; the default comes from the book (365 days).
    assert low.retention_days == 365
    year = estimate(prices, msgs_per_sec=1000, retention_days=365, bytes_per_message=10)
    month = estimate(prices, msgs_per_sec=1000, retention_days=30, bytes_per_message=10)
    assert year.item("object storage").monthly_usd == pytest.approx(
        month.item("object storage").monthly_usd * 365 / 30
    )


def test_shipped_price_book_is_complete_and_documented() -> None:
    prices = load_prices()
    text = default_prices_path().read_text()
    assert "to be checked" in text.lower()
    for section in ("broker", "object_storage", "catalog_db", "compute", "transfer"):
        assert prices[section]["source"].startswith("https://")
    result = estimate(prices, msgs_per_sec=10_000)
    assert result.total_usd > 0 and result.bytes_source.startswith("price book")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (
            "[object_storage]\nput_per_1000_usd = 'cheap'\n",
            "object_storage.put_per_1000_usd: expected a number, found 'cheap'",
        ),
        (
            "[object_storage]\nstorage_per_gb_month = 0.02\n",
            "object_storage.storage_per_gb_month: unknown key",
        ),
        ("[broker]\nbrokers = -3\n", "broker.brokers: expected a non-negative number, found -3"),
        ("[billing]\nbytes_per_gb = 0\n", "billing.bytes_per_gb: expected a positive number, found 0"),
        ("[brokers]\nbrokers = 3\n", "unknown section [brokers]"),
        ("[broker\n", "expected valid TOML"),
    ],
)
def test_bad_price_file_names_the_key(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(CostError) as info:
        load_prices(path)
    assert needle in str(info.value)


def test_missing_price_file_and_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(CostError, match="expected an existing TOML file"):
        load_prices(tmp_path / "nope.toml")
    with pytest.raises(CostError, match="--msgs-per-sec: expected a positive number, found 0"):
        estimate(load_prices(), msgs_per_sec=0)
    runner = CliRunner()
    from k2.cli import app

    bad = tmp_path / "bad.toml"
    bad.write_text("[compute]\nvcpus_per_instance = 'two'\n")
    result = runner.invoke(app, ["cost", "--msgs-per-sec", "1000", "--prices", str(bad)])
    assert result.exit_code == 2 and "compute.vcpus_per_instance" in result.output


def test_from_table_measures_k2s_own_trades(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, book: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "k2")
    table = ensure_tables(load_catalog(settings), settings)["trades"]
    rows = [
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "instrument": "BTC-USDT",
            "asset_class": "crypto",
            "trade_id": i,
            "price": decimal.Decimal("61837.63") + i % 50,
            "quantity": decimal.Decimal("0.00123"),
            "quote_quantity": None,
            "side": "BUY" if i % 3 else "SELL",
            "exchange_ts": 1_723_161_255_342_000 + i * 3_000,
            "receipt_ts": 1_723_161_255_342_000 + i * 3_000 + 900,
            "ingest_ts": 1_723_161_255_342_000 + i * 3_000 + 950,
            "source_sequence": i,
            "conditions": ["BEST_MATCH"],
            "vendor": [],
        }
        for i in range(20_000)
    ]
    append(table, pa.Table.from_pylist(rows, schema=TRADE.arrow_schema()), "trades")
    table.refresh()
    on_disk = sum(
        os.path.getsize(p.removeprefix("file://")) for p in table.inspect.files()["file_path"].to_pylist()
    )
    monkeypatch.setenv("K2_DATA_DIR", str(settings.data_dir))
    from k2.cli import app

    result = CliRunner().invoke(
        app,
        [
            "cost",
            "--msgs-per-sec",
            "1000",
            "--retention-days",
            "30",
            "--from-table",
            "--prices",
            str(book),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["bytes_per_message"] == pytest.approx(on_disk / 20_000)
    assert "20,000 rows" in data["bytes_source"]
    lake_gib = 2_592_000_000 * (on_disk / 20_000) / GIB
    storage = next(i for i in data["items"] if i["item"] == "object storage")
    assert storage["monthly_usd"] == pytest.approx(lake_gib * 0.023)
    table_view = CliRunner().invoke(app, ["cost", "--msgs-per-sec", "1000", "--prices", str(book)])
    assert table_view.exit_code == 0 and "per million messages" in table_view.output


def test_from_table_without_data_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path / "k2")
    ensure_tables(load_catalog(settings), settings)
    monkeypatch.setenv("K2_DATA_DIR", str(settings.data_dir))
    from k2.cli import app

    result = CliRunner().invoke(app, ["cost", "--msgs-per-sec", "1000", "--from-table"])
    assert result.exit_code == 2 and "expected rows in K2's trades table, found 0 records" in result.output
