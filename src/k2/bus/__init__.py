"""The Kafka bus: topic naming, Avro (Confluent wire format), the producer and the schema registry."""

from k2.bus.producer import DeliveryError, MarketDataProducer
from k2.bus.serde import AvroBatchDecoder, AvroEncoder, DecodedBatch, DecodeError, registry_client
from k2.bus.topics import dlq_topic, ensure_topics, list_topics, parse_topic, topic_name

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
