"""edgerobust.report: tables, plots and the HTML page from recorded JSON only (fixtures)."""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from edgerobust.errors import ConfigError
from edgerobust.records import EvalDeviceRecord, TrainRecord, read_record
from edgerobust.report import ReportConfig, write_report
from edgerobust.report.cells import Acc, pooled
from edgerobust.report.plots import pareto_front
from edgerobust.report.records import Models, load_record_files, load_records

FIXTURES = Path(__file__).parent / "fixtures" / "records"
LABEL = r"(direct|transfer|blackbox)"
ACC_TEXT = re.compile(
    rf"^\d{{1,3}}\.\d \[n=\d+, \d{{1,3}}\.\d–\d{{1,3}}\.\d\]( \({LABEL}(\+{LABEL})*\))?$"
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return write_report(ReportConfig(str(FIXTURES), str(tmp_path_factory.mktemp("report"))))


def table(report, name):
    return next(t for t in report.tables if t.name == name)


def accuracy_cells(t) -> list[Acc]:
    return [c for row in t.rows for c in row if isinstance(c, Acc)]


def test_every_file_is_written(report):
    names = {p.name for p in report.files}
    for i in range(1, 6):
        assert {f"table{i}.md", f"table{i}.csv"} <= names
    assert {
        "target_vs_params.png",
        "adversarial_vs_size.png",
        "latency_vs_accuracy.png",
        "index.html",
    } <= names
    for p in report.files:
        assert p.parent == report.out and p.stat().st_size > 0
    for plot in report.plots:
        assert plot.path.read_bytes()[:8] == PNG_MAGIC
        assert plot.headline and "no " not in plot.headline[:3]
    assert not list(report.out.glob(".*"))  # no temporary files left behind


def test_table1_source_validation_accuracy(report):
    t = table(report, "table1")
    assert t.columns == (
        "Base/Teacher",
        "Method",
        "Model",
        "# Params (M)",
        "Compression rate (%)",
        "studio",
        "webcam",
        "Avg",
    )
    assert [r[1] for r in t.rows] == ["-", "FP", "KD"]  # baseline, pruned, distilled; no int8
    train = [r for r in load_records(FIXTURES) if isinstance(r, TrainRecord)]
    baseline = t.rows[0]
    by_source = {r.source_domain: r for r in train}
    for i, source in ((5, "studio"), (6, "webcam")):
        cell = baseline[i]
        assert cell.n == by_source[source].val_n
        assert cell.value == pytest.approx(by_source[source].val_accuracy)
    assert baseline[7].n == baseline[5].n + baseline[6].n  # the average pools both sources
    pruned = t.rows[1]
    assert 0 < float(pruned[4]) < 100 and float(pruned[3]) < float(baseline[3])


def test_table2_target_accuracy_per_shift(report):
    t = table(report, "table2")
    assert t.columns[4:] == (
        "studio→natural",
        "studio→webcam",
        "webcam→natural",
        "webcam→studio",
        "Avg",
    )
    assert len(t.rows) == 3
    for row in t.rows:
        shifts = row[4:-1]
        assert all(isinstance(c, Acc) for c in shifts)
        assert row[-1].n == sum(c.n for c in shifts)
        assert row[-1].correct == sum(c.correct for c in shifts)
    # Targets are measured on every image of the domain (10 classes x 10 images).
    assert {c.n for row in t.rows for c in row[4:-1]} == {100}


def test_table3_int8_vs_baseline_with_labels(report):
    t = table(report, "table3")
    for col in (
        "Size (MB)",
        "Source acc",
        "EAD light (ε=1)",
        "C&W L2 heavy (ε=0.4)",
        "S&P heavy (ε=15)",
    ):
        assert col in t.columns
    methods = {(r[0], r[2], r[3]) for r in t.rows}
    for source in ("studio", "webcam"):
        assert {(source, "-", "onnx"), (source, "-", "ptl")} <= methods
        assert {
            (source, "PTSQ (x86)", "ptl"),
            (source, "PTSQ (onnxruntime-qdq)", "onnx"),
        } <= methods
    size = t.columns.index("Size (MB)")
    for source in ("studio", "webcam"):
        mb = {r[2]: float(r[size]) for r in t.rows if r[0] == source and r[3] == "onnx"}
        assert mb["PTSQ (onnxruntime-qdq)"] < mb["-"]  # int8 is smaller
    ead = t.columns.index("EAD light (ε=1)")
    sp = t.columns.index("S&P light (ε=1)")
    rows = {(r[0], r[2], r[3]): r for r in t.rows}
    assert rows[("studio", "-", "onnx")][ead].label == "direct"
    assert rows[("studio", "PTSQ (x86)", "ptl")][ead].label == "transfer"
    assert rows[("studio", "PTSQ (x86)", "ptl")][sp].label == "blackbox"
    assert rows[("webcam", "-", "onnx")][ead] is None  # no attack ran there: nothing printed
    for r in t.rows:  # the source domain is the source column, never a target column
        assert r[t.columns.index(f"Target {r[0]}")] is None
        others = [c for c in t.columns if c.startswith("Target") and c != f"Target {r[0]}"]
        assert others and all(r[t.columns.index(c)] is not None for c in others)


def test_tables_4_and_5_attacks(report):
    for name, strength in (("table4", "light"), ("table5", "heavy")):
        t = table(report, name)
        cols = [c for c in t.columns if "(ε=" in c]
        assert [c.split(" (")[0] for c in cols] == [
            "PGD Linf",
            "FGSM",
            "C&W L2",
            "EAD",
            "Salt&Pepper",
        ]
        assert t.columns[-1] == "Avg adversarial"
        assert {r[3] for r in t.rows} == {
            "tinyresnet",
            "tinyresnet-fp-0.4",
            "tinyresnet-kd-tinyresnet",
            "tinyresnet-int8-x86",
        }
        for row in t.rows:
            attacks = [c for c in row[6:-1] if c is not None]
            assert row[-1].n == sum(c.n for c in attacks)
            clean = row[5]
            assert all(c.value <= 1 for c in attacks) and clean.n > 0
            int8 = row[2] == "PTSQ"
            # gradient attacks are never shown for int8 except as transfer
            grad = [c for c, h in zip(row[6:-1], cols, strict=True) if not h.startswith("Salt")]
            assert all(c is None or c.label == ("transfer" if int8 else "direct") for c in grad)
        assert strength in t.title


def test_every_accuracy_has_n_and_a_95_interval(report):
    cells = [c for t in report.tables for c in accuracy_cells(t)]
    assert len(cells) > 50
    for c in cells:
        assert ACC_TEXT.match(c.text()), c.text()
        lo, hi = c.ci95
        assert lo <= c.value <= hi
    md = (report.out / "table2.md").read_text()
    assert md.count("[n=") == sum(1 for _ in accuracy_cells(table(report, "table2")))


def test_csv_splits_accuracies_into_value_n_and_interval(report):
    t = table(report, "table2")
    rows = list(csv.DictReader(io.StringIO((report.out / "table2.csv").read_text())))
    assert len(rows) == len(t.rows)
    for row, trow in zip(rows, t.rows, strict=True):
        cell = trow[t.columns.index("studio→webcam")]
        assert int(row["studio→webcam n"]) == cell.n
        assert float(row["studio→webcam %"]) == pytest.approx(100 * cell.value, abs=0.01)
        assert float(row["studio→webcam ci95 low %"]) <= float(row["studio→webcam %"])
        assert float(row["studio→webcam ci95 high %"]) >= float(row["studio→webcam %"])


def test_html_is_self_contained(report):
    page = (report.out / "index.html").read_text()
    for t in report.tables:
        assert t.title.split(".")[0] in page
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 3
    assert all(base64.b64decode(img)[:8] == PNG_MAGIC for img in images)
    assert not re.search(r"(src|href)=['\"](https?:|file:|/)", page)  # nothing fetched from outside
    # every table scrolls in its own box: Tables 3-5 are wider than a page
    with_rows = [t for t in report.tables if t.rows]
    assert page.count("<div class='wide'><table>") == len(with_rows) > 0


def test_pareto_front_minimises_latency_and_maximises_accuracy():
    points = [(1.0, 50.0), (2.0, 70.0), (3.0, 60.0), (0.5, 40.0), (2.0, 65.0), (4.0, 90.0)]
    assert pareto_front(points) == [3, 0, 1, 5]
    assert pareto_front([(1.0, 1.0)]) == [0]
    # the headline names the front of every runtime that was measured
    recs = load_records(FIXTURES)
    runtimes = {r.runtime["runtime"] for r in recs if isinstance(r, EvalDeviceRecord)}
    assert runtimes == {"onnxruntime", "ptl"}
    assert pooled([Acc(1, 2), None, Acc(3, 4)]) == Acc(4, 6)


def test_unfinished_stages_and_foreign_json_are_ignored(tmp_path):
    root = tmp_path / "results"
    shutil.copytree(FIXTURES, root)
    n = len(load_records(root))
    (root / "notes.json").write_text(json.dumps({"hello": 1}))
    (root / "broken.json").write_text("{")
    partial = root / "stages" / "train-unfinished"
    partial.mkdir(parents=True)
    shutil.copy(next(root.glob("train-*/train.json")), partial / "train.json")
    assert len(load_records(root)) == n + 1
    (partial / ".incomplete").write_text("")
    assert len(load_records(root)) == n


def test_records_without_a_study_block_are_placed_by_their_fields(tmp_path):
    records = [dataclasses.replace(r, study=None) for r in load_records(FIXTURES)]
    kinds = {"train", "prune", "quantize", "eval-device"}
    models = Models([r for r in records if r.KIND in kinds])
    labels = {(m.source, m.method) for m in models.models.values()}
    assert {("studio", "-"), ("studio", "FP"), ("studio", "PTSQ"), ("webcam", "-")} <= labels
    base = models.models[("studio", "tinyresnet")]
    assert base.evals and all(e.artifact["source"]["source_domain"] == "studio" for e in base.evals)


def test_no_records_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no records under"):
        write_report(ReportConfig(str(tmp_path)))
    with pytest.raises(ConfigError, match="results folder not found"):
        write_report(ReportConfig(str(tmp_path / "nope")))


def test_cli_report(tmp_path):
    from typer.testing import CliRunner

    from edgerobust.cli import app

    res = CliRunner().invoke(app, ["report", str(FIXTURES), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "table2: 3 rows" in res.output and (tmp_path / "index.html").is_file()


def test_attack_record_figures_go_to_the_target_they_measured():
    """An ``edgerobust attack`` record on an int8 model: the fp32 source is attacked directly,
    the int8 model and artifacts only get transferred adversarials (and S&P, black-box)."""
    from edgerobust.report.records import attack_target_entries

    rec = json.loads((Path(__file__).parent / "fixtures" / "attack-int8-heavy.json").read_text())
    assert rec["record_version"] == 1  # before headline_eps: the sweep's last eps is the figure
    figures = attack_target_entries(read_record(rec))
    roles = {t["name"]: t for t in rec["targets"]}
    assert set(figures) == set(roles)
    for target, entries in figures.items():
        labels = {e["label"] for e in entries}
        if roles[target]["precision"] == "int8":
            assert "direct" not in labels and "transfer" in labels
        else:
            assert "transfer" not in labels and "direct" in labels
        assert all(e["strength"] == "heavy" for e in entries)
        fmt = {e["format"] for e in entries}
        assert fmt == (
            {None}
            if roles[target]["kind"] == "torch"
            else {Path(roles[target]["path"]).suffix.lstrip(".")}
        )
    # each figure is the sweep's last budget, with the record's n
    for a in rec["attacks"]:
        for r in a["results"]:
            e = next(e for e in figures[r["target"]] if e["attack"] == a["attack"])
            assert e["epsilon"] == a["eps"][-1]
            assert e["acc"].n == r["n"]
            assert e["acc"].correct == round(r["robust_accuracy"][-1] * r["n"])


def test_target_notes_say_when_targets_were_sampled(report):
    from edgerobust.report.tables import table2, table3

    assert "every image of each target domain" in " ".join(table(report, "table2").notes).lower()
    records = [
        dataclasses.replace(r, config={**r.config, "limit": 400})
        if isinstance(r, EvalDeviceRecord)
        else r
        for r in load_records(FIXTURES)
    ]
    models = Models(records)
    for t in (table2(models), table3(models)):
        assert "a seeded sample of up to 400 images" in " ".join(t.notes).lower()


def test_a_study_folder_reports_only_its_latest_plan(tmp_path):
    """Stage folders an earlier plan left behind (a setting changed since) are not reported."""
    train = next(FIXTURES.rglob("train.json"))
    for name in ("train-current", "train-stale"):
        (tmp_path / "stages" / name).mkdir(parents=True)
        (tmp_path / "stages" / name / "train.json").write_text(train.read_text())
    assert len(load_records(tmp_path)) == 2  # no summary.json: not a study folder, read it all
    summary = {"stages": [{"stage": "train x", "dir": "/elsewhere/stages/train-current"}]}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    ((path, _),) = load_record_files(tmp_path)
    assert path.parent.name == "train-current"


def test_latencies_measured_on_shared_cores_are_flagged(tmp_path):
    """An eval-device record whose latency runs shared the cores with another process is named
    in the latency plot's headline, not silently placed on the Pareto front."""
    root = tmp_path / "results"
    shutil.copytree(FIXTURES, root)
    path = next(root.glob("eval-device-*/*.json"))
    body = json.loads(path.read_text())
    body["latency_ms"]["contention"] = {"other_cores": 1.8, "warning": "cores shared"}
    path.write_text(json.dumps(body))
    report = write_report(ReportConfig(str(root), str(tmp_path / "out")))
    plot = next(p for p in report.plots if p.name == "latency_vs_accuracy")
    assert "latency measured while other processes shared the cores" in plot.headline
    assert "(cores shared)" in plot.headline
    quiet = write_report(ReportConfig(str(FIXTURES), str(tmp_path / "quiet")))
    plot = next(p for p in quiet.plots if p.name == "latency_vs_accuracy")
    assert "shared the cores" not in plot.headline
