"""ImageNet-C corruptions (edgerobust.data.corruptions) and eval-device --corruptions."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from edgerobust.data.corruptions import (
    CORRUPTIONS,
    LEFT_OUT,
    corrupt,
    corrupt_images,
    list_corruptions,
    parse_corruptions,
    parse_severities,
    psnr,
)
from edgerobust.errors import ConfigError
from edgerobust.evaluate import EvalConfig, evaluate
from edgerobust.evaluate.corruptions import corruption_errors


def _photo(seed: int = 0, side: int = 224) -> np.ndarray:
    """A photo-like test image: smooth gradients, a few shapes with edges, mild texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    img = np.stack([0.3 + 0.4 * xx, 0.2 + 0.5 * yy, 0.6 - 0.3 * xx * yy], axis=-1)
    for _ in range(6):
        cy, cx, r = rng.uniform(0.15, 0.85, 2).tolist() + [rng.uniform(0.05, 0.2)]
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img[disk] = rng.uniform(0.05, 0.95, 3)
    img += rng.normal(0, 0.02, img.shape)
    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)


# --------------------------------------------------------------------------- the registry


# Severities 1..5 as published in hendrycks/robustness, ImageNet-C/create_c/make_imagenet_c.py
PUBLISHED = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "fog": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    "jpeg_compression": (25, 18, 15, 10, 7),
}


def test_parameters_are_the_published_ones():
    for name, params in PUBLISHED.items():
        assert CORRUPTIONS.get(name).params == params, name
    assert len(np.arange(*CORRUPTIONS.get("zoom_blur").params[4])) == 11  # 1.00 .. 1.30


def test_all_is_the_benchmark_minus_frost():
    names = parse_corruptions("all")
    assert names == tuple(list_corruptions(benchmark_only=True))
    assert len(names) == 14 and "frost" not in names and "frost" in LEFT_OUT
    assert "speckle_noise" in list_corruptions() and "speckle_noise" not in names
    with pytest.raises(ConfigError, match="frost.*left out"):
        parse_corruptions("fog,frost")
    with pytest.raises(ConfigError, match="unknown corruption 'rain'"):
        parse_corruptions("rain")
    assert parse_severities("1-5") == (1, 2, 3, 4, 5)
    assert parse_severities("5,1,3") == (1, 3, 5)
    for bad in ("7", "1-9", "x", ""):
        with pytest.raises(ConfigError):
            parse_severities(bad)


def test_parameters_take_effect():
    img = _photo(1)
    x = img.astype(np.float64)
    # contrast: deviations from the channel means shrink by exactly c (up to rounding)
    out = corrupt(img, "contrast", 5, index=0).astype(np.float64)
    ratio = out.std(axis=(0, 1)) / x.std(axis=(0, 1))
    assert np.allclose(ratio, 0.05, atol=0.01)
    # JPEG at the published quality, byte for byte what PIL makes
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=7)
    assert np.array_equal(corrupt(img, "jpeg_compression", 5, index=0), np.asarray(Image.open(buf)))
    # pixelate 0.25 at 224 px: 56 x 56 blocks of 4 x 4 equal pixels
    px = corrupt(img, "pixelate", 5, index=0)
    assert np.array_equal(px, np.repeat(np.repeat(px[::4, ::4], 4, axis=0), 4, axis=1))
    # Gaussian noise: the added noise has the published standard deviation (mid-grey, no clipping)
    grey = np.full((224, 224, 3), 128, np.uint8)
    noise = corrupt(grey, "gaussian_noise", 1, index=0).astype(np.float64) / 255 - 128 / 255
    assert abs(noise.std() - 0.08) < 0.003
    # impulse noise: the published fraction of values is flipped to 0 or 255
    imp = corrupt(grey, "impulse_noise", 4, index=0)
    assert abs((imp != 128).mean() - 0.17) < 0.01 and set(np.unique(imp)) == {0, 128, 255}
    # brightness: HSV value up by c
    br = corrupt(img, "brightness", 2, index=0).astype(np.float64)
    v_gain = br.max(axis=2) - x.max(axis=2)
    assert np.median(v_gain[x.max(axis=2) < 200]) == pytest.approx(0.2 * 255, abs=1)


# --------------------------------------------------------------------------- behaviour


def test_deterministic_per_image_corruption_severity_seed():
    img = _photo(2, side=64)
    for name in list_corruptions():
        a = corrupt(img, name, 3, index=7, seed=1)
        assert a.dtype == np.uint8 and a.shape == img.shape
        assert np.array_equal(a, corrupt(img, name, 3, index=7, seed=1)), name
    g = [corrupt(img, "gaussian_noise", 3, index=i, seed=s) for i, s in ((7, 1), (8, 1), (7, 2))]
    assert not np.array_equal(g[0], g[1]) and not np.array_equal(g[0], g[2])


