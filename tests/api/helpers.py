"""Helpers for the REST API tests: seeding real tables, serving the app with real uvicorn, normalising rows."""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import uvicorn
from pyiceberg.table import Table

from k2.api.app import create_app
from k2.config import HTTP_KEEP_ALIVE_SECONDS, Settings
from k2.lake.writer import append
from k2.model import QUOTE, TRADE
from k2.model.arrow import records_to_arrow
from k2.model.values import to_unscaled
from k2.telemetry.procs import free_port
from tests.landing.helpers import BASE_TS, make_trades


def trades_table(
    symbol: str, first_id: int, count: int, *, ts0: int = BASE_TS, same_ts: int = 1, exchange: str = "binance"
) -> pa.Table:
    """Real-shaped trades (tests/landing/helpers.make_trades); ``same_ts`` consecutive trades share a timestamp."""
    rows = make_trades(symbol, first_id, count, exchange=exchange)
    for i, row in enumerate(rows):
        row["exchange_ts"] = ts0 + (i // same_ts) * 2_000
        row["receipt_ts"] = row["exchange_ts"] + 1_270_000
        row["ingest_ts"] = row["receipt_ts"] + 1_000
    return records_to_arrow(TRADE, rows)


def quotes_table(
    symbol: str, first_id: int, count: int, *, ts0: int = BASE_TS, exchange: str = "binance"
) -> pa.Table:
    """Real-shaped top-of-book quotes around the trades' price walk (spread of 0.01)."""
    rng = random.Random(first_id)
    bid = 61_837.62
    rows = []
    for i in range(count):
        bid = max(1.0, bid + rng.choice((-0.01, 0.0, 0.01)) * rng.randint(0, 30))
        ts = ts0 + i * 3_000
        rows.append(
            {
                "exchange": exchange,
                "symbol": symbol,
                "instrument": symbol[:-4] + "-" + symbol[-4:],
                "asset_class": "crypto",
                "update_id": first_id + i,
                "bid_price": to_unscaled(f"{bid:.2f}"),
                "bid_size": to_unscaled(f"{rng.randint(1, 500_000) / 100_000:.5f}"),
                "ask_price": to_unscaled(f"{bid + 0.01:.2f}"),
                "ask_size": to_unscaled(f"{rng.randint(1, 500_000) / 100_000:.5f}"),
                "exchange_ts": ts,
                "receipt_ts": ts + 900_000,
                "ingest_ts": ts + 901_000,
                "vendor": {},
            }
        )
    return records_to_arrow(QUOTE, rows)


def seed(tables: dict[str, Table]) -> dict[str, int]:
    """Write the standard test data set; returns expected row counts by symbol."""
    append(tables["trades"], trades_table("BTCUSDT", 1_000_000, 3_000), "trades")
    append(tables["trades"], trades_table("ETHUSDT", 5_000_000, 1_000), "trades")
    # Ten trades per timestamp: pagination must split ties correctly.
    append(tables["trades"], trades_table("TIEUSDT", 9_000_000, 400, same_ts=10), "trades")
    append(tables["quotes"], quotes_table("BTCUSDT", 2_000_000, 2_000), "quotes")
    return {"BTCUSDT": 3_000, "ETHUSDT": 1_000, "TIEUSDT": 400}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    """The response is the standard error body with this status and code, its request id matching the header."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and len(error["message"]) > 10
    assert isinstance(error["details"], dict)
    assert error["request_id"] == response.headers["x-request-id"]
    return error  # type: ignore[no-any-return]


class ServerThread:
    """The API app under a real uvicorn server on a random loopback port, in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
            timeout_keep_alive=HTTP_KEEP_ALIVE_SECONDS,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"expected uvicorn to start on port {self.port}, found it did not")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextlib.contextmanager
def serve(settings: Settings) -> Iterator[ServerThread]:
    """Serve ``create_app(settings)`` for the duration of the block."""
    server = ServerThread(settings).start()
    try:
        yield server
    finally:
        server.stop()


