"""The online store: the latest feature values per entity key, one table per feature view.

`open_online_store()` gives the configured backend: SQLite (embedded default, at
`settings.online_store_path`) or Redis (`kind="redis"`, `url=...`).
"""

from __future__ import annotations

from typing import Any

from mallard.features.online.base import (
    MISSING,
    MISSING_VIEW,
    PRESENT,
    STALE,
    OnlineResult,
    OnlineStore,
    OnlineStoreError,
    ReadRequest,
    ViewSchema,
    WriteStats,
)


def open_online_store(kind: str = "sqlite", **options: Any) -> OnlineStore:
    """An online store backend: `sqlite` (path=...) or `redis` (url=..., prefix=...)."""
    if kind == "sqlite":
        from mallard.features.online.sqlite import SqliteOnlineStore

        return SqliteOnlineStore(**options)
    if kind == "redis":
        from mallard.features.online.redis import RedisOnlineStore

        return RedisOnlineStore(**options)
    raise ValueError(f"unknown online store kind {kind!r}: choose 'sqlite' or 'redis'")


__all__ = [
    "MISSING",
    "MISSING_VIEW",
    "PRESENT",
    "STALE",
    "OnlineResult",
    "OnlineStore",
    "OnlineStoreError",
    "ReadRequest",
    "ViewSchema",
    "WriteStats",
    "open_online_store",
]
