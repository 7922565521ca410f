"""edgerobust.compress.quantize + compress: eager PTSQ int8 and the int8 checkpoint."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from edgerobust.compress.ptsq import QuantizeConfig, quantize_checkpoint
from edgerobust.compress.quantize import calibrate, convert_prepared, host_engine, prepare_ptsq
from edgerobust.data import decode_domain, open_dataset
from edgerobust.errors import ConfigError, ParityError
from edgerobust.models.checkpoint import load_checkpoint, read_spec
from edgerobust.runtimes.preprocess import to_input


def _state_bytes(model: torch.nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


@pytest.fixture(scope="module")
def studio(synthetic_root):
    ds = open_dataset(synthetic_root)
    images = decode_domain(ds.domain("studio"), 32)
    return to_input(np.asarray(images.pixels)), images.labels


def test_int8_is_smaller_runs_and_agrees(trained, int8_checkpoint, studio):
    fp32 = load_checkpoint(trained.checkpoint).model
    int8 = load_checkpoint(int8_checkpoint).model
    assert _state_bytes(int8) < 0.5 * _state_bytes(fp32)
    x, _ = studio
    with torch.inference_mode():
        ref, got = fp32(torch.from_numpy(x)), int8(torch.from_numpy(x))
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert torch.isfinite(got).all()
    agreement = (ref.argmax(1) == got.argmax(1)).float().mean().item()
    assert agreement >= 0.8
    # int8 logits differ from fp32 ones, but they are of the same size.
    assert 0 < (got - ref).abs().max() < ref.abs().max()


def test_int8_checkpoint_records_engine_and_parent(trained, int8_checkpoint):
    spec = read_spec(int8_checkpoint)
    assert spec.precision == "int8"
    assert spec.quant["engine"] == "x86" and spec.quant["calibration_images"] > 0
    assert spec.origin["kind"] == "quantize"
    assert spec.origin["parent"] == str(trained.checkpoint)
    assert spec.origin["parent_sha256"] == load_checkpoint(trained.checkpoint).sha256
    assert spec.class_names == read_spec(trained.checkpoint).class_names
    rec = json.loads((int8_checkpoint.parent / "quantize.json").read_text())
    assert rec["val_n"] == len(open_dataset(spec.origin["dataset"]).split("studio").val)
    assert 0 <= rec["val_accuracy_int8"] <= 1 and 0 <= rec["val_accuracy_fp32"] <= 1


def test_default_output_folder(trained, tmp_path):
    import shutil

    run = tmp_path / "myrun"
    shutil.copytree(trained.run, run)
    rec = quantize_checkpoint(QuantizeConfig(str(run), engine="x86", calib_batches=1))
    assert rec["checkpoint"] == str(tmp_path / "myrun-int8-x86" / "model.safetensors")
    assert rec["calibration_images"] == 8


def test_poor_int8_agreement_is_refused_with_the_export_gates_bar(trained, tmp_path, monkeypatch):
    """The record gives int8-vs-fp32 top-1 agreement; below the export gate's bar the model is
    refused and nothing is written (as export refuses), unless --force, which keeps it and warns."""
    from edgerobust import exporters

    rec = quantize_checkpoint(
        QuantizeConfig(
            str(trained.checkpoint), calib_batches=1, out=str(tmp_path / "a"), force=True
        )
    )
    assert 0 <= rec["top1_agreement"] <= 1
    assert (rec["warning"] is None) == (rec["top1_agreement"] >= exporters.DEFAULT_MIN_AGREEMENT)
    monkeypatch.setattr(exporters, "DEFAULT_MIN_AGREEMENT", 1.01)  # no model can meet it
    with pytest.raises(ParityError, match="quantizes poorly; fallback: .*--calib-batches.*--force"):
        quantize_checkpoint(
            QuantizeConfig(str(trained.checkpoint), calib_batches=1, out=str(tmp_path / "b"))
        )
    assert not (tmp_path / "b").exists()
    rec = quantize_checkpoint(
        QuantizeConfig(
            str(trained.checkpoint), calib_batches=1, out=str(tmp_path / "c"), force=True
        )
    )
    assert "quantizes poorly" in rec["warning"] and "--force" in rec["warning"]
    assert json.loads((tmp_path / "c" / "quantize.json").read_text())["warning"] == rec["warning"]
    assert (tmp_path / "c" / "model.safetensors").is_file()


def test_calibration_changes_the_int8_model(trained, studio):
    model = load_checkpoint(trained.checkpoint).model
    x, _ = studio
    models = []
    for batch in (x[:8], x[-8:] * 0.2):
        prepared = prepare_ptsq(model, "x86")
        assert calibrate(prepared, [batch]) == 8
        models.append(convert_prepared(prepared, "x86"))
    with torch.inference_mode():
        a, b = (m(torch.from_numpy(x[:16])) for m in models)
    assert not torch.equal(a, b)


def test_unknown_engine(trained):
    model = load_checkpoint(trained.checkpoint).model
    with pytest.raises(ConfigError, match="not available"):
        prepare_ptsq(model, "tpu9000")
    with pytest.raises(ConfigError, match="tpu9000"):
        quantize_checkpoint(QuantizeConfig(str(trained.checkpoint), engine="tpu9000"))


def test_engine_missing_from_this_torch_build(trained, monkeypatch):
    # An ARM build of torch has qnnpack only: asking it for x86 kernels is a user error.
    monkeypatch.setattr(
        type(torch.backends.quantized), "supported_engines", property(lambda self: ["qnnpack"])
    )
    model = load_checkpoint(trained.checkpoint).model
    with pytest.raises(ConfigError) as err:
        prepare_ptsq(model, "x86")
    assert "'x86'" in str(err.value) and "qnnpack" in str(err.value)


def test_quantizing_an_int8_checkpoint(int8_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="already int8"):
        quantize_checkpoint(QuantizeConfig(str(int8_checkpoint), out=str(tmp_path / "q")))
    assert not (tmp_path / "q").exists()


def test_bad_calibration_options(trained):
    with pytest.raises(ConfigError, match="--calib-batches"):
        quantize_checkpoint(QuantizeConfig(str(trained.checkpoint), calib_batches=0))
    prepared = prepare_ptsq(load_checkpoint(trained.checkpoint).model, "x86")
    with pytest.raises(ConfigError, match="no images"):
        calibrate(prepared, [])


def test_host_engine_is_available():
    assert host_engine() in torch.backends.quantized.supported_engines


@pytest.mark.parametrize("engine", ["x86", "qnnpack"])
@pytest.mark.parametrize("act", [torch.nn.ReLU6, lambda: torch.nn.Hardtanh(-1.0, 2.0)])
def test_fx_int8_with_clamping_activations_tracks_fp32(engine, act):
    """ReLU6 after a convolution (MobileNetV2, EfficientNet-Lite) must survive FX PTSQ on every
    engine. QNNPACK's quantized clamp is wrong on the channels-last tensors convolutions return
    (about -2 dB against fp32 before edgerobust worked around it); int8 must stay close to fp32."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.BatchNorm2d(16),
        act(),
        torch.nn.Conv2d(16, 16, 3, padding=1, groups=16),  # depthwise, as in the edge families
        torch.nn.BatchNorm2d(16),
        act(),
        torch.nn.Conv2d(16, 8, 1),
    ).eval()
    for bn in (model[1], model[4]):
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 3.0)
    x = torch.rand(16, 3, 24, 24)
    prepared = prepare_ptsq(model, engine)
    calibrate(prepared, [x[:8].numpy(), x[8:].numpy()])
    int8 = convert_prepared(prepared, engine)
    with torch.inference_mode():
        ref, out = model(x), int8(x)
    sqnr_db = 10 * torch.log10(ref.pow(2).mean() / (ref - out).pow(2).mean())
    assert sqnr_db > 20, f"{engine}: int8 is {sqnr_db:.1f} dB from fp32"


