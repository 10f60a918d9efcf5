"""Retrain rules and the post-promotion guard's verdicts, on constructed observations."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd

from mallard.monitoring.decisions import DayObservation, RetrainPolicy, decide_retrain
from mallard.monitoring.guard import judge_promotion

D = dt.date(2026, 5, 1)
POLICY = RetrainPolicy(drift_share=0.25, max_auc_drop=0.05, cooldown_days=14)


def test_drift_above_threshold_requests_a_retrain() -> None:
    decision = decide_retrain(
        [DayObservation(D, 0.1), DayObservation(D + dt.timedelta(days=1), 0.4, ("errors_7d",))],
        POLICY,
        None,
    )
    assert decision.retrain and decision.trigger == "drift"
    assert "0.40 ≥ 0.25" in decision.reason and "errors_7d" in decision.reason


def test_below_thresholds_and_cooldown_skip() -> None:
    below = decide_retrain([DayObservation(D, 0.2)], POLICY, None)
    assert not below.retrain and "below thresholds (peak drift share 0.20)" in below.reason
    cooling = decide_retrain([DayObservation(D + dt.timedelta(days=10), 0.9)], POLICY, D)
    assert not cooling.retrain and "in cooldown" in cooling.reason
    after = decide_retrain([DayObservation(D + dt.timedelta(days=14), 0.9)], POLICY, D)
    assert after.retrain


def test_performance_drop_requests_a_retrain() -> None:
    decision = decide_retrain([DayObservation(D, auc=0.62, baseline_auc=0.70)], POLICY, None)
    assert decision.retrain and decision.trigger == "performance"
    assert "0.080 below" in decision.reason
    assert not decide_retrain(
        [DayObservation(D, auc=0.67, baseline_auc=0.70)], POLICY, None
    ).retrain


def _outcomes(new_noise: float, old_noise: float, n: int = 4000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n).astype(float)
    rows = []
    for role, version, noise in (("champion", "2", new_noise), ("shadow", "1", old_noise)):
        score = np.clip(label * 0.5 + rng.normal(0, noise, n) + 0.25, 0, 1)
        rows.append(
            pd.DataFrame(
                {
                    "entity_key": [json.dumps({"customer_id": i}) for i in range(n)],
                    "day": D,
                    "role": role,
                    "model_version": version,
                    "score": score,
                    "prediction": (score > 0.5).astype(float),
                    "label": label,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def test_stale_evidence_does_not_trigger() -> None:
    policy = RetrainPolicy(drift_share=0.25, max_evidence_age_days=7)
    drifted = [DayObservation(D, 0.6, ("errors_7d",))]
    month_later = decide_retrain(drifted, policy, None, today=D + dt.timedelta(days=30))
    assert not month_later.retrain
    assert "stale evidence: the newest result is from 2026-05-01" in month_later.reason
    assert decide_retrain(drifted, policy, None, today=D + dt.timedelta(days=7)).retrain
    # Outcomes are known a label delay after their day: their age counts from then.
    dropped = DayObservation(D, auc=0.6, baseline_auc=0.8, known_on=D + dt.timedelta(days=14))
    in_time = decide_retrain([dropped], policy, None, today=D + dt.timedelta(days=20))
    assert in_time.retrain and in_time.trigger == "performance"
    too_late = decide_retrain([dropped], policy, None, today=D + dt.timedelta(days=22))
    assert not too_late.retrain and "stale evidence" in too_late.reason
    # Only the fresh days count: an old drift spike with a calm recent day does not trigger.
    mixed = [*drifted, DayObservation(D + dt.timedelta(days=20), 0.1)]
    assert not decide_retrain(mixed, policy, None, today=D + dt.timedelta(days=21)).retrain


def test_guard_rolls_back_a_worse_champion() -> None:
    verdict = judge_promotion(_outcomes(new_noise=0.6, old_noise=0.2), "2", "1", "auc", 0.05, 500)
    assert verdict.judged and verdict.rollback
    assert "entirely below 0" in verdict.reason and verdict.evidence["n_rows"] == 4000


def test_guard_keeps_an_equal_or_better_champion() -> None:
    for new_noise in (0.2, 0.1):
        verdict = judge_promotion(
            _outcomes(new_noise=new_noise, old_noise=0.2), "2", "1", "auc", 0.05, 500
        )
        assert verdict.judged and not verdict.rollback and "holds" in verdict.reason


def test_guard_waits_for_enough_outcomes() -> None:
    verdict = judge_promotion(_outcomes(0.6, 0.2, n=100), "2", "1", "auc", 0.05, 500)
    assert not verdict.judged and "100 of 500" in verdict.reason
