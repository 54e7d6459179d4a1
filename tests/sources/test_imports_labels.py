"""Issue 11: vendor files are never mislabelled, silently partial or silently gap-free; issue 10 §4: a
direct import carries the landing's Kafka offsets forward.

Files are real-shaped: made from the official Binance trades file in the shared data (1,830 trades,
ids 540342126..540343955, no gap). Nothing is mocked: real SQLite catalog, real Tansu broker, real
registry and landing consumer where Kafka is involved.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.summary import OFFSETS_KEY, offsets_from_summary
from k2.landing import LandingConsumer
from k2.landing.ledger import current_gaps
from k2.sources.files import FileImportError, ImportOptions, import_files
from tests.conftest import SHARED_DATA
from tests.support.landing import land_messages

SOURCE = SHARED_DATA / "binance" / "public-data" / "BTCUSDT-trades-2021-01-03.first-minute.csv"
LINES = SOURCE.read_text().splitlines()
USDM_HEADER = "id,price,qty,quote_qty,time,is_buyer_maker"


def _usdm(lines: list[str], header: bool) -> str:
    """The spot rows in USD-M's shape: 6 columns, lowercase booleans (and a header unless stripped)."""
    body = "\n".join(",".join([*r.split(",")[:5], r.split(",")[5].lower()]) for r in lines) + "\n"
    return (USDM_HEADER + "\n" + body) if header else body


@pytest.fixture
def lake(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "k2", kafka_bootstrap_servers="127.0.0.1:1")


def _trades(settings: Settings) -> pa.Table:
    table = ensure_tables(load_catalog(settings), settings)["trades"]
    return table.scan().to_arrow() if table.current_snapshot() is not None else pa.table({})


# -- detection: content and path ---------------------------------------------------------------


def test_headerless_usdm_file_lands_as_futures_never_spot(tmp_path: Path, lake: Settings) -> None:
    path = tmp_path / "BTCUSDT-trades-2021-01-03.csv"
    path.write_text(_usdm(LINES, header=False))  # `tail -n +2` of a USD-M file
    report = import_files("binance-trades", [path], lake)[0]
    assert report.imported == 1_830
    data = _trades(lake)
    assert set(data["exchange"].to_pylist()) == {"binance-futures"} and set(
        data["asset_class"].to_pylist()
    ) == {"futures"}


def test_market_flag_or_path_contradicting_the_content_is_refused(tmp_path: Path, lake: Settings) -> None:
    spot = tmp_path / "BTCUSDT-trades-2021-01-03.csv"
    spot.write_text("\n".join(LINES) + "\n")
    with pytest.raises(FileImportError, match=r"7 columns -> spot.*--market usdm -> USD-M"):
        import_files("binance-trades", [spot], lake, ImportOptions(market="usdm"))
    layout = tmp_path / "data" / "spot" / "daily" / "trades" / "BTCUSDT"
    layout.mkdir(parents=True)
    misplaced = layout / "BTCUSDT-trades-2021-01-03.csv"
    misplaced.write_text(_usdm(LINES, header=True))
    with pytest.raises(FileImportError, match=r"6 columns -> USD-M.*path spot/daily -> spot"):
        import_files("binance-trades", [misplaced], lake)
    klines = tmp_path / "BTCUSDT-1m-2024-09-21.csv"
    klines.write_text((SHARED_DATA / "binance" / "public-data" / "BTCUSDT-1m-2024-09-21.csv").read_text())
    with pytest.raises(
        FileImportError, match=r"no header row; no market in the path\); pass --market spot or --market usdm"
    ):
        import_files("binance-klines", [klines], lake)
    assert _trades(lake).num_rows == 0


