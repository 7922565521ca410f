"""Post-training static quantization (PTSQ), as in the paper (section 3.1.3).

fuse conv-bn(-relu) -> attach the engine's default qconfig (per-channel int8 weights, histogram-
calibrated uint8 activations) -> calibrate on source-domain training images -> convert.

Two paths, one result (a module running the engine's int8 kernels):

- **eager** (``ptsq-eager``), for the ResNets: torchvision's quantizable ResNet with its own
  ``fuse_model``, the paper's procedure exactly, as before.
- **FX graph mode** (``ptsq-fx``), for every other family (MobileNets, timm models) and for any
  model with layers kept in fp32 (``keep_fp32``): ``prepare_fx`` traces the model, fuses
  conv-bn(-relu) and places observers by itself, so no per-model hand fusing. FX rather than
  PT2E (torchao): PT2E's ``convert_pt2e`` yields a graph of fp32 ops between quantize/dequantize
  nodes, meant to be lowered by ExecuTorch or Inductor; traced to TorchScript/lite it would run
  fp32 kernels. FX's ``convert_fx`` yields modules with the fbgemm/qnnpack int8 kernels, which
  the TorchScript and lite exporters trace and save as they do the eager model, and torchao is
  not needed. Both APIs print deprecation notices in torch 2.10+; both still work.

``keep_fp32`` names modules (as in ``model.named_modules()``, e.g. ``backbone.blocks.0.0.conv_dw``)
whose qconfig is ``None``: they stay fp32, with quantize/dequantize around them.

The engine decides the int8 kernels: ``x86``/``fbgemm`` for Intel/AMD servers and laptops,
``qnnpack`` for ARM (phones, Raspberry Pi). A model converted for one engine must run with that
engine active, which the manifest and the runtimes take care of.

QNNPACK's quantized clamp (``relu6``, ``hardtanh``, ``clamp``) returns wrong values for
channels-last tensors (torch 2.14: errors up to the full 0-6 range; ``relu`` and the other
activations are right), and every quantized convolution returns channels-last. So on the FX path
with ``qnnpack`` each ``ReLU6``/``Hardtanh`` module is replaced by :class:`ContiguousHardtanh`,
which hands the kernel a contiguous tensor: without it MobileNetV2 and EfficientNet-Lite (ReLU6
after nearly every convolution) lose all accuracy in int8 (top-1 agreement with fp32 near 0).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from enum import Enum

import numpy as np
import torch
from torch import nn

from edgerobust.errors import ConfigError


class Engine(str, Enum):
    fbgemm = "fbgemm"
    x86 = "x86"
    qnnpack = "qnnpack"


def host_engine() -> str:
    """The engine this machine would use: qnnpack on ARM, x86 elsewhere."""
    import platform

    return "qnnpack" if platform.machine().lower() in {"aarch64", "arm64", "armv7l"} else "x86"


@contextmanager
def quiet() -> Iterable[None]:
    """torch.ao's eager-mode API warns that it is deprecated on every call; it still works."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def check_engine(engine: str) -> str:
    engine = Engine(engine).value if engine in Engine._value2member_map_ else engine
    if engine not in torch.backends.quantized.supported_engines:
        raise ConfigError(
            f"quantization engine {engine!r} is not available in this torch build "
            f"(it has {', '.join(e for e in torch.backends.quantized.supported_engines if e != 'none')})"
        )
    return engine


EAGER, FX = "ptsq-eager", "ptsq-fx"
FX_EXAMPLE_SIZE = 32  # FX traces symbolically: the example input's size does not matter


def ptsq_scheme(model: nn.Module, keep_fp32: Sequence[str] = ()) -> str:
    """``ptsq-eager`` for a model with its own ``fuse_model`` (the ResNets) and nothing kept in
    fp32; ``ptsq-fx`` otherwise (see the module docstring)."""
    eager = hasattr(getattr(model, "backbone", None), "fuse_model")
    return EAGER if eager and not keep_fp32 else FX


