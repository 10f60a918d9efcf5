"""The data plane: DuckDB connections (with offline extensions) and Delta Lake tables."""

from mallard.lake.duck import connect, extension_directory, shared_cursor

__all__ = ["connect", "extension_directory", "shared_cursor"]
