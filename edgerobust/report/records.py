"""Reading a results folder: records in, one :class:`Model` per checkpoint with its evaluations
and attacks."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgerobust.errors import ConfigError
from edgerobust.exporters import get_exporter, list_exporters
from edgerobust.models import list_archs
from edgerobust.report.cells import DASH, Acc, pooled
from edgerobust.runtimes import default_runtime
from edgerobust.runtimes.formats import format_of, list_formats

RECORD_KINDS = ("train", "prune", "distill", "quantize", "export", "eval-device", "attack")
INCOMPLETE = ".incomplete"
METHOD_ORDER = ("-", "FP", "KD", "PTSQ")
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


def load_records(root: str | Path) -> list[dict[str, Any]]:
    """Every finished record under ``root`` (see the module docstring), with ``_path`` added."""
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
        if current is not None and len(rel) > 2 and rel[0] == "stages" and rel[1] not in current:
            continue  # a stage of an earlier version of the study (a setting changed since)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and data.get("record") in RECORD_KINDS:
            data["_path"] = str(path)
            records.append(data)
    return records


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
    evals: list[dict[str, Any]] = field(default_factory=list)
    exports: list[dict[str, Any]] = field(default_factory=list)
    attack_results: list[dict[str, Any]] = field(default_factory=list)

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
            found = [e for e in found if e.get("format") in (fmt, None)]
            found.sort(key=lambda e: e.get("format") is None)
        else:
            found.sort(
                key=lambda e: (
                    -1 if e.get("format") is None else _order(e["format"], tuple(list_formats()))
                )
            )
        return found[0] if found else None

    @property
    def attacks(self) -> dict[tuple[str, str], dict[str, Any]]:
        """One figure per (attack, strength): see :meth:`attack`."""
        keys = {(e["attack"], e["strength"]) for e in self.attack_results}
        return {k: e for k in sorted(keys) if (e := self.attack(*k)) is not None}

    def sort_key(self) -> tuple:
        return (
            _order(self.base, tuple(list_archs())),
            self.base,
            _order(self.method, METHOD_ORDER),
            -(self.params or 0),
            self.label,
        )


def _own_int8(rec: dict[str, Any]) -> str | None:
    """The format of an int8 artifact that its exporter quantized itself (ONNX QDQ), else None."""
    fmt = rec.get("format")
    if rec.get("precision") != "int8" or fmt not in list_exporters():
        return None
    return fmt if get_exporter(fmt).int8 == "own" else None


def _order(v: str, order: tuple[str, ...]) -> int:
    return order.index(v) if v in order else len(order)


def _ckpt_key(path: Any) -> str | None:
    if not path:
        return None
    p = Path(str(path))
    if p.name != "model.safetensors" and p.suffix != ".safetensors":
        p = p / "model.safetensors"
    return str(p.resolve()) if p.is_absolute() else str(p)


def _acc(correct: Any, n: Any, label: str | None = None) -> Acc | None:
    try:
        n = int(n)
        return Acc(int(correct), n, label) if n > 0 else None
    except (TypeError, ValueError):
        return None


def _acc_from_fraction(fraction: Any, n: Any, label: str | None = None) -> Acc | None:
    if fraction is None or n is None:
        return None
    return _acc(round(float(fraction) * int(n)), n, label)


def _model_params(rec: dict[str, Any]) -> int | None:
    for k in ("params", "params_after", "params_student"):
        if isinstance(rec.get(k), int):
            return rec[k]
    return None


class Models:
    """Records grouped by model (see the module docstring)."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.models: dict[tuple[str, str], Model] = {}
        self.by_checkpoint: dict[str, Model] = {}
        order = {k: i for i, k in enumerate(RECORD_KINDS)}
        for rec in sorted(records, key=lambda r: order[r["record"]]):
            getattr(self, "_add_" + rec["record"].replace("-", "_"))(rec)

    # model-making records ---------------------------------------------------------------

    def _model(self, rec: dict[str, Any], **fallback: Any) -> Model:
        st = rec.get("study") or {}
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
        ck = _ckpt_key(rec.get("checkpoint"))
        if ck:
            self.by_checkpoint[ck] = m
        return m

    def _add_train(self, rec: dict[str, Any]) -> None:
        arch = rec.get("arch", "?")
        m = self._model(
            rec,
            source=rec.get("source_domain", "?"),
            label=arch,
            base=arch,
            method="-",
            arch=arch,
            compression="baseline",
        )
        m.params = _model_params(rec)
        m.val = _acc_from_fraction(rec.get("val_accuracy"), rec.get("val_n"))

    def _add_prune(self, rec: dict[str, Any]) -> None:
        arch = rec.get("arch", "?")
        params = _model_params(rec)
        m = self._model(
            rec,
            source=rec.get("source_domain", "?"),
            label=f"{arch}-fp-{_millions(params)}",
            base=arch,
            method="FP",
            arch=arch,
            compression="pruned",
        )
        m.params = params
        m.val = _acc_from_fraction(rec.get("val_accuracy"), rec.get("val_n"))

    def _add_distill(self, rec: dict[str, Any]) -> None:
        teacher, student = rec.get("teacher_arch", "?"), rec.get("student_arch", "?")
        m = self._model(
            rec,
            source=rec.get("source_domain", "?"),
            label=f"{teacher}-kd-{student}",
            base=teacher,
            method="KD",
            arch=student,
            compression="distilled",
        )
        m.params = _model_params(rec)
        m.val = _acc_from_fraction(rec.get("val_accuracy"), rec.get("val_n"))

    def _add_quantize(self, rec: dict[str, Any]) -> None:
        parent = self.by_checkpoint.get(_ckpt_key(rec.get("parent")) or "")
        engine = rec.get("engine", "?")
        m = self._model(
            rec,
            source=rec.get("source_domain") or (parent.source if parent else "?"),
            label=f"{parent.label if parent else '?'}-int8-{engine}",
            base=parent.base if parent else "?",
            method="PTSQ",
            arch=parent.arch if parent else "?",
            compression="int8",
            engine=engine,
        )
        m.params = parent.params if parent else None
        m.val = _acc_from_fraction(rec.get("val_accuracy_int8"), rec.get("val_n"))

    # measurement records ------------------------------------------------------------------

    def _owner(self, rec: dict[str, Any], checkpoint: Any, own_int8: str | None) -> Model | None:
        """The model a measurement belongs to: its study block, else its checkpoint path. An
        ONNX int8 measurement of an fp32 model belongs to that model's onnxruntime int8 twin."""
        st = rec.get("study") or {}
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

    def _add_export(self, rec: dict[str, Any]) -> None:
        src = rec.get("source") or {}
        m = self._owner(rec, src.get("checkpoint"), _own_int8(rec))
        if m is not None:
            m.exports.append(rec)

    def _add_eval_device(self, rec: dict[str, Any]) -> None:
        art = rec.get("artifact") or {}
        src = art.get("source") or {}
        m = self._owner(rec, src.get("checkpoint"), _own_int8(art))
        if m is None:
            return
        if m.params is None and isinstance(art.get("params"), int):
            m.params = art["params"]
        m.evals.append(rec)

    def _add_attack(self, rec: dict[str, Any]) -> None:
        if isinstance(rec.get("attacks"), list):
            self._add_attack_targets(rec)
            return
        model_info = rec.get("model") if isinstance(rec.get("model"), dict) else {}
        ckpt = rec.get("checkpoint") or model_info.get("checkpoint")
        m = self._owner(rec, ckpt, None)
        if m is None:
            return
        m.attack_results.extend(attack_entries(rec))

    def _add_attack_targets(self, rec: dict[str, Any]) -> None:
        """An ``edgerobust attack`` record measures several targets (the fp32 model attacked
        directly, the int8 model and artifacts the adversarials are replayed on): each target's
        figures go to the model it measured."""
        targets = {t.get("name"): t for t in rec.get("targets") or [] if isinstance(t, dict)}
        source_path = next(
            (t.get("path") for t in targets.values() if t.get("role") == "source"), None
        )
        model_path = (rec.get("model") or {}).get("path")
        study = rec.get("study") or {}
        for name, entries in attack_target_entries(rec).items():
            t = targets.get(name, {})
            fp32 = t.get("precision") == "fp32"
            if study and study.get("compression") == "int8" and fp32:
                continue  # the fp32 parent's direct figures belong to the parent's own stage
            is_artifact = t.get("kind") == "artifact"
            fmt = format_of(str(t.get("path", ""))) if is_artifact else None
            own_int8 = _own_int8({"format": fmt.name, "precision": "int8"}) if fmt else None
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


