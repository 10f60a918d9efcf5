"""MLflow tracking and the model registry, and dagster-mlflow's end-of-run hook.

An MLflow run never outlives the Dagster step that started it: a failed step ends it through the
hook, the resource's teardown ends whatever is still active, and a step killed outright (SIGKILL,
the OOM killer), where nothing runs, is caught up with later: every run started inside a Dagster
run is tagged with its id, and each step that sets this resource up ends as KILLED the runs whose
Dagster run is over (`end_orphaned_runs`; `mallard ops recover` does the same by hand).

mlflow (and dagster-mlflow, which imports it at module load) are imported inside methods only:
importing them costs about 12 s, which loading the code location must not pay.
"""

from __future__ import annotations

import json
import os
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
    dagster_ui_url: str = "http://127.0.0.1:3000"  # `make dev`: where MLflow runs link back to
    _saved_run_context: str | None = PrivateAttr(default=None)

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

    def end_orphaned_runs(self, instance: dg.DagsterInstance) -> list[Any]:
        """End as KILLED the RUNNING MLflow runs whose Dagster run (in `instance`) is over."""
        from mallard.models.registry import end_orphaned_runs

        def finished_status(run_id: str) -> str | None:
            run = instance.get_run_by_id(run_id)
            return run.status.value if run is not None and run.is_finished else None

        return end_orphaned_runs(self.settings(), finished_status)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run = context.run
        if run is None:  # outside a run (the CLI, the server): nothing to tag, nothing to check
            return
        from mallard.models.registry import (
            DAGSTER_JOB_TAG,
            DAGSTER_RUN_TAG,
            DAGSTER_RUN_URL_TAG,
            RUN_CONTEXT_VARIABLE,
        )

        # MLflow adds these tags to every run the fluent API starts in this process.
        self._saved_run_context = os.environ.get(RUN_CONTEXT_VARIABLE)
        tags = json.loads(self._saved_run_context or "{}")
        tags.update(
            {
                DAGSTER_RUN_TAG: run.run_id,
                DAGSTER_JOB_TAG: run.job_name,
                DAGSTER_RUN_URL_TAG: f"{self.dagster_ui_url.rstrip('/')}/runs/{run.run_id}",
            }
        )
        os.environ[RUN_CONTEXT_VARIABLE] = json.dumps(tags)
        instance = context.instance
        if instance is None or instance.is_ephemeral:  # its runs are not the ones MLflow knows
            return
        log = context.log.warning if context.log is not None else (lambda message: None)
        try:
            ended = self.end_orphaned_runs(instance)
        except Exception as exc:  # a step that may not even need MLflow must not fail on this
            log(f"could not look for MLflow runs left RUNNING by killed steps: {exc}")
            return
        for run_ in ended:
            log(
                f"MLflow run {run_.run_id} ({run_.run_name}) was still RUNNING although its "
                f"Dagster run {run_.dagster_run_id} is {run_.dagster_status}: ended as KILLED"
            )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        # An MLflow run never outlives the step that started it.
        self.end_run(status="FAILED")
        if context.run is not None:
            from mallard.models.registry import RUN_CONTEXT_VARIABLE

            if self._saved_run_context is None:
                os.environ.pop(RUN_CONTEXT_VARIABLE, None)
            else:
                os.environ[RUN_CONTEXT_VARIABLE] = self._saved_run_context


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
