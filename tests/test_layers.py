"""The design, checked on the tree's own imports: no cycles, and the layers point one way.

Every import counts, including those inside functions (the lazy ones); only imports that exist for
type checkers (under ``if TYPE_CHECKING:``) are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tensorguard

ROOT = Path(tensorguard.__file__).parent
APP = ("tensorguard.app", "tensorguard.cli", "tensorguard.__main__")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path) -> set[str]:
    """The tensorguard modules ``path`` imports (a name imported from a package counts as the
    submodule when there is one of that name)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tensorguard"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tensorguard"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else str(node.module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _edges_to_parents(name: str) -> set[str]:
    """Importing ``a.b.c`` runs ``a.b``'s ``__init__`` first: a real edge to every parent package."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts))} - {"tensorguard"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` (depth-first search), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles() -> None:
    """Module imports, plus the implicit import of every parent package's ``__init__``; a
    package's ``__init__`` importing its own submodules is how packages work, not a cycle."""
    graph = {}
    for module, deps in GRAPH.items():
        edges = {t for dep in deps for t in {dep, *_edges_to_parents(dep)}} - {module}
        if MODULES[module].name == "__init__.py":
            edges = {d for d in edges if not d.startswith(module + ".")}
        graph[module] = edges
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_compute_never_reaches_into_the_application_layer_or_the_figures() -> None:
    for module, deps in GRAPH.items():
        if module.startswith(APP):
            continue
        assert not {d for d in deps if d.startswith(APP)}, module
        if not module.startswith("tensorguard.plots"):
            assert not {d for d in deps if d.startswith("tensorguard.plots")}, module


def test_the_registry_and_the_readers_do_not_depend_on_the_analyses() -> None:
    """Architecture knowledge and model reading sit at the bottom: they import no analysis."""
    analyses = ("tensorguard.fingerprints", "tensorguard.lineage", "tensorguard.clustering",
                "tensorguard.sensitivity", "tensorguard.probes", "tensorguard.summary",
                "tensorguard.signatures", "tensorguard.catalogue")
    for module, deps in GRAPH.items():
        if module.startswith(("tensorguard.architectures", "tensorguard.loading")):
            assert not {d for d in deps if d.startswith(analyses)}, module


def test_the_runtime_package_never_imports_the_test_support() -> None:
    """``tensorguard.testing`` builds derivative models for tests and benchmarks only."""
    for module, deps in GRAPH.items():
        if not module.startswith("tensorguard.testing"):
            assert not {d for d in deps if d.startswith("tensorguard.testing")}, module
