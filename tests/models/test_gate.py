"""The promotion gate's statistics against hand-computed values, and its error rate by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mallard.models.gate import (
    binomial_tail,
    binomial_upper_count,
    bootstrap_weights,
    clopper_pearson,
    decide,
    mcnemar,
    mcnemar_from_counts,
    metric_value,
    paired_bootstrap,
    weighted_metric,
)


def test_exact_mcnemar_on_a_hand_table() -> None:
    # 2×2 table: both right 30, only the candidate right 9, only the champion right 1, both wrong 10.
    # Under H0 the 10 discordant rows split Binomial(10, 1/2):
    # P(X ≥ 9) = (C(10,9) + C(10,10)) / 2^10 = 11/1024; two-sided doubles it.
    result = mcnemar_from_counts(30, 9, 1, 10)
    assert result.p_candidate_better == pytest.approx(11 / 1024, rel=1e-12)
    assert result.p_two_sided == pytest.approx(22 / 1024, rel=1e-12)
    assert result.accuracy_difference == pytest.approx(8 / 50)
    # Wald interval of the paired difference: 8/50 ± 1.959964·sqrt(10 − 64/50)/50
    half = 1.959963985 * math.sqrt(10 - 64 / 50) / 50
    assert (result.ci_low, result.ci_high) == pytest.approx((0.16 - half, 0.16 + half), rel=1e-8)


def test_mcnemar_from_rows_matches_counts_and_symmetry() -> None:
    cand = np.array([1] * 30 + [1] * 9 + [0] * 1 + [0] * 10, dtype=bool)
    champ = np.array([1] * 30 + [0] * 9 + [1] * 1 + [0] * 10, dtype=bool)
    rows = mcnemar(cand, champ)
    assert (rows.both_right, rows.candidate_only_right, rows.champion_only_right) == (30, 9, 1)
    assert rows.p_candidate_better == pytest.approx(11 / 1024)
    reverse = mcnemar(champ, cand)
    assert reverse.p_two_sided == pytest.approx(rows.p_two_sided)
    assert reverse.p_candidate_better == pytest.approx(1 - 1 / 1024)  # P(X ≥ 1)
    assert mcnemar_from_counts(40, 0, 0, 10).p_two_sided == 1.0


def test_binomial_tail_is_exact_for_large_n() -> None:
    n, k = 2000, 1060
    exact = sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n
    assert binomial_tail(k, n) == pytest.approx(exact, rel=1e-9)
    assert binomial_tail(0, 5) == 1.0 and binomial_tail(6, 5) == 0.0


def test_auc_by_hand_with_ties() -> None:
    y = np.array([0, 0, 1, 1])
    assert metric_value("auc", y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert metric_value("auc", y, np.full(4, 0.5)) == pytest.approx(0.5)
    # A tie between a positive and a negative counts one half: pairs (0.2|0.2)=½, others 1.
    assert metric_value("auc", y, np.array([0.1, 0.2, 0.2, 0.9])) == pytest.approx(3.5 / 4)


def test_pr_auc_by_hand_with_ties() -> None:
    y = np.array([1, 0, 1, 0])
    # Thresholds high to low: 0.9 flags a positive (precision 1, recall ½); 0.5 flags the rest of
    # a tie group of one positive and two negatives (precision 2/4, recall 1): ½·1 + ½·½.
    assert metric_value("pr_auc", y, np.array([0.9, 0.5, 0.5, 0.5])) == pytest.approx(0.75)
    assert metric_value("pr_auc", y, np.array([0.9, 0.1, 0.8, 0.2])) == pytest.approx(1.0)


def test_weighted_metrics_equal_the_metric_on_the_resampled_rows() -> None:
    from sklearn.metrics import (
        average_precision_score,
        f1_score,
        mean_absolute_error,
        mean_squared_error,
        r2_score,
        roc_auc_score,
    )

    rng = np.random.default_rng(3)
    n = 300
    y = rng.integers(0, 2, n)
    score = np.round(rng.random(n) * 0.5 + 0.3 * y, 2)  # rounded: plenty of ties
    label = (score > 0.45).astype(int)
    value = rng.normal(size=n)
    target = value + rng.normal(scale=0.5, size=n)
    weights = bootstrap_weights(n, 5, seed=1)
    for b in range(5):
        idx = np.repeat(np.arange(n), weights[b].astype(int))
        w = weights[b : b + 1]
        assert weighted_metric("auc", y, score, w)[0] == pytest.approx(
            roc_auc_score(y[idx], score[idx])
        )
        assert weighted_metric("pr_auc", y, score, w)[0] == pytest.approx(
            average_precision_score(y[idx], score[idx])
        )
        assert weighted_metric("f1", y, label, w)[0] == pytest.approx(f1_score(y[idx], label[idx]))
        assert weighted_metric("mae", target, value, w)[0] == pytest.approx(
            mean_absolute_error(target[idx], value[idx])
        )
        assert weighted_metric("rmse", target, value, w)[0] == pytest.approx(
            math.sqrt(mean_squared_error(target[idx], value[idx]))
        )
        assert weighted_metric("r2", target, value, w)[0] == pytest.approx(
            r2_score(target[idx], value[idx])
        )


def test_identical_models_are_never_promoted() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    score = rng.random(500)
    result = paired_bootstrap("auc", y, score, score.copy(), n_bootstrap=300, seed=1)
    assert result.improvement == 0 and result.p_value == 1.0
    decision = decide(
        metric="auc", min_improvement=0.0, significance=0.05, bootstrap=result, champion_version=1
    )
    assert not decision.promote and decision.reason.startswith("kept champion v1")


def test_a_clearly_better_model_is_promoted_with_a_ci_around_the_truth() -> None:
    rng = np.random.default_rng(1)
    n = 2000
    signal = rng.normal(size=n)
    y = (signal + rng.normal(scale=1.0, size=n) > 0).astype(int)
    good = signal + rng.normal(scale=0.3, size=n)
    weak = signal + rng.normal(scale=2.0, size=n)
    result = paired_bootstrap("auc", y, good, weak, n_bootstrap=500, seed=2, threshold=0.01)
    assert result.improvement > 0.1
    assert result.ci_low < result.improvement < result.ci_high
    assert result.lower_bound > 0.01 and result.p_value < 0.01
    decision = decide(
        metric="auc", min_improvement=0.01, significance=0.05, bootstrap=result, champion_version=3
    )
    assert decision.promote and decision.reason.startswith("promoted: auc")
    # Regression: the error of the better predictor is lower; "improvement" is oriented.
    mae = paired_bootstrap("mae", signal, good, weak, n_bootstrap=300, seed=3)
    assert mae.improvement > 0 and not mae.higher_is_better


def test_no_champion_promotes_and_low_stability_does_not() -> None:
    assert decide(metric="auc", min_improvement=0, significance=0.05).promote
    low = decide(
        metric="silhouette",
        min_improvement=0,
        significance=0.05,
        stability=0.2,
        min_stability=0.5,
        champion_version=1,
    )
    assert not low.promote and "stability" in low.reason


def test_mcnemar_rule() -> None:
    table = mcnemar_from_counts(300, 40, 15, 45)
    decision = decide(
        metric="accuracy",
        min_improvement=0.0,
        significance=0.05,
        mcnemar_result=table,
        test="mcnemar",
        champion_version=2,
    )
    assert decision.promote and "exact McNemar" in decision.reason


def test_false_promotion_rate_on_exchangeable_models_stays_within_alpha() -> None:
    """300 simulated trials where both models are equally good: promotions ≤ binomial bound."""
    rng = np.random.default_rng(11)
    trials, n, alpha = 300, 400, 0.05
    promoted = 0
    for t in range(trials):
        signal = rng.normal(size=n)
        y = (signal + rng.normal(size=n) > 0).astype(int)
        a = signal + rng.normal(size=n)
        b = signal + rng.normal(size=n)
        result = paired_bootstrap("auc", y, a, b, n_bootstrap=200, alpha=alpha, seed=t)
        promoted += result.p_value < alpha and result.improvement > 0
    assert promoted <= binomial_upper_count(trials, alpha, 0.99)


def test_binomial_helpers() -> None:
    # P(Binomial(200, .05) ≤ k) first reaches .99 at k = 18.
    assert binomial_upper_count(200, 0.05, 0.99) == 18
    low, high = clopper_pearson(5, 100)
    assert low == pytest.approx(0.01643, abs=1e-4) and high == pytest.approx(0.11284, abs=1e-4)
    assert clopper_pearson(0, 50)[0] == 0.0
