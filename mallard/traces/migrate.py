"""The traces table from calls to spans: old tables are rewritten in one commit, every row kept.

A table written before spans existed holds one row per LLM call. Each such row is a one-span
trace: its `span_id` is `schema.CALL_SPAN_ID`, `parent_span_id`
is empty (it is the root), its `span_kind` is `llm`, and it has no span name or provider. The
migration reads the table at one version, adds those columns, and overwrites it in one commit
(Delta keeps the old files until a vacuum, so `DeltaTable.load_as_version` still reads the old
table). A row another writer appended while the migration ran is not lost: the overwrite
removes only the files it read, and `upgrade` fills such a row's span columns when it is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mallard.traces.schema import CALL_SPAN_ID, SPAN_COLUMNS, trace_schema

if TYPE_CHECKING:
    import pyarrow as pa

MIGRATION_KEY = "mallard.traces_migration"
MIGRATION = "spans-v2"


@dataclass(frozen=True)
class Migration:
    """What a migration did: the version it read, the version it wrote, the rows on each side."""

    table_path: str
    read_version: int
    written_version: int
    rows_before: int
    rows_after: int
    added_columns: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "read_version": self.read_version,
            "written_version": self.written_version,
            "rows_before": self.rows_before,
            "rows_after": self.rows_after,
            "added_columns": list(self.added_columns),
        }


def upgrade(table: pa.Table) -> pa.Table:
    """`table` in the current schema: missing span columns (or nulls in them) filled as a
    one-span trace's, columns in the schema's order and types."""
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = trace_schema()
    names = set(table.column_names)
    derived = {
        "span_id": lambda: [CALL_SPAN_ID] * table.num_rows,
        "parent_span_id": lambda: [""] * table.num_rows,
        "span_kind": lambda: ["llm"] * table.num_rows,
        "span_name": lambda: [""] * table.num_rows,
        "provider": lambda: [""] * table.num_rows,
    }
    columns = []
    for field in schema:
        if field.name not in names:
            if field.name not in derived:
                raise ValueError(
                    f"the traces table has no column {field.name!r} and it cannot be derived"
                )
            columns.append(pa.array(derived[field.name](), type=field.type))
            continue
        column = table.column(field.name)
        if field.name in derived and column.null_count:
            fill = pa.chunked_array([pa.array(derived[field.name](), type=field.type)])
            column = pc.if_else(pc.is_null(column), fill, column.cast(field.type))
        columns.append(column.cast(field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def is_current(table_path: Path | str) -> bool:
    """Whether the table at `table_path` has the current schema (or does not exist yet)."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(str(table_path)):
        return True
    return _names(DeltaTable(str(table_path))) == trace_schema().names


def _names(table: Any) -> list[str]:
    return [field.name for field in table.schema().fields]


def migrate(table_path: Path | str) -> Migration | None:
    """Rewrite an old traces table in the current schema (one commit); None when it is current
    or does not exist. Raises if the rewritten table would not hold every row it read."""
    from deltalake import CommitProperties, DeltaTable, write_deltalake

    path = str(table_path)
    if not DeltaTable.is_deltatable(path):
        return None
    table = DeltaTable(path)
    if _names(table) == trace_schema().names:
        return None
    read_version = table.version()
    before = table.to_pyarrow_table()
    added = tuple(c for c in SPAN_COLUMNS if c not in before.column_names)
    after = upgrade(before)
    if after.num_rows != before.num_rows or sorted(
        before.column("trace_id").to_pylist(), key=str
    ) != sorted(after.column("trace_id").to_pylist(), key=str):
        raise RuntimeError(f"the migration of {path} would not keep every row; nothing written")
    write_deltalake(
        table,
        after,
        mode="overwrite",
        schema_mode="overwrite",
        commit_properties=CommitProperties(
            custom_metadata={
                MIGRATION_KEY: json.dumps(
                    {"migration": MIGRATION, "from_version": read_version, "rows": after.num_rows}
                )
            }
        ),
    )
    written = DeltaTable(path)
    rows_after = written.to_pyarrow_table(columns=["trace_id"]).num_rows
    if rows_after < before.num_rows:
        raise RuntimeError(
            f"the migration of {path} left {rows_after} rows of {before.num_rows}: restore "
            f"version {read_version} (DeltaTable.restore) and report it"
        )
    return Migration(path, read_version, written.version(), before.num_rows, rows_after, added)
