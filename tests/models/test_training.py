"""End to end on a real training set and the real MLflow SQLite store: train a candidate with
PyCaret, record its statistics, evaluate it against the champion, promote, keep, roll back,
explain — and fail cleanly on bad training data without touching the champion."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from catalog.models import MODELS, churn_classifier, minutes_forecast
from mallard.models.data import BASELINE_COLUMN, TrainingDataError, naive_baseline, split_frame
from mallard.models.specs import DecisionThreshold, NaiveBaseline, TrainingWindow
from mallard.models.training import choose_threshold

TYPES = MODELS.feature_types
FEATURES = MODELS.features("churn_classifier")
WEAK = ["plan_changes_30d", "monthly_price"]


def small(spec, **changes):
    """The declared model made cheap: three estimators, two folds, three weeks of rows."""
    base = {
        "estimators": ["lr", "dt", "rf"],
        "estimator_params": {"rf": {"n_estimators": 10, "max_depth": 6}},
        "folds": 2,
        "time_budget": 30,
        "window": TrainingWindow(
            holdout_days=21, train_days=21, max_train_rows=10_000, max_holdout_rows=20_000
        ),
    }
    return dataclasses.replace(spec, **{**base, **changes})


def _aliases(settings, name):
    from mallard.models.registry import client

    return {k: int(v) for k, v in client(settings).get_registered_model(name).aliases.items()}


def _version_count(settings, name):
    from mallard.models.registry import client

    return len(client(settings).search_model_versions(f"name='{name}'"))


def _cycle(spec, settings, features):
    from mallard.models.evaluation import apply_promotion, evaluate_candidate
    from mallard.models.statistics import compute_training_statistics
    from mallard.models.training import train_candidate

    trained = train_candidate(spec, settings, features, TYPES)
    stats, _ = compute_training_statistics(spec, settings, features, TYPES)
    evaluation = evaluate_candidate(spec, settings, features, TYPES)
    decision = apply_promotion(spec, settings)
    return trained, stats, evaluation, decision


def test_train_evaluate_promote_keep_rollback_explain(model_home) -> None:
    import mlflow
    from click.testing import CliRunner

    from cli.models import models as models_cli
    from mallard.models.evaluation import apply_promotion
    from mallard.models.explain import explain_champion, explain_rows
    from mallard.models.registry import RegistryError, client, rollback
    from mallard.models.training import train_candidate

    settings = model_home
    spec = small(churn_classifier)

    # v1: a weak model (two uninformative features) becomes champion because there is none.
    v1, stats, evaluation, decision = _cycle(spec, settings, WEAK)
    assert (v1.version, decision.action, decision.champion_after) == (1, "promote", 1)
    assert decision.reason.startswith("no champion yet")
    assert set(v1.leaderboard["id"]) == {"lr", "dt", "rf"}
    assert {"linear", "tree", "bagging"} == set(v1.leaderboard["family"])

    c = client(settings)
    run = c.get_run(v1.run_id)
    assert run.data.params["metric"] == "auc" and run.data.params["folds"] == "2"
    assert run.data.tags["mallard.feature_version.usage_7d"] == "usage_7d@v1"
    assert run.data.tags["mallard.training_set_delta_version"] == "0"
    assert run.data.tags["mallard.decision"] == "promote"
    assert "cv_auc" in run.data.metrics and "holdout_auc" in run.data.metrics
    artifacts = {a.path for a in c.list_artifacts(v1.run_id)}
    assert {"leaderboard", "plots", "evaluation", "training_statistics", "explain"} <= artifacts
    assert {a.path for a in c.list_artifacts(v1.run_id, "plots")} == {
        "plots/model_comparison.png",
        "plots/confusion_matrix_roc.png",
    }
    info = mlflow.models.get_model_info("models:/churn_classifier/1")
    assert info.signature is not None and info.saved_input_example_info is not None
    assert [i.name for i in info.signature.inputs.inputs] == WEAK
    assert (
        str(settings.mlflow_dir / "artifacts")
        in c.get_experiment(v1.experiment_id).artifact_location
    )

    # Training statistics describe exactly the training rows, and flag odd inputs.
    assert stats.rows == v1.data["train_rows"]
    assert stats.features["monthly_price"]["min"] >= 0
    odd = pd.DataFrame({"plan_changes_30d": [0.0, 1e9], "monthly_price": [12.99, -5.0]})
    issues = {(i["row"], i["feature"], i["issue"]) for i in stats.check(odd)}
    assert (1, "plan_changes_30d", "above_max") in issues
    assert (1, "monthly_price", "below_min") in issues
    assert (1, None, "out_of_distribution") in issues
    assert not [i for i in issues if i[0] == 0 and i[2] != "out_of_distribution"]

    # v2: every feature, trained after the shift: genuinely better, promoted by the rule.
    v2, _, evaluation, decision = _cycle(spec, settings, FEATURES)
    assert evaluation.champion_version == 1 and evaluation.bootstrap is not None
    assert evaluation.mcnemar is not None
    b = evaluation.bootstrap
    assert b.improvement > spec.promotion.min_improvement and b.p_value < 0.05
    assert b.ci_low <= b.improvement <= b.ci_high
    assert decision.action == "promote" and decision.reason.startswith("promoted: auc")
    assert _aliases(settings, "churn_classifier") == {"candidate": 2, "champion": 2}

    # v3: the same training again: identical predictions, not better, champion kept.
    v3, _, evaluation, decision = _cycle(spec, settings, FEATURES)
    assert evaluation.bootstrap.improvement == 0
    assert decision.action == "keep" and decision.reason.startswith("kept champion v2")
    assert _aliases(settings, "churn_classifier") == {"candidate": 3, "champion": 2}
    assert c.get_model_version("churn_classifier", "3").tags["mallard.decision"] == "keep"

    # Bad training data fails before anything is registered; the champion stays.
    too_few = dataclasses.replace(
        spec, window=TrainingWindow(holdout_days=21, train_days=1, gap_days=1)
    )
    with pytest.raises(TrainingDataError, match="too few rows in the training slice"):
        train_candidate(too_few, settings, FEATURES, TYPES)
    no_label = dataclasses.replace(spec, label="churned_30d")
    with pytest.raises(TrainingDataError, match="has no label column 'churned_30d'"):
        train_candidate(no_label, settings, FEATURES, TYPES)
    assert _aliases(settings, "churn_classifier") == {"candidate": 3, "champion": 2}
    assert _version_count(settings, "churn_classifier") == 3

    # Rollback: to the champion before (v1), recorded like a promotion.
    rolled = rollback(settings, "churn_classifier", reason="bad week")
    assert (rolled.champion_before, rolled.champion_after) == (2, 1)
    assert _aliases(settings, "churn_classifier")["champion"] == 1
    tags = c.get_model_version("churn_classifier", "1").tags
    assert tags["mallard.decision"] == "rollback" and "bad week" in tags["mallard.reason"]
    assert c.get_run(rolled.run_id).data.tags["mallard.action"] == "rollback"
    last = json.loads(c.get_registered_model("churn_classifier").tags["mallard.last_decision"])
    assert last["action"] == "rollback"

    # …and from the CLI, forward again to v2.
    runner = CliRunner()
    out = runner.invoke(models_cli, ["rollback", "churn_classifier", "--to", "2"])
    assert out.exit_code == 0, out.output
    assert "champion v1 → v2" in out.output
    out = runner.invoke(models_cli, ["rollback", "churn_classifier", "--to", "2"])
    assert out.exit_code != 0 and "already the champion" in out.output
    shown = runner.invoke(models_cli, ["show", "churn_classifier"])
    assert "champion=v2" in shown.output and "rollback" in shown.output
    listed = runner.invoke(models_cli, ["list"])
    assert "churn_classifier" in listed.output and "v2" in listed.output

    # Rolling back the version that is also the candidate retires it as the candidate, so
    # re-applying the promotion cannot undo the rollback.
    rollback(settings, "churn_classifier", to_version=3)
    rollback(settings, "churn_classifier", reason="v3 hurt")
    assert _aliases(settings, "churn_classifier") == {"champion": 2}
    with pytest.raises(RegistryError, match="has no candidate to promote"):
        apply_promotion(spec, settings)

    # Explanations of the champion, globally and row by row (contributions add up).
    explained = explain_champion(spec, settings, TYPES)
    assert explained.version == 2 and explained.kind == "shap"
    assert set(explained.table["feature"]) == set(FEATURES)
    assert all(path.exists() for path in explained.plots.values())
    from mallard.features.training import read_training_set

    rows = read_training_set(settings, "churn_training_set")[0].tail(4)
    contributions = explain_rows("churn_classifier", rows, settings)
    assert list(contributions.columns) == [*FEATURES, "base_value", "prediction"]
    assert contributions.attrs["version"] == 2
    total = contributions[FEATURES].sum(axis=1) + contributions["base_value"]
    if contributions.attrs["output"] == "log_odds":
        p = contributions["prediction"].clip(1e-9, 1 - 1e-9)
        np.testing.assert_allclose(total, np.log(p / (1 - p)), atol=1e-3)
    else:
        np.testing.assert_allclose(total, contributions["prediction"], atol=1e-3)
    with pytest.raises(ValueError, match="lack feature"):
        explain_rows("churn_classifier", rows.drop(columns="minutes_7d"), settings)


def _frame(n: int, label: list[int] | None = None) -> pd.DataFrame:
    days = pd.date_range("2026-03-01", periods=10, freq="7D", tz="UTC")
    stamps = [days[i % len(days)] for i in range(n)]
    frame = pd.DataFrame(
        {
            "customer_id": range(n),
            "event_timestamp": stamps,
            "minutes_7d": np.arange(n, dtype=float),
            "current_plan": ["basic", "premium"] * (n // 2) + ["basic"] * (n % 2),
        }
    )
    if label is not None:
        frame["churned_14d"] = label
    return frame


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (_frame(2000), "has no label column 'churned_14d'"),
        (
            _frame(2000, [0] * 2000),
            r"label 'churned_14d' has a single class \(0\) in the training slice",
        ),
        (_frame(60, [0, 1] * 30), "too few rows in the training slice"),
        (_frame(0, []), "has no rows"),
    ],
)
def test_bad_training_data_is_a_clear_error(frame, message) -> None:
    spec = dataclasses.replace(churn_classifier, window=TrainingWindow(holdout_days=14))
    with pytest.raises(TrainingDataError, match=message):
        split_frame(spec, frame, ["minutes_7d", "current_plan"], ["current_plan"], training_set="t")


def test_slices_are_later_in_time_and_sampled() -> None:
    frame = _frame(2000, [0, 1] * 1000)
    spec = dataclasses.replace(
        churn_classifier,
        window=TrainingWindow(
            holdout_days=14, gap_days=7, max_train_rows=500, max_holdout_rows=300
        ),
    )
    data = split_frame(spec, frame, ["minutes_7d", "current_plan"], ["current_plan"])
    assert data.train_days[1] < data.holdout_days[0]
    assert data.train["event_timestamp"].max() < data.holdout["event_timestamp"].min()
    assert len(data.train) == 500 and len(data.holdout) == 300
    # the gap: the label day just before the held-out slice is in neither slice
    skipped = pd.Timestamp(data.holdout_days[0], tz="UTC") - pd.Timedelta(days=7)
    assert skipped not in set(data.train["event_timestamp"]) | set(data.holdout["event_timestamp"])
    assert data.train["minutes_7d"].dtype == np.float64
    assert not math.isnan(data.train["minutes_7d"].iloc[0])


def test_thresholds_follow_the_declared_use() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(2000) < 0.06).astype(int)
    score = np.round(rng.random(2000) * 0.6 + 0.35 * y, 3)
    budget = choose_threshold(DecisionThreshold("contact_budget", 0.10), y, score)
    assert budget["flagged_share"] <= 0.10 and budget["flagged_share"] > 0.09
    assert budget["flagged_share"] == pytest.approx((score >= budget["value"]).mean())
    best = choose_threshold(DecisionThreshold("max_f1"), y, score)
    from sklearn.metrics import f1_score

    by_hand = max(f1_score(y, score >= t) for t in np.unique(score))
    assert best["f1"] == pytest.approx(by_hand)
    assert best["recall"] > 0 and best["f1"] > 2 * y.mean() / (1 + y.mean())
    fixed = choose_threshold(DecisionThreshold("fixed", value=0.42), y, score)
    assert fixed["value"] == 0.42 and fixed["rule"] == "fixed"


def test_naive_baseline_sums_the_same_customer_s_earlier_rows() -> None:
    days = pd.to_datetime(["2026-03-01", "2026-03-08", "2026-03-15"], utc=True)
    frame = pd.DataFrame(
        {
            "customer_id": [1, 1, 1, 2, 2],
            "event_timestamp": [days[0], days[1], days[2], days[1], days[2]],
            "minutes_7d": [10.0, 20.0, None, 5.0, 7.0],
        }
    )
    baseline = naive_baseline(frame, NaiveBaseline("minutes_7d", (0, 7), scale=1.0))
    # customer 1: 10 (no row a week before), 20 + 10, null (0) + 20; customer 2: 5, 7 + 5
    assert baseline.tolist() == [10.0, 30.0, 20.0, 5.0, 12.0]
    spec = dataclasses.replace(
        minutes_forecast,
        baseline=NaiveBaseline("minutes_7d", (0, 7)),
        window=TrainingWindow(holdout_days=7, max_train_rows=100),
    )
    frame = _frame(400, None).assign(minutes_next_14d=np.arange(400.0) % 13)
    data = split_frame(spec, frame, ["minutes_7d", "current_plan"], ["current_plan"])
    assert BASELINE_COLUMN in data.holdout and data.holdout[BASELINE_COLUMN].notna().all()
