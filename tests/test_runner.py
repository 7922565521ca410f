"""edgerobust.study (plan, store, scheduler): stage keys, caching, exact reruns, failures,
parallel jobs, kill -9 + resume.

One tiny study (tinyresnet, 32 x 32 synthetic images, a few epochs) is run once per module and
compared with interrupted, changed, failing and parallel runs of the same study.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgerobust.study.plan import plan_study
from edgerobust.study.scheduler import RunConfig, run_study
from edgerobust.study.spec import parse_study, tomllib
from edgerobust.study.stage import StageKind
from edgerobust.study.store import DONE, INCOMPLETE, load_output

STUDY = """
[study]
name = "tiny"
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
formats = ["onnx", "ptl"]
precisions = ["fp32", "int8"]
force = true
parity_images = 16

[eval]
runtimes = ["onnxruntime", "ptl"]
threads = [1]
latency_runs = 3
warmup = 1
"""


def write_study(folder: Path, data: Path, text: str = STUDY) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.toml"
    path.write_text(text.format(data=data))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, synthetic_root):
    """The tiny study, run once without interruption: (study file, output folder, summary)."""
    root = tmp_path_factory.mktemp("study")
    study = write_study(root, synthetic_root)
    summary = run_study(RunConfig(str(study), out=str(root / "out")))
    assert summary.ok, summary.lines()
    return study, root / "out", summary


def keys_by_kind(text: str, data: Path) -> dict[str, set[str]]:
    plan = plan_study(parse_study(tomllib.loads(text.format(data=data))))
    out: dict[str, set[str]] = {}
    for s in plan.stages:
        out.setdefault(s.kind, set()).add(s.key)
    return out


def changed_kinds(a: dict[str, set[str]], b: dict[str, set[str]]) -> set[str]:
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def test_a_changed_setting_changes_exactly_the_keys_downstream(synthetic_root):
    base = keys_by_kind(STUDY, synthetic_root)
    assert base == keys_by_kind(STUDY, synthetic_root)  # keys are a pure function of the study
    assert {k: len(v) for k, v in base.items()} == {
        "train": 1,
        "quantize": 1,
        "export": 4,
        "eval-device": 4,
    }
    # export setting -> every export and every eval below it; train and quantize keep their keys
    after = keys_by_kind(STUDY.replace("parity_images = 16", "parity_images = 8"), synthetic_root)
    assert changed_kinds(base, after) == {"export", "eval-device"}
    assert not (base["export"] & after["export"]) and not (
        base["eval-device"] & after["eval-device"]
    )
    # eval setting -> eval only
    after = keys_by_kind(STUDY.replace("latency_runs = 3", "latency_runs = 4"), synthetic_root)
    assert changed_kinds(base, after) == {"eval-device"}
    # PTSQ setting -> quantize, the int8 torch export made from it and its eval; nothing else
    after = keys_by_kind(STUDY.replace("calib_batches = 2", "calib_batches = 3"), synthetic_root)
    assert changed_kinds(base, after) == {"quantize", "export", "eval-device"}
    assert len(base["export"] - after["export"]) == 1
    assert len(base["eval-device"] - after["eval-device"]) == 1
    # training setting -> everything
    after = keys_by_kind(STUDY.replace("epochs = 6", "epochs = 5"), synthetic_root)
    assert all(not (base[k] & after[k]) for k in base)


def test_rerun_after_a_change_runs_exactly_the_stages_downstream(finished, tmp_path):
    study, out, first = finished
    assert {r.status for r in first.results} == {"ran"}
    again = run_study(RunConfig(str(study), out=str(out)))
    assert {r.status for r in again.results} == {"cached"}

    changed = tmp_path / "tiny.toml"
    changed.write_text(study.read_text().replace("parity_images = 16", "parity_images = 8"))
    dry = run_study(RunConfig(str(changed), out=str(out), dry_run=True))
    pending = {Path(r.dir).name for r in dry.by_status("pending")}
    assert {name.rsplit("-", 1)[0] for name in pending} == {"export", "eval-device"}
    assert len(pending) == 8 and len(dry.by_status("cached")) == 2
    assert not any((out / "stages" / name).exists() for name in pending)  # a dry run runs nothing

    rerun = run_study(RunConfig(str(changed), out=str(out)))
    assert {Path(r.dir).name for r in rerun.by_status("ran")} == pending
    assert {r.stage for r in rerun.by_status("cached")} == {
        r.stage for r in dry.by_status("cached")
    }


def _tensor_digest(path: Path) -> str:
    """sha256 of a checkpoint's tensors (its file also names its own run folder in the spec)."""
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for name, t in sorted(load_file(str(path)).items()):
        h.update(name.encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _artifact_digest(path: Path) -> str:
    """ONNX: the file's sha256 (export is byte-deterministic). TorchScript / lite archives hold
    process-dependent parts (a random serialization id, type-mangling counters, the temporary
    file's name), so they are compared by what they compute: their logits on a fixed batch."""
    import numpy as np

    from edgerobust.runtimes import open_artifact

    if path.suffix == ".onnx":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    x = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    return hashlib.sha256(np.asarray(open_artifact(path, threads=1)(x)).tobytes()).hexdigest()


def results_of(out: Path, study: Path) -> dict[str, dict]:
    """What must not depend on interruptions: every stage's measured figures and weights."""
    from edgerobust.study.spec import load_study

    results = {}
    for stage in plan_study(load_study(study)).stages:
        folder = out / "stages" / stage.dirname
        done = load_output(folder)
        assert done is not None, folder
        rec = done.record
        kind = folder.name.rsplit("-", 1)[0]
        if kind == "train":
            fig = {"val": rec["val_accuracy"], "history": rec["history"]}
        elif kind == "quantize":
            fig = {k: rec[k] for k in ("val_accuracy_int8", "val_accuracy_fp32", "val_n")}
        elif kind == "export":
            fig = {"content": _artifact_digest(Path(rec["artifact"])), "parity": rec["parity"]}
        else:
            fig = {d["domain"]: (d["correct"], d["n"]) for d in rec["domains"]}
        ckpt = folder / "model.safetensors"
        if ckpt.is_file():
            fig["weights"] = _tensor_digest(ckpt)
        results[folder.name] = fig
    return results


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    return False


def _start(study: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgerobust.cli",
            "run",
            str(study),
            "--out",
            str(out),
            "--no-report",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_kill_9_at_any_moment_then_resume_gives_the_uninterrupted_results(finished, tmp_path):
    study, reference, _ = finished
    out = tmp_path / "out"
    stages = out / "stages"

    def train_dir() -> Path | None:
        found = list(stages.glob("train-*")) if stages.is_dir() else []
        return found[0] if found else None

    # 1. Kill during training (after its first epoch), when the window is caught.
    proc = _start(study, out)
    _wait_for(lambda: (d := train_dir()) is not None and (d / "last.safetensors").is_file(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # 2. Restart; kill as soon as training is committed, while later stages are in flight.
    proc = _start(study, out)
    assert _wait_for(lambda: (d := train_dir()) is not None and (d / DONE).is_file(), proc), (
        proc.stderr.read().decode() if proc.stderr else ""
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()  # it really was cut off mid-study
    folders = [d for d in stages.iterdir() if not d.name.startswith(".")]  # not the staging
    unfinished = [d for d in folders if not (d / DONE).is_file()]
    assert len([d for d in folders if (d / DONE).is_file()]) < 10
    assert all((d / INCOMPLETE).is_file() for d in unfinished)

    # 3. Start again: the study completes, nothing finished is redone ...
    summary = run_study(RunConfig(str(study), out=str(out)))
    assert summary.ok, summary.lines()
    assert summary.by_status("cached") and summary.by_status("ran")
    assert not list(stages.rglob(INCOMPLETE))
    # ... and every figure, weight and artifact equals the uninterrupted run's.
    assert results_of(out, study) == results_of(reference, study)


@pytest.mark.parametrize("where", ["marker", "delete"])
def test_a_stage_folder_never_exists_without_its_marker(tmp_path, monkeypatch, where):
    """A kill while a stage folder is being made (before its INCOMPLETE marker is written) or
    while an unfinished attempt is being deleted must not leave a folder whose records a
    report would read as final: both happen under ``.staging`` and are renamed."""
    from pathlib import Path as P

    from edgerobust.report.records import load_record_files
    from edgerobust.study import store

    stages = tmp_path / "stages"
    folder = stages / "attack-0123"
    record = {"record": "attack", "record_version": 1}
    if where == "delete":  # an unfinished attempt of a stage that cannot resume, with a record
        folder.mkdir(parents=True)
        (folder / INCOMPLETE).write_text("x")
        (folder / "attack.json").write_text(json.dumps(record))

    class Killed(BaseException):
        pass

    def killed(*a, **k):
        raise Killed

    if where == "marker":
        real = P.write_text
        monkeypatch.setattr(
            P,
            "write_text",
            lambda self, *a, **k: killed() if self.name == INCOMPLETE else real(self, *a, **k),
        )
    else:  # killed part-way through deleting: the marker already gone, the record not yet

        def partly(path, *a, **k):
            (P(path) / INCOMPLETE).unlink()
            killed()

        monkeypatch.setattr(store.shutil, "rmtree", partly)
    with pytest.raises(Killed):
        store._open_folder(folder, keep=False)
    monkeypatch.undo()
    assert not folder.exists()
    assert load_record_files(tmp_path) == []  # the deleted attempt's record is not read
    store._open_folder(folder, keep=False)  # the next attempt cleans up after the killed one
    assert (folder / INCOMPLETE).is_file() and not list(folder.glob("*.json"))
    assert not list((stages / store.STAGING).iterdir())


def test_a_failed_stage_skips_its_dependents_and_the_rest_completes(
    tmp_path, synthetic_root, monkeypatch
):
    from edgerobust.study import stage as runner

    def boom(settings, inputs, out, rep):
        raise RuntimeError("boom: the calibration exploded")

    real = runner.get_stage_kind("quantize")
    monkeypatch.setitem(
        runner.STAGE_KINDS._items, "quantize", StageKind("quantize", boom, real.version)
    )
    study = write_study(tmp_path, synthetic_root)
    summary = run_study(RunConfig(str(study), out=str(tmp_path / "out")))
    assert not summary.ok
    (failed,) = summary.by_status("failed")
    assert failed.stage.startswith("quantize") and "RuntimeError: boom" in failed.reason
    skipped = summary.by_status("skipped")
    assert [s.stage.split()[0] for s in skipped] == ["export", "eval-device"]  # ptl int8 + its eval
    assert "needs quantize" in skipped[0].reason and skipped[0].reason.endswith("which failed")
    assert f"needs {skipped[0].stage}" in skipped[1].reason and "skipped" in skipped[1].reason
    assert len(summary.by_status("ran")) == 1 + 3 + 3  # train, the other exports and their evals
    lines = summary.lines()
    assert any(line.startswith("FAILED  quantize") for line in lines)
    log = (tmp_path / "out" / "study.log").read_text()
    assert "Traceback" in log and "boom" in log
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["counts"] == {"ran": 7, "failed": 1, "skipped": 2}
    assert not (Path(failed.dir) / DONE).exists() and (Path(failed.dir) / "error.txt").is_file()

    # Fixed, the next run does exactly what is missing: the failed stage and its dependents.
    monkeypatch.setitem(runner.STAGE_KINDS._items, "quantize", real)
    again = run_study(RunConfig(str(study), out=str(tmp_path / "out")))
    assert again.ok, again.lines()
    assert {r.stage for r in again.by_status("ran")} == {failed.stage} | {s.stage for s in skipped}
    assert len(again.by_status("cached")) == 7


def test_a_failed_int8_model_does_not_stop_its_parent_being_attacked(
    tmp_path, synthetic_root, monkeypatch
):
    """The replay targets of an attack stage are optional: when PTSQ fails the fp32 model is
    still attacked (and replayed on what exists); once PTSQ works, the attack runs again."""
    from edgerobust.study import stage as runner

    def boom(settings, inputs, out, rep):
        raise RuntimeError("boom: the calibration exploded")

    real = runner.get_stage_kind("quantize")
    monkeypatch.setitem(
        runner.STAGE_KINDS._items, "quantize", StageKind("quantize", boom, real.version)
    )
    text = STUDY + '\n[attack]\nattacks = ["fgsm"]\nstrengths = ["heavy"]\nlimit = 4\n'
    study = write_study(tmp_path, synthetic_root, text)
    out = tmp_path / "out"
    summary = run_study(RunConfig(str(study), out=str(out)))
    assert [r.stage.split()[0] for r in summary.by_status("failed")] == ["quantize"]
    (attack,) = [r for r in summary.results if r.stage.startswith("attack")]
    assert attack.status == "ran"
    rec = json.loads((Path(attack.dir) / "attack.json").read_text())
    assert [t["role"] for t in rec["targets"]] == ["checkpoint", "artifact"]  # ONNX int8 only
    assert list(rec["study"]["missing_inputs"]) == ["replay:tinyresnet-int8-x86"]

    monkeypatch.setitem(runner.STAGE_KINDS._items, "quantize", real)
    again = run_study(RunConfig(str(study), out=str(out)))
    assert again.ok, again.lines()
    (attack,) = [r for r in again.results if r.stage.startswith("attack")]
    assert attack.status == "ran"  # not the cached run that lacked the int8 model
    rec = json.loads((Path(attack.dir) / "attack.json").read_text())
    assert [t["role"] for t in rec["targets"]] == ["checkpoint", "replay", "artifact"]
    assert "missing_inputs" not in rec["study"]
    third = run_study(RunConfig(str(study), out=str(out)))
    assert not third.by_status("ran")  # and now it is cached


def test_parallel_jobs_give_the_serial_results(finished, tmp_path):
    study, reference, _ = finished
    summary = run_study(RunConfig(str(study), out=str(tmp_path / "out"), jobs=2))
    assert summary.ok, summary.lines()
    assert results_of(tmp_path / "out", study) == results_of(reference, study)
    log = (tmp_path / "out" / "study.log").read_text()
    assert "jobs 2" in log and "epoch 1:" in log  # workers' log lines reach the study log


def test_cli_dry_run_and_one_line_errors(finished, tmp_path):
    from typer.testing import CliRunner

    from edgerobust.cli import app

    study, out, _ = finished
    res = CliRunner().invoke(app, ["run", str(study), "--out", str(out), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "10 stages: 0 to run, 10 cached" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text(study.read_text().replace("epochs = 6", "epochs = -1"))
    proc = subprocess.run(
        [sys.executable, "-m", "edgerobust.cli", "run", str(bad), "--dry-run"],
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: bad.toml: train.epochs: expected an integer in [1, ...], got -1"
    ]


def test_study_attacks_craft_once_per_model_and_measure_every_deployed_version(
    tmp_path, synthetic_root
):
    """White-box: one stage per fp32 model and strength, replaying onto its int8 versions (torch
    PTSQ, ONNX int8 artifact: transfer). Salt&Pepper: against every artifact (blackbox)."""
    from edgerobust.evaluate import EvalConfig, evaluate
    from edgerobust.report import ReportConfig, write_report
    from edgerobust.report.records import Models, load_records

    text = STUDY + (  # limit 10: the whole validation split of studio
        '\n[attack]\nattacks = ["fgsm", "saltpepper"]\nlimit = 10\nsaltpepper_steps = 30\n'
    )
    plan = plan_study(parse_study(tomllib.loads(text.format(data=synthetic_root))))
    attacks = [s for s in plan.stages if s.kind == "attack"]
    assert [s.settings["strength"] for s in attacks] == ["both"]  # one search, both budgets
    for s in attacks:
        assert sorted(role for role, _ in s.deps if role != "data") == [
            "artifact:tinyresnet-int8-onnxruntime",
            "model",
            "replay:tinyresnet-int8-x86",
        ]
    study = write_study(tmp_path, synthetic_root, text)
    out = tmp_path / "out"
    summary = run_study(RunConfig(str(study), out=str(out)))
    assert summary.ok, summary.lines()
    models = Models(load_records(out)).models
    fgsm = {
        label: {
            (e["strength"], e["label"], e["format"])
            for e in m.attack_results
            if e["attack"] == "fgsm"
        }
        for (_, label), m in models.items()
    }
    assert fgsm["tinyresnet"] == {("light", "direct", None), ("heavy", "direct", None)}
    assert fgsm["tinyresnet-int8-x86"] == {("light", "transfer", None), ("heavy", "transfer", None)}
    assert fgsm["tinyresnet-int8-onnxruntime"] == {
        ("light", "transfer", "onnx"),
        ("heavy", "transfer", "onnx"),
    }
    folders = sorted((out / "stages").glob("saltpepper-*"))
    assert len(folders) == 4  # one per artifact: onnx / ptl x fp32 / int8
    for folder in folders:
        light, heavy = (
            json.loads((folder / f"saltpepper-{s}.json").read_text()) for s in ("light", "heavy")
        )
        assert light["label"] == heavy["label"] == "blackbox"
        assert light["n"] == heavy["n"] == 10 and light["clean_correct"] == heavy["clean_correct"]
        assert light["stop"] == "settled" and 0 < light["queries_total"] <= light["queries_full"]
        assert light["queries_full"] == 10 * (1 + 30 + 2)
        assert light["clean_correct"] > 0  # something for the attack to break
        # the same figure eval-device --attack saltpepper gives on that artifact and images
        ev = evaluate(
            EvalConfig(
                light["artifact"]["path"],
                str(synthetic_root),
                domains=("studio",),
                limit=10,
                warmup=0,
                latency_runs=1,
                attack="saltpepper",
                attack_steps=30,
            )
        )
        got = ev["domains"][0]["attack"]
        assert [round(a * 10) for a in got["robust_accuracy"]] == [
            light["robust_correct"],
            heavy["robust_correct"],
        ]
        assert got["queries"] == light["queries_total"]  # the very same noise, image by image
        # a larger budget never leaves more images correct; no budget beats the clean model
        assert heavy["robust_correct"] <= light["robust_correct"] <= light["clean_correct"]
        assert light["study"]["format"] == light["artifact"]["format"]
    t3 = next(t for t in write_report(ReportConfig(str(out))).tables if t.name == "table3")
    sp = [c for c in t3.columns if c.startswith("S&P")]
    assert sp == ["S&P light (ε=1)", "S&P heavy (ε=15)"]
    for row in t3.rows:  # every artifact row has its own blackbox figures
        cells = [row[t3.columns.index(c)] for c in sp]
        assert all(c is not None and c.label == "blackbox" and c.n == 10 for c in cells)
