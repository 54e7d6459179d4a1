"""Operations routes: ``/health`` (liveness), ``/ready`` (catalog, engine, broker), ``/metrics`` (Prometheus)."""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases at definition time.

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from k2.api import models
from k2.api.errors import error_body, error_responses
from k2.api.respond import as_table
from k2.api.state import ApiState, limit_anonymous, request_id
from k2.config import Settings
from k2.query.cancel import CancelScope

log = logging.getLogger("k2.api")


def router(state: ApiState) -> APIRouter:
    """The ops routes."""
    settings = state.settings
    router = APIRouter()

    # -- health --------------------------------------------------------------------------------------

    @router.get(
        "/health",
        tags=["ops"],
        response_model=models.Health,
        summary="Liveness",
        responses=error_responses(500),
    )
    async def health() -> dict[str, str]:
        """Liveness: the process serves requests (no dependency is checked)."""
        return {"status": "ok"}

    @router.get(
        "/ready",
        tags=["ops"],
        response_model=models.Ready,
        summary="Readiness (catalog, engine, broker)",
        responses=error_responses(500, 503),
    )
    async def ready(request: Request) -> Any:
        """Readiness: the Iceberg catalog answers, the query engine runs a query, the Kafka broker answers.

        Rate-limited per client address (it needs no key and does real work); failures name the failing
        dependency and the error type only, never an address, path or URL (the detail goes to the API log).
        """
        limit_anonymous(state, request)
        checks = await asyncio.gather(
            _check(state, "catalog", lambda: _check_catalog(settings)),
            _check(state, "engine", lambda: _check_engine(state)),
            _check(state, "broker", lambda: _check_broker(settings)),
        )
        result = {
            name: {"ok": ok, "detail": detail, "seconds": round(sec, 4)} for name, ok, detail, sec in checks
        }
        if all(c["ok"] for c in result.values()):
            return {"status": "ready", "checks": result}
        failed = sorted(n for n, c in result.items() if not c["ok"])
        return JSONResponse(
            status_code=503,
            content=error_body(
                "not_ready",
                f"expected catalog, engine and broker to answer, found {failed} failing",
                {"checks": result},
                request_id(request),
            ),
        )

    @router.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {
                "content": {"text/plain": {"schema": {"type": "string"}}},
                "description": "Prometheus text format.",
            },
            **error_responses(500),
        },
    )
    async def metrics_endpoint() -> Response:
        """Every K2 metric of this process, in the Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        return Response(
            generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST.split(";")[0] + "; charset=utf-8"
        )

    return router


async def _check(state: ApiState, name: str, fn: Callable[[], str]) -> tuple[str, bool, str, float]:
    started = time.perf_counter()
    scope = CancelScope(timeout=5.0)  # a stuck engine check is interrupted, not left running

    def call() -> str:
        with scope:
            return fn()

    try:
        detail = await asyncio.wait_for(
            asyncio.get_running_loop().run_in_executor(state.executor, call), timeout=5.0
        )
        return name, True, detail, time.perf_counter() - started
    except Exception as exc:  # a failing dependency is the check's answer, not a server error
        # The message may name hosts, ports, paths or URLs: it goes to the log, the response names the type only.
        log.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
        return name, False, f"{type(exc).__name__} (details in the API log)", time.perf_counter() - started


def _check_catalog(settings: Settings) -> str:
    from k2.lake.catalog import load_catalog

    namespaces = load_catalog(settings).list_namespaces()
    return f"{len(namespaces)} namespaces"


def _check_engine(state: ApiState) -> str:
    result = state.client().sql("SELECT 42 AS answer")
    value = as_table(result)["answer"][0].as_py()
    if value != 42:
        raise RuntimeError(f"expected SELECT 42 to return 42, found {value!r}")
    return "query ok"


def _check_broker(settings: Settings) -> str:
    from confluent_kafka.admin import AdminClient

    metadata = AdminClient(settings.kafka_client_config()).list_topics(timeout=3.0)
    return f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topics"