def test_symbol_and_market_from_binance_layout_and_prefixed_names(tmp_path: Path, lake: Settings) -> None:
    folder = tmp_path / "data" / "futures" / "um" / "daily" / "trades" / "BTCUSDT"
    folder.mkdir(parents=True)
    in_layout = folder / "part-1.csv"  # a name without the symbol: the directory names it
    in_layout.write_text(_usdm(LINES[:900], header=False))
    prefixed = tmp_path / "futures-um-BTCUSDT-trades-2021-01-03.csv"
    prefixed.write_text(_usdm(LINES[900:], header=True))
    assert import_files("binance-trades", [in_layout], lake)[0].imported == 900
    assert import_files("binance-trades", [prefixed], lake)[0].imported == 930
    data = _trades(lake)
    assert set(zip(data["exchange"].to_pylist(), data["symbol"].to_pylist(), strict=True)) == {
        ("binance-futures", "BTCUSDT")
    }
    aggs = tmp_path / "BTCUSDT-aggTrades-2021-01-03.csv"
    aggs.write_text("\n".join(LINES) + "\n")
    with pytest.raises(FileImportError, match="found aggTrades in the path"):
        import_files("binance-trades", [aggs], lake)


def test_second_and_nanosecond_times_are_read_per_value(tmp_path: Path, lake: Settings) -> None:
    rows = [line.split(",") for line in LINES[:4]]
    rows[0][4] = str(int(rows[0][4]) * 1_000_000 + 789)  # nanoseconds (sub-microsecond digits dropped)
    rows[1][4] = str(int(rows[1][4]) // 1000)  # seconds
    path = tmp_path / "BTCUSDT-trades-2021-01-03.csv"
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    report = import_files("binance-trades", [path], lake)[0]
    assert (report.imported, report.rejected) == (4, 0)
    stored = {r["trade_id"]: r["exchange_ts"] for r in _trades(lake).to_pylist()}
    original = [line.split(",") for line in LINES[:4]]
    assert int(stored[int(rows[0][0])].timestamp() * 1000) == int(original[0][4])
    assert int(stored[int(rows[1][0])].timestamp()) == int(original[1][4]) // 1000


def test_empty_and_parquet_files_are_refused_by_name(tmp_path: Path, lake: Settings) -> None:
    empty = tmp_path / "BTCUSDT-trades-2021-01-03.csv"
    empty.write_text("\n\n")
    with pytest.raises(FileImportError, match="found an empty file"):
        import_files("binance-trades", [empty], lake)
    parquet = tmp_path / "binance_trades_2024-08-09_BTCUSDT.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"exchange": ["binance"], "price": [1.0]}), parquet)
    with pytest.raises(
        FileImportError, match=r"expected Parquet columns exchange,symbol,timestamp.*found exchange,price"
    ):
        import_files("tardis-trades", [parquet], lake)
    binance = tmp_path / "BTCUSDT-trades-2021-01-03.parquet"
    pq.write_table(pa.table({"trade_id": [1]}), binance)
    with pytest.raises(FileImportError, match="found a Parquet file"):
        import_files("binance-trades", [binance], lake)
    assert _trades(lake).num_rows == 0


def test_nautilus_parquet_is_refused_by_name_on_every_path(tmp_path: Path, lake: Settings) -> None:
    """A NautilusTrader catalog file (TradeTick layout: fixed-point price/size, ts_event/ts_init in ns, the
    instrument in the schema metadata) is named, not mistaken for a malformed Tardis or Binance file."""
    import pyarrow.parquet as pq

    # The first trade of the shared BTCUSDT file, as Nautilus's catalog writes a TradeTick.
    ticks = pa.table(
        {
            "price": pa.array([29331690000000], pa.int64()),
            "size": pa.array([388000], pa.uint64()),
            "aggressor_side": pa.array([2], pa.uint8()),
            "trade_id": ["259200227"],
            "ts_event": pa.array([1609632000166000000], pa.uint64()),
            "ts_init": pa.array([1609632000166000000], pa.uint64()),
        }
    ).replace_schema_metadata(
        {
            "instrument_id": "BTCUSDT.BINANCE",
            "price_precision": "2",
            "size_precision": "6",
            "type": "TradeTick",
        }
    )
    nautilus = tmp_path / "BTCUSDT-trades-2021-01-03.parquet"
    pq.write_table(ticks, nautilus)
    for fmt in ("tardis-trades", "binance-trades"):
        with pytest.raises(
            FileImportError, match=r"found a NautilusTrader TradeTick Parquet file \(BTCUSDT.BINANCE\)"
        ):
            import_files(fmt, [nautilus], lake)
    assert _trades(lake).num_rows == 0


def test_tardis_parquet_lands_like_its_csv(tmp_path: Path, lake: Settings) -> None:
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    source = (
        Path(__file__).resolve().parents[1] / "fixtures" / "tardis" / "binance_trades_2024-08-09_BTCUSDT.csv"
    )
    table = pa_csv.read_csv(source, convert_options=pa_csv.ConvertOptions(column_types={"id": pa.string()}))
    # As Tardis/nautilus tools write Parquet: real timestamp columns, float prices, columns in another order.
    table = table.set_column(2, "timestamp", table["timestamp"].cast(pa.timestamp("us", tz="UTC")))
    parquet = tmp_path / "binance_trades_2024-08-09_BTCUSDT.parquet"
    pq.write_table(
        table.select(["price", "amount", "side", "id", "exchange", "symbol", "timestamp", "local_timestamp"]),
        parquet,
    )
    report = import_files("tardis-trades", [parquet], lake)[0]
    assert (report.rows_read, report.imported, report.rejected) == (table.num_rows, table.num_rows, 0)
    from_parquet = sorted(
        (r["trade_id"], str(r["price"]), str(r["quantity"]), r["exchange_ts"], r["receipt_ts"])
        for r in _trades(lake).to_pylist()
    )
    csv_lake = Settings(data_dir=tmp_path / "csv", kafka_bootstrap_servers="127.0.0.1:1")
    import_files("tardis-trades", [source], csv_lake)
    from_csv = sorted(
        (r["trade_id"], str(r["price"]), str(r["quantity"]), r["exchange_ts"], r["receipt_ts"])
        for r in _trades(csv_lake).to_pylist()
    )
    assert from_parquet == from_csv


# -- gaps: the same ledger on both paths ---------------------------------------------------------


def _gap_view(settings: Settings) -> list[tuple[object, ...]]:
    gaps = current_gaps(ensure_tables(load_catalog(settings), settings)["gaps"])
    return [
        (g["exchange"], g["symbol"], g["first_missing_id"], g["last_missing_id"], g["status"], g["source"])
        for g in gaps.to_pylist()
    ]


def test_direct_import_writes_the_same_gap_as_the_kafka_path(
    tmp_path: Path, settings: Settings, private_broker: str, unique: str
) -> None:
    from k2.cli.sources_files import import_landed

    holed = tmp_path / "BTCUSDT-trades-2021-01-03.csv"
    missing = int(LINES[700].split(",")[0])
    holed.write_text("\n".join(LINES[:700] + LINES[701:]) + "\n")
    direct = settings.model_copy(update={"data_dir": tmp_path / "direct"})
    report = import_landed("binance-trades", [holed], direct)[0]
    assert (report.imported, report.gaps) == (1_829, 1)
    expected = [("binance", "BTCUSDT", missing, missing, "open", "landing")]
    assert _gap_view(direct) == expected

    kafka = settings.model_copy(
        update={
            "data_dir": tmp_path / "kafka",
            "kafka_bootstrap_servers": private_broker,
            "consumer_group": f"g-{unique}",
        }
    )
    assert import_landed("binance-trades", [holed], kafka, via_kafka=True)[0].imported == 1_829
    landing = LandingConsumer(kafka, topics=["market.crypto.trades.binance"])
    assert land_messages(landing, 1_829, max_seconds=60).landed == 1_829
    assert _gap_view(kafka) == expected

    # The missing line arrives later (a second file): the gap closes on the direct path too.
    late = tmp_path / "BTCUSDT-trades-2021-01-03.late.csv"
    late.write_text(LINES[700] + "\n")
    assert import_landed("binance-trades", [late], direct)[0].imported == 1
    assert _gap_view(direct) == [("binance", "BTCUSDT", missing, missing, "backfilled", "landing")]


def test_a_wide_direct_import_gap_closes_only_when_every_missing_id_has_arrived(
    tmp_path: Path, lake: Settings
) -> None:
    from k2.cli.sources_files import import_landed

    ids = [int(line.split(",")[0]) for line in LINES[700:705]]
    holed = tmp_path / "BTCUSDT-trades-2021-01-03.csv"
    holed.write_text("\n".join(LINES[:700] + LINES[705:]) + "\n")
    assert import_landed("binance-trades", [holed], lake)[0].gaps == 1
    opened = [("binance", "BTCUSDT", ids[0], ids[-1], "open", "landing")]
    assert _gap_view(lake) == opened

    def late(name: str, lines: list[str]) -> int:
        path = tmp_path / f"BTCUSDT-trades-2021-01-03.{name}.csv"
        path.write_text("\n".join(lines) + "\n")
        return import_landed("binance-trades", [path], lake)[0].imported

    assert late("some", [LINES[701], LINES[703]]) == 2  # two of five: the gap stays open, whole
    assert _gap_view(lake) == opened
    assert late("rest", [LINES[700], LINES[702], LINES[704]]) == 3
    assert _gap_view(lake) == [("binance", "BTCUSDT", ids[0], ids[-1], "backfilled", "landing")]
    assert _trades(lake).num_rows == len(LINES)


# -- exit codes and the rejects file -------------------------------------------------------------


def test_exit_code_says_rows_were_rejected_and_max_rejects_accepts_some(tmp_path: Path) -> None:
    from k2.cli import app
    from k2.cli.sources_files import EXIT_REJECTED

    rows = [line.split(",") for line in LINES[:10]]
    for row in rows[:3]:
        row[1] = "-" + row[1]  # negative prices: the landing validator rejects them
    path = tmp_path / "BTCUSDT-trades-2021-01-03.csv"
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    env = {"K2_DATA_DIR": str(tmp_path / "k2"), "K2_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    runner = CliRunner()
    failed = runner.invoke(app, ["import", "binance-trades", "--quiet", str(path)], env=env)
    assert failed.exit_code == EXIT_REJECTED != 1, failed.output
    assert "10 rows read, 7 imported, 0 duplicates, 3 rejected" in failed.output and "FAILED" in failed.output
    accepted = runner.invoke(
        app, ["import", "binance-trades", "--quiet", "--max-rejects", "30%", str(path)], env=env
    )
    assert accepted.exit_code == 0, accepted.output
    assert "0 imported, 7 duplicates, 3 rejected" in accepted.output
    assert (
        runner.invoke(
            app, ["import", "binance-trades", "-q", "--max-rejects", "2", str(path)], env=env
        ).exit_code
        == EXIT_REJECTED
    )
    bad = runner.invoke(app, ["import", "binance-trades", "-q", "--max-rejects", "lots", str(path)], env=env)
    assert bad.exit_code == 2 and "expected a count" in bad.output


def test_rejects_go_to_the_local_file_at_once_without_a_broker(tmp_path: Path, lake: Settings) -> None:
    rows = [line.split(",") for line in LINES[:5]]
    rows[0][1] = "-" + rows[0][1]
    path = tmp_path / "BTCUSDT-trades-2021-01-03.csv"
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    started = time.monotonic()
    report = import_files("binance-trades", [path], lake)[0]
    assert time.monotonic() - started < 3.0  # was ~5 s of Kafka probing per import
    assert report.rejected == 1 and str(lake.data_dir / "rejects") in str(report.rejects_destination)


# -- issue 10 §4: every writer carries the Kafka offsets forward ---------------------------------


def test_direct_and_kafka_imports_interleaved_never_move_positions_back(
    tmp_path: Path, settings: Settings, private_broker: str, unique: str
) -> None:
    from k2.cli.sources_files import import_landed

    settings = settings.model_copy(
        update={"kafka_bootstrap_servers": private_broker, "consumer_group": f"mix-{unique}"}
    )
    topic = "market.crypto.trades.binance"
    parts = [LINES[:500], LINES[500:900], LINES[900:1_400], LINES[1_400:]]
    files = []
    for n, part in enumerate(parts):
        files.append(tmp_path / f"BTCUSDT-trades-2021-01-03.p{n}.csv")
        files[-1].write_text("\n".join(part) + "\n")
    table = ensure_tables(load_catalog(settings), settings)["trades"]
    produced = 0
    for n, path in enumerate(files):
        via_kafka = n % 2 == 0
        report = import_landed("binance-trades", [path], settings, via_kafka=via_kafka)[0]
        assert report.imported == len(parts[n])
        if via_kafka:
            produced += report.imported
            stats = land_messages(LandingConsumer(settings, topics=[topic]), report.imported, max_seconds=60)
            # Nothing is re-read: the consumer resumes where the table says, past the direct import's commit.
            assert (stats.consumed, stats.landed, stats.duplicates, stats.dropped_stale) == (
                report.imported,
                report.imported,
                0,
                0,
            )
        table.refresh()
        stored = offsets_from_summary(table.current_snapshot().summary)
        assert (
            sum(stored.get(topic, {}).values()) == produced
        )  # one symbol: one partition holds every message
    # Every snapshot after the first landing commit holds the offsets, and they never move back.
    history = [table.snapshot_by_id(entry.snapshot_id) for entry in table.history()]
    positions = [
        sum(offsets_from_summary(s.summary).get(topic, {}).values()) for s in history if s is not None
    ]
    first = next(i for i, p in enumerate(positions) if p)
    assert all(positions[first:]) and positions[first:] == sorted(positions[first:]), positions
    assert (
        sum(json.loads(table.current_snapshot().summary.additional_properties[OFFSETS_KEY])[topic].values())
        == produced
    )
    ids = table.scan().to_arrow()["trade_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 1_830


# -- Tardis: venue names, contract units, file order, receipt time --------------------------------

TARDIS_BITMEX = (
    Path(__file__).resolve().parents[1] / "fixtures" / "tardis" / "bitmex_trades_2020-04-01_XBTUSD.csv"
)


def test_tardis_bitmex_names_contracts_order_and_receipt_time(tmp_path: Path, lake: Settings) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    header, *rows = TARDIS_BITMEX.read_text().splitlines()
    with pytest.raises(FileImportError, match="expected --contract inverse or --contract linear"):
        import_files("tardis-trades", [TARDIS_BITMEX], lake)
    # Three trades in one microsecond, UUID ids in file order (a hash of the ids would reorder them),
    # and times written in milliseconds by the tool that exported the file.
    same = rows[0].split(",")[2]
    tied = []
    for n, row in enumerate(rows):
        fields = row.split(",")
        fields[2], fields[3] = str(int(same) // 1000), str(int(fields[3]) // 1000)
        fields[4] = ["f0000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000001", ""][n]
        tied.append(",".join(fields))
    path = tmp_path / "bitmex_trades_2020-04-01_XBTUSD.csv"
    path.write_text(header + "\n" + "\n".join(tied) + "\n")
    report = import_files("tardis-trades", [path], lake, ImportOptions(contract="inverse"))[0]
    assert (report.imported, report.rejected) == (3, 0)
    stored = sorted(_trades(lake).to_pylist(), key=lambda r: r["trade_id"])
    assert [dict(r["vendor"])["id"] for r in stored] == [t.split(",")[4] for t in tied]  # file order kept
    for row, line in zip(stored, tied, strict=True):
        _, symbol, ts, local, _, _, price, amount = line.split(",")
        assert (row["symbol"], row["instrument"], row["exchange"], row["asset_class"]) == (
            "XBTUSD",
            "BTC-USD",
            "bitmex",
            "futures",
        )
        assert row["exchange_ts"] == datetime.fromtimestamp(int(ts) / 1e3, UTC)
        assert row["receipt_ts"] == datetime.fromtimestamp(
            int(local) / 1e3, UTC
        )  # local_timestamp, not the import time
        assert Decimal(str(row["quote_quantity"])) == Decimal(amount)  # USD contracts of 1 USD
        assert Decimal(str(row["quantity"])) == (Decimal(amount) / Decimal(price)).quantize(
            Decimal("0.00000001")
        )
        assert Decimal(dict(row["vendor"])["contracts"]) == Decimal(amount)


@pytest.mark.parametrize(
    ("contract", "multiplier"), [("inverse", "10"), ("linear", "0.001")], ids=["inverse-x10", "linear-x0.001"]
)
def test_tardis_contract_multiplier_sets_the_units(
    tmp_path: Path, lake: Settings, contract: str, multiplier: str
) -> None:
    """``--multiplier`` scales the contracts (e.g. a 10 USD inverse contract, a 0.001 BTC linear one): quantity in
    the base asset and quote quantity follow, exactly where they can be; the contract count stays in vendor."""
    from decimal import Decimal

    _, *rows = TARDIS_BITMEX.read_text().splitlines()
    options = ImportOptions(contract=contract, multiplier=multiplier)
    report = import_files("tardis-trades", [TARDIS_BITMEX], lake, options)[0]
    assert (report.imported, report.rejected) == (len(rows), 0)
    stored = {dict(r["vendor"])["id"]: r for r in _trades(lake).to_pylist()}
    eight = Decimal("0.00000001")
    for line in rows:
        *_, ident, _, price, amount = line.split(",")
        row = stored[ident]
        contracts = Decimal(amount) * Decimal(multiplier)
        if contract == "inverse":  # contracts of `multiplier` USD: the quote is exact, the base rounded
            assert Decimal(str(row["quote_quantity"])) == contracts
            assert Decimal(str(row["quantity"])) == (contracts / Decimal(price)).quantize(eight)
        else:  # contracts of `multiplier` BTC: the base is exact
            assert Decimal(str(row["quantity"])) == contracts
            assert Decimal(str(row["quote_quantity"])) == (contracts * Decimal(price)).quantize(eight)
        assert Decimal(dict(row["vendor"])["contracts"]) == Decimal(amount)
        assert dict(row["vendor"])["contract"] == contract


@pytest.mark.parametrize("multiplier", ["0", "-1", "ten"])
def test_tardis_multiplier_that_is_not_a_positive_decimal_is_refused(lake: Settings, multiplier: str) -> None:
    with pytest.raises(
        FileImportError, match=f"expected --multiplier a positive decimal, found '{multiplier}'"
    ):
        import_files(
            "tardis-trades", [TARDIS_BITMEX], lake, ImportOptions(contract="inverse", multiplier=multiplier)
        )
    assert _trades(lake).num_rows == 0


def test_bars_over_aggtrades_count_underlying_trades(tmp_path: Path, lake: Settings) -> None:
    from k2.query.client import Client

    # Aggregate the real trades as Binance does (same time, price and side), with the real trade ids.
    groups: list[list[list[str]]] = []
    for row in (line.split(",") for line in LINES):
        if groups and (groups[-1][0][1], groups[-1][0][4], groups[-1][0][5]) == (row[1], row[4], row[5]):
            groups[-1].append(row)
        else:
            groups.append([row])
    lines = [
        f"{480_000_000 + n},{g[0][1]},{sum(float(r[2]) for r in g):.8f},{g[0][0]},{g[-1][0]},{g[0][4]},{g[0][5]},{g[0][6]}"
        for n, g in enumerate(groups)
    ]
    path = tmp_path / "BTCUSDT-aggTrades-2021-01-03.csv"
    path.write_text("\n".join(lines) + "\n")
    assert import_files("binance-aggtrades", [path], lake)[0].imported == len(groups) < 1_830
    with Client(lake) as client:
        bar = client.bars(
            "BTCUSDT", "1m", "2021-01-03T00:00:00Z", "2021-01-03T00:01:00Z", exchange="binance-agg"
        ).to_pylist()[0]
    assert bar["trade_count"] == 1_830  # trades, as a Binance kline counts them, not aggregates
    assert (bar["first_trade_id"], bar["last_trade_id"]) == (
        int(LINES[0].split(",")[0]),
        int(LINES[-1].split(",")[0]),
    )


def test_headerless_usdm_file_via_kafka_never_merges_with_spot(
    tmp_path: Path, settings: Settings, private_broker: str, unique: str
) -> None:
    from k2.cli.sources_files import import_landed

    settings = settings.model_copy(
        update={"kafka_bootstrap_servers": private_broker, "consumer_group": f"um-{unique}"}
    )
    spot = tmp_path / "spot" / "BTCUSDT-trades-2021-01-03.csv"
    spot.parent.mkdir()
    spot.write_text("\n".join(LINES[:300]) + "\n")
    futures = tmp_path / "BTCUSDT-trades-2021-01-03.csv"
    futures.write_text(
        _usdm(LINES[:300], header=False)
    )  # the same ids: a merge would drop them as duplicates
    assert (
        import_landed("binance-trades", [spot], settings, via_kafka=True)[0].topic
        == "market.crypto.trades.binance"
    )
    report = import_landed("binance-trades", [futures], settings, via_kafka=True)[0]
    assert (report.topic, report.imported) == ("market.futures.trades.binance-futures", 300)
    topics = ["market.crypto.trades.binance", "market.futures.trades.binance-futures"]
    stats = land_messages(LandingConsumer(settings, topics=topics), 600, max_seconds=60)
    assert (stats.landed, stats.duplicates, stats.gaps) == (600, 0, 0)
    data = _trades(settings)
    pairs = sorted(set(zip(data["exchange"].to_pylist(), data["asset_class"].to_pylist(), strict=True)))
    assert pairs == [("binance", "crypto"), ("binance-futures", "futures")]


def test_reference_klines_and_asx_reference_writers_carry_offsets_forward(
    tmp_path: Path, lake: Settings
) -> None:
    """Every K2 writer builds its summary from the parent's: a stored Kafka position survives any commit."""
    from k2.lake.summary import commit_summary
    from k2.lake.writer import append
    from k2.model import INSTRUMENT
    from k2.model.arrow import records_to_arrow
    from k2.sources.files.asx_reference import import_asx_reference
    from k2.sources.reference import parse_exchange_info, write_instruments

    tables = ensure_tables(load_catalog(lake), lake)
    position = {"market.crypto.trades.binance": {"0": 41}}
    doc = json.loads(
        (Path(__file__).resolve().parents[1] / "fixtures" / "binance_exchange_info.json").read_text()
    )
    rows = parse_exchange_info(doc)
    # A commit that holds Kafka offsets (as a landing commit would), then each writer in turn.
    append(
        tables["instruments"],
        records_to_arrow(INSTRUMENT, rows[:1]),
        "instruments",
        commit_summary(None, "landing-x", offsets=position),
    )
    write_instruments(tables["instruments"], rows)
    assert offsets_from_summary(tables["instruments"].refresh().current_snapshot()) == position
    import_asx_reference(
        Path(__file__).resolve().parents[1] / "fixtures" / "asx" / "reference-data" / "company_info.csv", lake
    )
    assert offsets_from_summary(tables["instruments"].refresh().current_snapshot()) == position

    klines = SHARED_DATA / "binance" / "public-data" / "BTCUSDT-1m-2024-09-21.csv"
    append(
        tables["klines"], _kline_seed(klines), "klines", commit_summary(None, "landing-x", offsets=position)
    )
    assert import_files("binance-klines", [klines], lake, ImportOptions(market="spot"))[0].imported == 1_439
    assert offsets_from_summary(tables["klines"].refresh().current_snapshot()) == position


def _kline_seed(path: Path) -> pa.Table:
    """The file's first kline, as the importer maps it (a commit to put offsets under)."""
    import tempfile

    from k2.sources.files.formats import FORMATS
    from k2.sources.files.parse import parse_block
    from k2.sources.files.source import open_source, sniff

    first = path.read_text().splitlines()[0] + "\n"
    with tempfile.TemporaryDirectory() as folder:
        one = Path(folder) / path.name
        one.write_text(first)
        fmt = FORMATS["binance-klines"]
        layout = fmt.layout(sniff(one, open_source(one)), one.name, ImportOptions(market="spot"), 0)
        data, _ = fmt.build(parse_block(first.encode(), 1, layout.cols, header=False), layout)
    return data
