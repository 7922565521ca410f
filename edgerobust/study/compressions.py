"""The built-in compressions: L1 filter pruning (FP), knowledge distillation (KD), PTSQ int8.

Each states its study-file table, how it expands into stages, and its stage adapter (``run``: the
one library call its CLI command makes); see :mod:`edgerobust.compress`.
Stage settings are exactly what the keys of users' cached studies were computed from: change none.
Light: the library code (torch) is reached only through the stage adapters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from edgerobust.compress.registry import (
    ParseContext,
    PlanContext,
    PlannedModel,
    register_compression,
)
from edgerobust.study.spec import (
    ENGINES,
    QUANTIZABLE,
    DistillSpec,
    PruneSpec,
    QuantizeSpec,
    _pair,
    _retrain,
    _Table,
    _weights,
    parse_prune_target,
)
from edgerobust.study.stage import Stage


@register_compression
class Prune:
    """``[compress.prune]`` (or ``[[compress.prune]]``): each base to each target, then retrain."""

    name: ClassVar[str] = "prune"
    method: ClassVar[str] = "FP"
    compression: ClassVar[str] = "pruned"
    scope: ClassVar[str] = "source"
    resumable: ClassVar[bool] = True  # a killed retraining continues from its last epoch
    accelerated: ClassVar[bool] = True  # retraining: a GPU when the cluster has one

    def parse(self, comp: _Table, ctx: ParseContext) -> tuple[PruneSpec, ...] | None:
        train = ctx.train
        specs = []
        for pt in comp.tables("prune"):
            bases = pt.get("bases", pt.array(_any_arch(pt)))
            for i, b in enumerate(bases):
                if b not in train.archs:
                    pt.fail(f"{pt.key('bases')}[{i}]", f"{b} is not trained: add it to train.archs")
            targets = pt.get(
                "targets",
                pt.array(lambda v, k: parse_prune_target(v, k, ctx.where)),
            )
            specs.append(
                PruneSpec(
                    bases=bases,
                    targets=targets,
                    epochs=pt.get("epochs", pt.integer(0), train.epochs),
                    lr=pt.get("lr", pt.number(0.0, 10.0, open_lo=True), None),
                    lr_gamma=pt.get("lr_gamma", pt.number(0.0, 1.0, open_lo=True), None),
                    **_retrain(pt, train, weight_decay=1e-4),
                )
            )
            pt.finish()
        return tuple(specs) or None

    def plan(
        self, spec: tuple[PruneSpec, ...], ctx: PlanContext, models: list[PlannedModel]
    ) -> list[PlannedModel]:
        from edgerobust.study.plan import arch_params, num_classes

        study, source, baselines = ctx.study, ctx.source, ctx.baselines
        if "num_classes" not in ctx.cache:
            ctx.cache["num_classes"] = num_classes(study)
        n_classes = ctx.cache["num_classes"]
        new = []
        for p in spec:
            for base in p.bases:
                base_params = arch_params(base, n_classes)
                for target in p.targets:
                    params = target.params or (
                        arch_params(target.arch, n_classes) if target.arch else None
                    )
                    if params is not None and params >= base_params:
                        ctx.notes.append(
                            f"prune {source}/{base} to {target.label}: left out, "
                            f"{base} has only {base_params / 1e6:.2f}M parameters"
                        )
                        continue
                    settings = {
                        **ctx.data_settings,
                        "target_params": params,
                        "ratio": target.ratio,
                        "epochs": p.epochs,
                        "lr": p.lr,
                        "lr_gamma": p.lr_gamma,
                        "batch_size": p.batch_size,
                        "momentum": p.momentum,
                        "weight_decay": p.weight_decay,
                        "augment": p.augment,
                        "device": ctx.device,
                        "seed": ctx.seed,
                    }
                    if p.freeze_bn:  # only when set: older studies keep their stage keys
                        settings["freeze_bn"] = True
                    label = f"{base}-fp-{target.label}"
                    parent = baselines[base]
                    m = PlannedModel(
                        Stage(
                            self.name,
                            settings,
                            (("model", parent.stage), *ctx.data_deps),
                            f"{source}/{label}",
                        ),
                        label,
                        base,
                        self.method,
                        base,
                        self.compression,
                        source,
                        parent=parent,
                    ).with_meta(target=target.label)
                    ctx.add(m.stage)
                    new.append(m)
        return new

    def run(self, settings: dict[str, Any], inputs: dict[str, Any], out: Path, rep: Any) -> Path:
        """``edgerobust compress prune`` (issue 3): L1 filter pruning of a baseline, then retraining."""
        from edgerobust.compress.prune import PruneConfig, prune_checkpoint
        from edgerobust.study.stages import data_folder, make_config, retraining

        target = settings["target_params"]
        cfg = make_config(
            PruneConfig,
            "prune",
            {
                "checkpoint": inputs["model"].path("checkpoint"),
                "out": str(out),
                "ratio": settings["ratio"],
                "target_params": str(target) if target is not None else None,
                "data": data_folder(settings, inputs),
                "lr_gamma": settings["lr_gamma"],
                **retraining(settings),
            },
        )
        prune_checkpoint(cfg, rep)
        return out / "prune.json"


@register_compression
class Distill:
    """``[compress.distill]``: vanilla KD from a fine-tuned baseline into each pair's student."""

    name: ClassVar[str] = "distill"
    method: ClassVar[str] = "KD"
    compression: ClassVar[str] = "distilled"
    scope: ClassVar[str] = "source"
    resumable: ClassVar[bool] = True
    accelerated: ClassVar[bool] = True  # student training: a GPU when the cluster has one

    def parse(self, comp: _Table, ctx: ParseContext) -> DistillSpec | None:
        dt = comp.table("distill")
        if dt is None:
            return None
        train = ctx.train
        pairs = dt.get("pairs", dt.array(lambda v, k: _pair(v, k, ctx.where, train.archs)))
        spec = DistillSpec(
            pairs=pairs,
            alpha=dt.get("alpha", dt.number(0.0, 1.0), 0.2),
            tau=dt.get("tau", dt.number(0.0, 1000.0, open_lo=True), 10.0),
            student_weights=_weights(dt, "student_weights", ctx.base_dir),
            epochs=dt.get("epochs", dt.integer(1), train.epochs),
            lr=dt.get("lr", dt.number(0.0, 10.0, open_lo=True), 1e-3),
            head_epochs=dt.get("head_epochs", dt.integer(0), 0),
            **_retrain(dt, train, weight_decay=1e-3),
        )
        if spec.head_epochs >= spec.epochs:
            dt.fail(dt.key("head_epochs"), f"expected fewer than epochs ({spec.epochs})")
        dt.finish()
        return spec

    def plan(
        self, d: DistillSpec, ctx: PlanContext, models: list[PlannedModel]
    ) -> list[PlannedModel]:
        new = []
        for pair in d.pairs:
            settings = {
                **ctx.data_settings,
                "student": pair.student,
                "alpha": d.alpha,
                "tau": d.tau,
                "epochs": d.epochs,
                "lr": d.lr,
                "batch_size": d.batch_size,
                "momentum": d.momentum,
                "weight_decay": d.weight_decay,
                "augment": d.augment,
                "student_weights": d.student_weights,
                "device": ctx.device,
                "seed": ctx.seed,
            }
            # only when set: older studies keep their stage keys
            settings |= {"freeze_bn": True} if d.freeze_bn else {}
            settings |= {"head_epochs": d.head_epochs} if d.head_epochs else {}
            label = f"{pair.teacher}-kd-{pair.student}"
            teacher = ctx.baselines[pair.teacher]
            m = PlannedModel(
                Stage(
                    self.name,
                    settings,
                    (("teacher", teacher.stage), *ctx.data_deps),
                    f"{ctx.source}/{label}",
                ),
                label,
                pair.teacher,
                self.method,
                pair.student,
                self.compression,
                ctx.source or "",
                parent=teacher,
            ).with_meta(teacher=pair.teacher)
            ctx.add(m.stage)
            new.append(m)
        return new

    def run(self, settings: dict[str, Any], inputs: dict[str, Any], out: Path, rep: Any) -> Path:
        """``edgerobust compress distill`` (issue 3): vanilla KD from a fine-tuned baseline."""
        from edgerobust.compress.distill import DistillConfig, distill
        from edgerobust.study.stages import data_folder, make_config, retraining

        teacher = inputs["teacher"]
        cfg = make_config(
            DistillConfig,
            "distill",
            {
                "teacher": teacher.path("checkpoint"),
                "data": data_folder(settings, inputs),
                "source": teacher.record.get("source_domain"),
                "out": str(out),
                "student": settings["student"],
                "student_weights": settings["student_weights"],
                "alpha": settings["alpha"],
                "tau": settings["tau"],
                "head_epochs": settings.get("head_epochs"),
                **retraining(settings),
            },
        )
        distill(cfg, rep)
        return out / "distill.json"


