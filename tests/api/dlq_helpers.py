"""The environment the ``k2 dlq`` CLI tests run the CLI with (settings passed as ``K2_*`` variables)."""

from __future__ import annotations

from typing import Any

from k2.config import Settings


def dlq_env(settings: Settings) -> dict[str, Any]:
    return {
        "K2_DATA_DIR": str(settings.data_dir),
        "K2_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "K2_SCHEMA_REGISTRY_URL": settings.registry_url,
        "COLUMNS": "300",
    }
