"""edgerobust.runtimes.preprocess: the one definition of model input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgerobust.runtimes.preprocess import ImageDecodeError, decode_image, load_input, to_input


def test_to_input_layout_dtype_and_range():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    images[0, 0, 0] = [0, 255, 128]
    x = to_input(images)
    assert x.shape == (2, 3, 5, 7) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert x[0, :, 0, 0].tolist() == pytest.approx([0.0, 1.0, 128 / 255])
    np.testing.assert_allclose(x, images.transpose(0, 3, 1, 2) / 255.0, rtol=1e-6)


def test_to_input_single_image_and_bad_shapes():
    one = np.full((4, 4, 3), 51, np.uint8)
    x = to_input(one)
    assert x.shape == (1, 3, 4, 4) and np.allclose(x, 0.2)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        to_input(np.zeros((2, 3, 4, 4), np.uint8))  # NCHW by mistake
    with pytest.raises(ValueError):
        to_input(np.zeros((4, 4), np.uint8))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "RGB"])
def test_decode_image_resizes_and_converts_to_rgb(tmp_path, mode):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (10, 20, 3), dtype=np.uint8)
    img = Image.fromarray(rgb, "RGB")
    img = img.convert(mode) if mode != "RGBA" else img.copy()
    if mode == "RGBA":
        img.putalpha(128)
    path = tmp_path / f"x_{mode}.png"
    img.save(path)
    out = decode_image(path, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    expected = np.asarray(img.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(out, expected)
    if mode == "L":
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_decode_image_keeps_the_right_size_untouched(tmp_path):
    arr = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "x.png", 8), arr)
    x = load_input(tmp_path / "x.png", 8)
    assert x.shape == (1, 3, 8, 8)
    np.testing.assert_allclose(x[0], arr.transpose(2, 0, 1) / 255.0, rtol=1e-6)


def test_decode_errors_are_typed(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ImageDecodeError, match="bad.jpg"):
        decode_image(bad, 16)
    with pytest.raises(ImageDecodeError):
        decode_image(tmp_path / "missing.png", 16)
