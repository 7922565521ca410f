"""ONNX exporters: fp32 through ``torch.onnx.export``, int8 through onnxruntime's ``quantize_static``.

We use the TorchScript-based exporter (``dynamo=False``): for these convolutional classifiers it is
mature, fast (well under a second for a ResNet-18) and needs no onnxscript; it folds eval-mode
batch-norm into the convolutions. The batch axis is dynamic.

int8 is configured for the CPU that will run it (``--target``, :data:`TARGETS`), after
``quant_pre_process``. What is fast differs by CPU: onnxruntime fuses a QDQ convolution or addition
into an integer kernel only where that kernel exists for the activation type. On x86, with or
without VNNI, s8 activations are left out of most fusions (onnxruntime's QDQ fusion admits s8
activations only in ARM builds): 11 of ResNet-18's 20 convolutions and all 8 residual additions
ran as dequantize -> fp32 op -> quantize, on an AVX2 host and again on an AVX-512 VNNI one. u8
activations are fused (20 ``QLinearConv``, 8 ``QLinearAdd``): about twice as fast on AVX2, 2.7x
faster than s8s8 with VNNI. On ARM s8s8 is onnxruntime's first choice. ``--tune`` measures the
candidates on this host instead (:mod:`.int8tune`); when int8 breaks the model, the
accuracy-aware fallback keeps the most sensitive layers in fp32
(:mod:`edgerobust.compress.fallback`). Every configuration corrects each layer's bias for the mean
output shift its int8 weights cause (:func:`bias_corrections`): what EfficientNet-Lite needed.
"""

from __future__ import annotations

import contextlib
import io
import platform
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

from edgerobust.errors import ConfigError

from .parity import ParityBar, ParityResult
from .registry import Exporter, WriteOutcome, register_exporter

INPUT_NAME, OUTPUT_NAME = "input", "logits"
OPSET = 17
# ONNX Runtime's fp32 kernels sum in another order than torch's: ~1e-5 on ResNet logits.
FP32_BAR = ParityBar(atol=1e-4, rtol=1e-3)
# The ops whose weights int8 quantizes: the "layers" the fallback may keep in fp32.
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
CALIBRATIONS = ("minmax", "entropy", "percentile")


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


# --------------------------------------------------------------------------- configurations


@dataclass(frozen=True)
class Int8Config:
    """One way to quantize: onnxruntime's ``quantize_static`` arguments, as data."""

    format: str = "qdq"  # qdq | qoperator
    activations: str = "u8"  # u8 | s8
    weights: str = "s8"
    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights: no u8 x s8 pair can saturate a 16-bit sum
    calibration: str = "minmax"  # minmax | entropy | percentile
    bias_correction: bool = True  # cancel each layer's mean weight-rounding error (see below)

    @property
    def label(self) -> str:
        parts = [
            self.format.upper() if self.format == "qdq" else "QOperator",
            f"{self.activations}{self.weights}",
            "per-channel" if self.per_channel else "per-tensor",
        ]
        if self.reduce_range:
            parts.append("reduce-range")
        parts.append(self.calibration)
        if self.bias_correction:
            parts.append("bias-corrected")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}


@dataclass(frozen=True)
class Target:
    """A CPU family an int8 artifact is made for, with the configuration that is fast on it."""

    name: str
    cpus: str
    config: Int8Config
    why: str


