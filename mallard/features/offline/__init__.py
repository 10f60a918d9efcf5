"""The offline store (Delta tables of every row version) and the point-in-time engine.

Importing this package is cheap: duckdb, pyarrow, pandas and deltalake load on first use.
"""

from mallard.features.offline.engine import (
    PLANS,
    ViewRead,
    choose_plan,
    default_connection,
    get_historical_features,
)
from mallard.features.offline.store import (
    CREATED_TS,
    EVENT_TS,
    PARTITION,
    SEQ,
    OfflineStoreError,
    WriteResult,
    projection_path,
    read_view_table,
    rebuild_projection,
    table_exists,
    valid_projection,
    write_view_partition,
)

__all__ = [
    "CREATED_TS",
    "EVENT_TS",
    "PARTITION",
    "PLANS",
    "SEQ",
    "OfflineStoreError",
    "ViewRead",
    "WriteResult",
    "choose_plan",
    "default_connection",
    "get_historical_features",
    "projection_path",
    "read_view_table",
    "rebuild_projection",
    "table_exists",
    "valid_projection",
    "write_view_partition",
]
