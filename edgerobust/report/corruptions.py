"""The report's corruption table and plot, from the study's ``corruptions`` records.

Table: one row per model and artifact, one column per corruption (its accuracy averaged over the
severities measured), then the mean over the benchmark corruptions and the mCE relative to the
fp32 baseline of the same source and base architecture (Hendrycks & Dietterich's normalisation,
with that baseline in AlexNet's place). Plot: mean accuracy over the corruptions against
severity (0: clean), one line per artifact, styled by compression method.
"""

from __future__ import annotations

from pathlib import Path

from edgerobust.errors import ConfigError
from edgerobust.evaluate.corruptions import corruption_errors
from edgerobust.records import CorruptionRecord
from edgerobust.report.cells import Acc, pooled
from edgerobust.report.plots import _MARKERS, _METHOD_NAMES, Plot, _figure
from edgerobust.report.records import METHOD_ORDER, Model, Models, _order, _params_cell
from edgerobust.report.tables import Table
from edgerobust.runtimes.formats import list_formats


def _from_evals(m: Model) -> list[CorruptionRecord]:
    """The corruption figures of ``eval-device --corruptions`` records, one per domain, in the
    form the study's stage writes them."""
    out = []
    for ev in m.evals:
        for d in ev.domains:
            if d.get("corruptions"):
                out.append(
                    CorruptionRecord(
                        created=ev.created,
                        edgerobust=ev.edgerobust,
                        artifact=ev.artifact,
                        runtime=ev.runtime,
                        domain=d["domain"],
                        split=d.get("split", "?"),
                        corruptions=d["corruptions"],
                        study=ev.study,
                    )
                )
    return out


def _rows(models: Models) -> list[tuple[Model, CorruptionRecord]]:
    """Every (model, corruption figures): the study's stage records, then eval-device records
    with --corruptions; one row per artifact and set of images (the newest)."""
    out = []
    for m in models.sorted():
        seen = set()
        found = sorted(
            [*m.corruptions, *_from_evals(m)],
            key=lambda r: (
                _order(r.artifact["format"], list_formats()),
                r.artifact["precision"],
                r.domain,
                r.created,
            ),
        )
        picked = []
        for rec in reversed(found):  # the newest of each artifact and images
            key = (rec.artifact.get("sha256"), rec.corruptions["images"])
            if key not in seen:
                seen.add(key)
                picked.append((m, rec))
        out.extend(reversed(picked))
    return out


def _reference(models: Models, m: Model, rec: CorruptionRecord) -> CorruptionRecord | None:
    """The fp32 baseline's record on the same images (same format preferred), for CE."""
    found = []
    for other in models.models.values():
        if other.source != m.source or other.compression != "baseline" or other.arch != m.base:
            continue
        for r in [*other.corruptions, *_from_evals(other)]:
            c, rc = rec.corruptions, r.corruptions
            same = all(c[k] == rc[k] for k in ("images", "severities", "seed", "n", "version"))
            if same and r.artifact["precision"] == "fp32":
                found.append(r)
    found.sort(key=lambda r: r.artifact["format"] != rec.artifact["format"])
    return found[0] if found else None


def corruption_tables(models: Models) -> list[Table]:
    """The corruption table, or nothing when no record has corruption figures."""
    rows = _rows(models)
    if not rows:
        return []
    names: list[str] = []
    for _, rec in rows:
        for r in rec.corruptions["results"]:
            if r["corruption"] not in names:
                names.append(r["corruption"])
    body = []
    for m, rec in rows:
        c = rec.corruptions
        by_name = {r["corruption"]: r for r in c["results"]}
        cells: list = []
        for name in names:
            r = by_name.get(name)
            cells.append(100 * r["mean_accuracy"] if r and r["mean_accuracy"] is not None else None)
        # the mean pools every benchmark corruption and severity (equal n: the plain mean)
        bench = [
            Acc(sum(r["correct"]), c["n"] * len(r["correct"]))
            for r in c["results"]
            if r["benchmark"]
        ]
        ref = _reference(models, m, rec)
        mce = None
        if ref is not None:
            try:
                mce = corruption_errors(c, ref.corruptions)["mce"]
            except ConfigError:
                mce = None
        art = rec.artifact
        body.append(
            (
                m.source,
                m.method,
                m.label,
                _params_cell(m.params),
                f"{art['format']} {art['precision']}",
                f"{rec.domain} {rec.split}",
                Acc(c["clean"]["correct"], c["n"]),
                *cells,
                pooled(bench),
                None if mce is None else f"{mce:.3f}",  # CE differences are often < 0.01
            )
        )
    sev = sorted({s for _, rec in rows for s in rec.corruptions["severities"]})
    return [
        Table(
            "table_corruptions",
            "Accuracy (%) under ImageNet-C corruptions, inside each artifact's runtime",
            (
                "Source",
                "Method",
                "Model",
                "# Params (M)",
                "Artifact",
                "Images",
                "Clean",
                *names,
                "Mean",
                "mCE",
            ),
            tuple(body),
            (
                f"Each corruption column: accuracy averaged over severities {sev} on the images "
                "named (a study: the source domain's validation split); Mean pools the benchmark "
                "corruptions' images and severities (its interval is approximate: the same "
                "images are corrupted several times).",
                "mCE: mean over corruptions of sum_s E / sum_s E_ref (E: top-1 error), with the "
                "fp32 baseline of the same source and base architecture as the reference "
                "(Hendrycks & Dietterich normalise by AlexNet); 1.00 is the baseline itself.",
                "frost is left out: its reference needs texture photographs that are not "
                "available here.",
            ),
        )
    ]


def corruption_plots(models: Models, out: Path) -> list[Plot]:
    """Mean accuracy over the corruptions against severity, per artifact, styled by method;
    nothing when no record has corruption figures."""
    rows = _rows(models)
    if not rows:
        return []
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    best: dict[str, tuple[float, str]] = {}
    seen: set[str] = set()
    for m, rec in rows:
        c = rec.corruptions
        xs, ys = [], []
        if 0 not in c["severities"]:
            xs.append(0)
            ys.append(100 * c["clean"]["accuracy"])
        xs += c["severities"]
        ys += [100 * a for a in c["mean_by_severity"]]
        k = _order(m.method, METHOD_ORDER)
        name = f"{m.source}/{m.label} {rec.artifact['format']} {rec.artifact['precision']}"
        label = _METHOD_NAMES.get(m.method, m.method)
        ax.plot(
            xs,
            ys,
            marker=_MARKERS.get(m.method, "o"),
            color=colors[k % len(colors)],
            linestyle="-" if rec.artifact["precision"] == "fp32" else "--",
            label=label if label not in seen else None,
            alpha=0.85,
        )
        seen.add(label)
        ax.annotate(name, (xs[-1], ys[-1]), fontsize=6, xytext=(3, 0), textcoords="offset points")
        mean = c["mean_accuracy"]
        if mean is not None and (label not in best or 100 * mean > best[label][0]):
            best[label] = (100 * mean, name)
    ax.set_xlabel("corruption severity (0: clean)")
    ax.set_ylabel("accuracy, mean over corruptions (%)")
    ax.set_title("Accuracy vs corruption severity, per compression method (dashed: int8)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = out / ".corruptions_vs_severity.tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    path = out / "corruptions_vs_severity.png"
    tmp.replace(path)
    headline = "best mean corruption accuracy per method: " + "; ".join(
        f"{k} {v:.1f} % ({n})" for k, (v, n) in best.items()
    )
    return [Plot("corruptions_vs_severity", path, headline)]
