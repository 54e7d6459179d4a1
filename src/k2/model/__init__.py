"""Canonical data model (one definition drives Avro, Arrow and Iceberg schemas) and value helpers."""

from k2.model.schema import (
    GAP,
    INSTRUMENT,
    KLINE,
    PRICE_PRECISION,
    PRICE_SCALE,
    QUOTE,
    RECORD_TYPES,
    TRADE,
    AssetClass,
    DataType,
    FieldSpec,
    RecordType,
    Side,
)
from k2.model.values import (
    canonical_instrument,
    datetime_to_micros,
    micros_to_datetime,
    to_unscaled,
    unscaled_to_decimal,
)

__all__ = [
    "GAP",
    "INSTRUMENT",
    "KLINE",
    "PRICE_PRECISION",
    "PRICE_SCALE",
    "QUOTE",
    "RECORD_TYPES",
    "TRADE",
    "AssetClass",
    "DataType",
    "FieldSpec",
    "RecordType",
    "Side",
    "canonical_instrument",
    "datetime_to_micros",
    "micros_to_datetime",
    "to_unscaled",
    "unscaled_to_decimal",
]
