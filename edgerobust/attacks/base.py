"""The attack protocol: each attack is a class with one ``run`` method, and this base does the rest.

This follows foolbox (``attacks/base.py``). An attack only says how to attack a block of samples at
the budgets it is handed (:meth:`Attack.run`). The shared base does what is the same for every
attack:

* **The epsilon sweep.** A fixed-epsilon attack (FGSM, PGD) runs once per eps, as foolbox's
  ``FixedEpsilonAttack`` does. A minimisation attack (DeepFool, C&W, DDN, EAD, Salt&Pepper)
  searches once for the smallest adversarial and is judged at every eps, as foolbox's
  ``MinimizationAttack`` does. So a sweep over many budgets, e.g. both of the paper's strengths,
  costs one search.
* **Batching.** Each batch gets its own seed (:meth:`Attack.begin_batch`), so a batch's random
  draws, such as PGD's random start, do not depend on the batches before it.
* **The success matrix** (eps x samples), with the norm judged at each eps.
* **How a kind of attack is measured** on the models of one run, which is what its label means.
  A :class:`GradientAttack` crafts on the differentiable source model (``direct``) and replays its
  adversarials on every other model (``transfer``). A :class:`DecisionAttack` only reads predicted
  classes, so it runs against each model itself, be it a torch model or an artifact in its runtime
  (``blackbox``).

Adding an attack means one subclass of :class:`GradientAttack` or :class:`DecisionAttack` that
implements ``run``, plus one :func:`edgerobust.attacks.register` call. ``run_attacks`` reaches
every attack through the registry and has no branch per attack or per kind.

Only numpy is imported here, because the device side imports the registry. An attack that needs
torch or foolbox imports them inside its methods.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

import numpy as np

from edgerobust.attacks.sanity import SanityFlag
from edgerobust.errors import ConfigError
from edgerobust.progress import NullReporter, Reporter
from edgerobust.records import encode_outcomes

#: A model as the attack code sees it: float32 NCHW [0, 1] numpy -> logits numpy.
NumpyModel = Callable[[np.ndarray], np.ndarray]

#: Batch ``bi`` of a run with seed ``s`` is seeded with ``s * BATCH_SEED_STRIDE + bi``.
BATCH_SEED_STRIDE = 100_003


class Strength(str, Enum):
    """The paper's two perturbation budgets (Tables 4 and 5)."""

    light = "light"
    heavy = "heavy"


class Label(str, Enum):
    """How a robustness figure was obtained (design.md, "Robustness labels")."""

    direct = "direct"  # a white-box (gradient) attack run against that very model
    transfer = "transfer"  # adversarials crafted on another model, replayed on this one
    bpda = "bpda"  # gradients through a differentiable stand-in (reserved: not implemented)
    blackbox = "blackbox"  # a decision-based attack that only sees this model's answers


class Kind(str, Enum):
    """What an attack needs from the model it attacks."""

    gradient = "gradient"  # white-box: input gradients, so a differentiable (fp32 torch) model
    decision = "decision"  # black-box: only the predicted class, from any numpy callable


@dataclass(frozen=True, eq=False)
class Found:
    """What one :meth:`Attack.run` found on a block of ``B`` samples at the ``E`` eps it was given.

    Only ``success`` is required. An attack that produces the images it judged returns them in
    ``adversarials``; the base then measures their norms, and a gradient attack's images are
    replayed on the other models. An attack that judges by its own rule returns ``norms``
    instead, e.g. Salt&Pepper's best norm capped at each eps.
    """

    success: np.ndarray  # (E, B) bool: the attacked model is fooled within eps k
    adversarials: np.ndarray | None = None  # (E, B, C, H, W) float32: the images judged at eps k
    norms: np.ndarray | None = None  # (E, B): norm of the perturbation judged at eps k
    queries: np.ndarray | None = None  # (B,): model queries per sample, if the attack counts them
    clean_correct: np.ndarray | None = None  # (B,): the attack's own clean answer, if it has one


