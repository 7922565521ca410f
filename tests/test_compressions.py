"""Compressions behind one protocol: a compression this test module registers is read from its
own ``[compress.<name>]`` table, planned, and run as its own stage kind, with no other edit."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from edgerobust.compress import (
    COMPRESSIONS,
    PlanContext,
    PlannedModel,
    list_compressions,
    register_compression,
)
from edgerobust.errors import ConfigError
from edgerobust.study.plan import plan_study
from edgerobust.study.spec import load_study
from edgerobust.study.stage import STAGE_KINDS, Stage, get_stage_kind


class Sparsify:
    """A toy compression: zero a fraction of each chosen baseline's weights (planned only)."""

    name: ClassVar[str] = "sparsify"
    method: ClassVar[str] = "SP"
    compression: ClassVar[str] = "sparse"
    scope: ClassVar[str] = "source"

    def parse(self, comp, ctx) -> dict[str, Any] | None:
        t = comp.table("sparsify")
        if t is None:
            return None
        spec = {
            "bases": t.get("bases", t.array(t.string(ctx.train.archs))),
            "amount": t.get("amount", t.number(0.0, 1.0, open_lo=True), 0.5),
        }
        t.finish()
        return spec

    def plan(self, spec, ctx: PlanContext, models: list[PlannedModel]) -> list[PlannedModel]:
        new = []
        for base in spec["bases"]:
            parent = ctx.baselines[base]
            label = f"{base}-sp-{spec['amount']:g}"
            m = PlannedModel(
                Stage(
                    self.name,
                    {"amount": spec["amount"], "seed": ctx.seed},
                    (("model", parent.stage), *ctx.data_deps),
                    f"{ctx.source}/{label}",
                ),
                label,
                base,
                self.method,
                base,
                self.compression,
                ctx.source or "",
                parent=parent,
            ).with_meta()
            ctx.add(m.stage)
            new.append(m)
        return new

    def run(self, settings, inputs, out, rep):
        """Its stage adapter: what ``edgerobust run`` calls for each of its stages."""
        (out / "sparsify.json").write_text('{"record": "sparsify"}')
        return out / "sparsify.json"


@pytest.fixture
def plugin():
    """What a plugin module does at import: one registration (undone afterwards)."""
    register_compression(Sparsify)
    yield
    COMPRESSIONS._items.pop("sparsify", None)
    STAGE_KINDS._items.pop("sparsify", None)


STUDY = """
[study]
name = "plugin"

[dataset]
kind = "synthetic"
per_class = 4
size = 32
sources = ["studio", "webcam"]

[train]
archs = ["tinyresnet"]
image_size = 32
epochs = 1

[compress.sparsify]
bases = ["tinyresnet"]
amount = 0.25

[export]
formats = ["onnx"]
"""


def test_the_builtins_are_registered_in_order():
    assert list_compressions()[:3] == ["prune", "distill", "quantize"]
    assert [COMPRESSIONS.get(n).method for n in ("prune", "distill", "quantize")] == [
        "FP",
        "KD",
        "PTSQ",
    ]
    # each is also its stage kind, with its adapter (retraining resumes); quantize is v2 since
    # per-channel weights, bias correction, clamped activations and the fallback changed its output
    kinds = {n: get_stage_kind(n) for n in ("prune", "distill", "quantize")}
    assert {n: (k.version, k.resumable) for n, k in kinds.items()} == {
        "prune": (1, True),
        "distill": (1, True),
        "quantize": (2, False),
    }


def test_a_registered_compression_is_planned_from_its_table(plugin, tmp_path):
    path = tmp_path / "plugin.toml"
    path.write_text(STUDY)
    study = load_study(path)
    assert study.compress == {"sparsify": {"bases": ("tinyresnet",), "amount": 0.25}}
    plan = plan_study(study)
    sp = [s for s in plan.stages if s.kind == "sparsify"]
    assert [s.label for s in sp] == ["studio/tinyresnet-sp-0.25", "webcam/tinyresnet-sp-0.25"]
    train = {s.key: s for s in plan.stages if s.kind == "train"}
    assert all(dict(s.deps)["model"].key in train for s in sp)
    assert sp[0].meta["method"] == "SP" and sp[0].meta["parent_model"] == "tinyresnet"
    assert get_stage_kind("sparsify").run.__self__ is COMPRESSIONS.get("sparsify")
    # its models are fp32 models like any other: exported (and so evaluated, attacked)
    exports = [s for s in plan.stages if s.kind == "export" and s.meta["compression"] == "sparse"]
    assert {dict(s.deps)["model"].key for s in exports} == {s.key for s in sp}
    # Without the registration the same table is an unknown key, naming what is known.
    del COMPRESSIONS._items["sparsify"]
    with pytest.raises(ConfigError, match=r"compress\.sparsify: unknown key"):
        load_study(path)


def test_duplicate_names_are_errors(plugin):
    with pytest.raises(ValueError, match="already registered"):
        register_compression(Sparsify)

    class OtherPrune(Sparsify):
        name: ClassVar[str] = "prune"

    with pytest.raises(ValueError, match="already registered"):
        register_compression(OtherPrune)

    class Train(Sparsify):  # a stage kind that is no compression
        name: ClassVar[str] = "train"

    with pytest.raises(ValueError, match="stage kind 'train' is already registered"):
        register_compression(Train)
    assert "train" not in COMPRESSIONS
