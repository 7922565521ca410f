"""Bring your own model: a file made elsewhere -> artifact + manifest, like ``edgerobust export``.

    >>> from edgerobust.importer import ImportRequest, import_model
    >>> res = import_model(ImportRequest("mnv2.onnx", classes="data/pacs", input_size=224,
    ...                                  mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))
    >>> res.artifact, res.manifest.input

The file is inspected (input and output names, shapes, dtype), loaded in the runtime registered
for its format, and run on one preprocessed image; its output must give one logit per class.
It is then copied byte for byte next to a manifest (sha256, input contract, class names,
``source.kind = "imported"``, versions), after which every device-side command takes it.

What the file expects (mean/std normalization, a 0-255 range, NHWC, uint8, a fixed batch) is
recorded in the manifest's ``input`` block, not wrapped into the graph: the runtimes apply it to
the standard [0, 1] NCHW input (:class:`edgerobust.runtimes.InputContract`). That works the same
for every format (ONNX, TorchScript, PyTorch Mobile, ExecuTorch), keeps the artifact the very file
the user will deploy (its sha256 is theirs), and needs neither ``onnx`` nor torch to import an ONNX
file on the device. Formats come from the format and runtime registries, so a format registered
by a runtime module (e.g. ExecuTorch ``.pte``) is importable as soon as it is registered.

Torch-free for ONNX: torch is imported only to inspect TorchScript files.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgerobust import __version__
from edgerobust.errors import ArtifactError, ConfigError, DataError, EdgeRobustError
from edgerobust.runtimes import default_runtime, get, with_contract
from edgerobust.runtimes.formats import ArtifactFormat, format_of, suffixes
from edgerobust.runtimes.manifest import Manifest, atomic_write_json, sha256_file
from edgerobust.runtimes.preprocess import InputContract, load_input, to_input

RANGES = {"0-1": 1.0, "0-255": 255.0}
LAYOUTS = ("NCHW", "NHWC")
_DTYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8"}
_INT8_OPS = frozenset(
    {"QuantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
)


@dataclass(frozen=True)
class ImportRequest:
    """What to import and how the file expects its input (see the module docstring).

    ``classes``: a text file with one class name per line, in the order of the model's outputs,
    or a dataset folder (its class folders, sorted, as torchvision's ``ImageFolder`` orders them).
    ``mean``/``std`` are in the units of ``input_range`` (0.485 ... for 0-1, 123.675 ... for 0-255).
    ``input_range`` and ``layout`` default to what the file's input says (uint8 means 0-255; an
    input whose last dimension is 3 is NHWC), else 0-1 and NCHW.
    """

    model: str
    classes: str
    input_size: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_range: str | None = None  # "0-1" | "0-255"
    layout: str | None = None  # "nchw" | "nhwc"
    out: str = "models"
    name: str | None = None  # artifact name (default: the file's stem)

    def validate(self) -> None:
        if self.input_size < 1:
            raise ConfigError(f"--input-size must be >= 1, got {self.input_size}")
        if self.input_range is not None and self.input_range not in RANGES:
            raise ConfigError(
                f"--input-range must be one of {', '.join(RANGES)}, got {self.input_range!r}"
            )
        if self.layout is not None and self.layout.upper() not in LAYOUTS:
            raise ConfigError(f"--layout must be nchw or nhwc, got {self.layout!r}")
        for what, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) != 3:
                raise ConfigError(f"--{what} needs 3 values (R,G,B), got {len(values)}")
        if self.std is not None and min(self.std) <= 0:
            raise ConfigError(f"--std values must be > 0, got {list(self.std)}")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # -1 for a dynamic dimension; () when the rank is unknown
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class Signature:
    """The file's inputs and outputs as far as its format tells without running it."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


@dataclass(frozen=True)
class ImportResult:
    artifact: Path
    manifest_path: Path
    manifest: Manifest
    signature: Signature | None  # None: the format has no static signature (e.g. .ptl)
    probe: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- classes


