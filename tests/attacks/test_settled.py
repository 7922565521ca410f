"""The settled gradient attacks (edgerobust/attacks/settled.py): foolbox's searches per image,
stopped once every eps's answer is decided, against foolbox itself."""

from __future__ import annotations

import math

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


# --------------------------------------------------------------------------- PGD (fixed eps)

PGD = {"steps": 10}
PGD_EPS = (0.0, 0.05, 0.3, 0.6)  # the toy model breaks at the largest only


def _pgd(model, x, y, eps, stop, seed=1, **settings):
    from edgerobust.attacks.settled import judge_each, pgd_search

    torch.manual_seed(seed)
    runs = pgd_search(model, x, y, eps, stop=stop, **get("pgd").with_params(settings))
    return runs, judge_each(model, x, y, runs.adversarials, eps, "linf")


def test_pgd_without_stopping_is_foolbox(toy) -> None:
    """``stop="none"``: foolbox's LinfPGD sweep under the same seed, image for image (the random
    starts are drawn as foolbox's sweep draws them)."""
    model, x, y = toy
    torch.manual_seed(1)
    ref_adv, ref_success = _foolbox(get("pgd"), get("pgd").with_params(PGD), model, x, y, PGD_EPS)
    runs, (adv, success) = _pgd(model, x, y, PGD_EPS, "none", **PGD)
    assert torch.equal(success, ref_success) and torch.equal(adv, ref_adv)
    assert runs.counts.per_image.tolist() == [10 * len(PGD_EPS)] * 6
    assert ref_success[-1].sum() > ref_success[1].sum()  # the largest eps breaks something


def test_pgd_settled_breaks_at_least_foolbox_images_with_fewer_gradients(toy) -> None:
    """The settled rule can only add broken images (an earlier iterate or a smaller eps was
    adversarial where foolbox's last iterate is not); on this seed it adds none. The
    clean-misclassified image costs no gradient, eps 0 none, and the eps order does not
    matter."""
    model, x, y = toy
    full, (_, exact) = _pgd(model, x, y, PGD_EPS, "none", **PGD)
    runs, (_, settled) = _pgd(model, x, y, PGD_EPS, "settled", **PGD)
    assert not (exact & ~settled).any()  # every image foolbox breaks is broken here
    assert (settled != exact).sum(1).max() <= 1  # within one image at every eps (here: 0)
    assert torch.equal(settled, exact)
    assert runs.counts.gradients < full.counts.gradients
    assert runs.counts.per_image[0] == 0 and runs.settled[:, 0].all()
    assert (settled[1:].int() >= settled[:-1].int()).all()  # monotone in eps
    order = [3, 0, 2, 1]
    again, (_, shuffled) = _pgd(model, x, y, tuple(PGD_EPS[k] for k in order), "settled", **PGD)
    # the random starts are drawn eps ascending whatever the order given: the same run
    assert torch.equal(shuffled, settled[order])
    np.testing.assert_array_equal(again.counts.per_image, runs.counts.per_image)


def test_pgd_an_adversarial_iterate_settles_the_larger_eps(toy) -> None:
    """An image broken at a smaller eps spends nothing at a larger one, and the adversarial
    judged there is the one found (within the smaller eps)."""
    model, x, y = toy
    eps = (0.0, 0.6, 0.9)
    full, (_, exact) = _pgd(model, x, y, eps, "none", **PGD)
    runs, (adv, settled) = _pgd(model, x, y, eps, "settled", **PGD)
    small, _ = _pgd(model, x, y, eps[:2], "settled", **PGD)  # the same draws up to eps 0.6
    b = settled[1].numpy()
    assert 0 < b.sum() < 6  # some images broken at 0.6, some not
    assert settled[2][b].all() and runs.settled[2][b].all()
    torch.testing.assert_close(adv[2][b], adv[1][b], rtol=0, atol=0)
    extra = runs.counts.per_image - small.counts.per_image  # what the 0.9 run cost each image
    assert (extra[b] == 0).all() and (extra[~b] <= 10).all()
    assert runs.counts.gradients < full.counts.gradients
    assert not (exact & ~settled).any()


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


