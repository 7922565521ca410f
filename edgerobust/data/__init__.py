"""Datasets of domains: discovery, class alignment, the seeded split, and a decoded-image cache.

Layouts (both load):

* ``ROOT/DOMAIN/CLASS/*.jpg|png`` (PACS, the built-in synthetic domains)
* ``ROOT/DOMAIN/images/CLASS/*.jpg|png`` (Office-31)

Every file in a format this Pillow decodes is an image (GIF, TIFF, WebP, ... see
:func:`~edgerobust.runtimes.preprocess.image_suffixes`). Everything else found under ``ROOT`` is
listed in :attr:`DomainDataset.ignored` with the reason, so ``edgerobust data`` can say what it
did not read: nothing is skipped silently.

Classes are aligned across domains by folder name; a class missing from a domain is an error that
names it. The split (90 % train / 10 % validation per domain, seed 1, as in the paper) orders files
by ``sha256(seed/relative path)``: identical on every run, machine and numpy version. Adding a
file reshuffles nothing: at most the one file at the train/validation boundary changes side.

This module needs only numpy and pillow: ``eval-device`` uses it on the device.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgerobust.errors import DataError
from edgerobust.runtimes.manifest import atomic_write_json
from edgerobust.runtimes.preprocess import (
    DECODE_VERSION,
    ImageDecodeError,
    decode_image,
    image_suffixes,
    open_rgb,
    to_input,
)

DEFAULT_SEED = 1
DEFAULT_VAL_FRACTION = 0.1


@dataclass(frozen=True)
class Domain:
    """One domain: image files (relative to the domain folder) and their class indices."""

    name: str
    root: Path
    files: tuple[str, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.files)

    def paths(self, indices: Iterable[int] | None = None) -> list[Path]:
        idx = range(len(self.files)) if indices is None else indices
        return [self.root / self.files[i] for i in idx]


@dataclass(frozen=True)
class Split:
    """Indices into a domain's files; ``train`` and ``val`` are disjoint and cover the domain."""

    domain: str
    seed: int
    val_fraction: float
    train: tuple[int, ...]
    val: tuple[int, ...]

    def indices(self, part: str) -> tuple[int, ...]:
        if part == "train":
            return self.train
        if part == "val":
            return self.val
        if part == "all":
            return tuple(sorted(self.train + self.val))
        raise ValueError(f"unknown split part {part!r} (train, val or all)")

    def to_dict(self, domain: Domain) -> dict:
        return {
            "domain": self.domain,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "n_train": len(self.train),
            "n_val": len(self.val),
            "val_files": [domain.files[i] for i in self.val],
        }


@dataclass(frozen=True)
class DomainDataset:
    root: Path
    layout: str  # "flat" (DOMAIN/CLASS) or "office31" (DOMAIN/images/CLASS)
    classes: tuple[str, ...]
    domains: dict[str, Domain]
    # path relative to root (a folder ends in "/") -> why it is not read
    ignored: dict[str, str] = field(default_factory=dict)

    def domain(self, name: str) -> Domain:
        try:
            return self.domains[name]
        except KeyError:
            raise DataError(
                f"no domain {name!r} in {self.root}: it has {', '.join(self.domains)}"
            ) from None

    def split(
        self, name: str, seed: int = DEFAULT_SEED, val_fraction: float = DEFAULT_VAL_FRACTION
    ) -> Split:
        return make_split(self.domain(name), seed, val_fraction)


def _class_root(domain_dir: Path) -> tuple[Path, str]:
    images = domain_dir / "images"
    if images.is_dir() and any(p.is_dir() for p in images.iterdir()):
        return images, "office31"
    return domain_dir, "flat"


def _scan(folder: Path, root: Path, ignored: dict[str, str], *, where: str) -> list[str]:
    """Image file names directly in ``folder``; every other entry goes to ``ignored`` with why.

    ``where`` says what the folder is, for the reason of a stray file ("a class folder" takes
    images; a domain or the root takes folders only)."""
    readable = image_suffixes()
    names = []
    for p in sorted(folder.iterdir()):
        rel = p.relative_to(root).as_posix()
        if p.name.startswith("."):
            ignored[rel + ("/" if p.is_dir() else "")] = "hidden"
        elif p.is_dir():
            if where == "class":
                ignored[rel + "/"] = "a folder inside a class folder: only CLASS/* files are read"
        elif not p.is_file():
            ignored[rel] = "not a regular file (a broken link?)"
        elif where != "class":
            ignored[rel] = f"a file in {where}: images are read from ROOT/DOMAIN/CLASS/"
        elif (suffix := p.suffix.lower()) not in readable:
            ignored[rel] = f"not an image format Pillow reads ({suffix or 'no extension'})"
        elif readable[suffix]:
            ignored[rel] = readable[suffix]
        else:
            names.append(p.name)
    return names


def _list_images(folder: Path) -> list[str]:
    return _scan(folder, folder, {}, where="class")


