"""The Iceberg lake: catalog and tables from settings, sorted appends, maintenance."""

from k2.lake.catalog import TABLES, TableDef, ensure_tables, load_catalog, load_table, metadata_location
from k2.lake.writer import append, conform, sort_for_table

__all__ = [
    "TABLES",
    "TableDef",
    "append",
    "conform",
    "ensure_tables",
    "load_catalog",
    "load_table",
    "metadata_location",
    "sort_for_table",
]
