"""The column-wise Avro encoder writes exactly fastavro's bytes, and a batch sent through the producer decodes
with confluent-kafka's own AvroDeserializer to the source rows (real Tansu broker, K2's registry)."""

from __future__ import annotations

import io
import random
import uuid
from decimal import Decimal
from typing import Any

import fastavro
import pyarrow as pa
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from k2.bus.avro_columns import encode_table
from k2.bus.avro_encode import NotUniform, encode_batch
from k2.bus.producer import MarketDataProducer
from k2.bus.serde import _decimal_bytes
from k2.config import Settings
from k2.model import QUOTE, TRADE, RecordType
from k2.model.arrow import records_to_arrow
from tests.query.helpers import capture_tables, csv_rows, csv_trades
from tests.support.broker import consume_all

HEADER = b"\x00\x00\x00\x00\x2a"


def fastavro_bytes(record: RecordType, row: dict[str, Any]) -> bytes:
    """The reference: fastavro's schemaless writer, decimals as K2's minimal two's-complement bytes."""
    prepared = dict(row)
    for field in record.fields:
        if field.kind == "decimal" and isinstance(prepared.get(field.name), int):
            prepared[field.name] = _decimal_bytes(prepared[field.name])
    buffer = io.BytesIO(HEADER)
    buffer.seek(len(HEADER))
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(record.avro_schema()), prepared)
    return buffer.getvalue()


def edge_trades(n: int) -> list[dict[str, Any]]:
    rnd = random.Random(5)
    big = 10**18 - 1
    return [
        {
            "exchange": "binance",
            "symbol": rnd.choice(["BTCUSDT", "ÉTH€", "X" * 200, ""]),
            "instrument": "BTC-USDT",
            "asset_class": "crypto",
            "trade_id": rnd.choice([0, 1, -1, 63, 64, 2**62, -(2**63), 2**63 - 1]),
            "price": rnd.choice([0, 1, -1, 127, 128, -128, -129, 255, 256, 32767, 32768, big, -big]),
            "quantity": rnd.randrange(1, 10**12),
            "quote_quantity": rnd.choice([None, 5, -300, 10**17]),
            "side": rnd.choice(["BUY", "SELL"]),
            "exchange_ts": rnd.randrange(0, 2**60),
            "receipt_ts": 1,
            "ingest_ts": -5,
            "source_sequence": rnd.choice([None, 0, 2**40]),
            "conditions": rnd.choice([[], ["A"], ["BEST_MATCH", "x" * 300, ""]]),
            "vendor": rnd.choice([{}, {"k": "v"}, {"a": "", "ü": "ß" * 70}]),
            "currency": rnd.choice([None, "USDT", ""]),
        }
        for _ in range(n)
    ]


def wire_rows(table: Any) -> list[dict[str, Any]]:
    """Arrow rows in wire form: decimals as unscaled ints, times as int microseconds."""
    rows = []
    for row in table.to_pylist():
        out = {}
        for key, value in row.items():
            if isinstance(value, Decimal):
                value = int(value.scaleb(8))
            elif hasattr(value, "timestamp"):
                value = int(value.timestamp() * 1_000_000)
            elif key == "vendor":  # Arrow gives a map as a list of (key, value) pairs
                value = dict(value)
            out[key] = value
        rows.append(out)
    return rows


_CAPTURE_TRADES, _CAPTURE_QUOTES = capture_tables(max_lines=3000)
# The rows both byte-equality tests encode (the dict-row and the Arrow-column encoders): built once.
SOURCES = pytest.mark.parametrize(
    ("record", "rows"),
    [
        (TRADE, edge_trades(3000)),
        (TRADE, wire_rows(csv_trades(csv_rows()))),
        (TRADE, wire_rows(_CAPTURE_TRADES)),
        (QUOTE, wire_rows(_CAPTURE_QUOTES)),
    ],
    ids=["edge-values", "binance-trade-file", "capture-trades", "capture-quotes"],
)


