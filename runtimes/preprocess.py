"""The one definition of preprocessing, shared by training, calibration and evaluation.

An image becomes the model input by: decode, convert to RGB, resize to ``size x size``
(bilinear), scale to [0, 1]. Mean/std normalization is *not* done here: it lives inside every
model (its first layer), so device code, attacks and artifacts all feed plain [0, 1] pixels.

Decoding is split from scaling so that decoded ``uint8`` images can be cached and shared by many
artifacts (see :mod:`edgerobust.data`); :func:`to_input` is the cheap last step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

RESAMPLE = Image.Resampling.BILINEAR


class ImageDecodeError(ValueError):
    """An image file could not be decoded (corrupt, truncated, or not an image)."""


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """Decode ``path`` to a ``uint8`` array of shape ``(size, size, 3)`` (RGB, resized)."""
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"{path}: {exc}") from exc
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), RESAMPLE)
    return np.asarray(rgb, dtype=np.uint8)


def to_input(images: np.ndarray) -> np.ndarray:
    """``uint8`` NHWC (or one HWC image) -> contiguous float32 NCHW in [0, 1]."""
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {images.shape}")
    out = np.empty((images.shape[0], 3, images.shape[1], images.shape[2]), dtype=np.float32)
    np.multiply(images.transpose(0, 3, 1, 2), np.float32(1.0 / 255.0), out=out)
    return out


def load_input(path: str | Path, size: int) -> np.ndarray:
    """Decode one image file straight to a model input of shape ``(1, 3, size, size)``."""
    return to_input(decode_image(path, size))
