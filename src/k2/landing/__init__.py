"""Landing: Kafka -> Iceberg exactly once, with dedup, a gap ledger and a dead-letter queue."""

from k2.landing.consumer import LandingConsumer, LandingError, LandingStats, OffsetResetError, run_landing

__all__ = ["LandingConsumer", "LandingError", "LandingStats", "OffsetResetError", "run_landing"]
