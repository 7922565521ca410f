"""Every command that reads files, fed the files real users have: odd-but-valid ones must work,
invalid ones must end in ONE ``error:`` line, a non-zero exit, no traceback and no output file.

The corpus is built here, in each test's temporary folder (images of every mode and format,
truncated and oversized files, damaged manifests and records, wrong-kind files, bad paths, bad
option values). Property-based parts (hypothesis) generate more of the same: the default run
keeps ``max_examples`` small; ``-m slow`` runs the ``fuzz-slow`` profile with many more.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgerobust.cli import main

QUICK = settings(
    max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
SLOW = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
EVAL_FAST = ("--latency-runs", "1", "--warmup", "0", "--limit", "3")


def run(capsys, *args) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, fragment: str = "") -> None:
    assert code not in (0, None), (out, err)
    assert "Traceback" not in err + out, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def png_bomb(path: Path, width: int = 40_000, height: int = 40_000) -> Path:
    """A 100-byte PNG that declares width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )
    return path


# --------------------------------------------------------------------------- odd-but-valid images


def odd_images(folder: Path) -> dict[str, bool]:
    """Write one image per unusual mode/format into ``folder``; name -> whether it must decode."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8))
    wide = (rng.integers(0, 256, (24, 20)) * 257).astype(np.uint16)
    folder.mkdir(parents=True, exist_ok=True)
    before = set(folder.iterdir())
    rgb.save(folder / "plain.gif")
    frames = [rgb.rotate(a) for a in (0, 90, 180)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(wide).save(folder / "gray16.png")
    Image.fromarray(wide).save(folder / "gray16.tif")
    Image.fromarray(wide.astype(np.int32)).save(folder / "int32.tif")
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    rgb.convert("P").save(folder / "palette-alpha.png", transparency=3)
    rgb.convert("LA").save(folder / "gray-alpha.png")
    rgb.convert("1").save(folder / "bilevel.png")
    rgb.convert("RGBA").save(folder / "rgba.webp")
    rgb.save(folder / "multi.tiff")
    rgb.save(folder / "icon.ico")
    rgb.save(folder / "pixmap.ppm")
    rgb.save(folder / "targa.tga")
    rgb.save(folder / "UPPER.JPG")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "one-pixel.png")
    Image.new("RGB", (400, 1), (0, 90, 0)).save(folder / "sliver.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    rgb.save(folder / "exif-rotated.jpg", exif=exif)
    names = {p.name: True for p in set(folder.iterdir()) - before}
    Image.fromarray(rng.random((8, 8), dtype=np.float32)).save(folder / "float.tif")
    png_bomb(folder / "bomb.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.png").write_bytes((folder / "one-pixel.png").read_bytes()[:40])
    (folder / "text.jpg").write_text("not an image")
    return {
        **names,
        "float.tif": False,
        "bomb.png": False,
        "empty.jpg": False,
        "truncated.png": False,
        "text.jpg": False,
    }


@pytest.fixture
def odd_dataset(synthetic_copy: Path) -> tuple[Path, dict[str, bool]]:
    """The tiny dataset with odd images, stray files and folders added to webcam/<first class>
    (a target domain: evaluation reads all of it)."""
    cls = sorted(p for p in (synthetic_copy / "webcam").iterdir() if p.is_dir())[0]
    expected = odd_images(cls)
    (cls / "notes.txt").write_text("labels were checked by hand")
    (cls / ".DS_Store").write_bytes(b"\0\0\0\1")
    (cls / "nested").mkdir()
    Image.new("RGB", (4, 4)).save(cls / "nested" / "deeper.png")
    os.symlink(cls / "gone.png", cls / "dangling.png")
    (synthetic_copy / "webcam" / "README").write_text("stray")
    return synthetic_copy, expected


def test_data_reads_every_format_and_lists_everything_else(capsys, odd_dataset, tmp_path):
    root, expected = odd_dataset
    summary = tmp_path / "summary.json"
    code, out, err = run(capsys, "data", root, "--json", summary)
    assert code == 0 and "Traceback" not in out + err and err == "", err
    rep = json.loads(summary.read_text())
    cls = sorted(p for p in (root / "webcam").iterdir() if p.is_dir())[0].name
    unreadable = {Path(k).name: v for k, v in rep["unreadable"].get("webcam", {}).items()}
    assert {n for n, ok in expected.items() if not ok} == set(unreadable)
    assert "decompression bomb" in unreadable["bomb.png"]
    assert "mode F" in unreadable["float.tif"] and "empty" in unreadable["empty.jpg"]
    n_images = rep["counts"]["webcam"][rep["classes"].index(cls)]
    assert n_images == 10 + len(expected)  # every odd image is in the dataset
    ignored = rep["ignored"]
    for rel in ("notes.txt", ".DS_Store", "nested/", "dangling.png"):
        assert f"webcam/{cls}/{rel}" in ignored, ignored
    assert "webcam/README" in ignored and "SOURCE.txt" in ignored
    for rel in ignored:
        assert rel.split("/")[-1] in out or rel.rstrip("/").split("/")[-1] in out


def test_eval_device_on_odd_images_lists_the_unreadable_ones(
    capsys, odd_dataset, artifacts, tmp_path
):
    root, expected = odd_dataset
    rec = tmp_path / "eval.json"
    art = artifacts[("onnx", "fp32")].artifact
    code, out, err = run(
        capsys,
        "eval-device",
        art,
        "--data",
        root,
        "--domains",
        "webcam",
        "--latency-runs",
        "1",
        "--warmup",
        "0",
        "--out",
        rec,
    )
    assert code == 0 and err == "" and "Traceback" not in out, err
    dom = json.loads(rec.read_text())["domains"][0]
    bad = sum(not ok for ok in expected.values())
    assert sorted(Path(f).name for f in dom["unreadable_skipped"]) == sorted(
        n for n, ok in expected.items() if not ok
    )
    assert dom["n"] == 100 + len(expected) - bad


def test_the_same_pixels_in_training_calibration_and_evaluation(tmp_path):
    """One decoder (runtimes.preprocess.open_rgb) serves all three: EXIF orientation is applied,
    16-bit is scaled, not clipped to white."""
    from edgerobust.data import decode_domain, open_dataset
    from edgerobust.runtimes.preprocess import decode_image

    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (10, 16, 3), dtype=np.uint8)
    folder = tmp_path / "d" / "dom" / "cls"
    folder.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(folder / "rot.png", exif=exif)
    Image.fromarray(arr[..., 0].astype(np.uint16) * 257).save(folder / "wide.png")
    upright = decode_image(folder / "rot.png", 16)
    reference = np.asarray(
        Image.fromarray(arr)
        .transpose(Image.Transpose.ROTATE_270)
        .resize((16, 16), Image.Resampling.BILINEAR)
    )
    np.testing.assert_array_equal(upright, reference)
    wide = decode_image(folder / "wide.png", 16)
    gray = np.asarray(Image.fromarray(arr[..., 0]).resize((16, 16), Image.Resampling.BILINEAR))
    assert np.abs(wide[..., 0].astype(int) - gray).max() <= 1
    dom = open_dataset(tmp_path / "d").domain("dom")
    images = decode_domain(dom, 16, cache=False)
    np.testing.assert_array_equal(images.pixels[dom.files.index("cls/rot.png")], upright)


# --------------------------------------------------------------------------- bad inputs, every command


def _manifest_cases(art: Path) -> dict[str, object]:
    good = json.loads(art.with_suffix(".json").read_text())
    return {
        "malformed": json.dumps(good)[:-9],
        "empty": "",
        "binary": b"\xff\xfe\x00\x01",
        "a list": [good],
        "missing keys": {k: v for k, v in good.items() if k not in ("sha256", "class_names")},
        "wrong types": {**good, "class_names": 7},
        "bad input shape": {**good, "input": {**good["input"], "shape": "224"}},
        "newer version": {**good, "manifest_version": 99},
        "another file": {**good, "file": "other.onnx"},
    }


MANIFEST_FRAGMENTS = {
    "malformed": "not JSON",
    "empty": "not JSON",
    "binary": "not JSON",
    "a list": "not an object",
    "missing keys": "missing key(s) class_names, sha256",
    "wrong types": "class_names",
    "bad input shape": "input.shape",
    "newer version": "upgrade edgerobust",
    "another file": "describes other.onnx",
}


@pytest.mark.parametrize("case", sorted(MANIFEST_FRAGMENTS))
@pytest.mark.parametrize("command", ["eval-device", "bench", "bench-saltpepper", "device-check"])
def test_damaged_manifest(
    capsys, artifacts, artifact_copy, synthetic_root, tmp_path, case, command
):
    art = artifact_copy(artifacts[("onnx", "fp32")])
    value = _manifest_cases(art)[case]
    mpath = art.with_suffix(".json")
    if isinstance(value, bytes):
        mpath.write_bytes(value)
    else:
        mpath.write_text(value if isinstance(value, str) else json.dumps(value))
    out_file = tmp_path / "o" / "out.json"
    code, out, err = run(capsys, command, art, "--data", synthetic_root, "--out", out_file)
    assert_one_line_error(code, out, err, MANIFEST_FRAGMENTS[case])
    assert not out_file.parent.exists()


def _bad_cases(tmp: Path, root: Path, ckpt: Path, art: Path) -> list[tuple[str, list, str]]:
    """(name, argv, fragment of the one error line). Outputs point into ``tmp / 'o'``."""
    afile = tmp / "afile"
    afile.write_text("a file, not a folder")
    text = tmp / "notes.txt"
    text.write_text("hello")
    empty = tmp / "empty.safetensors"
    empty.write_bytes(b"")
    trunc = tmp / "trunc.safetensors"
    trunc.write_bytes(ckpt.read_bytes()[:200])
    binary = tmp / "random.toml"
    binary.write_bytes(bytes(range(256)))
    wrong_study = tmp / "wrong.toml"
    wrong_study.write_text('[study]\nname = "x"\n[train]\nepochs = "many"\n')
    spec_list = tmp / "spec-list.safetensors"
    _with_spec(ckpt, spec_list, "[1, 2]")
    spec_bad = tmp / "spec-bad.safetensors"
    _with_spec(ckpt, spec_bad, "{not json")
    o = tmp / "o"
    out_file = o / "r.json"
    ev = ["eval-device", art, "--data", root, *EVAL_FAST]
    return [
        ("data: missing", ["data", tmp / "nope"], "not found"),
        ("data: a file", ["data", afile], "is a file"),
        (
            "data: --json under a file",
            ["data", root, "--json", afile / "s.json"],
            "is a file, not a folder",
        ),
        ("data: --json a folder", ["data", root, "--json", tmp], "is a folder"),
        (
            "data: val fraction",
            ["data", root, "--val-fraction", "1.5", "--json", out_file],
            "val fraction",
        ),
        ("eval: artifact folder", ["eval-device", tmp, "--data", root], "not an artifact"),
        ("eval: text artifact", ["eval-device", text, "--data", root], "not an artifact"),
        ("eval: data missing", [*ev, "--data", tmp / "nope", "--out", out_file], "not found"),
        ("eval: --out under a file", [*ev, "--out", afile / "r.json"], "is a file, not a folder"),
        ("eval: --out a folder", [*ev, "--out", tmp], "is a folder"),
        ("eval: --logits-out under a file", [*ev, "--logits-out", afile / "l.npz"], "is a file"),
        ("eval: threads 0", [*ev, "--threads", "0", "--out", out_file], "--threads"),
        ("eval: batch 0", [*ev, "--batch-size", "0", "--out", out_file], "--batch-size"),
        ("eval: limit -1", [*ev, "--limit", "-1", "--out", out_file], "--limit"),
        ("eval: no domains", [*ev, "--domains", ",", "--out", out_file], "empty"),
        ("eval: unknown domain", [*ev, "--domains", "mars", "--out", out_file], "mars"),
        ("eval: eps without attack", [*ev, "--eps", "1", "--out", out_file], "--attack"),
        ("eval: bad eps", [*ev, "--attack", "saltpepper", "--eps", "x", "--out", out_file], "x"),
        (
            "bench: --out under a file",
            ["bench", art, "--data", root, "--out", afile / "b.json"],
            "is a file",
        ),
        ("spbench: bad eps", ["bench-saltpepper", art, "--eps", "one", "--out", out_file], "one"),
        ("export: text checkpoint", ["export", text, "--out", o], "not an edgerobust checkpoint"),
        ("export: empty checkpoint", ["export", empty, "--out", o], "not an edgerobust checkpoint"),
        (
            "export: truncated checkpoint",
            ["export", trunc, "--out", o],
            "not an edgerobust checkpoint",
        ),
        ("export: spec not an object", ["export", spec_list, "--out", o], "spec is damaged"),
        ("export: spec not JSON", ["export", spec_bad, "--out", o], "spec is damaged"),
        (
            "export: name with a folder",
            ["export", ckpt, "--name", "../x", "--out", o],
            "plain file name",
        ),
        ("usage: unknown command", ["prune", ckpt], "No such command"),
        ("usage: unknown option", ["data", root, "--colour", "red"], "--colour"),
        ("usage: not a number", ["data", root, "--seed", "one"], "--seed"),
        ("usage: missing argument", ["eval-device"], "Missing argument"),
        ("bench: runs 0", ["bench", art, "--data", root, "--runs", "0"], "--runs must be >= 1"),
        (
            "train: device tpu",
            ["train", "--data", root, "--source", "studio", "--out", o, "--device", "tpu"],
            "--device",
        ),
        (
            "train: device cuda:7",
            ["train", "--data", root, "--source", "studio", "--out", o, "--device", "cuda:7"],
            "--device",
        ),
        ("attack: device", ["attack", ckpt, "--device", "gpu0", "--out", out_file], "--device"),
        ("export: folder without model", ["export", tmp, "--out", o], "checkpoint not found"),
        ("export: --out under a file", ["export", ckpt, "--out", afile / "m"], "is a file"),
        ("export: --out a file", ["export", ckpt, "--out", afile], "a folder is needed"),
        ("export: agreement 2", ["export", ckpt, "--min-agreement", "2", "--out", o], "agreement"),
        (
            "train: data missing",
            [
                "train",
                "--data",
                tmp / "nope",
                "--source",
                "studio",
                "--out",
                o,
                "--arch",
                "tinyresnet",
            ],
            "not found",
        ),
        (
            "train: unknown source",
            ["train", "--data", root, "--source", "mars", "--out", o, "--arch", "tinyresnet"],
            "mars",
        ),
        (
            "train: --out a file",
            ["train", "--data", root, "--source", "studio", "--out", afile],
            "a folder is needed",
        ),
        (
            "quantize: text checkpoint",
            ["compress", "quantize", text, "--out", o],
            "not an edgerobust checkpoint",
        ),
        (
            "quantize: --out under a file",
            ["compress", "quantize", ckpt, "--out", afile / "q"],
            "is a file",
        ),
        (
            "prune: text checkpoint",
            ["compress", "prune", text, "--out", o, "--ratio", "0.3"],
            "not an edgerobust checkpoint",
        ),
        (
            "distill: text teacher",
            [
                "compress",
                "distill",
                "--teacher",
                text,
                "--data",
                root,
                "--source",
                "studio",
                "--out",
                o,
                "--student",
                "tinyresnet",
                "--student-weights",
                "none",
            ],
            "not an edgerobust checkpoint",
        ),
        (
            "attack: text checkpoint",
            ["attack", text, "--out", out_file],
            "not an edgerobust checkpoint",
        ),
        (
            "attack: unknown attack",
            ["attack", ckpt, "--attacks", "laser", "--out", out_file],
            "laser",
        ),
        ("attack: --out under a file", ["attack", ckpt, "--out", afile / "a.json"], "is a file"),
        ("run: missing study", ["run", tmp / "nope.toml", "--out", o], "not found"),
        ("run: binary study", ["run", binary, "--out", o], "UTF-8"),
        ("run: wrong types", ["run", wrong_study, "--out", o], "dataset"),
        ("run: --out under a file", ["run", wrong_study, "--out", afile / "x"], "is a file"),
        ("report: missing", ["report", tmp / "nope", "--out", o], "not found"),
        ("report: empty folder", ["report", o.parent / "emptydir", "--out", o], "no records"),
        ("report: --out under a file", ["report", root, "--out", afile / "r"], "is a file"),
    ]


def _with_spec(ckpt: Path, dest: Path, spec: str) -> None:
    """Copy a checkpoint with its spec metadata replaced by ``spec`` (any text)."""
    from edgerobust.models.checkpoint import SPEC_KEY

    raw = ckpt.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"] = {**header["__metadata__"], SPEC_KEY: spec}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    dest.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def test_bad_inputs_for_every_command(
    capsys, synthetic_root, trained, artifacts, artifact_copy, tmp_path
):
    art = artifact_copy(artifacts[("onnx", "fp32")])
    (tmp_path / "emptydir").mkdir()
    cases = _bad_cases(tmp_path, synthetic_root, trained.checkpoint, art)
    failures = []
    for name, argv, fragment in cases:
        before = listing(tmp_path)
        code, out, err = run(capsys, *argv)
        try:
            assert_one_line_error(code, out, err, fragment)
            assert listing(tmp_path) == before, "wrote something"
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)


def test_damaged_records_in_a_report(capsys, trained, tmp_path):
    good = json.loads((trained.run / "train.json").read_text())
    cases = {
        "newer version": ({**good, "record_version": 99}, "upgrade edgerobust"),
        "missing key": (
            {k: v for k, v in good.items() if k != "val_accuracy"},
            "missing key(s) val_accuracy",
        ),
        "wrong type": ({**good, "val_accuracy": "high"}, "val_accuracy is str"),
        "out of range": ({**good, "val_accuracy": 7.5}, "not a fraction"),
        "not JSON": ('{"record": "train", ', "could not be read"),
    }
    for name, (value, fragment) in cases.items():
        folder = tmp_path / name.replace(" ", "-")
        folder.mkdir()
        (folder / "train.json").write_text(value if isinstance(value, str) else json.dumps(value))
        code, out, err = run(capsys, "report", folder)
        assert_one_line_error(code, out, err, fragment)
        assert not (folder / "report").exists(), name


# --------------------------------------------------------------------------- property-based


FORMATS = {
    "png": "PNG",
    "jpg": "JPEG",
    "gif": "GIF",
    "bmp": "BMP",
    "tif": "TIFF",
    "webp": "WEBP",
    "ppm": "PPM",
    "tga": "TGA",
}
MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]


@st.composite
def image_files(draw) -> tuple[bytes, str, str]:
    """An image in some mode and format, maybe damaged: (bytes, suffix, damage)."""
    import io

    w, h = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    mode = draw(st.sampled_from(MODES))
    suffix = draw(st.sampled_from(sorted(FORMATS)))
    seed = draw(st.integers(0, 2**16))
    rgb = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    elif mode == "F":
        img = rgb.convert("F")
    else:
        img = rgb.convert(mode)
    buf = io.BytesIO()
    try:
        img.save(buf, FORMATS[suffix])
    except (OSError, ValueError, KeyError):
        rgb.save(buf, FORMATS[suffix])  # a mode this format cannot store
    data = buf.getvalue()
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip", "garbage", "empty"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif damage == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    elif damage == "garbage":
        data = draw(st.binary(min_size=0, max_size=64)) + data[:32]
    elif damage == "empty":
        data = b""
    return data, suffix, damage


def _decode_property(sample: tuple[bytes, str, str]) -> None:
    import tempfile

    from edgerobust.runtimes.preprocess import ImageDecodeError, decode_image

    data, suffix, damage = sample
    with tempfile.TemporaryDirectory(prefix="edgerobust-fuzz-") as tmp:
        path = Path(tmp) / f"x.{suffix}"
        path.write_bytes(data)
        try:
            out = decode_image(path, 8)
        except ImageDecodeError as exc:
            assert exc.reason and "\n" not in exc.reason
            with Image.open(path) if damage == "none" else _nothing() as img:
                assert img is None or img.mode == "F", (img.mode, exc.reason)
            return
        assert out.shape == (8, 8, 3) and out.dtype == np.uint8


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@QUICK
@given(image_files())
def test_decode_either_reads_or_refuses_with_a_reason(sample):
    """Any bytes: an (8, 8, 3) uint8 image or ImageDecodeError, nothing else; an undamaged
    image is refused only for a reason (float pixels)."""
    _decode_property(sample)


@pytest.mark.slow
@SLOW
@given(image_files())
def test_decode_either_reads_or_refuses_with_a_reason_many(sample):
    _decode_property(sample)


ENTRY = st.sampled_from(["image", "text", "empty", "folder", "hidden", "link", "bomb"])
NAME = st.text(st.characters(codec="utf-8", exclude_characters="/\0"), min_size=1, max_size=12)


@st.composite
def dataset_trees(draw) -> list[tuple[str, str, str, str]]:
    """Entries (domain, class, name, kind) of a dataset folder, names and kinds drawn."""
    entries = []
    for d in ("a", "b"):
        for c in ("x", "y"):
            entries.append((d, c, "base.png", "image"))
            for _ in range(draw(st.integers(0, 3))):
                suffix = draw(st.sampled_from(["", ".png", ".gif", ".JPG", ".txt", ".tif", ".h5"]))
                entries.append((d, c, draw(NAME) + suffix, draw(ENTRY)))
    return entries


def _write_tree(root: Path, entries) -> None:
    for d, c, name, kind in entries:
        folder = root / d / c
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        if name in (".", "..") or path.exists() or path.is_symlink():
            continue
        try:
            if kind == "image":
                Image.new("RGB", (6, 5), (len(name), 30, 90)).save(path, format="PNG")
            elif kind == "text":
                path.write_text("text")
            elif kind == "empty":
                path.write_bytes(b"")
            elif kind == "folder":
                path.mkdir()
                (path / "inner.png").write_bytes(b"")
            elif kind == "hidden":
                (folder / f".{name}").write_bytes(b"\0")
            elif kind == "link":
                os.symlink(folder / "missing-target", path)
            elif kind == "bomb":
                png_bomb(path, 30_000, 30_000)
        except OSError:  # a name this file system refuses (too long in bytes)
            continue


def _data_property(entries) -> None:
    """`data` accounts for every entry: counted as an image, listed unreadable, or listed as
    ignored (a folder covers what is inside it); or it fails with one line and writes nothing."""
    import contextlib
    import io
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgerobust-fuzz-") as tmp:
        root = Path(tmp) / "data"
        _write_tree(root, entries)
        summary = Path(tmp) / "s.json"
        err, out = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                main(["data", str(root), "--json", str(summary)])
            except SystemExit as exc:
                code = exc.code
        if code:
            assert_one_line_error(code, out.getvalue(), err.getvalue())
            assert not summary.exists()
            return
        rep = json.loads(summary.read_text())
        n_images = sum(sum(c) for c in rep["counts"].values())
        ignored = set(rep["ignored"])
        found = [p for p in root.rglob("*") if not p.is_dir() or p.is_symlink()]
        images = 0
        for p in found:
            rel = p.relative_to(root).as_posix()
            covered = rel in ignored or any(rel.startswith(f) for f in ignored if f.endswith("/"))
            images += not covered
        assert images == n_images, (sorted(ignored), n_images)


@QUICK
@given(dataset_trees())
def test_data_accounts_for_every_file(entries):
    _data_property(entries)


@pytest.mark.slow
@SLOW
@given(dataset_trees())
def test_data_accounts_for_every_file_many(entries):
    _data_property(entries)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def damaged_json(draw, good: dict) -> object:
    """A valid document with keys dropped, values replaced by any JSON, or something else."""
    how = draw(st.sampled_from(["drop", "replace", "anything"]))
    if how == "anything":
        return draw(JSON)
    doc = dict(good)
    keys = draw(st.lists(st.sampled_from(sorted(good)), min_size=1, max_size=3, unique=True))
    for k in keys:
        if how == "drop":
            del doc[k]
        else:
            doc[k] = draw(JSON)
    return doc


def test_damaged_manifests_and_records_are_one_line(artifacts, artifact_copy, trained):
    """read_manifest / read_record on damaged documents: the typed error or a valid object,
    never another exception (which the CLI would report as a crash)."""
    from edgerobust.errors import ArtifactError, ConfigError
    from edgerobust.records import read_record
    from edgerobust.runtimes.manifest import read_manifest

    art = artifact_copy(artifacts[("onnx", "fp32")])
    good_manifest = json.loads(art.with_suffix(".json").read_text())
    good_record = json.loads((trained.run / "train.json").read_text())

    @QUICK
    @given(damaged_json(good_manifest), damaged_json(good_record))
    def check(manifest, record):
        art.with_suffix(".json").write_text(json.dumps(manifest))
        try:
            read_manifest(art)
        except ArtifactError as exc:
            assert "\n" not in str(exc)
        try:
            read_record(record)
        except ConfigError as exc:
            assert "\n" not in str(exc)

    check()
