"""The paper's findings, judged from the records with paired statistics.

Each finding of Shen et al. is one registered judge (:data:`FINDINGS`): it picks the pairs of
models the claim is about from :class:`~edgerobust.report.records.Models`, compares them on the
same images (per-image outcomes in the eval-device and attack records), and returns one or more
:class:`FindingRow` with the difference in percentage points, its 95 % interval, n and a verdict
(:func:`edgerobust.report.stats.verdict`):

* **supported** - the whole interval lies on the claimed side (of 0, or of ``-margin`` for a
  claim that one model is "at least as good" as another),
* **contradicted** - it lies wholly on the other side,
* **unresolved** - it straddles the line: these images cannot tell,
* **missing** - the records the claim needs are not there (the row says which).

How pairs are pooled: every pair of models a claim names (e.g. each pruned model against its less
pruned sibling, in every source) contributes its per-image outcomes on every target domain; the
pooled difference is the mean over all those (image, pair) outcomes, and the interval is a
bootstrap over images (outcomes of the same image - the same picture under several attacks - are
resampled together). Records without per-image outcomes (written before edgerobust recorded
them) fall back to an unpaired comparison of pooled counts (Newcombe's interval), and the row
says so.

Nothing here re-runs or re-measures; numpy and the standard library only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgerobust.records import EvalDeviceRecord, decode_outcomes
from edgerobust.registry import Registry
from edgerobust.report.records import Model, Models, best_eval
from edgerobust.report.stats import Comparison, compare_independent, compare_paired, verdict
from edgerobust.report.tables import Table

SAME_SIZE = 0.05  # two models are "of the same size" when their parameter counts differ <= 5 %
KD_MARGIN = 0.01  # F3 "at least match": not more than 1 point worse
INT8_MARGIN = 0.02  # F4 "a slight decrease (paper: 1.2 points)": not more than 2 points worse
WHITEBOX = ("deepfool", "pgd", "fgsm", "cw", "ddn", "ead")


@dataclass(frozen=True)
class FindingRow:
    """One judged claim (a finding may give several rows, e.g. F5a and F5b)."""

    key: str
    claim: str
    compared: str  # which models, A - B, and how many pairs
    verdict: str  # supported | contradicted | unresolved | missing
    rule: str  # how the verdict is decided
    difference_pp: float | None = None  # A - B in percentage points
    ci95_pp: tuple[float, float] | None = None
    n: int = 0  # paired outcomes (or images of A when unpaired)
    images: int = 0  # distinct images behind them
    pairs: int = 0
    p_value: float | None = None
    method: str = ""
    why_missing: str | None = None
    details: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Finding:
    key: str
    claim: str
    judge: Callable[[Models], list[FindingRow]]


FINDINGS: Registry[Finding] = Registry("finding")


def register_finding(key: str, claim: str) -> Callable[[Callable], Callable]:
    def deco(fn: Callable[[Models], list[FindingRow]]) -> Callable[[Models], list[FindingRow]]:
        FINDINGS.add(key, Finding(key, claim, fn))
        return fn

    return deco


def judge_findings(models: Models) -> list[FindingRow]:
    """Every registered finding's rows, in registration order."""
    rows: list[FindingRow] = []
    for _, f in FINDINGS.items():
        rows.extend(f.judge(models))
    return rows


# --------------------------------------------------------------------------- pooling pairs


@dataclass
class Pooled:
    """Outcomes of model A and model B on the same images, over several pairs of models."""

    a: list[np.ndarray] = field(default_factory=list)
    b: list[np.ndarray] = field(default_factory=list)
    clusters: list[np.ndarray] = field(default_factory=list)
    counts: list[tuple[int, int, int, int]] = field(default_factory=list)  # unpaired fallback
    unpaired: list[str] = field(default_factory=list)  # why a part fell back to counts
    details: list[dict[str, Any]] = field(default_factory=list)
    pairs: int = 0

    def add(
        self,
        a: str | None,
        b: str | None,
        cluster: str,
        counts: tuple[int, int, int, int],
        why_unpaired: str | None,
    ) -> None:
        """One part: outcome strings of A and B on the same images (``cluster`` names them)."""
        self.counts.append(counts)
        if why_unpaired is not None or a is None or b is None:
            self.unpaired.append(why_unpaired or "no per-image outcomes")
            return
        xa, xb = np.asarray(decode_outcomes(a)), np.asarray(decode_outcomes(b))
        self.a.append(xa)
        self.b.append(xb)
        self.clusters.append(np.asarray([f"{cluster}#{i}" for i in range(len(xa))]))

    def compare(self, seed: int = 0) -> Comparison | None:
        if not self.counts:
            return None
        if not self.unpaired:
            return compare_paired(
                np.concatenate(self.a),
                np.concatenate(self.b),
                clusters=np.concatenate(self.clusters),
                seed=seed,
            )
        ka, na, kb, nb = (sum(c[i] for c in self.counts) for i in range(4))
        if na == 0 or nb == 0:
            return None
        return compare_independent(ka, na, kb, nb)

    @property
    def n_images(self) -> int:
        return len(set(np.concatenate(self.clusters).tolist())) if self.clusters else 0


