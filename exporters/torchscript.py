"""TorchScript (``.pt``) and PyTorch Mobile lite (``.ptl``) exporters.

fp32 models are traced as they are; int8 models are the eager PTSQ model, traced with its engine
active. For ``.ptl`` we run ``optimize_for_mobile`` when this torch build has XNNPACK (the ARM
builds do); otherwise the manifest records that it was skipped and why.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

from .parity import ParityBar
from .registry import Exporter, register_exporter

# A traced module runs the very same kernels as the eager one: agreement is near bit-exact.
FP32_BAR = ParityBar(atol=1e-5, rtol=1e-4)


def trace(model: nn.Module, input_size: int) -> torch.jit.ScriptModule:
    import torch

    x = torch.rand(1, 3, input_size, input_size)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.jit.trace(model.eval(), x, check_trace=False)


def save_torchscript(model: nn.Module, input_size: int, path: Path) -> list[str]:
    traced = trace(model, input_size)
    traced.save(str(path))
    return []


def save_lite(model: nn.Module, input_size: int, path: Path, optimize: bool = True) -> list[str]:
    import torch

    traced = trace(model, input_size)
    notes = []
    if optimize:
        import torch.backends.xnnpack

        if torch.backends.xnnpack.enabled:
            from torch.utils.mobile_optimizer import optimize_for_mobile

            try:
                # Freeze first: optimize_for_mobile on an unfrozen trace folds conv+bn wrongly on
                # ARM builds (pytorch/pytorch#76807; measured here: ~7 logits off on a ResNet-18).
                traced = optimize_for_mobile(torch.jit.freeze(traced.eval()))
                notes.append("optimize_for_mobile applied (XNNPACK)")
            except Exception as exc:
                notes.append(
                    f"optimize_for_mobile skipped: it failed here ({str(exc).splitlines()[0]})"
                )
        else:
            notes.append(
                "optimize_for_mobile skipped: this torch build has no XNNPACK; the artifact is "
                "correct but not XNNPACK-rewritten (re-export on an ARM torch build to optimise)"
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced._save_for_lite_interpreter(str(path))
    return notes


# The exporters' entry points. int8 arrives as the eager-PTSQ model for its engine, so both
# formats save what they are given.
def write_torchscript(
    model: nn.Module, input_size: int, path: Path, *, quant: str, calibration: Callable[[], Any],
    optimize: bool = True,
) -> list[str]:  # fmt: skip
    return save_torchscript(model, input_size, path)


def write_lite(
    model: nn.Module, input_size: int, path: Path, *, quant: str, calibration: Callable[[], Any],
    optimize: bool = True,
) -> list[str]:  # fmt: skip
    return save_lite(model, input_size, path, optimize=optimize)


register_exporter(Exporter("torchscript", write_torchscript, FP32_BAR))
register_exporter(Exporter("ptl", write_lite, FP32_BAR))
