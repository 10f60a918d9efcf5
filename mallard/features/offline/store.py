"""The offline store: one Delta table per feature-view version, every row version kept.

Layout of the table at `table_path` (owned by this module, declared once in `table_schema`):

    <join keys> | event_timestamp | created_timestamp | <features> | _ingested_seq | _partition_date

`_partition_date` (date32) is the Delta partition column; `_ingested_seq` (int64) grows strictly
in ingestion order across writes and is the last tie-break of the point-in-time contract.

Beside it, at `projection_path(table_path)`, lives the *latest projection*: the same rows
deduplicated on (join keys, event_timestamp), keeping only the contract's winner (latest
created_timestamp, then latest `_ingested_seq`), partitioned by the event date (`_event_date`),
with the winner's created_timestamp and `_ingested_seq` kept (online materialization needs them). Reads that do not
exclude late-created rows use it to skip the tie-break; its last commit records the version of
the main table it reflects, and a read falls back to the main table when the two disagree
(after a crash between the two commits), so every read meets the contract.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

EVENT_TS = "event_timestamp"
CREATED_TS = "created_timestamp"
SEQ = "_ingested_seq"
PARTITION = "_partition_date"
EVENT_DATE = "_event_date"
SYSTEM_COLUMNS = (EVENT_TS, CREATED_TS, SEQ, PARTITION)

# _ingested_seq = (write number << SEQ_SHIFT) | row number within the write: strictly increasing
# across writes without reading the table, and room for 2**40 rows per write.
SEQ_SHIFT = 40
RUN_ID_KEY = "mallard.run_id"
WRITE_NO_KEY = "mallard.write_no"
SOURCE_VERSION_KEY = "mallard.source_version"
PROJECTION_SUFFIX = ".latest"


class OfflineStoreError(RuntimeError):
    """A write to the offline store was refused; the message names the table and the reason."""


@dataclass(frozen=True)
class WriteResult:
    """What one `write_view_partition` call committed."""

    table_path: str
    partition_date: dt.date
    rows_written: int
    rows_rejected: int
    version: int
    write_no: int
    projection_version: int | None
    seconds: float


def projection_path(table_path: str | os.PathLike[str]) -> str:
    """Where the deduplicated latest projection of a view table lives (a sibling Delta table)."""
    return str(table_path).rstrip("/") + PROJECTION_SUFFIX


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


@contextlib.contextmanager
def _write_lock(table_path: str) -> Iterator[None]:
    """Serialise writers of one table on this machine, so ingestion order is well defined."""
    if not _is_local(table_path):
        yield
        return
    lock_file = Path(_local(table_path).rstrip("/") + ".lock")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def table_exists(table_path: str | os.PathLike[str], storage_options: dict | None = None) -> bool:
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(str(table_path), storage_options=storage_options)


def _to_reader(data: Any) -> pa.RecordBatchReader:
    import pyarrow as pa

    if isinstance(data, pa.RecordBatchReader):
        return data
    if isinstance(data, pa.Table):
        return data.to_reader()
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data]).to_reader()
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pass
    else:
        if isinstance(data, pd.DataFrame):
            return pa.Table.from_pandas(data, preserve_index=False).to_reader()
    if hasattr(data, "__arrow_c_stream__"):
        return pa.RecordBatchReader.from_stream(data)
    raise TypeError(
        f"cannot write {type(data).__name__}: pass a pyarrow Table/RecordBatchReader or a pandas DataFrame"
    )


def utc_timestamp_array(array: pa.Array | pa.ChunkedArray, name: str) -> pa.Array:
    """Cast a column to timestamp[us, UTC]; naive timestamps are read as UTC."""
    import pyarrow as pa
    import pyarrow.compute as pc

    target = pa.timestamp("us", tz="UTC")
    typ = array.type
    if typ == target:
        return array
    if pa.types.is_timestamp(typ):
        if typ.tz is None:
            array = array.cast(pa.timestamp("us"), safe=False)
            return array.cast(target)
        return array.cast(target, safe=False)
    if pa.types.is_date(typ):
        return array.cast(pa.timestamp("us")).cast(target)
    if pa.types.is_null(typ):
        return array.cast(target)
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        import pandas as pd

        values = pd.to_datetime(array.to_pandas(), utc=True, format="ISO8601")
        return pa.array(values, type=pa.timestamp("ns", tz="UTC")).cast(target, safe=False)
    if pc is not None:
        raise TypeError(f"column {name!r} has type {typ}; expected a timestamp")
    raise TypeError(name)  # pragma: no cover


def table_schema(data_schema: pa.Schema, join_keys: Sequence[str]) -> tuple[pa.Schema, list[str]]:
    """The offline table schema for incoming data, and the feature column names."""
    import pyarrow as pa

    missing = [k for k in [*join_keys, EVENT_TS] if k not in data_schema.names]
    if missing:
        raise OfflineStoreError(f"rows lack required column(s) {missing}")
    reserved = [n for n in data_schema.names if n in (SEQ, PARTITION, EVENT_DATE)]
    if reserved:
        raise OfflineStoreError(f"rows carry reserved column(s) {reserved}")
    ts = pa.timestamp("us", tz="UTC")
    features = [
        n for n in data_schema.names if n not in join_keys and n not in (EVENT_TS, CREATED_TS)
    ]
    fields = [data_schema.field(k) for k in join_keys]
    fields += [pa.field(EVENT_TS, ts), pa.field(CREATED_TS, ts)]
    for name in features:
        field = data_schema.field(name)
        if pa.types.is_timestamp(field.type):
            field = pa.field(name, ts)
        elif pa.types.is_large_string(field.type):
            field = pa.field(name, pa.string())
        fields.append(field)
    fields += [pa.field(SEQ, pa.int64()), pa.field(PARTITION, pa.date32())]
    return pa.schema(fields), features


def _conform_batch(
    batch: pa.RecordBatch,
    schema: pa.Schema,
    join_keys: Sequence[str],
    partition_date: dt.date,
    first_seq: int,
) -> tuple[pa.RecordBatch, int]:
    """Cast one incoming batch to the table schema, drop rows with a null key or event ts."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = batch.num_rows
    columns: dict[str, pa.Array] = {}
    for field in schema:
        if field.name == SEQ or field.name == PARTITION:
            continue
        if field.name in batch.schema.names:
            col = batch.column(field.name)
        else:  # created_timestamp may be absent
            col = pa.nulls(n, field.type)
        if field.type == pa.timestamp("us", tz="UTC"):
            col = utc_timestamp_array(col, field.name)
        elif col.type != field.type:
            col = col.cast(field.type)
        columns[field.name] = col
    valid = pc.is_valid(columns[EVENT_TS])
    for key in join_keys:
        valid = pc.and_(valid, pc.is_valid(columns[key]))
    kept = pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns))
    rejected = n - pc.sum(valid.cast(pa.int64())).as_py() if n else 0
    if rejected:
        kept = kept.filter(valid)
    m = kept.num_rows
    seq = pa.array(np.arange(first_seq, first_seq + m, dtype=np.int64))
    part = pa.array([partition_date] * m, type=pa.date32()) if m else pa.array([], pa.date32())
    out = pa.RecordBatch.from_arrays(
        [*kept.columns, seq, part], names=[*kept.schema.names, SEQ, PARTITION]
    )
    return out.cast(schema) if out.schema != schema else out, rejected


