"""The drift and performance checks run on their own, as the UI's Execute button runs them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg

from mallard.config import load_settings
from mallard.monitoring import results
from resources import resources_for_env

D = dt.date(2026, 5, 1)


def _run_check(name: str) -> dg.AssetCheckEvaluation:
    from assets.monitoring import MONITORING_ASSETS, MONITORING_CHECKS

    check = next(c for c in MONITORING_CHECKS if next(iter(c.check_keys)).name == name)
    defs = dg.Definitions(
        assets=MONITORING_ASSETS,
        asset_checks=[check],
        jobs=[dg.define_asset_job("only_the_check", selection=dg.AssetSelection.checks(check))],
        resources=resources_for_env(),
    )
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("only_the_check").execute_in_process(instance=instance)
    assert result.success
    assert result.get_asset_materialization_events() == []  # the asset was not recomputed
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def test_the_drift_check_runs_alone_on_the_latest_day(mallard_home: Path) -> None:
    settings = load_settings()
    results.record(settings, "churn_classifier", D, "drift", "1", 0.1, {"drifted": {}})
    record = {"drifted": {"errors_7d": 0.3, "minutes_7d": 0.2}}
    results.record(
        settings, "churn_classifier", D + dt.timedelta(days=1), "drift", "1", 0.5, record
    )
    evaluation = _run_check("drift_share_below_threshold")
    assert not evaluation.passed
    assert evaluation.description == "2026-05-02: drift share 0.50 (threshold 0.25)"
    assert evaluation.metadata["drifted"].value == ["errors_7d", "minutes_7d"]


def test_the_performance_check_judges_the_scoring_version(mallard_home: Path) -> None:
    settings = load_settings()
    day = {"auc": 0.60, "rows": 500, "baseline": 0.80}
    results.record(settings, "churn_classifier", D, "performance", "3", 0.60, day)
    evaluation = _run_check("metric_within_tolerance")
    assert not evaluation.passed  # a 0.20 drop from v3's own baseline
    assert evaluation.metadata["model_version"].value == "3"
    assert "v3: auc 0.600 vs its own baseline 0.800" in evaluation.description
