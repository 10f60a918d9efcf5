"""Jobs that the recovery tests run in a real run worker process and kill with SIGKILL.

Each op writes what the test needs to `RECOVERY_MARKER` once it is well under way, then waits to be
killed. Loaded by file path (`ReconstructableJob.for_file`), in the test and in the run worker.
"""

from __future__ import annotations

import json
import os
import time

import dagster as dg

from resources import MLflowResource, resources_for_env


def _mark(**what: object) -> None:
    path = os.environ["RECOVERY_MARKER"]
    with open(f"{path}.tmp", "w") as handle:
        json.dump({"pid": os.getpid(), **what}, handle)
    os.replace(f"{path}.tmp", path)


@dg.op
def wait_to_be_killed() -> None:
    _mark()
    time.sleep(600)


@dg.job
def sleepy() -> None:
    wait_to_be_killed()


@dg.op
def train_until_killed(mlflow: MLflowResource) -> None:
    """Starts an MLflow run in a model's experiment as training does, then is killed mid-run."""
    import mlflow as mlflow_api

    from mallard.models.registry import client, ensure_experiment

    settings = mlflow.settings()
    experiment = ensure_experiment(settings, "crash_probe", client(settings))
    run = mlflow_api.start_run(experiment_id=experiment, run_name="crash_probe candidate")
    mlflow_api.log_metric("progress", 0.5)
    _mark(mlflow_run_id=run.info.run_id)
    time.sleep(600)


@dg.job(resource_defs={"mlflow": resources_for_env()["mlflow"]})
def training_until_killed() -> None:
    train_until_killed()
