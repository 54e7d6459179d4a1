"""The producer's message id: the ``k2.mid`` Kafka header, set on every message K2's producer sends.

A message id is ``<producer>:<sequence>``: ``producer`` is the producing session's id (the same 16 hex
characters as its ``k2.cid`` correlation header, see :mod:`k2.telemetry.logging`), ``sequence`` counts the
messages that session sent (1, 2, ...). Why this and not a UUID/ULID per message:

* **Cheap to land.** The landing stores it as two columns (``lineage_producer``, ``lineage_sequence``):
  the producer repeats across millions of rows (Parquet dictionary-encodes it to a few bits a row) and
  the sequence rises by one within a session (small deltas, compresses well). A random 128-bit id per
  row would cost ~16 incompressible bytes a row.
* **Cheap to make.** One integer increment and a short bytes format per message in the producer's hot
  loop; no random numbers.
* **Says more.** Missing sequence numbers of one producer in the lake mean messages that never landed;
  the same id twice in Kafka is a re-send (the producer's recovery re-sends with the original headers),
  which the landing drops by natural key.

Hazard: the id identifies a *production*, not a market event: ``k2 replay`` produces the same trade
again under a new id (a replayed DLQ letter keeps its original headers, hence its id). Messages from
producers that are not K2's carry no ``k2.mid``: their rows have a null message id.

Example:
    >>> message_id_header(b"0123456789abcdef", 42)
    ('k2.mid', b'0123456789abcdef:42')
    >>> producers, sequences = message_ids([[message_id_header(b"0123456789abcdef", 42)], [("k2.mid", b"garbage")]])
    >>> producers.to_pylist(), sequences.to_pylist()
    (['0123456789abcdef', None], [42, None])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

MID_HEADER = "k2.mid"


def message_id_header(producer: bytes, sequence: int) -> tuple[str, bytes]:
    """The ``k2.mid`` header of the ``sequence``-th message of the producing session ``producer``."""
    return (MID_HEADER, b"%s:%d" % (producer, sequence))


def _mid_value(headers: Any) -> bytes | str | None:
    """The ``k2.mid`` value among one message's headers (None when absent)."""
    if not headers:
        return None
    pairs = list(headers.items()) if isinstance(headers, Mapping) else headers
    for key, value in reversed(pairs):
        if key == MID_HEADER:
            return value
    return None


def _utf8(value: bytes | None) -> str | None:
    try:
        return None if value is None else value.decode()
    except UnicodeDecodeError:
        return None


def message_ids(all_headers: Iterable[Any]) -> tuple[pa.Array, pa.Array]:
    """(producers, sequences) as Arrow arrays (null where a message has no valid ``k2.mid``) of many
    messages' headers (as ``Message.headers()`` returns them: a list of (key, value) pairs, a mapping or
    None). Per message only the header look-up runs in Python (K2's producer puts ``k2.mid`` last); the
    split and the integer parse are vectorised (the landing calls this for every message it lands).

    >>> producers, sequences = message_ids([[("k2.cid", b"ab"), ("k2.mid", b"ab:7")], None, [("k2.mid", b"x")]])
    >>> producers.to_pylist(), sequences.to_pylist()
    (['ab', None, None], [7, None, None])
    """
    raw = [
        h[-1][1] if type(h) is list and h and h[-1][0] == MID_HEADER else _mid_value(h) for h in all_headers
    ]
    try:
        values = pa.array(raw, pa.binary())
    except (TypeError, pa.ArrowInvalid):  # str values (headers given as a mapping of str)
        values = pa.array([v.encode() if isinstance(v, str) else v for v in raw], pa.binary())
    try:
        text = values.cast(pa.string())
    except pa.ArrowInvalid:  # a foreign producer's header that is not UTF-8: that message has no id
        text = pa.array([_utf8(v) for v in values.to_pylist()], pa.string())
    text = pc.if_else(pc.match_substring(text, ":"), text, pa.nulls(len(text), pa.string()))
    parts = pc.split_pattern(text, ":", max_splits=1, reverse=True)
    producer, sequence = pc.list_element(parts, 0), pc.list_element(parts, 1)
    valid = pc.and_(
        pc.and_(pc.utf8_is_digit(sequence), pc.less_equal(pc.utf8_length(sequence), 18)),
        pc.greater(pc.utf8_length(producer), 0),
    )
    none = pa.nulls(len(text), pa.string())
    return pc.if_else(valid, producer, none), pc.if_else(valid, sequence, none).cast(pa.int64())