@dataclass(frozen=True, eq=False)
class Sweep:
    """One attack on one model over the whole eps sweep: the success matrix and what goes with it.

    ``success[k, i]`` means that sample ``i`` was fooled within ``eps[k]`` on the model attacked.
    ``norms[k, i]`` is the norm of the perturbation judged there.
    """

    eps: tuple[float, ...]
    success: np.ndarray  # (n_eps, n) bool
    norms: np.ndarray  # (n_eps, n) float64
    queries: np.ndarray | None  # (n,) int64, when the attack counts its queries
    clean_correct: np.ndarray | None  # (n,) bool, when the attack asks the clean question itself


@dataclass
class Target:
    """A model that figures are measured on."""

    name: str
    kind: str  # "torch" | "artifact"
    role: str  # "source" | "checkpoint" | "replay" | "artifact"
    fn: NumpyModel  # the model as a numpy callable (what decision attacks and replays query)
    info: dict[str, Any]
    model: Any = None  # the torch module behind ``fn``, if any: where gradients come from
    clean_correct: np.ndarray | None = None


@dataclass(frozen=True)
class RunContext:
    """What every attack of one run shares."""

    seed: int
    batch_size: int
    sample_ids: tuple[int, ...]  # each sample's index in its domain: keys per-sample noise streams
    stop: str = "exact"  # early-stopping rule of the attacks that have one (Salt&Pepper: --sp-stop)
    grad_stop: str = "exact"  # gradient minimisation attacks (--stop): exact | settled
    device: Any = None  # the torch.device that gradient attacks run on
    reporter: Reporter = field(default_factory=NullReporter)


#: What :meth:`Attack.measure` returns: one record entry per target, and any sanity flags raised.
Measured = tuple[list[dict[str, Any]], list[SanityFlag]]


