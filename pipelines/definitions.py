"""The Dagster code location: every asset, job, schedule, sensor and resource, assembled once."""

from __future__ import annotations

import dagster as dg

from assets.features import FEATURE_VIEW_ASSETS, TRAINING_SET_ASSETS, online_store
from assets.llm import LLM_ASSETS
from assets.llm_evals import EVAL_ASSETS, EVAL_JOBS, EVAL_SENSORS
from assets.models import MODEL_ASSETS, MODEL_JOBS
from assets.monitoring import MONITORING_ASSETS
from assets.sources import SOURCE_ASSETS
from mallard.config import get_settings
from pipelines.jobs import JOBS, RETRAIN_JOBS, WEEKLY_RETRAIN
from resources import resources_for_env
from sensors.retrain import build_retrain_sensor, post_promotion_guard

settings = get_settings()

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
    ],
    jobs=[*JOBS, *MODEL_JOBS, *EVAL_JOBS],
    schedules=WEEKLY_RETRAIN,
    sensors=[build_retrain_sensor(RETRAIN_JOBS), post_promotion_guard, *EVAL_SENSORS],
    resources=resources_for_env(settings.env),
)