def prepare_ptsq(model: nn.Module, engine: str, keep_fp32: Sequence[str] = ()) -> nn.Module:
    """A fused copy of ``model`` with observers attached, ready for calibration.

    ``keep_fp32``: module names left in fp32 (FX path). Unknown names are an error.
    """
    engine = check_engine(engine)
    torch.backends.quantized.engine = engine
    prepared = copy.deepcopy(model).cpu().eval()
    names = dict(prepared.named_modules())
    unknown = [n for n in keep_fp32 if n not in names]
    if unknown:
        raise ConfigError(
            f"keep_fp32 names {unknown[0]!r}, which the model lacks (names as in named_modules(), "
            "e.g. backbone.conv1)"
        )
    if ptsq_scheme(model, keep_fp32) == EAGER:
        with quiet():
            prepared.backbone.fuse_model()
            prepared.backbone.qconfig = torch.ao.quantization.get_default_qconfig(engine)
            torch.ao.quantization.prepare(prepared, inplace=True)
        return prepared
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    _plain_norm_act(prepared)
    if engine == Engine.qnnpack.value:
        _layout_safe_clamps(prepared)
    mapping = get_default_qconfig_mapping(engine)
    for name in keep_fp32:
        mapping = mapping.set_module_name(name, None)
    example = torch.rand(1, 3, FX_EXAMPLE_SIZE, FX_EXAMPLE_SIZE)
    try:
        with quiet():
            return prepare_fx(prepared, mapping, (example,))
    except Exception as exc:
        raise ConfigError(
            f"FX graph-mode quantization cannot trace this model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}): export it in fp32, or to ONNX int8"
        ) from exc


class ContiguousHardtanh(nn.Module):
    """``hardtanh(x, lo, hi)`` (ReLU6 for 0, 6) on a contiguous copy of ``x``: QNNPACK's quantized
    clamp is wrong on channels-last input (see the module docstring). Traced by FX as
    ``contiguous`` then ``hardtanh``, both of which stay in int8."""

    def __init__(self, min_val: float = 0.0, max_val: float = 6.0) -> None:
        super().__init__()
        self.min_val, self.max_val = float(min_val), float(max_val)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.hardtanh(x.contiguous(), self.min_val, self.max_val)


def _layout_safe_clamps(model: nn.Module) -> int:
    """Replace every ``nn.Hardtanh`` (``nn.ReLU6`` is one) by :class:`ContiguousHardtanh` in
    place; returns how many. Deterministic, so a saved prepared state reloads the same way."""
    n = 0
    for parent in list(model.modules()):
        for cname, child in list(parent.named_children()):
            if isinstance(child, nn.Hardtanh):
                setattr(parent, cname, ContiguousHardtanh(child.min_val, child.max_val))
                n += 1
    return n


def _plain_norm_act(model: nn.Module) -> None:
    """Split batch-norm subclasses that carry their activation (timm's ``BatchNormAct2d``) into
    ``Sequential(BatchNorm2d, act)`` in place.

    FX traces into such a module and would meet a functional ``batch_norm`` it cannot fuse with
    the conv before it; as a plain ``BatchNorm2d`` module it fuses (conv-bn, conv-bn-relu).
    Deterministic, so a checkpoint's prepared state reloads into a model prepared the same way.
    """
    for parent in list(model.modules()):
        for cname, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d or not isinstance(child, nn.BatchNorm2d):
                continue
            act = getattr(child, "act", None)
            if not isinstance(act, nn.Module):
                continue
            bn = nn.BatchNorm2d(
                child.num_features,
                child.eps,
                child.momentum if child.momentum is not None else 0.1,
                child.affine,
                child.track_running_stats,
            )
            bn.load_state_dict(child.state_dict())
            bn.train(child.training)
            drop = getattr(child, "drop", None)
            layers = [bn] + ([drop] if isinstance(drop, nn.Module) else []) + [act]
            setattr(parent, cname, nn.Sequential(*layers))


def calibrate(
    prepared: nn.Module,
    batches: Iterable[np.ndarray],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Run calibration batches (float32 NCHW in [0, 1]) through the observers; returns #images."""
    n = 0
    with torch.inference_mode():
        for i, batch in enumerate(batches, 1):
            prepared(torch.from_numpy(np.ascontiguousarray(batch)))
            n += len(batch)
            if progress:
                progress(i)
    if n == 0:
        raise ConfigError("calibration saw no images: the source training split is empty")
    return n


def convert_prepared(prepared: nn.Module, engine: str) -> nn.Module:
    """The int8 model (a copy); ``prepared`` stays usable and saveable."""
    engine = check_engine(engine)
    torch.backends.quantized.engine = engine
    with quiet():
        if isinstance(prepared, torch.fx.GraphModule):
            from torch.ao.quantization.quantize_fx import convert_fx

            return convert_fx(copy.deepcopy(prepared).eval())
        return torch.ao.quantization.convert(copy.deepcopy(prepared).eval(), inplace=False)
