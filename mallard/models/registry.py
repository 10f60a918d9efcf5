"""MLflow as the model registry: experiments, the `candidate`/`champion` aliases, decisions.

Every alias move — promotion, a kept champion, a rollback — is recorded the same way: tags on
the model version (`mallard.decision`, `mallard.reason`, `mallard.decided_at`), the registered
model's `mallard.last_decision` and `mallard.champion_history`, and a small "decision" run in
the model's experiment whose tags and `decision.json` artifact make the audit trail visible in
the MLflow UI.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mallard.config import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"
CANDIDATE = "candidate"
HISTORY_TAG = "mallard.champion_history"
HISTORY_LIMIT = 50
# Tags of every MLflow run started inside a Dagster run (set through MLflow's MLFLOW_RUN_CONTEXT
# by the deployment's MLflow resource), so a run whose process was killed can be ended later.
DAGSTER_RUN_TAG = "mallard.dagster_run_id"
DAGSTER_JOB_TAG = "mallard.dagster_job"
# The Dagster run's page in the Dagster UI: what an MLflow user clicks to get back to Dagster.
DAGSTER_RUN_URL_TAG = "mallard.dagster_run_url"
RUN_CONTEXT_VARIABLE = "MLFLOW_RUN_CONTEXT"
NOTE_TAG = "mlflow.note.content"
# MLflow's UI opens an experiment in the view its kind names: the classic one (runs, metrics,
# artifacts, the model registry) for models, the GenAI one (traces, evaluations, prompts) for LLMs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_EXPERIMENT_KIND = "custom_model_development"
GENAI_EXPERIMENT_KIND = "genai_development"


class RegistryError(RuntimeError):
    """The registry cannot do what was asked (no such model or version, nothing to roll back to)."""


def experiment_name(model: str) -> str:
    return f"mallard-{model}"


def client(settings: Settings) -> MlflowClient:
    """An MLflow client on Mallard's tracking store; the fluent API is pointed there too."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow import MlflowClient

    if settings.mlflow_is_local:
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
        rebase_artifacts(settings)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    return MlflowClient(
        tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri
    )


def artifact_root(settings: Settings) -> str:
    path = settings.mlflow_dir / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


# Where the embedded store keeps artifact URIs. MLflow stores them absolute and has no relative
# form (mlflow/mlflow#3144), so a home that was moved or restored elsewhere is rebased here.
_ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
)
_rebased: set[str] = set()


def rebase_artifacts(settings: Settings) -> dict[str, int]:
    """Point the embedded store's artifact URIs at this MALLARD_HOME's `mlflow/artifacts`.

    Mallard's experiments keep their artifacts under `<home>/mlflow/artifacts/<model>`
    (`ensure_experiment`); when the recorded prefix is another folder — the home was moved, or
    a backup restored elsewhere — every stored URI under it is rewritten to the current one, in
    one transaction. Runs once per store and process; returns the rows changed per column.
    """
    import sqlite3

    uri = settings.mlflow_tracking_uri
    if not uri.startswith("sqlite:///"):
        return {}
    database = Path(uri[len("sqlite:///") :])
    root = artifact_root(settings)
    key = f"{database} {root}"
    if key in _rebased or not database.exists():
        return {}
    if not os.access(database.parent, os.W_OK):
        return {}  # a read-only home serves reads; it is rebased when next opened writable
    changed: dict[str, int] = {}
    with contextlib.closing(sqlite3.connect(database, timeout=60)) as con:
        tables = {
            row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if not {"experiments", "experiment_tags"} <= tables:
            return {}
        rows = con.execute(
            "SELECT e.artifact_location, t.value FROM experiments e JOIN experiment_tags t "
            "ON t.experiment_id = e.experiment_id AND t.key = 'mallard.model'"
        ).fetchall()
        old_roots = {
            location[: -len(model) - 1]
            for location, model in rows
            if location and location.endswith(f"/{model}") and location.startswith("file:")
        } - {root}
        if old_roots:
            con.execute("BEGIN IMMEDIATE")
            for table, column in _ARTIFACT_COLUMNS:
                if table not in tables:
                    continue
                for old in old_roots:
                    cursor = con.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                        f"WHERE substr({column}, 1, ?) = ?",
                        (root, len(old) + 1, len(old) + 1, old + "/"),
                    )
                    changed[f"{table}.{column}"] = (
                        changed.get(f"{table}.{column}", 0) + cursor.rowcount
                    )
            con.commit()
    _rebased.add(key)
    return changed


def ensure_experiment(
    settings: Settings, model: str, mlflow_client: MlflowClient | None = None
) -> str:
    """The model's experiment id, created with its artifacts under MALLARD_HOME/mlflow/artifacts."""
    c = mlflow_client or client(settings)
    name = experiment_name(model)
    existing = c.get_experiment_by_name(name)
    if existing is not None:
        if EXPERIMENT_KIND_TAG not in existing.tags:  # made before Mallard set the kind
            c.set_experiment_tag(existing.experiment_id, EXPERIMENT_KIND_TAG, MODEL_EXPERIMENT_KIND)
        return existing.experiment_id
    # A tracking server keeps artifacts where it is configured to; the embedded store, under home.
    location = f"{artifact_root(settings)}/{model}" if settings.mlflow_is_local else None
    return c.create_experiment(
        name,
        artifact_location=location,
        tags={"mallard.model": model, EXPERIMENT_KIND_TAG: MODEL_EXPERIMENT_KIND},
    )


