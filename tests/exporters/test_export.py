"""edgerobust.exporters: every format x precision, its manifest, and the parity gate."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from edgerobust.data import origin_images
from edgerobust.errors import ConfigError, ParityError
from edgerobust.exporters import ExportRequest, export
from edgerobust.exporters.onnx import op_counts
from edgerobust.exporters.parity import ParityBar, compare
from edgerobust.models.checkpoint import load_checkpoint
from edgerobust.runtimes import open_artifact
from edgerobust.runtimes.manifest import sha256_file
from edgerobust.runtimes.ort import OnnxRuntime
from edgerobust.runtimes.preprocess import to_input

KINDS = [
    ("onnx", "fp32"),
    ("onnx", "int8"),
    ("ptl", "fp32"),
    ("ptl", "int8"),
    ("torchscript", "fp32"),
]
EXPECTED_ENGINE = {
    ("onnx", "fp32"): None,
    ("onnx", "int8"): "onnxruntime-qdq",
    ("ptl", "fp32"): None,
    ("ptl", "int8"): "x86",
    ("torchscript", "fp32"): None,
}


def _parity_inputs(checkpoint, n: int = 256):
    """The images the exporter's parity gate uses: the source validation split."""
    spec = load_checkpoint(checkpoint).spec
    _, images, val = origin_images(spec.origin, "val", spec.input_size)
    idx = [i for i in val if images.ok[i]][:n]
    return to_input(np.asarray(images.pixels[idx]))


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(k))
def test_manifest_describes_the_artifact(artifacts, trained, kind):
    res = artifacts[kind]
    m = res.manifest
    fmt, prec = kind
    assert res.artifact.is_file() and res.manifest_path == res.artifact.with_suffix(".json")
    assert json.loads(res.manifest_path.read_text()) == m.to_dict()
    assert (m.format, m.precision) == kind
    assert m.file == res.artifact.name
    assert m.sha256 == sha256_file(res.artifact)
    assert m.size_bytes == res.artifact.stat().st_size
    ckpt = load_checkpoint(trained.checkpoint)
    assert m.class_names == list(ckpt.spec.class_names)
    assert m.input["shape"] == [-1, 3, 32, 32] and m.input["range"] == [0.0, 1.0]
    assert m.engine == EXPECTED_ENGINE[kind]
    assert m.arch == "tinyresnet" and m.params == sum(p.numel() for p in ckpt.model.parameters())
    assert m.source["source_domain"] == "studio"
    assert m.source["checkpoint_sha256"] == sha256_file(m.source["checkpoint"])
    assert {"edgerobust", "torch", "onnxruntime", "python"} <= set(m.versions)
    parity = m.parity
    assert parity["n"] == len(_parity_inputs(trained.checkpoint))
    assert {"top1_agreement", "max_abs_logit_diff", "passed", "bar", "forced"} <= set(parity)
    if prec == "fp32":
        # fp32 must pass its declared tolerance without --force.
        assert parity["passed"] and not parity["forced"] and parity["worst_excess"] <= 0
        assert parity["top1_agreement"] == 1.0
    else:
        assert parity["bar"] == {"min_agreement": 0.98}
        assert parity["forced"] == (not parity["passed"])
    # Nothing but artifacts and manifests is left in the output folder.
    for p in res.artifact.parent.iterdir():
        assert p.suffix in {".onnx", ".ptl", ".pt", ".json"} and not p.name.startswith(".")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(k))
def test_artifact_reproduces_its_parity_numbers(artifacts, trained, kind):
    res = artifacts[kind]
    x = _parity_inputs(trained.checkpoint)
    reference_model = load_checkpoint(trained.checkpoint).model
    with torch.inference_mode():
        reference = reference_model(torch.from_numpy(x)).numpy()
    # The exporter ran parity on as many threads as this (summation order may depend on it).
    runtime = open_artifact(res.artifact, threads=max(1, min(4, os.cpu_count() or 1)))
    candidate = runtime(x)
    again = compare(reference, candidate, ParityBar(), reference_name="fp32", images="val")
    assert again.top1_agreement == res.manifest.parity["top1_agreement"]
    assert again.max_abs_logit_diff == pytest.approx(
        res.manifest.parity["max_abs_logit_diff"], rel=1e-4, abs=1e-6
    )


def test_onnx_int8_is_qdq_and_much_smaller(artifacts):
    fp32, int8 = artifacts[("onnx", "fp32")], artifacts[("onnx", "int8")]
    ops8, ops32 = op_counts(int8.artifact), op_counts(fp32.artifact)
    assert ops8.get("QuantizeLinear", 0) > 0 and ops8.get("DequantizeLinear", 0) > 0
    assert "QuantizeLinear" not in ops32 and ops32.get("Conv", 0) > 0
    assert int8.manifest.size_bytes < 0.5 * fp32.manifest.size_bytes


