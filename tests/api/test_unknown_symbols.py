"""``symbols=A,TYPO`` is never silently partial: the answer names the requested symbols the table does not hold.

"Unknown" means no row of the symbol in the table (for the exchange asked) at the snapshot read, nor among
the rows still in Kafka when the query reads them; a known symbol with no row in the window is a normal
empty answer. Every requested symbol unknown: 404 ``unknown_symbol`` naming them (as for one symbol).
Real API server (uvicorn), real catalog, real broker for the Kafka case.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from k2.api.remote import RemoteClient
from k2.bus.producer import MarketDataProducer
from k2.cli import app
from k2.lake.catalog import load_catalog, load_table
from k2.lake.writer import append
from k2.model import KLINE, TRADE
from k2.model.arrow import records_to_arrow
from k2.model.values import now_micros
from k2.query.client import Client
from k2.query.errors import UnknownSymbolError
from tests.api.conftest import Api
from tests.api.helpers import serve
from tests.support.factories import kline_row, wire_trade

WINDOW = {"start": "2024-08-08T23:00:00Z", "end": "2024-08-09T01:00:00Z", "include_recent": "false"}
EMPTY_WINDOW = {"start": "2024-01-01T00:00:00Z", "end": "2024-01-01T01:00:00Z", "include_recent": "false"}


def _get(c: Any, path: str, **params: Any) -> Any:
    response = c.get(path, params=params)
    assert response.status_code == 200, response.text
    return response


def test_json_and_headers_name_the_unknown_symbols(api: Api) -> None:
    with api.client(api.read_key) as c:
        for path in ("/v1/trades", "/v1/bars", "/v1/vwap", "/v1/twap"):
            body = _get(c, path, symbols="BTCUSDT,TYPO", **WINDOW).json()
            assert body["unknown_symbols"] == ["TYPO"], (path, body.get("unknown_symbols"))
            assert body["row_count"] > 0 and {r["symbol"] for r in body["data"]} == {"BTCUSDT"}
            for fmt in ("csv", "arrow", "parquet"):
                response = _get(c, path, symbols="TYPO,BTCUSDT,NOPE", format=fmt, **WINDOW)
                assert json.loads(response.headers["x-unknown-symbols"]) == ["TYPO", "NOPE"], (path, fmt)
            known = _get(c, path, symbols="BTCUSDT,ETHUSDT", **WINDOW)
            assert known.json()["unknown_symbols"] == [] and "x-unknown-symbols" not in known.headers
        # Per table: ETHUSDT has trades but no quotes.
        quotes = _get(c, "/v1/quotes", symbols="BTCUSDT,ETHUSDT", **WINDOW).json()
        assert quotes["unknown_symbols"] == ["ETHUSDT"] and quotes["row_count"] > 0


def test_known_symbol_without_rows_in_the_window_is_an_empty_answer(api: Api) -> None:
    with api.client(api.read_key) as c:
        for path in ("/v1/trades", "/v1/bars", "/v1/vwap"):
            body = _get(c, path, symbols="BTCUSDT,TYPO", **EMPTY_WINDOW).json()
            assert body["row_count"] == 0 and body["unknown_symbols"] == ["TYPO"], (path, body)
            alone = _get(c, path, symbol="BTCUSDT", **EMPTY_WINDOW).json()
            assert alone["row_count"] == 0 and alone["unknown_symbols"] == []
            every = c.get(path, params={"symbols": "TYPO,NOPE", **WINDOW})
            assert every.status_code == 404, every.text
            error = every.json()["error"]
            assert error["code"] == "unknown_symbol" and "'TYPO'" in error["message"]
            assert "'NOPE'" in error["message"]
        # By exchange: BTCUSDT is known on binance only.
        other = c.get("/v1/trades", params={"symbols": "BTCUSDT,TYPO", "exchange": "kraken", **WINDOW})
        assert other.status_code == 404 and "'BTCUSDT'" in other.json()["error"]["message"]


def test_every_page_of_a_walk_names_them(api: Api) -> None:
    with api.client(api.read_key) as c:
        first = _get(c, "/v1/trades", symbols="ETHUSDT,TYPO", limit=400, **WINDOW).json()
        assert first["unknown_symbols"] == ["TYPO"] and first["next_cursor"]
        cursor, pages = first["next_cursor"], 1
        while cursor:
            page = _get(c, "/v1/trades", symbols="ETHUSDT,TYPO", limit=400, cursor=cursor, **WINDOW)
            assert page.json()["unknown_symbols"] == ["TYPO"]
            assert json.loads(page.headers["x-unknown-symbols"]) == ["TYPO"]
            cursor, pages = page.json()["next_cursor"], pages + 1
        assert pages >= 3


def test_local_and_remote_clients_say_it(api: Api) -> None:
    window = (WINDOW["start"], WINDOW["end"])
    with Client(api.settings) as local, RemoteClient(api.url, api.read_key) as remote:
        for client in (local, remote):
            for result in (
                client.trades(["BTCUSDT", "TYPO"], *window, include_recent=False),
                client.bars(["BTCUSDT", "TYPO"], "1h", *window, include_recent=False),
                client.vwap(["BTCUSDT", "TYPO"], *window, include_recent=False),
                client.vwap(["BTCUSDT", "TYPO"], *window, include_recent=False),  # from the API cache
                client.twap(["BTCUSDT", "TYPO"], *window, include_recent=False),
            ):
                assert result.unknown_symbols == ("TYPO",), (client, result)
            assert client.trades("BTCUSDT", *window, include_recent=False).unknown_symbols == ()
            with pytest.raises(UnknownSymbolError, match="'NOPE'"):
                client.vwap(["TYPO", "NOPE"], *window, include_recent=False)


def test_cli_warns_on_stderr(api: Api) -> None:
    env = {"K2_DATA_DIR": str(api.settings.data_dir)}
    for command in (["trades"], ["bars", "-i", "1h"], ["vwap", "--twap"]):
        out = CliRunner().invoke(
            app,
            [*command, "--symbols", "BTCUSDT,TYPO", "--start", WINDOW["start"], "--end", WINDOW["end"]]
            + ["-f", "json", "--no-include-recent"],
            env=env,
        )
        assert out.exit_code == 0, out.output
        assert {r["symbol"] for r in json.loads(out.stdout)} == {"BTCUSDT"}
        assert "partial result" in out.stderr and "'TYPO'" in out.stderr, (command, out.stderr)


def test_a_symbol_still_in_kafka_is_known(api: Api, unique: str) -> None:
    exchange = f"ux{unique}"
    base = now_micros() - 5_000_000
    with MarketDataProducer(api.settings) as producer:
        for i in range(3):
            producer.send(TRADE, wire_trade(exchange, 100 + i, base + i * 1000))
    # A server of its own with a generous Kafka time bound: the module's 0.3 s can pass on a loaded machine.
    patient = api.settings.model_copy(update={"query_recent_timeout_seconds": 15.0})
    with (
        serve(patient) as server,
        httpx.Client(base_url=server.url, headers={"X-API-Key": api.read_key}, timeout=60) as c,
    ):
        params = {"symbols": "BTCUSDT,TYPO", "exchange": exchange, "include_recent": "true"}
        body = _get(c, "/v1/trades", **params).json()
        assert [r["trade_id"] for r in body["data"]] == [100, 101, 102]
        assert body["unknown_symbols"] == ["TYPO"]
        start = datetime.now(UTC) - timedelta(hours=1)
        window = {"start": start.isoformat(), "end": (start + timedelta(hours=2)).isoformat()}
        vwap = _get(c, "/v1/vwap", **params, **window).json()
        assert vwap["unknown_symbols"] == ["TYPO"] and vwap["data"][0]["trade_count"] == 3
        arrow = _get(c, "/v1/trades", **params, format="arrow")
        assert pa.ipc.open_stream(arrow.content).read_all().num_rows == 3
        assert json.loads(arrow.headers["x-unknown-symbols"]) == ["TYPO"]


def test_klines_say_it_too(api: Api) -> None:
    append(
        load_table(load_catalog(api.settings), "klines"),
        records_to_arrow(KLINE, [kline_row("BTCUSDT", 0, "1.5")]),
        "klines",
    )
    with api.client(api.read_key) as c:
        body = _get(c, "/v1/klines", symbols="BTCUSDT,TYPO").json()
        assert body["row_count"] == 1 and body["unknown_symbols"] == ["TYPO"]
        assert c.get("/v1/klines", params={"symbols": "NOPE,TYPO"}).status_code == 404
