"""ExecuTorch: runs ``.pte`` programs (XNNPACK-delegated, fp32 or PT2E int8) in ExecuTorch's own
C++ runtime through its Python bindings.

``.pte`` is what PyTorch ships to phones and Pis today: PyTorch Mobile's lite interpreter
(``.ptl``) is deprecated upstream and points to ExecuTorch. The bindings (``executorch.runtime``)
are linked against libtorch and import torch, so this runtime needs torch on the device besides
``executorch`` (the ``edgerobust[executorch]`` extra); the program itself runs in ExecuTorch's
runtime and XNNPACK's kernels, not in torch's.

Thread count: the bindings run one process-wide threadpool, sized by default from the cores
ExecuTorch detects; on many-core servers that made inference hundreds of times slower
(pytorch/executorch#9196), so :meth:`ExecuTorchRuntime.load` resets it to ``threads`` before
loading the program, as that PR advises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgerobust.errors import ArtifactError, RuntimeUnavailable

from .formats import ArtifactFormat, register_format
from .manifest import Manifest
from .registry import register

register_format(
    ArtifactFormat(
        "pte",
        ".pte",
        "ExecuTorch program (XNNPACK delegate; fp32, or PT2E int8)",
        needs_torch=True,
        extra="executorch",
    )
)

BACKEND = "XnnpackBackend"


def _import_executorch() -> tuple[Any, Any, Any]:
    """``(torch, executorch.runtime, portable_lib)``, or one line naming the extra."""
    try:
        import torch
    except ImportError as exc:
        raise RuntimeUnavailable(
            "the executorch runtime needs torch and executorch (its Python bindings link "
            "libtorch): pip install 'edgerobust[executorch]', or export to ONNX and use "
            "--runtime onnxruntime"
        ) from exc
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental API" on every import
            import executorch.runtime as et_runtime
            from executorch.extension.pybindings import portable_lib
    except ImportError as exc:
        raise RuntimeUnavailable(
            "the executorch runtime needs the executorch package: pip install "
            "'edgerobust[executorch]'"
        ) from exc
    return torch, et_runtime, portable_lib


@register
class ExecuTorchRuntime:
    name: ClassVar[str] = "executorch"
    formats: ClassVar[tuple[str, ...]] = ("pte",)

    def __init__(
        self, method: Any, manifest: Manifest, threads: int, torch: Any, max_batch: int
    ) -> None:
        self.method = method
        self.manifest = manifest
        self.threads = threads
        self.max_batch = max_batch  # the program's memory plan bounds the batch axis
        self._torch = torch
        self._execute = method.execute

    @classmethod
    def load(cls, path: Path, manifest: Manifest, threads: int = 1) -> ExecuTorchRuntime:
        torch, et_runtime, portable_lib = _import_executorch()
        # Before the program loads: the delegate binds to the pool (executorch#9196).
        portable_lib._unsafe_reset_threadpool(threads)
        runtime = et_runtime.Runtime.get()
        if not runtime.backend_registry.is_available(BACKEND):
            raise RuntimeUnavailable(
                f"this executorch build has no {BACKEND}: install the executorch wheel from PyPI"
            )
        try:
            program = runtime.load_program(Path(path))
            method = program.load_method("forward")
        except Exception as exc:  # the bindings raise RuntimeError with an error code
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"executorch cannot load {Path(path).name}: {first}") from exc
        if method is None:
            raise ArtifactError(f"{Path(path).name} has no 'forward' method")
        max_batch = int(method.metadata.input_tensor_meta(0).sizes()[0])
        return cls(method, manifest, threads, torch, max_batch)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) <= self.max_batch:
            return self._execute([self._torch.from_numpy(x)])[0].numpy()
        return np.concatenate(
            [
                self._execute([self._torch.from_numpy(x[i : i + self.max_batch])])[0].numpy()
                for i in range(0, len(x), self.max_batch)
            ]
        )

    def bare_callable(self):
        """The program's method called the way a user's own script would (for bench): the
        bindings' ``execute`` on each slice of at most ``max_batch`` images."""
        torch, execute, step = self._torch, self._execute, self.max_batch

        def call(x: np.ndarray) -> np.ndarray:
            outs = [execute([torch.from_numpy(x[i : i + step])])[0] for i in range(0, len(x), step)]
            return torch.cat(outs).numpy()

        return call

    def info(self) -> dict[str, Any]:
        import executorch.version
        from executorch.extension.pybindings import portable_lib

        # executorch 1.0 (the Pi's) has no _threadpool_get_thread_count: None there, not a guess
        count = getattr(portable_lib, "_threadpool_get_thread_count", None)
        return {
            "runtime": self.name,
            "version": executorch.version.__version__,
            "threads": self.threads,
            "threadpool": int(count()) if count else None,
            "backend": BACKEND,
            "max_batch": self.max_batch,
        }
