"""The settled gradient attacks (edgerobust/attacks/settled.py): foolbox's searches per image,
stopped once every eps's answer is decided, against foolbox itself."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
foolbox = pytest.importorskip("foolbox")

from edgerobust.attacks import get  # noqa: E402
from edgerobust.errors import ConfigError  # noqa: E402

# Small budgets: each search runs in a fraction of a second on the tiny models.
SMALL = {
    "cw": {"binary_search_steps": 4, "steps": 20, "stepsize": 0.05, "initial_const": 1.0},
    "ead": {"binary_search_steps": 4, "steps": 20, "initial_const": 1.0},
    "ddn": {"steps": 20},
    "deepfool": {"steps": 10},
}


# Budgets large enough that the small searches break something on the toy model
BIG = {"linf": 0.3, "l2": 3.0, "l1": 30.0}


@pytest.fixture(scope="module")
def toy():
    """A random conv net on 12 x 12 images, labelled by its own answers (one made wrong)."""
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(128, 5),
    ).eval()
    x = torch.rand(6, 3, 12, 12)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[0] = (y[0] + 1) % 5  # one image misclassified while clean
    return model, x, y


def _foolbox(spec, settings, model, x, y, eps):
    attack = getattr(foolbox.attacks, spec.foolbox)(**settings)
    fmodel = foolbox.PyTorchModel(model, bounds=(0, 1))
    _, clipped, success = attack(fmodel, x, y, epsilons=list(eps))
    return torch.stack(clipped), success


@pytest.mark.parametrize("name", list(SMALL))
def test_search_without_stopping_is_foolbox_image_by_image(toy, name: str) -> None:
    """``stop="none"``: each image's search is foolbox's on that image alone (batch 1), and at
    any batch size, since every decision is taken per image."""
    from edgerobust.attacks.settled import SEARCHES, judge

    model, x, y = toy
    spec = get(name)
    settings = spec.with_params(SMALL[name])
    eps = (0.0, spec.light[0], spec.heavy[0], BIG[spec.norm])
    ref = [_foolbox(spec, settings, model, x[i : i + 1], y[i : i + 1], eps) for i in range(6)]
    ref_adv = torch.cat([r[0] for r in ref], 1)
    ref_success = torch.cat([r[1] for r in ref], 1)
    for size in (1, 6):
        parts = []
        for s in range(0, 6, size):
            b = slice(s, s + size)
            found = SEARCHES[spec.foolbox](model, x[b], y[b], eps, stop="none", **settings)
            parts.append(judge(model, x[b], y[b], found.best, eps, spec.norm))
        adv = torch.cat([p[0] for p in parts], 1)
        success = torch.cat([p[1] for p in parts], 1)
        assert torch.equal(success, ref_success)
        torch.testing.assert_close(adv, ref_adv, rtol=0, atol=1e-6)
    assert ref_success[-1].sum() > ref_success[0].sum()  # the large budget breaks something


def test_without_abort_early_each_image_spends_foolbox_budget(toy) -> None:
    from edgerobust.attacks.settled import cw_search

    model, x, y = toy
    found = cw_search(
        model, x, y, (0.0, 0.5), binary_search_steps=3, steps=7, abort_early=False, stop="none"
    )
    assert found.counts.per_image.tolist() == [21] * 6
    assert found.counts.gradients == 126 and not found.stopped_early.any()


@pytest.mark.parametrize("name", list(SMALL))
def test_settled_rule_keeps_the_answers_and_spends_less(toy, name: str) -> None:
    """On the toy model and seed, the settled search decides every image as the full search does
    at each eps, with fewer gradient evaluations."""
    from edgerobust.attacks.settled import SEARCHES, judge

    model, x, y = toy
    spec = get(name)
    settings = spec.with_params(SMALL[name])
    eps = (0.0, spec.light[0], spec.heavy[0], BIG[spec.norm])
    runs = {}
    for stop in ("none", "settled"):
        torch.manual_seed(1)
        found = SEARCHES[spec.foolbox](model, x, y, eps, stop=stop, **settings)
        runs[stop] = (judge(model, x, y, found.best, eps, spec.norm)[1], found)
    assert torch.equal(runs["settled"][0], runs["none"][0])
    settled, full = runs["settled"][1].counts.gradients, runs["none"][1].counts.gradients
    if name == "deepfool":  # it stops an image once adversarial under either rule
        assert settled == full
    else:
        assert settled < full
    assert runs["settled"][1].stopped_early.any()


def test_an_image_within_the_smallest_eps_leaves_at_once(toy) -> None:
    """The clean-misclassified image is adversarial at the first step: it is settled at every
    eps and costs one gradient evaluation; the budgets' order does not matter."""
    from edgerobust.attacks.settled import cw_search

    model, x, y = toy
    a = cw_search(model, x, y, (0.4, 0.0, 0.03), binary_search_steps=4, steps=20, stop="settled")
    b = cw_search(model, x, y, (0.0, 0.03, 0.4), binary_search_steps=4, steps=20, stop="settled")
    assert a.counts.per_image[0] == 1 and a.stopped_early[0]
    np.testing.assert_array_equal(a.counts.per_image, b.counts.per_image)
    torch.testing.assert_close(a.best, b.best, rtol=0, atol=0)


