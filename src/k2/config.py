"""K2 settings: one typed model, loaded from ``K2_*`` environment variables and an optional ``k2.toml``.

Precedence (highest first): explicit keyword arguments, environment variables, the TOML file named by
``K2_CONFIG_FILE`` (default ``./k2.toml`` when it exists), then the defaults below.

Every field carries a description and an ``example`` value; ``docs/configuration.md`` is generated from
this class (``k2 config docs``) and a test checks that each field loads from its environment variable and
that the document is current. A bad value fails at start-up with :class:`SettingsError` naming the key.

Example:
    >>> from k2.config import Settings
    >>> Settings(topic_partitions=8).topic_partitions
    8
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "K2_"

#: How long K2's HTTP servers (REST API, schema registry) keep an idle connection open. Longer than the
#: 5 s idle expiry of httpx's connection pool (the registry client's and ``k2.connect``'s): with equal
#: timeouts the server could close a pooled connection just as the client reused it ("Server disconnected
#: without sending a response"). The client drops an idle connection first, so it never sends on a closed one.
HTTP_KEEP_ALIVE_SECONDS = 75


class SettingsError(ValueError):
    """A configuration value is invalid; the message names the offending ``K2_*`` key."""


def _f(default: Any, description: str, example: Any, section: str) -> Any:
    return Field(default, description=description, json_schema_extra={"example": example, "section": section})


class Settings(BaseSettings):
    """All of K2's configuration. See ``docs/configuration.md`` for the generated reference."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )

    # -- general ---------------------------------------------------------------------------------
    data_dir: Path = _f(
        Path(".k2"),
        "Directory for K2's local state: catalog DB, warehouse, pid files, logs.",
        "/var/lib/k2",
        "general",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _f(
        "INFO", "Minimum log level.", "DEBUG", "general"
    )
    log_json: bool = _f(
        False, "Emit logs as JSON lines (one object per event) instead of console text.", True, "general"
    )

    # -- Kafka bus ---------------------------------------------------------------------------------
    kafka_bootstrap_servers: str | None = _f(
        None,
        "Kafka bootstrap servers. Unset: the local Tansu broker started by `k2 up` on 127.0.0.1:`broker_port`.",
        "b-1.msk.example:9092,b-2.msk.example:9092",
        "kafka",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = _f(
        "PLAINTEXT",
        "librdkafka security.protocol for production clusters (MSK, Confluent Cloud).",
        "SASL_SSL",
        "kafka",
    )
    kafka_sasl_mechanism: str | None = _f(
        None, "librdkafka sasl.mechanism (e.g. SCRAM-SHA-512, PLAIN).", "SCRAM-SHA-512", "kafka"
    )
    kafka_sasl_username: str | None = _f(None, "SASL username.", "k2", "kafka")
    kafka_sasl_password: SecretStr | None = _f(None, "SASL password.", "s3cret", "kafka")
    broker_port: int = _f(9092, "Port of the local Tansu broker started by `k2 up`.", 19092, "kafka")
    broker_storage: str = _f(
        "s3://k2-broker/",
        "Tansu storage URL for the local broker: `s3://BUCKET/` (durable; on the local SeaweedFS `k2 up` starts "
        "on `storage_port` unless `s3_endpoint` is set) or `memory://tansu/` (everything is lost on `k2 down`, "
        "a broker restart or crash; `k2 up` warns).",
        "memory://tansu/",
        "kafka",
    )
    storage_port: int = _f(
        8333,
        "S3 port of the local SeaweedFS (`weed mini`) that `k2 up` starts for the broker's `s3://` storage (its gRPC "
        "port is this + 10000; its other listeners take free ports at each start), all on 127.0.0.1.",
        18333,
        "kafka",
    )
    down_drain_seconds: float = _f(
        30.0,
        "How long `k2 down` waits for the landing consumer to land every message (lag 0 on every partition, "
        "DLQ flushed) before stopping; what is left is printed. `k2 down --force` skips the wait.",
        120.0,
        "kafka",
    )
    topic_partitions: int = _f(4, "Partitions for topics K2 creates.", 8, "kafka")
    topic_replication_factor: int = _f(1, "Replication factor for topics K2 creates.", 3, "kafka")
    producer_compression: Literal["lz4", "zstd", "none"] = _f(
        "lz4", "Producer compression codec.", "zstd", "kafka"
    )
    producer_linger_ms: int = _f(20, "Producer linger.ms (batching delay).", 5, "kafka")
    producer_queue_max_messages: int = _f(
        200_000,
        "Producer local queue bound (messages); a full queue blocks the caller, never drops.",
        50_000,
        "kafka",
    )
    producer_queue_max_kbytes: int = _f(262_144, "Producer local queue bound (KiB).", 65_536, "kafka")
    producer_idempotence: Literal["auto", "on", "off"] = _f(
        "auto",
        "Idempotent producer. `auto`: off against Tansu (its cluster id, or the local broker when unreachable), "
        "on otherwise. Tansu 0.6 acknowledges retried idempotent batches after a restart without writing them "
        "(silent loss); off means one request in flight (order kept) and duplicates on retry, which the landing drops.",
        "on",
        "kafka",
    )
    producer_delivery_timeout_seconds: float = _f(
        120.0,
        "Longest time a producer may go without an acknowledgement while messages wait; then imports and streams "
        "stop with a delivery error (non-zero exit).",
        30.0,
        "kafka",
    )
    producer_stall_seconds: float = _f(
        10.0,
        "A producer with waiting messages and no acknowledgement for this long is recreated and re-sends them "
        "(recovers from a restarted broker that no longer knows its producer id).",
        5.0,
        "kafka",
    )
    consumer_group: str = _f(
        "k2-landing", "Consumer group of the landing consumers.", "k2-landing-prod", "kafka"
    )
    consumer_session_timeout_ms: int | None = _f(
        None,
        "Consumer session.timeout.ms. Unset: 2,000 with the embedded Tansu broker (no "
        "K2_KAFKA_BOOTSTRAP_SERVERS; Tansu's group join takes half of this, at least 1 s, and every landing "
        "start or rebalance waits for a join, so 2 s keeps a fresh stack's first rows queryable within ~3 s); "
        "10,000 with a configured broker (Kafka, Redpanda and MSK refuse less than their "
        "group.min.session.timeout.ms, 6,000 by default). Heartbeats are sent every fifth of it by librdkafka's "
        "own thread; raise it on a starved host.",
        6_000,
        "kafka",
    )
    consumer_fetch_max_bytes: int = _f(
        16_777_216, "Consumer fetch.max.bytes and queued.max.messages.kbytes*1024 bound.", 8_388_608, "kafka"
    )

    # -- schema registry ---------------------------------------------------------------------------
    schema_registry_url: str | None = _f(
        None,
        "URL of a Confluent-compatible schema registry. Unset: K2's own registry at 127.0.0.1:`registry_port`.",
        "https://registry.example:8081",
        "registry",
    )
    registry_port: int = _f(8081, "Port of K2's local schema registry started by `k2 up`.", 18081, "registry")
    registry_database_url: str | None = _f(
        None,
        "SQLAlchemy URL where K2's registry stores schemas. Unset: SQLite file under `data_dir`.",
        "postgresql+psycopg2://k2@127.0.0.1:5432/k2",
        "registry",
    )
    registry_default_compatibility: Literal[
        "NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"
    ] = _f("BACKWARD", "Global compatibility level of K2's registry.", "FULL", "registry")

    # -- Iceberg lake ------------------------------------------------------------------------------
    catalog_type: Literal["sql", "rest"] = _f(
        "sql", "Iceberg catalog kind: `sql` (SQLite/PostgreSQL) or `rest`.", "rest", "lake"
    )
    catalog_name: str = _f("k2", "Iceberg catalog name.", "prod", "lake")
    catalog_uri: str | None = _f(
        None,
        "Catalog URI: a SQLAlchemy URL for `sql` (unset: SQLite under `data_dir`), the HTTP URL for `rest`.",
        "postgresql+psycopg2://k2@127.0.0.1:5432/k2",
        "lake",
    )
    catalog_credential: SecretStr | None = _f(
        None, "REST catalog OAuth2 credential `client_id:secret`.", "key:secret", "lake"
    )
    catalog_token: SecretStr | None = _f(None, "REST catalog bearer token.", "tok", "lake")
    catalog_warehouse_name: str | None = _f(
        None, "REST catalog `warehouse` property (e.g. an S3 Tables bucket name).", "k2-tables", "lake"
    )
    catalog_properties: str | None = _f(
        None,
        "Extra pyiceberg catalog properties as a JSON object of strings, e.g. SigV4 signing for AWS Glue's or "
        "S3 Tables' REST endpoint (`rest.sigv4-enabled`, `rest.signing-name`, `rest.signing-region`).",
        '{"rest.sigv4-enabled": "true", "rest.signing-name": "glue", "rest.signing-region": "eu-west-1"}',
        "lake",
    )
    warehouse: str | None = _f(
        None,
        "Warehouse location: `file:///path` or `s3://bucket/prefix`. Unset: `data_dir`/warehouse.",
        "s3://k2-lake/warehouse",
        "lake",
    )
    s3_endpoint: str | None = _f(None, "S3 endpoint URL (unset: AWS).", "http://127.0.0.1:8333", "lake")
    s3_access_key_id: str | None = _f(None, "S3 access key id.", "AKIA...", "lake")
    s3_secret_access_key: SecretStr | None = _f(None, "S3 secret access key.", "secret", "lake")
    s3_region: str = _f("us-east-1", "S3 region.", "eu-west-1", "lake")
    symbol_buckets: int = _f(16, "Number of bucket(symbol) partitions of the market data tables.", 32, "lake")
    target_file_size_bytes: int = _f(
        134_217_728, "Target Parquet data-file size for writes and compaction.", 268_435_456, "lake"
    )

    # -- landing -----------------------------------------------------------------------------------
    landing_commit_rows: int = _f(
        200_000, "Commit to Iceberg after this many buffered rows.", 50_000, "landing"
    )
    landing_commit_interval_seconds: float = _f(
        5.0,
        "Commit to Iceberg at least this often when rows are buffered (at most once per interval unless "
        "landing_commit_rows or the memory bound is reached first; the first rows after start-up commit after 0.5 s).",
        1.0,
        "landing",
    )
    landing_max_buffered_bytes: int = _f(
        536_870_912,
        "Memory bound of the landing's buffer: commit (and pause partitions) when the buffered messages' estimated "
        "memory (value bytes + ~2 KiB per message for its Message object, decoded row and Parquet write) reaches "
        "this. Peak RSS stays within the RSS after the first commit + this + 2 x consumer_fetch_max_bytes + 64 MiB. "
        "The default keeps 200,000-row commits.",
        268_435_456,
        "landing",
    )
    landing_on_offset_reset: Literal["restart", "fail"] = _f(
        "restart",
        "When the broker's log is behind the offsets stored in Iceberg (reset/recreated topic): `restart` "
        "from the log start with dedup, or `fail` with an error.",
        "fail",
        "landing",
    )
    landing_max_future_seconds: float = _f(
        3_600.0,
        "Dead-letter messages whose exchange time is more than this ahead of the landing clock "
        "(exchange times before 1990-01-01 are always rejected).",
        300.0,
        "landing",
    )
    landing_sequential_exchanges: str = _f(
        "binance,binance-futures,coinbase",
        "Comma-separated exchanges whose trade ids are contiguous per symbol: gaps in them are recorded in quality.gaps.",
        "binance,coinbase",
        "landing",
    )
    landing_max_id_jump: int = _f(
        100_000_000,
        "Dead-letter (reason `id_out_of_window`) a trade/update id more than this above its (exchange, symbol) "
        "high-water mark (or, for a pair with nothing landed yet, this far from the median id of its batch): "
        "one absurd id must not open a giant gap or make every later id look late.",
        10_000_000,
        "landing",
    )
    landing_hwm_cache_size: int = _f(
        100_000,
        "Most (exchange, symbol) high-water marks kept in memory (LRU; misses are recovered from the table).",
        10_000,
        "landing",
    )
    landing_verify_timeout_seconds: float = _f(
        5.0,
        "How long to wait for the last landed message when checking a partition's log on assignment.",
        2.0,
        "landing",
    )
    landing_metrics_port: int = _f(
        9464, "Port of the landing service's /metrics endpoint (0 disables).", 0, "landing"
    )

    # -- table maintenance -------------------------------------------------------------------------
    eod_tags: bool = _f(
        True,
        "The landing service tags each table's last snapshot of every ended UTC day as `eod-YYYY-MM-DD` (kept by maintenance).",
        False,
        "maintenance",
    )
    eod_tag_retain_days: float | None = _f(
        None,
        "Days an end-of-day tag is kept (unset: forever); `k2 maintain` drops older ones.",
        400.0,
        "maintenance",
    )
    eod_tag_check_seconds: float = _f(
        300.0,
        "How often the landing service checks for days that ended without their end-of-day tag.",
        60.0,
        "maintenance",
    )
    maintenance_interval_seconds: float = _f(
        0.0,
        "Run table maintenance (`k2 maintain`) inside the landing service this often (0 = off).",
        3_600.0,
        "maintenance",
    )
    maintenance_small_file_ratio: float = _f(
        0.5,
        "Data files smaller than this fraction of `target_file_size_bytes` are compaction input.",
        0.75,
        "maintenance",
    )
    maintenance_min_input_files: int = _f(
        5, "Compact a partition only when it holds at least this many small files.", 2, "maintenance"
    )
    maintenance_snapshot_max_age_hours: float = _f(
        168.0,
        "Expire snapshots older than this (time travel reaches back this far); `maintenance_snapshots_keep` newest are always kept.",
        72.0,
        "maintenance",
    )
    maintenance_snapshots_keep: int = _f(
        100,
        "The newest snapshots never expired, whatever their age (the current snapshot is always kept).",
        20,
        "maintenance",
    )
    maintenance_orphan_min_age_hours: float = _f(
        24.0,
        "Only delete unreferenced files older than this: a writer may have written files it has not committed yet.",
        72.0,
        "maintenance",
    )
    maintenance_target_manifest_entries: int = _f(
        20_000, "Manifest rewrite: data-file entries per rewritten manifest.", 50_000, "maintenance"
    )
    book_snapshot_interval_seconds: float = _f(
        10.0,
        "Order book: write a book_snapshots row per symbol every this many seconds of exchange time.",
        5.0,
        "maintenance",
    )
    book_snapshot_depth: int = _f(
        500,
        "Order book: levels per side kept in each book_snapshots row (book() answers depth d from them exactly when the levels have not moved past them; keep it well above the depths you read: at 100, 1 read in 8 of depth 25 on BTCUSDT had to combine older rows and read minutes of deltas; at 500, none in 1,000).",
        200,
        "maintenance",
    )
    book_snapshot_run_seconds: float = _f(
        10.0,
        "The landing service writes the due book_snapshots rows at its start and then this often (0 = off).",
        30.0,
        "maintenance",
    )

    # -- query -------------------------------------------------------------------------------------
    query_max_rows: int = _f(5_000_000, "Maximum rows one query may return.", 100_000, "query")
    query_max_range_days: float = _f(366.0, "Maximum time range of one query, in days.", 31.0, "query")
    query_pool_size: int = _f(4, "DuckDB connections in the query pool.", 8, "query")
    query_recent_window_seconds: float = _f(
        300.0,
        "`include_recent` defaults on when the range ends within this many seconds of now.",
        120.0,
        "query",
    )
    query_recent_max_rows: int = _f(
        1_000_000, "Most rows read from Kafka for the hybrid query.", 100_000, "query"
    )
    query_recent_timeout_seconds: float = _f(
        2.0, "Longest time spent reading Kafka for the hybrid query.", 1.0, "query"
    )
    query_cli_timeout_seconds: float = _f(
        300.0,
        "Longest time one CLI query (`k2 sql`, `k2 trades`, `k2 bars`, ...) may run before it is cancelled.",
        60.0,
        "query",
    )

    # -- REST API ----------------------------------------------------------------------------------
    api_host: str = _f("127.0.0.1", "REST API bind address.", "0.0.0.0", "api")
    api_port: int = _f(8000, "REST API port.", 18000, "api")
    api_rate_limit_per_second: float = _f(50.0, "Per-key token bucket refill rate (requests/s).", 10.0, "api")
    api_rate_limit_burst: int = _f(100, "Per-key token bucket size.", 20, "api")
    api_request_timeout_seconds: float = _f(30.0, "Request timeout; slower queries get 504.", 10.0, "api")
    api_max_body_bytes: int = _f(1_048_576, "Largest accepted request body.", 65_536, "api")
    api_page_size: int = _f(10_000, "Default rows per page for cursor-paged endpoints.", 1_000, "api")
    api_max_concurrent_per_key: int = _f(
        4,
        "Data requests one API key may have in progress at once (query running or body still streaming); more get 429.",
        2,
        "api",
    )
    api_workers: int = _f(
        1,
        "API worker processes `k2 api serve` runs (each with its own query engine; the result cache is shared through `api_cache_dir`, rate limits through the key store).",
        2,
        "api",
    )
    api_warm_up: bool = _f(
        True,
        "At start, each API process loads the query engine (DuckDB's Iceberg extension, the catalog) and the stored-symbols list in the background, so the first request does not wait for them.",
        False,
        "api",
    )
    api_cache_max_bytes: int = _f(
        268_435_456,
        "Bytes of query results the API keeps (per process in memory, or in `api_cache_dir` shared by the workers), keyed by the Iceberg snapshot read (never stale; never rows still in Kafka). 0 disables.",
        67_108_864,
        "api",
    )
    api_cache_dir: str | None = _f(
        None,
        "Directory where the API worker processes share one result cache (Arrow files, bounded by `api_cache_max_bytes`). Unset: `k2 api serve` makes a fresh directory under `data_dir` for the run when `api_workers` > 1 and removes it at exit (one process keeps its cache in memory). Empty: never shared (each process keeps its own in memory).",
        "/var/lib/k2/api-cache",
        "api",
    )
    api_max_concurrent_requests: int = _f(
        32,
        "Data requests one API process serves at once (each holds its result until the client has read it); more get 503.",
        16,
        "api",
    )
    api_keys_database_url: str | None = _f(
        None,
        "SQLAlchemy URL of the REST API's key store (hashed keys, scopes). Unset: SQLite file `api_keys.db` under `data_dir`.",
        "postgresql+psycopg2://k2@127.0.0.1:5432/k2",
        "api",
    )

    # -- sources -----------------------------------------------------------------------------------
    binance_ws_url: str = _f(
        "wss://stream.binance.com:9443",
        "Binance WebSocket base URL (spot, Binance US or USD-M futures).",
        "wss://fstream.binance.com",
        "sources",
    )
    binance_rest_url: str = _f(
        "https://api.binance.com",
        "Binance REST base URL used for gap backfill and exchange info.",
        "https://fapi.binance.com",
        "sources",
    )
    coinbase_ws_url: str = _f(
        "wss://ws-feed.exchange.coinbase.com",
        "Coinbase Exchange WebSocket URL.",
        "wss://ws-feed-public.sandbox.exchange.coinbase.com",
        "sources",
    )
    binance_api_key: str | None = _f(
        None,
        "Optional Binance API key, sent as X-MBX-APIKEY on REST backfill requests (for deployments where historicalTrades requires one).",
        "abc123",
        "sources",
    )
    coinbase_rest_url: str = _f(
        "https://api.exchange.coinbase.com",
        "Coinbase Exchange REST base URL used for gap backfill.",
        "https://api-public.sandbox.exchange.coinbase.com",
        "sources",
    )
    source_backoff_initial_seconds: float = _f(
        0.5,
        "First reconnect delay cap of a live feed; doubles per failed attempt, each delay drawn from [cap/2, cap] (jitter).",
        1.0,
        "sources",
    )
    source_backoff_max_seconds: float = _f(30.0, "Longest reconnect delay of a live feed.", 60.0, "sources")
    source_stall_seconds: float = _f(
        30.0, "Reconnect a live feed that sends nothing for this long.", 10.0, "sources"
    )
    source_max_connection_seconds: float = _f(
        23.5 * 3600,
        "Reconnect proactively after this long (Binance closes connections at 24 h).",
        3600.0,
        "sources",
    )
    source_metrics_port: int = _f(
        0,
        "Port of `k2 stream`'s /metrics endpoint on 127.0.0.1 (0: off; `--metrics-port` overrides).",
        9465,
        "sources",
    )
    import_block_bytes: int = _f(
        64 * 1024 * 1024,
        "`k2 import`: bytes of CSV parsed at a time (bounds memory whatever the file size).",
        16_777_216,
        "sources",
    )
    import_commit_rows: int = _f(
        2_000_000,
        "`k2 import`: rows per Iceberg commit (or Kafka flush); a smaller file is one commit. Memory grows ~250 B per row.",
        1_000_000,
        "sources",
    )

    # -- observability -----------------------------------------------------------------------------
    prometheus_enabled: Literal["auto", "true", "false"] = _f(
        "auto",
        "Start Prometheus with `k2 up` (scraping every K2 part): `auto` when a `prometheus` binary is on PATH.",
        "false",
        "observability",
    )
    prometheus_port: int = _f(
        9090, "Port of the Prometheus started by `k2 up` (on 127.0.0.1).", 19090, "observability"
    )
    prometheus_scrape_interval_seconds: int = _f(
        15,
        "Scrape and rule-evaluation interval in the Prometheus configuration K2 generates.",
        5,
        "observability",
    )

    @field_validator(
        "topic_partitions",
        "topic_replication_factor",
        "symbol_buckets",
        "landing_commit_rows",
        "query_pool_size",
        "query_max_rows",
        "producer_queue_max_messages",
        "producer_queue_max_kbytes",
        "consumer_session_timeout_ms",
        "api_rate_limit_burst",
        "api_page_size",
        "api_max_concurrent_per_key",
        "api_workers",
        "api_max_concurrent_requests",
        "target_file_size_bytes",
        "landing_max_buffered_bytes",
        "consumer_fetch_max_bytes",
        "query_recent_max_rows",
        "landing_hwm_cache_size",
        "landing_max_id_jump",
        "import_block_bytes",
        "import_commit_rows",
        "api_max_body_bytes",
        "prometheus_scrape_interval_seconds",
        "maintenance_min_input_files",
        "maintenance_snapshots_keep",
        "maintenance_target_manifest_entries",
    )
    @classmethod
    def _positive_int(cls, value: int | None) -> int | None:
        if value is not None and value <= 0:
            raise ValueError(f"expected a positive integer, found {value}")
        return value

    @field_validator(
        "landing_commit_interval_seconds",
        "query_max_range_days",
        "api_rate_limit_per_second",
        "api_request_timeout_seconds",
        "query_recent_timeout_seconds",
        "query_cli_timeout_seconds",
        "source_stall_seconds",
        "source_max_connection_seconds",
        "source_backoff_initial_seconds",
        "source_backoff_max_seconds",
        "landing_max_future_seconds",
        "landing_verify_timeout_seconds",
        "maintenance_small_file_ratio",
        "producer_delivery_timeout_seconds",
        "producer_stall_seconds",
        "book_snapshot_interval_seconds",
        "eod_tag_check_seconds",
    )
    @classmethod
    def _positive_float(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"expected a positive number, found {value}")
        return value

    @field_validator(
        "maintenance_interval_seconds",
        "maintenance_snapshot_max_age_hours",
        "maintenance_orphan_min_age_hours",
        "query_recent_window_seconds",
        "down_drain_seconds",
        "book_snapshot_run_seconds",
    )
    @classmethod
    def _non_negative_float(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"expected a number >= 0, found {value}")
        return value

    @field_validator("eod_tag_retain_days")
    @classmethod
    def _positive_days(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError(f"expected a number of days > 0 (or unset: forever), found {value}")
        return value

    @field_validator("book_snapshot_depth")
    @classmethod
    def _book_depth(cls, value: int) -> int:
        if not 1 <= value <= 1000:
            raise ValueError(f"expected 1..1000 levels per side, found {value}")
        return value

    @field_validator("broker_port", "registry_port", "api_port", "prometheus_port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError(f"expected a TCP port 1..65535, found {value}")
        return value

    @field_validator("storage_port")
    @classmethod
    def _storage_port(cls, value: int) -> int:
        if not 1 <= value <= 65535 - 10000:
            raise ValueError(
                f"expected a TCP port 1..55535 (its gRPC port is the port + 10000), found {value}"
            )
        return value

    @field_validator("producer_linger_ms", "api_cache_max_bytes")
    @classmethod
    def _non_negative_int(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"expected an integer >= 0, found {value}")
        return value

    @field_validator("landing_metrics_port", "source_metrics_port")
    @classmethod
    def _port_or_zero(cls, value: int) -> int:
        if not 0 <= value <= 65535:
            raise ValueError(f"expected a TCP port 1..65535 or 0 to disable, found {value}")
        return value

    @field_validator("broker_storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        if not (value.startswith("memory://") or value.startswith("s3://")):
            raise ValueError(f"expected memory://... or s3://BUCKET/, found {value!r}")
        return value

    @field_validator("catalog_properties")
    @classmethod
    def _json_object(cls, value: str | None) -> str | None:
        if value is None:
            return value
        import json

        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
        ):
            raise ValueError(
                f'expected a JSON object of strings like {{"rest.signing-name": "glue"}}, found {value!r}'
            )
        return value

    @field_validator("warehouse")
    @classmethod
    def _warehouse(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("file://", "s3://", "/")):
            raise ValueError(f"expected file:///path, /path or s3://bucket/prefix, found {value!r}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = os.environ.get(ENV_PREFIX + "CONFIG_FILE", "k2.toml")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if Path(toml_path).is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        elif ENV_PREFIX + "CONFIG_FILE" in os.environ:
            raise SettingsError(
                f"K2_CONFIG_FILE: expected an existing TOML file, found no file at {toml_path!r}"
            )
        return tuple(sources)

    # -- derived values ----------------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        """Kafka bootstrap servers actually used (the local broker when none is configured)."""
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.broker_port}"

    @property
    def registry_url(self) -> str:
        """Schema registry URL actually used (K2's local registry when none is configured)."""
        return (self.schema_registry_url or f"http://127.0.0.1:{self.registry_port}").rstrip("/")

    @property
    def warehouse_location(self) -> str:
        """Warehouse location actually used, as a URI."""
        if self.warehouse is None:
            return (self.data_dir.resolve() / "warehouse").as_uri()
        if self.warehouse.startswith("/"):
            return Path(self.warehouse).as_uri()
        return self.warehouse

    def environment(self) -> dict[str, str]:
        """These settings as ``K2_*`` environment variables for a child process, secrets included.

        ``model_dump`` masks :class:`~pydantic.SecretStr` values (``**********``): a child started from it
        would run with a wrong password, so this unwraps them. Keep the result out of logs.

        >>> Settings(s3_secret_access_key="s", data_dir="/tmp/k2").environment()["K2_S3_SECRET_ACCESS_KEY"]
        's'
        """
        env: dict[str, str] = {}
        for name, value in self.model_dump(exclude_none=True).items():
            text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            env[f"{ENV_PREFIX}{name.upper()}"] = text
        return env

    @property
    def embedded_broker(self) -> bool:
        """True when no broker is configured: ``k2 up`` runs the local Tansu broker on ``broker_port``.

        >>> Settings(data_dir="/tmp/k2").embedded_broker, Settings(data_dir="/tmp/k2", kafka_bootstrap_servers="kafka:9092").embedded_broker
        (True, False)
        """
        return self.kafka_bootstrap_servers is None

    @property
    def session_timeout_ms(self) -> int:
        """The consumer session timeout in use: the setting, else 2,000 on the embedded broker, 10,000 on any other.

        >>> Settings(data_dir="/tmp/k2").session_timeout_ms
        2000
        >>> Settings(data_dir="/tmp/k2", kafka_bootstrap_servers="kafka:9092").session_timeout_ms
        10000
        >>> Settings(data_dir="/tmp/k2", kafka_bootstrap_servers="kafka:9092", consumer_session_timeout_ms=45000).session_timeout_ms
        45000
        """
        if self.consumer_session_timeout_ms is not None:
            return self.consumer_session_timeout_ms
        return 2_000 if self.embedded_broker else 10_000

    @property
    def catalog_url(self) -> str:
        """Catalog URI actually used (SQLite under ``data_dir`` for the SQL catalog by default)."""
        if self.catalog_uri:
            return self.catalog_uri
        if self.catalog_type == "rest":
            raise SettingsError(
                "K2_CATALOG_URI: expected the REST catalog URL when K2_CATALOG_TYPE=rest, found none"
            )
        return f"sqlite:///{(self.data_dir.resolve() / 'catalog.db').as_posix()}"

    @property
    def registry_db_url(self) -> str:
        """SQLAlchemy URL of K2's own registry store."""
        return (
            self.registry_database_url or f"sqlite:///{(self.data_dir.resolve() / 'registry.db').as_posix()}"
        )

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by every K2 Kafka client (bootstrap and security)."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            config["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password:
            config["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        return config


def load_settings(**overrides: Any) -> Settings:
    """Load settings from the environment and ``k2.toml``; raise :class:`SettingsError` naming bad keys.

    Example:
        >>> load_settings(api_port=18000).api_port
        18000
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ENV_PREFIX + "_".join(str(part) for part in error["loc"]).upper()
            problems.append(f"{key}: {error['msg']} (found {error.get('input')!r})")
        raise SettingsError("invalid K2 configuration: " + "; ".join(problems)) from None


def settings_reference_markdown() -> str:
    """Render the configuration reference (``docs/configuration.md``) from :class:`Settings`."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `k2.config.Settings` by `k2 config docs`; a test keeps it current.",
        "Every setting is read from the environment variable shown, or from `k2.toml` (path in",
        "`K2_CONFIG_FILE`) using the lower-case name as the key. Invalid values stop K2 at start-up",
        "with an error naming the variable.",
        "",
    ]
    section = None
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("section") != section:
            section = extra.get("section")
            lines += [
                "",
                f"## {section}",
                "",
                "| variable | default | description | example |",
                "|---|---|---|---|",
            ]
        default = field.default
        shown = "(unset)" if default is None else f"`{default}`"
        lines.append(
            f"| `{ENV_PREFIX}{name.upper()}` | {shown} | {field.description} | `{extra.get('example')}` |"
        )
    return "\n".join(lines) + "\n"