class _WideConvReLU6(torch.nn.Module):
    """conv-bn-ReLU6 whose pre-activation runs far below 0 and above 6 (as EfficientNet-Lite's
    do), then a 1x1 conv; ``shared=True`` also adds the unclamped conv output to the result, so
    the observer in front of the clamp is not the clamp's alone."""

    def __init__(self, shared: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(16)
        self.act = torch.nn.ReLU6()
        self.drop = torch.nn.Identity()  # as timm's BatchNormAct2d carries one
        self.head = torch.nn.Conv2d(16, 4, 1)
        self.shared = shared
        with torch.no_grad():
            self.bn.weight.uniform_(4.0, 8.0)
            self.bn.bias.uniform_(-6.0, 3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(self.bn(self.conv(x)))
        out = self.act(y)
        return self.head(out + y if self.shared else out)


def _clamp_observers_of(prepared: torch.nn.Module) -> list:
    from torch.ao.quantization.observer import ObserverBase

    def is_clamp(node) -> bool:
        if node.op == "call_function":
            return node.target is torch.nn.functional.hardtanh
        return node.op == "call_module" and isinstance(
            prepared.get_submodule(node.target), torch.nn.Hardtanh
        )

    out = []
    for node in filter(is_clamp, prepared.graph.nodes):
        out += [a for a in node.all_input_nodes if a.op == "call_module"]
    mods = [prepared.get_submodule(n.target) for n in out]
    assert mods and all(isinstance(m, ObserverBase) for m in mods)
    return mods


@pytest.mark.parametrize("engine", ["x86", "qnnpack"])
def test_fx_int8_range_of_a_clamped_conv_is_what_the_clamp_keeps(engine):
    """The observer in front of ReLU6 records the clamped values, so the conv's int8 output
    covers [0, 6] and not the pre-activation's range; int8 then tracks fp32 closer."""
    model = _WideConvReLU6().eval()
    x = torch.rand(16, 3, 16, 16)
    sqnr = {}
    for clamp in (False, True):
        prepared = prepare_ptsq(model, engine, clamp=clamp)
        calibrate(prepared, [x[:8].numpy(), x[8:].numpy()])
        for obs in _clamp_observers_of(prepared):
            scale, zero_point = (float(v) for v in obs.calculate_qparams())
            lo, hi = (obs.quant_min - zero_point) * scale, (obs.quant_max - zero_point) * scale
            if clamp:  # [0, <= 6]: zero point at the bottom, every step inside the clamp
                assert zero_point == obs.quant_min and 5.0 < hi <= 6.0 + 1e-6, (lo, hi)
            else:  # the pre-activation's range: half of it below 0, where ReLU6 keeps nothing
                assert lo < -3.0, (lo, hi)
        int8 = convert_prepared(prepared, engine)
        with torch.inference_mode():
            ref, out = model(x), int8(x)
        sqnr[clamp] = float(10 * torch.log10(ref.pow(2).mean() / (ref - out).pow(2).mean()))
    assert sqnr[True] > sqnr[False] + 1, sqnr
    # Identity modules are traced through: no node, no observer of their own
    assert not any("drop" in str(n.target) for n in prepared.graph.nodes)


def test_fx_clamp_leaves_an_observer_shared_with_unclamped_users():
    """When the conv's output also feeds something else (a residual add), quantizing it to the
    clamp's range would cut the other user's values: that observer stays as it was."""
    from edgerobust.compress.quantize import ClampedHistogramObserver

    model = _WideConvReLU6(shared=True).eval()
    prepared = prepare_ptsq(model, "x86")
    assert not any(isinstance(o, ClampedHistogramObserver) for o in _clamp_observers_of(prepared))
    plain = _WideConvReLU6().eval()
    assert all(
        isinstance(o, ClampedHistogramObserver)
        for o in _clamp_observers_of(prepare_ptsq(plain, "x86"))
    )


def _no_padding_model() -> torch.nn.Module:
    """Conv, depthwise conv, grouped conv, linear; no padding, so that a layer's mean output is
    exactly its weights times its mean input (bias correction's premise)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU6(),
        torch.nn.Conv2d(8, 8, 3, groups=8),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 12, 1, groups=4),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(12, 5),
    ).eval()


@pytest.mark.parametrize("engine", ["x86", "qnnpack"])
def test_bias_correction_cancels_the_mean_output_error_of_int8_weights(engine):
    """Per layer, the int8 weights with the corrected bias give the fp32 layer's mean output
    per channel on the calibration images (Nagel et al. 2019); the plain int8 weights do not."""
    from edgerobust.compress.quantize import calibrated_ptsq, quantized_layers, quantized_weight

    model = _no_padding_model()
    x = torch.rand(16, 3, 12, 12) * 2
    cal = calibrated_ptsq(model, engine, [x[:8].numpy(), x[8:].numpy()])
    assert cal.quant_spec(engine) == {
        "weights": "per-channel",
        "weight_bits": 7 if engine == "x86" else 8,
        "activation_bits": 8,
        "bias_correction": True,
        "clamped_activations": True,  # an FX graph (a Sequential has no fuse_model)
    }
    layers = quantized_layers(cal.prepared)
    assert [type(layer.op) for layer in layers] == [torch.nn.Conv2d] * 3 + [torch.nn.Linear]
    assert set(cal.original_biases) == {layer.name for layer in layers}
    inputs = {}
    hooks = [
        layer.op.register_forward_pre_hook(lambda m, a, n=layer.name: inputs.update({n: a[0]}))
        for layer in layers
    ]
    with torch.inference_mode():
        cal.prepared(x)
    for h in hooks:
        h.remove()

    def mean_out(layer, weight, bias):
        op, xin = layer.op, inputs[layer.name]
        if isinstance(op, torch.nn.Linear):
            return torch.nn.functional.linear(xin, weight, bias).mean(0)
        y = torch.nn.functional.conv2d(xin, weight, bias, op.stride, op.padding, 1, op.groups)
        return y.mean((0, 2, 3))

    for layer in layers:
        w, wq = layer.op.weight.detach(), quantized_weight(layer)
        assert (wq != w).any()
        fp32 = mean_out(layer, w, cal.original_biases[layer.name])
        plain = (mean_out(layer, wq, cal.original_biases[layer.name]) - fp32).abs().max()
        fixed = (mean_out(layer, wq, layer.op.bias.detach()) - fp32).abs().max()
        assert fixed < 1e-4 + 1e-3 * plain, f"{layer.name}: {fixed} vs {plain}"
        assert plain > 1e-5, f"{layer.name}: int8 weights did not shift the mean"


def test_per_channel_weights_on_qnnpack_reload_and_trace_to_lite(trained, tmp_path):
    """qnnpack gets per-channel weights (its default is per-tensor), recorded in the spec so the
    checkpoint reloads the same way; the lite interpreter runs them like the PyTorch model.
    A checkpoint asking for the engine's default qconfig reloads per-tensor."""
    from edgerobust.exporters import ExportRequest, export

    rec = quantize_checkpoint(
        QuantizeConfig(str(trained.checkpoint), engine="qnnpack", out=str(tmp_path / "pc"))
    )
    spec = read_spec(rec["checkpoint"])
    assert spec.quant["weights"] == "per-channel" and spec.quant["bias_correction"] is True
    old = quantize_checkpoint(
        QuantizeConfig(
            str(trained.checkpoint),
            engine="qnnpack",
            out=str(tmp_path / "pt"),
            per_channel=False,
            force=True,
        )
    )
    assert read_spec(old["checkpoint"]).quant["weights"] == "engine-default"
    schemes = {}
    for name, path in (("pc", rec["checkpoint"]), ("pt", old["checkpoint"])):
        conv1 = load_checkpoint(path).model.backbone.conv1
        schemes[name] = conv1.weight().qscheme()
    assert schemes == {
        "pc": torch.per_channel_affine,
        "pt": torch.per_tensor_affine,
    } or schemes == {
        "pc": torch.per_channel_symmetric,
        "pt": torch.per_tensor_symmetric,
    }
    res = export(
        ExportRequest(
            rec["checkpoint"], format="ptl", quant="int8", out=str(tmp_path / "m"), force=True
        )
    )
    assert res.manifest.parity["vs_int8_pytorch_model"]["max_abs_logit_diff"] < 1e-3


def _sabotaged(trained, tmp_path):
    """The trained model with an int8 trap in its classifier: input channel 0 of ``fc`` is dead
    (the last block's channel 0 is always 0 after its ReLU) and carries huge weights. fp32 does
    not notice; per-channel int8 rounds every other weight of ``fc`` to 0."""
    from edgerobust.models.checkpoint import save_checkpoint

    ckpt = load_checkpoint(trained.checkpoint)
    bb = ckpt.model.backbone
    block = bb.layer4[0]
    with torch.no_grad():
        for bn in (block.bn2, block.downsample[1]):
            bn.weight[0], bn.bias[0] = 0.0, -1.0
        bb.fc.weight[:, 0] = 1000 * bb.fc.weight.abs().max()
    return save_checkpoint(tmp_path / "trap" / "model.safetensors", ckpt.model, ckpt.spec)


def test_fallback_keeps_the_broken_layer_in_fp32(trained, tmp_path):
    path = _sabotaged(trained, tmp_path)
    with pytest.raises(ParityError, match="quantizes poorly"):
        quantize_checkpoint(QuantizeConfig(str(path), out=str(tmp_path / "off"), fallback=False))
    assert not (tmp_path / "off").exists()
    rec = quantize_checkpoint(QuantizeConfig(str(path), out=str(tmp_path / "on")))
    fb = rec["fallback"]
    assert fb["passed"] and fb["kept_fp32"] == ["backbone.fc"]
    assert fb["ranking"][0]["layer"] == "backbone.fc" and fb["start_agreement"] < fb["bar"]
    assert fb["int8_layers"] == fb["layers"] - 1 and rec["warning"] is None
    assert rec["top1_agreement"] >= fb["bar"]
    spec = read_spec(rec["checkpoint"])
    assert spec.quant["keep_fp32"] == ["backbone.fc"] and spec.quant["scheme"] == "ptsq-fx"
    int8 = load_checkpoint(rec["checkpoint"]).model
    assert type(int8.get_submodule("backbone.fc")) is torch.nn.Linear  # fp32 in the int8 model
    assert json.loads((tmp_path / "on" / "quantize.json").read_text())["fallback"] == fb


def test_a_candidate_copying_another_ones_calibration_is_the_same_model():
    """The fallback's candidates copy the observers of the first one calibrated (calibration
    runs in fp32 whatever is kept): the int8 model must equal one calibrated on the images."""
    from edgerobust.compress.quantize import calibrated_ptsq

    model = _no_padding_model()
    x = torch.rand(24, 3, 12, 12) * torch.linspace(0.2, 4, 24).view(-1, 1, 1, 1)
    batches = [x[:8].numpy(), x[8:16].numpy()]
    donor = calibrated_ptsq(model, "x86", batches)
    honest = calibrated_ptsq(model, "x86", batches, ("3",))
    copied = calibrated_ptsq(model, "x86", batches, ("3",), donor=donor)
    assert copied.reused and not honest.reused and not donor.reused
    assert copied.original_biases.keys() == honest.original_biases.keys() == {"0", "6", "9"}
    models = [convert_prepared(c.prepared, "x86") for c in (honest, copied)]
    fp32_conv_relu = torch.ao.nn.intrinsic.ConvReLU2d  # conv-bn-relu fused, kept in fp32
    assert all(type(m.get_submodule("3")) is fp32_conv_relu for m in models)
    with torch.inference_mode():
        a, b = (m(x[16:]) for m in models)
    assert torch.equal(a, b)
    # the stored state (observer statistics, corrected biases) is the same, tensor by tensor
    sa, sb = honest.prepared.state_dict(), copied.prepared.state_dict()
    assert sa.keys() == sb.keys() and any("activation_post_process" in k for k in sa)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_x86_int8_has_8bit_activations_and_7bit_weights(int8_checkpoint):
    """On x86/fbgemm the AVX2 kernels' 16-bit pair sums need one side reduced to 7 bits: the
    weights, not (torch's default) every activation. The checkpoint records it and reloads so."""
    spec = read_spec(int8_checkpoint)
    assert spec.quant["weight_bits"] == 7 and spec.quant["activation_bits"] == 8
    conv1 = load_checkpoint(int8_checkpoint).model.backbone.conv1
    w = conv1.weight().int_repr()
    assert w.min() >= -64 and w.max() <= 63 and w.abs().max() >= 60  # the 7-bit range, used
