"""The API routes the console added: POST /v1/sql and the static files (no browser needed)."""

from __future__ import annotations

import io

import httpx
import pyarrow.parquet as pq

from tests.console.conftest import Console


def test_sql_binds_parameters_reports_snapshots_and_speaks_every_format(demo_console: Console) -> None:
    with httpx.Client(
        base_url=demo_console.url, headers={"X-API-Key": demo_console.read_key}, timeout=60
    ) as c:
        query = {
            "sql": "SELECT symbol, count(*) AS n FROM trades WHERE symbol = ? GROUP BY symbol",
            "params": ["BTCUSDT"],
        }
        body = c.post("/v1/sql", json=query).json()
        assert body["data"] == [{"symbol": "BTCUSDT", "n": 19904}]
        assert body["columns"] == [{"name": "symbol", "type": "string"}, {"name": "n", "type": "int64"}]
        assert isinstance(body["snapshot_ids"]["trades"], int) and body["query_seconds"] >= 0
        # A hostile value is a value, not SQL: it matches no row and runs nothing.
        hostile = {**query, "params": ["x'; DROP VIEW trades; --"]}
        assert c.post("/v1/sql", json=hostile).json()["data"] == []
        csv = c.post("/v1/sql", params={"format": "csv"}, json=query)
        assert (
            csv.text.splitlines() == ['"symbol","n"', '"BTCUSDT",19904'] and csv.headers["x-row-count"] == "1"
        )
        parquet = c.post("/v1/sql", params={"format": "parquet"}, json=query)
        assert pq.read_table(io.BytesIO(parquet.content)).to_pylist() == [{"symbol": "BTCUSDT", "n": 19904}]
        refused = c.post("/v1/sql", json={"sql": "COPY trades TO '/tmp/k2-console-x.csv'"})
        assert refused.status_code == 400
        assert (
            refused.json()["error"]["message"]
            == "expected one read-only SELECT (or WITH ... SELECT) statement, found COPY"
        )
        escape = c.post("/v1/sql", json={"sql": "SELECT * FROM read_csv('/etc/passwd')"})
        assert escape.status_code == 400 and escape.json()["error"]["code"] == "invalid_query"
        naive = c.post("/v1/sql", json={**query, "as_of": "2024-08-09T00:00:00"})
        assert naive.status_code == 400 and "with an offset" in naive.json()["error"]["message"]
    assert httpx.post(demo_console.url + "/v1/sql", json=query, timeout=30).status_code == 401


def test_console_and_docs_assets_are_served_locally(demo_console: Console) -> None:
    with httpx.Client(base_url=demo_console.url, timeout=60) as c:
        assert c.get("/console", follow_redirects=False).headers["location"] == "/console/"
        page = c.get("/console/")
        assert (
            page.status_code == 200 and "app.js" in page.text and "http" not in page.text.split("<body>")[0]
        )
        plotly = c.get("/console/vendor/plotly.min.js")
        assert (
            plotly.status_code == 200
            and len(plotly.content) > 1_000_000
            and b"plotly" in plotly.content[:2000].lower()
        )
        docs = c.get("/docs").text
        assert "/docs-assets/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
        assert c.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
        paths = c.get("/openapi.json").json()["paths"]
        assert "/v1/sql" in paths and "/v1/dlq/replay" in paths and "/console" not in paths
