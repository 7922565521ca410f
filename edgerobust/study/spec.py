"""Study files: one TOML file names the whole grid of a paper-style experiment.

    >>> from edgerobust.study.spec import load_study
    >>> study = load_study("configs/quickstart.toml")
    >>> study.train.archs, study.export.formats

The file is parsed with :mod:`tomllib` into frozen dataclasses. Every value is checked; a mistake
raises :class:`~edgerobust.errors.ConfigError` with one line that names the file and the dotted
path of the bad key (``quickstart.toml: compress.prune.targets[1]: expected ...``). Unknown keys
are errors too, so a typo never silently falls back to a default.

Relative paths (``dataset.path``) are resolved against the folder of the study file, not the
current directory, so a study runs the same from anywhere.

Schema (every table but ``[study]``, ``[dataset]`` and ``[train]`` is optional)::

    [study]
    name = "quickstart"           # default: the file's stem
    seed = 1                      # training seed: weight init and batch order
    threads = 0                   # torch threads per stage; 0: cores // jobs

    [dataset]
    kind = "synthetic"            # "synthetic" (generated) | "folder" (ROOT/DOMAIN/CLASS/*.jpg)
    path = "../data/PACS"         # folder only
    per_class = 40                # synthetic only: images per class and domain
    size = 64                     # synthetic only: image size on disk
    sources = ["studio"]          # one baseline family per source domain
    domains = []                  # domains to evaluate on; empty: all
    split_seed = 1
    val_fraction = 0.1

    [train]                       # the fine-tuned baselines (paper, section 4)
    archs = ["resnet18"]
    image_size = 64
    epochs = 8
    lr = 0.02
    batch_size = 32
    momentum = 0.9
    weight_decay = 0.0
    weights = "none"              # "imagenet" | "none" | path to a local weights file
    augment = true
    device = "auto"
    head_epochs = 0               # LP-FT: the first N epochs train the new head alone (lr 0.01)
    freeze_bn = false             # keep batch-norm statistics while fine-tuning (also the
                                  # default of prune and distill retraining); distill also takes
                                  # head_epochs (its student's head is new)

    [compress.prune]              # L1 filter pruning, then retraining; [[compress.prune]] (an
                                  # array of tables) gives each group of bases its own targets
    bases = ["resnet34"]          # baselines to prune (each must be in train.archs)
    targets = ["resnet18", "4.51M", 0.5]   # an arch's size, a parameter count, or a sensitivity
    epochs = 8                    # retraining (0: prune only); default train.epochs
    lr = 1e-3                     # default: the paper's per arch (edgerobust.compress.prune.PAPER_LR)
    lr_gamma = 0.1                # lr factor at 70 % of the epochs; default: the paper's per arch
    batch_size = 8                # momentum, weight_decay (1e-4), augment likewise

    [compress.distill]            # vanilla KD from a fine-tuned baseline
    pairs = [{ teacher = "resnet34", student = "resnet18" }]
    alpha = 0.2
    tau = 10.0
    epochs = 8                    # lr (1e-3), batch_size, momentum, weight_decay (1e-3), augment
    student_weights = "none"      # "none" | "imagenet" | path (the paper: imagenet)

    [compress.quantize]           # PTSQ int8
    engines = ["x86"]
    models = ["baseline"]         # which models: baseline | pruned | distilled
    calib_batches = 16
    force = false                 # keep int8 models that agree with fp32 below the bar
    fallback = true               # below the bar: keep the most sensitive layers in fp32
                                  # each [compress.NAME] table is read by the compression
                                  # registered as NAME (edgerobust.compress): one more is a
                                  # plugin's @register_compression, with no edit here

    [export]
    formats = ["onnx", "ptl"]     # onnx | torchscript | ptl
    precisions = ["fp32", "int8"] # int8: ONNX via onnxruntime QDQ, torch formats via PTSQ engines
    force = false                 # keep artifacts that fail the parity gate
    min_agreement = 0.98
    parity_images = 256
    models = { ptl = ["baseline"] }  # optional: which models a format gets (default: all)

    [eval]                        # eval-device inside each runtime
    runtimes = ["onnxruntime", "ptl"]
    threads = [1]
    limit = 0                     # at most N images per domain (0: all)
    batch_size = 16
    latency_runs = 100
    warmup = 10

    [attack]                      # white-box on checkpoints (int8: transferred from the fp32
                                  # parent); saltpepper: black-box against every artifact
    attacks = ["fgsm", "pgd", "deepfool", "cw", "ddn", "ead", "saltpepper"]
    strengths = ["light", "heavy"]
    sources = []                  # default: the first source (the paper attacks baseline-A)
    models = ["baseline", "pruned", "distilled", "int8"]
    limit = 64                    # images of the source validation split per attack (0: all)
    batch_size = 8                # 0: the fastest per image on the device
    stop = "settled"              # C&W/EAD/DDN/DeepFool stop once every answer is decided;
                                  # exact: foolbox's full search (edgerobust.attacks.settled)
    saltpepper_steps = 400        # Salt&Pepper runs against every exported artifact (blackbox)
    saltpepper_stop = "settled"   # early stopping: settled (fast) | exact (foolbox's figures) | none

    [corruptions]                 # ImageNet-C corruptions inside every artifact's runtime, on
                                  # the source domain's validation split (edgerobust corruptions)
    names = ["all"]               # "all" (the 14 benchmark ones here) or corruption names
    severities = [1, 2, 3, 4, 5]
    limit = 0                     # images of the validation split (0: all)
    seed = 0
    batch_size = 16
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edgerobust.attacks import list_attacks
from edgerobust.attacks.gradient import GRAD_STOPS
from edgerobust.errors import ConfigError
from edgerobust.exporters import list_exporters
from edgerobust.models import is_arch, list_archs
from edgerobust.runtimes import default_runtime, list_runtimes
from edgerobust.runtimes import get as get_runtime

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 gets the same parser from PyPI (a base dependency there)
    import tomli as tomllib

PRECISIONS = ("fp32", "int8")
ENGINES = ("x86", "fbgemm", "qnnpack")
QUANTIZABLE = ("baseline", "pruned", "distilled")
ATTACKABLE = ("baseline", "pruned", "distilled", "int8")
STRENGTHS = ("light", "heavy")
# The paper's Salt&Pepper budgets (L2, pixels in [0, 1]): light 1, heavy 15.
SALTPEPPER_EPS = {"light": 1.0, "heavy": 15.0}
SYNTHETIC_DOMAINS = ("studio", "webcam", "natural")
SYNTHETIC_CLASSES = 10


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class PruneTarget:
    """How small a pruned model must be: a parameter count, an arch's size, or a sensitivity.

    The sensitivity ``s`` in (0, 1) is :mod:`edgerobust.compress.prune`'s one knob: each ResNet stage
    ``k`` loses the fraction ``s * w_k`` of its channels (``--ratio`` of ``compress prune``).
    """

    text: str  # as written, for labels: "4.51M", "resnet18", "0.5"
    params: int | None = None  # an absolute parameter count
    arch: str | None = None  # "the size of this architecture" (for this dataset's classes)
    ratio: float | None = None  # the pruning sensitivity s

    @property
    def label(self) -> str:
        return self.text


@dataclass(frozen=True)
class StudyInfo:
    name: str
    seed: int = 1
    threads: int = 0


@dataclass(frozen=True)
class DatasetSpec:
    kind: str  # "synthetic" | "folder"
    sources: tuple[str, ...]
    path: str | None = None  # folder: absolute path
    per_class: int = 40
    size: int = 64
    synthetic_seed: int = 0
    domains: tuple[str, ...] = ()  # () = every domain
    split_seed: int = 1
    val_fraction: float = 0.1


@dataclass(frozen=True)
class TrainSpec:
    archs: tuple[str, ...]
    image_size: int = 224
    epochs: int = 100
    lr: float = 1e-4
    batch_size: int = 8
    momentum: float = 0.9
    weight_decay: float = 0.0
    weights: str = "none"
    augment: bool = False
    device: str = "auto"
    head_epochs: int = 0  # LP-FT: the first epochs train the head alone
    freeze_bn: bool = False  # batch-norm statistics stay the pretrained ones while fine-tuning


@dataclass(frozen=True)
class PruneSpec:
    bases: tuple[str, ...]
    targets: tuple[PruneTarget, ...]
    epochs: int
    lr: float | None = None  # None: the paper's rate for the base arch
    lr_gamma: float | None = None  # None: the paper's factor for the base arch
    batch_size: int = 8
    momentum: float = 0.9
    weight_decay: float = 1e-4
    augment: bool = False
    freeze_bn: bool = False


@dataclass(frozen=True)
class DistillPair:
    teacher: str
    student: str


@dataclass(frozen=True)
class DistillSpec:
    pairs: tuple[DistillPair, ...]
    epochs: int
    alpha: float = 0.2
    tau: float = 10.0
    lr: float = 1e-3
    batch_size: int = 8
    momentum: float = 0.9
    weight_decay: float = 1e-3
    augment: bool = False
    student_weights: str = "none"
    freeze_bn: bool = False
    head_epochs: int = 0


@dataclass(frozen=True)
class QuantizeSpec:
    engines: tuple[str, ...] = ("x86",)
    models: tuple[str, ...] = ("baseline",)
    calib_batches: int = 16
    force: bool = False  # keep int8 models below the agreement bar (marked in their records)
    # below the bar, keep the most sensitive layers in fp32; None: not set (the default, on)
    fallback: bool | None = None


@dataclass(frozen=True)
class ExportSpec:
    formats: tuple[str, ...] = ("onnx",)
    precisions: tuple[str, ...] = ("fp32",)
    force: bool = False
    min_agreement: float = 0.98
    parity_images: int = 256
    # format -> the models it gets (baseline | pruned | distilled; int8 follows its parent)
    models: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class EvalSpec:
    runtimes: tuple[str, ...] = ("onnxruntime",)
    threads: tuple[int, ...] = (1,)
    limit: int = 0
    batch_size: int = 16
    latency_runs: int = 100
    warmup: int = 10


@dataclass(frozen=True)
class AttackSpec:
    attacks: tuple[str, ...]
    strengths: tuple[str, ...] = STRENGTHS
    sources: tuple[str, ...] = ()
    models: tuple[str, ...] = ATTACKABLE
    limit: int = 64
    batch_size: int = 8  # 0: the fastest per image on the device (measured once per model)
    stop: str = "settled"  # C&W, EAD, DDN, DeepFool, PGD: settled | exact (foolbox's own search)
    saltpepper_steps: int = 400
    saltpepper_stop: str = "settled"

    @property
    def whitebox(self) -> tuple[str, ...]:
        """The attacks run on the PyTorch checkpoint (all but the decision-based Salt&Pepper)."""
        return tuple(a for a in self.attacks if a != "saltpepper")


@dataclass(frozen=True)
class CorruptionSpec:
    names: tuple[str, ...]  # resolved: "all" becomes the registry's benchmark corruptions
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    limit: int = 0
    seed: int = 0
    batch_size: int = 16


@dataclass(frozen=True)
class Study:
    """A parsed, validated study file."""

    path: str  # the study file
    study: StudyInfo
    dataset: DatasetSpec
    train: TrainSpec
    # compression name -> its parsed table, in registration order (edgerobust.compress)
    compress: dict[str, Any] = field(default_factory=dict, hash=False)
    export: ExportSpec | None = None
    eval: EvalSpec | None = None
    attack: AttackSpec | None = None
    corruptions: CorruptionSpec | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """As before the compression registry: ``prune``, ``distill``, ``quantize`` at the top
        level (then any other registered compression's table by its name)."""
        d = asdict(self)
        d.pop("raw")
        compress = d.pop("compress")
        out = {k: d[k] for k in ("path", "study", "dataset", "train")}
        out["prune"] = tuple(compress.pop("prune", ()))
        out["distill"] = compress.pop("distill", None)
        out["quantize"] = compress.pop("quantize", None)
        out.update(compress)
        out.update({k: v for k, v in d.items() if k not in out})
        return out

    @property
    def prune(self) -> tuple[PruneSpec, ...]:
        return self.compress.get("prune", ())

    @property
    def distill(self) -> DistillSpec | None:
        return self.compress.get("distill")

    @property
    def quantize(self) -> QuantizeSpec | None:
        return self.compress.get("quantize")

    @property
    def attack_sources(self) -> tuple[str, ...]:
        if self.attack is None:
            return ()
        return self.attack.sources or self.dataset.sources[:1]


# --------------------------------------------------------------------------- reading


class _Table:
    """Typed access to one TOML table; every error names ``file: dotted.path``."""

    def __init__(self, data: Any, path: str, where: str) -> None:
        self.where = where
        self.path = path
        if not isinstance(data, dict):
            self.fail(path, f"expected a table, got {_kind(data)}")
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def fail(self, key: str, what: str) -> None:
        raise ConfigError(f"{self.where}: {key}: {what}")

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return name in self.data

    def get(self, name: str, check: Callable[[Any, str], Any], default: Any = ..., /) -> Any:
        self.used.add(name)
        if name not in self.data:
            if default is ...:
                self.fail(self.key(name), "required key is missing")
            return default
        return check(self.data[name], self.key(name))

    def tables(self, name: str) -> list[_Table]:
        """A table, or an array of tables (``[[name]]``): each gets its own dotted path."""
        self.used.add(name)
        v = self.data.get(name)
        if v is None:
            return []
        if isinstance(v, list):
            if not v:
                self.fail(self.key(name), "expected at least one table, got an empty array")
            return [_Table(x, f"{self.key(name)}[{i}]", self.where) for i, x in enumerate(v)]
        return [_Table(v, self.key(name), self.where)]

    def table(self, name: str, required: bool = False) -> _Table | None:
        self.used.add(name)
        if name not in self.data:
            if required:
                self.fail(self.key(name), "required table is missing")
            return None
        return _Table(self.data[name], self.key(name), self.where)

    def finish(self) -> None:
        unknown = [k for k in self.data if k not in self.used]
        if unknown:
            known = ", ".join(sorted(self.used)) or "none"
            self.fail(self.key(unknown[0]), f"unknown key (known here: {known})")

    # value checkers ---------------------------------------------------------------------

    def string(self, choices: tuple[str, ...] | None = None) -> Callable[[Any, str], str]:
        def check(v: Any, key: str) -> str:
            if not isinstance(v, str):
                self.fail(key, f"expected a string, got {_kind(v)}")
            if choices is not None and v not in choices:
                self.fail(key, f"expected one of {', '.join(choices)}, got {v!r}")
            return v

        return check

    def arch(self) -> Callable[[Any, str], str]:
        """A registered architecture or any timm model as ``timm:NAME`` (built when it runs)."""

        def check(v: Any, key: str) -> str:
            if not isinstance(v, str):
                self.fail(key, f"expected a string, got {_kind(v)}")
            if not is_arch(v):
                self.fail(key, f"expected one of {', '.join(list_archs())} or timm:NAME, got {v!r}")
            return v

        return check

    def integer(self, lo: int | None = None, hi: int | None = None) -> Callable[[Any, str], int]:
        def check(v: Any, key: str) -> int:
            if isinstance(v, bool) or not isinstance(v, int):
                self.fail(key, f"expected an integer, got {_kind(v)}")
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                self.fail(
                    key,
                    f"expected an integer in [{lo}, {hi if hi is not None else '...'}], got {v}",
                )
            return v

        return check

    def number(
        self, lo: float | None = None, hi: float | None = None, open_lo: bool = False
    ) -> Callable[[Any, str], float]:
        def check(v: Any, key: str) -> float:
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                self.fail(key, f"expected a number, got {_kind(v)}")
            bad_lo = lo is not None and (v <= lo if open_lo else v < lo)
            if bad_lo or (hi is not None and v > hi):
                left = "(" if open_lo else "["
                self.fail(
                    key,
                    f"expected a number in {left}{lo}, {hi if hi is not None else '...'}], got {v}",
                )
            return float(v)

        return check

    def boolean(self) -> Callable[[Any, str], bool]:
        def check(v: Any, key: str) -> bool:
            if not isinstance(v, bool):
                self.fail(key, f"expected true or false, got {_kind(v)}")
            return v

        return check

    def array(
        self, item: Callable[[Any, str], Any], non_empty: bool = True, unique: bool = True
    ) -> Callable[[Any, str], tuple]:
        def check(v: Any, key: str) -> tuple:
            if not isinstance(v, list):
                self.fail(key, f"expected an array, got {_kind(v)}")
            if non_empty and not v:
                self.fail(key, "expected at least one value, got an empty array")
            out = tuple(item(x, f"{key}[{i}]") for i, x in enumerate(v))
            if unique:
                for i, x in enumerate(out):
                    if x in out[:i]:
                        self.fail(f"{key}[{i}]", f"duplicate value {v[i]!r}")
            return out

        return check


def _kind(v: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(v), type(v).__name__) + (
        f" ({v!r})" if isinstance(v, bool | int | float | str) else ""
    )


_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kKmM]?)\s*$")


