"""ONNX int8 bias correction: each layer's bias absorbs the mean output error its int8 weights
cause on the calibration images; layers kept in fp32 keep their own bias."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edgerobust.exporters.onnx import (
    TARGETS,
    _dequantized_weights,
    _Work,
    bias_corrections,
    export_fp32,
    preprocess,
    run_onnx,
)
from edgerobust.models.build import build_model

SIZE = 16
X86 = TARGETS["x86"].config  # 7-bit weights: the largest rounding errors of our targets


def _batches(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((4, 3, SIZE, SIZE), dtype=np.float32) for _ in range(n)]


def _graph(model: nn.Module, d: Path) -> Path:
    export_fp32(model.eval(), SIZE, d / "fp32.onnx")
    pre, notes = preprocess(d / "fp32.onnx", d / "pre.onnx")
    assert not notes
    return pre


class _OneLayer(nn.Module):
    """One weighted layer on the (shifted) input: its own input is the graph's input, so the
    layer's mean output error can be checked exactly (no padding: every output sees every tap)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x):
        x = x + 0.5  # a non-zero mean input: the case the correction is for
        return self.layer(x.flatten(1) if isinstance(self.layer, nn.Linear) else x)


@pytest.mark.parametrize(
    "layer",
    [nn.Conv2d(3, 6, 3), nn.Conv2d(3, 3, 3, groups=3), nn.Linear(3 * SIZE * SIZE, 5)],
    ids=["conv", "depthwise", "gemm"],
)
def test_corrected_bias_cancels_the_mean_weight_error(tmp_path, layer):
    torch.manual_seed(0)
    with torch.no_grad():
        layer.weight.mul_(3.0)  # coarse int8 steps
    pre = _graph(_OneLayer(layer), tmp_path)
    calibration = _batches(4, 0)
    work = _Work(pre, tmp_path, calibration)
    plain = work.build(replace(X86, bias_correction=False))
    fixed = bias_corrections(pre, plain, calibration)
    (node,) = [n for n in onnx.load(str(pre)).graph.node if n.op_type in ("Conv", "Gemm")]
    assert set(fixed) == {node.name}

    # The layer with its int8 weights (dequantized) and fp32 input, bias as given.
    q_graph = onnx.load(str(plain)).graph
    q_node = next(n for n in q_graph.node if n.name == node.name)
    w_int8 = _dequantized_weights(plain)[q_node.input[1]]
    x = torch.from_numpy(np.concatenate(calibration))

    def mean_out(weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
        probe = nn.Module()
        probe.layer = type(layer)(*_ctor(layer))
        with torch.no_grad():
            probe.layer.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
            probe.layer.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float32)))
            y = _OneLayer(probe.layer)(x).double().numpy()
        return y.mean(axis=(0, *range(2, y.ndim)))

    w = layer.weight.detach().numpy()
    b = layer.bias.detach().numpy()
    want = mean_out(w, b)
    before = np.abs(mean_out(w_int8, b) - want).max()
    after = np.abs(mean_out(w_int8, fixed[node.name]) - want).max()
    assert before > 1e-3  # int8 weights do shift the mean here ...
    assert after < 1e-4 + before * 1e-3  # ... and the corrected bias cancels it


def _ctor(layer: nn.Module) -> tuple:
    if isinstance(layer, nn.Linear):
        return (layer.in_features, layer.out_features)
    return (layer.in_channels, layer.out_channels, layer.kernel_size, 1, 0, 1, layer.groups)


@pytest.fixture(scope="module")
def lite(tmp_path_factory) -> Path:
    """The tiny EfficientNet-Lite (ReLU6, depthwise), with non-trivial batch-norm statistics."""
    torch.manual_seed(0)
    model = build_model("tinyefficientnet_lite", 5).eval()
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 2.0)
    return _graph(model, tmp_path_factory.mktemp("lite"))


def _biases(path: Path) -> dict[str, np.ndarray]:
    """Node name -> its bias as the graph computes it (dequantized when int32)."""
    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    dq = _dequantized_weights(path)
    return {
        n.name: dq.get(n.input[2], inits.get(n.input[2]))
        for n in graph.node
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 2
    }


def test_layers_kept_in_fp32_keep_their_own_bias(lite, tmp_path):
    calibration = _batches(2, 0)
    work = _Work(lite, tmp_path, calibration)
    fixed = work.corrections(X86)
    original = _biases(lite)
    assert set(fixed) == set(original)  # every Conv and the classifier
    kept = next(iter(fixed))
    graph = work.build(X86, exclude=(kept,))
    got = _biases(graph)
    np.testing.assert_array_equal(got[kept], original[kept])
    moved = [n for n in fixed if n != kept and not np.allclose(fixed[n], original[n])]
    assert moved
    for name in moved:  # the int8 layers carry the corrected bias (up to its int32 step)
        np.testing.assert_allclose(got[name], fixed[name], atol=1e-3, rtol=1e-3)


def test_bias_correction_brings_int8_closer_to_fp32(lite, tmp_path):
    """End to end on held-out inputs: the corrected graph's logits are nearer fp32's."""
    work = _Work(lite, tmp_path, _batches(4, 0))
    x = np.concatenate(_batches(4, 1))
    ref = run_onnx(lite, [x])
    err = {
        bc: np.abs(run_onnx(work.build(replace(X86, bias_correction=bc)), [x]) - ref).mean()
        for bc in (False, True)
    }
    assert err[True] < err[False], err
    assert X86.bias_correction and "bias-corrected" in X86.label
