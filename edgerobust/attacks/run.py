"""``edgerobust attack``: the paper's adversarial evaluation of one checkpoint (Tables 3-5).

Images: the domain's validation split (the paper: 10 % of Amazon, seed 1), optionally a seeded
sample of ``limit`` of them. Attacks run in [0, 1] pixel space, with the paper's settings and
epsilons (:mod:`edgerobust.attacks`); eps 0 is always added as a sanity point. The batch is the
paper's 8 unless given (``batch_size=None``: the fastest per image on the device, except under
``stop="exact"``, where foolbox's C&W and EAD figures depend on the batch).

``stop`` picks how C&W, EAD, DDN and DeepFool search: ``exact`` is foolbox's attack, ``settled``
stops each image once its answer at every eps is decided (:mod:`edgerobust.attacks.settled`).

Which models are measured, and how each figure is labelled:

* The **source** model is the one gradients come from: the checkpoint itself when it is fp32,
  its fp32 parent (``spec.origin["parent"]``, or ``--source``) when it is int8. Gradient attacks
  on the source are ``direct``.
* An **int8 checkpoint** has no backward pass (its kernels are quantized), so a gradient attack
  is never run on it: the source's adversarials are replayed on it, labelled ``transfer``.
* Every **artifact** (``--artifacts``) gets the same replay inside its own runtime: ``transfer``.
* Every **replay checkpoint** (``--replay``: e.g. the int8 models of every engine made from the
  fp32 model attacked) gets the same replay as a PyTorch model: ``transfer``. The adversarials
  are crafted once and every target reads the same ones, so one run measures a model and all its
  deployed versions side by side.
* **Salt&Pepper** is decision-based: it only reads predicted classes, so it runs against each
  model itself (torch model or artifact in its runtime), labelled ``blackbox``.

Definitions (per attack, model and eps): robust accuracy = fraction of all ``n`` samples still
classified correctly under attack; success rate = fraction of the clean-correct samples that the
attack turns wrong; median norm = median perturbation norm (the attack's norm, whole image) of
those successful adversarials. The average adversarial accuracy (Tables 4/5) is the mean robust
accuracy over the attacks at each one's headline eps (the strength's largest budget).

``strength="both"`` sweeps the light and the heavy budgets in one run: a minimisation attack
(DeepFool, C&W, DDN, EAD) then searches once and is judged at every eps, so both strengths cost
little more than one. Each attack names its headline eps per strength (``headline_eps``) and the
averages and sanity checks are kept per strength.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgerobust import __version__
from edgerobust.attacks import Attack, Strength, get, list_attacks
from edgerobust.attacks.base import RunContext, Target, summarise
from edgerobust.attacks.gradient import GradStop
from edgerobust.attacks.saltpepper import StopRule
from edgerobust.attacks.sanity import (
    Headline,
    SanityFlag,
    check_blackbox_vs_whitebox,
    check_eps0,
    check_gradients,
    check_monotone,
)
from edgerobust.errors import ArtifactError, CheckpointError, ConfigError, DataError
from edgerobust.progress import NullReporter, Reporter
from edgerobust.records import AttackRecord

RECORD_VERSION = AttackRecord.VERSION  # 2: headline_eps per attack; averages by strength

BOTH = "both"  # --strength both: the light and heavy budgets in one sweep
PAPER_BATCH = 8  # the paper's attack batch


@dataclass(frozen=True)
class AttackConfig:
    """What ``edgerobust attack`` runs. ``params`` overrides attack settings, e.g.
    ``{"cw": {"steps": 10}}`` (keys are checked against the registry)."""

    checkpoint: str
    data: str | None = None  # None: the dataset recorded in the checkpoint
    domain: str | None = None  # None: the model's source domain
    attacks: tuple[str, ...] = field(default_factory=lambda: tuple(list_attacks()))
    strength: Strength | str = Strength.light  # light | heavy | both
    eps: tuple[float, ...] | None = None  # None: the paper's eps for ``strength``
    limit: int | None = None  # a seeded sample of this many validation images
    seed: int = 0
    batch_size: int | None = 8  # None: the fastest on the device (8 under stop exact)
    source: str | None = None  # fp32 model to craft on (default: the int8 model's parent)
    artifacts: tuple[str, ...] = ()
    replay: tuple[str, ...] = ()  # more checkpoints the adversarials are replayed on
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    sp_stop: StopRule = StopRule.settled  # exact: foolbox's figures, at ~0.6 of its queries
    # C&W, EAD, DDN, DeepFool, PGD: exact is foolbox's attack; settled stops each image's search once
    # its answer at every eps is decided (attacks/settled.py). ``edgerobust attack`` defaults to
    # settled; the default here stays exact, so a study's cached attack stage keeps its meaning.
    stop: str = "exact"
    device: str = "auto"
    threads: int = 1
    out: str | None = None

    def validate(self) -> None:
        if not self.attacks:
            raise ConfigError("--attacks is empty: name at least one attack")
        for name in self.attacks:
            get(name)
        if len(set(self.attacks)) != len(self.attacks):
            raise ConfigError(f"--attacks names an attack twice: {','.join(self.attacks)}")
        if self.strength != BOTH:
            try:
                Strength(self.strength)
            except ValueError:
                raise ConfigError(
                    f"--strength must be light, heavy or both, got {self.strength!r}"
                ) from None
        elif self.eps is not None:
            raise ConfigError("--eps replaces one strength's budgets: use it with light or heavy")
        StopRule(self.sp_stop)
        if self.stop not in [g.value for g in GradStop]:
            raise ConfigError(f"--stop must be exact or settled, got {self.stop!r}")
        if self.eps is not None:
            if not self.eps:
                raise ConfigError("--eps is empty: give budgets separated by commas")
            if any(not np.isfinite(e) or e < 0 for e in self.eps):
                raise ConfigError(f"--eps: budgets must be finite and >= 0, got {list(self.eps)}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {self.seed}")
        if self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")
        for name, overrides in self.params.items():
            if name not in self.attacks:
                raise ConfigError(
                    f"a setting is given for {name!r}, which is not among --attacks "
                    f"({','.join(self.attacks)})"
                )
            get(name).with_params(overrides)

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "data": self.data,
            "domain": self.domain,
            "attacks": list(self.attacks),
            "strength": self.strength if self.strength == BOTH else Strength(self.strength).value,
            "eps": list(self.eps) if self.eps is not None else None,
            "limit": self.limit,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "source": self.source,
            "artifacts": list(self.artifacts),
            "replay": list(self.replay),
            "params": {k: dict(v) for k, v in self.params.items()},
            "sp_stop": StopRule(self.sp_stop).value,
            "stop": self.stop,
            "device": self.device,
            "threads": self.threads,
            "out": self.out,
        }


def strengths(cfg: AttackConfig) -> tuple[Strength, ...]:
    """The strengths one run measures: one, or light and heavy for ``both``."""
    if cfg.strength == BOTH:
        return (Strength.light, Strength.heavy)
    return (Strength(cfg.strength),)


def attack_eps(spec: Attack, cfg: AttackConfig) -> tuple[float, ...]:
    """The eps sweep of one attack: 0 (the sanity point), then the requested budgets, ascending."""
    if cfg.eps is not None:
        chosen: tuple[float, ...] = cfg.eps
    else:
        chosen = tuple(e for st in strengths(cfg) for e in spec.eps(st))
    return tuple(sorted({0.0, *(float(e) for e in chosen)}))


def headline_eps(spec: Attack, cfg: AttackConfig) -> dict[str, float]:
    """Per strength, the eps its tables report: the largest of its budgets."""
    if cfg.eps is not None:
        return {Strength(cfg.strength).value: float(max(cfg.eps))}
    return {st.value: float(max(spec.eps(st))) for st in strengths(cfg)}


def run_attacks(cfg: AttackConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run the configured attacks; return the JSON record (also written to ``cfg.out``).

    Each attack is reached through the registry and measured by its own ``measure`` (see
    :mod:`edgerobust.attacks.base`): nothing here depends on which attack, or which kind, it is.
    """
    from edgerobust.attacks.whitebox import (
        input_gradient_norms,
        resolve_device,
        torch_numpy_model,
    )
    from edgerobust.models.checkpoint import load_checkpoint
    from edgerobust.runtimes import open_artifact
    from edgerobust.runtimes.manifest import atomic_write_json
    from edgerobust.runtimes.preprocess import to_input

    cfg.validate()
    rep = reporter or NullReporter()
    device = resolve_device(cfg.device)
    specs = [get(a) for a in cfg.attacks]

    # ---- models: the checkpoint, the source of gradients, and the artifacts
    ck = load_checkpoint(cfg.checkpoint, device=str(device))
    int8 = bool(ck.spec.quant)
    src = _source(cfg, ck, int8, device, load_checkpoint)
    batch = _attack_batch(cfg, src, specs, device, rep)
    bs = batch["size"]

    def torch_target(name: str, role: str, k: Any) -> Target:
        eng = k.spec.quant["engine"] if k.spec.quant else None
        fn = torch_numpy_model(k.model, device, bs, eng)
        return Target(name, "torch", role, fn, _ckpt_info(k), model=k.model)

    def same_task(classes: Any, input_size: Any) -> bool:
        return list(classes) == list(ck.spec.class_names) and input_size == ck.spec.input_size

    targets: list[Target] = []
    if src is not ck:
        targets.append(torch_target("source", "source", src))
    targets.append(torch_target("checkpoint", "checkpoint", ck))
    for path in cfg.replay:
        rk = load_checkpoint(path, device=str(device))
        if rk.sha256 in (ck.sha256, src.sha256):
            raise ConfigError(f"--replay {path} is the checkpoint attacked or its source already")
        if not same_task(rk.spec.class_names, rk.spec.input_size):
            raise CheckpointError(
                f"{path}: its classes or input size differ from {ck.path.name}'s; replay "
                "adversarials only on models of the same task"
            )
        targets.append(torch_target(str(path), "replay", rk))
    for path in cfg.artifacts:
        art = open_artifact(path, threads=cfg.threads)
        man = art.manifest
        if not same_task(man.class_names, man.input_size):
            raise ArtifactError(
                f"{path}: its classes or input size differ from {ck.path.name}'s; replay "
                "adversarials only on artifacts exported from this model family"
            )
        targets.append(
            Target(
                man.file,
                "artifact",
                "artifact",
                art,
                {
                    "path": str(path),
                    "format": man.format,
                    "precision": man.precision,
                    "engine": man.engine,
                    "sha256": man.sha256,
                    "runtime": art.info(),
                },
            )
        )
    if len({t.name for t in targets}) != len(targets):
        raise ConfigError("--artifacts or --replay names the same model twice")
    source_name = "source" if src is not ck else "checkpoint"
    source = next(tg for tg in targets if tg.name == source_name)

    # ---- images: the domain's validation split, optionally a seeded sample
    ds, dom, domain, images, split, idx = validation_images(
        ck, cfg.data, cfg.domain, cfg.limit, cfg.seed, rep
    )
    unreadable = [dom.files[i] for i in split.val if not images.ok[i]]
    x = to_input(np.asarray(images.pixels[idx]))
    y = np.asarray(images.labels[idx], dtype=np.int64)
    n = len(idx)
    batches = [slice(s, min(s + bs, n)) for s in range(0, n, bs)]

    # ---- clean accuracy of every model, and the source's input gradients
    for tg in targets:
        tg.clean_correct = np.concatenate([tg.fn(x[b]).argmax(1) == y[b] for b in batches])
    flags: list[SanityFlag] = []
    if any(s.gradient for s in specs):
        grads = np.concatenate(
            [input_gradient_norms(src.model, x[b], y[b], device) for b in batches]
        )
        flags += check_gradients(source_name, grads)
        grad_summary = {
            "model": source_name,
            "median_l2": float(np.median(grads)),
            "zero_fraction": float((grads == 0).mean()),
        }
    else:
        grad_summary = None

    # ---- the attacks, each measured on every target by its own kind's rule (see .base)
    ctx = RunContext(
        seed=cfg.seed,
        batch_size=bs,
        sample_ids=tuple(idx),
        stop=cfg.sp_stop,
        grad_stop=cfg.stop,
        device=device,
        reporter=rep,
    )
    results = []
    headlines: dict[str, list[Headline]] = {st.value: [] for st in strengths(cfg)}
    for spec in specs:
        eps = attack_eps(spec, cfg)
        headline = headline_eps(spec, cfg)
        settings = spec.with_params(cfg.params.get(spec.name, {}))
        t0 = time.perf_counter()
        per_target, raised = spec.measure(targets, source, x, y, eps, settings=settings, ctx=ctx)
        seconds = time.perf_counter() - t0
        rep.log(f"{spec.name}: {seconds:.1f} s{_cost(per_target)}")
        flags += raised
        for r in per_target:
            flags += check_eps0(
                spec.name, r["target"], eps, r["robust_accuracy"], r["clean_accuracy"]
            )
            flags += check_monotone(spec.name, r["target"], eps, r["robust_accuracy"])
            for st, e in headline.items():
                headlines[st].append(
                    Headline(
                        spec.name,
                        r["target"],
                        r["label"],
                        spec.gradient,
                        e,
                        r["robust_accuracy"][eps.index(e)],
                    )
                )
        results.append(
            {
                "attack": spec.name,
                "title": spec.title,
                "norm": spec.norm,
                "gradient": spec.gradient,
                "eps": list(eps),
                "headline_eps": headline,
                "settings": settings,
                "seconds": seconds,
                "results": per_target,
            }
        )
    for figs in headlines.values():
        flags += check_blackbox_vs_whitebox(figs)

    record = AttackRecord(
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        edgerobust=__version__,
        config=cfg.to_dict(),
        model=_ckpt_info(ck),
        source=source_name,
        device={**_device_info(device), "attack_batch": batch},
        data={
            "root": str(ds.root),
            "domain": domain,
            "split": "val",
            "split_seed": split.seed,
            "val_fraction": split.val_fraction,
            "n_split": len(split.val),
            "n": n,
            "limit": cfg.limit,
            "sample_seed": cfg.seed if cfg.limit is not None else None,
            "files": [dom.files[i] for i in idx],
            "unreadable_skipped": unreadable,
        },
        targets=[
            {
                "name": tg.name,
                "kind": tg.kind,
                "role": tg.role,
                "clean_accuracy": float(tg.clean_correct.mean()),
                **tg.info,
            }
            for tg in targets
        ],
        gradients=grad_summary,
        attacks=results,
        average_adversarial_accuracy={
            st: _average(figs, [tg.name for tg in targets]) for st, figs in headlines.items()
        },
        sanity=[f.to_dict() for f in flags],
    ).to_dict()
    if cfg.out:
        atomic_write_json(cfg.out, record)
    return record


