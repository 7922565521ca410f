"""Target-aware ONNX int8: the host target's graph runs every convolution and addition as an
integer kernel; the manifest says what was chosen and why; the fallback keeps what it names in
fp32; ``--tune`` keeps the fastest candidate that passes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgerobust.errors import ConfigError, ParityError
from edgerobust.exporters import ExportRequest, export
from edgerobust.exporters.onnx import (
    TARGETS,
    Int8Config,
    Int8Options,
    export_fp32,
    fp32_ops_left,
    host_target,
    optimized_op_counts,
    preprocess,
    quantize,
    quantize_int8,
    resolve_target,
    weighted_nodes,
)
from edgerobust.exporters.parity import ParityBar, ParityResult
from edgerobust.models.build import build_model

SIZE = 32


class _InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, 3x3 depthwise, 1x1 project, residual addition."""

    def __init__(self, c: int, expand: int = 4) -> None:
        super().__init__()
        e = c * expand
        self.body = nn.Sequential(
            nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e), nn.ReLU6(),
            nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False), nn.BatchNorm2d(e), nn.ReLU6(),
            nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c),
        )  # fmt: skip

    def forward(self, x):
        return x + self.body(x)


def _depthwise_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
        _InvertedResidual(8), _InvertedResidual(8),
        nn.Conv2d(8, 16, 1), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )  # fmt: skip


def _models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    models = {"tinyresnet": build_model("tinyresnet", 5), "depthwise": _depthwise_model()}
    for m in models.values():
        m.eval()
        for mod in m.modules():  # non-trivial batch-norm statistics, folded into the convs
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
    return models


def _calibration(n: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random((4, 3, SIZE, SIZE), dtype=np.float32) for _ in range(n)]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """name -> (fp32 .onnx, pre-processed .onnx)."""
    d = tmp_path_factory.mktemp("int8-graphs")
    out = {}
    for name, model in _models().items():
        fp32 = d / f"{name}.onnx"
        export_fp32(model, SIZE, fp32)
        pre, notes = preprocess(fp32, d / f"{name}.pre.onnx")
        assert not notes
        out[name] = (fp32, pre)
    return out


def _convs(path: Path) -> int:
    return sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize("name", ["tinyresnet", "depthwise"])
def test_host_target_runs_every_conv_and_add_as_an_integer_kernel(graphs, tmp_path, name):
    fp32, pre = graphs[name]
    target, how = resolve_target("auto")
    assert how.startswith("--target auto: this host")
    q = tmp_path / "int8.onnx"
    quantize(pre, q, target.config, _calibration())
    counts = optimized_op_counts(q)
    assert fp32_ops_left(counts) == {}, counts
    assert counts.get("QLinearConv") == _convs(pre)
    if name == "tinyresnet":
        assert counts.get("QLinearAdd", 0) >= 1  # the residual additions, in int8


def test_s8_activations_stay_fp32_on_x86(graphs, tmp_path):
    """Why both x86 targets use u8 activations: s8 ones are not fused there, with or without
    VNNI (11 of ResNet-18's 20 convolutions stayed fp32 on an AVX2 host and on an AVX-512 VNNI
    one; on the VNNI host, every Conv and Add of these graphs). Only meaningful on x86."""
    if not host_target()[0].startswith("x86"):
        pytest.skip("this host is not x86")
    _, pre = graphs["tinyresnet"]
    q = tmp_path / "s8s8.onnx"
    quantize(pre, q, Int8Config(activations="s8", weights="s8"), _calibration())
    left = fp32_ops_left(optimized_op_counts(q))
    assert left.get("Conv", 0) + left.get("FusedConv", 0) >= 1 and left.get("Add", 0) >= 1


