"""Materialization: from a view's offline Delta table to the online store, incrementally.

After every load the online view holds, per key, the offline store's latest row (latest event
time, then created time, then ingestion), and no key the offline store has no row for.

A load remembers two things: the offline table version it reflects and the highest
`_ingested_seq` it has seen. The next load compares that version's files with the current ones:

- rows ingested since (new partitions, rewrites, late corrections: `_ingested_seq` above the
  watermark) are reduced to the winner per key and upserted; the store keeps a stored value
  unless the new one is at least as new, which is right for every key that lost no row;
- the keys of the files the new versions removed (a rewritten partition's old rows) may have
  lost their winner, so they are recomputed from the table as it is now and replace the stored
  value, and those with no row left are deleted, in the same online transaction.

When the previous version can no longer be read (its log or its removed files were cleaned up
by vacuum), or nothing was loaded before, the load is a full one: the latest row per key of the
whole table replaces the online view atomically (`OnlineStore.replace_view`).

The offline version is read before and after the reads; if a write landed in between, the load
reads again, so what it applies is one version's state.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mallard.features.offline.store import CREATED_TS, EVENT_TS, SEQ, _ident, _sql_str
from mallard.features.online.base import OnlineStore

READ_ATTEMPTS = 3


@dataclass(frozen=True)
class MaterializeResult:
    view: str
    rows_read: int  # winners per key among the new rows (and the recomputed keys)
    keys_applied: int
    watermark: int | None  # the highest _ingested_seq loaded (pass it as `since_seq` next time)
    read_seconds: float
    write_seconds: float
    version: int | None = None  # the offline version the online view reflects (`since_version`)
    table_id: str | None = None  # the offline table's Delta id (`since_table`): a rebuilt table
    # restarts its versions, so a version number alone does not say which table it was
    keys_deleted: int = 0  # keys removed online: the offline store has no row for them any more
    full: bool = False  # a full load (the view replaced) rather than an incremental one


def latest_rows(
    table_path: str | os.PathLike[str],
    join_keys: Sequence[str],
    features: Sequence[str],
    *,
    since_seq: int | None = None,
    until: dt.datetime | None = None,
    con: Any = None,
) -> tuple[Any, int | None]:
    """Per key, the winning row among those ingested after `since_seq` (event time ≤ `until`)."""
    from mallard.features.offline.duck import cursor
    from mallard.features.offline.store import _projection_columns, valid_projection

    owned = con is None
    con = cursor() if con is None else con
    try:
        projection = valid_projection(table_path) if since_seq is None else None
        if projection is not None and {CREATED_TS, SEQ} <= set(
            _projection_columns(projection, None)
        ):
            # A full load: the projection holds one winner per (keys, event time), so the
            # latest row per key is a plain arg-max on the event time, in one scan.
            return _latest_from_projection(con, projection, join_keys, features, until)
        where, params = _filters(join_keys, since_seq, until)
        src = f"(SELECT * FROM delta_scan({_sql_str(str(table_path))}) WHERE {where})"
        sql = _winners_sql(src, join_keys, features, with_max_seq=True)
        table = con.execute(sql, params * 2).fetch_arrow_table()
    finally:
        if owned:
            con.close()
    watermark = None
    if table.num_rows:
        watermark = int(table.column("__max_seq")[0].as_py())
    return table.drop(["__max_seq"]), watermark


def _filters(
    join_keys: Sequence[str], since_seq: int | None, until: dt.datetime | None
) -> tuple[str, list[Any]]:
    where = [f"{_ident(k)} IS NOT NULL" for k in join_keys] + [f"{EVENT_TS} IS NOT NULL"]
    params: list[Any] = []
    if since_seq is not None:
        where.append(f"{SEQ} > ?")
        params.append(since_seq)
    if until is not None:
        where.append(f"{EVENT_TS} <= ?")
        params.append(until)
    return " AND ".join(where), params


def _winners_sql(
    src: str, join_keys: Sequence[str], features: Sequence[str], *, with_max_seq: bool = False
) -> str:
    """The contract's winner per key among the rows of `src` (a parenthesised query, read twice).

    Latest event time per key first (a plain aggregate), then the tie-break among the few rows
    at that time: much cheaper than an arg-max over a composite ordering.
    """
    keys = ", ".join(_ident(k) for k in join_keys)
    on = " AND ".join(f"f.{_ident(k)} = m.{_ident(k)}" for k in join_keys)
    f_keys = ", ".join(f"f.{_ident(k)}" for k in join_keys)
    feats = "".join(f", f.{_ident(f)}" for f in features)
    tail = ", (SELECT max(__seq) FROM m) AS __max_seq" if with_max_seq else ""
    return f"""
        WITH m AS (
            SELECT {keys}, max({EVENT_TS}) AS __ev, max({SEQ}) AS __seq FROM {src} GROUP BY {keys}),
        w AS (
            SELECT {f_keys}, f.{EVENT_TS}, f.{CREATED_TS}{feats}
            FROM {src} f JOIN m ON {on} AND f.{EVENT_TS} = m.__ev
            QUALIFY row_number() OVER (
                PARTITION BY {f_keys} ORDER BY f.{CREATED_TS} DESC NULLS LAST, f.{SEQ} DESC) = 1)
        SELECT *{tail} FROM w
    """


def _latest_from_projection(
    con: Any, projection: str, join_keys: Sequence[str], features: Sequence[str], until: Any
) -> tuple[Any, int | None]:
    keys = ", ".join(_ident(k) for k in join_keys)
    packed = ", ".join(f"{_ident(c)} := {_ident(c)}" for c in [EVENT_TS, CREATED_TS, *features])
    where = "" if until is None else f"WHERE {EVENT_TS} <= ?"
    sql = f"""
        SELECT {keys}, w.*, max(__seq) OVER () AS __max_seq FROM (
            SELECT {keys}, arg_max(struct_pack({packed}), {EVENT_TS}) AS w, max({SEQ}) AS __seq
            FROM delta_scan({_sql_str(projection)}) {where} GROUP BY {keys})
    """
    table = con.execute(sql, [] if until is None else [until]).fetch_arrow_table()
    watermark = int(table.column("__max_seq")[0].as_py()) if table.num_rows else None
    return table.drop(["__max_seq"]), watermark


# --------------------------------------------------------------------------------------------
# What changed between two versions
# --------------------------------------------------------------------------------------------


@dataclass
class _Changes:
    removed_files: list[str]
    max_seq: int | None  # the highest _ingested_seq of the current version (file statistics)


def _changes(
    table_path: str, since_version: int | None, since_table: str | None
) -> tuple[int, str, _Changes | None]:
    """The current version and table id, and the files removed since `since_version`
    (None: load in full)."""
    from deltalake import DeltaTable

    current = DeltaTable(table_path)
    version, table_id = current.version(), str(current.metadata().id)
    if since_version is None or since_version > version:
        return version, table_id, None
    if since_table is not None and since_table != table_id:
        return version, table_id, None  # the table was rebuilt since
    features = current.protocol().writer_features or []
    if "deletionVectors" in features:  # rows can vanish without a file changing
        return version, table_id, None
    if since_version == version:
        return version, table_id, _Changes([], _max_seq(current))
    try:
        before = set(DeltaTable(table_path, version=since_version).file_uris())
    except Exception:  # the log of that version is gone
        return version, table_id, None
    removed = sorted(before - set(current.file_uris()))
    if any("://" not in f and not os.path.exists(f) for f in removed):
        return version, table_id, None  # vacuumed: the removed rows' keys are unknown
    return version, table_id, _Changes(removed, _max_seq(current))


def _max_seq(table: Any) -> int | None:
    """The highest _ingested_seq of a version, from its files' statistics (None if unknown)."""
    import pyarrow as pa

    actions = pa.table(table.get_add_actions(flatten=True))
    column = f"max.{SEQ}"
    if actions.num_rows == 0 or column not in actions.column_names:
        return None
    values = [v for v in actions.column(column).to_pylist() if v is not None]
    return max(values) if len(values) == actions.num_rows else None


