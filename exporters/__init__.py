"""torch checkpoint -> deployable artifact + manifest, validated against the source model.

    >>> from edgerobust.exporters import ExportRequest, export
    >>> result = export(ExportRequest("runs/r18", format="onnx", quant="int8", out="models"))
    >>> result.artifact, result.manifest.parity["top1_agreement"]

Every export runs the parity gate on real held-out images (the source domain's validation split):
fp32 artifacts must match the source logits within the exporter's declared tolerance; int8
artifacts must agree on top-1 with the fp32 source at least ``min_agreement`` of the time.
A failing artifact is not written unless ``force``; with ``force`` its manifest says it failed.
"""

from __future__ import annotations

import os
import platform
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgerobust import __version__
from edgerobust.errors import ConfigError, ParityError
from edgerobust.progress import NullReporter, Reporter
from edgerobust.runtimes import default_runtime
from edgerobust.runtimes.formats import get_format
from edgerobust.runtimes.manifest import (
    Manifest,
    atomic_write_json,
    sha256_file,
)
from edgerobust.runtimes.preprocess import to_input

from .parity import ParityBar, ParityResult, compare
from .registry import (  # noqa: F401 - the registry is part of this package's API
    EXPORTERS,
    Exporter,
    WriteOutcome,
    get_exporter,
    list_exporters,
    register_exporter,
)

PRECISIONS = ("fp32", "int8")
DEFAULT_MIN_AGREEMENT = 0.98


@dataclass(frozen=True)
class ExportRequest:
    checkpoint: str
    format: str = "onnx"
    quant: str | None = None  # None: the checkpoint's own precision
    engine: str | None = None  # torch int8 engine for torchscript/ptl (default: this host's)
    out: str = "models"
    name: str | None = None
    data: str | None = None  # dataset folder, if it moved since training
    calib_batches: int = 16
    calib_batch_size: int = 8
    parity_images: int = 256
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    force: bool = False
    optimize: bool = True
    target: str = "auto"  # ONNX int8: the CPU it is made for (see exporters/onnx.py TARGETS)
    tune: bool = False  # ONNX int8: time the candidate configurations here, keep the fastest
    fallback: bool = True  # int8 below the bar: keep the most sensitive layers in fp32

    def validate(self) -> None:
        if self.format not in EXPORTERS:
            raise ConfigError(
                f"unknown format {self.format!r}: choose one of {', '.join(list_exporters())}"
            )
        if (self.target != "auto" or self.tune) and not get_exporter(self.format).int8_options:
            own = ", ".join(n for n, e in EXPORTERS.items() if e.int8_options)
            raise ConfigError(
                f"--target and --tune apply to {own} int8; {self.format} int8 takes --engine"
            )
        if self.target != "auto":
            from .onnx import TARGET_CHOICES

            if self.target not in TARGET_CHOICES:
                raise ConfigError(
                    f"unknown --target {self.target!r}: choose one of {', '.join(TARGET_CHOICES)}"
                )
        if self.quant is not None and self.quant not in PRECISIONS:
            raise ConfigError(f"--quant must be fp32 or int8, got {self.quant!r}")
        if self.calib_batches < 1:
            raise ConfigError(f"--calib-batches must be >= 1, got {self.calib_batches}")
        if self.parity_images < 1:
            raise ConfigError(f"--parity-images must be >= 1, got {self.parity_images}")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ConfigError(f"--min-agreement must be in [0, 1], got {self.min_agreement}")
        if self.engine and get_exporter(self.format).int8 != "ptsq":
            ptsq = ", ".join(n for n, e in EXPORTERS.items() if e.int8 == "ptsq")
            raise ConfigError(
                f"--engine applies to {ptsq} int8; {self.format} int8 is quantized for its "
                "runtime, which picks its own kernels: drop --engine"
            )


@dataclass(frozen=True)
class ExportResult:
    artifact: Path
    manifest_path: Path
    manifest: Manifest
    parity: ParityResult


