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
from edgerobust.attacks import parse_attacks, parse_eps, settled_attacks
from edgerobust.attacks.overrides import parse_overrides
from edgerobust.console import (
    attack_table,
    corruption_table,
    eval_table,
    pct,
    print_device_check,
)
from edgerobust.errors import ConfigError, EdgeRobustError
from edgerobust.models import is_arch, list_archs
from edgerobust.runtimes import list_runtimes, suffixes

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


class GradStopChoice(str, Enum):
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


def _int8_targets() -> list[str]:
    from edgerobust.exporters.onnx import TARGET_CHOICES

    return list(TARGET_CHOICES)


_FREEZE_BN = typer.Option(
    help="Keep batch-norm statistics while training (eval mode; the affine weights train): for "
    "pretrained weights and small batches (the EfficientNet-Lite recipe)."
)
_HEAD_EPOCHS = typer.Option(
    help="First train the new head alone for N of the epochs (lr 0.01, backbone frozen), then "
    "everything (LP-FT: keeps pretrained features, better off-domain). train: N = --epochs "
    "trains a linear probe only."
)


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


def _output(
    folder: bool,
) -> Callable[[typer.Context, typer.CallbackParam, Path | None], Path | None]:
    """A typer callback that checks an output path when the options are parsed, before any work
    (:func:`edgerobust.guard.check_output`): a bad ``--out`` fails at once and writes nothing."""

    def check(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
        if value is not None and not ctx.resilient_parsing:
            from edgerobust.guard import check_output

            check_output(value, folder=folder, what=param.opts[0] if param.opts else "output")
        return value

    return check


_OUT_FILE = _output(folder=False)
_OUT_DIR = _output(folder=True)


def _check_device(value: str) -> str:
    """``--device``: auto, or a torch device that exists here (checked before any work)."""
    try:
        import torch
    except ImportError:  # the command's require_torch says what to install
        return value
    if value == "auto":
        return value
    try:
        dev = torch.device(value)
    except RuntimeError:
        raise ConfigError(
            f"--device {value!r} is not a device: use auto, cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count or (dev.index is not None and dev.index >= count):
            raise ConfigError(
                f"--device {value}: this machine has {count} CUDA GPU(s) visible; use auto or cpu"
            )
    elif dev.type not in ("cpu", "mps"):
        raise ConfigError(f"--device {value}: only auto, cpu, cuda[:N] and mps are supported")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: no Apple GPU is available here; use auto or cpu")
    return value


def _at_least(low: int) -> Callable[[typer.CallbackParam, int | None], int | None]:
    """A typer callback refusing counts below ``low`` in one line, before any work."""

    def check(param: typer.CallbackParam, value: int | None) -> int | None:
        if value is not None and value < low:
            raise ConfigError(f"{param.opts[0]} must be >= {low}, got {value}")
        return value

    return check


def _plain_name(param: typer.CallbackParam, value: str | None) -> str | None:
    """A file name made into a path inside ``--out``: no folders, not hidden, not empty."""
    if value is not None and (
        not value.strip() or value.startswith(".") or any(c in value for c in "/\\\0")
    ):
        raise ConfigError(
            f"{param.opts[0]} {value!r}: give a plain file name (no '/', not starting with '.'); "
            "--out chooses the folder"
        )
    return value


_DEVICE = typer.Option(help="auto | cpu | cuda | cuda:N.", callback=_check_device)


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
        Path | None,
        typer.Option("--json", help="Also write the summary as JSON.", callback=_OUT_FILE),
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
    _print_ignored(ds.ignored)
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
            "ignored": ds.ignored,
        },
    )


def _print_ignored(ignored: dict[str, str], show: int = 20) -> None:
    """Every file the scan did not read, with why; past ``show``, the count per reason."""
    from edgerobust.console import out

    if not ignored:
        return
    out.print(f"[yellow]{len(ignored)} file(s) ignored[/] (not images of a DOMAIN/CLASS folder):")
    if len(ignored) <= show:
        for rel, why in ignored.items():
            out.print(f"  {rel}: {why}")
        return
    by_reason: dict[str, list[str]] = {}
    for rel, why in ignored.items():
        by_reason.setdefault(why, []).append(rel)
    for why, rels in by_reason.items():
        out.print(f"  {len(rels)} x {why}, e.g. {rels[0]}")
    out.print("  (--json FILE lists every one)")