def normalise(value: Any, dtype: pa.DataType | None = None) -> Any:
    """One comparable form for a value read back from any format (decimals and times as canonical strings)."""
    if value is None:
        return None
    if dtype is not None and pa.types.is_map(dtype):
        return dict(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def rows_from_arrow(table: pa.Table) -> list[dict[str, Any]]:
    types = {f.name: f.type for f in table.schema}
    return [{k: normalise(v, types[k]) for k, v in row.items()} for row in table.to_pylist()]


def rows_from_response(
    response: httpx.Response, fmt: str, schema: pa.Schema | None = None
) -> list[dict[str, Any]]:
    """Rows of a response in any format, normalised (CSV cells typed back using ``schema``)."""
    if fmt == "json":
        return [dict(r) for r in response.json()["data"]]
    if fmt == "parquet":
        return rows_from_arrow(pq.read_table(io.BytesIO(response.content)))
    if fmt == "arrow":
        return rows_from_arrow(pa.ipc.open_stream(response.content).read_all())
    assert schema is not None
    out = []
    for raw in csv.DictReader(io.StringIO(response.text)):
        row: dict[str, Any] = {}
        for field in schema:
            cell = raw[field.name]
            if cell == "":
                row[field.name] = None
            elif pa.types.is_integer(field.type):
                row[field.name] = int(cell)
            elif pa.types.is_nested(field.type):
                row[field.name] = json.loads(cell)
            elif pa.types.is_floating(field.type):
                row[field.name] = float(cell)
            else:
                row[field.name] = cell
        out.append(row)
    return out


def lagging_topic(settings: Settings, klines: Table, unique: str, produced: int = 5, landed: int = 2) -> str:
    """A real topic holding ``produced`` messages of which a klines commit says ``landed`` are in Iceberg.

    Each message is flushed alone (its own batch), so even Tansu's high watermark (the start of the last
    batch + 1) is the true log end. The commit's summary is built by ``commit_summary``, as writers do.
    """
    from confluent_kafka import Producer

    from k2.bus.topics import ensure_topics
    from k2.lake.summary import commit_summary
    from k2.model import KLINE

    topic = f"market.crypto.klines.lag{unique}"
    ensure_topics(settings, [topic], partitions=1)
    producer = Producer(settings.kafka_client_config())
    for i in range(produced):
        producer.produce(topic, key=b"BTCUSDT", value=f"message {i}".encode())
        assert producer.flush(10) == 0
    open_us = 946_684_800_000_000 + int(unique, 16) % 1_000_000 * 60_000_000  # 2000-01-01 + a unique minute
    row = {
        "exchange": "binance", "symbol": "LAGUSDT", "instrument": "LAG-USDT", "asset_class": "crypto",
        "interval": "1m", "open_time": open_us, "close_time": open_us + 59_999_000, "open": to_unscaled("1"),
        "high": to_unscaled("1"), "low": to_unscaled("1"), "close": to_unscaled("1"), "volume": to_unscaled("1"),
        "quote_volume": None, "trade_count": 1, "taker_buy_base": None, "taker_buy_quote": None,
        "receipt_ts": open_us, "vendor": {},
    }  # fmt: skip
    klines.refresh()
    summary = commit_summary(
        klines.current_snapshot(),
        "test-lag",
        offsets={topic: {"0": landed}},
        ranges={topic: {"0": [0, landed - 1]}},
    )
    append(klines, records_to_arrow(KLINE, [row]), "klines", summary)
    return topic


def server_rss() -> int:
    """This process's RSS after a garbage collection and Arrow's pool release (the in-process server's memory)."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    return int(psutil.Process().memory_info().rss)


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Poll ``condition`` every 50 ms until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def streaming_reader(
    url: str, key: str, path: str, params: dict[str, object], rows: int
) -> Iterator[Iterator[bytes]]:
    """A real HTTP client reading a large body a few KB at a time (it stalls between reads), then leaving."""
    headers = {"X-API-Key": key, "Accept-Encoding": "identity"}
    with (
        httpx.Client(base_url=url, timeout=120, headers=headers) as c,
        c.stream("GET", path, params=params) as response,
    ):
        assert response.status_code == 200, response.read()[:500]
        assert int(response.headers["x-row-count"]) == rows
        chunks = response.iter_raw(4096)
        next(chunks)  # the body has started
        yield chunks


def slow_readers_rss(
    url: str,
    key: str,
    path: str,
    params: dict[str, object],
    rows: int,
    readers: int,
    while_held: Callable[[], None] | None = None,
) -> tuple[int, int]:
    """(RSS before, peak RSS) while ``readers`` :func:`streaming_reader` clients each take a few KB every
    0.2 s (ten rounds; the server waits on them); ``while_held`` runs before they leave."""
    baseline = peak = server_rss()
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(streaming_reader(url, key, path, params, rows)) for _ in range(readers)]
        for _ in range(10):
            for chunks in held:
                next(chunks)
            time.sleep(0.2)
            peak = max(peak, server_rss())
        if while_held is not None:
            while_held()
    return baseline, peak


def assert_in_progress(admission: Any, expected: int) -> None:
    """The API's admission holds ``expected`` requests in progress (a streamed body keeps its slot)."""
    assert admission.total_in_progress() == expected


def shifted_copy(base: pa.Table, copy: int, span_us: int, id_column: str, id_step: int) -> pa.Table:
    """``base`` as its ``copy``-th repetition: ids moved by ``copy * id_step``, times by ``copy * span_us``."""
    ids = pc.add(base[id_column], pa.scalar(copy * id_step, pa.int64()))
    table = base.set_column(base.schema.get_field_index(id_column), base.schema.field(id_column), ids)
    for name in ("exchange_ts", "receipt_ts", "ingest_ts"):
        shifted = pc.add(table[name].cast(pa.int64()), pa.scalar(copy * span_us, pa.int64()))
        index = table.schema.get_field_index(name)
        table = table.set_column(index, table.schema.field(name), shifted.cast(table.schema.field(name).type))
    return table
