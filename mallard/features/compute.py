"""Compute a feature view's rows for a partition with DuckDB, and check them.

`validate_view` catches what needs data (a SQL error, a missing column, a type the SQL does not
produce) with a message naming the view and the field, before anything is written.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
    from mallard.lake import connect

    extensions = tuple(sorted({ext for source in view.sources for ext in source.extensions}))
    con = con or connect()
    con.execute("SET TimeZone = 'UTC'")
    for ext in extensions:
        con.execute(f"LOAD {ext}")
    for source in view.sources:
        for statement in source.setup_sql():
            con.execute(statement)
        con.execute(
            f'CREATE OR REPLACE VIEW "{source.name}" AS SELECT * FROM {source.relation_sql(settings)}'
        )
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
    table = con.execute(
        f"SELECT {', '.join(f'{c!r}'.replace(chr(39), chr(34)) for c in columns)} FROM ({render_sql(view, start, end)})"
    ).fetch_arrow_table()
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


def check_expectations(view: FeatureView, table: pa.Table) -> list[ExpectationResult]:
    """Count the rows that break each declared expectation."""
    import pyarrow as pa
    import pyarrow.compute as pc

    results: list[ExpectationResult] = []
    for feature in view.features:
        rule = feature.expect
        if rule is None:
            continue
        column = table.column(feature.name)
        if rule.not_null:
            results.append(ExpectationResult(feature.name, "not null", column.null_count))
        if rule.min is not None:
            results.append(
                ExpectationResult(
                    feature.name,
                    f">= {rule.min}",
                    int(pc.sum(pc.less(column, rule.min)).as_py() or 0),
                )
            )
        if rule.max is not None:
            results.append(
                ExpectationResult(
                    feature.name,
                    f"<= {rule.max}",
                    int(pc.sum(pc.greater(column, rule.max)).as_py() or 0),
                )
            )
        if rule.allowed is not None:
            allowed = pa.array(list(rule.allowed), type=column.type)
            outside = pc.invert(pc.is_in(column, value_set=allowed))
            outside = pc.and_(outside, pc.is_valid(column))
            results.append(
                ExpectationResult(
                    feature.name, f"in {list(rule.allowed)}", int(pc.sum(outside).as_py() or 0)
                )
            )
    return results


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
