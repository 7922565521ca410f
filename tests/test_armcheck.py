"""edgerobust.device.check without emulation: the verdict, the int8 output step, the image mirror,
the refusals on hosts that cannot emulate, and the pieces of the device install.

The emulated run itself is tests/test_armcheck_emulated.py (``-m arm``).
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgerobust.cli import main
from edgerobust.device import check as armcheck
from edgerobust.device import emulation, verdict
from edgerobust.device.check import ArtifactCheck
from edgerobust.device.emulation import (
    debian_mirror,
    emulation_problem,
    mirror_dataset,
    prepare_host,
)
from edgerobust.device.verdict import (
    FP32_REL_TOL,
    Comparison,
    compare_logits,
    onnx_output_scale,
    output_step,
    qdq_reference,
    rounding_spread,
)
from edgerobust.errors import EmulationUnavailable
from edgerobust.evaluate import EvalConfig, evaluate, load_logits
from edgerobust.runtimes import open_artifact, read_manifest

# --------------------------------------------------------------------------- the verdict


def _logits(n: int = 12, classes: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3, (n, classes)).astype(np.float32)
    x[np.arange(n), rng.integers(0, classes, n)] += 8  # a clear winner per row: no near-ties
    return x


def test_fp32_rounding_passes_and_a_wrong_kernel_fails():
    host = _logits()
    scale = np.abs(host).max()
    assert compare_logits("fp32", host, host).passed
    rounding = host + np.float32(0.1 * FP32_REL_TOL * scale)
    assert compare_logits("fp32", host, rounding).passed
    beyond = host.copy()
    beyond[3, 0] += 2 * FP32_REL_TOL * scale
    c = compare_logits("fp32", host, beyond)
    assert not c.passed and c.top1_agreement == 1.0  # fails on the tolerance alone
    assert c.max_abs_diff == pytest.approx(2 * FP32_REL_TOL * scale, rel=1e-3)
    assert c.step is None and c.diff_steps is None


def test_a_changed_answer_fails_unless_the_reference_is_tied():
    host = _logits()
    flipped = host.copy()
    row, top = 5, int(host[5].argmax())
    other = (top + 1) % host.shape[1]
    flipped[row, [top, other]] = flipped[row, [other, top]]
    for precision, step in (("fp32", None), ("int8", 0.2), ("int8", None)):
        c = compare_logits(precision, host, flipped, step)
        assert c.top1_agreement == pytest.approx(1 - 1 / len(host)) and not c.passed
        assert c.ties == 0
    # A tie: the reference's top two on the same int8 step; the device lands one step higher on
    # the runner-up, and argmax picks it. That answer is not the model's to give.
    step = 0.25
    ref = np.round(_logits() / step) * step
    ref[5, other] = ref[5, top]
    dev = ref.copy()
    dev[5, other] += step
    c = compare_logits("int8", ref, dev, step)
    assert c.passed and c.ties == 1 and c.top1_agreement < 1 and "except at ties" in c.rule
    # ... but not when the step is unknown: then top-1 is all there is to judge.
    assert not compare_logits("int8", ref, dev, None).passed
    # Two steps apart in the reference is no tie for a one-step rule.
    ref[5, other] = ref[5, top] - 2.5 * step
    dev = ref.copy()
    dev[5, other] += 3 * step
    c = compare_logits("int8", ref, dev, step)
    assert not c.passed and c.ties == 0


def test_int8_one_output_step_passes_two_do_not():
    step, zp = 0.2022, -12
    rng = np.random.default_rng(1)
    q = rng.integers(-60, 60, (8, 10))
    q[np.arange(8), rng.integers(0, 10, 8)] = 127  # clear winners
    host = ((q - zp) * step).astype(np.float32)
    one = host.copy()
    one[2, q[2].argmin()] += step  # ARM and x86 requantize a value one step apart
    c = compare_logits("int8", host, one, step)
    assert c.passed and c.diff_steps == pytest.approx(1.0, abs=1e-4)
    two = host.copy()
    two[2, q[2].argmin()] += 2 * step
    c = compare_logits("int8", host, two, step)
    assert not c.passed and c.diff_steps == pytest.approx(2.0, abs=1e-4)
    # Unknown step: judged by top-1 only, and the rule says so.
    c = compare_logits("int8", host, two, None)
    assert c.passed and c.diff_steps is None and "unknown" in c.rule


# Logits recorded on real runs (see each file's ``meta``): the demo's and a PACS ResNet-18's ONNX
# int8 artifact, on this project's AVX2-only x86 host (onnxruntime's fused kernels), on the same
# host with graph optimizations off (the QDQ reference), and on the emulated Cortex-A72 and A76.
RECORDED = Path(__file__).parent / "fixtures" / "int8-logits"


@pytest.fixture(params=["demo", "pacs"])
def recorded(request) -> dict[str, np.ndarray]:
    with np.load(RECORDED / f"{request.param}.npz") as z:
        return {k: z[k] for k in z.files}


def test_recorded_devices_compute_the_graphs_int8_arithmetic(recorded):
    step, ref = float(recorded["step"]), recorded["reference"]
    for cpu in ("device_a72", "device_a76"):
        c = compare_logits("int8", ref, recorded[cpu], step, verdict.QDQ_REFERENCE)
        assert c.passed, (cpu, c)
        assert c.diff_steps <= 1.0 + 1e-3 and c.ties <= 1
        assert "QDQ arithmetic" in c.rule


def test_recorded_avx2_host_is_off_the_reference_and_would_have_failed_the_device(recorded):
    """Why the host is no reference for ONNX int8: without VNNI its u8 x s8 pairs saturate.
    Judged against it, the correct ARM results fail (the CI failure of issue #10)."""
    step, ref, host = float(recorded["step"]), recorded["reference"], recorded["host_avx2"]
    off = compare_logits("int8", ref, host, step, verdict.QDQ_REFERENCE)
    assert not off.passed and off.diff_steps >= 5
    for cpu in ("device_a72", "device_a76"):
        assert not compare_logits("int8", host, recorded[cpu], step).passed


def test_recorded_wrong_kernels_still_fail(recorded):
    step, ref, dev = float(recorded["step"]), recorded["reference"], recorded["device_a72"]
    # Off by two steps on one logit: other arithmetic, not requantization rounding.
    two = dev.copy()
    two[0, 0] += 2 * step
    assert not compare_logits("int8", ref, two, step).passed
    # A different answer on an image whose reference is not tied, however the logits got there.
    margins = np.sort(ref, 1)[:, -1] - np.sort(ref, 1)[:, -2]
    i = int(margins.argmax())
    swapped = dev.copy()
    a, b = np.argsort(ref[i])[-2:]
    swapped[i, [a, b]] = swapped[i, [b, a]]
    c = compare_logits("int8", ref, swapped, step)
    assert not c.passed and c.ties == compare_logits("int8", ref, dev, step).ties
    # Saturating kernels (the AVX2 host's logits standing in for a device): fail.
    assert not compare_logits("int8", ref, recorded["host_avx2"], step).passed
    # Logits of other images (a shuffled batch): fail.
    assert not compare_logits("int8", ref, dev[::-1], step).passed


def test_compare_refuses_different_shapes_and_fails_empty_runs():
    with pytest.raises(ValueError, match="shapes differ"):
        compare_logits("fp32", np.zeros((2, 3)), np.zeros((3, 3)))
    assert not compare_logits("fp32", np.zeros((0, 3)), np.zeros((0, 3))).passed


def _check(loads=True, passed=True, optimized=None) -> ArtifactCheck:
    cmp = Comparison(4, 1.0, 0.0, 1.0, None, None, passed, "r") if loads else None
    return ArtifactCheck(
        "m.onnx", "onnx", "fp32", None, "onnxruntime", "/root/er", loads, comparison=cmp,
        optimized=optimized,
    )  # fmt: skip


def test_verdicts():
    assert _check().verdict == "pass"
    assert _check(passed=False).verdict == "fail"
    assert _check(loads=False).verdict == "error"
    assert _check(optimized={"passed": False}).verdict == "fail"
    assert _check(optimized={"passed": True}).verdict == "pass"
    report = armcheck.DeviceCheckReport("cortex-a72", "Pi 4", {}, [_check(), _check(loads=False)])
    assert not report.ok and report.to_dict()["checks"][1]["verdict"] == "error"
    assert not armcheck.DeviceCheckReport("cortex-a72", "Pi 4", {}, []).ok


# --------------------------------------------------------------------------- int8 output step


def test_onnx_output_scale_reads_the_final_dequantize():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    def graph(last_op: str) -> onnx.ModelProto:
        inits = [
            helper.make_tensor("s", TensorProto.FLOAT, [], [0.25]),
            helper.make_tensor("z", TensorProto.INT8, [], [3]),
        ]
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])]
        if last_op == "DequantizeLinear":
            nodes.append(helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]))
        else:
            nodes += [
                helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
                helper.make_node("Relu", ["d"], ["y"]),
            ]
        g = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
            inits,
        )
        return helper.make_model(g)

    assert onnx_output_scale(graph("DequantizeLinear")) == 0.25
    assert onnx_output_scale(graph("Relu")) is None  # the output is not quantized


