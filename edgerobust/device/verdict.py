"""The verdict of device-check: when does a device compute the same model as the reference?

See :func:`compare_logits` for the rule and why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgerobust.runtimes.manifest import (
    Manifest,
)

# Verdict thresholds (see compare_logits).
FP32_REL_TOL = 1e-4
INT8_MAX_STEPS = 1.0
#: The relative nudge :func:`rounding_spread` gives every quantizer's input, both ways: an order
#: above the float error of an fp32 sum of a few thousand products (about 1e-6), the most by
#: which an integer kernel's exact sum and float requantization can differ from the QDQ graph's
#: fp32 arithmetic before rounding.
ROUNDING_PROBE = 1e-5
STEP_SLACK = 1e-3  # a dequantized step difference is k * scale up to float rounding
# What a device's logits are judged against (see compare_logits).
HOST = "host"
QDQ_REFERENCE = "qdq-reference"
UNOPTIMIZED = "unoptimized"
REFERENCES = {
    HOST: "this host's run of the artifact",
    QDQ_REFERENCE: "the graph's own QDQ arithmetic (onnxruntime, graph optimizations off)",
    UNOPTIMIZED: "the unoptimized .pt on the same emulated CPU",
}


@dataclass(frozen=True)
class Comparison:
    """Emulated-device logits against this host's, image by image."""

    n: int
    top1_agreement: float
    max_abs_diff: float
    max_abs_logit: float  # the reference's largest |logit|: the scale of the fp32 tolerance
    step: float | None  # int8: the output quantization step; None when unknown or fp32
    diff_steps: float | None  # max_abs_diff / step
    passed: bool
    rule: str
    against: str = HOST  # HOST, QDQ_REFERENCE or UNOPTIMIZED
    # int8: the bound in output steps; above INT8_MAX_STEPS where the graph's own rounding spread
    # (rounding_spread) is wider.
    max_steps: float | None = None
    # Top-1 differences where the reference's top two lie within twice the tolerance: allowed,
    # since a difference within the tolerance can swap them (see compare_logits).
    ties: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- the verdict


