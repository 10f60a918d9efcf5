"""`Source`: where raw data lives, read through DuckDB with the offline extensions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from mallard.config import Settings
from mallard.specs import DeclarationError, check_identifier

if TYPE_CHECKING:
    import duckdb

SourceKind = Literal["parquet", "csv", "json", "delta", "iceberg", "postgres"]
_EXTENSION_FOR_KIND = {"delta": "delta", "iceberg": "iceberg", "postgres": "postgres"}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Source:
    """A raw data source: a file, a table or a query that DuckDB can read.

    `path` is relative to MALLARD_HOME unless absolute (for `postgres`, the table name);
    `query` replaces `path` for a Postgres query; `connection_env` names the environment
    variable that holds a Postgres connection string. `columns` declares column types
    (`{"customer_id": "BIGINT", "age": "INTEGER"}`, DuckDB type names): a CSV is read with them
    (a value that does not convert fails naming the line), and any other kind is checked against
    them before a view's SQL runs.
    """

    name: str
    kind: SourceKind
    path: str | None = None
    query: str | None = None
    connection_env: str | None = None
    timestamp_field: str | None = "event_timestamp"
    created_timestamp_field: str | None = None
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    columns: dict[str, str] | None = None
    required: tuple[str, ...] = ()
    """Columns that must never be null (keys, dates): a null fails the source's check."""

    def __post_init__(self) -> None:
        check_identifier("Source", self.name)
        if self.columns is not None:
            if not isinstance(self.columns, dict) or not self.columns:
                raise DeclarationError(
                    f"Source {self.name!r}: columns must map column names to DuckDB types"
                )
            for column, type_ in self.columns.items():
                if not isinstance(type_, str) or not type_.strip():
                    raise DeclarationError(
                        f"Source {self.name!r}: columns[{column!r}] must be a DuckDB type name "
                        f"such as BIGINT, DOUBLE, VARCHAR, TIMESTAMP WITH TIME ZONE; got {type_!r}"
                    )
        if self.kind not in ("parquet", "csv", "json", "delta", "iceberg", "postgres"):
            raise DeclarationError(
                f"Source {self.name!r}: kind={self.kind!r} is not supported; choose parquet, csv, "
                "json, delta, iceberg or postgres"
            )
        if self.kind == "postgres":
            if not self.connection_env:
                raise DeclarationError(
                    f"Source {self.name!r}: connection_env is required for a postgres source "
                    "(the name of the environment variable holding the connection string)"
                )
            if bool(self.path) == bool(self.query):
                raise DeclarationError(
                    f"Source {self.name!r}: give exactly one of path (a table) or query"
                )
        elif not self.path:
            raise DeclarationError(
                f"Source {self.name!r}: path is required for a {self.kind} source"
            )

    @property
    def extensions(self) -> tuple[str, ...]:
        """DuckDB extensions needed to read this source."""
        ext = _EXTENSION_FOR_KIND.get(self.kind)
        return (ext,) if ext else ()

    def _dsn(self) -> str:
        import os

        dsn = os.environ.get(self.connection_env or "")
        if not dsn:
            raise DeclarationError(
                f"Source {self.name!r}: environment variable {self.connection_env} is not set; "
                "export it with a libpq connection string"
            )
        return dsn

    def setup_sql(self) -> list[str]:
        """Statements to run on a connection before `relation_sql` can be read (Postgres queries)."""
        if self.kind == "postgres" and self.query:
            return [
                f"ATTACH IF NOT EXISTS {_quote(self._dsn())} AS pg_{self.name} (TYPE postgres, READ_ONLY)"
            ]
        return []

    def relation_sql(self, settings: Settings) -> str:
        """A DuckDB table expression that reads the source (usable after FROM)."""
        if self.kind == "postgres":
            if self.query:
                return f"postgres_query('pg_{self.name}', {_quote(self.query)})"
            schema, _, table = (self.path or "").rpartition(".")
            return f"postgres_scan({_quote(self._dsn())}, {_quote(schema or 'public')}, {_quote(table)})"
        location = str(settings.resolve(self.path or ""))
        readers = {
            "parquet": f"read_parquet({_quote(location)})",
            "csv": f"read_csv({_quote(location)}, header=true, columns={self._csv_columns()})"
            if self.columns
            else f"read_csv_auto({_quote(location)}, header=true)",
            "json": f"read_json_auto({_quote(location)}, format='newline_delimited')",
            "delta": f"delta_scan({_quote(location)})",
            "iceberg": f"iceberg_scan({_quote(location)})",
        }
        return readers[self.kind]

    def null_counts(self, con: duckdb.DuckDBPyConnection, settings: Settings) -> dict[str, int]:
        """Rows with a null in each required column (on a connection where the source is open)."""
        import duckdb

        if not self.required:
            return {}
        select = ", ".join(f'count(*) FILTER (WHERE "{c}" IS NULL)' for c in self.required)
        try:
            row = con.execute(f"SELECT {select} FROM {self.relation_sql(settings)}").fetchone()
        except duckdb.Error as exc:
            raise read_failure(self, settings, exc) from None
        return dict(zip(self.required, map(int, row or ()), strict=True))

    def _csv_columns(self) -> str:
        return (
            "{"
            + ", ".join(f"{_quote(k)}: {_quote(v)}" for k, v in (self.columns or {}).items())
            + "}"
        )

    @property
    def location(self) -> str:
        """What a person looks at when the source cannot be read: its file or table."""
        if self.kind == "postgres":
            return f"postgres {'query' if self.query else 'table ' + str(self.path)}"
        return f"{self.kind} {'file' if self.kind in ('parquet', 'csv', 'json') else 'table'} {self.path}"


