"""Admin routes (admin scope): ``/v1/dlq`` (dead letters, read-only) and ``/v1/keys`` (key metadata)."""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases at definition time.

import base64
from typing import Annotated, Any

import pyarrow as pa
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from k2.api import models
from k2.api.auth import admin_auth
from k2.api.errors import APIError, error_responses
from k2.api.params import (
    TOPIC_PATTERN,
    Fmt,
    fmt_of,
)
from k2.api.respond import data_responses, respond
from k2.api.state import ApiState, run


def router(state: ApiState) -> APIRouter:
    """The admin routes."""
    settings = state.settings
    router = APIRouter()
    admin_auth_ = admin_auth(state)

    # -- admin -----------------------------------------------------------------------------------------

    @router.get(
        "/v1/dlq",
        tags=["admin"],
        dependencies=admin_auth_,
        response_model=models.DeadLettersResponse,
        responses=data_responses(),
        summary="Dead letters (read-only; admin scope)",
    )
    async def dlq(
        request: Request,
        topic: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=249,
                pattern=TOPIC_PATTERN,
                description="One DLQ topic (all when absent).",
                examples=["market.crypto.trades.binance.dlq"],
            ),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="Most dead letters returned.")] = 100,
        format: Fmt = None,
    ) -> Any:
        """Dead letters with reason, source position and original bytes (base64), oldest first per partition."""
        fmt = fmt_of(request, format)

        def work() -> StreamingResponse:
            from k2.landing.dlq import read_dead_letters

            budget = max(1.0, min(10.0, settings.api_request_timeout_seconds - 1.0))
            try:
                letters = read_dead_letters(
                    settings, topic, limit=limit, idle_seconds=0.5, max_seconds=budget
                )
            except KeyError as exc:
                raise APIError(404, "unknown_topic", str(exc.args[0]), {"parameter": "topic"}) from None
            stopped = list(getattr(letters, "stopped", []))
            extra: dict[str, Any] = {
                "partial": bool(stopped),
                "stopped_at": [
                    {"topic": x.topic, "partition": x.partition, "offset": x.next_offset, "end": x.end}
                    for x in stopped
                ],
            }
            if stopped:
                extra["partial_reason"] = letters.partial_message()
            return respond(request, fmt, _dead_letter_table(letters), {}, extra=extra)

        return await run(state, work, request)

    @router.get(
        "/v1/keys",
        tags=["admin"],
        dependencies=admin_auth_,
        response_model=models.KeysResponse,
        responses=error_responses(401, 403, 429, 500),
        summary="API keys (metadata only; admin scope)",
    )
    async def list_keys() -> Any:
        """Every API key's id, name, scope and state; secrets are never stored, so never shown."""
        infos = await run(state, state.keys.list_keys)
        return {
            "data": [
                {
                    "key_id": i.key_id,
                    "name": i.name,
                    "scope": i.scope,
                    "created_at": i.created_at,
                    "revoked_at": i.revoked_at,
                    "active": i.active,
                }
                for i in infos
            ]
        }

    return router


def _dead_letter_table(letters: list[Any]) -> pa.Table:
    def b64(value: bytes | None) -> str | None:
        return None if value is None else base64.b64encode(value).decode()

    return pa.table(
        {
            "dlq_topic": pa.array([d.dlq_topic for d in letters], pa.string()),
            "dlq_partition": pa.array([d.dlq_partition for d in letters], pa.int64()),
            "dlq_offset": pa.array([d.dlq_offset for d in letters], pa.int64()),
            "reason": pa.array([d.reason for d in letters], pa.string()),
            "detail": pa.array([d.detail for d in letters], pa.string()),
            "source_topic": pa.array([d.source_topic for d in letters], pa.string()),
            "source_partition": pa.array([d.source_partition for d in letters], pa.int64()),
            "source_offset": pa.array([d.source_offset for d in letters], pa.int64()),
            "source_timestamp": pa.array([d.source_timestamp for d in letters], pa.int64()),
            "dead_lettered_at": pa.array(
                [d.dead_lettered_ts if d.dead_lettered_ts > 0 else None for d in letters],
                pa.timestamp("us", tz="UTC"),
            ),
            "key_base64": pa.array([b64(d.key) for d in letters], pa.string()),
            "value_base64": pa.array([b64(d.value) for d in letters], pa.string()),
        }
    )