@dataclass(frozen=True)
class Attack(ABC):
    """One registered attack: its settings card and how it runs.

    The card holds the norm, the paper's epsilons per strength, and ``params``. ``params`` are
    all the settings the attack is built with (library defaults spelled out, so that a record
    shows every setting), and they are the only keys a user may override. Epsilons are in
    [0, 1] pixel space, in the attack's own norm over the whole image tensor, as foolbox
    measures them.

    ``fixed_eps`` attacks are run once per epsilon. All others are minimisation attacks: they
    run once and are judged at each epsilon (see :meth:`sweep`). ``kind`` is a property of the
    class (:class:`GradientAttack` or :class:`DecisionAttack`), never a setting.
    """

    name: str
    title: str
    norm: str  # "linf" | "l2" | "l1"
    light: tuple[float, ...]
    heavy: tuple[float, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    fixed_eps: bool = False

    kind: ClassVar[Kind]
    #: The name used in sentences about the attack (sanity messages); the title when ``None``.
    family: ClassVar[str | None] = None

    @property
    def gradient(self) -> bool:
        """Whether the attack needs input gradients (white-box), as opposed to decisions only."""
        return self.kind is Kind.gradient

    def eps(self, strength: Strength | str) -> tuple[float, ...]:
        """The paper's epsilons for ``strength``."""
        return self.light if Strength(strength) is Strength.light else self.heavy

    def with_params(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` updated by ``overrides``; an unknown key is a :class:`ConfigError`."""
        unknown = sorted(set(overrides) - set(self.params))
        if unknown:
            known = ", ".join(sorted(self.params)) or "none"
            raise ConfigError(f"{self.name} has no setting {unknown[0]!r}: it takes {known}")
        return {**self.params, **overrides}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "norm": self.norm,
            "gradient": self.gradient,
            "foolbox": getattr(self, "foolbox", None),
            "params": dict(self.params),
            "light": list(self.light),
            "heavy": list(self.heavy),
        }

    # ------------------------------------------------------------------ the protocol

    @abstractmethod
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
        """Attack ``model`` on the block ``x`` (B, C, H, W) in [0, 1] with labels ``y`` (B,).

        ``eps`` holds one budget for a ``fixed_eps`` attack, and the whole sweep for a
        minimisation attack, which judges its one search at each budget. ``model`` is a
        differentiable torch module for a gradient attack, and a numpy callable (the attacked
        model's :class:`Target` ``fn``) for a decision attack. ``settings`` are ``params`` with
        the user's overrides applied. ``ids`` are the samples' ids (their indices in the domain),
        for attacks that key random streams per sample.
        """

    @abstractmethod
    def measure(
        self,
        targets: Sequence[Target],
        source: Target,
        x: np.ndarray,
        y: np.ndarray,
        eps: tuple[float, ...],
        *,
        settings: Mapping[str, Any],
        ctx: RunContext,
    ) -> Measured:
        """Figures for every target, with their labels. The kind bases implement this."""

    def begin_batch(self, seed: int) -> None:
        """Called before each batch of a sweep, before any ``run`` on it. A randomised attack
        seeds its generator here (the seed is per batch, not per ``run``: a fixed-eps attack's
        runs at successive eps draw one stream, as in foolbox's own sweep)."""
        return  # a deterministic attack has nothing to seed

    def sweep(
        self,
        model: Any,
        x: np.ndarray,
        y: np.ndarray,
        eps: Sequence[float],
        *,
        settings: Mapping[str, Any],
        ctx: RunContext,
        batch_size: int | None = None,
        on_batch: Callable[[slice, Found], None] | None = None,
    ) -> Sweep:
        """Run the attack over all samples at every eps; return the success matrix.

        The samples are split into batches of ``batch_size`` (``None``: one block, for an attack
        that batches its own model queries). On each batch, a ``fixed_eps`` attack runs once per
        eps, in order. A minimisation attack runs once with the whole sweep. ``on_batch(b, found)``
        sees each batch's outcome at every eps (e.g. to replay its adversarials) before the next
        batch is attacked.
        """
        eps = tuple(float(e) for e in eps)
        n = x.shape[0]
        size = max(1, n if batch_size is None else batch_size)
        success = np.zeros((len(eps), n), bool)
        norms = np.zeros((len(eps), n))
        queries: np.ndarray | None = None
        clean: np.ndarray | None = None
        blocks = self.blocks(eps, ctx)
        for bi, start in enumerate(range(0, n, size)):
            b = slice(start, min(start + size, n))
            self.begin_batch(ctx.seed * BATCH_SEED_STRIDE + bi)
            ids = ctx.sample_ids[b]
            parts = [
                self._checked(
                    self.run(model, x[b], y[b], blk, settings=settings, ids=ids, ctx=ctx),
                    len(blk),
                    b.stop - b.start,
                )
                for blk in blocks
            ]
            found = _stack(parts)
            success[:, b] = found.success
            if found.norms is not None:
                norms[:, b] = found.norms
            else:
                norms[:, b] = perturbation_norms(found.adversarials - x[b][None], self.norm)
            if found.queries is not None:
                if queries is None:
                    queries = np.zeros(n, np.int64)
                queries[b] = found.queries
            if found.clean_correct is not None:
                if clean is None:
                    clean = np.ones(n, bool)
                clean[b] = found.clean_correct
            if on_batch is not None:
                on_batch(b, found)
        return Sweep(eps, success, norms, queries, clean)

    def blocks(self, eps: tuple[float, ...], ctx: RunContext) -> list[tuple[float, ...]]:
        """How :meth:`sweep` hands the eps to :meth:`run` on each batch: a ``fixed_eps`` attack
        one eps per run, in order (foolbox's loop), a minimisation attack the whole sweep."""
        return [(e,) for e in eps] if self.fixed_eps else [eps]

    def _checked(self, found: Found, n_eps: int, n: int) -> Found:
        """``found`` if it has the shapes the sweep expects, else a one-line ``ValueError``."""
        shape = np.shape(found.success)
        if shape != (n_eps, n):
            raise ValueError(
                f"attack {self.name!r}: run returned success of shape {shape}, expected "
                f"(n_eps, n) = {(n_eps, n)}"
            )
        if found.norms is None and found.adversarials is None:
            raise ValueError(f"attack {self.name!r}: run returned neither norms nor adversarials")
        return found


def _stack(parts: list[Found]) -> Found:
    """One batch's outcomes at successive eps (a fixed-eps attack's runs), as one outcome."""
    if len(parts) == 1:
        return parts[0]

    def cat(arrays: list[np.ndarray | None]) -> np.ndarray | None:
        return None if any(a is None for a in arrays) else np.concatenate(arrays)

    queries = [p.queries for p in parts if p.queries is not None]
    clean = [p.clean_correct for p in parts if p.clean_correct is not None]
    return Found(
        success=np.concatenate([p.success for p in parts]),
        adversarials=cat([p.adversarials for p in parts]),
        norms=cat([p.norms for p in parts]),
        queries=np.sum(queries, axis=0) if queries else None,
        # correct only if every run saw it so (a disagreement is the model's nondeterminism)
        clean_correct=np.logical_and.reduce(clean) if clean else None,
    )


class GradientAttack(Attack):
    """A white-box attack: it crafts on the differentiable source model, never on int8 (whose
    kernels have no backward pass). Its figure on the source is ``direct``. Every other model
    (the int8 checkpoint, replay checkpoints, artifacts) reads the same adversarials,
    batch by batch, and gets ``transfer``. So one run measures a model and all its deployed
    versions side by side."""

    kind: ClassVar[Kind] = Kind.gradient

    def begin_batch(self, seed: int) -> None:
        import torch

        torch.manual_seed(seed)  # PGD's random start, reproducible per batch

    def measure(
        self,
        targets: Sequence[Target],
        source: Target,
        x: np.ndarray,
        y: np.ndarray,
        eps: tuple[float, ...],
        *,
        settings: Mapping[str, Any],
        ctx: RunContext,
    ) -> Measured:
        if source.model is None:
            raise ValueError(f"{self.name} needs gradients: its source must be a torch model")
        rep = ctx.reporter
        n = x.shape[0]
        correct = {tg.name: np.zeros((len(eps), n), bool) for tg in targets}
        task = rep.task(f"{self.name} on {source.name}", n)

        def replay(b: slice, found: Found) -> None:
            adv = found.adversarials
            if adv is None:
                raise ValueError(f"attack {self.name!r}: a gradient attack must return its images")
            flat = adv.reshape((-1,) + adv.shape[2:])
            for tg in targets:
                pred = tg.fn(flat).argmax(1).reshape(len(eps), -1)
                correct[tg.name][:, b] = pred == y[b][None]
            rep.advance(task, b.stop - b.start)

        swept = self.sweep(
            source.model,
            x,
            y,
            eps,
            settings=settings,
            ctx=ctx,
            batch_size=ctx.batch_size,
            on_batch=replay,
        )
        rep.done(task)
        cost = self.describe(swept, settings, ctx)
        results = []
        for tg in targets:
            label = Label.direct if tg.name == source.name else Label.transfer
            results.append(
                {
                    "target": tg.name,
                    "label": label.value,
                    "crafted_on": source.name,
                    "clean_accuracy": float(tg.clean_correct.mean()),
                    **summarise(correct[tg.name], tg.clean_correct, swept.norms),
                    "n": n,
                    **cost,
                }
            )
        return results, []

    def describe(
        self, swept: Sweep, settings: Mapping[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        """Entries added to each target's record, after ``n``: what crafting cost, when the
        attack counts it (``Found.queries``: gradient evaluations per image), and the rule."""
        if swept.queries is None:
            return {}
        return {"gradients": int(swept.queries.sum()), "stop": ctx.grad_stop}


class DecisionAttack(Attack):
    """A decision-based (black-box) attack: it reads only predicted classes. So it runs against
    each model itself, through the model's numpy callable (a torch model, or an artifact inside
    its runtime), and every figure is ``blackbox``. It gets all samples in one ``run`` and is
    expected to batch its own model queries (Salt&Pepper refills a batch as samples finish)."""

    kind: ClassVar[Kind] = Kind.decision

    def describe(
        self, swept: Sweep, settings: Mapping[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        """Entries the attack adds to each target's record, after ``n`` (default: none)."""
        return {}

    def measure(
        self,
        targets: Sequence[Target],
        source: Target,
        x: np.ndarray,
        y: np.ndarray,
        eps: tuple[float, ...],
        *,
        settings: Mapping[str, Any],
        ctx: RunContext,
    ) -> Measured:
        rep = ctx.reporter
        n = x.shape[0]
        results: list[dict[str, Any]] = []
        flags: list[SanityFlag] = []
        for tg in targets:
            task = rep.task(f"{self.name} on {tg.name}", None)
            ts = time.perf_counter()
            swept = self.sweep(tg.fn, x, y, eps, settings=settings, ctx=ctx)
            rep.done(task)
            entry: dict[str, Any] = {
                "target": tg.name,
                "label": Label.blackbox.value,
                "clean_accuracy": float(tg.clean_correct.mean()),
                **summarise(~swept.success, tg.clean_correct, swept.norms),
                "n": n,
            }
            entry.update(self.describe(swept, settings, ctx))
            entry["seconds"] = time.perf_counter() - ts
            results.append(entry)
            if swept.clean_correct is not None and not np.array_equal(
                swept.clean_correct, tg.clean_correct
            ):
                flags.append(
                    SanityFlag(
                        "clean-mismatch",
                        self.name,
                        tg.name,
                        f"{self.family or self.title}'s clean query disagrees with the clean "
                        "pass: the model is not deterministic across batch compositions",
                    )
                )
        return results, flags


def summarise(
    correct: np.ndarray, clean_correct: np.ndarray, norms: np.ndarray
) -> dict[str, list[float | None]]:
    """Robust accuracy, success rate and median norm per eps (rows) from per-sample outcomes.

    ``correct[k, i]``: sample ``i`` still classified correctly under the eps-``k`` attack;
    ``norms[k, i]``: the norm of the perturbation that was judged.
    """
    robust = correct.mean(axis=1)
    n_clean = int(clean_correct.sum())
    fooled = clean_correct[None, :] & ~correct
    success_rate = [float(f.sum() / n_clean) if n_clean else None for f in fooled]
    median = [
        float(np.median(nk[f])) if f.any() else None for nk, f in zip(norms, fooled, strict=True)
    ]
    return {
        "robust_accuracy": [float(r) for r in robust],
        "success_rate": success_rate,
        "median_norm": median,
        # per eps, per image (the record's data.files order): paired comparisons in findings
        "outcomes": [encode_outcomes(row) for row in correct],
    }


def perturbation_norms(delta: np.ndarray, norm: str) -> np.ndarray:
    """Per-sample norm of ``delta`` (..., C, H, W) over the whole image, as foolbox measures it."""
    flat = delta.reshape(delta.shape[:-3] + (-1,)).astype(np.float64)
    if norm == "linf":
        return np.abs(flat).max(-1)
    if norm == "l2":
        return np.sqrt(np.square(flat).sum(-1))
    if norm == "l1":
        return np.abs(flat).sum(-1)
    raise ValueError(f"unknown norm {norm!r}")


__all__ = [
    "BATCH_SEED_STRIDE",
    "Attack",
    "DecisionAttack",
    "Found",
    "GradientAttack",
    "Kind",
    "Label",
    "Measured",
    "NumpyModel",
    "RunContext",
    "Strength",
    "Sweep",
    "Target",
    "perturbation_norms",
    "summarise",
]
