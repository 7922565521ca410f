"""``edgerobust run``: expand a study into a DAG of stages and run what is not done yet.

Each :class:`Stage` is a kind (``synthetic``, ``train``, ``prune``, ``distill``, ``quantize``,
``export``, ``eval-device``, ``attack`` (white-box, on checkpoints), ``saltpepper`` (black-box, on
artifacts)), its settings, and the stages it reads from. Its key
is ``sha256(kind, adapter version, canonical JSON settings, keys of its dependencies)``, so
changing one setting changes the key of that stage and of everything downstream of it, and
nothing else.

Storage (``OUT`` is the study's output folder)::

    OUT/stages/<kind>-<key12>/     everything one stage makes (checkpoint, artifact, records)
    OUT/stages/<kind>-<key12>/done.json   written last, atomically: the stage is finished
    OUT/study.log                  every stage's log lines, timings, and tracebacks of failures
    OUT/summary.json               what ran, what was cached, what failed and why

A stage is cached when its ``done.json`` exists. A stage writes at its final path, because its
files name each other by path (an int8 checkpoint's spec names its fp32 parent, a manifest its
source checkpoint); the folder carries an ``.incomplete`` marker until ``done.json`` is written,
and reports skip records under such folders. Every file inside is itself written atomically
(temporary name, then ``os.replace``). So a run killed at any moment (even ``kill -9``) loses at
most the stage in flight: the next run clears that folder and does it again (``train``
resumes from its last finished epoch instead). A failed stage is recorded with its one-line
reason; the stages that depend on it are skipped, everything else still runs.

Stage kinds are a registry of small adapters (:mod:`edgerobust.stages`): ``kind ->
function(settings, inputs, out_dir, reporter) -> record path``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgerobust.errors import ConfigError, EdgeRobustError
from edgerobust.progress import NullReporter, Reporter
from edgerobust.runtimes.manifest import atomic_write_json
from edgerobust.study import RUNTIMES, SALTPEPPER_EPS, Study, load_study

DONE = "done.json"
INCOMPLETE = ".incomplete"
LOG_NAME = "study.log"
SUMMARY_NAME = "summary.json"

# --------------------------------------------------------------------------- stage kinds

StageFn = Callable[[dict[str, Any], dict[str, "StageOutput"], Path, Reporter], "Path | str"]


@dataclass(frozen=True)
class StageKind:
    """A registered adapter: how to run one kind of stage."""

    name: str
    run: StageFn
    version: int = 1  # bump when the adapter's output changes: every key of this kind changes
    resumable: bool = False  # keep a partial folder on rerun (the function resumes from it)
    exclusive: bool = False  # run alone: its timings must not compete with other stages


_KINDS: dict[str, StageKind] = {}


def register_stage(
    name: str, *, version: int = 1, resumable: bool = False, exclusive: bool = False
) -> Callable[[StageFn], StageFn]:
    """Decorator registering a stage adapter; a duplicate name is an error."""

    def deco(fn: StageFn) -> StageFn:
        if name in _KINDS:
            raise ValueError(f"stage kind {name!r} is already registered")
        _KINDS[name] = StageKind(name, fn, version, resumable, exclusive)
        return fn

    return deco


def get_stage_kind(name: str) -> StageKind:
    _load_adapters()
    try:
        return _KINDS[name]
    except KeyError:
        raise ConfigError(
            f"unknown stage kind {name!r}: known are {', '.join(sorted(_KINDS))}"
        ) from None


def list_stage_kinds() -> list[str]:
    _load_adapters()
    return sorted(_KINDS)


def _load_adapters() -> None:
    import edgerobust.stages  # noqa: F401 - registers the adapters


# --------------------------------------------------------------------------- stages


def canonical_json(obj: Any) -> str:
    """The one serialisation that keys are computed from (sorted keys, no spaces)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True, eq=False)
class Stage:
    """One unit of work: kind + settings + the stages it reads (``deps``: role -> stage)."""

    kind: str
    settings: dict[str, Any]
    deps: tuple[tuple[str, Stage], ...] = ()
    label: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # study annotations (not hashed)
    # roles the stage can do without: when such a dep fails, the stage runs without it (and
    # runs again once it exists), e.g. an int8 export refused by the parity gate must not keep
    # its fp32 parent from being attacked
    optional: tuple[str, ...] = ()
    key: str = field(default="", init=False)

    def __post_init__(self) -> None:
        version = get_stage_kind(self.kind).version
        payload = {
            "kind": self.kind,
            "version": version,
            "settings": self.settings,
            "deps": {role: dep.key for role, dep in self.deps},
        }
        object.__setattr__(
            self, "key", hashlib.sha256(canonical_json(payload).encode()).hexdigest()
        )

    @property
    def dirname(self) -> str:
        return f"{self.kind}-{self.key[:12]}"

    def describe(self) -> str:
        return f"{self.kind} {self.label}".strip()


