"""Cursor pagination: pages stay pinned to the first page's snapshot while new data lands; ties split
correctly; cursors are opaque, signed and bound to their query."""

from __future__ import annotations

from typing import Any

import httpx

from k2.lake.catalog import load_catalog, load_table
from k2.lake.writer import append
from k2.model import TRADE
from k2.query.client import Client
from tests.api.conftest import Api
from tests.api.helpers import assert_error, quotes_table, rows_from_arrow, trades_table
from tests.landing.helpers import BASE_TS

START, END = "2024-08-08T23:00:00Z", "2024-08-09T01:00:00Z"


def walk(
    c: httpx.Client, path: str, params: dict[str, Any], between_pages: Any = None
) -> tuple[list[dict[str, Any]], int]:
    """Follow next_cursor to the end; returns (rows, pages). ``between_pages()`` runs after the first page."""
    rows: list[dict[str, Any]] = []
    pages = 0
    cursor = None
    while True:
        response = c.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        rows += body["data"]
        pages += 1
        cursor = body["next_cursor"]
        assert response.headers.get("x-next-cursor") == cursor
        if cursor is None:
            return rows, pages
        assert 'rel="next"' in response.headers["link"]
        if pages == 1 and between_pages is not None:
            between_pages()


def test_trades_pages_pinned_while_new_data_lands(api: Api) -> None:
    table = load_table(load_catalog(api.settings), "trades")
    with Client(api.settings) as direct:
        first_snapshot = direct.snapshot_id("trades")
        expected = rows_from_arrow(
            direct.trades("BTCUSDT", START, END, limit=10_000, as_of=first_snapshot).table
        )

    def land_more() -> None:
        # New trades inside the walked range, interleaved in time with the existing ones.
        append(table, trades_table("BTCUSDT", 7_000_000, 500, ts0=BASE_TS + 1_000), "trades")

    with api.client(api.read_key) as c:
        rows, pages = walk(
            c, "/v1/trades", {"symbol": "BTCUSDT", "start": START, "end": END, "limit": 700}, land_more
        )
        assert pages == 5  # 3,000 rows / 700
        assert rows == expected
        assert not any(r["trade_id"] >= 7_000_000 for r in rows)
        # A new walk sees the new rows.
        fresh, _ = walk(c, "/v1/trades", {"symbol": "BTCUSDT", "start": START, "end": END, "limit": 1000})
    assert len(fresh) == 3_500
    assert [r["exchange_ts"] for r in fresh] == sorted(r["exchange_ts"] for r in fresh)


