"""White-box attacks: the registry, foolbox on a tiny model, and the labels of every figure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgerobust.attacks import (
    FoolboxAttack,
    Label,
    get,
    list_attacks,
    parse_attacks,
    parse_eps,
    register,
)
from edgerobust.errors import CheckpointError, ConfigError

GRADIENT = ["deepfool", "pgd", "fgsm", "cw", "ddn", "ead"]

# The paper, section 4 and Tables 4/5: (norm, light eps, heavy eps).
PAPER = {
    "deepfool": ("linf", 0.0003, 0.004),
    "pgd": ("linf", 0.0003, 0.004),
    "fgsm": ("linf", 0.0003, 0.004),
    "cw": ("l2", 0.03, 0.4),
    "ddn": ("l2", 0.003, 0.24),
    "ead": ("l1", 1.0, 10.0),
    "saltpepper": ("l2", 1.0, 15.0),
}


# --------------------------------------------------------------------------- registry


def test_registry_holds_the_papers_attacks_and_settings() -> None:
    assert list_attacks() == list(PAPER)
    for name, (norm, light, heavy) in PAPER.items():
        spec = get(name)
        assert (spec.norm, spec.eps("light"), spec.eps("heavy")) == (norm, (light,), (heavy,))
        assert spec.gradient == (name != "saltpepper")
    # The paper's non-default steps: EAD 100, C&W 100 with step size 0.001, S&P 400
    assert get("ead").params["steps"] == 100
    assert (get("cw").params["steps"], get("cw").params["stepsize"]) == (100, 0.001)
    assert get("saltpepper").params["steps"] == 400
    assert list_attacks("*d*") == ["deepfool", "pgd", "ddn", "ead"]


def test_unknown_attack_is_one_line_listing_the_names() -> None:
    with pytest.raises(ConfigError) as info:
        get("jsma")
    msg = str(info.value)
    assert "\n" not in msg and "jsma" in msg
    assert all(n in msg for n in PAPER)


def test_duplicate_registration_is_an_error() -> None:
    before = get("fgsm")
    with pytest.raises(ValueError, match="already registered"):
        register(FoolboxAttack("fgsm", "other", "l2", (1.0,), (2.0,), foolbox="FGSM"))
    assert get("fgsm") is before  # never silently overwritten


def test_settings_overrides_are_checked() -> None:
    assert get("cw").with_params({"steps": 7})["steps"] == 7
    assert get("cw").with_params({"steps": 7})["stepsize"] == 0.001
    with pytest.raises(ConfigError, match="cw has no setting 'step'"):
        get("cw").with_params({"step": 7})


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1,15", (1.0, 15.0)), (" 0.004 ", (0.004,)), ("0", (0.0,)), (None, None)],
)
def test_parse_eps_accepts(value, expected) -> None:
    assert parse_eps(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1,,x", "'' is not a number"),
        ("x", "'x' is not a number"),
        ("", "'' is not a number"),
        ("-1", "finite number >= 0"),
        ("1,nan", "finite number >= 0"),
        ("inf", "finite number >= 0"),
        ("1,1", "repeats"),
    ],
)
def test_parse_eps_rejects_with_one_line(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_eps(value)
    assert "\n" not in str(info.value)


def test_parse_attacks() -> None:
    assert parse_attacks("fgsm, pgd") == ("fgsm", "pgd")
    assert parse_attacks("all") == parse_attacks(None) == tuple(PAPER)
    for bad, message in (
        ("fgsm,,pgd", "separated by commas"),
        ("fgsm,fgsm", "twice"),
        ("x", "unknown"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_attacks(bad)


# --------------------------------------------------------------------------- foolbox on a tiny model


@pytest.fixture(scope="module")
def batch(tiny):
    from edgerobust.data import decode_domain, open_dataset
    from edgerobust.models.checkpoint import load_checkpoint
    from edgerobust.runtimes.preprocess import to_input

    ck = load_checkpoint(tiny.fp32)
    ds = open_dataset(tiny.data)
    images = decode_domain(ds.domain("studio"), 32)
    idx = list(ds.split("studio").val)[:8]
    return ck, to_input(np.asarray(images.pixels[idx])), images.labels[idx]


# Budgets large enough that a few steps break something on the tiny model
BIG = {"linf": 0.1, "l2": 3.0, "l1": 100.0}
# PGD, C&W and EAD need a few more (or larger) steps than ``fast`` to move far enough
GENEROUS = {
    "pgd": {"steps": 10, "rel_stepsize": 0.25},
    "cw": {"steps": 20, "binary_search_steps": 2, "stepsize": 0.01, "initial_const": 1.0},
    "ead": {"steps": 20, "binary_search_steps": 2, "initial_const": 1.0},
}


@pytest.mark.parametrize("name", GRADIENT)
def test_each_gradient_attack_runs_within_its_budget(batch, fast, name: str) -> None:
    import torch

    from edgerobust.attacks.whitebox import craft, perturbation_norms

    ck, x, y = batch
    spec = get(name)
    eps = (0.0, spec.heavy[0], BIG[spec.norm])
    overrides = GENEROUS.get(name, fast.get(name))
    res = craft(ck.model, spec, x, y, eps, device=torch.device("cpu"), overrides=overrides)
    adv = res.adversarials
    assert adv.shape == (3, *x.shape) and adv.dtype == np.float32
    assert adv.min() >= 0 and adv.max() <= 1  # [0, 1] pixel space, bounds=(0, 1)
    np.testing.assert_array_equal(adv[0], x)  # no budget, no change
    norms = perturbation_norms(adv - x[None], spec.norm)
    assert (norms <= np.asarray(eps)[:, None] * (1 + 1e-5) + 1e-6).all(), norms.max(axis=1)
    # success is the crafting model's own verdict on what it returned
    pred = ck.model(torch.from_numpy(adv.reshape(-1, *x.shape[1:]))).argmax(1).numpy()
    np.testing.assert_array_equal(res.success, pred.reshape(3, -1) != y[None])
    assert res.success[2].sum() > res.success[0].sum()  # a large budget breaks something


def test_int8_model_is_never_attacked_with_gradients(tiny, batch) -> None:
    import torch

    from edgerobust.attacks.whitebox import craft, is_quantized
    from edgerobust.models.checkpoint import load_checkpoint

    _, x, y = batch
    int8 = load_checkpoint(tiny.int8)
    assert is_quantized(int8.model) and not is_quantized(batch[0].model)
    with pytest.raises(ValueError, match="int8 gets transfer"):
        craft(int8.model, get("fgsm"), x, y, (0.004,), device=torch.device("cpu"))


def test_perturbation_norms_match_numpy() -> None:
    from edgerobust.attacks.whitebox import perturbation_norms

    d = np.random.default_rng(0).normal(size=(2, 4, 3, 5, 5)).astype(np.float32)
    flat = d.reshape(2, 4, -1).astype(np.float64)
    np.testing.assert_allclose(perturbation_norms(d, "linf"), np.abs(flat).max(-1))
    np.testing.assert_allclose(perturbation_norms(d, "l2"), np.linalg.norm(flat, axis=-1))
    np.testing.assert_allclose(perturbation_norms(d, "l1"), np.abs(flat).sum(-1))


# --------------------------------------------------------------------------- the attack command's library


def _run(fast, checkpoint, **kw):
    from edgerobust.attacks.run import AttackConfig, run_attacks

    attacks = kw.pop("attacks", tuple(PAPER))
    params = {k: v for k, v in fast.items() if k in attacks}
    cfg = AttackConfig(str(checkpoint), attacks=attacks, params=params, **kw)
    return run_attacks(cfg)


def test_fp32_model_gets_direct_and_blackbox_figures(tiny, fast, tmp_path) -> None:
    out = tmp_path / "attack.json"
    rec = _run(fast, tiny.fp32, strength="heavy", limit=6, out=str(out))
    assert json.loads(out.read_text()) == json.loads(json.dumps(rec))
    assert [t["name"] for t in rec["targets"]] == ["checkpoint"]
    assert rec["model"]["precision"] == "fp32" and rec["source"] == "checkpoint"
    for a in rec["attacks"]:
        (r,) = a["results"]
        assert r["label"] == ("direct" if a["gradient"] else "blackbox")
        assert a["eps"] == [0.0, get(a["attack"]).heavy[0]]  # eps 0 is always measured
        assert r["n"] == 6 and len(r["robust_accuracy"]) == 2
    sp = next(a for a in rec["attacks"] if a["attack"] == "saltpepper")["results"][0]
    assert 0 < sp["queries"] <= sp["queries_full"]
    avg = rec["average_adversarial_accuracy"]["heavy"]["checkpoint"]
    heads = [a["results"][0]["robust_accuracy"][-1] for a in rec["attacks"]]
    assert avg["value"] == pytest.approx(np.mean(heads))
    assert avg["labels"] == {"direct": 6, "blackbox": 1}


def test_both_strengths_in_one_sweep_equal_two_separate_runs(tiny, fast) -> None:
    """``strength="both"`` judges one search at the light and heavy budgets: each strength's
    figures and average equal those of its own run (minimisation attacks search once)."""
    kw = dict(attacks=("fgsm", "deepfool", "saltpepper"), limit=6)
    both = _run(fast, tiny.fp32, strength="both", **kw)
    assert set(both["average_adversarial_accuracy"]) == {"light", "heavy"}
    for strength in ("light", "heavy"):
        one = _run(fast, tiny.fp32, strength=strength, **kw)
        for a, b in zip(both["attacks"], one["attacks"], strict=True):
            e = a["headline_eps"][strength]
            assert b["headline_eps"] == {strength: e} and e == b["eps"][-1]
            assert (
                a["results"][0]["robust_accuracy"][a["eps"].index(e)]
                == b["results"][0]["robust_accuracy"][-1]
            )
        assert (
            both["average_adversarial_accuracy"][strength]
            == one["average_adversarial_accuracy"][strength]
        )
    with pytest.raises(ConfigError, match="--eps replaces one strength"):
        _run(fast, tiny.fp32, strength="both", eps=(0.1,), **kw)
    with pytest.raises(ConfigError, match="light, heavy or both"):
        _run(fast, tiny.fp32, strength="medium", **kw)


def test_limit_is_a_seeded_recorded_sample(tiny, fast) -> None:
    a = _run(fast, tiny.fp32, attacks=("fgsm",), limit=5, seed=1)
    b = _run(fast, tiny.fp32, attacks=("fgsm",), limit=5, seed=1)
    c = _run(fast, tiny.fp32, attacks=("fgsm",), limit=5, seed=2)
    full = _run(fast, tiny.fp32, attacks=("fgsm",))
    assert a["data"]["files"] == b["data"]["files"] != c["data"]["files"]
    assert a["data"]["n"] == len(a["data"]["files"]) == 5
    assert set(a["data"]["files"]) < set(full["data"]["files"])
    assert full["data"]["n"] == full["data"]["n_split"]  # the whole validation split


def test_int8_gets_transfer_never_direct(tiny, fast) -> None:
    from edgerobust.models.checkpoint import read_spec

    rec = _run(fast, tiny.int8, strength="heavy", limit=6, artifacts=(str(tiny.onnx_int8),))
    names = [t["name"] for t in rec["targets"]]
    assert names == ["source", "checkpoint", tiny.onnx_int8.name]
    assert rec["model"]["precision"] == "int8" and rec["source"] == "source"
    parent = read_spec(tiny.int8).origin["parent"]
    assert rec["targets"][0]["path"] == parent and rec["targets"][0]["precision"] == "fp32"
    for a in rec["attacks"]:
        labels = {r["target"]: r["label"] for r in a["results"]}
        assert set(labels) == set(names)
        if a["gradient"]:
            assert labels == {
                "source": Label.direct.value,
                "checkpoint": Label.transfer.value,
                tiny.onnx_int8.name: Label.transfer.value,
            }
            assert all(r["crafted_on"] == "source" for r in a["results"])
        else:
            assert set(labels.values()) == {Label.blackbox.value}
    # Nothing int8 carries a direct gradient figure
    assert not any(
        r["label"] == "direct" and r["target"] != "source"
        for a in rec["attacks"]
        for r in a["results"]
    )
    assert rec["average_adversarial_accuracy"]["heavy"]["checkpoint"]["labels"] == {
        "transfer": 6,
        "blackbox": 1,
    }


def test_replay_measures_the_fp32_model_and_its_int8_versions_on_one_crafting(tiny, fast):
    """``--replay``: the fp32 model is attacked once (direct); its int8 checkpoint and ONNX int8
    artifact read the very same adversarials (transfer), so their figures equal those of the
    int8 model's own run, which crafts on the same parent."""
    kw = dict(attacks=("fgsm", "pgd"), strength="heavy", limit=6)
    both = _run(fast, tiny.fp32, replay=(str(tiny.int8),), artifacts=(str(tiny.onnx_int8),), **kw)
    names = [t["name"] for t in both["targets"]]
    assert names == ["checkpoint", str(tiny.int8), tiny.onnx_int8.name]
    assert [t["role"] for t in both["targets"]] == ["checkpoint", "replay", "artifact"]
    assert both["targets"][1]["precision"] == "int8"
    alone = _run(fast, tiny.int8, artifacts=(str(tiny.onnx_int8),), **kw)
    rename = {"checkpoint": "source", str(tiny.int8): "checkpoint"}
    for a, b in zip(both["attacks"], alone["attacks"], strict=True):
        got = {rename.get(r["target"], r["target"]): r for r in a["results"]}
        for r in b["results"]:
            assert got[r["target"]]["label"] == r["label"]
            assert got[r["target"]]["robust_accuracy"] == r["robust_accuracy"]
    with pytest.raises(ConfigError, match="already"):
        _run(fast, tiny.fp32, replay=(str(tiny.fp32),), **kw)


