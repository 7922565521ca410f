"""ONNX Runtime: runs ``.onnx`` artifacts (fp32 and QDQ int8) on CPU or any installed provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgerobust.errors import ArtifactError, RuntimeUnavailable

from .formats import ArtifactFormat, register_format
from .manifest import Manifest
from .registry import register

register_format(ArtifactFormat("onnx", ".onnx", "ONNX: fp32, or QDQ int8"))

SPINNING_KEY = "session.intra_op.allow_spinning"


@register
class OnnxRuntime:
    name: ClassVar[str] = "onnxruntime"
    formats: ClassVar[tuple[str, ...]] = ("onnx",)

    def __init__(self, session: Any, manifest: Manifest, threads: int) -> None:
        self.session = session
        self.manifest = manifest
        self.threads = threads
        self._input = session.get_inputs()[0].name
        self._output = session.get_outputs()[0].name
        # Bound once: the hot path is a single C++ call, no per-call lookups.
        self._run = session.run

    @classmethod
    def load(
        cls,
        path: Path,
        manifest: Manifest,
        threads: int = 1,
        providers: list[str] | None = None,
        optimize: bool = True,
    ) -> OnnxRuntime:
        """``optimize=False`` turns onnxruntime's graph optimizations off. A QDQ int8 graph then
        runs as written, each QuantizeLinear / DequantizeLinear as its own float op and every
        Conv / Gemm in fp32 on dequantized values: the arithmetic the ONNX spec defines for the
        graph, free of any CPU's fused integer kernels (the reference device-check judges int8
        artifacts against)."""
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - base dependency
            raise RuntimeUnavailable(
                "onnxruntime is not installed: pip install onnxruntime"
            ) from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        # No spin-waiting: by default idle worker threads spin for work, which on a shared or
        # small machine steals the cores the other threads need (2-thread runs became several
        # times slower on this project's shared 2-core host). Latency is measured this way too.
        opts.add_session_config_entry(SPINNING_KEY, "0")
        if not optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        providers = list(providers or ["CPUExecutionProvider"])
        unknown = [p for p in providers if p not in ort.get_available_providers()]
        if unknown:
            raise RuntimeUnavailable(
                f"onnxruntime here has no {unknown[0]}: available are "
                f"{', '.join(ort.get_available_providers())}"
            )
        try:
            session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"onnxruntime cannot load {path.name}: {first}") from exc
        return cls(session, manifest, threads)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._run([self._output], {self._input: x})[0]

    def info(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {
            "runtime": self.name,
            "version": ort.__version__,
            "threads": self.threads,
            "providers": self.session.get_providers(),
            "intra_op_spinning": False,
        }