def _versions() -> dict[str, str]:
    import onnxruntime
    import torch

    v = {
        "edgerobust": __version__,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }
    try:
        import onnx

        v["onnx"] = onnx.__version__
    except ImportError:  # pragma: no cover
        pass
    import contextlib
    import importlib.metadata

    for dist in ("executorch", "torchao"):  # the .pte toolchain, when installed
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            v[dist] = importlib.metadata.version(dist)
    return v


def _logits(fn, batches: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(fn(b), dtype=np.float32) for b in batches])


def export(req: ExportRequest, reporter: Reporter | None = None) -> ExportResult:
    """Export one artifact; see the module docstring for the parity gate."""
    from edgerobust.models.checkpoint import load_checkpoint, read_spec, resolve

    req.validate()
    ckpt_path = resolve(req.checkpoint)
    _check_precision(req, read_spec(ckpt_path), ckpt_path)  # before loading any weights
    return export_checkpoint(load_checkpoint(ckpt_path), req, reporter)


def _check_precision(req: ExportRequest, spec: Any, ckpt_path: Path) -> None:
    exporter = get_exporter(req.format)
    quant = req.quant or spec.precision
    if spec.precision == "int8" and quant == "fp32":
        raise ConfigError(f"{ckpt_path} is already int8: export its fp32 source for --quant fp32")
    if spec.precision == "int8" and exporter.int8 == "own":
        parent = spec.origin.get("parent", "its fp32 source checkpoint")
        raise ConfigError(
            f"{req.format} int8 is quantized by its exporter from the fp32 model: pass the fp32 "
            f"checkpoint ({parent}) with --quant int8"
        )
    if quant == "int8" and exporter.int8 == "ptsq" and spec.origin.get("kind") == "module":
        raise ConfigError(
            f"{req.format} int8 is eager PTSQ, which needs a registered architecture; a model "
            "built from your own module exports int8 as ONNX (format='onnx', quant='int8')"
        )