def parse_prune_target(v: Any, key: str, where: str) -> PruneTarget:
    """``0.5`` (sensitivity), ``"4.51M"`` / ``"800k"`` / ``4510000`` (parameters), ``"resnet18"``."""
    what = (
        'expected a parameter count like "4.51M", an architecture name, or a sensitivity in (0, 1)'
    )
    if isinstance(v, bool):
        raise ConfigError(f"{where}: {key}: {what}, got {_kind(v)}")
    if isinstance(v, int | float):
        if 0 < v < 1:
            return PruneTarget(text=f"{v:g}", ratio=float(v))
        if v >= 1 and float(v).is_integer():
            return PruneTarget(text=_count_label(int(v)), params=int(v))
        raise ConfigError(f"{where}: {key}: {what}, got {v!r}")
    if isinstance(v, str):
        if is_arch(v):
            return PruneTarget(text=v, arch=v)
        m = _COUNT.match(v)
        if m:
            scale = {"": 1, "k": 1e3, "m": 1e6}[m.group(2).lower()]
            n = round(float(m.group(1)) * scale)
            if n >= 1:
                return PruneTarget(text=v.strip(), params=n)
    raise ConfigError(f"{where}: {key}: {what}, got {_kind(v)}")


def _count_label(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e3 else str(n)


def load_study(path: str | Path) -> Study:
    """Read and validate a study file; :class:`ConfigError` (one line) on any mistake."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path.name}: not a UTF-8 text file") from None
    return parse_study(raw, where=path.name, base_dir=path.resolve().parent, path=str(path))


def parse_study(
    raw: dict[str, Any], *, where: str = "study", base_dir: Path | None = None, path: str = ""
) -> Study:
    """Validate an already-parsed TOML document (``load_study`` reads the file)."""
    base_dir = base_dir or Path.cwd()
    root = _Table(raw, "", where)

    st = root.table("study", required=True)
    info = StudyInfo(
        name=st.get("name", st.string(), Path(path).stem if path else "study"),
        seed=st.get("seed", st.integer(0), 1),
        threads=st.get("threads", st.integer(0, 1024), 0),
    )
    if not re.fullmatch(r"[A-Za-z0-9._-]+", info.name):
        st.fail("study.name", f"use letters, digits, '.', '_' or '-' only, got {info.name!r}")
    st.finish()

    ds_t = root.table("dataset", required=True)
    kind = ds_t.get("kind", ds_t.string(("synthetic", "folder")))
    if kind == "folder":
        rel = ds_t.get("path", ds_t.string())
        folder = (base_dir / rel).resolve()
        if not folder.is_dir():
            ds_t.fail(
                "dataset.path",
                f"folder not found: {folder} (relative paths start at the study file's folder)",
            )
        known_domains = tuple(
            sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        )
        for k in ("per_class", "size"):
            if ds_t.has(k):
                ds_t.fail(f"dataset.{k}", 'only for kind = "synthetic"')
        per_class, size, syn_seed = 40, 64, 0
    else:
        if ds_t.has("path"):
            ds_t.fail(
                "dataset.path",
                'only for kind = "folder" (synthetic domains are generated in the output folder)',
            )
        folder = None
        known_domains = SYNTHETIC_DOMAINS
        per_class = ds_t.get("per_class", ds_t.integer(2, 100_000), 40)
        size = ds_t.get("size", ds_t.integer(16, 1024), 64)
        syn_seed = ds_t.get("synthetic_seed", ds_t.integer(0), 0)
    domain = ds_t.string(known_domains)
    dataset = DatasetSpec(
        kind=kind,
        path=str(folder) if folder else None,
        per_class=per_class,
        size=size,
        synthetic_seed=syn_seed,
        sources=ds_t.get("sources", ds_t.array(domain)),
        domains=ds_t.get("domains", ds_t.array(domain, non_empty=False), ()),
        split_seed=ds_t.get("split_seed", ds_t.integer(0), 1),
        val_fraction=ds_t.get("val_fraction", ds_t.number(0.0, 0.9, open_lo=True), 0.1),
    )
    ds_t.finish()
    if dataset.domains:
        for i, s in enumerate(dataset.sources):
            if s not in dataset.domains:
                ds_t.fail(f"dataset.sources[{i}]", f"{s!r} is not in dataset.domains")

    tr = root.table("train", required=True)
    arch = tr.arch()
    train = TrainSpec(
        archs=tr.get("archs", tr.array(arch)),
        image_size=tr.get("image_size", tr.integer(16, 1024), 224),
        epochs=tr.get("epochs", tr.integer(1), 100),
        lr=tr.get("lr", tr.number(0.0, 10.0, open_lo=True), 1e-4),
        batch_size=tr.get("batch_size", tr.integer(1), 8),
        momentum=tr.get("momentum", tr.number(0.0, 1.0), 0.9),
        weight_decay=tr.get("weight_decay", tr.number(0.0, 1.0), 0.0),
        weights=_weights(tr, "weights", base_dir),
        augment=tr.get("augment", tr.boolean(), False),
        device=tr.get("device", tr.string(), "auto"),
        head_epochs=tr.get("head_epochs", tr.integer(0), 0),
        freeze_bn=tr.get("freeze_bn", tr.boolean(), False),
    )
    if train.head_epochs >= train.epochs:
        tr.fail(
            tr.key("head_epochs"),
            f"expected fewer than train.epochs ({train.epochs}), got {train.head_epochs}",
        )
    tr.finish()

    # each registered compression reads its own [compress.<name>] table (edgerobust.compress)
    from edgerobust.compress.registry import COMPRESSIONS, ParseContext

    compress: dict[str, Any] = {}
    comp = root.table("compress")
    if comp is not None:
        ctx = ParseContext(train=train, where=where, base_dir=base_dir)
        for name, compression in COMPRESSIONS.items():
            spec = compression.parse(comp, ctx)
            if spec is not None:
                compress[name] = spec
        comp.finish()
    quantize = compress.get("quantize")

    export = ev = attack = None
    ex = root.table("export")
    if ex is not None:
        export = ExportSpec(
            formats=ex.get("formats", ex.array(ex.string(tuple(list_exporters()))), ("onnx",)),
            precisions=ex.get("precisions", ex.array(ex.string(PRECISIONS)), ("fp32",)),
            force=ex.get("force", ex.boolean(), False),
            min_agreement=ex.get("min_agreement", ex.number(0.0, 1.0), 0.98),
            parity_images=ex.get("parity_images", ex.integer(1), 256),
        )
        export = replace(export, models=_models_by_format(ex, export.formats))
        ex.finish()
        if "int8" in export.precisions and quantize is None:
            ex.fail(
                "export.precisions",
                "int8 needs a [compress.quantize] table (its engines and models)",
            )
    et = root.table("eval")
    if et is not None:
        if export is None:
            et.fail("eval", "needs an [export] table: eval-device measures exported artifacts")
        ev = EvalSpec(
            runtimes=et.get("runtimes", et.array(et.string(tuple(list_runtimes())))),
            threads=et.get("threads", et.array(et.integer(1, 1024)), (1,)),
            limit=et.get("limit", et.integer(0), 0),
            batch_size=et.get("batch_size", et.integer(1), 16),
            latency_runs=et.get("latency_runs", et.integer(1), 100),
            warmup=et.get("warmup", et.integer(0), 10),
        )
        ran = {f for r in ev.runtimes for f in get_runtime(r).formats}
        for fmt in export.formats:
            if fmt not in ran:
                runtime = default_runtime(fmt)
                et.fail(
                    "eval.runtimes", f"no runtime runs the exported {fmt!r} format: add {runtime!r}"
                )
        et.finish()
    at = root.table("attack")
    if at is not None:
        attack = AttackSpec(
            attacks=at.get("attacks", at.array(at.string(tuple(list_attacks())))),
            strengths=at.get("strengths", at.array(at.string(STRENGTHS)), STRENGTHS),
            sources=at.get("sources", at.array(at.string(dataset.sources), non_empty=False), ()),
            models=at.get("models", at.array(at.string(ATTACKABLE)), ATTACKABLE),
            limit=at.get("limit", at.integer(0), 64),
            batch_size=at.get("batch_size", at.integer(0), 8),
            stop=at.get("stop", at.string(GRAD_STOPS), "settled"),
            saltpepper_steps=at.get("saltpepper_steps", at.integer(1), 400),
            saltpepper_stop=at.get(
                "saltpepper_stop", at.string(("settled", "exact", "none")), "settled"
            ),
        )
        at.finish()
        if "int8" in attack.models and quantize is None:
            at.fail("attack.models", "int8 needs a [compress.quantize] table")
    corruptions = _corruptions(root.table("corruptions"), export)
    root.finish()
    return Study(
        path=path,
        study=info,
        dataset=dataset,
        train=train,
        compress=compress,
        export=export,
        eval=ev,
        attack=attack,
        corruptions=corruptions,
        raw=raw,
    )


def _corruptions(t: _Table | None, export: ExportSpec | None) -> CorruptionSpec | None:
    """The ``[corruptions]`` table: names from the corruption registry, "all" resolved there."""
    if t is None:
        return None
    from edgerobust.data.corruptions import LEFT_OUT, list_corruptions

    if export is None:
        t.fail("corruptions", "needs an [export] table: corruptions are measured on artifacts")
    choices = ("all", *list_corruptions())
    names = t.get("names", t.array(t.string(choices)), ("all",))
    for name in names:
        if name in LEFT_OUT:  # pragma: no cover - the string check above already refuses it
            t.fail("corruptions.names", f"{name} is left out: {LEFT_OUT[name]}")
    if "all" in names:
        names = tuple(dict.fromkeys([*list_corruptions(benchmark_only=True), *names]))
        names = tuple(n for n in names if n != "all")
    spec = CorruptionSpec(
        names=names,
        severities=tuple(
            sorted(set(t.get("severities", t.array(t.integer(0, 5)), (1, 2, 3, 4, 5))))
        ),
        limit=t.get("limit", t.integer(0), 0),
        seed=t.get("seed", t.integer(0), 0),
        batch_size=t.get("batch_size", t.integer(1), 16),
    )
    t.finish()
    return spec


def _models_by_format(ex: _Table, formats: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """``[export.models]``: for a format, which models it gets (e.g. ``ptl = ["baseline"]``:
    the lite interpreter only for the baselines and their int8 versions); default: every model."""
    t = ex.table("models")
    if t is None:
        return {}
    out = {}
    for fmt in list(t.data):
        if fmt not in formats:
            t.fail(
                t.key(fmt), f"expected one of export.formats ({', '.join(formats)}), got {fmt!r}"
            )
        out[fmt] = t.get(fmt, t.array(t.string(QUANTIZABLE)))
    t.finish()
    return out


def _weights(t: _Table, name: str, base_dir: Path) -> str:
    v = t.get(name, t.string(), "none")
    if v in ("none", "imagenet"):
        return v
    p = (base_dir / v).resolve()
    if not p.is_file():
        t.fail(t.key(name), f'expected "none", "imagenet" or an existing weights file, got {v!r}')
    return str(p)


def _retrain(t: _Table, train: TrainSpec, *, weight_decay: float) -> dict:
    """Retraining settings shared by pruning and distillation (paper, section 4)."""
    return {
        "batch_size": t.get("batch_size", t.integer(1), train.batch_size),
        "momentum": t.get("momentum", t.number(0.0, 1.0), train.momentum),
        "weight_decay": t.get("weight_decay", t.number(0.0, 1.0), weight_decay),
        "augment": t.get("augment", t.boolean(), train.augment),
        "freeze_bn": t.get("freeze_bn", t.boolean(), train.freeze_bn),
    }


def _pair(v: Any, key: str, where: str, trained: tuple[str, ...]) -> DistillPair:
    if not isinstance(v, dict):
        raise ConfigError(
            f'{where}: {key}: expected {{ teacher = "resnet34", student = "resnet18" }}, got {_kind(v)}'
        )
    t = _Table(v, key, where)
    pair = DistillPair(
        teacher=t.get("teacher", t.arch()),
        student=t.get("student", t.arch()),
    )
    t.finish()
    if pair.teacher not in trained:
        t.fail(f"{key}.teacher", f"{pair.teacher} is not trained: add it to train.archs")
    return pair
