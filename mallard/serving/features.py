"""Online features and pushes.

`online` reads values for entity keys (feature references or a service) from the online store,
with each view's staleness (its ttl) and the view version that served them.

`push` writes rows to a view through the writer and checks the feature assets use: the rows are
cast to the view's declared types, then `rejected_rows` (null key or event timestamp) and
`check_expectations` run on the whole batch, and a failing row refuses the batch, naming it, with
nothing written. Accepted rows are merged into their event day's partition of the view's offline
table in one `write_view_partitions` commit (the partition's other rows are kept), then upserted
into the online store (newest event per key wins). A later recomputation of that day by the
view's asset replaces the partition with what the sources say.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mallard.config import Settings
from mallard.features.online import ReadRequest
from mallard.serving.errors import ApiError
from mallard.serving.models import check_entity_keys, view_version_label

if TYPE_CHECKING:
    import pyarrow as pa

    from mallard.features.online import OnlineStore
    from mallard.features.specs import FeatureRef, FeatureRegistry, FeatureView

_TYPES = {"int64": "int64", "float64": "float64", "string": "string", "bool": "bool"}
_thread_locks: dict[str, threading.Lock] = {}


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return None
    return value


def _column(values: list[Any], type_: str) -> list[Any]:
    """A feature's values as JSON takes them (a float column: NaN as null, the rest as is)."""
    if type_ == "float64":
        return [None if value is None or value != value else value for value in values]
    return [_json_value(value) for value in values]


