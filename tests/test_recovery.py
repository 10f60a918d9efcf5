"""What a crash leaves behind, and how Mallard recovers from it.

Real run worker processes (`dagster api execute_run`, what Dagster's launchers start) are killed
with SIGKILL, the whole process group at once; then the daemon's run monitoring is driven one
iteration, as `dagster-daemon` would, and the MLflow resource is set up in a later run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from mallard.config import load_settings
from mallard.models import registry
from resources import MLflowResource, resources_for_env

ROOT = Path(__file__).resolve().parent.parent
CRASH_JOBS = Path(__file__).with_name("crash_jobs.py")


@pytest.fixture
def instance(mallard_home: Path) -> Iterator[dg.DagsterInstance]:
    """The shipped instance (dagster.yaml, copied into the home as `mallard` does)."""
    load_settings().ensure_home()
    with dg.DagsterInstance.get() as instance:
        yield instance


def _launch(instance: dg.DagsterInstance, job_name: str, tmp_path: Path):
    """Start a run of a crash_jobs job in its own run worker (a new process group) and wait
    until its op is under way; returns (run id, worker process, what the op marked)."""
    from dagster._core.definitions.reconstruct import ReconstructableJob
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import serialize_value

    recon = ReconstructableJob.for_file(str(CRASH_JOBS), job_name)
    origin = recon.get_python_origin()
    run = instance.create_run_for_job(job_def=recon.get_definition(), job_code_origin=origin)
    args = ExecuteRunArgs(job_origin=origin, run_id=run.run_id, instance_ref=instance.get_ref())
    marker = tmp_path / f"{job_name}.marker"
    log = tmp_path / f"{job_name}.log"
    with open(log, "w") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "dagster", "api", "execute_run", serialize_value(args)],
            cwd=ROOT,
            env={**os.environ, "RECOVERY_MARKER": str(marker)},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 180
    while not marker.exists():
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            pytest.fail(f"the run worker did not get under way:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return run.run_id, worker, json.loads(marker.read_text())


def _kill_process_group(worker: subprocess.Popen) -> None:
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)


def _run_monitoring(instance: dg.DagsterInstance) -> None:
    """One iteration of the daemon's MONITORING daemon, if this instance runs it."""
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.workspace.load_target import EmptyWorkspaceTarget
    from dagster._daemon.controller import create_daemon_of_type
    from dagster._daemon.daemon import MonitoringDaemon

    kind = MonitoringDaemon.daemon_type()
    assert kind in instance.get_required_daemon_types(), "run monitoring is off"
    daemon = create_daemon_of_type(kind, instance)
    with create_test_daemon_workspace_context(EmptyWorkspaceTarget(), instance) as context:
        list(daemon.run_iteration(context))


def _status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run.status


