"""The import driver: vendor file -> parse (block by block) -> validate -> dedup -> Iceberg or Kafka.

Per file:

1. :func:`~k2.sources.files.source.open_source` verifies the ``.CHECKSUM`` (mismatch: nothing imported).
2. The CSV is read in blocks of whole lines (``import_block_bytes``); each block is parsed column-wise
   (:mod:`k2.sources.files.parse`), mapped to the canonical record, and checked with the landing
   consumer's own validator (:func:`k2.model.validate.validate`), so a direct import rejects exactly
   what the landing consumer would.
3. Every ``import_commit_rows`` rows (and at the end) the pending rows go to a *lander*, after the bad
   lines are persisted (:mod:`k2.sources.files.rejects`): ``k2 import`` wires
   :class:`k2.landing.direct.DirectLanding` for trades and quotes (the landing consumer's own dedup,
   high-water marks and ``quality.gaps`` rows: a direct import records exactly the gaps the Kafka path
   would); :class:`LakeLander` (natural-key dedup, no gap ledger) serves klines and callers that wire
   nothing. Either commits once per batch with a snapshot summary built by
   :func:`k2.lake.summary.commit_summary` -- the landing's Kafka offsets carried forward, plus
   ``k2.import.file``, ``k2.import.sha256``, ``k2.import.format`` and ``k2.import.rows``. Re-importing a
   file adds nothing.
4. With ``via_kafka`` the rows not yet in the table are produced as Avro to
   ``market.<asset_class>.<type>.<exchange>`` for the landing consumer (which dedups again and records
   its Kafka offsets; klines and reference data have no landing route and are direct only).

Which market/exchange a Binance file belongs to is decided from its content and path
(:mod:`k2.sources.files.detect`); a disagreement refuses the file before anything is imported.

``receipt_ts`` and ``ingest_ts`` are the import time for direct imports of Binance and ASX files (nothing
was received from a feed; Tardis files carry ``local_timestamp``, the receipt time); via Kafka the
producer sets ``ingest_ts``.

Example (needs a catalog)::

    reports = import_files("binance-trades", [Path("BTCUSDT-trades-2021-01-03.csv")], load_settings())
    print(reports[0].imported)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyiceberg.expressions as _expressions
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from k2.bus.producer import MarketDataProducer
from k2.bus.topics import topic_name
from k2.config import Settings
from k2.lake.catalog import TABLES, ensure_tables, load_catalog
from k2.lake.summary import (
    IMPORT_FILE_KEY,
    IMPORT_FORMAT_KEY,
    IMPORT_ROWS_KEY,
    IMPORT_SHA_KEY,
    commit_summary,
)
from k2.lake.writer import Landed, append_sorted
from k2.model.lineage import with_file_lineage
from k2.model.validate import validate
from k2.model.values import now_micros
from k2.pacing import Backoff, retrying
from k2.sources.files.formats import FORMATS, FileFormat, ImportOptions, Layout
from k2.sources.files.parse import BadRow, Parsed, parse_block
from k2.sources.files.rejects import RejectSink
from k2.sources.files.source import FileImportError, SourceFile, iter_blocks, open_source, sniff
from k2.telemetry.metrics import metric

_X: Any = _expressions  # pyiceberg's expression classes defeat mypy's dataclass checks; typed loosely
_COMMIT_ATTEMPTS = 5
FILE_KEY, SHA_KEY, FORMAT_KEY, ROWS_KEY = IMPORT_FILE_KEY, IMPORT_SHA_KEY, IMPORT_FORMAT_KEY, IMPORT_ROWS_KEY
WRITER = "k2-import"
ProgressHook = Callable[[int, int], None]  # (bytes read, rows parsed) since the last call

# Natural key of each table: group columns, then the ordered id column used for the range scan.
KEYS: dict[str, tuple[tuple[str, ...], str]] = {
    "trades": (("exchange", "symbol"), "trade_id"),
    "quotes": (("exchange", "symbol"), "update_id"),
    "klines": (("exchange", "symbol", "interval"), "open_time"),
}


@dataclass
class ImportReport:
    """The outcome of importing one file."""

    file: str
    format: str
    sha256: str = ""
    checksum_verified: bool = False
    rows_read: int = 0
    imported: int = 0
    duplicates: int = 0
    rejected: int = 0
    gaps: int = 0  # gaps opened in quality.gaps (direct imports through the landing, or the landing later)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    rejects_destination: str | None = None
    rejected_samples: list[str] = field(default_factory=list)  # "file:line: reason: detail", the first few
    snapshots: list[int] = field(default_factory=list)
    topic: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


def existing_ids(table: Table, group: dict[str, Any], id_column: str, low: Any, high: Any) -> pa.Array:
    """Ids already in ``table`` for one key group within [low, high] (pruned scan of one column)."""
    table.refresh()
    if table.current_snapshot() is None:
        return pa.array([], pa.int64())
    expr = _X.And(_X.GreaterThanOrEqual(id_column, low), _X.LessThanOrEqual(id_column, high))
    for name, value in group.items():
        expr = _X.And(_X.EqualTo(name, value), expr)
    found = table.scan(row_filter=expr, selected_fields=(id_column,)).to_arrow()
    return found.column(id_column).combine_chunks()


def deduplicate_against(table: Table, data: pa.Table, short_name: str) -> tuple[pa.Table, int]:
    """Drop rows whose natural key is already in ``table`` or earlier in ``data``; return (rows, dropped)."""
    if data.num_rows == 0:
        return data, 0
    group_columns, id_column = KEYS[short_name]
    n = data.num_rows
    keep = np.ones(n, dtype=bool)
    ids = data.column(id_column).combine_chunks()
    id_ints = np.asarray(ids.cast(pa.int64()) if pa.types.is_timestamp(ids.type) else ids, dtype=np.int64)
    for group, rows in _groups(data, group_columns):
        group_ids = id_ints[rows]
        # Duplicates inside the batch: the first occurrence wins (vendor files are usually increasing).
        if rows.size > 1 and not bool(np.all(group_ids[1:] > group_ids[:-1])):
            _, first = np.unique(group_ids, return_index=True)
            inner = np.ones(rows.size, dtype=bool)
            inner[first] = False
            keep[rows[inner]] = False
        low, high = int(group_ids.min()), int(group_ids.max())
        found = existing_ids(table, group, id_column, low, high)
        if len(found):
            found_ints = found.cast(pa.int64()) if pa.types.is_timestamp(found.type) else found
            present = np.asarray(pc.is_in(pa.array(group_ids), value_set=found_ints))
            keep[rows[present]] = False
    dropped = n - int(keep.sum())
    return (data.filter(pa.array(keep)) if dropped else data), dropped


def _groups(data: pa.Table, columns: tuple[str, ...]) -> list[tuple[dict[str, Any], np.ndarray]]:
    """(key values, row indices) per distinct combination of ``columns``."""
    n = data.num_rows
    codes = np.zeros(n, dtype=np.int64)
    uniques: list[list[Any]] = []
    for name in columns:
        encoded = pc.dictionary_encode(data.column(name).combine_chunks())
        values = encoded.dictionary.to_pylist()
        codes = codes * max(len(values), 1) + np.asarray(encoded.indices, dtype=np.int64)
        uniques.append(values)
    if n and bool(np.all(codes == codes[0])):
        return [({name: data.column(name)[0].as_py() for name in columns}, np.arange(n))]
    out = []
    for code in np.unique(codes).tolist():
        rows = np.flatnonzero(codes == code)
        out.append(({name: data.column(name)[int(rows[0])].as_py() for name in columns}, rows))
    return out


class Lander(Protocol):
    """Where checked rows of a direct import go: dedup, (gaps,) one commit. See :mod:`k2.landing.direct`."""

    def land(self, data: pa.Table, adds: Mapping[str, str]) -> Landed: ...


LanderFactory = Callable[[str], Lander]  # table short name -> lander (the CLI wires k2.landing.direct)


class LakeLander:
    """The stage-local direct writer: natural-key dedup and one commit, **no gap ledger**.

    Used for klines (no landing route) and by callers that do not wire :mod:`k2.landing.direct`; the
    ``k2 import`` CLI lands trades and quotes through the landing's own dedup and gap ledger instead.
    Its summary carries the landing's Kafka offsets forward (:func:`k2.lake.summary.commit_summary`).
    """

    def __init__(self, settings: Settings, short: str) -> None:
        self.short = short
        self.table = ensure_tables(load_catalog(settings), settings)[short]

    def land(self, data: pa.Table, adds: Mapping[str, str]) -> Landed:
        # Another writer may commit meanwhile (maybe the same rows): refresh, dedup again, retry.
        for attempt in retrying(
            CommitFailedException,
            attempts=_COMMIT_ATTEMPTS,
            backoff=Backoff(0.0, 0.0),
        ):
            with attempt:
                if attempt.number > 1:
                    self.table.refresh()
                rows, dropped = deduplicate_against(self.table, data, self.short)
                if not rows.num_rows:
                    return Landed(duplicates=dropped)
                properties = commit_summary(
                    self.table.current_snapshot(), WRITER, {**adds, ROWS_KEY: str(rows.num_rows)}
                )
                return Landed(
                    rows.num_rows, dropped, 0, append_sorted(self.table, rows, self.short, properties)
                )
        raise AssertionError("unreachable")  # pragma: no cover


class KafkaLander:
    """``--via-kafka``: rows not yet in the table are produced for the landing consumer."""

    def __init__(self, settings: Settings, fmt: FileFormat, producer: MarketDataProducer) -> None:
        self.fmt = fmt
        self.producer = producer
        self.table = ensure_tables(load_catalog(settings), settings)[fmt.table]

    def land(self, data: pa.Table, adds: Mapping[str, str]) -> Landed:
        rows, dropped = deduplicate_against(self.table, data, self.fmt.table)
        self.producer.send_arrow(self.fmt.record, rows)  # from the columns, in file order
        self.producer.flush()
        return Landed(rows.num_rows, dropped)


def import_files(
    format_name: str,
    paths: list[Path],
    settings: Settings,
    options: ImportOptions | None = None,
    via_kafka: bool = False,
    progress: Callable[[SourceFile], ProgressHook | None] | None = None,
    lander: LanderFactory | None = None,
) -> list[ImportReport]:
    """Import vendor files of one format; one :class:`ImportReport` per file.

    ``lander`` makes the direct writer of a table (default :class:`LakeLander`, without gap ledger;
    ``k2 import`` passes :class:`k2.landing.direct.DirectLanding` for trades and quotes). Raises
    :class:`FileImportError` (a wrong layout, a checksum mismatch) before anything of that file is
    imported; files before it stay imported.
    """
    fmt = FORMATS.get(format_name)
    if fmt is None:
        raise FileImportError(f"expected a format among {sorted(FORMATS)}, found {format_name!r}")
    if via_kafka and fmt.table not in ("trades", "quotes"):
        raise FileImportError(
            f"{format_name}: --via-kafka carries trades and quotes only (the landing consumer has no route for "
            f"{TABLES[fmt.table].full_name}); import it directly"
        )
    options = options or ImportOptions()
    producer = MarketDataProducer(settings) if via_kafka else None
    target: Lander
    if producer is not None:
        target = KafkaLander(settings, fmt, producer)
    elif lander is not None and fmt.table in ("trades", "quotes"):
        target = lander(fmt.table)
    else:
        target = LakeLander(settings, fmt.table)
    if producer is None:
        return [import_one(fmt, path, settings, options, target, producer, progress) for path in paths]
    with producer:  # flushed and released; DeliveryError when the broker cannot take the rows in time
        return [import_one(fmt, path, settings, options, target, producer, progress) for path in paths]


def import_one(
    fmt: FileFormat,
    path: Path,
    settings: Settings,
    options: ImportOptions,
    target: Lander,
    producer: MarketDataProducer | None,
    progress: Callable[[SourceFile], ProgressHook | None] | None = None,
) -> ImportReport:
    """Import one file (see the module docstring)."""
    started = time.perf_counter()
    source = open_source(path, fmt.parquet_columns)
    report = ImportReport(
        file=str(path), format=fmt.name, sha256=source.sha256, checksum_verified=source.checksum_verified
    )
    import_us = now_micros()
    layout = fmt.layout(sniff(path, source), source.csv_name, options, import_us)
    hook = progress(source) if progress else None
    rows_metric = metric("k2_source_messages_total").labels(source=f"file:{fmt.name}", kind=fmt.table)
    rejects: RejectSink | None = None
    pending: list[pa.Table] = []
    pending_rows = 0
    max_future_us = int(settings.landing_max_future_seconds * 1_000_000)
    adds = {
        FILE_KEY: source.csv_name if source.csv_name == path.name else f"{path.name}!{source.csv_name}",
        SHA_KEY: source.sha256,
        FORMAT_KEY: fmt.name,
    }

    def reject_sink() -> RejectSink:
        nonlocal rejects
        if rejects is None:
            asset_class, exchange = fmt.topic_identity(layout)
            topic = topic_name(asset_class, fmt.record.data_type.value, exchange)
            rejects = RejectSink(
                settings, topic, source.csv_name, source.sha256, layout.symbol or exchange, producer
            )
        return rejects

    def flush() -> None:
        nonlocal pending, pending_rows
        if rejects is not None:
            rejects.flush()  # bad lines are persisted before the rows after them are committed
        if not pending:
            return
        batch = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
        pending, pending_rows = [], 0
        landed = target.land(batch, adds)
        report.imported += landed.rows
        report.duplicates += landed.duplicates
        report.gaps += landed.gaps
        if landed.snapshot_id is not None:
            report.snapshots.append(landed.snapshot_id)

    with source.open() as stream:
        for first, block in iter_blocks(stream, settings.import_block_bytes):
            parsed = parse_block(block, first, layout.cols, header=layout.header and first == 1)
            bad = list(parsed.bad)
            read = parsed.num_rows + len(parsed.bad)
            if parsed.num_rows:
                data = _checked(fmt, parsed, layout, max_future_us, bad, adds[FILE_KEY])
                pending.append(data)
                pending_rows += data.num_rows
            if bad:
                reject_sink().add(sorted(bad, key=lambda b: b.line))
            report.rows_read += read
            rows_metric.inc(read)
            if hook:
                hook(len(block), read)
            if pending_rows >= settings.import_commit_rows:
                flush()
    flush()
    if rejects is not None:
        rejects.close()
        report.rejected = rejects.count
        report.rejected_by_reason = dict(rejects.by_reason)
        report.rejects_destination = rejects.destination
        report.rejected_samples = list(rejects.samples)
        report.topic = rejects.topic
    if producer is not None:
        asset_class, exchange = fmt.topic_identity(layout)
        report.topic = topic_name(asset_class, fmt.record.data_type.value, exchange)
    report.notes.extend(layout.notes)
    report.seconds = time.perf_counter() - started
    return report


def _checked(
    fmt: FileFormat, parsed: Parsed, layout: Layout, max_future_us: int, bad: list[BadRow], file_name: str
) -> pa.Table:
    """The canonical rows of a parsed block that pass the mapping and the landing validator (the rest to
    ``bad``), each with its lineage (``file_name`` and its line in the file) where the table keeps it."""
    data, build_rejects = fmt.build(parsed, layout)
    if fmt.record.table_fields and data.num_rows == parsed.num_rows:  # one canonical row per parsed line
        data = with_file_lineage(data, file_name, parsed.lines)
    problems = dict((i, (r, d)) for i, r, d in build_rejects)
    for i, reason, detail in validate(fmt.record, data, now_micros(), max_future_us):
        problems.setdefault(i, (reason, detail))
    if problems:
        rows = np.asarray(sorted(problems), dtype=np.int64)
        bad.extend(_bad_rows(parsed, rows, problems))
        keep = np.ones(data.num_rows, dtype=bool)
        keep[rows] = False
        data = data.filter(pa.array(keep))
    return data


def _bad_rows(parsed: Parsed, rows: np.ndarray, problems: dict[int, tuple[str, str]]) -> list[BadRow]:
    out = []
    for index in rows.tolist():
        line = int(parsed.lines[index])
        reason, detail = problems[index]
        out.append(BadRow(line, parsed.raw_line(line), reason, detail))
    return out
