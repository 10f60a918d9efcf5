"""The online store: SQLite and a real redis-server give the same answers on the same writes."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mallard.features.online import (
    MISSING,
    MISSING_VIEW,
    PRESENT,
    STALE,
    OnlineStoreError,
    ReadRequest,
    open_online_store,
)

UTC = dt.UTC
T0 = dt.datetime(2024, 6, 1, 12, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = open_online_store("sqlite", path=tmp_path / "online.sqlite")
    else:
        url = request.getfixturevalue("redis_url")
        s = open_online_store("redis", url=url, prefix=f"t{uuid.uuid4().hex[:8]}")
    yield s
    s.close()


@pytest.fixture
def both(tmp_path, redis_url):
    sqlite = open_online_store("sqlite", path=tmp_path / "both.sqlite")
    redis = open_online_store("redis", url=redis_url, prefix=f"b{uuid.uuid4().hex[:8]}")
    yield sqlite, redis
    sqlite.close()
    redis.close()


def profile_rows(keys, minutes, spend, *, created=None, segment=None) -> pa.Table:
    n = len(keys)
    return pa.table(
        {
            "customer_id": pa.array(keys, pa.int64()),
            "event_timestamp": pa.array([T0 + dt.timedelta(minutes=m) for m in minutes], TS),
            "created_timestamp": pa.array(
                [
                    None if c is None else T0 + dt.timedelta(minutes=c)
                    for c in (created or [None] * n)
                ],
                TS,
            ),
            "spend": pa.array(spend, pa.float64()),
            "segment": pa.array(segment or ["s"] * n, pa.string()),
        }
    )


def test_upserts_keep_the_latest_row_per_key_whatever_the_arrival_order(store):
    store.write(
        "profile", ["customer_id"], ["spend", "segment"], profile_rows([1, 2], [10, 10], [1.0, 2.0])
    )
    # older rows never replace newer ones
    stats = store.write(
        "profile", ["customer_id"], ["spend", "segment"], profile_rows([1], [5], [99.0])
    )
    assert stats.applied == 0
    # same event time, later created time: a correction wins
    store.write(
        "profile",
        ["customer_id"],
        ["spend", "segment"],
        profile_rows([2], [10], [20.0], created=[30]),
    )
    # same event time, no created time: older than the correction, ignored
    store.write("profile", ["customer_id"], ["spend", "segment"], profile_rows([2], [10], [-1.0]))
    # duplicates inside one batch: the contract's winner, and ties go to the row given last
    store.write(
        "profile",
        ["customer_id"],
        ["spend", "segment"],
        profile_rows(
            [3, 3, 3, 3], [7, 9, 9, 8], [1.0, 2.0, 3.0, 4.0], segment=["a", "b", "c", "d"]
        ),
    )
    got = store.read(
        [{"customer_id": k} for k in (1, 2, 3, 4)], [("profile", ["spend", "segment"])]
    )
    assert got.values["spend"] == [1.0, 20.0, 3.0, None]
    assert got.values["segment"] == ["s", "s", "c", None]
    assert got.status["profile"] == [PRESENT, PRESENT, PRESENT, MISSING]
    assert got.event_timestamps["profile"][0] == T0 + dt.timedelta(minutes=10)


def test_ttl_is_applied_on_read_relative_to_now(store):
    store.write(
        "profile",
        ["customer_id"],
        ["spend"],
        profile_rows([1, 2, 3], [0, 60, 120], [1.0, 2.0, 3.0]),
    )
    now = T0 + dt.timedelta(minutes=180)
    keys = [{"customer_id": k} for k in (1, 2, 3)]
    got = store.read(keys, [ReadRequest("profile", ["spend"], dt.timedelta(hours=2))], now=now)
    # exactly ttl old is still fresh (the window is inclusive, as offline)
    assert got.values["spend"] == [None, 2.0, 3.0]
    assert got.status["profile"] == [STALE, PRESENT, PRESENT]
    assert got.stale("profile") == [True, False, False]
    assert got.event_timestamps["profile"][0] == T0  # the stale value's time is still reported
    assert store.read(keys, [("profile", ["spend"], None)], now=now).values["spend"] == [
        1.0,
        2.0,
        3.0,
    ]
    at_120 = store.read(
        keys, [("profile", ["spend"], dt.timedelta(0))], now=T0 + dt.timedelta(minutes=120)
    )
    assert at_120.status["profile"] == [STALE, STALE, PRESENT]
    # default now is the wall clock: these 2024 rows are long stale with a 1-day ttl
    assert (
        store.read(keys, [("profile", ["spend"], dt.timedelta(days=1))]).status["profile"]
        == [STALE] * 3
    )


def test_values_come_back_typed(store):
    rows = pa.table(
        {
            "customer_id": pa.array([1, 2], pa.int64()),
            "event_timestamp": pa.array([T0, T0], TS),
            "orders": pa.array([3, None], pa.int32()),
            "spend": pa.array([2.5, float("nan")], pa.float64()),
            "vip": pa.array([True, False], pa.bool_()),
            "segment": pa.array(["gold", None], pa.string()),
            "last_seen": pa.array([T0 - dt.timedelta(seconds=1, microseconds=7), None], TS),
            "signup": pa.array([dt.date(2020, 2, 29), None], pa.date32()),
        }
    )
    feats = ["orders", "spend", "vip", "segment", "last_seen", "signup"]
    store.write("c", ["customer_id"], feats, rows)
    got = store.read(pd.DataFrame({"customer_id": [1, 2]}), [("c", feats)]).rows()
    first = got[0]
    assert first == {
        "customer_id": 1,
        "orders": 3,
        "spend": 2.5,
        "vip": True,
        "segment": "gold",
        "last_seen": T0 - dt.timedelta(seconds=1, microseconds=7),
        "signup": dt.date(2020, 2, 29),
    }
    assert [type(first[f]) for f in feats] == [int, float, bool, str, dt.datetime, dt.date]
    assert got[1]["vip"] is False
    assert [got[1][f] for f in ("orders", "spend", "segment", "last_seen", "signup")] == [None] * 5


def test_many_views_compound_keys_and_odd_entity_keys_in_one_call(store):
    store.write("profile", ["customer_id"], ["spend"], profile_rows([1, 2], [0, 0], [1.0, 2.0]))
    region = pa.table(
        {
            "customer_id": pa.array([1, 1], pa.int64()),
            "region": ["eu", "us"],
            "event_timestamp": pa.array([T0, T0], TS),
            "visits": pa.array([5, 6], pa.int64()),
        }
    )
    store.write("region_stats", ["customer_id", "region"], ["visits"], region)
    entity = [
        {"customer_id": 1, "region": "us"},
        {"customer_id": 2, "region": "eu"},
        {"customer_id": None, "region": "eu"},
        {"customer_id": "1", "region": "eu"},  # a numeric string matches an integer key
        {"region": "eu"},
        {"customer_id": 1.0, "region": "eu"},
        {"customer_id": 1.5, "region": "eu"},
    ]
    got = store.read(
        entity,
        [("profile", ["spend"], None), ("region_stats", ["visits"], dt.timedelta(days=1))],
        now=T0,
    )
    assert got.values["spend"] == [1.0, 2.0, None, 1.0, None, 1.0, None]
    assert got.values["visits"] == [6, None, None, 5, None, 5, None]
    assert got.status["region_stats"] == [
        PRESENT,
        MISSING,
        MISSING,
        PRESENT,
        MISSING,
        PRESENT,
        MISSING,
    ]
    named = store.read(entity[:1], [("profile", ["spend"])], full_feature_names=True)
    assert named.to_dict() == {"customer_id": [1], "profile__spend": [1.0]}
    absent = store.read(entity, [("profile", ["spend"]), ("nope", ["x"], None, ["region"])])
    assert absent.status["nope"] == [MISSING_VIEW] * len(entity)
    assert absent.values["x"] == [None] * len(entity)
    assert absent.values["spend"] == [1.0, 2.0, None, 1.0, None, 1.0, None]
    assert absent.missing_views == ["nope"]
    with pytest.raises(OnlineStoreError, match="no feature"):
        store.read(entity, [("profile", ["nope"])])


def test_a_failed_write_leaves_the_view_as_it_was(store, monkeypatch):
    store.write(
        "profile", ["customer_id"], ["spend"], profile_rows([1, 2, 3], [0, 0, 0], [1.0, 2.0, 3.0])
    )
    module = __import__(type(store).__module__, fromlist=["prepare_batch"])
    real = module.prepare_batch

    class Exploding(list):
        def __iter__(self):
            for i, item in enumerate(list.__iter__(self)):
                if i == 2:
                    raise RuntimeError("disk on fire")
                yield item

        def __getitem__(self, i):
            if i == 2:
                raise RuntimeError("disk on fire")
            return list.__getitem__(self, i)

    def exploding(*args, **kwargs):
        batch = real(*args, **kwargs)
        batch.values[0] = Exploding(batch.values[0])
        return batch

    monkeypatch.setattr(module, "prepare_batch", exploding)
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.write(
            "profile",
            ["customer_id"],
            ["spend"],
            profile_rows([1, 2, 3], [5, 5, 5], [7.0, 8.0, 9.0]),
        )
    monkeypatch.setattr(module, "prepare_batch", real)
    got = store.read([{"customer_id": k} for k in (1, 2, 3)], [("profile", ["spend"])])
    assert got.values["spend"] == [1.0, 2.0, 3.0]
    assert got.event_timestamps["profile"] == [T0] * 3


def test_changed_keys_or_types_are_refused(store):
    store.write("profile", ["customer_id"], ["spend"], profile_rows([1], [0], [1.0]))
    with pytest.raises(OnlineStoreError, match="holds float"):
        store.write(
            "profile",
            ["customer_id"],
            ["spend"],
            profile_rows([1], [1], [1.0]).set_column(3, "spend", pa.array(["x"])),
        )
    # a new feature column is added in place
    rows = profile_rows([1], [2], [4.0]).append_column("visits", pa.array([3], pa.int64()))
    store.write("profile", ["customer_id"], ["spend", "visits"], rows)
    assert store.read([{"customer_id": 1}], [("profile", ["spend", "visits"])]).rows() == [
        {"customer_id": 1, "spend": 4.0, "visits": 3}
    ]
    assert "profile" in store.views()
    store.delete_view("profile")
    assert "profile" not in store.views()


# --------------------------------------------------------------------------------------------
# Both backends against a reference model, on random write sequences
# --------------------------------------------------------------------------------------------

minutes = st.integers(0, 6)
batches = st.lists(
    st.lists(
        st.tuples(
            st.sampled_from([1, 2, 3, None]),  # key
            st.one_of(minutes, minutes, st.none()),  # event minute
            st.one_of(minutes, st.none()),  # created minute
            st.one_of(st.integers(-5, 5), st.none()),  # value
        ),
        max_size=8,
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(writes=batches, now_minute=st.integers(0, 9), ttl=st.sampled_from([None, 0, 1, 3]))
def test_sqlite_and_redis_agree_with_the_reference(both, writes, now_minute, ttl):
    view = f"v{uuid.uuid4().hex[:8]}"
    reference: dict[int, tuple] = {}
    arrival = itertools.count()
    for batch in writes:
        rows = pa.table(
            {
                "customer_id": pa.array([r[0] for r in batch], pa.int64()),
                "event_timestamp": pa.array(
                    [None if r[1] is None else T0 + dt.timedelta(minutes=r[1]) for r in batch], TS
                ),
                "created_timestamp": pa.array(
                    [None if r[2] is None else T0 + dt.timedelta(minutes=r[2]) for r in batch], TS
                ),
                "value": pa.array([r[3] for r in batch], pa.int64()),
            }
        )
        for store in both:
            store.write(view, ["customer_id"], ["value"], rows)
        for key, event, created, value in batch:
            if key is None or event is None:
                continue
            order = (event, -1 if created is None else created, next(arrival))
            if key not in reference or order >= reference[key][0]:
                reference[key] = (order, value)
    if not any(r[0] is not None and r[1] is not None for b in writes for r in b):
        return  # nothing valid was ever written: the view does not exist
    now = T0 + dt.timedelta(minutes=now_minute)
    request = [("", ["value"], None if ttl is None else dt.timedelta(minutes=ttl))]
    request = [(view, *request[0][1:])]
    keys = [{"customer_id": k} for k in (3, 1, 2, 4, None, 1)]
    results = [store.read(keys, request, now=now) for store in both]
    assert results[0] == results[1]
    expected = []
    for entity in keys:
        hit = reference.get(entity["customer_id"])
        if hit is None:
            expected.append((None, MISSING))
        elif ttl is not None and hit[0][0] < now_minute - ttl:
            expected.append((None, STALE))
        else:
            expected.append((hit[1], PRESENT))
    assert list(zip(results[0].values["value"], results[0].status[view], strict=True)) == expected


def test_materialization_from_the_offline_table_is_incremental(store, tmp_path, monkeypatch):
    from mallard.features.offline import write_view_partition
    from mallard.features.online.materialize import latest_rows, materialize_view

    monkeypatch.setenv("MALLARD_HOME", str(tmp_path / "home"))
    path = tmp_path / "lake" / "profile"
    day1, day2 = T0.date(), T0.date() + dt.timedelta(days=1)
    write_view_partition(
        path,
        profile_rows([1, 2], [0, 0], [1.0, 2.0], created=[0, 0]),
        day1,
        join_keys=["customer_id"],
    )
    first = materialize_view(store, "profile", path, ["customer_id"], ["spend", "segment"])
    assert (first.rows_read, first.keys_applied) == (2, 2)
    keys = [{"customer_id": 1}, {"customer_id": 2}]
    assert store.read(keys, [("profile", ["spend"])]).values["spend"] == [1.0, 2.0]
    # A late correction of key 2 (same event time, created later), written in another partition.
    write_view_partition(
        path, profile_rows([2], [0], [20.0], created=[90]), day2, join_keys=["customer_id"]
    )
    assert first.full and first.version == 0
    again = materialize_view(
        store,
        "profile",
        path,
        ["customer_id"],
        ["spend", "segment"],
        since_seq=first.watermark,
        since_version=first.version,
    )
    assert (again.rows_read, again.keys_applied, again.full) == (1, 1, False)
    assert again.watermark > first.watermark and again.version > first.version
    assert store.read(keys, [("profile", ["spend"])]).values["spend"] == [1.0, 20.0]
    nothing = materialize_view(
        store,
        "profile",
        path,
        ["customer_id"],
        ["spend", "segment"],
        since_seq=again.watermark,
        since_version=again.version,
    )
    assert nothing.rows_read == 0 and nothing.watermark == again.watermark
    assert nothing.version == again.version
    # A full load (from the latest projection) and the main table agree.
    full, _ = latest_rows(path, ["customer_id"], ["spend", "segment"])
    incremental, _ = latest_rows(path, ["customer_id"], ["spend", "segment"], since_seq=0)
    assert full.sort_by("customer_id").to_pylist() == incremental.sort_by("customer_id").to_pylist()


def test_delete_keys_are_removed_or_replaced_in_the_same_write(store):
    store.write(
        "profile",
        ["customer_id"],
        ["spend"],
        profile_rows([1, 2, 3], [9, 9, 9], [1.0, 2.0, 3.0], created=[9, 9, 9]),
    )
    # Key 2 is deleted and written back with an older row: it takes that row anyway;
    # key 3 is deleted with nothing to write back; key 4 was never stored.
    stats = store.write(
        "profile",
        ["customer_id"],
        ["spend"],
        profile_rows([2], [1], [20.0]),
        delete_keys=pa.table({"customer_id": pa.array([2, 3, 4, None], pa.int64())}),
    )
    assert (stats.deleted, stats.applied) == (1, 1)
    got = store.read([{"customer_id": k} for k in (1, 2, 3)], [("profile", ["spend"])])
    assert got.values["spend"] == [1.0, 20.0, None]
    assert got.status["profile"] == [PRESENT, PRESENT, MISSING]
    assert got.event_timestamps["profile"][1] == T0 + dt.timedelta(minutes=1)


def test_replace_view_swaps_keys_columns_and_types(store, tmp_path, redis_url):
    store.write("profile", ["customer_id"], ["spend"], profile_rows([1, 2], [0, 0], [1.0, 2.0]))
    # A second client with its own cache, as another process would have.
    if store.kind == "sqlite":
        other = open_online_store("sqlite", path=store.path)
    else:
        other = open_online_store("redis", url=redis_url, prefix=store.prefix)
    assert other.read([{"customer_id": 1}], [("profile", ["spend"])]).values["spend"] == [1.0]
    rows = pa.table(
        {
            "customer_id": pa.array([2, 5], pa.int64()),
            "event_timestamp": pa.array([T0, T0], TS),
            "spend": pa.array([T0, T0 + dt.timedelta(days=1)], TS),  # now a timestamp
            "vip": pa.array([True, False]),
        }
    )
    stats = store.replace_view("profile", ["customer_id"], ["spend", "vip"], rows)
    assert stats.applied == 2
    for reader in (store, other):
        got = reader.read([{"customer_id": k} for k in (1, 2, 5)], [("profile", ["spend", "vip"])])
        assert got.status["profile"] == [MISSING, PRESENT, PRESENT]
        assert got.values["spend"] == [None, T0, T0 + dt.timedelta(days=1)]
        assert got.values["vip"] == [None, True, False]
    assert store.views() == ["profile"]
    other.close()


def test_materialization_falls_back_to_a_full_load_when_history_is_gone(store, tmp_path):
    """Vacuumed files (the removed rows' keys unknown) or a rebuilt table: replaced in full."""
    import shutil

    from deltalake import DeltaTable

    from mallard.features.offline import write_view_partition
    from mallard.features.online.materialize import materialize_view

    path = tmp_path / "lake" / "profile"
    feats = ["spend", "segment"]
    day = T0.date()
    write_view_partition(
        path, profile_rows([1, 2], [0, 0], [1.0, 2.0]), day, join_keys=["customer_id"]
    )
    first = materialize_view(store, "profile", path, ["customer_id"], feats)
    write_view_partition(path, profile_rows([1], [0], [5.0]), day, join_keys=["customer_id"])
    DeltaTable(str(path)).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    since = {
        "since_seq": first.watermark,
        "since_version": first.version,
        "since_table": first.table_id,
    }
    second = materialize_view(store, "profile", path, ["customer_id"], feats, **since)
    assert second.full
    keys = [{"customer_id": 1}, {"customer_id": 2}]
    assert store.read(keys, [("profile", ["spend"])]).values["spend"] == [5.0, None]

    # The table deleted and written again, to a version number past the one remembered.
    shutil.rmtree(path)
    shutil.rmtree(f"{path}.latest")
    for spend in (7.0, 8.0, 9.0):
        write_view_partition(path, profile_rows([2], [0], [spend]), day, join_keys=["customer_id"])
    since = {
        "since_seq": second.watermark,
        "since_version": second.version,
        "since_table": second.table_id,
    }
    third = materialize_view(store, "profile", path, ["customer_id"], feats, **since)
    assert third.full and third.table_id != second.table_id
    assert store.read(keys, [("profile", ["spend"])]).values["spend"] == [None, 9.0]


def test_redis_views_from_before_generations_are_read_then_moved(redis_url):
    """The layout without generations (a release before): read and written as it is, and
    moved to a generation, its old keys removed, by the next full load."""
    import json

    import redis

    prefix = f"old{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.set(
        f"{prefix}:__schema__:profile",
        json.dumps(
            {"join_keys": ["customer_id"], "types": {"customer_id": "int", "spend": "float"}}
        ),
    )
    for key, spend in ((1, 1.0), (2, 2.0)):
        client.hset(f"{prefix}:profile:[{key}]", mapping={"_ts": 0, "spend": repr(spend)})
    with open_online_store("redis", url=redis_url, prefix=prefix) as store:
        keys = [{"customer_id": k} for k in (1, 2)]
        assert store.read(keys, [("profile", ["spend"])]).values["spend"] == [1.0, 2.0]
        store.write("profile", ["customer_id"], ["spend"], profile_rows([2], [0], [3.0]))
        assert store.read(keys, [("profile", ["spend"])]).values["spend"] == [1.0, 3.0]
        store.replace_view("profile", ["customer_id"], ["spend"], profile_rows([2], [0], [4.0]))
        got = store.read(keys, [("profile", ["spend"])])
        assert got.values["spend"] == [None, 4.0]
    left = sorted(k for k in client.keys(f"{prefix}:*") if "__" not in k)
    client.close()
    assert left == [f"{prefix}:profile:1:[2]"]
