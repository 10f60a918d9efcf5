"""The online store's interface, shared by its backends.

An online store holds, per feature view, the latest value of each feature for each entity key.
`write` upserts a batch of rows, keeping per key the row with the latest event_timestamp (then
the latest created_timestamp, null being oldest; on a full tie the row written last), and first
removes the keys given in `delete_keys` (a removed key that is also in the batch takes the
batch's row whatever the stored one was), atomically per view. `replace_view` swaps a whole view
for a new one atomically: a reader sees the old view or the new one, never a mix. `read`
returns typed values for many keys from many views in one call, and applies each view's ttl
relative to `now`: a value whose event_timestamp is older than `now - ttl` comes back null with
the status "stale". A value newer than `now` is returned as present (the store keeps only the
latest value, so there is nothing older to fall back to). A view the store does not hold (never
loaded, or deleted) reads as nulls with the status "missing_view", for every entity row.
"""

from __future__ import annotations

import datetime as dt
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

EVENT_TS = "event_timestamp"
CREATED_TS = "created_timestamp"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
EPOCH_DATE = dt.date(1970, 1, 1)
PRESENT, MISSING, STALE = "present", "missing", "stale"
MISSING_VIEW = "missing_view"  # the view is not in the store (not loaded yet): an outage, not data
LOGICAL_TYPES = ("int", "float", "bool", "str", "timestamp", "date")


class OnlineStoreError(RuntimeError):
    """An online write or read was refused; the message names the view and the reason."""


class ViewNotLoaded(Exception):
    """Raised by a backend's `_fetch` when the view disappeared since its schema was read."""


class ReadRequest(NamedTuple):
    """Features to read from one view; `ttl` None means values never go stale."""

    view: str
    features: Sequence[str]
    ttl: dt.timedelta | None = None
    join_keys: Sequence[str] | None = None  # default: the keys the view was written with


@dataclass(frozen=True)
class WriteStats:
    view: str
    rows: int  # rows received
    rejected: int  # null key or event timestamp
    keys: int  # distinct keys in the batch
    applied: int  # keys whose stored value changed (newer rows only)
    seconds: float
    deleted: int = 0  # stored keys removed (by `delete_keys`) and not written back


@dataclass
class OnlineResult:
    """Values for each entity row, in the order the keys were given.

    `values[name]` holds one typed value per entity row (None when missing or stale);
    `status[view]` one of "present", "missing", "stale", "missing_view" per entity row
    ("missing_view": the store does not hold the view at all, e.g. not loaded yet);
    `event_timestamps[view]` the stored value's event time (None when missing).
    """

    keys: dict[str, list[Any]]
    values: dict[str, list[Any]]
    status: dict[str, list[str]]
    event_timestamps: dict[str, list[dt.datetime | None]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.status.values()), []))

    def stale(self, view: str) -> list[bool]:
        return [s == STALE for s in self.status[view]]

    @property
    def missing_views(self) -> list[str]:
        """The requested views the store does not hold (their values are all None)."""
        return [v for v, s in self.status.items() if s and s[0] == MISSING_VIEW]

    def to_dict(self) -> dict[str, list[Any]]:
        """Key columns then feature columns, like Feast's `to_dict()`."""
        return {**self.keys, **self.values}

    def rows(self) -> list[dict[str, Any]]:
        names = list(self.keys) + list(self.values)
        columns = [*self.keys.values(), *self.values.values()]
        return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]

    def to_pandas(self) -> Any:
        import pandas as pd

        frame = pd.DataFrame({**self.keys, **self.values})
        for view, status in self.status.items():
            frame[f"{view}__status"] = status
        return frame


# --------------------------------------------------------------------------------------------
# Types
# --------------------------------------------------------------------------------------------


def logical_type(arrow_type: Any, name: str) -> str:
    import pyarrow as pa

    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "float"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "str"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_null(arrow_type):
        return "float"
    raise OnlineStoreError(
        f"column {name!r} has type {arrow_type}, which the online store cannot hold"
    )


def _from_micros(value: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=value)


def _from_days(value: int) -> dt.date:
    return EPOCH_DATE + dt.timedelta(days=value)


# Decoders from the stored representation (SQLite values; Redis strings are parsed first).
DECODERS: dict[str, Callable[[Any], Any] | None] = {
    "int": None,
    "float": None,
    "str": None,
    "bool": bool,
    "timestamp": _from_micros,
    "date": _from_days,
}


