"""No module-level import cycle among the project's modules (read with `ast`, nothing is imported).

An import counts when it runs at import time or is there for a reader: module level, class bodies,
``if``/``try``/``with`` blocks, ``if TYPE_CHECKING:`` included. Imports inside a function body do
not count: they are lazy on purpose (to defer a heavy module until it is needed).
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "streams", "sinks", "infra", "bench")


def project_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` file under each package directory."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _import_time_statements(body: Iterable[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement of `body` that runs when the module is imported (function bodies do not)."""
    for stmt in body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        yield stmt
        for child in ast.iter_child_nodes(stmt):
            if isinstance(child, ast.stmt):
                yield from _import_time_statements([child])
            elif isinstance(child, ast.ExceptHandler | ast.match_case):
                yield from _import_time_statements(child.body)


def _project_target(name: str, modules: Mapping[str, Path]) -> str | None:
    """The longest prefix of dotted `name` that is a project module."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _imported(module: str, path: Path, stmt: ast.stmt, modules: Mapping[str, Path]) -> Iterator[str]:
    if isinstance(stmt, ast.Import):
        for alias in stmt.names:
            target = _project_target(alias.name, modules)
            if target is not None:
                yield target
    elif isinstance(stmt, ast.ImportFrom):
        base = stmt.module or ""
        if stmt.level:
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            anchor = package[: len(package) - (stmt.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in stmt.names:
            # `from pkg import submodule` imports the submodule; `from module import name` the module.
            target = _project_target(f"{base}.{alias.name}", modules) if alias.name != "*" else None
            target = target or _project_target(base, modules)
            if target is not None:
                yield target


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module → the project modules it imports at import time (or under ``if TYPE_CHECKING:``)."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[module] = {
            target
            for stmt in _import_time_statements(tree.body)
            for target in _imported(module, path, stmt, modules)
            if target != module
        }
    return graph


def _strongly_connected(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module, each sorted, in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def _cycle_through(start: str, members: set[str], graph: Mapping[str, set[str]]) -> list[str]:
    """A shortest import path from `start` back to itself inside one component."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{start} is in a component but on no cycle")  # unreachable for a real SCC


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One named cycle (``a → b → a``) per group of modules that import each other."""
    return [_cycle_through(component[0], set(component), graph) for component in _strongly_connected(graph)]


def test_project_has_no_import_cycle() -> None:
    modules = project_modules(ROOT, PACKAGES)
    assert "streams.core.definitions" in modules  # the scan sees the tree
    cycles = find_cycles(import_graph(modules))
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(cycle) for cycle in cycles)


def test_definitions_imports_neither_segments_nor_triggers() -> None:
    graph = import_graph(project_modules(ROOT, PACKAGES))
    assert graph["streams.core.definitions"].isdisjoint({"streams.core.segments", "streams.core.triggers"})
    assert "streams.core.definitions" in graph["streams.core.segments"]
    assert "streams.core.definitions" in graph["streams.core.triggers"]


def _write_package(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


def test_a_type_checking_import_closes_a_cycle(tmp_path: Path) -> None:
    _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import B\n",
            "pkg/b.py": """
                from typing import TYPE_CHECKING
                B = 1
                if TYPE_CHECKING:
                    from .a import A
            """,
            "pkg/c.py": "import pkg.a\n",
        },
    )
    cycles = find_cycles(import_graph(project_modules(tmp_path, ["pkg"])))
    assert cycles == [["pkg.a", "pkg.b", "pkg.a"]]


def test_a_longer_cycle_is_named_in_full(tmp_path: Path) -> None:
    _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "",
            "pkg/a.py": "from pkg.sub import b\n",
            "pkg/sub/b.py": "from .. import c\n",
            "pkg/c.py": "class C:\n    from pkg import a\n",
        },
    )
    cycles = find_cycles(import_graph(project_modules(tmp_path, ["pkg"])))
    assert cycles == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]


def test_imports_inside_functions_do_not_count(tmp_path: Path) -> None:
    _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import f\n",
            "pkg/b.py": """
                def f() -> None:
                    from pkg.a import g

                async def h() -> None:
                    import pkg.a
            """,
        },
    )
    graph = import_graph(project_modules(tmp_path, ["pkg"]))
    assert graph["pkg.b"] == set()
    assert find_cycles(graph) == []
