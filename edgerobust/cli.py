"""The ``edgerobust`` command line. Each command builds a config and calls one library function.

Heavy imports (torch, torchvision) happen inside the commands that need them, so
``edgerobust eval-device --runtime onnxruntime`` runs on a device without torch.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from edgerobust import __version__
from edgerobust.attacks import parse_attacks, parse_eps
from edgerobust.attacks.overrides import parse_overrides
from edgerobust.console import attack_table, eval_table, pct, print_device_check
from edgerobust.errors import ConfigError, EdgeRobustError
from edgerobust.models import is_arch, list_archs
from edgerobust.runtimes import list_runtimes

app = typer.Typer(
    name="edgerobust",
    help="Compress image classifiers for edge devices and measure their robustness to "
    "distribution shift inside the runtime that will run them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
compress_app = typer.Typer(help="Make a smaller model from a checkpoint.", no_args_is_help=True)
app.add_typer(compress_app, name="compress")


class Quant(str, Enum):
    fp32 = "fp32"
    int8 = "int8"


class Engine(str, Enum):
    fbgemm = "fbgemm"
    x86 = "x86"
    qnnpack = "qnnpack"


class StrengthChoice(str, Enum):
    light = "light"
    heavy = "heavy"
    both = "both"


class SpStop(str, Enum):
    none = "none"
    exact = "exact"
    settled = "settled"


def _registered(what: str, names: Callable[[], list[str]]) -> Callable[[str | None], str | None]:
    """A typer callback that accepts the names a registry holds *when the command runs*, so a
    runtime, format or architecture registered by a plugin module is a valid choice."""

    def check(value: str | None) -> str | None:
        if value is not None and value not in names():
            raise typer.BadParameter(
                f"unknown {what} {value!r}: choose one of {', '.join(names())}"
            )
        return value

    return check


def _formats() -> list[str]:
    from edgerobust.exporters import list_exporters

    return list_exporters()


def _arch(value: str | None) -> str | None:
    """Registered architectures, plus any timm model as ``timm:NAME`` (checked when built)."""
    if value is not None and not is_arch(value):
        raise typer.BadParameter(
            f"unknown architecture {value!r}: choose one of {', '.join(list_archs())} or timm:NAME"
        )
    return value


_ARCH = typer.Option(
    help=f"Architecture: {', '.join(list_archs())}, or any timm model as timm:NAME.",
    callback=_arch,
)
_RUNTIME = typer.Option(
    help=f"Runtime: {', '.join(list_runtimes())} (default: the format's own).",
    callback=_registered("runtime", list_runtimes),
)


def _csv(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise ConfigError("expected a comma-separated list, got an empty value")
    return items


def _write_json(path: Path | None, record: dict) -> None:
    if path is not None:
        from edgerobust.runtimes.manifest import atomic_write_json

        atomic_write_json(path, record)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(f"edgerobust {__version__}")
        raise typer.Exit()


# --------------------------------------------------------------------------- data


@app.command()
def data(
    root: Annotated[
        Path,
        typer.Argument(help="Dataset folder: ROOT/DOMAIN/CLASS/* or ROOT/DOMAIN/images/CLASS/*."),
    ],
    seed: Annotated[int, typer.Option(help="Split seed (the paper: 1).")] = 1,
    val_fraction: Annotated[float, typer.Option(help="Validation fraction per domain.")] = 0.1,
    check: Annotated[
        bool, typer.Option(help="Decode every image to find unreadable files.")
    ] = True,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the summary as JSON.")
    ] = None,
) -> None:
    """Show domains x classes counts, split sizes, and unreadable files."""
    from rich.table import Table

    from edgerobust.console import out
    from edgerobust.data import check_domain, open_dataset

    ds = open_dataset(root)
    table = Table(title=f"{root} ({ds.layout} layout, {len(ds.classes)} classes)")
    table.add_column("class")
    for d in ds.domains:
        table.add_column(d, justify="right")
    counts = {
        d: [dom.labels.count(i) for i in range(len(ds.classes))] for d, dom in ds.domains.items()
    }
    for i, c in enumerate(ds.classes):
        table.add_row(c, *(str(counts[d][i]) for d in ds.domains))
    table.add_section()
    table.add_row("total", *(str(len(dom)) for dom in ds.domains.values()))
    splits = {d: ds.split(d, seed, val_fraction) for d in ds.domains}
    table.add_row(
        f"train / val (seed {seed})", *(f"{len(s.train)} / {len(s.val)}" for s in splits.values())
    )
    out.print(table)
    bad: dict[str, dict[str, str]] = {}
    if check:
        for d, dom in ds.domains.items():
            failures = check_domain(dom)
            if failures:
                bad[d] = failures
        if bad:
            out.print(
                f"[bold red]{sum(map(len, bad.values()))} unreadable file(s)[/] (skipped by train and eval):"
            )
            for d, failures in bad.items():
                for rel, why in failures.items():
                    out.print(f"  {d}/{rel}: {why}")
        else:
            out.print("all images decode")
    _write_json(
        json_out,
        {
            "root": str(root),
            "layout": ds.layout,
            "classes": list(ds.classes),
            "counts": counts,
            "splits": {
                d: {"train": len(s.train), "val": len(s.val), "seed": seed}
                for d, s in splits.items()
            },
            "unreadable": bad,
        },
    )


# --------------------------------------------------------------------------- train


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Dataset folder.")],
    source: Annotated[str, typer.Option(help="Source domain to train on.")],
    out: Annotated[
        Path, typer.Option(help="Run folder (model.safetensors, train.json, split.json).")
    ],
    arch: Annotated[str, _ARCH] = "resnet18",
    weights: Annotated[
        str, typer.Option(help="imagenet | none | PATH to a local .pth/.safetensors.")
    ] = "none",
    epochs: Annotated[int, typer.Option(help="Epochs (paper: 100).")] = 100,
    lr: Annotated[float, typer.Option(help="Learning rate, fixed (paper: 1e-4).")] = 1e-4,
    batch_size: Annotated[int, typer.Option(help="Batch size (paper: 8).")] = 8,
    image_size: Annotated[int, typer.Option(help="Input size (paper: 224).")] = 224,
    weight_decay: Annotated[float, typer.Option(help="SGD weight decay.")] = 0.0,
    augment: Annotated[bool, typer.Option(help="Random flips and shifts.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for init and shuffling.")] = 1,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
) -> None:
    """Fine-tune a baseline on the source domain; keeps the best validation checkpoint. Rerun to resume."""
    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout
    from edgerobust.errors import require_torch

    require_torch("train")
    from edgerobust.train import TrainConfig
    from edgerobust.train import train as run_train

    cfg = TrainConfig(
        data=str(data),
        source=source,
        arch=arch,
        out=str(out),
        weights=weights,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        image_size=image_size,
        weight_decay=weight_decay,
        augment=augment,
        seed=seed,
        device=device,
    )
    with RichReporter() as rep:
        rec = run_train(cfg, rep)
    stdout.print(
        f"best val accuracy {pct(rec['val_accuracy'])} % (n={rec['val_n']}, epoch {rec['best_epoch']}) "
        f"-> {rec['checkpoint']}"
    )


# --------------------------------------------------------------------------- compress


@compress_app.command("quantize")
def compress_quantize(
    checkpoint: Annotated[Path, typer.Argument(help="fp32 checkpoint (file or run folder).")],
    engine: Annotated[
        Engine, typer.Option(help="int8 kernels: x86/fbgemm (Intel/AMD), qnnpack (ARM).")
    ] = Engine.x86,
    calib_batches: Annotated[
        int, typer.Option(help="Calibration batches of source training images.")
    ] = 16,
    batch_size: Annotated[int, typer.Option(help="Calibration batch size.")] = 8,
    out: Annotated[
        Path | None, typer.Option(help="Output run folder (default: RUN-int8-ENGINE).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Dataset folder, if it moved since training.")
    ] = None,
    keep_fp32: Annotated[
        str | None,
        typer.Option(help="Comma-separated module names left in fp32 (e.g. backbone.conv1)."),
    ] = None,
) -> None:
    """Post-training static int8 quantization (eager for ResNets, FX graph mode otherwise),
    calibrated on source images."""
    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout
    from edgerobust.errors import require_torch

    require_torch("compress quantize")
    from edgerobust.compress.ptsq import QuantizeConfig, quantize_checkpoint

    cfg = QuantizeConfig(
        str(checkpoint),
        engine.value,
        calib_batches,
        batch_size,
        str(out) if out else None,
        str(data) if data else None,
        keep_fp32=_csv(keep_fp32) or (),
    )
    with RichReporter() as rep:
        rec = quantize_checkpoint(cfg, rep)
    stdout.print(
        f"int8 ({rec['engine']}) val accuracy {pct(rec['val_accuracy_int8'])} % vs fp32 "
        f"{pct(rec['val_accuracy_fp32'])} % (n={rec['val_n']}) -> {rec['checkpoint']}"
    )
    if rec["warning"]:
        stdout.print(f"[yellow]warning:[/] {rec['warning']}")


@compress_app.command("prune")
def compress_prune(
    checkpoint: Annotated[Path, typer.Argument(help="fp32 checkpoint (file or run folder).")],
    out: Annotated[Path, typer.Option(help="Run folder (model.safetensors, prune.json).")],
    ratio: Annotated[
        float | None,
        typer.Option(
            help="Sensitivity s in (0, 1): stage k loses s*w_k of its channels, "
            "w = 0.4, 0.6, 0.8, 1.0 (deepest stage pruned most)."
        ),
    ] = None,
    target_params: Annotated[
        str | None,
        typer.Option(help="Parameter count to reach within 2 %, e.g. 4.51M, 850k, 11190000."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Dataset folder (default: the checkpoint's).")
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="Source domain to retrain on (default: the checkpoint's).")
    ] = None,
    epochs: Annotated[
        int, typer.Option(help="Retraining epochs (paper: 100; 0: prune only).")
    ] = 100,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Base lr (default: paper's, 1e-3 /10 at 70 % or 1e-4 for ResNet-50/152)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size (paper: 8).")] = 8,
    weight_decay: Annotated[float, typer.Option(help="SGD weight decay (paper: 1e-4).")] = 1e-4,
    augment: Annotated[bool, typer.Option(help="Random flips and shifts.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for shuffling.")] = 1,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
) -> None:
    """L1-norm filter pruning (Li et al.), then retraining on the source domain. Rerun to resume."""
    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout
    from edgerobust.errors import require_torch

    require_torch("compress prune")
    from edgerobust.compress.prune import PruneConfig, prune_checkpoint

    cfg = PruneConfig(
        checkpoint=str(checkpoint),
        out=str(out),
        ratio=ratio,
        target_params=target_params,
        data=str(data) if data else None,
        source=source,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        augment=augment,
        seed=seed,
        device=device,
    )
    with RichReporter() as rep:
        rec = prune_checkpoint(cfg, rep)
    stdout.print(
        f"{rec['params_before']:,} -> {rec['params_after']:,} params "
        f"(compression rate {pct(rec['compression_rate'])} %, channel ratio "
        f"{rec['channel_ratio']:.3f}, sensitivity {rec['sensitivity']:.4f}); val accuracy "
        f"{pct(rec['val_accuracy'])} % (n={rec['val_n']}) -> {rec['checkpoint']}"
    )


@compress_app.command("distill")
def compress_distill(
    teacher: Annotated[Path, typer.Option(help="Fine-tuned teacher checkpoint (fp32).")],
    data: Annotated[Path, typer.Option(help="Dataset folder.")],
    source: Annotated[str, typer.Option(help="Source domain to distill on.")],
    out: Annotated[Path, typer.Option(help="Run folder (model.safetensors, distill.json).")],
    student: Annotated[
        str,
        typer.Option(help="Student architecture (or timm:NAME).", callback=_arch),
    ] = "resnet18",
    student_weights: Annotated[
        str, typer.Option(help="imagenet (paper) | none | PATH to a local weight file.")
    ] = "imagenet",
    alpha: Annotated[
        float, typer.Option(help="Weight of the soft-target term (paper: 0.2).")
    ] = 0.2,
    tau: Annotated[float, typer.Option(help="Temperature (paper: 10).")] = 10.0,
    epochs: Annotated[int, typer.Option(help="Epochs (paper: 100).")] = 100,
    lr: Annotated[float, typer.Option(help="Base lr, divided by 5 at 70 % of the epochs.")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="Batch size (paper: 8).")] = 8,
    weight_decay: Annotated[float, typer.Option(help="SGD weight decay (paper: 1e-3).")] = 1e-3,
    augment: Annotated[
        bool, typer.Option(help="Random flips and shifts (teacher logits are then not cached).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed for init and shuffling.")] = 1,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
) -> None:
    """Vanilla knowledge distillation from a fine-tuned teacher into a smaller student."""
    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout
    from edgerobust.errors import require_torch

    require_torch("compress distill")
    from edgerobust.compress.distill import DistillConfig, distill

    cfg = DistillConfig(
        teacher=str(teacher),
        data=str(data),
        source=source,
        out=str(out),
        student=student,
        student_weights=student_weights,
        alpha=alpha,
        tau=tau,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        augment=augment,
        seed=seed,
        device=device,
    )
    with RichReporter() as rep:
        rec = distill(cfg, rep)
    stdout.print(
        f"{rec['student_arch']} student: {rec['params_student']:,} params vs teacher "
        f"{rec['params_teacher']:,} (compression rate {pct(rec['compression_rate'])} %); "
        f"val accuracy {pct(rec['val_accuracy'])} % vs teacher "
        f"{pct(rec['val_accuracy_teacher'])} % (n={rec['val_n']}) -> {rec['checkpoint']}"
    )


# --------------------------------------------------------------------------- export


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (file or run folder).")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help=f"Artifact format: {', '.join(_formats())}.",
            callback=_registered("format", _formats),
        ),
    ] = "onnx",
    quant: Annotated[
        Quant | None, typer.Option(help="fp32 or int8 (default: the checkpoint's precision).")
    ] = None,
    engine: Annotated[
        Engine | None, typer.Option(help="int8 engine for torchscript/ptl (default: this host's).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("models"),
    name: Annotated[
        str | None, typer.Option(help="Artifact name (default: RUN-FORMAT-PRECISION[-ENGINE]).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Dataset folder, if it moved since training.")
    ] = None,
    calib_batches: Annotated[int, typer.Option(help="Calibration batches (int8).")] = 16,
    parity_images: Annotated[int, typer.Option(help="Held-out images for the parity check.")] = 256,
    min_agreement: Annotated[
        float, typer.Option(help="int8 parity bar: top-1 agreement with the fp32 source.")
    ] = 0.98,
    force: Annotated[
        bool,
        typer.Option(help="Keep an artifact that fails the parity gate (the manifest says so)."),
    ] = False,
    optimize: Annotated[
        bool, typer.Option(help="optimize_for_mobile for .ptl where XNNPACK exists.")
    ] = True,
) -> None:
    """Export a checkpoint to ONNX / TorchScript / PyTorch Mobile lite, with manifest and parity gate."""
    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout
    from edgerobust.errors import require_torch

    require_torch("export")
    from edgerobust.exporters import ExportRequest
    from edgerobust.exporters import export as run_export

    req = ExportRequest(
        checkpoint=str(checkpoint),
        format=format,
        quant=quant.value if quant else None,
        engine=engine.value if engine else None,
        out=str(out),
        name=name,
        data=str(data) if data else None,
        calib_batches=calib_batches,
        parity_images=parity_images,
        min_agreement=min_agreement,
        force=force,
        optimize=optimize,
    )
    with RichReporter() as rep:
        res = run_export(req, rep)
    m = res.manifest
    verdict = "[green]passed[/]" if res.parity.passed else "[red]FAILED (kept with --force)[/]"
    stdout.print(
        f"{res.artifact}  {m.format} {m.precision}{' ' + m.engine if m.engine else ''}  {m.size_bytes / 1e6:.2f} MB"
    )
    stdout.print(f"parity {verdict}: {res.parity.summary()} (vs {res.parity.reference})")
    for note in m.notes:
        stdout.print(f"note: {note}")


# --------------------------------------------------------------------------- eval-device


@app.command("eval-device")
def eval_device(
    artifact: Annotated[
        Path, typer.Argument(help="Artifact (.onnx/.pt/.ptl) with its manifest beside it.")
    ],
    data: Annotated[Path, typer.Option(help="Dataset folder.")],
    runtime: Annotated[str | None, _RUNTIME] = None,
    domains: Annotated[
        str | None, typer.Option(help="Comma-separated domains (default: all).")
    ] = None,
    threads: Annotated[int, typer.Option(help="Inference threads.")] = 1,
    providers: Annotated[
        str | None,
        typer.Option(
            help="onnxruntime execution providers, in order (default: CPUExecutionProvider)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size for the accuracy pass.")] = 16,
    latency_runs: Annotated[int, typer.Option(help="Timed batch-1 calls.")] = 100,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up calls.")] = 10,
    limit: Annotated[
        int | None, typer.Option(help="At most N images per domain (seeded sample).")
    ] = None,
    attack: Annotated[
        str | None,
        typer.Option(help="Black-box attack run against the artifact itself: saltpepper."),
    ] = None,
    eps: Annotated[
        str | None, typer.Option(help="Attack budgets, L2 in [0,1] pixels (default: 1,15).")
    ] = None,
    sp_steps: Annotated[int, typer.Option(help="Salt&Pepper steps (paper: 400).")] = 400,
    sp_seed: Annotated[int, typer.Option(help="Salt&Pepper noise seed.")] = 0,
    sp_stop: Annotated[
        SpStop,
        typer.Option(
            help="Salt&Pepper early stopping: settled (fast), exact (foolbox's figures), none."
        ),
    ] = SpStop.settled,
    out: Annotated[Path | None, typer.Option(help="Write the JSON record here.")] = None,
    logits_out: Annotated[
        Path | None,
        typer.Option(help="Also save every logit and its image (.npz), to compare machines."),
    ] = None,
) -> None:
    """Evaluate an artifact inside its runtime: accuracy per domain, latency, size, memory."""
    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout
    from edgerobust.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(
        artifact=str(artifact),
        data=str(data),
        runtime=runtime,
        domains=_csv(domains),
        threads=threads,
        providers=_csv(providers),
        batch_size=batch_size,
        warmup=warmup,
        latency_runs=latency_runs,
        limit=limit,
        attack=attack,
        attack_eps=parse_eps(eps) if attack else None,
        attack_steps=sp_steps,
        attack_seed=sp_seed,
        attack_stop=sp_stop.value,
        out=str(out) if out else None,
        logits_out=str(logits_out) if logits_out else None,
    )
    if eps is not None and attack is None:
        raise ConfigError("--eps needs --attack saltpepper")
    with RichReporter() as rep:
        record = evaluate(cfg, rep)
    stdout.print(eval_table([record]))
    for d in record["domains"]:
        a = d.get("attack")
        if a:
            accs = ", ".join(
                f"eps {e:g}: {pct(r)} %"
                for e, r in zip(a["eps"], a["robust_accuracy"], strict=True)
            )
            stdout.print(
                f"{a['attack']} ({a['label']}) on {d['domain']}: robust accuracy {accs} "
                f"(n={a['n']}, {a['queries']} queries, stop {a['stop']})"
            )
    mem = record["memory"]
    if mem["peak_rss_mb"] is not None:
        stdout.print(f"peak RSS {mem['peak_rss_mb']:.0f} MB ({mem['method']})")
    warning = record["host"].get("int8_warning")
    if warning and record["artifact"]["precision"] == "int8":
        stdout.print(f"[yellow]warning:[/] {warning}")
    if out:
        stdout.print(f"record -> {out}")


# --------------------------------------------------------------------------- device-check


class CpuName(str, Enum):
    cortex_a72 = "cortex-a72"
    cortex_a76 = "cortex-a76"


@app.command("device-check")
def device_check_cmd(
    artifacts: Annotated[
        list[Path], typer.Argument(help="Artifacts (.onnx/.pt/.ptl), each with its manifest.")
    ],
    cpu: Annotated[
        CpuName, typer.Option(help="Emulated core: cortex-a72 (Pi 4) or cortex-a76 (Pi 5).")
    ] = CpuName.cortex_a72,
    data: Annotated[
        Path | None, typer.Option(help="Dataset folder (default: the one in the manifest).")
    ] = None,
    domains: Annotated[
        str | None, typer.Option(help="Comma-separated domains (default: all).")
    ] = None,
    limit: Annotated[
        int, typer.Option(help="Images per domain (seeded sample; emulation is slow).")
    ] = 8,
    optimize: Annotated[
        bool,
        typer.Option(
            help="Also write an XNNPACK-optimized .ptl next to each .pt, made and checked on ARM."
        ),
    ] = False,
    cache: Annotated[
        Path | None,
        typer.Option(
            help="Where the emulated Pi is built once (default: $EDGEROBUST_ARM_CACHE or "
            "/var/cache/edgerobust-arm)."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
) -> None:
    """Run artifacts on an emulated Raspberry Pi (arm64, qemu) as the README's Pi section does,
    and compare their logits with this host's on the same images. Needs root."""

    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout
    from edgerobust.device.check import DeviceCheckConfig, device_check

    cfg = DeviceCheckConfig(
        artifacts=tuple(str(a) for a in artifacts),
        cpu=cpu.value,
        data=str(data) if data else None,
        domains=_csv(domains),
        limit=limit,
        optimize=optimize,
        out=str(out) if out else None,
        **({"cache": str(cache)} if cache else {}),
    )
    with RichReporter() as rep:
        report = device_check(cfg, rep)
    print_device_check(report)
    if out:
        stdout.print(f"report -> {out}")
    if not report.ok:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- attack


