"""Compute a feature view's rows for a partition with DuckDB, and check them.

`validate_view` catches what needs data (a SQL error, a missing column, a type the SQL does not
produce) with a message naming the view and the field, before anything is written.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mallard.config import Settings
from mallard.features.specs import DUCKDB_TYPES, FeatureView
from mallard.specs import DeclarationError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa


class ViewComputeError(DeclarationError):
    """A view's SQL failed or produced the wrong columns; names the view and the field."""


@dataclass(frozen=True)
class ExpectationResult:
    """How many rows broke one feature's expectation."""

    feature: str
    rule: str
    failing_rows: int
    examples: tuple[dict[str, Any], ...] = ()
    """A few failing rows: their keys and the offending value."""

    @property
    def passed(self) -> bool:
        return self.failing_rows == 0


def _timestamp_literal(value: dt.datetime) -> str:
    return f"TIMESTAMPTZ '{value.astimezone(dt.UTC).isoformat()}'"


def render_sql(view: FeatureView, start: dt.datetime, end: dt.datetime) -> str:
    """The view's SQL with `$partition_start`/`$partition_end` bound to UTC timestamps."""
    return view.sql.replace("$partition_start", _timestamp_literal(start)).replace(
        "$partition_end", _timestamp_literal(end)
    )


def open_sources(
    view: FeatureView, settings: Settings, con: duckdb.DuckDBPyConnection | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection on which each of the view's sources is a view named after it."""
    import duckdb

    from mallard.features.sources import check_source, read_failure
    from mallard.lake import connect

    extensions = tuple(sorted({ext for source in view.sources for ext in source.extensions}))
    con = con or connect()
    con.execute("SET TimeZone = 'UTC'")
    for ext in extensions:
        con.execute(f"LOAD {ext}")
    for source in view.sources:
        try:
            for statement in source.setup_sql():
                con.execute(statement)
            con.execute(
                f'CREATE OR REPLACE VIEW "{source.name}" AS SELECT * FROM {source.relation_sql(settings)}'
            )
        except duckdb.Error as exc:
            raise read_failure(source, settings, exc, view.name) from None
        check_source(source, settings, con, view.name)
    return con


def _partition_window(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def validate_view(
    view: FeatureView, settings: Settings, con: duckdb.DuckDBPyConnection | None = None
) -> dict[str, str]:
    """Check the view's SQL against its sources and declaration; return its output types."""
    import duckdb

    con = open_sources(view, settings, con)
    start, end = _partition_window(dt.date(2000, 1, 1))
    try:
        described = con.execute(f"DESCRIBE {render_sql(view, start, end)}").fetchall()
    except duckdb.Error as exc:
        from mallard.features.sources import unreadable_source

        culprit = unreadable_source(list(view.sources), settings, con, view.name)
        if culprit is not None:
            raise culprit from None
        raise ViewComputeError(
            f"FeatureView {view.name!r}: sql fails: {str(exc).splitlines()[0]}"
        ) from exc
    types = {row[0]: row[1] for row in described}
    required = {
        **{key: None for key in view.join_keys},
        "event_timestamp": None,
        "created_timestamp": None,
    }
    for column in required:
        if column not in types:
            raise ViewComputeError(
                f"FeatureView {view.name!r}: sql does not return column {column!r} "
                f"(it returns {', '.join(types)})"
            )
    for feature in view.features:
        produced = types.get(feature.name)
        if produced is None:
            raise ViewComputeError(
                f"FeatureView {view.name!r}: feature {feature.name!r} is declared but the sql does not "
                f"return it (it returns {', '.join(types)})"
            )
        base = produced.split("(")[0]
        if base not in DUCKDB_TYPES[feature.type]:
            raise ViewComputeError(
                f"FeatureView {view.name!r}: feature {feature.name!r} is declared {feature.type} but the "
                f"sql produces {produced}; cast it in the sql or change the declared type"
            )
    return types


_ARROW_TYPES = {"int64": "int64", "float64": "float64", "string": "string", "bool": "bool"}


def compute_partition(
    view: FeatureView,
    settings: Settings,
    day: dt.date,
    con: duckdb.DuckDBPyConnection | None = None,
) -> pa.Table:
    """The view's rows for one daily partition, cast to the declared types."""
    import pyarrow as pa

    con = open_sources(view, settings, con)
    start, end = _partition_window(day)
    columns = [*view.join_keys, "event_timestamp", "created_timestamp", *view.feature_names]
    import duckdb

    from mallard.features.sources import unreadable_source

    try:
        table = con.execute(
            f"SELECT {', '.join(f'{c!r}'.replace(chr(39), chr(34)) for c in columns)} FROM ({render_sql(view, start, end)})"
        ).fetch_arrow_table()
    except duckdb.Error as exc:
        culprit = unreadable_source(list(view.sources), settings, con, view.name)
        if culprit is not None:
            raise culprit from None
        raise ViewComputeError(
            f"FeatureView {view.name!r}: sql fails on {day}: {str(exc).splitlines()[0]}"
        ) from None
    fields = []
    for name in columns:
        declared = view.join_keys.get(name) or next(
            (f.type for f in view.features if f.name == name), None
        )
        if declared in _ARROW_TYPES:
            fields.append(pa.field(name, pa.type_for_alias(_ARROW_TYPES[declared])))
        else:
            fields.append(pa.field(name, pa.timestamp("us", tz="UTC")))
    return table.cast(pa.schema(fields))


def check_expectations(
    view: FeatureView, table: pa.Table, examples: int = 3
) -> list[ExpectationResult]:
    """Count the rows that break each declared expectation, with a few of them as examples."""
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = list(view.join_keys)

    def result(feature: str, rule: str, failing: pa.ChunkedArray | pa.Array) -> ExpectationResult:
        failing = pc.fill_null(failing, False)
        count = int(pc.sum(failing.cast(pa.int64())).as_py() or 0)
        shown: tuple[dict[str, Any], ...] = ()
        if count:
            rows = table.filter(failing).select([*keys, feature]).slice(0, examples)
            shown = tuple(rows.to_pylist())
        return ExpectationResult(feature, rule, count, shown)

    results: list[ExpectationResult] = []
    for feature in view.features:
        rule = feature.expect
        if rule is None:
            continue
        column = table.column(feature.name)
        if rule.not_null:
            results.append(result(feature.name, "not null", pc.is_null(column)))
        if rule.min is not None:
            results.append(result(feature.name, f">= {rule.min}", pc.less(column, rule.min)))
        if rule.max is not None:
            results.append(result(feature.name, f"<= {rule.max}", pc.greater(column, rule.max)))
        if rule.allowed is not None:
            allowed = pa.array(list(rule.allowed), type=column.type)
            outside = pc.and_(pc.invert(pc.is_in(column, value_set=allowed)), pc.is_valid(column))
            results.append(result(feature.name, f"in {list(rule.allowed)}", outside))
    return results


@dataclass(frozen=True)
class RejectedRows:
    """Rows that can never be joined: a null key or event timestamp in the view's output, and
    source rows with a null timestamp (no partition can hold them)."""

    null_key: int = 0
    null_event_timestamp: int = 0
    null_source_timestamp: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.null_key + self.null_event_timestamp + sum(self.null_source_timestamp.values())

    def __add__(self, other: RejectedRows) -> RejectedRows:
        sources = dict(self.null_source_timestamp)
        for name, n in other.null_source_timestamp.items():
            sources[name] = sources.get(name, 0) + n
        return RejectedRows(
            self.null_key + other.null_key,
            self.null_event_timestamp + other.null_event_timestamp,
            sources,
        )

    def describe(self) -> str:
        parts = []
        if self.null_key:
            parts.append(f"{self.null_key} with a null key")
        if self.null_event_timestamp:
            parts.append(f"{self.null_event_timestamp} with a null event_timestamp")
        parts += [
            f"{n} source rows of {name!r} with a null timestamp"
            for name, n in self.null_source_timestamp.items()
            if n
        ]
        return "; ".join(parts) or "no rows rejected"


def rejected_rows(view: FeatureView, table: pa.Table) -> RejectedRows:
    """The rows of a computed partition the offline store will refuse (null key or event time)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    null_ts = pc.is_null(table.column("event_timestamp"))
    null_key = None
    for key in view.join_keys:
        column_null = pc.is_null(table.column(key))
        null_key = column_null if null_key is None else pc.or_(null_key, column_null)
    keyless = int(pc.sum(null_key.cast(pa.int64())).as_py() or 0) if null_key is not None else 0
    timeless = int(pc.sum(pc.and_(null_ts, pc.invert(null_key)).cast(pa.int64())).as_py() or 0)
    return RejectedRows(null_key=keyless, null_event_timestamp=timeless)


def null_source_timestamps(
    view: FeatureView, settings: Settings, con: duckdb.DuckDBPyConnection
) -> RejectedRows:
    """Per source of the view: rows whose timestamp is null (the view's time filter drops them)."""
    import duckdb

    from mallard.features.sources import read_failure

    counts = {}
    for source in view.sources:
        if source.timestamp_field:
            try:
                (n,) = con.execute(
                    f'SELECT count(*) FROM "{source.name}" WHERE "{source.timestamp_field}" IS NULL'
                ).fetchone()  # type: ignore[misc]
            except duckdb.Error as exc:
                raise read_failure(source, settings, exc, view.name) from None
            counts[source.name] = int(n)
    return RejectedRows(null_source_timestamp=counts)


def column_profile(table: pa.Table, columns: list[str]) -> list[dict[str, object]]:
    """Null rate, min and max of each column (for asset metadata)."""
    import pyarrow.compute as pc

    rows = []
    for name in columns:
        column = table.column(name)
        stats: dict[str, object] = {
            "column": name,
            "null_rate": round(column.null_count / max(len(column), 1), 4),
        }
        if len(column) - column.null_count > 0 and not str(column.type).startswith("string"):
            bounds = pc.min_max(column)
            stats["min"], stats["max"] = str(bounds["min"].as_py()), str(bounds["max"].as_py())
        else:
            stats["min"] = stats["max"] = ""
        rows.append(stats)
    return rows
