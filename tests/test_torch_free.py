"""The device side runs without torch: eval-device with ONNX Runtime, in a process where
``import torch`` fails as it would on a Raspberry Pi with only the base install."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# Installed before anything else in the child: torch, torchvision and foolbox are "not installed".
BLOCK_TORCH = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {"torch", "torchvision", "foolbox"}:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    """
)

RUN_CLI = BLOCK_TORCH + textwrap.dedent(
    """
    from edgerobust.cli import main
    try:
        main(sys.argv[1:])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in {"torch", "torchvision"})
    print("MODULES " + json.dumps(loaded))
    sys.exit(code)
    """
)


def _child(code: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_blocker_really_blocks():
    proc = _child(BLOCK_TORCH + "import torch\n")
    assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr


def test_eval_device_onnx_without_torch(artifacts, synthetic_root, tmp_path):
    rec = tmp_path / "rec.json"
    art = artifacts[("onnx", "int8")].artifact
    proc = _child(
        RUN_CLI, "eval-device", art, "--data", synthetic_root, "--out", rec,
        "--latency-runs", "5", "--warmup", "1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "MODULES []" in proc.stdout
    record = json.loads(rec.read_text())
    assert record["runtime"]["runtime"] == "onnxruntime"
    assert {d["domain"] for d in record["domains"]} == {"studio", "webcam", "natural"}
    assert all(d["n"] > 0 for d in record["domains"])


@pytest.mark.parametrize("kind", [("ptl", "fp32"), ("torchscript", "fp32")])
def test_torch_runtimes_name_the_extra(artifacts, synthetic_root, tmp_path, kind):
    rec = tmp_path / "rec.json"
    art = artifacts[kind].artifact
    proc = _child(RUN_CLI, "eval-device", art, "--data", synthetic_root, "--out", rec)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "edgerobust[torch]" in lines[0] and "onnxruntime" in lines[0]
    assert not rec.exists()


def test_host_commands_name_the_extra(trained, tmp_path):
    proc = _child(RUN_CLI, "export", trained.checkpoint, "--out", tmp_path / "m")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.startswith("error: export needs torch") and "edgerobust[torch]" in proc.stderr
    )


def test_device_modules_do_not_import_torch():
    proc = _child(
        "import sys, edgerobust.runtimes, edgerobust.evaluate, edgerobust.data, edgerobust.cli\n"
        "import edgerobust.evaluate.fingerprint, edgerobust.runtimes.preprocess\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchvision'}))\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