# --------------------------------------------------------------------------- train


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Dataset folder.")],
    source: Annotated[str, typer.Option(help="Source domain to train on.")],
    out: Annotated[
        Path,
        typer.Option(
            help="Run folder (model.safetensors, train.json, split.json).", callback=_OUT_DIR
        ),
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
    head_epochs: Annotated[int, _HEAD_EPOCHS] = 0,
    freeze_bn: Annotated[bool, _FREEZE_BN] = False,
    seed: Annotated[int, typer.Option(help="Seed for init and shuffling.")] = 1,
    device: Annotated[str, _DEVICE] = "auto",
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
        head_epochs=head_epochs,
        freeze_bn=freeze_bn,
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
        Path | None,
        typer.Option(help="Output run folder (default: RUN-int8-ENGINE).", callback=_OUT_DIR),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Dataset folder, if it moved since training.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(help="Keep a model whose int8 agrees with fp32 below the export gate's bar."),
    ] = False,
    keep_fp32: Annotated[
        str | None,
        typer.Option(help="Comma-separated module names left in fp32 (e.g. backbone.conv1)."),
    ] = None,
    fallback: Annotated[
        bool,
        typer.Option(
            help="Below the agreement bar, keep the most sensitive layers in fp32 (fewer than "
            "half of them) until it passes."
        ),
    ] = True,
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
        force,
        keep_fp32=_csv(keep_fp32) or (),
        fallback=fallback,
    )
    with RichReporter() as rep:
        rec = quantize_checkpoint(cfg, rep)
    stdout.print(
        f"int8 ({rec['engine']}) val accuracy {pct(rec['val_accuracy_int8'])} % vs fp32 "
        f"{pct(rec['val_accuracy_fp32'])} % (n={rec['val_n']}) -> {rec['checkpoint']}"
    )
    if rec["fallback"]:
        stdout.print(rec["fallback"]["summary"])
    if rec["warning"]:
        stdout.print(f"[yellow]warning:[/] {rec['warning']}")


