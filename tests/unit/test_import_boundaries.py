"""Import boundaries, read from the source (no module is imported): ``workers/`` never imports the service,
and no module-level import circle joins the modules of a package.

Only imports that run when a module is imported count for circles: those at module level (also inside
``try`` / ``if`` blocks there), not those inside functions or under ``if TYPE_CHECKING:``. An edge goes to
the module an import names (``from a.b import c`` names ``a.b.c`` when that is a module, else ``a.b``);
the parent packages that Python initialises on the way are not edges, since a plug-in package's
``__init__`` imports its own modules by design.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("autoft_service", "workers")


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The module names one import statement names (relative imports resolved)."""
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names)
        return
    base = node.module or ""
    if node.level:
        is_pkg = MODULES[module].name == "__init__.py"
        anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
        base = ".".join([*anchor, *([base] if base else [])])
    for a in node.names:
        yield f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base


def _walk(nodes: list[ast.AST], *, top_level_only: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and top_level_only:
            continue  # runs when called, not when the module is imported
        elif isinstance(node, ast.If) and top_level_only and _is_type_checking(node.test):
            yield from _walk(list(node.orelse), top_level_only=True)
        else:  # statement bodies, ``except`` handlers, ``match`` cases, class bodies …
            yield from _walk(list(ast.iter_child_nodes(node)), top_level_only=top_level_only)


def imports_of(module: str, *, top_level_only: bool) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    nodes = _walk(list(tree.body), top_level_only=top_level_only)
    return {name for node in nodes for name in _imported(module, node)}


def graph(modules: set[str]) -> dict[str, set[str]]:
    return {m: {t for t in imports_of(m, top_level_only=True) if t in modules and t != m} for m in modules}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, …, a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                return [*stack[stack.index(t) :], t]
            if t not in state and (found := visit(t)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_module_walk_sees_both_packages() -> None:
    assert {"workers.errors", "workers.registry", "autoft_service.spec", "autoft_service.api"} <= set(MODULES)
    assert "workers.registry" in imports_of("workers.loss_terms", top_level_only=True)
    # a deferred import (inside a function) is not a module-level edge, but the boundary check sees it
    assert "workers.loss_terms" not in imports_of("autoft_service.spec", top_level_only=True)
    assert "workers.loss_terms" in imports_of("autoft_service.spec", top_level_only=False)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.split(".")[0] == "workers"))
def test_workers_import_nothing_from_the_service(module: str) -> None:
    """Anywhere in the file, functions included: the worker side runs without the service installed."""
    bad = sorted(t for t in imports_of(module, top_level_only=False) if t.split(".")[0] == "autoft_service")
    assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle_in_the_package(package: str) -> None:
    modules = {m for m in MODULES if m.split(".")[0] == package}
    cycle = find_cycle(graph(modules))
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_circle_check_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_what_a_relaying_trial_imports_holds_no_torch() -> None:
    """A Tune trial that relays to a resident worker starts in about a second because neither it nor the
    pool imports torch or the training code (they import these modules only)."""
    import subprocess
    import sys

    code = "import sys, workers.trainable, workers.contexts, workers.residents; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
