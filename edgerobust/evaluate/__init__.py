"""``eval-device``: measure an artifact inside the runtime that will run it.

Per domain: accuracy (source domain: its validation split; other domains: every image, as in the
paper), with n and a 95 % Wilson interval. Then latency at batch 1 after warm-up (p50/p90/p99),
end-to-end throughput, artifact size, peak memory, and the host fingerprint. One JSON record.

With ``attack="saltpepper"`` the decision-based Salt&Pepper attack then runs against the artifact
itself on the same images (:mod:`edgerobust.attacks.device`; figures labelled ``blackbox``).

With ``corruptions`` each domain's images are also scored under ImageNet-C corruptions at the
chosen severities (:mod:`edgerobust.evaluate.corruptions`), and with ``reference`` (an artifact,
or an eval-device record that has corruption figures) the corruption errors (CE, mCE) relative
to it.

Needs only numpy, pillow and the runtime's own library: with ``--runtime onnxruntime`` this runs
on a device where torch is not installed.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgerobust import __version__
from edgerobust.data import (
    DEFAULT_SEED,
    DEFAULT_VAL_FRACTION,
    Domain,
    Images,
    decode_domain,
    make_split,
    open_dataset,
)
from edgerobust.errors import ConfigError, DataError
from edgerobust.evaluate.cpuload import CpuWindow
from edgerobust.evaluate.fingerprint import host_fingerprint
from edgerobust.progress import NullReporter, Reporter
from edgerobust.records import EvalDeviceRecord, encode_outcomes, images_digest
from edgerobust.runtimes import Runtime, open_artifact
from edgerobust.runtimes.manifest import atomic_write_bytes, atomic_write_json
from edgerobust.runtimes.preprocess import to_input

RECORD_VERSION = EvalDeviceRecord.VERSION


@dataclass(frozen=True)
class EvalConfig:
    artifact: str
    data: str
    runtime: str | None = None  # None: the format's own runtime
    domains: tuple[str, ...] | None = None  # None: every domain
    threads: int = 1
    providers: tuple[str, ...] | None = None  # onnxruntime execution providers, in order
    batch_size: int = 16
    warmup: int = 10
    latency_runs: int = 100
    limit: int | None = None  # at most this many images per domain (a seeded sample)
    attack: str | None = None  # "saltpepper": black-box robustness inside the runtime
    attack_eps: tuple[float, ...] | None = None  # None: the paper's light and heavy, (1, 15)
    attack_steps: int = 400  # the paper's Salt&Pepper steps
    attack_seed: int = 0
    attack_stop: str = "settled"  # see edgerobust.attacks.saltpepper.StopRule
    # ImageNet-C corruptions (edgerobust.data.corruptions), at these severities (0: clean)
    corruptions: tuple[str, ...] | None = None
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    corruption_seed: int = 0
    reference: str | None = None  # artifact or eval-device record: CE / mCE relative to it
    out: str | None = None
    logits_out: str | None = None  # .npz of the logits and the images they belong to

    def validate(self) -> None:
        if self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.latency_runs < 1 or self.warmup < 0:
            raise ConfigError("--latency-runs must be >= 1 and --warmup >= 0")
        if self.providers and self.runtime not in (None, "onnxruntime"):
            raise ConfigError("--providers applies to --runtime onnxruntime only")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}")
        if self.attack is not None:
            from edgerobust.attacks.device import validate_options

            validate_options(
                self.attack, self.attack_eps, self.attack_steps, self.attack_seed, self.attack_stop
            )
        if self.corruptions is not None:
            from edgerobust.data.corruptions import check_available, parse_corruptions

            parse_corruptions(",".join(self.corruptions))  # one line for an unknown name
            check_available(self.corruptions)
            if not self.severities or any(s not in range(6) for s in self.severities):
                raise ConfigError("--severities are 0 (clean) to 5, e.g. 1-5 or 1,3,5")
        if self.reference is not None:
            if self.corruptions is None:
                raise ConfigError("--reference needs --corruptions (it normalises their errors)")
            if not Path(self.reference).is_file():
                raise ConfigError(f"--reference {self.reference}: no such file")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["domains"] = list(self.domains) if self.domains else None
        d["attack_eps"] = list(self.attack_eps) if self.attack_eps is not None else None
        d["corruptions"] = list(self.corruptions) if self.corruptions is not None else None
        d["severities"] = list(self.severities)
        return d


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval for a proportion (sane at 0 %, 100 % and small n)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) so the peak is this measurement's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_kib() -> tuple[int | None, str]:
    hwm = _rss_kib("VmHWM")
    if hwm is not None:
        return hwm, "VmHWM"
    try:
        import resource

        return int(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        ), "ru_maxrss (process lifetime)"
    except (ImportError, OSError):
        return None, "unavailable"


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    a = np.asarray(samples_ms)
    return {
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
        "min": float(a.min()),
    }


def measure_latency(model: Runtime, x1: np.ndarray, warmup: int, runs: int) -> dict[str, Any]:
    """Batch-1 latency of the runtime call itself, after warm-up, with the CPU time other
    processes used meanwhile (``contention``; a warning when it likely inflated the figure)."""
    for _ in range(warmup):
        model(x1)
    samples = []
    clock = time.perf_counter
    with CpuWindow() as window:
        for _ in range(runs):
            t0 = clock()
            model(x1)
            samples.append((clock() - t0) * 1e3)
    stats = percentiles(samples)
    contention = window.result(stats["p50"], stats["min"])
    return {**stats, "runs": runs, "warmup": warmup, "batch": 1, "contention": contention}


def domain_indices(domain: Domain, source: dict, limit: int | None) -> tuple[str, list[int]]:
    """Which images of a domain to score: the validation split of the source domain, all of any
    other (the paper's protocol); then an optional seeded sample of ``limit``. Needs only the
    file list, so callers can choose images before (or without) decoding any."""
    if domain.name == source.get("source_domain"):
        split = make_split(
            domain,
            source.get("split_seed") or DEFAULT_SEED,
            source.get("val_fraction") or DEFAULT_VAL_FRACTION,
        )
        part, idx = "val", list(split.val)
    else:
        part, idx = "all", list(range(len(domain)))
    if limit is not None and limit < len(idx):
        rng = np.random.default_rng(0)
        idx = sorted(rng.choice(idx, size=limit, replace=False).tolist())
        part += f" (sample of {limit})"
    return part, idx


def check_classes(
    manifest_classes: list[str], dataset_classes: tuple[str, ...], root: Path
) -> None:
    if list(manifest_classes) != list(dataset_classes):
        extra = sorted(set(dataset_classes) - set(manifest_classes))
        missing = sorted(set(manifest_classes) - set(dataset_classes))
        detail = []
        if missing:
            detail.append(f"dataset lacks {', '.join(missing[:3])}")
        if extra:
            detail.append(f"dataset has extra {', '.join(extra[:3])}")
        raise DataError(
            f"the artifact has {len(manifest_classes)} classes but {root} has "
            f"{len(dataset_classes)} ({'; '.join(detail) or 'different order'}): evaluate on data "
            "with the classes the model was trained on"
        )


def evaluate(
    cfg: EvalConfig,
    reporter: Reporter | None = None,
    decoded: dict[tuple[str, str, int], Images] | None = None,
) -> dict[str, Any]:
    """Run the evaluation and return its record (also written to ``cfg.out`` if given).

    ``decoded`` lets a caller evaluating many artifacts share decoded images across them.
    """
    cfg.validate()
    rep = reporter or NullReporter()
    ds = open_dataset(cfg.data)
    domains = list(cfg.domains) if cfg.domains else list(ds.domains)
    for d in domains:
        ds.domain(d)  # one clear error for an unknown domain, before any work
    # Verify and load the artifact before decoding images: a bad artifact fails fast.
    rss_base = _rss_kib("VmRSS")
    reset = _reset_peak_rss()
    options = {"providers": list(cfg.providers)} if cfg.providers else {}
    model = open_artifact(cfg.artifact, cfg.runtime, threads=cfg.threads, **options)
    man = model.manifest
    check_classes(man.class_names, ds.classes, ds.root)
    size = man.input_size
    # a bad --reference fails here, before any image is decoded
    reference = _ReferenceSource(cfg, size) if cfg.reference else None
    decoded = decoded if decoded is not None else {}
    results = []
    attack_work = []  # (images, indices) per domain, attacked after the memory reading
    scored: list[tuple[str, Any, np.ndarray]] = []  # (file, label, logits) for logits_out
    for name in domains:
        key = (str(ds.root.resolve()), name, size)
        if key not in decoded:
            t = rep.task(f"decode {name}", len(ds.domain(name)))
            decoded[key] = decode_domain(
                ds.domain(name), size, progress=lambda d, n, t=t: rep.advance(t, 0, completed=d)
            )
            rep.done(t)
        images = decoded[key]
        part, idx = domain_indices(ds.domain(name), man.source, cfg.limit)
        skipped = [ds.domain(name).files[i] for i in idx if not images.ok[i]]
        idx = [i for i in idx if images.ok[i]]
        hits: list[np.ndarray] = [np.zeros(0, bool)]  # per image, in index order
        t = rep.task(f"{man.file} on {name}", len(idx))
        t0 = time.perf_counter()
        for s in range(0, len(idx), cfg.batch_size):
            sel = idx[s : s + cfg.batch_size]
            logits = model(to_input(np.asarray(images.pixels[sel])))
            hits.append(np.asarray(logits.argmax(1) == images.labels[sel]))
            if cfg.logits_out:
                files = ds.domain(name).files
                rows = zip(sel, logits, strict=True)
                scored += [(f"{name}/{files[i]}", images.labels[i], r) for i, r in rows]
            rep.advance(t, len(sel))
        elapsed = time.perf_counter() - t0
        rep.done(t)
        n = len(idx)
        outcome = np.concatenate(hits)
        correct = int(outcome.sum())
        lo, hi = wilson_interval(correct, n)
        results.append(
            {
                "domain": name,
                "role": "source" if name == man.source.get("source_domain") else "target",
                "split": part,
                "n": n,
                "correct": correct,
                "accuracy": correct / n if n else None,
                "ci95": [lo, hi],
                "unreadable_skipped": skipped,
                "seconds": elapsed,
                "throughput_images_per_s": n / elapsed if elapsed > 0 else None,
                # per image, so two models measured on the same images compare pairwise
                "images_sha256": images_digest(ds.domain(name).files[i] for i in idx),
                "outcomes": encode_outcomes(outcome),
            }
        )
        attack_work.append((images, idx))
    first = next((decoded[(str(ds.root.resolve()), d, size)] for d in domains), None)
    x1 = (
        to_input(np.asarray(first.pixels[:1]))
        if first is not None
        else np.zeros((1, 3, size, size), np.float32)
    )
    latency = measure_latency(model, x1, cfg.warmup, cfg.latency_runs)
    if latency["contention"]["warning"]:
        rep.log(f"warning: {Path(cfg.artifact).name}: {latency['contention']['warning']}")
    peak, how = _peak_rss_kib()
    if cfg.attack:
        # After the memory reading, so the attack's own buffers do not count as the model's.
        from edgerobust.attacks.device import blackbox_saltpepper, default_eps

        for r, (images, idx) in zip(results, attack_work, strict=True):
            t = rep.task(f"{cfg.attack} on {r['domain']}", None)
            r["attack"] = blackbox_saltpepper(
                model,
                images.pixels,
                images.labels,
                idx,
                cfg.attack_eps or default_eps(),
                steps=cfg.attack_steps,
                seed=cfg.attack_seed,
                stop=cfg.attack_stop,
            )
            rep.done(t)
    if cfg.corruptions:
        # After the memory reading too: the corrupted images are not the model's memory.
        _corruption_pass(cfg, model, reference, ds, results, attack_work, rep)
    total_n = sum(r["n"] for r in results)
    total_s = sum(r["seconds"] for r in results)
    record = EvalDeviceRecord(
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        edgerobust=__version__,
        artifact={
            "path": str(Path(cfg.artifact)),
            "file": man.file,
            "format": man.format,
            "precision": man.precision,
            "engine": man.engine,
            "arch": man.arch,
            "params": man.params,
            "sha256": man.sha256,
            "size_bytes": man.size_bytes,
            "size_mb": man.size_bytes / 1e6,
            "source": dict(man.source),
            "parity": man.parity,
        },
        runtime=model.info(),
        host=host_fingerprint(),
        dataset={"root": str(ds.root), "classes": list(ds.classes)},
        domains=results,
        latency_ms=latency,
        throughput={
            "images_per_s": total_n / total_s if total_s > 0 else None,
            "batch_size": cfg.batch_size,
            "includes": "cached decoded uint8 -> float input conversion and inference",
        },
        memory={
            "peak_rss_mb": peak / 1024 if peak else None,
            "rss_before_load_mb": rss_base / 1024 if rss_base else None,
            "added_by_artifact_mb": (peak - rss_base) / 1024
            if (peak and rss_base and reset)
            else None,
            "method": how if reset else f"{how} (not reset: includes earlier work in this process)",
        },
        config=cfg.to_dict(),
    ).to_dict()
    if cfg.logits_out:
        save_logits(cfg.logits_out, scored)
    if cfg.out:
        atomic_write_json(cfg.out, record)
    return record


def _corruption_pass(
    cfg: EvalConfig,
    model: Runtime,
    reference: _ReferenceSource | None,
    ds: Any,
    results: list[dict[str, Any]],
    work: list[tuple[Images, list[int]]],
    rep: Reporter,
) -> None:
    """Each domain's scored images under the corruptions (``r["corruptions"]``), and against the
    reference when one is given."""
    from edgerobust.evaluate.corruptions import corruption_accuracy, corruption_errors

    assert cfg.corruptions is not None

    def measure(m: Callable[[np.ndarray], np.ndarray], name: str, images: Images, idx: list[int]):
        return corruption_accuracy(
            m,
            images.pixels,
            images.labels,
            idx,
            cfg.corruptions,
            cfg.severities,
            seed=cfg.corruption_seed,
            batch_size=cfg.batch_size,
            domain=name,
            files=[ds.domain(name).files[i] for i in idx],
            reporter=rep,
        )

    for r, (images, idx) in zip(results, work, strict=True):
        res = measure(model, r["domain"], images, idx)
        if reference is not None:
            ref = reference.result(
                r["domain"], lambda m, r=r, im=images, i=idx: measure(m, r["domain"], im, i)
            )
            res["reference"] = {**reference.info, **corruption_errors(res, ref)}
        r["corruptions"] = res


class _ReferenceSource:
    """Where CE's reference figures come from: an eval-device record that has them, or an
    artifact measured here on the very same corrupted images."""

    def __init__(self, cfg: EvalConfig, input_size: int) -> None:
        import json

        path = Path(str(cfg.reference))
        self.model: Runtime | None = None
        self.figures: dict[str, dict[str, Any]] = {}
        if path.suffix == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                raise ConfigError(f"--reference {path}: not readable JSON ({exc})") from None
            if not isinstance(data, dict) or data.get("record") != "eval-device":
                raise ConfigError(
                    f"--reference {path}: pass an artifact (.onnx, .pt, .ptl) or an eval-device "
                    "record measured with --corruptions"
                )
            self.figures = {
                d["domain"]: d["corruptions"] for d in data["domains"] if d.get("corruptions")
            }
            art = data.get("artifact") or {}
            self.info = {
                "from": "record",
                "path": str(path),
                "file": art.get("file"),
                "sha256": art.get("sha256"),
            }
        else:
            self.model = open_artifact(path, None, threads=cfg.threads)
            m = self.model.manifest
            if m.input_size != input_size:
                raise ConfigError(
                    f"--reference {path} takes {m.input_size} px images, the artifact {input_size}: "
                    "CE compares the same images"
                )
            self.info = {"from": "artifact", "path": str(path), "file": m.file, "sha256": m.sha256}

    def result(self, domain: str, measure: Callable[[Runtime], dict[str, Any]]) -> dict[str, Any]:
        if self.model is not None:
            return measure(self.model)
        if domain not in self.figures:
            raise ConfigError(
                f"--reference {self.info['path']} has no corruption figures on {domain}: "
                "measure it with the same --domains and --corruptions"
            )
        return self.figures[domain]


def save_logits(path: str | Path, scored: list[tuple[str, Any, np.ndarray]]) -> None:
    """Write ``files`` (DOMAIN/CLASS/NAME), ``labels`` and ``logits`` (float32) to one ``.npz``,
    so runs of one artifact on two machines can be compared image by image."""
    import io

    n_classes = len(scored[0][2]) if scored else 0
    buf = io.BytesIO()
    np.savez(
        buf,
        files=np.asarray([f for f, _, _ in scored], dtype=str),
        labels=np.asarray([int(y) for _, y, _ in scored], dtype=np.int64),
        logits=np.asarray([r for _, _, r in scored], dtype=np.float32).reshape(-1, n_classes),
    )
    atomic_write_bytes(path, buf.getvalue())


def load_logits(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays :func:`save_logits` wrote: ``files``, ``labels``, ``logits``."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in ("files", "labels", "logits")}
