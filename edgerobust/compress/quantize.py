"""Post-training static quantization (PTSQ), as in the paper (section 3.1.3).

fuse conv-bn(-relu) -> attach the qconfig (per-channel int8 weights, histogram-calibrated uint8
activations) -> calibrate on source-domain training images -> correct the fused biases for the
weights' rounding -> convert.

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

Two departures from the engines' default qconfigs, both recorded in the checkpoint's
``spec.quant`` (``weights``, ``bias_correction``) so that it reloads the same way:

- **per-channel weights on every engine.** ``x86``/``fbgemm`` default to them already; ``qnnpack``
  defaults to one scale per tensor, although its convolution and linear kernels take per-channel
  weights (and the TorchScript/lite interpreter carries them). A depthwise filter whose channels
  differ in size by 100x loses the small ones to a per-tensor scale.
- **8-bit activations on x86/fbgemm, with 7-bit weights** instead of torch's 7-bit activations
  (the AVX2 kernels' 16-bit saturation needs one of the two reduced; see :func:`ptsq_qconfig`).
- **clamped activations** (FX path, ``spec.quant["clamped_activations"]``). A convolution followed
  by ``ReLU6``/``Hardtanh`` (every one in MobileNetV2 and EfficientNet-Lite) is fused with its
  batch norm but not with the clamp, and FX gives the convolution's output, the clamp's input and
  its output one shared observer, which saw the pre-clamp range (e.g. -20..15 where ReLU6 keeps
  0..6): the int8 steps came out 3-6x coarser than the clamped tensor needs. The observers on
  that chain now record what the clamp lets through (:class:`ClampedHistogramObserver`), so the
  convolution's int8 output covers only [0, 6] and its saturation is the clamp, as onnxruntime
  fuses ``Conv+Clip``. ``nn.Identity`` modules (timm's ``drop``, ``aa``, ``se`` in the Lite
  models) are traced through instead of being observed as ops of their own. EfficientNet-Lite0
  (PACS photo, qnnpack, 167 images): top-1 agreement with fp32 92.2 % -> 97.6 %.
- **bias correction** (Nagel et al. 2019, "Data-Free Quantization", section 4.2, empirical
  variant): rounding a layer's weights shifts its output by ``(W_q - W) x``, whose mean
  ``(W_q - W) E[x]`` does not average out and adds to the bias, layer after layer (worst in
  depthwise convolutions, 9 or 25 weights per output). ``E[x]``, each fused layer's per-channel
  input mean, is measured in the same calibration pass; the bias is lowered by the shift. The
  ONNX int8 exporter does the same (``exporters/onnx.py``, ``bias_corrections``).

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.ao.nn.intrinsic import _FusedModule
from torch.ao.quantization.observer import HistogramObserver

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


PER_CHANNEL, ENGINE_DEFAULT = "per-channel", "engine-default"  # spec.quant["weights"]


def ptsq_qconfig(engine: str, per_channel: bool = True) -> Any:
    """The qconfig of every quantized layer (see the module docstring).

    ``per_channel`` (the default): per-channel symmetric int8 weights with 8-bit activations;
    on ``x86``/``fbgemm`` the weights are 7-bit instead of torch's 7-bit activations. False:
    the engine's own default (qnnpack: per-tensor weights; x86: 7-bit activations).
    """
    from torch.ao.quantization import QConfig, get_default_qconfig
    from torch.ao.quantization.observer import (
        HistogramObserver,
        PerChannelMinMaxObserver,
        default_per_channel_weight_observer,
    )

    base = get_default_qconfig(engine)
    if not per_channel:
        return base
    if engine in (Engine.x86.value, Engine.fbgemm.value):
        # fbgemm's AVX2 kernels add pairs of u8 x s8 products in 16 bits (vpmaddubsw), which
        # saturates unless one side gives up a bit; torch's default takes it from the
        # activations, every one of them in the network. 7-bit weights (255 * 64 * 2 < 2^15) are
        # what onnxruntime's reduce_range does: EfficientNet-Lite0 (PACS photo, 167 images)
        # agreed with fp32 on 85.6 % with 7-bit activations, 90.4 % with 7-bit weights.
        return QConfig(
            activation=HistogramObserver.with_args(reduce_range=False),
            weight=PerChannelMinMaxObserver.with_args(
                dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-64, quant_max=63
            ),
        )
    return QConfig(activation=base.activation, weight=default_per_channel_weight_observer)


def ptsq_bits(engine: str, per_channel: bool = True) -> dict[str, int]:
    """Bits of the weights and activations :func:`ptsq_qconfig` gives (for the record)."""
    x86 = engine in (Engine.x86.value, Engine.fbgemm.value)
    if per_channel:
        return {"weight_bits": 7 if x86 else 8, "activation_bits": 8}
    return {"weight_bits": 8, "activation_bits": 7 if x86 else 8}


def prepare_ptsq(
    model: nn.Module,
    engine: str,
    keep_fp32: Sequence[str] = (),
    *,
    per_channel: bool = True,
    clamp: bool = True,
) -> nn.Module:
    """A fused copy of ``model`` with observers attached, ready for calibration.

    ``keep_fp32``: module names left in fp32 (FX path). Unknown names are an error.
    ``per_channel``: per-channel weights (the default); False gives the engine's default qconfig
    (what checkpoints written before ``spec.quant["weights"]`` used).
    ``clamp``: FX path, clamped activations (see the module docstring); False gives the graph
    checkpoints written before ``spec.quant["clamped_activations"]`` used.
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
    qconfig = ptsq_qconfig(engine, per_channel)
    if ptsq_scheme(model, keep_fp32) == EAGER:
        with quiet():
            prepared.backbone.fuse_model()
            prepared.backbone.qconfig = qconfig
            torch.ao.quantization.prepare(prepared, inplace=True)
        return prepared
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    _plain_norm_act(prepared)
    if engine == Engine.qnnpack.value:
        _layout_safe_clamps(prepared)
    if clamp:
        _trace_through_identities(prepared, keep_fp32)
    mapping = get_default_qconfig_mapping(engine).set_global(qconfig)
    for name in keep_fp32:
        mapping = mapping.set_module_name(name, None)
    example = torch.rand(1, 3, FX_EXAMPLE_SIZE, FX_EXAMPLE_SIZE)
    try:
        with quiet():
            graph = prepare_fx(prepared, mapping, (example,))
    except Exception as exc:
        raise ConfigError(
            f"FX graph-mode quantization cannot trace this model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}): export it in fp32, or to ONNX int8"
        ) from exc
    if clamp:
        clamp_observers(graph)
    return graph


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


