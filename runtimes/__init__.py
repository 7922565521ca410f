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

import numpy as np

from edgerobust.errors import ArtifactError, RuntimeUnavailable

from .formats import format_of, list_formats, suffixes
from .manifest import Manifest, read_manifest, verify_artifact
from .preprocess import InputContract
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
            f"{path.name}: not an artifact (expected {', '.join(suffixes())} made by "
            "'edgerobust export' or 'edgerobust import')"
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
    return with_contract(cls.load(path, manifest, threads=threads, **options))


class ContractRuntime:
    """A runtime whose file expects another input than the standard [0, 1] NCHW (an imported
    model: normalized, 0-255, NHWC, uint8, fixed batch). It takes the standard input like every
    runtime and applies the manifest's :class:`InputContract` right before the model, so
    evaluation, Salt&Pepper (``bounds=(0, 1)``), benchmarks and the device check need no change.
    Everything else (``manifest``, ``session``, ``module``, ...) is the wrapped runtime's."""

    def __init__(self, inner: Runtime, contract: InputContract) -> None:
        self.inner = inner
        self.contract = contract
        self._apply = contract.apply

    def __call__(self, x: np.ndarray) -> np.ndarray:
        b = self.contract.batch
        if b is None or len(x) == b:
            return self.inner(self._apply(x))
        out = []
        for s in range(0, len(x), b):
            chunk = x[s : s + b]
            n = len(chunk)
            if n < b:  # pad the last chunk to the file's fixed batch, then drop the padding
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - n, axis=0)])
            out.append(np.asarray(self.inner(self._apply(chunk)))[:n])
        return np.concatenate(out)

    def info(self) -> dict[str, Any]:
        return {**self.inner.info(), "input_contract": self.contract.describe()}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def with_contract(runtime: Runtime) -> Runtime:
    """``runtime`` itself for a standard artifact, else wrapped in :class:`ContractRuntime`."""
    contract = InputContract.from_input(runtime.manifest.input)
    return runtime if contract.standard else ContractRuntime(runtime, contract)


# Registration: importing these modules is cheap (their heavy imports happen in ``load``).
from . import ort as _ort  # noqa: E402,F401
from . import torchscript as _torchscript  # noqa: E402,F401

# isort: split
# Registered after the others: the report lists formats in registration order.
from . import executorch as _executorch  # noqa: E402,F401

__all__ = [
    "RUNTIMES",
    "ContractRuntime",
    "InputContract",
    "Manifest",
    "Runtime",
    "default_runtime",
    "list_formats",
    "get",
    "list_runtimes",
    "open_artifact",
    "read_manifest",
    "register",
    "suffixes",
    "with_contract",
]
