"""A backfill writes many partitions in one commit and replaces exactly those partitions."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from mallard.features.offline.store import (
    OfflineStoreError,
    read_view_table,
    write_view_partition,
    write_view_partitions,
)

DAYS = [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(4)]


def _rows(day: dt.date, value: float) -> pd.DataFrame:
    end = pd.Timestamp(day + dt.timedelta(days=1), tz="UTC")
    return pd.DataFrame(
        {
            "customer_id": [1, 2],
            "event_timestamp": [end, end],
            "created_timestamp": [end, end],
            "x": [value, value + 1],
        }
    )


def test_backfill_is_one_commit_and_replaces_only_its_days(tmp_path: Path) -> None:
    path = tmp_path / "view"
    write_view_partitions(path, {day: _rows(day, 1.0) for day in DAYS}, join_keys=["customer_id"])
    assert DeltaTable(str(path)).version() == 0
    write_view_partitions(
        path,
        {DAYS[1]: _rows(DAYS[1], 10.0), DAYS[2]: _rows(DAYS[2], 20.0)},
        join_keys=["customer_id"],
    )
    stored = read_view_table(path).to_pandas()
    by_day = stored.groupby("_partition_date")["x"].min().to_dict()
    assert by_day == {DAYS[0]: 1.0, DAYS[1]: 10.0, DAYS[2]: 20.0, DAYS[3]: 1.0}
    assert len(stored) == 8
    # Ingestion order still grows across backfill and single-day writes.
    write_view_partition(path, _rows(DAYS[3], 30.0), DAYS[3], join_keys=["customer_id"])
    stored = read_view_table(path).to_pandas().sort_values("_ingested_seq")
    assert stored["x"].iloc[-1] == 31.0 and stored["_ingested_seq"].is_unique


def test_failed_backfill_leaves_the_table_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "view"
    write_view_partitions(path, {day: _rows(day, 1.0) for day in DAYS}, join_keys=["customer_id"])
    bad = _rows(DAYS[1], 5.0).rename(columns={"x": "y"})
    with pytest.raises(OfflineStoreError):
        write_view_partitions(
            path, {DAYS[0]: _rows(DAYS[0], 2.0), DAYS[1]: bad}, join_keys=["customer_id"]
        )
    assert DeltaTable(str(path)).version() == 0
    assert set(read_view_table(path).to_pandas()["x"]) == {1.0, 2.0}
