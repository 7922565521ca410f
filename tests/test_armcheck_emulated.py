"""The artifacts on an emulated Raspberry Pi 4 and 5 (``-m arm``: root, qemu-user, minutes).

One fp32 and one int8 artifact of each device format (ONNX, lite), plus a TorchScript file for the
``optimize_for_mobile`` step, go through ``device_check`` exactly as ``edgerobust device-check``
runs them: built once into the cached arm64 root (about 5 minutes cold), then installed as the
README's Raspberry Pi section says, evaluated there, and compared with this host.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgerobust.device.check import DeviceCheckConfig, device_check
from edgerobust.device.emulation import emulation_problem
from edgerobust.runtimes import read_manifest

pytestmark = pytest.mark.arm

LIMIT = 4  # images per domain: emulated inference is slow, and the point is parity


@pytest.fixture(scope="module")
def can_emulate() -> None:
    reason = emulation_problem()
    if reason:
        pytest.skip(f"cannot emulate arm64 here: {reason}")


@pytest.fixture(scope="module")
def arm_artifacts(tmp_path_factory, trained, artifacts) -> dict[str, Path]:
    """ONNX fp32/int8 and lite fp32 from the shared fixtures; lite int8 and TorchScript exported
    for qnnpack, the engine ARM torch builds have; and the x86-engine lite int8 they lack."""
    from edgerobust.exporters import ExportRequest, export

    out = tmp_path_factory.mktemp("arm-models")
    arts = {
        "onnx-fp32": artifacts[("onnx", "fp32")].artifact,
        "onnx-int8": artifacts[("onnx", "int8")].artifact,
        "ptl-fp32": artifacts[("ptl", "fp32")].artifact,
        "ptl-int8-x86": artifacts[("ptl", "int8")].artifact,
    }
    for key, fmt, quant in (("ptl-int8", "ptl", "int8"), ("pt-fp32", "torchscript", "fp32")):
        req = ExportRequest(
            str(trained.checkpoint),
            format=fmt,
            quant=quant,
            engine="qnnpack" if quant == "int8" else None,
            out=str(out),
            force=True,  # a 10-image validation split: see conftest's artifacts fixture
        )
        arts[key] = export(req).artifact
    for target in ("arm64", "arm64-dotprod"):  # ONNX int8 made on this x86 host for a Pi
        req = ExportRequest(
            str(trained.checkpoint),
            format="onnx",
            quant="int8",
            target=target,
            out=str(out),
            force=True,
        )
        arts[f"onnx-int8-{target}"] = export(req).artifact
    return arts


def test_pi4_runs_every_format_like_this_host(can_emulate, arm_artifacts, synthetic_root, tmp_path):
    keys = ("onnx-fp32", "onnx-int8", "onnx-int8-arm64", "ptl-fp32", "ptl-int8", "pt-fp32")
    cfg = DeviceCheckConfig(
        artifacts=tuple(str(arm_artifacts[k]) for k in keys),
        cpu="cortex-a72",
        data=str(synthetic_root),
        domains=("studio", "webcam"),
        limit=LIMIT,
        optimize=True,
        out=str(tmp_path / "report.json"),
    )
    report = device_check(cfg)
    assert report.ok, [(c.artifact, c.verdict, c.error) for c in report.checks]
    assert json.loads((tmp_path / "report.json").read_text())["ok"] is True
    # The light install: the ONNX path on the Pi has no torch at all.
    assert report.env["light_venv_has_torch"] is False
    for c in report.checks:
        assert c.loads and c.comparison.passed
        # top-1 differs only where the reference's top two are tied within the rule's bound
        assert c.comparison.top1_agreement == 1.0 or c.comparison.ties > 0
        assert 0 < c.comparison.n <= 2 * LIMIT
        fp = c.device_host
        # What the emulated process sees: aarch64, flags of the emulated A72 (not the x86
        # host's /proc/cpuinfo), no dot product, hence the int8 warning.
        assert fp["arch"] == "aarch64" and fp["flags_source"] == "AT_HWCAP"
        assert "asimd" in fp["isa_flags"] and "asimddp" not in fp["isa_flags"]
        assert (c.int8_warning is not None) == (c.precision == "int8")
    by_file = {Path(c.artifact).name: c for c in report.checks}
    onnx_int8 = by_file[arm_artifacts["onnx-int8"].name].comparison
    assert onnx_int8.step and onnx_int8.diff_steps <= 1.0 + 1e-3
    # ONNX int8 is judged against the graph's QDQ arithmetic, not this host's fused kernels
    # (which saturate on x86 without VNNI); the host's own distance from it is reported.
    assert onnx_int8.against == "qdq-reference"
    assert by_file[arm_artifacts["onnx-int8"].name].host_vs_reference is not None
    assert by_file[arm_artifacts["ptl-int8"].name].comparison.against == "host"
    # The file made for a Pi 4 (--target arm64) says so, and runs there like the others.
    pi4 = by_file[arm_artifacts["onnx-int8-arm64"].name]
    assert read_manifest(arm_artifacts["onnx-int8-arm64"]).quantization["target"] == "arm64"
    assert pi4.comparison.against == "qdq-reference"
    # optimize_for_mobile on ARM: written beside the .pt, and it matches the .pt there.
    opt = by_file[arm_artifacts["pt-fp32"].name].optimized
    assert opt["passed"] and opt["written"]
    written = Path(opt["written"])
    man = read_manifest(written)
    assert man.format == "ptl" and written.parent == arm_artifacts["pt-fp32"].parent
    assert man.parity["vs_unoptimized_on_arm"]["passed"]
    assert any("XNNPACK" in n for n in man.notes)


def test_pi5_int8_has_dot_product_and_an_x86_engine_artifact_is_refused(
    can_emulate, arm_artifacts, synthetic_root
):
    keys = ("onnx-int8", "onnx-int8-arm64-dotprod", "ptl-int8", "ptl-int8-x86")
    cfg = DeviceCheckConfig(
        artifacts=tuple(str(arm_artifacts[k]) for k in keys),
        cpu="cortex-a76",
        data=str(synthetic_root),
        domains=("webcam",),
        limit=LIMIT,
    )
    report = device_check(cfg)
    by_file = {Path(c.artifact).name: c for c in report.checks}
    for k in ("onnx-int8", "onnx-int8-arm64-dotprod", "ptl-int8"):
        c = by_file[arm_artifacts[k].name]
        assert c.verdict == "pass", c.error
        assert "asimddp" in c.device_host["isa_flags"] and c.int8_warning is None
    x86 = by_file[arm_artifacts["ptl-int8-x86"].name]
    # An int8 artifact for the x86 engine does not load on ARM torch: said, not hidden.
    assert not x86.loads and x86.verdict == "error" and "engine" in x86.error
    assert not report.ok


@pytest.fixture(scope="module")
def pte_artifacts(tmp_path_factory, trained) -> dict[str, Path]:
    """.pte fp32 and PT2E int8, exported here with this host's executorch."""
    pytest.importorskip("executorch.runtime", reason="executorch is not installed")
    from edgerobust.exporters import ExportRequest, export

    out = tmp_path_factory.mktemp("arm-pte")
    return {
        q: export(
            ExportRequest(str(trained.checkpoint), format="pte", quant=q, out=str(out), force=True)
        ).artifact
        for q in ("fp32", "int8")
    }