def _attack_batch(
    cfg: AttackConfig, src: Any, specs: list[Attack], device: Any, rep: Reporter
) -> dict[str, Any]:
    """The attack batch size: as given; else the paper's 8 when foolbox's own search runs (its
    C&W and EAD stop on the batch's summed loss, so the batch changes their figures); else the
    fastest per image on this device, measured on the source model."""
    from edgerobust.attacks.gradient import GradStop
    from edgerobust.attacks.whitebox import fastest_batch

    if cfg.batch_size is not None:
        return {"size": cfg.batch_size, "chosen_by": "given"}
    if cfg.stop == GradStop.exact.value or not any(s.gradient for s in specs):
        return {"size": PAPER_BATCH, "chosen_by": "paper"}
    t = rep.task("fastest attack batch", None)
    size, timing = fastest_batch(src.model, src.spec.input_size, device)
    rep.done(t)
    rep.log(f"attack batch {size}: the fastest per image on {device}")
    return {
        "size": size,
        "chosen_by": "fastest",
        "seconds_per_image": {str(k): v for k, v in timing.items()},
    }


def _cost(per_target: list[dict[str, Any]]) -> str:
    """What an attack spent, for its progress line: gradient evaluations and the rule."""
    first = per_target[0] if per_target else {}
    if "gradients" in first:
        return f", {first['gradients']} gradient evaluations (stop {first['stop']})"
    return ""


