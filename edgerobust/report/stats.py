"""Statistics for comparing two models' accuracies, and the verdict they support.

A finding such as "int8 loses target accuracy" compares two accuracies. When both models were
measured on the same images, the comparison is paired: only the images on which they disagree
carry information (McNemar's test; a bootstrap over images for the interval of the difference).
When they were measured on different images, the two proportions are independent (Newcombe's
hybrid score interval for the difference of two proportions, built from Wilson intervals).

Everything here is numpy and the standard library, so the report can be written without torch.

    >>> round(mcnemar_exact(10, 2), 4)
    0.0386
    >>> lo, hi = newcombe_interval(56, 70, 48, 80)
    >>> round(lo, 4), round(hi, 4)
    (0.0524, 0.3339)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from edgerobust.evaluate import wilson_interval

Verdict = Literal["supported", "contradicted", "unresolved"]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs.

    ``b``: images that model A gets right and B wrong; ``c``: the reverse. Under the null
    hypothesis each discordant image is a fair coin, so the p-value is a two-sided binomial tail.
    """
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be >= 0")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # exact integers: 2.0 ** n overflows a float beyond n = 1023 discordant images
    tail = sum(math.comb(n, i) for i in range(k + 1)) / (1 << n)
    return min(1.0, 2.0 * tail)


def newcombe_interval(k1: int, n1: int, k2: int, n2: int, z: float = 1.96) -> tuple[float, float]:
    """95 % interval for p1 - p2 of two independent proportions (Newcombe 1998, method 10)."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError("both samples need at least one image")
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, z)
    l2, u2 = wilson_interval(k2, n2, z)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return (max(-1.0, lo), min(1.0, hi))


def paired_bootstrap_interval(
    a_correct: np.ndarray,
    b_correct: np.ndarray,
    *,
    clusters: np.ndarray | None = None,
    resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of accuracy(A) - accuracy(B) on the same images.

    Images are resampled with replacement, keeping each image's pair of outcomes together.
    With ``clusters`` (one id per outcome), whole clusters are resampled: outcomes that share
    an image (the same image under several attacks) are not independent, so they move together.
    """
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("paired outcomes must be two 1-D arrays over the same images")
    if a.size == 0:
        raise ValueError("no images to compare")
    diff = a.astype(np.int64) - b.astype(np.int64)
    if clusters is None:
        sums, sizes = diff, np.ones_like(diff)
    else:
        ids = np.asarray(clusters)
        if ids.shape != diff.shape:
            raise ValueError("clusters must give one id per paired outcome")
        _, inverse = np.unique(ids, return_inverse=True)
        sums = np.bincount(inverse, weights=diff)
        sizes = np.bincount(inverse)
    rng = np.random.default_rng(seed)
    alpha = (1.0 - level) / 2.0
    means = np.empty(resamples)
    step = max(1, 2_000_000 // max(sums.size, 1))  # bounded memory for large samples
    for start in range(0, resamples, step):
        idx = rng.integers(0, sums.size, size=(min(step, resamples - start), sums.size))
        means[start : start + len(idx)] = sums[idx].sum(axis=1) / sizes[idx].sum(axis=1)
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


@dataclass(frozen=True)
class Comparison:
    """accuracy(A) - accuracy(B) with its interval, test and the images behind it."""

    difference: float
    ci95: tuple[float, float]
    n_a: int
    n_b: int
    paired: bool
    method: str
    p_value: float | None = None  # McNemar's, for paired comparisons
    discordant: tuple[int, int] | None = None  # (A right B wrong, A wrong B right)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_paired(
    a_correct: np.ndarray,
    b_correct: np.ndarray,
    *,
    clusters: np.ndarray | None = None,
    resamples: int = 10_000,
    seed: int = 0,
) -> Comparison:
    """Compare two models measured on the same images (per-image correctness, same order).

    ``clusters``: see :func:`paired_bootstrap_interval`. McNemar's test assumes independent
    pairs, so with clusters that hold more than one outcome no p-value is given."""
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    lo, hi = paired_bootstrap_interval(a, b, clusters=clusters, resamples=resamples, seed=seed)
    right_wrong = int(np.sum(a & ~b))
    wrong_right = int(np.sum(~a & b))
    clustered = clusters is not None and len(np.unique(np.asarray(clusters))) < a.size
    unit = "images (clustered: all outcomes of an image together)" if clustered else "images"
    method = f"paired bootstrap over {unit} ({resamples} resamples, seed {seed})"
    return Comparison(
        difference=float(a.mean() - b.mean()),
        ci95=(lo, hi),
        n_a=int(a.size),
        n_b=int(b.size),
        paired=True,
        method=method if clustered else method + "; McNemar exact",
        p_value=None if clustered else mcnemar_exact(right_wrong, wrong_right),
        discordant=(right_wrong, wrong_right),
    )


def compare_independent(k_a: int, n_a: int, k_b: int, n_b: int) -> Comparison:
    """Compare two accuracies measured on different images (counts only)."""
    return Comparison(
        difference=k_a / n_a - k_b / n_b,
        ci95=newcombe_interval(k_a, n_a, k_b, n_b),
        n_a=n_a,
        n_b=n_b,
        paired=False,
        method="Newcombe hybrid score interval (independent samples)",
    )


def verdict(cmp: Comparison, expected_sign: int, margin: float | None = None) -> Verdict:
    """What the interval says about a claim on the difference A - B.

    Without ``margin``, the claim is that the difference has sign ``expected_sign``: supported
    when the whole 95 % interval lies on the claimed side of zero, contradicted when it lies
    wholly on the other side, unresolved when it contains zero.

    With ``margin`` (a non-inferiority claim, ``expected_sign`` +1: "A is at most ``margin``
    worse than B"), the line is drawn at ``-margin``: supported when the whole interval lies
    above it, contradicted when it lies wholly below, unresolved when it straddles it.
    """
    if expected_sign not in (-1, 1):
        raise ValueError("expected_sign must be -1 or +1")
    lo, hi = cmp.ci95
    if margin is not None:
        if expected_sign != 1 or margin < 0:
            raise ValueError("a non-inferiority claim needs expected_sign +1 and a margin >= 0")
        if lo > -margin:
            return "supported"
        if hi < -margin:
            return "contradicted"
        return "unresolved"
    if expected_sign * lo > 0 and expected_sign * hi > 0:
        return "supported"
    if expected_sign * lo < 0 and expected_sign * hi < 0:
        return "contradicted"
    return "unresolved"
