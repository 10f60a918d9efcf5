"""The offline store's DuckDB database: opened once per process, delta loaded, memory bounded.

Loading the delta extension costs a few hundred milliseconds, so every reader and writer in the
process shares one database and takes a cursor of it (a cursor is a connection of its own, safe
to use in its thread).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

_lock = threading.Lock()
_database: duckdb.DuckDBPyConnection | None = None


def default_memory_limit() -> str:
    """MALLARD_DUCKDB_MEMORY_LIMIT, else 1 GiB (at most a quarter of the machine).

    The engine's joins stream or spill beyond it (to MALLARD_HOME/tmp/duckdb), so a training set
    over 10M rows per view runs in about 1.7 GiB of process memory; a larger limit buys little
    speed (23 s against 27 s at 1M entity rows x 10M rows per view on 2 cores) for much more memory.
    """
    configured = os.environ.get("MALLARD_DUCKDB_MEMORY_LIMIT")
    if configured:
        return configured
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # pragma: no cover
        return "1GB"
    mib = min(total // 4, 1024**3) // 1024**2
    return f"{max(mib, 256)}MB"


def open_database(
    memory_limit: str | None = None, threads: int | None = None
) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB database for the engine: delta, UTC, bounded memory, spill dir."""
    from mallard.config import get_settings
    from mallard.lake.duck import connect

    con = connect(
        extensions=("delta",), threads=threads, memory_limit=memory_limit or default_memory_limit()
    )
    spill = get_settings().home / "tmp" / "duckdb"
    spill.mkdir(parents=True, exist_ok=True)
    con.execute("SET temp_directory = ?", [str(spill)])
    prepare(con)
    return con


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
    """A fresh cursor of the process-wide database (close it when done)."""
    global _database
    with _lock:
        if _database is None:
            _database = open_database()
        return prepare(_database.cursor())
