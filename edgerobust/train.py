"""Fine-tune a baseline on the source domain (paper, section 4).

Defaults are the paper's: SGD momentum 0.9, fixed lr 1e-4, batch 8, 100 epochs, keep the best
validation checkpoint. The run folder holds ``model.safetensors`` (best), ``last.safetensors``
(resume point), ``split.json`` and ``train.json``; rerunning the same command resumes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgerobust.data import (
    DEFAULT_SEED,
    DEFAULT_VAL_FRACTION,
    Domain,
    DomainDataset,
    Images,
    Split,
    decode_domain,
    open_dataset,
)
from edgerobust.errors import ConfigError
from edgerobust.models.build import count_params, create_model
from edgerobust.models.checkpoint import CHECKPOINT_NAME, ModelSpec, save_checkpoint
from edgerobust.progress import NullReporter, Reporter
from edgerobust.records import TrainRecord
from edgerobust.runtimes.manifest import atomic_write_json
from edgerobust.runtimes.preprocess import to_input


@dataclass(frozen=True)
class TrainConfig:
    data: str
    source: str
    arch: str = "resnet18"
    out: str = "runs/train"
    weights: str = "none"
    epochs: int = 100
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 8
    image_size: int = 224
    augment: bool = False
    head_epochs: int = 0
    freeze_bn: bool = False
    seed: int = 1
    split_seed: int = DEFAULT_SEED
    val_fraction: float = DEFAULT_VAL_FRACTION
    device: str = "auto"

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if not 0 <= self.head_epochs <= self.epochs:  # all of them: a linear probe
            raise ConfigError(
                f"--head-epochs must be in [0, --epochs], got {self.head_epochs} of {self.epochs}"
            )
        if not 0 < self.lr < 10:
            raise ConfigError(f"--lr must be in (0, 10), got {self.lr}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not 16 <= self.image_size <= 1024:
            raise ConfigError(f"--image-size must be in [16, 1024], got {self.image_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def indexed_batches(
    images: Images,
    indices: np.ndarray,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    augment: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Like :func:`batches`, also yielding each batch's image indices (for per-image caches)."""
    idx = np.asarray([i for i in indices if images.ok[i]], dtype=np.int64)
    if shuffle_seed is not None:
        rng = np.random.default_rng(shuffle_seed)
        idx = idx[rng.permutation(len(idx))]
    else:
        rng = None
    for start in range(0, len(idx), batch_size):
        sel = (
            np.sort(idx[start : start + batch_size])
            if shuffle_seed is None
            else idx[start : start + batch_size]
        )
        x = to_input(np.asarray(images.pixels[sel]))
        if augment and rng is not None:
            x = _augment(x, rng)
        yield sel, x, images.labels[sel]


