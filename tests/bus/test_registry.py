"""K2's schema registry against confluent-kafka's real client, serializers and K2's own serde.

Every test talks HTTP to a real ``python -m k2.bus.registry`` process (the session's shared one,
or a private one where the test changes global state or restarts the server).
"""

from __future__ import annotations

import copy
import csv
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from k2.bus.registry.__main__ import main as registry_main
from k2.bus.registry.server import registry_process
from k2.bus.serde import AvroBatchDecoder, AvroEncoder, subject_for
from k2.model import TRADE
from k2.model.values import micros_to_datetime, to_unscaled, unscaled_to_decimal
from k2.telemetry.procs import ManagedProcess, free_port

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "binance-BTCUSDT-trades-2021-01-03-first40.csv"

RECORD_V1 = {
    "type": "record",
    "name": "Tick",
    "namespace": "io.k2.test",
    "fields": [{"name": "a", "type": "long"}],
}


def _schema(doc: dict[str, Any] | str) -> Schema:
    return Schema(doc if isinstance(doc, str) else json.dumps(doc), "AVRO")


def _with_fields(base: dict[str, Any], *fields: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    out["fields"] = out["fields"] + list(fields)
    return out


def _parsed(schema: Schema) -> Any:
    assert schema.schema_str is not None
    return json.loads(schema.schema_str)


def _set_level(client: SchemaRegistryClient, subject: str | None, level: str) -> Any:
    # The client is annotated as returning str but hands back the server's JSON body.
    result: Any = client.set_compatibility(subject, level)
    return result


def _client(url: str) -> SchemaRegistryClient:
    # A fresh client per step where caching would hide the server's answer.
    return SchemaRegistryClient({"url": url})


def _status(exc: pytest.ExceptionInfo[SchemaRegistryError]) -> tuple[int, int]:
    return exc.value.http_status_code, exc.value.error_code


@pytest.fixture
def private_registry(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A registry of this test's own (SQLite file), for global config changes; yields (url, db path)."""
    db = tmp_path / "registry.db"
    proc = registry_process(free_port(), f"sqlite:///{db}", tmp_path / "registry.log").start()
    yield f"http://127.0.0.1:{proc.port}", db
    proc.stop()


def _real_trades() -> list[dict[str, Any]]:
    """Wire-form K2 trades from real Binance public data (decimals as unscaled ints, times in µs)."""
    rows = []
    with FIXTURE.open() as handle:
        for trade_id, price, qty, quote_qty, time_ms, buyer_maker, best_match in csv.reader(handle):
            ts = int(time_ms) * 1000
            known: dict[str, Any] = {
                "exchange": "binance",
                "symbol": "BTCUSDT",
                "instrument": "BTC-USDT",
                "asset_class": "crypto",
                "trade_id": int(trade_id),
                "price": to_unscaled(price),
                "quantity": to_unscaled(qty),
                "quote_quantity": to_unscaled(quote_qty),
                "side": "SELL" if buyer_maker == "True" else "BUY",
                "exchange_ts": ts,
                "receipt_ts": ts + 1_000,
                "ingest_ts": ts + 2_000,
                "source_sequence": int(trade_id),
                "conditions": ["BEST_MATCH"] if best_match == "True" else [],
                "vendor": {"is_buyer_maker": buyer_maker},
            }
            # Fields added to the model later stay null so this test keeps testing the registry.
            rows.append({spec.name: known.get(spec.name) for spec in TRADE.fields})
    return rows


def _to_confluent(row: dict[str, Any]) -> dict[str, Any]:
    """The same trade as confluent's AvroSerializer wants it: Decimal and aware datetimes."""
    out = dict(row)
    for spec in TRADE.fields:
        value = row[spec.name]
        if value is not None and spec.kind == "decimal":
            out[spec.name] = unscaled_to_decimal(value)
        elif value is not None and spec.kind == "timestamp":
            out[spec.name] = micros_to_datetime(value)
    return out


# -- basic REST behaviour ----------------------------------------------------------------------


def test_register_lookup_get_subjects_versions(schema_registry: str, unique: str) -> None:
    client = _client(schema_registry)
    s1, s2 = f"basic-{unique}-a", f"basic-{unique}-b"
    text = json.dumps(RECORD_V1)

    schema_id = client.register_schema(s1, _schema(text))
    assert _client(schema_registry).register_schema(s1, _schema(text)) == schema_id  # idempotent
    # Whitespace-only differences are the same schema; another subject shares the global id.
    spaced = json.dumps(RECORD_V1, indent=4)
    assert _client(schema_registry).register_schema(s2, _schema(spaced)) == schema_id
    assert _client(schema_registry).get_versions(s1) == [1]
    assert _client(schema_registry).get_versions(s2) == [1]

    fresh = _client(schema_registry)
    assert _parsed(fresh.get_schema(schema_id)) == RECORD_V1
    assert {(v.subject, v.version) for v in fresh.get_schema_versions(schema_id)} == {(s1, 1), (s2, 1)}
    assert sorted(fresh.get_subjects_by_schema_id(schema_id)) == [s1, s2]
    assert {s1, s2} <= set(fresh.get_subjects())
    assert fresh.get_subjects(subject_prefix=f"basic-{unique}-") == [s1, s2]

    found = fresh.lookup_schema(s2, _schema(text))
    assert (found.subject, found.version, found.schema_id) == (s2, 1, schema_id)
    latest = fresh.get_latest_version(s1)
    assert (latest.subject, latest.version, latest.schema_id) == (s1, 1, schema_id)
    assert _parsed(latest.schema) == RECORD_V1
    assert fresh.get_version(s1, 1).schema_id == schema_id

    other = _with_fields(RECORD_V1, {"name": "b", "type": ["null", "string"], "default": None})
    with pytest.raises(SchemaRegistryError) as exc:
        fresh.lookup_schema(s1, _schema(other))
    assert _status(exc) == (404, 40403)
    with pytest.raises(SchemaRegistryError) as exc:
        fresh.lookup_schema(f"missing-{unique}", _schema(text))
    assert _status(exc) == (404, 40401)
    with pytest.raises(SchemaRegistryError) as exc:
        fresh.get_version(s1, 7)
    assert _status(exc) == (404, 40402)
    with pytest.raises(SchemaRegistryError) as exc:
        fresh.get_schema(2_000_000_000)
    assert _status(exc) == (404, 40403)
    with pytest.raises(SchemaRegistryError) as exc:
        fresh.get_versions(f"missing-{unique}")
    assert _status(exc) == (404, 40401)


def test_raw_http_content_type_schema_text_and_bad_requests(schema_registry: str, unique: str) -> None:
    subject = f"raw-{unique}"
    headers = {"Content-Type": "application/json"}  # plain JSON is accepted too
    with httpx.Client(base_url=schema_registry) as http:
        reply = http.post(
            f"/subjects/{subject}/versions", json={"schema": json.dumps(RECORD_V1)}, headers=headers
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"].startswith("application/vnd.schemaregistry.v1+json")
        schema_id = reply.json()["id"]

        raw = http.get(f"/subjects/{subject}/versions/latest/schema")
        assert raw.status_code == 200 and json.loads(raw.text) == RECORD_V1
        by_id = http.get(f"/schemas/ids/{schema_id}", params={"subject": subject}).json()
        assert json.loads(by_id["schema"]) == RECORD_V1
        assert http.get(f"/subjects/{subject}/versions/-1").json()["id"] == schema_id

        bad_version = http.get(f"/subjects/{subject}/versions/abc")
        assert (bad_version.status_code, bad_version.json()["error_code"]) == (422, 42202)
        bad_json = http.post(f"/subjects/{subject}/versions", content=b"{not json", headers=headers)
        assert bad_json.status_code == 400 and "expected JSON" in bad_json.json()["message"]
        bad_flag = http.get("/subjects", params={"deleted": "maybe"})
        assert bad_flag.status_code == 400 and "'deleted'" in bad_flag.json()["message"]
        unknown = http.get("/associations/resources/x/y")
        assert unknown.status_code == 404 and unknown.json()["error_code"] == 404
        assert http.get("/schemas/types").json() == ["AVRO"]
        assert http.get("/v1/metadata/stats").json()["requests"] >= 1


def test_invalid_schemas_get_422(schema_registry: str, unique: str) -> None:
    client = _client(schema_registry)
    subject = f"invalid-{unique}"
    cases = {
        "not json": "{'type': 'record'",
        "unknown type": json.dumps(
            {"type": "record", "name": "R", "fields": [{"name": "a", "type": "decimalish"}]}
        ),
        "record without fields": json.dumps({"type": "record", "name": "R"}),
        "bad field name": json.dumps(
            {"type": "record", "name": "R", "fields": [{"name": "a-b", "type": "long"}]}
        ),
        "enum without symbols": json.dumps({"type": "enum", "name": "E"}),
    }
    for label, text in cases.items():
        with pytest.raises(SchemaRegistryError) as exc:
            client.register_schema(subject, _schema(text))
        assert _status(exc) == (422, 42201), label
        assert "Invalid schema" in exc.value.error_message, label
    with pytest.raises(SchemaRegistryError) as exc:
        client.register_schema(subject, Schema('{"type": "object"}', "JSON"))
    assert _status(exc) == (422, 42201)
    assert "AVRO" in exc.value.error_message
    # Nothing was registered by the failures.
    with pytest.raises(SchemaRegistryError) as exc:
        client.get_versions(subject)
    assert _status(exc) == (404, 40401)


def test_normalize_makes_attribute_order_irrelevant(schema_registry: str, unique: str) -> None:
    reordered = {"fields": RECORD_V1["fields"], "namespace": "io.k2.test", "name": "Tick", "type": "record"}
    client = _client(schema_registry)
    plain = client.register_schema(f"norm-{unique}-plain", _schema(RECORD_V1))
    # Without normalize a different attribute order is a different schema text, hence a new id...
    assert _client(schema_registry).register_schema(f"norm-{unique}-plain2", _schema(reordered)) != plain
    # ...with normalize both spellings are one schema.
    first = _client(schema_registry).register_schema(
        f"norm-{unique}", _schema(RECORD_V1), normalize_schemas=True
    )
    again = _client(schema_registry).register_schema(
        f"norm-{unique}", _schema(reordered), normalize_schemas=True
    )
    assert first == again
    assert _client(schema_registry).get_versions(f"norm-{unique}") == [1]
    found = _client(schema_registry).lookup_schema(
        f"norm-{unique}", _schema(reordered), normalize_schemas=True
    )
    assert found.schema_id == first
    with pytest.raises(SchemaRegistryError) as exc:
        _client(schema_registry).lookup_schema(f"norm-{unique}-plain", _schema(reordered))
    assert _status(exc) == (404, 40403)


# -- serde round trips with K2's canonical trade schema -----------------------------------------


def test_trade_round_trip_confluent_and_k2_serde(schema_registry: str, unique: str) -> None:
    topic = f"market.crypto.trades.regtest{unique}"
    rows = _real_trades()
    ctx = SerializationContext(topic, MessageField.VALUE)

    encoder = AvroEncoder(_client(schema_registry), TRADE, topic)
    k2_bytes = [encoder.encode(r) for r in rows]

    serializer = AvroSerializer(_client(schema_registry), json.dumps(TRADE.avro_schema()))
    confluent_bytes = [serializer(_to_confluent(r), ctx) for r in rows]
    # Both writers resolved the canonical schema to the same registry id.
    assert (
        {b[:5] for b in confluent_bytes}
        == {k2_bytes[0][:5]}
        == {b"\x00" + encoder.schema_id.to_bytes(4, "big")}
    )

    deserializer = AvroDeserializer(_client(schema_registry))
    for raw_bytes in (k2_bytes, confluent_bytes):
        decoded = [deserializer(b, ctx) for b in raw_bytes]
        assert [d["trade_id"] for d in decoded] == [r["trade_id"] for r in rows]
        # Exact decimals: compare against the source CSV text, not against K2's own conversion.
        with FIXTURE.open() as handle:
            source = list(csv.reader(handle))
        assert [d["price"] for d in decoded] == [Decimal(line[1]) for line in source]
        assert [d["quantity"] for d in decoded] == [Decimal(line[2]) for line in source]
        assert [d["exchange_ts"] for d in decoded] == [
            micros_to_datetime(int(line[4]) * 1000) for line in source
        ]

        table = AvroBatchDecoder(_client(schema_registry), TRADE).decode(raw_bytes)
        assert table.failures == []
        assert table.table.column("trade_id").to_pylist() == [int(line[0]) for line in source]
        assert table.table.column("price").to_pylist() == [Decimal(line[1]) for line in source]
        assert table.table.column("quote_quantity").to_pylist() == [Decimal(line[3]) for line in source]


def test_backward_evolution_accepted_and_old_reader_decodes(schema_registry: str, unique: str) -> None:
    topic = f"market.crypto.trades.evolve{unique}"
    subject = subject_for(topic)
    encoder = AvroEncoder(_client(schema_registry), TRADE, topic)
    evolved = _with_fields(
        TRADE.avro_schema(), {"name": "venue_note", "type": ["null", "string"], "default": None}
    )

    client = _client(schema_registry)
    assert client.test_compatibility(subject, _schema(evolved)) is True
    new_id = client.register_schema(subject, _schema(evolved))
    assert new_id != encoder.schema_id
    assert _client(schema_registry).get_versions(subject) == [1, 2]
    assert _client(schema_registry).get_latest_version(subject).schema_id == new_id

    ctx = SerializationContext(topic, MessageField.VALUE)
    rows = _real_trades()[:5]
    serializer = AvroSerializer(
        _client(schema_registry), json.dumps(evolved), conf={"auto.register.schemas": False}
    )
    payloads = [serializer({**_to_confluent(r), "venue_note": f"note {i}"}, ctx) for i, r in enumerate(rows)]
    assert payloads[0][1:5] == new_id.to_bytes(4, "big")

    # K2's landing path reads with the old (canonical) reader schema and ignores the new field.
    decoded = AvroBatchDecoder(_client(schema_registry), TRADE).decode(payloads)
    assert decoded.failures == []
    assert decoded.table.column("trade_id").to_pylist() == [r["trade_id"] for r in rows]
    assert decoded.table.column("price").to_pylist() == [unscaled_to_decimal(r["price"]) for r in rows]
    assert "venue_note" not in decoded.table.column_names
    # A confluent consumer with the old schema as its reader schema also decodes the new bytes.
    old_reader = AvroDeserializer(_client(schema_registry), json.dumps(TRADE.avro_schema()))
    first = old_reader(payloads[0], ctx)
    assert first["trade_id"] == rows[0]["trade_id"] and "venue_note" not in first
    # Without a reader schema the writer's new field is there.
    assert AvroDeserializer(_client(schema_registry))(payloads[1], ctx)["venue_note"] == "note 1"


# -- compatibility -----------------------------------------------------------------------------


def test_incompatible_changes_get_409_and_register_nothing(schema_registry: str, unique: str) -> None:
    topic = f"market.crypto.trades.incompat{unique}"
    subject = subject_for(topic)
    AvroEncoder(_client(schema_registry), TRADE, topic)
    required = _with_fields(TRADE.avro_schema(), {"name": "venue_note", "type": "string"})
    retyped = copy.deepcopy(TRADE.avro_schema())
    for field in retyped["fields"]:
        if field["name"] == "trade_id":
            field["type"] = "string"

    # Avro's checker ignores logical types; K2 also refuses a decimal scale change (prices x100).
    rescaled = copy.deepcopy(TRADE.avro_schema())
    for field in rescaled["fields"]:
        if field["name"] == "price":
            field["type"] = {**field["type"], "scale": 6}
    candidates = (("new required field", required), ("type change", retyped), ("decimal scale", rescaled))
    for label, candidate in candidates:
        client = _client(schema_registry)
        assert client.test_compatibility(subject, _schema(candidate)) is False, label
        with pytest.raises(SchemaRegistryError) as exc:
            client.register_schema(subject, _schema(candidate))
        assert _status(exc) == (409, 409), label
        assert "incompatible" in exc.value.error_message, label
    assert _client(schema_registry).get_versions(subject) == [1]

    with httpx.Client(base_url=schema_registry) as http:
        reply = http.post(
            f"/compatibility/subjects/{subject}/versions/latest",
            params={"verbose": "true"},
            json={"schema": json.dumps(required)},
        ).json()
        assert reply["is_compatible"] is False
        assert any(
            "READER_FIELD_MISSING_DEFAULT_VALUE" in m.upper() and "venue_note" in m for m in reply["messages"]
        )
        reply = http.post(
            f"/compatibility/subjects/{subject}/versions/1",
            params={"verbose": "true"},
            json={"schema": json.dumps(retyped)},
        ).json()
        assert reply["is_compatible"] is False and any(
            "TYPE_MISMATCH" in m.upper() for m in reply["messages"]
        )
        reply = http.post(
            f"/compatibility/subjects/{subject}/versions/latest",
            params={"verbose": "true"},
            json={"schema": json.dumps(rescaled)},
        ).json()
        assert any("DECIMAL_MISMATCH at /price" in m and "decimal(18,6)" in m for m in reply["messages"])
        fine = http.post(
            f"/compatibility/subjects/{subject}/versions/latest",
            json={"schema": json.dumps(TRADE.avro_schema())},
        ).json()
        assert fine == {"is_compatible": True}
        missing = http.post(
            f"/compatibility/subjects/{subject}/versions/9", json={"schema": json.dumps(TRADE.avro_schema())}
        )
        assert (missing.status_code, missing.json()["error_code"]) == (404, 40402)


def test_levels_forward_full_and_transitive(schema_registry: str, unique: str) -> None:
    v1 = RECORD_V1
    v2 = _with_fields(v1, {"name": "b", "type": "string", "default": "x"})
    v3 = _with_fields(v1, {"name": "b", "type": "string"})  # b without default: v1 data lacks it
    required_c = _with_fields(v1, {"name": "c", "type": "long"})
    expectations = {
        # level: (v3 after v1,v2 accepted?, required_c after v1 accepted?)
        "BACKWARD": (True, False),
        "BACKWARD_TRANSITIVE": (False, False),
        "FORWARD": (True, True),
        "FULL": (True, False),
        "NONE": (True, True),
    }
    client = _client(schema_registry)
    for level, (v3_ok, c_ok) in expectations.items():
        chain, single = f"lvl-{unique}-{level}-chain", f"lvl-{unique}-{level}-single"
        for subject in (chain, single):
            assert _set_level(client, subject, level) == {"compatibility": level}
            client.register_schema(subject, _schema(v1))
        client.register_schema(chain, _schema(v2))
        assert client.test_compatibility_all_versions(chain, _schema(v3)) is v3_ok, level
        assert client.test_compatibility(single, _schema(required_c)) is c_ok, level
        for subject, candidate, ok in ((chain, v3, v3_ok), (single, required_c, c_ok)):
            if ok:
                client.register_schema(subject, _schema(candidate))
            else:
                with pytest.raises(SchemaRegistryError) as exc:
                    client.register_schema(subject, _schema(candidate))
                assert _status(exc) == (409, 409), level
        assert _client(schema_registry).get_versions(chain) == ([1, 2, 3] if v3_ok else [1, 2]), level


def test_subject_config_overrides_global(private_registry: tuple[str, Path], unique: str) -> None:
    url, _ = private_registry
    client = _client(url)
    relaxed, strict = f"relaxed-{unique}", f"strict-{unique}"
    incompatible = _with_fields(RECORD_V1, {"name": "c", "type": "long"})
    for subject in (relaxed, strict):
        client.register_schema(subject, _schema(RECORD_V1))

    assert client.get_compatibility() == "BACKWARD"  # --default-compatibility default
    client.set_compatibility(relaxed, "none")  # levels are case-insensitive on input
    assert client.get_compatibility(relaxed) == "NONE"
    assert client.register_schema(relaxed, _schema(incompatible)) > 0
    with pytest.raises(SchemaRegistryError) as exc:
        client.register_schema(strict, _schema(incompatible))
    assert _status(exc) == (409, 409)

    # The global level applies to subjects without their own, not to subjects with one.
    assert _set_level(client, None, "FORWARD") == {"compatibility": "FORWARD"}
    assert client.get_compatibility() == "FORWARD"
    assert client.register_schema(strict, _schema(incompatible)) > 0  # forward-compatible
    assert client.get_compatibility(relaxed) == "NONE"
    with pytest.raises(SchemaRegistryError) as exc:
        client.get_compatibility(strict)
    assert _status(exc) == (404, 40408)
    with httpx.Client(base_url=url) as http:
        assert http.get(f"/config/{strict}", params={"defaultToGlobal": "true"}).json() == {
            "compatibilityLevel": "FORWARD"
        }
        bad = http.put(f"/config/{strict}", json={"compatibility": "SIDEWAYS"})
        assert (bad.status_code, bad.json()["error_code"]) == (422, 42203)
        assert "SIDEWAYS" in bad.json()["message"]
        assert http.delete(f"/config/{relaxed}").json() == {"compatibilityLevel": "NONE"}
        assert http.get(f"/config/{relaxed}", params={"defaultToGlobal": "true"}).json() == {
            "compatibilityLevel": "FORWARD"
        }
        assert http.delete("/config").json() == {"compatibilityLevel": "FORWARD"}
        assert http.get("/config").json() == {"compatibilityLevel": "BACKWARD"}


# -- deletes, persistence, PostgreSQL, concurrency -------------------------------------------


def test_soft_and_permanent_deletes(schema_registry: str, unique: str) -> None:
    client = _client(schema_registry)
    subject = f"del-{unique}"
    v2 = _with_fields(RECORD_V1, {"name": "b", "type": ["null", "string"], "default": None})
    id1 = client.register_schema(subject, _schema(RECORD_V1))
    id2 = client.register_schema(subject, _schema(v2))

    assert client.delete_version(subject, 2) == 2
    assert _client(schema_registry).get_versions(subject) == [1]
    assert _client(schema_registry).get_latest_version(subject).version == 1
    assert client.get_version(subject, 2, deleted=True).schema_id == id2
    with pytest.raises(SchemaRegistryError) as exc:
        client.delete_version(subject, 2)  # already soft-deleted
    assert _status(exc) == (404, 40406)
    with pytest.raises(SchemaRegistryError) as exc:
        client.delete_version(subject, 1, permanent=True)  # must be soft-deleted first
    assert _status(exc) == (404, 40407)

    assert client.delete_subject(subject) == [1]
    assert subject not in _client(schema_registry).get_subjects()
    with pytest.raises(SchemaRegistryError) as exc:
        _client(schema_registry).get_latest_version(subject)
    assert _status(exc) == (404, 40401)
    with pytest.raises(SchemaRegistryError) as exc:
        client.delete_subject(subject)  # already soft-deleted
    assert _status(exc) == (404, 40404)
    assert subject in _client(schema_registry).get_subjects(deleted=True)
    assert sorted(client.delete_subject(subject, permanent=True)) == [1, 2]
    assert subject not in _client(schema_registry).get_subjects(deleted=True)
    # Ids stay resolvable so data already in Kafka can still be decoded.
    assert _parsed(_client(schema_registry).get_schema(id1)) == RECORD_V1
    # Re-registering gets the same global id at a fresh version 1.
    again = _client(schema_registry).register_schema_full_response(subject, _schema(RECORD_V1))
    assert (again.schema_id, again.version) == (id1, 1)


def _register_three(url: str, unique: str) -> dict[str, int]:
    client = _client(url)
    ids = {}
    for i in range(3):
        schema = _with_fields(
            RECORD_V1, *[{"name": f"f{j}", "type": ["null", "long"], "default": None} for j in range(i)]
        )
        ids[f"s{i}"] = client.register_schema(f"persist-{unique}", _schema(schema))
        ids[f"other{i}"] = client.register_schema(f"persist-other-{unique}-{i}", _schema(schema))
    return ids


def _check_after_restart(url: str, unique: str, ids: dict[str, int]) -> None:
    client = _client(url)
    assert client.get_versions(f"persist-{unique}") == [1, 2, 3]
    for i in range(3):
        version = client.get_version(f"persist-{unique}", i + 1)
        assert version.schema_id == ids[f"s{i}"] == ids[f"other{i}"]
    # Registering again returns the stored ids; a new schema gets an id never used before.
    assert _register_three(url, unique) == ids
    new_id = client.register_schema(
        f"persist-new-{unique}", _schema({"type": "enum", "name": "E", "symbols": ["A"]})
    )
    assert new_id > max(ids.values())
    # The subject level was stored; the global one comes from --default-compatibility (NONE now).
    assert client.get_compatibility(f"persist-{unique}") == "FULL"
    assert client.get_compatibility() == "NONE"
    client.register_schema(f"persist-new-{unique}", _schema({"type": "string"}))  # NONE: anything goes
    assert client.get_versions(f"persist-new-{unique}") == [1, 2]
    assert client.delete_subject(f"persist-new-{unique}") == [1, 2]
    assert f"persist-new-{unique}" not in client.get_subjects()
    assert {f"persist-{unique}", f"persist-new-{unique}"} <= set(client.get_subjects(deleted=True))


def _first_life(url: str, unique: str) -> dict[str, int]:
    ids = _register_three(url, unique)
    assert len(set(ids.values())) == 3
    client = _client(url)
    assert client.get_compatibility() == "BACKWARD"  # the default --default-compatibility
    client.set_compatibility(f"persist-{unique}", "FULL")
    incompatible = _with_fields(RECORD_V1, {"name": "c", "type": "long"})
    with pytest.raises(SchemaRegistryError) as exc:
        client.register_schema(f"persist-{unique}", _schema(incompatible))
    assert _status(exc) == (409, 409)
    return ids


def _restarted(database_url: str, log: Path) -> ManagedProcess:
    return registry_process(free_port(), database_url, log, default_compatibility="NONE").start()


def test_restart_keeps_ids_sqlite(tmp_path: Path, unique: str) -> None:
    database_url, log = f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "registry.log"
    with registry_process(free_port(), database_url, log).start() as first:
        ids = _first_life(f"http://127.0.0.1:{first.port}", unique)
    with _restarted(database_url, log) as second:
        _check_after_restart(f"http://127.0.0.1:{second.port}", unique, ids)


@pytest.mark.postgres
def test_postgres_store_restart_and_two_processes_racing(
    postgres_url: str, tmp_path: Path, unique: str
) -> None:
    procs = [registry_process(free_port(), postgres_url, tmp_path / f"r{i}.log") for i in range(2)]
    starters = [threading.Thread(target=p.start) for p in procs]
    for t in starters:
        t.start()
    for t in starters:
        t.join(60)
    try:
        urls = [f"http://127.0.0.1:{p.port}" for p in procs]
        ids = _first_life(urls[0], unique)
        assert _register_three(urls[1], unique) == ids  # the other process sees the same store
        # Two registry processes on one database racing to register the same new schema.
        schema = _schema(_with_fields(RECORD_V1, {"name": "race", "type": "string", "default": ""}))
        results = _race(
            lambda i: _client(urls[i % 2]).register_schema_full_response(f"race-{unique}-{i % 3}", schema), 12
        )
        assert len({r.schema_id for r in results}) == 1
        for i in range(3):
            assert _client(urls[0]).get_versions(f"race-{unique}-{i}") == [1]
    finally:
        for proc in procs:
            proc.stop()
    with _restarted(postgres_url, tmp_path / "r.log") as again:
        _check_after_restart(f"http://127.0.0.1:{again.port}", unique, ids)


def _race(work: Any, threads: int) -> list[Any]:
    start = threading.Barrier(threads)
    results: list[Any] = [None] * threads
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = work(i)
        except BaseException as exc:  # reported below, so the test fails with the real error
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    assert not errors, errors
    return results


def test_concurrent_registration_of_one_schema_gives_one_id(schema_registry: str, unique: str) -> None:
    schema = _schema(_with_fields(RECORD_V1, {"name": f"f_{unique}", "type": "string", "default": ""}))
    results = _race(
        lambda i: _client(schema_registry).register_schema_full_response(f"conc-{unique}-{i % 4}", schema), 16
    )
    assert len({r.schema_id for r in results}) == 1
    for i in range(4):
        assert _client(schema_registry).get_versions(f"conc-{unique}-{i}") == [1]


def test_bad_arguments_exit_2_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["--port", "http", "--database-url", "sqlite://"], "--port: expected an integer port"),
        (
            ["--port", "1", "--database-url", "sqlite://", "--default-compatibility", "SIDEWAYS"],
            "found 'SIDEWAYS'",
        ),
        (["--port", "1", "--database-url", "not a url"], "--database-url: expected a SQLAlchemy URL"),
        (
            ["--port", "1", "--database-url", "postgresql+psycopg2://k2:secret@127.0.0.1:1/none"],
            "cannot open",
        ),
        (["--database-url", "sqlite://"], "--port"),
    ]
    for args, expected in cases:
        with pytest.raises(SystemExit) as exc:
            registry_main(args)
        err = capsys.readouterr().err
        assert exc.value.code == 2, (args, err)
        assert expected in err, err
        assert "secret" not in err


def test_managed_process_reports_bad_argument(tmp_path: Path) -> None:
    # The real command line: the process exits 2 and start() shows the reason from the log.
    proc = registry_process(free_port(), f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "r.log", "BAD")
    with pytest.raises(RuntimeError, match="registry failed to start") as exc:
        proc.start(timeout=30)
    assert "found 'BAD'" in str(exc.value)
    assert proc.process is not None and proc.process.returncode == 2
