"""The findings logic on the records of a tiny real study (tests/fixtures/findings), each verdict's
numbers recomputed here from the raw JSON without edgerobust's report code."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgerobust.errors import ConfigError
from edgerobust.report import ReportConfig, write_report
from edgerobust.report.findings import FINDINGS, judge_findings
from edgerobust.report.records import Models, load_records
from edgerobust.report.stats import paired_bootstrap_interval

RECORDS = Path(__file__).parent / "fixtures" / "findings" / "records"


def _raw() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RECORDS.rglob("*.json"))]


@functools.cache
def _fixture_rows() -> tuple:
    return tuple(judge_findings(Models(load_records(RECORDS))))


def _rows(root: Path = RECORDS) -> dict:
    rows = _fixture_rows() if root == RECORDS else judge_findings(Models(load_records(root)))
    return {r.key: r for r in rows}


def _evals_by_model() -> dict[str, dict]:
    """model label -> its ONNX Runtime eval-device record (1 thread), straight from the JSON."""
    out = {}
    for r in _raw():
        if r["record"] == "eval-device" and r["runtime"]["runtime"] == "onnxruntime":
            out[r["study"]["model"]] = r
    return out


def _target_outcomes(rec: dict) -> np.ndarray:
    bits = "".join(d["outcomes"] for d in rec["domains"] if d["role"] == "target")
    return np.array([c == "1" for c in bits])


def _target_images(rec: dict) -> np.ndarray:
    """One id per target image: the same picture in several pairs is one cluster."""
    return np.array(
        [
            f"{d['domain']}#{i}"
            for d in rec["domains"]
            if d["role"] == "target"
            for i in range(d["n"])
        ]
    )


def test_every_finding_is_judged_on_the_fixture_study():
    rows = _rows()
    assert [k for k in rows] == ["F1", "F2", "F3", "F4", "F5a", "F5b", "F6"]
    assert {f for f in FINDINGS} == {"F1", "F2", "F3", "F4", "F5", "F6"}
    for r in rows.values():
        assert r.verdict in ("supported", "contradicted", "unresolved"), (r.key, r.why_missing)
        assert r.n > 0 and r.pairs > 0 and "paired bootstrap" in r.method
        lo, hi = r.ci95_pp
        assert lo <= r.difference_pp <= hi


def test_f1_recomputed_from_the_raw_records():
    # the pruning chain of tinyresnet: base (79 k) -> pruned to 47 k -> pruned to 30 k; and
    # tinymobilenetv2 (47 k) -> pruned to 30 k. Each step: more pruned minus less pruned.
    ev = _evals_by_model()
    steps = [
        ("tinyresnet-fp-tinymobilenetv2", "tinyresnet"),
        ("tinyresnet-fp-30k", "tinyresnet-fp-tinymobilenetv2"),
        ("tinymobilenetv2-fp-30k", "tinymobilenetv2"),
    ]
    a = np.concatenate([_target_outcomes(ev[more]) for more, _ in steps])
    b = np.concatenate([_target_outcomes(ev[less]) for _, less in steps])
    ids = np.concatenate([_target_images(ev[more]) for more, _ in steps])
    row = _rows()["F1"]
    assert row.pairs == 3 and row.n == a.size and row.images == len(set(ids)) < a.size
    assert row.difference_pp == pytest.approx(round(100 * (a.mean() - b.mean()), 2))
    # the interval: a bootstrap over images, each image's outcomes in all three pairs together
    # (the resampling order differs from the report's, so the percentiles agree to ~0.3 points)
    lo, hi = paired_bootstrap_interval(a, b, clusters=ids, resamples=20_000, seed=5)
    assert row.ci95_pp == pytest.approx((100 * lo, 100 * hi), abs=0.6)
    if min(abs(lo), abs(hi)) > 0.01:  # not at the edge: the verdict follows the interval
        verdict = "supported" if hi < 0 else "contradicted" if lo > 0 else "unresolved"
        assert row.verdict == verdict


def test_f4_pairs_each_int8_artifact_with_its_parent_in_the_same_format():
    by_model_fmt = {}
    for r in _raw():
        if r["record"] == "eval-device":
            by_model_fmt[(r["study"]["model"], r["artifact"]["format"])] = r
    pairs = [
        (q, fmt, by_model_fmt[(q, fmt)], by_model_fmt[(q.rsplit("-int8-", 1)[0], fmt)])
        for (q, fmt) in by_model_fmt
        if "-int8-" in q
    ]
    assert len(pairs) == 4  # 2 baselines x (onnxruntime QDQ, x86 PTSQ in lite)
    a = np.concatenate([_target_outcomes(p[2]) for p in pairs])
    b = np.concatenate([_target_outcomes(p[3]) for p in pairs])
    row = _rows()["F4"]
    assert row.n == a.size and row.pairs == 4
    assert row.difference_pp == pytest.approx(round(100 * (a.mean() - b.mean()), 2))
    assert "above -2 points" in row.rule  # a non-inferiority claim: the line at -2 points


def test_attack_findings_pair_the_same_images():
    rows = _rows()
    # F5a: C&W and EAD at two strengths, replayed on 2 int8 versions of 2 baselines
    f5a = rows["F5a"]
    assert f5a.images <= f5a.n and f5a.p_value is None  # several outcomes per image: clustered
    assert {f["attack"] for d in f5a.details for f in d["figures"]} == {"cw", "ead"}
    f6 = rows["F6"]
    assert f6.details and f6.details[0]["a"] == "tinyresnet-kd-tinymobilenetv2"
    assert f6.details[0]["b"] == "tinyresnet-fp-tinymobilenetv2"


def test_missing_records_are_named_not_guessed(tmp_path):
    root = tmp_path / "records"
    shutil.copytree(RECORDS, root)
    for p in sorted(root.rglob("*.json")):  # no KD student, no attack of any kind
        if not p.exists():
            continue  # its folder went already
        rec = json.loads(p.read_text())
        if (
            rec["record"] in ("distill", "attack")
            or (rec.get("study") or {}).get("compression") == "distilled"
        ):
            shutil.rmtree(p.parent)
    rows = _rows(root)
    for key in ("F3", "F5a", "F5b", "F6"):
        assert rows[key].verdict == "missing" and rows[key].why_missing, key
        assert rows[key].difference_pp is None
    assert rows["F1"].verdict != "missing"


def test_records_without_outcomes_fall_back_to_an_unpaired_comparison(tmp_path):
    root = tmp_path / "records"
    shutil.copytree(RECORDS, root)
    for p in root.rglob("eval.json"):
        rec = json.loads(p.read_text())
        for d in rec["domains"]:
            d.pop("outcomes"), d.pop("images_sha256")
        p.write_text(json.dumps(rec))
    row = _rows(root)["F1"]
    assert row.verdict != "missing" and "Newcombe" in row.method and "predates" in row.method
    assert row.difference_pp == pytest.approx(_rows()["F1"].difference_pp, abs=0.01)


def test_tampered_outcomes_are_refused(tmp_path):
    root = tmp_path / "records"
    shutil.copytree(RECORDS, root)
    p = next(root.rglob("eval.json"))
    rec = json.loads(p.read_text())
    d = rec["domains"][0]
    d["outcomes"] = (
        d["outcomes"].replace("0", "1", 1) if "0" in d["outcomes"] else "0" + d["outcomes"][1:]
    )
    p.write_text(json.dumps(rec))
    with pytest.raises(ConfigError, match="outcomes"):
        load_records(root)


def test_the_report_writes_the_findings(tmp_path):
    res = write_report(ReportConfig(str(RECORDS), str(tmp_path / "report")))
    assert [r.key for r in res.findings][:2] == ["F1", "F2"]
    data = json.loads((tmp_path / "report" / "findings.json").read_text())
    assert [d["key"] for d in data] == [r.key for r in res.findings]
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Findings" in page and "F6" in page
    md = (tmp_path / "report" / "findings.md").read_text()
    assert "| F1 |" in md
