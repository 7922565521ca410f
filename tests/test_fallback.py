"""The accuracy-aware fallback loop, on made-up measurements: ranking, the smallest passing
prefix, giving up, and how many candidates it costs."""

from __future__ import annotations

import pytest

from edgerobust.compress.fallback import fallback_search, rank_layers, search_prefix

LAYERS = [f"l{i}" for i in range(10)]
# How much each layer's quantization hurts (l7 most, then l2, l5, ...).
HURT = {"l7": 0.5, "l2": 0.3, "l5": 0.2, "l0": 0.1, "l9": 0.05}


def error(kept: tuple[str, ...]) -> float:
    return sum(v for k, v in HURT.items() if k not in kept)


def agreement_needing(names: set[str]):
    calls = []

    def agreement(kept: tuple[str, ...]) -> float:
        calls.append(kept)
        return 0.99 if names <= set(kept) else 0.90

    return agreement, calls


def test_rank_by_reverting_one_layer_at_a_time():
    ranking = rank_layers(LAYERS, error)
    assert [n for n, _ in ranking[:5]] == ["l7", "l2", "l5", "l0", "l9"]
    assert ranking[0][1] == pytest.approx(0.5) and ranking[-1][1] == 0.0


def test_keeps_the_fewest_most_sensitive_layers_that_pass():
    agreement, calls = agreement_needing({"l7", "l2", "l5"})
    res = fallback_search(LAYERS, error, agreement, bar=0.98, start_agreement=0.9)
    assert res.passed and res.kept_fp32 == ("l7", "l2", "l5") and res.int8_layers == 7
    assert res.agreement == 0.99 and res.start_agreement == 0.9
    # doubling 1, 2, 4 then bisecting to 3: four candidates, not one per layer
    assert [len(k) for k in calls] == [1, 2, 4, 3]
    assert [t.kept_fp32 for t in res.trials] == [1, 2, 4, 3]
    assert "3 of 10 layers kept in fp32" in res.summary()
    assert res.to_dict()["kept_fp32"] == ["l7", "l2", "l5"]


def test_no_fallback_when_int8_already_passes():
    agreement, calls = agreement_needing(set())
    res = fallback_search(LAYERS, error, agreement, bar=0.98, start_agreement=0.99)
    assert res.passed and res.kept_fp32 == () and not calls and res.ranking == ()


def test_gives_up_rather_than_leave_most_layers_fp32():
    agreement, calls = agreement_needing({"l7", "l2", "l5", "l0", "l9", "l1"})  # 6 of 10
    res = fallback_search(LAYERS, error, agreement, bar=0.98, start_agreement=0.9)
    assert not res.passed and res.kept_fp32 == () and res.max_fp32 == 4
    assert max(len(k) for k in calls) == 4  # never tried more than allowed
    assert "not met" in res.summary()
    # with a higher allowance it passes at exactly the six it needs
    agreement, _ = agreement_needing({"l7", "l2", "l5", "l0", "l9", "l1"})
    res = fallback_search(LAYERS, error, agreement, bar=0.98, start_agreement=0.9, max_fp32=8)
    assert res.passed and len(res.kept_fp32) == 6


def test_search_prefix_edges():
    order = list("abcde")
    assert search_prefix(order, lambda kept: 1.0, 0.5, 0) == (None, [])
    k, trials = search_prefix(order, lambda kept: 1.0 if len(kept) >= 5 else 0.0, 0.5, 5)
    assert k == 5 and [t.kept_fp32 for t in trials] == [1, 2, 4, 5]
