"""ConfigurableResources that hand Mallard's clients to assets, sensors, the CLI and the server.

One module per client; `resources_for_env` (resources/deployment.py) chooses them per MALLARD_ENV.
"""

from resources.alerts import AlertSinkResource
from resources.deployment import (
    PROD_OPTIONAL,
    PROD_VARIABLES,
    RESOURCE_KEYS,
    check_prod_environment,
    open_resources,
    resources_for_env,
)
from resources.lake import LakeDuckDBResource, LakeResource
from resources.llm import LLMResource, PromptRegistryResource
from resources.mlflow import MLflowResource, end_mlflow_on_run_finished
from resources.online_store import OnlineStoreResource
from resources.serving import PredictionLogResource, ServerStateResource
from resources.traces import TraceStoreResource

__all__ = [
    "PROD_OPTIONAL",
    "PROD_VARIABLES",
    "RESOURCE_KEYS",
    "AlertSinkResource",
    "LLMResource",
    "LakeDuckDBResource",
    "LakeResource",
    "MLflowResource",
    "OnlineStoreResource",
    "PredictionLogResource",
    "PromptRegistryResource",
    "ServerStateResource",
    "TraceStoreResource",
    "check_prod_environment",
    "end_mlflow_on_run_finished",
    "open_resources",
    "resources_for_env",
]