@dataclass(frozen=True)
class StageOutput:
    """A finished stage, as its dependents see it: its folder and its record."""

    dir: Path
    record: dict[str, Any]
    record_path: Path

    def path(self, name: str = "checkpoint") -> str:
        """A path the record names (e.g. its checkpoint)."""
        value = self.record.get(name)
        if not value:
            raise ConfigError(f"{self.record_path} has no {name!r}")
        return str(value)


# --------------------------------------------------------------------------- expansion


@dataclass
class _Model:
    """A checkpoint the study makes, and where it sits in the paper's tables."""

    stage: Stage
    label: str
    base: str
    method: str  # "-" | "FP" | "KD" | "PTSQ"
    arch: str
    compression: str  # baseline | pruned | distilled | int8
    source: str
    engine: str | None = None
    parent: _Model | None = None

    def meta(self) -> dict[str, Any]:
        m = {
            "source": self.source,
            "model": self.label,
            "base": self.base,
            "method": self.method,
            "arch": self.arch,
            "compression": self.compression,
        }
        if self.engine:
            m["engine"] = self.engine
        if self.parent is not None:
            m["parent_model"] = self.parent.label
        return m


@dataclass(frozen=True)
class Plan:
    """The expanded study: stages in dependency order, plus notes on what was left out."""

    study: Study
    stages: tuple[Stage, ...]
    notes: tuple[str, ...] = ()


def num_classes(study: Study) -> int:
    if study.dataset.kind == "synthetic":
        from edgerobust.synthetic import CLASSES

        return len(CLASSES)
    from edgerobust.data import open_dataset

    return len(open_dataset(study.dataset.path).classes)


_PARAMS: dict[tuple[str, int], int] = {}


def arch_params(arch: str, n_classes: int) -> int:
    """Parameters of ``arch`` with an ``n_classes`` head (for prune targets named by arch)."""
    if (arch, n_classes) not in _PARAMS:
        from edgerobust.models import build_model, count_params

        _PARAMS[(arch, n_classes)] = count_params(build_model(arch, n_classes))
    return _PARAMS[(arch, n_classes)]


