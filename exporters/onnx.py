"""ONNX exporters: fp32 through ``torch.onnx.export``, int8 through onnxruntime's ``quantize_static``.

We use the TorchScript-based exporter (``dynamo=False``): for these convolutional classifiers it is
mature, fast (well under a second for a ResNet-18) and needs no onnxscript; it folds eval-mode
batch-norm into the convolutions. The batch axis is dynamic.

int8 is QDQ (QuantizeLinear/DequantizeLinear pairs around each quantized op), per-channel
weights, calibrated (MinMax) on source-domain training images: the format ONNX Runtime runs fast
on x86 (VNNI) and ARM (dot-product) CPUs alike.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn

from .parity import ParityBar
from .registry import Exporter, register_exporter

INPUT_NAME, OUTPUT_NAME = "input", "logits"
OPSET = 17
# ONNX Runtime's fp32 kernels sum in another order than torch's: ~1e-5 on ResNet logits.
FP32_BAR = ParityBar(atol=1e-4, rtol=1e-3)


def export_fp32(model: nn.Module, input_size: int, path: Path, opset: int = OPSET) -> None:
    import torch

    x = torch.rand(1, 3, input_size, input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (x,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol: ``get_next() -> {input: batch} | None``."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._it: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:  # pragma: no cover - only used by some calibrators
        pass


def quantize_int8(fp32_path: Path, out_path: Path, calibration: list[np.ndarray]) -> list[str]:
    """QDQ int8 from an fp32 ONNX file; returns notes for the manifest."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    notes = []
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            # Shape inference + graph optimisation first, as onnxruntime recommends for
            # quantization: better fusion means fewer Q/DQ pairs and better accuracy.
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            src = pre
        except Exception as exc:  # pre-processing is an optimisation; quantize the raw graph
            notes.append(f"quant_pre_process skipped: {type(exc).__name__}")
            src = fp32_path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(
                str(src),
                str(out_path),
                _Calibration(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
    notes.append(
        "onnxruntime quantize_static: QDQ, per-channel s8 weights, s8 activations, MinMax calibration"
    )
    return notes


def write(
    model: nn.Module,
    input_size: int,
    path: Path,
    *,
    quant: str,
    calibration: Callable[[], list[np.ndarray]],
    optimize: bool = True,
) -> list[str]:
    """The exporter's entry point: fp32 as exported; int8 quantized here from that fp32 graph."""
    if quant == "fp32":
        export_fp32(model, input_size, path)
        return []
    with tempfile.TemporaryDirectory(dir=path.parent) as d:
        fp32 = Path(d) / "fp32.onnx"
        export_fp32(model, input_size, fp32)
        return quantize_int8(fp32, path, calibration())


def op_counts(path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


register_exporter(Exporter("onnx", write, FP32_BAR, int8="own", int8_engine="onnxruntime-qdq"))
