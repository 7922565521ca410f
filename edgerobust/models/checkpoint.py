"""Checkpoints: one ``.safetensors`` file = weights + the JSON spec that rebuilds the model.

The spec lives in the safetensors header (key ``edgerobust.spec``), so a checkpoint is one file
that cannot drift from its description, and loading it never executes pickle. Pruned models
carry their layer widths; PTSQ models carry the *prepared* state (fp32 weights plus the
calibrated observer statistics) and the engine, and are re-converted to int8 on load, which is
deterministic and needs no pickled quantized tensors.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgerobust.errors import CheckpointError
from edgerobust.models.build import IMAGENET_MEAN, IMAGENET_STD, build_model
from edgerobust.runtimes.manifest import atomic_write_bytes, sha256_file

SPEC_KEY = "edgerobust.spec"
SPEC_VERSION = 1
CHECKPOINT_NAME = "model.safetensors"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model, plus where it came from."""

    arch: str
    class_names: tuple[str, ...]
    input_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    widths: dict[str, list[int]] | None = None  # pruned models: {layer: [in, out]}
    # PTSQ: {"scheme": "ptsq-eager" | "ptsq-fx", "engine": ..., "keep_fp32": [module names],
    #        "weights": "per-channel" (absent: the engine's default qconfig), "bias_correction",
    #        "clamped_activations" (absent: False)}
    quant: dict[str, Any] | None = None
    origin: dict[str, Any] = field(default_factory=dict)  # how it was made (train/prune/...)
    spec_version: int = SPEC_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def precision(self) -> str:
        return "int8" if self.quant else "fp32"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        known = set(cls.__dataclass_fields__)
        d = {k: v for k, v in d.items() if k in known}
        for k in ("class_names", "mean", "std"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def with_origin(self, **origin: Any) -> ModelSpec:
        return replace(self, origin=origin)


@dataclass
class Checkpoint:
    """A loaded checkpoint: the ready-to-run model (eval mode), its spec, path and sha256."""

    model: nn.Module
    spec: ModelSpec
    path: Path
    sha256: str


def resolve(path: str | Path) -> Path:
    """Accept a checkpoint file or a run folder holding ``model.safetensors``."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path} (pass a .safetensors file from 'edgerobust train' "
            "or 'compress', or its run folder)"
        )
    return path


def save_checkpoint(path: str | Path, model: nn.Module, spec: ModelSpec) -> Path:
    """Write weights + spec atomically; returns the path."""
    from safetensors.torch import save

    raw = model.state_dict()
    # Quantized tensors (a converted int8 model) cannot be stored; callers save the prepared model.
    # A converted model's state also holds non-tensors (packed-params dtypes), so check first.
    bad = [k for k, v in raw.items() if not torch.is_tensor(v) or v.is_quantized]
    if bad:
        raise TypeError(f"save the prepared (observed) model, not the converted one: {bad[0]}")
    # FX-prepared models share one observer between some nodes; safetensors refuses shared
    # storage, so a repeated tensor is stored as a copy (loading fills the shared one twice).
    state, seen = {}, set()
    for k, v in raw.items():
        v = v.detach().cpu().contiguous()
        key = v.untyped_storage().data_ptr()
        state[k] = v.clone() if v.nbytes and key in seen else v
        seen.add(key)
    blob = save(state, metadata={SPEC_KEY: json.dumps(spec.to_dict())})
    path = Path(path)
    atomic_write_bytes(path, blob)
    return path


def read_spec(path: str | Path) -> ModelSpec:
    """The spec of a checkpoint, without loading its weights."""
    from safetensors import safe_open

    path = resolve(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not an edgerobust checkpoint (a .safetensors file with a spec): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    if SPEC_KEY not in meta:
        raise CheckpointError(
            f"{path} has no edgerobust spec: it was not written by edgerobust; to start from "
            "foreign weights use 'edgerobust train --weights PATH'"
        )
    try:
        return ModelSpec.from_dict(json.loads(meta[SPEC_KEY]))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # not JSON, or wrong shape
        raise CheckpointError(f"{path}: its spec is damaged ({exc})") from exc


def load_checkpoint(path: str | Path, *, device: str = "cpu") -> Checkpoint:
    """Rebuild the model from its spec and load the weights (int8 models come back converted)."""
    from safetensors.torch import load_file

    path = resolve(path)
    spec = read_spec(path)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"cannot read weights from {path}: {exc}") from exc
    model = build_model(
        spec.arch, spec.num_classes, widths=spec.widths, mean=spec.mean, std=spec.std
    )
    if spec.quant:
        from edgerobust.compress.quantize import (
            PER_CHANNEL,
            convert_prepared,
            prepare_ptsq,
            ptsq_scheme,
        )

        keep = tuple(spec.quant.get("keep_fp32", ()))
        scheme = spec.quant.get("scheme", "ptsq-eager")
        if scheme != ptsq_scheme(model, keep):
            raise CheckpointError(
                f"{path} was quantized with {scheme}, which this version of edgerobust does not "
                f"use for {spec.arch}: quantize its fp32 parent again"
            )
        # Corrected biases are part of the stored state; the weights' qconfig and the graph
        # (clamped activations) are not: checkpoints written before those keys reload as made.
        per_channel = spec.quant.get("weights") == PER_CHANNEL
        clamp = bool(spec.quant.get("clamped_activations", False))
        model = prepare_ptsq(
            model, spec.quant["engine"], keep, per_channel=per_channel, clamp=clamp
        )
        _load_state(model, state, path)
        model = convert_prepared(model, spec.quant["engine"])
    else:
        _load_state(model, state, path)
        model = model.to(device)
    model.eval()
    return Checkpoint(model, spec, path, sha256_file(path))


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(
            f"{path}: weights do not match the spec's architecture ({first})"
        ) from exc