def micros(value: Any) -> int | None:
    """A timestamp (datetime, pandas Timestamp, numpy datetime64, ISO string) as UTC microseconds."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        delta = value - EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, int):
        return value
    import pandas as pd

    stamp = pd.Timestamp(value)
    if stamp is pd.NaT:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return int(stamp.value // 1000)


def normalize_key(value: Any, typ: str) -> Any:
    """An entity key as the stored type, or None when it cannot match (null, NaN, wrong type)."""
    if value is None:
        return None
    try:
        if typ == "int":
            if type(value) is int:
                return value
            if isinstance(value, bool):
                return int(value)
            if isinstance(value, float):
                return int(value) if value.is_integer() else None
            if isinstance(value, str):
                return int(value) if value.strip().lstrip("+-").isdigit() else None
            import numbers

            if isinstance(value, numbers.Integral):
                return int(value)
            if isinstance(value, numbers.Real):
                f = float(value)
                return int(f) if f.is_integer() else None
            return None
        if typ == "str":
            if isinstance(value, str):
                return str(value)
            if isinstance(value, float) and math.isnan(value):
                return None
            if hasattr(value, "item"):  # numpy scalars
                value = value.item()
            return str(value)
        if typ == "float":
            f = float(value)
            return None if math.isnan(f) else f
        if typ == "bool":
            return int(bool(value))
        if typ == "timestamp":
            return micros(value)
        if typ == "date":
            if isinstance(value, dt.datetime):
                value = value.date()
            if isinstance(value, dt.date):
                return (value - EPOCH_DATE).days
            return None
    except (TypeError, ValueError, OverflowError):
        return None
    return None


def _is_null(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, NaT, pd.NA raises
    except TypeError:
        return True


def entity_columns(entity_keys: Any, names: Iterable[str]) -> tuple[int, dict[str, list[Any]]]:
    """Entity keys (list of dicts, DataFrame, Arrow table, or dict of lists) as columns."""
    names = list(dict.fromkeys(names))
    if isinstance(entity_keys, Mapping):
        columns: dict[str, list[Any] | None] = {
            n: list(entity_keys[n]) if n in entity_keys else None for n in names
        }
        n = len(next(iter(entity_keys.values()), []))
    elif hasattr(entity_keys, "to_pydict"):  # pyarrow
        data = entity_keys.to_pydict()
        n = entity_keys.num_rows
        columns = {k: data.get(k) for k in names}
    elif hasattr(entity_keys, "columns") and hasattr(entity_keys, "iloc"):  # pandas
        n = len(entity_keys)
        columns = {
            k: entity_keys[k].astype(object).where(entity_keys[k].notna(), None).tolist()
            if k in entity_keys.columns
            else None
            for k in names
        }
    else:
        rows = list(entity_keys)
        n = len(rows)
        # rows that carry none of the keys are still a valid (all missing) read
        columns = {k: [row.get(k) for row in rows] for k in names}
    return n, {k: (v if v is not None else [None] * n) for k, v in columns.items()}


# --------------------------------------------------------------------------------------------
# Write batches
# --------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """A write batch prepared for a backend: Python values in ascending (event, created) order."""

    view: str
    join_keys: list[str]
    features: list[str]
    types: dict[str, str]  # logical type per key and feature column
    keys: list[list[Any]]  # one list per join key
    event: list[int]
    created: list[int | None]
    values: list[list[Any]]  # one list per feature, stored representation
    rows: int
    rejected: int

    @property
    def size(self) -> int:
        return len(self.event)

    def key_tuples(self) -> list[tuple]:
        return list(zip(*self.keys, strict=True)) if self.size else []


def _table(rows: Any) -> Any:
    import pyarrow as pa

    if hasattr(rows, "iloc"):
        return pa.Table.from_pandas(rows, preserve_index=False)
    if isinstance(rows, pa.RecordBatchReader):
        return rows.read_all()
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if isinstance(rows, pa.Table):
        return rows
    return pa.table(rows)


def _utc_micros(col: Any, view: str) -> Any:
    import pyarrow as pa

    ts_type = pa.timestamp("us", tz="UTC")
    if pa.types.is_timestamp(col.type):
        if col.type.tz is None:
            col = col.cast(pa.timestamp("us"), safe=False).cast(ts_type)
        else:
            col = col.cast(ts_type, safe=False)
    elif pa.types.is_date(col.type):
        col = col.cast(pa.timestamp("us")).cast(ts_type)
    elif pa.types.is_null(col.type):
        col = col.cast(ts_type)
    else:
        raise OnlineStoreError(f"view {view}: {col.type} is not a timestamp")
    return col.cast(pa.int64())


def stored_values(col: Any, typ: str, view: str = "?") -> list[Any]:
    """An Arrow column as the stored representation of its logical type (Python values)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if typ == "timestamp":
        return _utc_micros(col, view).to_pylist()
    if typ == "date":
        return col.cast(pa.date32()).cast(pa.int32()).to_pylist()
    if typ == "bool":
        return col.cast(pa.int8()).to_pylist()
    if typ == "float":
        col = col.cast(pa.float64())
        col = pc.if_else(pc.is_nan(col), pa.scalar(None, pa.float64()), col)
        return col.to_pylist()
    if typ == "int":
        return col.cast(pa.int64()).to_pylist()
    return col.cast(pa.string()).to_pylist()