def read_classes(source: str | Path) -> tuple[list[str], str | None]:
    """Class names from a text file (one per line) or a dataset folder; and the dataset root."""
    path = Path(source)
    if path.is_dir():
        from edgerobust.data import open_dataset

        return list(open_dataset(path).classes), str(path)
    if not path.is_file():
        raise DataError(
            f"--classes {path}: not found; pass a text file with one class name per line or "
            "a dataset folder (DOMAIN/CLASS/*.jpg)"
        )
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise DataError(f"--classes {path}: not a text file of class names") from None
    names = [n for n in names if n and not n.startswith("#")]
    if len(names) < 2:
        raise DataError(f"--classes {path}: needs at least 2 class names, one per line")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"--classes {path}: class {dup[0]!r} is listed twice")
    return names, None


# --------------------------------------------------------------------------- inspection


def _dim(d: Any) -> int:
    return int(d) if isinstance(d, int) and d > 0 else -1


def inspect_onnx(path: Path) -> Signature:
    """Inputs and outputs from onnxruntime's session (no onnx package needed)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        raise ArtifactError(f"{path.name} does not load as ONNX: {_first_line(exc)}") from exc

    def info(t: Any) -> TensorInfo:
        shape = tuple(_dim(d) for d in t.shape) if t.shape is not None else ()
        return TensorInfo(t.name, shape, _DTYPES.get(t.type, t.type))

    return Signature(
        tuple(info(t) for t in sess.get_inputs()), tuple(info(t) for t in sess.get_outputs())
    )


def inspect_torchscript(path: Path) -> Signature:
    """Input names from ``forward``'s schema (shapes and dtypes are not in a TorchScript file)."""
    try:
        import torch
    except ImportError:
        raise EdgeRobustError(
            f"importing {path.name} needs torch: pip install 'edgerobust[torch]'"
        ) from None
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ArtifactError(
            f"{path.name} does not load as TorchScript ({_first_line(exc)}): a .pt must be "
            "saved with torch.jit.script(model).save() or torch.jit.trace(...).save(); "
            "pickled modules and state dicts cannot be imported"
        ) from exc
    args = module.forward.schema.arguments[1:]  # [0] is self
    needed = tuple(TensorInfo(a.name, (), "float32") for a in args if not a.has_default_value())
    return Signature(needed, ())


# Formats whose files say what they take without running them; any other registered format
# (e.g. .ptl, .pte) is checked by running it on one image only.
INSPECTORS = {"onnx": inspect_onnx, "torchscript": inspect_torchscript}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- the contract


