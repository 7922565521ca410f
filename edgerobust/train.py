"""Fine-tune a baseline on the source domain (paper, section 4).

Defaults are the paper's: SGD momentum 0.9, fixed lr 1e-4, batch 8, 100 epochs, keep the best
validation checkpoint. The run folder holds ``model.safetensors`` (best), ``last.safetensors``
(resume point), ``split.json`` and ``train.json``; rerunning the same command resumes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgerobust.checkpoint import CHECKPOINT_NAME, ModelSpec, save_checkpoint
from edgerobust.data import DEFAULT_SEED, DEFAULT_VAL_FRACTION, Images, decode_domain, open_dataset
from edgerobust.errors import ConfigError
from edgerobust.models import count_params, create_model
from edgerobust.progress import NullReporter, Reporter
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
    seed: int = 1
    split_seed: int = DEFAULT_SEED
    val_fraction: float = DEFAULT_VAL_FRACTION
    device: str = "auto"

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
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


def batches(
    images: Images,
    indices: np.ndarray,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    augment: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Float32 [0, 1] NCHW batches and labels; a fixed shuffle per (seed, epoch) for resumability."""
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
        yield x, images.labels[sel]


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
def accuracy(
    model: nn.Module,
    images: Images,
    indices,
    batch_size: int = 64,
    device: torch.device | None = None,
) -> tuple[int, int]:
    """(correct, n) of ``model`` on ``images[indices]`` (unreadable images skipped)."""
    device = device or torch.device("cpu")
    model.eval()
    correct = n = 0
    for x, y in batches(images, np.asarray(indices), batch_size):
        pred = model(torch.from_numpy(x).to(device)).argmax(1).cpu().numpy()
        correct += int((pred == y).sum())
        n += len(y)
    return correct, n


def _config_key(cfg: TrainConfig) -> str:
    d = cfg.to_dict()
    d.pop("out")
    d.pop("device")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def train(cfg: TrainConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Train and return the run record (also written to ``OUT/train.json``)."""
    cfg.validate()
    rep = reporter or NullReporter()
    out = Path(cfg.out)
    ds = open_dataset(cfg.data)
    domain = ds.domain(cfg.source)
    split = ds.split(cfg.source, cfg.split_seed, cfg.val_fraction)
    t = rep.task(f"decode {cfg.source}", len(domain))
    images = decode_domain(
        domain, cfg.image_size, progress=lambda d, n: rep.advance(t, d, completed=d)
    )
    rep.done(t)
    if images.failures:
        rep.log(f"skipping {len(images.failures)} unreadable image(s) in {cfg.source}")
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model, weights_info = create_model(cfg.arch, len(ds.classes), weights=cfg.weights)
    model.to(device)
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    loss_fn = nn.CrossEntropyLoss()

    key = _config_key(cfg)
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

    spec = ModelSpec(arch=cfg.arch, class_names=ds.classes, input_size=cfg.image_size)
    origin = {
        "kind": "train",
        "dataset": str(Path(cfg.data).resolve()),
        "source_domain": cfg.source,
        "split_seed": cfg.split_seed,
        "val_fraction": cfg.val_fraction,
        "n_train": len(split.train),
        "n_val": len(split.val),
        "weights": weights_info,
        "config": cfg.to_dict(),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "split.json", split.to_dict(domain))
    train_idx, val_idx = np.asarray(split.train), np.asarray(split.val)
    n_batches = -(-int(images.ok[train_idx].sum()) // cfg.batch_size)
    t0 = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        task = rep.task(f"epoch {epoch + 1}/{cfg.epochs}", n_batches)
        total_loss, seen = 0.0, 0
        for x, y in batches(
            images,
            train_idx,
            cfg.batch_size,
            shuffle_seed=cfg.seed * 100003 + epoch,
            augment=cfg.augment,
        ):
            xb, yb = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(y)
            seen += len(y)
            rep.advance(task, loss=f"{total_loss / seen:.3f}")
        rep.done(task)
        correct, n = accuracy(model, images, val_idx, device=device)
        val_acc = correct / max(n, 1)
        history.append(
            {
                "epoch": epoch + 1,
                "loss": total_loss / max(seen, 1),
                "val_accuracy": val_acc,
                "val_n": n,
            }
        )
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
    record = {
        "record": "train",
        "record_version": 1,
        "checkpoint": str(out / CHECKPOINT_NAME),
        "arch": cfg.arch,
        "params": count_params(model),
        "source_domain": cfg.source,
        "classes": list(ds.classes),
        "split": {
            "seed": cfg.split_seed,
            "val_fraction": cfg.val_fraction,
            "n_train": len(split.train),
            "n_val": len(split.val),
        },
        "best_epoch": best_epoch,
        "val_accuracy": best_acc,
        "val_n": history[-1]["val_n"] if history else 0,
        "history": history,
        "device": str(device),
        "seconds_this_session": round(time.perf_counter() - t0, 2),
        "config": cfg.to_dict(),
        "weights": weights_info,
    }
    atomic_write_json(out / "train.json", record)
    return record


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
