"""The Python API: any nn.Module -> checkpoint -> artifact (parity gate) -> typed record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgerobust import api
from edgerobust.cli import main
from edgerobust.data import open_dataset
from edgerobust.errors import CheckpointError, ConfigError
from edgerobust.records import EvalDeviceRecord

SIZE = 32
SOURCE = "studio"


def _module(n_classes: int, seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, n_classes),
    ).eval()


@pytest.fixture(scope="module")
def module_ckpt(tmp_path_factory, synthetic_root):
    classes = open_dataset(synthetic_root).classes
    path = tmp_path_factory.mktemp("api") / "mine.safetensors"
    return api.make_checkpoint(
        _module(len(classes)),
        path,
        class_names=classes,
        input_size=SIZE,
        data=synthetic_root,
        source_domain=SOURCE,
    )


def test_checkpoint_moves_normalization_inside_and_round_trips(module_ckpt, synthetic_root):
    import torch

    x = torch.rand(2, 3, SIZE, SIZE)
    mean = torch.tensor(api.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(api.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        inner = module_ckpt.model.backbone((x - mean) / std)
        torch.testing.assert_close(module_ckpt.model(x), inner, atol=1e-6, rtol=1e-6)
        n = module_ckpt.spec.num_classes
        again = api.load_checkpoint(module_ckpt.path, _module(n, seed=5))  # other init
        torch.testing.assert_close(again.model(x), module_ckpt.model(x))
    assert again.sha256 == module_ckpt.sha256
    with pytest.raises(CheckpointError, match="do not match this module"):
        api.load_checkpoint(module_ckpt.path, _module(n + 1))


def test_export_runs_the_parity_gate_and_evaluate_returns_the_cli_record(
    module_ckpt, synthetic_root, tmp_path
):
    res = api.export(module_ckpt, format="onnx", out=tmp_path, parity_images=16)
    assert res.parity.passed and res.parity.n == 10  # studio validation split (10 of 100)
    assert res.manifest.source["kind"] == "module"
    assert res.manifest.source["checkpoint_sha256"] == module_ckpt.sha256
    assert res.manifest.input["range"] == [0.0, 1.0]  # the standard contract

    rec = api.evaluate(res.artifact, synthetic_root, domains=["webcam"], latency_runs=2)
    assert isinstance(rec, EvalDeviceRecord)
    cli_out = tmp_path / "cli.json"
    try:  # success returns (or exits 0); an error would exit non-zero
        main(
            ["eval-device", str(res.artifact), "--data", str(synthetic_root)]
            + ["--domains", "webcam", "--latency-runs", "2", "--out", str(cli_out)]
        )
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    cli = EvalDeviceRecord.from_dict(json.loads(cli_out.read_text()))
    assert cli.domain("webcam")["correct"] == rec.domain("webcam")["correct"]
    assert cli.domain("webcam")["n"] == rec.domain("webcam")["n"] == 100


def test_module_int8_is_onnx_not_ptsq(module_ckpt, tmp_path):
    with pytest.raises(ConfigError, match="registered architecture"):
        api.export(module_ckpt, format="torchscript", quant="int8", out=tmp_path)
    # An untrained 8-channel model: int8 top-1 agreement is noisy, the route is what is tested.
    res = api.export(
        module_ckpt, format="onnx", quant="int8", out=tmp_path, parity_images=16, min_agreement=0.5
    )
    assert res.manifest.precision == "int8" and res.parity.n == 10


def test_make_checkpoint_rejects_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="distinct"):
        api.make_checkpoint(_module(2), tmp_path / "a", class_names=["x", "x"], input_size=8)
    with pytest.raises(ConfigError, match="both mean and std"):
        api.make_checkpoint(
            _module(2), tmp_path / "a", class_names=["x", "y"], input_size=8, std=None
        )
    assert not (tmp_path / "a").exists()


def test_import_model_takes_a_list_of_classes(synthetic_root, tmp_path):
    from tests.test_import import _nhwc_255_graph

    classes = list(open_dataset(synthetic_root).classes)
    src = _nhwc_255_graph(tmp_path / "m.onnx", len(classes), "uint8")
    res = api.import_model(src, classes=classes, input_size=SIZE, out=tmp_path / "models")
    assert res.manifest.class_names == classes
    rec = api.evaluate(res.artifact, synthetic_root, domains=["natural"], latency_runs=1)
    assert 0.0 <= rec.domain("natural")["accuracy"] <= 1.0
    assert np.isfinite(rec.latency_ms["p50"])
