"""The package's shape, read from its source: every module imports on its own in a fresh
interpreter, no module of overseer (the actors included) takes part in an import circle, and
nothing in overseer/ imports pykka or the actors except the composition root, where ``overseer
serve`` builds the System."""
from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPOSITION_ROOT = "overseer.cli.main"
RUNTIME, TYPING = "runtime", "typing"   # an import that runs; one under ``if TYPE_CHECKING:``


def modules() -> dict[str, Path]:
    """Every Python module of the installed package by its dotted name (actors/ is overseer.actors),
    but ``__main__`` modules and the bundled example jobs."""
    found = {}
    for base, package in ((ROOT / "overseer", "overseer"), (ROOT / "actors", "overseer.actors")):
        for path in sorted(base.rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            if parts[0] == "examples" or parts[-1] == "__main__":
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, str]]:
    """``(module, kind)`` for each import in ``path``, at any depth (in functions too): the module
    it imports, or the module of the name it imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, str]] = []

    def visit(node: ast.AST, kind: str) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                visit(child, TYPING)
            for child in node.orelse:
                visit(child, kind)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, kind) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in known else base, kind))
        for child in ast.iter_child_nodes(node):
            visit(child, kind)

    visit(ast.parse(path.read_text(), str(path)), RUNTIME)
    return found


def graph(kinds: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the modules of overseer it imports (its own parent packages left out: importing a
    module imports them first, whatever it says)."""
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        parents = {name.rsplit(".", n)[0] for n in range(1, name.count(".") + 1)}
        edges[name] = {target for target, kind in imports(name, path, known)
                       if kind in kinds and target in known and target != name and target not in parents}
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                connect(w)
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

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return found


def test_every_module_imports_alone_in_a_fresh_interpreter(tmp_path):
    names = sorted(modules())
    assert len(names) > 50 and COMPOSITION_ROOT in names and "overseer.actors.system" in names

    def alone(name: str) -> tuple[str, int, str]:
        done = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
        return name, done.returncode, done.stderr.strip().splitlines()[-1:]

    with ThreadPoolExecutor(max_workers=2) as pool:
        failed = [(name, err) for name, code, err in pool.map(alone, names) if code]
    assert failed == []


def test_no_import_circle():
    runtime = graph((RUNTIME,))
    assert "overseer.actors.system" in runtime[COMPOSITION_ROOT]   # a function's import is seen
    assert circles(runtime) == []
    assert circles(graph((RUNTIME, TYPING))) == []   # nor one that only a type checker would follow


def test_only_the_composition_root_imports_pykka_or_the_actors():
    known = modules()
    found = {}
    for name, path in known.items():
        if name.startswith("overseer.actors"):
            continue
        for target, kind in imports(name, path, known):
            if kind == RUNTIME and (target.split(".")[0] == "pykka" or target.startswith("overseer.actors")):
                found.setdefault(name, set()).add(target)
    assert set(found) == {COMPOSITION_ROOT}, found
