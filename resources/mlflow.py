"""MLflow tracking and the model registry, and dagster-mlflow's end-of-run hook.

mlflow (and dagster-mlflow, which imports it at module load) are imported inside methods only:
importing them costs about 12 s, which loading the code location must not pay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import PrivateAttr

from mallard.config import Settings
from resources.lake import LakeResource

if TYPE_CHECKING:
    from mlflow import MlflowClient


class MLflowResource(dg.ConfigurableResource):
    """The MLflow tracking server (or the embedded SQLite store) and its model registry."""

    lake: LakeResource
    tracking_uri: str = ""
    _configured: bool = PrivateAttr(default=False)

    def settings(self) -> Settings:
        """The lake's settings pointed at this tracking store (what the models library takes)."""
        settings = self.lake.settings()
        if self.tracking_uri:
            settings = settings.model_copy(update={"mlflow_tracking_uri": self.tracking_uri})
        return settings

    def client(self) -> MlflowClient:
        """An MLflow client on this store; the fluent API (mlflow.start_run …) points there too."""
        from mallard.models.registry import client

        return client(self.settings())

    def end_run(self, status: str = "FINISHED") -> None:
        """End the active fluent MLflow run, if any (called by dagster-mlflow's hook)."""
        import sys

        if "mlflow" not in sys.modules:  # nothing was ever started in this process
            return
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.end_run(status=status)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        # An MLflow run never outlives the step that started it.
        self.end_run(status="FAILED")


def _end_mlflow_run(context: dg.HookContext, event_list: list[Any]) -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        from dagster_mlflow import end_mlflow_on_run_finished as hook

    return hook.hook_fn(context, event_list)


end_mlflow_on_run_finished = dg.HookDefinition(
    name="end_mlflow_on_run_finished",
    hook_fn=_end_mlflow_run,
    required_resource_keys={"mlflow"},
    decorated_fn=_end_mlflow_run,
)
"""dagster-mlflow's hook (ends the active MLflow run as FAILED on a failed step and FINISHED
after the job's last step), imported when it fires so that loading never imports mlflow."""