@app.command()
def attack(
    checkpoint: Annotated[
        Path, typer.Argument(help="Checkpoint (file or run folder), fp32 or int8.")
    ],
    data: Annotated[
        Path | None, typer.Option(help="Dataset folder (default: the one the model records).")
    ] = None,
    domain: Annotated[
        str | None,
        typer.Option(help="Domain whose validation split is attacked (default: source)."),
    ] = None,
    attacks: Annotated[
        str,
        typer.Option(help="Comma-separated: deepfool,pgd,fgsm,cw,ddn,ead,saltpepper (or all)."),
    ] = "all",
    strength: Annotated[
        StrengthChoice,
        typer.Option(help="The paper's light or heavy budgets, or both in one sweep."),
    ] = StrengthChoice.light,
    eps: Annotated[
        str | None,
        typer.Option(help="Budgets replacing the paper's, for every listed attack (its own norm)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Attack a seeded sample of N validation images.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for --limit, PGD's start and S&P noise.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Attack batch size (paper: 8).")] = 8,
    source: Annotated[
        Path | None,
        typer.Option(help="fp32 model to craft on (default: an int8 model's recorded parent)."),
    ] = None,
    artifacts: Annotated[
        str | None,
        typer.Option(help="Comma-separated artifacts: replay adversarials (transfer), run S&P."),
    ] = None,
    replay: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated more checkpoints (e.g. int8 of each engine): replay (transfer)."
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a setting: ATTACK.SETTING=VALUE, e.g. cw.steps=10."),
    ] = None,
    sp_stop: Annotated[
        SpStop,
        typer.Option(
            help="Salt&Pepper early stopping: settled (fast), exact (foolbox's figures), none."
        ),
    ] = SpStop.settled,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    threads: Annotated[int, typer.Option(help="Inference threads for artifacts.")] = 1,
    out: Annotated[Path | None, typer.Option(help="Write the JSON record here.")] = None,
) -> None:
    """Adversarial robustness (the paper's seven attacks); int8 and artifacts get transfer figures."""
    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout
    from edgerobust.errors import require_torch

    cfg_attacks = parse_attacks(attacks)
    cfg_eps = parse_eps(eps)
    params = parse_overrides(set_)
    require_torch("attack")
    from edgerobust.attacks.run import AttackConfig, run_attacks

    cfg = AttackConfig(
        checkpoint=str(checkpoint),
        data=str(data) if data else None,
        domain=domain,
        attacks=cfg_attacks,
        strength=strength.value,
        eps=cfg_eps,
        limit=limit,
        seed=seed,
        batch_size=batch_size,
        source=str(source) if source else None,
        artifacts=_csv(artifacts) or (),
        replay=_csv(replay) or (),
        params=params,
        sp_stop=sp_stop.value,
        device=device,
        threads=threads,
        out=str(out) if out else None,
    )
    with RichReporter() as rep:
        record = run_attacks(cfg, rep)
    stdout.print(attack_table(record))
    for a in record["attacks"]:
        for r in a["results"]:
            if "queries" in r:
                stdout.print(
                    f"{a['attack']} on {r['target']}: {r['queries']} model queries "
                    f"({r['queries'] / r['queries_full']:.2f} of foolbox's, stop {r['stop']})"
                )
    for f in record["sanity"]:
        where = " / ".join(v for v in (f["attack"], f["target"]) if v)
        stdout.print(f"[yellow]sanity {f['check']}[/] ({where}): {f['message']}")
    if not record["sanity"]:
        stdout.print("sanity checks passed (eps 0 = clean, monotone in eps, gradients non-zero)")
    if out:
        stdout.print(f"record -> {out}")


