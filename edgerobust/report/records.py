"""Reading a results folder: typed records in (:mod:`edgerobust.records`), one :class:`Model`
per checkpoint with its evaluations and attacks.

Every field is read from the record kind's dataclass: no aliases, no guessing at key names. A
record that does not match its kind's schema stops the report with the file's name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgerobust.errors import ConfigError
from edgerobust.exporters import get_exporter, list_exporters
from edgerobust.models import list_archs
from edgerobust.records import (
    INCOMPLETE,
    STAGING,
    AttackFigureRecord,
    AttackRecord,
    CorruptionRecord,
    DistillRecord,
    EvalDeviceRecord,
    ExportRecord,
    PruneRecord,
    QuantizeRecord,
    Record,
    TrainRecord,
    images_digest,
    read_record,
)
from edgerobust.report.cells import DASH, Acc, pooled
from edgerobust.runtimes import default_runtime
from edgerobust.runtimes.formats import format_of, list_formats

RECORD_KINDS = (
    "train",
    "prune",
    "distill",
    "quantize",
    "export",
    "eval-device",
    "attack",
    "corruptions",
)
METHOD_ORDER = ("-", "FP", "KD", "PTSQ", "imported")
# Tables 4 and 5: the paper's column order and names.
ATTACK_COLUMNS = (
    ("deepfool", "DeepFool Linf"),
    ("pgd", "PGD Linf"),
    ("fgsm", "FGSM"),
    ("cw", "C&W L2"),
    ("ddn", "DDN"),
    ("ead", "EAD"),
    ("saltpepper", "Salt&Pepper"),
)
TABLE3_ATTACKS = (("ead", "EAD"), ("cw", "C&W L2"), ("saltpepper", "S&P"))

# --------------------------------------------------------------------------- records -> models

AnyRecord = (
    TrainRecord
    | PruneRecord
    | DistillRecord
    | QuantizeRecord
    | ExportRecord
    | EvalDeviceRecord
    | AttackRecord
    | AttackFigureRecord
    | CorruptionRecord
)


def load_record_files(
    root: str | Path, skipped: dict[str, str] | None = None
) -> list[tuple[Path, Record]]:
    """Every finished record under ``root`` (see the package docstring) with its file, typed by
    :func:`edgerobust.records.read_record`. A file of a kind the report reads that does not
    match that kind's schema is an error naming the file: a writer and the report disagree.
    A ``.json`` that cannot be read or parsed is not a record; it goes to ``skipped`` (path ->
    why), so the caller can say what the report left out."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"results folder not found: {root}")
    skip: set[Path] = {p.parent for p in root.rglob(INCOMPLETE)}
    current = _current_stages(root)
    records = []
    for path in sorted(root.rglob("*.json")):
        if any(parent in skip for parent in path.parents):
            continue
        rel = path.relative_to(root).parts
        if STAGING in rel[:-1]:
            continue  # a study's scratch folder (a stage being made or deleted), never records
        if current is not None and len(rel) > 2 and rel[0] == "stages" and rel[1] not in current:
            continue  # a stage of an earlier version of the study (a setting changed since)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            if skipped is not None:
                why = exc.strerror if isinstance(exc, OSError) else str(exc)
                skipped[str(path)] = f"not readable JSON ({why})"
            continue
        if isinstance(data, dict) and data.get("record") in RECORD_KINDS:
            try:
                records.append((path, read_record(data)))
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from None
    return records


def load_records(root: str | Path, skipped: dict[str, str] | None = None) -> list[Record]:
    """The typed records :func:`load_record_files` finds under ``root``."""
    return [rec for _, rec in load_record_files(root, skipped)]


