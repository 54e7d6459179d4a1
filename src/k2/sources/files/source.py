"""Opening vendor files: CSV, the official one-CSV ZIP or ``.csv.gz``, ``.CHECKSUM`` checks, line blocks.

Binance publishes each file as ``<name>.zip`` (one CSV inside) with ``<name>.zip.CHECKSUM`` beside it,
holding ``<sha256 hex>  <name>.zip``. When such a file is present it is verified *before* anything is
read; a mismatch raises :class:`ChecksumMismatch` and nothing is imported.

Files are read in blocks of whole lines (``import_block_bytes``), so memory stays bounded whatever the
file size, and every block knows the 1-based line number of its first line (bad rows are reported by
file and line).

Example:
    >>> import io
    >>> [(line, block) for line, block in iter_blocks(io.BytesIO(b"a\\nb\\nc"), 3)]
    [(1, b'a\\n'), (2, b'b\\n'), (3, b'c')]
"""

from __future__ import annotations

import atexit
import contextlib
import gzip
import hashlib
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast


class FileImportError(ValueError):
    """A vendor file cannot be imported as asked (layout, checksum, name); the message says why."""


class ChecksumMismatch(FileImportError):
    """The file's sha256 differs from its ``.CHECKSUM`` file."""


def sha256_of(path: Path, chunk: int = 4 << 20) -> str:
    """Hex sha256 of a file, read in chunks.

    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile(delete=False) as f:
    ...     _ = f.write(b"abc")
    >>> sha256_of(Path(f.name))[:16]
    'ba7816bf8f01cfea'
    >>> os.unlink(f.name)
    """
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while data := stream.read(chunk):
            digest.update(data)
    return digest.hexdigest()


def parse_checksum_file(text: str, path: Path) -> str:
    """The hex digest in a Binance ``.CHECKSUM`` file (``<hex>  <name>``).

    >>> parse_checksum_file("ab" * 32 + "  X.zip\\n", Path("X.zip.CHECKSUM")) == "ab" * 32
    True
    """
    parts = text.split()
    if not parts or len(parts[0]) != 64 or any(c not in "0123456789abcdefABCDEF" for c in parts[0]):
        raise FileImportError(f"{path}: expected '<sha256 hex>  <file name>', found {text[:100]!r}")
    return parts[0].lower()


@dataclass(frozen=True)
class SourceFile:
    """One vendor file ready to read: the path given, the CSV inside it, its sha256 and size."""

    path: Path
    csv_name: str  # the CSV's own name (the ZIP member for zips)
    sha256: str  # of the file as given (the zip for zips): what .CHECKSUM covers
    size: int  # uncompressed CSV bytes (progress total)
    checksum_verified: bool

    @property
    def is_zip(self) -> bool:
        return self.path.suffix.lower() == ".zip"

    def open(self) -> IO[bytes]:
        """A binary stream of the CSV text (decompressed for ``.zip`` and ``.gz``)."""
        if self.is_zip:
            archive = zipfile.ZipFile(self.path)
            return archive.open(self.csv_name)
        if self.path.suffix.lower() == ".gz":
            return cast(IO[bytes], gzip.open(self.path, "rb"))
        return self.path.open("rb")


