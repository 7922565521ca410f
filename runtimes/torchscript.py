"""PyTorch runtimes: full TorchScript (``.pt``) and the PyTorch Mobile lite interpreter (``.ptl``).

torch is imported in ``load``, never at module level, so the registry stays importable on a
device that has only ONNX Runtime. ``torch.jit.load`` and the lite loader read TorchScript
archives with their own restricted unpickler; no arbitrary Python objects are executed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgerobust.errors import ArtifactError, RuntimeUnavailable

from .formats import ArtifactFormat, register_format
from .manifest import Manifest
from .registry import register


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise RuntimeUnavailable(
            "the torchscript and ptl runtimes need torch (PyTorch Mobile runs .ptl files); "
            "install it with pip install 'edgerobust[torch]', or export to ONNX and use "
            "--runtime onnxruntime"
        ) from exc
    return torch


def _set_engine(torch: Any, manifest: Manifest) -> None:
    """int8 TorchScript re-packs its weights for the engine active at load time."""
    engine = manifest.engine
    if manifest.precision != "int8" or not engine:
        return
    if engine not in torch.backends.quantized.supported_engines:
        raise RuntimeUnavailable(
            f"{manifest.file} is int8 for the {engine} engine, which this torch build lacks "
            f"(it has {', '.join(torch.backends.quantized.supported_engines)}); "
            "re-export with --engine matching the device"
        )
    torch.backends.quantized.engine = engine


class _TorchRuntime:
    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]

    def __init__(self, module: Any, manifest: Manifest, threads: int, torch: Any) -> None:
        self.module = module
        self.manifest = manifest
        self.threads = threads
        self._torch = torch

    @classmethod
    def _load_module(cls, torch: Any, path: Path) -> Any:
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path, manifest: Manifest, threads: int = 1) -> _TorchRuntime:
        torch = _import_torch()
        torch.set_num_threads(threads)
        _set_engine(torch, manifest)
        try:
            module = cls._load_module(torch, path)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"{cls.name} cannot load {path.name}: {first}") from exc
        return cls(module, manifest, threads, torch)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.module(self._torch.from_numpy(x)).numpy()

    def info(self) -> dict[str, Any]:
        return {
            "runtime": self.name,
            "version": self._torch.__version__,
            "threads": self.threads,
            "quantized_engine": self._torch.backends.quantized.engine
            if self.manifest.precision == "int8"
            else None,
        }


register_format(
    ArtifactFormat("torchscript", ".pt", "TorchScript (fp32, or eager-PTSQ int8)", needs_torch=True)
)
register_format(
    ArtifactFormat(
        "ptl", ".ptl", "PyTorch Mobile lite interpreter (deprecated upstream)", needs_torch=True
    )
)


@register
class TorchScriptRuntime(_TorchRuntime):
    name: ClassVar[str] = "torchscript"
    formats: ClassVar[tuple[str, ...]] = ("torchscript",)

    @classmethod
    def _load_module(cls, torch: Any, path: Path) -> Any:
        module = torch.jit.load(str(path), map_location="cpu")
        return module.eval()


@register
class LiteRuntime(_TorchRuntime):
    """The PyTorch Mobile lite interpreter, the runtime an Android/iOS app or a Pi uses."""

    name: ClassVar[str] = "ptl"
    formats: ClassVar[tuple[str, ...]] = ("ptl",)

    @classmethod
    def _load_module(cls, torch: Any, path: Path) -> Any:
        from torch.jit.mobile import _load_for_lite_interpreter

        return _load_for_lite_interpreter(str(path), map_location="cpu")
