"""``POST /v1/dlq/replay`` (admin scope): re-publish chosen dead letters to their source topics.

The same operation as ``k2 dlq replay`` (:func:`k2.landing.dlq.replay_dead_letters`: original key, value
and headers, plus ``k2.replayed_from``), for the dead letters named by (DLQ topic, partition, offset).
All or nothing: when one named position holds no dead letter, nothing is replayed (404). Hazards: the DLQ
is a log, so replayed letters stay in it and may be replayed again; landing drops the duplicates by
exchange id, but a letter that fails again is dead-lettered again. Reading the topic is bounded by the
request timeout.

Example::

    curl -H "X-API-Key: $ADMIN" -H 'Content-Type: application/json' \\
         -d '{"topic": "market.crypto.trades.binance.dlq", "positions": [{"partition": 0, "offset": 3}]}' \\
         http://127.0.0.1:8000/v1/dlq/replay
"""

# No `from __future__ import annotations`: FastAPI must see the body model at definition time.

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from k2.api.errors import APIError, error_responses
from k2.config import Settings

Runner = Callable[[Callable[[], Any]], Awaitable[Any]]


class DlqPosition(BaseModel):
    partition: int = Field(ge=0, le=100_000, description="Partition of the DLQ topic.")
    offset: int = Field(ge=0, le=2**62, description="Offset of the dead letter in that partition.")


class DlqReplayRequest(BaseModel):
    """Body of ``POST /v1/dlq/replay``."""

    topic: str = Field(
        min_length=5,
        max_length=249,
        pattern=r"^[A-Za-z0-9._-]+\.dlq$",
        examples=["market.crypto.trades.binance.dlq"],
    )
    positions: list[DlqPosition] = Field(min_length=1, max_length=1000, description="Dead letters to replay.")


class DlqReplayResponse(BaseModel):
    replayed: int = Field(
        description="Dead letters re-published to their source topics (they now pass the landing's checks)."
    )
    still_invalid: int = Field(
        description="Dead letters left in the DLQ because they still fail; see `reasons`."
    )
    already_replayed: int = Field(description="Dead letters skipped because an earlier replay moved them.")
    reasons: dict[str, int] = Field(
        description="Why the letters left in the DLQ still fail, counted by reason."
    )
    source_topics: list[str] = Field(description="Topics the replayed letters went back to.")


def install_dlq_replay(app: FastAPI, settings: Settings, run: Runner, admin_auth: Sequence[Any]) -> None:
    """Add ``POST /v1/dlq/replay`` to ``app`` (see the module docstring)."""

    @app.post(
        "/v1/dlq/replay",
        tags=["admin"],
        dependencies=list(admin_auth),
        response_model=DlqReplayResponse,
        summary="Replay dead letters to their source topics (admin scope)",
        responses=error_responses(401, 403, 404, 413, 422, 429, 500, 503, 504),
    )
    async def dlq_replay(body: DlqReplayRequest) -> Any:
        """Re-publish the named dead letters (original key, value, headers) to their source topics."""

        def work() -> dict[str, Any]:
            from k2.landing.dlq import read_dead_letters, replay_dead_letters

            budget = max(1.0, min(10.0, settings.api_request_timeout_seconds - 1.0))
            try:
                letters = read_dead_letters(settings, body.topic, idle_seconds=0.5, max_seconds=budget)
            except KeyError as exc:
                raise APIError(404, "unknown_topic", str(exc.args[0]), {"parameter": "topic"}) from None
            wanted = {(p.partition, p.offset) for p in body.positions}
            chosen = [d for d in letters if (d.dlq_partition, d.dlq_offset) in wanted]
            missing = sorted(wanted - {(d.dlq_partition, d.dlq_offset) for d in chosen})
            if missing:
                raise APIError(
                    404,
                    "unknown_dead_letter",
                    f"expected a dead letter at each (partition, offset) of {body.topic}, found none at {missing[:10]}; "
                    "nothing was replayed"
                    + (f" (the read was {letters.partial_message()})" if letters.stopped else ""),
                    {"missing": [list(m) for m in missing[:100]], "partial": bool(letters.stopped)},
                )
            report = replay_dead_letters(settings, chosen)
            return {
                "replayed": len(report.replayed),
                "still_invalid": len(report.still_invalid),
                "already_replayed": report.already_replayed,
                "reasons": report.reasons(),
                "source_topics": sorted({d.source_topic for d in report.replayed}),
            }

        return await run(work)
