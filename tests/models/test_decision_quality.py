"""Decision quality of the promotion gate, measured on the sample world's real training set.

Null trials (same estimator, different seed) must be promoted no more often than the declared
significance level allows (binomial upper bound at 99 %); a candidate trained after the day-60
shift must be promoted over a champion trained before it, judged after it. The full run
(200 null trials) is slow-marked; the default run does a smaller one.
"""

from __future__ import annotations

import json

import pytest

from catalog.models import MODELS, churn_classifier, minutes_forecast

MIN_SHIFT_POWER = 0.8


def _frame(model_lake):
    from mallard.config import load_settings
    from mallard.features.training import read_training_set

    return read_training_set(load_settings(home=model_lake.home), "churn_training_set")[0]


def _run(spec, model_lake, null_trials, shift_trials, **options):
    from mallard.models.decision_quality import null_and_shift

    features = MODELS.features(spec.name)
    categorical = [f for f in features if MODELS.feature_types[f] == "string"]
    return null_and_shift(
        spec,
        _frame(model_lake),
        features,
        categorical,
        shift_day=model_lake.shift_date,
        null_trials=null_trials,
        shift_trials=shift_trials,
        **options,
    )


def _check(null, shift) -> None:
    print(json.dumps({"null": null.as_dict(), "shift": shift.as_dict()}, default=str))
    assert null.within_bound, (
        f"{null.promoted}/{null.trials} null promotions exceed the binomial bound "
        f"{null.upper_bound_count} for significance {null.significance}"
    )
    assert abs(null.mean_improvement) < 0.02
    assert shift.mean_improvement > null.min_improvement
    assert shift.rate >= MIN_SHIFT_POWER, (
        f"only {shift.promoted}/{shift.trials} shift candidates promoted"
    )


def test_gate_decision_quality_fast(model_lake) -> None:
    null, shift = _run(
        churn_classifier,
        model_lake,
        30,
        10,
        trees=20,
        # Null trials need no power, only many decisions: a smaller, cheaper held-out slice.
        # (Not a smaller training sample: with 4,000 rows the forests' seed-to-seed differences
        # outgrow the declared minimum improvement: 5 of 30 were promoted, at the edge of the
        # bound — see MODELS.md.)
        null_options={"n_bootstrap": 200, "max_holdout_rows": 6_000},
        shift_options={"n_bootstrap": 300},
    )
    _check(null, shift)


@pytest.mark.slow
@pytest.mark.parametrize("spec", [churn_classifier, minutes_forecast], ids=lambda s: s.name)
def test_gate_decision_quality_200_trials(model_lake, spec) -> None:
    null, shift = _run(spec, model_lake, 200, 20, trees=20, n_bootstrap=500)
    _check(null, shift)