def test_settled_pgd_against_foolbox_on_the_tiny_model(batch) -> None:
    """PGD at the paper's budgets and one that breaks images, through ``craft`` (as the sweep
    runs it under one batch seed): settled breaks every image foolbox breaks, robust accuracy
    within one image of 8 at every eps (the rule can only break more: a best iterate or a smaller
    eps' adversarial where foolbox's last iterate is not), fewer gradients, any budget order."""
    from edgerobust.attacks.whitebox import craft

    ck, x, y = batch
    spec = get("pgd")
    settings = spec.with_params({"steps": 10})
    eps = (0.0, spec.light[0], spec.heavy[0], 0.1, 0.3)
    cpu = torch.device("cpu")

    def run(e, stop):
        torch.manual_seed(7)
        return craft(ck.model, spec, x, y, e, device=cpu, overrides=settings, stop=stop)

    exact, settled = run(eps, "exact"), run(eps, "settled")
    assert exact.gradients.sum() == len(y) * 10 * len(eps)  # foolbox: every step at every eps
    assert not (exact.success & ~settled.success).any()
    assert np.abs(settled.success.sum(1) - exact.success.sum(1)).max() <= 1
    assert exact.success[-1].any()  # the large eps breaks something, so the rule is exercised
    assert settled.gradients.sum() < exact.gradients.sum()
    shuffled = run(eps[::-1], "settled")
    np.testing.assert_array_equal(shuffled.success[::-1], settled.success)


def test_unknown_stop_rule_is_refused(batch) -> None:
    from edgerobust.attacks.whitebox import craft

    ck, x, y = batch
    with pytest.raises(ValueError, match="fast"):
        craft(ck.model, get("cw"), x, y, (0.0,), device=torch.device("cpu"), stop="fast")


def test_attack_record_states_the_rule_the_gradients_and_the_seconds(tiny, fast) -> None:
    from edgerobust.attacks.run import AttackConfig, run_attacks
    from edgerobust.progress import ListReporter

    names = ("fgsm", "pgd", "cw", "deepfool")
    params = {k: v for k, v in fast.items() if k in names}
    rep = ListReporter()
    rec = run_attacks(
        AttackConfig(str(tiny.fp32), attacks=names, params=params, limit=6, stop="settled"), rep
    )
    assert rec["config"]["stop"] == "settled"
    for a in rec["attacks"]:
        (r,) = a["results"]
        # FGSM is one step per eps: it claims no stop rule
        assert r["stop"] == ("none" if a["attack"] == "fgsm" else "settled")
        assert r["stop_rule"] and ("nothing to stop" in r["stop_rule"]) == (a["attack"] == "fgsm")
        assert 0 < r["gradients"] <= r["gradients_budget"]
        assert a["seconds"] > 0
    assert [line.split(":")[0] for line in rep.lines] == list(names)
    assert all("gradient evaluations" in line for line in rep.lines)
    with pytest.raises(ConfigError, match="--stop must be exact or settled"):
        run_attacks(AttackConfig(str(tiny.fp32), attacks=("cw",), stop="fast"))


def test_bench_attacks_refuses_an_attack_without_a_settled_search() -> None:
    from edgerobust.attacks.gradbench import AttackBenchConfig

    with pytest.raises(ConfigError, match="fgsm has no settled search; choose from deepfool, pgd"):
        AttackBenchConfig("x", attacks=("fgsm",)).validate()


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
        ["bench-attacks", str(tiny.fp32), "--attacks", "cw,ddn,pgd", "--limit", "6"]
        + ["--set", "cw.steps=10", "--set", "cw.binary_search_steps=3", "--set", "ddn.steps=10"]
        + ["--set", "pgd.steps=4", "--out", str(out)]
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
            differ = r["differing_images"]  # which images, by position in the sample
            assert [len(d) for d in differ] == r["images_differing"] and differ[0] == []
            assert all(0 <= i < 6 for d in differ for i in d)
    assert rec["attacks"]["ddn"]["gradients_exact"] == 6 * 10  # DDN has no early stop
    # PGD: an exact run per strength (its random starts follow the sweep), eps 0 and one budget
    pgd = rec["attacks"]["pgd"]
    assert "best iterate" in pgd["stop_rule"]
    for r in pgd["strengths"].values():
        assert r["gradients_exact"] == 6 * 4 * 2
        assert r["gradient_ratio"] == r["gradients_settled"] / r["gradients_exact"]
        assert r["verdict"]["at_most_one_third"] is None  # the gradient goal is C&W's and EAD's
        assert all(d >= 0 for d in r["broken_minus_exact"])  # settled can only break more
    assert pgd["gradients_exact"] == 2 * 6 * 4 * 2
    assert "PGD Linf" in printed and "the accuracy goal" in printed