def _watermark(con: Any, table_path: str, stats: int | None, since_seq: int | None) -> int | None:
    if stats is None:
        row = con.execute(f"SELECT max({SEQ}) FROM delta_scan({_sql_str(table_path)})").fetchone()
        stats = None if row is None or row[0] is None else int(row[0])
    if since_seq is not None and (stats is None or stats < since_seq):
        return since_seq
    return stats


def _incremental_rows(
    con: Any,
    table_path: str,
    join_keys: Sequence[str],
    features: Sequence[str],
    changes: _Changes,
    since_seq: int | None,
    until: dt.datetime | None,
) -> tuple[Any, Any]:
    """(rows to upsert, keys to delete first) for an incremental load."""
    from mallard.features.offline.store import _projection_columns, valid_projection

    keys = ", ".join(_ident(k) for k in join_keys)
    path = _sql_str(table_path)
    where, params = _filters(join_keys, since_seq, until)
    removed = None
    if changes.removed_files:
        not_null = " AND ".join(f"{_ident(k)} IS NOT NULL" for k in join_keys)
        files = ", ".join(_sql_str(f) for f in changes.removed_files)
        removed = con.execute(
            f"SELECT DISTINCT {keys} FROM read_parquet([{files}]) WHERE {not_null}"
        ).fetch_arrow_table()
    if removed is None or removed.num_rows == 0:
        src = f"(SELECT * FROM delta_scan({path}) WHERE {where})"
        sql = _winners_sql(src, join_keys, features)
        return con.execute(sql, params * 2).fetch_arrow_table(), None
    name = f"__removed_{uuid.uuid4().hex}"
    con.register(name, removed)
    try:
        # Keys that lost no row: their new rows, upserted as they are.
        new = f"(SELECT * FROM delta_scan({path}) ANTI JOIN {name} USING ({keys}) WHERE {where})"
        # Keys that lost rows: their winner among every row there is now.
        projection = valid_projection(table_path)
        if projection is None or not {CREATED_TS, SEQ} <= set(
            _projection_columns(projection, None)
        ):
            projection = table_path
        all_where, all_params = _filters(join_keys, None, until)
        again = (
            f"(SELECT * FROM delta_scan({_sql_str(projection)}) "
            f"SEMI JOIN {name} USING ({keys}) WHERE {all_where})"
        )
        sql = (
            f"SELECT * FROM ({_winners_sql(new, join_keys, features)}) UNION ALL "
            f"SELECT * FROM ({_winners_sql(again, join_keys, features)})"
        )
        rows = con.execute(sql, params * 2 + all_params * 2).fetch_arrow_table()
    finally:
        con.unregister(name)
    return rows, removed


