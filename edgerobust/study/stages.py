"""Stage adapters for ``edgerobust run``: one small function per stage kind.

An adapter is ``fn(settings, inputs, out_dir, reporter) -> record path``. It turns the stage's
settings (what its key is computed from) and its finished inputs (``role -> StageOutput``) into
the one library call the CLI command of the same name makes, writes everything into
``out_dir``, and returns the path of the JSON record it wrote. It holds no logic of its own.
Heavy imports happen inside the adapters, so listing or planning a study imports no torch.
The compressions' adapters (``prune``, ``distill``, ``quantize``) are the ``run`` methods of the
compressions in :mod:`edgerobust.study.compressions`, registered with them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgerobust.errors import EdgeRobustError
from edgerobust.progress import Reporter
from edgerobust.records import (
    AttackFigureRecord,
    ExportRecord,
    encode_outcomes,
    images_digest,
)
from edgerobust.runtimes.manifest import atomic_write_json
from edgerobust.study.stage import StageOutput, register_stage


class StageUnavailable(EdgeRobustError):
    """A stage kind whose library code is not part of this installation."""


def data_folder(settings: dict[str, Any], inputs: dict[str, StageOutput]) -> str:
    """The dataset folder: the synthetic stage's output, or the study's folder."""
    if "data" in inputs:
        return inputs["data"].path("root")
    return str(settings["data"])


def make_config(cls: type, what: str, values: dict[str, Any]) -> Any:
    """Build a frozen config dataclass from the stage's values.

    None means "the config's default". A value the config has no field for is an error: a study
    setting must never be ignored silently.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in values.items():
        if v is None:
            continue
        if k not in fields:
            raise StageUnavailable(
                f"{what}: this installation's {cls.__name__} has no {k!r} setting"
            )
        kwargs[k] = v
    return cls(**kwargs)


def retraining(settings: dict[str, Any]) -> dict[str, Any]:
    """The fitting settings prune and distill share (augment false: the config's default)."""
    keys = ("epochs", "lr", "momentum", "weight_decay", "batch_size", "seed", "device")
    return {
        **{k: settings[k] for k in keys},
        "augment": settings["augment"] or None,
        "freeze_bn": settings.get("freeze_bn"),  # absent in older studies: the default
    }


# --------------------------------------------------------------------------- data


@register_stage("synthetic")
def synthetic_stage(
    settings: dict[str, Any], inputs: dict[str, StageOutput], out: Path, rep: Reporter
) -> Path:
    """The built-in synthetic domains (studio, webcam, natural), generated into ``out/data``."""
    from edgerobust.data.synthetic import CLASSES, DOMAINS, make_synthetic

    t = rep.task("synthetic domains", len(DOMAINS) * len(CLASSES) * settings["per_class"])
    root = make_synthetic(
        out / "data",
        per_class=settings["per_class"],
        size=settings["size"],
        seed=settings["seed"],
        progress=lambda d, n: rep.advance(t, 0, completed=d),
    )
    rep.done(t)
    record = {
        "record": "dataset",
        "record_version": 1,
        "kind": "synthetic",
        "root": str(root),
        "domains": list(DOMAINS),
        "classes": list(CLASSES),
        **settings,
    }
    atomic_write_json(out / "dataset.json", record)
    return out / "dataset.json"


# --------------------------------------------------------------------------- models


@register_stage("train", resumable=True, accelerated=True)
def train_stage(
    settings: dict[str, Any], inputs: dict[str, StageOutput], out: Path, rep: Reporter
) -> Path:
    """``edgerobust train``; resumable: a killed run continues from its last finished epoch."""
    from edgerobust.train import TrainConfig, train

    cfg = TrainConfig(
        data=data_folder(settings, inputs),
        source=settings["source"],
        arch=settings["arch"],
        out=str(out),
        weights=settings["weights"],
        epochs=settings["epochs"],
        lr=settings["lr"],
        momentum=settings["momentum"],
        weight_decay=settings["weight_decay"],
        batch_size=settings["batch_size"],
        image_size=settings["image_size"],
        augment=settings["augment"],
        head_epochs=settings.get("head_epochs", 0),
        freeze_bn=settings.get("freeze_bn", False),
        seed=settings["seed"],
        split_seed=settings["split_seed"],
        val_fraction=settings["val_fraction"],
        device=settings["device"],
    )
    train(cfg, rep)
    return out / "train.json"


# --------------------------------------------------------------------------- artifacts


