"""edgerobust.compress.distill: the KD loss is the paper's eq. 5, the teacher stays frozen, the student
checkpoint is an ordinary one that exports and runs everywhere, and bad pairs fail clearly."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgerobust.cli import main
from edgerobust.compress.distill import DistillConfig, distill, kd_loss, teacher_logits
from edgerobust.data import decode_domain, open_dataset, origin_images
from edgerobust.errors import ConfigError
from edgerobust.exporters import ExportRequest, export
from edgerobust.models.checkpoint import load_checkpoint
from edgerobust.progress import ListReporter
from edgerobust.runtimes import open_artifact
from edgerobust.runtimes.manifest import sha256_file
from edgerobust.runtimes.preprocess import to_input


def _cfg(trained, data, out: Path, **kw) -> DistillConfig:
    settings = {
        "student": "tinyresnet",
        "student_weights": "none",
        "epochs": 3,
        "lr": 0.05,
        "batch_size": 32,
        "device": "cpu",
    }
    settings.update(kw)
    return DistillConfig(str(trained.checkpoint), str(data), "studio", str(out), **settings)


@pytest.fixture(scope="module")
def distilled(trained, synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny-kd"
    return distill(_cfg(trained, synthetic_root, out))


# --------------------------------------------------------------------------- the loss


def _softmax(z: list[float], tau: float) -> list[float]:
    e = [math.exp(v / tau) for v in z]
    return [v / sum(e) for v in e]


def test_kd_loss_matches_a_hand_computation():
    s = [[1.0, -0.5, 2.0], [0.3, 0.1, -1.2]]
    t = [[3.0, 0.0, 1.0], [-1.0, 2.5, 0.5]]
    y = [2, 0]
    alpha, tau = 0.2, 10.0
    kd = ce = 0.0
    for si, ti, yi in zip(s, t, y, strict=True):
        p, q = _softmax(ti, tau), _softmax(si, tau)
        kd += -sum(pj * math.log(qj) for pj, qj in zip(p, q, strict=True))  # eq. 3
        ce += -math.log(_softmax(si, 1.0)[yi])  # eq. 4
    expected = alpha * tau**2 * kd / 2 + (1 - alpha) * ce / 2  # eq. 5, batch mean
    got = kd_loss(
        torch.tensor(s, dtype=torch.float64),
        torch.tensor(t, dtype=torch.float64),
        torch.tensor(y),
        alpha,
        tau,
    )
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_kd_loss_tau_squared_and_limits():
    torch.manual_seed(0)
    s, t = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    y = torch.randint(0, 4, (5,))
    soft_ce = lambda tau: -(F.softmax(t / tau, 1) * F.log_softmax(s / tau, 1)).sum(1).mean()  # noqa: E731
    for tau in (1.0, 2.0, 10.0):
        # alpha = 1: only the soft term, scaled by tau^2.
        assert kd_loss(s, t, y, 1.0, tau).item() == pytest.approx(tau**2 * soft_ce(tau).item())
    # alpha = 0: plain cross-entropy with the labels, whatever the teacher says.
    assert kd_loss(s, t, y, 0.0, 10.0).item() == pytest.approx(F.cross_entropy(s, y).item())
    # Cross-entropy vs KL: same gradient for the student (the teacher's entropy is a constant).
    s1 = s.clone().requires_grad_(True)
    kd_loss(s1, t, y, 0.2, 10.0).backward()
    s2 = s.clone().requires_grad_(True)
    kl = F.kl_div(F.log_softmax(s2 / 10, 1), F.softmax(t / 10, 1), reduction="batchmean")
    (0.2 * 100 * kl + 0.8 * F.cross_entropy(s2, y)).backward()
    torch.testing.assert_close(s1.grad, s2.grad)


# --------------------------------------------------------------------------- the run


def test_record_spec_and_schedule(distilled, trained):
    run = Path(distilled["checkpoint"]).parent
    assert json.loads((run / "distill.json").read_text()) == distilled
    ckpt = load_checkpoint(distilled["checkpoint"])
    origin = ckpt.spec.origin
    assert origin["kind"] == "distill"
    assert (
        origin["teacher_sha256"] == sha256_file(trained.checkpoint) == distilled["teacher_sha256"]
    )
    assert (origin["alpha"], origin["tau"]) == (0.2, 10.0)
    assert origin["student_arch"] == "tinyresnet" and origin["weights"] == {"weights": "none"}
    teacher = load_checkpoint(trained.checkpoint)
    assert ckpt.spec.class_names == teacher.spec.class_names
    assert ckpt.spec.input_size == teacher.spec.input_size
    assert distilled["params_student"] == sum(p.numel() for p in ckpt.model.parameters())
    assert distilled["teacher_logits_cached"] is True
    # lr / 5 from 70 % of the epochs on (epoch 3 of 3 here).
    assert [h["lr"] for h in distilled["history"]] == pytest.approx([0.05, 0.05, 0.01])
    # The teacher file is untouched by distillation.
    assert teacher.sha256 == distilled["teacher_sha256"]


def test_teacher_logits_are_the_frozen_eval_models(trained, synthetic_root):
    teacher = load_checkpoint(trained.checkpoint).model
    teacher.train()  # teacher_logits must switch it to eval (batch-norm running stats)
    ds = open_dataset(synthetic_root)
    images = decode_domain(ds.domain("studio"), 32)
    idx = list(range(0, 40, 3))
    cache = teacher_logits(teacher, images, idx, torch.device("cpu"))
    assert not teacher.training and sorted(cache) == idx
    with torch.inference_mode():
        direct = teacher(torch.from_numpy(to_input(np.asarray(images.pixels[idx])))).numpy()
    np.testing.assert_allclose(np.stack([cache[i] for i in idx]), direct, atol=1e-5)


def test_augment_computes_teacher_logits_per_batch(trained, synthetic_root, tmp_path):
    rec = distill(_cfg(trained, synthetic_root, tmp_path / "run", augment=True, epochs=1))
    assert rec["teacher_logits_cached"] is False and len(rec["history"]) == 1


def test_student_weights_from_a_file_and_resume(trained, synthetic_root, tmp_path):
    cfg = _cfg(trained, synthetic_root, tmp_path / "run", student_weights=str(trained.checkpoint))
    first = distill(cfg)
    assert first["weights"]["weights"] == str(trained.checkpoint)
    assert first["weights"]["tensors_loaded"] > 0
    rep = ListReporter()
    again = distill(cfg, rep)
    assert any("resuming" in line for line in rep.lines)
    assert again["history"] == first["history"]


# --------------------------------------------------------------------------- bad inputs


def _run(capsys, *args) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of the CLI."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_different_class_lists(capsys, trained, synthetic_copy, tmp_path):
    for domain in synthetic_copy.iterdir():
        if domain.is_dir():
            first = sorted(p for p in domain.iterdir() if p.is_dir())[0]
            shutil.move(first, domain / "zebra")
    out = tmp_path / "run"
    code, _, err = _run(
        capsys,
        "compress",
        "distill",
        "--teacher",
        trained.run,
        "--student",
        "tinyresnet",
        "--student-weights",
        "none",
        "--data",
        synthetic_copy,
        "--source",
        "studio",
        "--out",
        out,
    )
    lines = err.strip().splitlines()
    assert code != 0 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("error: ") and "class lists differ" in lines[0]
    assert "zebra" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "change, match",
    [
        ({"image_size": 64}, "input size"),
        ({"alpha": 1.5}, "--alpha"),
        ({"tau": 0.0}, "--tau"),
        ({"epochs": 0}, "--epochs"),
        ({"student": "resnet7"}, "unknown architecture"),
    ],
)
def test_bad_configs(trained, synthetic_root, tmp_path, change, match):
    with pytest.raises(ConfigError, match=match) as err:
        distill(_cfg(trained, synthetic_root, tmp_path / "run", **change))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


def test_int8_teacher_is_refused(int8_checkpoint, trained, synthetic_root, tmp_path):
    cfg = replace(_cfg(trained, synthetic_root, tmp_path / "run"), teacher=str(int8_checkpoint))
    with pytest.raises(ConfigError, match="fp32 parent"):
        distill(cfg)


# --------------------------------------------------------------------------- export


def test_student_exports_everywhere_and_runs_in_both_runtimes(distilled, synthetic_root, tmp_path):
    from edgerobust.compress.ptsq import QuantizeConfig, quantize_checkpoint
    from edgerobust.evaluate import EvalConfig, evaluate

    ckpt = load_checkpoint(distilled["checkpoint"])
    q = quantize_checkpoint(
        QuantizeConfig(distilled["checkpoint"], engine="x86", out=str(tmp_path / "int8"))
    )
    assert load_checkpoint(q["checkpoint"]).spec.origin["parent"] == distilled["checkpoint"]
    _, images, val = origin_images(ckpt.spec.origin, "val", 32)
    x = to_input(np.asarray(images.pixels[[i for i in val if images.ok[i]]]))
    with torch.inference_mode():
        reference = ckpt.model(torch.from_numpy(x)).numpy()
    models = tmp_path / "models"
    results = {}
    for src, fmt, prec in [
        (distilled["checkpoint"], "onnx", "fp32"),
        (distilled["checkpoint"], "onnx", "int8"),
        (distilled["checkpoint"], "ptl", "fp32"),
        (q["checkpoint"], "ptl", "int8"),
        (distilled["checkpoint"], "torchscript", "fp32"),
    ]:
        # int8: force, as in the shared fixtures (one flip on 10 images is below 98 %).
        res = export(
            ExportRequest(src, format=fmt, quant=prec, out=str(models), force=prec == "int8")
        )
        torch.set_num_threads(1)
        # Stacking: the int8 checkpoint is PTSQ of the student and records it as its parent.
        assert res.manifest.source["kind"] == ("quantize" if src == q["checkpoint"] else "distill")
        if prec == "fp32":
            assert res.parity.passed and res.parity.top1_agreement == 1.0
            np.testing.assert_allclose(open_artifact(res.artifact)(x), reference, atol=1e-4)
        results[(fmt, prec)] = res
    assert (
        results[("ptl", "int8")].manifest.parity["vs_int8_pytorch_model"]["max_abs_logit_diff"]
        < 1e-4
    )
    for kind in (("onnx", "fp32"), ("torchscript", "fp32"), ("ptl", "int8")):
        rec = evaluate(
            EvalConfig(str(results[kind].artifact), str(synthetic_root), latency_runs=5, warmup=1)
        )
        torch.set_num_threads(1)
        src = next(d for d in rec["domains"] if d["role"] == "source")
        if kind[1] == "fp32":
            assert src["accuracy"] == pytest.approx(distilled["val_accuracy"])
        assert rec["latency_ms"]["p50"] > 0


def test_cli_prints_sizes_and_accuracies(capsys, trained, synthetic_root, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = _run(
        capsys,
        *[
            "compress",
            "distill",
            "--teacher",
            str(trained.run),
            "--student",
            "tinyresnet",
            "--student-weights",
            "none",
            "--data",
            str(synthetic_root),
            "--source",
            "studio",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
    )
    assert code == 0
    printed = " ".join(stdout.split())
    rec = json.loads((out / "distill.json").read_text())
    assert f"{rec['params_student']:,} params" in printed and "vs teacher" in printed
    assert (rec["alpha"], rec["tau"], rec["config"]["weight_decay"]) == (0.2, 10.0, 1e-3)
