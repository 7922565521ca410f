"""``edgerobust run --executor ray``: a Ray cluster started by the tests on this machine (head on
the loopback address, 2 CPUs) runs the tiny study of ``test_runner`` and must give the local
executor's figures and weights; a Ray worker killed mid-stage is retried; a driver killed mid-study
and started again resumes from the committed stages.

The cluster tests are ``slow`` (a Ray head takes ~15 s to start; each run of the study ~1 min on
two shared cores). The option checks at the top are fast and run by default.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_runner import results_of, write_study

from edgerobust.study.scheduler import RunConfig, run_study
from edgerobust.study.store import DONE

INSTALL_LINE = (
    "error: --executor ray needs Ray, which is not installed here: "
    "pip install 'edgerobust[cluster]'"
)


def _cli(*args: str, env: dict[str, str] | None = None, pre: str = "") -> subprocess.Popen:
    code = f"{pre}import sys; from edgerobust.cli import main; main(sys.argv[1:])"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


# --------------------------------------------------------------------------- options (fast)


def test_without_ray_the_ray_executor_is_one_line_and_writes_nothing(tmp_path, synthetic_root):
    study = write_study(tmp_path, synthetic_root)
    out = tmp_path / "out"
    # ``sys.modules["ray"] = None`` makes ``import ray`` fail as it does where Ray is absent
    proc = _cli(
        "run",
        str(study),
        "--out",
        str(out),
        "--executor",
        "ray",
        pre="import sys; sys.modules['ray'] = None; ",
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [INSTALL_LINE]
    assert not out.exists()


def test_executor_choices_come_from_the_registry(tmp_path, synthetic_root):
    from typer.testing import CliRunner

    from edgerobust.cli import app
    from edgerobust.errors import ConfigError
    from edgerobust.study.executors import list_executors

    assert list_executors()[:2] == ["local", "ray"]
    study = write_study(tmp_path, synthetic_root)
    res = CliRunner().invoke(app, ["run", str(study), "--executor", "slurm", "--dry-run"])
    said = " ".join(res.output.replace("│", " ").split())  # typer's box wraps the line
    assert res.exit_code == 2 and "unknown executor 'slurm': choose one of local, ray" in said
    with pytest.raises(ConfigError, match="--executor local takes none"):
        run_study(RunConfig(str(study), out=str(tmp_path / "out"), address="127.0.0.1:1"))
    # a dry run lists the stages whatever the executor: it runs nothing and joins no cluster
    dry = run_study(RunConfig(str(study), str(tmp_path / "out"), dry_run=True, executor="ray"))
    assert len(dry.by_status("pending")) == 10 and not (tmp_path / "out").exists()


def test_each_stage_declares_its_resources(synthetic_root):
    """GPU for the accelerated kinds when the cluster has GPUs (and the study does not say
    device = "cpu"); every CPU of the one eval node for eval-device; the study's threads else."""
    pytest.importorskip("ray")
    from types import SimpleNamespace

    from test_runner import STUDY

    from edgerobust.study.plan import plan_study
    from edgerobust.study.ray_executor import _Node, _RayScheduler
    from edgerobust.study.spec import parse_study, tomllib

    text = STUDY + '\n[attack]\nattacks = ["fgsm"]\nlimit = 4\n'
    node = _Node("ab" * 28, "10.0.0.1", 8, 2)  # a node id is 28 bytes, in hex

    def options(text: str, gpus: int) -> dict[str, list[dict]]:
        plan = plan_study(parse_study(tomllib.loads(text.format(data=synthetic_root))))
        fake = SimpleNamespace(threads=2)
        by_kind: dict[str, list[dict]] = {}
        for stage in plan.stages:
            opts = _RayScheduler._options(fake, stage, 8, gpus, node)
            by_kind.setdefault(stage.kind, []).append(opts)
        return by_kind

    got = options(text, gpus=2)
    for kind, opts in got.items():
        for o in opts:
            assert o["max_retries"] == 3 and o["retry_exceptions"] is False
            assert o.get("num_gpus", 0) == (1 if kind in ("train", "attack") else 0), kind
            if kind == "eval-device":
                assert o["num_cpus"] == 8 and o["scheduling_strategy"].node_id == node.id
            else:
                assert o["num_cpus"] == 2 and "scheduling_strategy" not in o
    assert not any("num_gpus" in o for opts in options(text, 0).values() for o in opts)
    on_cpu = options(text.replace("augment = true", 'augment = true\ndevice = "cpu"'), 2)
    assert [o.get("num_gpus", 0) for o in on_cpu["train"]] == [0]  # the study said cpu
    assert [o.get("num_gpus", 0) for o in on_cpu["attack"]] == [1]  # attacks: always auto


# --------------------------------------------------------------------------- a loopback cluster


