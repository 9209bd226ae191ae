"""The shape of the package: no import cycles between kdaudit's modules, no oversized file.

The import graph is read from the source with ``ast``, not by importing: every ``import`` and
``from ... import`` statement counts, at module level or inside a function (a deferred import
hides a cycle, it does not remove it), except those under ``if TYPE_CHECKING:``, which never run.
``from pkg import name`` imports the module ``pkg.name`` when there is one, else ``pkg`` itself
(its ``__init__``); a package's ``__init__`` that imports one of its submodules depends on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kdaudit

SRC = Path(kdaudit.__file__).resolve().parent
MAX_LINES = 500


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package in directory ``root``, by dotted name (a package by its own)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that can run: everywhere but the bodies of ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return found


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute name of a ``from X import ...`` statement's X."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module → the modules of the same package it imports."""
    modules = module_names(root, package)

    def known(name: str) -> str | None:
        """``name`` if it is a module of the package, else its longest prefix that is one."""
        parts = name.split(".")
        while parts:
            if ".".join(parts) in modules:
                return ".".join(parts)
            parts.pop()
        return None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [known(alias.name) for alias in node.names]
            else:
                base = _resolve(node, module, is_package)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else known(base) for alias in node.names
                ]
            graph[module].update(t for t in targets if t is not None and t != module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
    return sorted(found)


def describe(graph: dict[str, set[str]], component: list[str]) -> str:
    inside = set(component)
    edges = [f"  {a} -> {b}" for a in component for b in sorted(graph[a] & inside)]
    return "\n".join([f"cycle of {len(component)} modules: {', '.join(component)}", *edges])


def test_no_import_cycles_between_kdaudit_modules():
    graph = import_graph(SRC, "kdaudit")
    assert len(graph) > 50 and graph["kdaudit.cli.main"], "the walk found the package"
    found = cycles(graph)
    assert not found, "\n" + "\n".join(describe(graph, c) for c in found)


def test_no_source_file_is_over_500_lines():
    sizes = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    assert {p: n for p, n in sorted(sizes.items()) if n > MAX_LINES} == {}


# ------------------------------------------------------------------- the walk on small packages


def _package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_walk_resolves_every_kind_of_import_on_an_acyclic_package(tmp_path):
    pkg = _package(
        tmp_path,
        {
            "__init__.py": "from .a import f\n",
            "a.py": "import os\nfrom .b import g\n\ndef f():\n    return g()\n",
            "b.py": (
                "from typing import TYPE_CHECKING\nimport numpy\n\n"
                "if TYPE_CHECKING:\n    from .a import f  # never runs\nelse:\n    from . import c\n\n"
                "def g():\n    import pkg.sub.x as x\n    return x\n"
            ),
            "c.py": "CONST = 1\n",
            "sub/__init__.py": "from . import y\n",
            "sub/x.py": "from ..c import CONST\nfrom pkg import c\nfrom .. import c as cc\n",
            "sub/y.py": "from .x import *\nfrom pkg import f\nfrom ...outside import z\n",
        },
    )
    assert import_graph(pkg, "pkg") == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.c", "pkg.sub.x"},
        "pkg.c": set(),
        "pkg.sub": {"pkg.sub.y"},
        "pkg.sub.x": {"pkg.c"},
        "pkg.sub.y": {"pkg.sub.x", "pkg"},
    }
    assert cycles(import_graph(pkg, "pkg")) == []


def test_the_walk_finds_a_cycle_through_a_function_level_import(tmp_path):
    pkg = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from . import b\n",
            "b.py": "def f():\n    from .c import x\n    return x\n",
            "c.py": "import pkg.a\nx = 1\n",
            "d.py": "from .a import b\n",
        },
    )
    graph = import_graph(pkg, "pkg")
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert "pkg.a -> pkg.b" in describe(graph, ["pkg.a", "pkg.b", "pkg.c"])


def test_a_package_init_and_its_submodule_importing_each_other_is_a_cycle(tmp_path):
    pkg = _package(
        tmp_path,
        {
            "__init__.py": "from .a import f\nVERSION = '1'\n",
            "a.py": "def f():\n    from . import VERSION\n    return VERSION\n",
            "sub/__init__.py": "from .s import t\n",
            "sub/s.py": "from pkg.sub import u\nt = 1\n",
            "sub/u.py": "",
        },
    )
    assert cycles(import_graph(pkg, "pkg")) == [["pkg", "pkg.a"]]
