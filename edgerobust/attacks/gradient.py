"""White-box attacks from foolbox, run on the differentiable (fp32) PyTorch source model.

One class covers the paper's six gradient attacks: each is a foolbox attack class named by a
string, so importing this module (and the registry) needs neither torch nor foolbox; they are
imported when an attack runs (:func:`edgerobust.attacks.whitebox.craft`). The model takes [0, 1]
pixels (normalisation is inside it), so foolbox runs with ``bounds=(0, 1)`` and every epsilon is
in pixel space.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgerobust.attacks.base import Found, GradientAttack, RunContext


@dataclass(frozen=True)
class FoolboxAttack(GradientAttack):
    """``foolbox.attacks.<foolbox>(**settings)`` on the source model.

    ``fixed_eps`` mirrors foolbox's own split: FGSM and PGD are ``FixedEpsilonAttack``s (run
    once per eps by the base's sweep, exactly as foolbox's ``__call__`` loops over epsilons);
    DeepFool, C&W, DDN and EAD are ``MinimizationAttack``s (one search, clipped to each eps by
    foolbox with its early stop at the smallest eps, which is 0 here, the sanity point).
    """

    foolbox: str = field(default="", kw_only=True)  # the class name in ``foolbox.attacks``

    def __post_init__(self) -> None:
        if not self.foolbox:
            raise ValueError(f"attack {self.name!r}: name its foolbox class (foolbox=...)")

    def run(
        self,
        model: Any,
        x: np.ndarray,
        y: np.ndarray,
        eps: tuple[float, ...],
        *,
        settings: Mapping[str, Any],
        ids: Sequence[int],
        ctx: RunContext,
    ) -> Found:
        from edgerobust.attacks.whitebox import craft

        crafted = craft(model, self, x, y, eps, device=ctx.device, overrides=settings)
        return Found(success=crafted.success, adversarials=crafted.adversarials)


__all__ = ["FoolboxAttack"]
