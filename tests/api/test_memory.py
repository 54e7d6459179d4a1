"""Bounded memory under slow readers (issue 10 §5): data requests in progress are capped per key (429) and
per process (503), each with Retry-After; slots (and the results they hold) are freed when clients leave,
and the process RSS stays bounded however many slow clients ask."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from k2.api.keys import KeyStore
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.writer import append
from tests.api.conftest import api_settings
from tests.api.helpers import assert_error, serve, server_rss, trades_table, wait_until

ROWS = 160_000
PARAMS = {"symbol": "BIGUSDT", "limit": ROWS, "include_recent": "false", "format": "csv"}


def _big_trades() -> pa.Table:
    base = trades_table("BIGUSDT", 0, 20_000)
    parts = []
    for copy in range(ROWS // 20_000):
        ids = pc.add(base["trade_id"], pa.scalar(copy * 1_000_000, pa.int64()))
        parts.append(
            base.set_column(base.schema.get_field_index("trade_id"), base.schema.field("trade_id"), ids)
        )
    return pa.concat_tables(parts)


@contextlib.contextmanager
def slow_reader(url: str, key: str) -> Iterator[httpx.Response]:
    """A real HTTP client that starts reading a large body, then stalls (a slow reader), then leaves."""
    # identity: compressed, these repetitive rows would fit in the socket buffers and never hold the server
    headers = {"X-API-Key": key, "Accept-Encoding": "identity"}
    with (
        httpx.Client(base_url=url, timeout=60, headers=headers) as c,
        c.stream("GET", "/v1/trades", params=PARAMS) as response,
    ):
        chunks = response.iter_raw(65_536)  # kept: dropping the iterator would close the connection
        if response.status_code == 200:
            for _ in range(3):  # the body has started, slowly: the result is held for this client
                next(chunks)
                time.sleep(0.05)
        yield response


@pytest.mark.timeout(180)
def test_slow_readers_are_capped_and_memory_is_freed_when_they_leave(
    tmp_path: Path, broker: str, schema_registry: str
) -> None:
    settings = api_settings(
        tmp_path / "k2",
        broker,
        schema_registry,
        query_max_rows=ROWS,
        api_max_concurrent_per_key=2,
        api_max_concurrent_requests=3,
        api_request_timeout_seconds=120.0,
    )
    tables = ensure_tables(load_catalog(settings), settings)
    append(tables["trades"], _big_trades(), "trades")
    store = KeyStore.from_settings(settings)
    key_a, key_b, key_c = (store.create(name, "read")[0] for name in "abc")
    with serve(settings) as server:
        admission = getattr(server.app.state.k2, "admission", None)
        with httpx.Client(base_url=server.url, timeout=60, headers={"X-API-Key": key_a}) as c:
            body = c.get("/v1/trades", params=PARAMS)
            assert body.status_code == 200 and int(body.headers["x-row-count"]) == ROWS
            csv_bytes = len(body.content)
            del body
        baseline = server_rss()
        with contextlib.ExitStack() as readers:
            held = [readers.enter_context(slow_reader(server.url, key)) for key in (key_a, key_a, key_b)]
            assert [r.status_code for r in held] == [200, 200, 200]
            # A third request of key a: 429; a first request of key c while 3 are in progress: 503.
            with httpx.Client(base_url=server.url, timeout=60) as c:
                per_key = c.get("/v1/trades", params=PARAMS, headers={"X-API-Key": key_a})
                assert_error(per_key, 429, "too_many_requests_in_progress")
                assert per_key.headers["retry-after"] == "1"
                total = c.get("/v1/trades", params=PARAMS, headers={"X-API-Key": key_c})
                assert_error(total, 503, "busy")
                assert total.headers["retry-after"] == "1"
            assert admission.total_in_progress() == 3
            # Eight more slow clients are refused, not buffered: memory stays bounded by the three admitted.
            for key in (key_a, key_b, key_c) * 3:
                with slow_reader(server.url, key) as extra:
                    assert extra.status_code in (429, 503)
            during = server_rss()
        # Every client left mid-body: their slots, and the results they held, are freed.
        assert wait_until(lambda: admission.total_in_progress() == 0, timeout=30.0), (
            f"{admission.total_in_progress()} requests still in progress"
        )
        after = server_rss()
        with httpx.Client(base_url=server.url, timeout=60, headers={"X-API-Key": key_c}) as c:
            assert c.get("/v1/trades", params={**PARAMS, "limit": 10}).status_code == 200
    mib = 1 << 20
    print(
        f"csv body {csv_bytes / mib:.0f} MiB; rss baseline {baseline / mib:.0f} MiB, 3 slow readers {during / mib:.0f} MiB, after {after / mib:.0f} MiB"
    )
    assert during - baseline < 3 * 2 * csv_bytes, "the admitted slow readers hold more than their results"
    assert after - baseline < max(96 * mib, csv_bytes), "memory held after the slow readers left"
