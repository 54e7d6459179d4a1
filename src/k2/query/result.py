"""QueryResult: a ``pyarrow.Table`` plus the Iceberg snapshot ids it was read at.

Attribute access, ``len()``, ``result["col"]`` and the Arrow C stream protocol delegate to the table,
so a result behaves like a table (``.num_rows``, ``.to_pylist()``, ``.sort_by(...)``) and can be passed
to ``pa.table(result)`` or ``polars.from_arrow(result.table)``.

Example:
    >>> import pyarrow as pa
    >>> r = QueryResult(pa.table({"x": [1, 2]}), {"trades": 42})
    >>> r.num_rows, r["x"].to_pylist(), r.snapshot_ids["trades"]
    (2, [1, 2], 42)
    >>> pa.table(r).num_rows
    2
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa


class QueryResult:
    """The rows of one query (``table``) and what they were read from.

    ``snapshot_ids`` are the Iceberg snapshots read. With the hybrid read (``include_recent``),
    ``recent_rows`` counts the rows added from Kafka; ``recent_error`` says why Kafka could not be read;
    ``recent_truncated`` is True when the Kafka read stopped early (``recent_truncated_reason``:
    ``"max_rows"`` or ``"time_bound"``) and ``recent_stopped_at`` gives, per topic and partition, the
    next offset it did not read. A truncated result is partial and says so; it is never silent.
    ``unknown_symbols`` names the requested symbols the table does not hold (for the exchange asked, at the
    snapshot read, nor among the Kafka rows read): a query of several symbols where some are unknown answers
    for the others and says which; when every requested symbol is unknown the query raises instead.
    """

    __slots__ = (
        "recent_error",
        "recent_rows",
        "recent_stopped_at",
        "recent_truncated",
        "recent_truncated_reason",
        "snapshot_ids",
        "table",
        "unknown_symbols",
    )

    def __init__(
        self,
        table: pa.Table,
        snapshot_ids: Mapping[str, int | None] | None = None,
        recent_rows: int = 0,
        recent_error: str | None = None,
        recent_truncated: bool = False,
        recent_truncated_reason: str | None = None,
        recent_stopped_at: Mapping[str, Mapping[str, int]] | None = None,
        unknown_symbols: tuple[str, ...] | list[str] = (),
    ) -> None:
        self.table = table
        self.snapshot_ids: dict[str, int | None] = dict(snapshot_ids or {})
        self.recent_rows = recent_rows
        self.recent_error = recent_error
        self.recent_truncated = recent_truncated
        self.recent_truncated_reason = recent_truncated_reason
        self.recent_stopped_at: dict[str, dict[str, int]] = {
            t: dict(p) for t, p in (recent_stopped_at or {}).items()
        }
        self.unknown_symbols: tuple[str, ...] = tuple(unknown_symbols)

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found on the wrapper: delegate to the Arrow table.
        if name in QueryResult.__slots__:
            raise AttributeError(name)
        return getattr(self.table, name)

    def __getitem__(self, key: Any) -> Any:
        return self.table[key]

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return self.table.__arrow_c_stream__(requested_schema)

    def __repr__(self) -> str:
        return f"QueryResult(rows={self.table.num_rows}, columns={self.table.column_names}, snapshot_ids={self.snapshot_ids})"

    def to_pandas(self, **kwargs: Any) -> Any:
        """The rows as a pandas DataFrame (timestamps tz-aware UTC; decimals as ``Decimal`` objects).

        >>> QueryResult(pa.table({"x": [1]})).to_pandas()["x"].tolist()
        [1]
        """
        return self.table.to_pandas(**kwargs)

    def to_polars(self) -> Any:
        """The rows as a polars DataFrame.

        >>> QueryResult(pa.table({"x": [1]})).to_polars().height
        1
        """
        import polars as pl

        return pl.from_arrow(self.table)

    def to_arrow(self) -> pa.Table:
        """The rows as a ``pyarrow.Table``.

        >>> QueryResult(pa.table({"x": [1]})).to_arrow().num_rows
        1
        """
        return self.table
