"""The real PACS dataset (../shared/data/pacs/PACS), when it is there: run with ``-m pacs``."""

from __future__ import annotations

from pathlib import Path

import pytest

PACS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pacs" / "PACS"

pytestmark = [
    pytest.mark.pacs,
    pytest.mark.skipif(not PACS.is_dir(), reason=f"PACS not found at {PACS}"),
]

DOMAINS = {"art_painting", "cartoon", "photo", "sketch"}
CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")


def test_open_pacs():
    from edgerobust.data import open_dataset

    ds = open_dataset(PACS)
    assert set(ds.domains) == DOMAINS
    assert ds.classes == CLASSES
    assert ds.layout == "flat"
    assert sum(len(d) for d in ds.domains.values()) == 9991
    for name, dom in ds.domains.items():
        split = ds.split(name)
        assert len(split.val) == round(0.1 * len(dom))
        assert len(split.train) + len(split.val) == len(dom)
        assert not set(split.train) & set(split.val)
        assert set(dom.labels) == set(range(len(CLASSES)))


def test_pacs_end_to_end_through_onnx(tmp_path):
    """An untrained tinyresnet, exported to ONNX and evaluated on 20 images per domain: proves
    the real-data path (JPEG decoding at 227 -> 32 px, split, export parity, eval) end to end."""
    import torch

    from edgerobust.evaluate import EvalConfig, evaluate
    from edgerobust.exporters import ExportRequest, export
    from edgerobust.models.build import build_model
    from edgerobust.models.checkpoint import ModelSpec, save_checkpoint

    torch.manual_seed(0)
    model = build_model("tinyresnet", len(CLASSES)).eval()
    spec = ModelSpec(
        arch="tinyresnet",
        class_names=CLASSES,
        input_size=32,
        origin={
            "kind": "test",
            "dataset": str(PACS),
            "source_domain": "photo",
            "split_seed": 1,
            "val_fraction": 0.1,
        },
    )
    ckpt = save_checkpoint(tmp_path / "run" / "model.safetensors", model, spec)
    res = export(
        ExportRequest(str(ckpt), format="onnx", out=str(tmp_path / "models"), parity_images=32)
    )
    assert res.parity.passed and res.parity.n == 32

    rec = evaluate(EvalConfig(str(res.artifact), str(PACS), limit=20, warmup=1, latency_runs=5))
    by_domain = {d["domain"]: d for d in rec["domains"]}
    assert set(by_domain) == DOMAINS
    assert by_domain["photo"]["role"] == "source" and by_domain["photo"]["split"].startswith("val")
    for d in by_domain.values():
        assert d["n"] == 20 and 0.0 <= d["accuracy"] <= 1.0
        assert d["unreadable_skipped"] == []
