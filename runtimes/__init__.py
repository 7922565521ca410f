"""Artifact file -> predictions, behind one protocol.

A runtime is a plain numpy callable: ``runtime(x: float32 NCHW in [0, 1]) -> logits``. That makes it
usable by evaluation code, by decision-based attacks (``foolbox.models.NumPyModel``) and by anyone
scripting a device, without torch. Nothing here imports torch at module level.

    >>> from edgerobust.runtimes import open_artifact
    >>> model = open_artifact("models/r18-int8.onnx", runtime="onnxruntime", threads=4)
    >>> logits = model(batch)                       # numpy in, numpy out
    >>> model.manifest.class_names, model.info()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from edgerobust.errors import ArtifactError, RuntimeUnavailable
from edgerobust.registry import Registry

from .manifest import FORMATS, Manifest, read_manifest, verify_artifact


class Runtime(Protocol):
    """What every runtime provides."""

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    manifest: Manifest

    @classmethod
    def load(cls, path: Path, manifest: Manifest, threads: int = 1) -> Runtime: ...

    def __call__(self, x: np.ndarray) -> np.ndarray: ...

    def info(self) -> dict[str, Any]: ...


RUNTIMES: Registry[type] = Registry("runtime", RuntimeUnavailable)


def register(cls: type) -> type:
    """Class decorator adding a runtime to the registry; a duplicate name is an error."""
    return RUNTIMES.add(cls.name, cls)


def get(name: str) -> type:
    """The runtime class registered as ``name``."""
    return RUNTIMES.get(name)


def list_runtimes(pattern: str = "*") -> list[str]:
    return sorted(RUNTIMES.list(pattern))


def default_runtime(fmt: str) -> str:
    """The runtime that runs a format: onnx -> onnxruntime, torchscript -> torchscript, ..."""
    for name, cls in RUNTIMES.items():
        if fmt in cls.formats:
            return name
    raise RuntimeUnavailable(f"no runtime runs the {fmt!r} format")


def open_artifact(
    path: str | Path,
    runtime: str | None = None,
    threads: int = 1,
    verify: bool = True,
    **options: Any,
) -> Runtime:
    """Read the manifest, verify the file's sha256, and load it in ``runtime``.

    Verification happens before the runtime parses a single byte, so a truncated or tampered file
    fails with one clear line instead of a parser crash. ``options`` go to the runtime's ``load``
    (e.g. ``providers=["CUDAExecutionProvider", "CPUExecutionProvider"]`` for onnxruntime).
    """
    path = Path(path)
    if path.suffix not in FORMATS:
        raise ArtifactError(
            f"{path.name}: not an artifact (expected {', '.join(FORMATS)} made by 'edgerobust export')"
        )
    manifest = read_manifest(path)
    runtime = runtime or default_runtime(manifest.format)
    cls = get(runtime)
    if manifest.format not in cls.formats:
        raise RuntimeUnavailable(
            f"the {runtime} runtime cannot run {manifest.format} artifacts; "
            f"use --runtime {default_runtime(manifest.format)}"
        )
    if threads < 1:
        raise ValueError("threads must be >= 1")
    if verify:
        verify_artifact(path, manifest)
    return cls.load(path, manifest, threads=threads, **options)


# Registration: importing these modules is cheap (their heavy imports happen in ``load``).
from . import ort as _ort  # noqa: E402,F401
from . import torchscript as _torchscript  # noqa: E402,F401

__all__ = [
    "Manifest",
    "Runtime",
    "default_runtime",
    "get",
    "list_runtimes",
    "open_artifact",
    "read_manifest",
    "register",
]