class FeatureService:
    def __init__(
        self, settings: Settings, registry: FeatureRegistry | None, store: OnlineStore | None
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        # Resolved references (a feature list or a service) → what to read: resolved once.
        self._plans: dict[tuple[str, ...], tuple[Any, ...]] = {}

    def _require(self) -> tuple[FeatureRegistry, OnlineStore]:
        if self.registry is None or self.store is None:
            raise ApiError(503, "unavailable", "this server has no feature store", field=None)
        return self.registry, self.store

    # -- reads --------------------------------------------------------------------------------
    def online(
        self,
        entities: list[dict[str, Any]],
        features: list[str] | None,
        service: str | None,
    ) -> dict[str, Any]:
        from mallard.specs import DeclarationError

        registry, store = self._require()
        references = [service] if features is None and service is not None else features
        planned = self._plans.get(tuple(references or ()))
        if planned is not None and (features is None) != (service is None):
            return self._read(registry, store, entities, *planned)
        if (features is None) == (service is None):
            raise ApiError(
                422,
                "invalid_request",
                "send either `features` (view:feature references) or `service`, not both",
                field="features" if features is not None else "service",
            )
        if service is not None:
            if service not in registry.services:
                raise ApiError(
                    404,
                    "unknown_service",
                    f"no feature service {service!r} (services: {', '.join(registry.services)})",
                    field="service",
                )
            references = [service]
        else:
            assert features is not None
            for i, ref in enumerate(features):
                try:
                    registry.resolve([ref])
                except DeclarationError as exc:
                    raise ApiError(
                        422, "unknown_feature", str(exc), field=f"features[{i}]"
                    ) from None
            references = list(features)
        try:
            refs = registry.resolve(references)
        except DeclarationError as exc:
            raise ApiError(422, "invalid_request", str(exc), field="features") from None
        views = list(dict.fromkeys(ref.view.name for ref in refs))
        key_types: dict[str, str] = {}
        for view in views:
            key_types.update(registry.views[view].join_keys)
        requests = [
            ReadRequest(
                view,
                [r.feature.name for r in refs if r.view.name == view],
                registry.views[view].ttl,
                list(registry.views[view].join_keys),
            )
            for view in views
        ]
        plan = (refs, views, key_types, requests)
        if len(self._plans) < 1024:  # the references a deployment asks for are few
            self._plans[tuple(references)] = plan
        return self._read(registry, store, entities, *plan)

    def _read(
        self,
        registry: FeatureRegistry,
        store: OnlineStore,
        entities: list[dict[str, Any]],
        refs: list[FeatureRef],
        views: list[str],
        key_types: dict[str, str],
        requests: list[ReadRequest],
    ) -> dict[str, Any]:
        check_entity_keys(entities, key_types)
        result = store.read(entities, requests)
        n = len(entities)
        columns = {
            ref.feature.name: _column(result.values[ref.feature.name], ref.feature.type)
            for ref in refs
        }
        status = {v: result.status[v] for v in views}
        stamps = {
            v: [_json_value(x) for x in result.event_timestamps.get(v) or [None] * n] for v in views
        }
        out_rows = [
            {
                "entity": {k: entity[k] for k in key_types},
                "values": {name: column[i] for name, column in columns.items()},
                "status": {v: status[v][i] for v in views},
                "stale": {v: status[v][i] == "stale" for v in views},
                "event_timestamps": {v: stamps[v][i] for v in views},
            }
            for i, entity in enumerate(entities)
        ]
        ttls = {v: registry.views[v].ttl for v in views}
        return {
            "rows": out_rows,
            "views": {
                v: {
                    "version": view_version_label(self.settings, registry, v),
                    "ttl_seconds": ttl.total_seconds() if (ttl := ttls[v]) is not None else None,
                    "features": [r.feature.name for r in refs if r.view.name == v],
                }
                for v in views
            },
            "missing_views": result.missing_views,
        }

    # -- pushes -------------------------------------------------------------------------------
    def _view(self, name: str) -> FeatureView:
        registry, _ = self._require()
        view = registry.views.get(name)
        if view is None:
            raise ApiError(
                404,
                "unknown_view",
                f"no feature view {name!r} (views: {', '.join(registry.views)})",
                field="view",
            )
        return view

    def _table(self, view: FeatureView, rows: list[dict[str, Any]]) -> pa.Table:
        """The rows as an Arrow table of the view's declared types, or a 422 naming the cell."""
        import pyarrow as pa

        types = {
            **{k: t for k, t in view.join_keys.items()},
            **{f.name: f.type for f in view.features},
        }
        allowed = {*types, "event_timestamp", "created_timestamp"}
        columns: dict[str, list[Any]] = {
            name: []
            for name in [
                *view.join_keys,
                "event_timestamp",
                "created_timestamp",
                *view.feature_names,
            ]
        }
        for i, row in enumerate(rows):
            unknown = [k for k in row if k not in allowed]
            if unknown:
                raise ApiError(
                    422,
                    "unknown_column",
                    f"rows[{i}].{unknown[0]}: view {view.name!r} has no column {unknown[0]!r} "
                    f"(columns: {', '.join(columns)})",
                    field=f"rows[{i}].{unknown[0]}",
                )
            for name in columns:
                path = f"rows[{i}].{name}"
                if name not in row and name != "created_timestamp":
                    raise ApiError(
                        422,
                        "missing_column",
                        f"{path}: view {view.name!r} needs {name!r} in every row (null allowed "
                        "where the view's checks allow it)",
                        field=path,
                    )
                value = row.get(name)
                if name in ("event_timestamp", "created_timestamp"):
                    columns[name].append(_timestamp(value, path))
                else:
                    columns[name].append(_typed(value, types[name], path))
        arrays = {}
        for name, values in columns.items():
            if name in ("event_timestamp", "created_timestamp"):
                arrays[name] = pa.array(values, pa.timestamp("us", tz="UTC"))
            else:
                arrays[name] = pa.array(values, pa.type_for_alias(_TYPES[types[name]]))
        return pa.table(arrays)

    def check(self, view: FeatureView, table: pa.Table) -> None:
        """The feature assets' checks, on the whole batch: a failure refuses it, naming a row."""
        import pyarrow.compute as pc

        from mallard.features.compute import check_expectations, rejected_rows

        rejected = rejected_rows(view, table)
        if rejected.total:
            for name in [*view.join_keys, "event_timestamp"]:
                nulls = pc.is_null(table.column(name)).to_pylist()
                if any(nulls):
                    row = nulls.index(True)
                    raise ApiError(
                        422,
                        "check_failed",
                        f"rows[{row}].{name} is null: {rejected.describe()}; such rows can never be "
                        "joined, and nothing was written",
                        field=f"rows[{row}].{name}",
                        rule="not null",
                    )
        failing = [r for r in check_expectations(view, table, examples=1) if r.failing_rows]
        if failing:
            first = failing[0]
            keys = first.examples[0] if first.examples else {}
            mask = None
            for name, value in keys.items():
                if name == first.feature:
                    continue
                part = pc.equal(table.column(name), value)
                mask = part if mask is None else pc.and_(mask, part)
            row = 0
            if mask is not None:
                hits = [i for i, hit in enumerate(mask.to_pylist()) if hit]
                row = hits[0] if hits else 0
            raise ApiError(
                422,
                "check_failed",
                f"rows[{row}].{first.feature} fails the check {first.feature} {first.rule} of view "
                f"{view.name!r} ({first.failing_rows} row(s) in all); nothing was written",
                field=f"rows[{row}].{first.feature}",
                rule=first.rule,
                failures=[
                    {"feature": r.feature, "rule": r.rule, "rows": r.failing_rows} for r in failing
                ],
            )

    @contextlib.contextmanager
    def _view_lock(self, view: str) -> Iterator[None]:
        # Pushes to one view are serialized across workers: a push reads its partitions and
        # writes them back with its rows.
        folder = self.settings.serve_dir / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        lock = _thread_locks.setdefault(view, threading.Lock())
        with lock, open(folder / f"push-{view}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def before(self, view: FeatureView, table: pa.Table) -> list[dict[str, Any]]:
        """The online values of the pushed keys before the push (for the audit log)."""
        _, store = self._require()
        keys = table.select(list(view.join_keys)).to_pylist()
        if store.schema(view.name) is None:
            return [{"entity": k, "values": None} for k in keys[:100]]
        from mallard.features.online import ReadRequest

        result = store.read(keys[:100], [ReadRequest(view.name, view.feature_names, None)])
        return [
            {
                "entity": k,
                "values": {n: _json_value(result.values[n][i]) for n in view.feature_names},
            }
            for i, k in enumerate(keys[:100])
        ]

    def push(self, view_name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import pyarrow as pa
        import pyarrow.compute as pc
        from deltalake import DeltaTable

        from mallard.features.offline.store import PARTITION, write_view_partitions
        from mallard.features.versions import register_version

        view = self._view(view_name)
        _, store = self._require()
        table = self._table(view, rows)
        self.check(view, table)
        before = self.before(view, table)
        version = register_version(self.settings, view)
        days = sorted({ts.date() for ts in table.column("event_timestamp").to_pylist()})
        columns = [*view.join_keys, "event_timestamp", "created_timestamp", *view.feature_names]
        with self._view_lock(view.name):
            parts: dict[dt.date, pa.Table] = {}
            existing = None
            if DeltaTable.is_deltatable(str(version.table_path)):
                existing = (
                    DeltaTable(str(version.table_path))
                    .to_pyarrow_dataset()
                    .to_table(filter=pc.field(PARTITION).isin(days))
                )
            for day in days:
                day_rows = table.filter(
                    pc.equal(pc.cast(table.column("event_timestamp"), pa.date32()), day)
                )
                if existing is not None and existing.num_rows:
                    kept = existing.filter(pc.equal(existing.column(PARTITION), day))
                    kept = kept.select(columns).cast(day_rows.schema)
                    day_rows = pa.concat_tables([kept, day_rows])
                parts[day] = day_rows
            written = write_view_partitions(
                version.table_path,
                parts,
                join_keys=list(view.join_keys),
                commit_metadata={"mallard.source": "api push"},
            )
            online = store.write(view.name, list(view.join_keys), view.feature_names, table)
        return {
            "view": view.name,
            "version": version.label,
            "rows": table.num_rows,
            "partitions": [d.isoformat() for d in days],
            "offline_table_version": written.version,
            "online_keys_updated": online.applied,
            "before": before,
            "after": [{k: _json_value(v) for k, v in r.items()} for r in table.to_pylist()[:100]],
        }


def _timestamp(value: Any, path: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(
            422, "invalid_type", f"{path}: a timestamp is an ISO 8601 string", field=path
        )
    try:
        stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            422,
            "invalid_value",
            f"{path}: {value[:40]!r} is not an ISO 8601 timestamp (e.g. 2026-06-30T00:00:00Z)",
            field=path,
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    try:
        return stamp.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        raise ApiError(
            422, "invalid_value", f"{path}: timestamp out of range", field=path
        ) from None


def _typed(value: Any, typ: str, path: str) -> Any:
    if value is None:
        return None
    if typ == "int64":
        if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
            raise ApiError(422, "invalid_type", f"{path}: an int64 is expected", field=path)
        return value
    if typ == "float64":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ApiError(422, "invalid_type", f"{path}: a number is expected", field=path)
        try:
            number = float(value)
        except OverflowError:
            raise ApiError(
                422, "invalid_value", f"{path}: beyond float range", field=path
            ) from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ApiError(
                422, "invalid_value", f"{path}: NaN and infinities cannot be stored", field=path
            )
        return number
    if typ == "bool":
        if not isinstance(value, bool):
            raise ApiError(422, "invalid_type", f"{path}: true or false is expected", field=path)
        return value
    if not isinstance(value, str):
        raise ApiError(422, "invalid_type", f"{path}: a string is expected", field=path)
    return value