def _source(cfg: AttackConfig, ck: Any, int8: bool, device: Any, load: Callable) -> Any:
    """The fp32 model gradients come from (see the module docstring)."""
    if cfg.source:
        src = load(cfg.source, device=str(device))
        if src.spec.quant:
            raise ConfigError(f"--source {cfg.source} is int8: gradients need an fp32 model")
    elif int8:
        parent = ck.spec.origin.get("parent")
        if not parent:
            raise CheckpointError(
                f"{ck.path} is int8 and records no fp32 parent: pass --source FP32_CHECKPOINT"
            )
        try:
            src = load(parent, device=str(device))
        except CheckpointError as exc:
            raise CheckpointError(f"{exc} (the int8 model's fp32 parent; pass --source)") from None
        want = ck.spec.origin.get("parent_sha256")
        if want and src.sha256 != want:
            raise CheckpointError(
                f"{src.path} changed since {ck.path} was quantized from it (sha256 differs): "
                "pass --source with the original fp32 checkpoint"
            )
    else:
        return ck
    if (
        list(src.spec.class_names) != list(ck.spec.class_names)
        or src.spec.input_size != ck.spec.input_size
    ):
        raise CheckpointError(
            f"{src.path} and {ck.path} differ in classes or input size: transfer needs the same task"
        )
    return src


