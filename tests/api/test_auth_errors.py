"""Auth (no key, bad key, revoked key, scopes), the error model and request ids, against real uvicorn."""

from __future__ import annotations

import time

import pytest

from k2.api.keycache import KEY_CACHE_SECONDS
from k2.api.keys import KeyStore
from tests.api.conftest import Api
from tests.api.helpers import assert_error

TRADES = "/v1/trades?symbol=BTCUSDT&limit=3&include_recent=false"


def test_missing_key_is_401_with_clear_body(api: Api) -> None:
    with api.client() as c:
        for path in (
            TRADES,
            "/v1/bars?symbol=BTCUSDT",
            "/v1/spread?symbol=BTCUSDT",
            "/v1/symbols",
            "/v1/dlq",
            "/v1/keys",
            "/v1/replay?start=x",
        ):
            error = assert_error(c.get(path), 401, "unauthorized")
            assert "X-API-Key" in str(error["message"])


@pytest.mark.parametrize(
    "key",
    ["nonsense", "k2_000000000000_" + "A" * 43, "Bearer", "' OR '1'='1", "k2_" + "f" * 12 + "_" + "x" * 43],
)
def test_bad_key_is_401(api: Api, key: str) -> None:
    with api.client() as c:
        assert_error(c.get(TRADES, headers={"X-API-Key": key}), 401, "unauthorized")
        assert_error(c.get(TRADES, headers={"Authorization": f"Bearer {key}"}), 401, "unauthorized")


def test_tampered_secret_of_real_key_is_401(api: Api) -> None:
    tampered = api.read_key[:-2] + ("AA" if not api.read_key.endswith("AA") else "BB")
    with api.client(tampered) as c:
        assert_error(c.get(TRADES), 401, "unauthorized")


def test_key_via_header_and_bearer(api: Api) -> None:
    with api.client() as c:
        assert c.get(TRADES, headers={"X-API-Key": api.read_key}).status_code == 200
        assert c.get(TRADES, headers={"Authorization": f"Bearer {api.read_key}"}).status_code == 200


def test_revoked_key_is_401(api: Api) -> None:
    """A revoked key is refused within KEY_CACHE_SECONDS (a process remembers a verified key that long)."""
    store = KeyStore.from_settings(api.settings)
    key, info = store.create("temp", "read")
    with api.client(key) as c:
        assert c.get(TRADES).status_code == 200
        store.revoke(info.key_id)
        revoked_at = time.monotonic()
        while c.get(TRADES).status_code == 200:
            assert time.monotonic() - revoked_at < KEY_CACHE_SECONDS + 5.0, "revoked key still accepted"
            time.sleep(0.1)
        assert_error(c.get(TRADES), 401, "unauthorized")


def test_scopes_read_vs_admin(api: Api) -> None:
    with api.client(api.read_key) as c:
        error = assert_error(c.get("/v1/dlq"), 403, "forbidden")
        assert error["details"] == {"required_scope": "admin", "key_scope": "read"}
        assert_error(c.get("/v1/keys"), 403, "forbidden")
    with api.client(api.admin_key) as c:
        assert c.get(TRADES).status_code == 200  # admin includes read
        keys = c.get("/v1/keys")
        assert keys.status_code == 200
        listed = keys.json()["data"]
        assert {"reader", "admin"} <= {k["name"] for k in listed}
        assert all("secret" not in k and "hash" not in str(k) for k in listed)
        assert all(api.read_key not in str(k) for k in listed)
        dlq = c.get("/v1/dlq", params={"limit": 5})
        assert dlq.status_code == 200, dlq.text
        # The session broker is shared by the worker's modules, so other tests' letters may be listed: the
        # claim here is the admin scope's access (and the limit), not an empty dead-letter queue.
        letters = dlq.json()["data"]
        assert isinstance(letters, list) and len(letters) <= 5


