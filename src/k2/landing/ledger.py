"""The gap ledger (``quality.gaps``) read back: the latest row per ``gap_key`` is the gap's state.

Example (needs a catalog)::

    current_gaps(catalog.load_table(("quality", "gaps")), status="open")
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.table import Table

from k2.model import GAP


def current_gaps(table: Table, status: str | None = None, exchange: str | None = None, symbol: str | None = None) -> pa.Table:
    """One row per gap (its latest state), sorted by exchange, symbol, first missing id."""
    table.refresh()
    if table.current_snapshot() is None:
        return GAP.arrow_schema().empty_table()
    data = table.scan().to_arrow()
    if data.num_rows == 0:
        return data
    index = pa.array(np.arange(data.num_rows, dtype=np.int64))
    ranked = pa.table({"gap_key": data["gap_key"], "ts": data["detected_ts"], "status_rank": pc.if_else(pc.equal(data["status"], "open"), 0, 1), "i": index})
    # Latest detection wins; on equal times a resolved state (backfilled/lost) beats open.
    ordered = ranked.sort_by([("gap_key", "ascending"), ("ts", "descending"), ("status_rank", "descending")])
    keys = ordered["gap_key"].to_numpy(zero_copy_only=False)
    first = np.concatenate(([True], keys[1:] != keys[:-1])) if len(keys) else np.zeros(0, dtype=bool)
    latest = data.take(pa.array(ordered["i"].to_numpy()[first]))
    if status is not None:
        latest = latest.filter(pc.equal(latest["status"], status))
    if exchange is not None:
        latest = latest.filter(pc.equal(latest["exchange"], exchange))
    if symbol is not None:
        latest = latest.filter(pc.equal(latest["symbol"], symbol))
    return latest.sort_by([("exchange", "ascending"), ("symbol", "ascending"), ("first_missing_id", "ascending")])
