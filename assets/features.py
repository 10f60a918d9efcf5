"""Feature views as daily partitioned assets, a training set, and the online store.

One asset per `FeatureView` in catalog/features.py: adding a declaration grows the graph.
"""

import datetime as dt

import dagster as dg

from assets.common import daily_partitions, markdown_table, partition_days
from catalog.features import FEATURE_STORE_OWNER, FEATURE_VIEWS
from mallard.features.specs import FeatureView
from resources import LakeDuckDBResource, LakeResource, OnlineStoreResource

BACKFILL_CHUNK_DAYS = 31


def build_feature_view_asset(view: FeatureView) -> dg.AssetsDefinition:
    """A daily partitioned asset that computes the view with DuckDB into its Delta table.

    Every partition of the run is computed and checked before anything is written: a row that
    breaks a declared expectation fails the run with the rows and rules named, and no partition
    is committed, so the online store and training sets never see it.
    """
    expectations = dg.AssetCheckSpec(
        "expectations",
        asset=view.name,
        blocking=True,
        description="Declared not-null, range and allowed-value rules, checked before the "
        "commit: a failing row fails the run and nothing is written.",
    )
    keys_and_time = dg.AssetCheckSpec(
        "keys_and_timestamps",
        asset=view.name,
        description="Rows with a null key or event timestamp (and source rows with a null "
        "timestamp) are rejected and counted; a warning, the rest is written.",
    )

    @dg.asset(
        name=view.name,
        group_name="features",
        description=view.description,
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[source.name for source in view.sources],
        check_specs=[expectations, keys_and_time],
        kinds={"duckdb", "delta"},
        owners=[view.owner] if "@" in view.owner else None,
        tags={**view.tags},
        freshness_policy=dg.FreshnessPolicy.time_window(
            fail_window=view.freshness + dt.timedelta(hours=12), warn_window=view.freshness
        ),
        metadata={
            "ttl": str(view.ttl),
            "join_keys": ", ".join(view.join_keys),
            "features": ", ".join(view.feature_names),
        },
    )
    def _feature_view(
        context: dg.AssetExecutionContext, lake: LakeResource, duckdb: LakeDuckDBResource
    ):
        from mallard.features.compute import (
            RejectedRows,
            check_expectations,
            column_profile,
            compute_partition,
            null_source_timestamps,
            open_sources,
            rejected_rows,
            validate_view,
        )
        from mallard.features.offline.store import RUN_ID_KEY, write_view_partitions
        from mallard.features.versions import register_version

        settings = lake.settings()
        days = partition_days(context)
        with duckdb.get_connection() as con:
            open_sources(view, settings, con)
            validate_view(view, settings, con)
            version = register_version(settings, view)
            unrecorded = unrecorded_commits(context, version.table_path)
            context.log.info(
                f"{version.label}: computing {len(days)} partition(s) {days[0]} … {days[-1]}"
            )
            parts = {day: compute_partition(view, settings, day, con) for day in days}
            rejected = null_source_timestamps(view, settings, con)
        failures: dict[tuple[str, str], int] = {}
        examples: dict[str, list] = {}
        per_day_rejected: dict[dt.date, RejectedRows] = {}
        for day, table in parts.items():
            per_day_rejected[day] = rejected_rows(view, table)
            rejected = rejected + per_day_rejected[day]
            for result in check_expectations(view, table):
                key = (result.feature, result.rule)
                failures[key] = failures.get(key, 0) + result.failing_rows
                if result.examples:
                    shown = examples.setdefault(f"{result.feature} {result.rule}", [])
                    shown += [{"day": day.isoformat(), **row} for row in result.examples]
        failing = {f"{feature} {rule}": n for (feature, rule), n in failures.items() if n}
        yield dg.AssetCheckResult(
            check_name="expectations",
            passed=not failing,
            metadata={
                "failing_rows": dg.MetadataValue.json(failing),
                "examples": dg.MetadataValue.json({k: v[:5] for k, v in examples.items()}),
                "rules_checked": len(failures),
            },
            description="; ".join(f"{k}: {v} rows" for k, v in failing.items())
            or "all rows meet the expectations",
        )
        if failing:
            # Nothing is written: the previous version of every partition stays.
            raise dg.Failure(
                description=f"{view.name}: refused to write {len(days)} partition(s): "
                + "; ".join(
                    f"{rule}: {n} rows, e.g. {examples.get(rule, [])[:2]}"
                    for rule, n in failing.items()
                )
                + ". Fix the source rows (or the expectation in catalog/features.py) and rerun.",
                metadata={"failing_rows": dg.MetadataValue.json(failing)},
            )
        written = 0
        # A backfill is written a month at a time, one Delta commit per chunk.
        for first in range(0, len(days), BACKFILL_CHUNK_DAYS):
            chunk = days[first : first + BACKFILL_CHUNK_DAYS]
            outcome = write_view_partitions(
                version.table_path,
                {day: parts[day] for day in chunk},
                join_keys=list(view.join_keys),
                commit_metadata={RUN_ID_KEY: context.run.run_id},
            )
            written += outcome.rows_written
            context.log.info(
                f"{view.name}: {first + len(chunk)}/{len(days)} partitions written "
                f"({written:,} rows)"
            )
        for day, table in parts.items():
            context.add_asset_metadata(
                {
                    "dagster/row_count": table.num_rows - per_day_rejected[day].total,
                    "rows_rejected": per_day_rejected[day].total,
                    "profile": dg.MetadataValue.md(
                        markdown_table(column_profile(table, view.feature_names))
                    ),
                },
                partition_key=day.isoformat(),
            )
        metadata: dict[str, dg.RawMetadataValue] = {
            "rows_written_in_run": written,
            "version": version.label,
            "content_hash": version.content_hash,
            "table_path": dg.MetadataValue.path(str(version.table_path)),
            "partitions_in_run": len(days),
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(k, t) for k, t in view.join_keys.items()]
                + [dg.TableColumn(f.name, f.type, description=f.description) for f in view.features]
            ),
        }
        if unrecorded:
            metadata["unrecorded_commits"] = dg.MetadataValue.json(unrecorded)
        yield dg.MaterializeResult(metadata=metadata)
        yield dg.AssetCheckResult(
            check_name="keys_and_timestamps",
            passed=rejected.total == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "rows_rejected": rejected.total,
                "null_key": rejected.null_key,
                "null_event_timestamp": rejected.null_event_timestamp,
                "null_source_timestamp": dg.MetadataValue.json(rejected.null_source_timestamp),
            },
            description=rejected.describe(),
        )

    return _feature_view