class _PassThrough(nn.Module):
    """``nn.Identity`` that FX traces through (no node, no observer of its own)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _trace_through_identities(model: nn.Module, keep_fp32: Sequence[str] = ()) -> None:
    """Replace every ``nn.Identity`` (not one named in ``keep_fp32``) by :class:`_PassThrough`
    in place. Deterministic, so a saved prepared state reloads the same way."""
    keep = set(keep_fp32)
    for pname, parent in list(model.named_modules()):
        for cname, child in list(parent.named_children()):
            if type(child) is nn.Identity and f"{pname}.{cname}".lstrip(".") not in keep:
                setattr(parent, cname, _PassThrough())


class ClampedHistogramObserver(HistogramObserver):
    """A histogram observer that records ``x.clamp(lo, hi)``: what the clamp after it lets
    through. Its state is a ``HistogramObserver``'s, so saved checkpoints keep their keys."""

    clamps = True
    lo: float = -float("inf")
    hi: float = float("inf")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        super().forward(x.detach().clamp(self.lo, self.hi))
        return x


#: Per-tensor activation observers that can record a clamped range (torch.ao's and torchao's,
#: which PT2E uses, by class name).
CLAMPABLE = ("HistogramObserver", "MinMaxObserver", "MovingAverageMinMaxObserver")
_CLAMPED: dict[type, type] = {HistogramObserver: ClampedHistogramObserver}