@SOURCES
def test_batch_bytes_equal_fastavro(record: RecordType, rows: list[dict[str, Any]]) -> None:
    assert rows
    encoded = encode_batch(record, HEADER, rows)
    assert encoded == [fastavro_bytes(record, r) for r in rows]


def test_a_batch_it_cannot_encode_column_wise_is_refused_whole() -> None:
    rows = edge_trades(10)
    for broken in (
        {**rows[3], "price": Decimal("1.5")},  # not an unscaled int
        {**rows[3], "symbol": None},  # a required string missing
        {k: v for k, v in rows[3].items() if k != "vendor"},
        {**rows[3], "trade_id": 2**64},  # beyond a long
    ):
        with pytest.raises(NotUniform):
            encode_batch(TRADE, HEADER, [*rows[:3], broken, *rows[4:]])


def test_send_many_messages_decode_with_confluents_deserializer(settings: Settings) -> None:
    rows = wire_rows(csv_trades(csv_rows()))
    topic = f"market.crypto.trades.batch{uuid.uuid4().hex[:8]}"
    with MarketDataProducer(settings) as producer:
        assert producer.send_many(TRADE, rows, topic) == len(rows)
        producer.flush(60)
        cid = producer.correlation_id.encode()
    messages = consume_all(settings, topic, len(rows))
    assert len(messages) == len(rows)
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": settings.schema_registry_url}))
    ctx = SerializationContext(topic, MessageField.VALUE)
    decoded = [(deserializer(v, ctx), key, headers) for v, key, headers in messages]
    # Every message: key = symbol, headers = the session's k2.cid then its own k2.mid (cid:1 .. cid:n).
    assert all(key == got["symbol"].encode() for got, key, _ in decoded)
    assert all(headers[0] == ("k2.cid", cid) and len(headers) == 2 for _, _, headers in decoded)
    mids = sorted(int(headers[1][1].split(b":")[1]) for _, _, headers in decoded)
    assert mids == list(range(1, len(rows) + 1))
    assert {headers[1][1].split(b":")[0] for _, _, headers in decoded} == {cid}
    source = sorted(rows, key=lambda r: r["trade_id"])
    for (got, _, _), want in zip(sorted(decoded, key=lambda d: d[0]["trade_id"]), source, strict=True):
        assert got["trade_id"] == want["trade_id"]
        assert got["price"] == Decimal(want["price"]).scaleb(-8)
        assert got["quantity"] == Decimal(want["quantity"]).scaleb(-8)
        assert int(got["exchange_ts"].timestamp() * 1_000_000) == want["exchange_ts"]
        assert got["side"] == want["side"] and got["conditions"] == want["conditions"]
        assert got["vendor"] == want["vendor"] and got["symbol"] == want["symbol"]


def test_fill_gives_the_bytes_of_the_filled_rows_without_copying_them() -> None:
    rows = edge_trades(40)
    for i, row in enumerate(rows):  # lacking ingest_ts, None, or set: only the first two are filled
        if i % 3 == 0:
            del row["ingest_ts"]
        elif i % 3 == 1:
            row["ingest_ts"] = None
    want = [fastavro_bytes(TRADE, {**r, "ingest_ts": r.get("ingest_ts") or 77}) for r in rows]
    assert encode_batch(TRADE, HEADER, rows, {"ingest_ts": 77}) == want
    assert "ingest_ts" not in rows[0] and rows[1]["ingest_ts"] is None


