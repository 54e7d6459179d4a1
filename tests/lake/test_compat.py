"""pyiceberg's private API is used in one module, checked against the versions it was written for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pyiceberg.table.update.snapshot import _SnapshotProducer

from k2.lake import compat

SRC = Path(__file__).resolve().parents[2] / "src" / "k2"
# A private name imported from pyiceberg (not an alias like ``expressions as _expressions``), or SQL on the
# SQL catalog's own table.
_PRIVATE_IMPORT = re.compile(
    r"from pyiceberg[\w.]* import \(?\s*(?:[\w, \n]*,\s*)?_[A-Za-z]|FROM iceberg_tables"
)


def test_the_installed_pyiceberg_is_a_checked_version() -> None:
    installed = compat.unchecked_version()
    assert installed is None, (
        f"expected pyiceberg {' or '.join(compat.CHECKED_VERSIONS)}, found {installed}: re-check every private "
        "name in k2.lake.compat (run the maintenance tests), then add the version to CHECKED_VERSIONS"
    )


def test_every_private_name_k2_uses_is_present() -> None:
    assert compat.compatibility_problems() == []


def test_the_probe_notices_a_missing_private_method(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(_SnapshotProducer, "_deleted_entries")
    assert compat.compatibility_problems() == ["_SnapshotProducer._deleted_entries is missing"]


def test_no_other_module_touches_pyicebergs_private_api() -> None:
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.name != "compat.py" and _PRIVATE_IMPORT.search(path.read_text())
    ]
    assert offenders == []
