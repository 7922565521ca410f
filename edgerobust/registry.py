"""One registry type for architectures, runtimes, attacks and study stages (timm-style).

``get(name)`` fails with a one-line error listing the choices, ``list(pattern)`` filters with shell
patterns, and registering a name twice is an error rather than a silent overwrite. Light: no torch.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from edgerobust.errors import ConfigError, EdgeRobustError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, error: type[EdgeRobustError] = ConfigError) -> None:
        self.kind = kind
        self._error = error
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form: ``@registry.register("name")``."""
        return lambda item: self.add(name, item)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise self._error(
                f"unknown {self.kind} {name!r}: choose one of {', '.join(self._items)}"
            ) from None

    def list(self, pattern: str = "*") -> list[str]:
        return [n for n in self._items if fnmatch.fnmatch(n, pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())
