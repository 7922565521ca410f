"""Progress reporting without printing from library code.

Library functions take a :class:`Reporter`; the CLI passes one that draws rich progress bars,
tests pass nothing (:class:`NullReporter`).
"""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    def task(self, description: str, total: int | None) -> int: ...

    def advance(self, task: int, n: int = 1, **fields: object) -> None: ...

    def done(self, task: int) -> None: ...

    def log(self, message: str) -> None: ...


class NullReporter:
    def task(self, description: str, total: int | None) -> int:
        return 0

    def advance(self, task: int, n: int = 1, **fields: object) -> None:
        pass

    def done(self, task: int) -> None:
        pass

    def log(self, message: str) -> None:
        pass


class ListReporter(NullReporter):
    """Collects log lines (tests use it to check what would be shown)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)
