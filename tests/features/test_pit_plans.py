"""The join plans agree beyond the property tests' tiny worlds, and `auto` picks by the sizes.

The property tests prove each plan against the contract on small worlds; these cover what such
worlds never reach: the merge plan's batched reads and its sequential (no overlap) path, times
far enough apart that its sort key falls back to ranks, and Delta tables written by the writer
(the sorted projection) at a few thousand rows.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from mallard.features.offline import (
    PLANS,
    ViewRead,
    choose_plan,
    engine,
    get_historical_features,
    projection_path,
    write_view_partition,
)

UTC = dt.UTC


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MALLARD_HOME", str(tmp_path / "home"))
    return tmp_path


def _base(start: dt.datetime) -> np.datetime64:
    """`start` as a naive UTC datetime64[us] (spans of centuries overflow pandas' nanoseconds)."""
    return np.datetime64(start.replace(tzinfo=None), "us")


def random_view(rng, rows: int, keys: int, start: dt.datetime, span_s: int, name: str):
    """Rows over `keys` keys and `span_s` seconds, with repeated (key, event time) pairs."""
    key = rng.integers(0, keys, rows)
    region = rng.choice(np.array(["north", "south", "east"]), rows)
    secs = rng.integers(0, span_s, rows)
    dup = rng.choice(rows, rows // 10, replace=False)
    key[dup[: len(dup) // 2]] = key[dup[len(dup) // 2 :]]
    region[dup[: len(dup) // 2]] = region[dup[len(dup) // 2 :]]
    secs[dup[: len(dup) // 2]] = secs[dup[len(dup) // 2 :]]
    event = _base(start) + secs.astype("timedelta64[s]")
    created = event + rng.integers(0, 3_600, rows).astype("timedelta64[s]")
    return pa.table(
        {
            "customer_id": pa.array(key, pa.int64()),
            "region": pa.array(region),
            "event_timestamp": pa.array(event, pa.timestamp("us", tz="UTC")),
            "created_timestamp": pa.array(created, pa.timestamp("us", tz="UTC")),
            f"{name}_x": pa.array(rng.standard_normal(rows)),
            f"{name}_n": pa.array(rng.integers(0, 1_000, rows), pa.int64()),
        }
    )


def random_entity(rng, rows: int, keys: int, start: dt.datetime, span_s: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": rng.integers(0, keys + 5, rows),  # a few keys no view has
            "region": rng.choice(np.array(["north", "south", "east"]), rows),
            "event_timestamp": _base(start)
            + rng.integers(-3_600, span_s + 3_600, rows).astype("timedelta64[s]"),
        }
    )


def results_by_plan(entity, views, **kwargs) -> dict[str, pd.DataFrame]:
    return {
        plan: get_historical_features(entity, views, plan=plan, full_feature_names=True, **kwargs)
        for plan in PLANS
    }


def assert_all_plans_agree(results: dict[str, pd.DataFrame]) -> None:
    reference = results["hash"]
    assert reference.filter(like="__").notna().to_numpy().any(), "the world matched nothing"
    for plan, frame in results.items():
        pd.testing.assert_frame_equal(frame, reference, obj=f"plan {plan}")


@pytest.mark.parametrize("exclude_created_after", [False, True])
def test_batched_sequential_merge_agrees_with_the_other_plans(
    home, monkeypatch, exclude_created_after
):
    """Several read batches per view and no overlap between views: the paths of large views."""
    monkeypatch.setattr(engine, "MERGE_BATCH_ROWS", 97)
    monkeypatch.setattr(engine, "OVERLAP_MAX_ROWS", 0)
    rng = np.random.default_rng(3)
    start = dt.datetime(2024, 1, 1, tzinfo=UTC)
    views = [
        ViewRead(
            name,
            random_view(rng, 3_000, 200, start, 10 * 86_400, name),
            ["customer_id", "region"],
            [f"{name}_x", f"{name}_n"],
            ttl,
        )
        for name, ttl in [("a", dt.timedelta(days=2)), ("b", None), ("c", dt.timedelta(0))]
    ]
    entity = random_entity(rng, 2_000, 200, start, 10 * 86_400)
    assert_all_plans_agree(
        results_by_plan(entity, views, exclude_created_after=exclude_created_after)
    )


def test_times_centuries_apart_use_ranks_and_agree(home):
    """1,000 keys x 500 years of microseconds overflow int64: the merge plan ranks the times."""
    rng = np.random.default_rng(5)
    start = dt.datetime(1750, 1, 1, tzinfo=UTC)
    span = 500 * 365 * 86_400
    assert 1_000 * span * 1_000_000 > 2**62
    view = ViewRead(
        "a",
        random_view(rng, 5_000, 1_000, start, span, "a"),
        ["customer_id"],
        ["a_x", "a_n"],
        dt.timedelta(days=3_650),
    )
    entity = random_entity(rng, 3_000, 1_000, start, span).drop(columns="region")
    assert_all_plans_agree(results_by_plan(entity, [view]))


def test_plans_agree_on_delta_tables_and_their_sorted_projection(home):
    """Written through the writer over several days (projection files sorted by key and time)."""
    rng = np.random.default_rng(11)
    start = dt.datetime(2024, 3, 1, tzinfo=UTC)
    path = home / "view"
    table = random_view(rng, 4_000, 300, start, 5 * 86_400, "a").drop(["region"])
    days = pc.floor_temporal(table.column("event_timestamp"), unit="day")
    for day in sorted(set(days.to_pylist())):
        part = table.filter(pc.equal(days, pa.scalar(day, days.type)))
        write_view_partition(path, part, day.date(), join_keys=["customer_id"])
    view = ViewRead("a", str(path), ["customer_id"], ["a_x", "a_n"], dt.timedelta(days=1))
    entity = random_entity(rng, 3_000, 300, start, 5 * 86_400).drop(columns="region")
    # Each projection file is sorted by (key, event time): what makes the merge plan's sort cheap.
    projection = DeltaTable(projection_path(path))
    assert len(projection.file_uris()) == len(set(days.to_pylist()))
    for uri in projection.file_uris():
        part = pq.read_table(uri, columns=["customer_id", "event_timestamp"]).to_pandas()
        assert part.equals(part.sort_values(["customer_id", "event_timestamp"], kind="stable"))
    for options in ({}, {"use_projection": False}, {"exclude_created_after": True}):
        results = results_by_plan(entity, [view], **options)
        assert_all_plans_agree(results)
        sources = {r["source"] for r in results["merge"].attrs["mallard"]}
        assert sources == ({"projection"} if options == {} else {"delta"})


def test_auto_picks_hash_for_few_rows_per_key_merge_for_many_asof_for_huge_views():
    assert choose_plan(100_000, 10_000_000, 63_000) == "hash"  # 1.6 entity rows per key
    assert choose_plan(1_000_000, 1_000_000, 100_000) == "merge"  # 10 per key
    assert choose_plan(1_000_000, 10_000_000, 100_000) == "merge"
    assert choose_plan(1_000_000, 100_000_000, 100_000) == "asof"  # too big to hold
    assert choose_plan(1_000_000, None, 100_000) == "asof"  # size unknown


def test_auto_records_the_plan_it_chose(home):
    rng = np.random.default_rng(2)
    start = dt.datetime(2024, 1, 1, tzinfo=UTC)
    view = ViewRead(
        "a",
        random_view(rng, 2_000, 50, start, 86_400, "a"),
        ["customer_id"],
        ["a_x"],
        None,
    )
    many = random_entity(rng, 1_000, 50, start, 86_400).drop(columns="region")  # ~18 per key
    few = many.drop_duplicates("customer_id")  # 1 per key
    assert get_historical_features(many, [view]).attrs["mallard"][0]["plan"] == "merge"
    assert get_historical_features(few, [view]).attrs["mallard"][0]["plan"] == "hash"


def test_float_keys_with_nan_match_nothing_in_every_plan(home):
    """The engine reads a NaN entity key as missing (pandas' convention, also for Arrow input),
    so it matches no feature row in any plan, not even a feature row keyed NaN."""
    ts = pa.timestamp("us", tz="UTC")
    day = dt.datetime(2024, 1, 1, tzinfo=UTC)
    view = ViewRead(
        "a",
        pa.table(
            {
                "score_bucket": pa.array([0.5, float("nan"), 1.5, float("nan")]),
                "event_timestamp": pa.array([day] * 3 + [day + dt.timedelta(hours=1)], ts),
                "a_x": pa.array([1.0, 2.0, 3.0, 4.0]),
            }
        ),
        ["score_bucket"],
        ["a_x"],
        None,
    )
    entity = pa.table(
        {
            "score_bucket": pa.array([float("nan"), 0.5, 1.5, float("nan")]),
            "event_timestamp": pa.array([day, day, day, day + dt.timedelta(hours=2)], ts),
        }
    )
    for given in (entity, entity.to_pandas()):
        results = results_by_plan(given, [view])
        assert results["hash"]["a__a_x"].isna().tolist() == [True, False, False, True]
        assert_all_plans_agree(results)
