"""A small name → implementation registry shared by loss terms, tasks and metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from autoft_service.errors import DuplicateRegistration, UnknownName

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to implementations. A duplicate name is an error; an unknown name lists the valid ones."""

    def __init__(self, kind: str, unknown_error: type[UnknownName] = UnknownName) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._unknown_error = unknown_error

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name``."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
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
