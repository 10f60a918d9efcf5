"""Property: after every load, the online store holds the offline store's latest row per key.

Random sequences of partition writes (new partitions, rewrites with rows changed, added or
removed, empty rewrites), incremental loads and full loads, on SQLite and a real redis-server,
against a brute-force reference of the contract: per key, the latest event_timestamp, then the
latest created_timestamp (null oldest), then the row ingested last; a key with no row left is
missing. Tiny worlds (three keys, a few seconds across midnight) make ties the common case.
"""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
import uuid

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mallard.features.offline import write_view_partition
from mallard.features.online import MISSING, PRESENT, open_online_store
from mallard.features.online.materialize import materialize_view

BASE = dt.datetime(2024, 3, 1, 23, 59, 57, tzinfo=dt.UTC)  # rows cross midnight
DAYS = [dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)]
KEYS = [1, 2, 3]
TS = pa.timestamp("us", tz="UTC")

row = st.tuples(
    st.sampled_from(KEYS),
    st.integers(0, 5),  # event, seconds after BASE
    st.one_of(st.none(), st.integers(0, 5)),  # created
    st.integers(-3, 3),  # value
)
write = st.tuples(st.just("write"), st.sampled_from([0, 0, 1, 1, 2]), st.lists(row, max_size=4))
operations = st.lists(
    st.one_of(write, write, st.just(("load",)), st.just(("load",)), st.just(("full",))),
    min_size=2,
    max_size=9,
)
LOAD = ("load",)
# The cases, always run: a rewrite removes a key; a rewrite recomputes a row with an
# earlier created_timestamp; an empty rewrite; the removed row was the latest, so a row of
# another partition is the winner again.
CASES = [
    [("write", 0, [(1, 0, None, 0), (2, 0, None, 0)]), LOAD, ("write", 0, [(2, 0, None, 1)])],
    [("write", 0, [(1, 2, 4, 5)]), LOAD, ("write", 0, [(1, 2, 1, -1)])],
    [("write", 0, [(1, 2, 4, 5)]), ("write", 1, [(2, 1, 1, 1)]), LOAD, ("write", 0, [])],
    [("write", 1, [(1, 1, None, 1)]), ("write", 0, [(1, 4, None, -500)]), LOAD]
    + [("write", 0, [(3, 0, 0, 0)]), LOAD, ("write", 1, [(1, 1, None, 2)]), ("full",)],
]


def table(rows: list[tuple]) -> pa.Table:
    return pa.table(
        {
            "customer_id": pa.array([r[0] for r in rows], pa.int64()),
            "event_timestamp": pa.array([BASE + dt.timedelta(seconds=r[1]) for r in rows], TS),
            "created_timestamp": pa.array(
                [None if r[2] is None else BASE + dt.timedelta(seconds=r[2]) for r in rows], TS
            ),
            "value": pa.array([r[3] for r in rows], pa.int64()),
        }
    )


def reference(partitions: dict[int, list[tuple]]) -> dict[int, tuple[int, int]]:
    """Per key, (event second, value) of the contract's winner among the rows stored now."""
    best: dict[int, tuple] = {}
    for stored in partitions.values():
        for key, event, created, value, seq in stored:
            order = (event, -1 if created is None else created, seq)
            if key not in best or order > best[key][0]:
                best[key] = (order, value)
    return {key: (order[0], value) for key, (order, value) in best.items()}


@pytest.fixture
def stores(tmp_path, redis_url):
    sqlite = open_online_store("sqlite", path=tmp_path / "online.sqlite")
    redis = open_online_store("redis", url=redis_url, prefix=f"p{uuid.uuid4().hex[:8]}")
    yield sqlite, redis
    sqlite.close()
    redis.close()


def check_sequence(stores, tmp_path, ops) -> None:
    path = tmp_path / f"view-{uuid.uuid4().hex[:8]}"
    view = f"v{uuid.uuid4().hex[:8]}"
    partitions: dict[int, list[tuple]] = {}
    seq = itertools.count()
    since: list[dict] = [{}, {}]  # per store: the previous load's watermark and version
    for op in [*ops, ("load",)]:
        if op[0] == "write":
            _, day, rows = op
            write_view_partition(path, table(rows), DAYS[day], join_keys=["customer_id"])
            partitions[day] = [(*r, next(seq)) for r in rows]
            continue
        if not partitions:
            continue  # no offline table yet
        for i, store in enumerate(stores):
            result = materialize_view(
                store,
                view,
                path,
                ["customer_id"],
                ["value"],
                **(since[i] if op[0] == "load" else {}),
            )
            since[i] = {
                "since_seq": result.watermark,
                "since_version": result.version,
                "since_table": result.table_id,
            }
        want = reference(partitions)
        keys = [*KEYS, 4]
        for store in stores:
            got = store.read([{"customer_id": k} for k in keys], [(view, ["value"])])
            expected = [
                (PRESENT, want[k][1], BASE + dt.timedelta(seconds=want[k][0]))
                if k in want
                else (MISSING, None, None)
                for k in keys
            ]
            seen = list(
                zip(got.status[view], got.values["value"], got.event_timestamps[view], strict=True)
            )
            assert seen == expected, f"{store.kind} after {op[0]}"
    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(f"{path}.latest", ignore_errors=True)


PROPERTY = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    "database": None,
}


@settings(max_examples=12, **PROPERTY)
@given(ops=operations)
@example(ops=CASES[0])
@example(ops=CASES[1])
@example(ops=CASES[2])
@example(ops=CASES[3])
def test_online_equals_offline_after_every_load(stores, tmp_path, ops) -> None:
    check_sequence(stores, tmp_path, ops)


@pytest.mark.slow
@settings(max_examples=400, **PROPERTY)
@given(ops=operations)
def test_online_equals_offline_after_every_load_many_examples(stores, tmp_path, ops) -> None:
    check_sequence(stores, tmp_path, ops)
