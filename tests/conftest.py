"""Shared fixtures: one tiny synthetic dataset, one trained tinyresnet, its int8 twin, and the
artifacts exported from them, built once per session in a temporary folder.

Everything is sized for seconds on two CPU cores: 32 x 32 images, 10 per class and domain, the
~80 k-parameter ``tinyresnet``. The decoded-image cache is pointed into the session's temporary
folder so no test ever writes ``~/.cache``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import IMAGE_SIZE, PER_CLASS, SOURCE, one_torch_thread  # noqa: F401 - shared

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = REPO_ROOT / ".venv" / "bin"


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    one_torch_thread()


@pytest.fixture(scope="session", autouse=True)
def cache_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """EDGEROBUST_CACHE in a temporary folder for the whole session (restored afterwards)."""
    import torch  # noqa: F401 - so that one_torch_thread() applies to the session fixtures

    one_torch_thread()
    cache = tmp_path_factory.mktemp("edgerobust-cache")
    old = os.environ.get("EDGEROBUST_CACHE")
    os.environ["EDGEROBUST_CACHE"] = str(cache)
    try:
        yield cache
    finally:
        if old is None:
            os.environ.pop("EDGEROBUST_CACHE", None)
        else:
            os.environ["EDGEROBUST_CACHE"] = old


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory, cache_env: Path) -> Path:
    """ROOT/{studio,webcam,natural}/CLASS/*.png: 10 classes x 10 images, 32 x 32. Read-only!"""
    from edgerobust.data.synthetic import make_synthetic

    return make_synthetic(
        tmp_path_factory.mktemp("synthetic") / "data", per_class=PER_CLASS, size=IMAGE_SIZE
    )


@pytest.fixture
def synthetic_copy(synthetic_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny dataset that a test may damage."""
    import shutil

    return Path(shutil.copytree(synthetic_root, tmp_path / "data"))


@dataclass(frozen=True)
class Trained:
    run: Path  # run folder
    checkpoint: Path  # run/model.safetensors
    record: dict  # train.json


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> Trained:
    """tinyresnet trained on the studio domain (about a second)."""
    from edgerobust.train import TrainConfig, train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    record = train(
        TrainConfig(
            data=str(synthetic_root),
            source=SOURCE,
            arch="tinyresnet",
            out=str(run),
            epochs=20,
            lr=0.05,
            batch_size=32,
            image_size=IMAGE_SIZE,
            augment=True,
            device="cpu",
        )
    )
    return Trained(run, run / "model.safetensors", record)


@pytest.fixture(scope="session")
def int8_checkpoint(tmp_path_factory: pytest.TempPathFactory, trained: Trained) -> Path:
    """The trained model after eager PTSQ (x86 engine): the calibrated, prepared state."""
    from edgerobust.compress.ptsq import QuantizeConfig, quantize_checkpoint

    out = tmp_path_factory.mktemp("runs") / "tiny-int8-x86"
    rec = quantize_checkpoint(QuantizeConfig(str(trained.checkpoint), engine="x86", out=str(out)))
    return Path(rec["checkpoint"])


# (format, precision): the checkpoint to export from is the fp32 one, except the eager-PTSQ .ptl,
# which starts from the int8 checkpoint (the path 'compress quantize' + 'export' takes).
ARTIFACT_KINDS = (
    ("onnx", "fp32"),
    ("onnx", "int8"),
    ("ptl", "fp32"),
    ("ptl", "int8"),
    ("torchscript", "fp32"),
)


@pytest.fixture(scope="session")
def artifacts(
    tmp_path_factory: pytest.TempPathFactory, trained: Trained, int8_checkpoint: Path
) -> dict[tuple[str, str], object]:
    """ExportResult per (format, precision), all in one folder.

    int8 uses ``force=True``: with a 10-image validation split one disagreement is already below
    the 98 % bar, which says nothing about the exporter. The gate itself is tested separately.
    """
    from edgerobust.exporters import ExportRequest, export

    out = tmp_path_factory.mktemp("models")
    results = {}
    for fmt, prec in ARTIFACT_KINDS:
        ckpt = int8_checkpoint if (fmt, prec) == ("ptl", "int8") else trained.checkpoint
        results[(fmt, prec)] = export(
            ExportRequest(str(ckpt), format=fmt, quant=prec, out=str(out), force=prec == "int8")
        )
        one_torch_thread()
    return results


@pytest.fixture
def make_image_file() -> Callable[..., Path]:
    """Write a small random image (format from the suffix) and return its path."""
    counter = iter(range(1_000_000))

    def write(path: Path, size: int = 12, mode: str = "RGB") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(next(counter))
        channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
        arr = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
        img = Image.fromarray(arr[..., 0] if mode == "L" else arr, mode)
        img.save(path)
        return path

    return write


def copy_artifact(result, dest: Path) -> Path:
    """Copy an exported artifact and its manifest into ``dest``; return the artifact's path."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(result.artifact, dest / result.artifact.name)
    shutil.copy2(result.manifest_path, dest / result.manifest_path.name)
    return dest / result.artifact.name


@pytest.fixture
def artifact_copy(tmp_path: Path) -> Callable[[object], Path]:
    """Copy a session artifact (+ manifest) into this test's folder so the test may damage it."""
    return lambda result: copy_artifact(result, tmp_path / "artifact")
