"""Feature views computed on the sample world: checks, versions, training sets."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from catalog.features import REGISTRY, billing_30d, churn_training_set, usage_7d
from mallard.config import load_settings
from mallard.features.compute import (
    ViewComputeError,
    check_expectations,
    compute_partition,
    validate_view,
)
from mallard.features.specs import Expectation, Feature
from mallard.features.versions import list_versions, register_version, resolve_version
from mallard.specs import DeclarationError


@pytest.fixture
def world_settings(sample_world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings whose MALLARD_HOME/sample is the session's sample world."""
    _, path, _ = sample_world
    home = tmp_path / "home"
    home.mkdir()
    (home / "sample").symlink_to(path)
    monkeypatch.setenv("MALLARD_HOME", str(home))
    return load_settings()


def test_validate_names_sql_errors_and_wrong_types(world_settings) -> None:
    assert "minutes_7d" in validate_view(usage_7d, world_settings)
    broken = dataclasses.replace(
        usage_7d, sql=usage_7d.sql.replace("sum(sessions)", "sum(sesions)")
    )
    with pytest.raises(ViewComputeError, match="FeatureView 'usage_7d': sql fails: .*sesions"):
        validate_view(broken, world_settings)
    wrong = dataclasses.replace(
        billing_30d, features=[*billing_30d.features[:-1], Feature("monthly_price", "string")]
    )
    with pytest.raises(
        ViewComputeError,
        match="feature 'monthly_price' is declared string but the sql produces DOUBLE",
    ):
        validate_view(wrong, world_settings)
    missing = dataclasses.replace(
        usage_7d, features=[*usage_7d.features, Feature("not_there", "int64")]
    )
    with pytest.raises(
        ViewComputeError, match="feature 'not_there' is declared but the sql does not return it"
    ):
        validate_view(missing, world_settings)


def test_partition_matches_a_hand_computed_window(sample_world, world_settings) -> None:
    spec, path, _ = sample_world
    day = spec.start_date + dt.timedelta(days=30)
    table = compute_partition(usage_7d, world_settings, day).to_pandas()
    usage = pd.read_parquet(path / "usage_events.parquet")
    end = pd.Timestamp(day + dt.timedelta(days=1), tz="UTC")
    window = usage[
        (usage["event_timestamp"] >= end - pd.Timedelta(days=7)) & (usage["event_timestamp"] < end)
    ]
    expected = window.groupby("customer_id")["minutes_watched"].sum()
    got = table.set_index("customer_id")["minutes_7d"]
    assert (table["event_timestamp"] == end).all()
    pd.testing.assert_series_equal(
        got.sort_index(), expected.sort_index(), check_names=False, rtol=1e-9
    )


def test_expectations_count_failing_rows(world_settings, sample_world) -> None:
    spec, _, _ = sample_world
    strict = dataclasses.replace(
        usage_7d,
        features=[
            Feature("minutes_7d", "float64", expect=Expectation(max=60.0)),
            *usage_7d.features[1:],
        ],
    )
    table = compute_partition(strict, world_settings, spec.start_date + dt.timedelta(days=30))
    results = {r.rule: r for r in check_expectations(strict, table) if r.feature == "minutes_7d"}
    over = int((table.column("minutes_7d").to_pandas() > 60).sum())
    assert over > 0 and results["<= 60.0"].failing_rows == over
    plan = {
        r.rule: r
        for r in check_expectations(
            billing_30d, compute_partition(billing_30d, world_settings, spec.end_date)
        )
    }
    assert plan["in ['basic', 'standard', 'premium']"].passed


def test_versions_are_numbered_and_old_ones_stay_resolvable(world_settings) -> None:
    first = register_version(world_settings, usage_7d)
    changed = dataclasses.replace(usage_7d, sql=usage_7d.sql + " HAVING sum(sessions) > 0")
    second = register_version(world_settings, changed)
    assert (first.number, second.number) == (1, 2)
    assert register_version(world_settings, usage_7d) == first  # idempotent
    assert resolve_version(world_settings, changed, "v1") == first
    assert [v.label for v in list_versions(world_settings, "usage_7d")] == [
        "usage_7d@v1",
        "usage_7d@v2",
    ]
    assert first.table_path != second.table_path
    with pytest.raises(DeclarationError, match="version 'v9' does not exist"):
        resolve_version(world_settings, usage_7d, "v9")


def test_training_set_is_point_in_time(world_settings, sample_world) -> None:
    from mallard.features.offline.store import write_view_partition
    from mallard.features.training import build_training_set

    spec, _, _ = sample_world
    for view in REGISTRY.views.values():
        version = register_version(world_settings, view)
        for offset in range(40, 60):
            day = spec.start_date + dt.timedelta(days=offset)
            write_view_partition(
                version.table_path,
                compute_partition(view, world_settings, day),
                day,
                join_keys=["customer_id"],
            )
    as_of = dt.datetime.combine(spec.start_date + dt.timedelta(days=60), dt.time(), tzinfo=dt.UTC)
    frame, versions = build_training_set(churn_training_set, REGISTRY, world_settings, as_of)
    assert versions == {
        "usage_7d": "usage_7d@v1",
        "billing_30d": "billing_30d@v1",
        "support_30d": "support_30d@v1",
    }
    assert len(frame) > 0
    # Only labels known by as_of, and thinned to one day in seven.
    assert (frame["event_timestamp"] + pd.Timedelta(days=14) <= as_of).all()
    assert frame["event_timestamp"].dt.normalize().nunique() <= 60 // 7 + 1
    # A label at midnight of day d gets the usage window ending exactly then (day d-1's partition).
    row = frame.dropna(subset=["minutes_7d"]).iloc[-1]
    label_day = row["event_timestamp"].date()
    partition = compute_partition(
        usage_7d, world_settings, label_day - dt.timedelta(days=1)
    ).to_pandas()
    expected = partition.loc[partition["customer_id"] == row["customer_id"], "minutes_7d"].item()
    assert row["minutes_7d"] == pytest.approx(expected)