def open_dataset(root: str | Path) -> DomainDataset:
    """Discover the domains and classes under ``root``; raise :class:`DataError` on bad layouts."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"{root} is a file; pass the folder that holds one folder per domain")
    ignored: dict[str, str] = {}
    _scan(root, root, ignored, where="the dataset root")
    domain_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not domain_dirs:
        raise DataError(
            f"{root} has no domain folders: expected ROOT/DOMAIN/CLASS/*.jpg "
            "or ROOT/DOMAIN/images/CLASS/*.jpg"
        )
    per_domain: dict[str, tuple[Path, dict[str, list[str]]]] = {}
    layouts = set()
    for ddir in domain_dirs:
        croot, layout = _class_root(ddir)
        if layout == "office31":
            for p in sorted(ddir.iterdir()):
                if p != croot:
                    rel = p.relative_to(root).as_posix()
                    ignored[rel + ("/" if p.is_dir() else "")] = (
                        "beside images/: this domain is read from images/CLASS/"
                    )
        _scan(croot, root, ignored, where="a domain folder")
        classes = {}
        for cdir in sorted(p for p in croot.iterdir() if p.is_dir() and not p.name.startswith(".")):
            classes[cdir.name] = _scan(cdir, root, ignored, where="class")
        if not classes:
            if _list_images(ddir):
                raise DataError(
                    f"{ddir} holds images directly: put them in one folder per class "
                    f"({ddir.name}/CLASS/*.jpg)"
                )
            raise DataError(f"domain {ddir.name!r} has no class folders ({ddir})")
        if not any(classes.values()):
            raise DataError(f"domain {ddir.name!r} is empty: no images under {croot}")
        per_domain[ddir.name] = (croot, classes)
        layouts.add(layout)
    all_classes = sorted(set().union(*(set(c) for _, c in per_domain.values())))
    problems = []
    for name, (_, classes) in per_domain.items():
        missing = [c for c in all_classes if c not in classes]
        if missing:
            others = [d for d, (_, cs) in per_domain.items() if missing[0] in cs]
            problems.append(
                f"domain {name!r} lacks class {missing[0]!r} (found in {', '.join(others)})"
                + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            )
        empty = [c for c, files in classes.items() if not files]
        if empty:
            problems.append(f"domain {name!r} class {empty[0]!r} has no images")
    if problems:
        raise DataError(
            "; ".join(problems) + ": every domain needs the same class folders, each non-empty"
        )
    index = {c: i for i, c in enumerate(all_classes)}
    domains = {}
    for name, (croot, classes) in per_domain.items():
        files, labels = [], []
        for cname in all_classes:
            for f in classes[cname]:
                files.append(f"{cname}/{f}")
                labels.append(index[cname])
        domains[name] = Domain(name, croot, tuple(files), tuple(labels))
    layout = layouts.pop() if len(layouts) == 1 else "mixed"
    return DomainDataset(root, layout, tuple(all_classes), domains, dict(sorted(ignored.items())))


def make_split(
    domain: Domain, seed: int = DEFAULT_SEED, val_fraction: float = DEFAULT_VAL_FRACTION
) -> Split:
    """Seeded per-domain split by hash order (see the module docstring)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val fraction must be in (0, 1), got {val_fraction}")
    n = len(domain)
    order = sorted(
        range(n), key=lambda i: hashlib.sha256(f"{seed}/{domain.files[i]}".encode()).hexdigest()
    )
    n_val = min(n - 1, max(1, round(n * val_fraction))) if n > 1 else 0
    val = tuple(sorted(order[:n_val]))
    train = tuple(sorted(order[n_val:]))
    return Split(domain.name, seed, val_fraction, train, val)


# --------------------------------------------------------------------------- decoded-image cache


