"""The project's import graph: no cycles anywhere, counting imports inside functions and under TYPE_CHECKING (a
cycle hidden behind a lazy import is still two modules that cannot be understood apart), and the packages layered:
the model alone, training and the service apart, the benchmarks (not in the serving image) out of the service."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "training", "service", "bench", "speechflow")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every project module that ``name`` imports, wherever in the file the import stands."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # `from pkg import module` imports the module, else the names come from pkg
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {t for t in targets if t in known and t != name}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
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


def test_the_cycle_finder_finds_a_lazy_cycle(tmp_path):
    lazy = tmp_path / "b.py"
    lazy.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import c\n"
                    "def f():\n    from .a import thing\n")
    assert _imports("pkg.b", lazy, {"pkg.a", "pkg.b", "pkg.c"}) == {"pkg.a", "pkg.c"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_graph_sees_lazy_and_type_checking_imports():
    graph = import_graph()
    assert "service.lifecycle" in graph["service.app"]
    # speechflow's commands import their packages inside the functions that need them (start-up stays fast)
    assert any(t.startswith("service.") for t in graph["speechflow.commands.serving"])
    assert "service.lifecycle" in graph["service.middleware"]  # a TYPE_CHECKING import


def test_no_import_cycles():
    assert cycles(import_graph()) == []


# package -> the project packages it must never import: the model stands alone; training and the service share the
# model and never each other; the serving image ships no benchmarks, so the service cannot lean on them
FORBIDDEN = {"model": {"training", "service", "bench", "speechflow"}, "training": {"service", "bench", "speechflow"},
             "service": {"training", "bench", "speechflow"}, "bench": {"training", "speechflow"}}


def test_the_packages_are_layered():
    offenders = {m: sorted(t for t in targets if t.split(".")[0] in FORBIDDEN[m.split(".")[0]])
                 for m, targets in import_graph().items() if m.split(".")[0] in FORBIDDEN}
    assert not any(offenders.values()), {m: t for m, t in offenders.items() if t}
