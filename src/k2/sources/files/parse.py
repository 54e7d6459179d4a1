"""Column-wise CSV parsing with exact decimals and per-line error reporting.

Fast path: one multi-threaded ``pyarrow.csv`` read of a block with the final column types. Arrow parses
``decimal128(18, 8)`` from text exactly (no float; a value with more than 8 significant fractional
digits or more than 10 integer digits is an error, never rounded), so this is the vectorised exact
parser. Empty fields become nulls and are rejected afterwards where a value is required.

Slow path, only for a block the fast path refuses (wrong field count, a non-number, an empty line): the
block is split into lines in Python, each column is checked with a regular expression and converted
column-wise, and every failing line becomes a :class:`BadRow` with its 1-based line number and raw
bytes. The good rows of such a block are still imported.

Example:
    >>> cols = [Col("id", "int"), Col("price", "dec"), Col("maker", "bool")]
    >>> parsed = parse_block(b"1,0.5,True\\n2,x,False\\n", 1, cols, header=False)
    >>> parsed.columns["id"].to_pylist(), [(b.line, b.reason) for b in parsed.bad]
    ([1], [(2, 'bad_number')])
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from k2.model.arrow import DECIMAL_TYPE, decimal_array
from k2.model.values import to_unscaled

Kind = Literal["int", "dec", "opt_dec", "bool", "str"]

_ARROW_TYPES: dict[str, pa.DataType] = {
    "int": pa.int64(),
    "dec": DECIMAL_TYPE,
    "opt_dec": DECIMAL_TYPE,
    "bool": pa.bool_(),
    "str": pa.string(),
}
_DESCRIBE = {
    "int": "an integer",
    "dec": "a decimal number with at most 8 fractional digits",
    "opt_dec": "a decimal number (or nothing)",
    "bool": "True/False or true/false",
    "str": "text",
}
_REASON = {
    "int": "bad_integer",
    "dec": "bad_number",
    "opt_dec": "bad_number",
    "bool": "bad_boolean",
    "str": "bad_field",
}
_INT_RE = r"^[+-]?\d{1,18}$"
_DEC_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
TRUE_VALUES = ["True", "true", "TRUE"]
FALSE_VALUES = ["False", "false", "FALSE"]


@dataclass(frozen=True)
class Col:
    """One CSV column: name and kind (int, dec, opt_dec, bool, str)."""

    name: str
    kind: Kind


@dataclass(frozen=True)
class BadRow:
    """A line that cannot be imported: where, the raw bytes, and why."""

    line: int
    raw: bytes
    reason: str
    detail: str


@dataclass
class Parsed:
    """The good rows of a block (typed Arrow columns), their line numbers, and the bad lines."""

    columns: dict[str, pa.Array]
    lines: np.ndarray
    bad: list[BadRow] = field(default_factory=list)
    body: bytes = b""
    first_line: int = 1
    _split: list[bytes] | None = None

    @property
    def num_rows(self) -> int:
        return len(self.lines)

    def raw_line(self, line: int) -> bytes:
        """The raw bytes of a line of this block (without the line break)."""
        if self._split is None:
            self._split = self.body.split(b"\n")
        return self._split[line - self.first_line].rstrip(b"\r")

    def drop(self, rows: np.ndarray) -> None:
        """Remove rows (indices into the good rows)."""
        if rows.size == 0:
            return
        keep = np.ones(self.num_rows, dtype=bool)
        keep[rows] = False
        mask = pa.array(keep)
        self.columns = {k: v.filter(mask) for k, v in self.columns.items()}
        self.lines = self.lines[keep]


def parse_block(block: bytes, first_line: int, cols: list[Col], header: bool) -> Parsed:
    """Parse a block of whole CSV lines into typed columns (see the module docstring)."""
    body, line0 = block, first_line
    if header:
        cut = block.find(b"\n")
        body, line0 = (block[cut + 1 :], first_line + 1) if cut >= 0 else (b"", first_line + 1)
    if not body or (len(body) < 65_536 and not body.strip()):  # (a large block surely holds a row: no copy)
        return Parsed(
            {c.name: pa.array([], _ARROW_TYPES[c.kind]) for c in cols}, np.zeros(0, np.int64), [], body, line0
        )
    try:
        table = pa_csv.read_csv(
            io.BytesIO(body),
            read_options=pa_csv.ReadOptions(column_names=[c.name for c in cols], block_size=8 << 20),
            parse_options=pa_csv.ParseOptions(ignore_empty_lines=False),
            convert_options=pa_csv.ConvertOptions(
                column_types={c.name: _ARROW_TYPES[c.kind] for c in cols},
                true_values=TRUE_VALUES,
                false_values=FALSE_VALUES,
                null_values=[""],
                strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid:
        return _parse_slow(body, line0, cols)
    columns = {c.name: table.column(c.name).combine_chunks() for c in cols}
    parsed = Parsed(columns, np.arange(line0, line0 + table.num_rows, dtype=np.int64), [], body, line0)
    # Empty required fields parsed as nulls: reject those lines.
    missing = np.zeros(table.num_rows, dtype=bool)
    reasons: dict[int, tuple[str, str]] = {}
    for col in cols:
        if col.kind in ("opt_dec", "str"):
            continue
        nulls = np.asarray(columns[col.name].is_null())
        for index in np.flatnonzero(nulls & ~missing):
            reasons[int(index)] = (_REASON[col.kind], f"{col.name}: expected {_DESCRIBE[col.kind]}, found ''")
        missing |= nulls
    if missing.any():
        rows = np.flatnonzero(missing)
        parsed.bad = [
            BadRow(int(parsed.lines[i]), parsed.raw_line(int(parsed.lines[i])), *reasons[int(i)])
            for i in rows
        ]
        parsed.drop(rows)
    return parsed


def _parse_slow(body: bytes, line0: int, cols: list[Col]) -> Parsed:
    width = len(cols)
    names = ",".join(c.name for c in cols)
    fields: list[list[str]] = [[] for _ in cols]
    lines: list[int] = []
    raws: list[bytes] = []
    bad: list[BadRow] = []
    split = body.split(b"\n")
    for offset, raw in enumerate(split):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue  # blank lines (and the end of the last line) carry no row
        parts = raw.split(b",")
        if len(parts) != width:
            bad.append(
                BadRow(
                    line0 + offset,
                    raw,
                    "bad_field_count",
                    f"expected {width} fields ({names}), found {len(parts)}",
                )
            )
            continue
        for column, value in zip(fields, parts, strict=True):
            column.append(value.decode("utf-8", errors="replace"))
        lines.append(line0 + offset)
        raws.append(raw)
    n = len(lines)
    ok = np.ones(n, dtype=bool)
    reasons: dict[int, tuple[str, str]] = {}
    typed: dict[str, pa.Array] = {}
    for col, values in zip(cols, fields, strict=True):
        text = pa.array(values, pa.string())
        array, good = _convert(text, col.kind)
        for index in np.flatnonzero(~good & ok):
            reasons[int(index)] = (
                _REASON[col.kind],
                f"{col.name}: expected {_DESCRIBE[col.kind]}, found {values[index]!r}",
            )
        ok &= good
        typed[col.name] = array
    for index in np.flatnonzero(~ok):
        bad.append(BadRow(lines[index], raws[index], *reasons[int(index)]))
    bad.sort(key=lambda b: b.line)
    mask = pa.array(ok)
    columns = {name: array.filter(mask) for name, array in typed.items()}
    return Parsed(columns, np.asarray(lines, dtype=np.int64)[ok], bad, body, line0, split)


def _convert(text: pa.Array, kind: Kind) -> tuple[pa.Array, np.ndarray]:
    """Typed array (placeholder values where bad) and a good-value mask."""
    n = len(text)
    if kind == "str":
        return text, np.ones(n, dtype=bool)
    if kind == "bool":
        good = np.asarray(pc.is_in(text, value_set=pa.array(TRUE_VALUES + FALSE_VALUES)))
        return pc.is_in(text, value_set=pa.array(TRUE_VALUES)), good
    if kind == "int":
        good = np.asarray(pc.fill_null(pc.match_substring_regex(text, _INT_RE), False))
        return pc.cast(pc.if_else(pa.array(good), text, "0"), pa.int64()), good
    empty = np.asarray(pc.equal(pc.utf8_length(text), 0))
    shaped = np.asarray(pc.fill_null(pc.match_substring_regex(text, _DEC_RE), False))
    good = shaped | (empty if kind == "opt_dec" else np.zeros(n, dtype=bool))
    candidates = pc.if_else(pa.array(shaped), text, "0")
    try:
        array = pc.cast(candidates, DECIMAL_TYPE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Some value does not fit decimal(18, 8): find which ones, exactly, one by one.
        unscaled: list[int | None] = []
        for index, value in enumerate(candidates.to_pylist()):
            try:
                unscaled.append(to_unscaled(value))
            except ValueError:
                unscaled.append(0)
                good[index] = False
        array = decimal_array(unscaled)
    if kind == "opt_dec" and empty.any():
        array = pc.if_else(pa.array(empty), pa.scalar(None, DECIMAL_TYPE), array)
    return array, good


def detect_header(first: bytes) -> bool:
    """Whether a CSV's first line is a header (its first field is not a number).

    >>> detect_header(b"id,price,qty"), detect_header(b"540342126,32176.45,0.01")
    (True, False)
    """
    head = first.split(b",", 1)[0].strip().decode("utf-8", errors="replace")
    return re.fullmatch(r"[+-]?[\d./:]+", head) is None