def cache_dir() -> Path:
    env = os.environ.get("EDGEROBUST_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgerobust"


@contextmanager
def default_cache_dir(path: str | Path) -> Iterator[None]:
    """Use ``path`` as the decoded-image cache unless ``$EDGEROBUST_CACHE`` is already set."""
    if os.environ.get("EDGEROBUST_CACHE"):
        yield
        return
    os.environ["EDGEROBUST_CACHE"] = str(path)
    try:
        yield
    finally:
        os.environ.pop("EDGEROBUST_CACHE", None)


@dataclass(frozen=True)
class Images:
    """Decoded images of one domain at one size: ``uint8`` NHWC, labels, and what failed."""

    domain: str
    size: int
    pixels: np.ndarray  # (N, size, size, 3) uint8; zeros where decoding failed
    labels: np.ndarray  # (N,) int64
    ok: np.ndarray  # (N,) bool
    failures: dict[int, str]  # index -> reason

    def select(
        self, indices: Iterable[int], skip_failed: bool = True
    ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        idx = [i for i in indices if not skip_failed or self.ok[i]]
        return self.pixels[idx], self.labels[idx], idx


def _fingerprint(domain: Domain, size: int) -> str:
    h = hashlib.sha256(f"v{DECODE_VERSION}|{size}|{domain.root.resolve()}".encode())
    for f in domain.files:
        st = (domain.root / f).stat()
        h.update(f"|{f}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def decode_domain(
    domain: Domain,
    size: int,
    *,
    cache: bool = True,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> Images:
    """Decode and resize every image of ``domain`` once; later calls read the ``.npy`` cache.

    Corrupt files do not stop the run: they are recorded in ``failures`` and masked out.
    """
    labels = np.asarray(domain.labels, dtype=np.int64)
    key = _fingerprint(domain, size)
    folder = cache_dir() / "decoded"
    npy, meta_path = (
        folder / f"{domain.name}-{size}-{key}.npy",
        folder / f"{domain.name}-{size}-{key}.json",
    )
    if cache and npy.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            pixels = np.load(npy, mmap_mode="r")
            if pixels.shape == (len(domain), size, size, 3):
                failures = {int(k): v for k, v in meta["failures"].items()}
                ok = np.ones(len(domain), dtype=bool)
                ok[list(failures)] = False
                if progress:
                    progress(len(domain), len(domain))
                return Images(domain.name, size, pixels, labels, ok, failures)
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            pass  # a damaged cache entry is rebuilt below
    shape = (len(domain), size, size, 3)
    tmp = None
    if cache:
        # Decode straight into a memory-mapped .npy beside the cache entry: a whole domain never
        # has to fit in RAM (PACS sketch at 224 px is 590 MB; a Raspberry Pi may have 1 GB).
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = npy.with_name(f".{npy.name}.{os.getpid()}.tmp")
            pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        except OSError:
            tmp = None  # caching is an optimisation; a read-only home must not stop evaluation
    if tmp is None:
        pixels = np.zeros(shape, dtype=np.uint8)
    failures: dict[int, str] = {}
    paths = domain.paths()

    def work(i: int) -> None:
        try:
            pixels[i] = decode_image(paths[i], size)
        except ImageDecodeError as exc:
            failures[i] = exc.reason

    try:
        # PIL releases the GIL while decoding, so threads give a real speed-up.
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for done, _ in enumerate(pool.map(work, range(len(paths))), 1):
                if progress and (done % 64 == 0 or done == len(paths)):
                    progress(done, len(paths))
        if tmp is not None:
            pixels.flush()
            del pixels
            os.replace(tmp, npy)
            atomic_write_json(
                meta_path, {"domain": domain.name, "size": size, "failures": failures}
            )
            pixels = np.load(npy, mmap_mode="r")
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
    ok = np.ones(len(domain), dtype=bool)
    ok[list(failures)] = False
    return Images(domain.name, size, pixels, labels, ok, dict(sorted(failures.items())))


def check_domain(domain: Domain, workers: int = 2) -> dict[str, str]:
    """Fully decode every file at its own size, by the rules training and evaluation use
    (:func:`~edgerobust.runtimes.preprocess.open_rgb`); return ``{relative path: reason}`` for
    the files they would skip."""

    def check(rel: str) -> tuple[str, str | None]:
        try:
            open_rgb(domain.root / rel)
            return rel, None
        except ImageDecodeError as exc:
            return rel, exc.reason

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return {rel: why for rel, why in pool.map(check, domain.files) if why}


def origin_split(
    origin: dict, size: int, data: str | Path | None = None
) -> tuple[DomainDataset, Images, Split]:
    """The source domain a model was trained on, decoded, with its recorded split.

    ``origin`` is a checkpoint spec's or manifest's ``origin``/``source`` record (dataset path,
    source domain, split seed and fraction). ``data`` overrides the dataset folder, e.g. when the
    data moved or the export runs on another machine.
    """
    root = data or origin.get("dataset")
    if not root:
        raise DataError("the model records no dataset: pass --data DIR")
    try:
        ds = open_dataset(root)
    except DataError as exc:
        if data is None:
            raise DataError(
                f"{exc} (the dataset the model was trained on; pass --data DIR)"
            ) from None
        raise
    source = origin.get("source_domain")
    if not source:
        raise DataError("the model records no source domain: it cannot pick calibration images")
    split = ds.split(
        source,
        origin.get("split_seed", DEFAULT_SEED),
        origin.get("val_fraction", DEFAULT_VAL_FRACTION),
    )
    return ds, decode_domain(ds.domain(source), size), split


def origin_images(
    origin: dict, part: str, size: int, data: str | Path | None = None
) -> tuple[DomainDataset, Images, tuple[int, ...]]:
    """Like :func:`origin_split`, returning the indices of one part (train, val or all)."""
    ds, images, split = origin_split(origin, size, data)
    return ds, images, split.indices(part)


def spread_batches(
    images: Images, indices: Iterable[int], n_batches: int, batch_size: int
) -> list[np.ndarray]:
    """Up to ``n_batches * batch_size`` readable images spread evenly over ``indices``, as model
    inputs. Files are class-sorted, so an even spread shows calibration every class."""
    idx = [i for i in indices if images.ok[i]]
    n = min(len(idx), n_batches * batch_size)
    pick = [idx[int(j)] for j in np.linspace(0, len(idx) - 1, n)] if n else []
    return [
        to_input(np.asarray(images.pixels[pick[i : i + batch_size]]))
        for i in range(0, n, batch_size)
    ]
