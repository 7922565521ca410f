"""edgerobust.train: the run folder, the record, resuming, and option checks."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from edgerobust.data import decode_domain, open_dataset
from edgerobust.errors import ConfigError, DataError
from edgerobust.models.checkpoint import load_checkpoint
from edgerobust.progress import ListReporter
from edgerobust.train import TrainConfig, accuracy, batches, train


def test_run_folder_and_record(trained, synthetic_root):
    rec = json.loads((trained.run / "train.json").read_text())
    assert rec == trained.record
    assert {p.name for p in trained.run.iterdir()} >= {
        "model.safetensors",
        "last.safetensors",
        "split.json",
        "train.json",
    }
    assert [h["epoch"] for h in rec["history"]] == list(range(1, 21))
    accs = [h["val_accuracy"] for h in rec["history"]]
    assert rec["val_accuracy"] == max(accs)
    assert rec["history"][rec["best_epoch"] - 1]["val_accuracy"] == rec["val_accuracy"]
    ds = open_dataset(synthetic_root)
    split = ds.split("studio")
    assert rec["split"]["n_val"] == len(split.val) == rec["val_n"]
    assert rec["split"]["n_train"] == len(split.train)
    assert rec["classes"] == list(ds.classes)
    assert rec["val_accuracy"] > 0.3  # it learned something (chance is 0.1)

    # The best checkpoint reproduces the recorded validation accuracy.
    ckpt = load_checkpoint(trained.checkpoint)
    images = decode_domain(ds.domain("studio"), 32)
    correct, n = accuracy(ckpt.model, images, split.val)
    assert correct / n == pytest.approx(rec["val_accuracy"])
    origin = ckpt.spec.origin
    assert origin["source_domain"] == "studio" and origin["best_epoch"] == rec["best_epoch"]
    assert origin["dataset"] == str(synthetic_root.resolve())
    split_file = json.loads((trained.run / "split.json").read_text())
    assert split_file["val_files"] == [ds.domain("studio").files[i] for i in split.val]


def _cfg(data, out, epochs) -> TrainConfig:
    return TrainConfig(
        data=str(data),
        source="studio",
        arch="tinyresnet",
        out=str(out),
        epochs=epochs,
        lr=0.05,
        batch_size=32,
        image_size=32,
        augment=True,
        device="cpu",
    )


def test_resume_equals_a_straight_run(synthetic_root, tmp_path):
    straight = train(_cfg(synthetic_root, tmp_path / "straight", 4))

    first = train(_cfg(synthetic_root, tmp_path / "resumed", 2))
    assert len(first["history"]) == 2
    rep = ListReporter()
    resumed = train(_cfg(synthetic_root, tmp_path / "resumed", 4), rep)
    assert any("at epoch 3/4" in line for line in rep.lines), rep.lines
    assert resumed["history"][:2] == first["history"]
    assert len(resumed["history"]) == 4

    # Same weights and same history as four epochs in one go.
    a = load_file(str(tmp_path / "straight" / "last.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "last.safetensors"))
    model_keys = [k for k in a if k.startswith("model.")]
    assert model_keys and set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    for h1, h2 in zip(straight["history"], resumed["history"], strict=True):
        assert h1["val_accuracy"] == h2["val_accuracy"]
        assert h1["loss"] == pytest.approx(h2["loss"], rel=1e-5)
    assert straight["best_epoch"] == resumed["best_epoch"]


def test_another_configuration_starts_afresh(synthetic_root, tmp_path):
    train(_cfg(synthetic_root, tmp_path / "run", 1))
    rep = ListReporter()
    rec = train(replace(_cfg(synthetic_root, tmp_path / "run", 1), lr=0.01), rep)
    assert not any("resuming" in line for line in rep.lines)
    assert len(rec["history"]) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"epochs": 0},
        {"image_size": 8},
        {"image_size": 4096},
        {"batch_size": 0},
        {"lr": 0.0},
        {"lr": -1.0},
    ],
)
def test_bad_options(synthetic_root, tmp_path, change):
    cfg = replace(_cfg(synthetic_root, tmp_path / "run", 1), **change)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert "--" in str(err.value)  # names the option
    assert not (tmp_path / "run").exists()


def test_unknown_source_domain(synthetic_root, tmp_path):
    cfg = replace(_cfg(synthetic_root, tmp_path / "run", 1), source="sketch")
    with pytest.raises(DataError, match="studio"):
        train(cfg)


def test_batches_cover_the_split_once_and_skip_unreadable(synthetic_root):
    ds = open_dataset(synthetic_root)
    images = decode_domain(ds.domain("studio"), 32)
    ok = images.ok.copy()
    ok[3] = False
    images = replace(images, ok=ok)
    idx = np.arange(20)
    seen = []
    for x, y in batches(images, idx, 6, shuffle_seed=7, augment=True):
        assert x.dtype == np.float32 and x.shape[1:] == (3, 32, 32)
        assert x.min() >= 0.0 and x.max() <= 1.0
        seen.extend(y.tolist())
    assert len(seen) == 19
    assert sorted(seen) == sorted(np.delete(images.labels[:20], 3).tolist())
    # A fixed (seed, epoch) gives the same order: what makes resuming exact.
    ys = lambda s: [y.tolist() for _, y in batches(images, idx, 6, shuffle_seed=s)]  # noqa: E731
    assert ys(7) == ys(7)
    assert ys(7) != ys(8)


def _bn_stats(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


def test_head_epochs_train_the_head_alone_then_everything(synthetic_root, tmp_path):
    """LP-FT: the first --head-epochs change only the last linear layer (batch-norm statistics
    included), at lr 0.01; the rest fine-tune everything at --lr."""
    from edgerobust.models.build import create_model
    from edgerobust.train import FitConfig, SourceSplit, fit, head_parameters

    src = SourceSplit.open(str(synthetic_root), "studio", 1, 0.1)
    images = src.decode(32, ListReporter())
    torch.manual_seed(0)
    model, _ = create_model("tinyresnet", len(src.classes))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head = {id(p) for p in head_parameters(model)}
    head_names = {n for n, p in model.named_parameters() if id(p) in head}
    cfg = FitConfig(epochs=1, lr=0.05, batch_size=32, head_epochs=1)
    from edgerobust.models.checkpoint import ModelSpec

    spec = ModelSpec(arch="tinyresnet", class_names=src.classes, input_size=32)
    res = fit(
        model, images, src.split.train, src.split.val, cfg,
        out=tmp_path / "lp", spec=spec, origin={}, key="k", device=torch.device("cpu"),
    )  # fmt: skip
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == head_names  # nothing else moved: not a weight, not a statistic
    assert res.history[0]["head_only"] and res.history[0]["lr"] == 0.01
    assert all(p.requires_grad for p in model.parameters())  # handed back trainable

    # and through train(): epoch 2 fine-tunes everything at --lr
    rec = train(replace(_cfg(synthetic_root, tmp_path / "lpft", 2), head_epochs=1))
    assert [h.get("head_only", False) for h in rec["history"]] == [True, False]
    assert [h["lr"] for h in rec["history"]] == [0.01, 0.05]
    # --head-epochs = --epochs: a linear probe, every epoch head-only
    rec = train(replace(_cfg(synthetic_root, tmp_path / "lp-only", 2), head_epochs=2))
    assert [h.get("head_only", False) for h in rec["history"]] == [True, True]
    with pytest.raises(ConfigError, match="--head-epochs"):
        train(replace(_cfg(synthetic_root, tmp_path / "bad", 2), head_epochs=3))


def test_freeze_bn_keeps_the_statistics_and_trains_the_weights(synthetic_root, tmp_path):
    rec = train(replace(_cfg(synthetic_root, tmp_path / "frozen", 1), freeze_bn=True))
    from edgerobust.models.build import create_model

    torch.manual_seed(rec["config"]["seed"])
    fresh, _ = create_model("tinyresnet", len(rec["classes"]))
    tuned = load_checkpoint(tmp_path / "frozen" / "model.safetensors").model
    for k, v in _bn_stats(fresh).items():
        torch.testing.assert_close(tuned.state_dict()[k], v)  # untouched statistics
    conv = next(k for k in fresh.state_dict() if k.endswith("conv1.weight"))
    assert not torch.equal(fresh.state_dict()[conv], tuned.state_dict()[conv])  # weights trained
    # without it, the statistics follow the source batches
    train(_cfg(synthetic_root, tmp_path / "plain", 1))
    plain = load_checkpoint(tmp_path / "plain" / "model.safetensors").model
    assert any(not torch.equal(plain.state_dict()[k], v) for k, v in _bn_stats(fresh).items())


def test_recalibrate_bn_measures_the_average_statistics(synthetic_root):
    """After pruning, batch-norm statistics are re-estimated: the running mean of the first
    layer must be the mean of its input over every image (not an exponential average)."""
    from edgerobust.models.build import create_model
    from edgerobust.train import SourceSplit, recalibrate_bn

    src = SourceSplit.open(str(synthetic_root), "studio", 1, 0.1)
    images = src.decode(32, ListReporter())
    torch.manual_seed(0)
    model, _ = create_model("tinyresnet", len(src.classes))
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean.fill_(5.0)
    model.eval()
    recalibrate_bn(model, images, src.split.train, batch_size=7)  # batches of unequal size
    assert not model.training and bn.momentum == 0.1  # restored
    feats = []
    bn.register_forward_hook(lambda m, i, o: feats.append(i[0].detach()))
    with torch.no_grad():
        for x, _ in batches(images, np.asarray(src.split.train), 7):
            model(torch.from_numpy(x))
    per_batch = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats])
    # the cumulative average of the batch means (what BatchNorm with momentum=None keeps)
    torch.testing.assert_close(bn.running_mean, per_batch.mean(0), atol=1e-5, rtol=1e-4)
