"""The Kafka bus: topic naming, Avro (Confluent wire format), the producer and the schema registry.

Names are imported lazily (PEP 562) so that ``python -m k2.bus.registry`` does not pay for
pyarrow and confluent-kafka at start-up; ``from k2.bus import MarketDataProducer`` works as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from k2.bus.producer import DeliveryError, MarketDataProducer
    from k2.bus.serde import AvroBatchDecoder, AvroEncoder, DecodedBatch, DecodeError, registry_client
    from k2.bus.topics import dlq_topic, ensure_topics, list_topics, parse_topic, topic_name

_HOMES = {
    "AvroBatchDecoder": "k2.bus.serde",
    "AvroEncoder": "k2.bus.serde",
    "DecodeError": "k2.bus.serde",
    "DecodedBatch": "k2.bus.serde",
    "DeliveryError": "k2.bus.producer",
    "MarketDataProducer": "k2.bus.producer",
    "dlq_topic": "k2.bus.topics",
    "ensure_topics": "k2.bus.topics",
    "list_topics": "k2.bus.topics",
    "parse_topic": "k2.bus.topics",
    "registry_client": "k2.bus.serde",
    "topic_name": "k2.bus.topics",
}

__all__ = [
    "AvroBatchDecoder",
    "AvroEncoder",
    "DecodeError",
    "DecodedBatch",
    "DeliveryError",
    "MarketDataProducer",
    "dlq_topic",
    "ensure_topics",
    "list_topics",
    "parse_topic",
    "registry_client",
    "topic_name",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'k2.bus' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