_S8S8 = Int8Config(activations="s8", weights="s8")
TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "x86",
            "x86-64 with AVX2, no VNNI (e.g. AMD Zen 1-3, Intel before Cascade Lake)",
            Int8Config(activations="u8", weights="s8", reduce_range=True),
            "on x86, VNNI or not, onnxruntime fuses QDQ Conv/Add into integer kernels only for "
            "u8 activations (s8 ones stay dequantize -> fp32 op -> quantize); without VNNI its "
            "u8 x s8 kernel (VPMADDUBSW) sums pairs of products in 16 bits with saturation, so "
            "weights are quantized to 7 bits (reduce_range), which no pair can saturate",
        ),
        Target(
            "x86-vnni",
            "x86-64 with AVX-512 VNNI or AVX-VNNI (Intel Cascade Lake and later, AMD Zen 4+)",
            Int8Config(activations="u8", weights="s8"),
            "onnxruntime fuses QDQ Conv/Add into integer kernels on x86 only for u8 "
            "activations, VNNI or not (s8 ones stay dequantize -> fp32 op -> quantize); VNNI "
            "(VPDPBUSD) sums u8 x s8 products in 32 bits, so weights keep all 8 bits (on x86 "
            "without VNNI such a file saturates: use --target x86 there)",
        ),
        Target(
            "arm64",
            "64-bit ARM without dot product (Raspberry Pi 4: Cortex-A72)",
            _S8S8,
            "ARM kernels fuse s8s8 QDQ; without the dot-product instructions (asimddp) int8 "
            "products are widened and summed in NEON registers, so int8 may be little faster "
            "than fp32 here (the size still drops 4x)",
        ),
        Target(
            "arm64-dotprod",
            "64-bit ARM with dot product (Raspberry Pi 5: Cortex-A76; Graviton, Apple)",
            _S8S8,
            "s8s8 QDQ runs on SDOT (4 int8 products summed in 32 bits per lane): onnxruntime's "
            "first choice on ARM",
        ),
    )
}
TARGET_CHOICES = ("auto", *TARGETS)
VNNI_FLAGS = ("avx512_vnni", "avx512vnni", "avx_vnni", "amx_int8")


def host_target(fingerprint: dict[str, Any] | None = None) -> tuple[str, str]:
    """``(target name, why)`` for this host, from its fingerprint (architecture and ISA flags)."""
    from edgerobust.evaluate.fingerprint import host_fingerprint

    fp = fingerprint or host_fingerprint()
    arch, flags = fp["arch"].lower(), set(fp["isa_flags"])
    cpu = f"{fp['cpu_model']} ({fp['arch']})"
    if arch in ("aarch64", "arm64"):
        if "asimddp" in flags:
            return "arm64-dotprod", f"this host: {cpu} has asimddp"
        return "arm64", f"this host: {cpu} lacks asimddp"
    if arch in ("x86_64", "amd64"):
        vnni = sorted(flags & set(VNNI_FLAGS))
        if vnni:
            return "x86-vnni", f"this host: {cpu} has {', '.join(vnni)}"
        return "x86", f"this host: {cpu} has no VNNI"
    raise ConfigError(
        f"no int8 target for this host's architecture {platform.machine()!r}: pass "
        f"--target {'|'.join(TARGETS)} for the CPU that will run the model"
    )


def resolve_target(name: str) -> tuple[Target, str]:
    """The :class:`Target` for ``name`` (``auto``: this host's) and how it was chosen."""
    if name == "auto":
        name, how = host_target()
        return TARGETS[name], f"--target auto: {how}"
    if name not in TARGETS:
        raise ConfigError(
            f"unknown int8 target {name!r}: choose one of {', '.join(TARGET_CHOICES)}"
        )
    return TARGETS[name], f"--target {name}"


# --------------------------------------------------------------------------- quantization


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol: ``get_next() -> {input: batch} | None``."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._batches = batches
        self._it: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:
        self._it = iter(self._batches)


