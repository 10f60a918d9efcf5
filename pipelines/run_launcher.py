"""The embedded instance's run launcher: Dagster's default one, plus a health check of the run
worker's process, so that run monitoring fails a run whose process died.

Dagster's `DefaultRunLauncher` cannot tell run monitoring whether a run's process is alive, so a
run killed with `kill -9` (or by the OOM killer, or with its code server) stayed STARTED until
`max_runtime_seconds` — holding its run-concurrency and pool slots all that time. Here the check
looks the run worker up by the pid its RUN_START event carries. That is only meaningful where the
daemon and the runs share one machine (and one pid namespace), as they do on the embedded SQLite
instance; deploy/dagster.yaml keeps Dagster's launchers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster._core.events import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus

if TYPE_CHECKING:
    from dagster._core.storage.dagster_run import DagsterRun

# The process's start time is known to about a second (the boot time is whole seconds).
_CLOCK_SLACK_SECONDS = 1.0


class LocalRunLauncher(DefaultRunLauncher):
    """`DefaultRunLauncher` whose run workers run monitoring can check (one machine only)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        import psutil

        starts = self._instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_START)
        pid = starts[-1].dagster_event.pid if starts and starts[-1].dagster_event else None
        if pid is None:  # nothing to check against: leave it to max_runtime_seconds
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker pid recorded")
        started_at = starts[-1].timestamp
        try:
            process = psutil.Process(pid)
            gone = process.status() == psutil.STATUS_ZOMBIE or (
                process.create_time() > started_at + _CLOCK_SLACK_SECONDS  # pid reused
            )
        except psutil.NoSuchProcess:
            gone = True
        except psutil.AccessDenied:  # another user's process: alive
            gone = False
        if gone:
            return CheckRunHealthResult(
                WorkerStatus.FAILED, f"the run worker process (pid {pid}) is gone"
            )
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} is alive")
