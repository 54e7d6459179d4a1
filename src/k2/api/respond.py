"""Building data responses: the envelope (row count, snapshot ids, cursor, hybrid-read truncation) in the JSON
body and in headers, the body streamed in the negotiated format, and the OpenAPI response declarations.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases at definition time.

import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
from fastapi import Request
from fastapi.responses import StreamingResponse

from k2.api.admission import AdmittedStreamingResponse
from k2.api.errors import error_responses
from k2.api.formats import MEDIA_TYPES, Format, Rows, encode

DATA_CONTENT: dict[str, Any] = {
    MEDIA_TYPES["csv"]: {
        "schema": {"type": "string"},
        "example": '"exchange","symbol","trade_id","price"\nbinance,BTCUSDT,3721405481,61837.63000000\n',
    },
    MEDIA_TYPES["parquet"]: {"schema": {"type": "string", "format": "binary"}},
    MEDIA_TYPES["arrow"]: {"schema": {"type": "string", "format": "binary"}},
}
DATA_HEADERS: dict[str, Any] = {
    "X-Row-Count": {"description": "Rows in the body.", "schema": {"type": "integer"}},
    "X-Snapshot-Ids": {
        "description": "JSON object: Iceberg snapshot id read per table.",
        "schema": {"type": "string"},
    },
    "X-Recent-Truncated": {
        "description": "Endpoints that can read rows still in Kafka: true when that read stopped early (partial answer).",
        "schema": {"type": "string", "enum": ["true", "false"]},
    },
    "X-Recent-Truncated-Reason": {
        "description": "max_rows or time_bound (only when truncated).",
        "schema": {"type": "string"},
    },
    "X-Recent-Stopped-At": {
        "description": "JSON: per topic and partition, the first offset not read (only when truncated).",
        "schema": {"type": "string"},
    },
    "X-Unknown-Symbols": {
        "description": "Endpoints taking several symbols: JSON list of the requested symbols the table does not hold "
        "(for the exchange asked, at the snapshot read, nor among the Kafka rows read); absent when none.",
        "schema": {"type": "string"},
    },
    "X-Partial": {
        "description": "Aggregates: true when computed over a truncated read.",
        "schema": {"type": "string"},
    },
}
PAGED_HEADERS: dict[str, Any] = {
    **DATA_HEADERS,
    "X-Next-Cursor": {
        "description": "Cursor of the next page (absent on the last page).",
        "schema": {"type": "string"},
    },
    "Link": {
        "description": 'URL of the next page with rel="next" (absent on the last page).',
        "schema": {"type": "string"},
    },
}
DATA_ERRORS = (400, 401, 403, 404, 406, 413, 422, 429, 500, 503, 504)


def data_responses(paged: bool = False) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": "Rows, in the requested format (JSON shown; CSV, Parquet, Arrow IPC stream alike).",
            "content": DATA_CONTENT,
            "headers": PAGED_HEADERS if paged else DATA_HEADERS,
        },
        **error_responses(*DATA_ERRORS),
    }


# -- response building -------------------------------------------------------------------------------


def as_table(result: Any) -> pa.Table:
    table = getattr(result, "table", result)
    if not isinstance(table, pa.Table):
        table = pa.table(table)
    return table


def recent_fields(result: Any, *, aggregate: bool = False) -> dict[str, Any]:
    """Envelope fields about the Kafka part of a hybrid query: why it was skipped, whether it was truncated.

    ``aggregate``: the rows are computed over the read (bars, VWAP, TWAP), so a truncated read makes the
    answer partial (``partial: true``), never silently.
    """
    fields: dict[str, Any] = {}
    error = getattr(result, "recent_error", None)
    if error:
        fields["recent_error"] = str(error)
    truncated = bool(getattr(result, "recent_truncated", False))
    fields["recent_truncated"] = truncated
    if truncated:
        fields["recent_truncated_reason"] = getattr(result, "recent_truncated_reason", None)
        fields["recent_stopped_at"] = dict(getattr(result, "recent_stopped_at", None) or {})
        if aggregate:
            fields["partial"] = True
    return fields


def symbol_fields(result: Any) -> dict[str, Any]:
    """``unknown_symbols``: the requested symbols the answer holds nothing of because the table does not hold them."""
    return {"unknown_symbols": list(getattr(result, "unknown_symbols", ()) or ())}


def recent_headers(extra: Mapping[str, Any]) -> dict[str, str]:
    """The hybrid-read fields as headers, so CSV, Parquet and Arrow answers say what JSON bodies say."""
    headers: dict[str, str] = {}
    if "recent_truncated" in extra:
        headers["X-Recent-Truncated"] = "true" if extra["recent_truncated"] else "false"
    if extra.get("recent_truncated_reason"):
        headers["X-Recent-Truncated-Reason"] = str(extra["recent_truncated_reason"])
    if extra.get("recent_stopped_at") is not None and extra.get("recent_truncated"):
        headers["X-Recent-Stopped-At"] = json.dumps(
            extra["recent_stopped_at"], separators=(",", ":"), sort_keys=True
        )
    if extra.get("partial"):
        headers["X-Partial"] = "true"
    if extra.get("recent_error"):
        headers["X-Recent-Error"] = str(extra["recent_error"]).encode("ascii", "replace").decode()[:500]
    if extra.get("unknown_symbols"):  # JSON (ASCII-escaped): a symbol may hold any printable character
        headers["X-Unknown-Symbols"] = json.dumps(list(extra["unknown_symbols"]), separators=(",", ":"))
    if extra.get("recent_included") is not None:
        headers["X-Recent-Included"] = "true" if extra["recent_included"] else "false"
    return headers


def snapshot_ids_of(result: Any) -> dict[str, int | None]:
    ids = getattr(result, "snapshot_ids", None) or {}
    return {str(k): (None if v is None else int(v)) for k, v in dict(ids).items()}


def respond(
    request: Request,
    fmt: Format,
    table: Rows,
    snapshot_ids: Mapping[str, int | None],
    *,
    next_cursor: str | None = None,
    paged: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> StreamingResponse:
    envelope: dict[str, Any] = {"row_count": table.num_rows, "snapshot_ids": dict(snapshot_ids)}
    if paged:
        envelope["next_cursor"] = next_cursor
    envelope.update(extra or {})
    headers = {
        "X-Row-Count": str(table.num_rows),
        "X-Snapshot-Ids": json.dumps(dict(snapshot_ids), separators=(",", ":")),
    }
    headers.update(recent_headers(extra or {}))
    if next_cursor is not None:
        headers["X-Next-Cursor"] = next_cursor
        headers["Link"] = f'<{request.url.include_query_params(cursor=next_cursor)}>; rel="next"'
    return AdmittedStreamingResponse(
        encode(table, fmt, envelope), media_type=MEDIA_TYPES[fmt], headers=headers
    )
