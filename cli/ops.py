"""`mallard ops …`: recover after a crash, keep the lake small."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from cli.common import deployment


@click.group("ops")
def ops() -> None:
    """Operations: what a crash left behind, lake maintenance (docs/OPERATIONS.md)."""


@contextmanager
def _instance() -> Iterator[Any]:
    """The Dagster instance: DAGSTER_HOME's, else the one under MALLARD_HOME."""
    import dagster as dg
    from dagster._core.errors import DagsterHomeNotSetError

    from mallard.config import get_settings

    try:
        instance = dg.DagsterInstance.get()
    except DagsterHomeNotSetError:
        home = get_settings().ensure_home().dagster_home
        instance = dg.DagsterInstance.from_config(str(home))
    with instance:
        yield instance


def _check_runs(instance: Any) -> list[tuple[str, str]]:
    """One pass of the daemon's run monitoring (for when no daemon runs); the runs it ended."""
    import logging

    from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES, RunsFilter
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import EmptyWorkspaceTarget
    from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration

    before = {
        r.run_id: r
        for r in instance.get_runs(filters=RunsFilter(statuses=list(IN_PROGRESS_RUN_STATUSES)))
    }
    with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as context:
        for _ in execute_run_monitoring_iteration(context, logging.getLogger("mallard.ops")):
            pass
    ended = []
    for run_id in before:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            ended.append((run_id, run.status.value))
    return ended


@ops.command("recover")
def recover() -> None:
    """Fail the Dagster runs whose process died, and end as KILLED the MLflow runs they left
    RUNNING (what the daemon and every MLflow step do; for when neither ran since the crash)."""
    with _instance() as instance, deployment() as resources:
        if instance.run_monitoring_enabled:
            for run_id, status in _check_runs(instance):
                click.echo(f"Dagster run {run_id}: its process is gone, marked {status}")
        else:
            click.echo(
                "run monitoring is off in this instance's dagster.yaml: Dagster runs not checked"
            )
        ended = resources.mlflow.end_orphaned_runs(instance)
    for run in ended:
        click.echo(
            f"MLflow run {run.run_id} ({run.run_name}): its Dagster run {run.dagster_run_id} is "
            f"{run.dagster_status}, ended as KILLED"
        )
    if not ended:
        click.echo("no MLflow run was left RUNNING by a finished Dagster run")


@ops.command("vacuum")
@click.option(
    "--retention-hours",
    type=click.IntRange(min=0),
    default=None,
    help="Keep replaced versions this long (default: catalog/maintenance.py, 7 days).",
)
@click.option("--dry-run", is_flag=True, help="Report what would be removed; delete nothing.")
def vacuum(retention_hours: int | None, dry_run: bool) -> None:
    """Vacuum every Delta table of the lake and compact the logs (the lake_maintenance asset)."""
    from catalog.maintenance import LAKE_MAINTENANCE
    from mallard.lake.maintenance import maintain_lake

    with deployment() as resources:
        settings = resources.lake.settings()
    retention = None if retention_hours is None else dt.timedelta(hours=retention_hours)
    report = maintain_lake(
        settings.lake_dir, LAKE_MAINTENANCE, retention=retention, dry_run=dry_run, log=click.echo
    )
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{len(report.tables)} tables under {report.root}: {verb} {report.removed} files "
        f"({report.removed_bytes / 1e6:.1f} MB), retention {report.retention}"
    )
    if report.errors:
        raise click.ClickException(
            "not maintained: " + "; ".join(f"{t.table} ({t.error})" for t in report.errors)
        )