# --------------------------------------------------------------------------- craft on the tiny model


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


def test_exact_is_a_direct_foolbox_call_and_counts_its_gradients(batch) -> None:
    from edgerobust.attacks.whitebox import craft

    ck, x, y = batch
    spec = get("cw")
    settings = spec.with_params({"binary_search_steps": 2, "steps": 6, "abort_early": False})
    eps = (0.0, 0.03, 0.4)
    got = craft(ck.model, spec, x, y, eps, device=torch.device("cpu"), overrides=settings)
    adv, success = _foolbox(spec, settings, ck.model, torch.from_numpy(x), torch.from_numpy(y), eps)
    np.testing.assert_array_equal(got.adversarials, adv.numpy())
    np.testing.assert_array_equal(got.success, success.numpy())
    assert got.gradients.tolist() == [12] * len(y)  # 2 x 6 per image, no abort


@pytest.mark.parametrize("name", ["cw", "ead", "ddn", "deepfool"])
def test_settled_equals_exact_on_the_tiny_model(batch, name: str) -> None:
    """The paper's budgets on the trained tiny model: settled and exact (foolbox) agree on every
    image at every eps, in any order of the budgets, at a fraction of the gradients."""
    from edgerobust.attacks.whitebox import craft

    ck, x, y = batch
    spec = get(name)
    settings = spec.with_params(SMALL[name])
    eps = (0.0, spec.light[0], spec.heavy[0])
    cpu = torch.device("cpu")
    exact = craft(ck.model, spec, x, y, eps, device=cpu, overrides=settings, stop="exact")
    settled = craft(ck.model, spec, x, y, eps, device=cpu, overrides=settings, stop="settled")
    np.testing.assert_array_equal(settled.success, exact.success)
    assert settled.gradients.sum() < exact.gradients.sum()
    shuffled = craft(
        ck.model, spec, x, y, eps[::-1], device=cpu, overrides=settings, stop="settled"
    )
    np.testing.assert_array_equal(shuffled.success[::-1], settled.success)


def test_unknown_stop_rule_is_refused(batch) -> None:
    from edgerobust.attacks.whitebox import craft

    ck, x, y = batch
    with pytest.raises(ValueError, match="fast"):
        craft(ck.model, get("cw"), x, y, (0.0,), device=torch.device("cpu"), stop="fast")


def test_attack_record_states_the_rule_the_gradients_and_the_seconds(tiny, fast) -> None:
    from edgerobust.attacks.run import AttackConfig, run_attacks
    from edgerobust.progress import ListReporter

    names = ("fgsm", "cw", "deepfool")
    params = {k: v for k, v in fast.items() if k in names}
    rep = ListReporter()
    rec = run_attacks(
        AttackConfig(str(tiny.fp32), attacks=names, params=params, limit=6, stop="settled"), rep
    )
    assert rec["config"]["stop"] == "settled"
    for a in rec["attacks"]:
        (r,) = a["results"]
        assert r["stop"] == ("exact" if a["attack"] == "fgsm" else "settled")
        assert 0 < r["gradients"] <= r["gradients_budget"]
        assert a["seconds"] > 0
    assert [line.split(":")[0] for line in rep.lines] == list(names)
    assert all("gradient evaluations" in line for line in rep.lines)
    with pytest.raises(ConfigError, match="--stop must be exact or settled"):
        run_attacks(AttackConfig(str(tiny.fp32), attacks=("cw",), stop="fast"))


