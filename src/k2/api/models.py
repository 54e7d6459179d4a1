"""Response models of the REST API (they render the OpenAPI schemas of the JSON format).

Row models of stored tables are derived from the canonical data model (:mod:`k2.model`), so the
documented columns cannot drift from the tables. JSON conventions: exact decimals are strings, times
ISO-8601 UTC strings, lists arrays, maps objects.

Example:
    >>> sorted(TradeRow.model_json_schema()["properties"])[:4]
    ['asset_class', 'conditions', 'currency', 'exchange']
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from k2.model import GAP, KLINE, QUOTE, TRADE, RecordType

DECIMAL_DOC = "Exact decimal as a string (e.g. '61837.63000000')."


def _row_model(record: RecordType, name: str) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for spec in record.fields:
        base: Any = {
            "string": str,
            "long": int,
            "decimal": str,
            "timestamp": datetime,
            "date": date,
            "boolean": bool,
            "string_list": list[str],
            "string_map": dict[str, str],
        }[spec.kind]
        doc = spec.doc + (" " + DECIMAL_DOC if spec.kind == "decimal" else "")
        if spec.required:
            fields[spec.name] = (base, Field(description=doc))
        else:
            fields[spec.name] = (base | None, Field(None, description=doc))
    model: type[BaseModel] = create_model(name, __config__=ConfigDict(extra="allow"), **fields)
    model.__doc__ = record.doc
    return model


TradeRow = _row_model(TRADE, "TradeRow")
QuoteRow = _row_model(QUOTE, "QuoteRow")
GapRow = _row_model(GAP, "GapRow")
KlineRow = _row_model(KLINE, "KlineRow")


class Envelope(BaseModel):
    """Fields every JSON data response carries next to ``data``."""

    recent_error: str | None = Field(
        None,
        description="Present when include_recent was defaulted on but Kafka could not be read (table rows only).",
    )
    recent_truncated: bool | None = Field(
        None,
        description="Endpoints that can read rows still in Kafka (include_recent): true when that read stopped early "
        "(the answer is partial; also the X-Recent-Truncated header).",
    )
    recent_truncated_reason: str | None = Field(
        None, description="Why the Kafka read stopped early: max_rows (query_recent_max_rows) or time_bound."
    )
    recent_stopped_at: dict[str, dict[str, int]] | None = Field(
        None, description="Per topic and partition, the first offset the truncated Kafka read did not read."
    )
    partial: bool | None = Field(
        None,
        description="Aggregates only: true when computed over a truncated read (recent_truncated), so not over every row.",
    )
    unknown_symbols: list[str] | None = Field(
        None,
        description="Endpoints taking several symbols (trades, quotes, bars, vwap, twap): the requested symbols the "
        "table does not hold (for the exchange asked, at the snapshot read, nor among the Kafka rows read), so the "
        "answer holds nothing of them; [] when every one is known (also the X-Unknown-Symbols header). When "
        "every requested symbol is unknown the answer is 404 unknown_symbol instead.",
        examples=[["BTCUSDTT"]],
    )
    row_count: int = Field(description="Rows in this response.", examples=[2])
    snapshot_ids: dict[str, int | None] = Field(
        default_factory=dict,
        description="Iceberg snapshot id each table was read at (null: table empty).",
        examples=[{"trades": 4410861702153537123}],
    )


class PagedEnvelope(Envelope):
    """Envelope of cursor-paged responses."""

    recent_included: bool | None = Field(
        None,
        description="First page only: whether rows still in Kafka (include_recent) were read for this page.",
    )

    next_cursor: str | None = Field(
        None,
        description="Opaque cursor of the next page (null on the last page); also in the X-Next-Cursor header.",
    )


_TRADE_EXAMPLE: dict[str, Any] = {
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "instrument": "BTC-USDT",
    "asset_class": "crypto",
    "trade_id": 3721405481,
    "price": "61837.63000000",
    "quantity": "0.00081000",
    "quote_quantity": None,
    "side": "SELL",
    "exchange_ts": "2024-08-08T23:54:15.342000Z",
    "receipt_ts": "2024-08-08T23:54:16.612000Z",
    "ingest_ts": "2024-08-08T23:54:16.613000Z",
    "source_sequence": 3721405481,
    "conditions": ["BEST_MATCH"],
    "vendor": {},
}


class TradesPage(PagedEnvelope):
    """A page of trades in (exchange_ts, exchange, trade_id) order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "data": [_TRADE_EXAMPLE],
                    "row_count": 1,
                    "snapshot_ids": {"trades": 4410861702153537123},
                    "next_cursor": "eyJlcCI6InRyYWRlcyJ9.c2ln",
                }
            ]
        }
    )

    data: list[TradeRow]  # type: ignore[valid-type]


