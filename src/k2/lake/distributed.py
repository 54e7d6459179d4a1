"""K2's 1-minute bars computed by Daft (on a Ray cluster or in-process) over the same Iceberg tables.

K2's own engine is DuckDB in one process. When history outgrows one machine, Daft reads K2's tables
through the same catalog (:mod:`k2.lake.engines` gives the properties) and runs the aggregation on a
Ray cluster. The bars follow K2's rules exactly (``Client.bars`` with a 1-minute interval): bucket
``[t, t + 1 min)`` on trade time since the epoch (UTC); open/close are the prices of the first/last
trade by (time, trade id); high/low the extreme prices; volume the exact decimal sum of quantities;
trade_count the number of trades. Decimals stay decimal(18, 8) (volume decimal(38, 8)) end to end.

Needs the optional extra ``k2-lakehouse[distributed]`` (``daft``, ``ray``). Call
``daft.set_runner_ray(address)`` first to run on a cluster; otherwise Daft runs in this process.

Scan planning is pyiceberg's (``table.scan(row_filter).plan_files()``): it prunes files with the
``day(exchange_ts)`` partition transform, which Daft 0.7's own Iceberg reader cannot push down (it
logs "Iceberg does not support function 'days'" and scans every file of the table). Daft then reads
the planned Parquet files. When a planned file carries delete files (K2 writes none: appends and
compaction only) the whole table goes through ``daft.read_iceberg`` instead, so deletes are honoured.

Hazards: open/close use two window functions (row_number over each minute), so each minute's trades
are shuffled to one worker; a minute holds at most a few hundred thousand trades of one symbol, which
fits a worker. Every worker needs network access to the catalog and S3 (the properties travel with
the plan, credentials included).

Example::

    import daft
    from pyiceberg.catalog import load_catalog
    from k2.lake.distributed import daft_minute_bars

    daft.set_runner_ray("ray://head:10001")
    catalog = load_catalog("k2", **properties)       # `k2 export catalog-properties --show-secrets`
    bars = daft_minute_bars(catalog.load_table("market_data.trades"), day_start, day_end)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa

BAR_COLUMNS = ("exchange", "symbol", "open_time", "open", "high", "low", "close", "volume", "trade_count")
_MINUTE_US = 60_000_000


def _daft() -> Any:
    try:
        import daft
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise ImportError(
            "expected Daft installed for distributed queries (pip install 'k2-lakehouse[distributed]'), found none"
        ) from exc
    return daft


def daft_minute_bars(table: Any, start: datetime, end: datetime) -> pa.Table:
    """1-minute bars of every (exchange, symbol) with trades in ``[start, end)``, sorted by exchange, symbol, time.

    ``table`` is the pyiceberg ``market_data.trades`` table; ``start``/``end`` are timezone-aware.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError(f"start/end: expected timezone-aware datetimes, found {start!r}, {end!r}")
    daft = _daft()
    from daft import Window, col, lit
    from daft.functions import row_number

    keys = ["exchange", "symbol", "bucket"]
    paths = _planned_files(table, start, end)
    if paths == []:
        return _finish(pa.table({"bucket": pa.array([], pa.int64()), **_EMPTY}))
    source = (
        daft.read_iceberg(table)
        if paths is None
        else daft.read_parquet(paths, io_config=_io_config(dict(table.io.properties)))
    )
    trades = (
        source.where((col("exchange_ts") >= lit(start)) & (col("exchange_ts") < lit(end)))
        .select(*_COLUMNS)
        .with_column("bucket", col("exchange_ts").cast(daft.DataType.int64()) // _MINUTE_US)  # type: ignore[operator]
    )
    first = Window().partition_by(keys).order_by(["exchange_ts", "trade_id"], desc=[False, False])
    last = Window().partition_by(keys).order_by(["exchange_ts", "trade_id"], desc=[True, True])
    ranked = trades.with_column("first_rank", row_number().over(first)).with_column(
        "last_rank", row_number().over(last)
    )
    opens = ranked.where(col("first_rank") == 1).select(*keys, col("price").alias("open"))
    closes = ranked.where(col("last_rank") == 1).select(*keys, col("price").alias("close"))
    aggregates = trades.groupby(*keys).agg(
        col("price").max().alias("high"),
        col("price").min().alias("low"),
        col("quantity").sum().alias("volume"),
        col("trade_id").count().alias("trade_count"),
    )
    bars = aggregates.join(opens, on=keys).join(closes, on=keys).sort(keys).to_arrow()
    return _finish(bars)


_COLUMNS = ("exchange", "symbol", "exchange_ts", "trade_id", "price", "quantity")
_EMPTY = {
    "exchange": pa.array([], pa.string()), "symbol": pa.array([], pa.string()),
    **{c: pa.array([], pa.decimal128(18, 8)) for c in ("open", "high", "low", "close", "volume")},
    "trade_count": pa.array([], pa.int64()),
}  # fmt: skip


def _planned_files(table: Any, start: datetime, end: datetime) -> list[str] | None:
    """Data files pyiceberg plans for ``[start, end)`` (partition-pruned), or None when a file has deletes."""
    import pyiceberg.expressions

    x: Any = pyiceberg.expressions  # its constructors' stubs do not accept plain column names, which they do
    row_filter = x.And(
        x.GreaterThanOrEqual("exchange_ts", start.isoformat()), x.LessThan("exchange_ts", end.isoformat())
    )
    tasks = list(table.scan(row_filter=row_filter, selected_fields=_COLUMNS).plan_files())
    if any(task.delete_files for task in tasks):
        return None
    return [task.file.file_path for task in tasks]


def _io_config(properties: dict[str, str]) -> Any:
    """Daft's S3 settings from the table's pyiceberg FileIO properties (None: Daft's defaults, e.g. local files)."""
    from daft.io import IOConfig, S3Config

    s3: dict[str, Any] = {
        "endpoint_url": properties.get("s3.endpoint"),
        "region_name": properties.get("s3.region") or properties.get("client.region"),
        "key_id": properties.get("s3.access-key-id") or properties.get("client.access-key-id"),
        "access_key": properties.get("s3.secret-access-key") or properties.get("client.secret-access-key"),
        "session_token": properties.get("s3.session-token") or properties.get("client.session-token"),
    }
    if not any(s3.values()):
        return None
    return IOConfig(s3=S3Config(**s3))


def _finish(bars: pa.Table) -> pa.Table:
    """Bucket numbers -> UTC open times; K2's column order and types (volume decimal(38, 8), trade_count int64)."""
    import pyarrow.compute as pc

    open_time = pc.multiply(bars["bucket"], pa.scalar(_MINUTE_US, pa.int64())).cast(
        pa.timestamp("us", tz="UTC")
    )
    columns = {
        "exchange": bars["exchange"].cast(pa.string()),
        "symbol": bars["symbol"].cast(pa.string()),
        "open_time": open_time,
        "open": bars["open"],
        "high": bars["high"],
        "low": bars["low"],
        "close": bars["close"],
        "volume": bars["volume"].cast(pa.decimal128(38, 8)),
        "trade_count": bars["trade_count"].cast(pa.int64()),
    }
    return pa.table(columns)