@compress_app.command("prune")
def compress_prune(
    checkpoint: Annotated[Path, typer.Argument(help="fp32 checkpoint (file or run folder).")],
    out: Annotated[
        Path, typer.Option(help="Run folder (model.safetensors, prune.json).", callback=_OUT_DIR)
    ],
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
    freeze_bn: Annotated[bool, _FREEZE_BN] = False,
    seed: Annotated[int, typer.Option(help="Seed for shuffling.")] = 1,
    device: Annotated[str, _DEVICE] = "auto",
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
        freeze_bn=freeze_bn,
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
    out: Annotated[
        Path,
        typer.Option(help="Run folder (model.safetensors, distill.json).", callback=_OUT_DIR),
    ],
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
    head_epochs: Annotated[int, _HEAD_EPOCHS] = 0,
    freeze_bn: Annotated[bool, _FREEZE_BN] = False,
    seed: Annotated[int, typer.Option(help="Seed for init and shuffling.")] = 1,
    device: Annotated[str, _DEVICE] = "auto",
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
        head_epochs=head_epochs,
        freeze_bn=freeze_bn,
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
    out: Annotated[Path, typer.Option(help="Output folder.", callback=_OUT_DIR)] = Path("models"),
    name: Annotated[
        str | None,
        typer.Option(
            help="Artifact name (default: RUN-FORMAT-PRECISION[-ENGINE]).", callback=_plain_name
        ),
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
    target: Annotated[
        str,
        typer.Option(
            help="ONNX int8: the CPU it is for: auto (this host), x86 (AVX2, no VNNI), x86-vnni, "
            "arm64 (Pi 4), arm64-dotprod (Pi 5).",
            callback=_registered("int8 target", _int8_targets),
        ),
    ] = "auto",
    tune: Annotated[
        bool,
        typer.Option(
            help="ONNX int8: time the candidate configurations on this host, keep the fastest "
            "that passes the parity gate."
        ),
    ] = False,
    fallback: Annotated[
        bool,
        typer.Option(
            help="int8 below the bar: keep the most sensitive layers in fp32 until it holds."
        ),
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
        target=target,
        tune=tune,
        fallback=fallback,
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
    tuned = m.quantization.get("tune")
    if tuned:
        stdout.print(f"--tune ({tuned['timing']}, {tuned['host_threads']} thread(s)):")
        for row in tuned["candidates"]:
            figures = row.get("error") or f"agreement {row['top1_agreement']:.1%}"
            if "p50_ms" in row:
                figures += f"  p50 {row['p50_ms']:.2f} ms"
            stdout.print(f"  {'*' if row.get('chosen') else ' '} {row['config']:<44} {figures}")


# --------------------------------------------------------------------------- import


class InputRange(str, Enum):
    unit = "0-1"
    byte = "0-255"


class Layout(str, Enum):
    nchw = "nchw"
    nhwc = "nhwc"


def _floats(value: str | None, what: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in _csv(value) or ())
    except ValueError:
        raise ConfigError(f"--{what} takes comma-separated numbers, got {value!r}") from None


@app.command("import")
def import_cmd(
    model: Annotated[
        Path, typer.Argument(help="Model file made elsewhere (.onnx, .pt TorchScript, .ptl, ...).")
    ],
    classes: Annotated[
        Path,
        typer.Option(
            help="Class names: a text file, one per line in output order, or a dataset folder."
        ),
    ],
    input_size: Annotated[int, typer.Option(help="Image side the model takes (e.g. 224).")],
    mean: Annotated[
        str | None,
        typer.Option(help="Per-channel mean the model expects subtracted, in its input range."),
    ] = None,
    std: Annotated[
        str | None, typer.Option(help="Per-channel std the model expects divided by.")
    ] = None,
    input_range: Annotated[
        InputRange | None, typer.Option(help="Pixel range the model takes (default: 0-1).")
    ] = None,
    layout: Annotated[
        Layout | None, typer.Option(help="Input layout (default: from the file's input shape).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.", callback=_OUT_DIR)] = Path("models"),
    name: Annotated[
        str | None, typer.Option(help="Artifact name (default: the file's stem).")
    ] = None,
) -> None:
    """Import a model made elsewhere: inspect it, run it on one image, write artifact + manifest."""
    from edgerobust.console import out as stdout
    from edgerobust.importer import ImportRequest, import_model

    res = import_model(
        ImportRequest(
            model=str(model),
            classes=str(classes),
            input_size=input_size,
            mean=_floats(mean, "mean"),
            std=_floats(std, "std"),
            input_range=input_range.value if input_range else None,
            layout=layout.value if layout else None,
            out=str(out),
            name=name,
        )
    )
    m = res.manifest
    params = f"{m.params / 1e6:.2f} M params" if m.params is not None else "params unknown"
    stdout.print(f"{res.artifact}  {m.format} {m.precision}  {m.size_bytes / 1e6:.2f} MB  {params}")
    stdout.print(f"input {m.input['name']!r}: {m.input['contract']}, {m.input_size}x{m.input_size}")
    if res.signature is not None and res.signature.outputs:
        o = res.signature.outputs[0]
        stdout.print(f"output {o.name!r}: {o.dtype} {list(o.shape)} (-1: dynamic)")
    stdout.print(f"{m.num_classes} classes: {', '.join(m.class_names)}")
    for note in m.notes:
        stdout.print(f"note: {note}")


# --------------------------------------------------------------------------- eval-device


@app.command("eval-device")
def eval_device(
    artifact: Annotated[
        Path, typer.Argument(help=f"Artifact ({'/'.join(suffixes())}) with its manifest beside it.")
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
    corruptions: Annotated[
        str | None,
        typer.Option(
            help="ImageNet-C corruptions: all, or names (edgerobust corruptions lists them)."
        ),
    ] = None,
    severities: Annotated[
        str, typer.Option(help="Corruption severities, 1-5 or e.g. 1,3,5 (0: clean).")
    ] = "1-5",
    corruption_seed: Annotated[int, typer.Option(help="Seed of the corruptions' noise.")] = 0,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="Artifact (or eval-device record) the corruption errors are relative to (mCE)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the JSON record here.", callback=_OUT_FILE)
    ] = None,
    logits_out: Annotated[
        Path | None,
        typer.Option(
            help="Also save every logit and its image (.npz), to compare machines.",
            callback=_OUT_FILE,
        ),
    ] = None,
) -> None:
    """Evaluate an artifact inside its runtime: accuracy per domain, latency, size, memory."""
    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout
    from edgerobust.data.corruptions import parse_corruptions, parse_severities
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
        corruptions=parse_corruptions(corruptions),
        severities=parse_severities(severities),
        corruption_seed=corruption_seed,
        reference=str(reference) if reference else None,
        out=str(out) if out else None,
        logits_out=str(logits_out) if logits_out else None,
    )
    if eps is not None and attack is None:
        raise ConfigError("--eps needs --attack saltpepper")
    with RichReporter() as rep:
        record = evaluate(cfg, rep)
    stdout.print(eval_table([record]))
    for d in record["domains"]:
        if d.get("corruptions"):
            stdout.print(corruption_table(d["domain"], d["corruptions"]))
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


@app.command("corruptions")
def corruptions_cmd() -> None:
    """List the ImageNet-C corruptions eval-device --corruptions knows, with their published
    parameters per severity, and those left out."""
    from rich.table import Table

    from edgerobust.console import out as stdout
    from edgerobust.data.corruptions import CORRUPTIONS, LEFT_OUT

    t = Table(title="ImageNet-C corruptions (parameters of severities 1..5, as published)")
    for col in ("corruption", "group", "in all", "severities 1..5"):
        t.add_column(col)

    def text(p: object) -> str:
        if isinstance(p, tuple):
            return "(" + ", ".join(map(text, p)) + ")"
        return f"{p:g}" if isinstance(p, float) else str(p)

    for name, c in CORRUPTIONS.items():
        t.add_row(name, c.group, "yes" if c.benchmark else "no", "; ".join(map(text, c.params)))
    stdout.print(t)
    for name, why in LEFT_OUT.items():
        stdout.print(f"left out: {name}: {why}")


# --------------------------------------------------------------------------- device-check


class CpuName(str, Enum):
    cortex_a72 = "cortex-a72"
    cortex_a76 = "cortex-a76"


@app.command("device-check")
def device_check_cmd(
    artifacts: Annotated[
        list[Path],
        typer.Argument(help=f"Artifacts ({'/'.join(suffixes())}), each with its manifest."),
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
    out: Annotated[
        Path | None, typer.Option(help="Write the JSON report here.", callback=_OUT_FILE)
    ] = None,
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
    batch_size: Annotated[
        str,
        typer.Option(
            help="Attack batch size: N (paper: 8) or auto (the fastest here; 8 with --stop exact)."
        ),
    ] = "auto",
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
    stop: Annotated[
        GradStopChoice,
        typer.Option(
            help=f"{', '.join(settled_attacks())}: settled (stop each image once every eps is "
            "decided) or exact (foolbox's full search and figures)."
        ),
    ] = GradStopChoice.settled,
    device: Annotated[str, _DEVICE] = "auto",
    threads: Annotated[int, typer.Option(help="Inference threads for artifacts.")] = 1,
    out: Annotated[
        Path | None, typer.Option(help="Write the JSON record here.", callback=_OUT_FILE)
    ] = None,
) -> None:
    """Adversarial robustness (the paper's seven attacks); int8 and artifacts get transfer figures."""
    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout
    from edgerobust.errors import require_torch

    cfg_attacks = parse_attacks(attacks)
    cfg_eps = parse_eps(eps)
    params = parse_overrides(set_)
    attack_batch = _batch_size(batch_size)
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
        batch_size=attack_batch,
        source=str(source) if source else None,
        artifacts=_csv(artifacts) or (),
        replay=_csv(replay) or (),
        params=params,
        sp_stop=sp_stop.value,
        stop=stop.value,
        device=device,
        threads=threads,
        out=str(out) if out else None,
    )
    with RichReporter() as rep:
        record = run_attacks(cfg, rep)
    stdout.print(attack_table(record))
    for a in record["attacks"]:
        first = a["results"][0] if a["results"] else {}
        if "gradients" in first:
            stdout.print(
                f"{a['attack']}: {first['gradients']} gradient evaluations "
                f"({first['gradients'] / max(1, first['gradients_budget']):.2f} of foolbox's "
                f"budget, stop {first['stop']}), {a['seconds']:.1f} s"
            )
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
    out: Annotated[
        Path | None, typer.Option(help="Write the JSON record here.", callback=_OUT_FILE)
    ] = None,
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


def _batch_size(value: str) -> int | None:
    """``--batch-size``: ``auto`` -> ``None`` (the attack command picks), else an integer >= 1."""
    if value.strip() == "auto":
        return None
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise ConfigError(f"--batch-size must be auto or an integer >= 1, got {value!r}")
    return size


@app.command("bench-attacks")
def bench_attacks_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="fp32 checkpoint (file or run folder).")],
    data: Annotated[
        Path | None, typer.Option(help="Dataset folder (default: the one the model records).")
    ] = None,
    domain: Annotated[
        str | None, typer.Option(help="Domain (default: the source domain's validation split).")
    ] = None,
    attacks: Annotated[
        str, typer.Option(help=f"Comma-separated: {', '.join(settled_attacks())}.")
    ] = "cw,ead",
    limit: Annotated[int | None, typer.Option(help="Seeded sample of N images.")] = 48,
    seed: Annotated[int, typer.Option(help="Sample seed, the same for every run.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Attack batch size (paper: 8).")] = 8,
    orders: Annotated[
        int,
        typer.Option(
            help="Run foolbox's exact attack on N batch orders (the sample order, then seeded "
            "shuffles) and report its own spread: its C&W/EAD stop on the batch's summed loss."
        ),
    ] = 1,
    strengths: Annotated[str, typer.Option(help="light, heavy or both, comma-separated.")] = (
        "light,heavy"
    ),
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a setting: ATTACK.SETTING=VALUE, e.g. cw.steps=10."),
    ] = None,
    device: Annotated[str, _DEVICE] = "auto",
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the JSON record here. Finished batches wait in FILE.partial/ until "
            "then: rerun the same command to resume an interrupted benchmark.",
            callback=_OUT_FILE,
        ),
    ] = None,
) -> None:
    """Settled vs foolbox's full C&W/EAD/DDN/DeepFool/PGD: robust accuracy and gradient
    evaluations."""
    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout
    from edgerobust.errors import require_torch

    names = parse_attacks(attacks)
    params = parse_overrides(set_)
    require_torch("bench-attacks")
    from edgerobust.attacks.gradbench import (
        AttackBenchConfig,
        bench_attacks,
        bench_lines,
        partial_dir,
    )

    cfg = AttackBenchConfig(
        checkpoint=str(checkpoint),
        data=str(data) if data else None,
        domain=domain,
        attacks=names,
        limit=limit,
        seed=seed,
        batch_size=batch_size,
        orders=orders,
        strengths=("light", "heavy") if strengths == "both" else _csv(strengths) or (),
        params={k: dict(v) for k, v in params.items()},
        device=device,
        out=str(out) if out else None,
    )
    try:
        with RichReporter() as rep:
            record = bench_attacks(cfg, rep)
    except KeyboardInterrupt:
        kept = (
            f"finished batches are kept in {partial_dir(out)}; run the same command to continue"
            if out and partial_dir(out).is_dir()
            else "no batch had finished"
            if out
            else "nothing was kept (pass --out FILE to keep finished batches)"
        )
        typer.echo(f"interrupted: {kept}", err=True)
        raise typer.Exit(130) from None
    for line in bench_lines(record):
        stdout.print(line)
    if out:
        stdout.print(f"record -> {out}")


