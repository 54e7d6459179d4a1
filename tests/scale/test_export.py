"""``k2 export catalog-properties``: what another engine needs to open K2's catalog, secrets redacted by default.

The pyiceberg properties are checked by use: a catalog opened from the printed JSON (a fresh
pyiceberg, not K2's loader) reads the rows K2 wrote. The Spark and Trino renderings are checked
for the keys their Iceberg documentation names (no JVM engine runs in these tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from k2.cli import app
from k2.config import Settings
from k2.lake.engines import REDACTED, engine_properties

REPO = Path(__file__).resolve().parents[2]


def _export(env_overrides: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update({"PYTHONPATH": str(REPO / "src"), "COLUMNS": "200", **env_overrides})
    return subprocess.run(
        [sys.executable, "-m", "k2.cli", "export", "catalog-properties", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pyiceberg_properties_open_the_same_tables(tmp_path: Path) -> None:
    from pyiceberg.catalog import load_catalog

    from k2.lake.catalog import ensure_tables
    from k2.lake.catalog import load_catalog as k2_catalog
    from k2.lake.writer import append
    from tests.query.helpers import capture_tables

    settings = Settings(data_dir=tmp_path / "k2")
    trades = capture_tables(max_lines=2000)[0]
    append(ensure_tables(k2_catalog(settings), settings)["trades"], trades, "trades")

    printed = _export({"K2_DATA_DIR": str(tmp_path / "k2")}, "--format", "json")
    assert printed.returncode == 0, printed.stderr
    properties = json.loads(printed.stdout)
    assert properties["type"] == "sql" and properties["uri"].startswith("sqlite:///")
    read = load_catalog("k2", **properties).load_table("market_data.trades").scan().to_arrow()
    assert read.num_rows == trades.num_rows
    assert sorted(read["trade_id"].to_pylist()) == sorted(trades["trade_id"].to_pylist())


def test_secrets_are_redacted_unless_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process (typer's runner, the same command code): 8 runs of a fresh ``python -m k2.cli`` cost
    # ~1.5 s of imports each, minutes on a loaded machine; the other tests here run the real entry point.
    env = {
        "K2_DATA_DIR": str(tmp_path / "k2"), "K2_CATALOG_TYPE": "rest", "K2_CATALOG_URI": "http://127.0.0.1:8181",
        "K2_CATALOG_CREDENTIAL": "client:s3cr3t-cred", "K2_WAREHOUSE": "s3://k2-lake/warehouse",
        "K2_S3_ENDPOINT": "http://127.0.0.1:8333", "K2_S3_ACCESS_KEY_ID": "AKIDEXAMPLE", "K2_S3_SECRET_ACCESS_KEY": "s3cr3t-key",
    }  # fmt: skip
    for key in [k for k in os.environ if k.startswith("K2_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    def _export(*args: str) -> Result:
        result = CliRunner().invoke(app, ["export", "catalog-properties", *args])
        assert result.exit_code == 0, result.output
        return result

    for engine in ("pyiceberg", "spark", "trino"):
        hidden = _export("--engine", engine)
        assert "s3cr3t" not in hidden.stdout and REDACTED in hidden.stdout, hidden.stdout
        shown = _export("--engine", engine, "--show-secrets")
        assert "s3cr3t-key" in shown.stdout and "s3cr3t-cred" in shown.stdout, shown.stdout
    spark = dict(line.split("=", 1) for line in _export("--engine", "spark").stdout.splitlines())
    assert spark["spark.sql.catalog.k2"] == "org.apache.iceberg.spark.SparkCatalog"
    assert (
        spark["spark.sql.catalog.k2.type"] == "rest"
        and spark["spark.sql.catalog.k2.uri"] == "http://127.0.0.1:8181"
    )
    assert spark["spark.sql.catalog.k2.io-impl"] == "org.apache.iceberg.aws.s3.S3FileIO"
    assert spark["spark.sql.catalog.k2.s3.endpoint"] == "http://127.0.0.1:8333"
    trino = dict(line.split("=", 1) for line in _export("--engine", "trino").stdout.splitlines())
    assert trino["connector.name"] == "iceberg" and trino["iceberg.catalog.type"] == "rest"
    assert (
        trino["iceberg.rest-catalog.uri"] == "http://127.0.0.1:8181"
        and trino["s3.path-style-access"] == "true"
    )


def test_database_password_in_a_catalog_url_is_redacted(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, catalog_uri="postgresql+psycopg2://k2:pa55word@db.example:5432/k2")
    for engine in ("pyiceberg", "spark", "trino"):
        shown = json.dumps(engine_properties(settings, engine))  # type: ignore[arg-type]
        assert "pa55word" not in shown, shown
    assert (
        engine_properties(settings, "trino")["iceberg.jdbc-catalog.connection-url"]
        == "jdbc:postgresql://db.example:5432/k2"
    )


def test_unknown_engine_is_refused_naming_the_choices(tmp_path: Path) -> None:
    refused = _export({"K2_DATA_DIR": str(tmp_path / "k2")}, "--engine", "hive")
    assert refused.returncode == 2
    assert "expected one of pyiceberg, spark, trino, found 'hive'" in refused.stderr
