"""edgerobust.runtimes: one numpy protocol for every runtime; artifacts verified before parsing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgerobust.errors import ArtifactError, RuntimeUnavailable
from edgerobust.runtimes import (
    default_runtime,
    get,
    list_runtimes,
    open_artifact,
    read_manifest,
    register,
)
from edgerobust.runtimes.ort import OnnxRuntime
from edgerobust.runtimes.torchscript import LiteRuntime, TorchScriptRuntime

KINDS = [
    ("onnx", "fp32", "onnxruntime"),
    ("onnx", "int8", "onnxruntime"),
    ("ptl", "fp32", "ptl"),
    ("ptl", "int8", "ptl"),
    ("torchscript", "fp32", "torchscript"),
]


@pytest.mark.parametrize("fmt, prec, runtime", KINDS, ids=lambda v: str(v))
def test_protocol(artifacts, fmt, prec, runtime):
    res = artifacts[(fmt, prec)]
    model = open_artifact(res.artifact, threads=2)
    assert model.name == runtime == default_runtime(fmt)
    assert model.manifest == res.manifest
    x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    logits = model(x)
    assert isinstance(logits, np.ndarray)
    assert logits.shape == (3, model.manifest.num_classes) and logits.dtype == np.float32
    # One image alone gives the same answer as in a batch: a plain function of its input.
    np.testing.assert_allclose(model(x[1:2])[0], logits[1], rtol=1e-4, atol=1e-4)
    info = model.info()
    assert info["runtime"] == runtime and info["threads"] == 2 and info["version"]


def test_registry():
    assert list_runtimes() == ["executorch", "onnxruntime", "ptl", "torchscript"]
    assert list_runtimes("t*") == ["torchscript"]
    assert get("onnxruntime") is OnnxRuntime
    assert get("ptl") is LiteRuntime and get("torchscript") is TorchScriptRuntime
    with pytest.raises(RuntimeUnavailable) as err:
        get("tflite")
    assert all(name in str(err.value) for name in list_runtimes())


def test_duplicate_runtime_name_is_an_error():
    class Impostor:
        name = "onnxruntime"
        formats = ("onnx",)

    with pytest.raises(ValueError, match="already registered"):
        register(Impostor)
    assert get("onnxruntime") is OnnxRuntime


def test_unknown_runtime_lists_the_choices(artifacts):
    with pytest.raises(RuntimeUnavailable) as err:
        open_artifact(artifacts[("onnx", "fp32")].artifact, runtime="tensorrt")
    message = str(err.value)
    assert "tensorrt" in message
    assert all(name in message for name in ("onnxruntime", "ptl", "torchscript"))


@pytest.mark.parametrize(
    "kind, runtime", [(("onnx", "fp32"), "ptl"), (("ptl", "fp32"), "onnxruntime")]
)
def test_wrong_runtime_for_the_format(artifacts, kind, runtime):
    res = artifacts[kind]
    with pytest.raises(RuntimeUnavailable) as err:
        open_artifact(res.artifact, runtime=runtime)
    assert f"--runtime {default_runtime(res.manifest.format)}" in str(err.value)


@pytest.fixture
def no_parsing(monkeypatch):
    """Any runtime asked to parse a file fails the test: verification must come first."""

    def boom(cls, *args, **kwargs):
        raise AssertionError(f"{cls.name} parsed an unverified file")

    for cls in (OnnxRuntime, LiteRuntime, TorchScriptRuntime):
        monkeypatch.setattr(cls, "load", classmethod(boom))


@pytest.mark.parametrize("kind", [("onnx", "int8"), ("ptl", "fp32"), ("torchscript", "fp32")])
def test_tampered_artifact(artifacts, artifact_copy, no_parsing, kind):
    path = artifact_copy(artifacts[kind])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as err:
        open_artifact(path)
    assert "sha256" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("kind", [("onnx", "fp32"), ("ptl", "int8")])
def test_truncated_artifact(artifacts, artifact_copy, no_parsing, kind):
    path = artifact_copy(artifacts[kind])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ArtifactError) as err:
        open_artifact(path)
    assert "truncated" in str(err.value) and "\n" not in str(err.value)


def test_missing_manifest(artifacts, artifact_copy):
    path = artifact_copy(artifacts[("onnx", "fp32")])
    path.with_suffix(".json").unlink()
    with pytest.raises(ArtifactError, match="no manifest"):
        open_artifact(path)


def test_damaged_or_foreign_manifest(artifacts, artifact_copy):
    path = artifact_copy(artifacts[("onnx", "fp32")])
    mpath = path.with_suffix(".json")
    mpath.write_text("{not json")
    with pytest.raises(ArtifactError, match="not a valid edgerobust manifest"):
        read_manifest(path)
    manifest = artifacts[("onnx", "fp32")].manifest.to_dict()
    mpath.write_text(json.dumps({**manifest, "file": "other.onnx"}))
    with pytest.raises(ArtifactError, match="describes other.onnx"):
        open_artifact(path)


def test_missing_artifact_and_wrong_suffix(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        open_artifact(tmp_path / "nope.onnx")
    weird = tmp_path / "model.tflite"
    weird.write_bytes(b"x")
    with pytest.raises(ArtifactError, match="not an artifact"):
        open_artifact(weird)


def test_unparseable_artifact_with_a_consistent_manifest(artifacts, artifact_copy):
    """sha256 right but the bytes are no model: the parser's failure is one clear line too."""
    from dataclasses import replace

    from edgerobust.runtimes.manifest import atomic_write_json, sha256_file

    path = artifact_copy(artifacts[("onnx", "fp32")])
    path.write_bytes(b"garbage, not protobuf" * 10)
    m = replace(
        artifacts[("onnx", "fp32")].manifest,
        sha256=sha256_file(path),
        size_bytes=path.stat().st_size,
    )
    atomic_write_json(path.with_suffix(".json"), m.to_dict())
    with pytest.raises(ArtifactError) as err:
        open_artifact(path)
    assert "onnxruntime cannot load" in str(err.value) and "\n" not in str(err.value)


def test_threads_must_be_positive(artifacts):
    with pytest.raises(ValueError):
        open_artifact(artifacts[("onnx", "fp32")].artifact, threads=0)