def version_for_alias(c: MlflowClient, model: str, alias: str) -> ModelVersion | None:
    """The version an alias points at, or None if the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version_by_alias(model, alias)
    except MlflowException:
        return None


def get_version(c: MlflowClient, model: str, version: int | str) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version(model, str(version))
    except MlflowException:
        raise RegistryError(f"model {model!r} has no version {version}") from None


def run_id_of(mv: ModelVersion, model: str) -> str:
    """The MLflow run a registered version was logged by (Mallard registers from runs only)."""
    if mv.run_id is None:
        raise RegistryError(f"model {model!r} version {mv.version} has no MLflow run")
    return mv.run_id


def model_uri(model: str, version: int | str) -> str:
    return f"models:/{model}/{version}"


def history(c: MlflowClient, model: str) -> list[int]:
    """Versions that were champion, oldest first (the rollback stack)."""
    tags = c.get_registered_model(model).tags
    return [int(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]


@dataclass(frozen=True)
class Decision:
    """One recorded alias decision."""

    model: str
    action: str  # promote | keep | rollback
    version: int  # the version the decision is about (candidate, or rollback target)
    champion_before: int | None
    champion_after: int | None
    reason: str
    decided_at: str
    run_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_decision(
    settings: Settings,
    c: MlflowClient,
    *,
    model: str,
    action: str,
    version: int,
    champion_before: int | None,
    champion_after: int | None,
    reason: str,
    evidence: dict[str, Any] | None = None,
    source_run_id: str | None = None,
) -> Decision:
    """Write the decision's tags (version, registered model, source run) and its audit run."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    short = reason if len(reason) <= 4900 else reason[:4897] + "…"
    from mlflow.tracking.context.registry import resolve_tags

    experiment_id = ensure_experiment(settings, model, c)
    run = c.create_run(
        experiment_id,
        run_name=f"{model} {action} v{version}",
        # What the fluent API adds to a run (source, user, the Dagster run from MLFLOW_RUN_CONTEXT).
        tags=resolve_tags(
            {
                "mallard.kind": "decision",
                "mallard.action": action,
                "mallard.version": str(version),
                "mallard.champion_before": str(champion_before or ""),
                "mallard.champion_after": str(champion_after or ""),
                "mallard.reason": short,
                NOTE_TAG: reason,
            }
        ),
    )
    decision = Decision(
        model, action, version, champion_before, champion_after, reason, now, run.info.run_id
    )
    c.log_dict(run.info.run_id, {**decision.as_dict(), "evidence": evidence or {}}, "decision.json")
    c.set_terminated(run.info.run_id)
    for key, value in (
        ("mallard.decision", action),
        ("mallard.reason", short),
        ("mallard.decided_at", now),
        ("mallard.decision_run_id", run.info.run_id),
    ):
        c.set_model_version_tag(model, str(version), key, value)
        if source_run_id:
            c.set_tag(source_run_id, key, value)
    c.set_registered_model_tag(
        # Unescaped, so "≤" reads as "≤" in the MLflow UI, not as "\\u2264".
        model,
        "mallard.last_decision",
        json.dumps(decision.as_dict(), ensure_ascii=False)[:4900],
    )
    return decision


def set_champion(
    settings: Settings,
    c: MlflowClient,
    model: str,
    version: int,
    *,
    action: str,
    reason: str,
    evidence: dict[str, Any] | None = None,
    source_run_id: str | None = None,
) -> Decision:
    """Point `champion` at `version` and record why (promotion or rollback)."""
    get_version(c, model, version)
    before = version_for_alias(c, model, CHAMPION)
    stack = history(c, model)
    if action == "rollback" and version in stack:
        stack = stack[: stack.index(version) + 1]
    elif not stack or stack[-1] != version:
        stack.append(version)
    c.set_registered_model_alias(model, CHAMPION, str(version))
    c.set_registered_model_tag(model, HISTORY_TAG, json.dumps(stack[-HISTORY_LIMIT:]))
    return record_decision(
        settings,
        c,
        model=model,
        action=action,
        version=version,
        champion_before=int(before.version) if before else None,
        champion_after=version,
        reason=reason,
        evidence=evidence,
        source_run_id=source_run_id,
    )


