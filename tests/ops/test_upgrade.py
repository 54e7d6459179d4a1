"""Schema evolution end to end (docs/upgrade.md): a new optional field goes through the model, the schema
registry (BACKWARD), the Avro decoders (old and new readers) and the Iceberg table (evolve_schema), and
DuckDB reads old rows as NULL; a required field is refused at the registry and at the table."""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from k2.bus.serde import AvroBatchDecoder, AvroEncoder, registry_client
from k2.config import Settings
from k2.lake.catalog import ensure_tables, evolve_schema, load_catalog, metadata_location
from k2.lake.writer import append
from k2.model import TRADE
from k2.model.arrow import records_to_arrow
from k2.model.schema import FieldSpec
from k2.query.engine import new_connection
from tests.landing.helpers import make_trades

TRADE_V2 = dataclasses.replace(
    TRADE, fields=(*TRADE.fields, FieldSpec("match_type", "string", False, "Venue match type."))
)
TRADE_BAD = dataclasses.replace(
    TRADE, fields=(*TRADE.fields, FieldSpec("venue_seq", "long", True, "Required: not compatible."))
)


def test_adding_an_optional_field_end_to_end(settings: Settings, unique: str) -> None:
    exchange = f"up{unique}"
    topic = f"market.crypto.trades.{exchange}"
    registry = registry_client(settings.registry_url)
    v1_rows = [
        {**row, "ingest_ts": row["receipt_ts"] + 1_000}
        for row in make_trades("BTCUSDT", 1, 100, exchange=exchange)
    ]
    v2_rows = [
        {**row, "ingest_ts": row["receipt_ts"] + 1_000, "match_type": "auction"}
        for row in make_trades("BTCUSDT", 101, 50, exchange=exchange)
    ]

    # 1. Registry: the new optional field (default null) is BACKWARD compatible; a required one is not.
    v1 = AvroEncoder(registry, TRADE, topic)
    v2 = AvroEncoder(registry, TRADE_V2, topic)
    assert v2.schema_id != v1.schema_id
    with pytest.raises(SchemaRegistryError) as refused:
        registry.register_schema(f"{topic}-value", Schema(json.dumps(TRADE_BAD.avro_schema()), "AVRO"))
    assert refused.value.http_status_code == 409

    # 2. Decoding: the new reader fills the field with null for old messages; the old reader (a consumer
    #    not yet upgraded) reads new messages and ignores the field.
    old_message, new_message = v1.encode(v1_rows[0]), v2.encode(v2_rows[0])
    decoded = AvroBatchDecoder(registry, TRADE_V2).decode([old_message, new_message])
    assert not decoded.failures
    assert decoded.table["match_type"].to_pylist() == [None, "auction"]
    assert decoded.table["trade_id"].to_pylist() == [1, 101]
    legacy = AvroBatchDecoder(registry, TRADE).decode([new_message])
    assert not legacy.failures and legacy.table["trade_id"].to_pylist() == [101]
    assert "match_type" not in legacy.table.column_names

    # 3. Iceberg: the table holding v1 rows gains the column (a new field id); writes with it land.
    trades = ensure_tables(load_catalog(settings), settings)["trades"]
    append(trades, records_to_arrow(TRADE, v1_rows), "trades")
    before = trades.current_snapshot()
    assert before is not None
    with pytest.raises(ValueError, match="venue_seq"):
        evolve_schema(trades, TRADE_BAD)
    assert evolve_schema(trades, TRADE_V2) == ["match_type"]
    assert evolve_schema(trades, TRADE_V2) == []  # idempotent
    new_field = trades.schema().find_field("match_type")
    assert new_field.field_id > max(f.field_id for f in TRADE.iceberg_schema().fields)
    trades.append(records_to_arrow(TRADE_V2, v2_rows).sort_by([("trade_id", "ascending")]))
    # A writer still on the old model (a rollback, a consumer not yet upgraded) keeps appending: NULLs.
    late_v1 = [
        {**row, "ingest_ts": row["receipt_ts"] + 1_000}
        for row in make_trades("BTCUSDT", 1001, 10, exchange=exchange)
    ]
    append(trades, records_to_arrow(TRADE, late_v1), "trades")

    # 4. Query: old rows read NULL, new rows their value; the pre-evolution snapshot still reads.
    con = new_connection(settings)
    counts = con.execute(
        "SELECT count(*) FILTER (WHERE match_type IS NULL), count(*) FILTER (WHERE match_type = 'auction') FROM iceberg_scan(?)",
        [metadata_location(trades)],
    ).fetchone()
    assert counts == (110, 50)
    old = con.execute(
        "SELECT count(*) FROM iceberg_scan(?, snapshot_from_id => ?)",
        [metadata_location(trades), before.snapshot_id],
    ).fetchone()
    assert old == (100,)
    # A table written before the upgrade is evolved by ensure_tables too (what `k2 init` / landing run).
    again = ensure_tables(load_catalog(settings), settings)["trades"]
    assert again.schema().find_field("match_type").field_id == new_field.field_id
    assert records_to_arrow(TRADE_V2, v2_rows).schema.field("match_type").type == pa.string()