def batches(
    images: Images,
    indices: np.ndarray,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    augment: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Float32 [0, 1] NCHW batches and labels; a fixed shuffle per (seed, epoch) for resumability."""
    for _, x, y in indexed_batches(
        images, indices, batch_size, shuffle_seed=shuffle_seed, augment=augment
    ):
        yield x, y


def _augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Horizontal flip and a small random shift (pad 8 %, crop): cheap, label-preserving."""
    flip = rng.random(len(x)) < 0.5
    x[flip] = x[flip, :, :, ::-1]
    n, _, h, w = x.shape
    pad = max(1, h // 12)
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
    out = np.empty_like(x)
    for i in range(n):
        dy, dx = rng.integers(0, 2 * pad + 1, 2)
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    return out


@torch.inference_mode()
def predictions(
    model: nn.Module,
    images: Images,
    indices,
    batch_size: int = 64,
    device: torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, true) classes of ``model`` on ``images[indices]`` (unreadable images skipped)."""
    device = device or torch.device("cpu")
    model.eval()
    preds, labels = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for x, y in batches(images, np.asarray(indices), batch_size):
        preds.append(model(torch.from_numpy(x).to(device)).argmax(1).cpu().numpy())
        labels.append(np.asarray(y, np.int64))
    return np.concatenate(preds), np.concatenate(labels)


def accuracy(
    model: nn.Module,
    images: Images,
    indices,
    batch_size: int = 64,
    device: torch.device | None = None,
) -> tuple[int, int]:
    """(correct, n) of ``model`` on ``images[indices]`` (unreadable images skipped)."""
    pred, y = predictions(model, images, indices, batch_size, device)
    return int((pred == y).sum()), len(y)


def _config_key(cfg: TrainConfig) -> str:
    d = cfg.to_dict()
    d.pop("out")
    d.pop("device")
    # Raising --epochs continues the same run (the schedule is epoch-independent: fixed lr).
    d.pop("epochs")
    for k in ("head_epochs", "freeze_bn"):
        if not d[k]:
            d.pop(k)  # runs from before the option keep resuming
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def train(cfg: TrainConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Train and return the run record (also written to ``OUT/train.json``)."""
    cfg.validate()
    rep = reporter or NullReporter()
    out = Path(cfg.out)
    src = SourceSplit.open(cfg.data, cfg.source, cfg.split_seed, cfg.val_fraction)
    images = src.decode(cfg.image_size, rep)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model, weights_info = create_model(cfg.arch, len(src.classes), weights=cfg.weights)
    spec = ModelSpec(
        arch=cfg.arch,
        class_names=src.classes,
        input_size=cfg.image_size,
        **normalization(model),
    )
    origin = {"kind": "train", **src.origin(), "weights": weights_info, "config": cfg.to_dict()}
    result = src.fit(
        model,
        images,
        FitConfig.of(cfg),
        out=out,
        spec=spec,
        origin=origin,
        key=_config_key(cfg),
        device=device,
        reporter=rep,
    )
    split = src.split
    record = TrainRecord(
        checkpoint=str(out / CHECKPOINT_NAME),
        arch=cfg.arch,
        params=count_params(model),
        source_domain=cfg.source,
        classes=list(src.classes),
        split={
            "seed": cfg.split_seed,
            "val_fraction": cfg.val_fraction,
            "n_train": len(split.train),
            "n_val": len(split.val),
        },
        best_epoch=result.best_epoch,
        val_accuracy=result.best_acc,
        val_n=result.val_n,
        history=result.history,
        device=str(device),
        seconds_this_session=result.seconds,
        config=cfg.to_dict(),
        weights=weights_info,
    )
    return write_record(out, "train.json", record)


def normalization(model: nn.Module) -> dict[str, tuple[float, ...]]:
    """The mean/std a :class:`~edgerobust.models.build.Classifier` carries, for its spec."""
    norm = model.normalize
    return {
        "mean": tuple(round(v, 6) for v in norm.mean.flatten().tolist()),
        "std": tuple(round(v, 6) for v in norm.std.flatten().tolist()),
    }


def decode_for_training(domain: Domain, size: int, reporter: Reporter) -> Images:
    """Decode (or load from cache) one domain with a progress bar; logs unreadable files."""
    t = reporter.task(f"decode {domain.name}", len(domain))
    images = decode_domain(domain, size, progress=lambda d, n: reporter.advance(t, d, completed=d))
    reporter.done(t)
    if images.failures:
        reporter.log(f"skipping {len(images.failures)} unreadable image(s) in {domain.name}")
    return images


def split_origin(data: str | Path, split: Split) -> dict[str, Any]:
    """The part of a spec's origin that lets export/quantize find the model's source images."""
    return {
        "dataset": str(Path(data).resolve()),
        "source_domain": split.domain,
        "split_seed": split.seed,
        "val_fraction": split.val_fraction,
        "n_train": len(split.train),
        "n_val": len(split.val),
    }


# ----------------------------------------------------------------------------- the loop

# An objective maps (model, x, y, image indices of the batch) to a scalar loss. The indices let
# knowledge distillation look up cached teacher logits (see edgerobust.compress.distill).
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, np.ndarray], torch.Tensor]


# --------------------------------------------------------------------------- the shared skeleton
# train, prune and distill all: open the source domain's seeded split, fit on its training part
# (keeping the best validation epoch), and write one typed record. Each states only what differs.


