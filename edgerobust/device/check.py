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
  CPU's flags from ``AT_HWCAP`` instead (see :mod:`edgerobust.evaluate.fingerprint`).
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
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgerobust.device.emulation import (
    CPUS,
    DEFAULT_CACHE,
    DEFAULT_CPU,
    DEFAULT_LIMIT,
    EXECUTORCH_ARM,
    SUITE,
    TORCH_ARM,
    TORCH_VENV,
    VENVS,
    WORK,
    ArmEnv,
    _locked,
    _proc_mounted,
    _remove_tree,
    _tree_bytes,
    _venv_python_has,
    build_wheel,
    ensure_root,
    ensure_venv,
    mirror_dataset,
    prepare_host,
    source_hash,
    source_tree,
)
from edgerobust.device.verdict import (
    HOST,
    INT8_MAX_STEPS,
    QDQ_REFERENCE,
    STEP_SLACK,
    UNOPTIMIZED,
    Comparison,
    compare_logits,
    output_step,
    qdq_reference,
    rounding_spread,
)
from edgerobust.errors import ConfigError, DataError, EdgeRobustError
from edgerobust.progress import NullReporter, Reporter
from edgerobust.runtimes import default_runtime
from edgerobust.runtimes.formats import format_of, get_format, suffixes
from edgerobust.runtimes.manifest import (
    Manifest,
    atomic_write_json,
    read_manifest,
    sha256_file,
)

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
            if format_of(Path(a).suffix) is None:
                raise ConfigError(f"{a}: not an artifact (expected {', '.join(suffixes())})")
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


# --------------------------------------------------------------------------- one artifact


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
    max_steps: float = INT8_MAX_STEPS,
) -> tuple[Comparison | None, str | None]:
    if reference is None or device is None:
        return None, None
    if (
        reference["files"].shape != device["files"].shape
        or not (reference["files"] == device["files"]).all()
    ):
        return None, "this host and the emulated device scored different images"
    cmp = compare_logits(
        man.precision, reference["logits"], device["logits"], step, against, max_steps
    )
    return cmp, None


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
            "edgerobust.device.check",
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
    installs = {get_format(m.format).device_install for m in manifests}
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

                venvs = {
                    kind: ensure_venv(env, cache, kind, wheel, src_key, rep)
                    for kind in VENVS
                    if kind in installs
                }
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
    if "base" in venvs:
        # The light install's promise: the ONNX path on the device has no torch at all.
        info["light_venv_has_torch"] = _venv_python_has(env, venvs["base"], "torch")
    if "torch" in venvs or "executorch" in venvs:
        info["torch"] = TORCH_ARM
    if "executorch" in venvs:
        info["executorch"] = EXECUTORCH_ARM
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
    runtime = default_runtime(man.format)
    venv = venvs[get_format(man.format).device_install]
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
    max_steps = INT8_MAX_STEPS
    if man.format == "onnx" and man.precision == "int8" and host is not None:
        try:
            qdq = qdq_reference(art, mirror, host["files"])
            if step:
                spread = rounding_spread(art, mirror, host["files"], qdq, step)
                max_steps = max(INT8_MAX_STEPS, math.ceil(spread - STEP_SLACK))
        except EdgeRobustError as exc:
            host_error = f"the QDQ reference did not run: {exc}"
            reference = None
        else:
            reference, against = {"files": host["files"], "logits": qdq}, QDQ_REFERENCE
            host_vs_reference = compare_logits(
                man.precision, qdq, host["logits"], step, QDQ_REFERENCE, max_steps
            )
    comparison, mismatch = _judge_runs(man, reference, device, step, against, max_steps)
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
        from edgerobust.evaluate.fingerprint import host_fingerprint

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
    """``python -m edgerobust.device.check optimize IN.pt OUT.ptl``: the in-root half of --optimize."""
    if len(argv) != 3 or argv[0] != "optimize":
        print("usage: python -m edgerobust.device.check optimize IN.pt OUT.ptl", file=sys.stderr)
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
