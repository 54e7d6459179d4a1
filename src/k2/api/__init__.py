"""K2's REST API (FastAPI): ``k2.api.app.create_app(settings)``, served by ``k2 api serve``.

Modules: ``app`` (routes, auth, limits), ``keys`` (hashed API keys, ``k2 keys``), ``keycache`` (verified keys
remembered per process for 2 s), ``ratelimit`` (per-key token buckets, leased per process), ``cursor``
(signed pagination cursors), ``formats`` (JSON/CSV/Parquet/Arrow streaming), ``errors`` (the one error
model), ``middleware`` (request ids, body limit, metrics), ``models`` (OpenAPI schemas). Usage: ``docs/api.md``.
"""