@app.command("bench-saltpepper")
def bench_saltpepper_cmd(
    artifact: Annotated[Path, typer.Argument(help="Artifact to attack inside its runtime.")],
    data: Annotated[
        Path | None, typer.Option(help="Dataset folder (default: the one the manifest records).")
    ] = None,
    domain: Annotated[
        str | None, typer.Option(help="Domain (default: the source domain's validation split).")
    ] = None,
    runtime: Annotated[str | None, _RUNTIME] = None,
    limit: Annotated[int | None, typer.Option(help="Seeded sample of N images.")] = 16,
    eps: Annotated[str, typer.Option(help="L2 budgets in [0,1] pixels.")] = "1,15",
    seed: Annotated[int, typer.Option(help="Noise seed, the same for every run.")] = 0,
    steps: Annotated[int, typer.Option(help="Salt&Pepper steps (paper: 400).")] = 400,
    stops: Annotated[
        str, typer.Option(help="Early-stopping rules to compare with the full run.")
    ] = "exact,settled",
    tail_sd: Annotated[
        float, typer.Option(help="Settled rule's margin (SDs of the noise norm; 0: sqrt(2) eps).")
    ] = 3.0,
    threads: Annotated[int, typer.Option(help="Inference threads.")] = 1,
    out: Annotated[Path | None, typer.Option(help="Write the JSON record here.")] = None,
) -> None:
    """Fast vs full Salt&Pepper on one artifact: robust accuracy and model queries of each."""
    from edgerobust.attacks.spbench import SaltPepperBenchConfig, bench_lines, bench_saltpepper
    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout

    cfg = SaltPepperBenchConfig(
        artifact=str(artifact),
        data=str(data) if data else None,
        domain=domain,
        runtime=runtime,
        eps=parse_eps(eps),
        limit=limit,
        seed=seed,
        steps=steps,
        stops=_csv(stops) or (),
        tail_sd=tail_sd,
        threads=threads,
        out=str(out) if out else None,
    )
    with RichReporter() as rep:
        record = bench_saltpepper(cfg, rep)
    for line in bench_lines(record):
        stdout.print(line)
    if out:
        stdout.print(f"record -> {out}")