def _row(
    key: str,
    claim: str,
    compared: str,
    pool: Pooled,
    *,
    expected_sign: int,
    margin: float | None = None,
    missing: str,
) -> FindingRow:
    rule = (
        f"supported when the 95 % interval of A - B lies above -{100 * margin:g} points"
        if margin is not None
        else f"supported when the 95 % interval of A - B lies {'below' if expected_sign < 0 else 'above'} 0"
    )
    cmp = pool.compare()
    if cmp is None:
        return FindingRow(key, claim, compared, "missing", rule, why_missing=missing)
    method = cmp.method
    if pool.unpaired:
        method += f" - unpaired because {sorted(set(pool.unpaired))[0]}"
    return FindingRow(
        key,
        claim,
        compared,
        verdict(cmp, expected_sign, margin),
        rule,
        difference_pp=round(100 * cmp.difference, 2),
        ci95_pp=(round(100 * cmp.ci95[0], 2), round(100 * cmp.ci95[1], 2)),
        n=cmp.n_a,
        images=pool.n_images if not pool.unpaired else cmp.n_a,
        pairs=pool.pairs,
        p_value=cmp.p_value,
        method=method,
        details=pool.details,
    )


# --------------------------------------------------------------------------- target accuracy


def _eval_of(m: Model, fmt: str | None = None) -> EvalDeviceRecord | None:
    """The eval-device record a finding uses for ``m``: its own precision, the preferred format
    (or ``fmt``), fewest threads - the one the tables show."""
    precision = "int8" if m.compression == "int8" else "fp32"
    return best_eval(m, precision, fmt)


def _add_targets(pool: Pooled, a: Model, b: Model, fmt: str | None = None) -> bool:
    """Pair ``a`` and ``b`` on every target domain both were evaluated on; False if none."""
    ea, eb = _eval_of(a, fmt), _eval_of(b, fmt)
    if ea is None or eb is None:
        return False
    added = False
    diffs = []
    for name in ea.targets:
        da, db = ea.domain(name), eb.domain(name)
        if db is None or db.get("role") != "target":
            continue
        why = None
        if da.get("outcomes") is None or db.get("outcomes") is None:
            why = "a record predates per-image outcomes (re-run eval-device)"
        elif da.get("images_sha256") != db.get("images_sha256"):
            why = f"the two evaluations of {name} used different images (--limit?)"
        pool.add(
            da.get("outcomes"),
            db.get("outcomes"),
            f"{a.source}/{name}",
            (da["correct"], da["n"], db["correct"], db["n"]),
            why,
        )
        diffs.append((name, da["correct"] / da["n"] - db["correct"] / db["n"]))
        added = True
    if added:
        pool.pairs += 1
        pool.details.append(
            {
                "source": a.source,
                "a": a.label,
                "b": b.label,
                "format": ea.artifact["format"],
                "difference_pp": {d: round(100 * v, 2) for d, v in diffs},
            }
        )
    return added


def _baselines(models: Models) -> dict[tuple[str, str], Model]:
    return {(m.source, m.arch): m for m in models.sorted(("baseline",))}


def _same_size(p: int | None, q: int | None) -> bool:
    return p is not None and q is not None and abs(p - q) <= SAME_SIZE * max(p, q)


@register_finding("F1", "pruning loses target accuracy as the pruning ratio grows")
def _f1(models: Models) -> list[FindingRow]:
    pool = Pooled()
    bases = _baselines(models)
    for (source, arch), base in bases.items():
        pruned = [m for m in models.sorted(("pruned",)) if m.source == source and m.base == arch]
        chain = sorted([base, *pruned], key=lambda m: -(m.params or 0))
        for less, more in zip(chain, chain[1:], strict=False):
            _add_targets(pool, more, less)
    return [
        _row(
            "F1",
            FINDINGS.get("F1").claim,
            "A: a pruned model, B: the same base pruned less (or not at all); target domains",
            pool,
            expected_sign=-1,
            missing="needs a baseline and at least one model pruned from it, evaluated on "
            "target domains",
        )
    ]