def rollback(
    settings: Settings, model: str, to_version: int | None = None, reason: str = ""
) -> Decision:
    """Move `champion` back: to `to_version`, or to the champion before the current one."""
    c = client(settings)
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(model)
    except MlflowException:
        raise RegistryError(
            f"model {model!r} is not registered in {settings.mlflow_tracking_uri}"
        ) from None
    current = version_for_alias(c, model, CHAMPION)
    current_version = int(current.version) if current else None
    if to_version is None:
        stack = history(c, model)
        earlier = [v for v in stack if v != current_version]
        if current_version in stack:
            earlier = [v for v in stack[: stack.index(current_version)] if v != current_version]
        if not earlier:
            raise RegistryError(
                f"model {model!r}: no earlier champion to roll back to "
                f"(champion history: {stack or 'empty'}); pass --to VERSION"
            )
        to_version = earlier[-1]
    if to_version == current_version:
        raise RegistryError(f"model {model!r}: version {to_version} is already the champion")
    text = reason or "manual rollback"
    decision = set_champion(
        settings,
        c,
        model,
        int(to_version),
        action="rollback",
        reason=f"rolled back from v{current_version} to v{to_version}: {text}",
    )
    # The rolled-back version stays a candidate no longer: its evaluation was against the
    # champion now restored, so promoting "the candidate" again would undo the rollback.
    candidate = version_for_alias(c, model, CANDIDATE)
    if (
        candidate is not None
        and current_version is not None
        and int(candidate.version) == current_version
    ):
        c.delete_registered_model_alias(model, CANDIDATE)
    return decision


def describe(settings: Settings, model: str) -> dict[str, Any]:
    """Aliases, versions (with their decisions and metrics) and history of one model."""
    c = client(settings)
    from mlflow.exceptions import MlflowException

    try:
        registered = c.get_registered_model(model)
    except MlflowException:
        return {"model": model, "registered": False, "versions": [], "aliases": {}}
    aliases = {alias: int(v) for alias, v in registered.aliases.items()}
    versions = []
    for v in sorted(
        c.search_model_versions(f"name='{model}'"), key=lambda mv: int(mv.version), reverse=True
    ):
        versions.append(
            {
                "version": int(v.version),
                "run_id": v.run_id,
                "created": dt.datetime.fromtimestamp(v.creation_timestamp / 1000, dt.UTC).isoformat(
                    timespec="seconds"
                ),
                "aliases": sorted(a for a, n in aliases.items() if n == int(v.version)),
                "estimator": v.tags.get("mallard.estimator", ""),
                "decision": v.tags.get("mallard.decision", ""),
                "reason": v.tags.get("mallard.reason", ""),
                "holdout_metric": v.tags.get("mallard.holdout_metric", ""),
            }
        )
    return {
        "model": model,
        "registered": True,
        "aliases": aliases,
        "champion_history": json.loads(registered.tags.get(HISTORY_TAG, "[]")),
        "last_decision": json.loads(registered.tags.get("mallard.last_decision", "{}")),
        "versions": versions,
    }


@dataclass(frozen=True)
class EndedRun:
    """An MLflow run that was left RUNNING by a killed process and has now been ended."""

    run_id: str
    experiment_id: str
    run_name: str
    dagster_run_id: str
    dagster_status: str


def end_orphaned_runs(
    settings: Settings,
    finished_status: Callable[[str], str | None],
    mlflow_client: MlflowClient | None = None,
) -> list[EndedRun]:
    """End as KILLED every RUNNING MLflow run whose Dagster run is over.

    A process killed with SIGKILL (or by the OOM killer) runs no handler, so the MLflow runs it
    had started stay RUNNING. Each run Mallard starts inside a Dagster run carries its id
    (`DAGSTER_RUN_TAG`); `finished_status(dagster_run_id)` returns that run's final status, or
    None while it is in progress or unknown to the caller's instance — those runs are left alone.
    """
    from mlflow.entities import RunStatus, ViewType

    c = mlflow_client or client(settings)
    experiment_ids = [e.experiment_id for e in c.search_experiments(view_type=ViewType.ALL)]
    ended: list[EndedRun] = []
    if not experiment_ids:
        return ended
    running = c.search_runs(
        experiment_ids,
        filter_string="attributes.status = 'RUNNING'",
        run_view_type=ViewType.ALL,
        max_results=50_000,
    )
    for run in running:
        dagster_run_id = run.data.tags.get(DAGSTER_RUN_TAG)
        status = finished_status(dagster_run_id) if dagster_run_id else None
        if status is None:
            continue
        note = (
            f"Ended as KILLED by Mallard on "
            f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}: its Dagster run "
            f"{dagster_run_id} is {status}, and the process that ran it stopped without "
            "ending this run (killed, or crashed)."
        )
        earlier = run.data.tags.get(NOTE_TAG)
        c.set_tag(run.info.run_id, NOTE_TAG, f"{earlier}\n\n{note}" if earlier else note)
        c.set_tag(run.info.run_id, "mallard.ended_by", "end_orphaned_runs")
        c.set_terminated(run.info.run_id, status=RunStatus.to_string(RunStatus.KILLED))
        ended.append(
            EndedRun(
                run.info.run_id,
                run.info.experiment_id,
                run.info.run_name or "",
                dagster_run_id or "",
                status,
            )
        )
    return ended
