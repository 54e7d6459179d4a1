"""``k2 import binance-capture``: raw Binance WebSocket captures -> trades, quotes and book deltas via Kafka.

Capture format (the shared ``binance/websocket/*.gz`` files): one message a line, ``<local_receive_ns>
<raw JSON>``; stream messages in combined-stream envelopes (``{"stream": "btcusdt@trade", "data": ...}``)
and REST depth snapshots as bare ``{"lastUpdateId": ...}`` objects. Every message goes through the **same
parsers the live feed uses** (:func:`k2.sources.binance.parse_payload` for trades and bookTicker,
:mod:`k2.sources.binance_depth` for depth, with the documented sync), with ``receipt_ts`` = the line's
receive time. Rows are produced as Avro to ``market.<asset_class>.{trades,quotes,depth}.<exchange>``; the
landing consumer lands them exactly once (re-importing a file adds nothing: landing dedups by key).

Files are read in the order given and the depth sync carries across them (a capture split into several
files continues the chain). A REST snapshot line names no symbol: it belongs to the ``--symbol`` given,
else to the one symbol whose depth events are waiting for a snapshot (several waiting: an error naming
the line).

Nothing is lost silently: a message that cannot be parsed goes to the topic's DLQ (``<topic>.dlq``) with
its reason and original line; a break in the depth chain becomes a ``quality.gaps`` row (kind ``depth``,
status ``lost``, source ``file``: a file cannot be re-asked) and the book restarts at the next snapshot
line; depth events never applied (no snapshot before the end of the files) go to the DLQ with reason
``no_snapshot``.

Example (needs a broker, registry and catalog)::

    report = import_binance_capture([Path("spot_btcusdt_20240808.gz"), Path("spot_btcusdt_20240809.gz")], settings)
    report.rows  # {'trades': 19904, 'quotes': 73174, 'depth': ...}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from k2.bus.producer import MarketDataProducer
from k2.bus.topics import topic_name
from k2.config import Settings
from k2.model import BOOK_DELTA, QUOTE, TRADE, DataType, RecordType
from k2.sources.binance import SPOT, BinanceMarket, iter_capture_lines, parse_payload
from k2.sources.binance_depth import DepthSync, SyncOutput, parse_depth_snapshot, parse_depth_update
from k2.sources.gaps import GapLedger
from k2.sources.live import MalformedMessage


@dataclass
class CaptureReport:
    """What one import produced: rows per data type, DLQ messages per reason, depth gaps."""

    rows: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    snapshots: int = 0
    lines: int = 0


Emit = Callable[[RecordType, dict[str, Any]], None]
Reject = Callable[[DataType, str | None, str, str, bytes], None]  # data type, symbol, reason, detail, raw


class CaptureReader:
    """Routes capture lines to rows, rejects and gaps (no I/O: the caller decides where they go)."""

    def __init__(
        self, emit: Emit, reject: Reject, market: BinanceMarket = SPOT, symbol: str | None = None
    ) -> None:
        self.emit = emit
        self.reject = reject
        self.market = market
        self.symbol = symbol.upper() if symbol else None
        self.syncs: dict[str, DepthSync] = {}
        self.gaps: list[tuple[str, tuple[int, int, int | None, int | None]]] = []
        self.snapshots = 0

    def feed(self, receive_ns: int, raw: bytes, where: str) -> None:
        """One capture line (``where`` names it in errors)."""
        receipt = receive_ns // 1000
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self.reject(
                DataType.TRADES, None, "bad_json", f"{where}: expected JSON, found {raw[:80]!r} ({exc})", raw
            )
            return
        try:
            stream = obj.get("stream") if isinstance(obj, dict) else None
            if stream is None and isinstance(obj, dict) and "lastUpdateId" in obj:
                self._snapshot(obj, receipt, where)
            elif isinstance(stream, str) and stream.partition("@")[2].startswith("depth"):
                event = parse_depth_update(obj.get("data") or {}, receipt, raw)
                self._step(event.symbol, self._sync(event.symbol).on_event(event))
            else:
                parsed = parse_payload(obj, receipt, self.market, raw)
                if parsed is not None and parsed.row is not None:
                    self.emit(TRADE if parsed.kind == "trade" else QUOTE, parsed.row)
        except MalformedMessage as exc:
            self.reject(
                exc.data_type or DataType.TRADES, exc.symbol, exc.reason, f"{where}: {exc.detail}", raw
            )

    def finish(self) -> None:
        """Dead-letter the depth events no snapshot ever let us apply."""
        for symbol, sync in self.syncs.items():
            for event in sync.buffer:
                detail = f"expected a REST depth snapshot before the end of the capture for {symbol}, found none (u={event.last_update_id})"
                self.reject(DataType.DEPTH, symbol, "no_snapshot", detail, event.raw)
            sync.buffer = []

    def _sync(self, symbol: str) -> DepthSync:
        sync = self.syncs.get(symbol)
        if sync is None:
            sync = self.syncs[symbol] = DepthSync(symbol, self.market)
        return sync

    def _snapshot(self, obj: dict[str, Any], receipt: int, where: str) -> None:
        symbol = self.symbol
        if symbol is None:
            waiting = sorted(s for s, sync in self.syncs.items() if not sync.synced)
            if len(waiting) != 1:
                raise MalformedMessage(
                    "unknown_symbol",
                    f"expected exactly one symbol waiting for this REST snapshot (or --symbol), found {waiting}",
                    DataType.DEPTH,
                    None,
                )
            symbol = waiting[0]
        self.snapshots += 1
        self._step(symbol, self._sync(symbol).on_snapshot(parse_depth_snapshot(obj, symbol, receipt)))

    def _step(self, symbol: str, out: SyncOutput) -> None:
        for row in out.rows:
            self.emit(BOOK_DELTA, row)
        self.gaps.extend((symbol, gap) for gap in out.gaps)


def import_binance_capture(
    paths: Iterable[Path], settings: Settings, market: BinanceMarket = SPOT, symbol: str | None = None
) -> CaptureReport:
    """Produce the captures' trades, quotes and book deltas to Kafka; DLQ and gap rows as described above."""
    report = CaptureReport()
    ledger = GapLedger.for_settings(settings, writer="import-binance-capture")
    with MarketDataProducer(settings) as producer:

        def emit(record: RecordType, row: dict[str, Any]) -> None:
            producer.send(record, row)
            report.rows[record.data_type.value] += 1

        def reject(data_type: DataType, symbol_: str | None, reason: str, detail: str, raw: bytes) -> None:
            source = topic_name(market.asset_class, data_type.value, market.exchange)
            producer.dead_letter(source, (symbol_ or "").encode(), raw, reason, detail)
            report.dead_lettered[reason] += 1

        reader = CaptureReader(emit, reject, market, symbol)
        files = [Path(p) for p in paths]
        for path in files:
            for lineno, (ns, raw) in enumerate(iter_capture_lines(path), 1):
                reader.feed(ns, raw, f"{path.name}:{lineno}")
                report.lines += 1
        reader.finish()
    for gap_symbol, (first, last, before, after) in reader.gaps:
        report.gaps.append(
            ledger.record(
                exchange=market.exchange,
                symbol=gap_symbol,
                data_type="depth",
                first=first,
                last=last,
                status="lost",
                source="file",
                start_ts=before,
                end_ts=after,
                detail=f"depth chain broken in {', '.join(p.name for p in files)}",
            )
        )
    ledger.flush()
    report.snapshots = reader.snapshots
    return report
