"""The benchmarks still speak today's API: every module imports, and the Python snippets their
cases run in child processes import only names that exist (the benchmarks themselves are too
slow for the test suite: ``make bench``)."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
BENCH = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "_child")  # _child runs argv


def _snippets(module: object) -> list[str]:
    """Module-level strings that are Python code run with ``python -c``."""
    return [v.replace("{cast}", "") for k, v in vars(module).items()
            if k.startswith("_") and not k.startswith("__") and isinstance(v, str) and "import" in v]


@pytest.mark.parametrize("path", BENCH, ids=lambda p: p.stem)
def test_benchmark_module_and_its_snippets_import(path: Path) -> None:
    module = importlib.import_module(f"benchmarks.{path.stem}")
    for code in _snippets(module):
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tensorguard"):
                imported = importlib.import_module(str(node.module))
                for alias in node.names:
                    assert hasattr(imported, alias.name), f"{path.name}: {node.module}.{alias.name}"
    assert sys.modules[f"benchmarks.{path.stem}"] is module
