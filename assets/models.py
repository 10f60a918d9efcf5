"""Models as assets: per declared model a candidate, its training statistics, its evaluation
against the champion, the champion decision and the champion's explanations.

One set of five assets per `ModelSpec` in catalog/models.py (group "training"): adding a
declaration grows the graph. State lives in MLflow (the `candidate` and `champion` aliases), so
each asset can be re-run on its own. PyCaret, MLflow, SHAP and matplotlib load inside the
asset bodies only.
"""

import dagster as dg

from assets.common import mlflow_run_url, plots_markdown, plots_page, report_url
from assets.names import model_asset
from catalog.models import MODELS
from mallard.config import Settings
from mallard.models.specs import ModelSpec
from resources import MLflowResource

# Leaderboard columns left out of the asset page (MLflow keeps the whole leaderboard): the
# family and the long model name repeat the id; Kappa, MCC, MSE and RMSLE restate the others.
LEADERBOARD_OMITTED = ("Model", "family", "Kappa", "MCC", "MSE", "RMSLE")


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


def leaderboard_table(board, metric: str) -> str:
    """The leaderboard narrow enough for the asset page: the estimator id, the deciding metric
    first, the other metrics to 3 decimals, the seconds to 1."""
    if board is None or len(board) == 0:
        return "(no rows)"
    frame = board.drop(columns=[c for c in LEADERBOARD_OMITTED if c in board.columns])
    others = [c for c in frame.columns if c not in ("id", metric, "TT (Sec)")]
    ordered = ["id"] + ([metric] if metric in frame.columns else []) + others
    if "TT (Sec)" in frame.columns:
        ordered.append("TT (Sec)")
    frame = frame[ordered].rename(columns={"id": "estimator", "TT (Sec)": "s"})
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, row, strict=True):
            if isinstance(value, float):
                cells.append(f"{value:.1f}" if column == "s" else f"{value:.3f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Every plot of a model version, drawn into one folder by the candidate, its evaluation and its
# explanations (once champion); the version's plots page shows those that exist.
PLOT_SECTIONS = (
    (
        "Candidate: cross-validated comparison, internal test rows",
        ("model_comparison", "confusion_matrix_roc", "residuals", "cluster_map"),
    ),
    (
        "Evaluation on the held-out slice, against the champion",
        ("holdout_comparison", "holdout_roc", "holdout_residuals"),
    ),
    (
        "Explanations of this version as champion",
        (
            "explanations/shap_importance",
            "explanations/shap_beeswarm",
            "explanations/segment_profiles",
        ),
    ),
)


def _plots(settings: Settings, name: str, version: int, folder, figures: dict) -> dict:
    """The figures as Markdown images, each as a link, and the version's plots page (`folder`:
    the version's reports folder, `MALLARD_HOME/reports/models/<model>/<run>`)."""
    sections = {
        heading: [folder / f"{stem}.png" for stem in stems] for heading, stems in PLOT_SECTIONS
    }
    page = plots_page(settings, folder, f"{name} v{version}: plots", sections)
    metadata: dict = {"plots_page": dg.MetadataValue.url(page)}
    if figures:
        metadata["plots"] = dg.MetadataValue.md(plots_markdown(settings, figures))
    for key, path in figures.items():
        metadata[f"plot_{key}"] = dg.MetadataValue.url(report_url(settings, path))
    return metadata


def _experiment_of(settings: Settings, run_id: str) -> str:
    from mallard.models.registry import client

    return client(settings).get_run(run_id).info.experiment_id


def _run_url(settings: Settings, run_id: str, experiment_id: str | None = None) -> dg.MetadataValue:
    """An MLflow run of a model, in MLflow's classic view."""
    experiment_id = experiment_id or _experiment_of(settings, run_id)
    return dg.MetadataValue.url(mlflow_run_url(settings, run_id, experiment_id))


def _link_dagster_run(context, settings: Settings, run_id: str, experiment_id: str | None) -> None:
    """Tag this Dagster run with the MLflow run it recorded (the MLflow run's
    `mallard.dagster_run_url` tag links back)."""
    if not run_id or context.run is None:
        return
    key = "mallard/mlflow_run." + ".".join(context.asset_key.path)
    experiment_id = experiment_id or _experiment_of(settings, run_id)
    context.instance.add_run_tags(
        context.run.run_id, {key: mlflow_run_url(settings, run_id, experiment_id)}
    )


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
        from mallard.models.training import reports_dir, train_candidate

        settings = mlflow.settings()
        try:
            result = train_candidate(spec, settings, features, feature_types, log=context.log.info)
        except _expected_errors() as exc:
            raise _fail(exc) from None
        board = result.leaderboard
        winner_metrics = {k: round(v, 4) for k, v in result.cv_metrics.items() if k != "TT (Sec)"}
        metadata = {
            "leaderboard": dg.MetadataValue.md(leaderboard_table(board, spec.leaderboard_metric)),
            "winner": f"{result.estimator_name} ({result.estimator})",
            "winning_metrics": dg.MetadataValue.json(winner_metrics),
            f"cv_{spec.metric}": float(
                result.cv_metrics.get(spec.leaderboard_metric, float("nan"))
            ),
            "model_version": result.version,
            "mlflow_run": _run_url(settings, result.run_id, result.experiment_id),
            **_plots(
                settings,
                name,
                result.version,
                reports_dir(settings, name, result.run_id),
                result.plots,
            ),
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
        _link_dagster_run(context, settings, result.run_id, result.experiment_id)
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

        settings = mlflow.settings()
        try:
            stats, run_id = compute_training_statistics(
                spec, settings, features, feature_types, log=context.log.info
            )
        except _expected_errors() as exc:
            raise _fail(exc) from None
        _link_dagster_run(context, settings, run_id, None)
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
                "mlflow_run": _run_url(settings, run_id),
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
        from mallard.models.training import reports_dir

        settings = mlflow.settings()
        try:
            result = evaluate_candidate(
                spec, settings, features, feature_types, log=context.log.info
            )
        except _expected_errors() as exc:
            raise _fail(exc) from None
        _link_dagster_run(context, settings, result.run_id, None)
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
            "mlflow_run": _run_url(settings, result.run_id),
            **_plots(
                settings,
                name,
                result.candidate_version,
                reports_dir(settings, name, result.run_id),
                result.plots,
            ),
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

        settings = mlflow.settings()
        try:
            decision = apply_promotion(spec, settings, log=context.log.info)
        except _expected_errors() as exc:
            raise _fail(exc) from None
        metadata = {
            "decision": decision.action,
            "reason": decision.reason,
            "candidate_version": decision.version,
            "champion_before": decision.champion_before or 0,
            "champion_version": decision.champion_after or 0,
        }
        if decision.run_id:  # no decision run when the candidate already is the champion
            metadata["decision_run"] = _run_url(settings, decision.run_id)
            _link_dagster_run(context, settings, decision.run_id, None)
        return dg.MaterializeResult(metadata=metadata)

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

        settings = mlflow.settings()
        try:
            result = explain_champion(spec, settings, feature_types, log=context.log.info)
        except _expected_errors() as exc:
            raise _fail(exc) from None
        folder = next(iter(result.plots.values())).parent.parent
        metadata = {
            "champion_version": result.version,
            "method": result.method,
            "rows_explained": result.rows,
            "table": dg.MetadataValue.md(_md_table(result.table)),
            **_plots(settings, name, result.version, folder, result.plots),
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
            "decision_run": _run_url(mlflow.settings(), decision.run_id),
        },
    )
    yield dg.Output(decision.champion_after)