def test_messages_re_sent_after_a_purge_keep_their_k2_cid_and_k2_mid_headers(settings: Settings) -> None:
    # A delivery report's msg.headers() is None in confluent-kafka: re-sends used to go out without headers.
    rows = wire_rows(csv_trades(csv_rows()))
    topic = f"market.crypto.trades.resend{uuid.uuid4().hex[:8]}"
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, rows, topic)
        producer.send(TRADE, rows[0], topic)
        producer._recreate("test: purge everything not acknowledged")  # as after a broker restart
        assert producer._resend, "expected purged messages waiting to be re-sent"
        producer.flush(60)
        cid = producer.correlation_id.encode()
    messages = consume_all(settings, topic, len(rows) + 1)
    assert len(messages) >= len(rows) + 1  # an in-flight purged message may also have been written
    assert all(headers and headers[0] == ("k2.cid", cid) for _, _, headers in messages)
    mids = {headers[1][1] for _, _, headers in messages}
    assert mids == {b"%s:%d" % (cid, i) for i in range(1, len(rows) + 2)}


def test_identical_messages_of_a_purged_batch_are_re_sent_each_with_its_own_k2_mid(
    settings: Settings,
) -> None:
    # The batch's delivery callback finds a failed message's k2.mid from its value bytes: identical
    # values (the same row twice, same ingest_ts) must still get distinct ids, each once.
    row = wire_rows(csv_trades(csv_rows()))[0]
    rows = [dict(row, ingest_ts=1) for _ in range(40)] + wire_rows(csv_trades(csv_rows()))[1:41]
    topic = f"market.crypto.trades.dupes{uuid.uuid4().hex[:8]}"
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, rows, topic)
        producer._recreate("test: purge everything not acknowledged")
        assert len(producer._resend) >= 40, "expected the purged batch waiting to be re-sent"
        producer.flush(60)
        cid = producer.correlation_id.encode()
    messages = consume_all(settings, topic, len(rows))
    mids = [headers[1][1] for _, _, headers in messages]
    assert set(mids) == {b"%s:%d" % (cid, i) for i in range(1, len(rows) + 1)}
    assert all(headers[0] == ("k2.cid", cid) for _, _, headers in messages)


@SOURCES
def test_arrow_table_bytes_equal_fastavro_also_for_a_slice(
    record: RecordType, rows: list[dict[str, Any]]
) -> None:
    table = records_to_arrow(record, rows)
    assert encode_table(record, HEADER, table) == [fastavro_bytes(record, r) for r in rows]
    # A slice (non-zero Arrow offsets in every column, lists and maps included) as the importer hands it.
    assert encode_table(record, HEADER, table.slice(7, len(rows) - 20)) == [
        fastavro_bytes(record, r) for r in rows[7 : len(rows) - 13]
    ]


def test_arrow_table_fill_and_the_tables_it_refuses_whole() -> None:
    rows = edge_trades(50)
    for i, row in enumerate(rows):
        if i % 2:
            row["ingest_ts"] = None
    table = records_to_arrow(TRADE, rows)
    want = [
        fastavro_bytes(TRADE, {**r, "ingest_ts": 77 if r["ingest_ts"] is None else r["ingest_ts"]})
        for r in rows
    ]
    assert encode_table(TRADE, HEADER, table, {"ingest_ts": 77}) == want
    assert encode_table(TRADE, HEADER, table.drop_columns(["ingest_ts"]), {"ingest_ts": 77}) == [
        fastavro_bytes(TRADE, {**r, "ingest_ts": 77}) for r in rows
    ]
    index = table.schema.get_field_index
    for broken in (
        table.set_column(
            index("exchange_ts"),
            "exchange_ts",
            table["exchange_ts"].cast(pa.timestamp("ms", "UTC"), safe=False),
        ),
        table.set_column(index("price"), "price", table["price"].cast(pa.decimal128(38, 10), safe=False)),
        table.drop_columns(["vendor"]),
        table.set_column(index("symbol"), "symbol", pa.array([None] * 50, pa.string())),
        table.set_column(index("vendor"), "vendor", pa.array([None] * 50, table["vendor"].type)),
        table,  # ingest_ts nulls without a fill: a required field
    ):
        with pytest.raises(NotUniform):
            encode_table(TRADE, HEADER, broken)