def compare_logits(
    precision: str,
    reference: np.ndarray,
    device: np.ndarray,
    step: float | None = None,
    against: str = HOST,
    max_steps: float = INT8_MAX_STEPS,
) -> Comparison:
    """Judge device logits against a reference computed here on the same images.

    The rule, and why:

    * top-1 must agree on every image: a device that answers differently is not the same model.
      The one exception is a tie: where the reference's top two logits lie within twice the
      tolerance below, a difference the rule allows can swap them, so that answer is not the
      model's to give (int8 logits lie on a grid, and exact ties happen: on a PACS ResNet-18,
      1 of 64 images had its top two on the same step, and the emulated Pi picked the other).
      Such flips are counted (``ties``) and reported; any other flip fails.
    * fp32 (reference: this host's run): ``max |diff| <= 1e-4 * max |reference logit|``. Two CPUs
      run different fp32 kernels (NEON vs AVX, other blockings and summation orders), so results
      differ by rounding, which scales with the size of the sums: about 1e-6 of the logits on a
      ResNet-18. 1e-4 leaves two orders of magnitude of margin, while a wrong kernel is off by
      the order of the logits themselves.
    * int8: ``max |diff| <= max_steps`` output quantization steps against the *exact* int8
      arithmetic, where ``max_steps`` is one step or the graph's own rounding spread, whichever is
      larger. For a QDQ ONNX graph that reference is the graph itself, run here with
      onnxruntime's graph optimizations off (:func:`qdq_reference`): every Quantize /
      DequantizeLinear as written, the convolutions in fp32 on dequantized values, no integer
      kernel. An int8 kernel that accumulates in 32 bits (ARM NEON with or without
      ``asimddp``, x86 VNNI, x86 AVX2 with 7-bit weights) computes the same sums exactly, and
      differs only where a value lies within float error of a half step: its requantization
      (a fixed-point or float multiplier instead of a float division) may round it the other
      way. How far such one-step differences travel depends on the graph. On a ResNet-18 they
      stay at one step at the logits (measured on the emulated Cortex-A72 and A76: 0 median,
      1 at most). On EfficientNet-Lite0 the depthwise blocks amplify them: this host's own
      non-saturating integer kernels end 3 steps from the reference, internal tensors up to 66,
      and merely scaling every quantizer's input by 1 +- 1e-6 moves the logits by 4 steps.
      So the bound is measured on the graph (:func:`rounding_spread`: every quantizer's input
      nudged by ``ROUNDING_PROBE`` relative, both ways, on the same images), never below one
      step; other arithmetic is still caught (this host's saturating kernels: 17 to 26 steps on
      that Lite0, against a measured spread of 8). Host kernels are *not* a valid reference for ONNX
      int8: on x86 without VNNI onnxruntime adds pairs of u8 x s8 products in 16 bits with
      saturation (VPMADDUBSW), which moved the demo model's logits by up to 7 steps and changed
      2 of 60 answers here. That deviation is reported as the host's (``host_vs_reference``),
      never charged to the device.
      For eager-PTSQ TorchScript / lite int8 the reference is this host's run of the same
      artifact: the engine (qnnpack for ARM) is the same library on both CPUs, with 32-bit
      accumulation and the same requantization on each.
      When the step is unknown, |diff| is reported in logit units and only top-1 is judged (the
      rule says so).
    """
    reference = np.asarray(reference, dtype=np.float64)
    device = np.asarray(device, dtype=np.float64)
    if reference.shape != device.shape:
        raise ValueError(f"logit shapes differ: reference {reference.shape}, device {device.shape}")
    n = len(reference)
    diff = float(np.abs(reference - device).max()) if reference.size else 0.0
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    diff_steps = None
    if precision == "int8" and step:
        diff_steps = diff / step
        max_steps = max(float(max_steps), INT8_MAX_STEPS)
        tol: float | None = max_steps * step * (1 + STEP_SLACK)
        unit = "step" if max_steps == 1 else "steps"
        bound = f"max |diff| <= {max_steps:g} output {unit} ({step:.4g})"
        if max_steps > INT8_MAX_STEPS:
            bound += " (the graph's rounding spread)"
    elif precision == "int8":
        tol, bound = None, "output step unknown: |diff| in logit units, not judged"
    else:
        tol = FP32_REL_TOL * scale
        bound = f"max |diff| <= {FP32_REL_TOL:g} x max |logit|"
    ref_top, dev_top = reference.argmax(1), device.argmax(1)
    flipped = np.flatnonzero(ref_top != dev_top)
    ties = 0
    if tol is not None and len(flipped):
        # Where the reference's own top two lie within 2 x tol, each moving by tol may swap them:
        # that answer is not determined by the model, and its flip is rounding, not a new model.
        margin = reference[flipped, ref_top[flipped]] - reference[flipped, dev_top[flipped]]
        ties = int((margin <= 2 * tol).sum())
    agree = 1.0 - len(flipped) / n if n else 0.0
    passed = n > 0 and len(flipped) == ties and (tol is None or diff <= tol)
    rule = f"top-1 agreement 100 %{' except at ties' if tol is not None else ''} and {bound}"
    rule += f", against {REFERENCES[against]}"
    steps = max_steps if diff_steps is not None else None
    return Comparison(
        n, agree, diff, scale, step, diff_steps, bool(passed), rule, against, steps, ties
    )


def qdq_reference(
    artifact: str | Path, data: Path, files: np.ndarray, verify: bool = True
) -> np.ndarray:
    """The exact arithmetic of a QDQ ONNX graph on ``files`` (paths relative to ``data``): the
    graph run by onnxruntime with every graph optimization off, so no fused integer kernel of
    this CPU takes part (see :func:`compare_logits`). ``verify=False`` skips the manifest's
    sha256 check (for a graph derived here from a verified one)."""
    from edgerobust.runtimes import open_artifact
    from edgerobust.runtimes.preprocess import load_input

    model = open_artifact(artifact, "onnxruntime", verify=verify, optimize=False)
    size = model.manifest.input_size
    return np.concatenate([model(load_input(data / str(f), size)) for f in files])


