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
    >>> parse_message_id(b"0123456789abcdef:42"), parse_message_id(b"garbage")
    (('0123456789abcdef', 42), (None, None))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

MID_HEADER = "k2.mid"


def message_id_header(producer: bytes, sequence: int) -> tuple[str, bytes]:
    """The ``k2.mid`` header of the ``sequence``-th message of the producing session ``producer``."""
    return (MID_HEADER, b"%s:%d" % (producer, sequence))


def parse_message_id(value: bytes | str | None) -> tuple[str | None, int | None]:
    """(producer, sequence) of a ``k2.mid`` value; (None, None) when absent or not of that form."""
    if value is None:
        return None, None
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    producer, sep, sequence = text.rpartition(":")
    if not sep or not producer or not sequence.isdigit():
        return None, None
    return producer, int(sequence)


def message_ids(all_headers: Iterable[Any]) -> tuple[list[str | None], list[int | None]]:
    """(producers, sequences) of many messages' headers (as ``Message.headers()`` returns them: a list
    of (key, value) pairs, a mapping or None)."""
    producers: list[str | None] = []
    sequences: list[int | None] = []
    for headers in all_headers:
        found: tuple[str | None, int | None] = (None, None)
        if headers:
            pairs = list(headers.items()) if isinstance(headers, Mapping) else headers
            for key, value in reversed(pairs):  # K2's producer puts k2.mid last
                if key == MID_HEADER:
                    found = parse_message_id(value)
                    break
        producers.append(found[0])
        sequences.append(found[1])
    return producers, sequences