# Measured: executorch 1.0.1's XNNPACK dies with "Illegal instruction" (an sdot) running the int8
# program on the emulated Cortex-A72 (fp32 runs; the A76 runs both). It reads torch 2.9.1's
# cpuinfo_isa with a layout 4 bytes off, taking the aes flag for dot product, and qemu's A72 has
# aes; a Pi 4 (BCM2711, no crypto extensions) is expected not to crash. See README, ExecuTorch.
A72_INT8 = pytest.mark.xfail(
    reason="executorch 1.0.1's XNNPACK misreads torch 2.9.1's cpuinfo (aes taken for dot "
    "product); qemu's A72 has aes, so an sdot kernel runs: Illegal instruction",
    strict=False,
)


@pytest.mark.parametrize(
    ("cpu", "quant"),
    [
        ("cortex-a72", "fp32"),
        pytest.param("cortex-a72", "int8", marks=A72_INT8),
        ("cortex-a76", "fp32"),
        ("cortex-a76", "int8"),
    ],
)
def test_pte_runs_on_the_emulated_pi_like_this_host(
    can_emulate, pte_artifacts, synthetic_root, cpu, quant
):
    from edgerobust.device.emulation import EXECUTORCH_ARM, TORCH_ARM

    cfg = DeviceCheckConfig(
        artifacts=(str(pte_artifacts[quant]),),
        cpu=cpu,
        data=str(synthetic_root),
        domains=("webcam",),
        limit=LIMIT,
    )
    report = device_check(cfg)
    assert report.env["executorch"] == EXECUTORCH_ARM and report.env["torch"] == TORCH_ARM
    for c in report.checks:
        assert c.verdict == "pass", (c.artifact, c.error)
        assert c.runtime == "executorch" and c.venv.endswith("er-executorch")
        assert c.device_runtime["runtime"] == "executorch"
        assert c.device_host["arch"] == "aarch64"
        assert c.comparison.top1_agreement == 1.0 or c.comparison.ties > 0
