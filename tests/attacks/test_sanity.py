"""Sanity checks: each flag fires on the symptom it names and stays quiet otherwise, and real
attack runs satisfy the properties the flags guard (eps 0 = clean, no rise with eps)."""

from __future__ import annotations

import numpy as np
import pytest

from edgerobust.attacks.sanity import (
    Headline,
    check_blackbox_vs_whitebox,
    check_eps0,
    check_gradients,
    check_monotone,
)


def test_eps0_flag() -> None:
    assert check_eps0("pgd", "m", [0.0, 0.004], [0.9, 0.5], 0.9) == []
    (flag,) = check_eps0("pgd", "m", [0.0, 0.004], [0.8, 0.5], 0.9)
    assert (flag.check, flag.attack, flag.target) == ("eps0", "pgd", "m")
    assert "0.8000" in flag.message and "0.9000" in flag.message
    assert check_eps0("pgd", "m", [0.004], [0.5], 0.9) == []  # no eps-0 point, nothing to check


def test_monotone_flag() -> None:
    assert check_monotone("fgsm", "m", [0, 1, 2], [0.9, 0.9, 0.1]) == []
    flags = check_monotone("fgsm", "m", [0, 1, 2, 3], [0.9, 0.5, 0.6, 0.7])
    assert [f.check for f in flags] == ["monotone", "monotone"]
    assert "eps 1 to" in flags[0].message
    # Order of the eps list does not matter: sorted before comparing
    assert check_monotone("fgsm", "m", [2, 0, 1], [0.1, 0.9, 0.5]) == []
    assert len(check_monotone("fgsm", "m", [2, 0, 1], [0.6, 0.9, 0.5])) == 1


def _h(attack, target, label, acc, gradient=True):
    return Headline(attack, target, label, gradient, 1.0, acc)


def test_blackbox_beats_whitebox_flag() -> None:
    sp = _h("saltpepper", "m", "blackbox", 0.2, gradient=False)
    strong = [_h("pgd", "m", "direct", 0.1), _h("cw", "m", "direct", 0.5)]
    weak = [_h("pgd", "m", "direct", 0.3), _h("cw", "m", "direct", 0.5)]
    assert check_blackbox_vs_whitebox([*strong, sp]) == []
    (flag,) = check_blackbox_vs_whitebox([*weak, sp])
    assert (flag.check, flag.attack, flag.target) == ("blackbox-beats-whitebox", "saltpepper", "m")
    # Transfer figures do not count: a black-box attack beating a transfer attack is expected
    transfer = [_h("pgd", "m", "transfer", 0.9)]
    assert check_blackbox_vs_whitebox([*transfer, sp]) == []
    # Models are compared with themselves only
    other = _h("saltpepper", "other", "blackbox", 0.0, gradient=False)
    assert check_blackbox_vs_whitebox([*strong, sp, other]) == []


def test_gradient_flag() -> None:
    assert check_gradients("m", np.array([0.0, 0.1])) == []
    assert check_gradients("m", np.array([])) == []
    (flag,) = check_gradients("m", np.zeros(4))
    assert flag.check == "zero-gradients" and "masking" in flag.message
    (flag,) = check_gradients("m", np.array([0.1, np.nan]))
    assert "not finite" in flag.message


def test_zero_gradients_of_a_flat_model_are_flagged() -> None:
    torch = pytest.importorskip("torch")
    from edgerobust.attacks.whitebox import input_gradient_norms

    class Flat(torch.nn.Module):
        """Ignores its input: the loss has no gradient with respect to the image."""

        def __init__(self) -> None:
            super().__init__()
            self.logits = torch.nn.Parameter(torch.tensor([1.0, 0.0, -1.0]))

        def forward(self, x):
            return self.logits.expand(x.shape[0], -1) + 0 * x.sum()

    x = np.random.default_rng(0).random((4, 3, 8, 8), dtype=np.float32)
    y = np.array([0, 1, 2, 0])
    grads = input_gradient_norms(Flat(), x, y, torch.device("cpu"))
    assert grads.shape == (4,)
    assert [f.check for f in check_gradients("flat", grads)] == ["zero-gradients"]
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 3))
    assert check_gradients("lin", input_gradient_norms(lin, x, y, torch.device("cpu"))) == []


@pytest.mark.parametrize("checkpoint", ["fp32", "int8"])
def test_attack_runs_pass_their_own_checks(tiny, fast, checkpoint: str) -> None:
    """eps 0 equals clean accuracy for every attack, label and model, and minimisation attacks
    never gain accuracy with eps (they clip one adversarial to each eps)."""
    from edgerobust.attacks import get
    from edgerobust.attacks.run import AttackConfig, run_attacks

    cfg = AttackConfig(
        str(getattr(tiny, checkpoint)),
        strength="heavy",
        eps=(0.001, 0.004, 0.4, 1.0, 10.0),
        limit=8,
        params=fast,
        artifacts=(str(tiny.onnx_int8),) if checkpoint == "int8" else (),
    )
    rec = run_attacks(cfg)
    clean = {t["name"]: t["clean_accuracy"] for t in rec["targets"]}
    assert not [f for f in rec["sanity"] if f["check"] in ("eps0", "zero-gradients")]
    for a in rec["attacks"]:
        assert a["eps"][0] == 0.0
        for r in a["results"]:
            assert r["robust_accuracy"][0] == clean[r["target"]]
            assert r["clean_accuracy"] == clean[r["target"]]
            acc = np.array(r["robust_accuracy"])
            if not get(a["attack"]).fixed_eps and r["label"] in ("direct", "blackbox"):
                assert (np.diff(acc) <= 0).all(), (a["attack"], r["target"], acc)
            if r["label"] == "direct":
                assert acc.max() <= clean[r["target"]]
    assert rec["gradients"]["zero_fraction"] < 1
