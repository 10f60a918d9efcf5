"""Property tests: the point-in-time engine against a brute-force reference of DESIGN.md's contract.

Worlds are tiny (a few keys, timestamps a few seconds apart) so that ties on both timestamps,
rows exactly ttl old, duplicate entity rows and nulls are frequent. Every property runs with each
join plan forced in turn.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import shutil
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mallard.features.offline import (
    PLANS,
    ViewRead,
    get_historical_features,
    valid_projection,
    write_view_partition,
)
from mallard.features.offline.engine import default_connection

BASE = dt.datetime(2024, 3, 1, 23, 59, 57, tzinfo=dt.UTC)  # worlds cross midnight
EXAMPLES = 300
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    import os

    os.environ.setdefault("MALLARD_HOME", str(tmp_path_factory.mktemp("home")))
    connection = default_connection(memory_limit="1GB", threads=1)
    yield connection
    connection.close()


# --------------------------------------------------------------------------------------------
# Worlds
# --------------------------------------------------------------------------------------------


@dataclass
class FeatureRow:
    keys: tuple
    event: int | None  # seconds after BASE
    created: int | None
    value: float | None
    label: str | None


@dataclass
class EntityRow:
    keys: tuple
    ts: int | None


def seconds(offset: int | None) -> dt.datetime | None:
    return None if offset is None else BASE + dt.timedelta(seconds=offset)


# Few distinct times and keys, so that ties on (key, event ts), on created ts, and rows exactly
# ttl old are the common case rather than the exception.
event_times = st.sampled_from([0, 1, 2, 3, 4, 5, 2, 3, None])
created_times = st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 3, 4, None])
entity_times = st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 3, 4, 5, None])
ttls = st.sampled_from([None, 0, 1, 2, 3, 5, 86_400])


def key_strategy(columns: int):
    parts = [st.sampled_from([1, 1, 2, 2, 3, None])]
    if columns > 1:
        parts.append(st.sampled_from(["a", "a", "b", None]))
    return st.tuples(*parts)


def feature_rows(columns: int):
    return st.lists(
        st.builds(
            FeatureRow,
            keys=key_strategy(columns),
            event=event_times,
            created=created_times,
            value=st.one_of(st.floats(-5, 5, allow_nan=False), st.none()),
            label=st.sampled_from(["x", "y", "z", None]),
        ),
        min_size=2,
        max_size=18,
    )


def entity_rows(columns: int):
    return st.lists(
        st.builds(EntityRow, keys=key_strategy(columns), ts=entity_times), min_size=1, max_size=10
    )


KEY_NAMES = ("customer_id", "region")


def view_table(rows: list[FeatureRow], columns: int) -> pa.Table:
    data: dict[str, pa.Array] = {}
    data[KEY_NAMES[0]] = pa.array([r.keys[0] for r in rows], pa.int64())
    if columns > 1:
        data[KEY_NAMES[1]] = pa.array([r.keys[1] for r in rows], pa.string())
    ts = pa.timestamp("us", tz="UTC")
    data["event_timestamp"] = pa.array([seconds(r.event) for r in rows], ts)
    data["created_timestamp"] = pa.array([seconds(r.created) for r in rows], ts)
    data["row_id"] = pa.array(list(range(len(rows))), pa.int64())
    data["value"] = pa.array([r.value for r in rows], pa.float64())
    data["label"] = pa.array([r.label for r in rows], pa.string())
    return pa.table(data)


def entity_frame(rows: list[EntityRow], columns: int, tz_style: str) -> pd.DataFrame:
    frame = pd.DataFrame({KEY_NAMES[0]: pd.array([r.keys[0] for r in rows], dtype="Int64")})
    if columns > 1:
        frame[KEY_NAMES[1]] = pd.Series([r.keys[1] for r in rows], dtype=object)
    stamps = pd.to_datetime(pd.Series([seconds(r.ts) for r in rows], dtype=object), utc=True)
    if tz_style == "naive":
        stamps = stamps.dt.tz_convert(None)
    elif tz_style == "paris":
        stamps = stamps.dt.tz_convert("Europe/Paris")
    frame["event_timestamp"] = stamps
    frame["note"] = [f"n{i}" for i in range(len(rows))]
    return frame


# --------------------------------------------------------------------------------------------
# The reference: DESIGN.md's contract, literally
# --------------------------------------------------------------------------------------------


def reference_winner(
    entity: EntityRow, rows: list[FeatureRow], ttl: int | None, exclude_created_after: bool
) -> int | None:
    if entity.ts is None or any(k is None for k in entity.keys):
        return None
    best = None
    best_order = None
    for index, row in enumerate(rows):
        if row.event is None or any(k is None for k in row.keys):
            continue
        if row.keys != entity.keys:
            continue
        if row.event > entity.ts:
            continue
        if ttl is not None and row.event < entity.ts - ttl:
            continue
        if exclude_created_after and row.created is not None and row.created > entity.ts:
            continue
        order = (row.event, -math.inf if row.created is None else row.created, index)
        if best_order is None or order > best_order:
            best, best_order = index, order
    return best


def check_result(result, entity_df, entities, views_rows, ttls_s, exclude, full_names=False):
    assert len(result) == len(entity_df)
    assert list(result.index) == list(entity_df.index)
    n_entity_cols = len(entity_df.columns)
    assert list(result.columns[:n_entity_cols]) == list(entity_df.columns)
    pd.testing.assert_frame_equal(result.iloc[:, :n_entity_cols], entity_df)
    for v, (rows, ttl) in enumerate(zip(views_rows, ttls_s, strict=True)):
        prefix = f"v{v}__" if full_names else ""
        for i, entity in enumerate(entities):
            winner = reference_winner(entity, rows, ttl, exclude)
            got_id = result[f"{prefix}row_id"].iloc[i]
            got_value = result[f"{prefix}value"].iloc[i]
            got_label = result[f"{prefix}label"].iloc[i]
            if winner is None:
                assert got_id is pd.NA, (i, entity, got_id)
                assert math.isnan(got_value)
                assert got_label is None or got_label is pd.NA or got_label != got_label
                continue
            assert got_id == winner, (i, entity, ttl, exclude, winner, got_id)
            expected = rows[winner]
            if expected.value is None:
                assert math.isnan(got_value)
            else:
                assert got_value == expected.value
            assert (got_label if isinstance(got_label, str) else None) == expected.label


# --------------------------------------------------------------------------------------------
# Properties (each forced through every plan)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("plan", PLANS)
@PROPERTY
@given(
    rows=feature_rows(1),
    entities=entity_rows(1),
    ttl=ttls,
    tz_style=st.sampled_from(["naive", "utc", "paris"]),
)
def test_single_view_matches_reference(con, plan, rows, entities, ttl, tz_style):
    entity_df = entity_frame(entities, 1, tz_style)
    view = ViewRead(
        "v0",
        view_table(rows, 1),
        [KEY_NAMES[0]],
        ["row_id", "value", "label"],
        None if ttl is None else dt.timedelta(seconds=ttl),
    )
    result = get_historical_features(entity_df, [view], plan=plan, con=con)
    check_result(result, entity_df, entities, [rows], [ttl], exclude=False)


@pytest.mark.parametrize("plan", PLANS)
@PROPERTY
@given(rows=feature_rows(1), entities=entity_rows(1), ttl=ttls)
def test_created_time_option_matches_reference(con, plan, rows, entities, ttl):
    entity_df = entity_frame(entities, 1, "utc")
    view = ViewRead(
        "v0",
        view_table(rows, 1),
        [KEY_NAMES[0]],
        ["row_id", "value", "label"],
        None if ttl is None else dt.timedelta(seconds=ttl),
    )
    result = get_historical_features(
        entity_df, [view], plan=plan, con=con, exclude_created_after=True
    )
    check_result(result, entity_df, entities, [rows], [ttl], exclude=True)


@pytest.mark.parametrize("plan", PLANS)
@PROPERTY
@given(
    rows_a=feature_rows(2),
    rows_b=feature_rows(2),
    entities=entity_rows(2),
    ttl_a=ttls,
    ttl_b=ttls,
    exclude=st.booleans(),
    as_arrow=st.booleans(),
)
def test_multiple_views_with_compound_keys_match_reference(
    con, plan, rows_a, rows_b, entities, ttl_a, ttl_b, exclude, as_arrow
):
    entity_df = entity_frame(entities, 2, "naive")
    views = [
        ViewRead(
            f"v{i}",
            view_table(rows, 2),
            list(KEY_NAMES),
            ["row_id", "value", "label"],
            None if ttl is None else dt.timedelta(seconds=ttl),
        )
        for i, (rows, ttl) in enumerate([(rows_a, ttl_a), (rows_b, ttl_b)])
    ]
    entity = pa.Table.from_pandas(entity_df, preserve_index=False) if as_arrow else entity_df
    result = get_historical_features(
        entity, views, plan=plan, con=con, exclude_created_after=exclude, full_feature_names=True
    )
    if as_arrow:
        entity_df = entity.to_pandas()
    check_result(
        result, entity_df, entities, [rows_a, rows_b], [ttl_a, ttl_b], exclude, full_names=True
    )


@settings(
    # Every example writes real Delta partitions (about 0.2 s each): a third of the examples
    # the in-memory properties run keeps this test at ~20 s of the suite's budget.
    max_examples=EXAMPLES // 3,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
@given(
    batches=st.lists(feature_rows(1), min_size=1, max_size=2),
    entities=entity_rows(1),
    ttl=ttls,
    exclude=st.booleans(),
)
def test_delta_tables_and_projection_match_reference(
    con, tmp_path, batches, entities, ttl, exclude
):
    """Rows written through the writer (several partitions, one rewritten) read the same,
    from the main table and from the latest projection, with each plan (one world per example
    serves every plan: the writes are the slow part)."""
    table_path = tmp_path / "view"
    shutil.rmtree(table_path, ignore_errors=True)
    shutil.rmtree(str(table_path) + ".latest", ignore_errors=True)
    # Each batch is one partition write; the first is written twice (the rewrite wins).
    stored: list[FeatureRow] = []
    days = [dt.date(2024, 3, 1) + dt.timedelta(days=i) for i in range(len(batches))]
    write_view_partition(
        table_path,
        view_table(batches[-1], 1)
        .drop(["row_id"])
        .append_column("row_id", pa.array([-1] * len(batches[-1]), pa.int64())),
        days[0],
        join_keys=[KEY_NAMES[0]],
    )
    for day, rows in zip(days, batches, strict=True):
        offset = len(stored)
        table = view_table(rows, 1)
        table = table.set_column(
            table.column_names.index("row_id"),
            "row_id",
            pa.array(range(offset, offset + len(rows)), pa.int64()),
        )
        write_view_partition(table_path, table, day, join_keys=[KEY_NAMES[0]])
        stored.extend(rows)
    assert valid_projection(table_path) is not None
    entity_df = entity_frame(entities, 1, "utc")
    view = ViewRead(
        "v0",
        str(table_path),
        [KEY_NAMES[0]],
        ["row_id", "value", "label"],
        None if ttl is None else dt.timedelta(seconds=ttl),
    )
    for plan, use_projection in itertools.product(PLANS, (None, False)):
        result = get_historical_features(
            entity_df,
            [view],
            plan=plan,
            con=con,
            exclude_created_after=exclude,
            use_projection=use_projection,
        )
        check_result(result, entity_df, entities, [stored], [ttl], exclude)