def preprocess(fp32_path: Path, out: Path) -> tuple[Path, list[str]]:
    """``quant_pre_process`` (shape inference + graph optimisation), as onnxruntime recommends
    before quantization: better fusion means fewer Q/DQ pairs and better accuracy."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(fp32_path), str(out), skip_symbolic_shape=True)
        return out, []
    except Exception as exc:  # pre-processing is an optimisation; quantize the raw graph
        return fp32_path, [f"quant_pre_process skipped: {type(exc).__name__}"]


def quantize(
    src: Path,
    out: Path,
    config: Int8Config,
    calibration: list[np.ndarray] | None,
    *,
    cache: Path | None = None,
    exclude: Sequence[str] = (),
) -> None:
    """``quantize_static`` with ``config``; ``exclude`` names nodes kept in fp32. Calibration
    ranges are read from ``cache`` when it exists (written there otherwise): one calibration per
    method serves every configuration and every fallback trial."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    types = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    # The Entropy and Percentile calibrators print their progress to stdout: not ours to show.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        quantize_static(
            str(src),
            str(out),
            _Calibration(calibration) if calibration is not None else None,
            quant_format=QuantFormat.QDQ if config.format == "qdq" else QuantFormat.QOperator,
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            activation_type=types[config.activations],
            weight_type=types[config.weights],
            calibrate_method=methods[config.calibration],
            nodes_to_exclude=list(exclude),
            calibration_cache_path=str(cache) if cache else None,
        )
    if exclude:
        keep_fp32(out, exclude)


def weight_key(config: Int8Config) -> str:
    """What decides a configuration's int8 weights (so its bias corrections)."""
    return f"{config.weights}-{'pc' if config.per_channel else 'pt'}-{int(config.reduce_range)}"


def bias_corrections(
    src: Path, quantized: Path, calibration: Sequence[np.ndarray]
) -> dict[str, np.ndarray]:
    """Per node of ``src`` with a bias (Conv, Gemm), the bias that cancels the mean output error
    its int8 weights (as ``quantized`` holds them) cause on the calibration images.

    Rounding weights to int8 shifts a layer's output by ``(W_q - W) x``, whose mean over images
    and positions, ``(W_q - W) E[x]``, does not average out: it adds to the bias, layer after
    layer (Nagel et al. 2019, "Data-Free Quantization", section 4.2; empirical variant). Worst in
    depthwise convolutions, where each output sums 9 or 25 weights. ``E[x]`` is each layer's
    per-channel input mean in the fp32 graph (zero padding at the borders is ignored). Measured on
    an ImageNet-pretrained EfficientNet-Lite0 fine-tuned on PACS (x86 target): top-1 agreement
    with fp32 95.8 % -> 98.2 %, mean |logit error| 0.74 -> 0.50; with 16-bit activations and int8
    weights it was 97.0 %, with int8 activations and 16-bit weights 100 %: the weights, not the
    calibration, were what broke it.
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    layers = [
        n
        for n in model.graph.node
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[1] in inits
        and n.input[2] in inits and _attr(n, "transA", 0) == 0
        and (n.op_type == "Conv" or _attr(n, "transB", 0) == 1)
    ]  # fmt: skip
    dequantized = _dequantized_weights(quantized)
    q_nodes = {n.name: n for n in onnx.load(str(quantized)).graph.node}
    layers = [n for n in layers if n.name in q_nodes and q_nodes[n.name].input[1] in dequantized]
    if not layers:
        return {}
    inputs = sorted({n.input[0] for n in layers})
    probe = onnx.load(str(src))
    known = {o.name for o in probe.graph.output}
    for name in inputs:
        if name not in known:
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(
        probe.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]
    )
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = dict.fromkeys(inputs, 0)
    for batch in calibration:
        for name, x in zip(inputs, sess.run(inputs, {INPUT_NAME: batch}), strict=True):
            axes = (0, *range(2, x.ndim))
            sums[name] = sums.get(name, 0) + x.astype(np.float64).sum(axis=axes)
            counts[name] += x.size // x.shape[1]
    fixed: dict[str, np.ndarray] = {}
    for node in layers:
        w = inits[node.input[1]].astype(np.float64)
        dw = dequantized[q_nodes[node.name].input[1]] - w
        mean = sums[node.input[0]] / max(counts[node.input[0]], 1)
        if node.op_type == "Gemm":
            shift = dw @ mean
        else:
            groups = _attr(node, "group", 1)
            per_group = mean.reshape(groups, w.shape[1])
            group_of = np.arange(w.shape[0]) // (w.shape[0] // groups)
            shift = (dw.reshape(*w.shape[:2], -1).sum(2) * per_group[group_of]).sum(1)
        fixed[node.name] = (inits[node.input[2]] - shift).astype(np.float32)
    return fixed


def with_biases(src: Path, out: Path, biases: dict[str, np.ndarray]) -> Path:
    """A copy of ``src`` whose nodes named in ``biases`` get those biases."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.name in biases:
            inits[node.input[2]].CopyFrom(numpy_helper.from_array(biases[node.name], node.input[2]))
    onnx.save(model, str(out))
    return out