@register_finding(
    "F2", "pruning a larger base to the same size does worse on targets than a smaller base"
)
def _f2(models: Models) -> list[FindingRow]:
    pool = Pooled()
    bases = _baselines(models)
    pruned = models.sorted(("pruned",))
    for i, p in enumerate(pruned):
        for q in pruned[i + 1 :]:
            if p.source != q.source or p.base == q.base or not _same_size(p.params, q.params):
                continue
            bp, bq = bases.get((p.source, p.base)), bases.get((q.source, q.base))
            if bp is None or bq is None or bp.params is None or bq.params is None:
                continue
            larger, smaller = (p, q) if bp.params > bq.params else (q, p)
            _add_targets(pool, larger, smaller)
    return [
        _row(
            "F2",
            FINDINGS.get("F2").claim,
            "A: pruned from the larger base, B: pruned from the smaller base to the same size "
            f"(params within {100 * SAME_SIZE:g} %); target domains",
            pool,
            expected_sign=-1,
            missing="needs two bases pruned to the same size",
        )
    ]


@register_finding("F3", "KD students at least match the same-size baseline on target domains")
def _f3(models: Models) -> list[FindingRow]:
    pool = Pooled()
    bases = _baselines(models)
    for s in models.sorted(("distilled",)):
        b = bases.get((s.source, s.arch))
        if b is not None:
            _add_targets(pool, s, b)
    return [
        _row(
            "F3",
            FINDINGS.get("F3").claim,
            "A: a distilled student, B: the baseline of the student's architecture; targets",
            pool,
            expected_sign=1,
            margin=KD_MARGIN,
            missing="needs a distilled student and a baseline of the student's architecture",
        )
    ]


def _parent(models: Models, m: Model) -> Model | None:
    """The fp32 model an int8 model was quantized from (labels: PARENT-int8-ENGINE)."""
    label = m.label.rsplit("-int8-", 1)[0]
    parent = models.models.get((m.source, label))
    return parent if parent is not None and parent.compression != "int8" else None


@register_finding(
    "F4", "int8 costs only a slight loss of target accuracy (paper: 1.2 points on average)"
)
def _f4(models: Models) -> list[FindingRow]:
    pool = Pooled()
    for q in models.sorted(("int8",)):
        parent = _parent(models, q)
        if parent is None:
            continue
        for ev in q.evals:
            if ev.artifact["precision"] == "int8":
                _add_targets(pool, q, parent, ev.artifact["format"])
    return [
        _row(
            "F4",
            FINDINGS.get("F4").claim,
            "A: an int8 artifact, B: its fp32 parent in the same format, each in its runtime; "
            "target domains",
            pool,
            expected_sign=1,
            margin=INT8_MARGIN,
            missing="needs int8 artifacts and their fp32 parents' artifacts of the same format, "
            "evaluated on target domains",
        )
    ]


# --------------------------------------------------------------------------- adversarial


def _entries(m: Model, attacks: Iterable[str], label: str, fmt: str | None) -> list[dict]:
    return [
        e
        for e in m.attack_results
        if e["attack"] in attacks and e["label"] == label and e.get("format") == fmt
    ]


def _add_attacks(pool: Pooled, a: list[dict], b: list[dict], ma: Model, mb: Model) -> None:
    """Pair attack figures of A and B on the same (attack, strength) and images."""
    by_key = {(e["attack"], e["strength"]): e for e in b}
    parts = []
    for ea in a:
        eb = by_key.get((ea["attack"], ea["strength"]))
        if eb is None:
            continue
        why = None
        if ea.get("outcomes") is None or eb.get("outcomes") is None:
            why = "an attack record predates per-image outcomes (re-run the attack)"
        elif ea.get("images") != eb.get("images"):
            why = "the two attacks ran on different images"
        pool.add(
            ea.get("outcomes"),
            eb.get("outcomes"),
            f"{ma.source}/{ea.get('images')}",  # one cluster per image, across attacks
            (ea["acc"].correct, ea["acc"].n, eb["acc"].correct, eb["acc"].n),
            why,
        )
        parts.append(
            {
                "attack": ea["attack"],
                "strength": ea["strength"],
                "a": f"{100 * ea['acc'].value:.1f} ({ea['label']})",
                "b": f"{100 * eb['acc'].value:.1f} ({eb['label']})",
            }
        )
    if parts:
        pool.pairs += 1
        pool.details.append({"source": ma.source, "a": ma.label, "b": mb.label, "figures": parts})


