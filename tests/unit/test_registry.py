"""The one registry: its decorator factory, duplicate names, and auto-discovery of a plug-in package's
modules (a new loss term, method or task is one new file, no import line)."""

from __future__ import annotations

import ast
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.errors import DuplicateRegistration, UnknownLossTerm, UnknownName
from workers.registry import Registry, import_submodules

PLUGIN_PACKAGES = ("workers/loss_terms", "workers/ft_methods", "workers/tasks")
ROOT = Path(__file__).resolve().parents[2]


class Base:
    name = ""


def test_register_names_classes_and_functions() -> None:
    reg: Registry[object] = Registry("widget")

    @reg.register("square")
    class Square(Base):
        pass

    @reg.register("double")
    def double(x: int) -> int:
        return 2 * x

    assert reg.get("square") is Square and Square.name == "square"
    assert reg.get("double") is double and double(3) == 6  # a function is registered unchanged
    assert reg.names() == ["double", "square"] and "square" in reg and len(reg) == 2


def test_duplicate_name_is_an_error_and_keeps_the_first() -> None:
    reg: Registry[type[Base]] = Registry("widget")

    @reg.register("a")
    class First(Base):
        pass

    with pytest.raises(DuplicateRegistration, match="widget 'a' is already registered"):

        @reg.register("a")
        class Second(Base):
            pass

    assert reg.get("a") is First
    reg.register("a")(First)  # the same object again (a module imported twice) is not a duplicate
    with pytest.raises(DuplicateRegistration, match="non-empty name"):
        reg.register("")(Base)


def test_unknown_name_lists_the_valid_ones_with_the_registry_error() -> None:
    reg: Registry[type[Base]] = Registry("loss term", UnknownLossTerm)
    reg.register("ce")(type("CE", (Base,), {}))
    with pytest.raises(UnknownLossTerm, match="unknown loss term 'nope'; valid: ce") as e:
        reg.get("nope", field="search.loss_terms.0")
    assert e.value.field == "search.loss_terms.0" and isinstance(e.value, UnknownName)


@pytest.fixture
def plugin_package(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A throw-away plug-in package on ``sys.path`` whose ``__init__`` does what the real ones do."""
    name = "autoft_test_plugins"
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            """
            from workers.registry import Registry, import_submodules

            WIDGETS = Registry("widget")
            import_submodules(__name__)
            """
        )
    )
    (pkg / "one.py").write_text(
        f"from {name} import WIDGETS\n\n@WIDGETS.register('one')\nclass One:\n    pass\n"
    )
    sys.path.insert(0, str(tmp_path))
    yield name, pkg
    sys.path.remove(str(tmp_path))
    for mod in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[mod]


def test_a_module_dropped_into_a_plugin_package_is_found(plugin_package: tuple[str, Path]) -> None:
    import importlib

    name, pkg = plugin_package
    (pkg / "two.py").write_text(
        f"from {name} import WIDGETS\n\n@WIDGETS.register('two')\nclass Two:\n    pass\n"
    )
    (pkg / "_private.py").write_text("raise RuntimeError('a _private module is not a plug-in')\n")
    module = importlib.import_module(name)
    assert module.WIDGETS.names() == ["one", "two"]  # no import line for either
    assert import_submodules(name) == [f"{name}.one", f"{name}.two"]  # again: nothing registers twice
    assert module.WIDGETS.names() == ["one", "two"]


@pytest.mark.parametrize("package", PLUGIN_PACKAGES)
def test_plugin_packages_discover_their_modules(package: str) -> None:
    """Each plug-in package's ``__init__`` calls ``import_submodules(__name__)`` at module level."""
    tree = ast.parse((ROOT / package / "__init__.py").read_text())
    calls = [
        n.value
        for n in tree.body
        if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Name)
    ]
    assert any(c.func.id == "import_submodules" and ast.unparse(c.args[0]) == "__name__" for c in calls)  # type: ignore[attr-defined]


def test_every_registered_decorator_in_the_tree_is_registered() -> None:
    """Every ``@…register…("name")`` in a plug-in package's files is in its registry after import."""
    from workers.ft_methods import FT_METHODS
    from workers.loss_terms import LOSS_TERMS
    from workers.tasks import TASKS

    registries = {"workers/loss_terms": LOSS_TERMS, "workers/ft_methods": FT_METHODS, "workers/tasks": TASKS}
    for package, registry in registries.items():
        for path in (ROOT / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                    for d in node.decorator_list:
                        if isinstance(d, ast.Call) and "register" in ast.unparse(d.func) and d.args:
                            name = ast.literal_eval(d.args[0])
                            assert name in registry, f"{path.name}: {name!r} not registered"


def test_every_builtin_is_registered_through_discovery() -> None:
    from workers.ft_methods import FT_METHODS
    from workers.loss_terms import LOSS_TERMS
    from workers.tasks import TASKS

    assert {"ce", "hinge", "entropy", "dcm", "l1_init", "l2_init", "l1_zero", "l2_zero", "flyp"} <= set(
        LOSS_TERMS.names()
    )
    methods = {"ft", "lp", "lp_ft", "l2_sp", "delta", "tpgm", "ftp", "spd", "wise_ft", "flyp", "layerwise"}
    assert methods <= set(FT_METHODS.names())
    assert "digits-shift" in TASKS


def test_searchable_is_a_class_flag() -> None:
    from workers.ft_methods import FT_METHODS

    unsearchable = {n for n in FT_METHODS.names() if not FT_METHODS.get(n).searchable}
    assert unsearchable == {"lp", "wise_ft"}
