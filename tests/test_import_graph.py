"""The ``sternway`` package imports without a cycle.

The graph is read from the source with :mod:`ast`: every ``import`` of a ``sternway`` module, at
module level or inside a function (an import moved into a function only hides a cycle), but not
those under ``if TYPE_CHECKING:``, which never run, nor those under ``if __name__ ==
"__main__":``, which run only when the file is the program (``python worker.py``), as module
``__main__``, never while ``sternway.worker`` is imported.

``python -m tests.test_import_graph`` prints the graph's size and any cycle.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "sternway"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    """Every module of the package by name (the links in sternway/ are followed, once each)."""
    found: dict[str, Path] = {}
    for folder, _, files in os.walk(ROOT, followlinks=True):
        for file in files:
            if file.endswith(".py"):
                path = Path(folder) / file
                found[_module_name(path)] = path
    return found


def _never_on_import(node: ast.If) -> bool:
    """``if TYPE_CHECKING:`` or ``if __name__ == "__main__":``."""
    test = node.test
    if isinstance(test, ast.Compare) and isinstance(test.left, ast.Name):
        return test.left.id == "__name__" and any(
            isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators
        )
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package modules ``name`` imports when it runs."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def target(dotted: str) -> str | None:
        # The longest known module the dotted name starts with (`from a.b import c` may name a
        # module `a.b.c` or a name in `a.b`).
        while dotted:
            if dotted in modules:
                return dotted
            dotted = dotted.rpartition(".")[0]
        return None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _never_on_import(node):
            for branch in node.orelse:
                visit(branch)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                hit = target(alias.name)
                if hit:
                    found.add(hit)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                hit = target(f"{base}.{alias.name}") or target(base)
                if hit:
                    found.add(hit)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    found.discard(name)
    # Importing a.b.c runs a and a.b first; those edges are the package's own structure, not
    # a choice of the importing module, and a parent's re-export of its child is no cycle.
    return {m for m in found if not name.startswith(m + ".")}


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    sources = _sources()
    return {name: _imports(name, path, set(sources)) for name, path in sources.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected parts of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    parts: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                part.append(top)
                if top == node:
                    break
            if len(part) > 1:
                parts.append(sorted(part))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return parts


def test_the_package_imports_without_a_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 20, "the package's modules were not found"
    assert find_cycles(graph) == []


def test_the_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]


def test_the_cli_starts_without_pydantic() -> None:
    """`sternway status --json` and `list` must not pay for pydantic at start-up: the models
    and the converter's pydantic are imported by the commands that use them."""
    probe = (
        "import sys, sternway.starter.cli; "
        "print(sorted({'pydantic', 'sternway.workflows.models'} & set(sys.modules)))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert found == "[]"


if __name__ == "__main__":
    graph = import_graph()
    edges = sum(len(targets) for targets in graph.values())
    cycles = find_cycles(graph)
    print(f"{len(graph)} modules, {edges} import edges")
    for cycle in cycles:
        print("cycle:", " <-> ".join(cycle))
    print("no cycle" if not cycles else f"{len(cycles)} cycles")
    raise SystemExit(1 if cycles else 0)
