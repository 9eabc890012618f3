"""The house rules of docs/architecture.md, checked on the source: the module import
graph (function-level imports counted) has no cycle and only the allowed arrows."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fedinv", "solvers", "clients", "server", "studies")
GATEWAY = "fedinv.hybrid"
"""The one module of ``fedinv`` that may import ``solvers``."""
THIRD_PARTY_HOMES = {
    "flwr": ("clients", "server"),
    "pyomo": ("solvers",),
    "highspy": ("solvers",),
}
"""Libraries that only some rooms may import (``fedinv`` drives Flower's command lines
as processes, never imports it)."""


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imported_names(module: str, path: Path, tree: ast.AST) -> Iterator[str]:
    """Every dotted name an import statement of ``module`` reaches (relative resolved)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = (
                    module.split(".") if path.name == "__init__.py" else (module.split(".")[:-1])
                )
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """``(project, third_party)``: module -> project modules it imports, and module ->
    top-level third-party packages it imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    external: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name in _imported_names(module, path, tree):
            target = name
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if not target:
                external[module].add(name.split(".")[0])
            elif target != module and not (
                path.name == "__init__.py" and target.startswith(module + ".")
            ):
                graph[module].add(target)
    return graph, external


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _room(module: str) -> str:
    return module.split(".")[0]


def forbidden_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Arrows against ``studies -> server/clients -> fedinv -> (gateway) -> solvers``."""
    allowed = {
        "studies": {"studies", "server", "clients", "fedinv", "solvers"},
        "server": {"server", "fedinv"},
        "clients": {"clients", "fedinv"},
        "fedinv": {"fedinv", "solvers"},
        "solvers": {"solvers", "fedinv"},
    }
    bad = []
    for source, targets in graph.items():
        for target in sorted(targets):
            room, goal = _room(source), _room(target)
            if goal not in allowed[room]:
                bad.append(f"{source} -> {target}")
            elif room == "fedinv" and goal == "solvers" and source != GATEWAY:
                bad.append(f"{source} -> {target} (only {GATEWAY} may import solvers)")
            elif room == "solvers" and target == GATEWAY:
                bad.append(f"{source} -> {target} (solvers see fedinv's types, not the gateway)")
    return sorted(bad)


def test_the_import_graph_has_no_cycle():
    graph, _ = import_graph()
    assert len(graph) > 40  # the walk found the project
    assert cycles(graph) == []


def test_only_allowed_arrows():
    graph, _ = import_graph()
    assert forbidden_arrows(graph) == []


def test_third_party_libraries_stay_in_their_rooms():
    _, external = import_graph()
    bad = [
        f"{module} imports {lib}"
        for module, libs in sorted(external.items())
        for lib in sorted(libs)
        if lib in THIRD_PARTY_HOMES and _room(module) not in THIRD_PARTY_HOMES[lib]
    ]
    assert bad == []


def test_the_checker_finds_a_cycle_and_a_bad_arrow():
    """The rules are not vacuous: a made-up graph with both defects is caught."""
    graph = {
        "fedinv.a": {"fedinv.b"},
        "fedinv.b": {"fedinv.a", "solvers.x"},
        "solvers.x": {GATEWAY},
        GATEWAY: set(),
        "server.s": {"studies.t"},
        "studies.t": set(),
    }
    assert cycles(graph) == [["fedinv.a", "fedinv.b"]]
    assert forbidden_arrows(graph) == [
        "fedinv.b -> solvers.x (only fedinv.hybrid may import solvers)",
        "server.s -> studies.t",
        "solvers.x -> fedinv.hybrid (solvers see fedinv's types, not the gateway)",
    ]