def attack_target_entries(rec: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Figures of an ``edgerobust attack`` record, per target: each attack's result at each
    strength's headline eps (``headline_eps``; records before version 2 measured one strength,
    at the sweep's last eps)."""
    strength = (rec.get("config") or {}).get("strength")
    formats = {
        t.get("name"): getattr(format_of(Path(str(t.get("path", ""))).suffix), "name", None)
        for t in rec.get("targets") or []
        if isinstance(t, dict) and t.get("kind") == "artifact"
    }
    out: dict[str, list[dict[str, Any]]] = {}
    for a in rec.get("attacks") or []:
        eps = a.get("eps") or []
        headline = a.get("headline_eps") or (
            {strength: eps[-1]} if eps and strength in ("light", "heavy") else {}
        )
        for r in a.get("results") or []:
            accs = r.get("robust_accuracy") or []
            n = r.get("n")
            for st, e in headline.items():
                if st not in ("light", "heavy") or e not in eps or len(accs) != len(eps):
                    continue
                out.setdefault(r.get("target"), []).append(
                    {
                        "attack": a.get("attack"),
                        "strength": st,
                        "format": formats.get(r.get("target")),
                        "epsilon": e,
                        "label": r.get("label"),
                        "acc": _acc_from_fraction(accs[eps.index(e)], n, r.get("label")),
                        "clean": _acc_from_fraction(r["clean_accuracy"], n)
                        if r.get("clean_accuracy") is not None
                        else None,
                    }
                )
    return out


def attack_entries(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """Normalised figures of an attack record: attack, strength, epsilon, accuracy, label, and
    the artifact format when the attack ran against an artifact (None: against a checkpoint).

    Accepts one figure per record or a list under ``results``; the robust accuracy is read from
    ``robust_correct`` / ``correct`` with ``n``, or from a fraction (``robust_accuracy`` /
    ``adversarial_accuracy`` / ``accuracy``) with ``n``.
    """
    items = rec.get("results") if isinstance(rec.get("results"), list) else [rec]
    out = []
    for it in items:
        if not isinstance(it, dict):
            continue
        merged = {**rec, **it}
        attack = str(merged.get("attack", "")).lower().replace("&", "").replace("_", "")
        attack = {"salt": "saltpepper", "saltandpepper": "saltpepper", "c w": "cw"}.get(
            attack, attack
        )
        strength = merged.get("strength")
        n = merged.get("n")
        acc = None
        for k in ("robust_correct", "adversarial_correct", "correct"):
            if merged.get(k) is not None and k in it:
                acc = _acc(merged[k], n, merged.get("label"))
                break
        if acc is None:
            for k in ("robust_accuracy", "adversarial_accuracy", "accuracy"):
                if merged.get(k) is not None:
                    acc = _acc_from_fraction(merged[k], n, merged.get("label"))
                    break
        if not attack or strength not in ("light", "heavy") or acc is None:
            continue
        artifact = merged.get("artifact") if isinstance(merged.get("artifact"), dict) else {}
        study = rec.get("study") or {}
        out.append(
            {
                "attack": attack,
                "strength": strength,
                "format": artifact.get("format") or study.get("format"),
                "epsilon": merged.get("epsilon"),
                "label": merged.get("label"),
                "acc": acc,
                "clean": _acc(merged.get("clean_correct"), n)
                if merged.get("clean_correct") is not None
                else None,
            }
        )
    return out


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


def _domain_acc(rec: dict[str, Any], domain: str) -> Acc | None:
    for d in rec.get("domains", []):
        if d.get("domain") == domain:
            return _acc(d.get("correct"), d.get("n"))
    return None


def _source_of(rec: dict[str, Any]) -> str | None:
    for d in rec.get("domains", []):
        if d.get("role") == "source":
            return d.get("domain")
    return (rec.get("artifact") or {}).get("source", {}).get("source_domain")


def _targets(rec: dict[str, Any]) -> list[str]:
    return [d["domain"] for d in rec.get("domains", []) if d.get("role") == "target"]


def _eval_rank(rec: dict[str, Any]) -> tuple:
    art, rt = rec.get("artifact") or {}, rec.get("runtime") or {}
    return (
        _order(art.get("format", ""), tuple(list_formats())),
        rt.get("threads") or 0,
        rec.get("created", ""),
    )


def best_eval(m: Model, precision: str | None = None, fmt: str | None = None) -> dict | None:
    """The one eval-device record a table shows for a model: preferred format, fewest threads."""
    evs = [
        r
        for r in m.evals
        if (precision is None or (r.get("artifact") or {}).get("precision") == precision)
        and (fmt is None or (r.get("artifact") or {}).get("format") == fmt)
    ]
    return min(evs, key=_eval_rank) if evs else None


def target_pooled(rec: dict[str, Any]) -> Acc | None:
    return pooled(_domain_acc(rec, d) for d in _targets(rec))