def unrecorded_commits(context: dg.AssetExecutionContext, table_path) -> list[dict]:
    """Commits of the table by a run that recorded no materialization of this asset (it died
    between the commit and its report). Each is recorded once, as an observation of the asset
    naming the Delta version and the run, logged as a warning and returned for the metadata."""
    from mallard.features.offline.store import commits_by_run

    commits = commits_by_run(table_path)
    if not commits:
        return []
    instance, key = context.instance, context.asset_key
    recorded = {r.run_id for r in instance.fetch_materializations(key, limit=10_000).records}
    observed = {
        int(meta["delta_version"].value)
        for r in instance.fetch_observations(key, limit=10_000).records
        if r.asset_observation is not None
        and "delta_version" in (meta := r.asset_observation.metadata)
    }
    found = []
    for c in commits:
        if c.run_id in recorded or c.run_id == context.run.run_id or c.version in observed:
            continue
        commit = {"version": c.version, "run_id": c.run_id, "at": c.timestamp.isoformat()}
        found.append({**commit, "rows": c.rows})
        context.log.warning(
            f"{key.to_user_string()}: Delta version {c.version} was committed by run {c.run_id} "
            f"at {commit['at']}, which recorded no materialization (it died after the commit); "
            "recorded now as an observation"
        )
        context.log_event(
            dg.AssetObservation(
                asset_key=key,
                metadata={
                    "delta_version": c.version,
                    "committed_by_run": c.run_id,
                    "rows": c.rows,
                    "note": "committed by a run that died before reporting it",
                },
            )
        )
    return found