@register_compression
class Quantize:
    """``[compress.quantize]``: PTSQ int8 of the chosen fp32 models, one per engine."""

    name: ClassVar[str] = "quantize"
    method: ClassVar[str] = "PTSQ"
    compression: ClassVar[str] = "int8"
    scope: ClassVar[str] = "models"
    # 2: per-channel weights on every engine, w7a8 on x86, bias correction, the fallback search
    version: ClassVar[int] = 2

    def parse(self, comp: _Table, ctx: ParseContext) -> QuantizeSpec | None:
        qt = comp.table("quantize")
        if qt is None:
            return None
        spec = QuantizeSpec(
            engines=qt.get("engines", qt.array(qt.string(ENGINES)), ("x86",)),
            models=qt.get("models", qt.array(qt.string(QUANTIZABLE)), ("baseline",)),
            calib_batches=qt.get("calib_batches", qt.integer(1), 16),
            force=qt.get("force", qt.boolean(), False),
            fallback=qt.get("fallback", qt.boolean(), None),
        )
        qt.finish()
        return spec

    def plan(
        self, q: QuantizeSpec, ctx: PlanContext, models: list[PlannedModel]
    ) -> list[PlannedModel]:
        new = []
        for m in [m for m in models if m.compression in q.models]:
            for engine in q.engines:
                label = f"{m.label}-int8-{engine}"
                qm = PlannedModel(
                    Stage(
                        self.name,
                        # force only when set: studies without it keep their stage keys
                        {"engine": engine, "calib_batches": q.calib_batches}
                        | ({"force": True} if q.force else {})
                        | ({"fallback": q.fallback} if q.fallback is not None else {}),
                        (("model", m.stage),),
                        f"{m.source}/{label}",
                    ),
                    label,
                    m.base,
                    self.method,
                    m.arch,
                    self.compression,
                    m.source,
                    engine=engine,
                    parent=m,
                ).with_meta()
                ctx.add(qm.stage)
                new.append(qm)
        return new

    def run(self, settings: dict[str, Any], inputs: dict[str, Any], out: Path, rep: Any) -> Path:
        """``edgerobust compress quantize``: eager PTSQ int8 for one engine."""
        from edgerobust.compress.ptsq import QuantizeConfig, quantize_checkpoint

        cfg = QuantizeConfig(
            checkpoint=inputs["model"].path("checkpoint"),
            engine=settings["engine"],
            calib_batches=settings["calib_batches"],
            force=settings.get("force", False),
            fallback=settings.get("fallback", True),
            out=str(out),
        )
        rec = quantize_checkpoint(cfg, rep)
        if rec["warning"]:
            rep.log(f"warning: {rec['warning']}")
        return out / "quantize.json"


def _any_arch(t: _Table) -> Any:
    return t.arch()
