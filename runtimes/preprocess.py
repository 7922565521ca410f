"""The one definition of preprocessing, shared by training, calibration and evaluation.

An image becomes the model input by: decode, convert to RGB, resize to ``size x size``
(bilinear), scale to [0, 1]. Mean/std normalization is *not* done here: it lives inside every
model (its first layer), so device code, attacks and artifacts all feed plain [0, 1] pixels.

A model imported from elsewhere may expect another input (normalized, 0-255, NHWC, uint8, a
fixed batch): its manifest records that as an :class:`InputContract`, which the runtimes apply
to the standard input right before the model (see :func:`edgerobust.runtimes.open_artifact`).

Decoding is split from scaling so that decoded ``uint8`` images can be cached and shared by many
artifacts (see :mod:`edgerobust.data`); :func:`to_input` is the cheap last step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# ----------------------------------------------------------------------------- input contracts


@dataclass(frozen=True)
class InputContract:
    """What an artifact's input tensor expects, and how to get there from [0, 1] NCHW.

    Every artifact edgerobust exports takes the standard input (float32 NCHW RGB in [0, 1],
    normalization inside the model): :attr:`standard` is then True and nothing is done. A model
    imported from elsewhere may expect mean/std-normalized pixels, a 0-255 range, NHWC, uint8,
    or a fixed batch size; its manifest says so and :meth:`apply` converts the standard input,
    so evaluation, attacks (``bounds=(0, 1)``) and benchmarks keep feeding [0, 1] NCHW.

    ``mean`` and ``std`` are in the units of ``range_max``: ``x = (pixel * range_max - mean) / std``
    with ``pixel`` in [0, 1] (torchvision's 0.485 ... for a [0, 1] model, 123.675 ... for 0-255).
    """

    layout: str = "NCHW"  # NCHW | NHWC
    range_max: float = 1.0  # 1.0 ([0, 1]) or 255.0 ([0, 255])
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    dtype: str = "float32"  # float32 | uint8
    batch: int | None = None  # a fixed batch size the file was exported with, or None

    @property
    def standard(self) -> bool:
        return (
            self.layout == "NCHW"
            and self.range_max == 1.0
            and self.mean is None
            and self.std is None
            and self.dtype == "float32"
            and self.batch is None
        )

    @classmethod
    def from_input(cls, spec: dict[str, Any]) -> InputContract:
        """The contract a manifest's ``input`` block describes (older manifests: standard)."""
        lo_hi = spec.get("range") or [0.0, 1.0]
        shape = spec.get("shape") or [-1]
        batch = int(shape[0]) if shape and int(shape[0]) > 0 else None
        mean, std = spec.get("mean"), spec.get("std")
        return cls(
            layout=str(spec.get("layout", "NCHW")).upper(),
            range_max=float(lo_hi[1]),
            mean=tuple(float(v) for v in mean) if mean is not None else None,
            std=tuple(float(v) for v in std) if std is not None else None,
            dtype=str(spec.get("dtype", "float32")),
            batch=batch,
        )

    def describe(self) -> str:
        parts = [f"{self.dtype} {self.layout} in [0, {self.range_max:g}]"]
        if self.mean is not None or self.std is not None:
            parts.append(f"(x - {list(self.mean or [0.0])}) / {list(self.std or [1.0])}")
        if self.batch is not None:
            parts.append(f"fixed batch {self.batch}")
        return ", ".join(parts)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Standard float32 NCHW [0, 1] -> this contract's input (a new array; ``x`` is kept)."""
        if self.range_max != 1.0:
            x = x * np.float32(self.range_max)
        if self.mean is not None:
            x = x - np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
        if self.std is not None:
            x = x / np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
        if self.layout == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        if self.dtype == "uint8":
            return np.clip(np.rint(x), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(x, dtype=np.float32)


STANDARD_CONTRACT = InputContract()
