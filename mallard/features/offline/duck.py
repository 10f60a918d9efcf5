"""The point-in-time engine's DuckDB settings, on connections from `mallard.lake`.

Connections come from `mallard.lake.duck` (the one place DuckDB is opened, with the memory limit
and spill folder of the settings); this module only adds what the engine's plans rely on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb


def open_database(
    memory_limit: str | None = None, threads: int | None = None
) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB database for the engine: delta, UTC, bounded memory, spill dir."""
    from mallard.config import get_settings
    from mallard.lake.duck import connect

    con = connect(
        extensions=("delta",), threads=threads, memory_limit=memory_limit, settings=get_settings()
    )
    return prepare(con)


def prepare(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    tune(con)
    return con


def tune(con: duckdb.DuckDBPyConnection) -> None:
    """Settings the engine's plans rely on.

    DuckDB rewrites an ASOF join whose left side it estimates small into a nested-loop join; its
    estimates for Arrow scans and filtered Delta scans are poor, and the rewrite took 20 s where
    the ASOF join takes 0.1 s, so the engine keeps the ASOF join it asked for.
    """
    con.execute("SET asof_loop_join_threshold = 0")


def cursor() -> duckdb.DuckDBPyConnection:
    """A fresh cursor of the process-wide offline-store database, tuned for the engine."""
    from mallard.lake.duck import shared_cursor

    return prepare(shared_cursor())
