"""Each format (JSON, CSV, Parquet, Arrow IPC; by format= and by Accept) round-trips to the same rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pytest

from k2.api.formats import MEDIA_TYPES
from k2.query.client import Client
from tests.api.conftest import Api
from tests.api.helpers import rows_from_arrow, rows_from_response

START, END = "2024-08-08T23:00:00Z", "2024-08-09T01:00:00Z"


@pytest.fixture(scope="module")
def direct(api: Api) -> Iterator[Client]:
    """The query layer called directly: the reference the API's rows are compared with."""
    client = Client(api.settings)
    yield client
    client.close()


CASES: dict[str, tuple[str, dict[str, Any], Callable[[Client], Any]]] = {
    "trades": (
        "/v1/trades",
        {"symbol": "BTCUSDT", "start": START, "end": END, "limit": 5000},
        lambda c: c.trades("BTCUSDT", START, END, limit=5000, include_recent=False),
    ),
    "quotes": (
        "/v1/quotes",
        {"symbol": "BTCUSDT", "start": START, "end": END, "limit": 5000},
        lambda c: c.quotes("BTCUSDT", START, END, limit=5000, include_recent=False),
    ),
    "bars": (
        "/v1/bars",
        {"symbol": "BTCUSDT", "interval": "1s", "start": START, "end": END},
        lambda c: c.bars("BTCUSDT", "1s", START, END, include_recent=False),
    ),
    "vwap": (
        "/v1/vwap",
        {"symbol": "ETHUSDT", "start": START, "end": END},
        lambda c: c.vwap("ETHUSDT", START, END, include_recent=False),
    ),
    "spread": (
        "/v1/spread",
        {"symbol": "BTCUSDT", "start": START, "end": END},
        lambda c: c.spread_stats("BTCUSDT", START, END),
    ),
    "asof": (
        "/v1/asof",
        {"symbol": "BTCUSDT", "start": START, "end": END},
        lambda c: c.asof_join("BTCUSDT", START, END),
    ),
    "symbols": ("/v1/symbols", {}, lambda c: c.symbols()),
    "snapshots": ("/v1/snapshots", {"table": "trades"}, lambda c: c.snapshots("trades")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_format_round_trips_to_the_same_rows(api: Api, direct: Client, case: str) -> None:
    path, params, reference = CASES[case]
    expected_table: pa.Table = reference(direct).table
    expected = rows_from_arrow(expected_table)
    assert expected, f"{case}: the seeded data must give rows"
    with api.client(api.read_key) as c:
        for fmt in ("json", "csv", "parquet", "arrow"):
            by_param = c.get(path, params={**params, "format": fmt})
            assert by_param.status_code == 200, by_param.text
            assert by_param.headers["content-type"].startswith(MEDIA_TYPES[fmt])  # type: ignore[index]
            assert int(by_param.headers["x-row-count"]) == len(expected)
            assert rows_from_response(by_param, fmt, expected_table.schema) == expected, f"{case} as {fmt}"
            by_accept = c.get(path, params=params, headers={"Accept": MEDIA_TYPES[fmt]})  # type: ignore[index]
            assert by_accept.status_code == 200
            assert rows_from_response(by_accept, fmt, expected_table.schema) == expected


def test_binary_formats_keep_exact_types(api: Api) -> None:
    with api.client(api.read_key) as c:
        response = c.get(
            "/v1/trades",
            params={"symbol": "BTCUSDT", "start": START, "end": END, "format": "arrow", "limit": 10},
        )
    table = pa.ipc.open_stream(response.content).read_all()
    assert table.schema.field("price").type == pa.decimal128(18, 8)
    assert table.schema.field("exchange_ts").type == pa.timestamp("us", tz="UTC")
    assert table.num_rows == 10


def test_large_result_is_streamed_in_chunks(api: Api) -> None:
    """A 5,000-row body arrives as several chunks (one per record batch), not one buffer."""
    with (
        api.client(api.read_key) as c,
        c.stream(
            "GET",
            "/v1/trades",
            params={"symbol": "BTCUSDT", "start": START, "end": END, "limit": 5000, "format": "csv"},
            headers={
                "Accept-Encoding": "identity"
            },  # raw chunks are counted: uncompressed (compression: test_compression.py)
        ) as response,
    ):
        assert response.status_code == 200
        assert "content-length" not in response.headers
        chunks = [chunk for chunk in response.iter_raw() if chunk]
    assert len(chunks) >= 2
    assert sum(chunk.count(b"\n") for chunk in chunks) == 3_000 + 1


def test_accept_quality_and_wildcards(api: Api) -> None:
    with api.client(api.read_key) as c:
        params = {"symbol": "ETHUSDT", "start": START, "end": END, "limit": 2}
        assert (
            c.get("/v1/trades", params=params, headers={"Accept": "*/*"})
            .headers["content-type"]
            .startswith("application/json")
        )
        q = c.get("/v1/trades", params=params, headers={"Accept": "application/json;q=0.2, text/csv;q=0.9"})
        assert q.headers["content-type"].startswith("text/csv")
        both = c.get("/v1/trades", params={**params, "format": "json"}, headers={"Accept": "text/csv"})
        assert both.headers["content-type"].startswith("application/json")
