"""Structured logging for every K2 process: structlog, configured from ``log_level`` and ``log_json``.

:func:`configure_logging` is called once at the start of every ``k2`` command (the CLI's main callback)
and by the services K2 starts. With ``K2_LOG_JSON=true`` each event is one JSON object per line with
``timestamp`` (UTC, ISO 8601), ``level``, ``logger`` and ``event`` plus the event's fields; otherwise a
readable console line. Both structlog loggers and the standard library's ``logging`` (pyiceberg,
uvicorn...) go through the same renderer, to stderr, filtered at ``K2_LOG_LEVEL``.

Correlation ids: the producer stamps every message it sends with a ``k2.cid`` Kafka header (one id per
producer session, :func:`new_correlation_id`); the landing consumer logs the ids it commits and stores
them in the Iceberg snapshot summary under ``k2.cids``, so one id follows a message from the source's
log line, through Kafka and landing, to the snapshot that holds it. :func:`bind_correlation_id` adds an
id to every log line of the current context.

Example:
    >>> import io
    >>> from k2.config import Settings
    >>> out = io.StringIO()
    >>> configure_logging(Settings(log_json=True, log_level="INFO"), stream=out)
    >>> get_logger("k2.example").info("landed", rows=3)
    >>> import json; json.loads(out.getvalue())["event"]
    'landed'
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import structlog

from k2.config import Settings

CID_HEADER = "k2.cid"
CIDS_SUMMARY_KEY = "k2.cids"
# Chatty INFO loggers of libraries (one line per HTTP request): shown only at DEBUG.
QUIET_LOGGERS = ("httpx", "httpx2", "httpcore", "urllib3", "botocore", "s3fs", "aiobotocore")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time (test runners swap and close it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def _processors(json_lines: bool) -> list[Any]:
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if json_lines:  # the console renderer formats exceptions itself
        processors.append(structlog.processors.format_exc_info)
    return processors


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to ``stream`` (stderr) at ``settings.log_level``.

    Example:
        >>> from k2.config import Settings
        >>> configure_logging(Settings(log_level="WARNING"))
        >>> logging.getLogger().level == logging.WARNING
        True
    """
    level = logging.getLevelName(settings.log_level)
    shared = _processors(settings.log_json)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_k2", False):
            root.removeHandler(old)
    handler._k2 = True  # type: ignore[attr-defined]  # marks K2's own handler for reconfiguration
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level if settings.log_level == "DEBUG" else logging.WARNING)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A structlog logger named ``name`` (e.g. ``k2.landing``).

    Example:
        >>> get_logger("k2.example") is not None
        True
    """
    return structlog.get_logger(name)


def new_correlation_id() -> str:
    """A fresh correlation id (16 hex characters) for one producer session or batch.

    Example:
        >>> len(new_correlation_id())
        16
    """
    return uuid.uuid4().hex[:16]


def bind_correlation_id(cid: str) -> None:
    """Add ``cid=<cid>`` to every log line of the current context (thread / task).

    Example:
        >>> bind_correlation_id("abc")
        >>> structlog.contextvars.get_contextvars()["cid"]
        'abc'
        >>> structlog.contextvars.unbind_contextvars("cid")
    """
    structlog.contextvars.bind_contextvars(cid=cid)


def correlation_ids(
    headers: Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None,
) -> list[str]:
    """The ``k2.cid`` values among a Kafka message's headers (as ``Message.headers()`` returns them).

    Example:
        >>> correlation_ids([("k2.cid", b"abc"), ("other", b"x")])
        ['abc']
    """
    if not headers:
        return []
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return [
        value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        for key, value in pairs
        if key == CID_HEADER and value is not None
    ]
