"""One client, local or remote (issue 12 §6): every read method over a live API returns the same
QueryResult (Arrow IPC on the wire) as the local client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import k2
from k2.api.remote import RemoteClient
from k2.query.client import Client
from k2.query.errors import QueryError, UnknownSymbolError
from tests.api.conftest import Api

START, END = "2024-08-08T23:00:00Z", "2024-08-09T01:00:00Z"

CALLS: dict[str, Callable[[Any], Any]] = {
    "trades": lambda c: c.trades("BTCUSDT", START, END),
    "trades_limit": lambda c: c.trades("TIEUSDT", START, END, limit=123),
    "quotes": lambda c: c.quotes("BTCUSDT", START, END),
    "bars": lambda c: c.bars("BTCUSDT", "1m", START, END),
    "bars_tick": lambda c: c.bars("BTCUSDT", "1m", START, END, kind="tick", size=100),
    "vwap": lambda c: c.vwap("BTCUSDT", START, END),
    "twap": lambda c: c.twap("ETHUSDT", START, END),
    "spread_stats": lambda c: c.spread_stats("BTCUSDT", START, END),
    "asof_join": lambda c: c.asof_join("BTCUSDT", START, END, tolerance="1s"),
    "symbols": lambda c: c.symbols(),
    "snapshots": lambda c: c.snapshots("trades"),
    "gaps": lambda c: c.gaps(),
}


@pytest.fixture(scope="module")
def clients(api: Api) -> Any:
    remote = k2.connect(url=api.url, api_key=api.read_key)
    assert isinstance(remote, RemoteClient)
    with Client(api.settings) as local:
        yield local, remote
    remote.close()


@pytest.mark.parametrize("name", sorted(CALLS))
def test_remote_equals_local(clients: Any, name: str) -> None:
    local, remote = clients
    expected, got = CALLS[name](local), CALLS[name](remote)
    assert got.table.schema.equals(expected.table.schema), f"{got.table.schema}\n!=\n{expected.table.schema}"
    assert got.table.equals(expected.table)
    assert got.snapshot_ids == expected.snapshot_ids


def test_remote_pinning_errors_and_sql(clients: Any) -> None:
    local, remote = clients
    first = local.snapshots("trades").table["snapshot_id"][0].as_py()
    assert remote.snapshot_id("trades") == local.snapshot_id("trades")
    pinned_remote, pinned_local = remote.as_of(first), local.as_of(first)
    assert pinned_remote.trades("BTCUSDT", START, END).table.equals(
        pinned_local.trades("BTCUSDT", START, END).table
    )
    assert pinned_remote.symbols().table.equals(pinned_local.symbols().table)
    with pytest.raises(UnknownSymbolError):
        remote.trades("NOSUCHUSDT", START, END)
    with pytest.raises(QueryError, match="local client"):
        remote.sql("SELECT 1")
    with pytest.raises(ValueError, match="api_key"):
        k2.connect(url="http://127.0.0.1:1")