def _rewrite_origin(src, dst, **origin):
    """Copy an int8 checkpoint with a changed origin record (its weights untouched)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from edgerobust.models.checkpoint import SPEC_KEY, resolve

    path = resolve(src)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    spec = json.loads(meta[SPEC_KEY])
    spec["origin"] = {**spec["origin"], **origin}
    spec["origin"] = {k: v for k, v in spec["origin"].items() if v is not None}
    save_file(load_file(str(path)), str(dst), metadata={SPEC_KEY: json.dumps(spec)})
    return dst


def test_int8_without_a_usable_parent_says_what_to_do(tiny, fast, tmp_path) -> None:
    orphan = _rewrite_origin(tiny.int8, tmp_path / "orphan.safetensors", parent=None)
    with pytest.raises(CheckpointError, match="records no fp32 parent: pass --source"):
        _run(fast, orphan, attacks=("fgsm",), limit=2)
    # --source supplies it explicitly
    rec = _run(fast, orphan, attacks=("fgsm",), limit=2, source=str(tiny.fp32))
    assert rec["attacks"][0]["results"][1]["label"] == "transfer"
    moved = _rewrite_origin(tiny.int8, tmp_path / "moved.safetensors", parent_sha256="0" * 64)
    with pytest.raises(CheckpointError, match="changed since"):
        _run(fast, moved, attacks=("fgsm",), limit=2)
    with pytest.raises(ConfigError, match="is int8"):
        _run(fast, tiny.int8, attacks=("fgsm",), limit=2, source=str(tiny.int8))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"attacks": ()}, "--attacks is empty"),
        ({"attacks": ("fgsm",), "params": {"cw": {"steps": 1}}}, "not among --attacks"),
        ({"attacks": ("cw",), "params": {"cw": {"step": 1}}}, "no setting 'step'"),
        ({"limit": 0}, "--limit must be >= 1"),
        ({"eps": (-1.0,)}, "finite and >= 0"),
        ({"sp_stop": "sometimes"}, "sometimes"),
    ],
)
def test_bad_config_is_one_line(kw, message) -> None:
    from edgerobust.attacks.run import AttackConfig

    with pytest.raises((ConfigError, ValueError), match=message) as info:
        AttackConfig("unused", **kw).validate()
    assert "\n" not in str(info.value)
