"""Adding days to a sample world: the earlier days stay as they were, the new ones follow on."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

from mallard.sample_world.generate import (
    SIMULATION_DIR,
    WorldNotExtensible,
    WorldSpec,
    extend_world,
    generate_world,
    read_spec,
)

END = dt.date(2026, 6, 30)
PARQUET = {
    "usage_events": "usage_events.parquet",
    "support_tickets": "support_tickets.parquet",
    "churn_labels": "churn_labels.parquet",
    "traces": "traces.parquet",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[WorldSpec, Path]:
    spec = WorldSpec(end_date=END, customers=1000)
    target = tmp_path_factory.mktemp("extend") / "sample"
    generate_world(spec, target)
    return spec, target


def _copy(world: tuple[WorldSpec, Path], to: Path) -> Path:
    shutil.copytree(world[1], to)
    return to


def _tables(path: Path) -> dict[str, pd.DataFrame]:
    tables = {name: pd.read_parquet(path / file) for name, file in PARQUET.items()}
    billing = DeltaTable(str(path / "billing_events")).to_pandas()
    tables["billing_events"] = billing.sort_values(
        ["event_id", "created_timestamp"], kind="stable"
    ).reset_index(drop=True)
    tables["customers"] = pd.read_csv(path / "customers.csv")
    return tables


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in one order (a Delta table's rows come back in any order)."""
    listed = [c for c in frame.columns if frame[c].map(lambda v: isinstance(v, np.ndarray)).any()]
    keys = [c for c in frame.columns if c not in listed]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def test_added_day_keeps_every_earlier_row_and_the_start_date(world, tmp_path: Path) -> None:
    spec, original = world
    before = _tables(original)
    grown = _copy(world, tmp_path / "sample")
    summary = extend_world(grown, 1)
    after = _tables(grown)

    new_spec = read_spec(grown)
    assert new_spec.start_date == spec.start_date
    assert new_spec.end_date == END + dt.timedelta(days=1) and new_spec.days == spec.days + 1
    new_day_start = pd.Timestamp(END + dt.timedelta(days=1), tz="UTC")
    # The parquet sources grow at the end: the old rows are the first rows, unchanged.
    for name in ("usage_events", "support_tickets", "churn_labels"):
        old, new = before[name], after[name]
        pd.testing.assert_frame_equal(new.iloc[: len(old)], old, check_dtype=True)
        assert len(new) > len(old), name
    pd.testing.assert_frame_equal(after["customers"], before["customers"])
    pd.testing.assert_frame_equal(after["traces"], before["traces"])
    # What was known by the old last day is unchanged: every new row became known on the new day.
    usage = after["usage_events"].iloc[len(before["usage_events"]) :]
    assert (usage["event_timestamp"] >= new_day_start).all()
    labels = after["churn_labels"].iloc[len(before["churn_labels"]) :]
    assert (labels["known_at"] == new_day_start).all()
    assert labels["label_timestamp"].dt.date.unique().tolist() == [
        END - dt.timedelta(days=spec.label_horizon_days - 1)
    ]
    billing = after["billing_events"].merge(before["billing_events"], how="left", indicator=True)
    assert (billing["_merge"] == "both").sum() == len(before["billing_events"])
    added = billing[billing["_merge"] == "left_only"]
    assert len(added) and (added["created_timestamp"] >= new_day_start).all()
    late = added[added["event_timestamp"] < new_day_start]  # corrections of earlier payments
    assert set(late["event_id"]) <= set(before["billing_events"]["event_id"])
    # The manifest counts what the files hold.
    assert summary.rows == {name: len(frame) for name, frame in after.items()}
    manifest = json.loads((grown / "world.json").read_text())
    assert manifest["extensions"] == [{"from_end_date": END.isoformat(), "added_days": 1}]


def test_the_new_day_follows_on(world, tmp_path: Path) -> None:
    """The population carries on: about as many viewers and tickets as on the days before, the
    next ticket and billing numbers, and labels of the day whose horizon has passed."""
    grown = _copy(world, tmp_path / "sample")
    extend_world(grown, 1)
    tables = _tables(grown)
    usage = tables["usage_events"]
    per_day = usage.groupby(usage["event_timestamp"].dt.date).size()
    last_week = per_day.iloc[-8:-1]
    assert last_week.min() * 0.8 <= per_day.iloc[-1] <= last_week.max() * 1.2, per_day.tail(8)
    tickets = tables["support_tickets"]["ticket_id"]
    assert tickets.is_unique
    assert tables["billing_events"].drop_duplicates("event_id")["event_id"].is_unique


def test_adding_two_days_at_once_or_one_at_a_time_is_the_same_world(world, tmp_path: Path) -> None:
    at_once = _copy(world, tmp_path / "at-once")
    one_by_one = _copy(world, tmp_path / "one-by-one")
    extend_world(at_once, 2)
    extend_world(one_by_one, 1)
    extend_world(one_by_one, 1)
    first, second = _tables(at_once), _tables(one_by_one)
    for name in first:
        pd.testing.assert_frame_equal(_canonical(first[name]), _canonical(second[name]))
    assert read_spec(at_once) == read_spec(one_by_one)


def test_a_world_without_its_simulation_state_is_refused(world, tmp_path: Path) -> None:
    old = _copy(world, tmp_path / "sample")
    shutil.rmtree(old / SIMULATION_DIR)
    with pytest.raises(WorldNotExtensible, match="regenerate it with `mallard demo-data`"):
        extend_world(old, 1)
    with pytest.raises(WorldNotExtensible, match="no sample world"):
        extend_world(tmp_path / "nowhere", 1)
