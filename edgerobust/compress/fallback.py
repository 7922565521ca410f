"""Accuracy-aware int8 fallback: keep the layers whose quantization hurts most in fp32 until the
int8 model agrees with its fp32 source often enough, as NNCF's ``quantize_with_accuracy_control``
and Intel Neural Compressor do.

Generic over how a model is quantized: the caller supplies two measurements of a candidate that
keeps the layers ``kept`` in fp32,

* ``error(kept) -> float``: how far the candidate's outputs are from fp32's on the ranking images
  (the images where fp32 and full int8 disagree most), lower is better;
* ``agreement(kept) -> float``: top-1 agreement with fp32 on the parity gate's images;

so ONNX int8 (onnxruntime's ``nodes_to_exclude``) and eager PTSQ (fp32 modules) share this loop.

1. Rank: revert one layer at a time; a layer's sensitivity is how much the error drops when it
   alone stays fp32 (``len(layers) + 1`` error measurements).
2. Search: keep the ``k`` most sensitive in fp32 for k = 1, 2, 4, ... until the bar holds, then
   bisect down to the smallest passing ``k`` (every answer is a measured candidate that passed).
3. Give up when the bar needs more than ``max_fp32`` layers in fp32 (default: fewer than most
   layers int8); the caller then writes nothing unless forced.

Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Trial:
    kept_fp32: int  # how many of the ranking's first layers stayed fp32
    agreement: float
    passed: bool


@dataclass(frozen=True)
class FallbackResult:
    layers: int  # quantizable layers in the model
    ranking: tuple[tuple[str, float], ...]  # (layer, sensitivity), most sensitive first
    kept_fp32: tuple[str, ...]  # the answer: layers kept in fp32 ('' when it gave up)
    agreement: float  # of the answer (or of the last trial when it gave up)
    start_agreement: float  # full int8
    passed: bool
    bar: float
    max_fp32: int
    trials: tuple[Trial, ...]

    @property
    def int8_layers(self) -> int:
        return self.layers - len(self.kept_fp32)

    def summary(self) -> str:
        if self.passed and not self.kept_fp32:
            return f"fallback: not needed (agreement {self.start_agreement:.1%})"
        if self.passed:
            return (
                f"fallback: {len(self.kept_fp32)} of {self.layers} layers kept in fp32 "
                f"({', '.join(self.kept_fp32)}): top-1 agreement {self.start_agreement:.1%} -> "
                f"{self.agreement:.1%} (bar {self.bar:.0%}), {self.int8_layers} layers int8"
            )
        return (
            f"fallback: the bar ({self.bar:.0%}) is not met with at most {self.max_fp32} of "
            f"{self.layers} layers in fp32 (best {max(t.agreement for t in self.trials):.1%}, "
            f"full int8 {self.start_agreement:.1%})"
            if self.trials
            else f"fallback: no layer to keep in fp32 (of {self.layers})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "bar": self.bar,
            "layers": self.layers,
            "int8_layers": self.int8_layers,
            "kept_fp32": list(self.kept_fp32),
            "agreement": self.agreement,
            "start_agreement": self.start_agreement,
            "max_fp32": self.max_fp32,
            "ranking": [{"layer": n, "sensitivity": s} for n, s in self.ranking],
            "trials": [
                {"kept_fp32": t.kept_fp32, "agreement": t.agreement, "passed": t.passed}
                for t in self.trials
            ],
            "summary": self.summary(),
        }


def most_different(reference: np.ndarray, got: np.ndarray, k: int) -> np.ndarray:
    """Indices (ascending) of the ``k`` images on which two models' logits differ most: top-1
    disagreements first, then by mean squared logit error. The ranking images of both
    fallbacks (ONNX int8 and PTSQ)."""
    err = ((reference - got) ** 2).mean(1) + (reference.argmax(1) != got.argmax(1)) * 1e9
    return np.sort(np.argsort(-err)[: min(k, len(err))])


def rank_layers(
    layers: Sequence[str], error: Callable[[tuple[str, ...]], float]
) -> list[tuple[str, float]]:
    """``(layer, sensitivity)``, most sensitive first: the drop in ``error`` when that layer
    alone is kept in fp32. Ties keep the model's order."""
    base = error(())
    scored = [(name, base - error((name,))) for name in layers]
    return sorted(scored, key=lambda s: -s[1])


def search_prefix(
    order: Sequence[str],
    agreement: Callable[[tuple[str, ...]], float],
    bar: float,
    max_fp32: int,
) -> tuple[int | None, list[Trial]]:
    """The smallest measured ``k <= max_fp32`` whose first ``k`` layers in fp32 pass ``bar``:
    doubling, then bisection between the last failing and the first passing ``k``."""
    trials: list[Trial] = []
    seen: dict[int, float] = {}

    def passes(k: int) -> bool:
        if k not in seen:
            seen[k] = agreement(tuple(order[:k]))
            trials.append(Trial(k, seen[k], seen[k] >= bar))
        return seen[k] >= bar

    lo, hi, k = 0, None, 1
    while k <= max_fp32:
        if passes(k):
            hi = k
            break
        lo = k
        k = min(2 * k, max_fp32) if k < max_fp32 else max_fp32 + 1
    if hi is None:
        return None, trials
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid
    return hi, trials


def fallback_search(
    layers: Sequence[str],
    error: Callable[[tuple[str, ...]], float],
    agreement: Callable[[tuple[str, ...]], float],
    *,
    bar: float,
    start_agreement: float,
    max_fp32: int | None = None,
) -> FallbackResult:
    """Rank ``layers`` and keep the fewest most-sensitive ones in fp32 that make ``agreement``
    reach ``bar``; see the module docstring. ``max_fp32`` defaults to the most that still
    leaves most layers int8 (strictly more than half)."""
    n = len(layers)
    limit = (n - 1) // 2 if max_fp32 is None else min(max_fp32, n)
    if start_agreement >= bar:
        return FallbackResult(n, (), (), start_agreement, start_agreement, True, bar, limit, ())
    ranking = rank_layers(layers, error) if limit > 0 else []
    order = [name for name, _ in ranking]
    k, trials = search_prefix(order, agreement, bar, limit)
    if k is None:
        last = trials[-1].agreement if trials else start_agreement
        return FallbackResult(
            n, tuple(ranking), (), last, start_agreement, False, bar, limit, tuple(trials)
        )
    got = next(t.agreement for t in trials if t.kept_fp32 == k)
    return FallbackResult(
        n, tuple(ranking), tuple(order[:k]), got, start_agreement, True, bar, limit, tuple(trials)
    )
