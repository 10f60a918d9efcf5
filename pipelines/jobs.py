"""Every job of the code location, by domain: the ones people launch by name, the ones sensors
request, and the ones the demo runs in order. Names come from assets/names.py."""

from __future__ import annotations

import dagster as dg

from assets.models import MODEL_ASSETS, rollback_champion
from assets.names import (
    LAKE_MAINTENANCE,
    LLM_ANALYTICS_JOB,
    MAINTAIN_LAKE_JOB,
    canary_asset,
    canary_job,
    dataset_key,
    model_assets,
    monitor_job,
    monitoring_asset,
    offline_eval_job,
    offline_eval_key,
    outcomes_job,
    promotion_key,
    retrain_job,
    shadow_job,
)
from assets.online_evals import ANALYTICS_ASSETS, shadow_comparison_key
from catalog.evals import DATASETS, EVALS
from catalog.features import TRAINING_SETS
from catalog.models import MODELS
from catalog.monitoring import MONITORED
from catalog.online_evals import ONLINE_EVALS
from resources import end_mlflow_on_run_finished

# Sources and features --------------------------------------------------------------------------
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

FEATURE_JOBS = [ingest_sources, build_features, load_online_store, build_training_sets]

# Models ----------------------------------------------------------------------------------------
# Jobs that train end every MLflow run with its step (dagster-mlflow's hook).
MLFLOW_HOOKS = {end_mlflow_on_run_finished}

train_models = dg.define_asset_job(
    "train_models",
    selection=dg.AssetSelection.assets(*MODEL_ASSETS),
    description="Train every declared model's candidate, record its statistics, evaluate it "
    "against the champion, apply the promotion rule and explain the champion.",
    hooks=MLFLOW_HOOKS,
)

RETRAIN_JOBS = [
    dg.define_asset_job(
        retrain_job(spec.name),
        selection=dg.AssetSelection.assets(spec.training_set, *model_assets(spec.name)),
        description=f"Rebuild {spec.training_set} as of today and retrain {spec.name}; the new "
        "candidate is promoted only if it beats the champion by the promotion rule.",
        tags={"mallard/retrain": spec.name},
        hooks=MLFLOW_HOOKS,
    )
    for spec in MODELS
]


@dg.job(
    name="rollback",
    description="Roll a model's champion back (config: model, to_version (0 = previous), reason).",
    hooks=MLFLOW_HOOKS,
)
def rollback_job():
    rollback_champion()


MODEL_JOBS = [train_models, *RETRAIN_JOBS, rollback_job]

# Monitoring ------------------------------------------------------------------------------------
MONITOR_JOBS = [
    dg.define_asset_job(
        monitor_job(mon.model),
        selection=dg.AssetSelection.assets(
            monitoring_asset(mon.model, "predictions"), monitoring_asset(mon.model, "drift")
        ),
        description=f"Score the day's customers with {mon.model} and report drift.",
    )
    for mon in MONITORED
]

OUTCOME_JOBS = [
    dg.define_asset_job(
        outcomes_job(mon.model),
        selection=dg.AssetSelection.assets(
            monitoring_asset(mon.model, "outcomes"), monitoring_asset(mon.model, "performance")
        ),
        description=f"Join {mon.model}'s predictions with late labels and report performance.",
    )
    for mon in MONITORED
]

MONITORING_JOBS = [*MONITOR_JOBS, *OUTCOME_JOBS]

# LLM and evals ---------------------------------------------------------------------------------
llm_prompts = dg.define_asset_job(
    "llm_prompts",
    selection=dg.AssetSelection.groups("llm"),
    description="Register prompt versions and run the support-assistant chain on a few questions.",
)

import_eval_datasets = dg.define_asset_job(
    "import_eval_datasets",
    selection=dg.AssetSelection.assets(*[dataset_key(d.name) for d in DATASETS]),
    description="Import the declared eval datasets (a changed file becomes a new version).",
)

calibrate_judges = dg.define_asset_job(
    "calibrate_judges",
    selection=dg.AssetSelection.assets("judge_calibration"),
    description="Measure each judge's agreement with the human verdicts.",
)

promote_prompt = dg.define_asset_job(
    "promote_prompt",
    selection=dg.AssetSelection.assets(*[promotion_key(ev.name) for ev in EVALS if ev.gate]),
    description="Run the promotion gate: move `live` to the candidate only if the evals allow it.",
)

OFFLINE_EVAL_JOBS = [
    dg.define_asset_job(
        offline_eval_job(ev.name),
        selection=dg.AssetSelection.assets(offline_eval_key(ev.name)),
        description=f"Run offline eval {ev.name} for one prompt version (partition).",
    )
    for ev in EVALS
]

llm_analytics = dg.define_asset_job(
    LLM_ANALYTICS_JOB,
    selection=dg.AssetSelection.assets(*ANALYTICS_ASSETS),
    description="Quality trends, the model comparison and costs of production traffic, and the "
    "alert rules and budgets checked on them (catalog/online_evals.py).",
)

SHADOW_JOBS = [
    dg.define_asset_job(
        shadow_job(spec.name),
        selection=dg.AssetSelection.assets(shadow_comparison_key(spec.name)),
        description=f"Replay {spec.prompt}'s shadow candidate on {spec.name}'s newest graded "
        "live traces and compare it with live: promote, keep or needs more traffic.",
    )
    for spec in ONLINE_EVALS
    if spec.has_shadow
]

LLM_JOBS = [
    llm_prompts,
    import_eval_datasets,
    calibrate_judges,
    *OFFLINE_EVAL_JOBS,
    promote_prompt,
]
LLM_ONLINE_JOBS = [llm_analytics, *SHADOW_JOBS]
"""Jobs over production traffic (the online evals' own jobs are built with their assets)."""

# Maintenance -----------------------------------------------------------------------------------
maintain_lake = dg.define_asset_job(
    MAINTAIN_LAKE_JOB,
    selection=dg.AssetSelection.assets(LAKE_MAINTENANCE),
    description="Vacuum every Delta table of the lake and compact the logs (retention: "
    "catalog/maintenance.py, or the run config's retention_hours).",
)

MAINTENANCE_JOBS = [maintain_lake]

# Canary ----------------------------------------------------------------------------------------
CANARY_JOBS = [
    dg.define_asset_job(
        canary_job(spec.name),
        selection=dg.AssetSelection.assets(canary_asset(spec.name)),
        description=f"Compare {spec.name}'s challenger with its champion on live outcomes and "
        "decide: promote, roll back or wait.",
    )
    for spec in MODELS
    if spec.canary is not None
]

JOBS = [
    *FEATURE_JOBS,
    *MODEL_JOBS,
    *MONITORING_JOBS,
    *LLM_JOBS,
    *LLM_ONLINE_JOBS,
    *MAINTENANCE_JOBS,
    *CANARY_JOBS,
]
