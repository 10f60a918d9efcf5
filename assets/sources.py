"""Raw sources as assets: each materialization checks the source and records what it holds."""

import dagster as dg

from catalog.sources import SOURCES
from mallard.features.sources import Source
from resources import LakeDuckDBResource, LakeResource


def build_source_asset(source: Source) -> dg.AssetsDefinition:
    """An asset that reads one declared source through DuckDB and records its profile."""

    checks = (
        [
            dg.AssetCheckSpec(
                "required_not_null",
                asset=source.name,
                blocking=True,
                description=f"No null in {', '.join(source.required)}: a row without them "
                "cannot be placed or joined.",
            )
        ]
        if source.required
        else []
    )

    @dg.asset(
        name=source.name,
        check_specs=checks,
        group_name="sources",
        description=source.description or f"The {source.name} source.",
        kinds={"duckdb", source.kind},
        owners=[source.owner] if source.owner and "@" in source.owner else None,
        tags={"source_kind": source.kind, **source.tags},
    )
    def _source_asset(
        context: dg.AssetExecutionContext, lake: LakeResource, duckdb: LakeDuckDBResource
    ) -> dg.MaterializeResult:
        from mallard.features.sources import profile_source

        settings = lake.settings()
        with duckdb.get_connection() as con:
            profile = profile_source(source, settings, con)
        context.log.info(
            f"{source.name}: {profile.row_count:,} rows, {len(profile.columns)} columns"
        )
        metadata: dict[str, dg.RawMetadataValue] = {
            "dagster/row_count": profile.row_count,
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(name, type_) for name, type_ in profile.columns]
            ),
            "location": dg.MetadataValue.path(
                str(settings.resolve(source.path)) if source.path else source.relation_sql(settings)
            ),
        }
        if profile.min_timestamp:
            metadata["min_timestamp"] = profile.min_timestamp
            metadata["max_timestamp"] = profile.max_timestamp
        check_results = []
        if source.required:
            failing = {column: n for column, n in profile.required_nulls.items() if n}
            check_results.append(
                dg.AssetCheckResult(
                    check_name="required_not_null",
                    passed=not failing,
                    metadata={"null_rows": dg.MetadataValue.json(profile.required_nulls)},
                    description="; ".join(f"{c}: {n} null rows" for c, n in failing.items())
                    or "no nulls in the required columns",
                )
            )
        return dg.MaterializeResult(
            metadata=metadata,
            data_version=dg.DataVersion(profile.fingerprint),
            check_results=check_results,
        )

    return _source_asset


SOURCE_ASSETS = [build_source_asset(source) for source in SOURCES]