class QuotesPage(PagedEnvelope):
    """A page of quotes in (exchange_ts, exchange, update_id) order."""

    data: list[QuoteRow]  # type: ignore[valid-type]


class ReplayPage(PagedEnvelope):
    """A page of a range export (trades or quotes rows) in (exchange_ts, exchange, symbol, id) order."""

    data: list[dict[str, Any]] = Field(description="TradeRow or QuoteRow objects, depending on `table`.")


class BarRow(BaseModel):
    """One OHLCV bar (columns as returned by the query layer's ``bars``)."""

    model_config = ConfigDict(extra="allow")
    exchange: str | None = None
    symbol: str | None = None
    open: str | None = Field(None, description="First trade price. " + DECIMAL_DOC)
    high: str | None = Field(None, description="Highest trade price. " + DECIMAL_DOC)
    low: str | None = Field(None, description="Lowest trade price. " + DECIMAL_DOC)
    close: str | None = Field(None, description="Last trade price. " + DECIMAL_DOC)
    volume: str | None = Field(None, description="Base volume. " + DECIMAL_DOC)


class BarsResponse(Envelope):
    """OHLCV bars."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "data": [
                        {
                            "exchange": "binance",
                            "symbol": "BTCUSDT",
                            "open_time": "2024-08-08T23:54:00.000000Z",
                            "open": "61837.63000000",
                            "high": "61852.79000000",
                            "low": "61830.33000000",
                            "close": "61836.83000000",
                            "volume": "12.34567000",
                            "close_time": "2024-08-08T23:54:59.999000Z",
                            "quote_volume": "763421.12345678",
                            "trade_count": 1830,
                            "taker_buy_base_volume": "6.10000000",
                            "taker_buy_quote_volume": "377202.11000000",
                            "vwap": 61839.12,
                            "first_trade_id": 3721405481,
                            "last_trade_id": 3721407310,
                        }
                    ],
                    "row_count": 1,
                    "snapshot_ids": {"trades": 4410861702153537123},
                }
            ]
        }
    )

    data: list[BarRow]


class KlinesResponse(Envelope):
    """Venue-published OHLCV bars (``k2 import binance-klines``) in (exchange, symbol, interval, open_time) order."""

    data: list[KlineRow]  # type: ignore[valid-type]


class StatRow(BaseModel):
    """One row per (exchange, symbol) of an aggregate (vwap, twap)."""

    model_config = ConfigDict(extra="allow")
    exchange: str | None = None
    symbol: str | None = None


class StatResponse(Envelope):
    """An aggregate over a range."""

    data: list[StatRow]


class SpreadRow(BaseModel):
    """Bid-ask spread statistics of one (exchange, symbol) over a range (spreads in quote currency)."""

    model_config = ConfigDict(extra="allow")
    exchange: str
    symbol: str
    quote_count: int
    mean_spread: float | None = None
    median_spread: float | None = None
    min_spread: str | None = Field(None, description="Exact decimal, as a string.")
    max_spread: str | None = Field(None, description="Exact decimal, as a string.")
    time_weighted_spread: float | None = Field(
        None, description="Each quote weighted by how long it stood (the last until end)."
    )
    mean_spread_bps: float | None = Field(None, description="Mean of (ask - bid) / mid x 10,000.")
    crossed_count: int = Field(description="Quotes with ask < bid.")
    locked_count: int = Field(description="Quotes with ask = bid.")
    first_ts: datetime | None = None
    last_ts: datetime | None = None


class SpreadResponse(Envelope):
    """Spread statistics over a range."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "data": [
                        {
                            "exchange": "binance",
                            "symbol": "BTCUSDT",
                            "quote_count": 5210,
                            "mean_spread": 0.0123,
                            "median_spread": 0.01,
                            "min_spread": "0.01000000",
                            "max_spread": "0.52000000",
                            "time_weighted_spread": 0.0131,
                            "mean_spread_bps": 0.00199,
                            "crossed_count": 0,
                            "locked_count": 0,
                            "first_ts": "2024-08-08T23:55:00.012000Z",
                            "last_ts": "2024-08-08T23:56:59.987000Z",
                        }
                    ],
                    "row_count": 1,
                    "snapshot_ids": {"quotes": 4410861702153537123},
                }
            ]
        }
    )

    data: list[SpreadRow]


