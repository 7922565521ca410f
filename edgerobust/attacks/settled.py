"""foolbox 3.3.4's minimisation attacks (C&W L2, EAD L1, DDN L2, DeepFool) as per-image searches
that stop as soon as every requested epsilon's answer is settled, and its Linf PGD runs per eps
that end once every image is decided (see "PGD" below).

Why
---
foolbox runs a minimisation attack to its full budget and only then judges the best adversarial
at each epsilon (``MinimizationAttack.__call__``: shrink the perturbation to eps, query the
model). C&W and EAD spend ``binary_search_steps x steps`` gradient evaluations on every batch,
whatever the budgets. Robust accuracy at given epsilons only needs, per image, to know whether an
adversarial exists within each epsilon. So each image here searches on its own and leaves the
batch once its answer at every requested epsilon is decided.

The loops
---------
Each function below is foolbox's algorithm, step for step (same losses, optimiser, constant
search and decision rules, in the same float32 arithmetic), with one change: every decision that
foolbox takes for the whole batch is taken per image. That is C&W's and EAD's ``abort_early``
test, which foolbox applies to the batch's summed loss. So with ``stop="none"`` each image's
search is foolbox's search on that image alone (``batch_size=1``), whatever the batch, and with
batch size 1 the loops equal foolbox (tests/attacks/test_settled.py checks it). DeepFool has no
batch-wide decision, so it equals foolbox at any batch size. The judgement at the end is
foolbox's: the best adversarial is shrunk to each eps (``clip_perturbation``) and the model is
queried.

The settled rule
----------------
Let ``b`` be an image's best adversarial norm so far, and ``E`` the positive epsilons asked for
(eps 0 needs no search: it is the clean answer).

1. **Broken at eps** once ``b <= eps``. The search only ever replaces its best adversarial with a
   smaller one, so this answer is final (C&W, DDN: exact; EAD keeps the best by its elastic-net
   value, so a later best could in principle have a larger L1 norm; DeepFool stops an image when
   it is adversarial, exactly as foolbox freezes it).
2. **Robust at eps** once the search can no longer be expected to bring ``b`` down to ``eps``.
   C&W and EAD use weak duality on their own objectives, judged only at a finished constant at
   which the search found **no** adversarial:

   * C&W at constant ``c`` minimises ``F_c(d) = ||d||^2 + c * max(0, margin(d))``. Every
     adversarial ``d'`` has ``F_c(d') = ||d'||^2``, so an adversarial within ``eps`` makes
     ``min F_c <= eps^2`` for every ``c``. Once a finished constant that found no adversarial
     had its smallest loss above ``(CW_MARGIN * eps)^2``, the image is settled robust at ``eps``.
   * EAD minimises ``F_c(d) = c * max(0, margin(d)) + ||d||_2^2 + beta * ||d||_1``. Pixels lie
     in [0, 1], so ``||d||_2^2 <= ||d||_1``, and an adversarial within L1 ``eps`` makes
     ``min F_c <= (1 + beta) * eps``. Once a finished constant that found no adversarial had its
     smallest elastic-net loss above ``EAD_MARGIN * (1 + beta) * eps``, robust at ``eps``.

   Both bounds hold for the optimiser's *minimum* at ``c``; Adam (C&W) and ISTA (EAD) stop at a
   local point after at most ``steps``, whose loss overestimates it. Where they found an
   adversarial the overestimate is largest: a large constant overshoots to an adversarial far
   beyond the smallest, whose squared norm is then the loss. That is why a constant that found
   one is never used (the rule that did use it called 1 of 16 EfficientNet-Lite0 images robust
   that foolbox breaks at C&W's heavy budget). Measured on full-budget traces (``trace=``) of 22
   EfficientNet-Lite0 and 17 ResNet-18 PACS photo images outside ``bench-attacks``' default
   sample: the largest ratio of ``sqrt(loss)`` at such a constant to the image's final best
   norm was 1.07 (Lite0) and 1.00 (ResNet-18), so ``CW_MARGIN = 1.5`` leaves 40 % headroom; for
   EAD the largest ratio of that loss to ``(1 + beta)`` times the final best L1 was 0.49 and
   0.48, within ``EAD_MARGIN = 1`` with 2x headroom (``||d||_2^2 <= ||d||_1`` is loose).
   (EAD's earlier rule, "bracketed and best L1 above 2 eps", is gone: its best L1 at the
   bracket was up to 18x the final one on Lite0.) EAD's certificate is weak where the L1
   budget is large and the image's perturbations spread thinly (``||d||_2^2`` far below
   ``||d||_1``): at L1 eps 10 on a 224-px EfficientNet-Lite0, on 21 of the 25 images that
   end robust, constants that found nothing reached only 3.5-10 against the 10.1 needed, so
   those 21 ran the whole search and settled spent about half of foolbox's gradients (README,
   "Measured on this project's machine"). The other searches:

   * DDN's perturbation norm is its radius, which shrinks by at most ``1 - gamma`` a step: once
     ``radius * (1 - gamma) ** steps_left > eps``, no later candidate is within eps (clipping to
     the pixel bounds can shorten a candidate, so this is not strict). That bounds the best's
     norm, but foolbox judges the best *shrunk to eps*, which can still be adversarial: a
     search that is adversarial at every step shrinks at its fastest rate and ends above a
     boundary it never reached (an EfficientNet-Lite0 image: best L2 0.0069, the floor of 100
     steps from radius 1, and still adversarial shrunk to 0.003). So the floor settles an image
     only once its search has crossed the boundary and back (a candidate was adversarial and a
     later one was not), and only at an eps where its best so far, shrunk to eps as foolbox
     judges it, is not adversarial. This is a heuristic, not a bound: a model whose adversarial
     region is a thin shell can still be decided otherwise by foolbox's later best (a
     constructed toy did; random ReLU nets, 1,600 images, and 96 PACS images did not).
   * DeepFool: no robust rule; an image runs until it is adversarial or out of steps, as in
     foolbox.

One saving is exact: when EAD's first step at a constant leaves every pixel in place (the
shrinkage swallows it), the following steps repeat it at the same point, so foolbox's abort
check at step ``steps / 10`` is certain to end that constant with nothing new. The settled search
skips to that end (one gradient instead of eleven, the same outcome).

foolbox's batch-wide decision makes its own figure depend on which images share a batch: on 48
EfficientNet-Lite0 PACS images its EAD robust accuracy at L1 eps 10 was 29.2 % in the sample
order and 33.3 % with the same images in shuffled batches of 8, two images flipping; the
per-image search gives 33.3 % (``bench-attacks --orders`` measures this spread).

With ``stop="none"`` no image stops early, and every image spends foolbox's budget for it
(``batch_size=1``). ``stop="exact"`` is not handled here: it runs foolbox's own attack
(:mod:`edgerobust.attacks.whitebox`).

PGD (a fixed-eps attack)
------------------------
foolbox's ``LinfPGD`` runs ``steps`` signed-gradient steps from a random start at every eps on
its own, and judges the **last** iterate, clipped to eps. It is not a search for the smallest
adversarial, so the rule above does not apply; :func:`pgd_search` uses this one instead:

1. **Broken at eps, and at every larger eps**, once the image is misclassified clean or an
   adversarial was found at a smaller eps: that adversarial lies within the larger eps too
   (``||d|| <= eps_small <= eps_large``), and it is the image judged there.
2. **Broken at eps** as soon as any iterate of the run is adversarial (the best-iterate rule:
   its logits come from the forward pass of that step's gradient, so the check is free). The
   image leaves the batch; the batch's run ends when no image is left.
3. **Robust at eps** only after the full step budget, judged on the last iterate as foolbox does:
   PGD has no certificate of robustness. Eps 0 needs no run: the projection puts every iterate
   back on the clean image, so foolbox's answer there is the clean one.

Images that are not settled early follow foolbox's path step for step: the random starts are
drawn as foolbox's sweep draws them (one whole batch per eps, eps ascending, as every sweep here
runs them), and PGD has no batch-wide decision. So the settled answer can differ from foolbox's in one direction only:
an image broken here (an earlier iterate, or a smaller eps, was adversarial) whose last iterate
at that eps is not adversarial in foolbox's run. Robust accuracy under ``settled`` is therefore
at most foolbox's, never above it, and by design the answer at a larger eps never contradicts
a smaller one (foolbox's per-eps random starts can make it non-monotone).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

#: C&W: a finished constant that found no adversarial must have had its smallest loss above
#: ``(CW_MARGIN * eps) ** 2`` (see the module docstring for the measurement behind 1.5).
CW_MARGIN = 1.5
#: EAD: likewise, its smallest elastic-net loss above ``EAD_MARGIN * (1 + beta) * eps``.
EAD_MARGIN = 1.0
#: DDN: the radius it can still shrink to must exceed ``DDN_MARGIN * eps``.
DDN_MARGIN = 1.0


@dataclass
class Counts:
    """Model evaluations a search spent, counted per image."""

    gradients: int = 0  # forward + backward passes
    forwards: int = 0  # forward passes without a gradient (checks)
    per_image: np.ndarray | None = None  # (B,) gradient evaluations of each image


@dataclass
class Search:
    """What a search returns: its best adversarials and what they cost."""

    best: torch.Tensor  # (B, C, H, W) the best adversarial (foolbox's ``run`` output)
    norms: np.ndarray  # (B,) its norm (inf where none was found)
    counts: Counts = field(default_factory=Counts)
    stopped_early: np.ndarray | None = None  # (B,) bool: settled before foolbox's budget


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _kd(t: torch.Tensor, ndim: int) -> torch.Tensor:
    return t.reshape(t.shape + (1,) * (ndim - t.ndim))


def _best_other(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    onehot = torch.nn.functional.one_hot(labels, logits.shape[-1]).bool()
    return logits.masked_fill(onehot, -math.inf).argmax(-1)


def _is_adv(logits: torch.Tensor, labels: torch.Tensor, confidence: float) -> torch.Tensor:
    if confidence != 0:
        onehot = torch.nn.functional.one_hot(labels, logits.shape[-1]).to(logits.dtype)
        logits = logits + onehot * confidence
    return logits.argmax(-1) != labels


def _record(trace: list[dict], rows: np.ndarray, counts: Counts, **columns: Any) -> None:
    """Append what each image in ``rows`` saw when a constant ended (``trace=`` of the C&W and
    EAD searches, to measure stop rules on full-budget runs)."""
    for i in rows:
        row = {"image": int(i), "gradients": int(counts.per_image[i])}
        trace.append(row | {k: v[i].item() for k, v in columns.items()})


class _Open:
    """Per image: which positive epsilons are still undecided (the settled rule's state)."""

    def __init__(self, n: int, eps: Sequence[float], settle: bool) -> None:
        self.eps = np.array(sorted({float(e) for e in eps if e > 0}), np.float64)
        self.settle = settle and self.eps.size > 0
        self.open = np.ones((n, self.eps.size), bool)

    def broken(self, rows: np.ndarray, norms: np.ndarray) -> None:
        if self.settle:
            self.open[rows] &= ~(norms[:, None] <= self.eps[None, :])

    def robust(self, rows: np.ndarray, above: np.ndarray) -> None:
        """``above[i, k]``: image ``rows[i]`` can no longer get within ``eps[k]``."""
        if self.settle:
            self.open[rows] &= ~above

    def settled(self, rows: np.ndarray) -> np.ndarray:
        if not self.settle:
            return np.zeros(len(rows), bool)
        return ~self.open[rows].any(axis=1)


# --------------------------------------------------------------------------- C&W L2


def _to_attack_space(x: torch.Tensor) -> torch.Tensor:
    return ((x - 0.5) / 0.5 * 0.999999).arctanh()  # bounds (0, 1), as foolbox maps them


def _to_model_space(w: torch.Tensor) -> torch.Tensor:
    return w.tanh() * 0.5 + 0.5


def cw_search(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Sequence[float],
    *,
    binary_search_steps: int = 9,
    steps: int = 10000,
    stepsize: float = 1e-2,
    confidence: float = 0.0,
    initial_const: float = 1e-3,
    abort_early: bool = True,
    stop: str = "settled",
    margin: float = CW_MARGIN,
    trace: list[dict] | None = None,
) -> Search:
    """foolbox's ``L2CarliniWagnerAttack.run`` per image, stopping by the settled rule."""
    n = x.shape[0]
    nd = x.ndim
    x_att = _to_attack_space(x)
    recon = _to_model_space(x_att)
    consts = initial_const * np.ones(n)
    lower = np.zeros(n)
    upper = np.full(n, np.inf)
    best = torch.zeros_like(x)
    best_norms = torch.full((n,), math.inf, device=x.device)
    rule = _Open(n, eps, stop == "settled")
    every = int(np.ceil(steps / 10))
    counts = Counts(per_image=np.zeros(n, np.int64))

    bstep = np.zeros(n, np.int64)
    rows = np.arange(n)
    done = np.zeros(n, bool)
    early = np.zeros(n, bool)

    def start(r: np.ndarray) -> None:
        """A fresh binary-search step for images ``r``: foolbox's reset of delta and Adam."""
        last = (bstep[r] == binary_search_steps - 1) & (binary_search_steps >= 10)
        consts[r] = np.where(last, np.minimum(upper[r], 1e10), consts[r])
        delta[r] = 0
        m[r] = 0
        v[r] = 0
        t[r] = 0
        step[r] = 0
        found[r] = False
        prev[r] = np.inf
        lowest[r] = np.inf

    delta = torch.zeros_like(x_att)
    m = torch.zeros_like(x_att)
    v = torch.zeros_like(x_att)
    t = np.zeros(n, np.int64)
    step = np.zeros(n, np.int64)
    found = np.zeros(n, bool)
    prev = np.full(n, np.inf)
    lowest = np.full(n, np.inf)  # smallest loss of this binary-search step
    start(rows)
    while not done.all():
        a = rows[~done]
        ai = torch.from_numpy(a).to(x.device)
        d = delta[ai].requires_grad_(True)
        ya = y[ai]
        c = torch.from_numpy(consts[a].astype(np.float32)).to(x.device)
        with torch.enable_grad():
            xm = _to_model_space(x_att[ai] + d)
            logits = model(xm)
            other = _best_other(logits, ya)
            idx = torch.arange(len(a), device=x.device)
            adv_loss = (logits[idx, ya] - logits[idx, other] + confidence).clamp(min=0) * c
            sq = _flat(xm - recon[ai]).square().sum(-1)
            loss_rows = adv_loss + sq
            (grad,) = torch.autograd.grad(adv_loss.sum() + sq.sum(), d)
        counts.gradients += len(a)
        counts.per_image[a] += 1
        xm = xm.detach()
        logits = logits.detach()
        loss_rows = loss_rows.detach()
        lowest[a] = np.minimum(lowest[a], loss_rows.double().cpu().numpy())

        # Adam, as foolbox's AdamOptimizer (its t and bias corrections per image)
        t[a] += 1
        b1 = torch.from_numpy((1 - 0.9 ** t[a]).astype(np.float64)).float().to(x.device)
        b2 = torch.from_numpy((1 - 0.999 ** t[a]).astype(np.float64)).float().to(x.device)
        m[ai] = 0.9 * m[ai] + (1 - 0.9) * grad
        v[ai] = 0.999 * v[ai] + (1 - 0.999) * grad**2
        mh = m[ai] / _kd(b1, nd)
        vh = v[ai] / _kd(b2, nd)
        delta[ai] = d.detach() - stepsize * mh / (vh.sqrt() + 1e-8)

        # abort_early, per image: at every tenth of the steps, stop if the loss did not drop
        brk = np.zeros(len(a), bool)
        if abort_early:
            check = step[a] % every == 0
            thr = torch.from_numpy(0.9999 * prev[a]).float().to(x.device)
            no_progress = ~(loss_rows <= thr).cpu().numpy()
            brk = check & no_progress
            keep = check & ~no_progress
            prev[a[keep]] = loss_rows[torch.from_numpy(keep).to(x.device)].double().cpu().numpy()
        go = ~brk
        g = a[go]
        if g.size:
            gi = torch.from_numpy(go).to(x.device)
            adv = _is_adv(logits[gi], ya[gi], confidence)
            found[g] |= adv.cpu().numpy()
            norms = _flat(xm[gi] - x[ai[gi]]).norm(dim=-1)
            new = (norms < best_norms[ai[gi]]) & adv
            gsel = ai[gi]
            best[gsel] = torch.where(_kd(new, nd), xm[gi], best[gsel])
            best_norms[gsel] = torch.where(new, norms, best_norms[gsel])
            rule.broken(g, best_norms[gsel].double().cpu().numpy())
        step[g] += 1

        # images whose binary-search step ended: foolbox's constant update
        ended = a[brk | (step[a] >= steps)]
        if ended.size:
            upper[ended] = np.where(found[ended], consts[ended], upper[ended])
            lower[ended] = np.where(found[ended], lower[ended], consts[ended])
            consts[ended] = np.where(
                np.isinf(upper[ended]),
                consts[ended] * 10,
                (lower[ended] + upper[ended]) / 2,
            )
            if trace is not None:
                _record(
                    trace, ended, counts, step=bstep, found=found, lowest=lowest, best=best_norms
                )
            # weak duality, at a constant that found nothing: an adversarial within eps would
            # have let it reach eps^2
            unfound = ~found[ended][:, None]
            rule.robust(
                ended, unfound & (lowest[ended][:, None] > (margin * rule.eps[None, :]) ** 2)
            )
            bstep[ended] += 1
            finished = ended[bstep[ended] >= binary_search_steps]
            done[finished] = True
            start(ended[bstep[ended] < binary_search_steps])
        stop_now = a[~done[a] & rule.settled(a)]
        early[stop_now] = True
        done[stop_now] = True
    return Search(best, best_norms.cpu().numpy().astype(np.float64), counts, early)


# --------------------------------------------------------------------------- EAD L1


def _shrink(z: torch.Tensor, x0: torch.Tensor, beta: float) -> torch.Tensor:
    """foolbox's projected shrinkage-thresholding onto [0, 1]."""
    upper = z - x0 > beta
    lower = z - x0 < -beta
    out = torch.where(upper, torch.clamp(z - beta, max=1.0), x0)
    return torch.where(lower, torch.clamp(z + beta, min=0.0), out)


def ead_search(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Sequence[float],
    *,
    binary_search_steps: int = 9,
    steps: int = 10000,
    initial_stepsize: float = 1e-2,
    confidence: float = 0.0,
    initial_const: float = 1e-3,
    regularization: float = 1e-2,
    decision_rule: str = "EN",
    abort_early: bool = True,
    stop: str = "settled",
    margin: float = EAD_MARGIN,
    trace: list[dict] | None = None,
) -> Search:
    """foolbox's ``EADAttack.run`` per image, stopping by the settled rule."""
    n = x.shape[0]
    nd = x.ndim
    beta = regularization
    dev = x.device
    consts = initial_const * torch.ones(n, device=dev)
    lower = torch.zeros(n, device=dev)
    upper = math.inf * torch.ones(n, device=dev)
    best = torch.zeros_like(x)
    best_vals = torch.full((n,), math.inf, device=dev)  # by the decision rule
    best_l1 = np.full(n, np.inf)
    rule = _Open(n, eps, stop == "settled")
    every = math.ceil(steps / 10)
    counts = Counts(per_image=np.zeros(n, np.int64))
    bstep = np.zeros(n, np.int64)
    rows = np.arange(n)
    done = np.zeros(n, bool)
    early = np.zeros(n, bool)
    bracketed = np.zeros(n, bool)

    xk = x.clone()
    yk = x.clone()
    it = np.zeros(n, np.int64)
    found = np.zeros(n, bool)
    prev = np.full(n, np.inf)
    lowest = np.full(n, np.inf)  # smallest elastic-net loss of this constant

    def start(r: np.ndarray) -> None:
        ri = torch.from_numpy(r).to(dev)
        last = (bstep[r] == binary_search_steps - 1) & (binary_search_steps >= 10)
        if last.any():
            li = ri[torch.from_numpy(last).to(dev)]
            consts[li] = torch.clamp(upper[li], max=1e10)
        xk[ri] = x[ri]
        yk[ri] = x[ri]
        it[r] = 0
        found[r] = False
        prev[r] = np.inf
        lowest[r] = np.inf

    start(rows)
    while not done.all():
        a = rows[~done]
        ai = torch.from_numpy(a).to(dev)
        ya = y[ai]
        yv = yk[ai].requires_grad_(True)
        with torch.enable_grad():
            logits = model(yv)
            other = _best_other(logits, ya)
            idx = torch.arange(len(a), device=dev)
            adv_loss = (logits[idx, ya] - logits[idx, other] + confidence).clamp(min=0)
            adv_loss = adv_loss * consts[ai]
            sq = _flat(yv - x[ai]).square().sum(-1)
            loss_rows = adv_loss + sq
            (grad,) = torch.autograd.grad(adv_loss.sum() + sq.sum(), yv)
        counts.gradients += len(a)
        counts.per_image[a] += 1
        loss_rows = loss_rows.detach()
        en = loss_rows + beta * _flat(yv.detach() - x[ai]).abs().sum(-1)
        lowest[a] = np.minimum(lowest[a], en.double().cpu().numpy())

        size = torch.from_numpy(initial_stepsize * (1.0 - it[a] / steps) ** 0.5).float().to(dev)
        mom = torch.from_numpy(it[a] / (it[a] + 3.0)).float().to(dev)
        old = xk[ai]
        new_xk = _shrink(yv.detach() - _kd(size, nd) * grad, x[ai], beta)
        xk[ai] = new_xk
        yk[ai] = new_xk + _kd(mom, nd) * (new_xk - old)

        brk = np.zeros(len(a), bool)
        if abort_early:
            check = it[a] % every == 0
            lr = loss_rows.double().cpu().numpy()
            no_progress = ~(lr <= 0.9999 * prev[a])
            brk = check & no_progress
            keep = check & ~no_progress
            prev[a[keep]] = lr[keep]
        go = ~brk
        g = a[go]
        if g.size:
            gi = torch.from_numpy(go).to(dev)
            gsel = ai[gi]
            with torch.no_grad():
                adv = _is_adv(model(xk[gsel]), y[gsel], confidence)
            counts.forwards += len(g)
            diff = _flat(xk[gsel] - x[gsel])
            l1 = diff.abs().sum(-1)
            vals = beta * l1 + diff.square().sum(-1) if decision_rule == "EN" else l1
            newb = (vals < best_vals[gsel]) & adv
            best[gsel] = torch.where(_kd(newb, nd), xk[gsel], best[gsel])
            best_vals[gsel] = torch.where(newb, vals, best_vals[gsel])
            nb = newb.cpu().numpy()
            best_l1[g[nb]] = l1[newb].double().cpu().numpy()
            found[g] |= adv.cpu().numpy()
            rule.broken(g, best_l1[g])
        it[g] += 1
        if stop == "settled" and abort_early and every < steps:
            # A first step that leaves every pixel where it was (the shrinkage swallowed it)
            # leaves the next ones there too: the same point, the same gradient, a smaller
            # step. The loss cannot drop, so foolbox's check at step ``every`` ends this
            # constant with nothing new found. Skip to that end: the same outcome, exactly.
            first = (it[a] == 1) & ~brk & (lr > 0)
            if first.any():
                fi = ai[torch.from_numpy(first).to(dev)]
                still = (_flat(xk[fi] - x[fi]) == 0).all(-1).cpu().numpy()
                brk = brk.copy()
                brk[np.flatnonzero(first)[still]] = True

        ended = a[brk | (it[a] >= steps)]
        if ended.size:
            ei = torch.from_numpy(ended).to(dev)
            f = torch.from_numpy(found[ended]).to(dev)
            upper[ei] = torch.where(f, consts[ei], upper[ei])
            lower[ei] = torch.where(f, lower[ei], consts[ei])
            consts[ei] = torch.where(
                torch.isinf(upper[ei]), consts[ei] * 10, (lower[ei] + upper[ei]) / 2
            )
            bracketed[ended] |= found[ended]
            if trace is not None:
                _record(
                    trace,
                    ended,
                    counts,
                    step=bstep,
                    found=found,
                    bracketed=bracketed,
                    best=best_l1,
                    lowest=lowest,
                )
            # weak duality, at a constant that found nothing: an adversarial within L1 eps
            # would have let it reach (1 + beta) * eps
            unfound = ~found[ended][:, None]
            bound = margin * (1 + beta) * rule.eps[None, :]
            rule.robust(ended, unfound & (lowest[ended][:, None] > bound))
            bstep[ended] += 1
            done[ended[bstep[ended] >= binary_search_steps]] = True
            start(ended[bstep[ended] < binary_search_steps])
        stop_now = a[~done[a] & rule.settled(a)]
        early[stop_now] = True
        done[stop_now] = True
    return Search(best, best_l1, counts, early)


# --------------------------------------------------------------------------- DDN L2


def ddn_search(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Sequence[float],
    *,
    steps: int = 100,
    init_epsilon: float = 1.0,
    gamma: float = 0.05,
    stop: str = "settled",
    margin: float = DDN_MARGIN,
) -> Search:
    """foolbox's ``DDNAttack.run`` per image (it has no batch-wide decision), stopping by the
    settled rule."""
    n = x.shape[0]
    nd = x.ndim
    dev = x.device
    delta = torch.zeros_like(x)
    radius = init_epsilon * torch.ones(n, device=dev)
    worst = _flat(torch.maximum(x - 0.0, 1.0 - x)).norm(dim=-1)
    best_l2 = worst.clone()
    best_delta = delta.clone()
    found_any = np.zeros(n, bool)
    bounced = np.zeros(n, bool)  # a candidate was adversarial and a later one was not
    rule = _Open(n, eps, stop == "settled")
    counts = Counts(per_image=np.zeros(n, np.int64))
    done = np.zeros(n, bool)
    early = np.zeros(n, bool)
    rows = np.arange(n)
    for i in range(steps):
        a = rows[~done]
        if not a.size:
            break
        ai = torch.from_numpy(a).to(dev)
        size = 0.01 + (1.0 - 0.01) * (1 + math.cos(math.pi * i / steps)) / 2
        xa = (x[ai] + delta[ai]).requires_grad_(True)
        with torch.enable_grad():
            logits = model(xa)
            loss = torch.nn.functional.cross_entropy(logits, y[ai], reduction="sum")
            (grad,) = torch.autograd.grad(loss, xa)
        counts.gradients += len(a)
        counts.per_image[a] += 1
        zero = _kd(_flat(grad).norm(dim=-1) == 0, nd)  # foolbox: a zero gradient becomes noise
        grad = torch.where(zero, torch.randn_like(grad), grad)
        grad = grad / _kd(_flat(grad).norm(dim=-1).clamp(min=1e-12), nd)
        adv = logits.detach().argmax(-1) != y[ai]
        l2 = _flat(delta[ai]).norm(dim=-1)
        both = adv & (l2 <= best_l2[ai])
        adv_np = adv.cpu().numpy()
        bounced[a] |= found_any[a] & ~adv_np
        found_any[a] |= adv_np
        best_l2[ai] = torch.where(both, l2, best_l2[ai])
        best_delta[ai] = torch.where(_kd(both, nd), delta[ai], best_delta[ai])
        step = delta[ai] + size * grad
        radius[ai] = radius[ai] * torch.where(adv, 1.0 - gamma, 1.0 + gamma)
        radius[ai] = torch.minimum(radius[ai], worst[ai])
        step = step * _kd(radius[ai] / _flat(step).norm(dim=-1), nd)
        delta[ai] = torch.clamp(x[ai] + step, 0, 1) - x[ai]
        judged = np.where(found_any[a], best_l2[ai].double().cpu().numpy(), np.inf)
        rule.broken(a, judged)
        # the smallest radius any later candidate can have; only once the search has crossed
        # the boundary and back (adversarial, then not): a search still shrinking at its
        # fastest rate may end with a best that foolbox's judgement, shrunk to eps, still breaks
        floor = radius[ai].double().cpu().numpy() * (1 - gamma) ** (steps - i - 2)
        above = (floor[:, None] > margin * rule.eps[None, :]) & bounced[a][:, None]
        if rule.settle:
            # foolbox judges the best shrunk to eps: an image whose best so far is adversarial
            # shrunk to eps is not settled robust there (one forward per such eps and image)
            ask = above & rule.open[a] & found_any[a][:, None]
            for k in np.flatnonzero(ask.any(axis=0)):
                sel = ai[torch.from_numpy(ask[:, k]).to(dev)]
                _, hit = judge(model, x[sel], y[sel], x[sel] + best_delta[sel], [rule.eps[k]], "l2")
                counts.forwards += len(sel)
                above[np.flatnonzero(ask[:, k])[hit[0].cpu().numpy()], k] = False
        rule.robust(a, above)
        settled = a[rule.settled(a)]
        if i < steps - 1:
            early[settled] = True
        done[settled] = True
    norms = np.where(found_any, best_l2.double().cpu().numpy(), np.inf)
    return Search(x + best_delta, norms, counts, early)


# --------------------------------------------------------------------------- DeepFool Linf


def deepfool_search(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Sequence[float],
    *,
    steps: int = 50,
    candidates: int | None = 10,
    overshoot: float = 0.02,
    loss: str = "logits",
    stop: str = "settled",
) -> Search:
    """foolbox's ``LinfDeepFoolAttack.run``: an image leaves the batch once it is adversarial
    (foolbox keeps it in the batch, frozen), so the result equals foolbox's at any batch size
    and ``stop`` changes only the cost. DeepFool's loss does not depend on ``eps``."""
    if loss not in ("logits", "crossentropy"):
        raise ValueError(f"expected loss to be 'logits' or 'crossentropy', got {loss!r}")
    n = x.shape[0]
    nd = x.ndim
    dev = x.device
    with torch.no_grad():
        logits0 = model(x)
    counts = Counts(forwards=n, per_image=np.zeros(n, np.int64))
    k = logits0.shape[-1] if candidates is None else min(candidates, logits0.shape[-1])
    classes = logits0.argsort(dim=-1).flip(-1)[:, :k]
    x0 = x
    xc = x.clone()
    p_total = torch.zeros_like(x)
    done = np.zeros(n, bool)
    early = np.zeros(n, bool)
    rows = np.arange(n)

    def loss_grad(xs: torch.Tensor, cls: torch.Tensor, j: int):
        xs = xs.clone().requires_grad_(True)
        with torch.enable_grad():
            lg = model(xs)
            idx = torch.arange(len(xs), device=dev)
            if loss == "logits":
                per = lg[idx, cls[:, j]] - lg[idx, cls[:, 0]]
            else:
                ce = torch.nn.functional.cross_entropy
                per = -ce(lg, cls[:, j], reduction="none") + ce(lg, cls[:, 0], reduction="none")
            (g,) = torch.autograd.grad(per.sum(), xs)
        return per.detach(), lg.detach(), g

    for _ in range(steps):
        a = rows[~done]
        ai = torch.from_numpy(a).to(dev)
        cls = classes[ai]
        l1, lg, g1 = loss_grad(xc[ai], cls, 1)
        counts.gradients += len(a)
        counts.per_image[a] += 1
        adv = (lg.argmax(-1) != y[ai]).cpu().numpy()
        # adversarial images are frozen (foolbox) and need no more gradients (here)
        done[a[adv]] = True
        early[a[adv]] = True
        keep = ~adv
        if not keep.any():
            break
        a = a[keep]
        ki = torch.from_numpy(keep).to(dev)
        ai = ai[ki]
        cls = cls[ki]
        losses = [l1[ki]]
        grads = [g1[ki]]
        for j in range(2, k):
            lj, _, gj = loss_grad(xc[ai], cls, j)
            losses.append(lj)
            grads.append(gj)
        counts.gradients += len(a) * (k - 2)
        counts.per_image[a] += k - 2
        ls = torch.stack(losses, 1)
        gs = torch.stack(grads, 1)
        dist = ls.abs() / (gs.flatten(2).abs().sum(-1) + 1e-8)
        pick = dist.argmin(1)
        idx = torch.arange(len(a), device=dev)
        dist = dist[idx, pick] + 1e-4
        gbest = gs[idx, pick]
        p_total[ai] = p_total[ai] + _kd(dist, nd) * gbest.sign()
        xc[ai] = torch.clamp(x0[ai] + (1.0 + overshoot) * p_total[ai], 0, 1)
    early[~done] = False
    return Search(xc, _flat(xc - x0).abs().max(-1).values.double().cpu().numpy(), counts, early)


# --------------------------------------------------------------------------- PGD Linf


@dataclass
class Runs:
    """What a fixed-eps search returns: the image judged at each eps, in the order asked."""

    adversarials: torch.Tensor  # (E, B, C, H, W): foolbox's ``run`` output at each eps
    counts: Counts = field(default_factory=Counts)
    settled: np.ndarray | None = None  # (E, B) bool: decided before the full budget at that eps


def pgd_search(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Sequence[float],
    *,
    steps: int = 40,
    rel_stepsize: float = 0.01 / 0.3,
    abs_stepsize: float | None = None,
    random_start: bool = True,
    stop: str = "settled",
) -> Runs:
    """foolbox's ``LinfPGD.run`` at each eps of ``eps``, with the settled rule of the module
    docstring (``stop="settled"``), or foolbox's runs themselves (``stop="none"``: every image
    runs every step at every eps and the last iterate is returned).

    The eps are run from the smallest up, so that an adversarial found at a small eps settles
    the larger ones. The random starts are drawn as foolbox's sweep draws them for the eps in
    that order (``FixedEpsilonAttack.__call__`` runs eps after eps, each drawing a start for the
    whole batch; edgerobust's sweeps always hand the eps ascending), so under the same seed an
    image that is not settled early follows foolbox's path step for step, and the answers do
    not depend on the order the eps are given in.
    """
    n = x.shape[0]
    dev = x.device
    eps = [float(e) for e in eps]
    settle = stop == "settled"
    counts = Counts(per_image=np.zeros(n, np.int64))
    ascending = sorted(range(len(eps)), key=eps.__getitem__)
    # foolbox's get_random_start, x0 + uniform(-eps, eps): one whole batch per eps, drawn from
    # the smallest eps up (the order of every edgerobust sweep), whatever the order given
    starts = {}
    for k in ascending:
        e = eps[k]
        noise = torch.rand(x.shape, dtype=x.dtype, device=dev) * (e - -e) + -e
        starts[k] = x + noise if random_start else x
    out = torch.empty((len(eps),) + tuple(x.shape), dtype=x.dtype, device=dev)
    early = np.zeros((len(eps), n), bool)
    rows = np.arange(n)
    # broken[i]: image i has an adversarial (found[i]) within the eps run so far (rule 1)
    found = x.clone()
    broken = np.zeros(n, bool)
    if settle:
        with torch.no_grad():
            broken = (model(x).argmax(-1) != y).cpu().numpy()  # the clean image itself
        counts.forwards += n
    for k in ascending:
        e = eps[k]
        out[k] = x
        if settle:
            b = torch.from_numpy(rows[broken]).to(dev)
            out[k, b] = found[b]
            early[k] = broken
            if e == 0:  # rule 3: at eps 0 every iterate is projected back onto x
                early[k] = True
                continue
        a = rows if not settle else rows[~broken]
        stepsize = rel_stepsize * e if abs_stepsize is None else abs_stepsize
        cur = torch.clamp(starts[k], 0, 1)
        for _ in range(steps):
            if not a.size:
                break
            ai = torch.from_numpy(a).to(dev)
            xa = cur[ai].clone().requires_grad_(True)
            with torch.enable_grad():
                logits = model(xa)
                loss = torch.nn.functional.cross_entropy(logits, y[ai], reduction="none").sum()
                (grad,) = torch.autograd.grad(loss, xa)
            counts.gradients += len(a)
            counts.per_image[a] += 1
            if settle:  # rule 2: an adversarial iterate settles the image at this eps
                hit = (logits.detach().argmax(-1) != y[ai]).cpu().numpy()
                if hit.any():
                    h = ai[torch.from_numpy(hit).to(dev)]
                    found[h] = cur[h]
                    out[k, h] = cur[h]
                    broken[a[hit]] = True
                    early[k, a[hit]] = True
                    keep = torch.from_numpy(~hit).to(dev)
                    a, ai, grad = a[~hit], ai[keep], grad[keep]
                    if not a.size:
                        break
            xs = cur[ai] + stepsize * grad.sign()
            xs = x[ai] + torch.clamp(xs - x[ai], -e, e)
            cur[ai] = torch.clamp(xs, 0, 1)
        ai = torch.from_numpy(a).to(dev)
        out[k, ai] = cur[ai]
        if settle and a.size:  # the last iterate, as foolbox judges it
            with torch.no_grad():
                last = (model(cur[ai]).argmax(-1) != y[ai]).cpu().numpy()
            counts.forwards += len(a)
            h = ai[torch.from_numpy(last).to(dev)]
            found[h] = cur[h]
            broken[a[last]] = True
    return Runs(out, counts, early)


SEARCHES = {
    "L2CarliniWagnerAttack": cw_search,
    "EADAttack": ead_search,
    "DDNAttack": ddn_search,
    "LinfDeepFoolAttack": deepfool_search,
    "LinfPGD": pgd_search,
}

#: The stop rule of each settled search, as the record states it.
RULES = {
    "L2CarliniWagnerAttack": "per image, until every eps is decided: broken once the best L2 "
    "<= eps; robust once a finished constant that found no adversarial had its smallest loss "
    f"> ({CW_MARGIN:g} x eps)^2 (weak duality)",
    "EADAttack": "per image, until every eps is decided: broken once the best L1 <= eps; robust "
    "once a finished constant that found no adversarial had its smallest elastic-net loss > "
    f"{EAD_MARGIN:g} x (1 + beta) x eps (weak duality, ||d||_2^2 <= ||d||_1)",
    "DDNAttack": "per image, until every eps is decided: broken once the best L2 <= eps; robust "
    "once the search has crossed the boundary and back and its radius cannot shrink to eps in "
    "the steps left",
    "LinfDeepFoolAttack": "per image, until adversarial or out of steps (foolbox's result)",
    "LinfPGD": "per image and eps: broken once any iterate is adversarial (best iterate), and at "
    "every larger eps once broken at a smaller one or clean; else foolbox's full steps",
}


def judge(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    best: torch.Tensor,
    eps: Sequence[float],
    norm: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """foolbox's ``MinimizationAttack.__call__`` after ``run``: shrink the best perturbation to
    each eps and ask the model. Returns (clipped (E, B, ...), success (E, B))."""
    return judge_each(model, x, y, best.expand((len(eps),) + tuple(best.shape)), eps, norm)


def judge_each(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    adversarials: torch.Tensor,
    eps: Sequence[float],
    norm: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """foolbox's judgement of ``adversarials[k]`` at ``eps[k]`` (both ``__call__``s): clip the
    perturbation to eps and ask the model. Returns (clipped (E, B, ...), success (E, B))."""
    clipped = []
    success = []
    for e, adv in zip(eps, adversarials, strict=True):
        p = adv - x
        if norm == "linf":
            xpc = x + torch.clamp(p, -e, e)
        else:
            order = 2 if norm == "l2" else 1
            nrm = torch.linalg.vector_norm(_flat(p), ord=order, dim=-1).clamp(min=1e-12)
            factor = torch.clamp(e / nrm, max=1)
            xpc = x + _kd(factor, x.ndim) * p
        with torch.no_grad():
            success.append(model(xpc).argmax(-1) != y)
        clipped.append(xpc)
    return torch.stack(clipped), torch.stack(success)


__all__ = [
    "CW_MARGIN",
    "DDN_MARGIN",
    "EAD_MARGIN",
    "RULES",
    "SEARCHES",
    "Counts",
    "Runs",
    "Search",
    "cw_search",
    "ddn_search",
    "deepfool_search",
    "ead_search",
    "judge",
    "judge_each",
    "pgd_search",
]
