"""The shape of the source tree: no import cycle among the modules of ``src`` (imports inside functions
included) and no function body over 60 lines (its docstring excluded), checked per package so that a
failure names the package it is in. The graph is built from the source text (``ast``), nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_BODY_LINES = 60


def _modules(root: Path = SRC) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()
#: the packages checked one by one: shiftprobe's subpackages and modules, and the other top-level packages
PACKAGES = sorted({name.split(".")[1] if name.startswith("shiftprobe.") else name.split(".")[0] for name in MODULES})


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ``src`` that ``name`` imports (a package's own ``__init__`` left out: re-exports)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + ".") and modules[target].name != "__init__.py":
                found.add(target)
    return found


def _cycles(modules: dict[str, Path]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    graph = {name: _imports(name, path, modules) for name, path in modules.items() if path.name != "__init__.py"}
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _long_functions(path: Path) -> list[str]:
    """``file:line name (n lines)`` of every function whose body (docstring excluded) is over the limit."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                body = body[1:]
            if body and body[-1].end_lineno - body[0].lineno + 1 > MAX_BODY_LINES:
                out.append(f"{path.name}:{node.lineno} {node.name} "
                           f"({body[-1].end_lineno - body[0].lineno + 1} lines)")
    return out


def _in_package(name: str, package: str) -> bool:
    return (name.split(".")[1] if name.startswith("shiftprobe.") else name.split(".")[0]) == package


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package):
    cycles = [c for c in _cycles(MODULES) if any(_in_package(m, package) for m in c)]
    assert cycles == [], cycles


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_body_over_60_lines(package):
    long = [f for name, path in MODULES.items() if _in_package(name, package) for f in _long_functions(path)]
    assert long == [], long


def test_the_checks_find_what_they_look_for(tmp_path):
    """A cycle of two modules (one import inside a function) and a 61-line function are found."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg import b\n")
    (tmp_path / "pkg" / "b.py").write_text('def f():\n    """doc"""\n    from pkg.a import x\n' + "    y = 1\n" * 60)
    assert _cycles(_modules(tmp_path)) == [["pkg.a", "pkg.b"]]
    assert [f.split(" ")[1] for f in _long_functions(tmp_path / "pkg" / "b.py")] == ["f"]
