"""Typed, versioned result records: the one schema the writers write and the report reads.

Every command that measures something writes a JSON record (``train.json``, ``eval.json``, ...).
Each kind the report reads has one frozen dataclass here. A writer builds its record through the
dataclass and writes :meth:`Record.to_dict`, and the report turns every JSON file back into a
typed record with :func:`read_record`. A field a writer renames or drops therefore fails at once
(``from_dict`` names the missing or unknown key) instead of turning into an empty table cell.

The JSON is unchanged by this module: ``to_dict()`` gives the keys, values and key order the
writers produced before it existed (``record`` and ``record_version`` first, then the fields in
declaration order, then the ``study`` block ``edgerobust run`` adds to every record of a stage).

Top-level keys are typed. Nested parts stay ``dict[str, Any]`` where they are free-form
(configs, histories, host fingerprints); the nested keys the report reads are checked in
``from_dict`` (``_NESTED``), so a drift there is caught too.

Versions: a record newer than this installation knows is refused with a one-line
:class:`~edgerobust.errors.ConfigError`; an older version is migrated explicitly in the class's
``_migrate`` (documented there). Light: no torch, so the report and the device side can read
records anywhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, Union

from edgerobust.errors import ConfigError
from edgerobust.registry import Registry

#: A folder holding this file has not finished: its records are not final (the study's stages).
INCOMPLETE = ".incomplete"
#: Where a study makes and deletes stage folders; nothing under it is a record.
STAGING = ".staging"

R = TypeVar("R", bound="Record")


@dataclass(frozen=True, kw_only=True)
class Record:
    """Base of every record kind: the header, (de)serialisation and validation."""

    KIND: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    # Optional keys a writer leaves out (rather than writing null) when they have no value.
    OMIT_IF_NONE: ClassVar[tuple[str, ...]] = ("study",)
    # Nested keys the report reads: field -> keys every dict under it must have. For a list
    # field, every item is checked.
    _NESTED: ClassVar[dict[str, tuple[str, ...]]] = {}

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, exactly as the writer writes it (key order included)."""
        out: dict[str, Any] = {"record": self.KIND, "record_version": self.VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in self.OMIT_IF_NONE:
                continue
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """Validate and type one record: its kind, its version (older ones are migrated), every
        key (none missing, none unknown), the types of the top-level values and the nested keys
        the report reads. Raises :class:`ConfigError` with one line saying what is wrong."""
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"a {cls.KIND} record must be a JSON object, got {type(data).__name__}"
            )
        if data.get("record") != cls.KIND:
            raise ConfigError(f"not a {cls.KIND} record: record is {data.get('record')!r}")
        version = data.get("record_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ConfigError(f"{cls.KIND} record: record_version must be a positive integer")
        if version > cls.VERSION:
            raise ConfigError(
                f"{cls.KIND} record version {version} is newer than this edgerobust reads "
                f"(up to {cls.VERSION}): upgrade edgerobust"
            )
        body = {k: v for k, v in data.items() if k not in ("record", "record_version")}
        body = cls._migrate(body, version)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [k for k in body if k not in fields]
        if unknown:
            raise ConfigError(f"{cls.KIND} record v{version}: unknown key(s) {', '.join(unknown)}")
        missing = [
            name
            for name, f in fields.items()
            if name not in body
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(f"{cls.KIND} record v{version}: missing key(s) {', '.join(missing)}")
        hints = typing.get_type_hints(cls)
        for name, value in body.items():
            if not _matches(value, hints[name]):
                raise ConfigError(
                    f"{cls.KIND} record: {name} is {type(value).__name__}, "
                    f"expected {_hint_text(hints[name])}"
                )
        for name, keys in cls._NESTED.items():
            value = body.get(name)
            for item in value if isinstance(value, list) else [value]:
                if item is None:
                    continue
                lacking = [k for k in keys if not isinstance(item, dict) or k not in item]
                if lacking:
                    raise ConfigError(
                        f"{cls.KIND} record: {name} lacks key(s) {', '.join(lacking)}"
                    )
        cls._check_values(body)
        return cls(**body)

    @classmethod
    def _check_values(cls, body: dict[str, Any]) -> None:
        """Values the report computes with must be in range: an accuracy is a fraction."""
        for name, value in body.items():
            if name.endswith("accuracy") and _is_number(value) and not 0 <= value <= 1:
                raise ConfigError(f"{cls.KIND} record: {name} is {value}, not a fraction in [0, 1]")

    @classmethod
    def _migrate(cls, body: dict[str, Any], version: int) -> dict[str, Any]:
        """Bring a record of an older ``version`` up to :attr:`VERSION` (none by default)."""
        return body


def _matches(value: Any, hint: Any) -> bool:
    """A shallow type check of a JSON value against a field's annotation."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is not None:
        return isinstance(value, origin)
    if hint is float:  # JSON writes 1.0 as 1.0, but a fraction of 0 / 0 may come back as int
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def encode_outcomes(correct: Iterable[Any]) -> str:
    """Per-image outcomes as a compact string: ``"1"`` right, ``"0"`` wrong, in image order.

    Two models measured on the same images (same ``images_sha256``) compare pairwise from these
    (:mod:`edgerobust.report.findings`)."""
    return "".join("1" if bool(c) else "0" for c in correct)


def decode_outcomes(text: str) -> list[bool]:
    """The inverse of :func:`encode_outcomes`; anything but ``0``/``1`` is a ConfigError."""
    if not isinstance(text, str) or set(text) - {"0", "1"}:
        raise ConfigError("per-image outcomes must be a string of 0 and 1")
    return [c == "1" for c in text]


def images_digest(files: Iterable[str]) -> str:
    """sha256 of the ordered image list (relative paths, one per line): which images, in which
    order, a per-image outcome string refers to."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.encode("utf-8") + b"\n")
    return h.hexdigest()


def _check_outcomes(where: str, entry: Mapping[str, Any], n: Any, correct: Any) -> None:
    """An entry's ``outcomes`` (when present) must be n images of which ``correct`` are right."""
    text = entry.get("outcomes")
    if text is None:
        return
    if not isinstance(text, str) or set(text) - {"0", "1"} or len(text) != n:
        raise ConfigError(f"{where}: outcomes must be a 0/1 string of n={n} images")
    if text.count("1") != correct:
        raise ConfigError(
            f"{where}: outcomes count {text.count('1')} right, the record says {correct}"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _hint_text(hint: Any) -> str:
    return str(hint).replace("typing.", "")


# --------------------------------------------------------------------------- model-making records


@dataclass(frozen=True, kw_only=True)
class TrainRecord(Record):
    """``edgerobust train``: a baseline checkpoint and its validation accuracy (Table 1)."""

    KIND: ClassVar[str] = "train"
    checkpoint: str
    arch: str
    params: int
    source_domain: str
    classes: list[str]
    split: dict[str, Any]
    best_epoch: int
    val_accuracy: float
    val_n: int
    history: list[Any]
    device: str
    seconds_this_session: float
    config: dict[str, Any]
    weights: Any
    study: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class PruneRecord(Record):
    """``edgerobust compress prune``: L1 filter pruning, retrained (Table 1, method FP)."""

    KIND: ClassVar[str] = "prune"
    checkpoint: str
    parent: str
    parent_sha256: str
    arch: str
    # the pruning summary (PruneSummary.to_dict) and its targets
    sensitivity: float
    stage_weights: list[float]
    stage_ratios: list[float]
    params_before: int
    params_after: int
    compression_rate: float
    channel_ratio: float
    stage_channel_ratios: Any
    target_params: int | None
    target_error: float | None
    macs_before: int | None
    macs_after: int | None
    importance: str
    layer_channel_ratios: dict[str, Any]
    latency: str
    source_domain: str
    classes: list[str]
    val_accuracy_before_retraining: float
    best_epoch: int
    val_accuracy: float
    val_n: int
    lr: float
    lr_gamma: float
    history: list[Any]
    device: str
    seconds_this_session: float
    config: dict[str, Any]
    study: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class DistillRecord(Record):
    """``edgerobust compress distill``: a student trained by vanilla KD (Table 1, method KD)."""

    KIND: ClassVar[str] = "distill"
    checkpoint: str
    teacher: str
    teacher_sha256: str
    teacher_arch: str
    student_arch: str
    weights: Any
    alpha: float
    tau: float
    params_teacher: int
    params_student: int
    compression_rate: float
    teacher_logits_cached: bool
    source_domain: str
    classes: list[str]
    val_accuracy_teacher: float
    best_epoch: int
    val_accuracy: float
    val_n: int
    history: list[Any]
    device: str
    seconds_this_session: float
    config: dict[str, Any]
    study: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class QuantizeRecord(Record):
    """``edgerobust compress quantize``: eager PTSQ int8 of a checkpoint (method PTSQ)."""

    KIND: ClassVar[str] = "quantize"
    checkpoint: str
    parent: str
    engine: str
    calibration_images: int
    source_domain: str | None
    val_n: int
    val_accuracy_int8: float
    val_accuracy_fp32: float
    # the accuracy-aware fallback's search (FallbackResult.to_dict()), None when it did not run
    fallback: dict[str, Any] | None = None
    top1_agreement: float | None
    warning: str | None
    config: dict[str, Any]
    study: dict[str, Any] | None = None

    @classmethod
    def _migrate(cls, body: dict[str, Any], version: int) -> dict[str, Any]:
        """Version-1 records written before the int8/fp32 agreement check (the report fixtures
        among them) have no ``top1_agreement`` and ``warning``: nothing was measured, so None.
        The keys are inserted where today's writer puts them, before ``config``."""
        if "top1_agreement" in body and "warning" in body:
            return body
        out: dict[str, Any] = {}
        for k, v in body.items():
            if k == "config":
                out.setdefault("top1_agreement", body.get("top1_agreement"))
                out.setdefault("warning", body.get("warning"))
            out[k] = v
        return out


# --------------------------------------------------------------------------- artifacts and runs


@dataclass(frozen=True, kw_only=True)
class ExportRecord(Record):
    """A study's ``export`` stage: one artifact with its manifest's facts and parity verdict."""

    KIND: ClassVar[str] = "export"
    _NESTED: ClassVar[dict[str, tuple[str, ...]]] = {"source": ("checkpoint",)}
    artifact: str
    manifest: str
    format: str
    precision: str
    engine: str | None
    arch: str
    params: int | None
    size_bytes: int
    size_mb: float
    sha256: str
    source: dict[str, Any]
    parity: dict[str, Any] | None
    parity_passed: bool
    notes: list[str]
    study: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class EvalDeviceRecord(Record):
    """``edgerobust eval-device``: an artifact measured inside its runtime (Tables 2-3, plots).

    ``domains`` holds one entry per domain (``domain``, ``role`` source/target, ``n``,
    ``correct``, ...); ``artifact`` the manifest's facts with its ``source`` (the checkpoint it
    was exported from, the source domain).
    """

    KIND: ClassVar[str] = "eval-device"
    _NESTED: ClassVar[dict[str, tuple[str, ...]]] = {
        "artifact": ("format", "precision", "engine", "params", "size_mb", "source"),
        "runtime": ("runtime", "threads"),
        "domains": ("domain", "role", "n", "correct"),
        "latency_ms": ("p50",),
    }
    created: str
    edgerobust: str
    artifact: dict[str, Any]
    runtime: dict[str, Any]
    host: dict[str, Any]
    dataset: dict[str, Any]
    domains: list[dict[str, Any]]
    latency_ms: dict[str, Any]
    throughput: dict[str, Any]
    memory: dict[str, Any]
    config: dict[str, Any]
    study: dict[str, Any] | None = None

    @classmethod
    def _check_values(cls, body: dict[str, Any]) -> None:
        super()._check_values(body)
        for d in body["domains"]:
            n, correct = d["n"], d["correct"]
            if not (_is_number(n) and _is_number(correct) and 0 <= correct <= n):
                raise ConfigError(
                    f"eval-device record: domain {d['domain']!r} has correct={correct!r} of "
                    f"n={n!r}: not counts with 0 <= correct <= n"
                )
            _check_outcomes(f"eval-device record: domain {d['domain']!r}", d, n, correct)

    def domain(self, name: str) -> dict[str, Any] | None:
        """The measurement on one domain, or None when this run did not measure it."""
        return next((d for d in self.domains if d["domain"] == name), None)

    @property
    def source_domain(self) -> str | None:
        for d in self.domains:
            if d["role"] == "source":
                return d["domain"]
        return self.artifact["source"].get("source_domain")

    @property
    def targets(self) -> list[str]:
        return [d["domain"] for d in self.domains if d["role"] == "target"]


@dataclass(frozen=True, kw_only=True)
class AttackRecord(Record):
    """``edgerobust attack`` (and a study's attack stage): white-box and decision attacks on one
    model and its deployed versions (Tables 3-5).

    ``targets`` are the models measured (``name``, ``kind`` torch/artifact, ``role``,
    ``precision``, ``path``); ``attacks`` one entry per attack with its eps sweep, its headline
    eps per strength and per-target ``results`` (``target``, ``label``, ``n``,
    ``clean_accuracy``, ``robust_accuracy`` along the sweep).
    """

    KIND: ClassVar[str] = "attack"
    VERSION: ClassVar[int] = 2  # 2: headline_eps per attack; averages keyed by strength
    _NESTED: ClassVar[dict[str, tuple[str, ...]]] = {
        "config": ("strength",),
        "model": ("path",),
        "targets": ("name", "kind", "role", "precision", "path"),
        "attacks": ("attack", "eps", "headline_eps", "results"),
    }
    created: str
    edgerobust: str
    config: dict[str, Any]
    model: dict[str, Any]
    source: str
    device: dict[str, Any]
    data: dict[str, Any]
    targets: list[dict[str, Any]]
    gradients: dict[str, Any] | None
    attacks: list[dict[str, Any]]
    average_adversarial_accuracy: dict[str, Any]
    sanity: list[dict[str, Any]]
    study: dict[str, Any] | None = None

    @classmethod
    def _migrate(cls, body: dict[str, Any], version: int) -> dict[str, Any]:
        """Version 1 measured one strength and judged it at the sweep's last eps: each attack
        gets ``headline_eps = {strength: eps[-1]}`` (none for a custom ``--eps`` sweep, whose
        strength is neither light nor heavy). Its averages are keyed by target, not strength;
        they are kept as written (the report does not read them)."""
        if version >= 2:
            return body
        strength = (body.get("config") or {}).get("strength")
        attacks = []
        for a in body.get("attacks") or []:
            eps = a.get("eps") or []
            headline = {strength: eps[-1]} if eps and strength in ("light", "heavy") else {}
            items = list(a.items())
            at = next((i for i, (k, _) in enumerate(items) if k == "settings"), len(items))
            items.insert(at, ("headline_eps", headline))
            attacks.append(dict(items))
        return {**body, "attacks": attacks}

    @classmethod
    def _check_values(cls, body: dict[str, Any]) -> None:
        super()._check_values(body)
        for a in body["attacks"]:
            for r in a["results"]:
                outcomes = r.get("outcomes") if isinstance(r, dict) else None
                if outcomes is None:
                    continue
                where = f"attack record: {a['attack']} on {r.get('target')!r}"
                if not isinstance(outcomes, list) or len(outcomes) != len(a["eps"]):
                    raise ConfigError(f"{where}: outcomes must hold one string per eps")
                for text, acc in zip(outcomes, r.get("robust_accuracy") or [], strict=False):
                    n = r.get("n")
                    right = round(acc * n) if _is_number(acc) and _is_number(n) else None
                    _check_outcomes(where, {"outcomes": text}, n, right)


@dataclass(frozen=True, kw_only=True)
class AttackFigureRecord(Record):
    """One attack figure at one strength: the study's Salt&Pepper stage writes one per strength
    (``saltpepper-light.json``, label ``blackbox``, against an artifact in its runtime).

    Same kind as :class:`AttackRecord` (``attack``, version 1); :func:`read_record` tells them
    apart by ``attacks`` (a list of attacks) versus ``attack`` (one attack's name). The keys
    after ``robust_correct`` describe how the Salt&Pepper stage measured; the hand-written
    report fixtures (tests/fixtures/records/attack-*) carry only the figure, the study block and
    ``checkpoint`` (the model the figure belongs to when there is no study block), so those
    keys are optional and left out when absent.
    """

    KIND: ClassVar[str] = "attack"
    OMIT_IF_NONE: ClassVar[tuple[str, ...]] = (
        "norm",
        "steps",
        "queries_total",
        "queries_full",
        "stop",
        "seed",
        "images",
        "images_sha256",
        "outcomes",
        "artifact",
        "runtime",
        "checkpoint",
        "study",
    )
    _NESTED: ClassVar[dict[str, tuple[str, ...]]] = {"artifact": ("format",)}
    attack: str
    strength: str
    epsilon: float | int | str | None
    norm: str | None = None
    label: str
    n: int
    clean_correct: int
    robust_correct: int
    steps: int | None = None
    queries_total: int | None = None
    queries_full: int | None = None
    stop: str | None = None
    seed: int | None = None
    images: str | None = None
    images_sha256: str | None = None  # the attacked images, in order (records.images_digest)
    outcomes: str | None = None  # per image: still right under the attack (encode_outcomes)
    artifact: dict[str, Any] | None = None
    runtime: dict[str, Any] | None = None
    checkpoint: str | None = None
    study: dict[str, Any] | None = None

    @classmethod
    def _check_values(cls, body: dict[str, Any]) -> None:
        super()._check_values(body)
        _check_outcomes("attack record", body, body.get("n"), body.get("robust_correct"))


@dataclass(frozen=True, kw_only=True)
class CorruptionRecord(Record):
    """A study's ``corruptions`` stage: one artifact in its runtime under ImageNet-C corruptions
    on the source domain's validation split. ``corruptions`` is
    :func:`edgerobust.evaluate.corruptions.corruption_accuracy`'s result (the same block
    ``eval-device --corruptions`` puts in each domain of its record)."""

    KIND: ClassVar[str] = "corruptions"
    _NESTED: ClassVar[dict[str, tuple[str, ...]]] = {
        "artifact": ("format", "precision", "source"),
        "runtime": ("runtime",),
        "corruptions": ("severities", "n", "images", "clean", "results", "mean_accuracy"),
    }
    created: str
    edgerobust: str
    artifact: dict[str, Any]
    runtime: dict[str, Any]
    domain: str
    split: str
    corruptions: dict[str, Any]
    study: dict[str, Any] | None = None


# --------------------------------------------------------------------------- the registry

READERS: Registry[Callable[[Mapping[str, Any]], Record]] = Registry("record kind")
"""``record`` kind -> the function that types a record of that kind."""

for _cls in (
    TrainRecord,
    PruneRecord,
    DistillRecord,
    QuantizeRecord,
    ExportRecord,
    EvalDeviceRecord,
    CorruptionRecord,
):
    READERS.add(_cls.KIND, _cls.from_dict)


@READERS.register("attack")
def _read_attack(data: Mapping[str, Any]) -> Record:
    """Two writers share the kind ``attack`` (see :class:`AttackFigureRecord`)."""
    if "attacks" in data:
        return AttackRecord.from_dict(data)
    return AttackFigureRecord.from_dict(data)


def read_record(data: Mapping[str, Any]) -> Record:
    """The typed record of one JSON object; :class:`ConfigError` for an unknown kind, a newer
    version or a schema that does not match its kind."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a record must be a JSON object, got {type(data).__name__}")
    kind = data.get("record")
    if not isinstance(kind, str):
        raise ConfigError("not a record: no 'record' kind")
    return READERS.get(kind)(data)


def record_kinds() -> list[str]:
    """The kinds :func:`read_record` reads."""
    return READERS.list()