def open_source(path: Path, parquet_columns: Sequence[str] | None = None) -> SourceFile:
    """Check ``path`` (CSV or one-CSV ZIP), verify its ``.CHECKSUM`` when present, and describe it.

    ``parquet_columns``: the layout's column names when the format also reads Parquet (Tardis); such a
    file is converted to CSV text first (:func:`parquet_as_csv`). Raises :class:`FileImportError` for a
    missing file, an unexpected ZIP or another binary format (named), and :class:`ChecksumMismatch`
    when the checksum differs.
    """
    if not path.is_file():
        raise FileImportError(f"expected a CSV or ZIP file, found no file at {path}")
    if parquet_columns is not None and _is_parquet(path):
        return parquet_as_csv(path, list(parquet_columns))
    _refuse_unsupported(path)
    digest = sha256_of(path)
    verified = False
    checksum = path.with_name(path.name + ".CHECKSUM")
    if checksum.is_file():
        expected = parse_checksum_file(checksum.read_text(errors="replace"), checksum)
        if expected != digest:
            raise ChecksumMismatch(
                f"{path.name}: sha256 {digest} does not match {checksum.name} ({expected}); nothing imported"
            )
        verified = True
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                members = [m for m in archive.infolist() if not m.is_dir()]
        except zipfile.BadZipFile as exc:
            raise FileImportError(
                f"{path.name}: expected a ZIP archive, found an unreadable file ({exc})"
            ) from None
        if len(members) != 1:
            raise FileImportError(
                f"{path.name}: expected a ZIP holding exactly one CSV, found {[m.filename for m in members]}"
            )
        return SourceFile(path, members[0].filename, digest, members[0].file_size, verified)
    if path.suffix.lower() == ".gz":  # Tardis.dev ships .csv.gz; the gzip trailer holds the size mod 2**32
        with path.open("rb") as stream:
            stream.seek(-4, 2)
            size = int.from_bytes(stream.read(4), "little")
        return SourceFile(path, path.name.removesuffix(".gz").removesuffix(".GZ"), digest, size, verified)
    return SourceFile(path, path.name, digest, path.stat().st_size, verified)


