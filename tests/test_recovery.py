"""What a crash leaves behind, and how Mallard recovers from it.

Real run worker processes (`dagster api execute_run`, what Dagster's launchers start) are killed
with SIGKILL, the whole process group at once; then the daemon's run monitoring is driven one
iteration, as `dagster-daemon` would.
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

from mallard.config import load_settings

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
