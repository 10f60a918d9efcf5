"""Sensors of the daily loop: a new day in the sources gets that day's runs.

When the sources reach a day the pipeline has not handled (the sample world grows with
`mallard demo-data --add-days`; a production source grows every day), the next ticks request, in
order: the feature views for the new days, then, once those are materialized, the online store
and each watched model's scoring and drift, and each model's outcomes for the days whose labels
have now arrived. The retraining sensor then judges the new days' drift and performance.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import dagster as dg

from assets.common import daily_partitions
from assets.names import monitor_job, monitoring_asset, outcomes_job
from catalog.features import FEATURE_VIEWS, REGISTRY
from catalog.models import MODELS
from catalog.monitoring import MONITORED
from mallard.features.sources import Source
from resources import LakeDuckDBResource, LakeResource

NAME = "new_source_days"
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
# One process per run: the steps share its imports instead of each loading the code location.
IN_PROCESS: dict[str, Any] = {"execution": {"config": {"in_process": {}}}}


def daily_sources() -> list[Source]:
    """The timestamped sources the daily feature views read."""
    found: dict[str, Source] = {}
    for view in FEATURE_VIEWS:
        for source in view.sources:
            if source.timestamp_field:
                found.setdefault(source.name, source)
    return list(found.values())


def newest_source_day(settings, con) -> dt.date | None:
    """The newest UTC day any daily source has an event on (None: no timestamped rows)."""
    from mallard.lake.duck import load_extension

    con.execute("SET TimeZone = 'UTC'")
    newest: dt.date | None = None
    for source in daily_sources():
        for ext in source.extensions:
            load_extension(con, ext)
        for statement in source.setup_sql():
            con.execute(statement)
        row = con.execute(
            f'SELECT CAST(max("{source.timestamp_field}") AS DATE) FROM {source.relation_sql(settings)}'
        ).fetchone()
        if row and row[0] is not None:
            newest = row[0] if newest is None else max(newest, row[0])
    return newest


def _materialized_through(instance: dg.DagsterInstance, assets: list[str]) -> dt.date | None:
    """The last day every one of the assets has materialized (None: one has none)."""
    days = []
    for name in assets:
        partitions = instance.get_materialized_partitions(dg.AssetKey(name))
        if not partitions:
            return None
        days.append(max(dt.date.fromisoformat(p) for p in partitions))
    return min(days)


def _model_views(model: str) -> list[str]:
    return sorted({ref.view.name for ref in REGISTRY.resolve([MODELS.get(model).feature_service])})


ONE_DAY = dt.timedelta(days=1)


def _day(value: str | None) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


def range_request(job: str, first: dt.date, last: dt.date, **tags: str) -> dg.RunRequest:
    """One run of `job` over the days first … last (a single-run backfill of the range)."""
    return dg.RunRequest(
        run_key=f"{job}:{first}:{last}",
        job_name=job,
        run_config=IN_PROCESS,
        tags={
            RANGE_START: first.isoformat(),
            RANGE_END: last.isoformat(),
            "mallard/day": last.isoformat(),
            **tags,
        },
    )


def handled_cursor(
    features: dt.date, online: dt.date, monitored: dt.date, outcomes: dt.date | None
) -> str:
    """The cursor of a pipeline that has handled features, the online store and each watched
    model's scoring up to those days and its outcomes up to `outcomes` (what the demo hands on)."""
    return json.dumps(
        {
            "features": features.isoformat(),
            "online": online.isoformat(),
            "monitored": {mon.model: monitored.isoformat() for mon in MONITORED},
            "outcomes": {
                mon.model: outcomes.isoformat() if outcomes else None for mon in MONITORED
            },
        },
        sort_keys=True,
    )


def _new_source_days(
    context: dg.SensorEvaluationContext, lake: LakeResource, duckdb: LakeDuckDBResource
):
    """Request the runs of the days the sources reached since the cursor."""
    settings = lake.settings()
    instance = context.instance
    with duckdb.get_connection() as con:
        newest = newest_source_day(settings, con)
    if newest is None:
        return dg.SkipReason("the daily sources have no timestamped rows yet")
    cursor = json.loads(context.cursor) if context.cursor else {}
    built = _materialized_through(instance, [view.name for view in FEATURE_VIEWS])
    if "features" not in cursor:
        # Switched on without a cursor: the days already built (or, with none, today's sources)
        # are the starting point; earlier days are a backfill, not this sensor's business.
        start = built or newest
        context.update_cursor(handled_cursor(start, start, start, start))
        return dg.SkipReason(f"starting from {start}: new days after it get their runs")

    requests: list[dg.RunRequest] = []
    waiting = ""
    last_partition = dt.date.fromisoformat(
        daily_partitions.get_last_partition_key() or "1970-01-01"
    )
    features_day = dt.date.fromisoformat(cursor["features"])
    if newest > features_day:
        last = min(newest, last_partition)
        if last > features_day:
            requests.append(range_request("build_features", features_day + ONE_DAY, last))
            cursor["features"] = last.isoformat()
        if newest > last:
            waiting = f"; days after {last} wait for their daily partition"
    online_day = _day(cursor.get("online"))
    if built is not None and (online_day is None or built > online_day):
        requests.append(
            dg.RunRequest(
                run_key=f"load_online_store:{built}",
                job_name="load_online_store",
                run_config=IN_PROCESS,
                tags={"mallard/day": built.isoformat()},
            )
        )
        cursor["online"] = built.isoformat()
    monitored, joined = cursor.setdefault("monitored", {}), cursor.setdefault("outcomes", {})
    for mon in MONITORED:
        scored_day = _day(monitored.get(mon.model))
        ready = _materialized_through(instance, _model_views(mon.model))
        if ready is not None and (scored_day is None or ready > scored_day):
            first = scored_day + ONE_DAY if scored_day else ready
            requests.append(range_request(monitor_job(mon.model), first, ready))
            monitored[mon.model] = ready.isoformat()
        joined_day = _day(joined.get(mon.model))
        known = newest - dt.timedelta(days=mon.label_delay_days)
        scored = _materialized_through(instance, [monitoring_asset(mon.model, "predictions")])
        labelled = min(known, scored) if scored else None
        if labelled is not None and (joined_day is None or labelled > joined_day):
            first = joined_day + ONE_DAY if joined_day else labelled
            requests.append(range_request(outcomes_job(mon.model), first, labelled))
            joined[mon.model] = labelled.isoformat()
    context.update_cursor(json.dumps(cursor, sort_keys=True))
    if requests:
        return requests
    return dg.SkipReason(f"every day up to {features_day} is handled{waiting}")


def build_new_days_sensor(jobs: list) -> dg.SensorDefinition:
    """The new-days sensor, targeting build_features, load_online_store and each watched model's
    monitor and outcomes jobs."""
    return dg.sensor(
        name=NAME,
        description="When the sources reach a new day: builds its features, then loads the online "
        "store and scores and drift-checks the day with each watched model, and collects the "
        "outcomes of the days whose labels have arrived (one in-process run per job and range).",
        jobs=jobs,
        minimum_interval_seconds=60,
    )(_new_source_days)