# --------------------------------------------------------------------------- bench, demo


@app.command()
def bench(
    artifact: Annotated[
        Path,
        typer.Argument(
            help="Artifact: eval-device vs bare runtime calls. Or a checkpoint (file or run "
            "folder): its precisions side by side (torch eager, onnxruntime fp32/int8, lite, ExecuTorch)."
        ),
    ],
    data: Annotated[
        Path | None,
        typer.Option(help="Dataset folder (artifacts: required; checkpoints: if it moved)."),
    ] = None,
    domain: Annotated[
        str | None, typer.Option(help="Domain to run over (default: the first).")
    ] = None,
    runtime: Annotated[str | None, _RUNTIME] = None,
    threads: Annotated[
        str, typer.Option(help="Inference threads (checkpoints: a list, e.g. 1,2).")
    ] = "1",
    runs: Annotated[
        int, typer.Option(help="Timed batch-1 calls per side.", callback=_at_least(1))
    ] = 200,
    repeats: Annotated[
        int,
        typer.Option(
            help="Interleaved rounds (bare, tool, ...); the medians are compared.",
            callback=_at_least(1),
        ),
    ] = 5,
    target: Annotated[
        str,
        typer.Option(
            help="Checkpoints: the ONNX int8 target (as export --target).",
            callback=_registered("int8 target", _int8_targets),
        ),
    ] = "auto",
    out: Annotated[
        Path | None, typer.Option(help="Write the JSON result here.", callback=_OUT_FILE)
    ] = None,
) -> None:
    """Side-by-side timing in one process: the measuring path (an artifact), or a model's
    precisions (a checkpoint)."""
    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout
    from edgerobust.runtimes.formats import format_of

    try:
        thread_list = tuple(int(t) for t in threads.split(","))
    except ValueError:
        raise ConfigError(
            f"--threads must be integers separated by commas, got {threads!r}"
        ) from None
    if format_of(str(artifact)) is None:
        from edgerobust.errors import require_torch

        require_torch("bench CHECKPOINT")
        from edgerobust.evaluate.bench import PrecisionBenchConfig, run_precision_bench

        pcfg = PrecisionBenchConfig(
            str(artifact),
            str(data) if data else None,
            thread_list,
            runs,
            repeats,
            target,
        )
        with RichReporter() as rep:
            res = run_precision_bench(pcfg, rep)
    else:
        from edgerobust.evaluate.bench import BenchConfig, run_bench

        if data is None or len(thread_list) != 1:
            raise ConfigError("bench ARTIFACT needs --data and one --threads value")
        cfg = BenchConfig(str(artifact), str(data), domain, runtime, thread_list[0], runs, repeats)
        with RichReporter() as rep:
            res = run_bench(cfg, rep)
    for line in res["lines"]:
        stdout.print(line)
    _write_json(out, res)


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option(help="Folder for everything the demo makes.", callback=_OUT_DIR)
    ] = Path("edgerobust-demo"),
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