@register_stage("export")
def export_stage(
    settings: dict[str, Any], inputs: dict[str, StageOutput], out: Path, rep: Reporter
) -> Path:
    """``edgerobust export`` with its parity gate; writes an ``export`` record beside the artifact."""
    from edgerobust.exporters import ExportRequest, export

    res = export(
        ExportRequest(
            checkpoint=inputs["model"].path("checkpoint"),
            format=settings["format"],
            quant=settings["quant"],
            out=str(out),
            name=settings["name"],
            data=data_folder(settings, inputs) if "data" in inputs or "data" in settings else None,
            parity_images=settings["parity_images"],
            min_agreement=settings["min_agreement"],
            force=settings["force"],
        ),
        rep,
    )
    m = res.manifest
    record = ExportRecord(
        artifact=str(res.artifact),
        manifest=str(res.manifest_path),
        format=m.format,
        precision=m.precision,
        engine=m.engine,
        arch=m.arch,
        params=m.params,
        size_bytes=m.size_bytes,
        size_mb=m.size_bytes / 1e6,
        sha256=m.sha256,
        source=m.source,
        parity=m.parity,
        parity_passed=res.parity.passed,
        notes=list(m.notes),
    ).to_dict()
    atomic_write_json(out / "export.json", record)
    return out / "export.json"


@register_stage("eval-device", exclusive=True)
def eval_stage(
    settings: dict[str, Any], inputs: dict[str, StageOutput], out: Path, rep: Reporter
) -> Path:
    """``edgerobust eval-device``. Exclusive: latency is measured with no other stage running."""
    from edgerobust.evaluate import EvalConfig, evaluate

    domains = settings["domains"]
    evaluate(
        EvalConfig(
            artifact=inputs["artifact"].path("artifact"),
            data=data_folder(settings, inputs),
            runtime=settings["runtime"],
            domains=tuple(domains) if domains else None,
            threads=settings["threads"],
            batch_size=settings["batch_size"],
            warmup=settings["warmup"],
            latency_runs=settings["latency_runs"],
            limit=settings["limit"],
            out=str(out / "eval.json"),
        ),
        rep,
    )
    return out / "eval.json"


# --------------------------------------------------------------------------- attacks


@register_stage("saltpepper", version=2)
def saltpepper_stage(
    settings: dict[str, Any], inputs: dict[str, StageOutput], out: Path, rep: Reporter
) -> Path:
    """Salt&Pepper (label ``blackbox``): the decision-based attack against the exported artifact,
    queried inside its runtime, on the source domain's validation split (the paper's protocol).

    One search serves every strength (success is decided per epsilon); one record per strength.
    """
    import numpy as np

    from edgerobust.attacks.saltpepper import StopRule, saltpepper_attack
    from edgerobust.data import origin_images
    from edgerobust.evaluate import domain_indices
    from edgerobust.runtimes import open_artifact
    from edgerobust.runtimes.preprocess import to_input

    path = inputs["artifact"].path("artifact")
    model = open_artifact(path, settings["runtime"], threads=settings["threads"])
    man = model.manifest
    data = data_folder(settings, inputs) if "data" in inputs or "data" in settings else None
    ds, images, _ = origin_images(man.source, "val", man.input_size, data)
    # the images eval-device --attack saltpepper picks: the validation split, or its seeded sample
    _, idx = domain_indices(ds.domain(man.source["source_domain"]), man.source, settings["limit"])
    idx = [i for i in idx if images.ok[i]]
    files = [ds.domain(man.source["source_domain"]).files[i] for i in idx]
    x = to_input(np.asarray(images.pixels[idx]))
    y = np.asarray(images.labels[idx])
    t = rep.task(f"salt&pepper {man.file}", None)
    res = saltpepper_attack(
        model,
        x,
        y,
        settings["epsilons"],
        steps=settings["steps"],
        seed=settings["seed"],
        batch_size=settings["batch_size"],
        stop=StopRule(settings["stop"]),
        # each image's noise stream is keyed by its index in the domain, as in eval-device
        # --attack saltpepper and bench-saltpepper: the same image gets the same figure
        sample_ids=idx,
    )
    rep.done(t)
    n = len(idx)
    clean = int(np.asarray(res.clean_correct).sum())
    written = []
    for k, (strength, eps) in enumerate(
        zip(settings["strengths"], settings["epsilons"], strict=True)
    ):
        record = AttackFigureRecord(
            attack="saltpepper",
            strength=strength,
            epsilon=eps,
            norm="L2",
            label="blackbox",
            n=n,
            clean_correct=clean,
            robust_correct=int(n - np.asarray(res.success[k]).sum()),
            steps=settings["steps"],
            queries_total=int(res.total_queries),
            # what foolbox spends: the clean query, every step and one check per epsilon
            queries_full=n * (1 + settings["steps"] + len(settings["epsilons"])),
            stop=settings["stop"],  # see edgerobust.attacks.saltpepper.StopRule
            seed=settings["seed"],
            images=f"{man.source.get('source_domain')} validation split",
            images_sha256=images_digest(files),
            outcomes=encode_outcomes(~np.asarray(res.success[k], bool)),
            artifact={
                "path": str(path),
                "file": man.file,
                "format": man.format,
                "precision": man.precision,
                "engine": man.engine,
                "sha256": man.sha256,
            },
            runtime=model.info(),
        ).to_dict()
        name = f"saltpepper-{strength}.json"
        atomic_write_json(out / name, record)
        written.append(name)
    atomic_write_json(
        out / "attacks.json", {"record": "attack-index", "record_version": 1, "records": written}
    )
    return out / "attacks.json"


