"""ASX reference data: ``company_info.csv`` -> ``reference.instruments`` and the company id -> ticker map.

``company_info.csv`` columns: ``company_id,symbol,company_name,ISIN,start_date,end_date`` (dates
``MM/DD/YYYY``). Mapping: exchange ``asx``, asset class ``equities``, currency ``AUD``, instrument = the
ticker; ``start_date``/``end_date`` -> ``listing_date``/``delisting_date`` as the vendor gives them (in the
2014 sample they bound the vendor's coverage), ``active`` = no end date or an end date not yet passed;
the company id and raw dates stay in ``vendor``.

A ticker listed more than once (the sample's README says DVN can appear twice): one row per ticker is
kept -- the one with the latest ``end_date`` (then the latest ``start_date``, then the last in the file) --
and every duplicate is reported. All company ids still map to the ticker, so trades files named by any
of them import under it.

Re-importing adds nothing: a row whose (exchange, symbol) is already in the table with the same
values is skipped; a changed row is appended with a newer ``updated_ts`` (latest per key wins).

Example:
    >>> rows, notes = parse_company_info(
    ...     "company_id,symbol,company_name,ISIN,start_date,end_date\\n7078,BHP,BHP BILLITON LTD,AU000000BHP4,05/07/2008,03/31/2014\\n",
    ...     "company_info.csv")
    >>> rows[0]["symbol"], rows[0]["vendor"]["company_id"], notes
    ('BHP', '7078', [])
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyiceberg.expressions as _expressions

from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.summary import commit_summary
from k2.lake.writer import append
from k2.model import INSTRUMENT
from k2.model.arrow import records_to_arrow
from k2.model.values import now_micros
from k2.sources.files.importer import FILE_KEY, FORMAT_KEY, ROWS_KEY, SHA_KEY, WRITER, ImportReport
from k2.sources.files.source import FileImportError, open_source

_X: Any = _expressions  # pyiceberg's expression classes defeat mypy's dataclass checks
EXPECTED = ["company_id", "symbol", "company_name", "isin", "start_date", "end_date"]
_COMPARED = (
    "instrument",
    "asset_class",
    "isin",
    "currency",
    "listing_date",
    "delisting_date",
    "active",
    "name",
    "vendor",
)


def _date(text: str, where: str) -> date | None:
    text = text.strip()
    if not text:
        return None
    try:
        return datetime.strptime(text, "%m/%d/%Y").replace(tzinfo=UTC).date()
    except ValueError:
        raise FileImportError(f"{where}: expected a date MM/DD/YYYY, found {text!r}") from None


def parse_company_info(
    text: str, file_name: str, today: date | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Instrument rows (wire form, one per ticker) and notes about duplicates."""
    today = today or datetime.now(UTC).date()
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    if header != EXPECTED:
        raise FileImportError(
            f"{file_name}: expected the header {','.join(EXPECTED)}, found {','.join(header)}"
        )
    by_symbol: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for line, fields in enumerate(reader, start=2):
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(EXPECTED):
            raise FileImportError(f"{file_name}:{line}: expected {len(EXPECTED)} fields, found {len(fields)}")
        company_id, symbol, name, isin, start, end = (f.strip() for f in fields)
        if not symbol:
            raise FileImportError(
                f"{file_name}:{line}: expected a ticker in the symbol column, found nothing"
            )
        listing = _date(start, f"{file_name}:{line}")
        delisting = _date(end, f"{file_name}:{line}")
        row = {
            "exchange": "asx",
            "symbol": symbol.upper(),
            "instrument": symbol.upper(),
            "asset_class": "equities",
            "base": None,
            "quote": None,
            "isin": isin or None,
            "currency": "AUD",
            "tick_size": None,
            "lot_size": None,
            "listing_date": listing,
            "delisting_date": delisting,
            "active": delisting is None or delisting >= today,
            "name": name or None,
            "updated_ts": None,
            "vendor": {
                "company_id": company_id,
                "start_date": start,
                "end_date": end,
                "source_file": file_name,
                "line": str(line),
            },
        }
        by_symbol.setdefault(symbol.upper(), []).append((line, row))
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for symbol, entries in by_symbol.items():
        chosen = max(
            entries,
            key=lambda e: (e[1]["delisting_date"] or date.max, e[1]["listing_date"] or date.min, e[0]),
        )
        if len(entries) > 1:
            others = ", ".join(
                f"line {ln} (company id {r['vendor']['company_id']})" for ln, r in entries if ln != chosen[0]
            )
            notes.append(
                f"{symbol} appears {len(entries)} times in {file_name}: kept line {chosen[0]} "
                f"(company id {chosen[1]['vendor']['company_id']}, latest end date), skipped {others}"
            )
        rows.append(chosen[1])
    return rows, notes


def ticker_map(path: Path) -> dict[str, str]:
    """ASX company id -> ticker from ``company_info.csv`` (every id, duplicates included)."""
    reader = csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig")))
    header = [h.strip().lower() for h in next(reader, [])]
    if header[:2] != EXPECTED[:2]:
        raise FileImportError(f"{path}: expected the header {','.join(EXPECTED)}, found {','.join(header)}")
    return {f[0].strip(): f[1].strip().upper() for f in reader if len(f) >= 2 and f[0].strip()}


def default_reference(file: Path) -> Path | None:
    """``company_info.csv`` in the usual place beside an ASX data folder (``<root>/reference-data/``)."""
    for folder in (file.parent, file.parent.parent):
        candidate = folder / "reference-data" / "company_info.csv"
        if candidate.is_file():
            return candidate
    return None


def import_asx_reference(path: Path, settings: Settings) -> ImportReport:
    """Load ``company_info.csv`` into ``reference.instruments`` (see the module docstring)."""
    source = open_source(path)
    with source.open() as stream:
        text = stream.read().decode("utf-8-sig")
    rows, notes = parse_company_info(text, source.csv_name)
    report = ImportReport(
        file=str(path),
        format="asx-reference",
        sha256=source.sha256,
        checksum_verified=source.checksum_verified,
    )
    report.rows_read = sum(1 for line in text.splitlines()[1:] if line.strip())
    report.notes = notes
    table = ensure_tables(load_catalog(settings), settings)["instruments"]
    current: dict[str, dict[str, Any]] = {}
    if table.current_snapshot() is not None:
        existing = (
            table.scan(row_filter=_X.EqualTo("exchange", "asx"))
            .to_arrow()
            .sort_by([("updated_ts", "ascending")])
        )
        for row in existing.to_pylist():
            row["vendor"] = dict(row["vendor"] or [])
            current[row["symbol"]] = row  # the latest per symbol wins
    fresh = []
    for row in rows:
        old = current.get(row["symbol"])
        if old is not None and all(_same(old[k], row[k], k) for k in _COMPARED):
            report.duplicates += 1
            continue
        fresh.append({**row, "updated_ts": now_micros()})
    if fresh:
        data = records_to_arrow(INSTRUMENT, fresh)
        adds = {
            FILE_KEY: source.csv_name,
            SHA_KEY: source.sha256,
            FORMAT_KEY: "asx-reference",
            ROWS_KEY: str(len(fresh)),
        }
        props = commit_summary(table.current_snapshot(), WRITER, adds)
        report.snapshots.append(append(table, data, "instruments", props))
        report.imported = len(fresh)
    return report


def _same(old: Any, new: Any, key: str) -> bool:
    if key == "vendor":
        # The line number may move when the file is edited; the values are what matter.
        return {k: v for k, v in old.items() if k != "line"} == {k: v for k, v in new.items() if k != "line"}
    return bool(old == new)
