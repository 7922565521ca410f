"""``edgerobust bench``: the precision comparison's table, and sessions without thread spinning
(eval-device's and the bare call it is compared with)."""

from __future__ import annotations

import pytest

from edgerobust.errors import ConfigError
from edgerobust.evaluate.bench import PrecisionBenchConfig, _bare_onnx, run_precision_bench
from edgerobust.runtimes import open_artifact
from edgerobust.runtimes.ort import SPINNING_KEY


def test_onnxruntime_sessions_do_not_spin(artifacts):
    art = artifacts[("onnx", "int8")].artifact
    model = open_artifact(art, "onnxruntime", threads=2)
    assert model.session.get_session_options().get_session_config_entry(SPINNING_KEY) == "0"
    assert model.info()["intra_op_spinning"] is False
    bare = _bare_onnx(art, 2, None)
    assert bare.session.get_session_options().get_session_config_entry(SPINNING_KEY) == "0"


def test_precisions_side_by_side(trained, synthetic_root):
    cfg = PrecisionBenchConfig(
        str(trained.checkpoint), str(synthetic_root), threads=(1,), runs=3, repeats=2,
        agreement_images=8, calib_batches=2,
    )  # fmt: skip
    res = run_precision_bench(cfg)
    rows = {r["contender"]: r for r in res["rows"]}
    labels = list(rows)
    assert labels[:2] == ["torch fp32 eager", "onnxruntime fp32"]
    assert sum(label.startswith("onnxruntime int8") for label in labels) in (1, 2)
    assert any("s8s8" in label for label in labels)  # ARM's first choice, for contrast on x86
    assert {"lite fp32"} <= set(labels) and any(label.startswith("lite int8") for label in labels)
    assert rows["onnxruntime fp32"]["speedup_vs_onnxruntime_fp32"] == pytest.approx(1.0)
    assert rows["onnxruntime fp32"]["top1_agreement_vs_torch_fp32"] == 1.0
    assert rows["torch fp32 eager"]["top1_agreement_vs_torch_fp32"] == 1.0
    for r in rows.values():
        assert len(r["p50_ms_per_round"]) == 2 and r["p50_ms"] > 0
        base = rows["onnxruntime fp32"]["p50_ms"]
        assert r["speedup_vs_onnxruntime_fp32"] == pytest.approx(base / r["p50_ms"])
    # ExecuTorch where the extra is installed (CI installs it); said, not skipped, where not
    try:
        import executorch.runtime  # noqa: F401

        assert {"executorch fp32", "executorch int8 (PT2E)"} <= set(labels)
        assert rows["executorch fp32"]["top1_agreement_vs_torch_fp32"] == 1.0
        assert res["not_measured"] == []
    except ImportError:
        assert res["not_measured"] and "executorch" in res["not_measured"][0]
    assert len(res["lines"]) == 1 + len(rows) + len(res["not_measured"])


def test_precision_bench_refuses_bad_settings(trained):
    with pytest.raises(ConfigError, match="--threads"):
        run_precision_bench(PrecisionBenchConfig(str(trained.checkpoint), threads=(0,)))