FEATURE_VIEW_ASSETS = [build_feature_view_asset(view) for view in FEATURE_VIEWS]


def _latest_materialized_day(instance: dg.DagsterInstance, view_names: list[str]) -> dt.date:
    """The last day every one of the views has materialized: "today" for what reads them."""
    days = []
    for name in view_names:
        partitions = instance.get_materialized_partitions(dg.AssetKey(name))
        if not partitions:
            raise dg.Failure(
                f"feature view {name!r} has no materialized partition yet; run build_features first"
            )
        days.append(max(dt.date.fromisoformat(p) for p in partitions))
    return min(days)


def build_training_set_asset(spec) -> dg.AssetsDefinition:
    """An asset that joins a label source point-in-time with a feature service."""
    from catalog.features import REGISTRY

    views = sorted({ref.view.name for ref in REGISTRY.resolve([spec.service])})

    @dg.asset(
        name=spec.name,
        group_name="training",
        description=spec.description,
        owners=[FEATURE_STORE_OWNER],
        deps=[*views, spec.label_source.name],
        kinds={"duckdb", "delta"},
    )
    def _training_set(
        context: dg.AssetExecutionContext, lake: LakeResource
    ) -> dg.MaterializeResult:
        from mallard.features.training import build_training_set, write_training_set

        settings = lake.settings()
        last_day = _latest_materialized_day(context.instance, views)
        as_of = dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        frame, versions = build_training_set(spec, REGISTRY, settings, as_of)
        info = write_training_set(spec, frame, versions, settings, as_of)
        context.log.info(
            f"{spec.name}: {info.rows:,} rows as of {as_of:%Y-%m-%d}, views {versions}"
        )
        label_stats = {label: round(float(frame[label].mean()), 4) for label in spec.labels}
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": info.rows,
                "as_of": info.as_of,
                "delta_version": info.delta_version,
                "feature_versions": dg.MetadataValue.json(versions),
                "label_means": dg.MetadataValue.json(label_stats),
                "feature_null_rates": dg.MetadataValue.json(
                    {c: round(float(frame[c].isna().mean()), 4) for c in info.features}
                ),
                "table_path": dg.MetadataValue.path(info.path),
            }
        )

    return _training_set


def _training_set_assets() -> list[dg.AssetsDefinition]:
    from catalog.features import TRAINING_SETS

    return [build_training_set_asset(spec) for spec in TRAINING_SETS]


TRAINING_SET_ASSETS = _training_set_assets()


@dg.asset(
    name="online_store",
    group_name="features",
    description="The latest value of every feature view per customer, loaded incrementally into "
    "the online store (SQLite embedded, Redis in production) for low-latency reads.",
    deps=[view.name for view in FEATURE_VIEWS],
    owners=[FEATURE_STORE_OWNER],
    kinds={"sqlite", "redis"},
)
def online_store(
    context: dg.AssetExecutionContext, lake: LakeResource, online_store: OnlineStoreResource
) -> dg.MaterializeResult:
    """Materialize every view's newest rows into the online store (only what changed)."""
    from catalog.features import REGISTRY
    from mallard.features.materialize import materialize_online

    settings = lake.settings()
    with online_store.open() as store:
        stats = materialize_online(REGISTRY, settings, store, progress=context.log.info)
        kind = store.kind
    rows = [
        {
            "view": s.version,
            "new rows": s.rows_read,
            "keys updated": s.keys_applied,
            "keys deleted": s.keys_deleted,
            "load": "full (atomic swap)" if s.full else "incremental",
            "watermark": s.watermark or "",
            "seconds": round(s.seconds, 2),
        }
        for s in stats
    ]
    return dg.MaterializeResult(
        metadata={
            "backend": kind,
            "keys_updated": sum(s.keys_applied for s in stats),
            "keys_deleted": sum(s.keys_deleted for s in stats),
            "views": dg.MetadataValue.md(markdown_table(rows)),
        }
    )
