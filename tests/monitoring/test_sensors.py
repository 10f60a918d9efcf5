"""The retraining sensor on a real Dagster instance: fires, skips, cools down, advances its cursor."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import pytest

from mallard.config import load_settings
from mallard.monitoring import results
from mallard.monitoring.alerts import list_alerts
from pipelines.jobs import RETRAIN_JOBS
from resources import resources_for_env
from sensors.monitoring import build_retrain_sensor

D = dt.date(2026, 5, 1)


@pytest.fixture
def tick(mallard_home: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MALLARD_TODAY", (D + dt.timedelta(days=7)).isoformat())
    sensor = build_retrain_sensor(RETRAIN_JOBS)
    instance = dg.DagsterInstance.ephemeral()
    resources = resources_for_env()

    def run(cursor: str | None):
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=resources
        ) as context:
            return sensor.evaluate_tick(context)

    yield run
    instance.dispose()


def _drift(day: dt.date, share: float) -> None:
    results.record(
        load_settings(),
        "churn_classifier",
        day,
        "drift",
        "1",
        share,
        {"drifted": {"errors_7d": 0.4}} if share > 0.25 else {"drifted": {}},
    )


def test_fires_above_threshold_then_cools_down(tick) -> None:
    _drift(D, 0.1)
    _drift(D + dt.timedelta(days=1), 0.5)
    first = tick(None)
    [request] = first.run_requests
    assert request.job_name == "retrain_churn_classifier"
    assert request.tags["mallard/trigger"] == "drift"
    assert "drift share 0.50 ≥ 0.25 on 2026-05-02 (errors_7d)" in request.tags["mallard/reason"]
    cursor = json.loads(first.cursor)["churn_classifier"]
    assert cursor == {"drift_day": "2026-05-02", "retrain_day": "2026-05-02"}
    assert [a.kind for a in list_alerts(load_settings())] == ["drift"]

    _drift(D + dt.timedelta(days=5), 0.6)  # still drifting, inside the 14-day cooldown
    second = tick(first.cursor)
    assert not second.run_requests and "in cooldown" in second.skip_message
    assert json.loads(second.cursor)["churn_classifier"]["drift_day"] == "2026-05-06"

    _drift(D + dt.timedelta(days=16), 0.6)  # cooldown over
    third = tick(second.cursor)
    assert [r.tags["mallard/day"] for r in third.run_requests] == ["2026-05-17"]


def test_skips_below_threshold_and_only_reads_new_days(tick) -> None:
    _drift(D, 0.1)
    first = tick(None)
    assert not first.run_requests and "below thresholds" in first.skip_message
    # The same old results are not judged again: nothing new → no retrain, cursor unchanged.
    _drift(D - dt.timedelta(days=3), 0.9)  # a late write for an already-seen day is ignored
    second = tick(first.cursor)
    assert not second.run_requests and "no new monitoring results" in second.skip_message
    assert second.cursor == first.cursor


def test_performance_drop_fires(tick) -> None:
    settings = load_settings()
    results.record(settings, "churn_classifier", D, "performance", "1", 0.60, {"baseline": 0.70})
    [request] = tick(None).run_requests
    assert request.tags["mallard/trigger"] == "performance"
    assert "below the champion's evaluation AUC 0.700" in request.tags["mallard/reason"]


def test_a_sensor_switched_on_late_ignores_month_old_drift(
    tick, monkeypatch: pytest.MonkeyPatch
) -> None:
    _drift(D, 0.7)
    monkeypatch.setenv("MALLARD_TODAY", (D + dt.timedelta(days=30)).isoformat())
    late = tick(None)
    assert not late.run_requests
    assert "stale evidence: the newest result is from 2026-05-01" in late.skip_message
    assert list_alerts(load_settings()) == []