@register_stage("corruptions")
def corruptions_stage(
    settings: dict[str, Any], inputs: dict[str, StageOutput], out: Path, rep: Reporter
) -> Path:
    """ImageNet-C corruptions (``eval-device --corruptions``) against the exported artifact in
    its runtime, on the source domain's validation split (or its seeded sample of ``limit``)."""
    import datetime as dt

    from edgerobust import __version__
    from edgerobust.data import origin_images
    from edgerobust.evaluate import domain_indices
    from edgerobust.evaluate.corruptions import corruption_accuracy
    from edgerobust.records import CorruptionRecord
    from edgerobust.runtimes import open_artifact

    path = inputs["artifact"].path("artifact")
    model = open_artifact(path, settings["runtime"], threads=settings["threads"])
    man = model.manifest
    data = data_folder(settings, inputs) if "data" in inputs or "data" in settings else None
    ds, images, _ = origin_images(man.source, "val", man.input_size, data)
    domain = ds.domain(man.source["source_domain"])
    part, idx = domain_indices(domain, man.source, settings["limit"])
    idx = [i for i in idx if images.ok[i]]
    result = corruption_accuracy(
        model,
        images.pixels,
        images.labels,
        idx,
        settings["names"],
        settings["severities"],
        seed=settings["seed"],
        batch_size=settings["batch_size"],
        domain=domain.name,
        files=[domain.files[i] for i in idx],
        reporter=rep,
    )
    record = CorruptionRecord(
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        edgerobust=__version__,
        artifact={
            "path": str(path),
            "file": man.file,
            "format": man.format,
            "precision": man.precision,
            "engine": man.engine,
            "params": man.params,
            "sha256": man.sha256,
            "source": dict(man.source),
        },
        runtime=model.info(),
        domain=domain.name,
        split=part,
        corruptions=result,
    ).to_dict()
    atomic_write_json(out / "corruptions.json", record)
    return out / "corruptions.json"


# 4: PGD stops once every image's answer is settled (stop rule and gradient count in the record)
# 5: settled C&W / EAD call an image robust only by weak duality at a constant that found no
#    adversarial (the old rules called some robust that foolbox breaks)
@register_stage("attack", version=5, accelerated=True)
def attack_stage(
    settings: dict[str, Any], inputs: dict[str, StageOutput], out: Path, rep: Reporter
) -> Path:
    """``edgerobust attack`` (issue 4): the study's white-box attacks, at one strength or both.

    Inputs: ``model`` (the fp32 checkpoint the adversarials are crafted on: label ``direct``),
    ``replay:<label>`` (its PTSQ int8 checkpoints: the same adversarials replayed, label
    ``transfer``) and ``artifact:<label>`` (its ONNX int8 artifact, quantized by onnxruntime so
    it has no int8 checkpoint: replayed inside onnxruntime, ``transfer``). Salt&Pepper is not
    here: it is the ``saltpepper`` stage, against artifacts.
    """
    from edgerobust.attacks.run import AttackConfig, run_attacks

    roles = sorted(inputs)
    cfg = AttackConfig(
        checkpoint=inputs["model"].path("checkpoint"),
        data=data_folder(settings, inputs),
        domain=settings["domain"],
        attacks=tuple(settings["attacks"]),
        strength=settings["strength"],
        limit=settings["limit"] or None,  # 0 in a study file: every validation image
        batch_size=settings["batch_size"],
        stop=settings.get("stop", "exact"),
        replay=tuple(inputs[r].path("checkpoint") for r in roles if r.startswith("replay:")),
        artifacts=tuple(inputs[r].path("artifact") for r in roles if r.startswith("artifact:")),
        out=str(out / "attack.json"),
    )
    run_attacks(cfg, rep)
    return out / "attack.json"


# The compressions' stage kinds (prune, distill, quantize) are registered with the compressions
# themselves: each is one object in edgerobust.compress with its planning and its adapter.
