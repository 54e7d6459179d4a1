"""Reference data: Binance exchangeInfo -> reference.instruments (idempotent replace), and unknown symbols.

The fake exchange serves ``GET /api/v3/exchangeInfo`` from tests/fixtures/binance_exchange_info.json
(constructed following Binance's documented layout; see tests/fixtures/README.md). Trades are the real
Binance and Coinbase captures, stored in a real Iceberg catalog.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from decimal import Decimal

import orjson
import pytest
from typer.testing import CliRunner

from k2.cli import app
from k2.config import Settings
from k2.model import INSTRUMENT, TRADE
from k2.model.arrow import records_to_arrow
from k2.sources import binance, coinbase
from k2.sources.fake_exchange import FakeExchange
from k2.sources.live import RestRefused
from k2.sources.reference import (
    ReferenceDataError,
    instruments,
    load_binance_instruments,
    parse_exchange_info,
    unknown_symbols,
    write_instruments,
)
from tests.sources.helpers import BINANCE_CAPTURES, COINBASE_CAPTURE, EXCHANGE_INFO, cli_env, store_rows

DOC = orjson.loads(EXCHANGE_INFO.read_bytes())


def _filters(entry: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {f["filterType"]: f for f in entry["filters"]}


def test_exchange_info_entries_map_to_instruments() -> None:
    rows = {r["symbol"]: r for r in parse_exchange_info(DOC, updated_us=1)}
    assert sorted(rows) == sorted(e["symbol"] for e in DOC["symbols"])
    table = {r["symbol"]: r for r in records_to_arrow(INSTRUMENT, list(rows.values())).to_pylist()}
    for entry in DOC["symbols"]:
        row, arrow_row, filters = rows[entry["symbol"]], table[entry["symbol"]], _filters(entry)
        assert row["instrument"] == f"{entry['baseAsset']}-{entry['quoteAsset']}"
        assert (row["base"], row["quote"], row["currency"]) == (
            entry["baseAsset"],
            entry["quoteAsset"],
            entry["quoteAsset"],
        )
        assert arrow_row["tick_size"] == Decimal(filters["PRICE_FILTER"]["tickSize"])
        assert arrow_row["lot_size"] == Decimal(filters["LOT_SIZE"]["stepSize"])
        assert row["active"] is (entry["status"] == "TRADING")
        assert row["vendor"]["status"] == entry["status"]
        assert row["vendor"]["minNotional"] == filters["NOTIONAL"]["minNotional"]
        assert (row["exchange"], row["asset_class"]) == ("binance", "crypto")
    assert {s for s, r in rows.items() if not r["active"]} == {"BLZETH", "RUNEEUR"}


def test_usdm_futures_entries_keep_contract_fields() -> None:
    from datetime import date

    from k2.sources.binance import USDM

    # A /fapi/v1/exchangeInfo entry (constructed following Binance's documented futures layout).
    entry = {
        "symbol": "BTCUSDT",
        "pair": "BTCUSDT",
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "baseAsset": "BTC",
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": 2,
        "quantityPrecision": 3,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "556.80", "maxPrice": "4529764", "tickSize": "0.10"},
            {"filterType": "LOT_SIZE", "stepSize": "0.001", "maxQty": "1000", "minQty": "0.001"},
            {"filterType": "MIN_NOTIONAL", "notional": "100"},
        ],
    }
    row = parse_exchange_info({"symbols": [entry]}, USDM, updated_us=0)[0]
    assert (row["exchange"], row["asset_class"], row["instrument"]) == (
        "binance-futures",
        "futures",
        "BTC-USDT",
    )
    assert row["listing_date"] == date(2019, 9, 25)
    assert row["vendor"]["contractType"] == "PERPETUAL" and row["vendor"]["minNotional"] == "100"
    assert records_to_arrow(INSTRUMENT, [row]).to_pylist()[0]["tick_size"] == Decimal("0.10")


def test_malformed_exchange_info_says_what_was_expected() -> None:
    with pytest.raises(ReferenceDataError, match="expected an exchangeInfo object with a 'symbols' list"):
        parse_exchange_info({"code": -1121, "msg": "Invalid symbol."})
    broken = {"symbols": [{**DOC["symbols"][0], "baseAsset": None}]}
    with pytest.raises(ReferenceDataError, match=r"BTCUSDT: expected string fields \['baseAsset'\]"):
        parse_exchange_info(broken)
    precise = orjson.loads(orjson.dumps(DOC["symbols"][0]))
    precise["filters"][0]["tickSize"] = "0.000000001"
    with pytest.raises(
        ReferenceDataError, match="BTCUSDT: PRICE_FILTER.tickSize: expected at most 8 fractional digits"
    ):
        parse_exchange_info({"symbols": [precise]})


def test_loading_replaces_rows_of_the_same_symbol_and_leaves_other_exchanges(settings: Settings) -> None:
    from k2.lake.catalog import ensure_tables, load_catalog

    table = ensure_tables(load_catalog(settings), settings)["instruments"]
    # A row of another venue (as the ASX reference import writes them) must survive Binance loads.
    asx = {
        "exchange": "asx",
        "symbol": "BHP",
        "instrument": "BHP",
        "asset_class": "equities",
        "active": True,
        "updated_ts": 1,
        "vendor": {},
    }
    write_instruments(table, [asx])
    with FakeExchange("binance", messages=[]) as fake:
        first = load_binance_instruments(settings, rest_url=fake.rest_url)
        once = instruments(settings, "binance")
        again = load_binance_instruments(settings, rest_url=fake.rest_url)
        twice = instruments(settings, "binance")
        load_binance_instruments(settings, ["btcusdt"], rest_url=fake.rest_url)
        third = instruments(settings, "binance")
        with pytest.raises(RestRefused, match="Invalid symbol"):
            load_binance_instruments(settings, ["DOGEUSDT"], rest_url=fake.rest_url)
        requests = fake.stats.rest_requests
    assert (first.written, first.active, again.written) == (6, 4, 6)
    assert requests == 4
    assert once.num_rows == twice.num_rows == third.num_rows == 6  # replaced, never duplicated
    assert sorted(once["symbol"].to_pylist()) == sorted(e["symbol"] for e in DOC["symbols"])
    stamp = lambda t: dict(zip(t["symbol"].to_pylist(), t["updated_ts"].to_pylist(), strict=True))  # noqa: E731
    assert all(stamp(twice)[s] > stamp(once)[s] for s in stamp(once))
    assert [s for s in stamp(third) if stamp(third)[s] != stamp(twice)[s]] == ["BTCUSDT"]
    others = instruments(settings, "asx")
    assert others["symbol"].to_pylist() == ["BHP"] and others["updated_ts"].cast("int64").to_pylist() == [1]


def test_symbols_traded_but_missing_from_reference_are_reported(settings: Settings) -> None:
    store_rows(settings, "trades", TRADE, list(binance.iter_capture_trades(BINANCE_CAPTURES)))
    cb_trades = [row for record, row, _ in coinbase.iter_capture(COINBASE_CAPTURE) if record is TRADE]
    store_rows(settings, "trades", TRADE, cb_trades)
    cb_counts = Counter(row["symbol"] for row in cb_trades)
    with FakeExchange("binance", messages=[]) as fake:
        load_binance_instruments(settings, ["ETHUSDT"], rest_url=fake.rest_url)
        before = unknown_symbols(settings)
        load_binance_instruments(settings, rest_url=fake.rest_url)
    after = unknown_symbols(settings)
    assert ("binance", "BTCUSDT", 19_904) in before
    assert sorted(after) == sorted(("coinbase", s, n) for s, n in cb_counts.items())
    assert sorted(before) == sorted([*after, ("binance", "BTCUSDT", 19_904)])
    assert unknown_symbols(settings, "binance") == []


def test_reference_commands(settings: Settings) -> None:
    store_rows(settings, "trades", TRADE, list(binance.iter_capture_trades(BINANCE_CAPTURES[0]))[:100])
    env = cli_env(settings)
    with FakeExchange("binance", messages=[]) as fake:
        unknown = subprocess.run(
            [sys.executable, "-m", "k2.cli", "reference", "unknown", "--fail"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        # In process (typer's runner; a `python -m k2.cli` process costs ~1-2 s of CPU in imports): the
        # family's process boundary and exit code are the `unknown --fail` call's above.
        loaded = CliRunner().invoke(app, ["reference", "binance", "--rest-url", fake.rest_url], env=env)
    assert unknown.returncode == 1 and "BTCUSDT" in unknown.stdout and "100" in unknown.stdout, (
        unknown.stderr[-2000:]
    )
    assert (
        loaded.exit_code == 0 and "6 instruments written" in loaded.stdout and "4 trading" in loaded.stdout
    ), loaded.output[-2000:]
    assert unknown_symbols(settings) == [] and instruments(settings).num_rows == 6