def test_a_run_killed_with_sigkill_is_failed_by_run_monitoring(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    run_id, worker, _ = _launch(instance, "sleepy", tmp_path)
    _run_monitoring(instance)
    assert _status(instance, run_id) == dg.DagsterRunStatus.STARTED  # alive: left alone

    _kill_process_group(worker)
    assert _status(instance, run_id) == dg.DagsterRunStatus.STARTED  # nothing in it ran
    _run_monitoring(instance)
    assert _status(instance, run_id) == dg.DagsterRunStatus.FAILURE
    failure = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert f"(pid {worker.pid}) is gone" in failure[-1].message


@dg.op
def touch_mlflow(mlflow: MLflowResource) -> None:
    """A step that sets the MLflow resource up, as every training step does."""


def _mlflow_step(instance: dg.DagsterInstance) -> None:
    @dg.job(resource_defs={"mlflow": resources_for_env()["mlflow"]})
    def mlflow_step() -> None:
        touch_mlflow()

    assert mlflow_step.execute_in_process(instance=instance).success


def test_an_mlflow_run_killed_mid_training_ends_killed(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    run_id, worker, marked = _launch(instance, "training_until_killed", tmp_path)
    c = registry.client(load_settings())
    mlflow_run = marked["mlflow_run_id"]
    assert c.get_run(mlflow_run).data.tags[registry.DAGSTER_RUN_TAG] == run_id
    assert c.get_run(mlflow_run).data.tags[registry.DAGSTER_JOB_TAG] == "training_until_killed"

    _kill_process_group(worker)
    _mlflow_step(instance)  # the Dagster run is still STARTED: it might be alive
    assert c.get_run(mlflow_run).info.status == "RUNNING"

    _run_monitoring(instance)
    assert _status(instance, run_id) == dg.DagsterRunStatus.FAILURE
    _mlflow_step(instance)
    ended = c.get_run(mlflow_run)
    assert ended.info.status == "KILLED"
    assert ended.info.end_time is not None
    note = ended.data.tags[registry.NOTE_TAG]
    assert run_id in note and "FAILURE" in note


@pytest.mark.parametrize(
    ("target", "signal_name"),
    [
        ("worker", "SIGTERM"),  # what `docker stop` and a Kubernetes eviction send
        pytest.param("group", "SIGTERM", marks=pytest.mark.slow),
        pytest.param("group", "SIGINT", marks=pytest.mark.slow),  # Ctrl-C in a terminal
    ],
)
def test_a_terminated_training_step_leaves_no_running_mlflow_run(
    instance: dg.DagsterInstance, tmp_path: Path, target: str, signal_name: str
) -> None:
    """Signalled, the step ends its MLflow run FAILED itself — except that a signal to the whole
    group can cut its teardown short (2 of 5 times when measured); then the next step that sets
    the MLflow resource up ends it KILLED."""
    run_id, worker, marked = _launch(instance, "training_until_killed", tmp_path)
    number = getattr(signal, signal_name)
    (os.killpg if target == "group" else os.kill)(worker.pid, number)
    worker.wait(timeout=120)
    assert _status(instance, run_id) == dg.DagsterRunStatus.FAILURE
    c = registry.client(load_settings())
    status = c.get_run(marked["mlflow_run_id"]).info.status
    if target == "worker":
        assert status == "FAILED"
    _mlflow_step(instance)
    assert c.get_run(marked["mlflow_run_id"]).info.status in {"FAILED", "KILLED"}


def test_only_runs_whose_dagster_run_is_over_are_ended(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mallard ops recover` ends RUNNING MLflow runs of finished Dagster runs and leaves runs in
    progress, runs of another instance and untagged runs alone; decision runs are tagged too."""
    from dagster._core.test_utils import create_run_for_test

    from cli.main import main

    settings = load_settings()
    c = registry.client(settings)
    experiment = registry.ensure_experiment(settings, "recover_probe", c)
    # A decision recorded inside a Dagster run carries its id (MLFLOW_RUN_CONTEXT).
    c.create_registered_model("recover_probe")
    source = c.create_run(experiment).info.run_id
    c.set_terminated(source)
    c.create_model_version("recover_probe", f"runs:/{source}/model", run_id=source)

    @dg.op
    def decide(mlflow: MLflowResource) -> str:
        decision = registry.record_decision(
            mlflow.settings(),
            mlflow.client(),
            model="recover_probe",
            action="keep",
            version=1,
            champion_before=None,
            champion_after=None,
            reason="probe",
        )
        return decision.run_id

    @dg.job(resource_defs={"mlflow": resources_for_env()["mlflow"]})
    def decide_job() -> None:
        decide()

    result = decide_job.execute_in_process(instance=instance)
    decision_run = c.get_run(result.output_for_node("decide"))
    assert decision_run.data.tags[registry.DAGSTER_RUN_TAG] == result.run_id
    assert registry.RUN_CONTEXT_VARIABLE not in os.environ  # restored after the run

    dagster_runs = {
        status: create_run_for_test(instance, job_name="probe", status=status).run_id
        for status in (
            dg.DagsterRunStatus.FAILURE,
            dg.DagsterRunStatus.SUCCESS,
            dg.DagsterRunStatus.STARTED,
        )
    }
    mlflow_runs = {
        label: c.create_run(experiment, tags={registry.DAGSTER_RUN_TAG: run_id}).info.run_id
        for label, run_id in [(s.value, r) for s, r in dagster_runs.items()]
        + [("other instance", "0b8c5a1e-not-in-this-instance")]
    }
    mlflow_runs["untagged"] = c.create_run(experiment).info.run_id

    out = CliRunner().invoke(main, ["ops", "recover"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    statuses = {label: c.get_run(run_id).info.status for label, run_id in mlflow_runs.items()}
    assert statuses == {
        "FAILURE": "KILLED",
        "SUCCESS": "KILLED",
        "STARTED": "RUNNING",
        "other instance": "RUNNING",
        "untagged": "RUNNING",
    }
    assert out.output.count("ended as KILLED") == 2
    # Nothing is left to end the second time.
    again = CliRunner().invoke(main, ["ops", "recover"], catch_exceptions=False)
    assert "no MLflow run was left RUNNING" in again.output
