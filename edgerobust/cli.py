"""The ``edgerobust`` command line. Each command builds a config and calls one library function.

Heavy imports (torch, torchvision) happen inside the commands that need them, so
``edgerobust eval-device --runtime onnxruntime`` runs on a device without torch.
"""

from __future__ import annotations

import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from edgerobust import __version__
from edgerobust.errors import ConfigError, EdgeRobustError

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


class Format(str, Enum):
    onnx = "onnx"
    torchscript = "torchscript"
    ptl = "ptl"


class Quant(str, Enum):
    fp32 = "fp32"
    int8 = "int8"


class Engine(str, Enum):
    fbgemm = "fbgemm"
    x86 = "x86"
    qnnpack = "qnnpack"


class RuntimeName(str, Enum):
    onnxruntime = "onnxruntime"
    torchscript = "torchscript"
    ptl = "ptl"


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


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


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
    arch: Annotated[
        str, typer.Option(help="Architecture: resnet18/34/50/101/152 (tinyresnet for tests).")
    ] = "resnet18",
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
        f"best val accuracy {_pct(rec['val_accuracy'])} % (n={rec['val_n']}, epoch {rec['best_epoch']}) "
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
) -> None:
    """Post-training static int8 quantization (eager mode), calibrated on source images."""
    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout
    from edgerobust.errors import require_torch

    require_torch("compress quantize")
    from edgerobust.compress import QuantizeConfig, quantize_checkpoint

    cfg = QuantizeConfig(
        str(checkpoint),
        engine.value,
        calib_batches,
        batch_size,
        str(out) if out else None,
        str(data) if data else None,
    )
    with RichReporter() as rep:
        rec = quantize_checkpoint(cfg, rep)
    stdout.print(
        f"int8 ({rec['engine']}) val accuracy {_pct(rec['val_accuracy_int8'])} % vs fp32 "
        f"{_pct(rec['val_accuracy_fp32'])} % (n={rec['val_n']}) -> {rec['checkpoint']}"
    )


# --------------------------------------------------------------------------- export


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (file or run folder).")],
    format: Annotated[Format, typer.Option("--format", help="Artifact format.")] = Format.onnx,
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
        format=format.value,
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


def eval_table(records: list[dict]):
    from rich.table import Table

    domains: list[str] = []
    for r in records:
        for d in r["domains"]:
            label = d["domain"] + (" (src)" if d["role"] == "source" else "")
            if label not in domains:
                domains.append(label)
    t = Table(title="accuracy % [n] inside the runtime; latency batch 1")
    for col in ("artifact", "runtime", "MB"):
        t.add_column(col, justify="right" if col == "MB" else "left")
    for d in domains:
        t.add_column(d, justify="right")
    for col in ("p50 ms", "p99 ms", "img/s"):
        t.add_column(col, justify="right")
    for r in records:
        cells = {}
        for d in r["domains"]:
            label = d["domain"] + (" (src)" if d["role"] == "source" else "")
            cells[label] = f"{_pct(d['accuracy'])} [{d['n']}]"
        lat = r["latency_ms"]
        t.add_row(
            r["artifact"]["file"],
            r["runtime"]["runtime"],
            f"{r['artifact']['size_mb']:.2f}",
            *(cells.get(d, "-") for d in domains),
            f"{lat['p50']:.2f}",
            f"{lat['p99']:.2f}",
            f"{r['throughput']['images_per_s']:.0f}",
        )
    return t


@app.command("eval-device")
def eval_device(
    artifact: Annotated[
        Path, typer.Argument(help="Artifact (.onnx/.pt/.ptl) with its manifest beside it.")
    ],
    data: Annotated[Path, typer.Option(help="Dataset folder.")],
    runtime: Annotated[
        RuntimeName | None, typer.Option(help="Runtime (default: the format's own).")
    ] = None,
    domains: Annotated[
        str | None, typer.Option(help="Comma-separated domains (default: all).")
    ] = None,
    threads: Annotated[int, typer.Option(help="Inference threads.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Batch size for the accuracy pass.")] = 16,
    latency_runs: Annotated[int, typer.Option(help="Timed batch-1 calls.")] = 100,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up calls.")] = 10,
    limit: Annotated[
        int | None, typer.Option(help="At most N images per domain (seeded sample).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the JSON record here.")] = None,
) -> None:
    """Evaluate an artifact inside its runtime: accuracy per domain, latency, size, memory."""
    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout
    from edgerobust.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(
        artifact=str(artifact),
        data=str(data),
        runtime=runtime.value if runtime else None,
        domains=_csv(domains),
        threads=threads,
        batch_size=batch_size,
        warmup=warmup,
        latency_runs=latency_runs,
        limit=limit,
        out=str(out) if out else None,
    )
    with RichReporter() as rep:
        record = evaluate(cfg, rep)
    stdout.print(eval_table([record]))
    mem = record["memory"]
    if mem["peak_rss_mb"] is not None:
        stdout.print(f"peak RSS {mem['peak_rss_mb']:.0f} MB ({mem['method']})")
    warning = record["host"].get("int8_warning")
    if warning and record["artifact"]["precision"] == "int8":
        stdout.print(f"[yellow]warning:[/] {warning}")
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
    runtime: Annotated[
        RuntimeName | None, typer.Option(help="Runtime (default: the format's own).")
    ] = None,
    threads: Annotated[int, typer.Option(help="Inference threads.")] = 1,
    runs: Annotated[int, typer.Option(help="Timed batch-1 calls per side.")] = 200,
    repeats: Annotated[
        int, typer.Option(help="Interleaved rounds (bare, tool, bare, tool, ...).")
    ] = 3,
    out: Annotated[Path | None, typer.Option(help="Write the JSON result here.")] = None,
) -> None:
    """Measure the measuring path: eval-device vs bare runtime calls, side by side, one process."""
    from edgerobust.bench import BenchConfig, run_bench
    from edgerobust.console import RichReporter
    from edgerobust.console import out as stdout

    cfg = BenchConfig(
        str(artifact), str(data), domain, runtime.value if runtime else None, threads, runs, repeats
    )
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
    arch: Annotated[str, typer.Option(help="Architecture to train.")] = "resnet18",
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