def test_ptl_int8_is_smaller_and_runs_with_its_engine(artifacts):
    int8, fp32 = artifacts[("ptl", "int8")], artifacts[("ptl", "fp32")]
    assert int8.manifest.size_bytes < 0.75 * fp32.manifest.size_bytes
    rt = open_artifact(int8.artifact)
    assert rt.info()["quantized_engine"] == "x86"
    # The trace reproduces the eager int8 PyTorch model it came from (same kernels).
    assert int8.manifest.parity["vs_int8_pytorch_model"]["max_abs_logit_diff"] < 1e-4


def test_torchscript_int8_from_fp32_calibrates(trained, tmp_path):
    res = export(
        ExportRequest(
            str(trained.checkpoint),
            format="torchscript",
            quant="int8",
            engine="x86",
            out=str(tmp_path),
            force=True,
        )
    )
    assert res.manifest.engine == "x86" and res.artifact.name.endswith("-x86.pt")
    assert any("calibrated on" in n for n in res.manifest.notes)
    assert res.manifest.parity["vs_int8_pytorch_model"]["max_abs_logit_diff"] < 1e-4


# --------------------------------------------------------------------------- the parity gate


def _negated(self, x):
    return -OnnxRuntime._real_call(self, x)


@pytest.fixture
def broken_onnxruntime(monkeypatch):
    """ONNX Runtime returning negated logits: every top-1 changes, every logit is off."""
    monkeypatch.setattr(OnnxRuntime, "_real_call", OnnxRuntime.__call__, raising=False)
    monkeypatch.setattr(OnnxRuntime, "__call__", _negated)


@pytest.mark.parametrize("quant", ["fp32", "int8"])
def test_parity_failure_writes_nothing(trained, tmp_path, broken_onnxruntime, quant):
    out = tmp_path / "models"
    req = ExportRequest(str(trained.checkpoint), format="onnx", quant=quant, out=str(out))
    with pytest.raises(ParityError) as err:
        export(req)
    assert "--force" in str(err.value) and "\n" not in str(err.value)
    bar = "top-1 agreement >= 98%" if quant == "int8" else "|logit diff| <= 0.0001 + 0.001"
    assert f"the bar: {bar}" in str(err.value) and "{" not in str(err.value)
    assert list(out.iterdir()) == []


def test_force_keeps_a_failing_artifact_and_says_so(trained, tmp_path, broken_onnxruntime):
    req = ExportRequest(str(trained.checkpoint), format="onnx", out=str(tmp_path), force=True)
    res = export(req)
    assert not res.parity.passed
    manifest = json.loads(res.manifest_path.read_text())
    assert manifest["parity"]["passed"] is False and manifest["parity"]["forced"] is True
    assert manifest["parity"]["top1_agreement"] < 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [res.artifact.name, res.manifest_path.name]
    )


@pytest.mark.parametrize("value", [1.01, -0.1])
def test_min_agreement_must_be_a_fraction(trained, tmp_path, value):
    out = tmp_path / "models"
    req = ExportRequest(str(trained.checkpoint), quant="int8", out=str(out), min_agreement=value)
    with pytest.raises(ConfigError, match="--min-agreement"):
        export(req)
    assert not out.exists()


def test_name_collision_with_another_artifacts_manifest(trained, tmp_path):
    first = export(
        ExportRequest(str(trained.checkpoint), format="onnx", out=str(tmp_path), name="m")
    )
    before = first.manifest_path.read_bytes()
    with pytest.raises(ConfigError, match="already describes m.onnx"):
        export(ExportRequest(str(trained.checkpoint), format="ptl", out=str(tmp_path), name="m"))
    assert first.manifest_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.onnx"]
    # Re-exporting the same artifact under its own name replaces it.
    again = export(
        ExportRequest(str(trained.checkpoint), format="onnx", out=str(tmp_path), name="m")
    )
    assert again.artifact == first.artifact


@pytest.mark.parametrize(
    "change, match",
    [
        ({"format": "tflite"}, "unknown format"),
        ({"quant": "int4"}, "--quant"),
        ({"engine": "x86"}, "drop --engine"),
        ({"parity_images": 0}, "--parity-images"),
        ({"calib_batches": 0}, "--calib-batches"),
    ],
)
def test_bad_requests(trained, tmp_path, change, match):
    req = ExportRequest(str(trained.checkpoint), out=str(tmp_path / "m"), **change)
    with pytest.raises(ConfigError, match=match):
        export(req)
    assert not (tmp_path / "m").exists()


def test_int8_checkpoint_cannot_become_fp32_or_onnx(int8_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="already int8"):
        export(ExportRequest(str(int8_checkpoint), format="ptl", quant="fp32", out=str(tmp_path)))
    with pytest.raises(ConfigError, match="--quant int8"):
        export(ExportRequest(str(int8_checkpoint), format="onnx", out=str(tmp_path)))
    with pytest.raises(ConfigError, match="--engine qnnpack"):
        export(
            ExportRequest(str(int8_checkpoint), format="ptl", engine="qnnpack", out=str(tmp_path))
        )
    assert not any(tmp_path.iterdir())
