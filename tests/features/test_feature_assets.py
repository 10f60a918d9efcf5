"""Feature-view assets on a Dagster instance: checks gate the commit, rejected rows are counted,
each partition of a backfill carries its own metadata, and a commit whose run died before
reporting it is found and recorded by the next run (a real process killed with SIGKILL)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from resources import resources_for_env

ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 6, 28)


@pytest.fixture
def home(mallard_home: Path, sample_world) -> Path:
    from mallard.config import load_settings

    load_settings().ensure_home()
    _, world, _ = sample_world
    shutil.copytree(world, mallard_home / "sample")
    return mallard_home


def _view(name: str) -> dg.AssetsDefinition:
    from assets.features import FEATURE_VIEW_ASSETS

    return next(a for a in FEATURE_VIEW_ASSETS if a.key.to_user_string() == name)


def _table_version(home: Path, view: str) -> int | None:
    from deltalake import DeltaTable

    folder = home / "lake" / "features" / view
    tables = [p for p in folder.glob("*") if (p / "_delta_log").exists()] if folder.exists() else []
    return DeltaTable(str(tables[0])).version() if tables else None


def _add_tickets(home: Path, rows: list[dict]) -> None:
    path = home / "sample" / "support_tickets.parquet"
    frame = pd.read_parquet(path)
    extra = pd.DataFrame(rows).astype({"resolution_hours": float, "customer_id": "Int64"})
    for column in ("event_timestamp", "created_timestamp"):
        extra[column] = pd.to_datetime(extra[column], utc=True)
    pd.concat([frame, extra], ignore_index=True).to_parquet(path, index=False)


def _ticket(customer: int | None, hours: float, at: dt.datetime | None) -> dict:
    return {
        "ticket_id": f"T-test-{customer}-{hours}",
        "customer_id": customer,
        "event_timestamp": at,
        "created_timestamp": at,
        "category": "billing",
        "priority": "normal",
        "resolution_hours": hours,
    }


def _materialize(instance, asset, day: dt.date, raise_on_error: bool = True):
    return dg.materialize(
        [asset],
        instance=instance,
        resources=resources_for_env(),
        partition_key=day.isoformat(),
        raise_on_error=raise_on_error,
    )


def test_a_failing_expectation_blocks_the_commit(home: Path) -> None:
    view = _view("support_30d")
    with dg.instance_for_test() as instance:
        assert _materialize(instance, view, DAY).success
        before = _table_version(home, "support_30d")
        at = dt.datetime.combine(DAY, dt.time(9), tzinfo=dt.UTC)
        _add_tickets(home, [_ticket(43, -500.0, at)])
        failed = _materialize(instance, view, DAY, raise_on_error=False)
        assert not failed.success
        # Nothing was committed, and the partition's last materialization is the good one.
        assert _table_version(home, "support_30d") == before
        failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
        message = failure.step_failure_data.error.message
        assert "mean_resolution_hours_30d >= 0: 1 rows" in message
        assert "'customer_id': 43" in message
        check = next(e for e in failed.get_asset_check_evaluations())
        assert check.check_name == "expectations" and not check.passed
        assert failed.get_asset_materialization_events() == []


def test_rejected_rows_are_counted_and_warned(home: Path) -> None:
    view = _view("support_30d")
    at = dt.datetime.combine(DAY, dt.time(9), tzinfo=dt.UTC)
    _add_tickets(home, [_ticket(None, 2.0, at), _ticket(7, 3.0, None), _ticket(8, 1.0, None)])
    with dg.instance_for_test() as instance:
        result = _materialize(instance, view, DAY + dt.timedelta(days=1))
        assert result.success
        check = next(
            e for e in result.get_asset_check_evaluations() if e.check_name == "keys_and_timestamps"
        )
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        metadata = {k: v.value for k, v in check.metadata.items()}
        assert metadata["null_key"] == 1
        assert metadata["null_source_timestamp"] == {"support_tickets": 2}
        assert metadata["rows_rejected"] == 3


def test_each_partition_of_a_backfill_has_its_own_metadata(home: Path) -> None:
    view = _view("usage_7d")
    days = [DAY - dt.timedelta(days=2), DAY]
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [view],
            instance=instance,
            resources=resources_for_env(),
            tags={
                "dagster/asset_partition_range_start": days[0].isoformat(),
                "dagster/asset_partition_range_end": days[1].isoformat(),
            },
        )
        assert result.success
        events = result.get_asset_materialization_events()
        by_day = {e.partition: e.materialization.metadata for e in events}
        assert set(by_day) == {"2026-06-26", "2026-06-27", "2026-06-28"}
        profiles = {day: meta["profile"].value for day, meta in by_day.items()}
        assert len(set(profiles.values())) == 3  # each day's own profile, not one copied
        counts = {day: meta["dagster/row_count"].value for day, meta in by_day.items()}
        assert all(n > 0 for n in counts.values())


KILL_AFTER_COMMIT = """
import os, signal, sys
import dagster as dg
import mallard.features.offline.store as store
from resources import resources_for_env
from assets.features import FEATURE_VIEW_ASSETS

write = store.write_view_partitions

def write_then_die(*args, **kwargs):
    result = write(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # after the Delta commit, before the step reports

store.write_view_partitions = write_then_die
view = next(a for a in FEATURE_VIEW_ASSETS if a.key.to_user_string() == "usage_7d")
with dg.DagsterInstance.get() as instance:
    dg.materialize([view], instance=instance, resources=resources_for_env(), partition_key=sys.argv[1])
"""


def test_a_commit_whose_run_died_is_recorded_by_the_next_run(home: Path) -> None:
    view = _view("usage_7d")
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_COMMIT, DAY.isoformat()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert _table_version(home, "usage_7d") is not None  # the commit landed
    with dg.DagsterInstance.get() as instance:
        [killed] = instance.get_runs()
        assert instance.fetch_materializations(view.key, limit=10).records == []
        first = _materialize(instance, view, DAY - dt.timedelta(days=1))
        unrecorded = first.get_asset_materialization_events()[0].materialization.metadata
        [commit] = unrecorded["unrecorded_commits"].value
        assert commit["run_id"] == killed.run_id and commit["rows"] > 0
        observations = instance.fetch_observations(view.key, limit=10).records
        assert [o.asset_observation.metadata["committed_by_run"].value for o in observations] == [
            killed.run_id
        ]
        # Recorded once: the run after that reports nothing.
        again = _materialize(instance, view, DAY - dt.timedelta(days=2))
        metadata = again.get_asset_materialization_events()[0].materialization.metadata
        assert "unrecorded_commits" not in metadata
