"""The key of a /v1 request with a body is checked before the body is parsed (real uvicorn): a caller
without a valid key learns 401, never what is wrong with its body; the rest of the answers are unchanged."""

from __future__ import annotations

from tests.api.conftest import Api
from tests.api.helpers import assert_error


def test_body_routes_refuse_a_missing_or_bad_key_before_reading_the_body(api: Api) -> None:
    broken = {"content": b"{not json", "headers": {"Content-Type": "application/json"}}
    with api.client() as c:
        for path in ("/v1/sql", "/v1/dlq/replay"):
            error = assert_error(c.post(path, **broken), 401, "unauthorized")  # type: ignore[arg-type]
            assert "X-API-Key" in str(error["message"])
            assert_error(c.post(path, json={"nonsense": 1}), 401, "unauthorized")
            bad = {"Content-Type": "application/json", "Authorization": "Bearer k2_nope"}
            assert_error(c.post(path, content=b"{", headers=bad), 401, "unauthorized")
        assert_error(c.post("/v1/trades"), 405, "method_not_allowed")  # no such route: unchanged
        assert_error(c.post("/v1/nope", content=b"{"), 404, "not_found")
    with api.client(api.read_key) as c:
        parsed = c.post("/v1/sql", **broken)  # type: ignore[arg-type]
        assert parsed.status_code in (400, 422) and parsed.json()["error"]["code"] != "unauthorized"
        ok = c.post("/v1/sql", json={"sql": "SELECT count(*) AS n FROM trades"})
        assert ok.status_code == 200, ok.text
        assert_error(c.post("/v1/dlq/replay", json={"topic": "x.dlq", "positions": []}), 403, "forbidden")
