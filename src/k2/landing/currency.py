"""Currency from reference data: rows whose source did not state their quote asset get it from
``reference.instruments`` (``k2 reference`` loads Binance's symbol info there), at landing time.

A Binance trade message carries ``BTCUSDT`` but not which part is the quote asset; the venue says so in
its symbol info (``quoteAsset``), which K2 keeps in ``reference.instruments``. The landing (Kafka and
direct imports) fills a null ``currency`` from there; a row whose (exchange, symbol) has no reference
entry keeps null: K2 never guesses it from the symbol's spelling.

Hazards: the map is reloaded when the reference table has a new snapshot, checked at most every
``_CHECK_SECONDS``, so a symbol loaded into the reference a moment ago may land one batch with null.
A row whose source stated a currency keeps it even when the reference disagrees.

Example (needs a catalog)::

    currencies = ReferenceCurrencies(tables["instruments"])
    batch = currencies.fill(batch)
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.table import Table

_CHECK_SECONDS = 30.0
_SEP = "\x1f"


class ReferenceCurrencies:
    """(exchange, symbol) -> currency from the instruments table, applied to batches' null currencies."""

    def __init__(self, instruments: Table) -> None:
        self.table = instruments
        self._keys = pa.array([], pa.string())
        self._values = pa.array([], pa.string())
        self._snapshot: int | None = None
        self._checked = float("-inf")

    def _load(self) -> None:
        now = time.monotonic()
        if now - self._checked < _CHECK_SECONDS:
            return
        self._checked = now
        self.table.refresh()
        snapshot = self.table.current_snapshot()
        current = None if snapshot is None else int(snapshot.snapshot_id)
        if current is None or current == self._snapshot:
            return
        self._snapshot = current
        rows = self.table.scan(
            selected_fields=("exchange", "symbol", "quote", "currency", "updated_ts")
        ).to_arrow()
        latest: dict[str, str] = {}
        for row in sorted(rows.to_pylist(), key=lambda r: r["updated_ts"]):
            value = row["currency"] or row["quote"]
            key = f"{row['exchange']}{_SEP}{row['symbol']}"
            if value:
                latest[key] = str(value).upper()
            else:
                latest.pop(key, None)
        self._keys = pa.array(list(latest), pa.string())
        self._values = pa.array(list(latest.values()), pa.string())

    def fill(self, data: pa.Table) -> pa.Table:
        """``data`` with null currencies filled from the reference (unchanged without a currency column)."""
        if "currency" not in data.column_names or data.num_rows == 0 or data["currency"].null_count == 0:
            return data
        self._load()
        if len(self._keys) == 0:
            return data
        pairs = pc.binary_join_element_wise(data["exchange"], data["symbol"], _SEP)
        found = pc.take(self._values, pc.index_in(pairs, value_set=self._keys))
        index = data.schema.get_field_index("currency")
        return data.set_column(index, "currency", pc.coalesce(data["currency"], found))
