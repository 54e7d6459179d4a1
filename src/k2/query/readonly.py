"""The read-only SQL entry point (``client.sql`` / ``k2 sql``): SELECT over named views, nothing else.

Two independent guards:

1. DuckDB's own parser classifies the text (``extract_statements``): exactly one statement, of type
   SELECT (which includes ``WITH ... SELECT``, ``FROM t``, ``VALUES``, ``DESCRIBE``, ``SUMMARIZE``).
   COPY, ATTACH, INSERT, CREATE, SET, PRAGMA with effects, EXPLAIN, CALL ... are rejected.
2. The statement runs on a fresh connection where the only things reachable are the views
   ``trades``, ``quotes``, ``instruments``, ``gaps`` and ``klines``: after the views are created, external access
   is disabled except for the warehouse directory (``allowed_directories``) and the configuration is
   locked, so ``read_csv('/etc/passwd')``, ``glob``, ``ATTACH`` and ``SET`` all fail even inside a SELECT.

Example:
    >>> check_select("SELECT 1")
    >>> check_select("COPY trades TO 'x.csv'")
    Traceback (most recent call last):
    ...
    k2.query.errors.QueryError: expected one read-only SELECT (or WITH ... SELECT) statement, found COPY
"""

from __future__ import annotations

import duckdb

from k2.query.errors import QueryError

VIEWS = ("trades", "quotes", "instruments", "gaps", "klines")

_PARSER = duckdb.connect()


def check_select(query: str) -> None:
    """Raise :class:`QueryError` unless ``query`` is exactly one SELECT statement (DuckDB's parser decides).

    >>> check_select("WITH t AS (SELECT 1 AS x) SELECT x FROM t")
    """
    if not isinstance(query, str) or not query.strip():
        raise QueryError(f"expected a SELECT statement, found {query!r}")
    try:
        # The parser connection is shared; extract_statements only parses (it executes nothing).
        statements = _PARSER.cursor().extract_statements(query)
    except duckdb.Error as exc:
        raise QueryError(f"expected valid SQL, found a syntax error: {exc}") from None
    if len(statements) != 1:
        raise QueryError(f"expected exactly one statement, found {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise QueryError(f"expected one read-only SELECT (or WITH ... SELECT) statement, found {kind.name}")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def lock_down(con: duckdb.DuckDBPyConnection, warehouse: str) -> None:
    """Disable file/network access except the warehouse, and lock the configuration of ``con``.

    >>> con = duckdb.connect()
    >>> lock_down(con, "file:///tmp/k2-warehouse")
    >>> con.execute("SELECT current_setting('enable_external_access')").fetchone()[0]
    False
    """
    allowed = [warehouse.rstrip("/") + "/"]
    if warehouse.startswith("file://"):
        allowed.append(warehouse.removeprefix("file://").rstrip("/") + "/")
    con.execute(f"SET allowed_directories = [{', '.join(_quote(a) for a in allowed)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
