"""The ``attack``, ``eval-device --attack`` and ``bench-saltpepper`` commands: they run, record
what they measured with its label, and turn bad input into one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgerobust.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _ok(argv: list[str]) -> None:
    """Run the CLI in-process; typer ends a successful command with ``SystemExit(0)``."""
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code


def _error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--attacks", "fgsm,jsma"], "unknown attack 'jsma'"),
        (["--attacks", "fgsm,,pgd"], "separated by commas"),
        (["--eps", "1,,x"], "'' is not a number"),
        (["--eps", "-1"], "finite number >= 0"),
        (["--eps", "0.1,abc"], "'abc' is not a number"),
        (["--set", "cw.steps"], "ATTACK.SETTING=VALUE"),
        (["--attacks", "fgsm", "--set", "fgsm.steps=3"], "fgsm has no setting 'steps'"),
        (["--attacks", "fgsm", "--set", "cw.steps=3"], "not among --attacks"),
    ],
)
def test_attack_bad_input_is_one_line(capsys, tmp_path, extra: list[str], message: str) -> None:
    # Checked before anything is loaded: the checkpoint need not exist
    err = _error(capsys, ["attack", str(tmp_path / "none.safetensors"), *extra])
    assert message in err


def test_attack_missing_checkpoint_is_one_line(capsys, tmp_path) -> None:
    err = _error(capsys, ["attack", str(tmp_path / "none"), "--attacks", "fgsm"])
    assert "checkpoint not found" in err


def test_attack_command_writes_a_labelled_record(capsys, tiny, tmp_path) -> None:
    out = tmp_path / "a.json"
    _ok(
        [
            "attack",
            str(tiny.int8),
            "--attacks",
            "fgsm,saltpepper",
            "--strength",
            "heavy",
            "--limit",
            "4",
            "--set",
            "saltpepper.steps=20",
            "--artifacts",
            str(tiny.onnx_int8),
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert "(transfer)" in printed and "(blackbox)" in printed and "(direct)" in printed
    assert "model queries" in printed
    assert (
        "fgsm: 8 gradient evaluations (1.00 of foolbox's budget, stop none)" in printed
    )  # 4 x 2 eps; FGSM is one step: no stop rule
    rec = json.loads(out.read_text())
    assert rec["record"] == "attack" and rec["config"]["strength"] == "heavy"
    assert rec["data"]["n"] == 4 and rec["model"]["precision"] == "int8"
    by = {a["attack"]: {r["target"]: r["label"] for r in a["results"]} for a in rec["attacks"]}
    assert by["fgsm"]["checkpoint"] == by["fgsm"][tiny.onnx_int8.name] == "transfer"
    assert set(by["saltpepper"].values()) == {"blackbox"}
    assert next(a for a in rec["attacks"] if a["attack"] == "saltpepper")["settings"]["steps"] == 20


def test_eval_device_refuses_gradient_attacks(capsys, tiny) -> None:
    err = _error(
        capsys, ["eval-device", str(tiny.onnx_int8), "--data", str(tiny.data), "--attack", "pgd"]
    )
    assert "needs gradients" in err and "edgerobust attack" in err
    err = _error(
        capsys, ["eval-device", str(tiny.onnx_int8), "--data", str(tiny.data), "--eps", "1"]
    )
    assert "--eps needs --attack saltpepper" in err
    err = _error(
        capsys,
        ["eval-device", str(tiny.onnx_int8), "--data", str(tiny.data), "--attack", "saltpepper"]
        + ["--eps", "1,,x"],
    )
    assert "is not a number" in err


BLOCK_TORCH = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "foolbox", "eagerpy"):
            raise ImportError(f"{name} is not installed on this device")
        return None

sys.meta_path.insert(0, Block())
from edgerobust.cli import main
try:
    main(sys.argv[1:])
finally:
    assert not any(m.split(".")[0] == "torch" for m in sys.modules), "torch was imported"
"""


def test_eval_device_saltpepper_runs_without_torch(tiny, tmp_path) -> None:
    """A Raspberry Pi with only onnxruntime: the black-box attack runs inside the runtime."""
    out = tmp_path / "ev.json"
    argv = [str(tiny.onnx_int8), "--data", str(tiny.data), "--runtime", "onnxruntime"]
    argv += ["--domains", "studio,natural", "--attack", "saltpepper", "--eps", "0,1,15"]
    argv += ["--limit", "5", "--sp-steps", "20", "--latency-runs", "2", "--warmup", "0"]
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, "eval-device", *argv, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "saltpepper (blackbox) on studio" in proc.stdout
    rec = json.loads(out.read_text())
    for d in rec["domains"]:
        a = d["attack"]
        assert a["label"] == "blackbox" and a["eps"] == [0.0, 1.0, 15.0]
        assert a["n"] == d["n"] == 5
        assert a["robust_accuracy"][0] == d["accuracy"]  # eps 0: the clean accuracy
        assert a["robust_accuracy"][0] >= a["robust_accuracy"][1] >= a["robust_accuracy"][2]
        assert 0 < a["queries"] <= a["queries_full"] == 5 * (1 + 20 + 3)
    assert rec["config"]["attack"] == "saltpepper"


def test_bench_saltpepper_compares_fast_and_full(capsys, tiny, tmp_path) -> None:
    out = tmp_path / "b.json"
    _ok(
        ["bench-saltpepper", str(tiny.onnx_int8), "--limit", "6", "--steps", "60"]
        + ["--eps", "1,15", "--out", str(out)]
    )
    printed = capsys.readouterr().out
    assert "queries" in printed and "settled" in printed and "goal" in printed
    rec = json.loads(out.read_text())
    runs = rec["runs"]
    assert set(runs) == {"none", "exact", "settled"}
    assert runs["none"]["queries"] == 6 * (1 + 60 + 2)
    assert runs["none"]["query_ratio"] == 1.0
    # exact stopping is identical by construction, and the benchmark checks it
    assert rec["verdicts"]["exact"]["identical"]
    assert runs["exact"]["broken"] == runs["none"]["broken"]
    for stop in ("exact", "settled"):
        assert runs[stop]["queries"] <= runs["none"]["queries"]
        assert runs[stop]["query_ratio"] == runs[stop]["queries"] / runs["none"]["queries"]
    assert rec["data"]["n"] == len(rec["data"]["files"]) == 6


def test_bench_saltpepper_bad_input(capsys, tiny) -> None:
    err = _error(capsys, ["bench-saltpepper", str(tiny.onnx_int8), "--stops", "none"])
    assert "not an early-stopping rule" in err
    err = _error(capsys, ["bench-saltpepper", str(tiny.onnx_int8), "--eps", "1,x"])
    assert "'x' is not a number" in err