def test_bench_attacks_measures_foolboxs_spread_over_batch_orders(tiny, monkeypatch) -> None:
    """--orders N reruns foolbox on the same images dealt into batches in other seeded orders;
    the first order is the sample order, and the record's spread is measured from the runs."""
    import edgerobust.attacks.whitebox as whitebox
    from edgerobust.attacks.gradbench import AttackBenchConfig, batch_orders, bench_attacks

    seen: list[tuple[str, list[float]]] = []
    craft = whitebox.craft

    def spy(model, spec, x, y, eps, **kw):
        seen.append((kw["stop"], [float(v) for v in x.reshape(len(x), -1).sum(1)]))
        return craft(model, spec, x, y, eps, **kw)

    monkeypatch.setattr(whitebox, "craft", spy)

    orders = batch_orders(10, seed=0, count=3)
    assert orders[0].tolist() == list(range(10))
    assert all(sorted(o.tolist()) == list(range(10)) for o in orders[1:])
    assert orders[1].tolist() != orders[2].tolist()
    assert [o.tolist() for o in batch_orders(10, 0, 3)] == [o.tolist() for o in orders]

    params = {"cw": {"steps": 10, "binary_search_steps": 3}}
    one = bench_attacks(
        AttackBenchConfig(str(tiny.fp32), attacks=("cw",), limit=6, batch_size=4, params=params)
    )
    three = bench_attacks(
        AttackBenchConfig(
            str(tiny.fp32), attacks=("cw",), limit=6, batch_size=4, params=params, orders=3
        )
    )
    assert three["batch_orders"][0] == list(range(6)) and len(three["batch_orders"]) == 3
    # the images each exact run dealt into batches, in the record's orders
    sums = [v for _, b in seen[:2] for v in b]  # the first run: the sample order
    exact = [b for stop, b in seen[6:] if stop == "exact"]  # `one` crafted 2 + 2 x 2 batches
    for k, order in enumerate(three["batch_orders"]):
        dealt = exact[2 * k] + exact[2 * k + 1]  # 6 images in batches of 4 and 2
        assert dealt == pytest.approx([sums[i] for i in order], rel=0, abs=0)
    for s, r in three["attacks"]["cw"]["strengths"].items():
        first = one["attacks"]["cw"]["strengths"][s]
        per_order = r["robust_accuracy_exact_orders"]
        assert len(per_order) == 3 and per_order[0] == r["robust_accuracy_exact"]
        assert r["robust_accuracy_exact"] == first["robust_accuracy_exact"]
        assert first["verdict"]["within_one_image_of_an_order"] is None
        broken = [[round((1 - v) * 6) for v in o] for o in per_order]
        spread = [max(c) - min(c) for c in zip(*broken, strict=True)]
        assert r["foolbox_spread_images"] == spread
        settled = [round((1 - v) * 6) for v in r["robust_accuracy_settled"]]
        near = all(any(abs(settled[k] - b[k]) <= 1 for b in broken) for k in range(len(settled)))
        assert r["verdict"]["within_one_image_of_an_order"] is near


