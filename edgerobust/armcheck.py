"""``device-check``: run artifacts on an emulated Raspberry Pi and compare with this host.

A Raspberry Pi 4 has a Cortex-A72 (ARMv8.0, no dot-product instructions), a Pi 5 a Cortex-A76
(ARMv8.2, ``asimddp``). Whether an artifact loads there, and computes what it computes here, is a
property of the runtime's arm64 kernels, which this x86 host does not run. ``device_check``
therefore builds, once, a minimal Debian bookworm arm64 root file system, runs it through
``qemu-aarch64`` (user-mode emulation via ``binfmt_misc``, ``QEMU_CPU`` picking the core), and
there follows the README's Raspberry Pi section to the letter:

1. ``pip wheel . --no-deps`` on this host; the wheel goes into the Pi's home folder;
2. ``python3 -m venv ~/er && ~/er/bin/pip install ~/edgerobust-*.whl``: the base install, no
   torch (checked), for ONNX artifacts; a second venv ``~/er-torch`` adds torch for ``.pt`` /
   ``.ptl`` artifacts, as the README tells Pi users to;
3. ``~/er/bin/edgerobust eval-device ARTIFACT --runtime ... --data ... --domains ... --out ...``.

The same ``eval-device`` then runs here on the same images, both save their logits
(``--logits-out``), and :func:`compare_logits` judges the pair (see its docstring for the rule).

Cost and what it proves. The root file system (about 1.1 GB with both venvs) is built once in
``/var/cache/edgerobust-arm`` (about 5 minutes). Wheels are downloaded on this host for the
arm64 platform (``pip download --platform``) and installed offline, so pip never resolves
under emulation. Emulated inference takes seconds per image: a check uses a handful of images
per domain (``limit``), and **its timings say nothing about a real Pi's speed**. It proves that
the artifact loads with the arm64 runtime the Pi would install, on that core's instruction set,
and gives the same answers.

Details that matter, found the hard way:

* Only ``/proc`` is mounted in the root. With the host's ``/sys`` too, ``import onnxruntime``
  segfaults under qemu; with no ``/sys`` at all it warns and uses one thread. A fake
  ``/sys/devices/system/cpu/{possible,present}`` fixes both.
* ``/proc/cpuinfo`` under qemu-user 7.2 is the x86 host's; the fingerprint reads the emulated
  CPU's flags from ``AT_HWCAP`` instead (see :mod:`edgerobust.fingerprint`).
* torch for aarch64 from PyPI: 2.11 and later are CUDA builds (gigabytes), 2.10.0 is CPU-only but
  dies with "Illegal instruction" on the Cortex-A72; 2.9.1 runs on both cores, loads ``.ptl``
  files written by newer torch, and has XNNPACK (so ``optimize_for_mobile`` works there).
* Images: the dataset is mirrored into the root with the same file names, but only the images the
  seeded ``limit`` sample selects carry their bytes; the others are empty placeholders. The split
  and the sample depend only on file names and labels, so both sides score exactly the same
  images, and the emulated decode of a whole domain costs nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgerobust.errors import ConfigError, DataError, EdgeRobustError, EmulationUnavailable
from edgerobust.progress import NullReporter, Reporter
from edgerobust.runtimes.manifest import (
    FORMATS,
    Manifest,
    atomic_write_json,
    read_manifest,
    sha256_file,
)

# The emulated cores (qemu's names) and the boards that carry them.
CPUS = {
    "cortex-a72": "Raspberry Pi 4 (Cortex-A72, ARMv8.0: no dot product)",
    "cortex-a76": "Raspberry Pi 5 (Cortex-A76, ARMv8.2: asimddp)",
}
DEFAULT_CPU = "cortex-a72"
DEFAULT_LIMIT = 8
DEFAULT_CACHE = Path(os.environ.get("EDGEROBUST_ARM_CACHE", "/var/cache/edgerobust-arm"))

# The Pi's OS: Raspberry Pi OS 12 is Debian bookworm, whose python3 is 3.11.
SUITE = "bookworm"
ROOT_PYTHON = "3.11"
INCLUDE = ("python3", "python3-venv", "python3-pip", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
ENV_LAYOUT = 1  # bump when the root's layout changes: a new cache key, a fresh build
# See the module docstring: the newest CPU-only aarch64 torch that runs on a Cortex-A72.
TORCH_ARM = "2.9.1"
# Wheels that run on bookworm's glibc 2.36 (pip wants every tag spelled out).
PLATFORM_TAGS = ("manylinux2014_aarch64",) + tuple(
    f"manylinux_2_{v}_aarch64" for v in (17, 24, 26, 27, 28, 31, 34, 35, 36)
)

# Inside the root, where the README puts things on the Pi.
HOME = "/root"
LIGHT_VENV = f"{HOME}/er"
TORCH_VENV = f"{HOME}/er-torch"
WHEELHOUSE = f"{HOME}/wheels"
WORK = f"{HOME}/check"
ROOT_ENV_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
QEMU_ENTRY = "qemu-aarch64"
PREREQUISITES = {
    "debootstrap": "debootstrap",
    "qemu-aarch64-static": "qemu-user-static",
    "update-binfmts": "binfmt-support",
    "chroot": "coreutils",
}

# Verdict thresholds (see compare_logits).
FP32_REL_TOL = 1e-4
INT8_MAX_STEPS = 1.0
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

EVAL_TIMEOUT_S = 1800
BUILD_TIMEOUT_S = 3600


# --------------------------------------------------------------------------- config and results


@dataclass(frozen=True)
class DeviceCheckConfig:
    artifacts: tuple[str, ...]
    cpu: str = DEFAULT_CPU
    data: str | None = None  # None: the dataset recorded in the first artifact's manifest
    domains: tuple[str, ...] | None = None  # None: every domain
    limit: int = DEFAULT_LIMIT  # images per domain (the seeded sample eval-device --limit takes)
    optimize: bool = False  # also write XNNPACK-optimised .ptl files from .pt artifacts
    cache: str = str(DEFAULT_CACHE)
    out: str | None = None  # JSON report

    def validate(self) -> None:
        if not self.artifacts:
            raise ConfigError("device-check needs at least one artifact")
        if self.cpu not in CPUS:
            raise ConfigError(f"--cpu must be one of {', '.join(CPUS)}, got {self.cpu!r}")
        if self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}")
        names = [Path(a).name for a in self.artifacts]
        for a in self.artifacts:
            if Path(a).suffix not in FORMATS:
                raise ConfigError(f"{a}: not an artifact (expected {', '.join(FORMATS)})")
            if names.count(Path(a).name) > 1:
                raise ConfigError(
                    f"two artifacts are named {Path(a).name}: check them one at a time"
                )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["artifacts"] = list(self.artifacts)
        d["domains"] = list(self.domains) if self.domains else None
        return d


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
    # Top-1 differences where the reference's top two lie within twice the tolerance: allowed,
    # since a difference within the tolerance can swap them (see compare_logits).
    ties: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ArtifactCheck:
    artifact: str
    format: str
    precision: str
    engine: str | None
    runtime: str
    venv: str
    loads: bool
    error: str | None = None  # why it did not load / run, or why the runs cannot be compared
    comparison: Comparison | None = None
    step_source: str | None = None  # where the int8 output step came from
    # ONNX int8: this host's own run judged by the same rule against the QDQ reference. Not part
    # of the verdict (the device is checked, not this host), but shown: an x86 host without
    # VNNI saturates, and a user comparing numbers across machines must know.
    host_vs_reference: Comparison | None = None
    device_runtime: dict[str, Any] | None = None  # the emulated eval-device record's runtime
    device_host: dict[str, Any] | None = None  # ... and its host fingerprint
    seconds: float = 0.0
    optimized: dict[str, Any] | None = None  # the --optimize step for a .pt artifact

    @property
    def verdict(self) -> str:
        """``pass``, ``fail`` (runs, but differs beyond the rule) or ``error`` (does not run)."""
        if not self.loads or self.comparison is None:
            return "error"
        ok = self.comparison.passed and (self.optimized is None or self.optimized.get("passed"))
        return "pass" if ok else "fail"

    @property
    def int8_warning(self) -> str | None:
        if self.precision != "int8" or not self.device_host:
            return None
        return self.device_host.get("int8_warning")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = self.verdict
        d["int8_warning"] = self.int8_warning
        return d


@dataclass(frozen=True)
class DeviceCheckReport:
    cpu: str
    board: str
    env: dict[str, Any]
    checks: list[ArtifactCheck]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.verdict == "pass" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "record": "device-check",
            "record_version": 1,
            "cpu": self.cpu,
            "board": self.board,
            "ok": self.ok,
            "env": self.env,
            "checks": [c.to_dict() for c in self.checks],
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- the verdict


def compare_logits(
    precision: str,
    reference: np.ndarray,
    device: np.ndarray,
    step: float | None = None,
    against: str = HOST,
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
    * int8: ``max |diff| <= 1`` output quantization step, against the *exact* int8 arithmetic.
      For a QDQ ONNX graph that reference is the graph itself, run here with onnxruntime's graph
      optimizations off (:func:`qdq_reference`): every Quantize/DequantizeLinear as written, the
      convolutions in fp32 on dequantized values, no integer kernel. An int8 kernel that
      accumulates in 32 bits (ARM NEON with or without ``asimddp``, x86 VNNI) reproduces it: its
      integer sums are exact, and only its requantization (a fixed-point or float multiplier
      instead of a float division) can round a value that lies within float error of a half
      step the other way. That moves one element by one step; one element one step off in a
      hidden layer shifts the next layer's sums by a fraction of a step, so at the logits it
      shows at most as the same one step (measured on the emulated Cortex-A72 and A76: 0 steps
      median, 1 at most). Two steps is other arithmetic. Host kernels are *not* a valid
      reference for ONNX int8: on x86 without VNNI onnxruntime adds pairs of u8 x s8 products in
      16 bits with saturation (VPMADDUBSW), which moved the demo model's logits by up to 7 steps
      and changed 2 of 60 answers here. That deviation is reported as the host's
      (``host_vs_reference``), never charged to the device.
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
        tol: float | None = INT8_MAX_STEPS * step * (1 + STEP_SLACK)
        bound = f"max |diff| <= {INT8_MAX_STEPS:g} output step ({step:.4g})"
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
    return Comparison(n, agree, diff, scale, step, diff_steps, bool(passed), rule, against, ties)


def qdq_reference(artifact: str | Path, data: Path, files: np.ndarray) -> np.ndarray:
    """The exact arithmetic of a QDQ ONNX graph on ``files`` (paths relative to ``data``): the
    graph run by onnxruntime with every graph optimization off, so no fused integer kernel of
    this CPU takes part (see :func:`compare_logits`)."""
    from edgerobust.runtimes import open_artifact
    from edgerobust.runtimes.preprocess import load_input

    model = open_artifact(artifact, "onnxruntime", optimize=False)
    size = model.manifest.input_size
    return np.concatenate([model(load_input(data / str(f), size)) for f in files])


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


# --------------------------------------------------------------------------- can this host emulate?


@dataclass(frozen=True)
class HostEmulation:
    interpreter: str  # what binfmt_misc runs arm64 binaries with
    fix_binary: bool  # "F" flag: the interpreter is opened at registration, not in the chroot


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


def _binfmt_entry() -> dict[str, str] | None:
    entry = BINFMT_DIR / QEMU_ENTRY
    try:
        text = entry.read_text()
    except OSError:
        return None
    info = {"enabled": text.splitlines()[0].strip() if text else ""}
    for line in text.splitlines()[1:]:
        key, _, value = line.partition(" ")
        info[key.rstrip(":")] = value.strip()
    return info


def prepare_host() -> HostEmulation:
    """Check that this host can run arm64 binaries, mounting ``binfmt_misc`` and registering
    ``qemu-aarch64`` when needed (both idempotent); raise :class:`EmulationUnavailable` with
    one line saying what is missing otherwise."""
    machine = platform.machine().lower()
    if sys.platform != "linux" or machine not in ("x86_64", "amd64"):
        hint = ": run eval-device on it directly" if machine in ("aarch64", "arm64") else ""
        raise EmulationUnavailable(
            f"device-check emulates arm64 on an x86_64 Linux host; this one is "
            f"{sys.platform}/{platform.machine()}{hint}"
        )
    if os.geteuid() != 0:
        raise EmulationUnavailable(
            "device-check needs root (debootstrap, chroot, binfmt_misc): run it with sudo"
        )
    missing = sorted({pkg for tool, pkg in PREREQUISITES.items() if not shutil.which(tool)})
    if missing:
        raise EmulationUnavailable(
            f"device-check needs {', '.join(missing)}: apt-get install qemu-user-static "
            "binfmt-support debootstrap"
        )
    if not (BINFMT_DIR / "register").exists():
        res = _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)])
        if res.returncode != 0 or not (BINFMT_DIR / "register").exists():
            why = (res.stderr or res.stdout).strip().splitlines()
            raise EmulationUnavailable(
                f"binfmt_misc cannot be mounted at {BINFMT_DIR} ({why[-1] if why else 'no reason given'}): "
                "arm64 binaries cannot run here (an unprivileged container?)"
            )
    entry = _binfmt_entry()
    if entry is None or entry.get("enabled") != "enabled":
        _run(["update-binfmts", "--enable", QEMU_ENTRY])
        entry = _binfmt_entry()
    if entry is None or entry.get("enabled") != "enabled" or "interpreter" not in entry:
        raise EmulationUnavailable(
            f"{QEMU_ENTRY} is not registered with binfmt_misc and 'update-binfmts --enable "
            f"{QEMU_ENTRY}' did not register it: reinstall qemu-user-static"
        )
    return HostEmulation(entry["interpreter"], "F" in entry.get("flags", ""))


def emulation_problem() -> str | None:
    """Why this host cannot run device-check, or None when it can (CI uses this to skip)."""
    try:
        prepare_host()
    except EmulationUnavailable as exc:
        return str(exc)
    return None


# --------------------------------------------------------------------------- the arm64 root


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this host's apt uses for the Pi's suite, else deb.debian.org."""
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            for para in text.split("\n\n"):
                fields = {}
                for line in para.splitlines():
                    key, _, value = line.partition(":")
                    if value and not line.startswith((" ", "#")):
                        fields[key.strip().lower()] = value.split()
                if "deb" in fields.get("types", []) and SUITE in fields.get("suites", []):
                    return fields.get("uris", [DEFAULT_MIRROR])[0]
        else:
            for line in text.splitlines():
                words = [w for w in line.split("#", 1)[0].split() if not w.startswith("[")]
                if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                    return words[1]
    return DEFAULT_MIRROR


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not os.path.ismount(os.path.join(dirpath, d))]
        for name in filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _unmount_under(path: Path) -> None:
    """Unmount whatever a killed build or run left mounted under ``path`` (deepest first),
    so that removing the folder never walks into the host's /proc or /sys."""
    prefix = str(path.resolve()) + "/"
    try:
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        return
    for m in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        _run(["umount", "-l", m])


