"""Compression commands that produce new checkpoints: PTSQ int8 (here), pruning and distillation.

Every compressed checkpoint records its ``parent`` (path and sha256) in its spec's origin, so an
artifact can always be traced back to the fp32 model it came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgerobust.data import origin_split, spread_batches
from edgerobust.errors import ConfigError, ParityError
from edgerobust.models.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from edgerobust.progress import NullReporter, Reporter
from edgerobust.records import QuantizeRecord


@dataclass(frozen=True)
class QuantizeConfig:
    checkpoint: str
    engine: str = "x86"
    calib_batches: int = 16
    batch_size: int = 8
    out: str | None = None  # default: <checkpoint's run folder>-int8-<engine>
    data: str | None = None
    force: bool = False  # keep a model whose int8 agrees with fp32 below the export gate's bar
    keep_fp32: tuple[str, ...] = ()  # module names left in fp32 (e.g. the most sensitive layers)
    fallback: bool = True  # below the bar: keep the most sensitive layers in fp32 (as export)
    per_channel: bool = True  # per-channel int8 weights (False: the engine's default qconfig)
    bias_correction: bool = True  # correct fused biases for the weights' rounding
    clamp_activations: bool = True  # FX: int8 ranges of what ReLU6/Hardtanh let through
    rank_images: int = 32  # fallback ranking: the calibration images fp32 and int8 differ most on

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantize_checkpoint(cfg: QuantizeConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """PTSQ: fuse, calibrate on source training images, correct biases, save the calibrated state.

    Returns a record with int8 vs fp32 accuracy on the source validation split. Below the export
    gate's agreement bar the accuracy-aware fallback keeps the most sensitive layers in fp32
    (``cfg.fallback``); if that cannot meet the bar with most layers int8, nothing is written
    unless ``cfg.force``.
    """
    import torch

    from edgerobust.compress.quantize import check_engine, ptsq_scheme
    from edgerobust.exporters import DEFAULT_MIN_AGREEMENT
    from edgerobust.train import predictions, write_record

    rep = reporter or NullReporter()
    if cfg.calib_batches < 1 or cfg.batch_size < 1:
        raise ConfigError("--calib-batches and --batch-size must be >= 1")
    check_engine(cfg.engine)  # before any image is decoded
    src = load_checkpoint(cfg.checkpoint)
    if src.spec.quant:
        raise ConfigError(
            f"{src.path} is already int8 ({src.spec.quant['engine']}): quantize its fp32 parent"
        )
    _, images, split = origin_split(src.spec.origin, src.spec.input_size, cfg.data)
    val_idx = split.val
    batches = spread_batches(images, split.train, cfg.calib_batches, cfg.batch_size)
    build = _Builder(src.model, cfg, batches)
    t = rep.task(f"calibrate ({cfg.engine})", len(batches))
    cal, int8 = build(tuple(cfg.keep_fp32), progress=lambda i: rep.advance(t))
    rep.done(t)
    torch.backends.quantized.engine = cfg.engine
    p32, y = predictions(src.model, images, val_idx)
    p8, _ = predictions(int8, images, val_idx)
    agreement = float((p8 == p32).mean()) if len(y) else None
    fallback = None
    keep = tuple(cfg.keep_fp32)
    if agreement is not None and agreement < DEFAULT_MIN_AGREEMENT and cfg.fallback:

        def agreement_of(model: Any) -> float:
            torch.backends.quantized.engine = cfg.engine
            return float((predictions(model, images, val_idx)[0] == p32).mean())

        result, fallback = _fallback(
            build, cal, int8, src.model, rep, agreement, agreement_of, DEFAULT_MIN_AGREEMENT
        )
        if result.passed and result.kept_fp32:
            keep = keep + result.kept_fp32
            cal, int8 = build(keep)
            torch.backends.quantized.engine = cfg.engine
            p8, _ = predictions(int8, images, val_idx)
            agreement = float((p8 == p32).mean())
    n8 = n32 = len(y)
    c8, c32 = int((p8 == y).sum()), int((p32 == y).sum())
    warning = None
    if agreement is not None and agreement < DEFAULT_MIN_AGREEMENT:
        # The export parity gate's bar: below it the model is refused, as export refuses.
        problem = (
            f"int8 agrees with fp32 on only {agreement:.1%} of {len(y)} validation images "
            f"(the bar is {DEFAULT_MIN_AGREEMENT:.0%}; accuracy {c32 / max(n32, 1):.1%} -> "
            f"{c8 / max(n8, 1):.1%}): this model quantizes poorly"
            + (f"; {fallback['summary']}" if fallback else "")
        )
        if not cfg.force:
            raise ParityError(
                f"{problem}: not written; calibrate on more images (--calib-batches), train it "
                "longer, or pass --force to keep it anyway"
            )
        warning = f"{problem} (kept with --force)"
    out = (
        Path(cfg.out)
        if cfg.out
        else src.path.parent.with_name(f"{src.path.parent.name}-int8-{cfg.engine}")
    )
    spec = src.spec.__class__(
        **{
            **src.spec.__dict__,
            "quant": {
                "scheme": ptsq_scheme(src.model, keep),
                "engine": cfg.engine,
                "calibration_images": cal.images,
                "keep_fp32": list(keep),
                **cal.quant_spec(cfg.engine),
            },
        },
    ).with_origin(
        **{
            **src.spec.origin,
            "kind": "quantize",
            "parent": str(src.path),
            "parent_sha256": src.sha256,
        }
    )
    ckpt = save_checkpoint(out / CHECKPOINT_NAME, cal.prepared, spec)
    record = QuantizeRecord(
        checkpoint=str(ckpt),
        parent=str(src.path),
        engine=cfg.engine,
        calibration_images=cal.images,
        source_domain=src.spec.origin.get("source_domain"),
        val_n=n8,
        val_accuracy_int8=c8 / max(n8, 1),
        val_accuracy_fp32=c32 / max(n32, 1),
        top1_agreement=agreement,
        warning=warning,
        fallback=fallback,
        config=cfg.to_dict(),
    )
    return write_record(out, "quantize.json", record)


@dataclass
class _Builder:
    """int8 candidates of one model keeping some layers in fp32, each prepared, calibrated on
    the same images, bias-corrected and converted once (cached by the layers kept)."""

    model: Any
    cfg: QuantizeConfig
    batches: list[np.ndarray]
    cache: dict[tuple[str, ...], tuple[Any, Any]] = field(default_factory=dict)
    donor: Any = None  # the first FX candidate calibrated: the others copy its observers

    def __call__(
        self, keep: tuple[str, ...], progress: Callable[[int], None] | None = None
    ) -> tuple[Any, Any]:
        import torch

        from edgerobust.compress.quantize import calibrated_ptsq, convert_prepared

        if keep not in self.cache:
            cal = calibrated_ptsq(
                self.model,
                self.cfg.engine,
                self.batches,
                keep,
                per_channel=self.cfg.per_channel,
                bias_correction=self.cfg.bias_correction,
                clamp=self.cfg.clamp_activations,
                progress=progress,
                donor=self.donor,
            )
            if self.donor is None and isinstance(cal.prepared, torch.fx.GraphModule):
                self.donor = cal
            self.cache[keep] = (cal, convert_prepared(cal.prepared, self.cfg.engine))
        return self.cache[keep]


def _fallback(
    build: _Builder,
    cal: Any,
    int8: Any,
    fp32: Any,
    rep: Reporter,
    start: float,
    agreement_of: Callable[[Any], float],
    bar: float,
) -> tuple[Any, dict[str, Any]]:
    """The accuracy-aware fallback (:mod:`edgerobust.compress.fallback`) for PTSQ.

    Ranking is cheap: a layer's sensitivity is how much the mean squared logit error on the
    ranking images drops when that layer alone runs in fp32 inside the int8 model already built
    (:func:`~edgerobust.compress.quantize.float_islands`: no re-calibration, one forward pass of
    ``rank_images`` images per layer). The ranking images are the calibration images on which
    fp32 and int8 differ most (top-1 disagreements first), as for ONNX int8. The search measures
    real candidates: each is prepared with those layers kept in fp32, calibrated, bias-corrected
    and judged by top-1 agreement on the validation images, like the final model.
    """
    import torch

    from edgerobust.compress.fallback import fallback_search, most_different
    from edgerobust.compress.quantize import float_islands, quantized_layers

    layers = [layer.name for layer in quantized_layers(cal.prepared)]
    x = torch.from_numpy(np.concatenate(build.batches))

    def logits(model: Any, inputs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([model(inputs[i : i + 32]) for i in range(0, len(inputs), 32)])

    ref, got = logits(fp32, x), logits(int8, x)
    idx = torch.from_numpy(most_different(ref.numpy(), got.numpy(), build.cfg.rank_images))
    x_rank, ref_rank = x[idx], ref[idx]
    user = tuple(build.cfg.keep_fp32)
    t_rank = rep.task("fallback: rank layers", len(layers) + 1)
    t_try = rep.task("fallback: candidates", None)

    def error(kept: tuple[str, ...]) -> float:
        with float_islands(int8, cal, kept):
            out = logits(int8, x_rank)
        rep.advance(t_rank)
        return float((out - ref_rank).pow(2).mean())

    def agreement(kept: tuple[str, ...]) -> float:
        _, model = build(user + kept)
        rep.advance(t_try)
        return agreement_of(model)

    result = fallback_search(layers, error, agreement, bar=bar, start_agreement=start)
    rep.done(t_rank)
    rep.done(t_try)
    info = {
        **result.to_dict(),
        "ranked_on": f"{len(idx)} calibration images where fp32 and int8 differed most (mean "
        "squared logit error with the layer alone run in fp32 inside the int8 model)",
    }
    return result, info
