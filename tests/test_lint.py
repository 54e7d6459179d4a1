"""The code standards hold in CI too: ruff (incl. DTZ, S608), ruff format and strict mypy report nothing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_ruff_reports_nothing() -> None:
    result = subprocess.run(
        [str(BIN / "ruff"), "check", "src", "tests", "benchmarks"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_ruff_format_would_change_nothing() -> None:
    result = subprocess.run(
        [str(BIN / "ruff"), "format", "--check", "src", "tests", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_strict_mypy_reports_nothing() -> None:
    result = subprocess.run([str(BIN / "mypy")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_layers_only_point_down() -> None:
    # import-linter's contract in pyproject.toml: cli > api|ops > sources|landing|query > bus|lake > ground.
    result = subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def _own_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function not counting the functions and classes nested in it (route registrations)."""
    nested = 0
    stack: list[ast.AST] = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            nested += (child.end_lineno or child.lineno) - child.lineno + 1
        else:
            stack.extend(ast.iter_child_nodes(child))
    return (node.end_lineno or node.lineno) - node.lineno + 1 - nested


def test_no_function_over_80_lines_without_a_reason_next_to_it() -> None:
    """A function that needs a scroll bar needs a name for each step, or a ``# long: why`` line above it."""
    unexplained = []
    for path in sorted((REPO / "src" / "k2").rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or _own_lines(node) <= 80:
                continue
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if not lines[first - 2].strip().startswith("# long:"):
                unexplained.append(
                    f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({_own_lines(node)} lines)"
                )
    assert unexplained == []
