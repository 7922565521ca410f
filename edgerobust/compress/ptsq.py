"""Compression commands that produce new checkpoints: PTSQ int8 (here), pruning and distillation.

Every compressed checkpoint records its ``parent`` (path and sha256) in its spec's origin, so an
artifact can always be traced back to the fp32 model it came from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantize_checkpoint(cfg: QuantizeConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """PTSQ: fuse, calibrate on source training images, save the calibrated state.

    Returns a record with int8 vs fp32 accuracy on the source validation split.
    """
    import torch

    from edgerobust.compress.quantize import (
        calibrate,
        check_engine,
        convert_prepared,
        prepare_ptsq,
        ptsq_scheme,
    )
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
    keep = tuple(cfg.keep_fp32)
    prepared = prepare_ptsq(src.model, cfg.engine, keep)
    t = rep.task(f"calibrate ({cfg.engine})", len(batches))
    n_cal = calibrate(prepared, batches, progress=lambda i: rep.advance(t))
    rep.done(t)
    int8 = convert_prepared(prepared, cfg.engine)
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
                "calibration_images": n_cal,
                "keep_fp32": list(keep),
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
    torch.backends.quantized.engine = cfg.engine
    p8, y = predictions(int8, images, val_idx)
    p32, _ = predictions(src.model, images, val_idx)
    n8 = n32 = len(y)
    c8, c32 = int((p8 == y).sum()), int((p32 == y).sum())
    agreement = float((p8 == p32).mean()) if len(y) else None
    warning = None
    if agreement is not None and agreement < DEFAULT_MIN_AGREEMENT:
        # The export parity gate's bar: below it the model is refused, as export refuses.
        problem = (
            f"int8 agrees with fp32 on only {agreement:.1%} of {len(y)} validation images "
            f"(the bar is {DEFAULT_MIN_AGREEMENT:.0%}; accuracy {c32 / max(n32, 1):.1%} -> "
            f"{c8 / max(n8, 1):.1%}): this model quantizes poorly"
        )
        if not cfg.force:
            raise ParityError(
                f"{problem}: not written; calibrate on more images (--calib-batches), train it "
                "longer, or pass --force to keep it anyway"
            )
        warning = f"{problem} (kept with --force)"
    ckpt = save_checkpoint(out / CHECKPOINT_NAME, prepared, spec)
    record = QuantizeRecord(
        checkpoint=str(ckpt),
        parent=str(src.path),
        engine=cfg.engine,
        calibration_images=n_cal,
        source_domain=src.spec.origin.get("source_domain"),
        val_n=n8,
        val_accuracy_int8=c8 / max(n8, 1),
        val_accuracy_fp32=c32 / max(n32, 1),
        top1_agreement=agreement,
        warning=warning,
        config=cfg.to_dict(),
    )
    return write_record(out, "quantize.json", record)
