"""Tracing one landed row back to its origin: ``k2 trace TABLE EXCHANGE:SYMBOL:ID`` / ``Client.trace``.

For one row (trades, quotes: one row per id; book_deltas: every level of one update id) a trace says:

* **the row** itself (every column, lineage included);
* **its source**: the Kafka message (topic, partition, offset, and the producer's message id from the
  ``k2.mid`` header) or, for a direct file import, the file and line (the ``lineage_*`` columns);
* **the snapshot that committed it**: for a Kafka row the landing commit whose ``k2.kafka.ranges`` cover
  its offset (the commit that landed it, exactly once); otherwise the snapshot that added the data file
  now holding the row. Its id, time and summary (the Kafka offsets it recorded included);
* **the gap-ledger context**: the gaps of that exchange/symbol/table (latest state per gap) that contain
  the id or are the nearest on either side of it.

Hazards: rows landed before lineage existed read NULL lineage (their source is "unknown"), and their
committing snapshot is found through the data file only. Maintenance rewrites files (compaction): the
file route then names the compaction snapshot, and ``k2 maintain`` expires old snapshots: a Kafka row
whose landing commit was expired says so (``committed_by`` = ``"data file"``) instead of guessing.
Reads go through pyiceberg scans filtered on the natural key (partition and min/max pruning).

Example:
    >>> parse_trace_id("trades", "binance:BTCUSDT:123456")
    ('binance', 'BTCUSDT', 123456)
    >>> parse_trace_id("trades", "BTCUSDT:1")
    Traceback (most recent call last):
    ...
    k2.query.errors.QueryError: id: expected EXCHANGE:SYMBOL:NUMBER (e.g. binance:BTCUSDT:123456), found 'BTCUSDT:1'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg import expressions as _expressions
from pyiceberg.table import Table

from k2.lake.summary import RANGES_KEY
from k2.query.errors import QueryError, UnknownSymbolError

_X: Any = (
    _expressions  # pyiceberg's expression classes are positional at runtime; their stubs are keyword-only
)
#: Tables a row can be traced in, and the id column of their natural key.
TRACE_TABLES = {"trades": "trade_id", "quotes": "update_id", "book_deltas": "last_update_id"}
_MAX_ROWS = 10_000


@dataclass
class Trace:
    """Everything known about where one row (or one book update's rows) came from."""

    table: str
    exchange: str
    symbol: str
    id: int
    rows: list[dict[str, Any]]
    source: dict[str, Any]
    snapshot: dict[str, Any] | None
    gaps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (times as ISO 8601, decimals as strings)."""
        return _jsonable(
            {
                "table": self.table,
                "exchange": self.exchange,
                "symbol": self.symbol,
                "id": self.id,
                "rows": self.rows,
                "source": self.source,
                "snapshot": self.snapshot,
                "gaps": self.gaps,
            }
        )


def parse_trace_id(table: str, ident: str) -> tuple[str, str, int]:
    """(exchange, symbol, id) from ``EXCHANGE:SYMBOL:ID``, after checking ``table``; QueryError otherwise."""
    if table not in TRACE_TABLES:
        raise QueryError(f"table: expected one of {', '.join(TRACE_TABLES)}, found {table!r}")
    parts = ident.split(":") if isinstance(ident, str) else []
    digits = parts[2].removeprefix("-") if len(parts) == 3 else ""
    if len(parts) != 3 or not parts[0] or not parts[1] or not (digits.isascii() and digits.isdigit()):
        raise QueryError(
            f"id: expected EXCHANGE:SYMBOL:NUMBER (e.g. binance:BTCUSDT:123456), found {ident!r}"
        )
    number = int(parts[2])
    if not -(2**63) <= number < 2**63:
        raise QueryError(f"id: expected a number that fits in 64 bits, found {parts[2]!r}")
    return parts[0], parts[1], number


def trace(table: Table | None, gaps_table: Table | None, short: str, ident: str) -> Trace:
    """Trace ``ident`` (``EXCHANGE:SYMBOL:ID``) in the table ``short`` (see the module docstring)."""
    exchange, symbol, row_id = parse_trace_id(short, ident)
    id_column = TRACE_TABLES[short]
    key = _X.And(
        _X.And(_X.EqualTo("exchange", exchange), _X.EqualTo("symbol", symbol)), _X.EqualTo(id_column, row_id)
    )
    found = (
        table.scan(row_filter=key, limit=_MAX_ROWS).to_arrow()
        if table is not None and table.current_snapshot()
        else None
    )
    if table is None or found is None or found.num_rows == 0:
        raise UnknownSymbolError(f"{short}: expected a row with id {ident}, found none")
    rows = found.to_pylist()
    source = _source(rows[0])
    snapshot = _committing_snapshot(table, source, key, (exchange, symbol, id_column, row_id))
    gaps = _gap_context(gaps_table, short, exchange, symbol, row_id)
    return Trace(short, exchange, symbol, row_id, rows, source, snapshot, gaps)


def _source(row: dict[str, Any]) -> dict[str, Any]:
    """Where the row came from, from its lineage columns."""
    if row.get("lineage_topic") is not None:
        producer, sequence = row.get("lineage_producer"), row.get("lineage_sequence")
        return {
            "kind": "kafka",
            "topic": row["lineage_topic"],
            "partition": row.get("lineage_partition"),
            "offset": row.get("lineage_offset"),
            "message_id": f"{producer}:{sequence}" if producer is not None else None,
        }
    if row.get("lineage_file") is not None:
        return {"kind": "file", "file": row["lineage_file"], "line": row.get("lineage_line")}
    return {"kind": "unknown", "detail": "the row has no lineage (landed before lineage existed)"}


def _committing_snapshot(
    table: Table, source: dict[str, Any], key: Any, row_key: tuple[str, str, str, int]
) -> dict[str, Any] | None:
    """The landing commit whose Kafka ranges cover the row's offset, else the snapshot that added its file."""
    snapshots = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms)
    if source["kind"] == "kafka":
        topic, partition, offset = source["topic"], str(source["partition"]), source["offset"]
        for snapshot in snapshots:
            props = snapshot.summary.additional_properties if snapshot.summary else {}
            span = json.loads(props.get(RANGES_KEY) or "{}").get(topic, {}).get(partition)
            if span and span[0] <= offset <= span[1]:
                return _describe(snapshot, "kafka ranges")
    added_by = _file_snapshot(table, key, row_key)
    if added_by is None:
        return None
    adder = table.snapshot_by_id(added_by)
    return _describe(adder, "data file") if adder is not None else {"snapshot_id": added_by}