def materialize_view(
    store: OnlineStore,
    view_name: str,
    table_path: str | os.PathLike[str],
    join_keys: Sequence[str],
    features: Sequence[str],
    *,
    since_seq: int | None = None,
    since_version: int | None = None,
    since_table: str | None = None,
    until: dt.datetime | None = None,
) -> MaterializeResult:
    """Bring the online view up to the offline table's current version.

    Pass the previous result's `watermark`, `version` and `table_id` as `since_seq`,
    `since_version` and `since_table` for an incremental load. Without `since_version`, when
    that version cannot be compared with any more (its log or removed files vacuumed, the table
    rebuilt), or when the store does not hold the view, the view is replaced in full.
    """
    from mallard.features.offline.duck import cursor
    from mallard.features.offline.store import _write_lock

    path = str(table_path)
    # Asked afresh, not from a cache: another process may have deleted the online view.
    if store._refresh_schema(view_name) is None:
        since_version = None
    started = time.perf_counter()
    con = cursor()
    try:
        for attempt in range(READ_ATTEMPTS + 1):
            # The last attempt holds the writers' lock, so a table written non-stop still loads.
            last = attempt == READ_ATTEMPTS
            with _write_lock(path) if last else contextlib.nullcontext():
                version, table_id, changes = _changes(path, since_version, since_table)
                if changes is not None and version == since_version:
                    read_seconds = time.perf_counter() - started
                    return MaterializeResult(
                        view_name, 0, 0, since_seq, read_seconds, 0.0, version, table_id
                    )
                if changes is None:
                    rows, _ = latest_rows(path, join_keys, features, until=until, con=con)
                    removed = None
                    watermark = _watermark(con, path, _max_seq_of(path), None)
                else:
                    rows, removed = _incremental_rows(
                        con, path, join_keys, features, changes, since_seq, until
                    )
                    watermark = _watermark(con, path, changes.max_seq, since_seq)
                if last or _current_version(path) == version:
                    break
    finally:
        con.close()
    read_seconds = time.perf_counter() - started
    if changes is None:
        stats = store.replace_view(view_name, join_keys, features, rows)
        return MaterializeResult(
            view_name,
            rows.num_rows,
            stats.applied,
            watermark,
            read_seconds,
            stats.seconds,
            version,
            table_id,
            full=True,
        )
    if rows.num_rows == 0 and removed is None:
        return MaterializeResult(view_name, 0, 0, watermark, read_seconds, 0.0, version, table_id)
    stats = store.write(view_name, join_keys, features, rows, delete_keys=removed)
    return MaterializeResult(
        view_name,
        rows.num_rows,
        stats.applied,
        watermark,
        read_seconds,
        stats.seconds,
        version,
        table_id,
        stats.deleted,
    )


def _max_seq_of(path: str) -> int | None:
    from deltalake import DeltaTable

    return _max_seq(DeltaTable(path))


def _current_version(path: str) -> int:
    from deltalake import DeltaTable

    return DeltaTable(path).version()