def _contract(req: ImportRequest, sig: Signature | None, name: str) -> tuple[InputContract, dict]:
    """The input contract from the request and the file's input signature; checks both agree."""
    size = req.input_size
    inp = None
    if sig is not None:
        if len(sig.inputs) != 1:
            names = ", ".join(t.name for t in sig.inputs) or "none"
            raise ArtifactError(
                f"{name} has {len(sig.inputs)} inputs ({names}): edgerobust feeds a single image "
                "tensor; export the model with one image input"
            )
        inp = sig.inputs[0]
    shape = inp.shape if inp is not None else ()
    if shape and len(shape) != 4:
        raise ArtifactError(
            f"{name}: input {inp.name!r} has shape {list(shape)}, not one image batch "
            "(N,3,H,W or N,H,W,3): export the model with a single 4-D image input"
        )
    layout = req.layout.upper() if req.layout else None
    if layout is None:
        layout = "NHWC" if shape and shape[3] == 3 and shape[1] != 3 else "NCHW"
    if shape:
        c, hw = (shape[1], shape[2:]) if layout == "NCHW" else (shape[3], shape[1:3])
        if c not in (3, -1):
            raise ArtifactError(
                f"{name}: input {inp.name!r} has shape {list(shape)}, which has no 3 RGB "
                f"channels in {layout} layout (--layout nchw|nhwc)"
            )
        if any(d not in (size, -1) for d in hw):
            raise ConfigError(
                f"{name}: input {inp.name!r} takes {hw[0]}x{hw[1]} images but --input-size is "
                f"{size}: pass --input-size {hw[0]}"
            )
    dtype = inp.dtype if inp is not None else "float32"
    if dtype not in ("float32", "uint8"):
        raise ArtifactError(
            f"{name}: input {inp.name!r} is {dtype}; edgerobust feeds float32 or uint8 images"
        )
    rng = req.input_range or ("0-255" if dtype == "uint8" else "0-1")
    if dtype == "uint8" and (rng != "0-255" or req.mean is not None or req.std is not None):
        raise ConfigError(
            f"{name}: input {inp.name!r} is uint8, so it takes raw 0-255 pixels: drop "
            "--mean/--std and --input-range"
        )
    batch = shape[0] if shape and shape[0] > 0 else None
    contract = InputContract(
        layout=layout,
        range_max=RANGES[rng],
        mean=tuple(req.mean) if req.mean is not None else None,
        std=tuple(req.std) if req.std is not None else None,
        dtype=dtype,
        batch=batch,
    )
    chw = [3, size, size] if layout == "NCHW" else [size, size, 3]
    spec = {
        "name": inp.name if inp is not None else "input",
        "shape": [batch or -1, *chw],
        "size": size,
        "dtype": dtype,
        "layout": layout,
        "color": "RGB",
        "range": [0.0, RANGES[rng]],
        "mean": list(contract.mean) if contract.mean is not None else None,
        "std": list(contract.std) if contract.std is not None else None,
        "normalization": (
            "applied by edgerobust's preprocessing before the model (recorded mean/std)"
            if contract.mean is not None or contract.std is not None
            else "none outside the model"
        ),
        "contract": contract.describe(),
    }
    return contract, spec


def _check_output(sig: Signature | None, n_classes: int, name: str) -> str | None:
    if sig is None or not sig.outputs:
        return None
    out = sig.outputs[0]
    if out.shape and (len(out.shape) != 2 or out.shape[1] not in (n_classes, -1)):
        raise ArtifactError(
            f"{name}: output {out.name!r} has shape {list(out.shape)} but {n_classes} classes "
            f"were given: the first output must be logits of shape (N, {n_classes}); check "
            "--classes"
        )
    if len(sig.outputs) > 1:
        return f"the file has {len(sig.outputs)} outputs; the first, {out.name!r}, is the logits"
    return None


# --------------------------------------------------------------------------- facts


def _onnx_facts(path: Path) -> tuple[str, int | None, list[str]]:
    """Precision and parameter count from the graph, when the onnx package is installed."""
    try:
        import onnx
    except ImportError:
        return "fp32", None, ["precision and params not read: the onnx package is not installed"]
    model = onnx.load(str(path), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if len(t.dims))
    return ("int8" if ops & _INT8_OPS else "fp32"), params, []


def _torch_facts(runtime: Any) -> tuple[str, int | None, list[str]]:
    module = getattr(runtime, "module", None)
    if module is None or not hasattr(module, "parameters"):
        return "fp32", None, ["precision and params not read: the file is not inspectable here"]
    params = sum(p.numel() for p in module.parameters())
    graph = str(getattr(module, "inlined_graph", ""))
    return ("int8" if "quantized::" in graph else "fp32"), params, []


def _versions() -> dict[str, str]:
    v = {"edgerobust": __version__, "python": platform.python_version()}
    for pkg in ("onnxruntime", "onnx", "torch"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            v[pkg] = importlib.metadata.version(pkg)
    return v


# --------------------------------------------------------------------------- the import


def _probe_image(dataset: str | None, size: int) -> tuple[np.ndarray, str]:
    """One preprocessed image: the dataset's first, else a fixed synthetic gradient."""
    if dataset is not None:
        from edgerobust.data import open_dataset

        ds = open_dataset(dataset)
        for dom in ds.domains.values():
            for p in dom.paths():
                try:
                    return load_input(p, size), str(p)
                except ValueError:
                    continue
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    img = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1)], -1)
    img = np.concatenate([img, 255 - img[..., :1]], -1).astype(np.uint8)
    return to_input(img), "synthetic gradient"


