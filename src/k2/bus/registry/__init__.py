"""K2's own Confluent-compatible schema registry (used by the local stack; any Confluent-compatible
registry can replace it by setting ``schema_registry_url``).

Run it::

    python -m k2.bus.registry --port 8081 --database-url sqlite:////var/k2/registry.db \\
        --default-compatibility BACKWARD [--host 127.0.0.1]

(``k2 up`` starts exactly this command; tests use :func:`k2.bus.registry.server.registry_process`.)
A bad argument prints what was expected and exits with status 2.

What it speaks -- the REST subset confluent-kafka 2.16's ``SchemaRegistryClient``, ``AvroSerializer``
and ``AvroDeserializer`` use (responses ``application/vnd.schemaregistry.v1+json``; requests may be
``application/json`` too; boolean query parameters accept ``true``/``True``/``1``):

- ``POST /subjects/{s}/versions[?normalize=]`` register -> ``{"id", "version", "guid"}``. Idempotent:
  the same schema under the same subject returns its existing version without a compatibility
  check; the same schema under another subject gets a new version there and the SAME global id.
- ``POST /subjects/{s}[?normalize=&deleted=]`` look a schema up under a subject.
- ``GET /schemas/ids/{id}[?subject=&format=]`` (``subject``/``format`` accepted and ignored: there
  is one context and only Avro), ``/schemas/ids/{id}/schema``, ``/schemas/ids/{id}/versions``,
  ``/schemas/ids/{id}/subjects``, ``/schemas/guids/{guid}``, ``/schemas/types``.
- ``GET /subjects[?subjectPrefix=&deleted=&deleted_only=&offset=&limit=]``,
  ``/subjects/{s}/versions[?deleted=]``, ``/subjects/{s}/versions/{v|latest|-1}[?deleted=]``,
  ``/subjects/{s}/versions/{v}/schema``, ``/subjects/{s}/versions/{v}/referencedby`` (always ``[]``).
- ``DELETE /subjects/{s}`` and ``/subjects/{s}/versions/{v}``: soft delete; ``?permanent=true``
  removes versions that were soft-deleted first (Confluent's two-step rule, errors 40404-40407).
- ``POST /compatibility/subjects/{s}/versions/{v|latest}`` (that version) and
  ``.../versions`` (every version the level requires) -> ``{"is_compatible"}`` plus
  ``"messages"`` with ``?verbose=true``. Against a subject with no versions, ``latest`` is compatible.
- ``GET/PUT/DELETE /config`` and ``/config/{s}`` (``GET /config/{s}`` without a subject level is
  40408 unless ``?defaultToGlobal=true``); ``GET /mode``, ``/mode/{s}`` (always READWRITE),
  ``/contexts``. Anything else (e.g. ``/associations``, rule sets, metadata, PUT /mode) is 404,
  which the client tolerates where it probes.
- ``GET /v1/metadata/stats``: K2 extension, request/error counts, total handling seconds and
  ``write_retries`` (transactions lost to a concurrent writer and retried).

Errors are Confluent bodies ``{"error_code", "message"}``: 40401 subject, 40402 version, 40403
schema not found; 409 incompatible; 42201 invalid schema; 42202 invalid version; 42203 invalid
compatibility level; 400 malformed request/query parameter; 500/50001 store failure.

Compatibility uses Apache Avro's own ``ReaderWriterCompatibilityChecker`` (package ``avro``):
BACKWARD = the new schema reads data written with the latest live version; FORWARD = the latest
reads the new; FULL = both; ``*_TRANSITIVE`` = against every live (not soft-deleted) version; NONE
skips the check. The global level starts as ``--default-compatibility`` (setting
``registry_default_compatibility``) until ``PUT /config`` stores one; a subject level overrides it.
K2 adds one rule Avro's checker lacks (it ignores logical types): where a field path holds a
``decimal`` in both schemas, a scale change or a smaller reader precision is incompatible
(``DECIMAL_MISMATCH``), because decimal(18,8) -> decimal(18,6) would silently scale stored prices
by 100. Confluent's registry accepts such a change; this one answers 409.

Schemas are valid only when both Apache Avro and fastavro parse them (422/42201 otherwise; the
parser's reason is in the message). Storage and identity:

- The text is stored compact (whitespace removed, attribute order kept), like Confluent's canonical
  string, so whitespace-only differences share one id; any other difference (doc, attribute order)
  is a new id. ``normalize=true`` stores and compares Avro's own re-rendering of the parsed schema
  with sorted keys (logical types, defaults and docs kept -- NOT the Parsing Canonical Form, which
  would drop decimal scale).
- Global ids come from an autoincrement key (SQLite ``AUTOINCREMENT``, PostgreSQL sequence), are
  never reused, and survive restarts. Schema rows are never deleted, even by a permanent subject
  delete, so bytes already in Kafka stay decodable by id.
- Tables (``registry_schemas``, ``registry_versions``, ``registry_config``) are created at start
  with SQLAlchemy; SQLite (default) or PostgreSQL (``postgresql://...``).

Hazards / limits:

- Only AVRO; schema ``references`` are rejected with 42201 (K2's schemas are self-contained).
- Concurrency: writes are serialised by a lock inside the process. Several registry processes on
  one PostgreSQL database rely on the unique constraints (schema fingerprint; subject + version)
  and retry a losing transaction up to 8 times (then 500/50001): two registrations into one subject
  both try to insert the same next version, so the loser re-runs its compatibility check against
  the winner's schema. Checked with two processes racing on one PostgreSQL database.
- Subjects containing ``/`` cannot be addressed (the path is split before URL-decoding).
- No authentication, no TLS: bind it to 127.0.0.1 (the default) or put it behind a proxy.
- Modes (READONLY/IMPORT), contexts, metadata and rule sets are not implemented.
"""
