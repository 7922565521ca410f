"""Terminal output for the CLI: a rich progress reporter and table helpers (library code never
prints; it takes a :class:`~edgerobust.progress.Reporter`)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, highlight=False)
# Piped output (CI logs, files) gets a wide table instead of rich's 80-column default.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


class RichReporter:
    """Progress bars on stderr (transient), log lines kept above them."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal and not _force_progress(),
        )

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def task(self, description: str, total: int | None) -> int:
        return self.progress.add_task(description, total=total, info="")

    def advance(self, task: int, n: int = 1, **fields: object) -> None:
        completed = fields.pop("completed", None)
        info = "  ".join(f"{k} {v}" for k, v in fields.items())
        if completed is not None:
            self.progress.update(task, completed=completed, info=info)
        else:
            self.progress.update(task, advance=n, info=info)

    def done(self, task: int) -> None:
        self.progress.remove_task(task)

    def log(self, message: str) -> None:
        console.print(message)


def _force_progress() -> bool:
    return "--progress" in sys.argv