def test_bench_attacks_refuses_an_attack_without_a_settled_search() -> None:
    from edgerobust.attacks.gradbench import AttackBenchConfig

    with pytest.raises(ConfigError, match="pgd has no settled search; choose from deepfool, cw"):
        AttackBenchConfig("x", attacks=("pgd",)).validate()


def test_attack_batch_is_the_fastest_unless_given_or_exact(tiny, fast) -> None:
    from edgerobust.attacks.run import AttackConfig, run_attacks

    def batch(**kw):
        cfg = AttackConfig(str(tiny.fp32), attacks=("cw",), params={"cw": fast["cw"]}, **kw)
        return run_attacks(cfg)["device"]["attack_batch"]

    auto = batch(limit=4, batch_size=None, stop="settled")
    assert auto["chosen_by"] == "fastest" and auto["size"] >= 8
    assert str(auto["size"]) in auto["seconds_per_image"]
    assert min(auto["seconds_per_image"].values()) == auto["seconds_per_image"][str(auto["size"])]
    # foolbox's C&W stops on the batch's summed loss: its figures need the paper's batch
    assert batch(limit=4, batch_size=None, stop="exact") == {"size": 8, "chosen_by": "paper"}
    assert batch(limit=4, batch_size=3, stop="settled") == {"size": 3, "chosen_by": "given"}


def _cli(argv: list[str]) -> None:
    from edgerobust.cli import main

    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code


def test_bench_attacks_command_compares_settled_with_foolbox(capsys, tiny, tmp_path) -> None:
    import json

    out = tmp_path / "bench.json"
    _cli(
        ["bench-attacks", str(tiny.fp32), "--attacks", "cw,ddn", "--limit", "6"]
        + ["--set", "cw.steps=10", "--set", "cw.binary_search_steps=3", "--set", "ddn.steps=10"]
        + ["--out", str(out)]
    )
    printed = capsys.readouterr().out
    assert "gradient evaluations" in printed and "of foolbox's" in printed
    rec = json.loads(out.read_text())
    assert rec["record"] == "bench-attacks" and rec["data"]["n"] == 6
    for name in ("cw", "ddn"):
        a = rec["attacks"][name]
        assert set(a["strengths"]) == {"light", "heavy"}
        for s, r in a["strengths"].items():
            assert r["eps"] == [0.0, get(name).eps(s)[0]]
            assert r["gradient_ratio"] == r["gradients_settled"] / a["gradients_exact"]
            assert r["robust_accuracy_exact"][0] == r["robust_accuracy_settled"][0]  # eps 0
    assert rec["attacks"]["ddn"]["gradients_exact"] == 6 * 10  # DDN has no early stop


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["attack", "none.safetensors", "--batch-size", "0"], "auto or an integer >= 1"),
        (["attack", "none.safetensors", "--batch-size", "x"], "auto or an integer >= 1"),
        (["bench-attacks", "none.safetensors", "--attacks", "fgsm"], "fgsm has no settled"),
    ],
)
def test_bad_input_is_one_line(capsys, argv: list[str], message: str) -> None:
    from edgerobust.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err


def test_ead_skips_a_constant_whose_first_step_cannot_move(toy) -> None:
    """With a small constant the shrinkage swallows EAD's first step; foolbox then repeats the
    same step until its abort check. The settled search skips to that end: the same search,
    fewer gradients (eps 0 only, so no image is settled early)."""
    from edgerobust.attacks.settled import ead_search

    model, x, y = toy
    kw = dict(binary_search_steps=6, steps=30, initial_const=0.001)
    full = ead_search(model, x, y, (0.0,), stop="none", **kw)
    fast = ead_search(model, x, y, (0.0,), stop="settled", **kw)
    torch.testing.assert_close(fast.best, full.best, rtol=0, atol=0)
    assert fast.counts.gradients < full.counts.gradients
    assert not fast.stopped_early.any()
