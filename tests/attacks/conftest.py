"""Shared tiny models for the attack tests: a trained tinyresnet on 32 x 32 synthetic domains, its
int8 (PTSQ) version, and an int8 ONNX artifact. Built once per session in a few seconds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

# The few settings that make each attack run in well under a second on the tiny model. They go
# through the same override path (AttackConfig.params / --set) a user has.
FAST = {
    "deepfool": {"steps": 5},
    "pgd": {"steps": 5},
    "cw": {"steps": 5, "binary_search_steps": 2},
    "ddn": {"steps": 5},
    "ead": {"steps": 5, "binary_search_steps": 2},
    "saltpepper": {"steps": 40},
}


@pytest.fixture(scope="session")
def fast() -> dict[str, dict[str, int]]:
    """Per-attack settings that keep each attack to a fraction of a second (see ``FAST``)."""
    return {k: dict(v) for k, v in FAST.items()}


@dataclass(frozen=True)
class Tiny:
    data: Path
    fp32: Path  # run folder
    int8: Path  # run folder
    onnx_int8: Path  # artifact


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory, cache_env: Path) -> Tiny:
    """``cache_env`` (tests/conftest.py) keeps decoded images out of $HOME."""
    pytest.importorskip("torch")
    pytest.importorskip("foolbox")
    from edgerobust.compress.ptsq import QuantizeConfig, quantize_checkpoint
    from edgerobust.compress.quantize import host_engine
    from edgerobust.data.synthetic import make_synthetic
    from edgerobust.exporters import ExportRequest, export
    from edgerobust.train import TrainConfig, train

    root = tmp_path_factory.mktemp("tiny-attacks")
    data = make_synthetic(root / "data", per_class=20, size=32)
    fp32 = root / "run"
    train(
        TrainConfig(
            data=str(data),
            source="studio",
            arch="tinyresnet",
            out=str(fp32),
            epochs=10,
            lr=0.05,
            batch_size=16,
            image_size=32,
            augment=True,
        )
    )
    engine = host_engine()
    int8 = root / "run-int8"
    quantize_checkpoint(QuantizeConfig(str(fp32), engine=engine, calib_batches=2, out=str(int8)))
    res = export(
        ExportRequest(str(fp32), format="onnx", quant="int8", out=str(root / "models"), force=True)
    )
    return Tiny(data, fp32, int8, res.artifact)
