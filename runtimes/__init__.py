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
from typing import Any

from edgerobust.errors import ArtifactError, RuntimeUnavailable

from .formats import format_of, list_formats, suffixes
from .manifest import Manifest, read_manifest, verify_artifact
from .registry import (
    RUNTIMES,
    Runtime,
    default_runtime,
    get,
    list_runtimes,
    register,
)


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
    if format_of(path.suffix) is None:
        raise ArtifactError(
            f"{path.name}: not an artifact (expected {', '.join(suffixes())} made by 'edgerobust export')"
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

# isort: split
# Registered after the others: the report lists formats in registration order.
from . import executorch as _executorch  # noqa: E402,F401

__all__ = [
    "RUNTIMES",
    "Manifest",
    "Runtime",
    "default_runtime",
    "list_formats",
    "get",
    "list_runtimes",
    "open_artifact",
    "read_manifest",
    "register",
]
