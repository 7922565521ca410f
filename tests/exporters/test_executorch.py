"""ExecuTorch ``.pte``: export (XNNPACK, fp32 and PT2E int8), parity, delegation recorded, and
evaluation inside ExecuTorch's runtime. Skipped where executorch is not installed.

Lowering costs tens of seconds even for the tiny model, so the two artifacts are exported once
per module; the int8 export (calibration, a second ``torch.export``) is ``slow``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("executorch.runtime", reason="executorch is not installed")

from edgerobust.data import open_dataset  # noqa: E402
from edgerobust.runtimes import default_runtime, open_artifact, read_manifest  # noqa: E402
from edgerobust.runtimes.formats import get_format  # noqa: E402
from edgerobust.runtimes.preprocess import load_input  # noqa: E402


def _export(trained, out, quant):
    from edgerobust.exporters import ExportRequest, export

    # int8: a 10-image validation split; one disagreement is below the 98 % bar (see conftest)
    return export(
        ExportRequest(str(trained.checkpoint), format="pte", quant=quant, out=str(out), force=True)
    )


@pytest.fixture(scope="module")
def pte_fp32(tmp_path_factory, trained):
    return _export(trained, tmp_path_factory.mktemp("pte"), "fp32")


@pytest.fixture(scope="module")
def pte_int8(tmp_path_factory, trained):
    return _export(trained, tmp_path_factory.mktemp("pte-int8"), "int8")


def _images(root, domain="webcam", n=40):
    ds = open_dataset(root)
    return np.concatenate([load_input(p, 32) for p in ds.domain(domain).paths(range(n))])


def test_pte_is_registered_with_its_runtime_and_extra():
    fmt = get_format("pte")
    assert fmt.suffix == ".pte" and fmt.needs_torch and fmt.device_install == "executorch"
    assert default_runtime("pte") == "executorch"
    assert get_format("onnx").device_install == "base"
    assert get_format("ptl").device_install == "torch"


def test_fp32_manifest_parity_and_delegation(pte_fp32):
    m = pte_fp32.manifest
    assert pte_fp32.artifact.suffix == ".pte" and m.format == "pte" and m.precision == "fp32"
    assert pte_fp32.parity.passed and pte_fp32.parity.n > 0
    assert m.parity["bar"] == {"atol": 1e-4, "rtol": 1e-3}
    d = m.delegation
    assert d["backend"] == "XnnpackBackend" and d["delegated_nodes"] > 0
    # every conv, batch norm, add, pool and linear of the tinyresnet runs in XNNPACK
    assert d["portable_ops"] == {} and d["delegated_fraction"] == 1.0
    assert any(n.startswith("XNNPACK delegation:") for n in m.notes)
    assert m.versions["executorch"]
    on_disk = json.loads(pte_fp32.manifest_path.read_text())
    assert on_disk["delegation"] == d


def test_runtime_reproduces_the_checkpoint_and_splits_big_batches(
    pte_fp32, trained, synthetic_root
):
    import torch

    from edgerobust.models.checkpoint import load_checkpoint

    model = open_artifact(pte_fp32.artifact, threads=1)
    info = model.info()
    assert info["runtime"] == "executorch" and info["threadpool"] == 1
    x = _images(synthetic_root, n=40)
    assert len(x) > model.max_batch  # the program's bound: __call__ must split
    got = model(x)
    with torch.inference_mode():
        ref = load_checkpoint(trained.checkpoint).model.eval()(torch.from_numpy(x)).numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(model.bare_callable()(x), got, atol=1e-6)
    one = np.concatenate([model(x[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(one, got[:3], atol=1e-5)


@pytest.mark.slow
def test_int8_is_pt2e_delegated_smaller_and_agrees(pte_int8, pte_fp32, synthetic_root):
    m = pte_int8.manifest
    assert m.precision == "int8" and m.engine == "xnnpack-pt2e"
    assert any("PT2E int8" in n for n in m.notes)
    assert m.parity["bar"] == {"min_agreement": 0.98}
    assert m.delegation["portable_ops"] == {}  # quantize/dequantize ops are delegated too
    # int8 weights: well under half the fp32 program
    assert m.size_bytes < 0.5 * pte_fp32.manifest.size_bytes
    x = _images(synthetic_root, n=20)
    a, b = open_artifact(pte_int8.artifact)(x), open_artifact(pte_fp32.artifact)(x)
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.8
    assert not np.allclose(a, b, atol=1e-4)  # it really is the quantized program


def test_eval_device_in_executorch(pte_fp32, synthetic_root, tmp_path):
    from edgerobust.evaluate import EvalConfig, evaluate

    rec = evaluate(
        EvalConfig(
            artifact=str(pte_fp32.artifact),
            data=str(synthetic_root),
            domains=("studio", "webcam"),
            warmup=1,
            latency_runs=3,
            attack="saltpepper",
            attack_eps=(1,),
            attack_steps=20,
            limit=8,
        )
    )
    assert rec["runtime"]["runtime"] == "executorch"
    assert all(d["n"] > 0 and 0 <= d["accuracy"] <= 1 for d in rec["domains"])


# A child where torch (and so executorch's bindings) is "not installed", as in test_torch_free.
RUN_CLI = """
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"torch", "torchvision", "foolbox"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from edgerobust.cli import main
main(sys.argv[1:])
"""


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "edgerobust.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_truncated_pte_is_one_line(pte_fp32, synthetic_root, tmp_path):
    art = tmp_path / pte_fp32.artifact.name
    shutil.copy2(pte_fp32.manifest_path, tmp_path / pte_fp32.manifest_path.name)
    art.write_bytes(pte_fp32.artifact.read_bytes()[:1000])
    proc = _cli("eval-device", art, "--data", synthetic_root, "--out", tmp_path / "r.json")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "truncated" in proc.stderr
    assert not (tmp_path / "r.json").exists()


def test_pte_with_the_wrong_runtime_is_one_line(pte_fp32, synthetic_root, tmp_path):
    proc = _cli(
        "eval-device", pte_fp32.artifact, "--runtime", "onnxruntime", "--data", synthetic_root,
        "--out", tmp_path / "r.json",
    )  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--runtime executorch" in proc.stderr


def test_executorch_runtime_is_not_torch_free_and_says_so(pte_fp32, synthetic_root, tmp_path):
    """The bindings link libtorch: without torch, eval-device on a .pte names the extra."""
    proc = subprocess.run(
        [sys.executable, "-c", RUN_CLI, "eval-device", str(pte_fp32.artifact), "--data",
         str(synthetic_root), "--out", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "edgerobust[executorch]" in lines[0]


def test_manifest_round_trips_delegation(pte_fp32):
    assert read_manifest(pte_fp32.artifact).delegation == pte_fp32.manifest.delegation


class _WideConvReLU6:
    """conv-bn-ReLU6 whose pre-activation runs far below 0 and above 6 (as EfficientNet-Lite's
    do), then a 1x1 conv head."""

    def __new__(cls):
        import torch

        torch.manual_seed(0)
        bn = torch.nn.BatchNorm2d(16)
        with torch.no_grad():
            bn.weight.uniform_(4.0, 8.0)
            bn.bias.uniform_(-6.0, 3.0)
        conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        return torch.nn.Sequential(conv, bn, torch.nn.ReLU6(), torch.nn.Conv2d(16, 4, 1)).eval()


def test_pt2e_int8_quantizes_a_relu6_output_to_the_clamps_range():
    """The XNNPACK quantizer shares one observer between a conv's output and the hardtanh after
    it, which saw the pre-clamp range; quantize_pt2e makes it record the clamped values, so the
    conv's int8 output covers [0, 6] and int8 tracks fp32 closer than PT2E as it comes."""
    import torch

    from exporters import executorch as ex

    et = ex._import()
    model = _WideConvReLU6()
    x = torch.rand(16, 3, 16, 16)
    batches = [x[:8].numpy(), x[8:].numpy()]
    int8, clamped = ex.quantize_pt2e(model, 16, batches, et)
    assert clamped == 1  # the one observer the conv output and the ReLU6 share

    def output_scales(gm) -> list[float]:  # the activation quantizers, in graph order
        return [
            float(n.args[1])
            for n in gm.graph.nodes
            if n.op == "call_function"
            and "quantize_per_tensor" in str(n.target)
            and "dequantize" not in str(n.target)
        ]

    # As it comes: the same pipeline without the clamped observer.
    q = et["XNNPACKQuantizer"]().set_global(
        et["get_symmetric_quantization_config"](is_per_channel=True)
    )
    plain = et["prepare_pt2e"](ex._export(model, 16).module(), q)
    with torch.no_grad():
        for b in batches:
            plain(torch.from_numpy(b))
    plain = et["convert_pt2e"](plain)
    # [0] quantizes the input, [1] the ReLU6 output: its step is 6/255 when clamped, far
    # coarser from the pre-activation range.
    assert output_scales(int8)[1] <= 6.0 / 255 * 1.01
    assert output_scales(plain)[1] > 1.5 * output_scales(int8)[1]
    with torch.no_grad():
        ref = model(x)
        sqnr = {
            k: float(10 * torch.log10(ref.pow(2).mean() / (ref - m(x)).pow(2).mean()))
            for k, m in (("clamped", int8), ("plain", plain))
        }
    assert sqnr["clamped"] > sqnr["plain"] + 1, sqnr