def test_keys_are_stored_hashed(api: Api) -> None:
    """The key store never holds a key or its secret in clear."""
    db = api.settings.data_dir / "api_keys.db"
    raw = db.read_bytes()
    for key in (api.read_key, api.admin_key):
        assert key.encode() not in raw
        assert key.split("_", 2)[2].encode() not in raw


def test_public_endpoints_need_no_key(api: Api) -> None:
    with api.client() as c:
        assert c.get("/health").json() == {"status": "ok"}
        ready = c.get("/ready")
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["checks"]) == {"catalog", "engine", "broker"}
        assert all(check["ok"] for check in ready.json()["checks"].values())
        c.get(TRADES, headers={"X-API-Key": api.read_key})
        metrics = c.get("/metrics").text
        assert 'k2_api_requests_total{method="GET",route="/v1/trades",status="200"}' in metrics
        assert "k2_api_request_seconds_bucket" in metrics


def test_error_model_for_framework_errors(api: Api) -> None:
    with api.client(api.read_key) as c:
        assert_error(c.get("/v1/nope"), 404, "not_found")
        assert_error(c.post("/v1/trades"), 405, "method_not_allowed")
        error = assert_error(c.get("/v1/spread", params={"start": "ten"}), 422, "invalid_parameter")
        params = {e["parameter"] for e in error["details"]["errors"]}  # type: ignore[index]
        assert params == {"symbol", "start", "end"}
        assert "symbol" in str(error["message"]) and "start" in str(error["message"])
        assert_error(
            c.get("/v1/trades", params={"symbol": "NOPE", "include_recent": "false"}), 404, "unknown_symbol"
        )
        assert_error(
            c.get("/v1/trades?symbol=BTCUSDT", headers={"Accept": "image/png"}), 406, "not_acceptable"
        )
        assert_error(
            c.get("/v1/bars", params={"symbol": "BTCUSDT", "interval": "7x", "include_recent": "false"}),
            400,
            "invalid_range",
        )
        assert_error(
            c.get("/v1/trades", params={"symbol": "BTCUSDT", "start": "2024-08-08T00:00:00"}),
            400,
            "invalid_time",
        )


def test_request_id_echoed_or_generated(api: Api) -> None:
    with api.client(api.read_key) as c:
        assert c.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
        generated = c.get("/health", headers={"X-Request-ID": "bad id with spaces"}).headers["x-request-id"]
        assert generated != "bad id with spaces" and len(generated) == 16
        assert c.get("/v1/nope").headers["x-request-id"]


def test_dlq_lists_real_dead_letters(api: Api, unique: str) -> None:
    """A dead letter produced to a real DLQ topic is listed (admin only) with reason and original bytes."""
    import base64

    from confluent_kafka import Producer

    from k2.bus.dlq import dlq_headers
    from k2.bus.topics import ensure_topics

    topic = f"market.crypto.trades.api{unique}.dlq"
    ensure_topics(api.settings, [topic], partitions=1)
    producer = Producer(api.settings.kafka_client_config())
    original = b"\x00\x00\x00\x00\x07not avro at all"
    producer.produce(
        topic,
        key=b"BTCUSDT",
        value=original,
        headers=dlq_headers("avro_decode", "expected an Avro body", topic[:-4], 0, 41),
    )
    assert producer.flush(10) == 0
    with api.client(api.admin_key) as c:
        response = c.get("/v1/dlq", params={"topic": topic})
        assert response.status_code == 200, response.text
        letters = response.json()["data"]
        assert len(letters) == 1
        letter = letters[0]
        assert (letter["reason"], letter["source_topic"], letter["source_offset"]) == (
            "avro_decode",
            topic[:-4],
            41,
        )
        assert base64.b64decode(letter["value_base64"]) == original
        assert base64.b64decode(letter["key_base64"]) == b"BTCUSDT"
        assert_error(c.get("/v1/dlq", params={"topic": f"nope{unique}.dlq"}), 404, "unknown_topic")
    with api.client(api.read_key) as c:
        assert_error(c.get("/v1/dlq", params={"topic": topic}), 403, "forbidden")
