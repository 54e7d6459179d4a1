"""The gap ledger (``quality.gaps``): the latest row per ``gap_key`` is the gap's state.

Gaps close from the *table*, not from memory: :func:`filled_gaps` counts, in the data table, the ids of
each open gap; a gap whose every id is there gets a ``backfilled`` row. The landing checks the open gaps
of a pair when it first sees the pair (so a close lost to a crash, or an ``open`` row written just before a
data commit that never happened, heals on the next run) and after every commit that landed an id inside
an open gap (so late ids close their gap whatever restarts happened in between).

Hazard: ``open`` rows are written *before* the data commit they belong to (a gap is never lost); a kill
between the two leaves an ``open`` row whose ids may land on restart -- the checks above then close it.

Example (needs a catalog)::

    current_gaps(catalog.load_table(("quality", "gaps")), status="open")
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg import expressions as _expressions
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from k2.lake.summary import WRITER_KEY
from k2.lake.writer import append
from k2.model import GAP
from k2.model.arrow import records_to_arrow
from k2.pacing import Backoff, retrying

# pyiceberg's expression classes are positional at runtime; their stubs only describe keywords.
_X: Any = _expressions


def gap_row(
    exchange: str,
    symbol: str,
    data_type: str,
    low: int,
    high: int,
    detected: int,
    status: str = "open",
    before: int | None = None,
    after: int | None = None,
    detail: str | None = None,
    source: str = "landing",
) -> dict[str, Any]:
    """One ``quality.gaps`` row (ids ``low..high`` inclusive) keyed by ``exchange/symbol/data_type/low-high``.

    Example:
        >>> gap_row("binance", "BTCUSDT", "trades", 150, 152, 0)["gap_key"]
        'binance/BTCUSDT/trades/150-152'
    """
    return {
        "exchange": exchange,
        "symbol": symbol,
        "data_type": data_type,
        "first_missing_id": low,
        "last_missing_id": high,
        "missing_count": high - low + 1,
        "start_ts": before,
        "end_ts": after,
        "detected_ts": detected,
        "source": source,
        "status": status,
        "gap_key": f"{exchange}/{symbol}/{data_type}/{low}-{high}",
        "detail": detail,
    }


def append_gap_rows(gaps: Table, rows: list[dict[str, Any]], writer: str, attempts: int = 20) -> None:
    """Append ``rows`` (:func:`gap_row`) to the ledger in one commit, retried on a concurrent commit.

    Gap rows are keyed (``gap_key``): a retry or a re-run rewrites the same gap, the latest row wins.
    After ``attempts`` conflicts the last :class:`CommitFailedException` is raised.
    """
    if not rows:
        return
    data = records_to_arrow(GAP, rows)
    for attempt in retrying(CommitFailedException, attempts=attempts, backoff=Backoff(0.05, 1.0)):
        with attempt:
            gaps.refresh()
            append(gaps, data, "gaps", {WRITER_KEY: writer})


def open_gaps(
    gaps: Table, data_type: str, pairs: list[tuple[str, str]]
) -> dict[tuple[str, str], list[tuple[int, int]]]:
    """Open gaps ``(low, high)`` of ``data_type`` per (exchange, symbol) in ``pairs`` (one ledger scan).

    Example (needs a catalog)::

        open_gaps(gaps_table, "trades", [("binance", "BTCUSDT")])  # {("binance", "BTCUSDT"): [(150, 152)]}
    """
    found: dict[tuple[str, str], list[tuple[int, int]]] = {pair: [] for pair in pairs}
    if not pairs:
        return found
    latest = current_gaps(gaps, status="open", symbols=sorted({s for _, s in pairs}))
    latest = latest.filter(pc.equal(latest["data_type"], data_type))
    for exchange, symbol, low, high in zip(
        latest["exchange"].to_pylist(),
        latest["symbol"].to_pylist(),
        latest["first_missing_id"].to_pylist(),
        latest["last_missing_id"].to_pylist(),
        strict=True,
    ):
        if (exchange, symbol) in found:
            found[(exchange, symbol)].append((int(low), int(high)))
    return found


def filled_gaps(
    data: Table, id_column: str, exchange: str, symbol: str, gaps: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The gaps of ``gaps`` whose every id is now in ``data`` (one scan, pruned by pair and id range).

    Example (needs a catalog)::

        filled_gaps(trades_table, "trade_id", "binance", "BTCUSDT", [(150, 152)])  # [(150, 152)] once all landed
    """
    if not gaps:
        return []
    data.refresh()
    if data.current_snapshot() is None:
        return []
    present = np.unique(
        np.concatenate(
            [_present(data, id_column, exchange, symbol, low, high) for low, high in _clusters(gaps)]
        )
    )
    filled = []
    for first, last in gaps:
        count = int(
            np.searchsorted(present, last, side="right") - np.searchsorted(present, first, side="left")
        )
        if count == last - first + 1:
            filled.append((first, last))
    return filled


def current_gaps(
    table: Table,
    status: str | None = None,
    exchange: str | None = None,
    symbol: str | None = None,
    symbols: list[str] | None = None,
) -> pa.Table:
    """One row per gap (its latest state), sorted by exchange, symbol, first missing id.

    ``symbols`` restricts the scan itself (rows of other symbols are never read)."""
    table.refresh()
    if table.current_snapshot() is None:
        return GAP.arrow_schema().empty_table()
    data = table.scan(row_filter=_X.In("symbol", symbols)).to_arrow() if symbols else table.scan().to_arrow()
    if data.num_rows == 0:
        return data
    index = pa.array(np.arange(data.num_rows, dtype=np.int64))
    ranked = pa.table(
        {
            "gap_key": data["gap_key"],
            "ts": data["detected_ts"],
            "status_rank": pc.if_else(pc.equal(data["status"], "open"), 0, 1),
            "i": index,
        }
    )
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
    return latest.sort_by(
        [("exchange", "ascending"), ("symbol", "ascending"), ("first_missing_id", "ascending")]
    )


_CLUSTER_SPAN = 1_000_000  # gaps closer than this are checked by one scan; farther ones by their own


def _clusters(gaps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Id ranges to scan: nearby gaps merged, so an old gap never makes a scan read a pair's whole history.

    >>> _clusters([(5, 6), (10, 12), (5_000_000, 5_000_001)])
    [(5, 12), (5000000, 5000001)]
    """
    spans: list[tuple[int, int]] = []
    for low, high in sorted(gaps):
        if spans and low - spans[-1][1] <= _CLUSTER_SPAN:
            spans[-1] = (spans[-1][0], max(spans[-1][1], high))
        else:
            spans.append((low, high))
    return spans


def _present(data: Table, id_column: str, exchange: str, symbol: str, low: int, high: int) -> np.ndarray:
    row_filter = _X.And(
        _X.And(_X.EqualTo("exchange", exchange), _X.EqualTo("symbol", symbol)),
        _X.And(_X.GreaterThanOrEqual(id_column, low), _X.LessThanOrEqual(id_column, high)),
    )
    found = data.scan(row_filter=row_filter, selected_fields=(id_column,)).to_arrow()[id_column]
    return np.asarray(found, dtype=np.int64)
