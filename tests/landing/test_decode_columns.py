"""The landing's numpy column decoder (k2.bus.avro_decode) gives exactly what DuckDB's Avro reader gives.

Also on trades (string arrays, string maps, optional decimals and strings).

Issue 15 §2 (landing narrow depth rows): DuckDB's reader and K2's check of its result cost 3-5 us per
book-delta row; the column decoder reads scalar-only records with numpy. Checked here on the real
BTCUSDT capture's depth rows (parsed by the import's reader) plus edge rows (nulls in the optional
fields, negative and 8-byte values, non-ASCII strings), encoded by the producer's encoder: the table is
equal, column by column, to the DuckDB path's. Malformed bodies (truncated, a trailing byte, invalid UTF-8,
a union branch 2, a boolean 2) raise BlockMismatch, so the landing falls back to the
per-message decoder that dead-letters the bad message.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from k2.bus.avro_block import BlockDecoder, BlockMismatch
from k2.bus.avro_decode import decode_columns, supports
from k2.bus.avro_encode import encode_batch
from k2.model import BOOK_DELTA, QUOTE, TRADE
from k2.sources.binance import iter_capture_lines
from k2.sources.binance_capture import CaptureReader
from tests.landing.helpers import make_trades

CAPTURE = Path(__file__).resolve().parents[2] / "data" / "samples" / "binance" / "spot_btcusdt_20240808.gz"
HEADER = b"\x00\x00\x00\x00\x07"


def _capture_rows(limit: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    reader = CaptureReader(
        lambda record, row: rows.append(row) if record is BOOK_DELTA else None, lambda *_: None
    )
    for ns, raw in itertools.islice(iter_capture_lines([CAPTURE]), 20_000):
        reader.feed(ns, raw, "capture")
        if len(rows) >= limit:
            break
    return [{**row, "ingest_ts": row["receipt_ts"]} for row in rows[:limit]]


def _edge_rows(base: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {**base, "transaction_ts": base["exchange_ts"] - 5, "prev_update_id": 0},
        {**base, "prev_update_id": -1, "price": -1, "size": 0, "is_snapshot": False, "is_event_end": True},
        {**base, "price": 2**63 - 1, "size": -(2**63), "first_update_id": 2**62, "last_update_id": -(2**40)},
        {**base, "symbol": "ÉTHÜSDT", "instrument": "", "side": "ASK", "transaction_ts": 0},
        {**base, "exchange_ts": -1, "receipt_ts": 2**53, "prev_update_id": 63, "first_update_id": 64},
    ]


def _bodies(rows: list[dict[str, Any]]) -> list[bytes]:
    return [m[5:] for m in encode_batch(BOOK_DELTA, HEADER, rows)]


def _duckdb(bodies: list[bytes]) -> Any:
    decoder = BlockDecoder(BOOK_DELTA)
    decoder._columns = False  # the reader path, as before the column decoder
    return decoder.decode(bodies)


def test_column_decoder_equals_the_duckdb_reader_on_real_depth_rows_and_edges() -> None:
    rows = _capture_rows(20_000)
    assert len(rows) == 20_000, f"expected 20,000 depth rows from the capture, found {len(rows)}"
    rows += _edge_rows(rows[0]) * 3
    bodies = _bodies(rows)
    lengths = np.array([len(b) for b in bodies])
    ours = decode_columns(BOOK_DELTA, b"".join(bodies), lengths)
    reference = _duckdb(bodies)
    assert ours.schema == reference.schema
    for name in ours.column_names:
        assert ours.column(name).equals(reference.column(name)), f"column {name} differs"
    assert ours.column("symbol")[20_003].as_py() == "ÉTHÜSDT"
    assert ours.column("transaction_ts").null_count == 20_000 + 9  # 2 of the 5 edge rows (x3) hold one


def test_the_landing_decoder_uses_columns_for_every_market_record() -> None:
    assert supports(BOOK_DELTA) and supports(TRADE) and supports(QUOTE)


def _trades() -> list[dict[str, Any]]:
    rows = make_trades("BTCUSDT", 10**12, 3_000)
    for i, row in enumerate(rows):
        row["ingest_ts"], row["currency"] = row["receipt_ts"], None
        if i % 3 == 0:
            row["conditions"] = []
        if i % 5 == 0:
            row["conditions"] = ["A", "BÉ", ""]
        if i % 7 == 0:
            row["vendor"] = {"k": "v", "é": "", "z": "2"}
        if i % 11 == 0:
            row["quote_quantity"], row["currency"] = -12345, "USDT"
    return rows


def test_column_decoder_equals_the_duckdb_reader_on_trades_with_lists_maps_and_nulls() -> None:
    bodies = [m[5:] for m in encode_batch(TRADE, HEADER, _trades())]
    ours = decode_columns(TRADE, b"".join(bodies), np.array([len(b) for b in bodies]))
    decoder = BlockDecoder(TRADE)
    decoder._columns = False
    reference = decoder.decode(bodies)
    assert ours.schema == reference.schema
    for name in ours.column_names:
        assert ours.column(name).equals(reference.column(name)), f"column {name} differs"
    assert ours.column("conditions")[5].as_py() == ["A", "BÉ", ""]
    assert ours.column("vendor")[7].as_py() == [("k", "v"), ("é", ""), ("z", "2")]


def test_an_array_in_two_blocks_is_refused() -> None:
    row = {**_trades()[1], "conditions": ["BEST_MATCH"], "vendor": {}, "currency": None}
    body = [m[5:] for m in encode_batch(TRADE, HEADER, [row])][0]
    one_block = b"\x02\x14BEST_MATCH\x00"  # count 1, "BEST_MATCH", end
    assert one_block in body
    two_blocks = body.replace(one_block, b"\x02\x14BEST_MATCH\x02\x00\x00")  # + a block holding ""
    with pytest.raises(BlockMismatch):
        decode_columns(TRADE, two_blocks, np.array([len(two_blocks)]))


def _corrupt(body: bytes, how: str) -> bytes:
    row_end = len(body)
    if how == "truncated":
        return body[:-1]
    if how == "trailing":
        return body + b"\x00"
    if how == "utf8":  # the exchange string "binance" starts at byte 1 (length 7 -> varint 0x0e)
        return body[:1] + b"\xff" + body[2:]
    if how == "bool":
        return body[: row_end - 1] + b"\x02"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "trailing", "utf8", "bool"])
def test_malformed_bodies_raise_block_mismatch(how: str) -> None:
    rows = _capture_rows(200)
    bodies = _bodies(rows)
    bodies[57] = _corrupt(bodies[57], how)
    lengths = np.array([len(b) for b in bodies])
    with pytest.raises(BlockMismatch):
        decode_columns(BOOK_DELTA, b"".join(bodies), lengths)


def test_a_union_branch_other_than_null_or_value_is_refused() -> None:
    row = {**_capture_rows(1)[0], "transaction_ts": None}
    body = _bodies([row])[0]
    # transaction_ts is the 6th field; its branch byte follows exchange_ts. Find it by re-encoding with a
    # value: the first differing byte is the branch (0 -> 2 after zig-zag of 1).
    with_value = _bodies([{**row, "transaction_ts": 1}])[0]
    at = next(i for i, (a, b) in enumerate(zip(body, with_value, strict=False)) if a != b)
    assert body[at] == 0 and with_value[at] == 2
    bad_branch = body[:at] + b"\x04" + body[at + 1 :]  # branch 2
    with pytest.raises(BlockMismatch):
        decode_columns(BOOK_DELTA, bad_branch, np.array([len(bad_branch)]))
