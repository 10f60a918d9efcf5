"""κ, Spearman and the paired bootstrap against known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mallard.evals.stats import accuracy, cohen_kappa, paired_bootstrap, rank, spearman


def test_cohen_kappa_known_values():
    # Wikipedia's worked example: 50 items, yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> kappa 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert accuracy(a, b) == pytest.approx(0.7)
    # Its second example: 45/15/25/15 (p_o 0.60, p_e 0.54) -> 0.1304
    a = ["y"] * 60 + ["n"] * 40
    b = ["y"] * 45 + ["n"] * 15 + ["y"] * 25 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.1304, abs=1e-4)
    # Three categories (Fleiss, Levin & Paik's textbook table): kappa = 0.492
    table = [[44, 5, 1], [7, 20, 3], [9, 5, 6]]
    a, b = [], []
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            a += [i] * count
            b += [j] * count
    po = (44 + 20 + 6) / 100
    pe = (50 * 60 + 30 * 30 + 20 * 10) / 100**2
    assert cohen_kappa(a, b) == pytest.approx((po - pe) / (1 - pe))
    assert cohen_kappa(a, b) == pytest.approx(0.492, abs=1e-3)


def test_kappa_edges():
    assert cohen_kappa([1, 0, 1], [1, 0, 1]) == 1.0
    assert (
        cohen_kappa([True] * 4 + [False] * 4, [True] * 8) == 0.0
    )  # always "yes": no better than chance
    assert math.isnan(cohen_kappa([1, 1], [1, 1]))  # undefined
    assert math.isnan(cohen_kappa([], []))
    assert cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == -1.0
    with pytest.raises(ValueError):
        cohen_kappa([1], [1, 0])


def test_spearman_known_values():
    from scipy import stats

    assert rank([10, 20, 20, 30]) == [1.0, 2.5, 2.5, 4.0]
    # textbook example (no ties): rho = 1 - 6*sum(d^2)/(n(n^2-1))
    x = [86, 97, 99, 100, 101, 103, 106, 110, 112, 113]
    y = [2, 20, 28, 27, 50, 29, 7, 17, 6, 12]
    assert spearman(x, y) == pytest.approx(-29 / 165)
    rng = np.random.default_rng(3)
    for _ in range(5):
        a = rng.integers(1, 6, 40).tolist()
        b = (np.array(a) + rng.integers(-2, 3, 40)).tolist()
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_paired_bootstrap_known_values():
    constant = paired_bootstrap([0.2] * 10, [0.5] * 10)
    assert (constant.estimate, constant.low, constant.high) == pytest.approx((0.3, 0.3, 0.3))
    # A normal sample: the percentile interval of the mean is close to mean +- 1.96 sd/sqrt(n)
    rng = np.random.default_rng(0)
    base = rng.normal(0.6, 0.1, 400)
    cand = base + rng.normal(-0.05, 0.2, 400)
    result = paired_bootstrap(base, cand, resamples=4000, seed=1)
    diffs = cand - base
    half = 1.96 * diffs.std(ddof=1) / math.sqrt(len(diffs))
    assert result.estimate == pytest.approx(diffs.mean())
    assert result.low == pytest.approx(diffs.mean() - half, abs=0.004)
    assert result.high == pytest.approx(diffs.mean() + half, abs=0.004)
    # And it agrees with scipy's percentile bootstrap of the mean difference
    from scipy import stats

    ref = stats.bootstrap(
        (diffs,), np.mean, n_resamples=4000, method="percentile", random_state=2
    ).confidence_interval
    assert (result.low, result.high) == pytest.approx((ref.low, ref.high), abs=0.004)
    # Pairing matters: a shift shared by both versions adds no uncertainty
    shared = rng.normal(0, 1, 50)
    paired = paired_bootstrap(shared, shared + 0.1)
    assert paired.low == pytest.approx(0.1) and paired.high == pytest.approx(0.1)
    # Reproducible for a seed
    assert paired_bootstrap(base, cand, seed=5) == paired_bootstrap(base, cand, seed=5)
    assert math.isnan(paired_bootstrap([], []).estimate)
