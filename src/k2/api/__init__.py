"""K2's REST API (FastAPI): ``k2.api.app.create_app(settings)``, served by ``k2 api serve``.

Modules: ``app`` (routes, auth, limits), ``keys`` (hashed API keys, ``k2 keys``), ``ratelimit`` (per-key
token buckets), ``cursor`` (signed pagination cursors), ``formats`` (JSON/CSV/Parquet/Arrow streaming),
``errors`` (the one error model), ``middleware`` (request ids, body limit, metrics), ``models``
(OpenAPI schemas). Usage: ``docs/api.md``.
"""