@pytest.fixture(scope="module")
def cluster():
    """A Ray head on 127.0.0.1 with 2 CPUs, started for this module and stopped after it:
    (address, environment for drivers). Ray's token authentication is off: the cluster is
    reachable from this machine only, and lives for the tests."""
    pytest.importorskip("ray")
    ray_bin = Path(sys.executable).with_name("ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="er-ray-", dir="/tmp")  # short: Ray's socket paths live here
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    head = subprocess.Popen(
        [
            str(ray_bin),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            # a GPU Ray believes in: this machine has none, so "device auto" still picks the CPU,
            # but the stages that ask for one must get it, and only they
            "--num-gpus=1",
            "--include-dashboard=false",
            "--object-store-memory=100000000",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
            "--block",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    old = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # this process joins it too (run_study)
    try:
        t0 = time.monotonic()
        while True:  # the head is up when its GCS port answers
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert head.poll() is None, "ray start --head exited"
            assert time.monotonic() - t0 < 120, "the Ray head did not start in 120 s"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}", env
    finally:
        head.send_signal(signal.SIGTERM)  # ray start --block stops what it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        if old is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old


@pytest.fixture(scope="module")
def reference(tmp_path_factory, synthetic_root):
    """The tiny study, run by the local executor: (study file, output folder)."""
    root = tmp_path_factory.mktemp("local")
    study = write_study(root, synthetic_root)
    summary = run_study(RunConfig(str(study), out=str(root / "out")))
    assert summary.ok, summary.lines()
    return study, root / "out"


def _driver(study: Path, out: Path, address: str, env: dict[str, str]) -> subprocess.Popen:
    args = ("run", str(study), "--out", str(out), "--no-report", "--executor", "ray")
    return _cli(*args, "--address", address, env=env)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 300.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def _stage(out: Path, kind: str) -> Path | None:
    found = sorted((out / "stages").glob(f"{kind}-*")) if (out / "stages").is_dir() else []
    return found[0] if found else None


@pytest.mark.slow
def test_a_ray_cluster_gives_the_local_executors_figures(cluster, reference, tmp_path):
    address, _ = cluster
    study, local = reference
    out = tmp_path / "out"
    summary = run_study(RunConfig(str(study), out=str(out), executor="ray", address=address))
    assert summary.ok, summary.lines()
    assert {r.status for r in summary.results} == {"ran"}
    # every stage's figures, weights and artifacts equal the local run's, bit for bit
    assert results_of(out, study) == results_of(local, study)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["counts"] == {"ran": 10}
    log = (out / "study.log").read_text()
    assert "executor ray" in log and "epoch 1:" in log  # workers' lines reach the study log
    assert log.count("start eval-device") == 4 and "alone on" in log
    starts = [line for line in log.splitlines() if " start " in line]
    with_gpu = {line.split(" start ")[1].split()[0] for line in starts if ", GPU 0" in line}
    assert with_gpu == {"train"}  # accelerated: train (prune, distill, attack); not the others
    # the same study again: all cached, decided on the driver without a single task
    again = run_study(RunConfig(str(study), out=str(out), executor="ray", address=address))
    assert {r.status for r in again.results} == {"cached"}


@pytest.mark.slow
def test_a_worker_killed_mid_stage_is_retried(cluster, reference, tmp_path):
    address, env = cluster
    study, local = reference
    out = tmp_path / "out"
    proc = _driver(study, out, address, env)

    def training_after_one_epoch() -> bool:
        d = _stage(out, "train")
        return d is not None and (d / "last.safetensors").is_file() and not (d / DONE).is_file()

    assert _wait_for(training_after_one_epoch, proc), proc.stderr.read() if proc.stderr else ""
    train = _stage(out, "train")
    host, pid = (out / ".ray" / "locks" / train.name).read_text().split()
    os.kill(int(pid), signal.SIGKILL)  # the Ray worker running the training stage
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    log = (out / "study.log").read_text()
    assert "attempt 2 (the last one's worker died)" in log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"ran": 10}
    assert results_of(out, study) == results_of(local, study)


@pytest.mark.slow
def test_a_driver_killed_mid_study_resumes_from_the_committed_stages(cluster, reference, tmp_path):
    address, env = cluster
    study, local = reference
    out = tmp_path / "out"
    proc = _driver(study, out, address, env)
    assert _wait_for(lambda: (d := _stage(out, "train")) is not None and (d / DONE).is_file(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists()  # it really was cut off mid-study
    committed = {d.name for d in (out / "stages").iterdir() if (d / DONE).is_file()}
    assert _stage(out, "train").name in committed and len(committed) < 10

    proc = _driver(study, out, address, env)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    summary = json.loads((out / "summary.json").read_text())
    cached = {Path(s["dir"]).name for s in summary["stages"] if s["status"] == "cached"}
    assert committed <= cached  # nothing committed is redone
    assert summary["counts"]["ran"] + summary["counts"]["cached"] == 10
    assert results_of(out, study) == results_of(local, study)