@pytest.mark.parametrize("kind", [("onnx", "int8"), ("ptl", "int8")], ids=["onnx-qdq", "ptl"])
def test_output_step_is_the_grid_the_int8_logits_lie_on(artifacts, synthetic_root, kind):
    art = artifacts[kind].artifact
    step, how = output_step(art, read_manifest(art))
    assert step and step > 0, how
    model = open_artifact(art)
    from edgerobust.data import open_dataset
    from edgerobust.runtimes.preprocess import load_input

    ds = open_dataset(synthetic_root)
    x = np.concatenate([load_input(p, 32) for p in ds.domain("webcam").paths(range(8))])
    grid = model(x).astype(np.float64) / step
    # Every logit is (q - zero_point) * step: an integer number of steps from the others.
    offsets = grid - np.round(grid)
    assert np.abs(offsets - offsets.flat[0]).max() < 1e-3
    # ... and it is the grid itself, not a fraction of it: the steps between logits share no
    # common factor (half the true step would make every difference even).
    ints = np.round(grid - offsets.flat[0]).astype(np.int64)
    assert np.gcd.reduce(np.abs(ints - ints.flat[0]).ravel()) == 1


def test_a_measured_rounding_spread_widens_the_int8_bound_and_nothing_else():
    host = _logits()
    step = 0.1
    ref = np.round(host / step) * step
    four, five = ref.copy(), ref.copy()
    four[3, 2] += 4 * step
    five[3, 2] += 5 * step
    c = compare_logits("int8", ref, four, step, verdict.QDQ_REFERENCE, max_steps=4)
    assert c.passed and c.max_steps == 4 and "rounding spread" in c.rule
    assert not compare_logits("int8", ref, five, step, verdict.QDQ_REFERENCE, max_steps=4).passed
    assert not compare_logits("int8", ref, four, step).passed  # one step by default
    # A spread below one step never tightens the rule; fp32 has no steps to widen.
    assert compare_logits("int8", ref, ref + step, step, max_steps=0.2).max_steps == 1
    assert compare_logits("fp32", host, host, max_steps=4).max_steps is None


