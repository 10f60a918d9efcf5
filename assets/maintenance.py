"""Lake maintenance as an asset: every Delta table Mallard owns vacuumed, the logs compacted.

The retention and which folders are compacted are declared in catalog/maintenance.py; a run's
config can lower or raise the retention (`retention_hours`) or only report (`dry_run`).
"""

from typing import Any

import dagster as dg
from pydantic import Field

from assets.names import LAKE_MAINTENANCE
from catalog.features import FEATURE_STORE_OWNER
from catalog.maintenance import LAKE_MAINTENANCE as POLICY
from resources import LakeResource

DECLARED_HOURS = int(POLICY.retention.total_seconds() // 3600)


class LakeMaintenanceConfig(dg.Config):
    retention_hours: int = Field(
        default=DECLARED_HOURS,
        ge=0,
        description="How long replaced versions stay readable, and how old an unreferenced file "
        f"must be to go (declared: {DECLARED_HOURS} h, catalog/maintenance.py).",
    )
    dry_run: bool = Field(default=False, description="Report what would go; delete nothing.")


@dg.asset(
    name=LAKE_MAINTENANCE,
    group_name="maintenance",
    owners=[FEATURE_STORE_OWNER],
    kinds={"deltalake"},
    description="Vacuums every Delta table under the lake root (the files no version within the "
    "retention reads, and those of writes that never committed once older than the retention) "
    "without moving any table's version, and compacts the append-only logs declared in "
    "catalog/maintenance.py.",
)
def lake_maintenance(
    context: dg.AssetExecutionContext, config: LakeMaintenanceConfig, lake: LakeResource
) -> dg.MaterializeResult:
    import datetime as dt

    from mallard.lake.maintenance import maintain_lake

    report = maintain_lake(
        lake.settings().lake_dir,
        POLICY,
        retention=dt.timedelta(hours=config.retention_hours),
        dry_run=config.dry_run,
        log=context.log.info,
    )
    metadata: dict[str, Any] = {
        "tables": len(report.tables),
        "files_removed": report.removed,
        "mb_removed": round(report.removed_bytes / 1e6, 2),
        "retention_hours": config.retention_hours,
        "dry_run": config.dry_run,
        "report": dg.MetadataValue.json([t.as_dict() for t in report.tables]),
    }
    if report.errors:
        raise dg.Failure(
            description="not maintained: "
            + "; ".join(f"{t.table} ({t.error})" for t in report.errors),
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


MAINTENANCE_ASSETS = [lake_maintenance]
