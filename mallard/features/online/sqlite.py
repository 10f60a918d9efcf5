"""The SQLite online store (the embedded default): one WITHOUT ROWID table per feature view.

Each table has the view's join keys as its primary key, then `__event_ts` and `__created_ts`
(UTC microseconds) and one typed column per feature. Reads are primary-key lookups through
statements SQLite keeps prepared (the connection's statement cache), all the views of one read
in one read transaction (one snapshot). Writes are one transaction per view, so a failed write
leaves the view as it was; keys to delete are deleted in the same transaction. A full load
(`replace_view`) builds the new table beside the old one and swaps it in, in one transaction
(create, fill, drop the old, rename): readers keep the old snapshot until it commits, and a load
that dies midway is rolled back by SQLite. WAL mode lets readers run during a write.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mallard.features.online.base import (
    CREATED_TS,
    EVENT_TS,
    OnlineStore,
    OnlineStoreError,
    ViewNotLoaded,
    ViewSchema,
    WriteStats,
    decoders,
    prepare_batch,
    prepare_keys,
)

META = "_mallard_online_views"
SQL_TYPES = {
    "int": "INTEGER",
    "float": "REAL",
    "bool": "INTEGER",
    "str": "TEXT",
    "timestamp": "INTEGER",
    "date": "INTEGER",
}
EV, CR = "__event_ts", "__created_ts"
MIN_INT = -(2**63)
CHUNK = 500  # keys per IN (...) lookup


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_name(view: str) -> str:
    return f"fv__{view}"


def loading_table_name(view: str) -> str:
    return f"fv__{view}__loading"


class SqliteOnlineStore(OnlineStore):
    """Online store in one SQLite file; safe to share between threads (a connection per thread)."""

    kind = "sqlite"

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, timeout: float = 30.0
    ) -> None:
        if path is None:
            from mallard.config import get_settings

            path = get_settings().online_store_path
        self.path = Path(path)
        # A home on a read-only disk (a restored backup, a shared snapshot) still serves reads.
        self.read_only = self.path.exists() and not os.access(self.path.parent, os.W_OK)
        if not self.read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._timeout = timeout
        self._local = threading.local()
        self._schemas: dict[str, ViewSchema] = {}
        self._select_sql: dict[tuple, str] = {}
        self._schema_version: int | None = None
        con = self._con()
        if not self.read_only:
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {META} (view TEXT PRIMARY KEY, "
                "table_name TEXT NOT NULL, join_keys TEXT NOT NULL, types TEXT NOT NULL, "
                "updated_at REAL NOT NULL)"
            )

    def _check_writable(self) -> None:
        if self.read_only:
            raise OnlineStoreError(
                f"the online store {self.path} is on a read-only disk: it serves reads only; "
                "load it from a writable MALLARD_HOME"
            )

    # -- connections --------------------------------------------------------------------------
    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            if self.read_only:
                # Nobody can write a read-only folder: read the file as it is (no WAL files).
                con = sqlite3.connect(
                    f"{self.path.resolve().as_uri()}?mode=ro&immutable=1",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                    cached_statements=512,
                )
                self._local.con = con
                return con
            con = sqlite3.connect(
                self.path,
                timeout=self._timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=512,
            )
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA temp_store=MEMORY")
            con.execute("PRAGMA cache_size=-65536")
            self._local.con = con
        return con

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    # -- schema -------------------------------------------------------------------------------
    def schema(self, view_name: str) -> ViewSchema | None:
        cached = self._schemas.get(view_name)
        if cached is not None:
            return cached
        return self._refresh_schema(view_name)

    def _refresh_schema(self, view_name: str) -> ViewSchema | None:
        row = (
            self._con()
            .execute(f"SELECT join_keys, types FROM {META} WHERE view = ?", (view_name,))
            .fetchone()
        )
        if row is None:
            self._schemas.pop(view_name, None)
            return None
        schema = ViewSchema(view_name, tuple(json.loads(row[0])), json.loads(row[1]))
        self._schemas[view_name] = schema
        return schema

    def views(self) -> list[str]:
        return [r[0] for r in self._con().execute(f"SELECT view FROM {META} ORDER BY view")]

    def delete_view(self, view_name: str) -> None:
        self._check_writable()
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute(f"DROP TABLE IF EXISTS {_q(table_name(view_name))}")
            con.execute(f"DELETE FROM {META} WHERE view = ?", (view_name,))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self._schemas.pop(view_name, None)
        self._select_sql.clear()

    # -- write --------------------------------------------------------------------------------
    def write(
        self,
        view_name: str,
        join_keys: Sequence[str],
        features: Sequence[str],
        rows: Any,
        *,
        event_timestamp_column: str = EVENT_TS,
        created_timestamp_column: str | None = CREATED_TS,
        delete_keys: Any = None,
    ) -> WriteStats:
        self._check_writable()
        started = time.perf_counter()
        batch = prepare_batch(
            view_name, join_keys, features, rows, event_timestamp_column, created_timestamp_column
        )
        doomed = [] if delete_keys is None else prepare_keys(view_name, join_keys, delete_keys)
        table = _q(table_name(view_name))
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            types = self._ensure_table(con, batch)
            keys = [_q(k) for k in batch.join_keys]
            deleted = 0
            if doomed:
                written = set(batch.key_tuples())
                match = " AND ".join(f"{k} = ?" for k in keys)
                delete = f"DELETE FROM {table} WHERE {match}"
                before = con.total_changes
                con.executemany(delete, (k for k in doomed if k not in written))
                deleted = con.total_changes - before
                con.executemany(delete, (k for k in doomed if k in written))
            cols = [*keys, EV, CR, *(_q(f) for f in batch.features)]
            updates = ", ".join(f"{c} = excluded.{c}" for c in cols[len(keys) :])
            sql = (
                f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates} "
                f"WHERE (excluded.{EV}, coalesce(excluded.{CR}, {MIN_INT})) >= "
                f"({table}.{EV}, coalesce({table}.{CR}, {MIN_INT}))"
            )
            before = con.total_changes
            con.executemany(
                sql, zip(*batch.keys, batch.event, batch.created, *batch.values, strict=True)
            )
            applied = con.total_changes - before
            self._save_meta(con, view_name, batch.join_keys, types)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            self._schemas.pop(view_name, None)
            raise
        self._schemas[view_name] = ViewSchema(view_name, tuple(batch.join_keys), types)
        distinct = len(set(batch.key_tuples()))
        return WriteStats(
            view_name,
            batch.rows,
            batch.rejected,
            distinct,
            min(applied, distinct),
            time.perf_counter() - started,
            deleted,
        )

    def replace_view(
        self,
        view_name: str,
        join_keys: Sequence[str],
        features: Sequence[str],
        rows: Any,
        *,
        event_timestamp_column: str = EVENT_TS,
        created_timestamp_column: str | None = CREATED_TS,
    ) -> WriteStats:
        self._check_writable()
        started = time.perf_counter()
        batch = prepare_batch(
            view_name, join_keys, features, rows, event_timestamp_column, created_timestamp_column
        )
        table, loading = _q(table_name(view_name)), _q(loading_table_name(view_name))
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute(f"DROP TABLE IF EXISTS {loading}")
            con.execute(_create_sql(loading, batch))
            cols = [
                *(_q(k) for k in batch.join_keys),
                EV,
                CR,
                *(_q(f) for f in batch.features),
            ]
            # One row per key, in key order (prepare_batch): plain inserts at the B-tree's end.
            con.executemany(
                f"INSERT INTO {loading} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                zip(*batch.keys, batch.event, batch.created, *batch.values, strict=True),
            )
            con.execute(f"DROP TABLE IF EXISTS {table}")
            con.execute(f"ALTER TABLE {loading} RENAME TO {table}")
            self._save_meta(con, view_name, batch.join_keys, dict(batch.types))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            self._schemas.pop(view_name, None)
            raise
        self._schemas[view_name] = ViewSchema(view_name, tuple(batch.join_keys), dict(batch.types))
        self._select_sql.clear()
        return WriteStats(
            view_name,
            batch.rows,
            batch.rejected,
            batch.size,
            batch.size,
            time.perf_counter() - started,
        )

    def _save_meta(
        self, con: sqlite3.Connection, view: str, join_keys: list[str], types: dict[str, str]
    ) -> None:
        con.execute(
            f"INSERT INTO {META} (view, table_name, join_keys, types, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (view) DO UPDATE SET join_keys = excluded.join_keys, "
            "types = excluded.types, updated_at = excluded.updated_at",
            (view, table_name(view), json.dumps(join_keys), json.dumps(types), time.time()),
        )

    def _ensure_table(self, con: sqlite3.Connection, batch: Any) -> dict[str, str]:
        """Create the view's table, or add new feature columns; refuse changed keys or types."""
        row = con.execute(
            f"SELECT join_keys, types FROM {META} WHERE view = ?", (batch.view,)
        ).fetchone()
        table = _q(table_name(batch.view))
        if row is None:
            con.execute(f"DROP TABLE IF EXISTS {table}")
            con.execute(_create_sql(table, batch))
            return dict(batch.types)
        stored_keys, stored_types = json.loads(row[0]), json.loads(row[1])
        if stored_keys != batch.join_keys:
            raise OnlineStoreError(
                f"view {batch.view}: keyed by {stored_keys} in the online store, not {batch.join_keys}"
            )
        types = dict(stored_types)
        for name, typ in batch.types.items():
            if name in stored_types:
                if stored_types[name] != typ and not (
                    stored_types[name] == "float" and typ == "int"
                ):
                    raise OnlineStoreError(
                        f"view {batch.view}: column {name} holds {stored_types[name]}, not {typ}"
                    )
            else:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {_q(name)} {SQL_TYPES[typ]}")
                types[name] = typ
        self._select_sql.clear()
        return types

    # -- read ---------------------------------------------------------------------------------
    def _begin_read(self) -> None:
        # One snapshot for every view of the read. Another process's full load or new column
        # changes the schema version: the cached schemas (types, columns) are then re-read.
        con = self._con()
        con.execute("BEGIN")
        try:
            version = con.execute("PRAGMA schema_version").fetchone()[0]
        except BaseException:
            con.execute("ROLLBACK")
            raise
        if version != self._schema_version:
            self._schemas.clear()
            self._select_sql.clear()
            self._schema_version = version

    def _end_read(self) -> None:
        con = self._con()
        if con.in_transaction:
            con.execute("COMMIT")

    def _fetch(
        self, schema: ViewSchema, features: Sequence[str], keys: list[tuple]
    ) -> dict[tuple, tuple[int, list[Any]]]:
        try:
            return self._fetch_rows(schema, features, keys)
        except sqlite3.OperationalError as exc:
            if "no such column" not in str(exc) and "no such table" not in str(exc):
                raise
            # Changed since the schema was cached (deleted, or replaced with other columns).
            self._select_sql.clear()
            fresh = self._refresh_schema(schema.view)
            if fresh is None:
                raise ViewNotLoaded(schema.view) from exc
            unknown = [f for f in features if f not in fresh.types or f in fresh.join_keys]
            if unknown or fresh.join_keys != schema.join_keys:
                raise OnlineStoreError(
                    f"view {schema.view}: was reloaded without feature(s) {unknown}"
                    if unknown
                    else f"view {schema.view}: now keyed by {list(fresh.join_keys)}"
                ) from exc
            return self._fetch_rows(fresh, features, keys)

    def _fetch_rows(
        self, schema: ViewSchema, features: Sequence[str], keys: list[tuple]
    ) -> dict[tuple, tuple[int, list[Any]]]:
        con = self._con()
        nk = len(schema.join_keys)
        decode = decoders(schema, features)
        plain = all(d is None for d in decode)
        out: dict[tuple, tuple[int, list[Any]]] = {}
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start : start + CHUNK]
            sql = self._select(schema, tuple(features), len(chunk))
            params = [p for key in chunk for p in key] if nk > 1 or len(chunk) > 1 else chunk[0]
            rows = con.execute(sql, params).fetchall()
            for row in rows:
                values = list(row[nk + 1 :])
                if not plain:
                    values = [
                        v if d is None or v is None else d(v)
                        for d, v in zip(decode, values, strict=True)
                    ]
                out[row[:nk]] = (row[nk], values)
        return out

    def _select(self, schema: ViewSchema, features: tuple[str, ...], n: int) -> str:
        cache_key = (schema.view, features, n)
        sql = self._select_sql.get(cache_key)
        if sql is not None:
            return sql
        keys = [_q(k) for k in schema.join_keys]
        cols = ", ".join([*keys, EV, *(_q(f) for f in features)])
        table = _q(table_name(schema.view))
        if len(keys) == 1:
            where = f"{keys[0]} = ?" if n == 1 else f"{keys[0]} IN ({', '.join('?' * n)})"
        else:
            tuple_sql = "(" + ", ".join("?" * len(keys)) + ")"
            where = f"({', '.join(keys)}) IN (VALUES {', '.join([tuple_sql] * n)})"
        sql = f"SELECT {cols} FROM {table} WHERE {where}"
        if len(self._select_sql) > 4096:
            self._select_sql.clear()
        self._select_sql[cache_key] = sql
        return sql


def _create_sql(table: str, batch: Any) -> str:
    keys = ", ".join(f"{_q(k)} {SQL_TYPES[batch.types[k]]} NOT NULL" for k in batch.join_keys)
    feats = "".join(f", {_q(f)} {SQL_TYPES[batch.types[f]]}" for f in batch.features)
    pk = ", ".join(_q(k) for k in batch.join_keys)
    return (
        f"CREATE TABLE {table} ({keys}, {EV} INTEGER NOT NULL, {CR} INTEGER{feats}, "
        f"PRIMARY KEY ({pk})) WITHOUT ROWID"
    )