def import_model(req: ImportRequest) -> ImportResult:
    """Inspect, check and copy one model file with its manifest; see the module docstring."""
    req.validate()
    path = Path(req.model)
    if not path.is_file():
        raise ArtifactError(f"model file not found: {path}")
    fmt: ArtifactFormat | None = format_of(path.name)
    if fmt is None:
        raise ArtifactError(
            f"{path.name}: not a format edgerobust can run (registered here: "
            f"{', '.join(suffixes())}); convert it, or install the runtime for its format"
        )
    classes, dataset = read_classes(req.classes)
    name = req.name or path.stem
    out = Path(req.out)
    final = out / f"{name}{fmt.suffix}"
    inspector = INSPECTORS.get(fmt.name)
    sig = inspector(path) if inspector else None
    contract, input_spec = _contract(req, sig, path.name)
    notes = [n for n in [_check_output(sig, len(classes), path.name)] if n]
    draft = Manifest(
        format=fmt.name,
        precision="fp32",
        arch=name,
        class_names=classes,
        input=input_spec,
        file=final.name,
        sha256=sha256_file(path),
        size_bytes=path.stat().st_size,
        params=None,
        source={
            "kind": "imported",
            "file": str(path.resolve()),
            "dataset": dataset,
            "signature": {
                "inputs": [t.to_dict() for t in sig.inputs],
                "outputs": [t.to_dict() for t in sig.outputs],
            }
            if sig is not None
            else None,
        },
        versions=_versions(),
    )

    # Run it once, in the runtime that will run it, on the standard input through the contract.
    runtime = with_contract(get(default_runtime(fmt.name)).load(path, draft, threads=1))
    x, image = _probe_image(dataset, req.input_size)
    try:
        logits = np.asarray(runtime(x))
    except Exception as exc:
        raise ArtifactError(
            f"{path.name} does not run on one preprocessed image ({contract.describe()}, "
            f"{req.input_size}x{req.input_size}): {_first_line(exc)}; check --input-size, "
            "--layout and --input-range"
        ) from exc
    if logits.shape != (1, len(classes)):
        raise ArtifactError(
            f"{path.name} gives output of shape {list(logits.shape)} for one image but "
            f"{len(classes)} classes were given: it must return logits of shape (N, "
            f"{len(classes)}); check --classes"
        )
    if not np.isfinite(logits).all():
        raise ArtifactError(f"{path.name} gives non-finite logits on one image ({image})")
    if fmt.name == "onnx":
        precision, params, more = _onnx_facts(path)
    else:
        precision, params, more = _torch_facts(getattr(runtime, "inner", runtime))
    probe = {"image": image, "logits_shape": list(logits.shape), "top1": int(logits.argmax())}
    notes += more
    notes.append(
        f"imported {path.name}: not made by edgerobust, so no parity check against a source "
        f"model; ran on one image ({image}) in {runtime.info()['runtime']}"
    )
    manifest = Manifest.from_dict(
        {**draft.to_dict(), "precision": precision, "params": params, "notes": notes}
    )
    _write(path, final, manifest)
    return ImportResult(final, final.with_suffix(".json"), manifest, sig, probe)


def _write(src: Path, final: Path, manifest: Manifest) -> None:
    """The file byte for byte, then its manifest; each through a temporary name (no half files)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    mpath = final.with_suffix(".json")
    if mpath.is_file():
        try:
            other = json.loads(mpath.read_text()).get("file")
        except (OSError, ValueError, AttributeError):
            other = None
        if other and other != final.name:
            raise ConfigError(f"{mpath} already describes {other}: choose another --name")
    copied = False
    if not (final.exists() and os.path.samefile(src, final)):
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
            copied = True
        finally:
            Path(tmp).unlink(missing_ok=True)
    if sha256_file(final) != manifest.sha256:
        raise ArtifactError(f"{src.name} changed while it was imported: import it again")
    try:
        atomic_write_json(final.with_suffix(".json"), manifest.to_dict())
    except BaseException:
        if copied:
            final.unlink(missing_ok=True)
        raise
