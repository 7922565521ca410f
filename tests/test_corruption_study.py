"""The study's ``corruptions`` stage and the report's corruption table and plot."""

from __future__ import annotations

import json

import pytest

from edgerobust.errors import ConfigError
from edgerobust.study.plan import plan_study
from edgerobust.study.scheduler import RunConfig, run_study
from edgerobust.study.spec import parse_study, tomllib

STUDY = """
[study]
name = "tiny-c"
seed = 1
threads = 1

[dataset]
kind = "folder"
path = "{data}"
sources = ["studio"]

[train]
archs = ["tinyresnet"]
image_size = 32
epochs = 6
lr = 0.05
batch_size = 32
augment = true

[compress.quantize]
engines = ["x86"]
calib_batches = 2

[export]
formats = ["onnx"]
precisions = ["fp32", "int8"]
force = true
parity_images = 16

[corruptions]
names = ["gaussian_noise", "contrast"]
severities = [1, 3, 5]
"""


def _parse(text: str, data):
    return parse_study(tomllib.loads(text.format(data=data)))


def test_spec_resolves_all_and_checks_names(synthetic_root):
    study = _parse(STUDY.replace('["gaussian_noise", "contrast"]', '["all"]'), synthetic_root)
    assert len(study.corruptions.names) == 14 and "frost" not in study.corruptions.names
    for bad, what in (('["frost"]', "frost"), ('["rain"]', "rain")):
        with pytest.raises(ConfigError, match=what):
            _parse(STUDY.replace('["gaussian_noise", "contrast"]', bad), synthetic_root)
    with pytest.raises(ConfigError, match="severities"):
        _parse(STUDY.replace("[1, 3, 5]", "[1, 6]"), synthetic_root)


def test_corruption_stage_per_artifact_and_report(tmp_path, synthetic_root):
    from edgerobust.evaluate import EvalConfig, evaluate
    from edgerobust.report import ReportConfig, write_report

    plan = plan_study(_parse(STUDY, synthetic_root))
    stages = [s for s in plan.stages if s.kind == "corruptions"]
    assert sorted(s.meta["precision"] for s in stages) == ["fp32", "int8"]  # one per artifact
    study = tmp_path / "tiny.toml"
    study.write_text(STUDY.format(data=synthetic_root))
    out = tmp_path / "out"
    summary = run_study(RunConfig(str(study), out=str(out)))
    assert summary.ok, summary.lines()
    records = {}
    for path in sorted((out / "stages").glob("corruptions-*/corruptions.json")):
        rec = json.loads(path.read_text())
        records[rec["artifact"]["precision"]] = rec
    assert set(records) == {"fp32", "int8"}
    for rec in records.values():
        c = rec["corruptions"]
        assert rec["domain"] == "studio" and rec["split"] == "val" and c["n"] == 10
        assert [r["corruption"] for r in c["results"]] == ["gaussian_noise", "contrast"]
        # the very figures eval-device --corruptions gives on that artifact and images
        ev = evaluate(
            EvalConfig(
                rec["artifact"]["path"],
                str(synthetic_root),
                domains=("studio",),
                warmup=0,
                latency_runs=1,
                corruptions=("gaussian_noise", "contrast"),
                severities=(1, 3, 5),
            )
        )
        assert ev["domains"][0]["corruptions"]["results"] == c["results"]
    report = write_report(ReportConfig(str(out)))
    table = next(t for t in report.tables if t.name == "table_corruptions")
    assert table.columns[-4:] == ("gaussian_noise", "contrast", "Mean", "mCE")
    assert set(table.column("Images")) == {"studio val"}
    assert [row[table.columns.index("Artifact")] for row in table.rows] == [
        "onnx fp32",
        "onnx int8",
    ]
    mce = table.column("mCE")
    assert mce[0] == "1.000"  # the fp32 baseline is its own reference
    assert mce[1] is None or float(mce[1]) > 0
    fp32 = records["fp32"]["corruptions"]
    assert table.rows[0][table.columns.index("contrast")] == pytest.approx(
        100 * fp32["results"][1]["mean_accuracy"]
    )
    plot = next(p for p in report.plots if p.name == "corruptions_vs_severity")
    assert plot.path.is_file() and plot.path.stat().st_size > 1000
    page = (report.out / "index.html").read_text()
    assert "table_corruptions" in page and "corruptions_vs_severity" in page


def test_report_reads_eval_device_corruptions(artifacts, trained, synthetic_root, tmp_path):
    """Without a study: eval-device --corruptions records (and the train record that places
    them) give the same table and plot."""
    import shutil

    from edgerobust.evaluate import EvalConfig, evaluate
    from edgerobust.report import ReportConfig, write_report

    shutil.copy(trained.run / "train.json", tmp_path / "train.json")
    for prec in ("fp32", "int8"):
        evaluate(
            EvalConfig(
                str(artifacts[("onnx", prec)].artifact),
                str(synthetic_root),
                domains=("natural",),
                limit=20,
                warmup=0,
                latency_runs=1,
                corruptions=("snow", "pixelate"),
                severities=(2, 4),
                out=str(tmp_path / f"eval-{prec}.json"),
            )
        )
    report = write_report(ReportConfig(str(tmp_path)))
    table = next(t for t in report.tables if t.name == "table_corruptions")
    assert [r[table.columns.index("Artifact")] for r in table.rows] == ["onnx fp32", "onnx int8"]
    assert set(table.column("Images")) == {"natural all (sample of 20)"}
    assert table.column("mCE")[0] == "1.000"
    assert any(p.name == "corruptions_vs_severity" for p in report.plots)