def test_severity_zero_is_the_image_itself():
    img = _photo(3, side=32)
    for name in list_corruptions():
        assert corrupt(img, name, 0, index=0) is img


def test_psnr_falls_with_severity():
    """PSNR against the clean image falls from severity to severity. The published tables are
    not monotone in PSNR everywhere: glass blur's severity 2 shuffles less than 1 (one pass
    instead of two), fog's 3 and 4 share one strength and differ in texture, and elastic's
    severities 1-2 are large smooth warps while 3-5 are small local ones; those are checked
    as far as they hold."""
    img = _photo(4)
    curves = {
        name: [psnr(img, corrupt(img, name, s, index=0)) for s in range(1, 6)]
        for name in list_corruptions()
    }
    loose = {"glass_blur", "fog"}
    for name, p in curves.items():
        assert all(np.isfinite(p)) and max(p) < 35, (name, p)
        if name == "elastic_transform":
            assert p[2] > p[3] > p[4] and p[0] > p[1], p  # within each of its two regimes
        elif name in loose:
            assert all(b < a + 1.0 for a, b in zip(p, p[1:], strict=False)), (name, p)
            assert p[4] < p[0] - 2, (name, p)
        else:
            assert all(b < a for a, b in zip(p, p[1:], strict=False)), (name, p)


def test_cache_reuses_corrupted_images(cache_env):
    pixels = np.stack([_photo(i, side=32) for i in range(4)])
    first = corrupt_images(pixels, [3, 1], "snow", 2, seed=0, domain="t")
    files = list((cache_env / "corrupted").glob("t-snow-2-s0-*.npy"))
    assert len(files) == 1
    assert np.array_equal(first, corrupt_images(pixels, [3, 1], "snow", 2, domain="t"))
    assert np.array_equal(first, corrupt_images(pixels, [3, 1], "snow", 2, cache=False))
    assert np.array_equal(first[0], corrupt(pixels[3], "snow", 2, index=3))
    # keyed by the clean pixels: other images never read this entry
    other = corrupt_images(pixels[::-1].copy(), [3, 1], "snow", 2, domain="t")
    assert not np.array_equal(first, other)


# --------------------------------------------------------------------------- eval-device


def _cfg(artifact, data, **kw) -> EvalConfig:
    return EvalConfig(str(artifact), str(data), warmup=1, latency_runs=3, **kw)


@pytest.fixture(scope="module")
def corrupted_record(artifacts, synthetic_root):
    return evaluate(
        _cfg(
            artifacts[("onnx", "fp32")].artifact,
            synthetic_root,
            domains=("webcam",),
            corruptions=("gaussian_noise", "contrast", "defocus_blur"),
            severities=(0, 1, 5),
            reference=str(artifacts[("onnx", "int8")].artifact),
        )
    )


def test_eval_device_scores_every_corruption_and_severity(corrupted_record):
    d = corrupted_record["domains"][0]
    c = d["corruptions"]
    assert c["n"] == d["n"] and c["severities"] == [0, 1, 5]
    assert [r["corruption"] for r in c["results"]] == ["gaussian_noise", "contrast", "defocus_blur"]
    # severity 0 is the clean images: the clean pass's accuracy, for every corruption
    assert c["clean"]["correct"] == d["correct"]
    for r in c["results"]:
        assert r["correct"][0] == d["correct"]
        assert r["accuracy"] == [k / c["n"] for k in r["correct"]]
        assert r["params"][1:] == [CORRUPTIONS.get(r["corruption"]).params[s - 1] for s in (1, 5)]
    means = [r["mean_accuracy"] for r in c["results"]]
    assert c["mean_accuracy"] == pytest.approx(np.mean(means))
    # heavy noise and contrast loss cost the model accuracy
    noise = c["results"][0]["accuracy"]
    assert noise[2] < noise[0]
    ref = c["reference"]
    assert ref["from"] == "artifact" and ref["file"].endswith(".onnx")
    assert set(ref["ce"]) == {"gaussian_noise", "contrast", "defocus_blur"}
    assert ref["mce"] == pytest.approx(np.mean([v for v in ref["ce"].values() if v is not None]))


def test_ce_against_itself_is_one(corrupted_record):
    c = corrupted_record["domains"][0]["corruptions"]
    errs = corruption_errors(c, c)
    assert all(v == pytest.approx(1.0) for v in errs["ce"].values() if v is not None)
    assert errs["mce"] == pytest.approx(1.0)
    other = {**c, "seed": c["seed"] + 1}
    with pytest.raises(ConfigError, match="seed"):
        corruption_errors(c, other)


