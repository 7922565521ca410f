"""The runtime registry: every runtime class, by name, with the formats it runs. Torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from edgerobust.errors import RuntimeUnavailable
from edgerobust.registry import Registry

from .manifest import Manifest


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