class SourceReadError(DeclarationError):
    """A source cannot be read, or does not hold the declared columns; names it and the fix."""


def _normalise_type(type_: str) -> str:
    aliases = {
        "INT64": "BIGINT",
        "INT": "INTEGER",
        "FLOAT64": "DOUBLE",
        "STRING": "VARCHAR",
        "TEXT": "VARCHAR",
        "TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE",
        "BOOL": "BOOLEAN",
    }
    upper = " ".join(type_.upper().split())
    return aliases.get(upper, upper)


def read_failure(
    source: Source, settings: Settings, exc: Exception, view: str | None = None
) -> SourceReadError:
    """The error a person gets when a source fails to read: which view, source and file, the
    reader's own message, and what to do."""
    where = f"FeatureView {view!r}: " if view else ""
    location = source.location
    if source.path and source.kind != "postgres":
        location = f"{source.kind} {'file' if source.kind in ('parquet', 'csv', 'json') else 'table'} {settings.resolve(source.path)}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = " ".join(lines[:3])[:400] if lines else type(exc).__name__
    return SourceReadError(
        f"{where}cannot read source {source.name!r} ({location}): {first}. The file is missing, "
        "truncated or corrupt, or does not match the declaration: restore or regenerate it "
        "(`mallard demo-data` for the sample world), or fix the Source in catalog/sources.py; "
        "`mallard features validate` checks every view."
    )


def check_source(
    source: Source, settings: Settings, con: duckdb.DuckDBPyConnection, view: str | None = None
) -> None:
    """Check that the source opens and holds the declared columns and types (reads no data)."""
    import duckdb

    try:
        described = con.execute(f'DESCRIBE SELECT * FROM "{source.name}"').fetchall()
    except duckdb.Error as exc:
        raise read_failure(source, settings, exc, view) from None
    check_columns(source, {row[0]: row[1] for row in described})


def check_columns(source: Source, found: dict[str, str]) -> None:
    """The declared columns against what the data holds (name → DuckDB type)."""
    if source.columns:
        for column, declared in source.columns.items():
            if column not in found:
                raise SourceReadError(
                    f"Source {source.name!r} ({source.location}): declared column {column!r} is "
                    f"missing (it has {', '.join(found)}); fix the data or the declaration"
                )
            if _normalise_type(found[column]) != _normalise_type(declared):
                raise SourceReadError(
                    f"Source {source.name!r} ({source.location}): column {column!r} is "
                    f"{found[column]}, declared {declared}; fix the data or the declaration"
                )


@dataclass(frozen=True)
class SourceProfile:
    """What a source holds right now: size, columns and time range."""

    row_count: int
    columns: list[tuple[str, str]]
    min_timestamp: str | None
    max_timestamp: str | None
    fingerprint: str
    required_nulls: dict[str, int] = field(default_factory=dict)


def profile_source(
    source: Source, settings: Settings, con: duckdb.DuckDBPyConnection | None = None
) -> SourceProfile:
    """Read a source through DuckDB and describe it; fails naming the source if it is unreadable.

    On a connection of the caller's (left open), or on one of its own."""
    import hashlib

    import duckdb

    from mallard.lake import connect
    from mallard.lake.duck import load_extension

    own = con is None
    if con is None:
        con = connect(extensions=source.extensions)
    else:
        for ext in source.extensions:
            load_extension(con, ext)
    relation = f"the {source.kind} source"
    try:
        for statement in source.setup_sql():
            con.execute(statement)
        relation = source.relation_sql(settings)
        columns = [
            (row[0], row[1]) for row in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
        ]
        check_columns(source, dict(columns))
        names = {name for name, _ in columns}
        ts = source.timestamp_field
        if ts and ts not in names:
            raise DeclarationError(
                f"Source {source.name!r}: timestamp_field={ts!r} is not a column of the data "
                f"(columns: {', '.join(sorted(names))})"
            )
        select = "count(*)" + (
            f", min({ts})::VARCHAR, max({ts})::VARCHAR" if ts else ", NULL, NULL"
        )
        if source.columns:
            # Convert every declared column of every row: a value that does not fit fails here.
            con.execute(
                f"SELECT count(*) FROM (SELECT {', '.join(chr(34) + c + chr(34) for c in source.columns)} "
                f"FROM {relation} WHERE hash(COLUMNS(*)) IS NULL)"
            ).fetchall()
        row_count, low, high = con.execute(f"SELECT {select} FROM {relation}").fetchone()  # type: ignore[misc]
        nulls = source.null_counts(con, settings)
    except duckdb.Error as exc:
        raise read_failure(source, settings, exc) from None
    finally:
        if own:
            con.close()
    digest = hashlib.sha256(repr((columns, row_count, low, high)).encode()).hexdigest()[:16]
    return SourceProfile(int(row_count), columns, low, high, digest, nulls)


def unreadable_source(
    sources: list[Source], settings: Settings, con: duckdb.DuckDBPyConnection, view: str | None
) -> SourceReadError | None:
    """After a failed read: the first source that cannot be read in full, as an error naming it."""
    import duckdb

    for source in sources:
        try:
            con.execute(f'SELECT sum(hash(COLUMNS(*))) FROM "{source.name}"').fetchall()
        except duckdb.Error as exc:
            return read_failure(source, settings, exc, view)
    return None
