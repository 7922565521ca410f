"""One source for every name: a runtime with its format, an exporter and an architecture that this
test module registers are accepted by the CLI and by study files, with no other edit.

The plugin here is small but real: the "dummy" format is an fp32 ONNX graph under another suffix,
written by its own exporter and run by its own runtime; "dummynet" is a ResNet of its own shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest

from edgerobust.cli import main
from edgerobust.exporters import EXPORTERS, Exporter, list_exporters
from edgerobust.exporters.parity import ParityBar
from edgerobust.models import ARCHS, Arch, get_arch, list_archs
from edgerobust.runtimes import RUNTIMES, default_runtime, list_runtimes
from edgerobust.runtimes.formats import FORMATS, ArtifactFormat, format_of
from edgerobust.runtimes.ort import OnnxRuntime
from edgerobust.study.plan import plan_study
from edgerobust.study.spec import load_study


def _write_dummy(model, input_size: int, path: Path, *, quant: str, calibration, optimize=True):
    from edgerobust.exporters.onnx import export_fp32

    export_fp32(model, input_size, path)
    return ["dummy: an fp32 ONNX graph under the .dum suffix"]


class DummyRuntime(OnnxRuntime):
    name: ClassVar[str] = "dummyrt"
    formats: ClassVar[tuple[str, ...]] = ("dummy",)


@pytest.fixture
def plugin(monkeypatch) -> None:
    """What a plugin module does at import: one registration per registry (undone afterwards)."""
    monkeypatch.setitem(FORMATS._items, "dummy", ArtifactFormat("dummy", ".dum", "test format"))
    monkeypatch.setitem(RUNTIMES._items, "dummyrt", DummyRuntime)
    monkeypatch.setitem(
        EXPORTERS._items, "dummy", Exporter("dummy", _write_dummy, ParityBar(atol=1e-4, rtol=1e-3))
    )
    arch = Arch("dummynet", "resnet", {"block": "basic", "layers": (1, 1, 1, 1)}, width_divisor=16)
    monkeypatch.setitem(ARCHS._items, "dummynet", arch)


def test_registrations_are_seen_everywhere_names_are_listed(plugin):
    assert "dummy" in list_exporters() and default_runtime("dummy") == "dummyrt"
    assert "dummyrt" in list_runtimes() and "dummynet" in list_archs()
    assert format_of("model.dum").name == "dummy"
    assert get_arch("dummynet").build_backbone(3).fc.out_features == 3


def cli(*args: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    assert exc.value.code == 0, args


def test_the_cli_trains_exports_and_evaluates_with_plugin_names(plugin, synthetic_root, tmp_path):
    run = tmp_path / "run"
    args = ["--data", str(synthetic_root), "--source", "studio", "--image-size", "32"]
    cli("train", *args, "--arch", "dummynet", "--epochs", "1", "--out", run)
    cli("export", run, "--format", "dummy", "--out", tmp_path / "models")
    (art,) = (tmp_path / "models").glob("*.dum")
    man = json.loads(art.with_suffix(".json").read_text())
    assert man["format"] == "dummy" and man["arch"] == "dummynet" and man["parity"]["passed"]
    out = tmp_path / "eval.json"
    cli("eval-device", art, "--runtime", "dummyrt", "--data", synthetic_root,
        "--domains", "webcam", "--limit", "3", "--latency-runs", "2", "--out", out)  # fmt: skip
    rec = json.loads(out.read_text())
    assert rec["runtime"]["runtime"] == "dummyrt" and rec["domains"][0]["n"] == 3


def test_unknown_names_are_refused_with_the_registered_choices(plugin, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export", "nowhere", "--format", "nosuch"])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "nosuch" in err and "dummy" in err


STUDY = """
[study]
name = "plugin"

[dataset]
kind = "synthetic"
per_class = 4
size = 32
sources = ["studio"]

[train]
archs = ["dummynet"]
image_size = 32
epochs = 1

[export]
formats = ["dummy", "onnx"]

[eval]
runtimes = ["dummyrt", "onnxruntime"]
"""


def test_a_study_file_plans_plugin_names(plugin, tmp_path):
    path = tmp_path / "plugin.toml"
    path.write_text(STUDY)
    plan = plan_study(load_study(path))
    evals = [s for s in plan.stages if s.kind == "eval-device"]
    assert {s.settings["runtime"] for s in evals} == {"dummyrt", "onnxruntime"}
    train = [s for s in plan.stages if s.kind == "train"]
    assert [s.settings["arch"] for s in train] == ["dummynet"]
    # Without the registration the same file is refused, naming what is known.
    del ARCHS._items["dummynet"]
    with pytest.raises(Exception, match="dummynet"):
        load_study(path)


def test_duplicate_names_are_errors(plugin):
    with pytest.raises(ValueError, match="already registered"):
        RUNTIMES.add("dummyrt", DummyRuntime)
    from edgerobust.runtimes.formats import register_format

    with pytest.raises(ValueError, match="already registered"):
        register_format(ArtifactFormat("other", ".dum"))
