"""Vanilla knowledge distillation (Hinton et al. 2014; the paper's section 3.1.2, eqs. 2-5).

A fine-tuned baseline (the teacher, frozen in eval mode) teaches a smaller ResNet (the student)
on the source domain. Settings default to the paper's: alpha 0.2, tau 10, SGD momentum 0.9,
weight decay 1e-3, batch 8, 100 epochs, the learning rate divided by 5 at 70 % of the epochs.
The paper does not state the base learning rate; the default is 1e-3 (its rate for the smaller
ResNets' retraining) and ``--lr`` overrides it.

The student starts from ImageNet weights as in the paper (``--student-weights imagenet``), or
from ``none`` / a local weight file. It gets a new head for the teacher's classes.

When augmentation is off the teacher sees the same pixels every epoch, so its logits are computed
once per training image and cached; with augmentation they are computed per batch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgerobust.data import Images
from edgerobust.errors import ConfigError
from edgerobust.models import get_arch
from edgerobust.models.build import count_params, create_model
from edgerobust.models.checkpoint import CHECKPOINT_NAME, ModelSpec, load_checkpoint
from edgerobust.progress import NullReporter, Reporter
from edgerobust.records import DistillRecord

LR_DECAY_AT = 0.7  # "divided the base LR by 5 at epoch 70" (of 100)
LR_DECAY = 0.2


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    tau: float,
) -> torch.Tensor:
    """The paper's eq. 5: ``alpha * tau^2 * L_KD + (1 - alpha) * L_CE``, averaged over the batch.

    - eq. 2: soft targets ``p = softmax(t / tau)`` (teacher), ``q = softmax(s / tau)`` (student);
    - eq. 3: ``L_KD = -sum_i p_i log q_i``, the cross-entropy between the soft targets. It is
      used as written rather than ``KL(p || q)``: the two differ by the teacher's entropy, a
      constant for the student, so gradients are identical, and the logged loss is the paper's;
    - eq. 4: ``L_CE = -sum_i y_i log q_i(1)``, the usual cross-entropy with the labels (tau = 1);
    - the ``tau^2`` factor keeps the soft-target gradients' scale independent of ``tau``.
    """
    log_q = F.log_softmax(student_logits / tau, dim=1)
    p = F.softmax(teacher_logits.to(student_logits.dtype) / tau, dim=1)
    l_kd = -(p * log_q).sum(dim=1).mean()
    l_ce = F.cross_entropy(student_logits, labels)
    return alpha * tau**2 * l_kd + (1.0 - alpha) * l_ce


@dataclass(frozen=True)
class DistillConfig:
    teacher: str
    data: str
    source: str
    out: str
    student: str = "resnet18"
    student_weights: str = "imagenet"  # imagenet | none | PATH
    alpha: float = 0.2
    tau: float = 10.0
    epochs: int = 100
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-3
    batch_size: int = 8
    augment: bool = False
    head_epochs: int = 0  # LP-FT: the student's new head trains alone first (KD objective)
    freeze_bn: bool = False  # batch-norm statistics stay as the student's pretrained ones
    image_size: int | None = None  # None: the teacher's; another value is an error
    seed: int = 1
    device: str = "auto"

    def validate(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"--alpha must be in [0, 1], got {self.alpha}")
        if not self.tau > 0:
            raise ConfigError(f"--tau must be > 0, got {self.tau}")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if not 0 <= self.head_epochs < self.epochs:
            raise ConfigError(
                f"--head-epochs must be in [0, --epochs), got {self.head_epochs} of {self.epochs}"
            )
        if not 0 < self.lr < 10:
            raise ConfigError(f"--lr must be in (0, 10), got {self.lr}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        get_arch(self.student)  # unknown names fail here, before anything is loaded

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.inference_mode()
def teacher_logits(
    teacher: nn.Module,
    images: Images,
    indices,
    device: torch.device,
    batch_size: int = 64,
) -> dict[int, np.ndarray]:
    """``{image index: logits}`` of the frozen teacher on un-augmented images."""
    from edgerobust.train import indexed_batches

    teacher.eval()
    cache: dict[int, np.ndarray] = {}
    for sel, x, _ in indexed_batches(images, np.asarray(indices), batch_size):
        logits = teacher(torch.from_numpy(x).to(device)).float().cpu().numpy()
        cache.update(zip(sel.tolist(), logits, strict=True))
    return cache


def distill(cfg: DistillConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Train a student from a teacher checkpoint; return the run record.

    Writes ``OUT/model.safetensors`` (best validation epoch), ``OUT/last.safetensors`` (resume
    point: rerunning the same command continues) and ``OUT/distill.json`` (the record).
    """
    from edgerobust.train import (
        FitConfig,
        SourceSplit,
        accuracy,
        normalization,
        pick_device,
        write_record,
    )

    cfg.validate()
    rep = reporter or NullReporter()
    teacher_ckpt = load_checkpoint(cfg.teacher)
    tspec = teacher_ckpt.spec
    if tspec.quant:
        raise ConfigError(
            f"teacher {teacher_ckpt.path} is int8 ({tspec.quant['engine']}): distill from its "
            f"fp32 parent ({tspec.origin.get('parent', '?')})"
        )
    if cfg.image_size is not None and cfg.image_size != tspec.input_size:
        raise ConfigError(
            f"student input size {cfg.image_size} differs from the teacher's {tspec.input_size}: "
            "teacher and student must see the same images (drop --image-size)"
        )
    src = SourceSplit.open(
        cfg.data,
        cfg.source,
        *SourceSplit.inherited(tspec.origin),
        class_names=tspec.class_names,
        mismatch=lambda classes: _class_difference(tspec.class_names, classes, cfg.data),
    )
    tsource = tspec.origin.get("source_domain")
    if tsource and tsource != cfg.source:
        rep.log(f"note: the teacher was trained on {tsource!r}, the student on {cfg.source!r}")
    split = src.split

    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    student, weights_info = create_model(cfg.student, len(src.classes), weights=cfg.student_weights)
    teacher = teacher_ckpt.model.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    images = src.decode(tspec.input_size, rep)
    ct, nt = accuracy(teacher, images, split.val, device=device)
    cache: dict[int, np.ndarray] | None = None
    if not cfg.augment:
        t = rep.task("teacher logits", None)
        cache = teacher_logits(teacher, images, split.train, device)
        rep.done(t)

    def objective(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, sel: np.ndarray
    ) -> torch.Tensor:
        if cache is not None:
            t_logits = torch.from_numpy(np.stack([cache[int(i)] for i in sel])).to(x.device)
        else:
            with torch.no_grad():
                t_logits = teacher(x)
        return kd_loss(model(x), t_logits, y, cfg.alpha, cfg.tau)

    params_teacher = count_params(teacher)
    params_student = count_params(student)
    spec = ModelSpec(
        arch=cfg.student,
        class_names=tspec.class_names,
        input_size=tspec.input_size,
        **normalization(student),  # the student's family's, not the teacher's
    )
    # what the student is, recorded both in its checkpoint's origin and in the run record
    kd = {
        "teacher": str(teacher_ckpt.path),
        "teacher_sha256": teacher_ckpt.sha256,
        "teacher_arch": tspec.arch,
        "student_arch": cfg.student,
        "weights": weights_info,
        "alpha": cfg.alpha,
        "tau": cfg.tau,
        "params_teacher": params_teacher,
        "params_student": params_student,
        "compression_rate": 1.0 - params_student / params_teacher,
    }
    origin = {"kind": "distill", **src.origin(), **kd, "config": cfg.to_dict()}
    out = Path(cfg.out)
    result = src.fit(
        student,
        images,
        FitConfig.of(cfg, lr_milestones=(round(LR_DECAY_AT * cfg.epochs),), lr_gamma=LR_DECAY),
        out=out,
        spec=spec,
        origin=origin,
        key=_resume_key(cfg, teacher_ckpt.sha256),
        device=device,
        objective=objective,
        reporter=rep,
    )
    record = DistillRecord(
        checkpoint=str(out / CHECKPOINT_NAME),
        **kd,
        teacher_logits_cached=cache is not None,
        source_domain=cfg.source,
        classes=list(src.classes),
        val_accuracy_teacher=ct / max(nt, 1),
        best_epoch=result.best_epoch,
        val_accuracy=result.best_acc,
        val_n=result.val_n,
        history=result.history,
        device=str(device),
        seconds_this_session=result.seconds,
        config=cfg.to_dict(),
    )
    return write_record(out, "distill.json", record)


def _resume_key(cfg: DistillConfig, teacher_sha: str) -> str:
    d = cfg.to_dict()
    for k in ("out", "device", "teacher", "data"):
        d.pop(k)
    d.update(teacher_sha256=teacher_sha, kind="distill")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _class_difference(teacher: tuple[str, ...], data: tuple[str, ...], root: str) -> str:
    only_t = [c for c in teacher if c not in data]
    only_d = [c for c in data if c not in teacher]
    if only_t or only_d:
        what = f"only the teacher has {only_t[:3] or '-'}, only the dataset has {only_d[:3] or '-'}"
    else:
        what = "the same names in another order"
    return (
        f"teacher and student class lists differ ({what}; the student takes {root}'s classes): "
        "distill on the dataset the teacher was trained on"
    )