@dataclass(frozen=True)
class SourceSplit:
    """A source domain of a dataset and its seeded train/val split, as every fitting run opens it."""

    data: str | Path
    dataset: DomainDataset
    domain: Domain
    split: Split

    @classmethod
    def open(
        cls,
        data: str | Path,
        source: str,
        split_seed: int = DEFAULT_SEED,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        *,
        class_names: Sequence[str] | None = None,
        mismatch: Callable[[tuple[str, ...]], str] | None = None,
    ) -> SourceSplit:
        """Open ``data`` and split ``source``; with ``class_names`` (a parent checkpoint's), a
        dataset with other classes is a :class:`ConfigError` (``mismatch(classes)`` says why)."""
        ds = open_dataset(data)
        if class_names is not None and tuple(ds.classes) != tuple(class_names):
            raise ConfigError(mismatch(ds.classes) if mismatch else "class lists differ")
        domain = ds.domain(source)
        return cls(data, ds, domain, ds.split(source, split_seed, val_fraction))

    @staticmethod
    def inherited(origin: dict[str, Any]) -> tuple[int, float]:
        """(split_seed, val_fraction) a parent checkpoint was trained with: its children fit and
        validate on the same images."""
        return (
            origin.get("split_seed", DEFAULT_SEED),
            origin.get("val_fraction", DEFAULT_VAL_FRACTION),
        )

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.dataset.classes)

    def origin(self) -> dict[str, Any]:
        return split_origin(self.data, self.split)

    def decode(self, size: int, reporter: Reporter) -> Images:
        return decode_for_training(self.domain, size, reporter)

    def fit(
        self,
        model: nn.Module,
        images: Images,
        cfg: FitConfig,
        *,
        out: Path,
        spec: ModelSpec,
        origin: dict[str, Any],
        key: str,
        device: torch.device,
        objective: Objective | None = None,
        reporter: Reporter | None = None,
    ) -> FitResult:
        """Write ``OUT/split.json`` and :func:`fit` on the split (best epoch kept)."""
        self.begin(out)
        return fit(
            model,
            images,
            self.split.train,
            self.split.val,
            cfg,
            out=out,
            spec=spec,
            origin=origin,
            key=key,
            device=device,
            objective=objective,
            reporter=reporter,
        )

    def begin(self, out: Path) -> None:
        """Create ``OUT`` and record which images are validation images (``split.json``)."""
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "split.json", self.split.to_dict(self.domain))


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    images: Images,
    indices: Sequence[int],
    batch_size: int = 64,
    device: torch.device | None = None,
) -> None:
    """Re-estimate every batch-norm layer's running statistics on ``images[indices]`` (their
    average over all batches, not an exponential one); weights are untouched. For a model whose
    layers see other inputs than the statistics were measured on (after pruning)."""
    device = device or torch.device("cpu")
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = model.training
    model.train()
    for x, _ in batches(images, np.asarray(indices), batch_size):
        model(torch.from_numpy(x).to(device))
    for m, mom in zip(bns, momenta, strict=True):
        m.momentum = mom
    model.train(was_training)


def head_parameters(model: nn.Module) -> set[nn.Parameter]:
    """The classifier head's parameters: the last linear layer (every registered family ends in
    one; its input is the pooled features)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError("--head-epochs needs a model that ends in a linear classifier")
    return set(linears[-1].parameters())


def write_record(out: Path, name: str, record: Any) -> dict[str, Any]:
    """Write a typed record (:mod:`edgerobust.records`) as ``OUT/<name>`` and return its dict."""
    d = record.to_dict()
    atomic_write_json(out / name, d)
    return d


@dataclass(frozen=True)
class FitConfig:
    """How to optimize: what train, prune retraining and distillation share.

    The learning rate follows a step schedule: ``lr * lr_gamma ** k`` from epoch ``m_k`` on
    (0-based), for ``lr_milestones = (m_1, m_2, ...)`` - what ``torch.optim.lr_scheduler.MultiStepLR``
    does, computed from the epoch number so that a resumed run lands on the same rate.
    """

    epochs: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 8
    augment: bool = False
    seed: int = 1
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 1.0
    head_epochs: int = 0  # the first epochs train the classifier head only (LP-FT)
    head_lr: float = 0.01
    freeze_bn: bool = False  # batch-norm layers keep their statistics (eval mode) throughout

    @classmethod
    def of(cls, cfg: Any, **overrides: Any) -> FitConfig:
        """The fitting settings of a command's config (train, prune, distill: same field names),
        with ``overrides`` (e.g. the learning rate schedule)."""
        keys = ("epochs", "lr", "momentum", "weight_decay", "batch_size", "augment", "seed")
        optional = {k: getattr(cfg, k) for k in ("head_epochs", "freeze_bn") if hasattr(cfg, k)}
        return cls(**{**{k: getattr(cfg, k) for k in keys}, **optional, **overrides})

    def head_only(self, epoch: int) -> bool:
        """Whether 0-based ``epoch`` trains the head alone (backbone frozen, its batch-norm
        statistics kept)."""
        return epoch < self.head_epochs

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``."""
        return self.lr * self.lr_gamma ** sum(1 for m in self.lr_milestones if epoch >= m)


@dataclass(frozen=True)
class FitResult:
    history: list[dict[str, Any]]
    best_acc: float
    best_epoch: int
    val_n: int
    seconds: float