def test_pages_split_ties_exactly_once(api: Api) -> None:
    """TIEUSDT has ten trades per timestamp; pages of 7 must neither repeat nor skip any of them."""
    with Client(api.settings) as direct:
        expected = rows_from_arrow(
            direct.trades("TIEUSDT", START, END, limit=10_000, include_recent=False).table
        )
    with api.client(api.read_key) as c:
        rows, pages = walk(c, "/v1/trades", {"symbol": "TIEUSDT", "start": START, "end": END, "limit": 7})
        assert pages == -(-400 // 7)
        assert rows == expected
        assert len({r["trade_id"] for r in rows}) == 400
        # Pages as large as the tie groups and larger.
        for limit in (13, 400):
            assert (
                walk(c, "/v1/trades", {"symbol": "TIEUSDT", "start": START, "end": END, "limit": limit})[0]
                == expected
            )


def test_quotes_pages_and_replay_pinned(api: Api) -> None:
    quotes = load_table(load_catalog(api.settings), "quotes")
    trades = load_table(load_catalog(api.settings), "trades")
    with Client(api.settings) as direct:
        snap_q = direct.snapshot_id("quotes")
        snap_t = direct.snapshot_id("trades")
        expected_quotes = rows_from_arrow(
            direct.quotes("BTCUSDT", START, END, limit=10_000, as_of=snap_q).table
        )
        columns = ", ".join(f'"{name}"' for name in TRADE.field_names)  # the message columns (no lineage)
        all_trades = direct.sql(
            f"SELECT {columns} FROM trades WHERE exchange_ts >= ? AND exchange_ts < ? "
            "ORDER BY exchange_ts, exchange, symbol, trade_id",
            [START, END],
        )
        assert all_trades.snapshot_ids["trades"] == snap_t
        expected_replay = rows_from_arrow(all_trades.table)
    with api.client(api.read_key) as c:
        rows, _ = walk(
            c,
            "/v1/quotes",
            {"symbol": "BTCUSDT", "start": START, "end": END, "limit": 600},
            lambda: append(quotes, quotes_table("BTCUSDT", 8_000_000, 300, ts0=BASE_TS + 500), "quotes"),
        )
        assert rows == expected_quotes
        replayed, pages = walk(
            c,
            "/v1/replay",
            {"table": "trades", "start": START, "end": END, "limit": 900},
            lambda: append(trades, trades_table("ETHUSDT", 6_000_000, 200, ts0=BASE_TS + 700), "trades"),
        )
        assert pages > 2
        assert replayed == expected_replay
        assert not any(6_000_000 <= r["trade_id"] < 7_000_000 for r in replayed)


def test_cursor_is_opaque_signed_and_bound_to_its_query(api: Api) -> None:
    params = {"symbol": "BTCUSDT", "start": START, "end": END, "limit": 100}
    with api.client(api.read_key) as c:
        cursor = c.get("/v1/trades", params=params).json()["next_cursor"]
        assert cursor and "BTCUSDT" not in cursor
        body, sig = cursor.split(".")
        flipped = body[:-1] + ("A" if body[-1] != "A" else "B")
        for bad in (flipped + "." + sig, body + "." + sig[::-1], "abc", "e30.AAAA", "x" * 4096):
            assert_error(c.get("/v1/trades", params={**params, "cursor": bad}), 400, "invalid_cursor")
        # The same cursor with another symbol, endpoint or range is refused.
        assert_error(
            c.get("/v1/trades", params={**params, "symbol": "ETHUSDT", "cursor": cursor}),
            400,
            "invalid_cursor",
        )
        assert_error(c.get("/v1/quotes", params={**params, "cursor": cursor}), 400, "invalid_cursor")
        assert_error(
            c.get("/v1/trades", params={**params, "end": "2024-08-09T00:30:00Z", "cursor": cursor}),
            400,
            "invalid_cursor",
        )
        # ...but may change the page size and the format.
        nxt = c.get("/v1/trades", params={**params, "limit": 50, "format": "csv", "cursor": cursor})
        assert nxt.status_code == 200 and int(nxt.headers["x-row-count"]) == 50


def test_as_of_time_travel(api: Api) -> None:
    """as_of (snapshot id or time) reads the table as it was: rows landed later are not seen."""
    with api.client(api.read_key) as c:
        snapshots = c.get("/v1/snapshots", params={"table": "trades"}).json()["data"]
        first = snapshots[0]
        assert first["added_rows"] == 3_000  # the seed's first commit: BTCUSDT only
        params = {"symbol": "BTCUSDT", "start": START, "end": END, "limit": 10_000}
        now = c.get("/v1/trades", params=params).json()
        then = c.get("/v1/trades", params={**params, "as_of": first["snapshot_id"]}).json()
        assert then["snapshot_ids"] == {"trades": first["snapshot_id"]}
        assert then["row_count"] == 3_000 <= now["row_count"]
        by_time = c.get("/v1/trades", params={**params, "as_of": first["committed_at"]}).json()
        assert by_time["row_count"] == 3_000
        assert_error(
            c.get("/v1/trades", params={"symbol": "ETHUSDT", "as_of": first["snapshot_id"]}),
            404,
            "unknown_symbol",
        )
        listed = c.get("/v1/symbols", params={"as_of": first["snapshot_id"]}).json()["data"]
        assert [s["symbol"] for s in listed] == ["BTCUSDT"]
        assert_error(
            c.get("/v1/trades", params={**params, "as_of": first["snapshot_id"], "include_recent": "true"}),
            400,
            "invalid_query",
        )
        assert_error(c.get("/v1/trades", params={**params, "as_of": 12345}), 400, "invalid_query")
