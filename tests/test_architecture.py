"""The package's import graph: imports go one way (no cycle) and the library never imports the CLI.

Every ``import`` statement of every module counts, at module level and inside functions (a lazy import
that closes a loop hides a dependency; it does not remove it). Imports under ``if TYPE_CHECKING:`` are
left out: they never run, and annotations may name a type from anywhere.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import reidcompress

PACKAGE = Path(reidcompress.__file__).parent
CLI = ("reidcompress.cli", "reidcompress.__main__")  # `python -m reidcompress` is the CLI too


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every dotted name an import statement of ``tree`` asks for (``from a import b``: ``a.b``)."""
    found: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            found.update(f"{base}.{alias.name}" for alias in node.names)
        stack.extend(ast.iter_child_nodes(node))
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a name that is an attribute, not a module, maps to its
    module). Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``; those implicit package edges are
    not counted: the package runs first, whoever imports it."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        deps = set()
        for imported in _imported_names(tree, name, path.name == "__init__.py"):
            if not imported.startswith("reidcompress"):
                continue
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                deps.add(imported)
        graph[name] = deps
    return graph


def test_the_graph_sees_module_and_function_level_imports() -> None:
    graph = import_graph()
    assert "reidcompress.prune.record" in graph["reidcompress.prune.api"]  # module level
    assert "reidcompress.data.datasets" in graph["reidcompress.prune.training"]  # inside load_prune_data
    assert "reidcompress.cli.prune" in graph["reidcompress.cli"]


def test_no_library_module_imports_the_cli() -> None:
    graph = import_graph()
    offenders = {
        mod: sorted(d for d in deps if d.startswith("reidcompress.cli"))
        for mod, deps in graph.items()
        if not mod.startswith(CLI)
    }
    assert {mod: deps for mod, deps in offenders.items() if deps} == {}


def test_imports_have_no_cycle() -> None:
    graph = import_graph()
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")
