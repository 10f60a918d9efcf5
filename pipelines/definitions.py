"""The Dagster code location: every asset, job, schedule, sensor and resource, assembled once."""

from __future__ import annotations

import dagster as dg

from assets.features import FEATURE_VIEW_ASSETS, TRAINING_SET_ASSETS, online_store
from assets.sources import SOURCE_ASSETS
from mallard.config import get_settings
from pipelines.jobs import JOBS
from resources import resources_for_env

settings = get_settings()

defs = dg.Definitions(
    assets=[*SOURCE_ASSETS, *FEATURE_VIEW_ASSETS, online_store, *TRAINING_SET_ASSETS],
    jobs=JOBS,
    resources=resources_for_env(settings.env),
)
