"""ASX sample files (trades, quotes; local Sydney wall-clock times) -> K2's canonical tables.

**ASX** (the 2014 sample under ``shared/data/asx``; no header, CRLF, ``MM/DD/YYYY``, local Sydney
wall-clock times):

* times are converted with ``zoneinfo.ZoneInfo("Australia/Sydney")`` per local hour (exact across
  daylight-saving changes; an ambiguous hour takes the first, daylight-time, reading). Note: in
  March 2014 Sydney was on daylight time (AEDT, UTC+11, until 6 April 2014), so 10:06 local is
  23:06 UTC the previous day; a fixed UTC+10 would be an hour off.
* trades ``Date,Time,Price,Volume,Qualifiers,Venue,BuyerID``: rows with Venue ``X`` (auction and
  pre-open/after-hours crossings) get the ``AUCTION`` condition; side is ``UNKNOWN``; ``trade_id`` is
  synthetic ``exchange_ts_us * 1000 + n`` (``n`` = earlier rows of the symbol with the same time, in
  file order), deterministic for a given file; qualifiers, venue and BuyerID are kept in ``vendor``.
* quotes ``Date,Time,Bid,Ask,BidVolume,AskVolume``: ``update_id`` synthetic the same way; a zero price
  (no order on that side, e.g. pre-open) is kept as published, as the landing validator expects.
  Pre-open books where bid > ask (the auction overlap) fail the landing validator's
  ``crossed_quote`` rule and are rejected with their lines like any other bad row (25 of the first
  200 lines of RIO's file).
* the file name is the ASX company id (``7078.csv``), mapped to the ticker through
  ``reference-data/company_info.csv``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.lake.writer import conform
from k2.model import QUOTE
from k2.sources.files.columns import const_strings, flag_list, string_map, timestamps_us
from k2.sources.files.layout import (
    FileFormat,
    ImportOptions,
    Layout,
    column_count,
    currency_column,
    synthetic_ids,
)
from k2.sources.files.parse import Col, Parsed, detect_header
from k2.sources.files.source import FileImportError, Sniff

SYDNEY = ZoneInfo("Australia/Sydney")
_HOUR_US = 3_600_000_000
_DAY_US = 86_400_000_000


ASX_TRADES = [
    Col("date", "str"),
    Col("time", "str"),
    Col("price", "dec"),
    Col("volume", "dec"),
    Col("qualifiers", "str"),
    Col("venue", "str"),
    Col("buyer_id", "str"),
]
ASX_QUOTES = [
    Col("date", "str"),
    Col("time", "str"),
    Col("bid", "dec"),
    Col("ask", "dec"),
    Col("bid_volume", "dec"),
    Col("ask_volume", "dec"),
]


def sydney_to_utc_micros(local_us: np.ndarray) -> np.ndarray:
    """Local Sydney wall-clock microseconds (as if UTC) to true UTC microseconds, via zoneinfo.

    >>> local = np.array([1394445601395000])  # 2014-03-10 10:00:01.395 local (AEDT, UTC+11)
    >>> datetime.fromtimestamp(int(sydney_to_utc_micros(local)[0]) / 1e6, UTC).isoformat()
    '2014-03-09T23:00:01.395000+00:00'
    """
    hours = local_us // _HOUR_US
    unique, inverse = np.unique(hours, return_inverse=True)
    offsets = np.empty(len(unique), dtype=np.int64)
    for index, hour in enumerate(unique.tolist()):
        wall = datetime.fromtimestamp(hour * 3600, UTC).replace(tzinfo=SYDNEY)
        offset = wall.utcoffset()
        assert offset is not None
        offsets[index] = int(offset.total_seconds()) * 1_000_000
    return local_us - offsets[inverse]


def asx_local_micros(date: pa.Array, time: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Wall-clock microseconds (as if UTC) from ``MM/DD/YYYY`` and ``HH:MM:SS[.ffffff]``, and a good mask."""
    n = len(date)
    good = np.asarray(pc.fill_null(pc.match_substring_regex(date, r"^\d{2}/\d{2}/\d{4}$"), False))
    good &= np.asarray(
        pc.fill_null(pc.match_substring_regex(time, r"^\d{2}:\d{2}:\d{2}(\.\d{1,6})?$"), False)
    )
    if n == 0:
        return np.zeros(0, dtype=np.int64), good
    safe_date = pc.if_else(pa.array(good), date, "01/01/1970")
    safe_time = pc.if_else(pa.array(good), time, "00:00:00")
    iso = pc.binary_join_element_wise(
        pc.utf8_slice_codeunits(safe_date, 6, 10),
        pc.utf8_slice_codeunits(safe_date, 0, 2),
        pc.utf8_slice_codeunits(safe_date, 3, 5),
        "-",
    )
    try:
        days = np.asarray(pc.cast(iso, pa.date32()).cast(pa.int32()), dtype=np.int64)
    except pa.ArrowInvalid:
        days = np.zeros(n, dtype=np.int64)
        for index, text in enumerate(iso.to_pylist()):
            try:
                days[index] = (
                    datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)
                ).days
            except ValueError:
                good[index] = False

    def part(start: int, stop: int) -> np.ndarray:
        return np.asarray(
            pc.cast(pc.utf8_slice_codeunits(safe_time, start, stop), pa.int64()), dtype=np.int64
        )

    hour, minute, second = part(0, 2), part(3, 5), part(6, 8)
    frac_text = pc.utf8_rpad(pc.utf8_slice_codeunits(safe_time, 9, 15), 6, "0")
    frac = np.asarray(pc.cast(frac_text, pa.int64()), dtype=np.int64)
    good &= (hour < 24) & (minute < 60) & (second < 60)
    micros = days * _DAY_US + ((hour * 60 + minute) * 60 + second) * 1_000_000 + frac
    return micros, good


