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
from assets.online_evals import (
    ALERT_CHECKS,
    ANALYTICS_ASSETS,
    BUDGET_CHECKS,
    ONLINE_EVAL_ASSETS,
    ONLINE_EVAL_JOBS,
    SHADOW_ASSETS,
)
from assets.sources import SOURCE_ASSETS
from assets.traces import TRACE_ASSETS
from pipelines.jobs import (
    JOBS,
    MONITORING_JOBS,
    OFFLINE_EVAL_JOBS,
    RETRAIN_JOBS,
    build_features,
    load_online_store,
)
from pipelines.schedules import SCHEDULES
from resources import resources_for_env
from sensors.llm_evals import build_prompt_version_sensor
from sensors.monitoring import build_retrain_sensor, post_promotion_guard
from sensors.online_evals import build_online_eval_sensor
from sensors.sources import build_new_days_sensor

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
        *TRACE_ASSETS,
        *ONLINE_EVAL_ASSETS,
        *ANALYTICS_ASSETS,
        *SHADOW_ASSETS,
    ],
    asset_checks=[*MONITORING_CHECKS, *ALERT_CHECKS, *BUDGET_CHECKS],
    jobs=[*JOBS, *ONLINE_EVAL_JOBS],
    schedules=SCHEDULES,
    sensors=[
        build_retrain_sensor(RETRAIN_JOBS),
        post_promotion_guard,
        build_prompt_version_sensor(OFFLINE_EVAL_JOBS),
        build_new_days_sensor([build_features, load_online_store, *MONITORING_JOBS]),
        build_online_eval_sensor(ONLINE_EVAL_JOBS),
    ],
    resources=resources_for_env(),
)