def prepare_keys(view: str, join_keys: Sequence[str], keys: Any) -> list[tuple]:
    """Entity keys to delete (Arrow, pandas or a dict of columns) as stored key tuples.

    Rows with a null key part are dropped (no stored row can have one); duplicates are dropped.
    """
    import pyarrow.compute as pc

    table = _table(keys)
    missing = [k for k in join_keys if k not in table.column_names]
    if missing:
        raise OnlineStoreError(f"view {view}: keys to delete lack column(s) {missing}")
    if table.num_rows == 0:
        return []
    columns = []
    for name in join_keys:
        col = table.column(name)
        typ = logical_type(col.type, name)
        if typ == "float":
            col = pc.if_else(pc.is_nan(col), None, col)
        columns.append(stored_values(col, typ, view))
    return list(
        dict.fromkeys(t for t in zip(*columns, strict=True) if all(part is not None for part in t))
    )


def prepare_batch(
    view: str,
    join_keys: Sequence[str],
    features: Sequence[str],
    rows: Any,
    event_timestamp_column: str = EVENT_TS,
    created_timestamp_column: str | None = CREATED_TS,
) -> Batch:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    table = _table(rows)
    join_keys, features = list(join_keys), list(features)
    if not join_keys:
        raise OnlineStoreError(f"view {view}: at least one join key is needed")
    missing = [
        c for c in [*join_keys, event_timestamp_column, *features] if c not in table.column_names
    ]
    if missing:
        raise OnlineStoreError(f"view {view}: rows lack column(s) {missing}")
    clash = set(join_keys) & set(features)
    if clash or len(set(features)) != len(features):
        raise OnlineStoreError(f"view {view}: duplicate column names in keys/features")
    types = {c: logical_type(table.schema.field(c).type, c) for c in [*join_keys, *features]}
    n = table.num_rows
    event = _utc_micros(table.column(event_timestamp_column), view)
    if created_timestamp_column and created_timestamp_column in table.column_names:
        created = _utc_micros(table.column(created_timestamp_column), view)
    else:
        created = pa.nulls(n, pa.int64())
    valid = pc.is_valid(event)
    for key in join_keys:
        valid = pc.and_(valid, pc.is_valid(table.column(key)))
        if types[key] == "float":
            valid = pc.and_(valid, pc.invert(pc.is_nan(table.column(key))))
    valid = pc.fill_null(valid, False)
    kept = int(pc.sum(valid.cast(pa.int64())).as_py() or 0)
    # Ascending (event, created with nulls first, arrival): applying rows in this order with
    # "newer or equal wins" leaves each key holding the contract's winner.
    order = pa.table(
        {"e": event, "c": created, "i": pa.array(np.arange(n, dtype=np.int64)), "v": valid}
    )
    order = order.filter(order.column("v"))
    idx = pc.sort_indices(
        order,
        sort_keys=[
            ("e", "ascending", "at_start"),
            ("c", "ascending", "at_start"),
            ("i", "ascending", "at_start"),
        ],
    )
    take = pc.take(order.column("i"), idx)
    # Keep the last row per key in that order (the batch's winner), then order by key: the
    # store then sees one row per key, and SQLite inserts into its primary-key B-tree in order.
    if len(take):
        ranked = pa.table(
            {
                **{f"k{j}": pc.take(table.column(k), take) for j, k in enumerate(join_keys)},
                "pos": pa.array(np.arange(len(take), dtype=np.int64)),
            }
        )
        last = ranked.group_by(
            [f"k{j}" for j in range(len(join_keys))], use_threads=False
        ).aggregate([("pos", "max")])
        by_key = pc.sort_indices(
            last, sort_keys=[(f"k{j}", "ascending") for j in range(len(join_keys))]
        )
        take = pc.take(take, pc.take(last.column("pos_max"), by_key))

    def stored(col: Any, typ: str) -> list[Any]:
        return stored_values(pc.take(col, take), typ, view)

    return Batch(
        view=view,
        join_keys=join_keys,
        features=features,
        types=types,
        keys=[stored(table.column(k), types[k]) for k in join_keys],
        event=pc.take(event, take).to_pylist(),
        created=pc.take(created, take).to_pylist(),
        values=[stored(table.column(f), types[f]) for f in features],
        rows=n,
        rejected=n - kept,
    )