def plan_study(study: Study) -> Plan:
    """Expand a study into stages (dependencies first). Pure: runs and writes nothing."""
    ds, tr = study.dataset, study.train
    stages: dict[str, Stage] = {}
    notes: list[str] = []

    def add(stage: Stage) -> Stage:
        return stages.setdefault(stage.key, stage)

    data_deps: tuple[tuple[str, Stage], ...] = ()
    data_settings: dict[str, Any] = {}
    if ds.kind == "synthetic":
        syn = add(
            Stage(
                "synthetic",
                {"per_class": ds.per_class, "size": ds.size, "seed": ds.synthetic_seed},
                label=f"{ds.per_class}/class {ds.size}px",
            )
        )
        data_deps = (("data", syn),)
    else:
        data_settings = {"data": ds.path}
    split = {"split_seed": ds.split_seed, "val_fraction": ds.val_fraction}
    n_classes = num_classes(study) if study.prune else 0

    models: list[_Model] = []
    for source in ds.sources:
        baselines: dict[str, _Model] = {}
        for arch in tr.archs:
            settings = {
                **data_settings,
                **split,
                "source": source,
                "arch": arch,
                "image_size": tr.image_size,
                "epochs": tr.epochs,
                "lr": tr.lr,
                "batch_size": tr.batch_size,
                "momentum": tr.momentum,
                "weight_decay": tr.weight_decay,
                "weights": tr.weights,
                "augment": tr.augment,
                "device": tr.device,
                "seed": study.study.seed,
            }
            label = f"{source}/{arch}"
            m = _Model(
                Stage("train", settings, data_deps, label),
                arch,
                arch,
                "-",
                arch,
                "baseline",
                source,
            )
            m = _with_meta(m)
            add(m.stage)
            baselines[arch] = m
            models.append(m)
        for p in study.prune:
            for base in p.bases:
                base_params = arch_params(base, n_classes)
                for target in p.targets:
                    params = target.params or (
                        arch_params(target.arch, n_classes) if target.arch else None
                    )
                    if params is not None and params >= base_params:
                        notes.append(
                            f"prune {source}/{base} to {target.label}: left out, "
                            f"{base} has only {base_params / 1e6:.2f}M parameters"
                        )
                        continue
                    settings = {
                        **data_settings,
                        "target_params": params,
                        "ratio": target.ratio,
                        "epochs": p.epochs,
                        "lr": p.lr,
                        "lr_gamma": p.lr_gamma,
                        "batch_size": p.batch_size,
                        "momentum": p.momentum,
                        "weight_decay": p.weight_decay,
                        "augment": p.augment,
                        "device": tr.device,
                        "seed": study.study.seed,
                    }
                    label = f"{base}-fp-{target.label}"
                    m = _with_meta(
                        _Model(
                            Stage(
                                "prune",
                                settings,
                                (("model", baselines[base].stage), *data_deps),
                                f"{source}/{label}",
                            ),
                            label,
                            base,
                            "FP",
                            base,
                            "pruned",
                            source,
                            parent=baselines[base],
                        ),
                        target=target.label,
                    )
                    add(m.stage)
                    models.append(m)
        if study.distill:
            d = study.distill
            for pair in d.pairs:
                settings = {
                    **data_settings,
                    "student": pair.student,
                    "alpha": d.alpha,
                    "tau": d.tau,
                    "epochs": d.epochs,
                    "lr": d.lr,
                    "batch_size": d.batch_size,
                    "momentum": d.momentum,
                    "weight_decay": d.weight_decay,
                    "augment": d.augment,
                    "student_weights": d.student_weights,
                    "device": tr.device,
                    "seed": study.study.seed,
                }
                label = f"{pair.teacher}-kd-{pair.student}"
                m = _with_meta(
                    _Model(
                        Stage(
                            "distill",
                            settings,
                            (("teacher", baselines[pair.teacher].stage), *data_deps),
                            f"{source}/{label}",
                        ),
                        label,
                        pair.teacher,
                        "KD",
                        pair.student,
                        "distilled",
                        source,
                        parent=baselines[pair.teacher],
                    ),
                    teacher=pair.teacher,
                )
                add(m.stage)
                models.append(m)

    # PTSQ of the chosen fp32 models, one per engine.
    int8: dict[tuple[str, str], _Model] = {}  # (fp32 model key, engine) -> int8 model
    if study.quantize:
        q = study.quantize
        for m in [m for m in models if m.compression in q.models]:
            for engine in q.engines:
                label = f"{m.label}-int8-{engine}"
                qm = _with_meta(
                    _Model(
                        Stage(
                            "quantize",
                            {"engine": engine, "calib_batches": q.calib_batches},
                            (("model", m.stage),),
                            f"{m.source}/{label}",
                        ),
                        label,
                        m.base,
                        "PTSQ",
                        m.arch,
                        "int8",
                        m.source,
                        engine=engine,
                        parent=m,
                    )
                )
                add(qm.stage)
                int8[(m.stage.key, engine)] = qm

    # Exports: fp32 of every model; int8 of the quantized ones (ONNX: onnxruntime QDQ from the
    # fp32 checkpoint; TorchScript / lite: the PTSQ checkpoint of each engine).
    artifacts: list[tuple[Stage, dict[str, Any]]] = []
    if study.export:
        e = study.export
        common = {
            "force": e.force,
            "min_agreement": e.min_agreement,
            "parity_images": e.parity_images,
        }
        for m in models:
            for fmt in e.formats:
                todo: list[tuple[_Model, str, str | None, dict[str, Any]]] = []
                if "fp32" in e.precisions:
                    todo.append((m, "fp32", None, m.meta()))
                if (
                    "int8" in e.precisions
                    and study.quantize
                    and m.compression in study.quantize.models
                ):
                    if fmt == "onnx":
                        meta = {
                            **m.meta(),
                            "model": f"{m.label}-int8-onnxruntime",
                            "method": "PTSQ",
                            "compression": "int8",
                            "engine": "onnxruntime-qdq",
                            "parent_model": m.label,
                        }
                        todo.append((m, "int8", None, meta))
                    else:
                        for engine in study.quantize.engines:
                            qm = int8[(m.stage.key, engine)]
                            todo.append((qm, "int8", engine, qm.meta()))
                for src, quant, _engine, meta in todo:
                    name = _safe(f"{meta['source']}-{meta['model']}-{fmt}-{quant}")
                    meta = {**meta, "format": fmt, "precision": quant}
                    stage = add(
                        Stage(
                            "export",
                            {"format": fmt, "quant": quant, "name": name, **common},
                            (("model", src.stage), *data_deps),
                            f"{meta['source']}/{meta['model']} {fmt} {quant}",
                            meta,
                        )
                    )
                    artifacts.append((stage, meta))

    if study.eval:
        v = study.eval
        for art, meta in artifacts:
            for runtime in v.runtimes:
                if RUNTIMES[runtime] != meta["format"]:
                    continue
                for threads in v.threads:
                    settings = {
                        **data_settings,
                        "runtime": runtime,
                        "threads": threads,
                        "domains": list(ds.domains) or None,
                        "limit": v.limit or None,
                        "batch_size": v.batch_size,
                        "latency_runs": v.latency_runs,
                        "warmup": v.warmup,
                    }
                    add(
                        Stage(
                            "eval-device",
                            settings,
                            (("artifact", art), *data_deps),
                            f"{art.label} {runtime} x{threads}",
                            {**meta, "runtime": runtime, "threads": threads},
                        )
                    )

    if study.attack:
        a = study.attack
        sources = study.attack_sources
        # White-box attacks run on PyTorch checkpoints: directly on the fp32 models. PTSQ models
        # have no usable gradients, so the fp32 model's adversarials are replayed on its int8
        # versions (torch PTSQ of each engine, the ONNX int8 artifact): label "transfer". One
        # stage per fp32 model and strength crafts once and measures all of them side by side.
        if a.whitebox:
            children: dict[str, list[tuple[str, Stage]]] = {}
            if "int8" in a.models:
                for qm in int8.values():
                    if qm.parent is not None:
                        children.setdefault(qm.parent.stage.key, []).append(
                            (f"replay:{qm.label}", qm.stage)
                        )
                fp32_by_label = {(m.source, m.label): m for m in models}
                for art, meta in artifacts:
                    parent = fp32_by_label.get((meta["source"], meta.get("parent_model")))
                    if meta["precision"] == "int8" and meta["format"] == "onnx" and parent:
                        children.setdefault(parent.stage.key, []).append(
                            (f"artifact:{meta['model']}", art)
                        )
            for m in models:
                if m.source not in sources:
                    continue
                replays = tuple(children.get(m.stage.key, ()))
                if m.compression not in a.models and not replays:
                    continue
                # Both strengths in one stage: a minimisation attack (C&W, EAD, DeepFool, DDN)
                # then searches once and is judged at every budget.
                strength = "both" if {"light", "heavy"} <= set(a.strengths) else a.strengths[0]
                settings = {
                    **data_settings,
                    **split,
                    "attacks": list(a.whitebox),
                    "strength": strength,
                    "domain": m.source,
                    "limit": a.limit or None,
                    "batch_size": a.batch_size,
                }
                extra = f" (+ {len(replays)} int8)" if replays else ""
                add(
                    Stage(
                        "attack",
                        settings,
                        (("model", m.stage), *replays, *data_deps),
                        f"{m.source}/{m.label} {'+'.join(a.strengths)}{extra}",
                        {**m.meta(), "strength": strength},
                        optional=tuple(role for role, _ in replays),
                    )
                )
        # Salt&Pepper is decision-based: it queries each exported artifact in its own runtime.
        if "saltpepper" in a.attacks:
            runtime_of = {fmt: rt for rt, fmt in RUNTIMES.items()}
            for art, meta in artifacts:
                if meta["source"] not in sources or meta["compression"] not in a.models:
                    continue
                settings = {
                    **data_settings,
                    "runtime": runtime_of[meta["format"]],
                    "threads": 1,
                    "strengths": list(a.strengths),
                    "epsilons": [SALTPEPPER_EPS[st] for st in a.strengths],
                    "steps": a.saltpepper_steps,
                    "stop": a.saltpepper_stop,
                    "limit": a.limit or None,
                    "batch_size": a.batch_size,
                    "seed": 0,
                }
                add(
                    Stage(
                        "saltpepper",
                        settings,
                        (("artifact", art), *data_deps),
                        art.label,
                        dict(meta),
                    )
                )
    return Plan(study, tuple(stages.values()), tuple(notes))