def _executors() -> list[str]:
    from edgerobust.study.executors import list_executors

    return list_executors()


@app.command()
def run(
    study: Annotated[Path, typer.Argument(help="Study file (TOML), e.g. configs/quickstart.toml.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder (default: runs/STUDY-NAME).", callback=_OUT_DIR),
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
    executor: Annotated[
        str,
        typer.Option(
            help=f"Where the stages run: {', '.join(_executors())} (README: studies on a cluster).",
            callback=_registered("executor", _executors),
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            help="The Ray cluster to join (HOST:PORT of its head; default: RAY_ADDRESS, "
            "else a Ray instance started on this machine for the run)."
        ),
    ] = None,
) -> None:
    """Run a whole study: train, compress, export, eval-device, attack. Cached and resumable."""
    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout
    from edgerobust.errors import require_torch
    from edgerobust.study.scheduler import RunConfig, run_study

    require_torch("run")
    cfg = RunConfig(str(study), str(out) if out else None, jobs, dry_run, executor, address)
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
        Path | None,
        typer.Option(help="Output folder (default: RESULTS/report).", callback=_OUT_DIR),
    ] = None,
    findings: Annotated[
        bool,
        typer.Option(
            help="Print the paper's findings judged on these records (verdict, difference with "
            "its 95 % interval, n); they are always written to findings.md / findings.json."
        ),
    ] = False,
) -> None:
    """The paper's tables (Markdown + CSV), plots (PNG), findings and one HTML page, from JSON records only."""
    from edgerobust.console import out as stdout
    from edgerobust.console import print_findings
    from edgerobust.report import ReportConfig, write_report

    res = write_report(ReportConfig(str(results), str(out) if out else None))
    for t in res.tables:
        stdout.print(f"{t.name}: {len(t.rows)} rows  ({t.title})")
    for line in res.headlines():
        stdout.print(line)
    for path, why in res.skipped.items():
        stdout.print(f"[yellow]skipped[/] {path}: {why}")
    if findings:
        print_findings(res.findings)
    stdout.print(f"{res.n_records} records -> {res.out / 'index.html'}")


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit.

    Usage errors (unknown option, bad choice) are typer's, printed as one line too, exit 2.
    Anything else is a bug or an input nobody foresaw: one line says what failed, on which file,
    and where the full traceback was saved (:mod:`edgerobust.guard`); exit 1. Never a traceback
    on the terminal.
    """
    from edgerobust.guard import report_crash

    for category in (DeprecationWarning, UserWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    args = sys.argv[1:] if argv is None else argv
    try:
        # Not standalone: usage errors come here, to be printed as one line like all others
        # (typer's own rendering is a multi-line box).
        code = app(args=args, prog_name="edgerobust", standalone_mode=False)
    except typer.TyperException as exc:  # click's usage errors: bad option value, unknown command
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # `edgerobust` alone, or a group without a command: the help
        else:
            ctx = getattr(exc, "ctx", None)
            where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            typer.echo(f"error: {' '.join(exc.format_message().split())}{where}", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        sys.exit(1)
    except EdgeRobustError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (FileNotFoundError, IsADirectoryError, PermissionError, NotADirectoryError) as exc:
        typer.echo(f"error: {exc.strerror or exc}: {exc.filename}", err=True)
        sys.exit(2)
    except Exception as exc:  # the guard: see the docstring
        typer.echo(report_crash(exc, args), err=True)
        sys.exit(1)
    # As typer's standalone mode does: always exit, with a command's typer.Exit(N) code.
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
