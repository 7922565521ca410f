"""Sanity checks that make robustness figures trustworthy (in the spirit of AutoAttack's flags).

Each check looks at figures already measured and returns :class:`SanityFlag` records; nothing
here changes a number. The checks:

* ``eps0``: robust accuracy at eps = 0 must equal clean accuracy (the attack must not alter an
  input it has no budget for, and the bookkeeping must count the same samples).
* ``monotone``: robust accuracy must not rise with eps. Minimisation attacks are monotone by
  construction (foolbox clips one adversarial to each eps); fixed-eps attacks such as FGSM are
  not, and a rise there is a symptom worth seeing (a weak, single-step attack).
* ``blackbox-beats-whitebox``: a decision-based attack that gets lower robust accuracy than every
  white-box attack on the same model suggests gradient masking (Athalye et al., 2018), or budgets
  that are not comparable; either way a reader should know.
* ``zero-gradients``: the input gradient of the loss is zero (or not finite) for every sample, so
  gradient attacks cannot move; their robust accuracy is then meaningless.

Only numpy is imported.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class SanityFlag:
    """One failed check: which check, on which attack and model, and one line saying why."""

    check: str
    attack: str | None
    target: str | None
    message: str

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


def check_eps0(
    attack: str,
    target: str,
    eps: Sequence[float],
    robust_accuracy: Sequence[float],
    clean_accuracy: float,
) -> list[SanityFlag]:
    """Flag when robust accuracy at eps 0 differs from clean accuracy (no eps-0 point: no flag)."""
    flags = []
    for e, acc in zip(eps, robust_accuracy, strict=True):
        if e == 0 and not np.isclose(acc, clean_accuracy, rtol=0, atol=1e-9):
            flags.append(
                SanityFlag(
                    "eps0",
                    attack,
                    target,
                    f"robust accuracy at eps 0 is {acc:.4f} but clean accuracy is "
                    f"{clean_accuracy:.4f}: the attack changes inputs it has no budget for",
                )
            )
    return flags


def check_monotone(
    attack: str, target: str, eps: Sequence[float], robust_accuracy: Sequence[float]
) -> list[SanityFlag]:
    """Flag every place where robust accuracy rises from one eps to a larger one."""
    order = np.argsort(np.asarray(eps, dtype=float), kind="stable")
    e = np.asarray(eps, dtype=float)[order]
    acc = np.asarray(robust_accuracy, dtype=float)[order]
    flags = []
    for k in range(1, len(e)):
        if acc[k] > acc[k - 1] + 1e-12:
            flags.append(
                SanityFlag(
                    "monotone",
                    attack,
                    target,
                    f"robust accuracy rises from {acc[k - 1]:.4f} at eps {e[k - 1]:g} to "
                    f"{acc[k]:.4f} at eps {e[k]:g}: a larger budget found fewer adversarials",
                )
            )
    return flags


@dataclass(frozen=True)
class Headline:
    """One attack's robust accuracy on one model at its headline (largest) eps."""

    attack: str
    target: str
    label: str
    gradient: bool
    eps: float
    robust_accuracy: float


def check_blackbox_vs_whitebox(figures: Iterable[Headline]) -> list[SanityFlag]:
    """Per model: flag a black-box figure below every white-box figure measured on that model.

    Only white-box figures whose gradients came from the model itself (``direct``, ``bpda``)
    count: a transfer attack being weaker than a black-box one is expected, not suspicious.
    """
    by_target: dict[str, list[Headline]] = {}
    for f in figures:
        by_target.setdefault(f.target, []).append(f)
    flags = []
    for target, figs in by_target.items():
        white = [f for f in figs if f.gradient and f.label in ("direct", "bpda")]
        if not white:
            continue
        strongest = min(white, key=lambda f: f.robust_accuracy)
        for f in figs:
            if f.label == "blackbox" and f.robust_accuracy < strongest.robust_accuracy:
                flags.append(
                    SanityFlag(
                        "blackbox-beats-whitebox",
                        f.attack,
                        target,
                        f"{f.attack} (black-box, eps {f.eps:g}) leaves {f.robust_accuracy:.4f} "
                        f"robust accuracy, below every white-box attack (best: {strongest.attack} "
                        f"{strongest.robust_accuracy:.4f} at eps {strongest.eps:g}): gradients may "
                        "be masked, or the budgets are not comparable",
                    )
                )
    return flags


def check_gradients(target: str, grad_norms: np.ndarray) -> list[SanityFlag]:
    """Flag when every sample's input gradient is zero or any is not finite."""
    g = np.asarray(grad_norms, dtype=float)
    if g.size == 0:
        return []
    if not np.isfinite(g).all():
        return [
            SanityFlag(
                "zero-gradients",
                None,
                target,
                f"{int((~np.isfinite(g)).sum())} of {g.size} input gradients are not finite: "
                "gradient attacks on this model are not trustworthy",
            )
        ]
    if (g == 0).all():
        return [
            SanityFlag(
                "zero-gradients",
                None,
                target,
                f"the input gradient of the loss is zero for all {g.size} samples: gradient "
                "masking suspected, gradient attacks cannot move and their figures mean nothing",
            )
        ]
    return []


__all__ = [
    "Headline",
    "SanityFlag",
    "check_blackbox_vs_whitebox",
    "check_eps0",
    "check_gradients",
    "check_monotone",
]
