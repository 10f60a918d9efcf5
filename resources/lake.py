"""The lake resource: Mallard's settings and DuckDB connections for assets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dagster as dg

from mallard.config import Settings, load_settings

if TYPE_CHECKING:
    import duckdb


class LakeResource(dg.ConfigurableResource):
    """Where Mallard's data lives (MALLARD_HOME) and how assets open DuckDB on it."""

    home: str

    def settings(self) -> Settings:
        return load_settings(home=self.home)

    def connect(self, extensions: tuple[str, ...] = ()) -> duckdb.DuckDBPyConnection:
        from mallard.lake import connect

        return connect(extensions=extensions)


def resources_for_env(env: str) -> dict[str, Any]:
    """The resources for one MALLARD_ENV: `local` (embedded) or `prod` (explicit locations)."""
    if env == "local":
        from mallard.config import get_settings

        return {"lake": LakeResource(home=str(get_settings().home))}
    if env == "prod":
        # Production names every location explicitly; nothing falls back to a working directory.
        return {"lake": LakeResource(home=dg.EnvVar("MALLARD_HOME"))}
    raise ValueError(f"MALLARD_ENV={env!r} is not valid: choose local or prod")
