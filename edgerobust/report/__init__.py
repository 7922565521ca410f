"""``edgerobust report DIR``: the paper's tables, three plots and one HTML page, from JSON records.

Only the records are read (every ``*.json`` under ``DIR`` whose ``record`` field is one of
``train``, ``prune``, ``distill``, ``quantize``, ``export``, ``eval-device``, ``attack``,
``corruptions``); nothing is
re-run or re-measured. Records under a folder holding an ``.incomplete`` marker (a stage that
has not finished, see :mod:`edgerobust.study.store`) are left out.

Which model a record belongs to comes from the ``study`` block ``edgerobust run`` adds to every
record (source domain, model label, base/teacher arch, method). Records made by the single
commands have no such block; they are placed by their own fields (arch, parent, teacher) and
linked to each other through checkpoint paths.

Every accuracy is printed as ``86.2 [n=160, 80.1–90.9]``: percent, the number of images, and the
95 % Wilson interval. Averages pool the images of their columns (``n`` is the sum), which is not
the paper's unweighted mean of the columns; the tables say so.

Outputs in ``OUT`` (default ``DIR/report``): ``table1.md`` / ``table1.csv`` ... ``table5``,
``target_vs_params.png``, ``adversarial_vs_size.png``, ``latency_vs_accuracy.png``,
``index.html`` (self-contained: tables inline, plots embedded as base64 PNG). With records of
a ``corruptions`` stage also ``table_corruptions`` and ``corruptions_vs_severity.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgerobust.errors import ConfigError
from edgerobust.report.corruptions import corruption_plots, corruption_tables
from edgerobust.report.findings import FindingRow, findings_table, judge_findings, to_csv
from edgerobust.report.html import _html
from edgerobust.report.plots import (
    Plot,
    plot_adversarial_vs_size,
    plot_latency_vs_accuracy,
    plot_target_vs_params,
)
from edgerobust.report.records import Models, load_records
from edgerobust.report.tables import Table, build_tables

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
    skipped: dict[str, str] = field(default_factory=dict)  # .json files that are not records
    findings: tuple[FindingRow, ...] = ()

    def headlines(self) -> list[str]:
        return [f"{p.name}: {p.headline}" for p in self.plots]


def write_report(cfg: ReportConfig) -> ReportResult:
    """Read the records under ``cfg.results``; write tables, plots and ``index.html``."""
    from edgerobust.runtimes.manifest import atomic_write_bytes

    skipped: dict[str, str] = {}
    records = load_records(cfg.results, skipped)
    if not records:
        unread = (
            f" ({len(skipped)} .json file(s) could not be read, e.g. {next(iter(skipped))}: "
            f"{next(iter(skipped.values()))})"
            if skipped
            else ""
        )
        raise ConfigError(
            f"no records under {cfg.results}{unread}: pass a study's output folder "
            "(edgerobust run) or a folder of eval-device / train / attack JSON records"
        )
    models = Models(records)
    out = Path(cfg.out) if cfg.out else Path(cfg.results) / "report"
    out.mkdir(parents=True, exist_ok=True)
    findings = judge_findings(models)
    tables = build_tables(models) + corruption_tables(models) + [findings_table(findings)]
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
    for plot in corruption_plots(models, out):
        plots.append(plot)
        files.append(plot.path)
    for name, text in (
        ("findings.json", json.dumps([r.to_dict() for r in findings], indent=1)),
        ("findings_detail.csv", to_csv(findings)),
    ):
        atomic_write_bytes(out / name, text.encode("utf-8"))
        files.append(out / name)
    page = _html(cfg.results, records, tables, plots)
    atomic_write_bytes(out / "index.html", page.encode("utf-8"))
    files.append(out / "index.html")
    md = "\n".join(t.to_markdown() for t in tables)
    md += "\n## Plots\n\n" + "\n".join(f"* `{p.path.name}`: {p.headline}" for p in plots) + "\n"
    atomic_write_bytes(out / "tables.md", md.encode("utf-8"))
    files.append(out / "tables.md")
    return ReportResult(
        out, tuple(tables), tuple(plots), tuple(files), len(records), skipped, tuple(findings)
    )
