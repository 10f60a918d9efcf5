"""Schedules of the code location."""

import dagster as dg

from assets.names import weekly_schedule
from pipelines.jobs import RETRAIN_JOBS

WEEKLY_RETRAIN = [
    dg.ScheduleDefinition(
        name=weekly_schedule(job.name),
        job=job,
        cron_schedule="0 3 * * 1",
        description="Retrain every Monday at 03:00 UTC regardless of drift.",
    )
    for job in RETRAIN_JOBS
]

SCHEDULES = [*WEEKLY_RETRAIN]
