"""edgerobust.records: the typed records are what the writers write and what the report reads.

The main test runs every writer the report reads on the tests' tiny model (train, prune, distill,
quantize, the study's export and Salt&Pepper stages, eval-device, attack), collects the JSON they
wrote into one folder, and feeds that folder to the report: no hand-written record involved.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgerobust.errors import ConfigError
from edgerobust.records import (
    AttackFigureRecord,
    AttackRecord,
    DistillRecord,
    EvalDeviceRecord,
    ExportRecord,
    PruneRecord,
    QuantizeRecord,
    TrainRecord,
    read_record,
    record_kinds,
)

FIXTURES = Path(__file__).parent / "fixtures" / "records"


@pytest.fixture(scope="module")
def written(tmp_path_factory, trained, int8_checkpoint, artifacts, synthetic_root) -> Path:
    """One folder holding the records the real writers wrote (one subfolder per writer)."""
    from edgerobust.attacks.run import AttackConfig, run_attacks
    from edgerobust.compress.distill import DistillConfig, distill
    from edgerobust.compress.prune import PruneConfig, prune_checkpoint
    from edgerobust.evaluate import EvalConfig, evaluate
    from edgerobust.progress import NullReporter
    from edgerobust.study import stages  # noqa: F401 - registers the stage adapters
    from edgerobust.study.stage import StageOutput, get_stage_kind
    from edgerobust.study.store import execute_stage

    root = tmp_path_factory.mktemp("written")
    work = tmp_path_factory.mktemp("writers")
    rep = NullReporter()

    def keep(src: Path, name: str) -> None:
        (root / name).mkdir()
        shutil.copy(src, root / name / src.name)

    keep(trained.run / "train.json", "train")
    keep(int8_checkpoint.parent / "quantize.json", "quantize")
    prune_checkpoint(
        PruneConfig(
            checkpoint=str(trained.checkpoint),
            out=str(work / "pruned"),
            ratio=0.5,
            epochs=1,
            batch_size=32,
            device="cpu",
        )
    )
    keep(work / "pruned" / "prune.json", "prune")
    distill(
        DistillConfig(
            str(trained.checkpoint),
            str(synthetic_root),
            "studio",
            str(work / "kd"),
            student="tinyresnet",
            student_weights="none",
            epochs=1,
            batch_size=32,
            device="cpu",
        )
    )
    keep(work / "kd" / "distill.json", "distill")

    # the study's export stage (the only writer of export records), from the trained model
    model = StageOutput(trained.run, trained.record, trained.run / "train.json")
    export_dir = work / "export"
    export_dir.mkdir()
    export_json = get_stage_kind("export").run(
        {
            "format": "onnx",
            "quant": "fp32",
            "name": None,
            "parity_images": 8,
            "min_agreement": 0.98,
            "force": True,
        },
        {"model": model},
        export_dir,
        rep,
    )
    keep(Path(export_json), "export")
    exported = StageOutput(export_dir, json.loads(Path(export_json).read_text()), export_json)

    evaluate(
        EvalConfig(
            str(exported.path("artifact")),
            str(synthetic_root),
            warmup=1,
            latency_runs=3,
            out=str(work / "eval.json"),
        )
    )
    keep(work / "eval.json", "eval-device")

    run_attacks(
        AttackConfig(
            str(trained.run),
            attacks=("fgsm",),
            strength="both",
            limit=6,
            device="cpu",
            out=str(work / "attack.json"),
        )
    )
    keep(work / "attack.json", "attack")

    # the study's Salt&Pepper stage (one-figure attack records), against the exported artifact.
    # Its records name no checkpoint: the study block (added by the runner's store, with the
    # fields the planner gives such a stage) says which model they measured.
    sp_dir = work / "saltpepper"
    execute_stage(
        "saltpepper",
        {
            "runtime": "onnxruntime",
            "threads": 1,
            "limit": 6,
            "strengths": ["light", "heavy"],
            "epsilons": [1, 15],
            "steps": 10,
            "seed": 0,
            "batch_size": 8,
            "stop": "exact",
            "data": str(synthetic_root),
        },
        {"artifact": exported},
        sp_dir,
        {
            "study": "writers",
            "stage": "saltpepper",
            "key": "sp",
            "source": "studio",
            "model": "tinyresnet",
            "base": "tinyresnet",
            "method": "-",
            "arch": "tinyresnet",
            "compression": "baseline",
            "format": "onnx",
            "precision": "fp32",
        },
        rep,
        1,
    )
    (root / "saltpepper").mkdir()
    for p in sp_dir.glob("saltpepper-*.json"):
        shutil.copy(p, root / "saltpepper" / p.name)
    return root


def _raw(folder: Path) -> list[tuple[Path, dict]]:
    return [(p, json.loads(p.read_text())) for p in sorted(folder.rglob("*.json"))]


def test_every_writer_output_reads_back_typed_and_round_trips(written):
    types: dict[str, set[type]] = {}
    for path, data in _raw(written):
        rec = read_record(data)
        assert rec.to_dict() == data, path  # the writer wrote exactly to_dict()
        assert list(rec.to_dict()) == list(data), path  # key order too
        assert type(rec).from_dict(rec.to_dict()) == rec
        types.setdefault(path.parent.name, set()).add(type(rec))
    assert types == {
        "train": {TrainRecord},
        "prune": {PruneRecord},
        "distill": {DistillRecord},
        "quantize": {QuantizeRecord},
        "export": {ExportRecord},
        "eval-device": {EvalDeviceRecord},
        "attack": {AttackRecord},
        "saltpepper": {AttackFigureRecord},
    }


def test_the_report_shows_the_figures_the_writers_wrote(written, tmp_path):
    from edgerobust.report import ReportConfig, write_report

    res = write_report(ReportConfig(str(written), str(tmp_path)))
    tables = {t.name: t for t in res.tables}
    recs = {
        p.parent.name: read_record(d) for p, d in _raw(written) if p.parent.name != "saltpepper"
    }

    t1 = tables["table1"]
    rows = {r[1]: r for r in t1.rows}
    assert set(rows) == {"-", "FP", "KD"}
    studio = t1.columns.index("studio")
    for method, kind in (("-", "train"), ("FP", "prune"), ("KD", "distill")):
        cell = rows[method][studio]
        assert (cell.n, cell.value) == (recs[kind].val_n, pytest.approx(recs[kind].val_accuracy))

    ev = recs["eval-device"]
    assert isinstance(ev, EvalDeviceRecord)
    t2 = tables["table2"]
    (row,) = t2.rows
    for target in ev.targets:
        cell = row[t2.columns.index(f"studio→{target}")]
        d = ev.domain(target)
        assert (cell.correct, cell.n) == (d["correct"], d["n"])

    t3 = tables["table3"]
    (row3,) = [r for r in t3.rows if r[3] == "onnx" and r[2] == "-"]
    assert row3[t3.columns.index("Size (MB)")] == f"{ev.artifact['size_mb']:.2f}"
    sp_col = next(c for c in t3.columns if c.startswith("S&P heavy"))
    assert sp_col == "S&P heavy (ε=15)", t3.columns
    sp = row3[t3.columns.index(sp_col)]
    figure = next(
        AttackFigureRecord.from_dict(d)
        for p, d in _raw(written / "saltpepper")
        if d["strength"] == "heavy"
    )
    assert (sp.correct, sp.n, sp.label) == (figure.robust_correct, figure.n, "blackbox")

    attack = recs["attack"]
    assert isinstance(attack, AttackRecord)
    (fgsm,) = attack.attacks
    (result,) = fgsm["results"]
    for name, strength in (("table4", "light"), ("table5", "heavy")):
        t = tables[name]
        (base,) = [r for r in t.rows if r[3] == "tinyresnet"]
        col = next(c for c in t.columns if c.startswith("FGSM"))
        cell = base[t.columns.index(col)]
        eps = fgsm["headline_eps"][strength]
        want = result["robust_accuracy"][fgsm["eps"].index(eps)]
        assert (cell.n, cell.value, cell.label) == (result["n"], pytest.approx(want), "direct")


def test_fixtures_read_back_typed():
    for path in FIXTURES.rglob("*.json"):
        data = json.loads(path.read_text())
        rec = read_record(data)
        assert type(rec).from_dict(rec.to_dict()) == rec


def test_an_older_quantize_record_is_migrated_explicitly():
    data = json.loads(next(FIXTURES.glob("quantize-*/quantize.json")).read_text())
    assert "top1_agreement" not in data  # written before the agreement check
    rec = read_record(data)
    assert isinstance(rec, QuantizeRecord) and rec.top1_agreement is None and rec.warning is None
    assert list(rec.to_dict())[-3:] == ["warning", "config", "study"]


def test_drift_between_writer_and_report_is_one_clear_error(tmp_path):
    data = json.loads(next(FIXTURES.glob("eval-device-*/eval.json")).read_text())
    assert read_record(data)
    with pytest.raises(ConfigError, match="newer than this edgerobust reads"):
        read_record({**data, "record_version": 99})
    with pytest.raises(ConfigError, match="unknown record kind 'evaluation'"):
        read_record({**data, "record": "evaluation"})
    renamed = {("accuracy_ms" if k == "latency_ms" else k): v for k, v in data.items()}
    with pytest.raises(ConfigError, match="unknown key.*accuracy_ms"):
        read_record(renamed)
    dropped = {
        **data,
        "domains": [{k: v for k, v in d.items() if k != "correct"} for d in data["domains"]],
    }
    with pytest.raises(ConfigError, match="domains lacks key.*correct"):
        read_record(dropped)
    with pytest.raises(ConfigError, match="val_n is str"):
        read_record(
            {**json.loads(next(FIXTURES.glob("train-*/train.json")).read_text()), "val_n": "9"}
        )
    # the report names the file
    from edgerobust.report.records import load_records

    (tmp_path / "eval.json").write_text(json.dumps(renamed))
    with pytest.raises(ConfigError, match=r"eval\.json: eval-device record"):
        load_records(tmp_path)


def test_the_registry_knows_every_kind_the_report_reads():
    from edgerobust.report.records import RECORD_KINDS

    assert set(RECORD_KINDS) == set(record_kinds())