def test_an_interrupted_bench_attacks_resumes_from_its_finished_batches(
    tiny, tmp_path, monkeypatch, capsys
) -> None:
    """With --out, each finished batch is kept in OUT.partial/; a rerun crafts only the missing
    ones and gives the uninterrupted run's figures; the folder goes once the record exists, and
    one written for another model is refused in one line."""
    import json
    import shutil

    import edgerobust.attacks.whitebox as whitebox
    from edgerobust.attacks.gradbench import AttackBenchConfig, bench_attacks, partial_dir

    params = {"cw": {"steps": 10, "binary_search_steps": 3}}
    cfg = dict(attacks=("cw",), limit=6, batch_size=4, params=params, strengths=("light",))
    whole = bench_attacks(AttackBenchConfig(str(tiny.fp32), **cfg))  # 2 exact + 2 settled

    craft, calls = whitebox.craft, []

    def interrupt_third(*a, **kw):
        calls.append(kw["stop"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return craft(*a, **kw)

    monkeypatch.setattr(whitebox, "craft", interrupt_third)
    out = tmp_path / "bench.json"
    with pytest.raises(KeyboardInterrupt):
        bench_attacks(AttackBenchConfig(str(tiny.fp32), **cfg, out=str(out)))
    assert not out.exists() and len(list(partial_dir(out).glob("batch-*.json"))) == 2
    header = json.loads((partial_dir(out) / "benchmark.json").read_text())
    calls.clear()
    again = bench_attacks(AttackBenchConfig(str(tiny.fp32), **cfg, out=str(out)))
    assert calls == ["settled", "settled"]  # the two exact batches were read back
    assert again["resumed_batches"] == 2 and not partial_dir(out).exists()
    # a kept batch that does not hold an answer of the right shape is crafted again
    from edgerobust.attacks.gradbench import BatchStore

    store = BatchStore.open(tmp_path / "store", {"a": 1})
    store.put(["k"], {"success": [[True, False]], "gradients": [3, 4], "seconds": 1.0})
    assert store.get(["k"], (1, 2)) is not None and store.resumed == 1
    assert store.get(["k"], (2, 2)) is None and store.get(["other"], (1, 2)) is None
    (store.folder / store._name(["k"])).write_text('{"success": 1}')
    assert store.get(["k"], (1, 2)) is None and store.resumed == 1
    assert json.loads(out.read_text()) == json.loads(json.dumps(again))
    for key in ("robust_accuracy_exact", "robust_accuracy_settled", "gradients_exact"):
        a, b = (r["attacks"]["cw"]["strengths"]["light"][key] for r in (whole, again))
        assert a == b, key

    # the command says where the finished batches are, exits 130, no traceback
    from edgerobust.attacks import gradbench
    from edgerobust.cli import main

    def stopped(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(gradbench, "bench_attacks", stopped)
    for kept in (False, True):
        if kept:
            partial_dir(out).mkdir()
        with pytest.raises(SystemExit) as info:
            main(["bench-attacks", str(tiny.fp32), "--out", str(out)])
        assert info.value.code == 130
        said = capsys.readouterr().err.strip()
        assert said == "interrupted: " + (
            f"finished batches are kept in {partial_dir(out)}; run the same command to continue"
            if kept
            else "no batch had finished"
        )
    partial_dir(out).rmdir()
    monkeypatch.undo()

    # a folder from another benchmark (here: other pixels) is refused, not mixed in
    partial_dir(out).mkdir()
    other = {**header, "images_sha256": "0" * 64}
    (partial_dir(out) / "benchmark.json").write_text(json.dumps(other))
    with pytest.raises(ConfigError, match=r"another benchmark \(differs in images_sha256\)"):
        bench_attacks(AttackBenchConfig(str(tiny.fp32), **cfg, out=str(out)))
    shutil.rmtree(partial_dir(out))
    partial_dir(out).write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        bench_attacks(AttackBenchConfig(str(tiny.fp32), **cfg, out=str(out)))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["attack", "none.safetensors", "--batch-size", "0"], "auto or an integer >= 1"),
        (["attack", "none.safetensors", "--batch-size", "x"], "auto or an integer >= 1"),
        (["bench-attacks", "none.safetensors", "--attacks", "fgsm"], "fgsm has no settled"),
        (["bench-attacks", "none.safetensors", "--orders", "0"], "--orders must be >= 1"),
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


@pytest.mark.parametrize("name", ["cw", "ead"])
def test_trace_has_one_row_per_finished_constant(toy, name: str) -> None:
    """``trace=``: what each image saw when each of its constants ended, the raw material for
    measuring stop rules on full-budget runs."""
    from edgerobust.attacks.settled import SEARCHES

    model, x, y = toy
    spec = get(name)
    settings = spec.with_params(SMALL[name]) | {"abort_early": False}
    trace: list[dict] = []
    found = SEARCHES[spec.foolbox](model, x, y, (0.0, 1.0), stop="none", trace=trace, **settings)
    steps = settings["binary_search_steps"]
    assert len(trace) == steps * len(y)
    for i in range(len(y)):
        rows = [r for r in trace if r["image"] == i]
        assert [r["step"] for r in rows] == list(range(steps))
        # without abort_early every constant costs its full steps
        assert [r["gradients"] for r in rows] == [settings["steps"] * (k + 1) for k in range(steps)]
        assert rows[-1]["best"] == pytest.approx(float(found.norms[i]), rel=1e-6) or (
            math.isinf(rows[-1]["best"]) and math.isinf(found.norms[i])
        )
        assert any(r["found"] for r in rows) == math.isfinite(found.norms[i])


def test_bench_lines_name_the_images_settled_and_foolbox_answer_differently() -> None:
    from edgerobust.attacks.gradbench import bench_lines

    def strength(eps: float, differ: list[int]) -> dict:
        return {
            "eps": [0.0, eps],
            "robust_accuracy_exact": [0.75, 0.5],
            "robust_accuracy_settled": [0.75, 0.5 - len(differ) / 8],
            "broken_minus_exact": [0, len(differ)],
            "images_differing": [0, len(differ)],
            "differing_images": [[], differ],
            "gradients_exact": 100,
            "gradients_settled": 20,
            "gradient_ratio": 0.2,
            "seconds_settled": 1.0,
            "verdict": {"same_within_one_image": len(differ) <= 1, "at_most_one_third": True},
        }

    record = {
        "model": {"arch": "tiny"},
        "input_size": 32,
        "data": {
            "domain": "photo",
            "split": "val",
            "n": 8,
            "files": [f"f{i}.jpg" for i in range(8)],
        },
        "batch_size": 8,
        "seed": 0,
        "clean_accuracy": 0.75,
        "attacks": {
            "ead": {
                "title": "EAD L1",
                "gradients_exact": 100,
                "seconds_exact": 5.0,
                "strengths": {"light": strength(1.0, []), "heavy": strength(10.0, [2, 5])},
            }
        },
    }
    lines = bench_lines(record)
    named = [ln for ln in lines if "answered differently" in ln]
    assert len(named) == 1 and named[0].endswith("eps 10: 2 (f2.jpg), 5 (f5.jpg)")
    assert "misses the goal" in lines[lines.index(named[0]) - 1]


def test_ddn_does_not_settle_robust_a_search_that_never_reached_the_boundary() -> None:
    """DDN's radius shrinks by at most ``1 - gamma`` a step, so in 20 steps from radius 1 it
    cannot get below ~0.4. A linear model whose boundary lies 0.01 away keeps every candidate
    adversarial; foolbox's best then has L2 ~0.4 and, shrunk to eps 0.1, is still adversarial:
    broken. The radius floor alone (0.4 > 0.1) would have called it robust at the first step."""
    from torch import nn

    from edgerobust.attacks.settled import ddn_search, judge

    torch.manual_seed(0)
    x = torch.rand(1, 3, 8, 8) * 0.5 + 0.25
    w = torch.randn(3 * 8 * 8)
    lin = nn.Linear(3 * 8 * 8, 2)
    with torch.no_grad():
        lin.weight[0] = w
        lin.weight[1] = 0
        lin.bias[0] = 0.01 * w.norm() - w @ x.flatten()  # class 0 by a margin of L2 0.01
        lin.bias[1] = 0
    model = nn.Sequential(nn.Flatten(), lin).eval()
    y = torch.zeros(1, dtype=torch.long)
    eps = (0.0, 0.1)
    settings = get("ddn").with_params(SMALL["ddn"])
    _, ref = _foolbox(get("ddn"), settings, model, x, y, eps)
    assert ref.tolist() == [[False], [True]]
    found = ddn_search(model, x, y, eps, stop="settled", **settings)
    _, success = judge(model, x, y, found.best, eps, "l2")
    assert torch.equal(success, ref)
    assert found.norms[0] > 0.3  # the best is far above eps: it is the shrink that breaks it