def _remove_tree(path: Path) -> None:
    if path.exists():
        _unmount_under(path)
        shutil.rmtree(path)


@dataclass
class ArmEnv:
    """The cached root file system and what was done to it in this call."""

    home: Path  # cache folder of this root
    root: Path  # the arm64 root file system
    host: HostEmulation
    cpu: str
    log: Path
    built: dict[str, float] = field(default_factory=dict)  # step -> seconds, for this call

    def chroot(
        self, argv: list[str], env: dict[str, str] | None = None, timeout: float = EVAL_TIMEOUT_S
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the root on the emulated CPU, with a clean environment (none of
        this host's pip or cache settings leak in)."""
        full = {
            "PATH": ROOT_ENV_PATH,
            "HOME": HOME,
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "COLUMNS": "160",
            "QEMU_CPU": self.cpu,
            **(env or {}),
        }
        chroot = shutil.which("chroot") or "/usr/sbin/chroot"
        try:
            return _run([chroot, str(self.root), *argv], env=full, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(
                argv, 124, "", f"error: timed out after {timeout:.0f} s"
            )

    def step(self, what: str, argv: list[str], timeout: float = BUILD_TIMEOUT_S) -> str:
        """A set-up command inside the root; its output goes to the build log; failure raises."""
        t0 = time.perf_counter()
        res = self.chroot(argv, timeout=timeout)
        with self.log.open("a") as f:
            f.write(
                f"$ {' '.join(argv)}  [{what}, rc {res.returncode}]\n{res.stdout}{res.stderr}\n"
            )
        if res.returncode != 0:
            last = (res.stderr or res.stdout).strip().splitlines()
            raise EmulationUnavailable(
                f"building the emulated Pi failed at {what} (exit {res.returncode}: "
                f"{last[-1] if last else 'no output'}); log: {self.log}"
            )
        self.built[what] = self.built.get(what, 0.0) + time.perf_counter() - t0
        return res.stdout


def ensure_root(cache: Path, host: HostEmulation, cpu: str, rep: Reporter) -> ArmEnv:
    """The arm64 root file system, built with debootstrap on first use (one root serves both
    CPUs: ``QEMU_CPU`` is chosen per run)."""
    key = _key({"layout": ENV_LAYOUT, "suite": SUITE, "include": INCLUDE})
    home = cache / f"{SUITE}-arm64-{key}"
    root, ready = home / "rootfs", home / "ready.json"
    home.mkdir(parents=True, exist_ok=True)
    env = ArmEnv(home, root, host, cpu, home / "build.log")
    if not (ready.is_file() and root.is_dir()):
        partial = home / "rootfs.partial"
        _remove_tree(partial)
        _remove_tree(root)
        mirror = debian_mirror()
        t = rep.task(f"debootstrap {SUITE} arm64 (once, ~3 min)", None)
        t0 = time.perf_counter()
        with env.log.open("a") as log:
            res = subprocess.run(
                [
                    "debootstrap",
                    "--arch=arm64",
                    "--variant=minbase",
                    f"--include={','.join(INCLUDE)}",
                    SUITE,
                    str(partial),
                    mirror,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
        rep.done(t)
        _unmount_under(partial)
        if res.returncode != 0:
            raise EmulationUnavailable(
                f"debootstrap of {SUITE} arm64 from {mirror} failed (exit {res.returncode}); "
                f"log: {env.log}"
            )
        os.replace(partial, root)
        env.built["debootstrap"] = time.perf_counter() - t0
        atomic_write_json(
            ready,
            {
                "suite": SUITE,
                "mirror": mirror,
                "include": list(INCLUDE),
                "seconds": env.built["debootstrap"],
                "bytes": _tree_bytes(root),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
    _refresh_root(env)
    return env


def _refresh_root(env: ArmEnv) -> None:
    """What the root needs from this host on every run (cheap, idempotent)."""
    root = env.root
    if os.path.ismount(root / "sys"):
        raise EmulationUnavailable(
            f"{root / 'sys'} is a mount point: unmount it (onnxruntime crashes under qemu with "
            "the host's /sys; device-check provides the few files it needs)"
        )
    for src in ("/etc/resolv.conf", "/etc/ssl/certs/ca-certificates.crt"):
        # Lets a user debug inside the root with pip over the network; the check itself is offline.
        with contextlib.suppress(OSError):
            dst = root / src.lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.unlink(missing_ok=True)
            shutil.copyfile(src, dst)
    # onnxruntime and torch size their thread pools from these (see the module docstring).
    cpus = root / "sys/devices/system/cpu"
    cpus.mkdir(parents=True, exist_ok=True)
    span = f"0-{max(1, os.cpu_count() or 1) - 1}\n"
    for name in ("possible", "present", "online"):
        (cpus / name).write_text(span)
    if not env.host.fix_binary:
        # Without binfmt's F flag the kernel looks the interpreter up inside the chroot.
        dst = root / env.host.interpreter.lstrip("/")
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(shutil.which("qemu-aarch64-static") or "/usr/bin/qemu-aarch64-static", dst)


@contextlib.contextmanager
def _proc_mounted(root: Path) -> Iterator[None]:
    target = root / "proc"
    target.mkdir(exist_ok=True)
    mounted = False
    if not os.path.ismount(target):
        res = _run(["mount", "-t", "proc", "proc", str(target)])
        if res.returncode != 0:
            raise EmulationUnavailable(f"cannot mount proc in {root}: {res.stderr.strip()}")
        mounted = True
    try:
        yield
    finally:
        if mounted:
            _run(["umount", "-l", str(target)])


@contextlib.contextmanager
def _locked(cache: Path, rep: Reporter) -> Iterator[None]:
    """One device-check at a time per cache: they share the root's home folder."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            rep.log(f"waiting for another device-check using {cache}")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


# --------------------------------------------------------------------------- wheels and venvs


def source_tree() -> Path:
    """The repository this edgerobust runs from (the device wheel is built from it)."""
    repo = Path(__file__).resolve().parents[1]
    if not (repo / "pyproject.toml").is_file() or not (repo / "runtimes").is_dir():
        raise ConfigError(
            f"device-check builds the device wheel from the source tree, which is not at {repo}: "
            "run it from a checkout (pip install -e .)"
        )
    return repo


_SOURCE_PARTS = ("pyproject.toml", "README.md", "edgerobust", "exporters", "runtimes")


def _source_files(repo: Path) -> list[Path]:
    files = []
    for part in _SOURCE_PARTS:
        p = repo / part
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files += sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"
            )
    return files


def source_hash(repo: Path) -> str:
    h = hashlib.sha256()
    for f in _source_files(repo):
        h.update(f"{f.relative_to(repo)}\0".encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def build_wheel(repo: Path, out_dir: Path) -> Path:
    """``pip wheel . --no-deps`` (the README's first Pi step) on a clean copy of the sources, so
    no stale ``build/`` folder leaks old modules into the wheel and the checkout stays clean."""
    with tempfile.TemporaryDirectory(prefix="edgerobust-wheel-") as tmp:
        src = Path(tmp) / "src"
        for f in _source_files(repo):
            dst = src / f.relative_to(repo)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst)
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out_dir)]
        try:
            import setuptools  # noqa: F401

            argv.append("--no-build-isolation")  # offline and fast when the backend is here
        except ImportError:
            pass
        out_dir.mkdir(parents=True, exist_ok=True)
        res = _run([*argv, str(src)], env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        if res.returncode != 0:
            last = (res.stderr or res.stdout).strip().splitlines()
            raise EmulationUnavailable(f"pip wheel failed: {last[-1] if last else res.returncode}")
    wheels = sorted(out_dir.glob("edgerobust-*.whl"), key=lambda p: p.stat().st_mtime)
    return wheels[-1]


def _requirement_name(req: str) -> str:
    for i, ch in enumerate(req):
        if ch in "<>=!~[ ;(":
            return req[:i].strip().lower().replace("_", "-")
    return req.strip().lower().replace("_", "-")


def base_requirements() -> list[str]:
    """The base install's dependencies, with onnxruntime pinned to this host's version so that
    a difference between the two runs is the CPU's, not another release's."""
    reqs = [r for r in (importlib.metadata.requires("edgerobust") or []) if ";" not in r]
    try:
        ort = importlib.metadata.version("onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        return reqs
    return [f"onnxruntime=={ort}" if _requirement_name(r) == "onnxruntime" else r for r in reqs]


def _pip_download(dest: Path, reqs: list[str], no_deps: bool = False) -> None:
    argv = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:"]
    for tag in PLATFORM_TAGS:
        argv += ["--platform", tag]
    argv += ["--python-version", ROOT_PYTHON, "--implementation", "cp"]
    argv += ["--abi", f"cp{ROOT_PYTHON.replace('.', '')}", "-d", str(dest)]
    argv += ["--no-deps"] if no_deps else []
    res = _run([*argv, *reqs], env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    if res.returncode != 0:
        last = [x for x in (res.stderr or res.stdout).strip().splitlines() if x.strip()]
        raise EmulationUnavailable(
            f"cannot download arm64 wheels for {' '.join(reqs)}: {last[-1] if last else res.returncode}"
        )


def _wheel_requires(wheel: Path) -> list[str]:
    """Requires-Dist lines without environment markers (the x86-only CUDA ones all have one)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    return [
        line.split(":", 1)[1].strip()
        for line in text.splitlines()
        if line.startswith("Requires-Dist:") and ";" not in line
    ]


def wheelhouse(cache: Path, kind: str, rep: Reporter) -> tuple[Path, str]:
    """arm64 wheels for a venv, downloaded once on this host: ``(folder, key)``."""
    if kind == "base":
        reqs = base_requirements()
        key = _key({"reqs": reqs, "py": ROOT_PYTHON, "tags": PLATFORM_TAGS})
    else:
        reqs = [f"torch=={TORCH_ARM}"]
        key = _key({"torch": TORCH_ARM, "py": ROOT_PYTHON, "tags": PLATFORM_TAGS})
    dest = cache / "wheels" / f"{kind}-{key}"
    if (dest / "done.json").is_file():
        return dest, key
    _remove_tree(dest)
    partial = dest.with_name(dest.name + ".partial")
    _remove_tree(partial)
    partial.mkdir(parents=True)
    t = rep.task(f"download arm64 wheels ({kind})", None)
    if kind == "base":
        _pip_download(partial, reqs)
    else:
        _pip_download(partial, reqs, no_deps=True)
        torch_wheel = next(partial.glob("torch-*.whl"))
        _pip_download(partial, _wheel_requires(torch_wheel))
    rep.done(t)
    atomic_write_json(partial / "done.json", {"requirements": reqs})
    os.replace(partial, dest)
    return dest, key


def _link_into(src_dir: Path, dst_dir: Path) -> None:
    dst_dir.mkdir(parents=True, exist_ok=True)
    for f in src_dir.glob("*.whl"):
        dst = dst_dir / f.name
        if not dst.exists():
            try:
                os.link(f, dst)  # same file system (both under the cache): no copy
            except OSError:
                shutil.copy2(f, dst)


def _venv_python_has(env: ArmEnv, venv: str, module: str) -> bool:
    code = f"import importlib.util,sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return env.chroot([f"{venv}/bin/python", "-c", code], timeout=300).returncode == 0


def ensure_venv(
    env: ArmEnv, cache: Path, kind: str, wheel: Callable[[], Path], src_key: str, rep: Reporter
) -> str:
    """The README's device install in the root: ``python3 -m venv V && V/bin/pip install
    ~/edgerobust-*.whl`` (offline, from the host-downloaded wheels), plus torch for ``torch``.
    Rebuilt when its dependencies change; only edgerobust is reinstalled when the sources do."""
    venv = LIGHT_VENV if kind == "base" else TORCH_VENV
    base_dir, base_key = wheelhouse(cache, "base", rep)
    dirs, keys = [base_dir], [base_key]
    if kind == "torch":
        torch_dir, torch_key = wheelhouse(cache, "torch", rep)
        dirs.append(torch_dir)
        keys.append(torch_key)
    deps_key = "-".join(keys)
    marker = env.root / venv.lstrip("/") / "edgerobust-check.json"
    state = json.loads(marker.read_text()) if marker.is_file() else {}
    if state.get("deps") == deps_key and state.get("source") == src_key:
        return venv
    for d in dirs:
        _link_into(d, env.root / WHEELHOUSE.lstrip("/"))
    whl = wheel()
    home = env.root / HOME.lstrip("/")
    for old in home.glob("edgerobust-*.whl"):
        old.unlink()
    shutil.copy2(whl, home / whl.name)
    pip = [f"{venv}/bin/pip", "install", "-q", "--no-index", "--find-links", WHEELHOUSE]
    # Byte-compiling all of torch under emulation takes minutes; imports compile what they use.
    pip += ["--no-compile", "--disable-pip-version-check"]
    if state.get("deps") == deps_key:
        t = rep.task(f"reinstall edgerobust in {venv}", None)
        env.step(f"update {venv}", [*pip, "--no-deps", "--force-reinstall", f"{HOME}/{whl.name}"])
    else:
        t = rep.task(f"create {venv} (emulated pip)", None)
        _remove_tree(env.root / venv.lstrip("/"))
        env.step(f"venv {venv}", ["python3", "-m", "venv", venv])
        extra = [f"torch=={TORCH_ARM}"] if kind == "torch" else []
        env.step(f"install {venv}", [*pip, f"{HOME}/{whl.name}", *extra])
    rep.done(t)
    atomic_write_json(marker, {"deps": deps_key, "source": src_key, "wheel": whl.name})
    return venv


# --------------------------------------------------------------------------- images


def mirror_dataset(
    data: str | Path, dest: Path, domains: list[str], manifests: list[Manifest], limit: int
) -> dict[str, int]:
    """Mirror ``data`` into ``dest`` for ``domains``: every file name, with bytes only for the
    images that eval-device's seeded ``limit`` sample picks for any of ``manifests``; the others
    are empty placeholders (see the module docstring). Returns real images per domain."""
    from edgerobust.data import open_dataset
    from edgerobust.evaluate import domain_indices

    ds = open_dataset(data)
    real: dict[str, int] = {}
    for name in domains:
        dom = ds.domain(name)
        chosen: set[int] = set()
        for man in manifests:
            chosen.update(domain_indices(dom, man.source, limit)[1])  # no decoding needed
        rel_root = dom.root.relative_to(ds.root)
        for i, f in enumerate(dom.files):
            dst = dest / rel_root / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            if i in chosen:
                shutil.copyfile(dom.root / f, dst)
            else:
                dst.touch()
        real[name] = len(chosen)
    return real


# --------------------------------------------------------------------------- one artifact


RUNTIME_OF = {"onnx": "onnxruntime", "torchscript": "torchscript", "ptl": "ptl"}


@contextlib.contextmanager
def _env_var(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _last_error(res: subprocess.CompletedProcess) -> str:
    lines = [x.strip() for x in (res.stderr + "\n" + res.stdout).splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith("error:")]
    if errors:
        return errors[-1][len("error:") :].strip()
    crash = [x for x in lines if "Illegal instruction" in x or "Segmentation fault" in x]
    if crash or res.returncode < 0:
        return f"crashed ({crash[-1] if crash else f'signal {-res.returncode}'})"
    return lines[-1] if lines else f"exit {res.returncode}"


def _eval_argv(
    venv: str, artifact: str, runtime: str, domains: list[str], limit: int, stem: str
) -> list[str]:
    # The README's Pi command, with a handful of images, one thread, and latency runs cut to
    # the minimum: emulated times mean nothing.
    return [
        f"{venv}/bin/edgerobust",
        "eval-device",
        artifact,
        "--runtime",
        runtime,
        "--data",
        f"{WORK}/data",
        "--domains",
        ",".join(domains),
        "--limit",
        str(limit),
        "--threads",
        "1",
        "--warmup",
        "0",
        "--latency-runs",
        "1",
        "--out",
        f"{WORK}/out/{stem}.json",
        "--logits-out",
        f"{WORK}/out/{stem}.npz",
    ]


def _device_eval(
    env: ArmEnv, venv: str, artifact: str, runtime: str, domains: list[str], limit: int, stem: str
) -> tuple[dict | None, dict | None, str | None]:
    """``(record, logits, error)`` of eval-device inside the root."""
    from edgerobust.evaluate import load_logits

    argv = _eval_argv(venv, artifact, runtime, domains, limit, stem)
    res = env.chroot(argv, env={"EDGEROBUST_CACHE": f"{WORK}/cache"})
    out = env.root / WORK.lstrip("/") / "out"
    with env.log.open("a") as f:
        f.write(f"$ {' '.join(argv)}  [rc {res.returncode}]\n{res.stdout}{res.stderr}\n")
    if res.returncode != 0 or not (out / f"{stem}.npz").is_file():
        return None, None, _last_error(res)
    record = json.loads((out / f"{stem}.json").read_text())
    return record, load_logits(out / f"{stem}.npz"), None


def _host_eval(
    artifact: str, runtime: str, data: Path, domains: list[str], limit: int, npz: Path, decoded
) -> tuple[dict | None, str | None]:
    from edgerobust.evaluate import EvalConfig, evaluate, load_logits

    cfg = EvalConfig(
        artifact=artifact,
        data=str(data),
        runtime=runtime,
        domains=tuple(domains),
        limit=limit,
        warmup=0,
        latency_runs=1,
        logits_out=str(npz),
    )
    try:
        evaluate(cfg, decoded=decoded)
    except Exception as exc:  # report it as this artifact's error; the others still run
        return None, str(exc) if isinstance(exc, EdgeRobustError) else repr(exc)
    return load_logits(npz), None


def _judge_runs(
    man: Manifest,
    reference: dict | None,
    device: dict | None,
    step: float | None,
    against: str = HOST,
) -> tuple[Comparison | None, str | None]:
    if reference is None or device is None:
        return None, None
    if (
        reference["files"].shape != device["files"].shape
        or not (reference["files"] == device["files"]).all()
    ):
        return None, "this host and the emulated device scored different images"
    return compare_logits(man.precision, reference["logits"], device["logits"], step, against), None


# --------------------------------------------------------------------------- optimize_for_mobile


def write_optimized_lite(pt: str | Path, out: str | Path) -> dict[str, Any]:
    """Run inside the ARM torch venv: ``.pt`` -> XNNPACK-rewritten ``.ptl`` plus its manifest.

    The module is frozen before ``optimize_for_mobile``: on a traced, unfrozen module its
    conv-batchnorm folding gives wrong results for convolutions without bias (every ResNet
    conv), off by the order of the logits (pytorch/pytorch#76807, still in 2.9.1); freezing folds
    batch norm correctly first, and the XNNPACK rewrite then applies to the folded graph.
    """
    import torch
    import torch.backends.xnnpack
    from torch.utils.mobile_optimizer import optimize_for_mobile

    pt, out = Path(pt), Path(out)
    man = read_manifest(pt)
    if man.format != "torchscript":
        raise ConfigError(f"{pt.name}: optimize_for_mobile starts from a TorchScript .pt")
    if not torch.backends.xnnpack.enabled:
        raise ConfigError(f"torch {torch.__version__} here has no XNNPACK")
    if man.precision == "int8" and man.engine:
        torch.backends.quantized.engine = man.engine
    module = torch.jit.load(str(pt), map_location="cpu").eval()
    optimized = optimize_for_mobile(torch.jit.freeze(module))
    tmp = out.with_name(f".{out.name}.tmp")
    optimized._save_for_lite_interpreter(str(tmp))
    os.replace(tmp, out)
    kinds: dict[str, int] = {}
    for node in optimized.graph.nodes():
        if node.kind().startswith(("prepacked::", "quantized::")):
            kinds[node.kind()] = kinds.get(node.kind(), 0) + 1
    note = (
        f"optimize_for_mobile (XNNPACK) from {pt.name} with torch {torch.__version__} on "
        f"{platform.machine()}, frozen first (pytorch#76807); prepacked XNNPACK ops need a "
        "torch build with XNNPACK (ARM, mobile) to run"
    )
    new = Manifest.from_dict(
        {
            **man.to_dict(),
            "format": "ptl",
            "file": out.name,
            "sha256": sha256_file(out),
            "size_bytes": out.stat().st_size,
            "notes": [*man.notes, note],
            "versions": {**man.versions, "torch": torch.__version__},
        }
    )
    atomic_write_json(out.with_suffix(".json"), new.to_dict())
    return {"ops": kinds, "torch": torch.__version__}


def _optimize(
    env: ArmEnv,
    man: Manifest,
    stem: str,
    domains: list[str],
    limit: int,
    reference: dict,
    step: float | None,
    dest_dir: Path,
) -> dict[str, Any]:
    """Write the optimized .ptl in the root, run it, compare with the unoptimized .pt's device
    logits on the same images, and copy it next to the original only when it passes."""
    from edgerobust.evaluate import load_logits

    name = f"{stem}-xnnpack.ptl"
    inside = f"{WORK}/models/{name}"
    res = env.chroot(
        [
            f"{TORCH_VENV}/bin/python",
            "-m",
            "edgerobust.armcheck",
            "optimize",
            f"{WORK}/models/{man.file}",
            inside,
        ]
    )
    if res.returncode != 0:
        return {"artifact": name, "passed": False, "error": _last_error(res)}
    argv = _eval_argv(TORCH_VENV, inside, "ptl", domains, limit, f"{stem}-xnnpack")
    run = env.chroot(argv, env={"EDGEROBUST_CACHE": f"{WORK}/cache"})
    npz = env.root / WORK.lstrip("/") / "out" / f"{stem}-xnnpack.npz"
    if run.returncode != 0 or not npz.is_file():
        return {"artifact": name, "passed": False, "error": _last_error(run)}
    got = load_logits(npz)
    cmp = compare_logits(man.precision, reference["logits"], got["logits"], step, UNOPTIMIZED)
    result: dict[str, Any] = {
        "artifact": name,
        "reference": f"{man.file} on the same emulated CPU",
        "comparison": cmp.to_dict(),
        "passed": cmp.passed,
        "written": None,
    }
    if cmp.passed:
        src = env.root / inside.lstrip("/")
        mdata = json.loads(src.with_suffix(".json").read_text())
        mdata["parity"] = {
            **mdata.get("parity", {}),
            "vs_unoptimized_on_arm": {**cmp.to_dict(), "cpu": env.cpu},
        }
        final = dest_dir / name
        shutil.copyfile(src, dest_dir / f".{name}.tmp")
        os.replace(dest_dir / f".{name}.tmp", final)
        atomic_write_json(final.with_suffix(".json"), mdata)
        result["written"] = str(final)
    return result


# --------------------------------------------------------------------------- the whole check


def device_check(cfg: DeviceCheckConfig, reporter: Reporter | None = None) -> DeviceCheckReport:
    """Check every artifact on the emulated CPU against this host; see the module docstring."""
    from edgerobust.data import open_dataset
    from edgerobust.evaluate import check_classes

    cfg.validate()
    rep = reporter or NullReporter()
    manifests = [read_manifest(a) for a in cfg.artifacts]
    data = cfg.data or manifests[0].source.get("dataset")
    if not data:
        raise ConfigError("the manifest names no dataset: pass --data DIR")
    if not Path(data).is_dir():
        raise DataError(f"dataset folder not found: {data} (pass --data DIR)")
    ds = open_dataset(data)
    domains = list(cfg.domains) if cfg.domains else list(ds.domains)
    for d in domains:
        ds.domain(d)
    for a, man in zip(cfg.artifacts, manifests, strict=True):
        try:
            check_classes(man.class_names, ds.classes, ds.root)
        except DataError as exc:
            raise DataError(f"{Path(a).name}: {exc}") from None
    host = prepare_host()
    cache = Path(cfg.cache)
    needs_light = any(m.format == "onnx" for m in manifests)
    needs_torch = any(m.format != "onnx" for m in manifests)
    with _locked(cache, rep):
        t0 = time.perf_counter()
        env = ensure_root(cache, host, cfg.cpu, rep)
        with _proc_mounted(env.root):
            repo = source_tree()
            src_key = source_hash(repo)
            with tempfile.TemporaryDirectory(prefix="edgerobust-check-") as tmp:
                tmpd = Path(tmp)
                built: list[Path] = []

                def wheel() -> Path:  # built at most once, and only when a venv needs it
                    if not built:
                        built.append(build_wheel(repo, tmpd / "dist"))
                    return built[0]

                venvs = {}
                if needs_light:
                    venvs["onnx"] = ensure_venv(env, cache, "base", wheel, src_key, rep)
                if needs_torch:
                    venvs["torch"] = ensure_venv(env, cache, "torch", wheel, src_key, rep)
                env_info = _env_info(env, venvs, time.perf_counter() - t0)
                checks = _check_all(cfg, env, manifests, data, domains, venvs, tmpd, rep)
    report = DeviceCheckReport(cfg.cpu, CPUS[cfg.cpu], env_info, checks, _notes(cfg, checks))
    if cfg.out:
        atomic_write_json(cfg.out, {**report.to_dict(), "config": cfg.to_dict()})
    return report


def _env_info(env: ArmEnv, venvs: dict[str, str], seconds: float) -> dict[str, Any]:
    ready = json.loads((env.home / "ready.json").read_text())
    info: dict[str, Any] = {
        "root": str(env.root),
        "suite": SUITE,
        "mirror": ready.get("mirror"),
        "debootstrap_bytes": ready.get("bytes"),
        "qemu_cpu": env.cpu,
        "venvs": venvs,
        "built_now_seconds": {k: round(v, 1) for k, v in env.built.items()},
        "setup_seconds": round(seconds, 1),
    }
    if "onnx" in venvs:
        # The light install's promise: the ONNX path on the device has no torch at all.
        info["light_venv_has_torch"] = _venv_python_has(env, venvs["onnx"], "torch")
    if "torch" in venvs:
        info["torch"] = TORCH_ARM
    if env.built:
        info["root_bytes"] = _tree_bytes(env.root)
    return info


def _check_all(
    cfg: DeviceCheckConfig,
    env: ArmEnv,
    manifests: list[Manifest],
    data: str,
    domains: list[str],
    venvs: dict[str, str],
    tmpd: Path,
    rep: Reporter,
) -> list[ArtifactCheck]:
    work = env.root / WORK.lstrip("/")
    _remove_tree(work)
    for sub in ("models", "out", "cache"):
        (work / sub).mkdir(parents=True)
    mirror = work / "data"
    mirror_dataset(data, mirror, domains, manifests, cfg.limit)
    decoded: dict = {}
    checks = []
    # The host's decoded-image cache stays clean: the mirror is decoded into this run's folder.
    with _env_var("EDGEROBUST_CACHE", str(tmpd / "cache")):
        for art, man in zip(cfg.artifacts, manifests, strict=True):
            t = rep.task(f"{man.file} on emulated {cfg.cpu}", None)
            checks.append(
                _check_one(cfg, env, Path(art), man, mirror, domains, venvs, tmpd, decoded)
            )
            rep.done(t)
            c = checks[-1]
            rep.log(f"{man.file}: {c.verdict}" + (f" ({c.error})" if c.error else ""))
    return checks


def _check_one(
    cfg: DeviceCheckConfig,
    env: ArmEnv,
    art: Path,
    man: Manifest,
    mirror: Path,
    domains: list[str],
    venvs: dict[str, str],
    tmpd: Path,
    decoded: dict,
) -> ArtifactCheck:
    t0 = time.perf_counter()
    runtime = RUNTIME_OF[man.format]
    venv = venvs["onnx" if man.format == "onnx" else "torch"]
    models = env.root / WORK.lstrip("/") / "models"
    shutil.copyfile(art, models / man.file)
    shutil.copyfile(art.with_suffix(".json"), models / Path(man.file).with_suffix(".json"))
    stem = Path(man.file).stem
    step, step_source = output_step(art, man)
    host, host_error = _host_eval(
        str(art), runtime, mirror, domains, cfg.limit, tmpd / f"{stem}.host.npz", decoded
    )
    record, device, error = _device_eval(
        env, venv, f"{WORK}/models/{man.file}", runtime, domains, cfg.limit, stem
    )
    reference, against, host_vs_reference = host, HOST, None
    if man.format == "onnx" and man.precision == "int8" and host is not None:
        try:
            qdq = qdq_reference(art, mirror, host["files"])
        except EdgeRobustError as exc:
            host_error = f"the QDQ reference did not run: {exc}"
            reference = None
        else:
            reference, against = {"files": host["files"], "logits": qdq}, QDQ_REFERENCE
            host_vs_reference = compare_logits(
                man.precision, qdq, host["logits"], step, QDQ_REFERENCE
            )
    comparison, mismatch = _judge_runs(man, reference, device, step, against)
    if error is None and host_error is not None:
        error = f"the host run failed, nothing to compare with: {host_error}"
    optimized = None
    if cfg.optimize and man.format == "torchscript" and device is not None:
        optimized = _optimize(env, man, stem, domains, cfg.limit, device, step, art.parent)
    return ArtifactCheck(
        artifact=str(art),
        format=man.format,
        precision=man.precision,
        engine=man.engine,
        runtime=runtime,
        venv=venv,
        loads=record is not None,
        error=error or mismatch,
        comparison=comparison,
        step_source=step_source if man.precision == "int8" else None,
        host_vs_reference=host_vs_reference,
        device_runtime=record["runtime"] if record else None,
        device_host=record["host"] if record else None,
        seconds=round(time.perf_counter() - t0, 1),
        optimized=optimized,
    )


def _notes(cfg: DeviceCheckConfig, checks: list[ArtifactCheck]) -> list[str]:
    notes = [
        "emulated (qemu-user): timings say nothing about a real Pi's speed; the check is whether "
        "the artifact loads and computes the same logits on this core's instruction set"
    ]
    hosts = [c.device_host for c in checks if c.device_host]
    if hosts:
        has_dp = "asimddp" in hosts[0].get("isa_flags", [])
        expected = cfg.cpu == "cortex-a76"
        if has_dp != expected:
            notes.append(
                f"the emulated process reports asimddp={'yes' if has_dp else 'no'}, which a real "
                f"{cfg.cpu} does not: this qemu may ignore QEMU_CPU"
            )
    if any(c.precision == "int8" and c.step_source is None for c in checks):
        notes.append("int8 output step unknown for some artifacts: judged by top-1 only")
    off = [c for c in checks if c.host_vs_reference and not c.host_vs_reference.passed]
    if off:
        from edgerobust.fingerprint import host_fingerprint

        worst = max(off, key=lambda c: c.host_vs_reference.max_abs_diff)
        h = worst.host_vs_reference
        size = f"{h.diff_steps:.1f} output steps" if h.diff_steps else f"{h.max_abs_diff:.3g}"
        advice = host_fingerprint().get("int8_warning")
        notes.append(
            f"this host's own onnxruntime int8 run is off the graph's QDQ arithmetic by up to "
            f"{size} (top-1 {100 * h.top1_agreement:.1f} % on {Path(worst.artifact).name}); the "
            "device is judged against that arithmetic, not against this host"
            + (f" ({advice})" if advice else "")
        )
    return notes


# --------------------------------------------------------------------------- in-root entry point


def _main(argv: list[str]) -> int:
    """``python -m edgerobust.armcheck optimize IN.pt OUT.ptl``: the in-root half of --optimize."""
    if len(argv) != 3 or argv[0] != "optimize":
        print("usage: python -m edgerobust.armcheck optimize IN.pt OUT.ptl", file=sys.stderr)
        return 2
    try:
        info = write_optimized_lite(argv[1], argv[2])
    except EdgeRobustError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(info))
    return 0


if __name__ == "__main__":  # pragma: no cover - runs inside the emulated root
    raise SystemExit(_main(sys.argv[1:]))