class _Asx(FileFormat):
    cols: list[Col] = []

    def layout(self, sniff: Sniff, source_file: str, options: ImportOptions, import_us: int) -> Layout:
        first = sniff.first
        width = column_count(first)
        if width != len(self.cols):
            raise FileImportError(
                f"{source_file}: expected ASX {self.table} with {len(self.cols)} columns ({','.join(c.name for c in self.cols)}), found {width}"
            )
        stem = source_file.split(".", 1)[0]
        symbol = options.symbol or options.tickers.get(stem)
        if not symbol:
            raise FileImportError(
                f"{source_file}: expected --symbol or a company id file name listed in company_info.csv "
                f"(known ids: {sorted(options.tickers)}), found {stem!r}"
            )
        layout = Layout(
            self.cols, detect_header(first), source_file, import_us, "asx", "equities", symbol.upper()
        )
        layout.extra["company_id"] = stem if stem in options.tickers else ""
        return layout

    def times(self, parsed: Parsed) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
        c = parsed.columns
        local, good = asx_local_micros(c["date"], c["time"])
        rejects = [
            (
                int(i),
                "bad_timestamp",
                f"date,time: expected MM/DD/YYYY,HH:MM:SS.fff, found {c['date'][int(i)].as_py()!r},{c['time'][int(i)].as_py()!r}",
            )
            for i in np.flatnonzero(~good)
        ]
        return sydney_to_utc_micros(np.where(good, local, 0)), rejects

    def identity(self, layout: Layout, n: int) -> dict[str, pa.Array]:
        return {
            "exchange": const_strings("asx", n),
            "symbol": const_strings(layout.symbol, n),
            "instrument": const_strings(layout.symbol, n),
            "asset_class": const_strings("equities", n),
            "currency": currency_column("asx", layout.symbol, n),
        }


class AsxTrades(_Asx):
    """ASX trades ``Date,Time,Price,Volume,Qualifiers,Venue,BuyerID``."""

    name = "asx-trades"
    cols = ASX_TRADES

    def build(self, parsed: Parsed, layout: Layout) -> tuple[pa.Table, list[tuple[int, str, str]]]:
        c = parsed.columns
        n = parsed.num_rows
        utc, rejects = self.times(parsed)
        now = timestamps_us(np.full(n, layout.import_us, dtype=np.int64))
        auction = np.asarray(pc.equal(pc.utf8_trim_whitespace(c["venue"]), "X"))
        data = {
            **self.identity(layout, n),
            "trade_id": pa.array(synthetic_ids(utc, const_strings(layout.symbol, n), layout), pa.int64()),
            "price": c["price"],
            "quantity": c["volume"],
            "quote_quantity": pa.nulls(n, c["price"].type),
            "side": const_strings("UNKNOWN", n),
            "exchange_ts": timestamps_us(utc),
            "receipt_ts": now,
            "ingest_ts": now,
            "source_sequence": pa.nulls(n, pa.int64()),
            "conditions": flag_list(auction, "AUCTION"),
            "vendor": string_map(
                {
                    "source_file": const_strings(layout.source_file, n),
                    "company_id": const_strings(layout.extra.get("company_id", ""), n),
                    "qualifiers": c["qualifiers"],
                    "venue": c["venue"],
                    "buyer_id": c["buyer_id"],
                }
            ),
        }
        return conform(pa.table(data), "trades"), rejects


class AsxQuotes(_Asx):
    """ASX quotes ``Date,Time,Bid,Ask,BidVolume,AskVolume``."""

    name = "asx-quotes"
    table = "quotes"
    record = QUOTE
    cols = ASX_QUOTES

    def build(self, parsed: Parsed, layout: Layout) -> tuple[pa.Table, list[tuple[int, str, str]]]:
        c = parsed.columns
        n = parsed.num_rows
        utc, rejects = self.times(parsed)
        now = timestamps_us(np.full(n, layout.import_us, dtype=np.int64))
        data = {
            **self.identity(layout, n),
            "update_id": pa.array(synthetic_ids(utc, const_strings(layout.symbol, n), layout), pa.int64()),
            "bid_price": c["bid"],
            "bid_size": c["bid_volume"],
            "ask_price": c["ask"],
            "ask_size": c["ask_volume"],
            "exchange_ts": timestamps_us(utc),
            "receipt_ts": now,
            "ingest_ts": now,
            "vendor": string_map(
                {
                    "source_file": const_strings(layout.source_file, n),
                    "company_id": const_strings(layout.extra.get("company_id", ""), n),
                }
            ),
        }
        return conform(pa.table(data), "quotes"), rejects
