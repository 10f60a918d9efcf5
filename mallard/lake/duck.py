"""The one way Mallard opens DuckDB: offline extensions, UTC, bounded memory, a spill folder.

DuckDB would otherwise try to download extensions at run time, which is not allowed here: the
extension binaries come from the `duckdb-ext-*` PyPI packages pinned in uv.lock. Every setting
(memory limit, spill folder) comes from `mallard.config.Settings`.

Loading the delta extension costs a few hundred milliseconds, so the offline store's readers and
writers share one process-wide database and take a cursor of it (`shared_cursor`): a cursor is a
connection of its own, safe to use in its thread.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

    from mallard.config import Settings

KNOWN_EXTENSIONS = ("delta", "postgres", "iceberg")

_lock = threading.Lock()
_shared: dict[tuple[str, str], duckdb.DuckDBPyConnection] = {}


def extension_directory() -> Path:
    """The folder in site-packages holding the offline DuckDB extension binaries."""
    spec = importlib.util.find_spec("duckdb_ext")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The duckdb-ext-* packages are not installed: run `make install` (uv sync)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "extensions"


def default_memory_limit(settings: Settings | None = None) -> str:
    """MALLARD_DUCKDB_MEMORY_LIMIT, else 1 GiB (at most a quarter of the machine).

    The engine's joins stream or spill beyond it (to MALLARD_HOME/tmp/duckdb), so a training set
    over 10M rows per view runs in about 1.7 GiB of process memory; a larger limit buys little
    speed (23 s against 27 s at 1M entity rows x 10M rows per view on 2 cores) for much more memory.
    """
    if settings is not None and settings.duckdb_memory_limit:
        return settings.duckdb_memory_limit
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # pragma: no cover
        return "1GB"
    mib = min(total // 4, 1024**3) // 1024**2
    return f"{max(mib, 256)}MB"


def connect(
    database: str | Path = ":memory:",
    *,
    extensions: tuple[str, ...] = (),
    read_only: bool = False,
    threads: int | None = None,
    memory_limit: str | None = None,
    settings: Settings | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that loads the offline extensions and never downloads any.

    With `settings`, the connection also gets the configured memory limit (unless one is given)
    and spills to `settings.duckdb_spill_dir`.
    """
    import duckdb

    config: dict[str, str | bool | int | float | list[str]] = {
        "extension_directory": str(extension_directory()),
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    if threads is not None:
        config["threads"] = threads
    if memory_limit is None and settings is not None:
        memory_limit = default_memory_limit(settings)
    if memory_limit is not None:
        config["memory_limit"] = memory_limit
    con = duckdb.connect(str(database), read_only=read_only, config=config)
    if settings is not None:
        settings.duckdb_spill_dir.mkdir(parents=True, exist_ok=True)
        con.execute("SET temp_directory = ?", [str(settings.duckdb_spill_dir)])
    con.execute("SET TimeZone = 'UTC'")
    for name in extensions:
        load_extension(con, name)
    return con


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Load one of the offline extensions into a connection."""
    if name not in KNOWN_EXTENSIONS:
        raise ValueError(f"unknown DuckDB extension {name!r}: choose one of {KNOWN_EXTENSIONS}")
    con.execute(f"LOAD {name}")


def shared_cursor(settings: Settings | None = None) -> duckdb.DuckDBPyConnection:
    """A fresh cursor of the process-wide offline-store database (close it when done).

    One database per memory limit and spill folder, opened on first use with delta loaded.
    """
    if settings is None:
        from mallard.config import get_settings

        settings = get_settings()
    key = (default_memory_limit(settings), str(settings.duckdb_spill_dir))
    with _lock:
        database = _shared.get(key)
        if database is None:
            database = _shared[key] = connect(extensions=("delta",), settings=settings)
        cursor = database.cursor()
    cursor.execute("SET TimeZone = 'UTC'")
    return cursor
