"""Validate what we produce: an artifact must reproduce its source model on real images.

Tolerances are declared next to each exporter (:class:`ParityBar`) and never loosened quietly:
``--force`` keeps a failing artifact but its manifest says it failed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ParityBar:
    """What an artifact must achieve against its reference logits.

    fp32 artifacts: every logit within ``atol + rtol * |reference|``.
    int8 artifacts: top-1 agreement with the fp32 source of at least ``min_agreement``
    (logits of an int8 model legitimately differ; the max difference is reported, not gated).
    """

    atol: float | None = None
    rtol: float | None = None
    min_agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def describe(self) -> str:
        """The bar in words, for messages: ``top-1 agreement >= 98%``."""
        parts = []
        if self.min_agreement is not None:
            parts.append(f"top-1 agreement >= {self.min_agreement:.0%}")
        if self.atol is not None or self.rtol is not None:
            parts.append(f"|logit diff| <= {self.atol or 0:g} + {self.rtol or 0:g} x |reference|")
        return " and ".join(parts) or "none"


@dataclass(frozen=True)
class ParityResult:
    n: int
    top1_agreement: float
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    worst_excess: float | None  # max(|diff| - (atol + rtol |ref|)); <= 0 is within tolerance
    passed: bool
    bar: ParityBar
    reference: str
    images: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bar"] = self.bar.to_dict()
        return d

    def summary(self) -> str:
        return (
            f"top-1 agreement {self.top1_agreement:.2%} on {self.n} images, "
            f"max |logit diff| {self.max_abs_logit_diff:.3g}"
        )


def compare(
    reference: np.ndarray,
    candidate: np.ndarray,
    bar: ParityBar,
    *,
    reference_name: str,
    images: str,
) -> ParityResult:
    if reference.shape != candidate.shape:
        raise ValueError(
            f"logit shapes differ: reference {reference.shape}, artifact {candidate.shape}"
        )
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    agree = float((reference.argmax(1) == candidate.argmax(1)).mean()) if len(reference) else 0.0
    passed = len(reference) > 0
    excess: float | None = None
    if bar.atol is not None:
        allowed = bar.atol + (bar.rtol or 0.0) * np.abs(reference)
        excess = float((diff - allowed).max()) if diff.size else 0.0
        passed &= excess <= 0
    if bar.min_agreement is not None:
        passed &= agree >= bar.min_agreement
    return ParityResult(
        n=len(reference),
        top1_agreement=agree,
        max_abs_logit_diff=float(diff.max()) if diff.size else 0.0,
        mean_abs_logit_diff=float(diff.mean()) if diff.size else 0.0,
        worst_excess=excess,
        passed=bool(passed),
        bar=bar,
        reference=reference_name,
        images=images,
    )
