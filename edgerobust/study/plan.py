"""Expanding a study into its stages: models, compressions, artifacts, evaluations, attacks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# --------------------------------------------------------------------------- expansion
import edgerobust.study.stages  # noqa: F401 - registers the stage kinds
from edgerobust.compress.registry import COMPRESSIONS, PlanContext, PlannedModel
from edgerobust.exporters import get_exporter
from edgerobust.runtimes import default_runtime
from edgerobust.runtimes import get as get_runtime
from edgerobust.study.spec import SALTPEPPER_EPS, Study
from edgerobust.study.stage import Stage


@dataclass(frozen=True)
class Plan:
    """The expanded study: stages in dependency order, plus notes on what was left out."""

    study: Study
    stages: tuple[Stage, ...]
    notes: tuple[str, ...] = ()


def num_classes(study: Study) -> int:
    if study.dataset.kind == "synthetic":
        from edgerobust.data.synthetic import CLASSES

        return len(CLASSES)
    from edgerobust.data import open_dataset

    return len(open_dataset(study.dataset.path).classes)


_PARAMS: dict[tuple[str, int], int] = {}


def arch_params(arch: str, n_classes: int) -> int:
    """Parameters of ``arch`` with an ``n_classes`` head (for prune targets named by arch)."""
    if (arch, n_classes) not in _PARAMS:
        from edgerobust.models.build import build_model, count_params

        _PARAMS[(arch, n_classes)] = count_params(build_model(arch, n_classes))
    return _PARAMS[(arch, n_classes)]


def plan_study(study: Study) -> Plan:
    """Expand a study into stages (dependencies first). Pure: runs and writes nothing."""
    ds, tr = study.dataset, study.train
    stages: dict[str, Stage] = {}
    notes: list[str] = []

    def add(stage: Stage) -> Stage:
        return stages.setdefault(stage.key, stage)

    data_deps: tuple[tuple[str, Stage], ...] = ()
    data_settings: dict[str, Any] = {}
    if ds.kind == "synthetic":
        syn = add(
            Stage(
                "synthetic",
                {"per_class": ds.per_class, "size": ds.size, "seed": ds.synthetic_seed},
                label=f"{ds.per_class}/class {ds.size}px",
            )
        )
        data_deps = (("data", syn),)
    else:
        data_settings = {"data": ds.path}
    split = {"split_seed": ds.split_seed, "val_fraction": ds.val_fraction}
    ctx = PlanContext(study, add, data_settings, data_deps, notes)
    # the registered compressions with a table in this study, in registration order
    compressions = [(c, study.compress[n]) for n, c in COMPRESSIONS.items() if n in study.compress]

    models: list[PlannedModel] = []  # fp32: baselines, then what "source" compressions make
    for source in ds.sources:
        baselines: dict[str, PlannedModel] = {}
        for arch in tr.archs:
            settings = {
                **data_settings,
                **split,
                "source": source,
                "arch": arch,
                "image_size": tr.image_size,
                "epochs": tr.epochs,
                "lr": tr.lr,
                "batch_size": tr.batch_size,
                "momentum": tr.momentum,
                "weight_decay": tr.weight_decay,
                "weights": tr.weights,
                "augment": tr.augment,
                "device": tr.device,
                "seed": study.study.seed,
            }
            if tr.head_epochs:  # only when set: older studies keep their stage keys
                settings["head_epochs"] = tr.head_epochs
            if tr.freeze_bn:
                settings["freeze_bn"] = True
            label = f"{source}/{arch}"
            m = PlannedModel(
                Stage("train", settings, data_deps, label),
                arch,
                arch,
                "-",
                arch,
                "baseline",
                source,
            ).with_meta()
            add(m.stage)
            baselines[arch] = m
            models.append(m)
        ctx.source, ctx.baselines = source, baselines
        for c, spec in compressions:
            if c.scope == "source":
                models.extend(c.plan(spec, ctx, models))
    ctx.source, ctx.baselines = None, {}

    # "models" compressions (PTSQ) derive from every fp32 model: int8 by (parent key, engine)
    int8: dict[tuple[str, str], PlannedModel] = {}
    for c, spec in compressions:
        if c.scope == "models":
            for qm in c.plan(spec, ctx, list(models)):
                if qm.parent is not None and qm.engine:  # exported per engine (torch formats)
                    int8[(qm.parent.stage.key, qm.engine)] = qm

    # Exports: fp32 of every model; int8 of the quantized ones (ONNX: onnxruntime QDQ from the
    # fp32 checkpoint; TorchScript / lite: the PTSQ checkpoint of each engine).
    artifacts: list[tuple[Stage, dict[str, Any]]] = []
    if study.export:
        e = study.export
        common = {
            "force": e.force,
            "min_agreement": e.min_agreement,
            "parity_images": e.parity_images,
        }
        for m in models:
            for fmt in e.formats:
                if fmt in e.models and m.compression not in e.models[fmt]:
                    continue
                todo: list[tuple[PlannedModel, str, str | None, dict[str, Any]]] = []
                if "fp32" in e.precisions:
                    todo.append((m, "fp32", None, m.meta()))
                if (
                    "int8" in e.precisions
                    and study.quantize
                    and m.compression in study.quantize.models
                ):
                    exporter = get_exporter(fmt)
                    if exporter.int8 == "own":  # quantized by the exporter for its runtime
                        meta = {
                            **m.meta(),
                            "model": f"{m.label}-int8-{default_runtime(fmt)}",
                            "method": "PTSQ",
                            "compression": "int8",
                            "engine": exporter.int8_engine,
                            "parent_model": m.label,
                        }
                        todo.append((m, "int8", None, meta))
                    else:
                        for engine in study.quantize.engines:
                            qm = int8[(m.stage.key, engine)]
                            todo.append((qm, "int8", engine, qm.meta()))
                for src, quant, _engine, meta in todo:
                    name = _safe(f"{meta['source']}-{meta['model']}-{fmt}-{quant}")
                    meta = {**meta, "format": fmt, "precision": quant}
                    stage = add(
                        Stage(
                            "export",
                            {"format": fmt, "quant": quant, "name": name, **common},
                            (("model", src.stage), *data_deps),
                            f"{meta['source']}/{meta['model']} {fmt} {quant}",
                            meta,
                        )
                    )
                    artifacts.append((stage, meta))

    if study.eval:
        v = study.eval
        for art, meta in artifacts:
            for runtime in v.runtimes:
                if meta["format"] not in get_runtime(runtime).formats:
                    continue
                for threads in v.threads:
                    settings = {
                        **data_settings,
                        "runtime": runtime,
                        "threads": threads,
                        "domains": list(ds.domains) or None,
                        "limit": v.limit or None,
                        "batch_size": v.batch_size,
                        "latency_runs": v.latency_runs,
                        "warmup": v.warmup,
                    }
                    add(
                        Stage(
                            "eval-device",
                            settings,
                            (("artifact", art), *data_deps),
                            f"{art.label} {runtime} x{threads}",
                            {**meta, "runtime": runtime, "threads": threads},
                        )
                    )

    if study.attack:
        a = study.attack
        sources = study.attack_sources
        # White-box attacks run on PyTorch checkpoints: directly on the fp32 models. PTSQ models
        # have no usable gradients, so the fp32 model's adversarials are replayed on its int8
        # versions (torch PTSQ of each engine, the ONNX int8 artifact): label "transfer". One
        # stage per fp32 model and strength crafts once and measures all of them side by side.
        if a.whitebox:
            children: dict[str, list[tuple[str, Stage]]] = {}
            if "int8" in a.models:
                for qm in int8.values():
                    if qm.parent is not None:
                        children.setdefault(qm.parent.stage.key, []).append(
                            (f"replay:{qm.label}", qm.stage)
                        )
                fp32_by_label = {(m.source, m.label): m for m in models}
                for art, meta in artifacts:
                    parent = fp32_by_label.get((meta["source"], meta.get("parent_model")))
                    if (
                        meta["precision"] == "int8"
                        and get_exporter(meta["format"]).int8 == "own"
                        and parent
                    ):
                        children.setdefault(parent.stage.key, []).append(
                            (f"artifact:{meta['model']}", art)
                        )
            for m in models:
                if m.source not in sources:
                    continue
                replays = tuple(children.get(m.stage.key, ()))
                if m.compression not in a.models and not replays:
                    continue
                # Both strengths in one stage: a minimisation attack (C&W, EAD, DeepFool, DDN)
                # then searches once and is judged at every budget.
                strength = "both" if {"light", "heavy"} <= set(a.strengths) else a.strengths[0]
                settings = {
                    **data_settings,
                    **split,
                    "attacks": list(a.whitebox),
                    "strength": strength,
                    "domain": m.source,
                    "limit": a.limit or None,
                    "batch_size": a.batch_size or None,  # None: the fastest on the device
                }
                if a.stop != "exact":  # only when not foolbox's: older studies keep their keys
                    settings["stop"] = a.stop
                extra = f" (+ {len(replays)} int8)" if replays else ""
                add(
                    Stage(
                        "attack",
                        settings,
                        (("model", m.stage), *replays, *data_deps),
                        f"{m.source}/{m.label} {'+'.join(a.strengths)}{extra}",
                        {**m.meta(), "strength": strength},
                        optional=tuple(role for role, _ in replays),
                    )
                )
        # Salt&Pepper is decision-based: it queries each exported artifact in its own runtime.
        if "saltpepper" in a.attacks:
            for art, meta in artifacts:
                if meta["source"] not in sources or meta["compression"] not in a.models:
                    continue
                settings = {
                    **data_settings,
                    "runtime": default_runtime(meta["format"]),
                    "threads": 1,
                    "strengths": list(a.strengths),
                    "epsilons": [SALTPEPPER_EPS[st] for st in a.strengths],
                    "steps": a.saltpepper_steps,
                    "stop": a.saltpepper_stop,
                    "limit": a.limit or None,
                    "batch_size": a.batch_size or 32,  # 0 (auto) is for gradient attacks
                    "seed": 0,
                }
                add(
                    Stage(
                        "saltpepper",
                        settings,
                        (("artifact", art), *data_deps),
                        art.label,
                        dict(meta),
                    )
                )
    if study.corruptions:
        # ImageNet-C corruptions inside each artifact's own runtime, on its source domain's
        # validation split: every artifact sees the same corrupted images (cached once)
        cs = study.corruptions
        for art, meta in artifacts:
            settings = {
                **data_settings,
                **split,
                "runtime": default_runtime(meta["format"]),
                "threads": 1,
                "names": list(cs.names),
                "severities": list(cs.severities),
                "seed": cs.seed,
                "limit": cs.limit or None,
                "batch_size": cs.batch_size,
            }
            add(
                Stage(
                    "corruptions",
                    settings,
                    (("artifact", art), *data_deps),
                    art.label,
                    dict(meta),
                )
            )
    return Plan(study, tuple(stages.values()), tuple(notes))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
