"""The package's import graph, parsed from the source: no cycles, and no module below the
commands imports a task (ARCHITECTURE.md: the data flow runs one way)."""

from __future__ import annotations

import ast
from pathlib import Path

import saelab

PACKAGE = Path(saelab.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module -> the saelab modules it imports anywhere in its body (functions and
    TYPE_CHECKING blocks included: a deferred import is still a dependency)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(imports()) == []


def test_a_package_init_is_no_cycle_through_its_own_modules():
    """`saelab.x` (the package) importing `saelab.x.y` is how packages re-export; a module
    of `saelab.x` importing the package back would be a cycle and is reported above."""
    graph = imports()
    assert "saelab.evals.density" in graph["saelab.evals"]


def test_only_commands_import_tasks():
    graph = imports()
    upward = {
        (name, target)
        for name, targets in graph.items()
        for target in targets
        if target.startswith("saelab.tasks")
        and not name.startswith("saelab.tasks")
        and name not in ("saelab.cli", "saelab.__main__")
    }
    assert upward == set()
