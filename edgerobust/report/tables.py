"""The paper's tables from :class:`~edgerobust.report.records.Models`: cells with n and interval,
Markdown and CSV."""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass
from typing import Any

from edgerobust.report.cells import Acc, Cell, pooled
from edgerobust.report.records import (
    ATTACK_COLUMNS,
    DASH,
    TABLE3_ATTACKS,
    Model,
    Models,
    _domain_acc,
    _order,
    _params_cell,
    _targets,
    best_eval,
)
from edgerobust.runtimes.formats import list_formats


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
            parts.append("<div class='wide'><table><thead><tr>")
            parts += [f"<th>{html.escape(c)}</th>" for c in self.columns]
            parts.append("</tr></thead><tbody>")
            for row in self.rows:
                cells = "".join(
                    f"<td class='{'num' if isinstance(c, Acc | int | float) else ''}'>"
                    f"{html.escape(_text(c))}</td>"
                    for c in row
                )
                parts.append(f"<tr>{cells}</tr>")
            parts.append("</tbody></table></div>")
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
    ms = models.sorted(("baseline", "pruned", "distilled", "imported"))
    shifts = _shifts(models, ms)
    rows: dict[str, list[Cell]] = {}
    cells: dict[str, dict[tuple[str, str], Acc | None]] = {}
    runtimes: set[str] = set()
    for m in ms:
        ev = best_eval(m, "fp32")
        if ev is None:
            continue
        runtimes.add(f"{ev.artifact['format']} in {ev.runtime['runtime']}")
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
    limits = {ev.config.get("limit") for m in models.models.values() for ev in m.evals}
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
                {r.artifact["format"] for r in m.evals},
                key=lambda f: _order(f, list_formats()),
            )
            for fmt in formats:
                ev = best_eval(m, None, fmt)
                assert ev is not None
                art = ev.artifact
                method = "-" if m.method == "-" else f"PTSQ ({m.engine or art['engine']})"
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
                        f"{art['size_mb']:.2f}",
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
            if e["epsilon"] is not None:
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
            else next((e["clean"] for e in entries if e and e["clean"]), None)
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
