"""``edgerobust demo``: the paper's central measurement on the built-in synthetic domains.

One baseline and its int8 version, exported to ONNX and PyTorch Mobile lite, each evaluated
inside its own runtime on the source validation split and every target domain, with size and
latency side by side. Everything lands under one folder; rerunning resumes.

Training starts from scratch (no ImageNet weights can be downloaded offline), so the demo trains
at a small image size with a larger learning rate than the paper's fine-tuning default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgerobust.progress import NullReporter, Reporter


@dataclass(frozen=True)
class DemoConfig:
    out: str = "edgerobust-demo"
    arch: str = "resnet18"
    epochs: int = 8
    per_class: int = 60
    image_size: int = 64
    lr: float = 0.02
    batch_size: int = 32
    threads: int = 1
    source: str = "studio"


def run_demo(cfg: DemoConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run the demo; everything, the decoded-image cache included, lands under ``cfg.out``."""
    from edgerobust.data import default_cache_dir

    with default_cache_dir(Path(cfg.out) / "cache"):
        return _run_demo(cfg, reporter)


def _run_demo(cfg: DemoConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    from edgerobust.compress.ptsq import QuantizeConfig, quantize_checkpoint
    from edgerobust.compress.quantize import host_engine
    from edgerobust.data.synthetic import make_synthetic
    from edgerobust.evaluate import EvalConfig, evaluate
    from edgerobust.exporters import ExportRequest, export
    from edgerobust.train import TrainConfig, train

    rep = reporter or NullReporter()
    out = Path(cfg.out)
    data = out / "data"
    t = rep.task("synthetic domains", None)
    make_synthetic(
        data,
        per_class=cfg.per_class,
        size=cfg.image_size,
        progress=lambda d, n: rep.advance(t, 0, completed=d),
    )
    rep.done(t)
    rep.log(f"1/4 synthetic domains (studio, webcam, natural) -> {data}")

    run = out / "runs" / "baseline"
    trained = train(
        TrainConfig(
            data=str(data),
            source=cfg.source,
            arch=cfg.arch,
            out=str(run),
            epochs=cfg.epochs,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            image_size=cfg.image_size,
            augment=True,
        ),
        rep,
    )
    rep.log(
        f"2/4 trained {cfg.arch} on {cfg.source}: val accuracy {trained['val_accuracy']:.1%} -> {run}"
    )

    engine = host_engine()
    q = quantize_checkpoint(
        QuantizeConfig(str(run), engine=engine, out=str(out / "runs" / f"baseline-int8-{engine}")),
        rep,
    )
    rep.log(
        f"3/4 PTSQ int8 ({engine}): val accuracy {q['val_accuracy_int8']:.1%} (fp32 {q['val_accuracy_fp32']:.1%})"
    )

    models = out / "models"
    exports = [
        ExportRequest(str(run), format="onnx", quant="fp32", out=str(models), force=True),
        ExportRequest(str(run), format="onnx", quant="int8", out=str(models), force=True),
        ExportRequest(str(run), format="ptl", quant="fp32", out=str(models), force=True),
        ExportRequest(q["checkpoint"], format="ptl", quant="int8", out=str(models), force=True),
    ]
    artifacts, summary = [], []
    for req in exports:
        res = export(req, rep)
        artifacts.append(res.artifact)
        verdict = "passed" if res.parity.passed else "FAILED (kept for the demo)"
        summary.append(f"parity {res.artifact.name}: {verdict}, {res.parity.summary()}")

    results = out / "results"
    decoded: dict = {}  # each domain is decoded once and shared by every artifact
    records = []
    for art in artifacts:
        rec = evaluate(
            EvalConfig(
                str(art), str(data), threads=cfg.threads, out=str(results / f"{art.stem}.json")
            ),
            rep,
            decoded=decoded,
        )
        records.append(rec)
    rep.log(
        f"4/4 evaluated {len(records)} artifacts inside onnxruntime and the PyTorch lite interpreter"
    )

    by = {(r["artifact"]["format"], r["artifact"]["precision"]): r for r in records}
    for fmt in ("onnx", "ptl"):
        f32, i8 = by.get((fmt, "fp32")), by.get((fmt, "int8"))
        if not (f32 and i8):
            continue
        tgt32 = _target_mean(f32)
        tgt8 = _target_mean(i8)
        summary.append(
            f"{fmt}: int8 is {i8['artifact']['size_bytes'] / f32['artifact']['size_bytes']:.0%} of the fp32 size, "
            f"{f32['latency_ms']['p50'] / i8['latency_ms']['p50']:.2f}x its speed (p50), "
            f"mean target accuracy {tgt8:.1%} vs {tgt32:.1%} fp32"
        )
    return {"records": records, "summary": summary, "artifacts": [str(a) for a in artifacts]}


def _target_mean(record: dict[str, Any]) -> float:
    accs = [
        d["accuracy"]
        for d in record["domains"]
        if d["role"] == "target" and d["accuracy"] is not None
    ]
    return sum(accs) / len(accs) if accs else float("nan")
