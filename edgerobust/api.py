"""The Python API: the CLI's steps as functions, for notebooks and scripts.

Bring your own ``nn.Module``, export it with the same exporters, manifest and parity gate as
``edgerobust export``, and evaluate any artifact inside its runtime::

    from edgerobust import api

    ckpt = api.make_checkpoint(
        my_model, "runs/mine.safetensors",
        class_names=["dog", "elephant", ...], input_size=224,
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),  # normalization my_model expects
        data="data/pacs", source_domain="photo",                 # where parity images come from
    )
    res = api.export(ckpt, format="onnx")                 # ExportResult: artifact, manifest, parity
    rec = api.evaluate(res.artifact, "data/pacs", domains=["sketch"], attack="saltpepper")
    rec.domain("sketch")["accuracy"]                      # an EvalDeviceRecord, as the CLI writes

    imp = api.import_model("their.onnx", classes="data/pacs", input_size=224)   # a file made elsewhere

The CLI is a thin layer over the same functions (:func:`edgerobust.exporters.export`,
:func:`edgerobust.importer.import_model`, :func:`edgerobust.evaluate.evaluate`); this module only
fills in their configs. Nothing here prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgerobust.data import DEFAULT_SEED, DEFAULT_VAL_FRACTION
from edgerobust.errors import ConfigError, require_torch
from edgerobust.importer import ImportRequest, ImportResult
from edgerobust.importer import import_model as _import_model
from edgerobust.records import EvalDeviceRecord

if TYPE_CHECKING:
    from torch import nn

    from edgerobust.exporters import ExportResult
    from edgerobust.models.checkpoint import Checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "evaluate",
    "export",
    "import_model",
    "load_checkpoint",
    "make_checkpoint",
]


def make_checkpoint(
    module: nn.Module,
    path: str | Path,
    *,
    class_names: Sequence[str],
    input_size: int,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    data: str | Path | None = None,
    source_domain: str | None = None,
    arch: str | None = None,
) -> Checkpoint:
    """Wrap ``module`` so it takes [0, 1] NCHW RGB (mean/std moved inside, as every edgerobust
    model does) and write it as a checkpoint: weights plus spec in one safetensors file.

    ``mean``/``std`` are what ``module`` expects subtracted and divided on [0, 1] pixels; pass
    ``None`` for both when ``module`` normalizes by itself. ``data`` and ``source_domain`` name
    the dataset and domain it was trained on: export takes its parity (and int8 calibration)
    images from that domain's seeded validation (training) split. The checkpoint is reloaded
    with :func:`load_checkpoint` and the same module class, never by unpickling.
    """
    require_torch("make_checkpoint")
    from edgerobust.models.build import Classifier
    from edgerobust.models.checkpoint import Checkpoint, ModelSpec, save_checkpoint
    from edgerobust.runtimes.manifest import sha256_file

    names = tuple(str(c) for c in class_names)
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError("class_names needs at least 2 distinct names, in output order")
    if input_size < 1:
        raise ConfigError(f"input_size must be >= 1, got {input_size}")
    if (mean is None) != (std is None):
        raise ConfigError("pass both mean and std, or neither (the module normalizes itself)")
    mean_t = tuple(float(v) for v in mean) if mean is not None else (0.0, 0.0, 0.0)
    std_t = tuple(float(v) for v in std) if std is not None else (1.0, 1.0, 1.0)
    if len(mean_t) != 3 or len(std_t) != 3 or min(std_t) <= 0:
        raise ConfigError("mean and std need 3 values each (R, G, B), std > 0")
    model = Classifier(module, mean_t, std_t).eval()
    spec = ModelSpec(
        arch=arch or type(module).__name__.lower(),
        class_names=names,
        input_size=int(input_size),
        mean=mean_t,
        std=std_t,
        origin={
            "kind": "module",
            "module": f"{type(module).__module__}.{type(module).__qualname__}",
            "dataset": str(data) if data is not None else None,
            "source_domain": source_domain,
            "split_seed": DEFAULT_SEED,
            "val_fraction": DEFAULT_VAL_FRACTION,
        },
    )
    path = save_checkpoint(path, model, spec)
    return Checkpoint(model, spec, Path(path), sha256_file(path))


def load_checkpoint(path: str | Path, module: nn.Module) -> Checkpoint:
    """Load a checkpoint written by :func:`make_checkpoint` into a fresh ``module`` of the same
    class (weights only, strictly matched; no pickle)."""
    require_torch("load_checkpoint")
    from safetensors.torch import load_file

    from edgerobust.errors import CheckpointError
    from edgerobust.models.build import Classifier
    from edgerobust.models.checkpoint import Checkpoint, read_spec, resolve
    from edgerobust.runtimes.manifest import sha256_file

    path = resolve(path)
    spec = read_spec(path)
    if spec.origin.get("kind") != "module":
        raise CheckpointError(
            f"{path} holds a registered architecture ({spec.arch}): load it with "
            "edgerobust.models.checkpoint.load_checkpoint(path)"
        )
    model = Classifier(module, spec.mean, spec.std)
    try:
        model.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not match this module ({first})") from exc
    return Checkpoint(model.eval(), spec, path, sha256_file(path))


def export(
    checkpoint: Checkpoint | str | Path,
    *,
    format: str = "onnx",
    quant: str | None = None,
    out: str | Path = "models",
    name: str | None = None,
    data: str | Path | None = None,
    **options: Any,
) -> ExportResult:
    """Export a checkpoint (a :func:`make_checkpoint` result, or a checkpoint file of a registered
    architecture) like ``edgerobust export``: same exporters, parity gate and manifest.
    ``options`` are the other fields of :class:`edgerobust.exporters.ExportRequest`
    (``engine``, ``parity_images``, ``min_agreement``, ``force``, ...)."""
    require_torch("export")
    from edgerobust.exporters import ExportRequest, export_checkpoint
    from edgerobust.exporters import export as export_file

    is_file = isinstance(checkpoint, str | Path)
    req = ExportRequest(
        checkpoint=str(checkpoint if is_file else checkpoint.path),
        format=format,
        quant=quant,
        out=str(out),
        name=name,
        data=str(data) if data is not None else None,
        **options,
    )
    return export_file(req) if is_file else export_checkpoint(checkpoint, req)


def import_model(
    model: str | Path,
    *,
    classes: str | Path | Sequence[str],
    input_size: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_range: str | None = None,
    layout: str | None = None,
    out: str | Path = "models",
    name: str | None = None,
) -> ImportResult:
    """Import a model file made elsewhere, like ``edgerobust import`` (see
    :mod:`edgerobust.importer`). ``classes`` may also be a list of names, in output order."""
    if not isinstance(classes, str | Path):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="edgerobust-classes-") as tmp:
            listing = Path(tmp) / "classes.txt"
            listing.write_text("\n".join(str(c) for c in classes) + "\n", encoding="utf-8")
            return import_model(
                model,
                classes=listing,
                input_size=input_size,
                mean=mean,
                std=std,
                input_range=input_range,
                layout=layout,
                out=out,
                name=name,
            )
    return _import_model(
        ImportRequest(
            model=str(model),
            classes=str(classes),
            input_size=input_size,
            mean=tuple(mean) if mean is not None else None,
            std=tuple(std) if std is not None else None,
            input_range=input_range,
            layout=layout,
            out=str(out),
            name=name,
        )
    )


def evaluate(
    artifact: str | Path,
    data: str | Path,
    *,
    domains: Sequence[str] | None = None,
    runtime: str | None = None,
    threads: int = 1,
    limit: int | None = None,
    attack: str | None = None,
    out: str | Path | None = None,
    **options: Any,
) -> EvalDeviceRecord:
    """Evaluate an artifact inside its runtime on a dataset of domains, like ``eval-device``.
    ``options`` are the other fields of :class:`edgerobust.evaluate.EvalConfig` (``batch_size``,
    ``attack_eps``, ``attack_steps``, ``logits_out``, ...)."""
    from edgerobust.evaluate import EvalConfig
    from edgerobust.evaluate import evaluate as run

    cfg = EvalConfig(
        artifact=str(artifact),
        data=str(data),
        runtime=runtime,
        domains=tuple(domains) if domains else None,
        threads=threads,
        limit=limit,
        attack=attack,
        out=str(out) if out is not None else None,
        **options,
    )
    return EvalDeviceRecord.from_dict(run(cfg))
