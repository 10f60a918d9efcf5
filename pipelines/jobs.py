"""Jobs people launch by name; the demo runs them in order."""

from __future__ import annotations

import dagster as dg

from catalog.features import TRAINING_SETS
from catalog.models import MODELS
from catalog.monitoring import MONITORED

ingest_sources = dg.define_asset_job(
    "ingest_sources",
    selection=dg.AssetSelection.groups("sources"),
    description="Check every raw source and record what it holds.",
)

build_features = dg.define_asset_job(
    "build_features",
    selection=dg.AssetSelection.groups("features") - dg.AssetSelection.assets("online_store"),
    description="Compute the feature views; launch a partition range to backfill in one run.",
)

load_online_store = dg.define_asset_job(
    "load_online_store",
    selection=dg.AssetSelection.assets("online_store"),
    description="Load the feature views' newest values into the online store.",
)

build_training_sets = dg.define_asset_job(
    "build_training_sets",
    selection=dg.AssetSelection.assets(*[t.name for t in TRAINING_SETS]),
    description="Join labels with point-in-time features into training sets.",
)

MODEL_STAGES = ("candidate", "training_statistics", "evaluation", "champion", "explanations")


def _model_assets(model: str) -> list[str]:
    return [f"{model}_{stage}" for stage in MODEL_STAGES]


RETRAIN_JOBS = [
    dg.define_asset_job(
        f"retrain_{spec.name}",
        selection=dg.AssetSelection.assets(spec.training_set, *_model_assets(spec.name)),
        description=f"Rebuild {spec.training_set} as of today and retrain {spec.name}; the new "
        "candidate is promoted only if it beats the champion by the promotion rule.",
        tags={"mallard/retrain": spec.name},
    )
    for spec in MODELS
]

MONITOR_JOBS = [
    dg.define_asset_job(
        f"monitor_{mon.model}",
        selection=dg.AssetSelection.assets(f"{mon.model}_predictions", f"{mon.model}_drift"),
        description=f"Score the day's customers with {mon.model} and report drift.",
    )
    for mon in MONITORED
]

OUTCOME_JOBS = [
    dg.define_asset_job(
        f"collect_outcomes_{mon.model}",
        selection=dg.AssetSelection.assets(f"{mon.model}_outcomes", f"{mon.model}_performance"),
        description=f"Join {mon.model}'s predictions with late labels and report performance.",
    )
    for mon in MONITORED
]

llm_prompts = dg.define_asset_job(
    "llm_prompts",
    selection=dg.AssetSelection.groups("llm"),
    description="Register prompt versions and run the support-assistant chain on a few questions.",
)

JOBS = [
    ingest_sources,
    build_features,
    load_online_store,
    build_training_sets,
    *RETRAIN_JOBS,
    *MONITOR_JOBS,
    *OUTCOME_JOBS,
    llm_prompts,
]

WEEKLY_RETRAIN = [
    dg.ScheduleDefinition(
        name=f"weekly_{job.name}",
        job=job,
        cron_schedule="0 3 * * 1",
        description="Retrain every Monday at 03:00 UTC regardless of drift.",
    )
    for job in RETRAIN_JOBS
]
