"""edgerobust.models.checkpoint: one safetensors file = weights + spec; round trips; never pickle."""

from __future__ import annotations

import json
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from edgerobust.errors import CheckpointError
from edgerobust.models.build import build_model, count_params, layer_widths
from edgerobust.models.checkpoint import (
    SPEC_KEY,
    ModelSpec,
    load_checkpoint,
    read_spec,
    save_checkpoint,
)
from edgerobust.runtimes.manifest import sha256_file

CLASSES = tuple(f"c{i}" for i in range(6))


def _spec(**kw) -> ModelSpec:
    return ModelSpec(arch="tinyresnet", class_names=CLASSES, input_size=32, **kw)


def _trained_like(widths=None) -> torch.nn.Module:
    """A model whose batch-norm statistics are not the defaults, so they must round-trip too."""
    torch.manual_seed(0)
    model = build_model("tinyresnet", len(CLASSES), widths=widths)
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 32, 32))
    return model.eval()


def _header(path) -> dict:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n])


def test_round_trip_same_outputs_and_spec(tmp_path):
    model = _trained_like()
    spec = _spec(origin={"kind": "train", "source_domain": "studio", "split_seed": 1})
    path = save_checkpoint(tmp_path / "m.safetensors", model, spec)
    ckpt = load_checkpoint(path)
    x = torch.rand(4, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(ckpt.model(x), model(x), atol=1e-6, rtol=0)
    assert ckpt.spec == spec
    assert read_spec(path) == spec
    assert not ckpt.model.training
    assert ckpt.sha256 == sha256_file(path)


def test_run_folder_resolves_to_model_safetensors(tmp_path):
    save_checkpoint(tmp_path / "run" / "model.safetensors", _trained_like(), _spec())
    assert load_checkpoint(tmp_path / "run").path == tmp_path / "run" / "model.safetensors"


def test_spec_lives_in_the_safetensors_header(tmp_path):
    spec = _spec(origin={"kind": "train"})
    path = save_checkpoint(tmp_path / "m.safetensors", _trained_like(), spec)
    meta = _header(path)["__metadata__"]
    assert ModelSpec.from_dict(json.loads(meta[SPEC_KEY])) == spec
    # No pickle opcodes anywhere: safetensors is a JSON header plus raw tensor bytes.
    assert b"\x80\x04\x95" not in path.read_bytes()[:4096]


def test_loading_never_unpickles(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.safetensors", _trained_like(), _spec())

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert load_checkpoint(path).spec == _spec()


def test_pruned_widths_rebuild(tmp_path):
    # Prune the inner channels of two residual blocks, as a filter pruner would.
    widths = layer_widths(build_model("tinyresnet", len(CLASSES)))
    widths.update(
        {
            "backbone.layer1.0.conv1": [8, 3],
            "backbone.layer1.0.bn1": [3, 3],
            "backbone.layer1.0.conv2": [3, 8],
            "backbone.layer3.0.conv1": [16, 20],
            "backbone.layer3.0.bn1": [20, 20],
            "backbone.layer3.0.conv2": [20, 32],
        }
    )
    widths = {k.removeprefix("backbone."): v for k, v in widths.items()}
    model = _trained_like(widths)
    assert count_params(model) < count_params(build_model("tinyresnet", len(CLASSES)))
    path = save_checkpoint(tmp_path / "pruned.safetensors", model, _spec(widths=widths))
    ckpt = load_checkpoint(path)
    assert ckpt.spec.widths == widths
    assert layer_widths(ckpt.model) == layer_widths(model)
    assert layer_widths(ckpt.model)["backbone.layer1.0.conv1"] == [8, 3]
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(ckpt.model(x), model(x), atol=1e-6, rtol=0)


def test_widths_missing_from_spec_is_a_checkpoint_error(tmp_path):
    widths = {"layer1.0.conv1": [8, 3], "layer1.0.bn1": [3, 3], "layer1.0.conv2": [3, 8]}
    path = save_checkpoint(tmp_path / "p.safetensors", _trained_like(widths), _spec())
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "per_channel", [True, False], ids=["per-channel", "written-before-weights"]
)
def test_int8_round_trip_is_bit_identical(tmp_path, per_channel):
    """The qconfig is not stored, only named: ``spec.quant["weights"]`` says per-channel (as
    ``compress quantize`` writes it); a spec without it is an older checkpoint, made with the
    engine's default qconfig, and must reload as that."""
    from edgerobust.compress.quantize import (
        PER_CHANNEL,
        calibrate,
        convert_prepared,
        prepare_ptsq,
        ptsq_bits,
    )

    model = _trained_like()
    prepared = prepare_ptsq(model, "x86", per_channel=per_channel)
    rng = np.random.default_rng(0)
    calibrate(prepared, [rng.random((8, 3, 32, 32), dtype=np.float32) for _ in range(3)])
    int8 = convert_prepared(prepared, "x86")
    quant = {"scheme": "ptsq-eager", "engine": "x86"}
    if per_channel:
        quant |= {"weights": PER_CHANNEL, **ptsq_bits("x86")}
    spec = _spec(quant=quant)
    path = save_checkpoint(tmp_path / "q.safetensors", prepared, spec)
    with pytest.raises(TypeError, match="prepared"):
        save_checkpoint(tmp_path / "bad.safetensors", int8, spec)
    assert not (tmp_path / "bad.safetensors").exists()

    ckpt = load_checkpoint(path)
    assert ckpt.spec.precision == "int8"
    assert any(p.is_quantized for p in ckpt.model.state_dict().values() if torch.is_tensor(p))
    x = torch.rand(5, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(ckpt.model(x), int8(x))


@pytest.mark.parametrize("clamped", [True, False], ids=["clamped", "written-before-clamping"])
def test_fx_int8_round_trip_is_bit_identical(tmp_path, clamped):
    """An FX-quantized family (ReLU6 after its convolutions) reloads as it was calibrated: with
    clamped activations when ``spec.quant`` says so, with the older graph when the key is absent."""
    from edgerobust.compress.quantize import calibrated_ptsq, convert_prepared

    torch.manual_seed(0)
    model = build_model("tinymobilenetv2", len(CLASSES)).eval()
    rng = np.random.default_rng(0)
    batches = [rng.random((8, 3, 32, 32), dtype=np.float32) for _ in range(2)]
    cal = calibrated_ptsq(model, "qnnpack", batches, clamp=clamped)
    assert cal.clamped is clamped
    int8 = convert_prepared(cal.prepared, "qnnpack")
    quant = {"scheme": "ptsq-fx", "engine": "qnnpack", **cal.quant_spec("qnnpack")}
    if not clamped:
        del quant["clamped_activations"]  # as checkpoints written before the key
    spec = ModelSpec(arch="tinymobilenetv2", class_names=CLASSES, input_size=32, quant=quant)
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "q.safetensors", cal.prepared, spec))
    x = torch.rand(5, 3, 32, 32)
    torch.backends.quantized.engine = "qnnpack"
    with torch.inference_mode():
        assert torch.equal(ckpt.model(x), int8(x))


@pytest.mark.parametrize("kind", ["text", "random", "foreign", "empty"])
def test_not_a_checkpoint(tmp_path, kind):
    path = tmp_path / "x.safetensors"
    if kind == "text":
        path.write_text("hello, I am a text file\n")
    elif kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    if kind == "foreign":
        assert "--weights" in str(err.value)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")


def test_save_is_atomic(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", _trained_like(), _spec())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
