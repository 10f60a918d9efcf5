"""The traces table as an asset: what applications sent and Mallard's own calls recorded.

The table is written outside Dagster (the API's ingestion buffer, the LLM clients' recorders);
materializing the asset migrates an old table to the span schema (every row kept) and records
what the table holds: spans and traces (production and Mallard's own), spans by kind, and the
volume per hour, per model and per prompt version.
"""

import dagster as dg

from assets.names import TRACES_ASSET
from catalog.llm import OWNER
from resources import TraceStoreResource


def _table(records: list[dict], columns: list[tuple[str, str]]) -> dg.TableMetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord({name: r.get(name) for name, _ in columns}) for r in records],
        schema=dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in columns]),
    )


@dg.asset(
    name=TRACES_ASSET,
    group_name="llm",
    owners=[OWNER],
    kinds={"delta"},
    description="Every span Mallard holds: production traffic sent to /v1/traces and "
    "/v1/otlp/v1/traces, and Mallard's own LLM calls (run_id set, never graded as production).",
)
def traces_table(
    context: dg.AssetExecutionContext, traces: TraceStoreResource
) -> dg.MaterializeResult:
    """Migrate the traces table if it is old, and record its volume per hour, model and prompt
    version (docs/TRACES.md)."""
    store = traces.store()
    migration = store.migrate()
    if migration is not None:
        context.log.info(
            f"migrated {store.table_path} to spans: {migration.rows_before} rows kept "
            f"(version {migration.read_version} → {migration.written_version})"
        )
    summary = store.summary(hours=48)
    metadata: dict[str, dg.RawMetadataValue] = {
        "dagster/row_count": summary["spans"],
        "traces": summary["traces"],
        "production_spans": summary["production_spans"],
        "own_spans": summary["own_spans"],
        "spans_by_kind": dg.MetadataValue.json(summary["by_kind"]),
        "volume_per_hour": _table(
            summary["per_hour"],
            [
                ("hour", "string"),
                ("spans", "int"),
                ("traces", "int"),
                ("errors", "int"),
                ("own", "int"),
            ],
        ),
        "volume_per_model": _table(
            summary["per_model"],
            [
                ("model", "string"),
                ("calls", "int"),
                ("errors", "int"),
                ("prompt_tokens", "int"),
                ("completion_tokens", "int"),
                ("cost_usd", "float"),
                ("p50_latency_ms", "float"),
                ("p99_latency_ms", "float"),
            ],
        ),
        "volume_per_prompt_version": _table(
            summary["per_prompt_version"],
            [
                ("prompt_name", "string"),
                ("prompt_version", "int"),
                ("calls", "int"),
                ("traces", "int"),
            ],
        ),
        "location": dg.MetadataValue.path(str(store.table_path)),
    }
    if "first" in summary:
        metadata["first_span"] = summary["first"]
        metadata["last_span"] = summary["last"]
    if migration is not None:
        metadata["migration"] = dg.MetadataValue.json(migration.as_dict())
    version = store.version()
    return dg.MaterializeResult(
        metadata=metadata,
        data_version=dg.DataVersion(f"v{version}" if version is not None else "empty"),
    )


TRACE_ASSETS = [traces_table]
