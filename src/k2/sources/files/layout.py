"""What every vendor file format shares: the user's options, a file's resolved layout, the
:class:`FileFormat` interface, and the helpers more than one vendor uses (the header, width and
``--asset-class`` checks, the per-file currency column, synthetic ids).

The vendor formats themselves live in :mod:`~k2.sources.files.binance`, :mod:`~k2.sources.files.tardis`
and :mod:`~k2.sources.files.asx`; :mod:`~k2.sources.files.formats` registers them (``FORMATS``).

Hazard: Synthetic ids assume rows of one timestamp are contiguous in the file (true for Tardis and ASX files,
which are time-ordered); a run split across read blocks is continued, not restarted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.model import TRADE, AssetClass, RecordType
from k2.model.values import quote_currency
from k2.sources.files.columns import const_strings, occurrence_rank
from k2.sources.files.parse import Col, Parsed
from k2.sources.files.source import FileImportError, Sniff


@dataclass
class ImportOptions:
    """What the user told the importer (CLI options)."""

    symbol: str | None = None
    market: str = "auto"  # auto | spot | usdm
    interval: str | None = None
    asset_class: str | None = None
    tickers: dict[str, str] = field(default_factory=dict)  # ASX company id -> ticker
    contract: str | None = None  # Tardis: inverse | linear (amounts are contracts)
    multiplier: str | None = None  # Tardis: contract multiplier (decimal text; default 1)


@dataclass
class Layout:
    """How one file is read and mapped: its columns, header, and the resolved identity."""

    cols: list[Col]
    header: bool
    source_file: str
    import_us: int
    exchange: str = ""
    asset_class: str = ""
    symbol: str = ""
    interval: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # told to the user (ImportReport.notes)
    carry: dict[tuple[str, int], int] = field(default_factory=dict)  # synthetic-id runs across blocks


class FileFormat:
    """A vendor layout: detect it from the first line, map parsed columns to a canonical table."""

    name = ""
    table = "trades"
    record: RecordType = TRADE

    def layout(self, sniff: Sniff, source_file: str, options: ImportOptions, import_us: int) -> Layout:
        """How to read the file (``sniff``: its first lines and path); raises FileImportError naming what was found."""
        raise NotImplementedError

    def build(self, parsed: Parsed, layout: Layout) -> tuple[pa.Table, list[tuple[int, str, str]]]:
        """The canonical table for the parsed rows and the rows to reject (index, reason, detail)."""
        raise NotImplementedError

    @property
    def parquet_columns(self) -> list[str] | None:
        """Column names when this layout is also read from Parquet (by name), else None (Parquet refused)."""
        return None

    def topic_identity(self, layout: Layout) -> tuple[str, str]:
        """(asset_class, exchange) of the topic this file's rows belong to (also names its DLQ)."""
        return layout.asset_class, layout.exchange


def check_asset_class(value: str | None) -> None:
    if value is not None and value not in {a.value for a in AssetClass}:
        raise FileImportError(
            f"expected --asset-class among {[a.value for a in AssetClass]}, found {value!r}"
        )


def column_count(first: bytes) -> int:
    return len(first.rstrip(b"\r").split(b","))


def check_header(first: bytes, expected: list[str], source_file: str) -> None:
    found = [f.strip().decode("utf-8", errors="replace").lower() for f in first.rstrip(b"\r").split(b",")]
    if found != expected:
        raise FileImportError(
            f"{source_file}: expected the header {','.join(expected)}, found {','.join(found)}"
        )


def currency_column(exchange: str, symbol: str, n: int) -> pa.Array:
    """The currency column of a one-symbol file: stated by the venue, else null (see quote_currency)."""
    currency = quote_currency(exchange, symbol)
    return const_strings(currency, n) if currency is not None else pa.nulls(n, pa.string())


def synthetic_ids(times: np.ndarray, groups: pa.Array, layout: Layout) -> np.ndarray:
    """``time * 1000 + n``: ``n`` counts earlier rows of the group with the same time (runs continue across blocks)."""
    encoded = pc.dictionary_encode(groups)
    codes = np.asarray(encoded.indices, dtype=np.int64)
    names = encoded.dictionary.to_pylist()
    rank = occurrence_rank(times, codes)
    for code, name in enumerate(names):
        rows = np.flatnonzero(codes == code)
        first_time = int(times[rows[0]])
        previous = layout.carry.get((name, first_time))
        if previous:
            rank[rows[times[rows] == first_time]] += previous
    if rank.size and int(rank.max()) >= 1000:
        raise FileImportError(
            f"{layout.source_file}: more than 1000 rows share one timestamp; the synthetic id (time * 1000 + n) cannot hold them"
        )
    # Remember the run at each group's last time, for the next block.
    layout.carry = {}
    for code, name in enumerate(names):
        rows = np.flatnonzero(codes == code)
        last = rows[-1]
        layout.carry[(name, int(times[last]))] = int(rank[last]) + 1
    return times * 1000 + rank