def _current_stages(root: Path) -> set[str] | None:
    """Stage folder names of the study's latest plan (``summary.json`` of ``edgerobust run``),
    or None when ``root`` is not a study folder. Folders left by an earlier plan are stale."""
    try:
        summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
        return {Path(s["dir"]).name for s in summary["stages"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class Model:
    """One checkpoint (or, for ONNX int8, one quantized artifact) and what was measured on it."""

    source: str
    label: str
    base: str
    method: str
    arch: str
    compression: str
    params: int | None = None
    engine: str | None = None
    val: Acc | None = None  # source validation accuracy (PyTorch model)
    evals: list[EvalDeviceRecord] = field(default_factory=list)
    exports: list[ExportRecord] = field(default_factory=list)
    attack_results: list[dict[str, Any]] = field(default_factory=list)
    corruptions: list[CorruptionRecord] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.label)

    def attack(self, attack: str, strength: str, fmt: str | None = None) -> dict[str, Any] | None:
        """The figure for one attack and strength.

        With ``fmt`` (a row of one artifact): that artifact's own figure, else the checkpoint's.
        Without: the checkpoint's, else the preferred format's.
        """
        found = [
            e for e in self.attack_results if (e["attack"], e["strength"]) == (attack, strength)
        ]
        if fmt is not None:
            found = [e for e in found if e["format"] in (fmt, None)]
            found.sort(key=lambda e: e["format"] is None)
        else:
            found.sort(
                key=lambda e: -1 if e["format"] is None else _order(e["format"], list_formats())
            )
        return found[0] if found else None

    @property
    def attacks(self) -> dict[tuple[str, str], dict[str, Any]]:
        """One figure per (attack, strength): see :meth:`attack`."""
        keys = {(e["attack"], e["strength"]) for e in self.attack_results}
        return {k: e for k in sorted(keys) if (e := self.attack(*k)) is not None}

    def sort_key(self) -> tuple:
        return (
            _order(self.base, list_archs()),
            self.base,
            _order(self.method, METHOD_ORDER),
            -(self.params or 0),
            self.label,
        )


def _own_int8(fmt: str | None, precision: str | None) -> str | None:
    """The format of an int8 artifact that its exporter quantized itself (ONNX QDQ), else None."""
    if precision != "int8" or fmt not in list_exporters():
        return None
    return fmt if get_exporter(fmt).int8 == "own" else None


def _order(v: str, order: Sequence[str]) -> int:
    return order.index(v) if v in order else len(order)


def _ckpt_key(path: Any) -> str | None:
    if not path:
        return None
    p = Path(str(path))
    if p.name != "model.safetensors" and p.suffix != ".safetensors":
        p = p / "model.safetensors"
    return str(p.resolve()) if p.is_absolute() else str(p)


def _acc(correct: int, n: int, label: str | None = None) -> Acc | None:
    return Acc(correct, n, label) if n > 0 else None


def _acc_from_fraction(fraction: float | None, n: int, label: str | None = None) -> Acc | None:
    if fraction is None:
        return None
    return _acc(round(fraction * n), n, label)


class Models:
    """Records grouped by model (see the package docstring)."""

    def __init__(self, records: list[Record]) -> None:
        self.models: dict[tuple[str, str], Model] = {}
        self.by_checkpoint: dict[str, Model] = {}
        order = {k: i for i, k in enumerate(RECORD_KINDS)}
        for rec in sorted(records, key=lambda r: order[r.KIND]):
            getattr(self, "_add_" + rec.KIND.replace("-", "_"))(rec)

    # model-making records ---------------------------------------------------------------

    def _model(self, rec: AnyRecord, checkpoint: str | None, **fallback: Any) -> Model:
        st = rec.study or {}
        info = {**fallback, **{k: st[k] for k in fallback if st.get(k) is not None}}
        key = (info["source"], info["label"] if "model" not in st else st["model"])
        m = self.models.get(key)
        if m is None:
            m = Model(
                source=info["source"],
                label=key[1],
                base=info["base"],
                method=info["method"],
                arch=info["arch"],
                compression=info["compression"],
                engine=st.get("engine") or info.get("engine"),
            )
            self.models[key] = m
        ck = _ckpt_key(checkpoint)
        if ck:
            self.by_checkpoint[ck] = m
        return m

    def _add_train(self, rec: TrainRecord) -> None:
        m = self._model(
            rec,
            rec.checkpoint,
            source=rec.source_domain,
            label=rec.arch,
            base=rec.arch,
            method="-",
            arch=rec.arch,
            compression="baseline",
        )
        m.params = rec.params
        m.val = _acc_from_fraction(rec.val_accuracy, rec.val_n)

    def _add_prune(self, rec: PruneRecord) -> None:
        m = self._model(
            rec,
            rec.checkpoint,
            source=rec.source_domain,
            label=f"{rec.arch}-fp-{_millions(rec.params_after)}",
            base=rec.arch,
            method="FP",
            arch=rec.arch,
            compression="pruned",
        )
        m.params = rec.params_after
        m.val = _acc_from_fraction(rec.val_accuracy, rec.val_n)

    def _add_distill(self, rec: DistillRecord) -> None:
        m = self._model(
            rec,
            rec.checkpoint,
            source=rec.source_domain,
            label=f"{rec.teacher_arch}-kd-{rec.student_arch}",
            base=rec.teacher_arch,
            method="KD",
            arch=rec.student_arch,
            compression="distilled",
        )
        m.params = rec.params_student
        m.val = _acc_from_fraction(rec.val_accuracy, rec.val_n)

    def _add_quantize(self, rec: QuantizeRecord) -> None:
        parent = self.by_checkpoint.get(_ckpt_key(rec.parent) or "")
        m = self._model(
            rec,
            rec.checkpoint,
            source=rec.source_domain or (parent.source if parent else "?"),
            label=f"{parent.label if parent else '?'}-int8-{rec.engine}",
            base=parent.base if parent else "?",
            method="PTSQ",
            arch=parent.arch if parent else "?",
            compression="int8",
            engine=rec.engine,
        )
        m.params = parent.params if parent else None
        m.val = _acc_from_fraction(rec.val_accuracy_int8, rec.val_n)

    # measurement records ------------------------------------------------------------------

    def _owner(self, rec: AnyRecord, checkpoint: Any, own_int8: str | None) -> Model | None:
        """The model a measurement belongs to: its study block, else its checkpoint path. An
        ONNX int8 measurement of an fp32 model belongs to that model's onnxruntime int8 twin."""
        st = rec.study or {}
        if st.get("source") and st.get("model"):
            key = (st["source"], st["model"])
            if key not in self.models:
                parent = self.models.get((st["source"], st.get("parent_model") or ""))
                self.models[key] = Model(
                    source=st["source"],
                    label=st["model"],
                    base=st.get("base", "?"),
                    method=st.get("method", "?"),
                    arch=st.get("arch", "?"),
                    compression=st.get("compression", "?"),
                    engine=st.get("engine"),
                    params=parent.params if parent else None,
                )
            m: Model | None = self.models[key]
        else:
            m = self.by_checkpoint.get(_ckpt_key(checkpoint) or "")
        if m is None or own_int8 is None or m.compression == "int8":
            return m
        # An int8 artifact its exporter quantized from the fp32 checkpoint (ONNX: onnxruntime)
        # is a "model" of its own, as the study plan names it.
        exporter = get_exporter(own_int8)
        key = (m.source, f"{m.label}-int8-{default_runtime(own_int8)}")
        if key not in self.models:
            self.models[key] = Model(
                m.source, key[1], m.base, "PTSQ", m.arch, "int8", m.params, exporter.int8_engine
            )
        return self.models[key]

    def _add_export(self, rec: ExportRecord) -> None:
        m = self._owner(rec, rec.source["checkpoint"], _own_int8(rec.format, rec.precision))
        if m is not None:
            m.exports.append(rec)

    def _add_eval_device(self, rec: EvalDeviceRecord) -> None:
        art = rec.artifact
        own = _own_int8(art["format"], art["precision"])
        m = self._owner(rec, art["source"].get("checkpoint"), own)
        if m is None and art["source"].get("kind") == "imported":
            m = self._imported(rec)
        if m is None:
            return
        if m.params is None and isinstance(art["params"], int):
            m.params = art["params"]
        m.evals.append(rec)

    def _imported(self, rec: EvalDeviceRecord) -> Model:
        """A model imported with ``edgerobust import``: no checkpoint, no known source domain;
        one model per artifact name (its ``arch``), shown as it came."""
        art = rec.artifact
        key = ("imported", art["arch"])
        if key not in self.models:
            self.models[key] = Model(
                "imported",
                art["arch"],
                art["arch"],
                "imported",
                art["arch"],
                "imported",
                art["params"],
            )
        return self.models[key]

    def _add_corruptions(self, rec: CorruptionRecord) -> None:
        art = rec.artifact
        m = self._owner(
            rec, art["source"].get("checkpoint"), _own_int8(art["format"], art["precision"])
        )
        if m is not None:
            m.corruptions.append(rec)

    def _add_attack(self, rec: AttackRecord | AttackFigureRecord) -> None:
        if isinstance(rec, AttackRecord):
            self._add_attack_targets(rec)
            return
        m = self._owner(rec, rec.checkpoint, None)
        if m is not None:
            m.attack_results.extend(attack_entries(rec))

    def _add_attack_targets(self, rec: AttackRecord) -> None:
        """An ``edgerobust attack`` record measures several targets (the fp32 model attacked
        directly, the int8 model and artifacts the adversarials are replayed on): each target's
        figures go to the model it measured."""
        targets = {t["name"]: t for t in rec.targets}
        source_path = next((t["path"] for t in rec.targets if t["role"] == "source"), None)
        model_path = rec.model["path"]
        study = rec.study or {}
        for name, entries in attack_target_entries(rec).items():
            t = targets.get(name, {})
            fp32 = t.get("precision") == "fp32"
            if study and study.get("compression") == "int8" and fp32:
                continue  # the fp32 parent's direct figures belong to the parent's own stage
            is_artifact = t.get("kind") == "artifact"
            fmt = format_of(str(t.get("path", ""))) if is_artifact else None
            own_int8 = _own_int8(fmt.name, "int8") if fmt else None
            if t.get("role") == "replay":  # an int8 checkpoint the adversarials were replayed on
                owner = self.by_checkpoint.get(_ckpt_key(t.get("path")) or "")
            elif own_int8 and not fp32:
                owner = self._owner(rec, source_path or model_path, own_int8)
            elif t.get("role") == "source":
                owner = self._owner(rec, source_path, None)
            else:
                owner = self._owner(rec, model_path, None)
            if owner is not None:
                owner.attack_results.extend(entries)

    # views ----------------------------------------------------------------------------------

    def sorted(self, compressions: tuple[str, ...] | None = None) -> list[Model]:
        ms = [
            m for m in self.models.values() if compressions is None or m.compression in compressions
        ]
        return sorted(ms, key=Model.sort_key)

    def sources(self) -> list[str]:
        return sorted({m.source for m in self.models.values()})


def attack_target_entries(rec: AttackRecord) -> dict[str, list[dict[str, Any]]]:
    """Figures of an ``edgerobust attack`` record, per target: each attack's result at each
    strength's headline eps (``headline_eps``; version-1 records get theirs in
    :meth:`AttackRecord._migrate`)."""
    formats = {
        t["name"]: getattr(format_of(Path(str(t["path"])).suffix), "name", None)
        for t in rec.targets
        if t["kind"] == "artifact"
    }
    out: dict[str, list[dict[str, Any]]] = {}
    images = images_digest(rec.data.get("files") or [])
    for a in rec.attacks:
        eps = a["eps"]
        for r in a["results"]:
            accs = r["robust_accuracy"]
            n = r["n"]
            outcomes = r.get("outcomes")
            for st, e in a["headline_eps"].items():
                if st not in ("light", "heavy") or e not in eps or len(accs) != len(eps):
                    continue
                out.setdefault(r["target"], []).append(
                    {
                        "attack": a["attack"],
                        "strength": st,
                        "format": formats.get(r["target"]),
                        "epsilon": e,
                        "label": r["label"],
                        "acc": _acc_from_fraction(accs[eps.index(e)], n, r["label"]),
                        "clean": _acc_from_fraction(r["clean_accuracy"], n),
                        # per image (report.findings pairs models on them)
                        "outcomes": outcomes[eps.index(e)] if outcomes else None,
                        "images": images if rec.data.get("files") else None,
                    }
                )
    return out


def attack_entries(rec: AttackFigureRecord) -> list[dict[str, Any]]:
    """The figure of a one-figure attack record: attack, strength, epsilon, accuracy, label, and
    the artifact format when the attack ran against an artifact (None: against a checkpoint).
    Empty for a strength that is neither light nor heavy (no table shows it)."""
    acc = _acc(rec.robust_correct, rec.n, rec.label)
    if rec.strength not in ("light", "heavy") or acc is None:
        return []
    study = rec.study or {}
    return [
        {
            "attack": rec.attack,
            "strength": rec.strength,
            "format": (rec.artifact or {}).get("format") or study.get("format"),
            "epsilon": rec.epsilon,
            "label": rec.label,
            "acc": acc,
            "clean": _acc(rec.clean_correct, rec.n),
            "outcomes": rec.outcomes,
            "images": rec.images_sha256,
        }
    ]


def _millions(params: int | None) -> str:
    return (
        DASH
        if params is None
        else f"{params / 1e6:.2f}M"
        if params >= 1e5
        else f"{params / 1e3:.1f}k"
    )


def _params_cell(params: int | None) -> str:
    if params is None:
        return DASH
    return f"{params / 1e6:.2f}" if params >= 1e5 else f"{params / 1e6:.4f}"


def _domain_acc(rec: EvalDeviceRecord, domain: str) -> Acc | None:
    d = rec.domain(domain)
    return _acc(d["correct"], d["n"]) if d is not None else None


def _source_of(rec: EvalDeviceRecord) -> str | None:
    return rec.source_domain


def _targets(rec: EvalDeviceRecord) -> list[str]:
    return rec.targets


def _eval_rank(rec: EvalDeviceRecord) -> tuple:
    return (
        _order(rec.artifact["format"], list_formats()),
        rec.runtime["threads"] or 0,
        rec.created,
    )


def best_eval(
    m: Model, precision: str | None = None, fmt: str | None = None
) -> EvalDeviceRecord | None:
    """The one eval-device record a table shows for a model: preferred format, fewest threads."""
    evs = [
        r
        for r in m.evals
        if (precision is None or r.artifact["precision"] == precision)
        and (fmt is None or r.artifact["format"] == fmt)
    ]
    return min(evs, key=_eval_rank) if evs else None


def target_pooled(rec: EvalDeviceRecord) -> Acc | None:
    return pooled(_domain_acc(rec, d) for d in _targets(rec))