def _clamped_class(cls: type) -> type | None:
    """``cls`` made to record ``x.clamp(lo, hi)`` (:class:`ClampedHistogramObserver` for torch.ao's
    histogram observer); None for an observer that is not a per-tensor activation observer."""
    if getattr(cls, "clamps", False):
        return cls
    if cls not in _CLAMPED:
        if cls.__name__ not in CLAMPABLE:
            return None

        def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
            cls.forward(self, x.detach().clamp(self.lo, self.hi))
            return x

        attrs = {"forward": forward, "clamps": True, "lo": -float("inf"), "hi": float("inf")}
        _CLAMPED[cls] = type(f"Clamped{cls.__name__}", (cls,), attrs)
    return _CLAMPED[cls]


_ATEN_HARDTANH = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)


def _clamp_bounds(graph: torch.fx.GraphModule, node: torch.fx.Node) -> tuple[float, float] | None:
    """``(lo, hi)`` when ``node`` clamps its input (``hardtanh``, ``relu6``, ``nn.Hardtanh``, and
    the ``aten.hardtanh`` of an exported graph)."""
    if node.op == "call_function" and node.target is nn.functional.relu6:
        return 0.0, 6.0
    hardtanh = node.target is nn.functional.hardtanh or node.target in _ATEN_HARDTANH
    if node.op == "call_function" and hardtanh:
        lo = node.kwargs.get("min_val", node.args[1] if len(node.args) > 1 else -1.0)
        hi = node.kwargs.get("max_val", node.args[2] if len(node.args) > 2 else 1.0)
        return float(lo), float(hi)
    if node.op == "call_module":
        module = graph.get_submodule(node.target)
        if isinstance(module, nn.Hardtanh):
            return float(module.min_val), float(module.max_val)
    return None


def clamp_observers(graph: torch.fx.GraphModule) -> int:
    """Make the activation observers between an op and the clamp that alone consumes it record
    the clamped values (see the module docstring); returns how many observers changed. Works on
    an FX-prepared model and on a PT2E-prepared one (``prepare_pt2e``), where the XNNPACK
    quantizer shares one observer between a convolution's output and the ``hardtanh`` after it.

    Walks up from each clamp through observers and ``contiguous`` while every node has the
    clamp's chain as its only user, so no unclamped value is quantized to the clamped range.
    """
    changed: set[int] = set()
    for node in graph.graph.nodes:
        bounds = _clamp_bounds(graph, node)
        if bounds is None or not node.args:
            continue
        chain: list[nn.Module] = []
        cur = node.args[0]
        while isinstance(cur, torch.fx.Node) and len(cur.users) == 1:
            if (obs := _observer_at(graph, cur)) is not None:
                chain.append(obs)
            elif not (cur.op == "call_method" and cur.target == "contiguous"):
                break
            cur = cur.args[0]
        else:
            continue  # the producer feeds something else too: leave its observers alone
        # and the clamp's own output observer (FX shares it with the input's)
        chain += [obs for u in node.users if (obs := _observer_at(graph, u)) is not None]
        for obs in chain:
            if (cls := _clamped_class(type(obs))) is not None:
                obs.__class__ = cls
                obs.lo, obs.hi = bounds
                changed.add(id(obs))
    return len(changed)


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


# --------------------------------------------------------------------------- bias correction


@dataclass(frozen=True)
class Layer:
    """A layer int8 will quantize: ``module`` (named ``name``, carrying the qconfig) wraps or is
    ``op``, the fused ``Conv2d``/``Linear`` whose weight is quantized."""

    name: str
    module: nn.Module
    op: nn.Conv2d | nn.Linear


def quantized_layers(prepared: nn.Module) -> list[Layer]:
    """The convolutions and linear layers of a prepared model that int8 quantizes, in model
    order (fused conv-bn(-relu) count once, under the convolution's name); layers kept in fp32
    (qconfig ``None``) are left out."""
    out: list[Layer] = []
    for name, mod in prepared.named_modules():  # parents come before their children
        if getattr(mod, "qconfig", None) is None:
            continue
        if out and name.startswith(out[-1].name + "."):
            continue  # the convolution inside a fused conv-relu: counted as the fused module
        op = mod[0] if isinstance(mod, _FusedModule) else mod
        if type(op) in (nn.Conv2d, nn.Linear):
            out.append(Layer(name, mod, op))
    return out