def _with_meta(m: _Model, **extra: Any) -> _Model:
    """Rebuild the model's stage with its study annotations attached."""
    s = m.stage
    m.stage = Stage(s.kind, s.settings, s.deps, s.label, {**m.meta(), **extra}, s.optional)
    return m


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


# --------------------------------------------------------------------------- storage


def stage_dir(out: Path, stage: Stage) -> Path:
    return out / "stages" / stage.dirname


def load_output(folder: Path) -> StageOutput | None:
    """The finished stage in ``folder``, or None if it is not finished (or unreadable)."""
    done = folder / DONE
    if not done.is_file():
        return None
    try:
        marker = json.loads(done.read_text())
        record_path = folder / marker["record_file"]
        record = json.loads(record_path.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return StageOutput(folder, record, record_path)


def is_record(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("record"), str)


def _annotate(folder: Path, annotation: dict[str, Any]) -> None:
    """Add the study block to every record the stage wrote (reports group rows by it)."""
    for path in sorted(folder.rglob("*.json")):
        if path.name == DONE:
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if is_record(data):
            data["study"] = annotation
            atomic_write_json(path, data)


def execute_stage(
    kind: str,
    settings: dict[str, Any],
    inputs: dict[str, StageOutput],
    folder: Path,
    annotation: dict[str, Any],
    reporter: Reporter,
    threads: int,
) -> StageOutput:
    """Run one stage into ``folder`` and commit it with ``done.json``; raises on failure."""
    adapter = get_stage_kind(kind)
    if folder.exists() and not adapter.resumable:
        shutil.rmtree(folder)  # an unfinished attempt of a stage that cannot resume
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INCOMPLETE).write_text("this stage has not finished; its records are not final\n")
    _set_torch_threads(threads)
    t0 = time.perf_counter()
    record_path = Path(adapter.run(settings, inputs, folder, reporter))
    if not record_path.is_absolute():
        record_path = folder / record_path
    _annotate(folder, {**annotation, "threads_per_stage": threads})
    atomic_write_json(
        folder / DONE,
        {
            "kind": kind,
            "key": annotation["key"],
            "label": annotation.get("label"),
            "record_file": str(record_path.relative_to(folder)),
            "settings": settings,
            "deps": annotation.get("deps", {}),
            "seconds": round(time.perf_counter() - t0, 3),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    (folder / INCOMPLETE).unlink(missing_ok=True)
    out = load_output(folder)
    assert out is not None
    return out


def _set_torch_threads(threads: int) -> None:
    if threads < 1:
        return
    try:
        import torch
    except ImportError:  # the device side: stages that need torch say so themselves
        return
    # Results of float training depend on the thread count (reduction order): a study pins it.
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class RunConfig:
    study: str
    out: str | None = None  # default: runs/<study name>
    jobs: int = 1
    dry_run: bool = False

    def validate(self) -> None:
        if self.jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {self.jobs}")


@dataclass
class StageResult:
    stage: str  # kind + label
    dir: str
    status: str  # ran | cached | failed | skipped | pending (dry run)
    reason: str = ""
    seconds: float = 0.0


@dataclass
class StudySummary:
    study: str
    out: str
    dry_run: bool
    results: list[StageResult]
    notes: list[str]
    seconds: float = 0.0

    def by_status(self, status: str) -> list[StageResult]:
        return [r for r in self.results if r.status == status]

    @property
    def ok(self) -> bool:
        return not self.by_status("failed") and not self.by_status("skipped")

    def counts(self) -> dict[str, int]:
        c: dict[str, int] = {}
        for r in self.results:
            c[r.status] = c.get(r.status, 0) + 1
        return c

    def lines(self) -> list[str]:
        """What a person reads at the end: counts, then every failure and skip with its reason."""
        c = self.counts()
        order = ("pending", "cached") if self.dry_run else ("ran", "cached", "failed", "skipped")
        head = ", ".join(f"{c.get(s, 0)} {'to run' if s == 'pending' else s}" for s in order)
        lines = [f"{self.study}: {len(self.results)} stages: {head}"]
        for r in self.by_status("failed"):
            lines.append(f"FAILED  {r.stage} ({r.dir}): {r.reason}")
        for r in self.by_status("skipped"):
            lines.append(f"skipped {r.stage}: {r.reason}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "out": self.out,
            "dry_run": self.dry_run,
            "counts": self.counts(),
            "seconds": round(self.seconds, 2),
            "notes": self.notes,
            "stages": [r.__dict__ for r in self.results],
        }


class _Log:
    """Appends timestamped lines to OUT/study.log (opened per line: safe across a kill)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, message: str) -> None:
        stamp = dt.datetime.now().isoformat(timespec="seconds")
        with open(self.path, "a", encoding="utf-8") as f:
            for line in str(message).splitlines() or [""]:
                f.write(f"{stamp} {line}\n")


class _StageReporter:
    """What an adapter gets: bars go to the study's progress view, log lines to the log file."""

    def __init__(self, parent: Reporter, log: Callable[[str], None], prefix: str) -> None:
        self.parent, self.log_file, self.prefix = parent, log, prefix

    def task(self, description: str, total: int | None) -> int:
        return self.parent.task(f"  {description}", total)

    def advance(self, task: int, n: int = 1, **fields: object) -> None:
        self.parent.advance(task, n, **fields)

    def done(self, task: int) -> None:
        self.parent.done(task)

    def log(self, message: str) -> None:
        self.log_file(f"[{self.prefix}] {message}")


@contextlib.contextmanager
def _study_lock(out: Path) -> Iterator[None]:
    """One runner per output folder: two would run the same stages into the same folders."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(
                f"another 'edgerobust run' is using {out}: wait for it, or choose another --out"
            ) from None
        yield


def default_out(study: Study) -> Path:
    return Path("runs") / study.study.name


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, EdgeRobustError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def run_study(cfg: RunConfig, reporter: Reporter | None = None) -> StudySummary:
    """Run (or with ``dry_run`` list) every stage of a study; see the module docstring."""
    cfg.validate()
    rep = reporter or NullReporter()
    study = load_study(cfg.study)
    plan = plan_study(study)
    out = Path(cfg.out) if cfg.out else default_out(study)
    out = out.resolve()
    t_start = time.perf_counter()
    if cfg.dry_run:
        results = [
            StageResult(
                s.describe(),
                str(stage_dir(out, s)),
                "cached" if load_output(stage_dir(out, s)) else "pending",
            )
            for s in plan.stages
        ]
        return StudySummary(study.study.name, str(out), True, results, list(plan.notes))
    with _study_lock(out):
        log = _Log(out / LOG_NAME)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = study.study.threads or max(1, (cores or 1) // cfg.jobs)
        log(
            f"run {cfg.study} -> {out}: {len(plan.stages)} stages, jobs {cfg.jobs}, "
            f"{threads} torch thread(s) per stage, pid {os.getpid()}"
        )
        for note in plan.notes:
            log(f"note: {note}")
        results = _Scheduler(plan, out, cfg.jobs, threads, rep, log).run()
        summary = StudySummary(
            study.study.name,
            str(out),
            False,
            results,
            list(plan.notes),
            time.perf_counter() - t_start,
        )
        for line in summary.lines():
            log(line)
        atomic_write_json(out / SUMMARY_NAME, summary.to_dict())
    return summary


class _Scheduler:
    """Runs ready stages (all dependencies finished), up to ``jobs`` at a time."""

    def __init__(
        self,
        plan: Plan,
        out: Path,
        jobs: int,
        threads: int,
        rep: Reporter,
        log: Callable[[str], None],
    ) -> None:
        self.plan, self.out, self.jobs, self.threads = plan, out, jobs, threads
        self.rep, self.log = rep, log
        self.outputs: dict[str, StageOutput] = {}
        self.state: dict[str, str] = {}  # key -> cached | ran | failed | skipped
        self.results: dict[str, StageResult] = {}
        self.overall = -1

    def _finish(self, stage: Stage, status: str, reason: str = "", seconds: float = 0.0) -> None:
        self.state[stage.key] = status
        self.results[stage.key] = StageResult(
            stage.describe(), str(stage_dir(self.out, stage)), status, reason, round(seconds, 2)
        )
        self.rep.advance(self.overall, 1)

    def _annotation(self, stage: Stage) -> dict[str, Any]:
        ann = {
            "study": self.plan.study.study.name,
            "stage": stage.kind,
            "key": stage.key,
            "label": stage.label,
            "deps": {role: dep.key for role, dep in stage.deps},
            **stage.meta,
        }
        missing = self._missing(stage)
        if missing:
            ann["missing_inputs"] = missing
        return ann

    def _missing(self, stage: Stage) -> dict[str, str]:
        """Optional deps that failed or were skipped: role -> why (the stage runs without them)."""
        return {
            role: f"{dep.describe()} {self.state[dep.key]}"
            for role, dep in stage.deps
            if role in stage.optional and self.state.get(dep.key) in ("failed", "skipped")
        }

    def _blocked(self, stage: Stage) -> str | None:
        for role, dep in stage.deps:
            if role in stage.optional:
                continue
            if self.state.get(dep.key) in ("failed", "skipped"):
                why = "failed" if self.state[dep.key] == "failed" else "was skipped"
                return f"needs {dep.describe()} ({dep.dirname}), which {why}"
        return None

    def _ready(self, stage: Stage) -> bool:
        settled = ("cached", "ran", "failed", "skipped")
        return all(
            self.state.get(dep.key) in (settled if role in stage.optional else ("cached", "ran"))
            for role, dep in stage.deps
        )

    def run(self) -> list[StageResult]:
        stages = list(self.plan.stages)
        self.overall = self.rep.task(f"study {self.plan.study.study.name}", len(stages))
        torch = sys.modules.get("torch")
        before = torch.get_num_threads() if torch is not None else None
        try:
            if self.jobs == 1:
                self._run_serial(stages)
            else:
                self._run_parallel(stages)
        finally:
            self.rep.done(self.overall)
            torch = sys.modules.get("torch")
            if before is not None and torch is not None:
                torch.set_num_threads(before)  # stages pinned it; give the caller theirs back
        return [self.results[s.key] for s in stages]

    def _try_cached(self, stage: Stage) -> bool:
        done = load_output(stage_dir(self.out, stage))
        if done is None:
            return False
        was_missing = (done.record.get("study") or {}).get("missing_inputs") or {}
        if set(was_missing) - set(self._missing(stage)):
            return False  # it ran without an optional input that exists now: run it again
        self.outputs[stage.key] = done
        self._finish(stage, "cached")
        return True

    def _inputs(self, stage: Stage) -> dict[str, StageOutput]:
        return {role: self.outputs[dep.key] for role, dep in stage.deps if dep.key in self.outputs}

    def _record_failure(self, stage: Stage, error: str, tb: str, seconds: float) -> None:
        self.log(f"FAILED {stage.describe()} ({stage.dirname}) after {seconds:.1f} s: {error}")
        self.log(tb.rstrip())
        folder = stage_dir(self.out, stage)
        if folder.is_dir():
            (folder / "error.txt").write_text(f"{error}\n\n{tb}")
        self.rep.log(f"[red]failed[/] {stage.describe()}: {error}")
        self._finish(stage, "failed", error, seconds)

    def _record_success(self, stage: Stage, output: StageOutput, seconds: float) -> None:
        self.outputs[stage.key] = output
        self.log(f"done {stage.describe()} ({stage.dirname}) in {seconds:.1f} s")
        self._finish(stage, "ran", "", seconds)

    def _run_serial(self, stages: list[Stage]) -> None:
        for stage in stages:
            blocked = self._blocked(stage)
            if blocked:
                self._finish(stage, "skipped", blocked)
                continue
            if self._try_cached(stage):
                continue
            self.log(f"start {stage.describe()} ({stage.dirname})")
            task = self.rep.task(f"▶ {stage.describe()}", None)
            t0 = time.perf_counter()
            try:
                output = execute_stage(
                    stage.kind,
                    stage.settings,
                    self._inputs(stage),
                    stage_dir(self.out, stage),
                    self._annotation(stage),
                    _StageReporter(self.rep, self.log, stage.describe()),
                    self.threads,
                )
            except Exception as exc:  # a failed stage must not stop the others
                self._record_failure(
                    stage, _error_line(exc), traceback.format_exc(), time.perf_counter() - t0
                )
            else:
                self._record_success(stage, output, time.perf_counter() - t0)
            finally:
                self.rep.done(task)

    def _run_parallel(self, stages: list[Stage]) -> None:
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        # spawn, not fork: forking a process that has started torch's thread pools can hang.
        ctx = mp.get_context("spawn")
        manager = ctx.Manager()
        events = manager.Queue()
        pending = list(stages)
        running: dict[Any, tuple[Stage, float, int]] = {}
        tasks: dict[tuple[str, int], int] = {}
        try:
            with ProcessPoolExecutor(
                max_workers=self.jobs,
                mp_context=ctx,
                initializer=_worker_init,
                initargs=(events,),
            ) as pool:
                while pending or running:
                    progressed = True
                    while progressed:
                        progressed = False
                        exclusive_running = any(
                            get_stage_kind(s.kind).exclusive for s, _, _ in running.values()
                        )
                        waiting_exclusive = False
                        for stage in list(pending):
                            blocked = self._blocked(stage)
                            if blocked:
                                pending.remove(stage)
                                self._finish(stage, "skipped", blocked)
                                progressed = True
                                continue
                            if not self._ready(stage):
                                continue
                            if self._try_cached(stage):
                                pending.remove(stage)
                                progressed = True
                                continue
                            exclusive = get_stage_kind(stage.kind).exclusive
                            if exclusive_running or waiting_exclusive:
                                break
                            if exclusive and running:
                                waiting_exclusive = True  # let the pool drain, then run it alone
                                break
                            if len(running) >= self.jobs:
                                break
                            pending.remove(stage)
                            self.log(f"start {stage.describe()} ({stage.dirname})")
                            task = self.rep.task(f"▶ {stage.describe()}", None)
                            fut = pool.submit(
                                _worker_run,
                                stage.kind,
                                stage.settings,
                                self._inputs(stage),
                                str(stage_dir(self.out, stage)),
                                self._annotation(stage),
                                self.threads,
                                stage.describe(),
                            )
                            running[fut] = (stage, time.perf_counter(), task)
                            progressed = True
                            if exclusive:
                                break
                    if not running:
                        if pending:  # cannot happen with a DAG; guard against a silent hang
                            raise RuntimeError(f"no runnable stage among {len(pending)} pending")
                        break
                    done, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
                    self._drain(events, tasks)
                    for fut in done:
                        stage, t0, task = running.pop(fut)
                        self.rep.done(task)
                        seconds = time.perf_counter() - t0
                        try:
                            status, payload, tb = fut.result()
                        except Exception as exc:  # the worker itself died
                            status, payload, tb = "failed", _error_line(exc), traceback.format_exc()
                        if status == "ok":
                            self._record_success(stage, payload, seconds)
                        else:
                            self._record_failure(stage, payload, tb, seconds)
                    self._drain(events, tasks)
        finally:
            manager.shutdown()

    def _drain(self, events: Any, tasks: dict[tuple[str, int], int]) -> None:
        import queue

        while True:
            try:
                ev = events.get_nowait()
            except (queue.Empty, EOFError, OSError):
                return
            what, prefix = ev[0], ev[1]
            if what == "task":
                tasks[(prefix, ev[2])] = self.rep.task(f"  {ev[3]}", ev[4])
            elif what == "advance" and (prefix, ev[2]) in tasks:
                self.rep.advance(tasks[(prefix, ev[2])], ev[3], **ev[4])
            elif what == "done" and (prefix, ev[2]) in tasks:
                self.rep.done(tasks.pop((prefix, ev[2])))
            elif what == "log":
                self.log(f"[{prefix}] {ev[2]}")


# --------------------------------------------------------------------------- worker side

_EVENTS: Any = None


def _worker_init(events: Any) -> None:
    global _EVENTS
    _EVENTS = events
    # torch is imported after this (by the adapters): keep its C++ deprecation chatter out of
    # the progress view, as the single-process path does.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    import warnings

    for category in (DeprecationWarning, UserWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    if sys.platform.startswith("linux"):
        # Die with the runner: a worker orphaned by ``kill -9`` must not keep writing stages
        # that the next run is about to redo.
        with contextlib.suppress(Exception):
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class _QueueReporter:
    """A worker's reporter: every call becomes an event the runner draws / logs."""

    def __init__(self, events: Any, prefix: str) -> None:
        self.events, self.prefix, self.next = events, prefix, 0

    def task(self, description: str, total: int | None) -> int:
        self.next += 1
        self.events.put(("task", self.prefix, self.next, f"{self.prefix}: {description}", total))
        return self.next

    def advance(self, task: int, n: int = 1, **fields: object) -> None:
        # Numbers (``completed``) stay numbers; anything else travels as its text.
        plain = {k: v if isinstance(v, int | float) else str(v) for k, v in fields.items()}
        self.events.put(("advance", self.prefix, task, n, plain))

    def done(self, task: int) -> None:
        self.events.put(("done", self.prefix, task))

    def log(self, message: str) -> None:
        self.events.put(("log", self.prefix, str(message)))


def _worker_run(
    kind: str,
    settings: dict[str, Any],
    inputs: dict[str, StageOutput],
    folder: str,
    annotation: dict[str, Any],
    threads: int,
    prefix: str,
) -> tuple[str, Any, str]:
    rep = _QueueReporter(_EVENTS, prefix) if _EVENTS is not None else NullReporter()
    try:
        out = execute_stage(kind, settings, inputs, Path(folder), annotation, rep, threads)
    except Exception as exc:
        return "failed", _error_line(exc), traceback.format_exc()
    return "ok", out, ""
