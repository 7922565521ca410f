"""``edgerobust import``: models made elsewhere, as a user would bring them, then eval-device.

Each model is made here without edgerobust (plain ``torch.onnx.export`` of a torchvision model
with normalization outside the graph, an ``onnx.helper`` graph taking 0-255 NHWC, a TorchScript
file). The tool's per-image logits are compared with hand-written loops that preprocess each
image themselves (PIL resize, /255, normalize, transpose) and call the runtime directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgerobust.cli import main
from edgerobust.data import open_dataset

SIZE = 32
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- models, made as a user would


def _torch_onnx_export(model, path: Path, size: int) -> Path:
    import torch

    x = torch.rand(1, 3, size, size)
    try:  # the default exporter (dynamo) needs onnxscript; the classic one is what most files are
        import onnxscript  # noqa: F401

        torch.onnx.export(model.eval(), (x,), str(path))
    except ImportError:
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=False)
    return path


@pytest.fixture(scope="module")
def torchvision_onnx(tmp_path_factory) -> Path:
    """torchvision MobileNetV2, random init (seeded), 10 classes; normalization outside."""
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10)
    # Fresh batch-norm statistics make a random init's logits vanish (~1e-10): estimate them on
    # a few random batches, so logits are O(1), predictions differ from image to image and the
    # comparisons below mean something.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 3, SIZE, SIZE))
    return _torch_onnx_export(model, tmp_path_factory.mktemp("tv") / "mnv2.onnx", SIZE)


def _nhwc_255_graph(path: Path, n_classes: int, dtype: str = "float32", batch=None) -> Path:
    """onnx.helper: x (N,H,W,3) in 0-255 -> mean over pixels / 255 -> linear -> logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(0, 4, (3, n_classes)).astype(np.float32)
    b = rng.normal(0, 0.1, (n_classes,)).astype(np.float32)
    elem = TensorProto.UINT8 if dtype == "uint8" else TensorProto.FLOAT
    nodes = []
    src = "pixels"
    if dtype == "uint8":
        nodes.append(helper.make_node("Cast", ["pixels"], ["f"], to=TensorProto.FLOAT))
        src = "f"
    nodes += [
        helper.make_node("ReduceMean", [src, "axes"], ["m"], keepdims=0),  # (N, 3)
        helper.make_node("Div", ["m", "k255"], ["u"]),
        helper.make_node("MatMul", ["u", "w"], ["z"]),
        helper.make_node("Add", ["z", "b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "nhwc255",
        [helper.make_tensor_value_info("pixels", elem, [batch or "n", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch or "n", n_classes])],
        [
            numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
            numpy_helper.from_array(np.array(255.0, np.float32), "k255"),
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(b, "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _nhwc_reference(w_b_path: Path, x_uint8: np.ndarray) -> np.ndarray:
    """The NHWC graph's arithmetic, written out in numpy (its weights read back from the file)."""
    import onnx
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(w_b_path)).graph.initializer}
    u = x_uint8.astype(np.float32).mean(axis=(1, 2)) / 255.0
    return u @ inits["w"] + inits["b"]


class _Tiny:
    """A small CNN, scripted to TorchScript; it expects ImageNet-normalized input."""

    @staticmethod
    def save(path: Path, n_classes: int) -> Path:
        import torch
        from torch import nn

        torch.manual_seed(1)
        net = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, n_classes),
        ).eval()
        torch.jit.script(net).save(str(path))
        return path


# --------------------------------------------------------------------------- helpers


def _run(*args) -> int:
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _classes_file(tmp_path: Path, names) -> Path:
    p = tmp_path / "classes.txt"
    p.write_text("\n".join(names) + "\n")
    return p


def _hand_loop(ds_root: Path, files: list[str], fn, size: int) -> np.ndarray:
    """Each image the way a user's script would: PIL, RGB, bilinear resize, /255, NCHW."""
    out = []
    for f in files:
        with Image.open(ds_root / f) as img:
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        x = np.asarray(rgb, dtype=np.float32) / 255.0  # HWC [0, 1]
        out.append(fn(x))
    return np.concatenate(out)


def _domain_files(root: Path) -> list[str]:
    ds = open_dataset(root)
    return [
        f"{name}/{f}"
        for name, d in ds.domains.items()
        for f in d.files  # DOMAIN/CLASS/img
    ]


def _eval(artifact: Path, data: Path, tmp_path: Path, *extra) -> tuple[dict, dict]:
    rec, npz = tmp_path / "rec.json", tmp_path / "logits.npz"
    code = _run(
        "eval-device", artifact, "--data", data, "--latency-runs", 2, "--warmup", 0,
        "--batch-size", 7, "--out", rec, "--logits-out", npz, *extra,
    )  # fmt: skip
    assert code == 0
    with np.load(npz) as z:
        logits = {"files": z["files"].tolist(), "logits": z["logits"], "labels": z["labels"]}
    return json.loads(rec.read_text()), logits


# --------------------------------------------------------------------------- the three kinds of file


def test_torchvision_onnx_matches_a_hand_written_onnxruntime_loop(
    torchvision_onnx, synthetic_root, tmp_path
):
    import onnxruntime as ort

    out = tmp_path / "models"
    mean, std = ",".join(map(str, MEAN)), ",".join(map(str, STD))
    code = _run(
        "import", torchvision_onnx, "--classes", synthetic_root, "--input-size", SIZE,
        "--mean", mean, "--std", std, "--out", out,
    )  # fmt: skip
    assert code == 0
    art = out / "mnv2.onnx"
    man = json.loads((out / "mnv2.json").read_text())
    assert man["source"]["kind"] == "imported" and man["format"] == "onnx"
    assert man["input"]["mean"] == list(MEAN) and man["input"]["shape"][0] == 1  # fixed batch 1
    assert man["class_names"] == list(open_dataset(synthetic_root).classes)
    outputs = man["source"]["signature"]["outputs"]
    assert len(outputs) == 1 and outputs[0]["shape"] == [1, 10]
    assert art.read_bytes() == torchvision_onnx.read_bytes()  # the user's file, byte for byte

    rec, got = _eval(art, synthetic_root, tmp_path)
    sess = ort.InferenceSession(str(torchvision_onnx), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    m, s = np.asarray(MEAN, np.float32), np.asarray(STD, np.float32)

    def one(x: np.ndarray) -> np.ndarray:
        x = ((x - m) / s).transpose(2, 0, 1)[None].astype(np.float32)
        return sess.run(None, {name: x})[0]

    ref = _hand_loop(synthetic_root, got["files"], one, SIZE)
    np.testing.assert_allclose(got["logits"], ref, atol=1e-4, rtol=1e-4)
    assert (got["logits"].argmax(1) == ref.argmax(1)).all()
    assert np.abs(ref).max() > 0.05 and len(set(ref.argmax(1).tolist())) > 1  # not constants
    # Accuracy per domain: the tool's count equals the hand loop's, image by image.
    for d in rec["domains"]:
        mine = [i for i, f in enumerate(got["files"]) if f.startswith(d["domain"] + "/")]
        assert d["correct"] == int((ref[mine].argmax(1) == got["labels"][mine]).sum())

    # The recorded normalization matters: imported without it, the logits differ.
    code = _run(
        "import", torchvision_onnx, "--classes", synthetic_root, "--input-size", SIZE,
        "--out", out, "--name", "raw",
    )  # fmt: skip
    assert code == 0
    _, raw = _eval(out / "raw.onnx", synthetic_root, tmp_path)
    assert np.abs(raw["logits"] - ref).max() > 1e-2


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_nhwc_0_255_onnx_from_the_helper_api(dtype, synthetic_root, tmp_path):
    n = len(open_dataset(synthetic_root).classes)
    src = _nhwc_255_graph(tmp_path / f"nhwc-{dtype}.onnx", n, dtype)
    out = tmp_path / "models"
    args = ["--input-range", "0-255"] if dtype == "float32" else []  # uint8 implies 0-255
    code = _run(
        "import", src, "--classes", synthetic_root, "--input-size", SIZE, "--out", out, *args
    )
    assert code == 0
    man = json.loads((out / src.with_suffix(".json").name).read_text())
    assert man["input"]["layout"] == "NHWC"  # read from the file's input shape
    assert man["input"]["range"] == [0.0, 255.0] and man["input"]["dtype"] == dtype
    assert man["input"]["shape"] == [-1, SIZE, SIZE, 3]

    _, got = _eval(out / src.name, synthetic_root, tmp_path)
    ref = _hand_loop(
        synthetic_root,
        got["files"],
        lambda x: _nhwc_reference(src, np.rint(x * 255)[None].astype(np.uint8)),
        SIZE,
    )
    np.testing.assert_allclose(got["logits"], ref, atol=1e-4, rtol=1e-4)


def test_nhwc_without_its_range_is_fed_wrong(synthetic_root, tmp_path):
    """The contract is what makes the numbers right: the same file declared 0-1 differs."""
    n = len(open_dataset(synthetic_root).classes)
    src = _nhwc_255_graph(tmp_path / "nhwc.onnx", n)
    out = tmp_path / "models"
    assert _run("import", src, "--classes", synthetic_root, "--input-size", SIZE, "--out", out) == 0
    _, got = _eval(out / "nhwc.onnx", synthetic_root, tmp_path)
    ref = _hand_loop(
        synthetic_root,
        got["files"],
        lambda x: _nhwc_reference(src, np.rint(x * 255)[None].astype(np.uint8)),
        SIZE,
    )
    assert np.abs(got["logits"] - ref).max() > 1e-2


def test_torchscript_file(synthetic_root, tmp_path):
    import torch

    n = len(open_dataset(synthetic_root).classes)
    src = _Tiny.save(tmp_path / "tiny.pt", n)
    out = tmp_path / "models"
    mean, std = ",".join(map(str, MEAN)), ",".join(map(str, STD))
    code = _run(
        "import", src, "--classes", synthetic_root, "--input-size", SIZE,
        "--mean", mean, "--std", std, "--out", out,
    )  # fmt: skip
    assert code == 0
    man = json.loads((out / "tiny.json").read_text())
    assert man["format"] == "torchscript" and man["params"] == 8 * 3 * 9 + 8 + 8 * n + n
    rec, got = _eval(out / "tiny.pt", synthetic_root, tmp_path)
    module = torch.jit.load(str(src)).eval()
    m, s = np.asarray(MEAN, np.float32), np.asarray(STD, np.float32)

    def one(x: np.ndarray) -> np.ndarray:
        x = ((x - m) / s).transpose(2, 0, 1)[None].astype(np.float32)
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    ref = _hand_loop(synthetic_root, got["files"], one, SIZE)
    np.testing.assert_allclose(got["logits"], ref, atol=1e-5, rtol=1e-5)
    assert sum(d["correct"] for d in rec["domains"]) == int((ref.argmax(1) == got["labels"]).sum())

    # The report shows it: one row of Table 2, every domain a target (no known source domain).
    from edgerobust.report import ReportConfig, write_report

    results = tmp_path / "results"
    results.mkdir()
    (results / "eval.json").write_text(json.dumps(rec))
    res = write_report(ReportConfig(str(results), str(tmp_path / "report")))
    table2 = next(t for t in res.tables if t.name == "table2")
    assert len(table2.rows) == 1 and table2.rows[0][1] == "imported"
    assert any("imported→webcam" in c for c in table2.columns)


# --------------------------------------------------------------------------- downstream


def test_saltpepper_and_bench_on_an_imported_nhwc_model(synthetic_root, tmp_path):
    from edgerobust.evaluate.bench import BenchConfig, run_bench

    n = len(open_dataset(synthetic_root).classes)
    src = _nhwc_255_graph(tmp_path / "nhwc.onnx", n, batch=1)  # fixed batch 1 as well
    out = tmp_path / "models"
    code = _run(
        "import", src, "--classes", synthetic_root, "--input-size", SIZE, "--out", out,
        "--input-range", "0-255",
    )  # fmt: skip
    assert code == 0
    rec, _ = _eval(
        out / "nhwc.onnx", synthetic_root, tmp_path,
        "--domains", "webcam", "--attack", "saltpepper", "--eps", "0,15", "--sp-steps", 20,
    )  # fmt: skip
    d = rec["domains"][0]
    clean, robust = d["accuracy"], d["attack"]["robust_accuracy"]
    assert robust[0] == pytest.approx(clean)  # eps 0 is the clean accuracy
    assert robust[1] <= clean
    assert "input_contract" in rec["runtime"]

    res = run_bench(
        BenchConfig(str(out / "nhwc.onnx"), str(synthetic_root), "webcam", runs=3, repeats=1)
    )
    assert res["n"] > 0 and res["latency_ratio"] > 0


def test_import_of_onnx_needs_no_torch(synthetic_root, tmp_path):
    """On a device with only the base install, an ONNX file imports and evaluates."""
    from tests.test_torch_free import RUN_CLI, _child

    n = len(open_dataset(synthetic_root).classes)
    src = _nhwc_255_graph(tmp_path / "nhwc.onnx", n, "uint8")
    out = tmp_path / "models"
    proc = _child(RUN_CLI, "import", src, "--classes", synthetic_root, "--input-size", SIZE,
                  "--out", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "MODULES []" in proc.stdout
    proc = _child(RUN_CLI, "eval-device", out / "nhwc.onnx", "--data", synthetic_root,
                  "--latency-runs", 1, "--warmup", 0)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "MODULES []" in proc.stdout


# --------------------------------------------------------------------------- bad input: one line


def _one_line_error(capsys, tmp_path: Path, *args, expect: str) -> None:
    out = tmp_path / "bad-out"
    code = _run("import", *args, "--out", out)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert expect in err, err
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_bad_inputs_get_one_line(capsys, tmp_path, synthetic_root, torchvision_onnx):
    import onnx
    import torch
    from onnx import TensorProto, helper

    classes = _classes_file(tmp_path, [f"c{i}" for i in range(7)])
    size = ["--input-size", SIZE]

    # not there; not a model format; not loadable
    _one_line_error(capsys, tmp_path, tmp_path / "nope.onnx", "--classes", classes, *size,
                    expect="model file not found")  # fmt: skip
    h5 = tmp_path / "m.h5"
    h5.write_bytes(b"\x89HDF\r\n")
    _one_line_error(capsys, tmp_path, h5, "--classes", classes, *size,
                    expect="not a format edgerobust can run")  # fmt: skip
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf" * 10)
    _one_line_error(capsys, tmp_path, junk, "--classes", classes, *size,
                    expect="does not load as ONNX")  # fmt: skip
    pickled = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, pickled)
    _one_line_error(capsys, tmp_path, pickled, "--classes", classes, *size,
                    expect="does not load as TorchScript")  # fmt: skip

    # no single image input: two inputs; a rank-2 input
    two = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        "two",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, [1, 7]) for k in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7])],
    )
    two_path = tmp_path / "two.onnx"
    onnx.save(helper.make_model(two, opset_imports=[helper.make_opsetid("", 18)]), two_path)
    _one_line_error(capsys, tmp_path, two_path, "--classes", classes, *size,
                    expect="has 2 inputs (a, b)")  # fmt: skip
    flat = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["y"])],
        "flat",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7])],
    )
    flat_path = tmp_path / "flat.onnx"
    onnx.save(helper.make_model(flat, opset_imports=[helper.make_opsetid("", 18)]), flat_path)
    _one_line_error(capsys, tmp_path, flat_path, "--classes", classes, *size,
                    expect="not one image batch")  # fmt: skip

    # output width vs classes: static (ONNX) and found by running (TorchScript)
    _one_line_error(capsys, tmp_path, torchvision_onnx, "--classes", classes, *size,
                    expect="has shape [1, 10] but 7 classes")  # fmt: skip
    ts = _Tiny.save(tmp_path / "tiny.pt", 10)
    _one_line_error(capsys, tmp_path, ts, "--classes", classes, *size,
                    expect="output of shape [1, 10] for one image but 7 classes")  # fmt: skip

    # input size against a fixed-shape file; options
    _one_line_error(capsys, tmp_path, torchvision_onnx, "--classes", synthetic_root,
                    "--input-size", 64, expect="pass --input-size 32")  # fmt: skip
    _one_line_error(capsys, tmp_path, torchvision_onnx, "--classes", synthetic_root, *size,
                    "--mean", "0.5,0.5", "--std", "1,1,1", expect="--mean needs 3 values")  # fmt: skip
    _one_line_error(capsys, tmp_path, torchvision_onnx, "--classes", synthetic_root, *size,
                    "--mean", "a,b,c", expect="--mean takes comma-separated numbers")  # fmt: skip
    u8 = _nhwc_255_graph(tmp_path / "u8.onnx", 10, "uint8")
    _one_line_error(capsys, tmp_path, u8, "--classes", synthetic_root, *size,
                    "--mean", "1,1,1", "--std", "1,1,1", expect="is uint8")  # fmt: skip
    nchw_says_nhwc = torchvision_onnx
    _one_line_error(capsys, tmp_path, nchw_says_nhwc, "--classes", synthetic_root, *size,
                    "--layout", "nhwc", expect="no 3 RGB channels")  # fmt: skip

    # classes
    _one_line_error(capsys, tmp_path, torchvision_onnx, "--classes", tmp_path / "none.txt",
                    *size, expect="--classes")  # fmt: skip
    _one_line_error(capsys, tmp_path, torchvision_onnx, "--classes",
                    _classes_file(tmp_path, ["only"]), *size, expect="at least 2")  # fmt: skip


