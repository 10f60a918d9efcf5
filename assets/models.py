"""Models as assets: per declared model a candidate, its training statistics, its evaluation
against the champion, the champion decision and the champion's explanations.

One set of five assets per `ModelSpec` in catalog/models.py (group "training"): adding a
declaration grows the graph. State lives in MLflow (the `candidate` and `champion` aliases), so
each asset can be re-run on its own. PyCaret, MLflow, SHAP and matplotlib load inside the
asset bodies only.
"""

import dagster as dg

from assets.names import model_asset
from catalog.models import MODELS
from mallard.models.specs import ModelSpec
from resources import MLflowResource

MLFLOW_UI = "http://127.0.0.1:5000"  # `make mlflow`


def _md_table(frame, digits: int = 4) -> str:
    if frame is None or len(frame) == 0:
        return "(no rows)"
    columns = list(frame.columns)

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.{digits}f}" if abs(value) < 1e6 else f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines)


def _images(figures) -> dg.MetadataValue:
    from mallard.models.plots import markdown_image

    parts = []
    for name, path in figures.items():
        parts.append(f"**{name.replace('_', ' ')}**\n\n{markdown_image(path, name)}")
    return dg.MetadataValue.md("\n\n".join(parts))


def _run_link(tracking_uri: str, experiment_id: str, run_id: str) -> dg.MetadataValue:
    """The run in the MLflow UI: the tracking server itself, or `make mlflow` for the embedded store."""
    ui = tracking_uri.rstrip("/") if tracking_uri.startswith("http") else MLFLOW_UI
    return dg.MetadataValue.url(f"{ui}/#/experiments/{experiment_id}/runs/{run_id}")


def _fail(exc: Exception) -> dg.Failure:
    return dg.Failure(description=str(exc))


