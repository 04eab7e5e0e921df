"""A small name → implementation registry shared by loss terms, tasks, fine-tuning methods and metrics.

Adding an implementation is one new file: a module in a plug-in package (``workers/loss_terms/``,
``workers/ft_methods/``, ``workers/tasks/``) whose class carries ``@REGISTRY.register("name")``. The
package's ``__init__`` calls :func:`import_submodules`, which imports every module of the package, so no
import line is kept by hand.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Generic, TypeVar

from workers.errors import DuplicateRegistration, UnknownName

T = TypeVar("T")
Obj = TypeVar("Obj")


class Registry(Generic[T]):
    """Maps names to implementations. A duplicate name is an error; an unknown name lists the valid ones."""

    def __init__(self, kind: str, unknown_error: type[UnknownName] = UnknownName) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._unknown_error = unknown_error

    def register(self, name: str) -> Callable[[Obj], Obj]:
        """Decorator: register the decorated class or function under ``name``.

        A class also gets ``name`` as its ``name`` attribute (the name the spec, the catalog and the logs
        use). Registering a second, different implementation under a taken name raises
        ``DuplicateRegistration``."""

        def deco(obj: Obj) -> Obj:
            self.add(name, obj)  # type: ignore[arg-type]
            if isinstance(obj, type):
                obj.name = name  # type: ignore[attr-defined]
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if not name:
            raise DuplicateRegistration(f"a {self.kind} needs a non-empty name")
        if name in self._items and self._items[name] is not obj:
            raise DuplicateRegistration(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj

    def get(self, name: str, *, field: str | None = None) -> T:
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "(none)"
            raise self._unknown_error(f"unknown {self.kind} {name!r}; valid: {valid}", field=field) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def import_submodules(package: str | ModuleType) -> list[str]:
    """Import every module of ``package`` (its direct modules and sub-packages, not ``_private`` ones) so their
    ``@register`` decorators run; return the imported module names, sorted."""
    pkg = importlib.import_module(package) if isinstance(package, str) else package
    names = sorted(
        f"{pkg.__name__}.{info.name}"
        for info in pkgutil.iter_modules(pkg.__path__)
        if not info.name.startswith("_")
    )
    for name in names:
        importlib.import_module(name)
    return names