def test_host_target_from_the_fingerprint():
    def fp(arch, flags):
        return {"arch": arch, "isa_flags": flags, "cpu_model": "cpu"}

    assert host_target(fp("x86_64", ["avx2", "fma"]))[0] == "x86"
    assert host_target(fp("x86_64", ["avx2", "avx512f", "avx512_vnni"]))[0] == "x86-vnni"
    assert host_target(fp("x86_64", ["avx2", "avx_vnni"]))[0] == "x86-vnni"
    assert host_target(fp("aarch64", ["asimd"]))[0] == "arm64"
    assert host_target(fp("aarch64", ["asimd", "asimddp"]))[0] == "arm64-dotprod"
    with pytest.raises(ConfigError, match="--target"):
        host_target(fp("riscv64", []))
    with pytest.raises(ConfigError, match="unknown int8 target"):
        resolve_target("x87")
    # Every target states what it picks and why.
    for t in TARGETS.values():
        assert t.why and t.cpus and t.config.label
    assert TARGETS["x86"].config.activations == "u8" and TARGETS["x86"].config.reduce_range
    # u8 activations on every x86 host (s8 ones are not fused there); VNNI needs no 7-bit weights
    assert TARGETS["x86-vnni"].config == Int8Config(activations="u8", weights="s8")
    assert TARGETS["arm64-dotprod"].config == Int8Config(activations="s8", weights="s8")


def _quantized_weight(graph: onnx.GraphProto, node_name: str) -> bool:
    """Does ``node_name`` read a dequantized (int8) weight?"""
    producer = {o: n for n in graph.node for o in n.output}
    node = next(n for n in graph.node if n.name == node_name)
    w = producer.get(node.input[1])
    return w is not None and w.op_type == "DequantizeLinear"


def test_fallback_keeps_the_layers_it_names_in_fp32(graphs, tmp_path):
    """A judge that passes once two layers read fp32 weights: the fallback must stop at the two
    it ranked most sensitive, write a graph where exactly those are fp32, and list them."""
    fp32, pre = graphs["depthwise"]
    layers = weighted_nodes(pre)

    def judge(path: Path) -> ParityResult:
        graph = onnx.load(str(path)).graph
        fp32_layers = sum(not _quantized_weight(graph, n) for n in layers)
        agree = 1.0 if fp32_layers >= 2 else 0.5
        bar = ParityBar(min_agreement=0.98)
        return ParityResult(10, agree, 0.0, 0.0, None, agree >= 0.98, bar, "fp32", "test")

    out = tmp_path / "m.onnx"
    res = quantize_int8(fp32, out, _calibration(), Int8Options(judge=judge))
    fb = res.quantization["fallback"]
    ranked = [r["layer"] for r in fb["ranking"]]
    assert sorted(ranked) == sorted(layers)
    assert fb["passed"] and fb["kept_fp32"] == ranked[:2] and fb["int8_layers"] == len(layers) - 2
    graph = onnx.load(str(out)).graph
    assert [n for n in layers if not _quantized_weight(graph, n)] == [
        n for n in layers if n in ranked[:2]
    ]
    assert res.quantization["target"] == host_target()[0]
    assert any("fallback: 2 of" in n for n in res.notes)
    # ... and onnxruntime runs them in fp32: its WeightBiasQuantization transformer would
    # quantize fp32 weights behind a per-tensor DequantizeLinear and fuse them back into int8.
    left = fp32_ops_left(optimized_op_counts(out))
    assert sum(left.values()) == 2, left


def test_fallback_gives_up_when_most_layers_would_stay_fp32(graphs, tmp_path):
    fp32, _ = graphs["depthwise"]

    def judge(path: Path) -> ParityResult:
        bar = ParityBar(min_agreement=0.98)
        return ParityResult(10, 0.5, 0.0, 0.0, None, False, bar, "fp32", "test")

    res = quantize_int8(fp32, tmp_path / "m.onnx", _calibration(), Int8Options(judge=judge))
    fb = res.quantization["fallback"]
    assert not fb["passed"] and fb["kept_fp32"] == []
    assert max(t["kept_fp32"] for t in fb["trials"]) == fb["max_fp32"] < fb["layers"] / 2
    assert "not met" in fb["summary"]


def test_manifest_records_target_choice_and_why(artifacts):
    m = artifacts[("onnx", "int8")].manifest
    q = m.quantization
    assert q["target"] == host_target()[0] and q["chosen_by"].startswith("--target auto")
    assert q["config"] == TARGETS[q["target"]].config.to_dict() and q["why"]
    assert m.engine == "onnxruntime-qdq"
    assert artifacts[("onnx", "fp32")].manifest.quantization == {}


