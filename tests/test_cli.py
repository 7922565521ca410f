"""The command line: user mistakes are one `error:` line and a non-zero exit, never a traceback,
and leave no partial output; the happy paths print what they promise."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from edgerobust import __version__
from edgerobust.cli import main
from edgerobust.runtimes.manifest import atomic_write_json, sha256_file

VENV_BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin"


def run(capsys, *args) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


# --------------------------------------------------------------------------- user mistakes


def test_missing_data_folder(capsys, tmp_path):
    code, out, err = run(capsys, "data", tmp_path / "nope")
    assert_user_error(code, err, "not found")
    assert out == ""


def test_empty_domain(capsys, synthetic_copy, tmp_path):
    for p in (synthetic_copy / "webcam").rglob("*.png"):
        p.unlink()
    out_json = tmp_path / "summary.json"
    code, _, err = run(capsys, "data", synthetic_copy, "--json", out_json)
    assert_user_error(code, err, "'webcam' is empty")
    assert not out_json.exists()


def test_unknown_domain(capsys, artifacts, synthetic_root, tmp_path):
    rec = tmp_path / "rec.json"
    art = artifacts[("onnx", "fp32")].artifact
    code, _, err = run(
        capsys, "eval-device", art, "--data", synthetic_root, "--domains", "sketch", "--out", rec
    )
    assert_user_error(code, err, "no domain 'sketch'", "studio")
    assert not rec.exists()


def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _corrupt(path: Path) -> None:
    """Garbage bytes with a manifest that vouches for them: the parser itself must fail cleanly."""
    from edgerobust.runtimes.manifest import read_manifest

    path.write_bytes(b"\x00garbage" * 64)
    m = read_manifest(path)
    m = replace(m, sha256=sha256_file(path), size_bytes=path.stat().st_size)
    atomic_write_json(path.with_suffix(".json"), m.to_dict())


def _no_manifest(path: Path) -> None:
    path.with_suffix(".json").unlink()


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (_tamper, "sha256"),
        (_truncate, "truncated"),
        (_corrupt, "cannot load"),
        (_no_manifest, "no manifest"),
    ],
    ids=["tampered", "truncated", "corrupt", "no-manifest"],
)
@pytest.mark.parametrize("kind", [("onnx", "int8"), ("ptl", "fp32")], ids=["onnx", "ptl"])
def test_damaged_artifact(
    capsys, artifacts, artifact_copy, synthetic_root, tmp_path, damage, fragment, kind
):
    path = artifact_copy(artifacts[kind])
    damage(path)
    rec = tmp_path / "rec.json"
    code, out, err = run(capsys, "eval-device", path, "--data", synthetic_root, "--out", rec)
    assert_user_error(code, err, fragment, path.name)
    assert not rec.exists() and out == ""


def test_unknown_runtime_is_a_usage_error(capsys, artifacts, synthetic_root):
    art = artifacts[("onnx", "fp32")].artifact
    code, out, err = run(
        capsys, "eval-device", art, "--data", synthetic_root, "--runtime", "tflite"
    )
    assert code == 2
    assert "Traceback" not in err + out
    assert "tflite" in err and "onnxruntime" in err


def test_wrong_runtime_for_the_artifact(capsys, artifacts, synthetic_root):
    art = artifacts[("onnx", "fp32")].artifact
    code, _, err = run(capsys, "eval-device", art, "--data", synthetic_root, "--runtime", "ptl")
    assert_user_error(code, err, "--runtime onnxruntime")


def test_negative_threads(capsys, artifacts, synthetic_root, tmp_path):
    rec = tmp_path / "rec.json"
    art = artifacts[("onnx", "fp32")].artifact
    code, _, err = run(
        capsys, "eval-device", art, "--data", synthetic_root, "--threads", "-1", "--out", rec
    )
    assert_user_error(code, err, "--threads")
    assert not rec.exists()


def test_text_file_as_checkpoint(capsys, tmp_path):
    ckpt = tmp_path / "notes.safetensors"
    ckpt.write_text("just some notes\n")
    out = tmp_path / "models"
    code, _, err = run(capsys, "export", ckpt, "--out", out)
    assert_user_error(code, err, "not an edgerobust checkpoint")
    assert not out.exists()


def test_engine_with_onnx(capsys, trained, tmp_path):
    out = tmp_path / "models"
    code, _, err = run(
        capsys, "export", trained.checkpoint, "--quant", "int8", "--engine", "x86", "--out", out
    )
    assert_user_error(code, err, "--engine")
    assert not out.exists()


def test_min_agreement_out_of_range(capsys, trained, tmp_path):
    out = tmp_path / "models"
    code, _, err = run(capsys, "export", trained.checkpoint, "--min-agreement", "1.5", "--out", out)
    assert_user_error(code, err, "--min-agreement")
    assert not out.exists()


def test_parity_error_exit_code(capsys, trained, tmp_path, monkeypatch):
    from edgerobust.runtimes.ort import OnnxRuntime

    real = OnnxRuntime.__call__
    monkeypatch.setattr(OnnxRuntime, "__call__", lambda self, x: -real(self, x))
    out = tmp_path / "models"
    code, _, err = run(capsys, "export", trained.checkpoint, "--out", out)
    assert_user_error(code, err, "parity gate", "--force")
    assert code == 3
    assert list(out.iterdir()) == []


# --------------------------------------------------------------------------- happy paths


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"edgerobust {__version__}"


def test_data_summary(capsys, synthetic_copy, tmp_path):
    (synthetic_copy / "natural" / "star" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    summary = tmp_path / "summary.json"
    code, out, err = run(capsys, "data", synthetic_copy, "--json", summary)
    assert code == 0, err
    assert "circle" in out and "studio" in out and "webcam" in out
    assert "90 / 10" in out  # studio and webcam: 100 images
    assert "1 unreadable file" in out and "natural/star/broken.jpg" in out
    rec = json.loads(summary.read_text())
    assert rec["splits"]["studio"] == {"train": 90, "val": 10, "seed": 1}
    assert rec["counts"]["natural"][rec["classes"].index("star")] == 11
    assert list(rec["unreadable"]) == ["natural"]
    assert list(rec["unreadable"]["natural"]) == ["star/broken.jpg"]


def test_data_all_readable(capsys, synthetic_root):
    code, out, _ = run(capsys, "data", synthetic_root)
    assert code == 0 and "all images decode" in out


def test_export_prints_parity(capsys, trained, tmp_path):
    code, out, err = run(capsys, "export", trained.checkpoint, "--out", tmp_path, "--name", "m")
    assert code == 0, err
    assert "parity passed" in out and "top-1 agreement 100.00%" in out
    assert (tmp_path / "m.onnx").is_file() and (tmp_path / "m.json").is_file()


def test_eval_device_writes_a_record(capsys, artifacts, synthetic_root, tmp_path):
    rec_path = tmp_path / "out" / "rec.json"
    art = artifacts[("onnx", "int8")].artifact
    code, out, err = run(
        capsys,
        "eval-device", art, "--data", synthetic_root, "--out", rec_path,
        "--latency-runs", "5", "--warmup", "1", "--domains", "studio,webcam",
    )  # fmt: skip
    assert code == 0, err
    rec = json.loads(rec_path.read_text())
    assert rec["record"] == "eval-device"
    assert [d["domain"] for d in rec["domains"]] == ["studio", "webcam"]
    assert rec["artifact"]["sha256"] == artifacts[("onnx", "int8")].manifest.sha256
    assert art.name in out and "record ->" in out


# --------------------------------------------------------------------------- the real executable


def _exe(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "edgerobust"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


def test_executable_version():
    proc = _exe("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"edgerobust {__version__}"


def test_python_dash_m_is_the_same_command_line(tmp_path):
    proc = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "edgerobust", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"edgerobust {__version__}"
    proc = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "edgerobust", "data", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "nope" in proc.stderr


def test_executable_missing_data_has_no_traceback(tmp_path):
    proc = _exe("data", tmp_path / "nope")
    assert proc.returncode == 2
    assert_user_error(proc.returncode, proc.stderr, "not found")
    assert proc.stdout == ""


def test_executable_tampered_artifact_has_no_traceback(
    artifacts, artifact_copy, synthetic_root, tmp_path
):
    path = artifact_copy(artifacts[("onnx", "fp32")])
    _tamper(path)
    rec = tmp_path / "rec.json"
    proc = _exe("eval-device", path, "--data", synthetic_root, "--out", rec)
    assert_user_error(proc.returncode, proc.stderr, "sha256")
    assert not rec.exists()