@contextmanager
def input_means(layers: Sequence[Layer]) -> Iterator[dict[str, torch.Tensor]]:
    """While open, every forward pass adds to each layer's per-channel input mean; the dict
    (layer name -> mean, float64) is filled when the block closes."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def add(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().double()
            axes = (0, *range(2, x.dim()))
            sums[name] = sums.get(name, 0) + x.sum(dim=axes)
            counts[name] = counts.get(name, 0) + x.numel() // x.shape[1]

        return add

    means: dict[str, torch.Tensor] = {}
    handles = [layer.op.register_forward_pre_hook(hook(layer.name)) for layer in layers]
    try:
        yield means
    finally:
        for h in handles:
            h.remove()
        means.update({n: sums[n] / max(counts[n], 1) for n in sums})


def quantized_weight(layer: Layer) -> torch.Tensor:
    """``layer``'s weight as int8 will hold it (dequantized): its qconfig's weight observer,
    as ``convert`` applies it."""
    w = layer.op.weight.detach()
    obs = layer.module.qconfig.weight()
    obs(w)
    scale, zero_point = obs.calculate_qparams()
    if obs.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine):
        return torch.fake_quantize_per_channel_affine(
            w, scale.float(), zero_point.int(), obs.ch_axis, obs.quant_min, obs.quant_max
        )
    return torch.fake_quantize_per_tensor_affine(
        w, float(scale), int(zero_point), obs.quant_min, obs.quant_max
    )


def correct_biases(
    layers: Sequence[Layer], means: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Lower each layer's bias by ``(W_q - W) E[x]`` in place (see the module docstring);
    returns the original biases by layer name. Layers without a bias or without measured
    inputs are left alone (a fused conv-bn always has a bias)."""
    original = {}
    for layer in layers:
        op = layer.op
        if op.bias is None or layer.name not in means:
            continue
        dw = (quantized_weight(layer) - op.weight.detach()).double()
        mean = means[layer.name]
        if isinstance(op, nn.Linear):
            shift = dw @ mean
        else:
            groups = op.groups
            per_group = mean.reshape(groups, -1)
            group_of = torch.arange(dw.shape[0]) // (dw.shape[0] // groups)
            shift = (dw.flatten(2).sum(2) * per_group[group_of]).sum(1)
        original[layer.name] = op.bias.detach().clone()
        with torch.no_grad():
            op.bias -= shift.to(op.bias.dtype)
    return original


@dataclass
class Calibrated:
    """A prepared, calibrated model (what a checkpoint stores) and how it was made."""

    prepared: nn.Module
    images: int
    per_channel: bool
    bias_correction: bool
    original_biases: dict[str, torch.Tensor]  # of the corrected layers, before correction
    means: dict[str, torch.Tensor]  # per layer, its per-channel input mean on the calibration
    reused: bool = False  # observers copied from another candidate's calibration (see below)
    clamped: bool = False  # FX graph with clamped activations (see the module docstring)

    def quant_spec(self, engine: str) -> dict[str, Any]:
        """The keys ``spec.quant`` records about the weights and activations."""
        return {
            "weights": PER_CHANNEL if self.per_channel else ENGINE_DEFAULT,
            **ptsq_bits(engine, self.per_channel),
            "bias_correction": self.bias_correction,
            "clamped_activations": self.clamped,
        }


def calibrated_ptsq(
    model: nn.Module,
    engine: str,
    batches: Sequence[np.ndarray],
    keep_fp32: Sequence[str] = (),
    *,
    per_channel: bool = True,
    bias_correction: bool = True,
    clamp: bool = True,
    progress: Callable[[int], None] | None = None,
    donor: Calibrated | None = None,
) -> Calibrated:
    """prepare -> calibrate -> bias correction: the state a PTSQ checkpoint stores.

    ``donor``: an FX candidate of the same model already calibrated on ``batches``, e.g. with
    other layers kept in fp32 (the fallback's candidates). Calibration runs the prepared model
    in fp32 whatever it keeps, so every observer sees the same tensors in both: its statistics
    are copied, matched by the graph node it observes, instead of running the images again (the
    same numbers, a tested equality). If any observer or layer has no counterpart, it calibrates.
    """
    prepared = prepare_ptsq(model, engine, keep_fp32, per_channel=per_channel, clamp=clamp)
    layers = quantized_layers(prepared) if bias_correction else []
    reused = (
        donor is not None
        and all(layer.name in donor.means for layer in layers)
        and _copy_observers(prepared, donor.prepared)
    )
    if reused:
        n, means = donor.images, donor.means
    else:
        with input_means(layers) as means:
            n = calibrate(prepared, batches, progress)
    original = correct_biases(layers, means) if bias_correction else {}
    clamped = clamp and isinstance(prepared, torch.fx.GraphModule)
    return Calibrated(
        prepared, n, per_channel, bias_correction, original, dict(means), reused, clamped
    )


