"""A small named registry: register by name, list the names, fail on unknown names with the list."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from ponder._core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (classes, factories); `what` names the kind in error messages."""

    def __init__(self, what: str):
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.what} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise ConfigError(f"unknown {self.what} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