def test_rounding_spread_probes_every_quantizer_of_the_graph(artifacts, synthetic_root):
    art = artifacts[("onnx", "int8")].artifact
    from edgerobust.data import open_dataset

    ds = open_dataset(synthetic_root)
    files = np.array(
        [str(p.relative_to(synthetic_root)) for p in ds.domain("webcam").paths(range(6))]
    )
    step, _ = output_step(art, read_manifest(art))
    ref = qdq_reference(art, synthetic_root, files)
    # A nudge of zero is the reference itself (the probe graph is the graph, on the same images).
    assert rounding_spread(art, synthetic_root, files, ref, step, probe=0.0) == 0.0
    # Float-sized nudges move a few roundings at most; a 10 % one moves the logits by many steps.
    small = rounding_spread(art, synthetic_root, files, ref, step)
    large = rounding_spread(art, synthetic_root, files, ref, step, probe=0.1)
    assert 0 <= small <= 3 and large > max(small, 3)


def test_fp32_has_no_step(artifacts):
    art = artifacts[("onnx", "fp32")].artifact
    assert output_step(art, read_manifest(art)) == (None, "fp32")


# --------------------------------------------------------------------------- the image mirror


def test_mirror_scores_the_same_images_as_the_full_dataset(artifacts, synthetic_root, tmp_path):
    arts = [artifacts[("onnx", "fp32")].artifact]
    man = read_manifest(arts[0])
    domains = ["studio", "webcam"]
    limit = 4
    real = mirror_dataset(synthetic_root, tmp_path / "mirror", domains, [man], limit)
    files = sorted(p.relative_to(tmp_path / "mirror") for p in (tmp_path / "mirror").rglob("*.png"))
    originals = sorted(
        p.relative_to(synthetic_root) for d in domains for p in (synthetic_root / d).rglob("*.png")
    )
    assert files == originals  # every name, so the split and the seeded sample are the same
    n_real = sum(1 for p in (tmp_path / "mirror").rglob("*.png") if p.stat().st_size)
    assert n_real == sum(real.values()) and all(0 < v <= limit for v in real.values())

    def scored(data: Path) -> dict:
        out = tmp_path / f"{data.name}.npz"
        rec = evaluate(
            EvalConfig(
                str(arts[0]), str(data), domains=tuple(domains), limit=limit, warmup=0,
                latency_runs=1, logits_out=str(out),
            )
        )  # fmt: skip
        assert all(not d["unreadable_skipped"] for d in rec["domains"])
        return {**load_logits(out), "n": sum(d["n"] for d in rec["domains"])}

    full, mirrored = scored(synthetic_root), scored(tmp_path / "mirror")
    assert list(full["files"]) == list(mirrored["files"]) and full["n"] == len(full["files"])
    np.testing.assert_array_equal(full["logits"], mirrored["logits"])
    np.testing.assert_array_equal(full["labels"], mirrored["labels"])
    assert full["logits"].shape == (full["n"], len(man.class_names))


