"""No import cycles among restream's own modules (engine, connector, tooling).

A cycle works only as long as every module in it happens to be imported in a lucky order, and
breaks when one of them reads a name from another that is still half-initialised. This test
reads every module's imports with :mod:`ast` (nothing is imported) and fails naming the
modules of any cycle.

Which imports count: those that run when the module is imported, the ones that can meet a
half-initialised module. That is every import statement outside a function body, including
those in class bodies and under ``if``/``try`` at module level, but not those under
``if TYPE_CHECKING:`` (never run) nor those inside functions (they run when called, after
every module has finished importing; the CLI relies on that to import each command's module
only when it runs).

Importing ``a.b.c`` first runs ``a/__init__.py`` and ``a/b/__init__.py``, so an import also
depends on the packages above its target, except those above the importing module itself
(they are already being imported when it runs). That catches cycles through the subpackages'
facades: a module that imports from a sibling package whose ``__init__`` imports, in turn,
the first module's own package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "connector", "tooling")


@dataclass(frozen=True, slots=True)
class ModuleFile:
    """A project module: its dotted name, its file, and whether it is a package."""

    name: str
    path: Path
    is_package: bool


def project_modules() -> dict[str, ModuleFile]:
    """Every module of the project's packages, by dotted name."""
    modules: dict[str, ModuleFile] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            name = ".".join(parts)
            modules[name] = ModuleFile(name, path, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_time_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported (see the module docstring)."""
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
        else:
            pending.extend(ast.iter_child_nodes(node))


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def dependencies(module: ModuleFile, modules: Mapping[str, ModuleFile]) -> set[str]:
    """The project modules that importing ``module`` runs first (or finds half-initialised)."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
    own_ancestors = set(_ancestors(module.name))
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    found: set[str] = set()

    def target(name: str) -> None:
        for ancestor in _ancestors(name):
            if ancestor not in own_ancestors:
                found.add(ancestor)
        found.add(name)

    for node in import_time_imports(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target(alias.name)
            continue
        base = node.module or ""
        if node.level:  # relative: from the module's package, up level - 1 packages
            anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            if submodule in modules:
                target(submodule)  # `from pkg import submodule`: the submodule is imported
                if base not in own_ancestors:
                    target(base)
            else:
                target(base)  # a name read from `base`, which must have finished importing
    return {name for name in found if name in modules and name != module.name}


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it depends on at import time."""
    modules = project_modules()
    return {name: dependencies(module, modules) for name, module in modules.items()}


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle (its modules in import order, the first repeated last) per strongly connected
    component of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: set[str], graph: Mapping[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first)."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    return [*paths[node], start]
                if child not in paths:
                    paths[child] = [*paths[node], child]
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def test_the_graph_covers_every_package() -> None:
    graph = import_graph()
    for package in PACKAGES:
        assert package in graph, f"{package} not found under {ROOT}"
    # A dependency every reader of this test can check by eye, so the parsing is not vacuous.
    assert "connector.kafka.offsets" in graph["connector.positions.ranges"]
    assert "connector.kafka" in graph["connector.positions.ranges"]  # its package's __init__


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert found == [], (
        "import cycles (each module imports the next at import time):\n"
        + "\n".join("  " + " -> ".join(cycle) for cycle in found)
    )


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c", "a"]]


def test_type_checking_and_function_imports_do_not_count() -> None:
    tree = ast.parse(
        "import typing\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import engine.log\nelse:\n    import engine.merge\n"
        "if typing.TYPE_CHECKING:\n    import engine.keys\n"
        "class C:\n    import engine.errors\n    def f(self):\n        import engine.planner\n"
        "def g():\n    import engine.pipeline\n"
        "try:\n    import engine.windows\nexcept ImportError:\n    pass\n"
    )
    names = sorted(
        alias.name
        for node in import_time_imports(tree)
        for alias in node.names
        if isinstance(node, ast.Import)
    )
    assert names == ["engine.errors", "engine.merge", "engine.windows", "typing"]


def test_the_log_modules_need_no_deferred_imports() -> None:
    """The log, its merge, its positions and checkpoints form no cycle even counting the
    imports under ``if TYPE_CHECKING:`` and inside functions: the positions have their own
    module, so none of them needs a deferred import to break a circle."""
    names = ("engine.log", "engine.merge", "engine.positions", "engine.checkpoint")
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for name in names:
        tree = ast.parse(modules[name].path.read_text(encoding="utf-8"))
        graph[name] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in names:
                graph[name].add(node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in names)
    assert graph["engine.merge"] == {"engine.log", "engine.positions"}
    assert cycles(graph) == []
