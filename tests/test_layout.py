"""The package's layout is its data flow: imports only point down the floors, and no two modules import each other.

Floors, bottom up: the basics; the models; preference data; scoring; fitting; steering; what is built on a
session (the demo, the benchmarks, the server, plugins); the command line. The imports are read from the
source (every import, also those inside functions), so a new module must be given a floor here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "drift_cpp"

FLOORS = [
    {"", "_core", "errors", "fileio", "params", "progress", "runtime"},
    {"chat", "models", "discovery"},
    {"preferences"},
    {"score"},
    {"fit", "evaluation"},
    {"steer"},
    {"demo", "bench", "server", "llm_plugin"},
    {"cli"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def floor(module: str) -> int:
    top = module.split(".")[0]
    for i, names in enumerate(FLOORS):
        if top in names:
            return i
    raise AssertionError(f"drift_cpp.{module} has no floor in tests/test_layout.py")


def imports(path: Path) -> set[str]:
    """The drift_cpp modules a file imports, relative to the package ('' is the package itself)."""
    module = module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if module == "":
        package = []
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
            elif node.module and (node.module == "drift_cpp" or node.module.startswith("drift_cpp.")):
                base = []
                node = ast.ImportFrom(module=node.module.partition("drift_cpp")[2].lstrip(".") or None,
                                      names=node.names, level=1)
            else:
                continue
            target = base + (node.module.split(".") if node.module else [])
            for alias in node.names:  # `from . import x` imports the module x where there is one
                sub = target + [alias.name]
                is_module = (alias.name == "_core"  # the native extension, built beside the sources
                             or PACKAGE.joinpath(*sub).with_suffix(".py").exists() or PACKAGE.joinpath(*sub).is_dir())
                found.add(".".join(sub if is_module else target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("drift_cpp."):
                    found.add(alias.name.partition(".")[2])
    found.discard(module)
    return found


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(package.rglob("*.py"))}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
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

    for v in g:
        if v not in index:
            visit(v)
    return out


def test_no_two_modules_import_each_other():
    g = graph()
    # A package's __init__ re-exports its modules; importing a module runs the __init__ first, which is no arrow.
    g = {m: {t for t in ts if not (m.startswith(t + ".") and t)} for m, ts in g.items()}
    assert cycles(g) == []


def test_imports_only_point_down_the_floors():
    up = sorted(f"{m or 'drift_cpp'} (floor {floor(m)}) imports {t} (floor {floor(t)})"
                for m, ts in graph().items() for t in ts if floor(t) > floor(m))
    assert up == []


@pytest.mark.parametrize("folder", ["experiments", "benchmarks"])
def test_experiments_use_the_library_not_the_command_line(folder):
    """Scripts may run the CLI as a user does (a subprocess); they never import its internals."""
    offenders = []
    for path in sorted((ROOT / folder).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("drift_cpp.cli"):
                offenders.append(f"{path.name}: from {node.module} import {', '.join(a.name for a in node.names)}")
    launcher = "run.py: from drift_cpp.cli import main"  # benchmarks/run.py is `drift-cpp bench` by another name
    assert [o for o in offenders if o != launcher] == []