# --------------------------------------------------------------------------- refusals


def _as_root_on_x86(monkeypatch, tmp_path, register: bool = True, entry: str | None = None):
    monkeypatch.setattr(emulation.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(emulation.os, "geteuid", lambda: 0)
    monkeypatch.setattr(emulation.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    binfmt = tmp_path / "binfmt_misc"
    binfmt.mkdir(parents=True)
    if register:
        (binfmt / "register").touch()
    if entry is not None:
        (binfmt / emulation.QEMU_ENTRY).write_text(entry)
    monkeypatch.setattr(emulation, "BINFMT_DIR", binfmt)
    calls: list[list[str]] = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 32, "", "mount: permission denied")

    monkeypatch.setattr(emulation, "_run", fake_run)
    return calls


QEMU_ENTRY_TEXT = (
    "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\n"
    "magic 7f454c460201010000000000000000000200b700\n"
)


def test_refuses_without_root(monkeypatch, tmp_path):
    _as_root_on_x86(monkeypatch, tmp_path, entry=QEMU_ENTRY_TEXT)
    monkeypatch.setattr(emulation.os, "geteuid", lambda: 1000)
    with pytest.raises(EmulationUnavailable, match="needs root"):
        prepare_host()


def test_refuses_on_an_arm_host(monkeypatch, tmp_path):
    _as_root_on_x86(monkeypatch, tmp_path, entry=QEMU_ENTRY_TEXT)
    monkeypatch.setattr(emulation.platform, "machine", lambda: "aarch64")
    with pytest.raises(EmulationUnavailable, match="run eval-device on it directly"):
        prepare_host()


def test_refuses_without_qemu_and_says_what_to_install(monkeypatch, tmp_path):
    _as_root_on_x86(monkeypatch, tmp_path, entry=QEMU_ENTRY_TEXT)
    monkeypatch.setattr(emulation.shutil, "which", lambda tool: None)
    with pytest.raises(EmulationUnavailable, match="apt-get install qemu-user-static"):
        prepare_host()


def test_refuses_when_binfmt_misc_cannot_be_mounted(monkeypatch, tmp_path):
    calls = _as_root_on_x86(monkeypatch, tmp_path, register=False)
    with pytest.raises(EmulationUnavailable, match="binfmt_misc cannot be mounted") as err:
        prepare_host()
    assert "permission denied" in str(err.value) and "\n" not in str(err.value)
    assert calls and calls[0][:3] == ["mount", "-t", "binfmt_misc"]
    assert "binfmt_misc cannot be mounted" in emulation_problem()


def test_refuses_when_qemu_is_not_registered(monkeypatch, tmp_path):
    calls = _as_root_on_x86(monkeypatch, tmp_path)
    with pytest.raises(EmulationUnavailable, match="not registered"):
        prepare_host()
    assert ["update-binfmts", "--enable", emulation.QEMU_ENTRY] in calls  # it tried first


def test_a_host_that_can_emulate(monkeypatch, tmp_path):
    _as_root_on_x86(monkeypatch, tmp_path, entry=QEMU_ENTRY_TEXT)
    host = prepare_host()
    assert host.fix_binary and host.interpreter.endswith("aarch64-binfmt-P")
    assert emulation_problem() is None
    _as_root_on_x86(monkeypatch, tmp_path / "p", entry=QEMU_ENTRY_TEXT.replace("PF", "P"))
    assert not prepare_host().fix_binary  # then the interpreter is copied into the root


def test_cli_refusal_is_one_line(monkeypatch, capsys, artifacts, synthetic_root):
    monkeypatch.setattr(emulation.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(emulation.platform, "machine", lambda: "x86_64")
    art = artifacts[("onnx", "int8")].artifact
    with pytest.raises(SystemExit) as exc:
        main(["device-check", str(art), "--data", str(synthetic_root), "--limit", "2"])
    assert exc.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "root" in err[0]


def test_config_mistakes_fail_before_any_work(artifacts, synthetic_root):
    art = str(artifacts[("onnx", "fp32")].artifact)
    for bad, match in (
        ({"cpu": "cortex-a53"}, "--cpu"),
        ({"limit": 0}, "--limit"),
        ({"artifacts": ()}, "at least one"),
        ({"artifacts": ("m.tflite",)}, "not an artifact"),
        ({"artifacts": (art, art)}, "two artifacts are named"),
    ):
        cfg = armcheck.DeviceCheckConfig(**{"artifacts": (art,), **bad})
        with pytest.raises(armcheck.ConfigError, match=match):
            armcheck.device_check(cfg)
    cfg = armcheck.DeviceCheckConfig((art,), data=str(synthetic_root), domains=("nope",))
    with pytest.raises(armcheck.DataError, match="no domain 'nope'"):
        armcheck.device_check(cfg)


# --------------------------------------------------------------------------- the device install


def test_debian_mirror_from_apt_sources(tmp_path):
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    assert debian_mirror(apt) == emulation.DEFAULT_MIRROR
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb\n# a comment\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert debian_mirror(apt) == "http://mirror.example/debian"
    (apt / "sources.list").write_text("deb [arch=amd64] http://old.example/debian bookworm main\n")
    assert debian_mirror(apt) == "http://old.example/debian"  # sources.list is read first


def test_base_requirements_are_the_base_install_with_this_hosts_onnxruntime():
    reqs = emulation.base_requirements()
    names = {emulation._requirement_name(r) for r in reqs}
    assert names == {"numpy", "pillow", "onnxruntime", "typer", "rich"}  # no torch: light
    assert f"onnxruntime=={importlib.metadata.version('onnxruntime')}" in reqs


def test_wheel_requires_drops_marked_dependencies(tmp_path):
    wheel = tmp_path / "torch-0-cp311-cp311-manylinux_2_28_aarch64.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(
            "torch-0.dist-info/METADATA",
            "Name: torch\nRequires-Dist: filelock\nRequires-Dist: sympy>=1.13.3\n"
            'Requires-Dist: nvidia-cudnn-cu12==9.10.2.21; platform_machine == "x86_64"\n'
            'Requires-Dist: optree>=0.13.0; extra == "optree"\n',
        )
    assert emulation._wheel_requires(wheel) == ["filelock", "sympy>=1.13.3"]


def test_source_hash_follows_the_sources_only(tmp_path):
    (tmp_path / "edgerobust").mkdir()
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'edgerobust'\n")
    (tmp_path / "edgerobust" / "a.py").write_text("x = 1\n")
    h = emulation.source_hash(tmp_path)
    (tmp_path / "edgerobust" / "__pycache__").mkdir()
    (tmp_path / "edgerobust" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "notes.txt").write_text("not packaged")
    assert emulation.source_hash(tmp_path) == h
    (tmp_path / "edgerobust" / "a.py").write_text("x = 2\n")
    assert emulation.source_hash(tmp_path) != h


def test_the_device_wheel_is_built_from_this_checkout():
    # The arm64 venvs install a wheel of these very sources; found from the package, wherever
    # the module doing the building sits (a move into a sub-package once broke this on CI).
    repo = Path(__file__).resolve().parents[1]
    assert emulation.source_tree() == repo
    files = {p.relative_to(repo).as_posix() for p in emulation._source_files(repo)}
    assert {"pyproject.toml", "edgerobust/device/emulation.py", "runtimes/ort.py"} <= files


def test_every_format_has_a_venv_on_the_emulated_pi():
    from edgerobust.device.emulation import VENVS
    from edgerobust.runtimes.formats import get_format, list_formats

    installs = {f: get_format(f).device_install for f in list_formats()}
    assert set(installs.values()) <= set(VENVS), installs
    assert installs["onnx"] == "base" and installs["pte"] == "executorch"