# --------------------------------------------------------------------------- bench, demo


@app.command()
def bench(
    artifact: Annotated[Path, typer.Argument(help="Artifact to benchmark.")],
    data: Annotated[Path, typer.Option(help="Dataset folder.")],
    domain: Annotated[
        str | None, typer.Option(help="Domain to run over (default: the first).")
    ] = None,
    runtime: Annotated[str | None, _RUNTIME] = None,
    threads: Annotated[int, typer.Option(help="Inference threads.")] = 1,
    runs: Annotated[int, typer.Option(help="Timed batch-1 calls per side.")] = 200,
    repeats: Annotated[
        int,
        typer.Option(help="Interleaved rounds (bare, tool, ...); the medians are compared."),
    ] = 5,
    out: Annotated[Path | None, typer.Option(help="Write the JSON result here.")] = None,
) -> None:
    """Measure the measuring path: eval-device vs bare runtime calls, side by side, one process."""
    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout
    from edgerobust.evaluate.bench import BenchConfig, run_bench

    cfg = BenchConfig(str(artifact), str(data), domain, runtime, threads, runs, repeats)
    with RichReporter() as rep:
        res = run_bench(cfg, rep)
    for line in res["lines"]:
        stdout.print(line)
    _write_json(out, res)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo makes.")] = Path(
        "edgerobust-demo"
    ),
    arch: Annotated[str, _ARCH] = "resnet18",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 8,
    per_class: Annotated[int, typer.Option(help="Synthetic images per class and domain.")] = 60,
    image_size: Annotated[int, typer.Option(help="Image size.")] = 64,
    threads: Annotated[int, typer.Option(help="Inference threads for eval-device.")] = 1,
) -> None:
    """The whole flow on the built-in synthetic domains: train, int8, export, evaluate in both runtimes."""
    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout
    from edgerobust.errors import require_torch

    require_torch("demo")
    from edgerobust.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        out=str(out),
        arch=arch,
        epochs=epochs,
        per_class=per_class,
        image_size=image_size,
        threads=threads,
    )
    with RichReporter() as rep:
        result = run_demo(cfg, rep)
    stdout.print(eval_table(result["records"]))
    for line in result["summary"]:
        stdout.print(line)
    stdout.print(f"everything is in {out}/ (records: {out}/results/*.json)")