def _observer_at(graph: torch.fx.GraphModule, node: torch.fx.Node) -> nn.Module | None:
    """The observer module ``node`` calls (torch.ao's or torchao's), or None when it calls
    something else."""
    if node.op != "call_module":
        return None
    module = graph.get_submodule(node.target)
    return module if hasattr(module, "calculate_qparams") else None


def _observers(prepared: nn.Module) -> dict[str, list[str]] | None:
    """An FX-prepared model's observers: observed node name -> observer module names (None for
    a model prepared in eager mode)."""
    if not isinstance(prepared, torch.fx.GraphModule):
        return None
    out: dict[str, list[str]] = {}
    for node in prepared.graph.nodes:
        if node.args and _observer_at(prepared, node) is not None:
            out.setdefault(str(node.args[0]), []).append(node.target)
    return out


def _copy_observers(prepared: nn.Module, donor: nn.Module) -> bool:
    """Give ``prepared`` copies of ``donor``'s observers, matched by the node each observes;
    False (and nothing changed) if some observer has no single counterpart."""
    mine, theirs = _observers(prepared), _observers(donor)
    if mine is None or theirs is None:
        return False
    plan: dict[str, str] = {}
    for node, targets in mine.items():
        if len(theirs.get(node, ())) != 1:
            return False
        for target in targets:
            if plan.setdefault(target, theirs[node][0]) != theirs[node][0]:
                return False
    for target, source in plan.items():
        parent, _, child = target.rpartition(".")
        holder = prepared.get_submodule(parent) if parent else prepared
        setattr(holder, child, copy.deepcopy(donor.get_submodule(source)))
    return True


# --------------------------------------------------------------------------- fallback ranking


class _FloatIsland(nn.Module):
    """A float module inside an int8 model: dequantize, run it, quantize its output as the int8
    module it replaces would have."""

    def __init__(self, module: nn.Module, scale: float, zero_point: int) -> None:
        super().__init__()
        self.module, self.scale, self.zero_point = module, scale, zero_point

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.module(x.dequantize() if x.is_quantized else x)
        return torch.quantize_per_tensor(y, self.scale, self.zero_point, torch.quint8)


@contextmanager
def float_islands(int8: nn.Module, cal: Calibrated, names: Sequence[str]) -> Iterator[None]:
    """While open, the int8 layers ``names`` of ``int8`` (converted from ``cal.prepared``) run in
    fp32 with their uncorrected bias, their outputs quantized as before: a cheap stand-in for
    re-quantizing with those layers kept in fp32 (which re-calibrates everything), used to rank
    layers for the fallback."""
    prepared = dict(cal.prepared.named_modules())
    swapped = []
    try:
        for name in names:
            q = int8.get_submodule(name)
            f = copy.deepcopy(prepared[name])
            for m in f.modules():  # observers and their hooks stay out of it
                m._forward_hooks.clear()
                m._forward_pre_hooks.clear()
            if name in cal.original_biases:
                op = f[0] if isinstance(f, _FusedModule) else f
                op.bias.data.copy_(cal.original_biases[name])
            parent, _, child = name.rpartition(".")
            holder = int8.get_submodule(parent) if parent else int8
            setattr(holder, child, _FloatIsland(f, float(q.scale), int(q.zero_point)))
            swapped.append((holder, child, q))
        yield
    finally:
        for holder, child, q in reversed(swapped):
            setattr(holder, child, q)