def build_model_assets(
    spec: ModelSpec, features: list[str] | None = None, feature_types: dict[str, str] | None = None
) -> list[dg.AssetsDefinition]:
    """The five assets of one model (features default to its declaration in catalog/models.py)."""
    name = spec.name
    features = features or MODELS.features(name)
    feature_types = feature_types or MODELS.feature_types
    owners = [spec.owner] if "@" in spec.owner else None
    common = {"group_name": "training", "owners": owners, "tags": {"model": name}}

    def _expected_errors():
        from mallard.models.data import TrainingDataError
        from mallard.models.registry import RegistryError

        return (TrainingDataError, RegistryError)

    @dg.asset(
        name=model_asset(name, "candidate"),
        deps=[spec.training_set],
        kinds={"pycaret", "mlflow"},
        description=f"{spec.description} PyCaret compares {', '.join(spec.estimators)} "
        f"({spec.folds}-fold CV on {spec.metric}, budget {spec.time_budget:g} s), finalizes the "
        "winner on the training slice, logs it to MLflow and registers it as the `candidate`.",
        metadata={
            "task": spec.task,
            "metric": spec.metric,
            "estimators": ", ".join(spec.estimators),
        },
        **common,
    )
    def candidate(
        context: dg.AssetExecutionContext, mlflow: MLflowResource
    ) -> dg.MaterializeResult:
        from mallard.models.training import train_candidate

        try:
            result = train_candidate(
                spec, mlflow.settings(), features, feature_types, log=context.log.info
            )
        except _expected_errors() as exc:
            raise _fail(exc) from None
        board = result.leaderboard
        winner_metrics = {k: round(v, 4) for k, v in result.cv_metrics.items() if k != "TT (Sec)"}
        metadata = {
            "leaderboard": dg.MetadataValue.md(_md_table(board)),
            "winner": f"{result.estimator_name} ({result.estimator})",
            "winning_metrics": dg.MetadataValue.json(winner_metrics),
            f"cv_{spec.metric}": float(
                result.cv_metrics.get(spec.leaderboard_metric, float("nan"))
            ),
            "model_version": result.version,
            "mlflow_run_id": result.run_id,
            "mlflow_run": _run_link(
                mlflow.settings().mlflow_tracking_uri, result.experiment_id, result.run_id
            ),
            "plots": _images(result.plots),
            "training_rows": result.data["train_rows"],
            "train_days": f"{result.data['train_first_day']} … {result.data['train_last_day']}",
            "holdout_days": f"{result.data['holdout_first_day']} … {result.data['holdout_last_day']}",
            "training_set_version": result.data["training_set_delta_version"],
            "feature_versions": dg.MetadataValue.json(result.feature_versions),
            "seconds": round(result.seconds, 1),
        }
        if result.test_metrics:
            metadata["internal_test_metrics"] = dg.MetadataValue.json(
                {k: round(v, 4) for k, v in result.test_metrics.items()}
            )
        if result.skipped:
            metadata["not_reached_within_budget"] = ", ".join(result.skipped)
        if result.threshold is not None:
            metadata["decision_threshold"] = float(result.threshold["value"])
            rule = spec.decision_threshold
            metadata["threshold_rule"] = rule.describe() if rule else result.threshold["rule"]
            metadata["threshold_on_internal_test"] = dg.MetadataValue.json(
                {
                    k: round(result.threshold[k], 4)
                    for k in ("flagged_share", "precision", "recall", "f1")
                }
            )
        for key, path in result.plots.items():
            metadata[f"plot_{key}"] = dg.MetadataValue.path(str(path))
        return dg.MaterializeResult(metadata=metadata)

    @dg.asset(
        name=model_asset(name, "training_statistics"),
        deps=[candidate.key],
        kinds={"mlflow"},
        description="Per-feature statistics of the candidate's training rows (count, nulls, range, "
        "quantiles, categories) and an IsolationForest out-of-distribution detector, stored "
        "with the model version for input validation at serving time.",
        **common,
    )
    def training_statistics(
        context: dg.AssetExecutionContext, mlflow: MLflowResource
    ) -> dg.MaterializeResult:
        import pandas as pd

        from mallard.models.statistics import compute_training_statistics

        try:
            stats, run_id = compute_training_statistics(
                spec, mlflow.settings(), features, feature_types, log=context.log.info
            )
        except _expected_errors() as exc:
            raise _fail(exc) from None
        rows = []
        for feature, entry in stats.features.items():
            quantiles = entry.get("quantiles", {})
            rows.append(
                {
                    "feature": feature,
                    "type": entry["type"],
                    "count": entry["count"],
                    "nulls": entry["nulls"],
                    "min": entry.get("min", ""),
                    "p50": quantiles.get("0.5", ""),
                    "p99": quantiles.get("0.99", ""),
                    "max": entry.get("max", ""),
                    "categories": ", ".join(
                        f"{k} {v:.0%}" for k, v in entry.get("frequencies", {}).items()
                    ),
                }
            )
        ood = stats.extra.get("holdout_ood_rate")
        return dg.MaterializeResult(
            metadata={
                "model_version": stats.version,
                "training_rows": stats.rows,
                "features": dg.MetadataValue.md(_md_table(pd.DataFrame(rows), 3)),
                "ood_detector": "IsolationForest on "
                + ", ".join(stats.detector.features if stats.detector else []),
                "holdout_ood_rate": float(ood) if ood is not None else float("nan"),
                "mlflow_run_id": run_id,
            }
        )

    @dg.asset(
        name=model_asset(name, "evaluation"),
        deps=[candidate.key],
        kinds={"mlflow"},
        description="The candidate against the current champion on the same held-out slice, "
        "later in time than the training rows: metrics of both and a paired test "
        + (
            "(silhouette bootstrap and assignment stability)."
            if spec.task == "clustering"
            else "(paired bootstrap of the deciding metric"
            + (", exact McNemar)." if spec.task == "classification" else " of the error).")
        ),
        **common,
    )
    def evaluation(
        context: dg.AssetExecutionContext, mlflow: MLflowResource
    ) -> dg.MaterializeResult:
        import pandas as pd

        from mallard.models.evaluation import evaluate_candidate

        try:
            result = evaluate_candidate(
                spec, mlflow.settings(), features, feature_types, log=context.log.info
            )
        except _expected_errors() as exc:
            raise _fail(exc) from None
        table = pd.DataFrame(result.metrics).reset_index().rename(columns={"index": "metric"})
        metadata = {
            "candidate_version": result.candidate_version,
            "champion_version": result.champion_version or 0,
            "metrics": dg.MetadataValue.md(_md_table(table)),
            f"candidate_{spec.metric}": float(result.metrics["candidate"][spec.metric]),
            "holdout_rows": result.holdout["rows"],
            "holdout_days": f"{result.holdout['first_day']} … {result.holdout['last_day']}",
            "rule_says": "promote" if result.decision.promote else "keep",
            "reason": result.decision.reason,
            "plots": _images(result.plots),
        }
        candidate_metrics = result.metrics["candidate"]
        if spec.task == "classification":
            metadata.update(
                {
                    "candidate_pr_auc": float(candidate_metrics["pr_auc"]),
                    "threshold_rule": str(result.reference.get("threshold_rule", "")),
                    "decision_threshold": float(candidate_metrics.get("threshold", 0.5)),
                    "at_threshold": dg.MetadataValue.json(
                        {
                            m: round(candidate_metrics[m], 4)
                            for m in ("recall", "precision", "f1", "accuracy", "flagged_share")
                        }
                    ),
                    "base_rate": float(result.reference["base_rate"]),
                    "always_positive_f1": float(result.reference["always_positive_f1"]),
                }
            )
        elif spec.task == "regression" and "naive_mae" in result.reference:
            metadata.update(
                {
                    "naive_baseline": str(result.reference["baseline"]),
                    "naive_mae": float(result.reference["naive_mae"]),
                    "mae_vs_naive": float(candidate_metrics["mae_vs_naive"]),
                }
            )
        elif spec.task == "clustering":
            metadata["holdout_stability"] = float(candidate_metrics["stability"])
        if result.bootstrap is not None:
            b = result.bootstrap
            metadata.update(
                {
                    "improvement": b.improvement,
                    "improvement_ci": f"[{b.ci_low:+.4f}, {b.ci_high:+.4f}] ({1 - b.alpha:.0%})",
                    "one_sided_lower_bound": b.lower_bound,
                    "bootstrap_p_value": b.p_value,
                    f"champion_{spec.metric}": float(result.metrics["champion"][spec.metric]),
                }
            )
        if result.mcnemar is not None:
            m = result.mcnemar
            metadata["mcnemar"] = dg.MetadataValue.json(
                {
                    "only_candidate_right": m.candidate_only_right,
                    "only_champion_right": m.champion_only_right,
                    "p_two_sided": m.p_two_sided,
                    "accuracy_difference_ci": [m.ci_low, m.ci_high],
                }
            )
        if result.warnings:
            metadata["warnings"] = "; ".join(result.warnings)
        return dg.MaterializeResult(metadata=metadata)

    @dg.asset(
        name=model_asset(name, "champion"),
        deps=[evaluation.key, training_statistics.key],
        kinds={"mlflow"},
        description=f"Applies the promotion rule: the `champion` alias moves to the candidate only "
        f"if it beats the champion by more than {spec.promotion.min_improvement:g} {spec.metric} "
        f"at significance {spec.promotion.significance} (or no champion exists). The decision and "
        "its reason are recorded as MLflow tags and a decision run.",
        **common,
    )
    def champion(context: dg.AssetExecutionContext, mlflow: MLflowResource) -> dg.MaterializeResult:
        from mallard.models.evaluation import apply_promotion

        try:
            decision = apply_promotion(spec, mlflow.settings(), log=context.log.info)
        except _expected_errors() as exc:
            raise _fail(exc) from None
        return dg.MaterializeResult(
            metadata={
                "decision": decision.action,
                "reason": decision.reason,
                "candidate_version": decision.version,
                "champion_before": decision.champion_before or 0,
                "champion_version": decision.champion_after or 0,
                "decision_run_id": decision.run_id,
            }
        )

    @dg.asset(
        name=model_asset(name, "explanations"),
        deps=[champion.key],
        # Explanations follow the champion (a promotion, a rollback job, a re-materialization).
        automation_condition=dg.AutomationCondition.eager(),
        kinds={"shap"} if spec.task != "clustering" else {"sklearn"},
        description=(
            "Segment profiles of the champion on the most recent customers."
            if spec.task == "clustering"
            else "SHAP global importance of the champion on the most recent customers "
            "(explainer chosen by model type, rows sampled to bound the cost)."
        ),
        **common,
    )
    def explanations(
        context: dg.AssetExecutionContext, mlflow: MLflowResource
    ) -> dg.MaterializeResult:
        from mallard.models.explain import explain_champion

        try:
            result = explain_champion(spec, mlflow.settings(), feature_types, log=context.log.info)
        except _expected_errors() as exc:
            raise _fail(exc) from None
        metadata = {
            "champion_version": result.version,
            "method": result.method,
            "rows_explained": result.rows,
            "table": dg.MetadataValue.md(_md_table(result.table)),
            "plots": _images(result.plots),
            "seconds": round(result.seconds, 1),
        }
        if result.output:
            metadata["output"] = result.output
        return dg.MaterializeResult(metadata=metadata)

    return [candidate, training_statistics, evaluation, champion, explanations]


MODEL_ASSETS = [asset for spec in MODELS for asset in build_model_assets(spec)]


class RollbackConfig(dg.Config):
    """Which model to roll back and to what (0: the champion before the current one)."""

    model: str
    to_version: int = 0
    reason: str = "rolled back from Dagster"


@dg.op(description="Move a model's `champion` alias back and record the decision.")
def rollback_champion(
    context: dg.OpExecutionContext, config: RollbackConfig, mlflow: MLflowResource
):
    from mallard.models.registry import RegistryError, rollback

    if config.model not in MODELS:
        raise dg.Failure(
            description=f"no model named {config.model!r} (models: {', '.join(MODELS.names)})"
        )
    try:
        decision = rollback(
            mlflow.settings(), config.model, config.to_version or None, config.reason
        )
    except RegistryError as exc:
        raise dg.Failure(description=str(exc)) from None
    context.log.info(decision.reason)
    yield dg.AssetMaterialization(
        asset_key=model_asset(config.model, "champion"),
        metadata={
            "decision": "rollback",
            "reason": decision.reason,
            "champion_before": decision.champion_before or 0,
            "champion_version": decision.champion_after or 0,
            "decision_run_id": decision.run_id,
        },
    )
    yield dg.Output(decision.champion_after)
