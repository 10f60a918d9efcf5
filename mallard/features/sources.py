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
    variable that holds a Postgres connection string.
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

    def __post_init__(self) -> None:
        check_identifier("Source", self.name)
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
            "csv": f"read_csv_auto({_quote(location)}, header=true)",
            "json": f"read_json_auto({_quote(location)}, format='newline_delimited')",
            "delta": f"delta_scan({_quote(location)})",
            "iceberg": f"iceberg_scan({_quote(location)})",
        }
        return readers[self.kind]


@dataclass(frozen=True)
class SourceProfile:
    """What a source holds right now: size, columns and time range."""

    row_count: int
    columns: list[tuple[str, str]]
    min_timestamp: str | None
    max_timestamp: str | None
    fingerprint: str


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
        row_count, low, high = con.execute(f"SELECT {select} FROM {relation}").fetchone()  # type: ignore[misc]
    except duckdb.Error as exc:
        raise DeclarationError(f"Source {source.name!r}: cannot read {relation}: {exc}") from exc
    finally:
        if own:
            con.close()
    digest = hashlib.sha256(repr((columns, row_count, low, high)).encode()).hexdigest()[:16]
    return SourceProfile(int(row_count), columns, low, high, digest)
