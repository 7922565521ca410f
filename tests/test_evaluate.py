"""edgerobust.evaluate: the eval-device record."""

from __future__ import annotations

import json

import pytest

from edgerobust.data import decode_domain, open_dataset
from edgerobust.data.synthetic import make_synthetic
from edgerobust.errors import ConfigError, DataError
from edgerobust.evaluate import EvalConfig, evaluate, percentiles, wilson_interval
from edgerobust.models.checkpoint import load_checkpoint
from edgerobust.train import accuracy


def _cfg(artifact, data, **kw) -> EvalConfig:
    return EvalConfig(str(artifact), str(data), warmup=2, latency_runs=20, **kw)


@pytest.fixture(scope="module")
def onnx_record(artifacts, synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "record.json"
    rec = evaluate(_cfg(artifacts[("onnx", "fp32")].artifact, synthetic_root, out=str(out)))
    return rec, out


def test_record_per_domain(onnx_record, synthetic_root, trained):
    rec, out = onnx_record
    assert json.loads(out.read_text()) == json.loads(json.dumps(rec))
    assert rec["record"] == "eval-device" and rec["record_version"] >= 1
    ds = open_dataset(synthetic_root)
    by_domain = {d["domain"]: d for d in rec["domains"]}
    assert set(by_domain) == set(ds.domains)
    model = load_checkpoint(trained.checkpoint).model
    for name, d in by_domain.items():
        split = ds.split(name)
        if name == "studio":
            # The source domain is scored on its validation split only (the paper's protocol).
            assert (d["role"], d["split"], d["n"]) == ("source", "val", len(split.val))
            idx = split.val
        else:
            assert (d["role"], d["split"], d["n"]) == ("target", "all", len(ds.domain(name)))
            idx = range(len(ds.domain(name)))
        assert d["accuracy"] == d["correct"] / d["n"]
        lo, hi = d["ci95"]
        assert 0.0 <= lo <= d["accuracy"] <= hi <= 1.0 and hi - lo > 0
        # Inside ONNX Runtime the fp32 artifact scores what the PyTorch model scores.
        correct, n = accuracy(model, decode_domain(ds.domain(name), 32), idx)
        assert (d["correct"], d["n"]) == (correct, n)
        assert d["unreadable_skipped"] == []
        assert d["throughput_images_per_s"] > 0


def test_record_measurements(onnx_record, artifacts):
    rec, _ = onnx_record
    lat = rec["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"]
    assert lat["runs"] == 20 and lat["batch"] == 1
    c = lat["contention"]
    assert c["p50_over_min"] == pytest.approx(lat["p50"] / lat["min"])
    assert c["cores"] >= 1 and (c["other_cores"] is None or c["other_cores"] >= 0)
    assert rec["throughput"]["images_per_s"] > 0
    art = artifacts[("onnx", "fp32")]
    assert rec["artifact"]["size_bytes"] == art.artifact.stat().st_size
    assert rec["artifact"]["sha256"] == art.manifest.sha256
    assert rec["artifact"]["parity"] == art.manifest.parity
    assert rec["runtime"]["runtime"] == "onnxruntime" and rec["runtime"]["threads"] == 1
    host = rec["host"]
    assert host["arch"] and host["cpu_model"] and host["cpus"] >= 1 and "int8_warning" in host
    mem = rec["memory"]
    assert mem["peak_rss_mb"] is None or mem["peak_rss_mb"] > 0
    assert rec["config"]["latency_runs"] == 20


@pytest.mark.parametrize("kind", [("ptl", "int8"), ("torchscript", "fp32")])
def test_torch_runtimes_evaluate_too(artifacts, synthetic_root, kind):
    rec = evaluate(_cfg(artifacts[kind].artifact, synthetic_root, domains=("webcam",)))
    assert [d["domain"] for d in rec["domains"]] == ["webcam"]
    assert rec["runtime"]["runtime"] == artifacts[kind].manifest.format
    assert rec["artifact"]["precision"] == kind[1]


def test_limit_samples(artifacts, synthetic_root):
    rec = evaluate(_cfg(artifacts[("onnx", "int8")].artifact, synthetic_root, limit=7))
    for d in rec["domains"]:
        # studio's validation split has 10 images: 7 of them; the others: 7 of 100.
        assert d["n"] == 7 and "sample of 7" in d["split"]
    again = evaluate(_cfg(artifacts[("onnx", "int8")].artifact, synthetic_root, limit=7))
    assert [d["correct"] for d in again["domains"]] == [d["correct"] for d in rec["domains"]]


def test_unreadable_images_are_skipped_and_listed(artifacts, synthetic_copy):
    (synthetic_copy / "natural" / "ring" / "broken.jpg").write_bytes(b"not an image")
    rec = evaluate(_cfg(artifacts[("onnx", "fp32")].artifact, synthetic_copy, domains=("natural",)))
    (d,) = rec["domains"]
    assert d["unreadable_skipped"] == ["ring/broken.jpg"]
    assert d["n"] == len(open_dataset(synthetic_copy).domain("natural")) - 1


def test_other_classes_are_a_data_error(artifacts, tmp_path):
    other = make_synthetic(tmp_path / "other", per_class=2, size=16, classes=("circle", "ring"))
    with pytest.raises(DataError) as err:
        evaluate(_cfg(artifacts[("onnx", "fp32")].artifact, other))
    assert "10 classes" in str(err.value) and "2" in str(err.value)


def test_unknown_domain_fails_before_any_work(artifacts, synthetic_root, monkeypatch):
    import edgerobust.evaluate as ev

    monkeypatch.setattr(ev, "open_artifact", lambda *a, **k: pytest.fail("artifact opened"))
    with pytest.raises(DataError, match="no domain 'sketch'"):
        evaluate(_cfg(artifacts[("onnx", "fp32")].artifact, synthetic_root, domains=("sketch",)))


@pytest.mark.parametrize(
    "change",
    [{"threads": 0}, {"threads": -2}, {"batch_size": 0}, {"limit": 0}, {"latency_runs": 0}],
)
def test_bad_options(artifacts, synthetic_root, tmp_path, change):
    out = tmp_path / "rec.json"
    cfg = EvalConfig(
        str(artifacts[("onnx", "fp32")].artifact), str(synthetic_root), out=str(out), **change
    )
    with pytest.raises(ConfigError):
        evaluate(cfg)
    assert not out.exists()


def test_wilson_interval():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and 0 < hi < 0.2
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and 0.8 < lo < 1.0
    for correct, n in [(1, 3), (50, 100), (999, 1000), (3, 7)]:
        lo, hi = wilson_interval(correct, n)
        assert 0.0 <= lo < correct / n < hi <= 1.0
    # More data, tighter interval.
    assert (lambda a, b: b - a)(*wilson_interval(500, 1000)) < (lambda a, b: b - a)(
        *wilson_interval(5, 10)
    )


def test_percentiles_are_ordered():
    p = percentiles([5.0, 1.0, 3.0, 2.0, 100.0, 4.0])
    assert p["min"] == 1.0 and p["min"] <= p["p50"] <= p["p90"] <= p["p99"] <= 100.0


def test_cpu_window_sees_a_process_spinning_beside_it():
    """A process spinning on our cores during the timed block is counted and warned about."""
    import os
    import subprocess
    import sys
    import time

    from edgerobust.evaluate.cpuload import BUSY_CORES, CpuWindow

    if len(os.sched_getaffinity(0)) > 8:
        pytest.skip("one spinning process is not contention on this many cores")
    spin = "import time\nt = time.time()\nwhile time.time() - t < 3: pass"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.5)  # past the interpreter's start-up
        with CpuWindow() as w:
            t = time.time()
            while time.time() - t < 1.5:  # and this process busy too, as a latency loop is
                pass
    finally:
        child.wait()
    r = w.result(p50=30.0, fastest=10.0)
    if r["other_cores"] is None:
        pytest.skip("no /proc/stat on this system")
    assert r["other_cores"] - r["resolution_cores"] >= BUSY_CORES
    assert 0.1 < r["own_cores"] <= 1.05 and r["window_s"] >= 1.5
    assert r["p50_over_min"] == 3.0 and "3.0x the fastest run" in r["warning"]


