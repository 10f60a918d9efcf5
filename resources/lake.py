"""The lake: MALLARD_HOME and the Delta lake's root (the settings every library call takes), and
DuckDB connections on it through dagster-duckdb's resource."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import dagster as dg
from dagster_duckdb import DuckDBResource

from mallard.config import Settings, load_settings

if TYPE_CHECKING:
    from collections.abc import Iterator

    import duckdb


class LakeResource(dg.ConfigurableResource):
    """Where Mallard's data lives: MALLARD_HOME, and the lake root (default `<home>/lake`)."""

    home: str
    lake_root: str = ""
    duckdb_memory_limit: str = ""

    def settings(self) -> Settings:
        """Mallard's settings with this lake's locations (the rest from MALLARD_* variables)."""
        overrides: dict[str, object] = {"home": self.home}
        if self.lake_root:
            overrides["lake_root"] = self.lake_root
        if self.duckdb_memory_limit:
            overrides["duckdb_memory_limit"] = self.duckdb_memory_limit
        return load_settings(**overrides)


class LakeDuckDBResource(DuckDBResource):
    """dagster-duckdb's resource, with connections opened by `mallard.lake`: the offline
    extensions from their PyPI wheels (never downloaded), UTC, and the lake's memory limit and
    spill folder."""

    database: str = ":memory:"
    extensions: list[str] = ["delta"]
    lake: LakeResource

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:  # type: ignore[override]
        from mallard.lake import connect

        con = connect(
            self.database, extensions=tuple(self.extensions), settings=self.lake.settings()
        )
        try:
            yield con
        finally:
            con.close()
