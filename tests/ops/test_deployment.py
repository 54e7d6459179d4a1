"""Production deployment beyond one machine, on loopback: SeaweedFS (S3 + its Iceberg REST catalog),
PostgreSQL, a Tansu broker storing its log in S3, K2's registry on PostgreSQL, and two landing consumers
in one group. The demo capture goes through the whole pipeline and is read back with DuckDB over S3.

Variants: (a) REST catalog (SeaweedFS) with its S3 table bucket; (b) SQL catalog on PostgreSQL with an
S3 warehouse. Nothing is mocked.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from k2.bus.broker import tansu_process
from k2.config import Settings
from k2.telemetry.procs import ManagedProcess, start_on_free_port
from tests.support.postgres import PostgresServer
from tests.support.seaweed import ACCESS_KEY, SECRET_KEY, TABLE_BUCKET, SeaweedServer

pytestmark = [pytest.mark.s3, pytest.mark.postgres]

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples" / "binance"
EXPECTED_TRADES = 19_904


@pytest.fixture(scope="module")
def seaweed() -> Iterator[SeaweedServer]:
    server = SeaweedServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def capture() -> list[tuple[Any, dict[str, Any], dict[str, Any]]]:
    from k2.sources.binance import iter_capture

    paths = sorted(SAMPLES.glob("spot_btcusdt_*.gz"))
    assert paths, f"expected the demo capture in {SAMPLES}"
    return list(iter_capture(paths))


class Deployment:
    """Broker on S3 + registry on PostgreSQL for one test; stopped by the fixture."""

    def __init__(self, seaweed: SeaweedServer, postgres: PostgresServer, root: Path) -> None:
        self.seaweed = seaweed
        self.bucket = f"k2-broker-{uuid.uuid4().hex[:6]}"
        seaweed.create_bucket(self.bucket)
        self.root = root
        self.broker = start_on_free_port(self._broker)
        self.broker_port = self.broker.port
        registry_db = postgres.create_database(f"k2_registry_{uuid.uuid4().hex[:6]}")
        from k2.bus.registry.server import registry_process

        self.registry = start_on_free_port(
            lambda port: registry_process(port, registry_db, root / "registry.log")
        )
        self.registry_port = self.registry.port

    def _broker(self, port: int) -> ManagedProcess:
        return tansu_process(
            port,
            self.root / "broker.log",
            storage=f"s3://{self.bucket}/",
            s3_env=self.seaweed.env(),
        )

    def restart_broker(self) -> None:
        self.broker.stop()
        self.broker = self._broker(self.broker_port).start()

    def stop(self) -> None:
        self.registry.stop()
        self.broker.stop()


@pytest.fixture
def deployment(seaweed: SeaweedServer, postgres: PostgresServer, tmp_path: Path) -> Iterator[Deployment]:
    dep = Deployment(seaweed, postgres, tmp_path)
    yield dep
    dep.stop()


def _settings(dep: Deployment, tmp_path: Path, **lake: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "k2",
        kafka_bootstrap_servers=f"127.0.0.1:{dep.broker_port}",
        schema_registry_url=f"http://127.0.0.1:{dep.registry_port}",
        s3_endpoint=dep.seaweed.s3_url,
        s3_access_key_id=ACCESS_KEY,
        s3_secret_access_key=SECRET_KEY,
        consumer_group=f"k2-landing-{uuid.uuid4().hex[:6]}",
        consumer_session_timeout_ms=2000,
        landing_commit_rows=20_000,
        landing_commit_interval_seconds=1.0,
        landing_metrics_port=0,
        **lake,
    )


def _total_records(table: Any) -> int:
    table.refresh()
    snapshot = table.current_snapshot()
    return int(snapshot.summary.additional_properties.get("total-records", 0)) if snapshot is not None else 0


def run_pipeline(
    settings: Settings, capture: list[tuple[Any, dict[str, Any], dict[str, Any]]]
) -> dict[str, Any]:
    """Produce the capture, land it with two consumers in one group (the first committer is stopped after its
    first commit, so the other takes its partitions over), and return what was observed."""
    from k2.bus import MarketDataProducer
    from k2.lake.catalog import ensure_tables, load_catalog
    from k2.landing import LandingConsumer
    from k2.model import TRADE

    tables = ensure_tables(load_catalog(settings), settings)
    sent_trades = sent_quotes = 0
    with MarketDataProducer(settings) as producer:
        for record, row, _ in capture:
            producer.send(record, row)
            if record is TRADE:
                sent_trades += 1
            else:
                sent_quotes += 1
    assert sent_trades == EXPECTED_TRADES

    commits: list[tuple[str, str, int]] = []
    consumers: dict[str, LandingConsumer] = {}

    def on_commit_for(name: str) -> Any:
        def on_commit(table: str, rows: int) -> None:
            commits.append((name, table, rows))
            if len(commits) == 1:
                consumers[name].stop()  # hand its partitions over to the other consumer mid-stream

        return on_commit

    for name in ("landing-a", "landing-b"):
        consumers[name] = LandingConsumer(settings, name=name, on_commit=on_commit_for(name))
    errors: list[BaseException] = []

    def run(consumer: LandingConsumer) -> None:
        try:
            consumer.run(max_seconds=150)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in consumers.values()]
    for thread in threads:
        thread.start()
    quotes_expected = len({row["update_id"] for record, row, _ in capture if record is not TRADE})
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and not errors:
        if (
            _total_records(tables["trades"]) >= EXPECTED_TRADES
            and _total_records(tables["quotes"]) >= quotes_expected
        ):
            break
        time.sleep(0.5)
    for consumer in consumers.values():
        consumer.stop()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return {"tables": tables, "commits": commits, "consumers": consumers, "quotes_expected": quotes_expected}


def check_exactly_once_with_duckdb(settings: Settings, observed: dict[str, Any], capture: list[Any]) -> None:
    from k2.lake.catalog import metadata_location
    from k2.model import TRADE
    from k2.query.engine import new_connection

    tables = observed["tables"]
    trades = tables["trades"]
    trades.refresh()
    location = metadata_location(trades)
    assert location.startswith("s3://"), location
    con = new_connection(settings)  # DuckDB + httpfs + iceberg with an S3 secret from the settings
    rows = con.execute(
        "SELECT trade_id, CAST(price AS VARCHAR), CAST(quantity AS VARCHAR) FROM iceberg_scan(?) WHERE symbol = 'BTCUSDT'",
        [location],
    ).fetchall()
    assert len(rows) == EXPECTED_TRADES, f"expected {EXPECTED_TRADES} trades, found {len(rows)}"
    source = {
        row["trade_id"]: (Decimal(raw["p"]), Decimal(raw["q"]))
        for record, row, raw in capture
        if record is TRADE
    }
    landed = {tid: (Decimal(p), Decimal(q)) for tid, p, q in rows}
    assert len(landed) == EXPECTED_TRADES  # no duplicates
    assert landed == source  # every trade, bit-exact prices and quantities
    quotes = con.execute(
        "SELECT count(*), count(DISTINCT update_id) FROM iceberg_scan(?)",
        [metadata_location(tables["quotes"])],
    ).fetchone()
    assert quotes == (observed["quotes_expected"], observed["quotes_expected"])
    # K2's own Python API reads the same tables over S3 (the path the CLI and REST API use).
    from prometheus_client import REGISTRY

    import k2

    before = REGISTRY.get_sample_value("k2_query_seconds_count", {"query": "rows"}) or 0.0
    with k2.connect(**{k: v for k, v in settings.model_dump().items() if v is not None}) as client:
        via_api = client.trades("BTCUSDT", include_recent=False, limit=None).table
    assert via_api.num_rows == EXPECTED_TRADES
    assert (
        REGISTRY.get_sample_value("k2_query_seconds_count", {"query": "rows"}) or 0.0
    ) > before  # query latency recorded
    # Both consumers of the group committed: the first stopped after one commit, the other took over.
    writers = {name for name, _, _ in observed["commits"]}
    assert writers == {"landing-a", "landing-b"}, observed["commits"]


def test_rest_catalog_s3_warehouse_broker_on_s3_two_consumers(
    deployment: Deployment, tmp_path: Path, capture: list[Any]
) -> None:
    settings = _settings(
        deployment, tmp_path,
        catalog_type="rest", catalog_uri=deployment.seaweed.iceberg_url, catalog_credential=f"{ACCESS_KEY}:{SECRET_KEY}",
        warehouse=f"s3://{TABLE_BUCKET}",
    )  # fmt: skip
    observed = run_pipeline(settings, capture)
    check_exactly_once_with_duckdb(settings, observed, capture)
    assert observed["tables"]["trades"].location().startswith(f"s3://{TABLE_BUCKET}/")
    assert (
        deployment.seaweed.s3_client().list_objects_v2(Bucket=deployment.bucket).get("KeyCount", 0) > 0
    )  # the broker's log

    # The broker keeps its log in S3: after a restart the landing consumer verifies the last landed
    # message is still there, resumes from the table's offsets, and lands nothing twice.
    deployment.restart_broker()
    from k2.landing import LandingConsumer

    again = LandingConsumer(settings, name="landing-c")
    stats = again.run(idle_exit_seconds=4, max_seconds=60)
    assert stats.resets == 0 and stats.landed == 0
    assert _total_records(observed["tables"]["trades"]) == EXPECTED_TRADES


def test_sql_catalog_on_postgresql_with_s3_warehouse(
    deployment: Deployment,
    postgres: PostgresServer,
    seaweed: SeaweedServer,
    tmp_path: Path,
    capture: list[Any],
) -> None:
    bucket = f"k2-lake-{uuid.uuid4().hex[:6]}"
    seaweed.create_bucket(bucket)
    catalog_db = postgres.create_database(f"k2_catalog_{uuid.uuid4().hex[:6]}")
    settings = _settings(
        deployment, tmp_path, catalog_type="sql", catalog_uri=catalog_db, warehouse=f"s3://{bucket}/warehouse"
    )
    observed = run_pipeline(settings, capture)
    check_exactly_once_with_duckdb(settings, observed, capture)
    assert observed["tables"]["trades"].location().startswith(f"s3://{bucket}/warehouse/")
    objects = seaweed.s3_client().list_objects_v2(Bucket=bucket, Prefix="warehouse/market_data")
    assert any(o["Key"].endswith(".parquet") for o in objects.get("Contents", []))


def test_rest_catalog_with_sigv4_signing_from_catalog_properties(
    seaweed: SeaweedServer, tmp_path: Path
) -> None:
    """K2_CATALOG_PROPERTIES carries SigV4 signing (how AWS Glue's and S3 Tables' REST endpoints authenticate)."""
    import json

    from pyiceberg.exceptions import UnauthorizedError

    from k2.lake.catalog import ensure_tables, load_catalog

    base = Settings(
        data_dir=tmp_path / "k2", catalog_type="rest", catalog_uri=seaweed.iceberg_url, warehouse=f"s3://{TABLE_BUCKET}",
        s3_endpoint=seaweed.s3_url, s3_access_key_id=ACCESS_KEY, s3_secret_access_key=SECRET_KEY,
    )  # fmt: skip
    with pytest.raises(UnauthorizedError):  # neither OAuth2 credential nor SigV4: refused
        load_catalog(base).list_namespaces()
    signed = base.model_copy(
        update={
            "catalog_properties": json.dumps(
                {
                    "rest.sigv4-enabled": "true",
                    "rest.signing-name": "s3tables",
                    "rest.signing-region": "us-east-1",
                    "client.access-key-id": ACCESS_KEY,
                    "client.secret-access-key": SECRET_KEY,
                    "client.region": "us-east-1",
                }
            )  # fmt: skip
        }
    )
    tables = ensure_tables(load_catalog(signed), signed)
    assert tables["trades"].location().startswith(f"s3://{TABLE_BUCKET}/market_data/trades")
