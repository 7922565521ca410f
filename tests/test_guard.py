"""edgerobust.guard: the CLI's last line of defence, the output checks, and the study lock."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_fuzz import assert_one_line_error, run  # noqa: E402  (tests/ is on sys.path)

from edgerobust.errors import OutputError
from edgerobust.guard import check_output, crash_line, reading


def test_an_unexpected_exception_is_one_line_and_a_log(
    capsys, synthetic_root, tmp_path, monkeypatch
):
    import edgerobust.data as data_mod

    def broken(root):
        with reading(Path(root) / "studio" / "bars" / "0001.png"):
            raise KeyError("surprise")

    monkeypatch.setattr(data_mod, "open_dataset", broken)
    monkeypatch.setenv("EDGEROBUST_LOG_DIR", str(tmp_path / "logs"))
    code, out, err = run(capsys, "data", synthetic_root)
    assert code == 1
    assert_one_line_error(code, out, err, "unexpected failure while reading")
    line = err.strip()
    assert "0001.png" in line and "KeyError" in line and "cli.py:" in line
    logs = list((tmp_path / "logs").glob("edgerobust-crash-*.log"))
    assert len(logs) == 1 and str(logs[0]) in line
    text = logs[0].read_text()
    assert "Traceback" in text and "surprise" in text and "data " in text.splitlines()[0]


def test_expected_errors_keep_their_own_message(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEROBUST_LOG_DIR", str(tmp_path / "logs"))
    code, out, err = run(capsys, "data", tmp_path / "nope")
    assert_one_line_error(code, out, err, "dataset folder not found")
    assert "unexpected" not in err and not (tmp_path / "logs").exists()


def test_crash_line_without_a_file_and_when_the_log_cannot_be_written():
    try:
        raise ValueError("first line\nsecond line")
    except ValueError as exc:
        line = crash_line(exc, None)
    assert "\n" not in line and "first line" in line and "second" not in line
    assert "while reading" not in line and "could not be saved" in line
    try:
        raise MemoryError()
    except MemoryError as exc:
        assert "--batch-size" in crash_line(exc, Path("/x.log"))


def test_the_guard_in_the_installed_executable(tmp_path):
    """A real process: python -c with a crash injected after import, through main()."""
    code = (
        "import edgerobust.data as d, edgerobust.cli as c\n"
        "def boom(root): raise RuntimeError('injected')\n"
        "d.open_dataset = boom\n"
        f"c.main(['data', {str(tmp_path)!r}])\n"
    )
    env = {**os.environ, "EDGEROBUST_LOG_DIR": str(tmp_path / "logs")}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert_one_line_error(proc.returncode, "", proc.stderr, "RuntimeError: injected")
    assert list((tmp_path / "logs").glob("*.log"))


# --------------------------------------------------------------------------- output checks


def test_check_output(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    check_output(tmp_path / "new" / "deeper" / "r.json", folder=False)
    check_output(tmp_path / "new" / "run", folder=True)
    check_output(afile, folder=False)  # replaced atomically
    check_output(tmp_path, folder=True)
    with pytest.raises(OutputError, match="afile is a file, not a folder"):
        check_output(afile / "deeper" / "r.json", folder=False, what="--out")
    with pytest.raises(OutputError, match="a folder is needed"):
        check_output(afile, folder=True)
    with pytest.raises(OutputError, match="a file is needed"):
        check_output(tmp_path, folder=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # created nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_check_output_no_permission(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    with pytest.raises(OutputError, match="no permission"):
        check_output(ro / "x" / "r.json", folder=False)


def test_atomic_writer_under_a_file_is_one_line(tmp_path):
    from edgerobust.runtimes.manifest import atomic_write_json

    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="afile is a file"):
        atomic_write_json(tmp_path / "afile" / "sub" / "r.json", {})
    with pytest.raises(OutputError, match="is a folder"):
        atomic_write_json(tmp_path, {})


# --------------------------------------------------------------------------- the study lock


STUDY = """
[study]
name = "locked"
threads = 1

[dataset]
kind = "folder"
path = "{data}"
sources = ["studio"]

[train]
archs = ["tinyresnet"]
image_size = 32
epochs = 1
batch_size = 32

[export]
formats = ["onnx"]
precisions = ["fp32"]

[eval]
runtimes = ["onnxruntime"]
latency_runs = 1
warmup = 0
"""


def test_a_study_folder_in_use_is_refused(capsys, synthetic_root, tmp_path):
    """While another `edgerobust run` holds OUT/.lock, a second run is refused in one line and
    writes nothing into the folder."""
    study = tmp_path / "locked.toml"
    study.write_text(STUDY.format(data=synthetic_root))
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what the other runner holds
        code, stdout, err = run(capsys, "run", study, "--out", out, "--no-report")
    assert_one_line_error(code, stdout, err, "another 'edgerobust run' is using")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