def test_export_for_another_target_names_it(trained, tmp_path):
    res = export(
        ExportRequest(
            str(trained.checkpoint), quant="int8", target="arm64", out=str(tmp_path), force=True,
            fallback=False,
        )
    )  # fmt: skip
    assert res.artifact.name.endswith("-onnx-int8-arm64.onnx")
    q = json.loads(res.manifest_path.read_text())["quantization"]
    assert q["target"] == "arm64" and q["config"]["activations"] == "s8"


def test_target_and_tune_are_onnx_options(trained, tmp_path):
    for change in ({"target": "x86"}, {"tune": True}):
        req = ExportRequest(str(trained.checkpoint), format="ptl", quant="int8", **change)
        with pytest.raises(ConfigError, match="--target and --tune apply to onnx"):
            export(req)
    with pytest.raises(ConfigError, match="unknown --target"):
        export(ExportRequest(str(trained.checkpoint), quant="int8", target="x87"))


def test_tune_keeps_the_fastest_passing_candidate(trained, tmp_path, monkeypatch):
    from edgerobust.exporters import int8tune

    # Three candidates, one round, few calls: the machinery, not the timing, is under test.
    target = TARGETS[host_target()[0]]
    picks = [target.config, Int8Config(activations="s8"), Int8Config(per_channel=False)]
    monkeypatch.setattr(int8tune, "candidates", lambda t: list(dict.fromkeys(picks)))
    monkeypatch.setattr(int8tune, "ROUNDS", 1)
    monkeypatch.setattr(int8tune, "RUNS", 3)
    res = export(
        ExportRequest(
            str(trained.checkpoint), quant="int8", tune=True, out=str(tmp_path), force=True,
            min_agreement=0.0,
        )
    )  # fmt: skip
    tuned = res.manifest.quantization["tune"]
    rows = tuned["candidates"]
    assert len(rows) == len(set(picks)) and all("p50_ms" in r for r in rows)
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["p50_ms"] == min(r["p50_ms"] for r in rows)
    assert res.manifest.quantization["config"]["label"] == chosen[0]["config"] == tuned["chosen"]


def test_failing_int8_names_the_fallback_and_writes_nothing(trained, tmp_path, monkeypatch):
    from edgerobust.runtimes.ort import OnnxRuntime

    monkeypatch.setattr(OnnxRuntime, "__call__", lambda self, x: -self._run(None, {"input": x})[0])
    req = ExportRequest(str(trained.checkpoint), quant="int8", out=str(tmp_path / "o"))
    with pytest.raises(ParityError, match="fallback: the bar .* is not met"):
        export(req)
    assert not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize("name", ["tinyresnet", "depthwise"])
def test_host_target_int8_passes_the_device_check_verdict_on_this_host(graphs, tmp_path, name):
    """device-check judges ONNX int8 against the graph's own QDQ arithmetic (graph optimizations
    off). With the host target's u8 activations (7-bit weights on x86 without VNNI: no u8 x s8
    pair can saturate its 16-bit sum) this host's fused kernels pass the same verdict an ARM
    device must: at most one output step. (s8s8 ran up to 7-8 steps off here.)"""
    import onnxruntime as ort

    from edgerobust.device.verdict import QDQ_REFERENCE, compare_logits, onnx_output_scale

    _, pre = graphs[name]
    q = tmp_path / "int8.onnx"
    quantize(pre, q, resolve_target("auto")[0].config, _calibration(4))
    x = np.random.default_rng(1).random((32, 3, SIZE, SIZE), dtype=np.float32)

    def run(optimize: bool) -> np.ndarray:
        opts = ort.SessionOptions()
        if not optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(str(q), opts, providers=["CPUExecutionProvider"])
        return sess.run(None, {"input": x})[0]

    step = onnx_output_scale(onnx.load(str(q)))
    c = compare_logits("int8", run(False), run(True), step, QDQ_REFERENCE)
    assert c.passed, c
