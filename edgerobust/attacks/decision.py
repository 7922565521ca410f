"""Decision-based (black-box) attacks: they only read predicted classes, from any numpy callable.

Only numpy is imported, so these run against a torch model or an artifact inside its runtime
alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from edgerobust.attacks.base import DecisionAttack, Found, RunContext, Sweep
from edgerobust.attacks.saltpepper import StopRule, saltpepper_attack


class SaltPepper(DecisionAttack):
    """foolbox 3.3.4's ``SaltAndPepperNoiseAttack`` (:mod:`edgerobust.attacks.saltpepper`).

    A minimisation attack: one search per sample for the smallest L2 salt-and-pepper noise that
    fools the model, then foolbox's rescaled check at each eps. The paper uses 400 steps. Each
    sample draws from its own noise stream, keyed by its index in the domain. So its figure does
    not depend on ``--limit`` or batching. The early-stopping rule is the run's ``--sp-stop``.
    """

    family: ClassVar[str | None] = "Salt&Pepper"

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
        res = saltpepper_attack(
            model,
            x,
            y,
            eps,
            steps=int(settings["steps"]),
            repetitions=int(settings["repetitions"]),
            seed=ctx.seed,
            batch_size=ctx.batch_size,
            stop=ctx.stop,
            sample_ids=ids,
        )
        # The norm judged at each eps: the best noise, rescaled to eps if it is above
        judged = np.minimum(res.best_norms[None, :], np.asarray(eps)[:, None])
        return Found(
            success=res.success,
            norms=judged,
            queries=res.queries,
            clean_correct=res.clean_correct,
        )

    def describe(
        self, swept: Sweep, settings: Mapping[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        """The model queries spent, what foolbox would have spent (``repeat(r)`` of 1 clean +
        ``steps`` + 1 per eps queries per sample), and the stopping rule that saved the
        difference."""
        n = swept.success.shape[1]
        reps = int(settings["repetitions"])
        return {
            "queries": int(swept.queries.sum()),
            "queries_full": n * reps * (1 + int(settings["steps"]) + len(swept.eps)),
            "stop": StopRule(ctx.stop).value,
        }


__all__ = ["SaltPepper"]