def export_checkpoint(
    ckpt: Any, req: ExportRequest, reporter: Reporter | None = None
) -> ExportResult:
    """Export a loaded checkpoint (``edgerobust.models.checkpoint.Checkpoint``): the same gate
    and manifest as :func:`export`; ``req.checkpoint`` is not read. The Python API
    (:mod:`edgerobust.api`) passes models built from the user's own module this way."""
    import torch

    from edgerobust.compress.quantize import (
        calibrated_ptsq,
        convert_prepared,
        host_engine,
        ptsq_scheme,
    )
    from edgerobust.data import origin_split, spread_batches
    from edgerobust.models.build import count_params
    from edgerobust.models.checkpoint import load_checkpoint

    req.validate()
    exporter = get_exporter(req.format)
    rep = reporter or NullReporter()
    ckpt_path, spec = ckpt.path, ckpt.spec
    _check_precision(req, spec, ckpt_path)
    quant = req.quant or spec.precision
    size = spec.input_size

    # Real images: calibration from the source training split, parity on held-out validation.
    _, images, split = origin_split(spec.origin, size, req.data)
    val_idx = split.val
    if not len(val_idx):
        raise ConfigError("the source validation split is empty: no images for the parity check")
    val_idx = [i for i in val_idx if images.ok[i]][: req.parity_images]
    bs = 32
    parity_batches = [
        to_input(np.asarray(images.pixels[val_idx[i : i + bs]])) for i in range(0, len(val_idx), bs)
    ]
    images_desc = f"{spec.origin.get('source_domain')} validation split, {len(val_idx)} images"

    def calibration_batches() -> list[np.ndarray]:
        return spread_batches(images, split.train, req.calib_batches, req.calib_batch_size)

    # The reference is always the fp32 model: for an int8 checkpoint, its fp32 parent.
    fp32_model = ckpt.model
    if spec.precision == "int8":
        parent = spec.origin.get("parent")
        if not parent or not Path(parent).is_file():
            raise ConfigError(
                f"{ckpt_path} is int8 but its fp32 parent checkpoint ({parent}) is missing: "
                "the parity check compares against it"
            )
        fp32_model = load_checkpoint(parent).model

    def torch_fn(model):
        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

        return run

    reference = _logits(torch_fn(fp32_model), parity_batches)
    notes: list[str] = []
    engine: str | None = None
    model_to_save = ckpt.model
    int8_twin = None
    if quant == "int8" and exporter.int8 == "ptsq":
        engine = spec.quant["engine"] if spec.quant else (req.engine or host_engine())
        if spec.quant and req.engine and req.engine != engine:
            raise ConfigError(
                f"{ckpt_path} was quantized for {engine}; re-run 'compress quantize --engine {req.engine}'"
            )
        if not spec.quant:
            t = rep.task(f"PTSQ calibration ({engine})", req.calib_batches)
            cal = calibrated_ptsq(
                ckpt.model, engine, calibration_batches(), progress=lambda i: rep.advance(t)
            )
            rep.done(t)
            model_to_save = convert_prepared(cal.prepared, engine)
            scheme = ptsq_scheme(ckpt.model)
            clamped = ", clamped activations" if cal.clamped else ""
            notes.append(
                f"{scheme} ({engine}, per-channel weights, bias-corrected{clamped}) calibrated on "
                f"{cal.images} source training images"
            )
        torch.backends.quantized.engine = engine
        int8_twin = model_to_save
    elif quant == "int8":
        engine = exporter.int8_engine

    # NAME.json sits beside NAME.<ext>, so the default name carries the format to stay unique.
    # An int8 checkpoint is named after its fp32 parent: r18-ptl-int8-qnnpack, not r18-int8-...
    stem = _stem(Path(spec.origin.get("parent") or ckpt_path) if spec.quant else ckpt_path)
    name = req.name or f"{stem}-{req.format}-{quant}" + (
        f"-{engine}" if engine and exporter.int8 == "ptsq" else ""
    )
    if not req.name and quant == "int8" and exporter.int8_options and req.target != "auto":
        name += f"-{req.target}"  # r18-onnx-int8-arm64: made for another CPU than this one
    out = Path(req.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = get_format(req.format).suffix
    final = out / f"{name}{suffix}"
    _check_name_free(final)
    fd, tmp_name = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        bar = exporter.fp32_bar
        if quant == "int8":
            bar = ParityBar(min_agreement=req.min_agreement)
        runtime_name = default_runtime(req.format)

        def run_candidate(path: Path) -> np.ndarray:
            """Logits of a written file in the runtime that will run it on the device."""
            from edgerobust.runtimes import get

            draft = _manifest(req, spec, ckpt, final, path, quant, engine, 0, [], {})
            # torch's thread count is process-wide and the torch runtimes set it: restore it.
            torch_threads = torch.get_num_threads()
            try:
                runtime = get(runtime_name).load(
                    path, draft, threads=max(1, min(4, os.cpu_count() or 1))
                )
                return _logits(runtime, parity_batches)
            finally:
                torch.set_num_threads(torch_threads)

        def judge_logits(candidate: np.ndarray) -> ParityResult:
            return compare(
                reference, candidate, bar, reference_name="fp32 source checkpoint",
                images=images_desc,
            )  # fmt: skip

        def judge(path: Path) -> ParityResult:
            """The parity gate on any candidate file (int8 writers tune and fall back with it)."""
            return judge_logits(run_candidate(path))

        options = {}
        if quant == "int8" and exporter.int8_options:
            from .onnx import Int8Options

            options["int8"] = Int8Options(
                target=req.target, tune=req.tune, fallback=req.fallback, judge=judge
            )
        t = rep.task(
            f"export {req.format} {quant}" + (" (tune, fallback)" if req.tune else ""), None
        )
        written = exporter.write(
            model_to_save,
            size,
            tmp,
            quant=quant,
            calibration=calibration_batches,
            optimize=req.optimize,
            **options,
        )
        rep.done(t)
        if isinstance(written, WriteOutcome):
            notes += written.notes
            quantization, delegation = written.quantization, written.delegation
        else:
            notes += written
            quantization, delegation = {}, {}
        if quantization.get("config", {}).get("format"):
            engine = f"onnxruntime-{quantization['config']['format']}"

        # Parity: run the written file in the runtime that will run it on the device.
        draft = replace(
            _manifest(
                req, spec, ckpt, final, tmp, quant, engine, count_params(fp32_model), notes, {}
            ),
            quantization=quantization,
            delegation=delegation or None,
        )
        candidate = run_candidate(tmp)
        parity = judge_logits(candidate)
        parity_dict = parity.to_dict()
        if int8_twin is not None:
            # The trace must reproduce the int8 PyTorch model itself (same kernels): near-exact.
            twin = _logits(torch_fn(int8_twin), parity_batches)
            parity_dict["vs_int8_pytorch_model"] = {
                "max_abs_logit_diff": float(np.abs(twin - candidate).max())
            }
        parity_dict["forced"] = bool(req.force and not parity.passed)
        if not parity.passed and not req.force:
            fallback = quantization.get("fallback", {}).get("summary")
            raise ParityError(
                f"{final.name} fails the parity gate ({parity.summary()}; the bar: {bar.describe()})"
                + (f"; {fallback}" if fallback else "")
                + ": not written; inspect the model, or pass --force to keep it anyway"
            )
        manifest = replace(
            draft, parity=parity_dict, sha256=sha256_file(tmp), size_bytes=tmp.stat().st_size
        )
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
        atomic_write_json(final.with_suffix(".json"), manifest.to_dict())
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(final, final.with_suffix(".json"), manifest, parity)


def _check_name_free(final: Path) -> None:
    """Refuse to overwrite a manifest that describes another artifact (e.g. NAME.pt vs NAME.onnx)."""
    import json

    mpath = final.with_suffix(".json")
    if not mpath.is_file():
        return
    try:
        other = json.loads(mpath.read_text()).get("file")
    except (OSError, ValueError, AttributeError):
        other = None
    if other and other != final.name:
        raise ConfigError(
            f"{mpath} already describes {other}: choose another --name for {final.name}"
        )


def _stem(ckpt_path: Path) -> str:
    return ckpt_path.parent.name if ckpt_path.name == "model.safetensors" else ckpt_path.stem


def _manifest(
    req,
    spec,
    ckpt,
    final: Path,
    tmp: Path,
    quant: str,
    engine: str | None,
    params: int,
    notes: list[str],
    parity: dict[str, Any],
) -> Manifest:
    origin = spec.origin
    return Manifest(
        format=req.format,
        precision=quant,
        arch=spec.arch,
        class_names=list(spec.class_names),
        input={
            "name": "input",
            "shape": [-1, 3, spec.input_size, spec.input_size],
            "dtype": "float32",
            "layout": "NCHW",
            "color": "RGB",
            "range": [0.0, 1.0],
            "normalization": f"inside the model (mean {list(spec.mean)}, std {list(spec.std)})",
        },
        file=final.name,
        sha256=sha256_file(tmp),
        size_bytes=tmp.stat().st_size,
        params=params,
        engine=engine,
        source={
            "checkpoint": str(ckpt.path),
            "checkpoint_sha256": ckpt.sha256,
            "kind": origin.get("kind"),
            "dataset": origin.get("dataset"),
            "source_domain": origin.get("source_domain"),
            "split_seed": origin.get("split_seed"),
            "val_fraction": origin.get("val_fraction"),
            "widths": "pruned" if spec.widths else None,
        },
        parity=parity,
        notes=list(notes),
        versions=_versions(),
    )


# Registration: each exporter module registers its formats (torch is imported when one runs).
from . import onnx as _onnx  # noqa: E402,F401
from . import torchscript as _torchscript  # noqa: E402,F401

# isort: split
# Registered after the others: the report lists formats in registration order.
from . import executorch as _executorch  # noqa: E402,F401
