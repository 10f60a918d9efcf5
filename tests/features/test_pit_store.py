"""The offline store's writer (atomic partition overwrite, ingestion order, the latest projection)
and a few worked examples of the point-in-time contract."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from mallard.features.offline import (
    PLANS,
    SEQ,
    OfflineStoreError,
    ViewRead,
    get_historical_features,
    projection_path,
    read_view_table,
    rebuild_projection,
    valid_projection,
    write_view_partition,
)

UTC = dt.UTC
DAY1, DAY2 = dt.date(2024, 5, 1), dt.date(2024, 5, 2)


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def rows(day: dt.date, values: list[float], *, keys=None, created=None) -> pa.Table:
    n = len(values)
    keys = keys or list(range(1, n + 1))
    stamps = [at(day, 10)] * n
    return pa.table(
        {
            "customer_id": pa.array(keys, pa.int64()),
            "event_timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC")),
            "created_timestamp": pa.array(
                created or [at(day, 11)] * n, pa.timestamp("us", tz="UTC")
            ),
            "spend": pa.array(values, pa.float64()),
        }
    )


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MALLARD_HOME", str(tmp_path / "home"))
    return tmp_path


def read(path, entity: pd.DataFrame, **kwargs) -> pd.DataFrame:
    view = ViewRead("spend", str(path), ["customer_id"], ["spend"], dt.timedelta(days=2))
    return get_historical_features(entity, [view], **kwargs)


def entity_at(ts: dt.datetime, keys=(1, 2, 3)) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": list(keys), "event_timestamp": [ts] * len(keys)})


def test_a_write_failing_mid_way_leaves_the_partition_as_it_was(home):
    path = home / "lake" / "spend"
    write_view_partition(path, rows(DAY1, [1.0, 2.0, 3.0]), DAY1, join_keys=["customer_id"])
    write_view_partition(path, rows(DAY2, [4.0, 5.0, 6.0]), DAY2, join_keys=["customer_id"])
    version = DeltaTable(str(path)).version()
    before = read(path, entity_at(at(DAY2, 9)))
    assert before["spend"].tolist() == [1.0, 2.0, 3.0]

    replacement = rows(DAY1, [7.0, 8.0, 9.0])

    def batches():
        yield replacement.to_batches()[0].slice(0, 2)
        raise OSError("source connection lost")

    stream = pa.RecordBatchReader.from_batches(replacement.schema, batches())
    with pytest.raises(Exception, match="source connection lost"):
        write_view_partition(path, stream, DAY1, join_keys=["customer_id"])

    assert DeltaTable(str(path)).version() == version
    assert valid_projection(path) == projection_path(path)
    for plan in PLANS:
        for use_projection in (None, False):
            after = read(path, entity_at(at(DAY2, 9)), plan=plan, use_projection=use_projection)
            assert after["spend"].tolist() == [1.0, 2.0, 3.0]
    assert sorted(read_view_table(path).column("spend").to_pylist()) == [1, 2, 3, 4, 5, 6]

    # The same rewrite succeeding replaces exactly that partition.
    write_view_partition(path, replacement, DAY1, join_keys=["customer_id"])
    assert sorted(read_view_table(path).column("spend").to_pylist()) == [4, 5, 6, 7, 8, 9]
    assert read(path, entity_at(at(DAY2, 9)))["spend"].tolist() == [7.0, 8.0, 9.0]


def test_ingestion_sequence_grows_across_writes_and_rewrites(home):
    path = home / "spend"
    for day, values in [(DAY1, [1.0, 2.0]), (DAY2, [3.0]), (DAY1, [4.0, 5.0, 6.0])]:
        write_view_partition(path, rows(day, values), day, join_keys=["customer_id"])
    table = read_view_table(path).sort_by(SEQ)
    assert table.column("spend").to_pylist() == [3.0, 4.0, 5.0, 6.0]
    seqs = table.column(SEQ).to_pylist()
    assert seqs == sorted(set(seqs))


def test_full_ties_are_won_by_the_row_ingested_last(home):
    path = home / "spend"
    same = [at(DAY1, 11)] * 2
    write_view_partition(
        path, rows(DAY1, [1.0, 2.0], keys=[1, 1], created=same), DAY1, join_keys=["customer_id"]
    )
    # The same (key, event ts, created ts) again, in another partition written later.
    write_view_partition(
        path, rows(DAY1, [3.0], keys=[1], created=[at(DAY1, 11)]), DAY2, join_keys=["customer_id"]
    )
    for plan in PLANS:
        for use_projection in (None, False):
            got = read(
                path, entity_at(at(DAY1, 12), keys=[1]), plan=plan, use_projection=use_projection
            )
            assert got["spend"].tolist() == [3.0]


def test_null_keys_and_event_times_are_rejected_and_counted(home):
    path = home / "spend"
    table = pa.table(
        {
            "customer_id": pa.array([1, None, 3], pa.int64()),
            "event_timestamp": pa.array(
                [at(DAY1, 10), at(DAY1, 10), None], pa.timestamp("us", tz="UTC")
            ),
            "spend": [1.0, 2.0, 3.0],
        }
    )
    result = write_view_partition(path, table, DAY1, join_keys=["customer_id"])
    assert (result.rows_written, result.rows_rejected) == (1, 2)
    stored = read_view_table(path)
    assert stored.column("customer_id").to_pylist() == [1]
    assert stored.column("created_timestamp").null_count == 1  # absent column: nulls


def test_a_changed_definition_is_refused(home):
    path = home / "spend"
    write_view_partition(path, rows(DAY1, [1.0]), DAY1, join_keys=["customer_id"])
    with pytest.raises(OfflineStoreError, match="new view version"):
        write_view_partition(
            path,
            rows(DAY1, [1.0]).append_column("extra", pa.array([1])),
            DAY1,
            join_keys=["customer_id"],
        )


def test_a_stale_projection_is_never_read_and_can_be_rebuilt(home):
    path = home / "spend"
    write_view_partition(path, rows(DAY1, [1.0, 2.0]), DAY1, join_keys=["customer_id"])
    # As if the process died between the main commit and the projection's.
    write_view_partition(
        path, rows(DAY1, [5.0, 6.0]), DAY1, join_keys=["customer_id"], maintain_projection=False
    )
    assert valid_projection(path) is None
    entity = entity_at(at(DAY1, 12), keys=[1, 2])
    assert read(path, entity)["spend"].tolist() == [5.0, 6.0]
    assert read(path, entity).attrs["mallard"][0]["source"] == "delta"
    with pytest.raises(RuntimeError, match="no valid latest projection"):
        read(path, entity, use_projection=True)
    # The next write notices and rebuilds it in full.
    write_view_partition(path, rows(DAY2, [7.0, 8.0]), DAY2, join_keys=["customer_id"])
    assert valid_projection(path) is not None
    assert read(path, entity, use_projection=True)["spend"].tolist() == [5.0, 6.0]
    rebuild_projection(path, ["customer_id"])
    assert read(path, entity_at(at(DAY2, 12), keys=[1, 2]), use_projection=True)[
        "spend"
    ].tolist() == [7.0, 8.0]


@pytest.mark.parametrize("plan", PLANS)
def test_worked_example_of_the_contract(home, plan):
    """ttl boundaries, late corrections, entity order and duplicates, naive times as UTC."""
    path = home / "spend"
    t0 = at(DAY1, 0)
    h = dt.timedelta(hours=1)
    table = pa.table(
        {
            "customer_id": pa.array([1, 1, 1, 2], pa.int64()),
            "event_timestamp": pa.array([t0, t0 + h, t0 + h, t0], pa.timestamp("us", tz="UTC")),
            "created_timestamp": pa.array(
                [t0, t0 + h, t0 + 5 * h, t0], pa.timestamp("us", tz="UTC")
            ),  # a correction of 01:00 made at 05:00
            "spend": [10.0, 11.0, 12.0, 20.0],
        }
    )
    write_view_partition(path, table, DAY1, join_keys=["customer_id"])
    naive = [
        (1, t0 + 3 * h),  # within 2 h of 01:00 -> the correction wins (12.0)
        (1, t0 + 3 * h + dt.timedelta(microseconds=1)),  # just past ttl of 01:00 -> nothing
        (2, t0 + 2 * h),  # exactly ttl after 00:00 -> 20.0
        (1, t0 - h),  # before everything -> nothing
        (1, t0 + 3 * h),  # duplicate entity row kept
        (3, t0 + h),  # key absent from the view
        (None, t0 + h),  # null key
        (1, None),  # null time
    ]
    entity = pd.DataFrame(
        {
            "customer_id": pd.array([k for k, _ in naive], dtype="Int64"),
            "event_timestamp": pd.to_datetime(
                [None if t is None else t.replace(tzinfo=None) for _, t in naive]
            ),
            "tag": list("abcdefgh"),
        },
        index=[10, 11, 12, 13, 14, 15, 16, 17],
    )
    view = ViewRead("spend", str(path), ["customer_id"], ["spend"], dt.timedelta(hours=2))
    got = get_historical_features(entity, [view], plan=plan)
    assert list(got.columns) == ["customer_id", "event_timestamp", "tag", "spend"]
    assert list(got.index) == list(entity.index)
    expected = [12.0, None, 20.0, None, 12.0, None, None, None]
    assert [None if pd.isna(v) else v for v in got["spend"]] == expected
    # Excluding rows created after the entity time: at 03:00 the 05:00 correction is unknown.
    got = get_historical_features(entity, [view], plan=plan, exclude_created_after=True)
    assert [None if pd.isna(v) else v for v in got["spend"]] == [
        11.0,
        None,
        20.0,
        None,
        11.0,
        None,
        None,
        None,
    ]
    # ttl 0: the same timestamp only; no ttl: unbounded look-back.
    zero = ViewRead("spend", str(path), ["customer_id"], ["spend"], dt.timedelta(0))
    unbounded = ViewRead("spend", str(path), ["customer_id"], ["spend"], None)
    exact = pd.DataFrame({"customer_id": [1, 1], "event_timestamp": [t0 + h, t0 + 2 * h]})
    assert get_historical_features(exact, [zero], plan=plan)["spend"].tolist()[0] == 12.0
    assert pd.isna(get_historical_features(exact, [zero], plan=plan)["spend"].tolist()[1])
    late = pd.DataFrame({"customer_id": [1], "event_timestamp": [t0 + 1000 * h]})
    assert get_historical_features(late, [unbounded], plan=plan)["spend"].tolist() == [12.0]


def test_entity_rows_from_sql_and_typed_outputs(home):
    from mallard.features.offline.duck import cursor

    path = home / "typed"
    t0 = at(DAY1, 8)
    table = pa.table(
        {
            "customer_id": pa.array([1, 2], pa.int64()),
            "event_timestamp": pa.array([t0, t0], pa.timestamp("us", tz="UTC")),
            "orders": pa.array([3, None], pa.int64()),
            "vip": pa.array([True, None], pa.bool_()),
            "segment": pa.array(["gold", None]),
            "last_seen": pa.array([t0, None], pa.timestamp("us", tz="UTC")),
        }
    )
    write_view_partition(path, table, DAY1, join_keys=["customer_id"])
    con = cursor()
    view = ViewRead(
        "c", str(path), ["customer_id"], ["orders", "vip", "segment", "last_seen"], None
    )
    got = get_historical_features(
        "SELECT * FROM (VALUES (2, TIMESTAMP '2024-05-01 09:00'), (1, TIMESTAMP '2024-05-01 09:00'), "
        "(4, TIMESTAMP '2024-05-01 09:00')) t(customer_id, event_timestamp)",
        [view],
        con=con,
        full_feature_names=True,
    )
    assert list(got.columns) == [
        "customer_id",
        "event_timestamp",
        "c__orders",
        "c__vip",
        "c__segment",
        "c__last_seen",
    ]
    assert str(got["c__orders"].dtype) == "Int64" and str(got["c__vip"].dtype) == "boolean"
    assert str(got["c__last_seen"].dtype) == "datetime64[ns, UTC]"
    assert got["c__orders"].tolist()[1] == 3 and got["c__orders"].isna().tolist() == [
        True,
        False,
        True,
    ]
    assert got["c__segment"].tolist()[1] == "gold" and got["c__vip"].tolist()[1] is True
    assert got["c__last_seen"].tolist()[1] == pd.Timestamp(t0)
    with pytest.raises(ValueError, match="appear twice"):
        get_historical_features(
            pd.DataFrame({"customer_id": [1], "event_timestamp": [t0]}), [view, view], con=con
        )
    con.close()


def test_backfill_writes_keep_the_projection_exact(home):
    from mallard.features.offline.store import write_view_partitions

    path = home / "spend"
    write_view_partitions(
        path,
        {DAY1: rows(DAY1, [1.0, 2.0]), DAY2: rows(DAY2, [3.0, 4.0])},
        join_keys=["customer_id"],
    )
    # Rewrite DAY1 with rows whose events fall on DAY2 (a partition is not an event day).
    moved = rows(DAY2, [5.0, 6.0], created=[at(DAY2, 12)] * 2)
    write_view_partitions(path, {DAY1: moved}, join_keys=["customer_id"])
    assert valid_projection(path) is not None
    entity = pd.concat([entity_at(at(DAY1, 12), keys=[1, 2]), entity_at(at(DAY2, 13), keys=[1, 2])])

    def values(frame: pd.DataFrame) -> list[float | None]:
        return [None if pd.isna(v) else v for v in frame["spend"]]

    for plan in PLANS:
        main = values(read(path, entity, plan=plan, use_projection=False))
        fast = values(read(path, entity, plan=plan, use_projection=True))
        # DAY1's original rows are gone; on DAY2 the later-created moved rows win the tie.
        assert main == fast == [None, None, 5.0, 6.0]
