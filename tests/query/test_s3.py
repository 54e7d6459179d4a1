"""Queries over an S3 warehouse (a real local S3 server, moto's): DuckDB reads through the secret K2 creates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from k2.config import Settings
from k2.query.client import Client
from k2.query.errors import QueryError
from k2.telemetry.procs import free_port

from .helpers import csv_rows, csv_trades, load


@pytest.fixture
def s3_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="k2key",
        aws_secret_access_key="k2secret",
        region_name="us-east-1",
    ).create_bucket(Bucket="k2-lake")
    yield url
    server.stop()


def test_queries_read_an_s3_warehouse(tmp_path: Path, s3_url: str) -> None:
    settings = Settings(
        data_dir=tmp_path / "k2",
        warehouse="s3://k2-lake/warehouse",
        s3_endpoint=s3_url,
        s3_access_key_id="k2key",
        s3_secret_access_key="k2secret",
    )
    raw = csv_rows()
    load(settings, "trades", csv_trades(raw))
    with Client(settings) as client:
        bars = client.bars("BTCUSDT", "1m", include_recent=False).to_pylist()
        assert [b["trade_count"] for b in bars] == [len(raw)]
        assert client.sql("SELECT count(*) AS n FROM trades").to_pylist() == [{"n": len(raw)}]
        with pytest.raises(QueryError, match="Permission"):
            client.sql("SELECT * FROM read_csv('/etc/passwd')")
