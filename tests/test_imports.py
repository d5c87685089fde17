"""The project's modules import each other in one direction only: an AST scan of every import
(at the top, inside functions, under TYPE_CHECKING) finds no cycle, and ``pipeline`` never
imports ``workflows``."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.workflow_helpers import ROOT

PACKAGES = ("pipeline", "workflows", "benchmarks")


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the packages."""
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules it imports. ``from a.b import c`` is the module ``a.b.c``
    where that is a module, else ``a.b``; importing ``a.b.c`` also runs ``a`` and ``a.b``, so
    those count as imported too."""
    modules = module_files(root, packages)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if is_package else name.split(".")[:-1]
                    here = here[:len(here) - node.level + 1]
                    base = ".".join([*here, base] if base else here)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for target in targets:
                parts = target.split(".")
                for k in range(1, len(parts) + 1):
                    dotted = ".".join(parts[:k])
                    if dotted not in modules or dotted == name:
                        continue
                    # A package above this module runs before it anyway: only an import
                    # that names it counts as importing it.
                    if k == len(parts) or not name.startswith(dotted + "."):
                        graph[name].add(dotted)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

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
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_project_has_no_import_cycle():
    graph = import_graph(ROOT)
    assert len(graph) > 40, "the scan found the modules"
    assert not cycles(graph), cycles(graph)


def test_the_library_never_imports_the_orchestration():
    graph = import_graph(ROOT)
    back = {m: sorted(d for d in deps if not d.startswith("pipeline"))
            for m, deps in graph.items() if m.startswith("pipeline")}
    assert not {m: d for m, d in back.items() if d}


def test_the_scan_finds_a_cycle_when_one_is_added(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub import b\n")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub.b import g\n")  # lazy import
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\n"
                                      "if TYPE_CHECKING:\n    from .. import a\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"}
    assert cycles(graph) == [["pkg.a", "pkg.sub", "pkg.sub.b"]]