def _ckpt_info(ck: Any) -> dict[str, Any]:
    return {
        "path": str(ck.path),
        "sha256": ck.sha256,
        "arch": ck.spec.arch,
        "precision": ck.spec.precision,
        "engine": ck.spec.quant.get("engine") if ck.spec.quant else None,
        "differentiable": not ck.spec.quant,
    }


def _device_info(device: Any) -> dict[str, Any]:
    import foolbox
    import torch

    info = {"device": str(device), "torch": torch.__version__, "foolbox": foolbox.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _average(headlines: list[Headline], targets: list[str]) -> dict[str, Any]:
    """Tables 4/5's "Avg Adversarial Acc": mean headline robust accuracy per model."""
    out = {}
    for name in targets:
        figs = [h for h in headlines if h.target == name]
        if figs:
            labels: dict[str, int] = {}
            for h in figs:
                labels[h.label] = labels.get(h.label, 0) + 1
            out[name] = {
                "value": float(np.mean([h.robust_accuracy for h in figs])),
                "attacks": [h.attack for h in figs],
                "labels": labels,
            }
    return out


__all__ = [
    "BOTH",
    "AttackConfig",
    "attack_eps",
    "headline_eps",
    "run_attacks",
    "strengths",
    "summarise",
]


def validation_images(
    ck: Any,
    data: str | None,
    domain: str | None,
    limit: int | None,
    seed: int,
    rep: Reporter | None = None,
) -> tuple[Any, Any, str, Any, Any, list[int]]:
    """The images the attacks take: the checkpoint's source (or ``domain``) validation split,
    decoded at the model's size, readable ones only, optionally a seeded sample of ``limit``.

    Returns ``(dataset, domain_data, domain, decoded, split, indices)``.
    """
    from edgerobust.data import decode_domain, open_dataset
    from edgerobust.evaluate import check_classes

    rep = rep or NullReporter()
    origin = ck.spec.origin
    root = data or origin.get("dataset")
    if not root:
        raise DataError(f"{ck.path} records no dataset: pass --data DIR")
    ds = open_dataset(root)
    check_classes(list(ck.spec.class_names), ds.classes, ds.root)
    domain = domain or origin.get("source_domain")
    if not domain:
        raise ConfigError(f"{ck.path} records no source domain: pass --domain")
    dom = ds.domain(domain)
    split = ds.split(domain, origin.get("split_seed", 1), origin.get("val_fraction", 0.1))
    t = rep.task(f"decode {domain}", len(dom))
    images = decode_domain(
        dom, ck.spec.input_size, progress=lambda d, n: rep.advance(t, 0, completed=d)
    )
    rep.done(t)
    idx = [i for i in split.val if images.ok[i]]
    if not idx:
        raise DataError(f"the validation split of {domain!r} has no readable image")
    if limit is not None and limit < len(idx):
        rng = np.random.default_rng(seed)
        idx = sorted(rng.choice(idx, size=limit, replace=False).tolist())
    return ds, dom, domain, images, split, idx