def _attr(node: Any, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def _dequantized_weights(path: Path) -> dict[str, np.ndarray]:
    """``{DequantizeLinear output: float64 values}`` for every DequantizeLinear of a constant."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    out: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        q = inits[node.input[0]].astype(np.float64)
        scale = inits[node.input[1]].astype(np.float64)
        zero = inits[node.input[2]].astype(np.float64) if len(node.input) > 2 else np.zeros(1)
        if scale.size > 1:
            shape = [1] * q.ndim
            shape[_attr(node, "axis", 1)] = -1
            scale = scale.reshape(shape)
            zero = zero.reshape(shape) if zero.size > 1 else zero
        out[node.output[0]] = (q - zero) * scale
    return out


def keep_fp32(path: Path, names: Sequence[str]) -> None:
    """Make the excluded nodes ``names`` really run in fp32 wherever onnxruntime runs the graph.

    ``nodes_to_exclude`` leaves a node's weights in fp32, but when its input still comes from a
    per-tensor DequantizeLinear (it does whenever another consumer of that tensor is quantized),
    onnxruntime's ``WeightBiasQuantization`` graph transformer quantizes the fp32 weights itself,
    per-tensor and symmetric, when the session loads, and fuses the node into an integer kernel:
    the layer would run in int8 after all, off the graph's own (QDQ reference) arithmetic. That
    transformer only acts on a per-tensor input scale, so the node gets its own DequantizeLinear
    with the same scale and zero point repeated per channel (axis 1): the same values, and the
    node stays an fp32 Conv / Gemm on dequantized input.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    wanted = set(names)
    for node in list(graph.node):
        if node.name not in wanted or node.op_type not in ("Conv", "Gemm"):
            continue
        dq = producer.get(node.input[0])
        weight = inits.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or weight is None or len(dq.input) < 3:
            continue
        scale, zero = inits.get(dq.input[1]), inits.get(dq.input[2])
        if scale is None or zero is None or numpy_helper.to_array(scale).size != 1:
            continue
        dims = list(weight.dims)
        if node.op_type == "Conv":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            channels = dims[1] * group
        else:
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            channels = dims[1] if trans_b else dims[0]
        tag = f"{node.name}_fp32_input"
        s = np.full(channels, numpy_helper.to_array(scale).item(), dtype=np.float32)
        z = np.full(
            channels, numpy_helper.to_array(zero).item(), dtype=numpy_helper.to_array(zero).dtype
        )
        graph.initializer.extend(
            [numpy_helper.from_array(s, f"{tag}_scale"), numpy_helper.from_array(z, f"{tag}_zp")]
        )
        new = helper.make_node(
            "DequantizeLinear",
            [dq.input[0], f"{tag}_scale", f"{tag}_zp"],
            [tag],
            name=tag,
            axis=1,
        )
        graph.node.insert(list(graph.node).index(node), new)
        node.input[0] = tag
    onnx.save(model, str(path))


def weighted_nodes(path: Path) -> list[str]:
    """Names of the nodes int8 quantizes weights of (Conv, Gemm, MatMul), in graph order."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in WEIGHTED_OPS]


def op_counts(path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def optimized_op_counts(path: Path) -> dict[str, int]:
    """Op counts of the graph onnxruntime actually runs here, after its graph optimizations
    (where QDQ groups become integer kernels such as ``QLinearConv``, or stay fp32)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        opt = Path(d) / "optimized.onnx"
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.optimized_model_filepath = str(opt)
        ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        return op_counts(opt)


def fp32_ops_left(counts: dict[str, int]) -> dict[str, int]:
    """The convolutions, additions and matrix products an optimized int8 graph still runs in fp32
    (NCHWc fp32 convolutions are ``Conv`` or ``FusedConv`` there)."""
    ops = ("Conv", "FusedConv", "Add", "Gemm", "MatMul", "FusedGemm")
    return {op: counts[op] for op in ops if counts.get(op)}


def _session(path: Path, threads: int = 1):
    import onnxruntime as ort

    from edgerobust.runtimes.ort import SPINNING_KEY

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry(SPINNING_KEY, "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, batches: Sequence[np.ndarray], threads: int = 1) -> np.ndarray:
    sess = _session(path, threads)
    return np.concatenate([sess.run(None, {INPUT_NAME: b})[0] for b in batches])


# --------------------------------------------------------------------------- the int8 request


@dataclass(frozen=True)
class Int8Options:
    """What ``export`` asks of an int8 writer beyond the model: the target CPU, whether to tune,
    whether to fall back, and ``judge(path) -> ParityResult``, the export's own parity gate
    (None: write the target's configuration without checking it)."""

    target: str = "auto"
    tune: bool = False
    fallback: bool = True
    judge: Callable[[Path], ParityResult] | None = None
    threads: int = 1  # for --tune's latency
    rank_images: int = 32  # ranking images: the calibration images fp32 and int8 disagree most on


@dataclass
class _Work:
    """Shared state of one int8 export: the pre-processed graph, its calibration images, caches."""

    src: Path
    tmp: Path
    calibration: list[np.ndarray]
    caches: dict[str, Path] = field(default_factory=dict)
    biases: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    n: int = 0

    def build(self, config: Int8Config, exclude: Sequence[str] = ()) -> Path:
        self.n += 1
        out = self.tmp / f"cand{self.n}.onnx"
        cache = self.caches.setdefault(
            config.calibration, self.tmp / f"calib-{config.calibration}.json"
        )
        src = self.src
        if config.bias_correction:
            # Layers kept in fp32 keep their own bias; one calibration cache serves both passes.
            fixed = self.corrections(config)
            kept = set(exclude)
            src = with_biases(
                self.src,
                self.tmp / f"bias{self.n}.onnx",
                {k: v for k, v in fixed.items() if k not in kept},
            )
        quantize(
            src,
            out,
            config,
            None if cache.is_file() else self.calibration,
            cache=cache,
            exclude=exclude,
        )
        if src != self.src:
            src.unlink()
        return out

    def corrections(self, config: Int8Config) -> dict[str, np.ndarray]:
        """The corrected biases for ``config``'s int8 weights, measured once per weight setting."""
        key = weight_key(config)
        if key not in self.biases:
            plain = self.build(replace(config, bias_correction=False))
            self.biases[key] = bias_corrections(self.src, plain, self.calibration)
            plain.unlink()
        return self.biases[key]


def quantize_int8(
    fp32_path: Path, out_path: Path, calibration: list[np.ndarray], options: Int8Options
) -> WriteOutcome:
    """int8 from an fp32 ONNX file for ``options.target``; tuned and with fallback if asked."""
    import shutil

    from edgerobust.compress.fallback import fallback_search

    target, chosen_by = resolve_target(options.target)
    config = target.config
    info: dict[str, Any] = {
        "tool": "onnxruntime quantize_static after quant_pre_process",
        "target": target.name,
        "target_cpus": target.cpus,
        "chosen_by": chosen_by,
        "config": config.to_dict(),
        "why": target.why,
    }
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp_dir:
        tmp = Path(tmp_dir)
        src, notes = preprocess(fp32_path, tmp / "pre.onnx")
        work = _Work(src, tmp, calibration)
        if options.tune:
            from .int8tune import tune

            table, best = tune(work, target, options)
            info["tune"] = table
            if best is not None:
                config = best
                info["config"] = config.to_dict()
                info["why"] = (
                    f"--tune: the fastest candidate that passed the parity gate here ({target.why})"
                )
        candidate = work.build(config)
        parity = options.judge(candidate) if options.judge else None
        if parity is not None and not parity.passed and options.fallback:
            layers = weighted_nodes(src)
            ranking_set = _ranking_set(fp32_path, candidate, calibration, options.rank_images)

            def error(kept: tuple[str, ...]) -> float:
                path = work.build(config, kept)
                got = run_onnx(path, ranking_set.batches)
                path.unlink()  # one file per trial: a ResNet-34 would leave a gigabyte behind
                return float(np.mean((got - ranking_set.reference) ** 2))

            def agreement(kept: tuple[str, ...]) -> float:
                path = work.build(config, kept)
                agree = options.judge(path).top1_agreement
                path.unlink()
                return agree

            result = fallback_search(
                layers,
                error,
                agreement,
                bar=parity.bar.min_agreement or 0.0,
                start_agreement=parity.top1_agreement,
            )
            info["fallback"] = {
                **result.to_dict(),
                "ranked_on": f"{ranking_set.n} calibration images where fp32 and int8 disagreed "
                "most (mean squared logit error when the layer is kept in fp32)",
            }
            if result.passed and result.kept_fp32:
                candidate = work.build(config, result.kept_fp32)
            notes.append(result.summary())
        shutil.copyfile(candidate, out_path)
    notes.append(f"onnxruntime int8 for {target.name}: {config.label} ({chosen_by})")
    return WriteOutcome(notes, info)


@dataclass(frozen=True)
class _RankingSet:
    batches: list[np.ndarray]
    reference: np.ndarray
    n: int


def _ranking_set(fp32: Path, int8: Path, calibration: list[np.ndarray], k: int) -> _RankingSet:
    """The ``k`` calibration images on which fp32 and int8 differ most: top-1 disagreements
    first, then by squared logit error. They are training images, not the gate's held-out ones."""
    from edgerobust.compress.fallback import most_different

    x = np.concatenate(calibration)
    ref, got = run_onnx(fp32, [x]), run_onnx(int8, [x])
    idx = most_different(ref, got, k)
    return _RankingSet([x[idx]], ref[idx], len(idx))


def write(
    model: nn.Module,
    input_size: int,
    path: Path,
    *,
    quant: str,
    calibration: Callable[[], list[np.ndarray]],
    optimize: bool = True,
    int8: Int8Options | None = None,
) -> list[str] | WriteOutcome:
    """The exporter's entry point: fp32 as exported; int8 quantized here from that fp32 graph."""
    if quant == "fp32":
        export_fp32(model, input_size, path)
        return []
    with tempfile.TemporaryDirectory(dir=path.parent) as d:
        fp32 = Path(d) / "fp32.onnx"
        export_fp32(model, input_size, fp32)
        return quantize_int8(fp32, path, calibration(), int8 or Int8Options())


def latency_ms(path: Path, x1: np.ndarray, threads: int, runs: int = 50) -> float:
    """Batch-1 p50 latency of ``path`` with eval-device's timing code."""
    from edgerobust.evaluate import measure_latency
    from edgerobust.runtimes.ort import OnnxRuntime

    runtime = OnnxRuntime(_session(path, threads), None, threads)  # type: ignore[arg-type]
    return measure_latency(runtime, x1, 5, runs)["p50"]


register_exporter(
    Exporter("onnx", write, FP32_BAR, int8="own", int8_engine="onnxruntime-qdq", int8_options=True)
)