def test_eval_device_without_manifest_points_to_import(capsys, torchvision_onnx, synthetic_root):
    code = _run("eval-device", torchvision_onnx, "--data", synthetic_root)
    err = capsys.readouterr().err
    assert code != 0 and "edgerobust import" in err


# --------------------------------------------------------------------------- the contract itself


def test_contract_conversion_and_fixed_batch_chunks():
    from edgerobust.runtimes import ContractRuntime, InputContract

    seen = []

    class Fake:  # a runtime whose file takes 0-255 NHWC uint8 in batches of exactly 3
        manifest = None

        def __call__(self, x):
            seen.append(x.shape)
            assert x.dtype == np.uint8 and x.shape[0] == 3
            return x.reshape(3, -1)[:, :4].astype(np.float32)

    c = InputContract(layout="NHWC", range_max=255.0, dtype="uint8", batch=3)
    x = np.random.default_rng(0).random((7, 3, 4, 4), dtype=np.float32)
    got = ContractRuntime(Fake(), c)(x)
    want = np.rint(x.transpose(0, 2, 3, 1) * 255).reshape(7, -1)[:, :4]
    np.testing.assert_array_equal(got, want)
    assert seen == [(3, 4, 4, 3)] * 3  # 7 images: 3 + 3 + (1 padded to 3)
    norm = InputContract(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).apply(x)
    np.testing.assert_allclose(norm, (x - 0.5) / 0.25, rtol=1e-6)
    assert InputContract.from_input({"shape": [-1, 3, 8, 8], "range": [0.0, 1.0]}).standard
