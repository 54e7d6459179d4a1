"""Paging, proven: walking every page equals the one-shot query of the pinned snapshot (issue 12 §1).

Hypothesis draws the endpoint (trades, quotes, replay), ``query_max_rows``, the default page size, ``limit``
(up to and including ``query_max_rows``, the case that used to end a walk early with a full page and no
cursor), the start (cutting inside tie groups), the response format, ``include_recent`` and a commit landing
in the middle of the walk. The lake holds tie groups of 20 and 10 rows at one timestamp, across two
exchanges, larger than the smallest ``query_max_rows``; a second symbol shares those timestamps, so a walk over
``symbols=`` splits ties across symbols too (the cursor key holds exchange and symbol). Each (query_max_rows, page size) pair gets its own
real uvicorn server over the same lake; rows still in Kafka come from the session's real broker.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from k2.api.keys import KeyStore
from k2.bus.producer import MarketDataProducer
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog, load_table
from k2.lake.writer import append
from k2.model import TRADE
from k2.query.client import Client
from tests.api.conftest import api_settings
from tests.api.helpers import ServerThread, quotes_table, rows_from_arrow, rows_from_response, trades_table
from tests.landing.helpers import BASE_TS
from tests.support.factories import wire_trade

SYMBOL = "PGUSDT"
OTHER = "QGUSDT"  # same timestamps as SYMBOL: ties across symbols at page edges
END = "2024-08-09T01:00:00Z"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_ROWS = (7, 25, 1_000)
PAGE_SIZES = (5, 64)


def iso(micros: int) -> str:
    return (EPOCH + timedelta(microseconds=micros)).isoformat().replace("+00:00", "Z")


@dataclass
class Lake:
    settings: Settings
    key: str
    other_key: str
    servers: dict[tuple[int, int], ServerThread]
    ids: Iterator[int]
    # One client for every example's reference answer (a new one opens a DuckDB database: ~0.4 s CPU).
    # It re-resolves a table whose metadata moved, so the appends between examples are seen.
    direct: Client

    def server(self, max_rows: int, page_size: int) -> ServerThread:
        if (max_rows, page_size) not in self.servers:
            overrides = {
                "query_max_rows": max_rows,
                "api_page_size": page_size,
                "query_recent_timeout_seconds": 30.0,
            }
            self.servers[(max_rows, page_size)] = ServerThread(_with(self.settings, **overrides)).start()
        return self.servers[(max_rows, page_size)]


def _with(settings: Settings, **overrides: Any) -> Settings:
    return Settings(**{**settings.model_dump(), **overrides})


def _kafka_trade(trade_id: int, ts: int) -> dict[str, Any]:
    return wire_trade(
        "binance",
        trade_id,
        ts,
        symbol=SYMBOL,
        instrument="PG-USDT",
        price="100.5",
        quantity="0.25",
        side="SELL",
    )


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory, broker: str, schema_registry: str) -> Iterator[Lake]:
    settings = api_settings(
        tmp_path_factory.mktemp("paging") / "k2", broker, schema_registry, query_max_rows=100_000
    )
    tables = ensure_tables(load_catalog(settings), settings)
    append(tables["trades"], trades_table(SYMBOL, 1, 50), "trades")
    append(tables["trades"], trades_table(SYMBOL, 10_000, 60, ts0=BASE_TS + 1_000, same_ts=20), "trades")
    append(tables["trades"], trades_table(SYMBOL, 20_000, 40, same_ts=10, exchange="kraken"), "trades")
    append(tables["quotes"], quotes_table(SYMBOL, 30_000, 70), "quotes")
    append(tables["trades"], trades_table(OTHER, 40_000, 30, ts0=BASE_TS + 1_000, same_ts=6), "trades")
    append(tables["trades"], trades_table(OTHER, 50_000, 12, same_ts=4, exchange="kraken"), "trades")
    append(tables["quotes"], quotes_table(OTHER, 60_000, 40), "quotes")
    # Rows only in Kafka (ids the table does not hold), inside the walked range: read by include_recent.
    with MarketDataProducer(settings) as producer:
        for i in range(3):
            producer.send(TRADE, _kafka_trade(90_000 + i, BASE_TS + 2_000 * i))
    store = KeyStore.from_settings(settings)
    key, _ = store.create("walker", "read")
    other, _ = store.create("other", "read")
    servers: dict[tuple[int, int], ServerThread] = {}
    with Client(_with(settings, query_recent_timeout_seconds=30.0)) as direct:
        yield Lake(settings, key, other, servers, itertools.count(100_000, 1_000), direct)
    for server in servers.values():
        server.stop()


def _page(
    c: httpx.Client, path: str, params: dict[str, Any], fmt: str
) -> tuple[list[dict[str, Any]], str | None, dict[str, Any]]:
    response = c.get(path, params={**params, "format": fmt})
    assert response.status_code == 200, response.text
    if fmt == "json":
        body = response.json()
        assert body["next_cursor"] == response.headers.get("x-next-cursor")
        return body["data"], body["next_cursor"], body
    table = "quotes" if path.endswith("quotes") else "trades"
    schema = TRADE.arrow_schema() if table == "trades" else None
    rows = rows_from_response(response, fmt, schema)
    return (
        rows,
        response.headers.get("x-next-cursor"),
        {
            "snapshot_ids": json.loads(response.headers["x-snapshot-ids"]),
            # Arrow/CSV answers say in headers what JSON says in the body.
            "recent_included": response.headers.get("x-recent-included") == "true",
            "recent_truncated": response.headers.get("x-recent-truncated") == "true",
        },
    )


def _expected(
    direct: Client, endpoint: str, params: dict[str, Any], snap: int | None, recent: bool
) -> list[dict[str, Any]]:
    table = "quotes" if endpoint == "quotes" else "trades"
    if endpoint == "replay":
        if snap is None:
            return []
        columns = ", ".join(f'"{name}"' for name in TRADE.field_names)  # the message columns (no lineage)
        result = direct.as_of(snap).sql(
            f"SELECT {columns} FROM trades WHERE exchange_ts >= ? AND exchange_ts < ? "
            "ORDER BY exchange_ts, exchange, symbol, trade_id",
            [params["start"], params["end"]],
        )
        return rows_from_arrow(result.table)
    method = direct.trades if table == "trades" else direct.quotes
    names = params["symbols"].split(",") if "symbols" in params else params["symbol"]
    if recent:
        result = method(
            names, params.get("start"), params["end"], include_recent=params.get("include_recent")
        )
        # A truncated reference would make the comparison meaningless, not wrong: say so.
        assert not result.recent_truncated, result.recent_truncated_reason
    else:
        result = method(names, params.get("start"), params["end"], as_of=snap)
    return rows_from_arrow(result.table)


@hypothesis_settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_walk_equals_one_shot_query_of_the_pinned_snapshot(lake: Lake, data: st.DataObject) -> None:
    max_rows = data.draw(st.sampled_from(MAX_ROWS), "query_max_rows")
    page_size = data.draw(st.sampled_from(PAGE_SIZES), "api_page_size")
    endpoint = data.draw(st.sampled_from(("trades", "quotes", "replay")), "endpoint")
    limit = data.draw(st.one_of(st.none(), st.just(max_rows), st.integers(1, max_rows)), "limit")
    start_step = data.draw(st.one_of(st.none(), st.integers(0, 40)), "start step")
    fmt = data.draw(st.sampled_from(("json", "arrow")), "format")
    land_after = data.draw(st.one_of(st.none(), st.integers(1, 3)), "land after page")
    params: dict[str, Any] = {"end": END}
    if start_step is not None or endpoint == "replay":
        params["start"] = iso(BASE_TS + 2_000 * (start_step or 0) + (1_000 if (start_step or 0) % 2 else 0))
    if endpoint != "replay":
        names = data.draw(st.sampled_from(((SYMBOL,), (SYMBOL, OTHER), (OTHER, SYMBOL))), "symbols")
        if len(names) == 1:
            params["symbol"] = names[0]
        else:
            params["symbols"] = ",".join(names)
        include_recent = data.draw(st.sampled_from((None, False, True)), "include_recent")
        if include_recent is not None:
            params["include_recent"] = str(include_recent).lower()
    else:
        params["table"] = "trades"
    if limit is not None:
        params["limit"] = limit
    server = lake.server(max_rows, page_size)
    rows: list[dict[str, Any]] = []
    pages = 0
    cursor: str | None = None
    with httpx.Client(base_url=server.url, headers={"X-API-Key": lake.key}, timeout=60) as c:
        while True:
            page, cursor, body = _page(
                c, f"/v1/{endpoint}", {**params, **({"cursor": cursor} if cursor else {})}, fmt
            )
            pages += 1
            effective = limit or min(page_size, max_rows)
            assert len(page) <= effective
            if pages == 1:
                first = body
            rows += page
            if cursor is None:
                # The last page: it may be short, never silently cut (the concatenation check below).
                break
            assert len(page) == effective  # a page with a cursor is full
            if pages == land_after:
                append(
                    load_table(load_catalog(lake.settings), "trades"),
                    trades_table(SYMBOL, next(lake.ids), 5, ts0=BASE_TS + 1_000, same_ts=5),
                    "trades",
                )
    table = "quotes" if endpoint == "quotes" else "trades"
    snap = first["snapshot_ids"].get(table)
    recent = bool(first.get("recent_included"))
    assert not first.get("recent_truncated"), "the server's Kafka read was cut short"
    if recent:
        assert pages == 1  # rows still in Kafka come only with a single-page answer
    expected = _expected(lake.direct, endpoint, params, snap, recent)
    assert rows == expected, f"{len(rows)} rows walked in {pages} pages, {len(expected)} expected"
    keys = [(r["exchange"], r["symbol"], r["trade_id" if table == "trades" else "update_id"]) for r in rows]
    assert len(set(keys)) == len(keys)


def test_full_page_at_query_max_rows_carries_a_cursor(lake: Lake) -> None:
    """limit == query_max_rows: the first page is full and more rows exist, so it must carry a cursor."""
    server = lake.server(7, 64)
    with httpx.Client(base_url=server.url, headers={"X-API-Key": lake.key}, timeout=60) as c:
        body = c.get(
            "/v1/trades", params={"symbol": SYMBOL, "end": END, "limit": 7, "include_recent": "false"}
        ).json()
        assert body["row_count"] == 7
        assert body["next_cursor"] is not None
        replay = c.get("/v1/replay", params={"start": iso(BASE_TS), "end": END, "limit": 7})
        assert replay.status_code == 200, replay.text
        assert replay.json()["next_cursor"] is not None


def test_cursor_works_only_for_its_key(lake: Lake) -> None:
    server = lake.server(1_000, 64)
    params = {"symbol": SYMBOL, "end": END, "limit": 10, "include_recent": "false"}
    with httpx.Client(base_url=server.url, timeout=60) as c:
        cursor = c.get("/v1/trades", params=params, headers={"X-API-Key": lake.key}).json()["next_cursor"]
        assert cursor
        assert (
            c.get(
                "/v1/trades", params={**params, "cursor": cursor}, headers={"X-API-Key": lake.key}
            ).status_code
            == 200
        )
        refused = c.get(
            "/v1/trades", params={**params, "cursor": cursor}, headers={"X-API-Key": lake.other_key}
        )
        assert refused.status_code == 403, refused.text
        error = refused.json()["error"]
        assert error["code"] == "cursor_forbidden" and "another key" in error["message"]
