"""ExecuTorch exporter: ``torch.export`` -> ``to_edge_transform_and_lower`` (XNNPACK) -> ``.pte``.

fp32: the eval-mode model is exported with a dynamic batch axis and lowered with the XNNPACK
partitioner, which takes every op it has a kernel for (convolutions with batch norm folded in,
linear, pooling, add, ReLU); what it leaves runs on ExecuTorch's portable kernels.

int8: PT2E, the path ExecuTorch documents for XNNPACK. The exported graph is annotated by the
XNNPACK quantizer (symmetric, per-channel int8 weights, int8 activations), calibrated on source
training images (``prepare_pt2e`` observers), converted (``convert_pt2e``), exported again and
lowered: XNNPACK then runs the quantized convolutions and linears with integer kernels. Unlike
eager PTSQ, this needs no hand-written fusion or QuantStub, so it quantizes any architecture that
``torch.export`` can trace.

A ``.pte`` whose ops fall back to the portable kernels is correct but very slow, so the manifest
records how much of the graph XNNPACK took (:func:`delegation`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

from .parity import ParityBar
from .registry import Exporter, WriteOutcome, register_exporter

# XNNPACK's fp32 convolutions sum in another order than torch's: ~1e-6 on ResNet logits.
FP32_BAR = ParityBar(atol=1e-4, rtol=1e-3)
# The batch axis is dynamic up to this bound (the memory plan is sized for it; the runtime
# splits larger batches and reads the bound from the program).
MAX_BATCH = 32
QUANTIZER = "xnnpack-pt2e"


def _import() -> dict[str, Any]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
                XnnpackPartitioner,
            )
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer,
                get_symmetric_quantization_config,
            )
            from executorch.devtools.backend_debug import get_delegation_info
            from executorch.exir import to_edge_transform_and_lower
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as exc:
        from edgerobust.errors import ConfigError

        raise ConfigError(
            f"exporting .pte needs executorch ({exc.name or exc}): pip install "
            "'edgerobust[executorch]'"
        ) from exc
    return dict(
        XnnpackPartitioner=XnnpackPartitioner,
        XNNPACKQuantizer=XNNPACKQuantizer,
        get_symmetric_quantization_config=get_symmetric_quantization_config,
        get_delegation_info=get_delegation_info,
        to_edge_transform_and_lower=to_edge_transform_and_lower,
        convert_pt2e=convert_pt2e,
        prepare_pt2e=prepare_pt2e,
    )


def _export(model: nn.Module, input_size: int) -> Any:
    import torch

    x = torch.rand(2, 3, input_size, input_size)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(model, (x,), dynamic_shapes=({0: batch},))


def quantize_pt2e(
    model: nn.Module, input_size: int, calibration: list[np.ndarray], et: dict[str, Any]
) -> tuple[nn.Module, int]:
    """PT2E int8 for XNNPACK: annotate, calibrate on ``calibration`` batches, convert. Returns
    the converted model and how many observers record a clamped range.

    The XNNPACK quantizer fuses a convolution with a following ReLU but not with ``hardtanh``
    (ReLU6): it shares one observer between the convolution's output and the clamp, which then
    sees the pre-clamp range and makes the int8 steps of every ReLU6 output several times too
    coarse (EfficientNet-Lite0: 97.0 % top-1 agreement with fp32). As on the FX path
    (:func:`edgerobust.compress.quantize.clamp_observers`), such observers record the clamped
    values instead, so the int8 range is the clamp's."""
    import torch

    from edgerobust.compress.quantize import clamp_observers

    quantizer = et["XNNPACKQuantizer"]().set_global(
        et["get_symmetric_quantization_config"](is_per_channel=True)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = et["prepare_pt2e"](_export(model, input_size).module(), quantizer)
        clamped = clamp_observers(prepared)
        with torch.no_grad():
            for batch in calibration:
                prepared(torch.from_numpy(batch))
        return et["convert_pt2e"](prepared), clamped


# Nodes that move no data through arithmetic: reading a delegate's outputs, the dynamic batch
# size, and the flatten between backbone and classifier (a view). Left outside XNNPACK they cost
# nothing worth reporting; any other op left outside is real work on a slow portable kernel.
BOOKKEEPING = ("getitem", "sym_size", "aten_view_copy_default")


def delegation(info: Any) -> dict[str, Any]:
    """How much of the lowered graph XNNPACK runs, from ExecuTorch's own delegation report."""
    frame = info.get_operator_delegation_dataframe()
    left = {
        str(row.op_type): int(row.occurrences_in_non_delegated_graphs)
        for row in frame.itertuples()
        if row.op_type != "Total" and int(row.occurrences_in_non_delegated_graphs) > 0
    }
    portable = {k: v for k, v in left.items() if k not in BOOKKEEPING}
    delegated = int(info.num_delegated_nodes)
    compute = delegated + sum(portable.values())
    return {
        "backend": "XnnpackBackend",
        "delegated_subgraphs": int(info.num_delegated_subgraphs),
        "delegated_nodes": delegated,
        "non_delegated_nodes": int(info.num_non_delegated_nodes),
        # of the ops that compute: 1.0 means nothing heavy runs on portable kernels
        "delegated_fraction": round(delegated / compute, 4) if compute else 0.0,
        "portable_ops": portable,
        "bookkeeping_ops": {k: v for k, v in left.items() if k in BOOKKEEPING},
    }


def delegation_note(d: dict[str, Any]) -> str:
    ops = ", ".join(f"{k} x{v}" for k, v in sorted(d["portable_ops"].items()))
    left = f"left on portable kernels: {ops}" if ops else "no compute op left on portable kernels"
    return (
        f"XNNPACK delegation: {d['delegated_nodes']} graph nodes in {d['delegated_subgraphs']} "
        f"delegated subgraph(s) ({d['delegated_fraction']:.1%} of the compute ops); {left}"
    )


def lower(model: nn.Module, input_size: int, et: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """``(program bytes, delegation)`` of ``model`` lowered to XNNPACK."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        edge = et["to_edge_transform_and_lower"](
            _export(model, input_size), partitioner=[et["XnnpackPartitioner"]()]
        )
        info = et["get_delegation_info"](edge.exported_program().graph_module)
        program = edge.to_executorch()
    return program.buffer, delegation(info)


def write(
    model: nn.Module,
    input_size: int,
    path: Path,
    *,
    quant: str,
    calibration: Callable[[], list[np.ndarray]],
    optimize: bool = True,
) -> WriteOutcome:
    """The exporter's entry point: fp32 lowered as it is; int8 quantized here with PT2E."""
    et = _import()
    model = model.eval()
    notes = []
    if quant == "int8":
        batches = calibration()
        model, clamped = quantize_pt2e(model, input_size, batches, et)
        notes.append(
            "PT2E int8 (XNNPACKQuantizer: symmetric per-channel s8 weights, s8 activations), "
            f"calibrated on {sum(len(b) for b in batches)} source training images"
            + (
                f"; {clamped} activation observers record their ReLU6/Hardtanh range"
                if clamped
                else ""
            )
        )
    data, deleg = lower(model, input_size, et)
    path.write_bytes(data)
    notes.append(delegation_note(deleg))
    return WriteOutcome(notes, delegation=deleg)


register_exporter(Exporter("pte", write, FP32_BAR, int8="own", int8_engine=QUANTIZER))
