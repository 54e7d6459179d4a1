"""API warm-up (issue 16 speed): the engine and the symbols list are loaded at start, not by the first request.

The console's first chart waited for ``/v1/symbols`` on a cold process (DuckDB's Iceberg extension, the
catalog and a full scan of trades and quotes: 2.1 s of the 3.4 s to the first candle measured here at
load 12, more under heavier load). The warm-up runs that in the background as the server starts.
"""

from __future__ import annotations

from tests.api.conftest import Api


def test_symbols_are_loaded_before_the_first_request(api: Api) -> None:
    state = api.server.app.state.k2
    assert state.warmed.wait(120), "expected the warm-up to finish within 120 s"
    client = state.client()
    # The symbols of the current snapshots are cached: the first /v1/symbols is a cache hit.
    assert len(client._symbols_cache) == 1
    with api.client(api.read_key) as c:
        listed = c.get("/v1/symbols").json()["data"]
    assert {row["symbol"] for row in listed} == set(api.counts)
    assert len(client._symbols_cache) == 1