def _last_write_no(table: Any, table_path: str) -> int:
    """The write number of the latest Mallard write (0 for an empty table)."""
    for commit in table.history(50):
        value = commit.get(WRITE_NO_KEY)
        if value is None:
            value = (commit.get("operationParameters") or {}).get(WRITE_NO_KEY)
        if value is not None:
            return int(value)
    # Someone else wrote lately (OPTIMIZE, another tool): derive it from the data.
    con = _duck()
    try:
        row = con.execute(f"SELECT max({SEQ}) FROM delta_scan({_sql_str(table_path)})").fetchone()
    finally:
        con.close()
    return 0 if row is None or row[0] is None else int(row[0]) >> SEQ_SHIFT


def _sql_str(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _duck() -> duckdb.DuckDBPyConnection:
    from mallard.features.offline.duck import cursor

    return cursor()


def write_view_partition(
    table_path: str | os.PathLike[str],
    data: Any,
    partition_date: dt.date | str,
    *,
    join_keys: Sequence[str],
    maintain_projection: bool = True,
    storage_options: dict[str, str] | None = None,
    commit_metadata: Mapping[str, str] | None = None,
) -> WriteResult:
    """Replace one daily partition of a view's offline table atomically.

    `data` is a pyarrow Table / RecordBatchReader or a pandas DataFrame with the join keys,
    `event_timestamp`, optionally `created_timestamp`, and the feature columns. Rows with a null
    key or event timestamp are rejected (counted in the result, never written). Naive timestamps
    are read as UTC. The partition is replaced in one Delta commit: if anything fails before that
    commit (bad data, an exception from a streaming source, a crash), the previous version of the
    table stays as it was. Then the latest projection is updated for the event dates the write
    touched (a second commit; until it lands, reads fall back to the main table).
    """
    if isinstance(partition_date, str):
        partition_date = dt.date.fromisoformat(partition_date)
    if isinstance(partition_date, dt.datetime):
        partition_date = partition_date.date()
    return write_view_partitions(
        table_path,
        {partition_date: data},
        join_keys=join_keys,
        maintain_projection=maintain_projection,
        storage_options=storage_options,
        commit_metadata=commit_metadata,
    )


def write_view_partitions(
    table_path: str | os.PathLike[str],
    parts: Mapping[dt.date, Any],
    *,
    join_keys: Sequence[str],
    maintain_projection: bool = True,
    storage_options: dict[str, str] | None = None,
    commit_metadata: Mapping[str, str] | None = None,
) -> WriteResult:
    """Replace several daily partitions in one Delta commit (a backfill), then the projection.

    `parts` maps each partition date to its rows (as for `write_view_partition`). Exactly those
    partitions are replaced; a failure before the commit leaves the table as it was.
    `commit_metadata` is stored with the commit (e.g. `{RUN_ID_KEY: <the writing run>}`), so a
    commit can be matched with the run that made it (`commits_by_run`).
    """
    import pyarrow as pa
    from deltalake import CommitProperties, DeltaTable, write_deltalake

    started = time.perf_counter()
    path = str(table_path)
    join_keys = list(join_keys)
    if not parts:
        raise OfflineStoreError(f"{path}: no partitions to write")
    if not join_keys:
        raise OfflineStoreError(f"{path}: a view needs at least one join key")
    readers = {day: _to_reader(data) for day, data in sorted(parts.items())}
    schema, _features = table_schema(next(iter(readers.values())).schema, join_keys)
    for day, reader in readers.items():
        names = table_schema(reader.schema, join_keys)[0].names
        if sorted(names) != sorted(schema.names):
            raise OfflineStoreError(
                f"{path}: partition {day} has columns {names}, the others {schema.names}; "
                "every partition of a backfill must have the same columns"
            )

    with _write_lock(path):
        exists = DeltaTable.is_deltatable(path, storage_options=storage_options)
        table = DeltaTable(path, storage_options=storage_options) if exists else None
        if table is not None:
            existing = pa.schema(table.schema().to_arrow())
            if sorted(existing.names) != sorted(schema.names):
                raise OfflineStoreError(
                    f"{path}: columns {schema.names} differ from the table's {existing.names}; "
                    "a changed view definition is a new view version (a new table)"
                )
            schema = existing
        write_no = (_last_write_no(table, path) if table is not None else 0) + 1
        previous_version = table.version() if table is not None else -1
        old_days: set[dt.date] | None = set()
        if table is not None:
            try:
                old_days = set().union(*(_partition_event_days(table, day) for day in readers))
            except _UnknownDays:
                old_days = None
        counters: dict[str, Any] = {"rejected": 0, "written": 0, "dates": set()}

        def batches() -> Iterator[pa.RecordBatch]:
            next_seq = write_no << SEQ_SHIFT
            for day, reader in readers.items():
                for batch in reader:
                    out, rejected = _conform_batch(batch, schema, join_keys, day, next_seq)
                    counters["rejected"] += rejected
                    counters["written"] += out.num_rows
                    next_seq += out.num_rows
                    if out.num_rows:
                        counters["dates"].update(_event_days(out))
                        yield out

        commit = CommitProperties(
            custom_metadata={**(commit_metadata or {}), WRITE_NO_KEY: str(write_no)}
        )
        stream = pa.RecordBatchReader.from_batches(schema, batches())
        days = ", ".join(f"'{day.isoformat()}'" for day in readers)
        if table is None:
            write_deltalake(
                path,
                stream,
                partition_by=[PARTITION],
                mode="append",
                commit_properties=commit,
                storage_options=storage_options,
            )
        else:
            write_deltalake(
                table,
                stream,
                partition_by=[PARTITION],
                mode="overwrite",
                predicate=f"{PARTITION} IN ({days})",
                commit_properties=commit,
                storage_options=storage_options,
            )
        version = DeltaTable(path, storage_options=storage_options).version()
        projection_version = None
        if maintain_projection:
            # Only the event days these partitions held or hold now (a full rebuild if unknown).
            projection_version = _update_projection(
                path,
                join_keys,
                version,
                previous_version if old_days is not None else -1,
                counters["dates"] | (old_days or set()),
                storage_options,
            )
    return WriteResult(
        table_path=path,
        partition_date=max(readers),
        rows_written=counters["written"],
        rows_rejected=counters["rejected"],
        version=version,
        write_no=write_no,
        projection_version=projection_version,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class Commit:
    """One commit of a table that recorded the run that wrote it."""

    version: int
    run_id: str
    timestamp: dt.datetime
    rows: int


def commits_by_run(
    table_path: str | os.PathLike[str], storage_options: dict[str, str] | None = None
) -> list[Commit]:
    """The table's data commits that carry a `RUN_ID_KEY`, oldest first (empty if no table)."""
    from deltalake import DeltaTable

    path = str(table_path)
    if not DeltaTable.is_deltatable(path, storage_options=storage_options):
        return []
    commits = []
    for entry in DeltaTable(path, storage_options=storage_options).history():
        run_id = entry.get(RUN_ID_KEY)
        if run_id:
            commits.append(
                Commit(
                    int(entry["version"]),
                    str(run_id),
                    dt.datetime.fromtimestamp(entry["timestamp"] / 1000, tz=dt.UTC),
                    int((entry.get("operationMetrics") or {}).get("num_added_rows", 0)),
                )
            )
    return sorted(commits, key=lambda c: c.version)


def _event_days(batch: pa.RecordBatch) -> list[dt.date]:
    import pyarrow as pa
    import pyarrow.compute as pc

    column = batch.column(EVENT_TS).cast(pa.timestamp("us")).cast(pa.date32())
    return pc.unique(column).to_pylist()


def _partition_event_days(table: Any, partition_date: dt.date) -> set[dt.date]:
    """Every event date the rows of one partition may have, from the Delta file statistics."""
    import pyarrow as pa

    actions = pa.table(table.get_add_actions(flatten=True))
    days: set[dt.date] = set()
    part_col = f"partition.{PARTITION}"
    lo_col, hi_col = f"min.{EVENT_TS}", f"max.{EVENT_TS}"
    if part_col not in actions.column_names:
        return days
    for part, lo, hi in zip(
        actions.column(part_col).to_pylist(),
        actions.column(lo_col).to_pylist()
        if lo_col in actions.column_names
        else [None] * actions.num_rows,
        actions.column(hi_col).to_pylist()
        if hi_col in actions.column_names
        else [None] * actions.num_rows,
        strict=True,
    ):
        if isinstance(part, str):
            part = dt.date.fromisoformat(part)
        if part != partition_date:
            continue
        if lo is None or hi is None:
            raise _UnknownDays
        day, last = _as_day(lo), _as_day(hi)
        while day <= last:
            days.add(day)
            day += dt.timedelta(days=1)
    return days


class _UnknownDays(Exception):
    """A file of the partition has no statistics: the projection is rebuilt in full."""


def _as_day(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(dt.UTC).date()


def _projection_columns(proj: str, storage_options: dict | None) -> list[str]:
    from deltalake import DeltaTable

    return [f.name for f in DeltaTable(proj, storage_options=storage_options).schema().fields]


def _projection_source_version(proj: str, storage_options: dict | None) -> int | None:
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(proj, storage_options=storage_options):
        return None
    table = DeltaTable(proj, storage_options=storage_options)
    for commit in table.history(1):
        value = commit.get(SOURCE_VERSION_KEY)
        if value is not None:
            return int(value)
    return None


def valid_projection(
    table_path: str | os.PathLike[str], storage_options: dict | None = None
) -> str | None:
    """The projection's path if it reflects the main table's current version, else None."""
    from deltalake import DeltaTable

    path = str(table_path)
    proj = projection_path(path)
    source = _projection_source_version(proj, storage_options)
    if source is None:
        return None
    current = DeltaTable(path, storage_options=storage_options).version()
    return proj if source == current else None


def _projection_select(
    path: str, join_keys: Sequence[str], features: Sequence[str], where: str
) -> str:
    keys = ", ".join(_ident(k) for k in join_keys)
    feats = ", ".join(_ident(f) for f in features)
    sep = ", " if features else ""
    return f"""
        SELECT {keys}, {EVENT_TS}, {CREATED_TS}{sep}{feats}, {SEQ},
               CAST({EVENT_TS} AS DATE) AS {EVENT_DATE}
        FROM delta_scan({_sql_str(path)})
        WHERE {where}
        QUALIFY row_number() OVER (
            PARTITION BY {keys}, {EVENT_TS}
            ORDER BY {CREATED_TS} DESC NULLS LAST, {SEQ} DESC) = 1
        ORDER BY {keys}, {EVENT_TS}
    """


def _day_ranges(days: Iterable[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Sorted days merged into half-open [start, end) ranges."""
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in sorted(set(days)):
        if ranges and ranges[-1][1] == day:
            ranges[-1] = (ranges[-1][0], day + dt.timedelta(days=1))
        else:
            ranges.append((day, day + dt.timedelta(days=1)))
    return ranges


def _update_projection(
    path: str,
    join_keys: Sequence[str],
    version: int,
    previous_version: int,
    days: set[dt.date],
    storage_options: dict | None,
) -> int:
    """Recompute the latest projection for the event dates touched by the write at `version`."""
    from deltalake import CommitProperties, DeltaTable, write_deltalake

    proj = projection_path(path)
    main = DeltaTable(path, storage_options=storage_options)
    schema_names = [f.name for f in main.schema().fields]
    features = [n for n in schema_names if n not in join_keys and n not in SYSTEM_COLUMNS]
    commit = CommitProperties(custom_metadata={SOURCE_VERSION_KEY: str(version)})
    con = _duck()
    try:
        incremental = (
            previous_version >= 0
            and _projection_source_version(proj, storage_options) == previous_version
            and _projection_columns(proj, storage_options)
            == [*join_keys, EVENT_TS, CREATED_TS, *features, SEQ, EVENT_DATE]
        )
        if not incremental:
            # A full rebuild: every event day of the table.
            days = {
                row[0]
                for row in con.execute(
                    f"SELECT DISTINCT CAST({EVENT_TS} AS DATE) FROM delta_scan({_sql_str(path)}) "
                    f"WHERE {EVENT_TS} IS NOT NULL"
                ).fetchall()
            }
        ranges = _day_ranges(days)
        stream = _projection_stream(con, path, join_keys, features, ranges)
        if incremental:
            predicate = (
                " OR ".join(
                    f"({EVENT_DATE} >= '{a.isoformat()}' AND {EVENT_DATE} < '{b.isoformat()}')"
                    for a, b in ranges
                )
                or f"{EVENT_DATE} IS NULL"
            )
            write_deltalake(
                proj,
                stream,
                partition_by=[EVENT_DATE],
                mode="overwrite",
                predicate=predicate,
                commit_properties=commit,
                storage_options=storage_options,
            )
        else:
            write_deltalake(
                proj,
                stream,
                partition_by=[EVENT_DATE],
                mode="overwrite",
                commit_properties=commit,
                storage_options=storage_options,
                schema_mode="overwrite",
            )
    finally:
        con.close()
    return DeltaTable(proj, storage_options=storage_options).version()


def _projection_stream(
    con: Any,
    path: str,
    join_keys: Sequence[str],
    features: Sequence[str],
    ranges: list[tuple[dt.date, dt.date]],
) -> pa.RecordBatchReader:
    """The projection's rows for the given event days, one day at a time (bounded memory)."""
    import pyarrow as pa

    days = [a + dt.timedelta(days=i) for a, b in ranges for i in range((b - a).days)]
    first = _projection_select(path, join_keys, features, "FALSE")
    schema = _utc_schema(con.execute(first).fetch_record_batch().schema)

    def batches() -> Iterator[pa.RecordBatch]:
        for day in days:
            where = (
                f"{EVENT_TS} >= TIMESTAMPTZ '{day.isoformat()} 00:00:00+00' AND "
                f"{EVENT_TS} < TIMESTAMPTZ '{(day + dt.timedelta(days=1)).isoformat()} 00:00:00+00'"
            )
            reader = con.execute(
                _projection_select(path, join_keys, features, where)
            ).fetch_record_batch(100_000)
            for batch in reader:
                yield batch.cast(schema) if batch.schema != schema else batch

    return pa.RecordBatchReader.from_batches(schema, batches())


def _utc_schema(schema: pa.Schema) -> pa.Schema:
    import pyarrow as pa

    fields = []
    for field in schema:
        if pa.types.is_timestamp(field.type):
            field = pa.field(field.name, pa.timestamp("us", tz="UTC"))
        elif pa.types.is_large_string(field.type):
            field = pa.field(field.name, pa.string())
        fields.append(field)
    return pa.schema(fields)


def rebuild_projection(
    table_path: str | os.PathLike[str],
    join_keys: Sequence[str],
    storage_options: dict[str, str] | None = None,
) -> int:
    """Recompute the whole latest projection from the main table (after a crash, or an upgrade)."""
    from deltalake import DeltaTable

    path = str(table_path)
    with _write_lock(path):
        version = DeltaTable(path, storage_options=storage_options).version()
        return _update_projection(path, join_keys, version, -1, set(), storage_options)


def read_view_table(
    table_path: str | os.PathLike[str], storage_options: dict | None = None
) -> pa.Table:
    """Every stored row version of a view (for inspection and tests)."""
    import pyarrow as pa
    from deltalake import DeltaTable

    return pa.table(DeltaTable(str(table_path), storage_options=storage_options).to_pyarrow_table())
