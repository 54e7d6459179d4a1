"""``k2 import`` straight to Iceberg, on real vendor files (a real SQLite catalog and local warehouse).

Expected values are read from the source files themselves (strings compared as strings / Decimals),
never computed by the importer.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import zipfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.sources.files import ChecksumMismatch, ImportOptions, import_files
from k2.sources.files.asx_reference import import_asx_reference, ticker_map
from k2.sources.files.importer import FILE_KEY, SHA_KEY

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TRADES = FIXTURES / "binance" / "BTCUSDT-trades-2021-01-03.first-minute.csv"
KLINES = FIXTURES / "binance" / "BTCUSDT-1m-2024-09-21.csv"
ASX = FIXTURES / "asx"
TARDIS = FIXTURES / "tardis"


@pytest.fixture
def lake(tmp_path: Path) -> Settings:
    """Settings with a fresh catalog and warehouse, and no broker (bad rows would go to a local file)."""
    return Settings(data_dir=tmp_path / "k2", kafka_bootstrap_servers="127.0.0.1:1")


def _rows(path: Path) -> list[list[str]]:
    return [row for row in csv.reader(path.read_text().splitlines()) if row]


def _table(settings: Settings, short: str = "trades") -> pa.Table:
    table = ensure_tables(load_catalog(settings), settings)[short]
    if table.current_snapshot() is None:
        return pa.table({})
    return table.scan().to_arrow()


def _by(table: pa.Table, key: str) -> dict[object, dict[str, object]]:
    return {row[key]: row for row in table.to_pylist()}


def _ms(value: str) -> datetime:
    return datetime.fromtimestamp(int(value) / 1000, UTC)


def _check_spot_trades(
    stored: dict[object, dict[str, object]], source: list[list[str]], exchange: str = "binance"
) -> None:
    assert len(stored) == len(source)
    for trade_id, price, qty, quote_qty, ms, maker, best in source:
        row = stored[int(trade_id)]
        assert (
            str(row["price"]) == price
            and str(row["quantity"]) == qty
            and str(row["quote_quantity"]) == quote_qty
        )
        assert row["exchange_ts"] == _ms(ms)
        assert row["side"] == ("SELL" if maker == "True" else "BUY")
        assert row["conditions"] == (["BEST_MATCH"] if best == "True" else [])
        assert row["exchange"] == exchange and row["symbol"] == "BTCUSDT" and row["instrument"] == "BTC-USDT"
        assert row["source_sequence"] == int(trade_id)


def test_official_trades_file_lands_exactly_and_reimport_adds_nothing(lake: Settings) -> None:
    source = _rows(TRADES)
    started = datetime.now(UTC)
    report = import_files("binance-trades", [TRADES], lake)[0]
    assert (report.rows_read, report.imported, report.duplicates, report.rejected) == (1_830, 1_830, 0, 0)
    data = _table(lake)
    assert data.num_rows == 1_830
    stored = _by(data, "trade_id")
    _check_spot_trades(stored, source)
    row = stored[int(source[0][0])]
    assert dict(row["vendor"]) == {"source_file": TRADES.name}
    assert started <= row["receipt_ts"] <= datetime.now(UTC)
    assert row["asset_class"] == "crypto"
    table = ensure_tables(load_catalog(lake), lake)["trades"]
    summary = table.current_snapshot().summary.additional_properties
    assert summary[FILE_KEY] == TRADES.name
    assert summary[SHA_KEY] == hashlib.sha256(TRADES.read_bytes()).hexdigest()

    again = import_files("binance-trades", [TRADES], lake)[0]
    assert (again.imported, again.duplicates) == (0, 1_830)
    assert _table(lake).num_rows == 1_830

    # The files K2 wrote are read by DuckDB's iceberg extension (the query layer) with the same values.
    from k2.duck import connect
    from k2.lake.catalog import metadata_location

    con = connect()
    count, total = con.execute(
        "SELECT count(*), sum(quantity) FROM iceberg_scan(?)", [metadata_location(table.refresh())]
    ).fetchone()
    assert count == 1_830 and total == sum(Decimal(r[2]) for r in source)


def _zip(folder: Path, csv_name: str, payload: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (csv_name.removesuffix(".csv") + ".zip")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(csv_name, payload)
    return path


def test_zip_with_checksum_verified_and_corrupt_checksum_refused(tmp_path: Path, lake: Settings) -> None:
    payload = TRADES.read_bytes()
    good = _zip(tmp_path / "good", "BTCUSDT-trades-2021-01-03.csv", payload)
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    (good.parent / (good.name + ".CHECKSUM")).write_text(f"{digest}  {good.name}\n")
    bad = _zip(tmp_path / "bad", "BTCUSDT-trades-2021-01-03.csv", payload)
    (bad.parent / (bad.name + ".CHECKSUM")).write_text(f"{'0' * 64}  {bad.name}\n")

    with pytest.raises(ChecksumMismatch, match="does not match"):
        import_files("binance-trades", [bad], lake)
    assert _table(lake).num_rows == 0  # nothing imported

    report = import_files("binance-trades", [good], lake)[0]
    assert report.checksum_verified and report.imported == 1_830
    _check_spot_trades(_by(_table(lake), "trade_id"), _rows(TRADES))


def test_cli_imports_and_refuses_a_corrupt_zip(tmp_path: Path) -> None:
    from k2.cli import app

    bad = _zip(tmp_path / "bad", "BTCUSDT-trades-2021-01-03.csv", TRADES.read_bytes())
    (bad.parent / (bad.name + ".CHECKSUM")).write_text(f"{'f' * 64}  {bad.name}\n")
    env = {"K2_DATA_DIR": str(tmp_path / "k2"), "K2_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    runner = CliRunner()
    refused = runner.invoke(app, ["import", "binance-trades", str(bad)], env=env)
    assert refused.exit_code == 1
    assert "does not match" in refused.output
    done = runner.invoke(app, ["import", "binance-trades", "--quiet", str(TRADES)], env=env)
    assert done.exit_code == 0, done.output
    settings = Settings(data_dir=tmp_path / "k2")
    assert _table(settings).num_rows == 1_830


def test_microsecond_times_from_2025_and_milliseconds_before(tmp_path: Path, lake: Settings) -> None:
    # A 2025 file: the real rows moved to 2025-01-01 and written in microseconds, as Binance does since then.
    shift_ms = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000) - int(
        datetime(2021, 1, 3, tzinfo=UTC).timestamp() * 1000
    )
    source = _rows(TRADES)
    lines = []
    for i, row in enumerate(source):
        micros = (int(row[4]) + shift_ms) * 1000 + i % 1000  # sub-millisecond digits, as in real 2025 files
        lines.append(",".join([*row[:4], str(micros), *row[5:]]))
    path = tmp_path / "BTCUSDT-trades-2025-01-01.csv"
    path.write_text("\n".join(lines) + "\n")
    report = import_files("binance-trades", [path], lake)[0]
    assert report.imported == 1_830
    stored = _by(_table(lake), "trade_id")
    for line in lines:
        trade_id, price, _, _, micros, _, _ = line.split(",")
        row = stored[int(trade_id)]
        expected = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(micros))
        assert row["exchange_ts"] == expected and expected.year == 2025
        assert str(row["price"]) == price


def test_futures_layout(tmp_path: Path, lake: Settings) -> None:
    source = _rows(TRADES)
    path = tmp_path / "BTCUSDT-trades-2021-01-03.csv"
    body = "\n".join(",".join([*r[:5], r[5].lower()]) for r in source)
    path.write_text("id,price,qty,quote_qty,time,is_buyer_maker\n" + body + "\n")
    report = import_files("binance-trades", [path], lake)[0]
    assert report.imported == 1_830 and report.rejected == 0
    stored = _by(_table(lake), "trade_id")
    for trade_id, price, qty, quote_qty, ms, maker, _ in source:
        row = stored[int(trade_id)]
        assert (str(row["price"]), str(row["quantity"]), str(row["quote_quantity"])) == (
            price,
            qty,
            quote_qty,
        )
        assert row["exchange_ts"] == _ms(ms)
        assert row["side"] == ("SELL" if maker == "True" else "BUY") and row["conditions"] == []
        assert (row["exchange"], row["asset_class"]) == ("binance-futures", "futures")


def test_aggtrades(tmp_path: Path, lake: Settings) -> None:
    # Aggregate the real trades as Binance does: consecutive trades with the same time, price and side.
    source = _rows(TRADES)
    groups: list[list[list[str]]] = []
    for row in source:
        if groups and (groups[-1][0][1], groups[-1][0][4], groups[-1][0][5]) == (row[1], row[4], row[5]):
            groups[-1].append(row)
        else:
            groups.append([row])
    lines = []
    first_agg = 480_000_000
    for n, group in enumerate(groups):
        qty = sum(Decimal(r[2]) for r in group)
        lines.append(
            f"{first_agg + n},{group[0][1]},{qty:.8f},{group[0][0]},{group[-1][0]},{group[0][4]},{group[0][5]},{group[0][6]}"
        )
    path = tmp_path / "BTCUSDT-aggTrades-2021-01-03.csv"
    path.write_text("\n".join(lines) + "\n")
    report = import_files("binance-aggtrades", [path], lake)[0]
    assert report.imported == len(groups) < 1_830
    stored = _by(_table(lake), "trade_id")
    for line in lines:
        agg_id, price, qty, first, last, ms, maker, best = line.split(",")
        row = stored[int(agg_id)]
        assert (str(row["price"]), str(row["quantity"])) == (price, qty)
        assert row["exchange"] == "binance-agg" and row["exchange_ts"] == _ms(ms)
        assert dict(row["vendor"])["first_trade_id"] == first and dict(row["vendor"])["last_trade_id"] == last
        assert row["side"] == ("SELL" if maker == "True" else "BUY")
        assert row["conditions"] == (["BEST_MATCH"] if best == "True" else [])


def test_klines_exact(lake: Settings) -> None:
    spot = ImportOptions(market="spot")  # a headerless klines file says nothing of its market (issue 11)
    report = import_files("binance-klines", [KLINES], lake, spot)[0]
    assert report.imported == 1_440
    stored = _by(_table(lake, "klines"), "open_time")
    source = _rows(KLINES)
    assert len(stored) == len(source) == 1_440
    for open_ms, o, h, low, c, vol, close_ms, qvol, count, tbb, tbq, _ignore in source:
        row = stored[_ms(open_ms)]
        assert [
            str(row[k])
            for k in (
                "open",
                "high",
                "low",
                "close",
                "volume",
                "quote_volume",
                "taker_buy_base",
                "taker_buy_quote",
            )
        ] == [
            o,
            h,
            low,
            c,
            vol,
            qvol,
            tbb,
            tbq,
        ]
        assert row["close_time"] == _ms(close_ms) and row["trade_count"] == int(count)
        assert (row["interval"], row["symbol"], row["exchange"]) == ("1m", "BTCUSDT", "binance")
    assert import_files("binance-klines", [KLINES], lake, spot)[0].imported == 0


def test_tardis_trades_and_quotes(tmp_path: Path, lake: Settings) -> None:
    binance = TARDIS / "binance_trades_2024-08-09_BTCUSDT.csv"
    bitmex = TARDIS / "bitmex_trades_2020-04-01_XBTUSD.csv"
    quotes = TARDIS / "binance_quotes_2024-08-09_BTCUSDT.csv"
    import_files("tardis-trades", [binance], lake)
    import_files(
        "tardis-trades", [bitmex], lake, ImportOptions(contract="inverse")
    )  # XBTUSD amounts are USD contracts
    import_files("tardis-quotes", [quotes], lake)
    trades = _table(lake).to_pylist()
    assert len(trades) == 12 + 3
    header, *rows = _rows(binance)
    by_id = {r["trade_id"]: r for r in trades if r["exchange"] == "binance"}
    for _exchange, _symbol, ts, local, ident, side, price, amount in rows:
        row = by_id[int(ident)]  # numeric Tardis ids are the exchange's own trade ids
        assert Decimal(str(row["price"])) == Decimal(price) and Decimal(str(row["quantity"])) == Decimal(
            amount
        )
        assert row["exchange_ts"] == datetime.fromtimestamp(int(ts) / 1e6, UTC)
        assert row["side"] == side.upper() and dict(row["vendor"])["local_timestamp"] == local
    mex = sorted((r for r in trades if r["exchange"] == "bitmex"), key=lambda r: r["exchange_ts"])
    assert [dict(r["vendor"])["id"] for r in mex] == [r[4] for r in _rows(bitmex)[1:]]
    assert [r["side"] for r in mex] == ["BUY", "SELL", "UNKNOWN"]
    assert len({r["trade_id"] for r in mex}) == 3 and all(r["trade_id"] > 0 for r in mex)
    assert {r["asset_class"] for r in mex} == {"futures"}

    stored_quotes = sorted(_table(lake, "quotes").to_pylist(), key=lambda r: r["update_id"])
    source_quotes = _rows(quotes)[1:]
    assert len(stored_quotes) == len(source_quotes) == 10
    assert len({q["update_id"] for q in stored_quotes}) == 10  # two rows share a local_timestamp
    for q, (_exchange, _symbol, _ts, _local, ask_amount, ask_price, bid_price, bid_amount) in zip(
        stored_quotes, source_quotes, strict=True
    ):
        for value, text in (
            (q["ask_size"], ask_amount),
            (q["ask_price"], ask_price),
            (q["bid_price"], bid_price),
            (q["bid_size"], bid_amount),
        ):
            assert (value is None) if text == "" else Decimal(str(value)) == Decimal(text)
    # Deterministic synthetic ids: importing again adds nothing (also as .csv.gz, as Tardis ships files).
    gz = tmp_path / (bitmex.name + ".gz")
    gz.write_bytes(gzip.compress(bitmex.read_bytes()))
    again = import_files("tardis-trades", [gz], lake, ImportOptions(contract="inverse"))[0]
    assert (again.rows_read, again.imported, again.duplicates) == (3, 0, 3)
    assert import_files("tardis-quotes", [quotes], lake)[0].imported == 0


def test_asx_reference_trades_quotes(tmp_path: Path, lake: Settings) -> None:
    info = ASX / "reference-data" / "company_info.csv"
    report = import_asx_reference(info, lake)
    assert report.imported == 4 and report.notes == []
    instruments = _by(_table(lake, "instruments"), "symbol")
    source = {r[1]: r for r in _rows(info)[1:]}
    assert set(instruments) == set(source)
    rio = instruments["RIO"]
    assert (rio["exchange"], rio["asset_class"], rio["currency"], rio["isin"], rio["name"]) == (
        "asx",
        "equities",
        "AUD",
        source["RIO"][3],
        source["RIO"][2],
    )
    assert import_asx_reference(info, lake).imported == 0  # unchanged rows are not added again

    # DVN listed twice (as the sample's README warns): one row kept, the duplicate reported.
    doubled = tmp_path / "company_info.csv"
    dvn = source["DVN"]
    doubled.write_text(info.read_text() + f"9999,DVN,{dvn[2]},{dvn[3]},01/02/2001,05/06/2008\n")
    again = import_asx_reference(doubled, lake)
    assert len(again.notes) == 1 and "DVN appears 2 times" in again.notes[0]
    assert ticker_map(doubled)["9999"] == "DVN"

    tickers = ticker_map(info)
    trades_file = ASX / "trades" / "7458.csv"
    trades = import_files("asx-trades", [trades_file], lake, ImportOptions(tickers=tickers))[0]
    lines = _rows(trades_file)
    assert trades.imported == len(lines) == 151 and trades.rejected == 0
    stored = [r for r in _table(lake).to_pylist() if r["symbol"] == "RIO"]
    # Line 2 is 03/10/2014 10:06:41.395 Sydney time; daylight time (UTC+11) ran until 6 April 2014.
    known = [r for r in stored if r["exchange_ts"] == datetime(2014, 3, 9, 23, 6, 41, 395_000, tzinfo=UTC)]
    assert len(known) == sum(1 for r in lines if r[1] == "10:06:41.395")
    assert sorted(str(r["quantity"]) for r in known) == sorted(
        f"{Decimal(r[3]):.8f}" for r in lines if r[1] == "10:06:41.395"
    )
    auction = [r for r in stored if r["conditions"] == ["AUCTION"]]
    assert len(auction) == sum(1 for r in lines if r[5] == "X") == 2
    assert all(dict(r["vendor"])["venue"] == "X" for r in auction)
    assert len({r["trade_id"] for r in stored}) == 151
    assert import_files("asx-trades", [trades_file], lake, ImportOptions(tickers=tickers))[0].imported == 0

    quotes_file = ASX / "quotes" / "7458.csv"
    quotes = import_files("asx-quotes", [quotes_file], lake, ImportOptions(tickers=tickers))[0]
    assert quotes.rows_read == 200 and quotes.imported + quotes.rejected == 200
    # Crossed pre-open books (bid above ask) are rejected by the landing validator's rule, with their lines.
    stored_quotes = _table(lake, "quotes").to_pylist()
    assert len(stored_quotes) == quotes.imported
    crossed = sum(1 for r in _rows(quotes_file) if Decimal(r[2]) > Decimal(r[3]) > 0)
    assert (
        crossed > 0 and quotes.rejected == crossed and quotes.rejected_by_reason == {"crossed_quote": crossed}
    )
    # No broker here: the rejects went to the local rejects file, one JSON line per bad line.
    rejects = Path(str(quotes.rejects_destination)).read_text().splitlines()
    assert len(rejects) == crossed and str(lake.data_dir / "rejects") in str(quotes.rejects_destination)


def test_dedup_within_and_across_overlapping_files(tmp_path: Path, lake: Settings) -> None:
    lines = TRADES.read_text().splitlines()
    first = tmp_path / "BTCUSDT-trades-2021-01-03.part1.csv"
    second = tmp_path / "BTCUSDT-trades-2021-01-03.part2.csv"
    first.write_text("\n".join(lines[:1_000]) + "\n")
    second.write_text("\n".join(lines[900:] + lines[1_500:1_510]) + "\n")  # overlaps part 1, repeats itself
    import_files("binance-trades", [first], lake)
    report = import_files("binance-trades", [second], lake)[0]
    assert report.imported == 830 and report.duplicates == 100 + 10
    assert sorted(_table(lake)["trade_id"].to_pylist()) == sorted(int(line.split(",")[0]) for line in lines)


def test_small_blocks_and_commits_keep_line_numbers(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "k2",
        kafka_bootstrap_servers="127.0.0.1:1",
        import_block_bytes=4_096,
        import_commit_rows=500,
    )
    report = import_files("binance-trades", [TRADES], settings)[0]
    assert report.imported == 1_830 and len(report.snapshots) >= 3
    _check_spot_trades(_by(_table(settings), "trade_id"), _rows(TRADES))


def test_wrong_layout_is_a_clear_error(tmp_path: Path, lake: Settings) -> None:
    from k2.sources.files import FileImportError

    with pytest.raises(FileImportError, match="expected Binance trades with 7 columns"):
        import_files("binance-trades", [KLINES], lake, ImportOptions(symbol="BTCUSDT"))
    odd = tmp_path / "trades.csv"
    odd.write_text(TRADES.read_text())
    with pytest.raises(FileImportError, match="expected the symbol in the file name"):
        import_files("binance-trades", [odd], lake)


def test_concurrent_overlapping_imports_never_duplicate(tmp_path: Path, lake: Settings) -> None:
    import threading

    lines = TRADES.read_text().splitlines()
    parts = [tmp_path / "BTCUSDT-trades-2021-01-03.a.csv", tmp_path / "BTCUSDT-trades-2021-01-03.b.csv"]
    parts[0].write_text("\n".join(lines[:1_200]) + "\n")
    parts[1].write_text("\n".join(lines[600:]) + "\n")
    ensure_tables(load_catalog(lake), lake)  # tables exist (`k2 init`); the race under test is the commit
    errors: list[BaseException] = []
    reports = []

    def run(path: Path) -> None:
        try:
            reports.append(import_files("binance-trades", [path], lake)[0])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    ids = _table(lake)["trade_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 1_830
    assert sum(r.imported for r in reports) == 1_830 and sum(r.duplicates for r in reports) == 600


def test_commit_conflict_is_retried_after_a_fresh_dedup(
    tmp_path: Path, lake: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer commits the same rows between our dedup and our commit: ours must fail, re-check, add nothing."""
    import k2.sources.files.importer as importer

    real = importer.append_sorted
    calls = []

    def concurrent_writer_first(table, data, short, properties):  # type: ignore[no-untyped-def]
        if not calls:
            calls.append(1)
            other = ensure_tables(load_catalog(lake), lake)[
                "trades"
            ]  # a separate table object: another writer
            real(other, data, short, properties)
        return real(table, data, short, properties)

    monkeypatch.setattr(importer, "append_sorted", concurrent_writer_first)
    report = import_files("binance-trades", [TRADES], lake)[0]
    assert calls and report.imported == 0 and report.duplicates == 1_830
    ids = _table(lake)["trade_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 1_830


def test_synthetic_ids_do_not_depend_on_block_boundaries(tmp_path: Path) -> None:
    """Runs of equal timestamps split across read blocks keep counting (same ids as one block)."""
    tickers = ticker_map(ASX / "reference-data" / "company_info.csv")
    trades_file = ASX / "trades" / "7458.csv"
    ids = []
    for block in (1 << 20, 120):  # 120 bytes: about 3 lines per block
        settings = Settings(
            data_dir=tmp_path / f"k2-{block}", kafka_bootstrap_servers="127.0.0.1:1", import_block_bytes=block
        )
        report = import_files("asx-trades", [trades_file], settings, ImportOptions(tickers=tickers))[0]
        assert report.imported == 151
        ids.append(sorted(_table(settings)["trade_id"].to_pylist()))
    assert ids[0] == ids[1] and len(set(ids[0])) == 151