def fit(
    model: nn.Module,
    images: Images,
    train_idx: Sequence[int],
    val_idx: Sequence[int],
    cfg: FitConfig,
    *,
    out: Path,
    spec: ModelSpec,
    origin: dict[str, Any],
    key: str,
    device: torch.device,
    objective: Objective | None = None,
    reporter: Reporter | None = None,
) -> FitResult:
    """Train ``model`` in place with SGD; keep the best-validation checkpoint at ``OUT/model.safetensors``.

    ``OUT/last.safetensors`` holds the resume point (weights, optimizer state, history) under
    ``key``: rerunning with the same key continues where the last run stopped; another key
    starts over. The best checkpoint's spec is ``spec`` with ``origin`` plus best epoch and val
    accuracy. ``objective`` defaults to cross-entropy on the labels.
    """
    rep = reporter or NullReporter()
    model.to(device)
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    loss_fn = nn.CrossEntropyLoss()
    if objective is None:

        def objective(m: nn.Module, x: torch.Tensor, y: torch.Tensor, _sel: np.ndarray):
            return loss_fn(m(x), y)

    history: list[dict[str, Any]] = []
    start_epoch, best_acc, best_epoch = 0, -1.0, -1
    last = out / "last.safetensors"
    if last.is_file():
        state = _load_resume(last, key)
        if state is not None:
            model.load_state_dict(state["model"])
            opt_state = opt.state_dict()
            opt_state["state"] = state["optim_state"]
            opt.load_state_dict(opt_state)
            start_epoch, best_acc, best_epoch, history = (
                state["epoch"],
                state["best_acc"],
                state["best_epoch"],
                state["history"],
            )
            rep.log(f"resuming {out} at epoch {start_epoch + 1}/{cfg.epochs}")

    out.mkdir(parents=True, exist_ok=True)
    train_idx, val_idx = np.asarray(train_idx), np.asarray(val_idx)
    n_batches = -(-int(images.ok[train_idx].sum()) // cfg.batch_size)
    t0 = time.perf_counter()
    head = head_parameters(model) if cfg.head_epochs else set()
    for epoch in range(start_epoch, cfg.epochs):
        head_only = cfg.head_only(epoch)
        lr = cfg.head_lr if head_only else cfg.lr_at(epoch - cfg.head_epochs)
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        if cfg.head_epochs:
            # LP-FT (Kumar et al., ICLR 2022): a linear probe first, so that fine-tuning starts
            # from a fitted head and distorts the pretrained features less (better off-domain)
            for p in model.parameters():
                p.requires_grad_(not head_only or p in head)
        if head_only or cfg.freeze_bn:
            # frozen statistics: pretrained running mean/var are used as they are (train mode
            # would replace them with small-batch source statistics); the affine weights train
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        task = rep.task(f"epoch {epoch + 1}/{cfg.epochs}", n_batches)
        total_loss, seen = 0.0, 0
        for sel, x, y in indexed_batches(
            images,
            train_idx,
            cfg.batch_size,
            shuffle_seed=cfg.seed * 100003 + epoch,
            augment=cfg.augment,
        ):
            xb, yb = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            opt.zero_grad(set_to_none=True)
            loss = objective(model, xb, yb, sel)
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(y)
            seen += len(y)
            rep.advance(task, loss=f"{total_loss / seen:.3f}")
        rep.done(task)
        correct, n = accuracy(model, images, val_idx, device=device)
        val_acc = correct / max(n, 1)
        entry = {
            "epoch": epoch + 1,
            "loss": total_loss / max(seen, 1),
            "val_accuracy": val_acc,
            "val_n": n,
        }
        if cfg.lr_milestones or cfg.head_epochs:  # a constant rate is in the config already
            entry["lr"] = lr
        if head_only:
            entry["head_only"] = True
        history.append(entry)
        rep.log(
            f"epoch {epoch + 1}: loss {total_loss / max(seen, 1):.4f}  val acc {val_acc:.3f} ({correct}/{n})"
        )
        if val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch + 1
            save_checkpoint(
                out / CHECKPOINT_NAME,
                model,
                spec.with_origin(**origin, best_epoch=best_epoch, val_accuracy=best_acc, val_n=n),
            )
        _save_resume(last, model, opt, key, epoch + 1, best_acc, best_epoch, history)
    for p in model.parameters():
        p.requires_grad_(True)
    return FitResult(
        history=history,
        best_acc=best_acc,
        best_epoch=best_epoch,
        val_n=history[-1]["val_n"] if history else 0,
        seconds=round(time.perf_counter() - t0, 2),
    )


def _save_resume(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    key: str,
    epoch: int,
    best_acc: float,
    best_epoch: int,
    history: list,
) -> None:
    from safetensors.torch import save

    from edgerobust.runtimes.manifest import atomic_write_bytes

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for pid, st in opt.state_dict()["state"].items():
        for name, val in st.items():
            if torch.is_tensor(val):
                tensors[f"optim.{pid}.{name}"] = val.detach().cpu().contiguous()
    meta = {
        "key": key,
        "epoch": str(epoch),
        "best_acc": repr(best_acc),
        "best_epoch": str(best_epoch),
        "history": json.dumps(history),
    }
    atomic_write_bytes(path, save(tensors, metadata=meta))


def _load_resume(path: Path, key: str) -> dict[str, Any] | None:
    """The resume state, or None if it belongs to another configuration or is unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                return None
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open API
    except Exception:
        return None
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    optim_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            optim_state.setdefault(int(pid), {})[name] = v
    return {
        "model": model,
        "optim_state": optim_state,
        "epoch": int(meta["epoch"]),
        "best_acc": float(meta["best_acc"]),
        "best_epoch": int(meta["best_epoch"]),
        "history": json.loads(meta["history"]),
    }
