"""Another engine on a real cluster over K2's tables: Daft on a 3-node Ray cluster, SeaweedFS S3 + Iceberg REST catalog.

The cluster is a head node and two worker nodes, each a separate ``ray start`` process
(tests/support/ray_cluster.py). K2 writes trades for several symbols over two days into its
``market_data.trades`` table on SeaweedFS; Daft opens the same table through the properties
``k2 export catalog-properties`` prints, computes 1-minute bars for every symbol of one day on the
cluster, and the result must equal K2's own ``bars`` exactly (decimal open, high, low, close, volume
and trade count) for every symbol.

Data: the real Binance capture (BTCUSDT) plus two symbols derived from it by the test (ETHUSDT keeps
every other trade, SOLUSDT every third, with their own trade ids), so bars differ per symbol and many
trades share a timestamp (open/close must break ties by trade id). The rows are written in reverse
order and in two commits, so nothing depends on file order.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from k2.config import Settings
from tests.support.seaweed import ACCESS_KEY, SECRET_KEY, TABLE_BUCKET, SeaweedServer

pytest.importorskip("daft")
pytest.importorskip("ray")

from tests.support.ray_cluster import RayCluster

pytestmark = [pytest.mark.s3, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
DAY = datetime(2024, 8, 8, tzinfo=UTC)
COMPARED = ("open", "high", "low", "close", "volume", "trade_count")


@pytest.fixture(scope="module")
def seaweed() -> Iterator[SeaweedServer]:
    server = SeaweedServer().start()
    yield server
    server.stop()


def derived(trades: pa.Table, symbol: str, every: int, id_offset: int) -> pa.Table:
    """A second symbol from the real trades: every ``every``-th trade, ids shifted (the test's own data)."""
    kept = trades.take(pa.array(range(0, trades.num_rows, every)))
    schema = kept.schema
    kept = kept.set_column(
        schema.get_field_index("symbol"),
        schema.field("symbol"),
        pa.array([symbol] * kept.num_rows, pa.string()),
    )
    ids = pc.add(kept["trade_id"], pa.scalar(id_offset, pa.int64()))
    return kept.set_column(schema.get_field_index("trade_id"), schema.field("trade_id"), ids)


def land_trades(settings: Settings) -> set[str]:
    from k2.lake.catalog import ensure_tables, load_catalog
    from k2.lake.writer import append
    from tests.query.helpers import capture_tables

    table = ensure_tables(load_catalog(settings), settings)["trades"]
    captures = sorted((REPO / "data" / "samples" / "binance").glob("spot_btcusdt_*.gz"))
    for path in captures:  # one commit per capture file; the second one is mostly the next day
        btc = capture_tables(path)[0]
        batch = pa.concat_tables(
            [btc, derived(btc, "ETHUSDT", 2, 10**10), derived(btc, "SOLUSDT", 3, 2 * 10**10)]
        )
        append(table, batch.take(pa.array(range(batch.num_rows - 1, -1, -1))), "trades")
    return {"BTCUSDT", "ETHUSDT", "SOLUSDT"}


def k2_bars(settings: Settings, symbols: set[str]) -> pa.Table:
    import k2

    parts = []
    with k2.connect(**{k: v for k, v in settings.model_dump().items() if v is not None}) as client:
        for symbol in sorted(symbols):
            bars = client.bars(symbol, "1m", DAY, DAY + timedelta(days=1), include_recent=False).table
            parts.append(bars.select(["exchange", "symbol", "open_time", *COMPARED]))
    return pa.concat_tables(parts)


def test_daft_on_three_node_ray_cluster_equals_k2_bars(seaweed: SeaweedServer, tmp_path: Path) -> None:
    import daft
    import ray
    from pyiceberg.catalog import load_catalog

    from k2.lake.distributed import daft_minute_bars

    settings = Settings(
        data_dir=tmp_path / "k2", catalog_type="rest", catalog_uri=seaweed.iceberg_url, catalog_credential=f"{ACCESS_KEY}:{SECRET_KEY}",
        warehouse=f"s3://{TABLE_BUCKET}", s3_endpoint=seaweed.s3_url, s3_access_key_id=ACCESS_KEY, s3_secret_access_key=SECRET_KEY,
    )  # fmt: skip
    symbols = land_trades(settings)
    expected = k2_bars(settings, symbols)
    assert set(expected["symbol"].to_pylist()) == symbols and expected.num_rows > 3

    # The properties a user gets from the CLI open the very same table.
    env = {**settings_env(settings), "PYTHONPATH": str(REPO / "src")}
    printed = subprocess.run(
        [sys.executable, "-m", "k2.cli", "export", "catalog-properties", "--engine", "pyiceberg", "--format", "json", "--show-secrets"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stdout + printed.stderr
    properties = json.loads(printed.stdout)
    table = load_catalog("k2", **properties).load_table("market_data.trades")

    with RayCluster(workers=2) as cluster:
        try:
            cluster.connect()
            cluster.wait_for_nodes(3)
            daft.set_runner_ray(address=cluster.address)
            got = daft_minute_bars(table, DAY, DAY + timedelta(days=1))
            nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        finally:
            ray.shutdown()
    assert len(nodes) == 3
    assert got.column_names == ["exchange", "symbol", "open_time", *COMPARED]
    assert got.num_rows == expected.num_rows
    assert got.to_pylist() == expected.to_pylist()  # Decimal == Decimal: exact, and the same minutes


def settings_env(settings: Settings) -> dict[str, str]:
    """``K2_*`` variables for a CLI subprocess with these settings (and nothing from the caller's K2_*)."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    wanted = {f"K2_{name.upper()}" for name in settings.model_fields_set}
    # environment() unwraps secrets (str() of a SecretStr is its mask).
    env.update({k: v for k, v in settings.environment().items() if k in wanted})
    return env
