"""A table cell: an accuracy with its n and 95 % Wilson interval, pooling, and the cell type."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edgerobust.evaluate import wilson_interval

DASH = "–"  # an empty cell


@dataclass(frozen=True)
class Acc:
    """An accuracy measured on ``n`` images, with an optional robustness label."""

    correct: int
    n: int
    label: str | None = None  # direct | transfer | blackbox (attacks)

    @property
    def value(self) -> float | None:
        return self.correct / self.n if self.n else None

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.n)

    def text(self) -> str:
        if not self.n:
            return DASH
        lo, hi = self.ci95
        s = f"{100 * self.correct / self.n:.1f} [n={self.n}, {100 * lo:.1f}–{100 * hi:.1f}]"
        return f"{s} ({self.label})" if self.label else s


def pooled(accs: Iterable[Acc | None]) -> Acc | None:
    """All images of several accuracies counted together (the tables' averages)."""
    items = [a for a in accs if a is not None and a.n]
    if not items:
        return None
    # An average of attacks obtained differently says so: "direct+blackbox".
    labels = sorted({a.label for a in items if a.label})
    return Acc(sum(a.correct for a in items), sum(a.n for a in items), "+".join(labels) or None)


Cell = str | int | float | Acc | None
