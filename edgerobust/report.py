"""``edgerobust report DIR``: the paper's tables, three plots and one HTML page, from JSON records.

Only the records are read (every ``*.json`` under ``DIR`` whose ``record`` field is one of
``train``, ``prune``, ``distill``, ``quantize``, ``export``, ``eval-device``, ``attack``); nothing is
re-run or re-measured. Records under a folder holding an ``.incomplete`` marker (a stage that
has not finished, see :mod:`edgerobust.runner`) are left out.

Which model a record belongs to comes from the ``study`` block ``edgerobust run`` adds to every
record (source domain, model label, base/teacher arch, method). Records made by the single
commands have no such block; they are placed by their own fields (arch, parent, teacher) and
linked to each other through checkpoint paths.

Every accuracy is printed as ``86.2 [n=160, 80.1–90.9]``: percent, the number of images, and the
95 % Wilson interval. Averages pool the images of their columns (``n`` is the sum), which is not
the paper's unweighted mean of the columns; the tables say so.

Outputs in ``OUT`` (default ``DIR/report``): ``table1.md`` / ``table1.csv`` ... ``table5``,
``target_vs_params.png``, ``adversarial_vs_size.png``, ``latency_vs_accuracy.png``,
``index.html`` (self-contained: tables inline, plots embedded as base64 PNG).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgerobust.errors import ConfigError
from edgerobust.evaluate import wilson_interval

RECORD_KINDS = ("train", "prune", "distill", "quantize", "export", "eval-device", "attack")
INCOMPLETE = ".incomplete"
ARCH_ORDER = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "tinyresnet")
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
FORMAT_PREFERENCE = ("onnx", "torchscript", "ptl")
DASH = "–"


# --------------------------------------------------------------------------- cells and tables


@dataclass(frozen=True)
class Acc:
    """An accuracy measured on ``n`` images, with an optional robustness label."""

    correct: int
    n: int
    label: str | None = None  # direct | transfer | blackbox (attacks)

    @property
    def value(self) -> float | None:
        return self.correct / self.n if self.n else None

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.n)

    def text(self) -> str:
        if not self.n:
            return DASH
        lo, hi = self.ci95
        s = f"{100 * self.correct / self.n:.1f} [n={self.n}, {100 * lo:.1f}–{100 * hi:.1f}]"
        return f"{s} ({self.label})" if self.label else s


def pooled(accs: Iterable[Acc | None]) -> Acc | None:
    """All images of several accuracies counted together (the tables' averages)."""
    items = [a for a in accs if a is not None and a.n]
    if not items:
        return None
    # An average of attacks obtained differently says so: "direct+blackbox".
    labels = sorted({a.label for a in items if a.label})
    return Acc(sum(a.correct for a in items), sum(a.n for a in items), "+".join(labels) or None)


Cell = str | int | float | Acc | None


@dataclass(frozen=True)
class Table:
    name: str  # file stem: table1
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    notes: tuple[str, ...] = ()

    def column(self, name: str) -> list[Cell]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    def to_markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.rows:
            lines.append("| " + " | ".join(self.columns) + " |")
            lines.append("|" + "|".join("---" for _ in self.columns) + "|")
            for row in self.rows:
                lines.append("| " + " | ".join(_text(c).replace("|", "\\|") for c in row) + " |")
        else:
            lines.append("_no records for this table_")
        lines.append("")
        lines += [f"{n}  " for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def to_csv(self) -> str:
        """Machine-readable: an accuracy becomes four columns (%, n, interval) plus its label."""
        header: list[str] = []
        acc_cols = {
            i for i, _ in enumerate(self.columns) if any(isinstance(r[i], Acc) for r in self.rows)
        }
        for i, c in enumerate(self.columns):
            if i in acc_cols:
                header += [f"{c} %", f"{c} n", f"{c} ci95 low %", f"{c} ci95 high %", f"{c} label"]
            else:
                header.append(c)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        for row in self.rows:
            out: list[Any] = []
            for i, c in enumerate(row):
                if i in acc_cols:
                    if isinstance(c, Acc) and c.n:
                        lo, hi = c.ci95
                        out += [
                            f"{100 * c.correct / c.n:.2f}",
                            c.n,
                            f"{100 * lo:.2f}",
                            f"{100 * hi:.2f}",
                            c.label or "",
                        ]
                    else:
                        out += ["", "", "", "", ""]
                else:
                    out.append("" if c is None else _text(c))
            w.writerow(out)
        return buf.getvalue()

    def to_html(self) -> str:
        parts = [f"<h2 id='{self.name}'>{html.escape(self.title)}</h2>"]
        if self.rows:
            parts.append("<table><thead><tr>")
            parts += [f"<th>{html.escape(c)}</th>" for c in self.columns]
            parts.append("</tr></thead><tbody>")
            for row in self.rows:
                cells = "".join(
                    f"<td class='{'num' if isinstance(c, Acc | int | float) else ''}'>"
                    f"{html.escape(_text(c))}</td>"
                    for c in row
                )
                parts.append(f"<tr>{cells}</tr>")
            parts.append("</tbody></table>")
        else:
            parts.append("<p><em>no records for this table</em></p>")
        parts += [f"<p class='note'>{html.escape(n)}</p>" for n in self.notes]
        return "\n".join(parts)


def _text(c: Cell) -> str:
    if c is None:
        return DASH
    if isinstance(c, Acc):
        return c.text()
    if isinstance(c, float):
        return f"{c:.2f}"
    return str(c)


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
                    -1 if e.get("format") is None else _order(e["format"], FORMAT_PREFERENCE)
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
            _order(self.base, ARCH_ORDER),
            self.base,
            _order(self.method, METHOD_ORDER),
            -(self.params or 0),
            self.label,
        )


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

    def _owner(self, rec: dict[str, Any], checkpoint: Any, int8_onnx: bool) -> Model | None:
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
        if m is None or not int8_onnx or m.compression == "int8":
            return m
        # ONNX int8 is quantized by onnxruntime from the fp32 checkpoint: its own "model".
        key = (m.source, f"{m.label}-int8-onnxruntime")
        if key not in self.models:
            self.models[key] = Model(
                m.source, key[1], m.base, "PTSQ", m.arch, "int8", m.params, "onnxruntime-qdq"
            )
        return self.models[key]

    def _add_export(self, rec: dict[str, Any]) -> None:
        src = rec.get("source") or {}
        int8_onnx = rec.get("format") == "onnx" and rec.get("precision") == "int8"
        m = self._owner(rec, src.get("checkpoint"), int8_onnx)
        if m is not None:
            m.exports.append(rec)

    def _add_eval_device(self, rec: dict[str, Any]) -> None:
        art = rec.get("artifact") or {}
        src = art.get("source") or {}
        int8_onnx = art.get("format") == "onnx" and art.get("precision") == "int8"
        m = self._owner(rec, src.get("checkpoint"), int8_onnx)
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
        m = self._owner(rec, ckpt, False)
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
            onnx_int8 = is_artifact and str(t.get("path", "")).endswith(".onnx") and not fp32
            if t.get("role") == "replay":  # an int8 checkpoint the adversarials were replayed on
                owner = self.by_checkpoint.get(_ckpt_key(t.get("path")) or "")
            elif onnx_int8:
                owner = self._owner(rec, source_path or model_path, True)
            elif t.get("role") == "source":
                owner = self._owner(rec, source_path, False)
            else:
                owner = self._owner(rec, model_path, False)
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
    suffix_format = {".onnx": "onnx", ".pt": "torchscript", ".ptl": "ptl"}
    formats = {
        t.get("name"): suffix_format.get(Path(str(t.get("path", ""))).suffix)
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
        _order(art.get("format", ""), FORMAT_PREFERENCE),
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


# --------------------------------------------------------------------------- tables


def build_tables(models: Models) -> list[Table]:
    return [
        table1(models),
        table2(models),
        table3(models),
        table_attacks(models, "light"),
        table_attacks(models, "heavy"),
    ]


def _base_params(models: Models, m: Model) -> int | None:
    base = models.models.get((m.source, m.base))
    if base is not None and base.params:
        return base.params
    for other in models.models.values():
        if other.compression == "baseline" and other.arch == m.base and other.params:
            return other.params
    return None


def table1(models: Models) -> Table:
    sources = models.sources()
    rows: dict[str, list[Cell]] = {}
    accs: dict[str, dict[str, Acc | None]] = {}
    for m in models.sorted(("baseline", "pruned", "distilled")):
        if m.label not in rows:
            base_params = _base_params(models, m)
            rate = (
                f"{100 * (1 - m.params / base_params):.2f}"
                if m.params and base_params and m.method != "-"
                else DASH
            )
            shown_as = m.arch if m.method == "KD" else DASH if m.method == "-" else m.label
            rows[m.label] = [m.base, m.method, shown_as, _params_cell(m.params), rate]
            accs[m.label] = {}
        accs[m.label][m.source] = m.val
    body = tuple(
        (*rows[k], *(accs[k].get(s) for s in sources), pooled(accs[k].values())) for k in rows
    )
    return Table(
        "table1",
        "Table 1. Validation accuracy (%) on each source domain",
        (
            "Base/Teacher",
            "Method",
            "Model",
            "# Params (M)",
            "Compression rate (%)",
            *sources,
            "Avg",
        ),
        body,
        (
            "Accuracy of the PyTorch checkpoint on the source domain's validation split (best "
            "epoch), from the train / prune / distill records.",
            "Avg pools the images of all source columns (n is their sum); the paper's Avg is "
            "the unweighted mean of the columns.",
        ),
    )


def _shifts(models: Models, ms: list[Model]) -> list[tuple[str, str]]:
    shifts: list[tuple[str, str]] = []
    for m in ms:
        ev = best_eval(m, "fp32")
        if ev is None:
            continue
        for t in _targets(ev):
            if (m.source, t) not in shifts:
                shifts.append((m.source, t))
    order = models.sources()
    return sorted(shifts, key=lambda st: (_order(st[0], tuple(order)), st[1]))


def table2(models: Models) -> Table:
    ms = models.sorted(("baseline", "pruned", "distilled"))
    shifts = _shifts(models, ms)
    rows: dict[str, list[Cell]] = {}
    cells: dict[str, dict[tuple[str, str], Acc | None]] = {}
    runtimes: set[str] = set()
    for m in ms:
        ev = best_eval(m, "fp32")
        if ev is None:
            continue
        runtimes.add(f"{ev['artifact']['format']} in {ev['runtime'].get('runtime')}")
        if m.label not in rows:
            shown_as = m.arch if m.method == "KD" else DASH if m.method == "-" else m.label
            rows[m.label] = [m.base, m.method, shown_as, _params_cell(m.params)]
            cells[m.label] = {}
        for t in _targets(ev):
            cells[m.label][(m.source, t)] = _domain_acc(ev, t)
    body = tuple(
        (*rows[k], *(cells[k].get(s) for s in shifts), pooled(cells[k].values())) for k in rows
    )
    return Table(
        "table2",
        "Table 2. Accuracy (%) on target domains (source → target), fp32 artifacts",
        (
            "Base/Teacher",
            "Method",
            "Model",
            "# Params (M)",
            *(f"{s}→{t}" for s, t in shifts),
            "Avg",
        ),
        body,
        (
            f"{_target_scope(models).capitalize()}, measured inside the runtime "
            f"({', '.join(sorted(runtimes)) or DASH}; preferred format onnx > torchscript > ptl, "
            "fewest threads).",
            "Avg pools the images of all shifts (n is their sum); the paper's Avg is the "
            "unweighted mean of the columns.",
        ),
    )


def _target_scope(models: Models) -> str:
    """Which target images the eval records measured: all, or a seeded sample (eval --limit)."""
    limits = {
        (ev.get("config") or {}).get("limit") for m in models.models.values() for ev in m.evals
    }
    sampled = sorted(v for v in limits if isinstance(v, int))
    if not sampled:
        return "every image of each target domain"
    return f"a seeded sample of up to {sampled[-1]} images of each target domain (--limit)"


def table3(models: Models) -> Table:
    rows = []
    target_names: list[str] = []
    baselines = models.sorted(("baseline",))
    for b in baselines:
        for ev in b.evals:
            for t in _targets(ev):
                if t not in target_names:
                    target_names.append(t)
    target_names.sort()
    for b in baselines:
        family = [b] + [
            m
            for m in models.sorted(("int8",))
            if m.source == b.source and m.label.startswith(f"{b.label}-int8-")
        ]
        for m in family:
            formats = sorted(
                {(r.get("artifact") or {}).get("format") for r in m.evals} - {None},
                key=lambda f: _order(f, FORMAT_PREFERENCE),
            )
            for fmt in formats:
                ev = best_eval(m, None, fmt)
                assert ev is not None
                art = ev["artifact"]
                method = "-" if m.method == "-" else f"PTSQ ({m.engine or art.get('engine')})"
                attack_cells = []
                for a, _ in TABLE3_ATTACKS:
                    for strength in ("light", "heavy"):
                        entry = m.attack(a, strength, fmt)
                        attack_cells.append(entry["acc"] if entry else None)
                rows.append(
                    (
                        m.source,
                        b.base,
                        method,
                        fmt,
                        f"{art.get('size_mb', 0):.2f}",
                        _domain_acc(ev, m.source),
                        # a model's own source is not a target: its cell stays empty
                        *(None if t == m.source else _domain_acc(ev, t) for t in target_names),
                        *attack_cells,
                    )
                )
    eps = _epsilons(models)
    attack_headers = [
        f"{name} {strength}{_eps_text(eps.get((a, strength)))}"
        for a, name in TABLE3_ATTACKS
        for strength in ("light", "heavy")
    ]
    return Table(
        "table3",
        "Table 3. int8 (PTSQ) vs baseline: size, source / target accuracy (%), robustness",
        (
            "Source",
            "Base model",
            "Method",
            "Format",
            "Size (MB)",
            "Source acc",
            *(f"Target {t}" for t in target_names),
            *attack_headers,
        ),
        tuple(rows),
        (
            "Size is the artifact file; accuracies are measured inside its runtime (source: "
            f"validation split; targets: {_target_scope(models)}).",
            "Attack figures carry their label: direct (attacked model itself), transfer "
            "(adversarials crafted on the fp32 model, replayed), blackbox (decision-based, against "
            "the artifact). Gradient attacks are never run on an int8 model directly.",
        ),
    )


def _epsilons(models: Models) -> dict[tuple[str, str], Any]:
    eps: dict[tuple[str, str], Any] = {}
    for m in models.models.values():
        for e in m.attack_results:
            if e.get("epsilon") is not None:
                eps.setdefault((e["attack"], e["strength"]), e["epsilon"])
    return eps


def _eps_text(eps: Any) -> str:
    return "" if eps is None else f" (ε={eps:g})" if isinstance(eps, int | float) else f" (ε={eps})"


def table_attacks(models: Models, strength: str) -> Table:
    number = 4 if strength == "light" else 5
    eps = _epsilons(models)
    present = [
        (a, name)
        for a, name in ATTACK_COLUMNS
        if any((a, strength) in m.attacks for m in models.models.values())
    ] or list(ATTACK_COLUMNS)
    rows = []
    for m in models.sorted():
        entries = [m.attacks.get((a, strength)) for a, _ in present]
        if not any(entries):
            continue
        accs = [e["acc"] if e else None for e in entries]
        # In-domain accuracy: the checkpoint's validation accuracy; for a model that exists only
        # as an artifact (ONNX int8), measured inside its runtime; else the attacks' clean pass.
        ev = best_eval(m)
        clean = (
            _domain_acc(ev, m.source)
            if ev is not None
            else next((e["clean"] for e in entries if e and e.get("clean")), None)
        )
        rows.append(
            (
                m.source,
                m.base,
                m.method,
                m.label,
                _params_cell(m.params),
                m.val or clean,
                *accs,
                pooled(accs),
            )
        )
    return Table(
        f"table{number}",
        f"Table {number}. Accuracy (%) under {strength} adversarial perturbations",
        (
            "Source",
            "Base/Teacher",
            "Method",
            "Model",
            "# Params (M)",
            "In-domain acc",
            *(f"{name}{_eps_text(eps.get((a, strength)))}" for a, name in present),
            "Avg adversarial",
        ),
        tuple(rows),
        (
            "Attacks run on the source domain's validation split (paper: baseline-A and its "
            "compressed models); each figure carries its label (direct / transfer / blackbox).",
            "Avg adversarial pools every attack's images (n is their sum; the same images are "
            "attacked several times, so its interval is approximate).",
        ),
    )


# --------------------------------------------------------------------------- plots


@dataclass(frozen=True)
class Plot:
    name: str
    path: Path
    headline: str


_MARKERS = {"-": "o", "FP": "s", "KD": "^", "PTSQ": "D"}
_METHOD_NAMES = {
    "-": "baseline",
    "FP": "pruned (FP)",
    "KD": "distilled (KD)",
    "PTSQ": "int8 (PTSQ)",
}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower latency (x) and higher accuracy (y)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y)
            for j, (x2, y2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _figure():
    try:
        import matplotlib
    except ImportError as exc:
        from edgerobust.errors import MissingExtra

        raise MissingExtra("report plots need matplotlib: pip install 'edgerobust[torch]'") from exc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_target_vs_params(models: Models, path: Path) -> Plot:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    best: dict[str, tuple[float, str]] = {}
    any_point = False
    for method in METHOD_ORDER:
        xs, ys, names = [], [], []
        for m in models.sorted():
            if m.method != method or m.params is None:
                continue
            ev = best_eval(m, "int8" if m.method == "PTSQ" else "fp32")
            acc = target_pooled(ev) if ev else None
            if acc is None or acc.value is None:
                continue
            xs.append(m.params / 1e6)
            ys.append(100 * acc.value)
            names.append(f"{m.source}/{m.label}")
            if method not in best or 100 * acc.value > best[method][0]:
                best[method] = (100 * acc.value, f"{m.source}/{m.label}")
        if xs:
            any_point = True
            ax.scatter(xs, ys, marker=_MARKERS[method], s=50, label=_METHOD_NAMES[method])
            for x, y, n in zip(xs, ys, names, strict=True):
                ax.annotate(n, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("target accuracy, all target images (%)")
    ax.set_title("Target accuracy vs parameters, per compression method")
    if any_point:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no eval-device records", ha="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    headline = (
        "best target accuracy per method: "
        + "; ".join(f"{_METHOD_NAMES[k]} {v:.1f} % ({n})" for k, (v, n) in best.items())
        if best
        else "no target-domain measurements"
    )
    return Plot("target_vs_params", path, headline)


def plot_adversarial_vs_size(models: Models, path: Path) -> Plot:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines = []
    for strength, marker in (("light", "o"), ("heavy", "x")):
        xs, ys, names = [], [], []
        for m in models.sorted():
            accs = [e["acc"] for (a, s), e in m.attacks.items() if s == strength]
            avg = pooled(accs)
            sizes = [e.get("size_mb") for e in m.exports if e.get("size_mb")]
            if not sizes:
                sizes = [
                    (r.get("artifact") or {}).get("size_mb")
                    for r in m.evals
                    if (r.get("artifact") or {}).get("size_mb")
                ]
            if avg is None or avg.value is None or not sizes:
                continue
            xs.append(min(sizes))
            ys.append(100 * avg.value)
            names.append(f"{m.source}/{m.label}")
        if xs:
            ax.scatter(xs, ys, marker=marker, s=50, label=f"{strength} attacks")
            for x, y, n in zip(xs, ys, names, strict=True):
                ax.annotate(n, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
            top = max(range(len(ys)), key=ys.__getitem__)
            lines.append(
                f"{strength}: most robust {names[top]} ({ys[top]:.1f} %, {xs[top]:.2f} MB)"
            )
    ax.set_xlabel("artifact size (MB)")
    ax.set_ylabel("average adversarial accuracy (%)")
    ax.set_title("Adversarial accuracy vs size")
    if lines:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no attack records", ha="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Plot("adversarial_vs_size", path, "; ".join(lines) or "no attack records")


def plot_latency_vs_accuracy(models: Models, path: Path) -> Plot:
    """One panel per (source domain, runtime): accuracies on different targets do not compare."""
    plt = _figure()
    groups: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
    for m in models.sorted():
        for ev in m.evals:
            acc = target_pooled(ev)
            lat = (ev.get("latency_ms") or {}).get("p50")
            if acc is None or acc.value is None or lat is None:
                continue
            rt = ev.get("runtime") or {}
            art = ev.get("artifact") or {}
            name = f"{m.label} {art.get('format')} {art.get('precision')} x{rt.get('threads')}"
            key = (m.source, rt.get("runtime", "?"))
            groups.setdefault(key, []).append((lat, 100 * acc.value, name))
    sources = sorted({s for s, _ in groups}) or ["-"]
    runtimes = sorted({r for _, r in groups}) or ["-"]
    fig, axes = plt.subplots(
        len(sources),
        len(runtimes),
        figsize=(5.5 * len(runtimes), 4 * len(sources)),
        squeeze=False,
    )
    lines = []
    for i, source in enumerate(sources):
        for j, runtime in enumerate(runtimes):
            ax = axes[i][j]
            pts = groups.get((source, runtime), [])
            ax.set_title(f"{runtime}, source {source}", fontsize=10)
            ax.grid(alpha=0.3)
            if not pts:
                ax.text(0.5, 0.5, "no records", ha="center", transform=ax.transAxes)
                continue
            xy = [(x, y) for x, y, _ in pts]
            front = pareto_front(xy)
            ax.scatter([p[0] for p in xy], [p[1] for p in xy], color="0.6", s=30, label="measured")
            fx, fy = [xy[k][0] for k in front], [xy[k][1] for k in front]
            ax.plot(fx, fy, "-o", color="tab:red", label="Pareto front", zorder=3)
            for k in front:
                ax.annotate(pts[k][2], xy[k], fontsize=6, xytext=(3, 3), textcoords="offset points")
            ax.set_xscale("log")
            ax.set_xlabel("latency p50, batch 1 (ms)")
            ax.set_ylabel("target accuracy (%)")
            ax.legend(fontsize=7)
            lines.append(
                f"{runtime} ({source}) front: "
                + ", ".join(f"{pts[k][2]} ({xy[k][0]:.2f} ms, {xy[k][1]:.1f} %)" for k in front)
            )
    fig.suptitle("Latency vs target accuracy (Pareto front: faster and more accurate)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Plot("latency_vs_accuracy", path, "; ".join(lines) or "no eval-device records")


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class ReportConfig:
    results: str
    out: str | None = None  # default: RESULTS/report


@dataclass(frozen=True)
class ReportResult:
    out: Path
    tables: tuple[Table, ...]
    plots: tuple[Plot, ...]
    files: tuple[Path, ...]
    n_records: int

    def headlines(self) -> list[str]:
        return [f"{p.name}: {p.headline}" for p in self.plots]


def write_report(cfg: ReportConfig) -> ReportResult:
    """Read the records under ``cfg.results``; write tables, plots and ``index.html``."""
    from edgerobust.runtimes.manifest import atomic_write_bytes

    records = load_records(cfg.results)
    if not records:
        raise ConfigError(
            f"no records under {cfg.results}: pass a study's output folder "
            "(edgerobust run) or a folder of eval-device / train / attack JSON records"
        )
    models = Models(records)
    out = Path(cfg.out) if cfg.out else Path(cfg.results) / "report"
    out.mkdir(parents=True, exist_ok=True)
    tables = build_tables(models)
    files: list[Path] = []
    for t in tables:
        for suffix, text in ((".md", t.to_markdown()), (".csv", t.to_csv())):
            path = out / f"{t.name}{suffix}"
            atomic_write_bytes(path, text.encode("utf-8"))
            files.append(path)
    plots = []
    for fn, name in (
        (plot_target_vs_params, "target_vs_params"),
        (plot_adversarial_vs_size, "adversarial_vs_size"),
        (plot_latency_vs_accuracy, "latency_vs_accuracy"),
    ):
        tmp = out / f".{name}.tmp.png"
        plot = fn(models, tmp)
        tmp.replace(out / f"{name}.png")
        plots.append(Plot(plot.name, out / f"{name}.png", plot.headline))
        files.append(out / f"{name}.png")
    page = _html(cfg.results, records, tables, plots)
    atomic_write_bytes(out / "index.html", page.encode("utf-8"))
    files.append(out / "index.html")
    md = "\n".join(t.to_markdown() for t in tables)
    md += "\n## Plots\n\n" + "\n".join(f"* `{p.path.name}`: {p.headline}" for p in plots) + "\n"
    atomic_write_bytes(out / "tables.md", md.encode("utf-8"))
    files.append(out / "tables.md")
    return ReportResult(out, tuple(tables), tuple(plots), tuple(files), len(records))


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:100em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0 1em}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;white-space:nowrap}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
p.note{font-size:12px;color:#555;margin:.2em 0} img{max-width:100%;border:1px solid #eee}
"""


def _html(results: str, records: list[dict], tables: list[Table], plots: list[Plot]) -> str:
    counts: dict[str, int] = {}
    for r in records:
        counts[r["record"]] = counts.get(r["record"], 0) + 1
    studies = sorted({(r.get("study") or {}).get("study", "") for r in records} - {""})
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>edgerobust report {html.escape(', '.join(studies))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>edgerobust report{': ' + html.escape(', '.join(studies)) if studies else ''}</h1>",
        f"<p class='note'>from {len(records)} records under {html.escape(str(results))} "
        f"({html.escape(', '.join(f'{v} {k}' for k, v in sorted(counts.items())))}), "
        f"written {stamp}. Accuracies: % [n, 95 % Wilson interval].</p>",
        "<ul>"
        + "".join(f"<li><a href='#{t.name}'>{html.escape(t.title)}</a></li>" for t in tables)
        + "".join(f"<li><a href='#{p.name}'>plot: {p.name}</a></li>" for p in plots)
        + "</ul>",
    ]
    parts += [t.to_html() for t in tables]
    for p in plots:
        data = base64.b64encode(p.path.read_bytes()).decode("ascii")
        parts.append(f"<h2 id='{p.name}'>{html.escape(p.name.replace('_', ' '))}</h2>")
        parts.append(f"<p>{html.escape(p.headline)}</p>")
        parts.append(f"<img alt='{p.name}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
