"""The Dagster code location: every asset, job, schedule, sensor and resource, assembled once."""

from __future__ import annotations

import dagster as dg

from assets.canary import CANARY_ASSETS
from assets.features import FEATURE_VIEW_ASSETS, TRAINING_SET_ASSETS, online_store
from assets.llm import LLM_ASSETS
from assets.llm_evals import EVAL_ASSETS
from assets.maintenance import MAINTENANCE_ASSETS
from assets.models import MODEL_ASSETS
from assets.monitoring import MONITORING_ASSETS, MONITORING_CHECKS
from assets.sources import SOURCE_ASSETS
from pipelines.jobs import JOBS, OFFLINE_EVAL_JOBS, RETRAIN_JOBS
from pipelines.schedules import SCHEDULES
from resources import resources_for_env
from sensors.llm_evals import build_prompt_version_sensor
from sensors.monitoring import build_retrain_sensor, post_promotion_guard

defs = dg.Definitions(
    assets=[
        *SOURCE_ASSETS,
        *FEATURE_VIEW_ASSETS,
        online_store,
        *TRAINING_SET_ASSETS,
        *MODEL_ASSETS,
        *MONITORING_ASSETS,
        *LLM_ASSETS,
        *EVAL_ASSETS,
        *MAINTENANCE_ASSETS,
        *CANARY_ASSETS,
    ],
    asset_checks=MONITORING_CHECKS,
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=[
        build_retrain_sensor(RETRAIN_JOBS),
        post_promotion_guard,
        build_prompt_version_sensor(OFFLINE_EVAL_JOBS),
    ],
    resources=resources_for_env(),
)
