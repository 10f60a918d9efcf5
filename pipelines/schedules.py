"""Schedules of the code location."""

import dagster as dg

from assets.names import weekly_schedule
from pipelines.jobs import RETRAIN_JOBS, llm_analytics, maintain_lake

WEEKLY_RETRAIN = [
    dg.ScheduleDefinition(
        name=weekly_schedule(job.name),
        job=job,
        cron_schedule="0 3 * * 1",
        description="Retrain every Monday at 03:00 UTC regardless of drift.",
    )
    for job in RETRAIN_JOBS
]

NIGHTLY_MAINTENANCE = dg.ScheduleDefinition(
    name="nightly_maintain_lake",
    job=maintain_lake,
    cron_schedule="30 2 * * *",
    description="Every night at 02:30 UTC: vacuum every Mallard-owned Delta table (files older "
    "than the retention declared in catalog/maintenance.py) and compact the append-only logs.",
)

HOURLY_LLM_ANALYTICS = dg.ScheduleDefinition(
    name="hourly_llm_analytics",
    job=llm_analytics,
    cron_schedule="5 * * * *",
    description="Every hour at :05: the quality trends, model comparison and costs of production "
    "traffic, and the alert rules and budgets checked on them (a firing alert is sent once, "
    "then again only after its renotify interval).",
)

SCHEDULES = [*WEEKLY_RETRAIN, NIGHTLY_MAINTENANCE, HOURLY_LLM_ANALYTICS]

LEFT_OFF: dict[str, str] = {
    schedule.name: "the sample world grows only when `mallard demo-data --add-days` adds days, so "
    "a calendar retrain would refit the same rows every Monday; retrain_on_drift_or_decay "
    "retrains on fresh evidence. Switch it on where the sources grow every day."
    for schedule in WEEKLY_RETRAIN
}
"""The schedules and sensors `make demo` leaves STOPPED, each with why (the README lists them);
every other one it leaves RUNNING, with the cursors the demo reached."""
