"""Vendor files -> K2 tables (``k2 import ...``): Binance public data, Tardis.dev CSV, ASX samples.

Modules: :mod:`~k2.sources.files.source` (CSV/ZIP, ``.CHECKSUM``, line blocks),
:mod:`~k2.sources.files.parse` (exact column-wise parsing, bad lines with line numbers),
:mod:`~k2.sources.files.formats` (the registry of layouts), one module per vendor with its layouts and
their canonical mapping documented there (:mod:`~k2.sources.files.binance`, :mod:`~k2.sources.files.tardis`,
:mod:`~k2.sources.files.asx`) and what they share (:mod:`~k2.sources.files.layout`),
:mod:`~k2.sources.files.importer` (validate, dedup, Iceberg or Kafka), :mod:`~k2.sources.files.rejects`
(DLQ or local rejects file) and :mod:`~k2.sources.files.asx_reference`.

Example (needs a catalog)::

    from k2.sources.files import import_files
    import_files("binance-trades", [Path("BTCUSDT-trades-2021-01-03.csv")], load_settings())
"""

from k2.sources.files.formats import FORMATS, ImportOptions
from k2.sources.files.importer import ImportReport, import_files
from k2.sources.files.source import ChecksumMismatch, FileImportError

__all__ = ["FORMATS", "ChecksumMismatch", "FileImportError", "ImportOptions", "ImportReport", "import_files"]
