"""The one place clients are chosen: the resources of each MALLARD_ENV.

Assets, sensors, the `mallard` command and the API server all take their clients from
`resources_for_env`: `local` is embedded (files under MALLARD_HOME, no servers); `prod` takes
every location from an explicit environment variable and refuses to load without it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from mallard.config import ConfigError, get_settings
from resources.alerts import AlertSinkResource
from resources.lake import LakeDuckDBResource, LakeResource
from resources.llm import LLMResource, PromptRegistryResource
from resources.mlflow import MLflowResource
from resources.online_store import OnlineStoreResource
from resources.serving import PredictionLogResource, ServerStateResource
from resources.traces import TraceStoreResource

# What `prod` reads, and what each must point at. Optional ones have a default or may stay unset.
PROD_VARIABLES: dict[str, str] = {
    "MALLARD_HOME": "a writable folder for caches, reports and local state",
    "MALLARD_LAKE_ROOT": "the Delta lake's root folder (feature tables, logs, scores, traces)",
    "MALLARD_MLFLOW_TRACKING_URI": "the MLflow tracking server, e.g. http://mlflow:5000",
    "MALLARD_REDIS_URL": "the online store's Redis server, e.g. redis://redis:6379/0",
    "MALLARD_LLM_BASE_URL": "the OpenAI-compatible LLM server, e.g. http://llm:8000/v1",
}
PROD_OPTIONAL: dict[str, str] = {
    "MALLARD_LLM_API_KEY_ENV": "the variable holding the LLM server's API key (unset: no key)",
    "MALLARD_ALERT_WEBHOOK_URL": "a Slack-compatible webhook for alerts (unset: only recorded)",
}

RESOURCE_KEYS = (
    "lake",
    "duckdb",
    "mlflow",
    "llm",
    "prompts",
    "online_store",
    "alerts",
    "traces",
    "server",
    "prediction_log",
)


def check_prod_environment(environ: dict[str, str] | None = None) -> None:
    """Raise ConfigError naming every required `prod` variable that is missing or empty."""
    environ = dict(os.environ) if environ is None else environ
    missing = [name for name in PROD_VARIABLES if not environ.get(name)]
    if missing:
        raise ConfigError(
            "MALLARD_ENV=prod needs "
            + "; ".join(f"{name} ({PROD_VARIABLES[name]})" for name in missing)
            + ": set them, or use MALLARD_ENV=local for the embedded setup"
        )


def _resources(
    lake: LakeResource,
    *,
    tracking_uri: Any,
    online_kind: Any,
    redis_url: Any,
    llm_base_url: Any,
    llm_api_key_env: Any,
    llm_endpoint_urls: dict[str, str],
    webhook_url: Any,
    server_state: str = "sqlite",
) -> dict[str, dg.ConfigurableResource]:
    traces = TraceStoreResource(lake=lake)
    return {
        "lake": lake,
        "duckdb": LakeDuckDBResource(lake=lake),
        "mlflow": MLflowResource(lake=lake, tracking_uri=tracking_uri),
        "llm": LLMResource(
            lake=lake,
            traces=traces,
            base_url=llm_base_url,
            api_key_env=llm_api_key_env,
            endpoint_urls=llm_endpoint_urls,
        ),
        "prompts": PromptRegistryResource(lake=lake),
        "online_store": OnlineStoreResource(lake=lake, kind=online_kind, redis_url=redis_url),
        "alerts": AlertSinkResource(lake=lake, webhook_url=webhook_url),
        "traces": traces,
        "server": ServerStateResource(lake=lake, kind=server_state, redis_url=redis_url),
        "prediction_log": PredictionLogResource(lake=lake),
    }


def resources_for_env(env: str | None = None) -> dict[str, dg.ConfigurableResource]:
    """The resources of one MALLARD_ENV (default: the current settings' env)."""
    settings = get_settings()
    env = env or settings.env
    if env == "local":
        lake = LakeResource(
            home=str(settings.home),
            lake_root=str(settings.lake_root or ""),
            duckdb_memory_limit=settings.duckdb_memory_limit or "",
        )
        return _resources(
            lake,
            tracking_uri=settings.mlflow_tracking_uri,
            online_kind=settings.online_store,
            redis_url=settings.redis_url,
            llm_base_url=settings.llm_base_url or "",
            llm_api_key_env=settings.llm_api_key_env or "",
            llm_endpoint_urls=settings.llm_endpoint_urls,
            webhook_url=settings.alert_webhook_url or "",
            server_state=settings.serve_state_kind,
        )
    if env == "prod":
        check_prod_environment()
        lake = LakeResource(
            home=dg.EnvVar("MALLARD_HOME"),
            lake_root=dg.EnvVar("MALLARD_LAKE_ROOT"),
            duckdb_memory_limit=settings.duckdb_memory_limit or "",
        )
        return _resources(
            lake,
            tracking_uri=dg.EnvVar("MALLARD_MLFLOW_TRACKING_URI"),
            online_kind="redis",
            redis_url=dg.EnvVar("MALLARD_REDIS_URL"),
            llm_base_url=dg.EnvVar("MALLARD_LLM_BASE_URL"),
            llm_api_key_env=settings.llm_api_key_env or "",
            llm_endpoint_urls=settings.llm_endpoint_urls,
            webhook_url=settings.alert_webhook_url or "",
            server_state=settings.serve_state_kind,
        )
    raise ConfigError(f"MALLARD_ENV={env!r} is not valid: choose local or prod")


@contextmanager
def open_resources(env: str | None = None) -> Iterator[Any]:
    """The deployment's resources outside a run (the CLI, the API server), set up and torn down
    as Dagster does for a step: `with open_resources() as r: r.mlflow.client()`."""
    with dg.build_resources(resources_for_env(env)) as built:
        yield built