def _file_snapshot(table: Table, key: Any, row_key: tuple[str, str, str, int]) -> int | None:
    """The id of the snapshot that added the data file holding the row (candidates planned by the key's
    pruning, each read for the key's three columns to confirm it holds the row)."""
    exchange, symbol, id_column, row_id = row_key
    holding = None
    for task in table.scan(row_filter=key).plan_files():
        with table.io.new_input(task.file.file_path).open() as stream:
            data = pq.read_table(stream, columns=["exchange", "symbol", id_column])
        mask = pc.and_(
            pc.and_(pc.equal(data["exchange"], exchange), pc.equal(data["symbol"], symbol)),
            pc.equal(data[id_column], row_id),
        )
        if pc.any(mask).as_py():
            holding = task.file.file_path
            break
    if holding is None:
        return None
    entries = table.inspect.entries()
    paths = entries.column("data_file").combine_chunks().field("file_path")
    index = pc.index(paths, holding).as_py()
    return None if index < 0 else int(entries.column("snapshot_id")[index].as_py())


def _describe(snapshot: Any, how: str) -> dict[str, Any]:
    summary = snapshot.summary
    props = dict(summary.additional_properties) if summary is not None else {}
    return {
        "snapshot_id": int(snapshot.snapshot_id),
        "committed_at": datetime.fromtimestamp(snapshot.timestamp_ms / 1000, UTC),
        "operation": str(summary.operation.value) if summary is not None else None,
        "found_by": how,
        "summary": props,
    }


def _gap_context(
    gaps_table: Table | None, short: str, exchange: str, symbol: str, row_id: int
) -> list[dict[str, Any]]:
    """Gaps (latest row per gap_key) of the pair that hold the id, or are the nearest below and above it."""
    if gaps_table is None or gaps_table.current_snapshot() is None:
        return []
    data_type = short  # the ledger names the table the gap is in
    ledger = gaps_table.scan(
        row_filter=_X.And(
            _X.And(_X.EqualTo("exchange", exchange), _X.EqualTo("symbol", symbol)),
            _X.EqualTo("data_type", data_type),
        )
    ).to_arrow()
    latest: dict[str, dict[str, Any]] = {}
    for gap in sorted(ledger.to_pylist(), key=lambda g: (g["detected_ts"], g["status"] != "open")):
        latest[gap["gap_key"]] = gap
    gaps = sorted(latest.values(), key=lambda g: g["first_missing_id"])
    below = [g for g in gaps if g["last_missing_id"] < row_id]
    above = [g for g in gaps if g["first_missing_id"] > row_id]
    holding = [g for g in gaps if g["first_missing_id"] <= row_id <= g["last_missing_id"]]
    chosen = below[-1:] + holding + above[:1]
    for gap in chosen:
        gap["position"] = (
            "before"
            if gap["last_missing_id"] < row_id
            else "after"
            if gap["first_missing_id"] > row_id
            else "holds"
        )
    return chosen


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):  # an Arrow map as pairs
            return {str(k): _jsonable(v) for k, v in value}
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)  # Decimal, date


def row_table(result: Trace) -> pa.Table:
    """The traced rows as an Arrow table (for callers that want columns)."""
    return pa.Table.from_pylist(result.rows)
