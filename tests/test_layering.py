"""The package's layering: packages import downwards only, and no two modules import each other,
directly or round a longer circle, whether the import sits at the top, inside a function or
behind ``TYPE_CHECKING`` (each of those hides a circle rather than breaking it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.unit  # make test-fast

PACKAGE = REPO / "bids_mdd"

#: Packages by floor: a module may import its own package and lower floors only.
FLOORS = {"_version": 0, "errors": 0, "lifetime": 0, "spaces": 1, "atlas": 1, "metrics": 1,
          "harmonize": 1, "html_page": 1, "bids": 2,
          "preproc": 3, "models": 3, "synth": 4, "training": 4, "participant": 5, "group": 5,
          "hpc": 5,
          "cli": 6}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path) -> set[str]:
    """The bids_mdd modules ``path`` imports anywhere in it (``from a import b`` counts as
    ``a.b`` when that is a module, else as ``a``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "bids_mdd":
                continue
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in MODULES}
    return found - {"bids_mdd"}  # the package's __init__ holds the version only


def _package(module: str) -> str:
    return module.split(".")[1]


def test_packages_import_downwards_only() -> None:
    wrong = []
    for module, path in MODULES.items():
        if module == "bids_mdd":
            continue
        own = _package(module)
        for imported in {_package(m) for m in imported_modules(path)} - {own}:
            if FLOORS[imported] >= FLOORS[own]:
                wrong.append(f"{module} imports {imported}")
    assert set(FLOORS) >= {_package(m) for m in MODULES if m != "bids_mdd"}
    assert wrong == []


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), and the
    modules that import themselves: each is an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_the_circle_finder_finds_circles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(import_circles(graph)) == [["a", "b", "c"], ["e"]]
    assert import_circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_between_modules() -> None:
    graph = {module: imported_modules(path) - {module} for module, path in MODULES.items()}
    assert import_circles(graph) == []


def test_no_import_circle_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        if module != "bids_mdd":
            graph.setdefault(_package(module), set()).update(
                _package(m) for m in imported_modules(path))
    graph = {package: targets - {package} for package, targets in graph.items()}
    assert import_circles(graph) == []