@register_finding(
    "F5",
    'int8 "resists" C&W and EAD (re-examined: adversarials of the fp32 twin replayed, '
    "and Salt&Pepper against both artifacts)",
)
def _f5(models: Models) -> list[FindingRow]:
    transfer, blackbox = Pooled(), Pooled()
    for q in models.sorted(("int8",)):
        parent = _parent(models, q)
        if parent is None:
            continue
        _add_attacks(
            transfer,
            _entries(q, ("cw", "ead"), "transfer", None)
            + [e for f in _formats(q) for e in _entries(q, ("cw", "ead"), "transfer", f)],
            _entries(parent, ("cw", "ead"), "direct", None),
            q,
            parent,
        )
        for f in _formats(q):
            _add_attacks(
                blackbox,
                _entries(q, ("saltpepper",), "blackbox", f),
                _entries(parent, ("saltpepper",), "blackbox", f),
                q,
                parent,
            )
    claim = FINDINGS.get("F5").claim
    return [
        _row(
            "F5a",
            claim,
            "A: int8 under C&W/EAD adversarials crafted on its fp32 twin (transfer), B: the fp32 "
            "twin attacked directly; light and heavy budgets",
            transfer,
            expected_sign=1,
            missing="needs attack records of fp32 models with their int8 versions replayed "
            "(attack stage with models including int8)",
        ),
        _row(
            "F5b",
            claim,
            "A: an int8 artifact under Salt&Pepper (black-box, in its runtime), B: its fp32 "
            "parent's artifact of the same format",
            blackbox,
            expected_sign=1,
            missing="needs Salt&Pepper records of int8 artifacts and their fp32 parents'",
        ),
    ]


def _formats(m: Model) -> list[str]:
    return sorted({e["format"] for e in m.attack_results if e.get("format")})


@register_finding(
    "F6", "KD students are more adversarially robust than pruned models of the same size"
)
def _f6(models: Models) -> list[FindingRow]:
    pool = Pooled()
    pruned = models.sorted(("pruned",))
    for s in models.sorted(("distilled",)):
        for p in pruned:
            if p.source == s.source and _same_size(s.params, p.params):
                _add_attacks(
                    pool,
                    _entries(s, WHITEBOX, "direct", None),
                    _entries(p, WHITEBOX, "direct", None),
                    s,
                    p,
                )
    return [
        _row(
            "F6",
            FINDINGS.get("F6").claim,
            "A: a distilled student, B: a pruned model of the same size "
            f"(params within {100 * SAME_SIZE:g} %); white-box attacks, light and heavy",
            pool,
            expected_sign=1,
            missing="needs white-box attack records of a distilled and a same-size pruned model",
        )
    ]


# --------------------------------------------------------------------------- output

COLUMNS = ("finding", "verdict", "A - B (points)", "95 % interval", "n", "claim", "compared")


def cells(row: FindingRow) -> tuple[str, ...]:
    if row.verdict == "missing":
        return (row.key, "missing", "–", "–", "0", row.claim, row.why_missing or "")
    lo, hi = row.ci95_pp or (0.0, 0.0)
    n = f"{row.n} ({row.images} images, {row.pairs} pair{'s' if row.pairs != 1 else ''})"
    return (
        row.key,
        row.verdict,
        f"{row.difference_pp:+.1f}",
        f"{lo:+.1f} to {hi:+.1f}",
        n,
        row.claim,
        row.compared,
    )


def findings_table(rows: list[FindingRow]) -> Table:
    """The findings as a report table (Markdown, CSV-free: :func:`to_csv` has every number)."""
    notes = [f"{r.key}: {r.rule}; {r.method}." for r in rows if r.method]
    notes += [
        "Differences are A - B in percentage points, pooled over every pair of models and "
        "target domain (or attack) the claim names; n counts the paired outcomes. "
        "Verdicts: edgerobust.report.findings."
    ]
    return Table(
        "findings",
        "Findings: claims of the paper judged on these records",
        COLUMNS,
        tuple(cells(r) for r in rows),
        tuple(notes),
    )


def to_csv(rows: list[FindingRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "finding",
            "verdict",
            "difference_pp",
            "ci95_low_pp",
            "ci95_high_pp",
            "n",
            "images",
            "pairs",
            "p_value",
            "claim",
            "compared",
            "rule",
            "method",
            "why_missing",
        ]
    )
    for r in rows:
        lo, hi = r.ci95_pp or (None, None)
        w.writerow(
            [
                r.key,
                r.verdict,
                r.difference_pp,
                lo,
                hi,
                r.n,
                r.images,
                r.pairs,
                r.p_value,
                r.claim,
                r.compared,
                r.rule,
                r.method,
                r.why_missing or "",
            ]
        )
    return buf.getvalue()


__all__ = [
    "FINDINGS",
    "Finding",
    "FindingRow",
    "judge_findings",
    "register_finding",
    "findings_table",
    "to_csv",
]
