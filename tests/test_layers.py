"""Module layering: the tools (``cdln.bench``, ``cdln.reference``) import the product, never the other way
round, and no package imports itself in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

SRC = REPO / "src"


def _module(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the cdln modules it imports (top-level or inside functions)."""
    modules = {_module(path): path for path in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cdln"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name.startswith("cdln")}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycle(graph: dict[str, set[str]], within: str) -> list[str] | None:
    nodes = {n for n in graph if n.startswith(within)}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node] & nodes):
            if state.get(nxt) == 1:
                return trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt]
            if nxt not in state and (found := visit(nxt, [*trail, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(nodes):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_import_cycle_in_the_tools_or_the_engine():
    graph = import_graph()
    for package in ("cdln.bench", "cdln.reference", "cdln.engine"):
        assert _cycle(graph, package) is None, f"import cycle in {package}: {' -> '.join(_cycle(graph, package))}"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"cdln.bench.a": {"cdln.bench.b"}, "cdln.bench.b": {"cdln.bench.a"}}, "cdln.bench")


def test_the_product_does_not_import_the_tools_and_problems_import_no_kernels():
    graph = import_graph()
    product = [m for m in graph if not m.startswith(("cdln.bench", "cdln.reference", "cdln.cli"))]
    for module in product:
        tools = sorted(t for t in graph[module] if t.startswith(("cdln.bench", "cdln.reference")))
        assert not tools, f"{module} imports the tools {tools}"
    assert not {t for t in graph["cdln.problems"] if t.startswith("cdln.engine")}


def test_the_tools_never_import_the_command_line():
    """The arrow goes cdln.cli -> cdln.bench and cdln.reference, never back up."""
    graph = import_graph()
    for module in (m for m in graph if m.startswith(("cdln.bench", "cdln.reference"))):
        up = sorted(t for t in graph[module] if t.startswith("cdln.cli"))
        assert not up, f"{module} imports the command line {up}"
