"""Online materialization: incremental, newest value per key, ttl on read, same on both backends."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from catalog.features import REGISTRY, usage_7d
from cli.main import main
from mallard.config import load_settings
from mallard.features.materialize import (
    get_online_features,
    materialize_online,
)
from mallard.features.offline.store import write_view_partitions
from mallard.features.online import open_online_store
from mallard.features.versions import register_version

FEATURES = usage_7d.feature_names


def _day_rows(day: dt.date, customers: list[int], minutes: float) -> pd.DataFrame:
    end = pd.Timestamp(day + dt.timedelta(days=1), tz="UTC")
    n = len(customers)
    return pd.DataFrame(
        {
            "customer_id": customers,
            "event_timestamp": [end] * n,
            "created_timestamp": [end] * n,
            "minutes_7d": [minutes + c for c in customers],
            "sessions_7d": [3] * n,
            "errors_7d": [0] * n,
            "active_days_7d": [2] * n,
            "error_rate_7d": [0.0] * n,
        }
    )


@pytest.fixture
def usage_table(mallard_home: Path):
    settings = load_settings()
    version = register_version(settings, usage_7d)
    write_view_partitions(
        version.table_path,
        {
            dt.date(2026, 6, 1): _day_rows(dt.date(2026, 6, 1), [1, 2, 3], 100.0),
            dt.date(2026, 6, 2): _day_rows(dt.date(2026, 6, 2), [1, 2], 200.0),
        },
        join_keys=["customer_id"],
    )
    return settings, version


def test_incremental_and_newest_wins(usage_table) -> None:
    settings, version = usage_table
    with open_online_store("sqlite", path=str(settings.online_store_path)) as store:
        first = materialize_online(REGISTRY, settings, store, ["usage_7d"])
        assert (first[0].rows_read, first[0].keys_applied) == (3, 3)
        assert materialize_online(REGISTRY, settings, store, ["usage_7d"])[0].rows_read == 0
        write_view_partitions(
            version.table_path,
            {dt.date(2026, 6, 3): _day_rows(dt.date(2026, 6, 3), [2], 300.0)},
            join_keys=["customer_id"],
        )
        third = materialize_online(REGISTRY, settings, store, ["usage_7d"])
        assert (third[0].rows_read, third[0].keys_applied) == (1, 1)
        now = dt.datetime(2026, 6, 4, 12, tzinfo=dt.UTC)
        result = get_online_features(
            store,
            REGISTRY,
            [{"customer_id": c} for c in (1, 2, 3, 4)],
            ["usage_7d:minutes_7d", "usage_7d:sessions_7d"],
            now=now,
        )
    assert result.values["minutes_7d"] == [201.0, 302.0, None, None]
    assert result.status["usage_7d"] == ["present", "present", "stale", "missing"]
    assert isinstance(result.values["sessions_7d"][0], int)


def test_backends_agree(usage_table, redis_url: str) -> None:
    settings, _ = usage_table
    now = dt.datetime(2026, 6, 3, 23, tzinfo=dt.UTC)
    keys = [{"customer_id": c} for c in (3, 1, 9, 2)]
    results = []
    with open_online_store("sqlite", path=str(settings.home / "o.sqlite")) as sqlite_store:
        materialize_online(REGISTRY, settings, sqlite_store, ["usage_7d"])
        results.append(get_online_features(sqlite_store, REGISTRY, keys, ["usage_7d:*"], now=now))
    with open_online_store("redis", url=redis_url, prefix="mat-test") as redis_store:
        materialize_online(REGISTRY, settings, redis_store, ["usage_7d"])
        results.append(get_online_features(redis_store, REGISTRY, keys, ["usage_7d:*"], now=now))
    assert results[0].rows() == results[1].rows()
    assert results[0].status == results[1].status
    assert results[0].values["minutes_7d"] == [103.0, 201.0, None, 202.0]
    assert results[0].status["usage_7d"] == ["present", "present", "missing", "present"]


def test_cli_reads_online_values(usage_table) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["features", "materialize"]).exit_code == 0
    result = runner.invoke(
        main,
        [
            "features",
            "online",
            "--key",
            "customer_id=2",
            "--features",
            "usage_7d:minutes_7d",
            "--at",
            "2026-06-03T12:00",
        ],
    )
    assert result.exit_code == 0, result.output
    assert '"minutes_7d": 202.0' in result.output and '"usage_7d": "present"' in result.output
    bad = runner.invoke(
        main, ["features", "online", "--key", "customer_id=2", "--features", "usage_7d:nope"]
    )
    assert bad.exit_code == 1 and "has no feature 'nope'" in bad.output


@pytest.mark.parametrize("plan", ["auto", "asof", "hash", "merge"])
def test_cli_historical_features_with_each_plan(usage_table, tmp_path: Path, plan: str) -> None:
    entities = tmp_path / "entities.parquet"
    pd.DataFrame(
        {
            "customer_id": [1, 3, 2, 1],
            "event_timestamp": pd.to_datetime(
                ["2026-06-02T12:00", "2026-06-03T00:00", "2026-06-01T00:00", "2026-06-03T00:00"],
                utc=True,
            ),
        }
    ).to_parquet(entities)
    out = tmp_path / "training.parquet"
    result = CliRunner().invoke(
        main,
        [
            "features",
            "historical",
            "--entities",
            str(entities),
            "--features",
            "usage_7d:minutes_7d",
            "--out",
            str(out),
            "--plan",
            plan,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "usage_7d: " in result.output and "4 rows" in result.output
    if plan != "auto":
        assert f"usage_7d: {plan}" in result.output
    frame = pd.read_parquet(out)
    # Rows land at the end of their day: day 1's values are known from 06-02 00:00, day 2's from
    # 06-03 00:00 (inclusive); customer 3 has no day-2 row; 06-01 00:00 precedes everything.
    assert frame["minutes_7d"].tolist()[:2] == [101.0, 103.0]
    assert pd.isna(frame["minutes_7d"].iloc[2])
    assert frame["minutes_7d"].iloc[3] == 201.0


# --------------------------------------------------------------------------------------------
# Rewrites that remove rows, and views not loaded yet (both backends)
# --------------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def online(request, mallard_home: Path):
    settings = load_settings()
    if request.param == "sqlite":
        store = open_online_store("sqlite", path=str(settings.online_store_path))
    else:
        url = request.getfixturevalue("redis_url")
        store = open_online_store("redis", url=url, prefix=f"m{uuid.uuid4().hex[:8]}")
    yield settings, store
    store.close()


def _rows(day: dt.date, minutes: dict[int, float], created_hours_before_end: float = 0.0):
    rows = _day_rows(day, list(minutes), 0.0)
    rows["minutes_7d"] = list(minutes.values())
    rows["created_timestamp"] = rows["event_timestamp"] - pd.Timedelta(
        hours=created_hours_before_end
    )
    return rows


def _offline_latest(settings, customers: list[int], at: dt.datetime) -> list[float | None]:
    """The offline store's point-in-time answer at `at`, with the view's ttl: the truth."""
    from mallard.features.offline import ViewRead, get_historical_features

    version = register_version(settings, usage_7d)
    entity = pd.DataFrame(
        {"customer_id": customers, "event_timestamp": [pd.Timestamp(at)] * len(customers)}
    )
    frame = get_historical_features(
        entity,
        [ViewRead("usage_7d", str(version.table_path), ["customer_id"], FEATURES, usage_7d.ttl)],
    )
    return [None if pd.isna(v) else float(v) for v in frame["minutes_7d"]]


def _online_latest(store, customers: list[int], at: dt.datetime) -> list[float | None]:
    got = get_online_features(
        store, REGISTRY, [{"customer_id": c} for c in customers], ["usage_7d:minutes_7d"], now=at
    )
    return got.values["minutes_7d"]


def test_a_rewrite_that_removes_rows_is_applied_online(online) -> None:
    """The issue's case: customers 1-100's usage removed at the source, 2026-12-03 recomputed.

    1-50 have no usage left that day (their rows go: the 12-02 value is the latest again),
    51-100 are recomputed from fewer events (lower values, an earlier max(created_timestamp)),
    201-210 only ever had a row on 12-03 (all their rows go: they disappear online).
    """
    settings, store = online
    version = register_version(settings, usage_7d)
    days = [dt.date(2026, 12, 1), dt.date(2026, 12, 2), dt.date(2026, 12, 3)]
    customers = list(range(1, 201))
    write_view_partitions(
        version.table_path,
        {
            day: _rows(day, {c: 1000.0 * (i + 1) + c for c in customers})
            for i, day in enumerate(days)
        }
        | {days[2]: _rows(days[2], {c: 3000.0 + c for c in [*customers, *range(201, 211)]})},
        join_keys=["customer_id"],
    )
    materialize_online(REGISTRY, settings, store, ["usage_7d"])
    at = dt.datetime(2026, 12, 4, 12, tzinfo=dt.UTC)
    everyone = list(range(1, 212))
    assert _online_latest(store, everyone, at) == _offline_latest(settings, everyone, at)

    rewritten = {c: 3000.0 + c for c in range(101, 201)} | {c: 1.5 * c for c in range(51, 101)}
    write_view_partitions(
        version.table_path,
        {days[2]: _rows(days[2], rewritten, created_hours_before_end=6)},
        join_keys=["customer_id"],
    )
    stats = materialize_online(REGISTRY, settings, store, ["usage_7d"])
    online_values = _online_latest(store, everyone, at)
    offline_values = _offline_latest(settings, everyone, at)
    differ = [c for c, a, b in zip(everyone, online_values, offline_values, strict=True) if a != b]
    assert differ == [], f"{len(differ)} keys differ online, e.g. customer {differ[0]}"
    assert online_values[4] == 2005.0  # customer 5: back to its 12-02 value
    assert online_values[59] == 90.0  # customer 60: recomputed, created earlier than before
    assert online_values[200:] == [None] * 11  # 201-210 had no other row; 211 never existed
    assert stats[0].keys_deleted == 10


def test_a_corrected_bad_value_is_taken_back(online) -> None:
    """A bad value (-500) on 12-04, then the source corrected: the 12-04 row goes away."""
    settings, store = online
    version = register_version(settings, usage_7d)
    d3, d4 = dt.date(2026, 12, 3), dt.date(2026, 12, 4)
    write_view_partitions(
        version.table_path,
        {d3: _rows(d3, {5: 1223.5, 6: 10.0}), d4: _rows(d4, {5: -500.0, 6: 11.0})},
        join_keys=["customer_id"],
    )
    materialize_online(REGISTRY, settings, store, ["usage_7d"])
    at = dt.datetime(2026, 12, 5, 12, tzinfo=dt.UTC)
    assert _online_latest(store, [5, 6], at) == [-500.0, 11.0]
    write_view_partitions(version.table_path, {d4: _rows(d4, {6: 11.0})}, join_keys=["customer_id"])
    materialize_online(REGISTRY, settings, store, ["usage_7d"])
    got = get_online_features(
        store, REGISTRY, [{"customer_id": 5}, {"customer_id": 6}], ["usage_7d:*"], now=at
    )
    assert got.values["minutes_7d"] == [1223.5, 11.0] == _offline_latest(settings, [5, 6], at)
    assert got.event_timestamps["usage_7d"][0] == dt.datetime(2026, 12, 4, tzinfo=dt.UTC)


def test_a_view_not_loaded_yet_reads_as_missing_view(online) -> None:
    """A full load stopped after its first view: a service read answers with what it has."""
    settings, store = online
    version = register_version(settings, usage_7d)
    day = dt.date(2026, 6, 1)
    write_view_partitions(
        version.table_path, {day: _day_rows(day, [1, 2], 100.0)}, join_keys=["customer_id"]
    )
    materialize_online(REGISTRY, settings, store, ["usage_7d"])
    keys = [{"customer_id": 1}, {"customer_id": 7}]
    got = get_online_features(
        store, REGISTRY, keys, ["churn_features"], now=dt.datetime(2026, 6, 2, tzinfo=dt.UTC)
    )
    assert got.status == {
        "usage_7d": ["present", "missing"],
        "billing_30d": ["missing_view", "missing_view"],
        "support_30d": ["missing_view", "missing_view"],
    }
    assert got.values["minutes_7d"] == [101.0, None]
    assert got.values["monthly_price"] == [None, None]
    assert got.event_timestamps["billing_30d"] == [None, None]


def test_a_view_declaration_changed_back_is_loaded_in_full(online) -> None:
    """v1 loaded, then v2 (a changed declaration) replaces the online view, then v1 again:
    v1's old mark no longer describes the online view, so v1 is loaded in full."""
    import dataclasses

    from mallard.features.specs import FeatureRegistry

    settings, store = online
    changed = dataclasses.replace(usage_7d, sql=usage_7d.sql + "\n-- v2")
    day = dt.date(2026, 6, 1)
    for view, minutes in ((usage_7d, 100.0), (changed, 500.0)):
        table = register_version(settings, view).table_path
        write_view_partitions(
            table, {day: _day_rows(day, [1, 2], minutes)}, join_keys=["customer_id"]
        )
    at = dt.datetime(2026, 6, 2, tzinfo=dt.UTC)
    loads = []
    for view in (usage_7d, changed, usage_7d):
        registry = FeatureRegistry([view])
        loads.append(materialize_online(registry, settings, store, ["usage_7d"])[0])
        got = get_online_features(
            store, registry, [{"customer_id": 1}], ["usage_7d:minutes_7d"], now=at
        )
        assert got.values["minutes_7d"] == [101.0 if view is usage_7d else 501.0]
    assert [s.version for s in loads] == ["usage_7d@v1", "usage_7d@v2", "usage_7d@v1"]
    assert all(s.full for s in loads)
