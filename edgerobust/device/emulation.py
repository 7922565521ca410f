"""The emulated Raspberry Pi: can this host emulate arm64, the cached Debian root, the
wheels and venvs the README's Pi section installs, and the image mirror.

See :mod:`edgerobust.device` for what the check proves and what it costs.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgerobust.errors import ConfigError, EmulationUnavailable
from edgerobust.progress import Reporter
from edgerobust.runtimes.manifest import (
    Manifest,
    atomic_write_json,
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
# ExecuTorch on the Pi: the release built against TORCH_ARM. Its Python bindings link libtorch,
# so the version must match: executorch 1.5.1 with torch 2.9.1 fails to import ("undefined
# symbol c10::TensorImpl::decref_pyobject", measured). executorch goes in with --no-deps, beside
# what ``import executorch.runtime`` imports (measured); its other requirements (hydra, pandas,
# tokenizers, coremltools, pytest, ...) serve export and LLM tooling, and one has no wheel.
EXECUTORCH_ARM = "1.0.1"
EXECUTORCH_RUNTIME_DEPS = (
    "torchao==0.14.0",  # the torchao that executorch 1.0.1 pins
    "ruamel.yaml",
    "tabulate",
    "flatbuffers",
    "tqdm",
    "packaging",
)
# Wheels that run on bookworm's glibc 2.36 (pip wants every tag spelled out).
PLATFORM_TAGS = ("manylinux2014_aarch64",) + tuple(
    f"manylinux_2_{v}_aarch64" for v in (17, 24, 26, 27, 28, 31, 34, 35, 36)
)

# Inside the root, where the README puts things on the Pi.
HOME = "/root"
LIGHT_VENV = f"{HOME}/er"
TORCH_VENV = f"{HOME}/er-torch"
EXECUTORCH_VENV = f"{HOME}/er-executorch"
# Which venv runs which artifacts: the light one (no torch), torch's, or torch + executorch.
VENVS = {"base": LIGHT_VENV, "torch": TORCH_VENV, "executorch": EXECUTORCH_VENV}
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
EVAL_TIMEOUT_S = 1800
BUILD_TIMEOUT_S = 3600


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
    import edgerobust

    repo = Path(edgerobust.__file__).resolve().parents[1]
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
    elif kind == "executorch":
        reqs = [f"executorch=={EXECUTORCH_ARM}", *EXECUTORCH_RUNTIME_DEPS]
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
    elif kind == "executorch":
        _pip_download(partial, reqs[:1], no_deps=True)
        _pip_download(partial, reqs[1:])
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
    ~/edgerobust-*.whl`` (offline, from the host-downloaded wheels), plus torch for ``torch``,
    plus torch and executorch's runtime for ``executorch``. Rebuilt when its dependencies change;
    only edgerobust is reinstalled when the sources do."""
    venv = VENVS[kind]
    base_dir, base_key = wheelhouse(cache, "base", rep)
    dirs, keys = [base_dir], [base_key]
    for extra in ("torch", "executorch"):
        if kind == extra or (kind == "executorch" and extra == "torch"):
            extra_dir, extra_key = wheelhouse(cache, extra, rep)
            dirs.append(extra_dir)
            keys.append(extra_key)
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
        extra = [f"torch=={TORCH_ARM}"] if kind in ("torch", "executorch") else []
        if kind == "executorch":
            extra += list(EXECUTORCH_RUNTIME_DEPS)
        env.step(f"install {venv}", [*pip, f"{HOME}/{whl.name}", *extra])
        if kind == "executorch":
            env.step(f"executorch in {venv}", [*pip, "--no-deps", f"executorch=={EXECUTORCH_ARM}"])
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