# --------------------------------------------------------------------------- run, report


@app.command()
def run(
    study: Annotated[Path, typer.Argument(help="Study file (TOML), e.g. configs/quickstart.toml.")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: runs/STUDY-NAME).")
    ] = None,
    jobs: Annotated[
        int, typer.Option(help="Stages run in parallel (eval-device stages always run alone).")
    ] = 1,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List every stage as cached or to run; run nothing.")
    ] = False,
    report: Annotated[
        bool, typer.Option(help="Write the report (OUT/report) when the run ends.")
    ] = True,
) -> None:
    """Run a whole study: train, compress, export, eval-device, attack. Cached and resumable."""
    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout
    from edgerobust.errors import require_torch
    from edgerobust.study.scheduler import RunConfig, run_study

    require_torch("run")
    cfg = RunConfig(str(study), str(out) if out else None, jobs, dry_run)
    if dry_run:
        summary = run_study(cfg)
        from rich.table import Table

        t = Table(title=f"{summary.study}: stages in {summary.out}")
        for col in ("status", "stage", "folder"):
            t.add_column(col)
        for r in summary.results:
            status = "[green]cached[/]" if r.status == "cached" else "to run"
            t.add_row(status, r.stage, Path(r.dir).name)
        stdout.print(t)
        for note in summary.notes:
            stdout.print(f"note: {note}")
        for line in summary.lines():
            stdout.print(line)
        return
    try:
        with RichReporter() as rep:
            summary = run_study(cfg, rep)
    except KeyboardInterrupt:
        typer.echo(
            "interrupted: finished stages are kept; run the same command to continue", err=True
        )
        raise typer.Exit(130) from None
    for note in summary.notes:
        stdout.print(f"note: {note}")
    for line in summary.lines():
        style = (
            "[red]"
            if line.startswith("FAILED")
            else "[yellow]"
            if line.startswith("skipped")
            else ""
        )
        stdout.print(f"{style}{line}{'[/]' if style else ''}")
    stdout.print(f"log: {Path(summary.out) / 'study.log'}")
    if report:
        from edgerobust.report import ReportConfig, write_report

        try:
            res = write_report(ReportConfig(summary.out))
        except ConfigError as exc:  # e.g. every stage failed: no records to report on
            stdout.print(f"no report: {exc}")
        else:
            stdout.print(f"report: {res.out / 'index.html'}")
    if not summary.ok:
        raise typer.Exit(1)


@app.command("report")
def report_cmd(
    results: Annotated[
        Path, typer.Argument(help="Folder of JSON records (a study's output folder).")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: RESULTS/report).")
    ] = None,
) -> None:
    """The paper's tables (Markdown + CSV), plots (PNG) and one HTML page, from JSON records only."""
    from edgerobust.console import out as stdout
    from edgerobust.report import ReportConfig, write_report

    res = write_report(ReportConfig(str(results), str(out) if out else None))
    for t in res.tables:
        stdout.print(f"{t.name}: {len(t.rows)} rows  ({t.title})")
    for line in res.headlines():
        stdout.print(line)
    stdout.print(f"{res.n_records} records -> {res.out / 'index.html'}")


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit.

    Usage errors (unknown option, bad choice) are typer's own, also one clear message and exit 2.
    """
    for category in (DeprecationWarning, UserWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    try:
        app(args=argv, prog_name="edgerobust")
    except EdgeRobustError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (FileNotFoundError, IsADirectoryError, PermissionError, NotADirectoryError) as exc:
        typer.echo(f"error: {exc.strerror or exc}: {exc.filename}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