def test_reference_record_gives_the_same_ce(corrupted_record, artifacts, synthetic_root, tmp_path):
    ref_rec = tmp_path / "ref.json"
    evaluate(
        _cfg(
            artifacts[("onnx", "int8")].artifact,
            synthetic_root,
            domains=("webcam",),
            corruptions=("gaussian_noise", "contrast", "defocus_blur"),
            severities=(0, 1, 5),
            out=str(ref_rec),
        )
    )
    again = evaluate(
        _cfg(
            artifacts[("onnx", "fp32")].artifact,
            synthetic_root,
            domains=("webcam",),
            corruptions=("gaussian_noise", "contrast", "defocus_blur"),
            severities=(0, 1, 5),
            reference=str(ref_rec),
        )
    )
    a = corrupted_record["domains"][0]["corruptions"]
    b = again["domains"][0]["corruptions"]
    assert a["results"] == b["results"]  # identical figures on a second run
    assert a["reference"]["ce"] == b["reference"]["ce"] and b["reference"]["from"] == "record"
    with pytest.raises(ConfigError, match="no corruption figures on studio"):
        evaluate(
            _cfg(
                artifacts[("onnx", "fp32")].artifact,
                synthetic_root,
                domains=("studio",),
                corruptions=("contrast",),
                severities=(1,),
                reference=str(ref_rec),
            )
        )


def test_bad_corruption_options(artifacts, synthetic_root):
    art = artifacts[("onnx", "fp32")].artifact
    with pytest.raises(ConfigError, match="--reference needs --corruptions"):
        evaluate(_cfg(art, synthetic_root, reference=str(art)))
    with pytest.raises(ConfigError, match="severities"):
        evaluate(_cfg(art, synthetic_root, corruptions=("fog",), severities=(6,)))
    with pytest.raises(ConfigError, match="unknown corruption"):
        evaluate(_cfg(art, synthetic_root, corruptions=("rain",)))


def test_record_keeps_the_config(corrupted_record):
    cfg = corrupted_record["config"]
    assert cfg["corruptions"] == ["gaussian_noise", "contrast", "defocus_blur"]
    assert cfg["severities"] == [0, 1, 5] and cfg["corruption_seed"] == 0
    json.dumps(corrupted_record)  # plain JSON


# --------------------------------------------------------------------------- the device side

BLOCK = """
import importlib.abc, json, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from edgerobust.cli import main
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
print("MODULES " + json.dumps(sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)))
sys.exit(code)
"""


def _child(blocked: set[str], *args):
    import subprocess
    import sys

    code = f"BLOCKED = {sorted(blocked)!r}\n" + BLOCK
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_eval_device_corruptions_without_torch(artifacts, synthetic_root, tmp_path):
    rec = tmp_path / "rec.json"
    proc = _child(
        {"torch", "torchvision", "foolbox"},
        "eval-device", artifacts[("onnx", "int8")].artifact, "--data", synthetic_root,
        "--domains", "natural", "--corruptions", "impulse_noise,zoom_blur,jpeg_compression",
        "--severities", "1,3", "--reference", artifacts[("onnx", "fp32")].artifact,
        "--out", rec, "--latency-runs", "3", "--warmup", "1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "MODULES []" in proc.stdout
    assert "zoom_blur" in proc.stdout and "mCE" in proc.stdout
    c = json.loads(rec.read_text())["domains"][0]["corruptions"]
    assert [r["corruption"] for r in c["results"]] == [
        "impulse_noise",
        "zoom_blur",
        "jpeg_compression",
    ]
    assert c["reference"]["mce"] is None or c["reference"]["mce"] > 0


def test_missing_scipy_names_the_extra(artifacts, synthetic_root, tmp_path):
    rec = tmp_path / "rec.json"
    art = artifacts[("onnx", "fp32")].artifact
    proc = _child(
        {"torch", "torchvision", "foolbox", "scipy"},
        "eval-device", art, "--data", synthetic_root, "--corruptions", "fog,defocus_blur",
        "--out", rec,
    )  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "defocus_blur" in lines[0] and "edgerobust[corruptions]" in lines[0]
    assert not rec.exists()
    # the corruptions that need no scipy run without it
    proc = _child(
        {"torch", "torchvision", "foolbox", "scipy"},
        "eval-device", art, "--data", synthetic_root, "--domains", "webcam",
        "--corruptions", "fog,contrast,motion_blur", "--severities", "2", "--out", rec,
        "--latency-runs", "3", "--warmup", "1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "MODULES []" in proc.stdout and rec.exists()


def test_cli_rejects_bad_corruptions_in_one_line(artifacts, synthetic_root, capsys):
    from edgerobust.cli import main

    art = artifacts[("onnx", "fp32")].artifact
    for args, what in (
        (("--corruptions", "frost"), "left out"),
        (("--corruptions", "fog", "--severities", "0-9"), "severities"),
        (("--reference", art), "--reference needs --corruptions"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["eval-device", str(art), "--data", str(synthetic_root), *map(str, args)])
        err = capsys.readouterr().err
        assert exc.value.code != 0 and "Traceback" not in err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and what in lines[0], err


def test_cli_lists_the_registry(capsys):
    from edgerobust.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["corruptions"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    for name in list_corruptions():
        assert name in out
    assert "left out: frost" in out