def _is_parquet(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.read(4) == b"PAR1"


def parquet_as_csv(path: Path, columns: list[str]) -> SourceFile:
    """A vendor Parquet file (Tardis layout) as CSV text in a temporary file, block by block.

    The columns are matched by name (case-insensitive); timestamp columns become integer microseconds,
    as the CSV layout has them. The sha256 is the Parquet file's. Hazard: the CSV copy needs disk space
    about the size of the uncompressed data; it is deleted when the process exits.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FileImportError(f"{path.name}: expected a readable Parquet file, found {exc}") from None
    found = {name.lower(): name for name in parquet.schema_arrow.names}
    missing = [c for c in columns if c not in found]
    if missing:
        _refuse_other_parquet_layout(path, parquet.schema_arrow)
        raise FileImportError(
            f"{path.name}: expected Parquet columns {','.join(columns)}, found {','.join(parquet.schema_arrow.names)} (missing {missing})"
        )
    handle, name = tempfile.mkstemp(prefix="k2-parquet-", suffix=".csv")
    os.close(handle)
    atexit.register(lambda: Path(name).unlink(missing_ok=True))
    with open(name, "wb") as out:
        out.write((",".join(columns) + "\n").encode())
        for batch in parquet.iter_batches(batch_size=65_536, columns=[found[c] for c in columns]):
            arrays = []
            for array in batch.columns:
                if pa.types.is_timestamp(array.type):
                    array = array.cast(pa.timestamp("us", tz=array.type.tz)).cast(pa.int64())
                arrays.append(array)
            sink = pa.BufferOutputStream()
            pa_csv.write_csv(
                pa.table(arrays, names=columns),
                sink,
                pa_csv.WriteOptions(include_header=False, quoting_style="needed"),
            )
            out.write(sink.getvalue().to_pybytes())
    csv_name = path.name.removesuffix(".parquet") + ".csv"
    return SourceFile(Path(name), csv_name, sha256_of(path), Path(name).stat().st_size, False)


# Column sets that name another tool's Parquet layout: (columns that must all be present, what it is).
_NAUTILUS_COLUMNS = {"ts_event", "ts_init"}
_NAUTILUS_KINDS = (
    ({"aggressor_side", "trade_id"}, "TradeTick"),
    ({"bid_price", "ask_price"}, "QuoteTick"),
    ({"open", "high", "low", "close"}, "Bar"),
    ({"action", "order_id"}, "OrderBookDelta"),
)


def _refuse_other_parquet_layout(path: Path, schema: Any) -> None:
    """Refuse by name a Parquet file written by another tool whose layout K2 does not import (NautilusTrader)."""
    names = {n.lower() for n in schema.names}
    metadata = {k.decode(errors="replace"): v for k, v in (schema.metadata or {}).items()}
    if not (names >= _NAUTILUS_COLUMNS or "instrument_id" in metadata and "price_precision" in metadata):
        return
    kind = next((k for cols, k in _NAUTILUS_KINDS if cols <= names), "data")
    instrument = (
        metadata.get("instrument_id", b"").decode(errors="replace") if "instrument_id" in metadata else ""
    )
    raise FileImportError(
        f"{path.name}: expected a Tardis-layout Parquet file, found a NautilusTrader {kind} Parquet file"
        f"{f' ({instrument})' if instrument else ''} (fixed-point ts_event/ts_init layout), which K2 does not import; "
        "import the venue's own files (k2 import binance-trades / tardis-trades) or export the catalog to CSV"
    )


_MAGIC = {
    b"PAR1": "a Parquet file",
    b"\x89HDF": "an HDF5 file",
    b"ARROW1": "an Arrow IPC file",
    b"\x28\xb5\x2f\xfd": "a zstd file",
}


def _refuse_unsupported(path: Path) -> None:
    """Refuse, by name, a file K2 cannot read as CSV (Parquet and other binary formats)."""
    with path.open("rb") as stream:
        head = stream.read(8)
    suffix = path.suffix.lower()
    if head[:2] == b"\x1f\x8b" and suffix != ".gz":
        raise FileImportError(
            f"{path.name}: expected a .gz name for gzip data, found {path.suffix or 'no suffix'}; rename it to .csv.gz"
        )
    if head[:4] == b"PK\x03\x04" and suffix != ".zip":
        raise FileImportError(
            f"{path.name}: expected a .zip name for ZIP data, found {path.suffix or 'no suffix'}; rename it to .zip"
        )
    if head.startswith(b"PAR1"):
        import pyarrow.parquet as pq

        schema = None
        with contextlib.suppress(Exception):  # an unreadable Parquet file gets the generic refusal below
            schema = pq.read_schema(path)
        if schema is not None:
            _refuse_other_parquet_layout(path, schema)
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            raise FileImportError(
                f"{path.name}: expected CSV text (or a ZIP / .csv.gz of one), found {what}; this format reads CSV only "
                "(Parquet is read for the Tardis layouts: k2 import tardis-trades / tardis-quotes)"
            )


def iter_blocks(stream: IO[bytes], block_bytes: int) -> Iterator[tuple[int, bytes]]:
    """Split a stream into blocks of whole lines of about ``block_bytes``; yield (first line number, block)."""
    line = 1
    carry = b""
    while True:
        data = stream.read(block_bytes)
        if not data:
            break
        data = carry + data
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            continue
        block, carry = data[: cut + 1], data[cut + 1 :]
        yield line, block
        line += block.count(b"\n")
    if carry.strip():
        yield line, carry


def first_line(source: SourceFile) -> bytes:
    """The first line of the CSV (to detect a header and the layout)."""
    with source.open() as stream:
        head = stream.read(64 * 1024)
    return head.split(b"\n", 1)[0].rstrip(b"\r")


@dataclass(frozen=True)
class Sniff:
    """What layout detection looks at: the first line, the next few lines, and the path as given."""

    first: bytes
    sample: list[bytes]  # up to SAMPLE_LINES complete non-empty lines after the first
    path: str  # the path as given (and ``!member`` for a ZIP): Binance's directory layout is a hint


SAMPLE_LINES = 50


def sniff(path: Path, source: SourceFile) -> Sniff:
    """Read the head of a file for detection; raises :class:`FileImportError` for an empty file."""
    with source.open() as stream:
        head = stream.read(64 * 1024)
    lines = [line.rstrip(b"\r") for line in head.split(b"\n")]
    complete = lines if len(head) < 64 * 1024 else lines[:-1]
    rows = [line for line in complete if line.strip()]
    if not rows:
        raise FileImportError(
            f"{source.csv_name}: expected CSV rows, found an empty file ({len(head)} bytes, no line of data)"
        )
    member = "" if source.csv_name == path.name else f"!{source.csv_name}"
    return Sniff(rows[0], rows[1 : 1 + SAMPLE_LINES], f"{path}{member}")
