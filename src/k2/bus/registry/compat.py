"""Avro parsing and compatibility rules, delegated to Apache Avro's own checker (``avro.compatibility``).

Example:
    >>> old = '{"type": "record", "name": "T", "fields": [{"name": "a", "type": "long"}]}'
    >>> new = '{"type": "record", "name": "T", "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": "string"}]}'
    >>> check(new, [old], "BACKWARD")[0].startswith("BACKWARD")
    True
    >>> check(new, [old], "FORWARD")
    []
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import avro.schema
import fastavro
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

COMPATIBILITY_LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)


@lru_cache(maxsize=1024)
def parse_avro(text: str) -> avro.schema.Schema:
    """Parse an Avro schema (JSON text), raising ValueError with the reason when it is invalid.

    Both Apache Avro and fastavro must accept it: Avro for the compatibility checker, fastavro
    because K2's encoder and confluent-kafka's serializers use it.

    Example:
        >>> parse_avro('"string"').type
        'string'
    """
    try:
        parsed = avro.schema.parse(text)
        document = json.loads(text)
        fastavro.parse_schema(document)
        _check_field_names(document)
    except Exception as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    return parsed


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_field_names(node: object) -> None:
    """Reject field names the Avro spec forbids (Apache Avro for Python only checks type names)."""
    if isinstance(node, list):
        for item in node:
            _check_field_names(item)
    elif isinstance(node, dict):
        fields = (node.get("fields") or []) if node.get("type") in ("record", "error") else []
        for field in fields:
            name = field.get("name") if isinstance(field, dict) else None
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise ValueError(
                    f"field name {name!r} is not a valid Avro name: expected [A-Za-z_][A-Za-z0-9_]*"
                )
        for key in ("type", "items", "values", "fields"):
            if key in node:
                _check_field_names(node[key])


def _decimals(
    node: object, path: str, names: dict[str, Any], out: dict[str, tuple[Any, Any]], depth: int = 0
) -> None:
    """Map field path -> (precision, scale) of every decimal reachable in a schema document."""
    if depth > 64:  # recursive types: paths would grow forever
        return
    if isinstance(node, str):
        if node in names:
            _decimals(names[node], path, names, out, depth + 1)
        return
    if isinstance(node, list):
        for branch in node:
            _decimals(branch, path, names, out, depth + 1)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if node.get("logicalType") == "decimal" and kind in ("bytes", "fixed"):
        out[path or "/"] = (node.get("precision"), node.get("scale", 0))
    if kind in ("record", "error", "enum", "fixed") and isinstance(node.get("name"), str):
        name = node["name"]
        names[name] = names[name.rsplit(".", 1)[-1]] = node
        if node.get("namespace") and "." not in name:
            names[f"{node['namespace']}.{name}"] = node
    if kind in ("record", "error"):
        for field in node.get("fields") or []:
            _decimals(field.get("type"), f"{path}/{field.get('name')}", names, out, depth + 1)
    elif kind == "array":
        _decimals(node.get("items"), f"{path}/[]", names, out, depth + 1)
    elif kind == "map":
        _decimals(node.get("values"), f"{path}/{{}}", names, out, depth + 1)
    elif isinstance(kind, dict | list) or (isinstance(kind, str) and kind in names):
        _decimals(kind, path, names, out, depth + 1)


def _decimal_mismatches(reader_text: str, writer_text: str) -> list[str]:
    """K2's extra rule: a decimal whose scale changes, or whose precision shrinks, is incompatible.

    Avro's checker ignores logical types, so decimal(18,8) -> decimal(18,6) passes it, yet a reader
    would then scale every stored price by 100: for market data that is silent corruption.
    """
    reader: dict[str, tuple[Any, Any]] = {}
    writer: dict[str, tuple[Any, Any]] = {}
    _decimals(json.loads(reader_text), "", {}, reader)
    _decimals(json.loads(writer_text), "", {}, writer)
    out = []
    for path in sorted(reader.keys() & writer.keys()):
        (r_precision, r_scale), (w_precision, w_scale) = reader[path], writer[path]
        if r_scale != w_scale or (
            isinstance(r_precision, int) and isinstance(w_precision, int) and r_precision < w_precision
        ):
            out.append(
                f"DECIMAL_MISMATCH at {path}: writer decimal({w_precision},{w_scale}), reader decimal({r_precision},{r_scale})"
            )
    return out


def _incompatibilities(reader_text: str, writer_text: str) -> list[str]:
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(parse_avro(reader_text), parse_avro(writer_text))
    messages = []
    if result.compatibility is not SchemaCompatibilityType.compatible:
        kinds = ", ".join(sorted({i.name for i in result.incompatibilities}))
        messages.append(
            f"{kinds} at {', '.join(sorted(result.locations))}: {'; '.join(sorted(result.messages))}"
        )
    return messages + _decimal_mismatches(reader_text, writer_text)


def check(new_text: str, previous: list[str], level: str, by_level: bool = True) -> list[str]:
    """Messages describing why ``new_text`` breaks ``level`` against ``previous`` ([] = compatible).

    ``previous`` is ordered oldest first. With ``by_level`` the level picks the targets (the latest
    one, or all of them for ``*_TRANSITIVE``); otherwise every schema in ``previous`` is checked.
    BACKWARD: the new schema must read data written with the old one; FORWARD: the old schema must
    read data written with the new one; FULL: both.

    Example:
        >>> check('"string"', ['"long"'], "NONE")
        []
        >>> len(check('"string"', ['"long"'], "FULL"))
        2
    """
    level = level.upper()
    if level == "NONE" or not previous:
        return []
    targets = previous if (not by_level or level.endswith("_TRANSITIVE")) else previous[-1:]
    messages: list[str] = []
    for old in targets:
        if level.startswith(("BACKWARD", "FULL")):
            messages += [
                f"BACKWARD: new schema cannot read data written with an earlier one: {m}"
                for m in _incompatibilities(new_text, old)
            ]
        if level.startswith(("FORWARD", "FULL")):
            messages += [
                f"FORWARD: an earlier schema cannot read data written with the new one: {m}"
                for m in _incompatibilities(old, new_text)
            ]
    return messages
