"""Query pools share one DuckDB database per process and S3 configuration (extensions loaded once).

Real Iceberg tables (local SQLite catalog + file warehouse, or a real local S3 server, moto's) are read
through the pools; the tests check the sharing and the hazards it brings: parallel cursors, interrupting one
cursor, the read-only pool's GLOBAL lock-down, two S3 endpoints in one process, and fork.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import duckdb
import pytest
from moto.server import ThreadedMotoServer

import k2.duck
from k2.config import Settings
from k2.lake.catalog import TABLES, load_catalog, metadata_location
from k2.query.client import Client
from k2.query.engine import ConnectionPool
from k2.query.errors import QueryError
from k2.telemetry.procs import free_port

from .helpers import csv_rows, csv_trades, lake_settings, load


@pytest.fixture
def trades_lake(tmp_path: Path) -> tuple[Settings, int]:
    """Settings of a local lake holding one real minute of Binance trades, and its row count."""
    settings = lake_settings(tmp_path)
    raw = csv_rows()
    load(settings, "trades", csv_trades(raw))
    return settings, len(raw)


def _trades_location(settings: Settings) -> str:
    return metadata_location(load_catalog(settings).load_table(TABLES["trades"].identifier))


def test_pools_share_one_database_and_load_the_extensions_once(trades_lake: tuple[Settings, int]) -> None:
    settings, rows = trades_lake
    first, second, third = ConnectionPool(settings), ConnectionPool(settings), ConnectionPool(settings)
    probe = f"shared_probe_{uuid.uuid4().hex}"
    try:
        with first.connection() as con:
            con.execute(f"CREATE TABLE {probe} AS SELECT 42 AS x")
        with second.connection() as con:
            # The same database: a table made through another pool's connection is visible here.
            assert con.execute(f"SELECT x FROM {probe}").fetchone() == (42,)
            con.execute(f"DROP TABLE {probe}")
        opened = k2.duck.databases_opened()
        with third.connection() as con:
            count = con.execute(
                "SELECT count(*) FROM iceberg_scan(?)", [_trades_location(settings)]
            ).fetchone()
        assert count == (rows,)
        assert k2.duck.databases_opened() == opened, "a new pool loaded the extensions again"
    finally:
        for pool in (first, second, third):
            pool.close()
    # Closing the pools closed their cursors, not the shared database: the next pool reuses it.
    fourth = ConnectionPool(settings)
    try:
        with fourth.connection() as con:
            count = con.execute(
                "SELECT count(*) FROM iceberg_scan(?)", [_trades_location(settings)]
            ).fetchone()
        assert count == (rows,)
        assert k2.duck.databases_opened() == opened
    finally:
        fourth.close()


def test_parallel_queries_on_shared_cursors_equal_serial_answers(trades_lake: tuple[Settings, int]) -> None:
    settings, _ = trades_lake
    queries: list[Callable[[Client], Any]] = [
        lambda c: c.trades("BTCUSDT", include_recent=False).table,
        lambda c: c.trades("BTCUSDT", limit=7, include_recent=False).table,
        lambda c: c.bars("BTCUSDT", "1s", include_recent=False).table,
        lambda c: c.bars("BTCUSDT", "10s", include_recent=False).table,
        lambda c: c.bars("BTCUSDT", "1m", include_recent=False).table,
        lambda c: (
            c.vwap("BTCUSDT", "2021-01-03T00:00:00Z", "2021-01-04T00:00:00Z", include_recent=False).table
        ),
    ]
    with Client(settings.model_copy(update={"query_pool_size": 4})) as client:
        serial = [query(client) for query in queries]
        with ThreadPoolExecutor(max_workers=6) as executor:
            parallel = list(executor.map(lambda i: (i, queries[i](client)), [*range(len(queries))] * 4))
        assert client._pool.created <= 4
    for i, table in parallel:
        assert table.equals(serial[i]), f"query {i} answered differently in parallel"
    assert all(table.num_rows > 0 for table in serial)


def test_interrupting_one_cursor_leaves_the_others_running(trades_lake: tuple[Settings, int]) -> None:
    settings, rows = trades_lake
    location = _trades_location(settings)
    pool = ConnectionPool(settings.model_copy(update={"query_pool_size": 2}))
    outcome: list[BaseException | None] = []

    def endless(con: duckdb.DuckDBPyConnection) -> None:
        try:
            con.execute("SELECT sum(hash(range)) FROM range(1000000000000000)").fetchone()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    def count(con: duckdb.DuckDBPyConnection) -> Any:
        return con.execute("SELECT count(*) FROM iceberg_scan(?)", [location]).fetchone()

    try:
        with pool.connection() as victim, pool.connection() as other:
            runner = threading.Thread(target=endless, args=(victim,), daemon=True)
            runner.start()
            deadline = time.monotonic() + 60
            while runner.is_alive() and time.monotonic() < deadline:
                assert count(other) == (rows,)  # the other cursor keeps answering while the victim runs
                victim.interrupt()  # a no-op until the statement has started: repeat until it stops
                runner.join(0.05)
            assert not runner.is_alive(), "the interrupted statement did not stop within 60 s"
            assert isinstance(outcome[0], duckdb.InterruptException)
            assert count(victim) == (rows,)  # the interrupted cursor is usable again
            assert count(other) == (rows,)
    finally:
        pool.close()


def test_read_only_lock_down_does_not_leak_into_other_pools(
    trades_lake: tuple[Settings, int], tmp_path: Path
) -> None:
    settings, rows = trades_lake
    outside = tmp_path / "outside.csv"
    outside.write_text("x\n1\n")
    with Client(settings) as locked:
        assert locked.sql("SELECT count(*) AS n FROM trades").to_pylist() == [{"n": rows}]
        with pytest.raises(QueryError, match="Permission"):
            locked.sql(f"SELECT * FROM read_csv('{outside.as_posix()}')")
        # The same client's query pool, and a pool made after the lock-down, are not locked.
        assert locked.trades("BTCUSDT", include_recent=False).num_rows == rows
        pool = ConnectionPool(settings)
        try:
            with pool.connection() as con:
                assert con.execute(
                    "SELECT current_setting('enable_external_access'), current_setting('lock_configuration')"
                ).fetchone() == (True, False)
                assert con.execute(
                    "SELECT count(*) FROM iceberg_scan(?)", [_trades_location(settings)]
                ).fetchone() == (rows,)
                assert con.execute("SELECT x FROM read_csv(?)", [outside.as_posix()]).fetchone() == (1,)
                assert con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchone() == (
                    0,
                )
        finally:
            pool.close()
        # Another client's read-only pool locks (and answers) on its own.
        with Client(settings) as second:
            assert second.sql("SELECT count(*) AS n FROM trades").to_pylist() == [{"n": rows}]


def _moto(bucket: str) -> tuple[ThreadedMotoServer, str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3", endpoint_url=url, aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1"
    ).create_bucket(Bucket=bucket)
    return server, url


@pytest.fixture
def two_s3_servers() -> Iterator[tuple[str, str]]:
    first, first_url = _moto("k2-lake")
    second, second_url = _moto("k2-lake")
    yield first_url, second_url
    first.stop()
    second.stop()


def test_two_s3_configurations_in_one_process_stay_isolated(
    tmp_path: Path, two_s3_servers: tuple[str, str]
) -> None:
    raw = csv_rows()
    counts = (len(raw), len(raw) // 3)
    lakes = []
    for i, (url, count) in enumerate(zip(two_s3_servers, counts, strict=True)):
        # Same bucket and warehouse path on both servers; only the endpoint (and the data) differ.
        settings = Settings(
            data_dir=tmp_path / f"k2-{i}",
            warehouse="s3://k2-lake/warehouse",
            s3_endpoint=url,
            s3_access_key_id="k",
            s3_secret_access_key="s",
        )
        load(settings, "trades", csv_trades(raw[:count]))
        lakes.append(settings)
    clients = [Client(settings) for settings in lakes]
    try:
        for _ in range(2):  # interleaved: each client's reads go to its own endpoint every time
            for client, count in zip(clients, counts, strict=True):
                assert client.trades("BTCUSDT", include_recent=False).num_rows == count
        for client, url in zip(clients, two_s3_servers, strict=True):
            with client._pool.connection() as con:
                secrets = con.execute("SELECT name, secret_string FROM duckdb_secrets()").fetchall()
            assert [name for name, _ in secrets] == ["k2_s3"]
            assert f"endpoint={url.removeprefix('http://')}" in secrets[0][1]
    finally:
        for client in clients:
            client.close()


def _child_reads(settings: Settings, location: str, probe: str, answers: Any) -> None:
    pool = ConnectionPool(settings)
    with pool.connection() as con:
        seen = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [probe]).fetchone()
        count = con.execute("SELECT count(*) FROM iceberg_scan(?)", [location]).fetchone()
    pool.close()
    answers.put((seen, count))


def test_a_forked_child_opens_its_own_database(trades_lake: tuple[Settings, int]) -> None:
    settings, rows = trades_lake
    location = _trades_location(settings)
    probe = f"fork_probe_{uuid.uuid4().hex}"
    pool = ConnectionPool(settings)
    try:
        with pool.connection() as con:
            con.execute(f"CREATE TABLE {probe} AS SELECT 1 AS x")
        context = multiprocessing.get_context("fork")
        answers = context.Queue()
        child = context.Process(target=_child_reads, args=(settings, location, probe, answers))
        child.start()
        seen, count = answers.get(timeout=60)
        child.join(30)
        # The child never touches the parent's database (its worker threads did not survive the fork).
        assert seen == (0,)
        assert count == (rows,)
        with pool.connection() as con:
            con.execute(f"DROP TABLE {probe}")
    finally:
        pool.close()
