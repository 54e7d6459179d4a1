"""The canonical data model: one definition per record type, rendered as Avro, Arrow and Iceberg schemas.

Each :class:`RecordType` is a tuple of :class:`FieldSpec`. Nothing else in K2 spells out a column list:
the Avro schema registered in the schema registry, the Arrow schema of decoded batches and the Iceberg
table schema are all derived here, so they cannot diverge.

Hazards worth knowing:

* Decimals are ``decimal(18, 8)``: exact, stored as int64 in Parquet (compact, fast in DuckDB). Values
  with more than 10 integer digits or more than 8 fractional digits do not fit; they are rejected at
  the edge (dead-letter queue) rather than rounded silently.
* Timestamps are microseconds since the epoch, UTC (Avro ``timestamp-micros``, Arrow ``timestamp[us,
  tz=UTC]``, Iceberg ``timestamptz``).

Example:
    >>> from k2.model import TRADE
    >>> TRADE.arrow_schema().field("price").type
    Decimal128Type(decimal128(18, 8))
    >>> TRADE.avro_schema()["name"]
    'Trade'
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import pyarrow as pa
from pyiceberg.schema import Schema as IcebergSchema
from pyiceberg.types import (
    BooleanType,
    DateType,
    DecimalType,
    IcebergType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    TimestamptzType,
)

PRICE_PRECISION = 18
PRICE_SCALE = 8
AVRO_NAMESPACE = "io.k2.market"

Kind = Literal[
    "string", "long", "decimal", "timestamp", "date", "boolean", "string_list", "string_map", "decimal_list"
]


class AssetClass(StrEnum):
    """Asset classes K2 knows."""

    CRYPTO = "crypto"
    EQUITIES = "equities"
    FUTURES = "futures"
    OPTIONS = "options"


class Side(StrEnum):
    """Aggressor (taker) side of a trade."""

    BUY = "BUY"
    SELL = "SELL"
    UNKNOWN = "UNKNOWN"


class DataType(StrEnum):
    """Kinds of market data K2 stores; the third part of a topic name."""

    TRADES = "trades"
    QUOTES = "quotes"
    INSTRUMENTS = "instruments"
    GAPS = "gaps"
    KLINES = "klines"
    DEPTH = "depth"
    BOOK_SNAPSHOTS = "snapshots"


class BookSide(StrEnum):
    """Side of an order-book level (resting orders: BID buys, ASK sells)."""

    BID = "BID"
    ASK = "ASK"


@dataclass(frozen=True)
class FieldSpec:
    """One column of a canonical record."""

    name: str
    kind: Kind
    required: bool
    doc: str

    def arrow_type(self) -> pa.DataType:
        return {
            "string": pa.string(),
            "long": pa.int64(),
            "decimal": pa.decimal128(PRICE_PRECISION, PRICE_SCALE),
            "timestamp": pa.timestamp("us", tz="UTC"),
            "date": pa.date32(),
            "boolean": pa.bool_(),
            "string_list": pa.list_(pa.field("element", pa.string(), nullable=False)),
            "string_map": pa.map_(pa.string(), pa.field("value", pa.string(), nullable=False)),
            "decimal_list": pa.list_(
                pa.field("element", pa.decimal128(PRICE_PRECISION, PRICE_SCALE), nullable=False)
            ),
        }[self.kind]

    def avro_type(self) -> Any:
        base: Any = {
            "string": "string",
            "long": "long",
            "decimal": {
                "type": "bytes",
                "logicalType": "decimal",
                "precision": PRICE_PRECISION,
                "scale": PRICE_SCALE,
            },
            "timestamp": {"type": "long", "logicalType": "timestamp-micros"},
            "date": {"type": "int", "logicalType": "date"},
            "boolean": "boolean",
            "string_list": {"type": "array", "items": "string"},
            "string_map": {"type": "map", "values": "string"},
            "decimal_list": {
                "type": "array",
                "items": {
                    "type": "bytes",
                    "logicalType": "decimal",
                    "precision": PRICE_PRECISION,
                    "scale": PRICE_SCALE,
                },
            },
        }[self.kind]
        return base if self.required else ["null", base]


@dataclass(frozen=True)
class RecordType:
    """A canonical record: its name, its fields and its natural key."""

    name: str
    data_type: DataType
    fields: tuple[FieldSpec, ...]
    key: tuple[str, ...]
    time_field: str | None
    doc: str
    # Table-side columns (lineage): in the Iceberg table, never in the Avro message (see LINEAGE_FIELDS).
    table_fields: tuple[FieldSpec, ...] = ()

    @property
    def field_names(self) -> list[str]:
        """The message's columns (what producers send and queries return); not the table-side ones."""
        return [f.name for f in self.fields]

    @property
    def all_fields(self) -> tuple[FieldSpec, ...]:
        """Every column of the table: the message's fields, then the table-side ones."""
        return (*self.fields, *self.table_fields)

    def field(self, name: str) -> FieldSpec:
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(f"{self.name} has no field {name!r}; expected one of {self.field_names}")

    def avro_schema(self) -> dict[str, Any]:
        """The Avro record schema (as registered in the schema registry)."""
        fields = []
        for spec in self.fields:
            entry: dict[str, Any] = {"name": spec.name, "type": spec.avro_type(), "doc": spec.doc}
            if not spec.required:
                entry["default"] = None
            fields.append(entry)
        return {
            "type": "record",
            "name": self.name,
            "namespace": AVRO_NAMESPACE,
            "doc": self.doc,
            "fields": fields,
        }

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema of decoded batches (the message's fields, as Avro carries them)."""
        return pa.schema([pa.field(s.name, s.arrow_type(), nullable=not s.required) for s in self.fields])

    def table_arrow_schema(self) -> pa.Schema:
        """The Arrow schema of the arrays appended to Iceberg: the message's fields + the table-side ones."""
        return pa.schema([pa.field(s.name, s.arrow_type(), nullable=not s.required) for s in self.all_fields])

    def iceberg_schema(self) -> IcebergSchema:
        """The Iceberg table schema (message + table-side fields), with stable field ids (1..n for
        columns, 1000+ for nested)."""
        nested_id = 1000
        columns = []
        for index, spec in enumerate(self.all_fields, start=1):
            iceberg_type: IcebergType
            if spec.kind == "string_list":
                nested_id += 1
                iceberg_type = ListType(
                    element_id=nested_id, element_type=StringType(), element_required=True
                )
            elif spec.kind == "decimal_list":
                nested_id += 1
                iceberg_type = ListType(
                    element_id=nested_id,
                    element_type=DecimalType(PRICE_PRECISION, PRICE_SCALE),
                    element_required=True,
                )
            elif spec.kind == "string_map":
                nested_id += 2
                iceberg_type = MapType(
                    key_id=nested_id - 1,
                    key_type=StringType(),
                    value_id=nested_id,
                    value_type=StringType(),
                    value_required=True,
                )
            else:
                iceberg_type = {
                    "string": StringType(),
                    "long": LongType(),
                    "decimal": DecimalType(PRICE_PRECISION, PRICE_SCALE),
                    "timestamp": TimestamptzType(),
                    "date": DateType(),
                    "boolean": BooleanType(),
                }[spec.kind]
            columns.append(NestedField(index, spec.name, iceberg_type, required=spec.required, doc=spec.doc))
        return IcebergSchema(*columns)


def _s(name: str, kind: Kind, doc: str, required: bool = True) -> FieldSpec:
    return FieldSpec(name, kind, required, doc)


_IDENTITY = (
    _s("exchange", "string", "Venue code, lower case (binance, coinbase, asx)."),
    _s("symbol", "string", "Exchange-native symbol (BTCUSDT, BTC-USD, BHP)."),
    _s(
        "instrument",
        "string",
        "Canonical instrument: BASE-QUOTE for pairs (BTC-USDT), the ticker for equities.",
    ),
    _s("asset_class", "string", "crypto, equities, futures or options."),
)

#: Lineage: where a landed row came from. Table-side columns (``RecordType.table_fields``): the landing
#: writes them, the Avro message never carries them (a message cannot know its own Kafka offset), and
#: queries do not return them (``k2 trace`` and ``Client.trace`` do). Kafka rows fill topic, partition,
#: offset and the producer's message id; direct file imports fill file and line. All optional: rows
#: landed before the upgrade, or by writers that know nothing of their origin, read NULL.
#: Cheap in Parquet: topic/file/producer repeat (dictionary-encoded), offsets and lines rise
#: monotonically within a partition/file (small deltas compress well).
LINEAGE_FIELDS = (
    _s("lineage_topic", "string", "Kafka topic of the message the row came from.", required=False),
    _s("lineage_partition", "long", "Kafka partition of that message.", required=False),
    _s("lineage_offset", "long", "Kafka offset of that message.", required=False),
    _s(
        "lineage_producer",
        "string",
        "Message id, part 1: the producing session's id (k2.mid header, before the colon).",
        required=False,
    ),
    _s(
        "lineage_sequence",
        "long",
        "Message id, part 2: the message's sequence number in that session (k2.mid, after the colon).",
        required=False,
    ),
    _s("lineage_file", "string", "Source file name of a direct import (k2 import).", required=False),
    _s("lineage_line", "long", "Line (row number, 1 = first line) of the row in that file.", required=False),
)

_CURRENCY = _s(
    "currency",
    "string",
    "Quote asset / currency prices are in (USD, USDT...), from the source or reference data; null when unknown.",
    required=False,
)

TRADE = RecordType(
    name="Trade",
    data_type=DataType.TRADES,
    fields=(
        *_IDENTITY,
        _s(
            "trade_id",
            "long",
            "Exchange-native trade id (deterministic synthetic id for venues without one).",
        ),
        _s("price", "decimal", "Trade price, exact."),
        _s("quantity", "decimal", "Base quantity, exact."),
        _s(
            "quote_quantity",
            "decimal",
            "Quote quantity (price x quantity as published, or computed).",
            required=False,
        ),
        _s("side", "string", "Aggressor side: BUY, SELL or UNKNOWN."),
        _s("exchange_ts", "timestamp", "Exchange trade time (UTC, microseconds)."),
        _s(
            "receipt_ts",
            "timestamp",
            "When K2 received the message (UTC, microseconds); import time for files.",
        ),
        _s("ingest_ts", "timestamp", "When the message was produced to Kafka (UTC, microseconds)."),
        _s(
            "source_sequence",
            "long",
            "Sequence number of the source message, where the venue has one.",
            required=False,
        ),
        _s("conditions", "string_list", "Trade conditions (e.g. AUCTION, BEST_MATCH)."),
        _s("vendor", "string_map", "Vendor-specific fields kept as strings."),
        _CURRENCY,
    ),
    key=("exchange", "symbol", "trade_id"),
    time_field="exchange_ts",
    doc="One trade (fill) as published by a venue.",
    table_fields=LINEAGE_FIELDS,
)

QUOTE = RecordType(
    name="Quote",
    data_type=DataType.QUOTES,
    fields=(
        *_IDENTITY,
        _s(
            "update_id",
            "long",
            "Exchange update id of the book top (deterministic synthetic id where absent).",
        ),
        _s("bid_price", "decimal", "Best bid price.", required=False),
        _s("bid_size", "decimal", "Best bid size.", required=False),
        _s("ask_price", "decimal", "Best ask price.", required=False),
        _s("ask_size", "decimal", "Best ask size.", required=False),
        _s(
            "exchange_ts",
            "timestamp",
            "Exchange time (receipt time when the venue sends none; see vendor.ts_source).",
        ),
        _s("receipt_ts", "timestamp", "When K2 received the message (UTC, microseconds)."),
        _s("ingest_ts", "timestamp", "When the message was produced to Kafka (UTC, microseconds)."),
        _s("vendor", "string_map", "Vendor-specific fields kept as strings."),
        _CURRENCY,
    ),
    key=("exchange", "symbol", "update_id"),
    time_field="exchange_ts",
    doc="Best bid and offer (top of book).",
    table_fields=LINEAGE_FIELDS,
)

INSTRUMENT = RecordType(
    name="Instrument",
    data_type=DataType.INSTRUMENTS,
    fields=(
        *_IDENTITY,
        _s("base", "string", "Base asset (pairs).", required=False),
        _s("quote", "string", "Quote asset (pairs).", required=False),
        _s("isin", "string", "ISIN (securities).", required=False),
        _s("currency", "string", "Currency prices are quoted in.", required=False),
        _s("tick_size", "decimal", "Minimum price increment.", required=False),
        _s("lot_size", "decimal", "Minimum quantity increment.", required=False),
        _s("listing_date", "date", "First trading date.", required=False),
        _s("delisting_date", "date", "Last trading date.", required=False),
        _s("active", "boolean", "Trading now."),
        _s("name", "string", "Display name.", required=False),
        _s("updated_ts", "timestamp", "When K2 loaded this reference row."),
        _s("vendor", "string_map", "Vendor-specific fields kept as strings."),
    ),
    key=("exchange", "symbol"),
    time_field=None,
    doc="Instrument reference data.",
)

GAP = RecordType(
    name="Gap",
    data_type=DataType.GAPS,
    fields=(
        _s("exchange", "string", "Venue code."),
        _s("symbol", "string", "Exchange-native symbol."),
        _s("data_type", "string", "trades or quotes."),
        _s("first_missing_id", "long", "First missing id (inclusive)."),
        _s("last_missing_id", "long", "Last missing id (inclusive)."),
        _s("missing_count", "long", "Number of missing ids."),
        _s("start_ts", "timestamp", "Exchange time of the last message before the gap.", required=False),
        _s("end_ts", "timestamp", "Exchange time of the first message after the gap.", required=False),
        _s("detected_ts", "timestamp", "When K2 detected the gap."),
        _s("source", "string", "Where it was seen: live, reconnect, file, landing."),
        _s("status", "string", "open, backfilled or lost (confirmed lost)."),
        _s(
            "gap_key",
            "string",
            "Stable identity exchange/symbol/data_type/first-last (updates append a new row).",
        ),
        _s("detail", "string", "Free-text detail (e.g. the backfill outcome).", required=False),
    ),
    key=("gap_key",),
    time_field="detected_ts",
    doc="A hole in an exchange's id sequence, recorded as data (latest row per gap_key wins).",
)

KLINE = RecordType(
    name="Kline",
    data_type=DataType.KLINES,
    fields=(
        *_IDENTITY,
        _s("interval", "string", "Bar interval as the venue names it (1s, 1m, 1h, 1d, 1w, 1mo)."),
        _s("open_time", "timestamp", "Bar open time (UTC, microseconds)."),
        _s(
            "close_time",
            "timestamp",
            "Bar close time as published (UTC, microseconds; Binance: open + interval - 1 ms).",
        ),
        _s("open", "decimal", "Open price, exact."),
        _s("high", "decimal", "High price, exact."),
        _s("low", "decimal", "Low price, exact."),
        _s("close", "decimal", "Close price, exact."),
        _s("volume", "decimal", "Base volume, exact."),
        _s("quote_volume", "decimal", "Quote volume, exact.", required=False),
        _s("trade_count", "long", "Number of trades in the bar.", required=False),
        _s("taker_buy_base", "decimal", "Base volume bought by takers.", required=False),
        _s("taker_buy_quote", "decimal", "Quote volume bought by takers.", required=False),
        _s("receipt_ts", "timestamp", "When K2 received the bar (import time for files)."),
        _s("vendor", "string_map", "Vendor-specific fields kept as strings."),
    ),
    key=("exchange", "symbol", "interval", "open_time"),
    time_field="open_time",
    doc="One OHLCV bar (kline/candlestick) as published by a venue.",
)

BOOK_DELTA = RecordType(
    name="BookDelta",
    data_type=DataType.DEPTH,
    fields=(
        *_IDENTITY,
        _s(
            "exchange_ts",
            "timestamp",
            "Exchange event time (Binance E; the first applied event's E for REST snapshot rows).",
        ),
        _s(
            "transaction_ts",
            "timestamp",
            "Matching-engine transaction time (Binance USD-M T).",
            required=False,
        ),
        _s(
            "receipt_ts",
            "timestamp",
            "When K2 received the message (capture receive time for imported files).",
        ),
        _s("ingest_ts", "timestamp", "When the message was produced to Kafka (UTC, microseconds)."),
        _s(
            "first_update_id",
            "long",
            "First update id of the exchange event (Binance U; = last_update_id for snapshots).",
        ),
        _s(
            "last_update_id",
            "long",
            "Last update id of the exchange event (Binance u; lastUpdateId for REST snapshots).",
        ),
        _s(
            "prev_update_id",
            "long",
            "Previous event's last update id as the venue sends it (Binance USD-M pu).",
            required=False,
        ),
        _s("side", "string", "BID or ASK."),
        _s("price", "decimal", "Level price, exact."),
        _s("size", "decimal", "The level's new absolute size (0 = level removed), exact."),
        _s(
            "is_snapshot",
            "boolean",
            "True for rows that (re)start the book: readers drop every earlier level.",
        ),
        _s(
            "is_event_end",
            "boolean",
            "True on the last row of an exchange event (the book is consistent after it).",
        ),
    ),
    key=("exchange", "symbol", "last_update_id", "side", "price"),
    time_field="exchange_ts",
    doc="One price level change of an L2 order book (or one level of a snapshot that restarts it).",
    table_fields=LINEAGE_FIELDS,
)

BOOK_SNAPSHOT = RecordType(
    name="BookSnapshot",
    data_type=DataType.BOOK_SNAPSHOTS,
    fields=(
        *_IDENTITY,
        _s("exchange_ts", "timestamp", "Exchange time of the last event the snapshot reflects."),
        _s("last_update_id", "long", "Last update id the snapshot reflects (the book after that event)."),
        _s("depth", "long", "Levels kept per side (the configured N; a side may hold fewer)."),
        _s("bid_prices", "decimal_list", "Bid prices, best (highest) first."),
        _s("bid_sizes", "decimal_list", "Bid sizes, aligned with bid_prices."),
        _s("ask_prices", "decimal_list", "Ask prices, best (lowest) first."),
        _s("ask_sizes", "decimal_list", "Ask sizes, aligned with ask_prices."),
        _s("written_ts", "timestamp", "When K2 wrote the snapshot."),
    ),
    key=("exchange", "symbol", "last_update_id"),
    time_field="exchange_ts",
    doc="The top N levels of a book at one update id, written by K2 from the deltas (for fast reads).",
)

RECORD_TYPES: dict[DataType, RecordType] = {
    r.data_type: r for r in (TRADE, QUOTE, INSTRUMENT, GAP, KLINE, BOOK_DELTA, BOOK_SNAPSHOT)
}