def rounding_spread(
    artifact: str | Path,
    data: Path,
    files: np.ndarray,
    reference: np.ndarray,
    step: float,
    probe: float = ROUNDING_PROBE,
) -> float:
    """How far the logits of a QDQ ONNX graph move, in output steps, when every QuantizeLinear's
    input is scaled by ``1 + probe`` and by ``1 - probe`` (the graph otherwise as
    :func:`qdq_reference` runs it, on the same ``files``): the spread that rounding near half
    steps alone produces in this graph, which an integer kernel's exact arithmetic may show
    (see :func:`compare_logits`). ``reference``: :func:`qdq_reference`'s logits on ``files``."""
    import shutil
    import tempfile

    import onnx
    from onnx import helper, numpy_helper

    artifact = Path(artifact)
    spread = 0.0
    with tempfile.TemporaryDirectory(prefix="edgerobust-spread-") as tmp:
        for sign in (1, -1):
            model = onnx.load(str(artifact))
            graph = model.graph
            nodes = []
            for k, node in enumerate(graph.node):
                if node.op_type == "QuantizeLinear":
                    factor, nudged = f"edgerobust_probe_{k}", f"edgerobust_probed_{k}"
                    value = np.array(1 + sign * probe, np.float32)
                    graph.initializer.append(numpy_helper.from_array(value, factor))
                    nodes.append(helper.make_node("Mul", [node.input[0], factor], [nudged]))
                    node.input[0] = nudged
                nodes.append(node)
            del graph.node[:]
            graph.node.extend(nodes)
            path = Path(tmp) / artifact.name
            onnx.save(model, str(path))
            shutil.copyfile(artifact.with_suffix(".json"), path.with_suffix(".json"))
            logits = qdq_reference(path, data, files, verify=False)
            spread = max(spread, float(np.abs(logits - reference).max()) / step)
    return spread


# --------------------------------------------------------------------------- int8 output step


def onnx_output_scale(model: Any) -> float | None:
    """The quantization step of a QDQ graph's first output: the scale of the DequantizeLinear
    that produces it (``onnx.ModelProto`` in). None when the output is not dequantized there."""
    from onnx import numpy_helper

    graph = model.graph
    if not graph.output:
        return None
    producer = {out: node for node in graph.node for out in node.output}
    node = producer.get(graph.output[0].name)
    if node is None or node.op_type != "DequantizeLinear" or len(node.input) < 2:
        return None
    inits = {i.name: i for i in graph.initializer}
    scale_name = node.input[1]
    if scale_name in inits:
        scale = numpy_helper.to_array(inits[scale_name])
    else:  # a Constant node
        const = producer.get(scale_name)
        if const is None or const.op_type != "Constant":
            return None
        scale = numpy_helper.to_array(const.attribute[0].t)
    return float(scale) if scale.size == 1 else None


def torch_output_scale(module: Any) -> float | None:
    """The output step of an eager-PTSQ TorchScript module: the scale argument of the quantized
    op whose result the final ``aten::dequantize`` turns into the logits. None if not found."""
    graph = module.inlined_graph
    outputs = list(graph.return_node().inputs())
    if len(outputs) != 1:
        return None
    node = outputs[0].node()
    if node.kind() != "aten::dequantize":
        return None
    qnode = next(iter(node.inputs())).node()
    # quantized::linear / conv2d / add(_relu)(x, ..., scale, zero_point): scale is input 2.
    if not qnode.kind().startswith("quantized::") or len(list(qnode.inputs())) < 4:
        return None
    scale = list(qnode.inputs())[2].toIValue()
    return float(scale) if isinstance(scale, float) else None


def output_step(artifact: str | Path, manifest: Manifest) -> tuple[float | None, str]:
    """``(step, how it was found)`` for an int8 artifact; ``(None, why not)`` otherwise."""
    if manifest.precision != "int8":
        return None, "fp32"
    path = Path(artifact)
    if manifest.format == "onnx":
        try:
            import onnx
        except ImportError:
            return None, "unknown: the onnx package is not installed here"
        step = onnx_output_scale(onnx.load(str(path), load_external_data=False))
        if step is None:
            return None, "unknown: the graph output is not a DequantizeLinear"
        return step, "scale of the DequantizeLinear producing the graph output"
    if manifest.format == "pte":  # the quantized ops live inside the XNNPACK delegate's blob
        return None, "unknown: a .pte's output scale is inside its XNNPACK payload"
    try:
        import torch
    except ImportError:
        return None, "unknown: torch is not installed here"
    try:
        if manifest.engine in torch.backends.quantized.supported_engines:
            torch.backends.quantized.engine = manifest.engine
        step = torch_output_scale(torch.jit.load(str(path), map_location="cpu"))
    except Exception as exc:  # a .ptl without TorchScript code, an unknown engine, ...
        return None, f"unknown: cannot read the graph here ({type(exc).__name__})"
    if step is None:
        return None, "unknown: the output is not a dequantized quantized op"
    return step, "scale of the quantized op feeding the final dequantize"
