"""The online store: SQLite under MALLARD_HOME, or Redis."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import dagster as dg

from resources.lake import LakeResource

if TYPE_CHECKING:
    from mallard.features.online import OnlineStore


class OnlineStoreResource(dg.ConfigurableResource):
    """The feature views' newest values for low-latency reads; `open()` it in a `with` block."""

    lake: LakeResource
    kind: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = ""

    def open(self) -> OnlineStore:
        from mallard.features.online import open_online_store

        if self.kind == "redis":
            if not self.redis_url:
                raise dg.Failure(
                    "the online store is redis but redis_url is empty: set MALLARD_REDIS_URL"
                )
            return open_online_store("redis", url=self.redis_url)
        return open_online_store("sqlite", path=str(self.lake.settings().online_store_path))