class AsofRow(BaseModel):
    """A trade joined with the latest quote at or before it (within the tolerance)."""

    model_config = ConfigDict(extra="allow")


class AsofResponse(Envelope):
    """Trades with the prevailing quote."""

    data: list[AsofRow]


class SymbolRow(BaseModel):
    """A stored (exchange, symbol) with its row counts and time range."""

    model_config = ConfigDict(extra="allow")
    exchange: str
    symbol: str


class SymbolsResponse(Envelope):
    """Stored symbols."""

    data: list[SymbolRow]


class SnapshotRow(BaseModel):
    """One Iceberg snapshot of a table."""

    model_config = ConfigDict(extra="allow")
    snapshot_id: int


class SnapshotsResponse(Envelope):
    """Snapshots of a table (time travel targets for ``as_of``)."""

    data: list[SnapshotRow]


class GapsResponse(Envelope):
    """Rows of the gap ledger (quality.gaps)."""

    data: list[GapRow]  # type: ignore[valid-type]


class DeadLetterRow(BaseModel):
    """A dead letter: where it came from, why, and its original bytes (base64)."""

    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp: int = Field(description="Source record timestamp (epoch ms, -1 when unknown).")
    dead_lettered_at: datetime | None
    key_base64: str | None
    value_base64: str | None


class DeadLetterStop(BaseModel):
    """Where a dead-letter read stopped short of a partition's broker-reported end."""

    topic: str
    partition: int
    offset: int = Field(description="The next offset not read.")
    end: int = Field(description="The end offset the broker reported (a lower bound on Tansu).")


class DeadLettersResponse(Envelope):
    """Dead letters (read-only view of ``<topic>.dlq``).

    ``partial`` is true (also ``X-Partial: true``) when the read stopped before a partition's
    broker-reported end (``limit`` reached or the time budget spent): ``stopped_at`` says where,
    ``partial_reason`` in words ("partial: stopped at offset X of Y on partition P of T").
    """

    data: list[DeadLetterRow]
    stopped_at: list[DeadLetterStop] = Field(default_factory=list)
    partial_reason: str | None = None


class KeyRow(BaseModel):
    """An API key's metadata (never its secret)."""

    key_id: str
    name: str
    scope: str
    created_at: datetime
    revoked_at: datetime | None
    active: bool


class KeysResponse(BaseModel):
    """API keys."""

    data: list[KeyRow]


class Health(BaseModel):
    """Liveness."""

    status: str = Field(examples=["ok"])


class CheckResult(BaseModel):
    """One readiness check."""

    ok: bool
    detail: str
    seconds: float


class Ready(BaseModel):
    """Readiness: every dependency answered."""

    status: str = Field(examples=["ready"])
    checks: dict[str, CheckResult]
