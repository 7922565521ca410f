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
from enum import Enum
from typing import Any

import numpy as np

from edgerobust.attacks.base import Found, GradientAttack, RunContext, Sweep


class GradStop(str, Enum):
    """How a gradient minimisation attack searches (``--stop``)."""

    exact = "exact"  # foolbox's attack, its full budget: foolbox's figures
    settled = "settled"  # per image, until every eps's answer is decided (attacks/settled.py)


#: The ``stop`` an attack with nothing to stop records (FGSM: one gradient step per eps).
NO_STOP = "none"


GRAD_STOPS: tuple[str, ...] = tuple(s.value for s in GradStop)

#: The foolbox attacks that :mod:`edgerobust.attacks.settled` implements per image.
SETTLED = frozenset(
    {"L2CarliniWagnerAttack", "EADAttack", "DDNAttack", "LinfDeepFoolAttack", "LinfPGD"}
)


@dataclass(frozen=True)
class FoolboxAttack(GradientAttack):
    """``foolbox.attacks.<foolbox>(**settings)`` on the source model.

    ``fixed_eps`` mirrors foolbox's own split: FGSM and PGD are ``FixedEpsilonAttack``s (run
    once per eps by the base's sweep, exactly as foolbox's ``__call__`` loops over epsilons);
    DeepFool, C&W, DDN and EAD are ``MinimizationAttack``s (one search, clipped to each eps by
    foolbox with its early stop at the smallest eps, which is 0 here, the sanity point).

    The run's ``grad_stop`` picks how an attack searches: ``exact`` is foolbox's attack itself;
    ``settled`` is the same search per image, stopped once every eps's answer is decided
    (:mod:`edgerobust.attacks.settled`; PGD then gets all eps in one run, smallest first, so
    that an adversarial at a small eps settles the larger ones). FGSM is one step per eps: it
    has nothing to stop and always runs foolbox's attack. ``Found.queries`` carries the
    gradient evaluations each image cost.
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

        crafted = craft(
            model, self, x, y, eps, device=ctx.device, overrides=settings, stop=ctx.grad_stop
        )
        return Found(
            success=crafted.success,
            adversarials=crafted.adversarials,
            queries=crafted.gradients,
        )

    def blocks(self, eps: tuple[float, ...], ctx: RunContext) -> list[tuple[float, ...]]:
        if self.fixed_eps and self.settles and ctx.grad_stop == GradStop.settled.value:
            return [eps]  # settled PGD: every eps in one run (attacks/settled.pgd_search)
        return super().blocks(eps, ctx)

    def describe(
        self, swept: Sweep, settings: Mapping[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        """The gradient evaluations spent, foolbox's budget beside them (its most, before C&W's
        and EAD's ``abort_early``; under ``exact`` the count is foolbox's own), and the rule
        that applied: ``stop`` (exact, settled, or none for FGSM) and ``stop_rule`` in words."""
        out = super().describe(swept, settings, ctx)
        if out:
            n = swept.success.shape[1]
            out["gradients_budget"] = n * self.gradient_budget(settings, len(swept.eps))
            out["stop"], out["stop_rule"] = self.stop_rule(ctx.grad_stop)
        return out

    def stop_rule(self, grad_stop: str) -> tuple[str, str]:
        """The rule a run under ``--stop grad_stop`` applies to this attack: (name, sentence)."""
        if not self.settles:
            return NO_STOP, "one gradient step per eps: nothing to stop (foolbox's attack)"
        if grad_stop == GradStop.settled.value:
            from edgerobust.attacks.settled import RULES

            return grad_stop, RULES[self.foolbox]
        return GradStop.exact.value, "foolbox's attack, its full budget"

    def gradient_budget(self, settings: Mapping[str, Any], n_eps: int) -> int:
        """Per image, the most gradient evaluations foolbox's attack may spend."""
        s = settings
        if self.foolbox in ("L2CarliniWagnerAttack", "EADAttack"):
            return int(s["binary_search_steps"]) * int(s["steps"])
        if self.foolbox == "LinfDeepFoolAttack":
            return int(s["steps"]) * max(1, int(s["candidates"] or 10) - 1)
        if self.fixed_eps:
            return int(s.get("steps", 1)) * n_eps
        return int(s.get("steps", 1))

    @property
    def settles(self) -> bool:
        """Whether ``--stop settled`` has a loop of its own for this attack
        (:mod:`edgerobust.attacks.settled`); the others always run foolbox's attack."""
        return self.foolbox in SETTLED


__all__ = ["NO_STOP", "SETTLED", "FoolboxAttack", "GradStop"]
