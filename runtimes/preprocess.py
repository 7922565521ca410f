"""The one definition of preprocessing, shared by training, calibration and evaluation.

An image becomes the model input by: decode, turn upright by its EXIF orientation, convert to
RGB, resize to ``size x size`` (bilinear), scale to [0, 1]. Mean/std normalization is *not* done
here: it lives inside every model (its first layer), so device code, attacks and artifacts all
feed plain [0, 1] pixels.

Every image file goes through :func:`open_rgb`, so training, calibration, evaluation, the emulated
device and ``edgerobust data`` see the same pixels and refuse the same files:

* **Formats**: whatever this Pillow opens (:func:`image_suffixes`); multi-frame files (GIF, TIFF,
  ICO) give their first frame, as a viewer shows it.
* **Orientation**: the EXIF orientation tag is applied (``ImageOps.exif_transpose``). Labels are
  given by people looking at the image as viewers show it, upright; a camera that stores a
  rotated sensor frame plus a tag would otherwise teach and test the model on sideways images.
* **Modes**: 16-bit images (``I;16``, and ``I`` as PGM/TIFF use it) are scaled from 0..65535 to
  0..255 rather than clipped to white, as Pillow's ``convert`` would; alpha is dropped (as
  torchvision's loader does). 32-bit float images (``F``) are refused: their range (0..1,
  0..255, HDR) is not written in the file, and guessing it would feed the model wrong pixels.
* **Size**: an image of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (89 M by default, the
  size Pillow itself warns about as a possible decompression bomb) is refused from its header,
  before a byte is decompressed, so memory stays bounded whatever the file declares.

Any failure becomes :class:`ImageDecodeError` naming the file: one bad file never stops a run.

A model imported from elsewhere may expect another input (normalized, 0-255, NHWC, uint8, a
fixed batch): its manifest records that as an :class:`InputContract`, which the runtimes apply
to the standard input right before the model (see :func:`edgerobust.runtimes.open_artifact`).

Decoding is split from scaling so that decoded ``uint8`` images can be cached and shared by many
artifacts (see :mod:`edgerobust.data`); :func:`to_input` is the cheap last step.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

RESAMPLE = Image.Resampling.BILINEAR
# Bump when the pixels decode_image returns change (the decoded-image cache keys on it).
DECODE_VERSION = 2
ORIENTATION = 0x0112  # the EXIF tag

# Pillow warns (once per file) between MAX_IMAGE_PIXELS and twice that; open_rgb refuses those
# images itself, with a reason, so the warning would only be noise on the terminal.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageDecodeError(ValueError):
    """An image file could not be decoded (corrupt, truncated, too large, or not an image).

    ``str(err)`` is ``"PATH: REASON"``; ``reason`` alone is what a list of files shows."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


@functools.cache
def image_suffixes() -> dict[str, str | None]:
    """File suffix -> None if this Pillow decodes it, else why it cannot (e.g. ``.h5``)."""
    Image.init()
    out: dict[str, str | None] = {}
    for suffix, fmt in Image.registered_extensions().items():
        opener = Image.OPEN.get(fmt)
        if opener is None:
            continue  # a format Pillow can write but not read (.pdf)
        factory = opener[0]
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            out[suffix] = f"Pillow only identifies {fmt} files (no decoder is installed)"
        elif fmt == "MPEG":
            out[suffix] = "a video file: Pillow reads only its header"
        else:
            out[suffix] = None
    return out


def _max_pixels() -> int | None:
    return Image.MAX_IMAGE_PIXELS


def open_rgb(path: str | Path) -> Image.Image:
    """Decode ``path`` fully to an upright RGB image (see the module docstring for the rules)."""
    try:
        with Image.open(path) as img:
            limit = _max_pixels()
            w, h = img.size
            if limit is not None and w * h > limit:
                raise ImageDecodeError(
                    path,
                    f"{w} x {h} pixels is more than the {limit:,} edgerobust decodes "
                    "(an oversized image or a decompression bomb): downscale or remove it",
                )
            img.load()
            if img.getexif().get(ORIENTATION, 1) != 1:
                img = ImageOps.exif_transpose(img)
            return _to_rgb(img, path)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:  # refused by Pillow from the header
        raise ImageDecodeError(
            path, f"{str(exc).split(',')[0]} (a decompression bomb?): downscale or remove it"
        ) from exc
    except Exception as exc:  # a third-party decoder on arbitrary bytes: any failure is the file's
        raise ImageDecodeError(path, _reason(exc, path)) from exc


def _to_rgb(img: Image.Image, path: str | Path) -> Image.Image:
    if img.mode == "F":
        raise ImageDecodeError(
            path,
            "32-bit float pixels (mode F) have no range written in the file: "
            "save it as 8- or 16-bit",
        )
    if img.mode == "I" or img.mode.startswith("I;16"):
        wide = np.asarray(img).astype(np.float64)
        gray = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # what Pillow asks for; the colours are unchanged
    return img.convert("RGB")


def _reason(exc: BaseException, path: str | Path) -> str:
    try:
        if Path(path).stat().st_size == 0:
            return "an empty file (0 bytes)"
    except OSError:
        pass
    text = str(exc).replace(f" {str(path)!r}", "").strip().splitlines()
    if isinstance(exc, OSError | SyntaxError) and text:
        return text[0]
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """Decode ``path`` to a ``uint8`` array of shape ``(size, size, 3)`` (RGB, resized)."""
    rgb = open_rgb(path)
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
