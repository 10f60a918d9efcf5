"""Offline eval runs logged to MLflow as evaluation runs, where MLflow's users look for them.

Mallard's `judge_scores` table stays the record; MLflow gets a copy in its GenAI view. Each eval
run becomes one MLflow run in the eval's experiment (`mallard-eval-<eval>`, of MLflow's GenAI
kind), made by `mlflow.genai.evaluate` over the answers Mallard already has: one row per item
(its inputs, the chain's answer, the reference) and one scorer per grader that hands back the
grade Mallard gave, so no model is called again. MLflow keeps a trace per item with the grades
as assessments (the experiment's Evaluations and Traces tabs, and the run's Traces tab), each
grader's mean as `<grader>/mean`; Mallard adds the pass rates, cost and item counts as metrics,
the eval's parameters, the evaluated prompt version (linked from MLflow's prompt registry) and
the Dagster run it came from (`mallard.dagster_run_url`).
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mallard.evals.runs import EvalRun

EXPERIMENT_PREFIX = "mallard-eval-"
EVAL_RUN_TAG = "mallard.eval_run_id"


@dataclass(frozen=True)
class LoggedEval:
    experiment_id: str
    run_id: str
    prompt_uri: str | None
    metrics: dict[str, float]


def experiment_name(eval_name: str) -> str:
    return f"{EXPERIMENT_PREFIX}{eval_name}"


def eval_experiment(settings: Any, eval_name: str, c: MlflowClient | None = None) -> str:
    """The eval's experiment id, created (GenAI kind, artifacts under MALLARD_HOME) if missing."""
    from mallard.models.registry import (
        EXPERIMENT_KIND_TAG,
        GENAI_EXPERIMENT_KIND,
        artifact_root,
        client,
    )

    c = c or client(settings)
    name = experiment_name(eval_name)
    existing = c.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = f"{artifact_root(settings)}/eval-{eval_name}" if settings.mlflow_is_local else None
    return c.create_experiment(
        name,
        artifact_location=location,
        tags={"mallard.eval": eval_name, EXPERIMENT_KIND_TAG: GENAI_EXPERIMENT_KIND},
    )


def evaluation_rows(
    run: EvalRun, items: Sequence[Mapping[str, Any]] = ()
) -> tuple[list[dict[str, Any]], dict[str, dict[str, dict[str, Any]]]]:
    """MLflow's evaluation data (inputs, outputs, expectations per item) and the grades by
    grader and item."""
    inputs_of = {item["item_id"]: item for item in items}
    grades: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    first: dict[str, dict[str, Any]] = {}
    for row in run.rows:
        grades[row["grader"]][row["item_id"]] = row
        first.setdefault(row["item_id"], row)
    data = []
    for item_id, row in first.items():
        item = inputs_of.get(item_id, {})
        expectations = {
            k: item[k]
            for k in ("reference", "expected_label", "expected_score")
            if item.get(k) is not None
        }
        data.append(
            {
                "inputs": {
                    "item_id": item_id,
                    "category": row["category"],
                    **(item.get("inputs") or {}),
                },
                "outputs": row["answer"] or f"(no answer: {row['answer_status']})",
                **({"expectations": expectations} if expectations else {}),
            }
        )
    return data, grades


def _scorer(grader: str, grades: Mapping[str, Mapping[str, Any]]):
    from mlflow.entities import AssessmentSource, Feedback
    from mlflow.genai.scorers import scorer

    @scorer(name=grader)
    def recorded_grade(inputs: dict[str, Any]) -> Feedback:
        row = grades[inputs["item_id"]]
        judged = row["grader_kind"] == "judge"
        return Feedback(
            value=float(row["score"]),
            rationale=row["reason"] or None,
            source=AssessmentSource(
                source_type="LLM_JUDGE" if judged else "CODE",
                source_id=(row["judge_model"] or grader) if judged else grader,
            ),
            metadata={
                "passed": str(bool(row["passed"])),
                "grader_kind": row["grader_kind"],
                "judge_model": row["judge_model"],
                "cached": str(bool(row["cached"])),
            },
        )

    return recorded_grade


def log_offline_eval(
    settings: Any,
    run: EvalRun,
    *,
    items: Sequence[Mapping[str, Any]] = (),
    registry: Any = None,
    description: str = "",
) -> LoggedEval:
    """Log `run` as an MLflow evaluation run (and mirror its prompt into MLflow's registry
    first when `registry` is given, so the run links the prompt version it evaluated)."""
    import mlflow

    from mallard.models.registry import NOTE_TAG, client

    c = client(settings)
    experiment_id = eval_experiment(settings, run.eval_name, c)
    prompt_uri = None
    if registry is not None:
        from mallard.llm.prompts.mlflow_mirror import mirror_prompt

        mirrored = mirror_prompt(registry, c, run.prompt_name, experiment_id)
        version = mirrored.versions.get(run.prompt_version)
        prompt_uri = f"prompts:/{run.prompt_name}/{version}" if version is not None else None
    data, grades = evaluation_rows(run, items)
    summary = run.summary
    metrics: dict[str, float] = {
        "items": float(summary["items"]),
        "failed_answers": float(summary["failed_answers"]),
        "cost_usd": float(summary["cost_usd"]),
        "answer_latency_p50_ms": float(summary["answer_latency_p50_ms"]),
    }
    for grader, stats in summary["graders"].items():
        if stats["pass_rate"] == stats["pass_rate"]:  # not NaN
            metrics[f"{grader}/pass_rate"] = float(stats["pass_rate"])
    first = run.rows[0] if run.rows else {}
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"{run.prompt_name} v{run.prompt_version} · {run.dataset} v{run.dataset_version}",
        tags={
            "mallard.kind": "offline_eval",
            "mallard.eval": run.eval_name,
            EVAL_RUN_TAG: run.run_id,
            "mallard.prompt": run.prompt_name,
            "mallard.prompt_version": str(run.prompt_version),
            NOTE_TAG: description
            or f"Offline eval `{run.eval_name}` of prompt `{run.prompt_name}` v{run.prompt_version} "
            f"on dataset `{run.dataset}` v{run.dataset_version}"
            + (f", slice `{run.slice}`" if run.slice else "")
            + f": {summary['items']} items graded by {', '.join(grades)}. Mallard's record is "
            f"the judge_scores table (eval run {run.run_id}).",
        },
    ) as active:
        mlflow.log_params(
            {
                "eval": run.eval_name,
                "prompt": run.prompt_name,
                "prompt_version": run.prompt_version,
                "dataset": run.dataset,
                "dataset_version": run.dataset_version,
                "slice": run.slice or "(all)",
                "graders": ",".join(grades),
                "endpoint": first.get("endpoint", ""),
                "model": first.get("model", ""),
                "mallard_eval_run_id": run.run_id,
            }
        )
        if data:
            # MLflow prints progress bars and a banner; the asset logs its own summary.
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                result = mlflow.genai.evaluate(
                    data=data, scorers=[_scorer(g, rows) for g, rows in grades.items()]
                )
            metrics.update({k: float(v) for k, v in (result.metrics or {}).items()})
        mlflow.log_metrics({k: v for k, v in metrics.items() if "/mean" not in k})
        if prompt_uri is not None:
            c.link_prompt_version_to_run(active.info.run_id, prompt_uri)
        run_id = active.info.run_id
    return LoggedEval(experiment_id, run_id, prompt_uri, metrics)
