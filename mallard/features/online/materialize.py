"""Materialization: from a view's offline Delta table to the online store, incrementally.

The watermark is the offline table's `_ingested_seq`: a run loads the rows ingested after the
previous run's watermark (new partitions, rewritten partitions, late corrections alike), reduces
them to the contract's winner per key (latest event time, then created time, then ingestion), and
upserts them; the store keeps a stored value unless the new one is at least as new.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mallard.features.offline.store import CREATED_TS, EVENT_TS, SEQ, _ident, _sql_str
from mallard.features.online.base import OnlineStore


@dataclass(frozen=True)
class MaterializeResult:
    view: str
    rows_read: int  # winners per key among the new rows
    keys_applied: int
    watermark: int | None  # the highest _ingested_seq loaded (pass it as `since_seq` next time)
    read_seconds: float
    write_seconds: float


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
        keys = ", ".join(_ident(k) for k in join_keys)
        on = " AND ".join(f"f.{_ident(k)} = m.{_ident(k)}" for k in join_keys)
        feats = "".join(f", f.{_ident(f)}" for f in features)
        where = [f"{_ident(k)} IS NOT NULL" for k in join_keys] + [f"{EVENT_TS} IS NOT NULL"]
        params: list[Any] = []
        if since_seq is not None:
            where.append(f"{SEQ} > ?")
            params.append(since_seq)
        if until is not None:
            where.append(f"{EVENT_TS} <= ?")
            params.append(until)
        src = f"(SELECT * FROM delta_scan({_sql_str(str(table_path))}) WHERE {' AND '.join(where)})"
        # Latest event time per key first (a plain aggregate), then the tie-break among the few
        # rows at that time: much cheaper than an arg-max over a composite ordering.
        sql = f"""
            WITH m AS (
                SELECT {keys}, max({EVENT_TS}) AS __ev, max({SEQ}) AS __seq FROM {src} GROUP BY {keys}),
            w AS (
                SELECT {", ".join(f"f.{_ident(k)}" for k in join_keys)}, f.{EVENT_TS}, f.{CREATED_TS}{feats}
                FROM {src} f JOIN m ON {on} AND f.{EVENT_TS} = m.__ev
                QUALIFY row_number() OVER (
                    PARTITION BY {", ".join(f"f.{_ident(k)}" for k in join_keys)}
                    ORDER BY f.{CREATED_TS} DESC NULLS LAST, f.{SEQ} DESC) = 1)
            SELECT *, (SELECT max(__seq) FROM m) AS __max_seq FROM w
        """
        params = params + params
        table = con.execute(sql, params).fetch_arrow_table()
    finally:
        if owned:
            con.close()
    watermark = None
    if table.num_rows:
        watermark = int(table.column("__max_seq")[0].as_py())
    return table.drop(["__max_seq"]), watermark


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


def materialize_view(
    store: OnlineStore,
    view_name: str,
    table_path: str | os.PathLike[str],
    join_keys: Sequence[str],
    features: Sequence[str],
    *,
    since_seq: int | None = None,
    until: dt.datetime | None = None,
) -> MaterializeResult:
    """Load what changed in a view's offline table since `since_seq` into the online store."""
    started = time.perf_counter()
    rows, watermark = latest_rows(table_path, join_keys, features, since_seq=since_seq, until=until)
    read_seconds = time.perf_counter() - started
    if rows.num_rows == 0:
        return MaterializeResult(view_name, 0, 0, since_seq, read_seconds, 0.0)
    stats = store.write(view_name, join_keys, features, rows)
    return MaterializeResult(
        view_name, rows.num_rows, stats.applied, watermark, read_seconds, stats.seconds
    )
