"""Several symbols per request and ``/v1/klines`` over the REST API and the remote client (issue 12 §5)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from k2.api.remote import RemoteClient
from k2.lake.catalog import load_catalog, load_table
from k2.lake.writer import append
from k2.model import KLINE
from k2.model.arrow import records_to_arrow
from k2.query.client import Client
from k2.query.errors import UnknownSymbolError
from tests.api.conftest import Api
from tests.api.helpers import rows_from_arrow
from tests.support.factories import kline_row

KLINES = {"start": "2024-08-08T00:00:00Z", "end": "2024-08-09T00:00:00Z", "include_recent": None}


@pytest.fixture(scope="module")
def lake(api: Api) -> Api:
    rows = [kline_row("BTCUSDT", m, "1.5") for m in range(3)] + [kline_row("ETHUSDT", 0, "0.1")]
    append(load_table(load_catalog(api.settings), "klines"), records_to_arrow(KLINE, rows), "klines")
    return api


def _walk(c: httpx.Client, path: str, params: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        response = c.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        rows += body["data"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return rows, pages


def test_walk_over_several_symbols_equals_the_one_shot_query(lake: Api) -> None:
    params = {"symbols": "ETHUSDT,TIEUSDT,BTCUSDT", "include_recent": "false", "limit": 333}
    with lake.client(lake.read_key) as c:
        rows, pages = _walk(c, "/v1/trades", params)
        quotes, _ = _walk(c, "/v1/quotes", {**params, "symbols": "BTCUSDT,ETHUSDT"})
    with Client(lake.settings) as direct:
        expected = direct.trades(["BTCUSDT", "ETHUSDT", "TIEUSDT"], include_recent=False, limit=10_000)
        expected_quotes = direct.quotes(["BTCUSDT", "ETHUSDT"], include_recent=False)
    assert pages > 10
    assert len(rows) == 4_400 == sum(lake.counts.values())
    # JSON rows against the client's Arrow rows, normalised the same way.
    assert [(r["symbol"], r["trade_id"]) for r in rows] == [
        (r["symbol"], r["trade_id"]) for r in rows_from_arrow(expected.table)
    ]
    assert len(quotes) == expected_quotes.num_rows == 2_000


def test_symbols_validation_says_why(lake: Api) -> None:
    cases = [
        ({"symbol": "BTCUSDT", "symbols": "BTCUSDT,ETHUSDT"}, "found both"),
        ({}, "found neither"),
        (
            {"symbols": ",".join(f"S{i}USDT" for i in range(101))},
            "at most 100 symbols per request, found 101",
        ),
        ({"symbols": "BTCUSDT,,ETHUSDT"}, "found an empty name at position 2"),
        ({"symbols": "BTCUSDT," + "X" * 65}, "found 65 characters at position 2"),
    ]
    with lake.client(lake.read_key) as c:
        for path in ("/v1/trades", "/v1/quotes", "/v1/bars", "/v1/klines"):
            for params, phrase in cases:
                response = c.get(path, params={**params, "include_recent": "false"})
                assert response.status_code == 400, (path, params, response.text)
                error = response.json()["error"]
                assert error["code"] == "invalid_parameter" and phrase in error["message"], error
        unknown = c.get("/v1/trades", params={"symbols": "NOPE,NADA", "include_recent": "false"})
        assert unknown.status_code == 404 and "'NOPE'" in unknown.json()["error"]["message"]


def test_bars_and_vwap_of_several_symbols(lake: Api) -> None:
    window = {"start": "2024-08-08T23:00:00Z", "end": "2024-08-09T01:00:00Z", "include_recent": "false"}
    with lake.client(lake.read_key) as c:
        bars = c.get("/v1/bars", params={"symbols": "BTCUSDT,ETHUSDT", "interval": "1h", **window})
        vwap = c.get("/v1/vwap", params={"symbols": "ETHUSDT,BTCUSDT", **window})
    assert bars.status_code == 200 and vwap.status_code == 200, (bars.text, vwap.text)
    counts: dict[str, int] = {}
    for row in bars.json()["data"]:
        counts[row["symbol"]] = counts.get(row["symbol"], 0) + row["trade_count"]
    assert counts == {"BTCUSDT": 3_000, "ETHUSDT": 1_000}
    assert [r["symbol"] for r in vwap.json()["data"]] == ["BTCUSDT", "ETHUSDT"]


def test_klines_endpoint_and_remote_client(lake: Api) -> None:
    with lake.client(lake.read_key) as c:
        one = c.get("/v1/klines", params={"symbol": "BTCUSDT", "interval": "1m", **KLINES})
        both = c.get("/v1/klines", params={"symbols": "ETHUSDT,BTCUSDT", **KLINES})
        capped = c.get("/v1/klines", params={"symbols": "ETHUSDT,BTCUSDT", "limit": 2})
        missing = c.get("/v1/klines", params={"symbol": "NOPE"})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["row_count"] == 3 and body["snapshot_ids"]["klines"]
    first = body["data"][0]
    assert (first["open_time"], first["close"], first["volume"], first["trade_count"]) == (
        "2024-08-08T00:00:00.000000Z",
        "1.50000000",
        "3.25000000",
        7,
    )
    assert [(r["symbol"], r["open_time"][11:16]) for r in both.json()["data"]] == [
        ("BTCUSDT", "00:00"),
        ("BTCUSDT", "00:01"),
        ("BTCUSDT", "00:02"),
        ("ETHUSDT", "00:00"),
    ]
    assert capped.json()["row_count"] == 2
    assert missing.status_code == 404, missing.text
    with RemoteClient(lake.url, lake.read_key) as remote, Client(lake.settings) as local:
        for symbols in ("BTCUSDT", ["BTCUSDT", "ETHUSDT"]):
            assert remote.klines(symbols, "1m").table.equals(local.klines(symbols, "1m").table)
        window = ("2024-08-08T23:00:00Z", "2024-08-09T01:00:00Z")
        two = ["ETHUSDT", "BTCUSDT"]
        assert remote.trades(two, *window, include_recent=False).table.equals(
            local.trades(two, *window, include_recent=False).table
        )
        assert remote.bars(two, "1h", *window, include_recent=False).table.equals(
            local.bars(two, "1h", *window, include_recent=False).table
        )
        with pytest.raises(UnknownSymbolError):
            remote.klines("NOPE")
