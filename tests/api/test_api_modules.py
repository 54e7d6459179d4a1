"""The API modules use each other through public names only (``bigasof`` once reached into
``bigpage._count``): a private helper of one module can change without breaking another."""

from __future__ import annotations

import ast
from pathlib import Path

import k2.api

API = Path(k2.api.__file__).parent


def _api_modules_imported(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "k2.api":
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def test_api_modules_use_no_private_name_of_another_api_module() -> None:
    found = []
    for path in sorted(API.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        modules = _api_modules_imported(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
                and node.attr.startswith("_")
            ):
                found.append(f"{path.relative_to(API)}:{node.lineno} {node.value.id}.{node.attr}")
    assert not found, f"expected public names across k2.api modules, found {found}"
