"""The landing's gauges: consumer lag per assigned partition and freshness per table.

Freshness is published twice: ``k2_landing_freshness_seconds`` (now - the newest exchange time landed)
and the p50/p99 of the produced (``ingest_ts``) -> committed latencies of the last 5 minutes' commits
(:class:`~k2.landing.freshness.FreshnessWindow`, read by ``k2 status``).
"""

from __future__ import annotations

import pyarrow as pa
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from k2.landing.freshness import FreshnessWindow
from k2.model.values import now_micros
from k2.telemetry.metrics import metric


class LandingGauges:
    """Lag and freshness gauges of one landing consumer.

    Example (needs a broker)::

        gauges = LandingGauges()
        gauges.committed("trades", landed_rows)
        gauges.publish(kafka_consumer, assigned, next_offsets)
    """

    def __init__(self) -> None:
        self._m_lag = metric("k2_landing_consumer_lag")
        self._m_fresh = metric("k2_landing_freshness_seconds")
        self._m_fresh_quantile = metric("k2_landing_freshness_quantile_seconds")
        self._newest: dict[str, int] = {}
        # Produced (ingest_ts) -> committed latencies of the last 5 minutes' commits, per table (k2 status).
        self.freshness = FreshnessWindow(window_seconds=300.0)

    def committed(self, short: str, data: pa.Table) -> None:
        """After a commit that landed ``data`` (at least one row) into table ``short``."""
        newest = int(pa.compute.max(data["exchange_ts"]).cast(pa.int64()).as_py())
        self._newest[short] = max(newest, self._newest.get(short, 0))
        self._m_fresh.labels(table=short).set(max(0.0, (now_micros() - self._newest[short]) / 1e6))
        self._record_freshness(short, data)

    def _record_freshness(self, short: str, data: pa.Table) -> None:
        """Add this commit's produced -> committed latencies to the window and publish its p50/p99."""
        if "ingest_ts" not in data.column_names:
            return
        produced = data["ingest_ts"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        self.freshness.record(short, produced.to_numpy(zero_copy_only=False), now_micros())
        self._publish_freshness(short)

    def _publish_freshness(self, short: str) -> None:
        """k2_landing_freshness_quantile_seconds{table, quantile} (NaN once the window holds no commit)."""
        found = self.freshness.quantiles(short)
        for level, value in zip(("0.5", "0.99"), found or (float("nan"),) * 2, strict=True):
            self._m_fresh_quantile.labels(table=short, quantile=level).set(value)

    def publish(
        self, consumer: Consumer, assigned: list[TopicPartition], next_offsets: dict[tuple[str, int], int]
    ) -> None:
        """Publish lag per assigned partition and freshness per table.

        Lag = (end of the partition as known to this consumer) - (next offset to land). The known end
        is the larger of the broker's high watermark and the consumer's position (one past the last
        message consumed, buffered or landed). Tansu reports the high watermark as the first offset of
        the last batch + 1, so on Tansu the lag is a lower bound (short by at most the rest of the
        last producer batch); on Kafka it is exact. K2 never loops until an end offset.
        """
        if assigned:
            try:
                positions = consumer.position([TopicPartition(tp.topic, tp.partition) for tp in assigned])
            except KafkaException:
                positions = []
            for tp in positions:
                try:
                    low, high = consumer.get_watermark_offsets(tp, timeout=1, cached=True)
                except KafkaException:
                    low, high = -1, -1
                landed_next = next_offsets.get((tp.topic, tp.partition), OFFSET_BEGINNING)
                if landed_next < 0:
                    landed_next = max(low, 0)
                known_end = max(high, tp.offset, landed_next)
                self._m_lag.labels(topic=tp.topic, partition=tp.partition).set(known_end - landed_next)
        now = now_micros()
        for short, newest in self._newest.items():
            self._m_fresh.labels(table=short).set(max(0.0, (now - newest) / 1e6))
        for short in self.freshness.tables():
            self._publish_freshness(short)