def _window(monkeypatch, busy, own, wall, cores=2):
    from edgerobust.evaluate import cpuload

    b, o, c = iter(busy), iter(own), iter([0.0, wall])
    monkeypatch.setattr(cpuload, "_cores", lambda: set(range(cores)))
    monkeypatch.setattr(cpuload, "_busy_seconds", lambda _: next(b))
    monkeypatch.setattr(cpuload, "_own_seconds", lambda: next(o))
    monkeypatch.setattr(cpuload, "_clock", lambda: next(c))
    with cpuload.CpuWindow() as w:
        pass
    return w.result(p50=10.0, fastest=10.0)


def test_cpu_window_subtracts_its_own_time_and_warns_only_when_cores_ran_short(monkeypatch):
    # 2 cores over 2 s: the machine busy 3.5 s, of which ours 1.5 s -> others 1 core
    r = _window(monkeypatch, [100.0, 103.5], [10.0, 11.5], 2.0)
    assert r["other_cores"] == pytest.approx(1.0) and r["own_cores"] == pytest.approx(0.75)
    assert r["warning"] and "1.0 of the 2 cores" in r["warning"]
    # the same other work on 64 idle cores does not compete with a 1-core run
    r = _window(monkeypatch, [100.0, 103.5], [10.0, 11.5], 2.0, cores=64)
    assert r["other_cores"] == pytest.approx(1.0) and r["warning"] is None
    # a window too short for the kernel's ticks to tell: recorded, not warned about
    r = _window(monkeypatch, [100.0, 100.02], [10.0, 10.01], 0.02)
    assert r["other_cores"] == pytest.approx(0.5) and r["resolution_cores"] >= 1
    assert r["warning"] is None


def test_cpu_window_without_proc_stat(monkeypatch, tmp_path):
    from edgerobust.evaluate import cpuload

    monkeypatch.setattr(cpuload, "_STAT", tmp_path / "absent")
    with cpuload.CpuWindow() as w:
        pass
    r = w.result(p50=10.0, fastest=10.0)
    assert r["other_cores"] is None and r["warning"] is None and "unavailable" in r["method"]
    (tmp_path / "absent").write_text("cpu  1 2\ncpu0 x y\n")  # damaged: no figure, no crash
    monkeypatch.setattr(cpuload, "_STAT", tmp_path / "absent")
    assert cpuload._busy_seconds({0}) is None