# --------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewSchema:
    view: str
    join_keys: tuple[str, ...]
    types: dict[str, str]  # keys and features


def utc_now_micros() -> int:
    return micros(dt.datetime.now(dt.UTC))  # type: ignore[return-value]


def _requests(requests: Sequence[Any]) -> list[ReadRequest]:
    out = []
    for r in requests:
        if isinstance(r, ReadRequest):
            out.append(r)
        elif isinstance(r, Mapping):
            out.append(ReadRequest(**r))
        else:
            out.append(ReadRequest(*r))
    return out


class OnlineStore(ABC):
    """The latest feature values per entity key, one table (or key space) per feature view."""

    kind: str = "?"

    @abstractmethod
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
        """Upsert the latest value per key from `rows` (Arrow or pandas), atomically for the view.

        `delete_keys` (Arrow, pandas or a dict of key columns) are removed first, in the same
        transaction: a deleted key that `rows` holds gets its row from `rows` unconditionally,
        the others disappear (counted in `deleted`).
        """

    @abstractmethod
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
        """Replace the whole view with the latest value per key from `rows`, atomically.

        Readers see the old view (keys, values and schema) until the new one is complete, then
        the new one; a load that fails or is killed midway leaves the old view as it was.
        """

    @abstractmethod
    def schema(self, view_name: str) -> ViewSchema | None:
        """The stored view's keys and types (None if it was never written)."""

    @abstractmethod
    def _fetch(
        self, schema: ViewSchema, features: Sequence[str], keys: list[tuple]
    ) -> dict[tuple, tuple[int, list[Any]]]:
        """Stored (event micros, decoded feature values) per requested key tuple."""

    @abstractmethod
    def delete_view(self, view_name: str) -> None: ...

    @abstractmethod
    def views(self) -> list[str]: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(
        self,
        entity_keys: Any,
        requests: Sequence[ReadRequest | tuple | Mapping],
        *,
        now: dt.datetime | None = None,
        full_feature_names: bool = False,
    ) -> OnlineResult:
        """Read every requested view for every entity row in one call.

        `entity_keys` is a list of dicts, a pandas DataFrame, an Arrow table or a dict of
        lists; each view takes its join keys from it. Values come back typed (int, float, bool,
        str, datetime in UTC, date); a key with no stored row is "missing", one whose stored
        event time is older than `now - ttl` is "stale"; both give None values. A view the store
        does not hold gives None values and "missing_view" for every row (the other views are
        still read), so a partly loaded store answers with what it has.
        """
        reqs = _requests(requests)
        now_us = micros(now) if now is not None else utc_now_micros()
        if now_us is None:
            raise OnlineStoreError(f"now={now!r} is not a timestamp")
        self._begin_read()
        try:
            return self._read(reqs, entity_keys, now_us, full_feature_names)
        finally:
            self._end_read()

    def _read(
        self,
        reqs: list[ReadRequest],
        entity_keys: Any,
        now_us: int,
        full_feature_names: bool,
    ) -> OnlineResult:
        schemas: list[tuple[ReadRequest, ViewSchema | None, tuple[str, ...]]] = []
        for req in reqs:
            schema = self.schema(req.view)
            if schema is None:
                schemas.append((req, None, tuple(req.join_keys or ())))
                continue
            unknown = [f for f in req.features if f not in schema.types or f in schema.join_keys]
            if unknown:
                schema = self._refresh_schema(req.view)
                if schema is None:
                    schemas.append((req, None, tuple(req.join_keys or ())))
                    continue
                unknown = [f for f in req.features if f not in schema.types]
                if unknown:
                    raise OnlineStoreError(f"view {req.view!r} has no feature(s) {unknown}")
            keys = tuple(req.join_keys) if req.join_keys else schema.join_keys
            if len(keys) != len(schema.join_keys):
                raise OnlineStoreError(
                    f"view {req.view!r} is keyed by {list(schema.join_keys)}, not {list(keys)}"
                )
            schemas.append((req, schema, keys))
        n, columns = entity_columns(entity_keys, [k for _, _, keys in schemas for k in keys])
        values: dict[str, list[Any]] = {}
        status: dict[str, list[str]] = {}
        stamps: dict[str, list[dt.datetime | None]] = {}
        planned: list[tuple[ReadRequest, list[str], list[tuple | None]]] = []
        lookups: list[tuple[ViewSchema, Sequence[str], list[tuple]]] = []
        for req, schema, keys in schemas:
            names = [f"{req.view}__{f}" if full_feature_names else f for f in req.features]
            for name in names:
                if name in values:
                    raise OnlineStoreError(
                        f"feature {name!r} requested twice: use full_feature_names=True"
                    )
                values[name] = [None] * n
            if req.view in status:
                raise OnlineStoreError(f"view {req.view!r} requested twice")
            status[req.view] = [MISSING_VIEW] * n
            stamps[req.view] = [None] * n
            if schema is None:
                continue
            tuples = _key_tuples(schema, keys, columns, n)
            planned.append((req, names, tuples))
            wanted = list(dict.fromkeys(t for t in tuples if t is not None))
            lookups.append((schema, req.features, wanted))
        for (req, names, tuples), found in zip(planned, self._fetch_views(lookups), strict=True):
            if found is None:  # deleted since its schema was cached
                continue
            cutoff = None if req.ttl is None else now_us - _micros(req.ttl)
            view_status = [MISSING] * n
            view_stamps: list[dt.datetime | None] = [None] * n
            cols = [values[name] for name in names]
            for i, key in enumerate(tuples):
                if key is None:
                    continue
                hit = found.get(key)
                if hit is None:
                    continue
                event_us, decoded = hit
                view_stamps[i] = _from_micros(event_us)
                if cutoff is not None and event_us < cutoff:
                    view_status[i] = STALE
                    continue
                view_status[i] = PRESENT
                for col, value in zip(cols, decoded, strict=True):
                    col[i] = value
            status[req.view] = view_status
            stamps[req.view] = view_stamps
        key_out = {k: list(v) for k, v in columns.items()}
        return OnlineResult(keys=key_out, values=values, status=status, event_timestamps=stamps)

    def _fetch_views(
        self, lookups: list[tuple[ViewSchema, Sequence[str], list[tuple]]]
    ) -> list[dict[tuple, tuple[int, list[Any]]] | None]:
        """`_fetch` for each (schema, features, keys); None for a view gone since its schema was
        read. Backends override it to fetch every view in one round trip."""
        out: list[dict[tuple, tuple[int, list[Any]]] | None] = []
        for schema, features, keys in lookups:
            try:
                out.append(self._fetch(schema, features, keys) if keys else {})
            except ViewNotLoaded:
                out.append(None)
        return out

    def _begin_read(self) -> None:
        """Called once per `read` before any schema is looked up (SQLite opens a snapshot)."""
        return None

    def _end_read(self) -> None:
        """Called once per `read` when it is done, also after an error."""
        return None

    def _refresh_schema(self, view_name: str) -> ViewSchema | None:
        return self.schema(view_name)


def _key_tuples(
    schema: ViewSchema, keys: Sequence[str], columns: dict[str, list[Any]], n: int
) -> list[tuple | None]:
    """Each entity row's key as a stored key tuple (None: it cannot match a stored key)."""
    key_types = [schema.types[k] for k in schema.join_keys]
    tuples: list[tuple | None] = []
    for i in range(n):
        parts = []
        for name, typ in zip(keys, key_types, strict=True):
            value = columns[name][i]
            part = normalize_key(value, typ) if not _is_null(value) else None
            if part is None:
                break
            parts.append(part)
        else:
            tuples.append(tuple(parts))
            continue
        tuples.append(None)
    return tuples


def _micros(delta: dt.timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def decoders(schema: ViewSchema, features: Sequence[str]) -> list[Callable[[Any], Any] | None]:
    return [DECODERS[schema.types[f]] for f in features]
