"""The report's comparison statistics against values computed by hand or published."""

import math

import numpy as np
import pytest

from edgerobust.report.stats import (
    compare_independent,
    compare_paired,
    mcnemar_exact,
    newcombe_interval,
    paired_bootstrap_interval,
    verdict,
)


def test_mcnemar_exact_matches_the_binomial_tail():
    # 10 vs 2 discordant: 2 * P(X <= 2), X ~ Bin(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert mcnemar_exact(10, 2) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact(2, 10) == mcnemar_exact(10, 2)
    assert mcnemar_exact(5, 5) == 1.0  # capped: a balanced table is no evidence
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 7) == pytest.approx(2 / 2**7)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)
    # thousands of discordant images (a whole PACS domain): no float overflow
    assert mcnemar_exact(1500, 1500) == 1.0
    assert mcnemar_exact(1300, 1700) == pytest.approx(2.9796e-13, rel=1e-4)  # scipy binomtest


def test_newcombe_interval_reproduces_the_published_example():
    # Newcombe (1998), Stat. Med. 17:873, method 10: 56/70 - 48/80 = 0.2000, (0.0524, 0.3339)
    lo, hi = newcombe_interval(56, 70, 48, 80)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)
    # symmetric under swapping the samples
    lo2, hi2 = newcombe_interval(48, 80, 56, 70)
    assert (lo2, hi2) == pytest.approx((-hi, -lo))


def test_paired_bootstrap_on_degenerate_and_large_samples():
    same = np.array([1, 0, 1, 1, 0], bool)
    assert paired_bootstrap_interval(same, same, resamples=500) == (0.0, 0.0)
    assert paired_bootstrap_interval(np.ones(9, bool), np.zeros(9, bool)) == (1.0, 1.0)

    rng = np.random.default_rng(1)
    a = rng.random(4000) < 0.7
    b = np.where(rng.random(4000) < 0.9, a, ~a)  # B disagrees with A on ~10 % of images
    lo, hi = paired_bootstrap_interval(a, b, resamples=4000, seed=3)
    d = a.astype(float) - b.astype(float)
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)  # the normal approximation, for large n
    assert lo == pytest.approx(d.mean() - half, abs=0.004)
    assert hi == pytest.approx(d.mean() + half, abs=0.004)
    # a fixed seed gives the same interval
    assert paired_bootstrap_interval(a, b, resamples=4000, seed=3) == (lo, hi)
    with pytest.raises(ValueError):
        paired_bootstrap_interval(a, b[:-1])


def test_comparisons_and_verdicts():
    a = np.array([1] * 40 + [0] * 10, bool)
    b = np.array([0] * 12 + [1] * 28 + [0] * 10, bool)
    cmp = compare_paired(a, b, resamples=2000)
    assert cmp.difference == pytest.approx(12 / 50)
    assert cmp.discordant == (12, 0)
    assert cmp.p_value == pytest.approx(2 / 2**12)
    assert verdict(cmp, +1) == "supported"
    assert verdict(cmp, -1) == "contradicted"

    close = compare_independent(50, 100, 52, 100)
    assert close.ci95[0] < 0 < close.ci95[1]
    assert verdict(close, +1) == verdict(close, -1) == "unresolved"
    assert close.to_dict()["paired"] is False


def test_clustered_bootstrap_moves_an_image_s_outcomes_together():
    # 200 images, each under 5 attacks with identical outcomes: the 1000 outcomes carry the
    # information of 200 images, so the clustered interval must be as wide as the per-image one
    # and about sqrt(5) wider than treating the 1000 outcomes as independent.
    rng = np.random.default_rng(4)
    a_img = rng.random(200) < 0.6
    b_img = np.where(rng.random(200) < 0.8, a_img, ~a_img)
    a, b = np.repeat(a_img, 5), np.repeat(b_img, 5)
    ids = np.repeat(np.arange(200), 5)
    per_image = paired_bootstrap_interval(a_img, b_img, resamples=4000, seed=1)
    clustered = paired_bootstrap_interval(a, b, clusters=ids, resamples=4000, seed=1)
    naive = paired_bootstrap_interval(a, b, resamples=4000, seed=1)
    width = lambda iv: iv[1] - iv[0]  # noqa: E731
    assert width(clustered) == pytest.approx(width(per_image), rel=0.1)
    assert width(clustered) / width(naive) == pytest.approx(math.sqrt(5), rel=0.15)
    cmp = compare_paired(a, b, clusters=ids, resamples=1000)
    assert cmp.p_value is None and "clustered" in cmp.method  # McNemar needs independent pairs
    assert compare_paired(a_img, b_img, clusters=np.arange(200)).p_value is not None
    with pytest.raises(ValueError):
        paired_bootstrap_interval(a, b, clusters=ids[:-1])


def test_non_inferiority_verdicts_draw_the_line_at_minus_the_margin():
    def cmp(lo, hi):
        return compare_independent(1, 2, 1, 2).__class__(
            difference=(lo + hi) / 2, ci95=(lo, hi), n_a=1, n_b=1, paired=True, method="t"
        )

    assert verdict(cmp(-0.005, 0.03), 1, margin=0.01) == "supported"  # within 1 point
    assert verdict(cmp(-0.03, 0.01), 1, margin=0.01) == "unresolved"  # straddles -1 point
    assert verdict(cmp(-0.05, -0.02), 1, margin=0.01) == "contradicted"  # surely worse
    assert verdict(cmp(-0.05, -0.02), -1) == "supported"  # the same interval, a loss claim
    with pytest.raises(ValueError):
        verdict(cmp(0, 1), -1, margin=0.01)
