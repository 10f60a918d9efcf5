"""Monitoring assets per watched model: daily predictions, drift, outcomes and performance.

One set per `MonitoringSpec` in catalog/monitoring.py. All are daily partitioned with single-run
backfills, so a month of days imports Evidently and MLflow once.
"""

import datetime as dt

import dagster as dg

from assets.common import daily_partitions, markdown_table, partition_days, report_url, trend_plot
from assets.names import model_asset, monitoring_asset
from catalog.monitoring import MONITORED
from mallard.monitoring.specs import MonitoringSpec
from resources import LakeResource, MLflowResource


def issue_label(issue: dict) -> str:
    """`feature: rule` for an input-quality finding (the detector's judge the whole row)."""
    feature = issue.get("feature") or "whole row"
    rule = issue["issue"]
    if rule == "out_of_distribution":
        rule = "out_of_distribution (IsolationForest on the training rows)"
    return f"{feature}: {rule}"


def build_monitoring_assets(mon: MonitoringSpec) -> list[dg.AssetsDefinition]:
    """Predictions, drift, outcomes and performance assets (and their checks) for one model."""
    from catalog.features import REGISTRY, TRAINING_SETS
    from catalog.models import MODELS

    spec = MODELS.get(mon.model)
    features = MODELS.features(mon.model)
    training_set = next(t for t in TRAINING_SETS if t.name == spec.training_set)
    service_views = sorted({ref.view.name for ref in REGISTRY.resolve([spec.feature_service])})
    name = mon.model
    common = dict(
        group_name="monitoring",
        owners=[spec.owner] if "@" in spec.owner else None,
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
    )

    @dg.asset(
        name=monitoring_asset(name, "predictions"),
        description=f"Each day's active customers scored by the {name} champion (and, after a "
        "promotion, by the previous champion in shadow), appended to the prediction log.",
        deps=[*service_views, model_asset(name, "champion")],
        check_specs=[
            dg.AssetCheckSpec(
                "input_quality",
                asset=monitoring_asset(name, "predictions"),
                description="Nulls and out-of-range values against training statistics.",
            )
        ],
        kinds={"mlflow", "delta"},
        **common,
    )
    def predictions(context: dg.AssetExecutionContext, mlflow: MLflowResource):
        import pandas as pd

        from mallard.models.loading import load_version, resolve_version
        from mallard.models.registry import client, history
        from mallard.models.statistics import load_training_statistics
        from mallard.monitoring import predictions as log
        from mallard.monitoring.scoring import active_entities, day_start, features_for, predict

        settings = mlflow.settings()
        champion = load_version(settings, name, resolve_version(settings, name))
        stack = history(client(settings), name)
        previous = [v for v in stack if v != champion.version]
        logged = log.read_predictions(settings, name, role="champion")
        first_day = (
            logged.loc[logged["model_version"] == str(champion.version), "day"].min()
            if len(logged)
            else None
        )
        stats = load_training_statistics(settings, name, champion.version)
        total = 0
        problems: dict[str, int] = {}
        shadow_version = None
        for day in partition_days(context):
            entities = active_entities(REGISTRY, settings, mon.active_view, day)
            if entities.empty:
                context.log.warning(f"{name}: no active entities on {day}")
                continue
            rows = features_for(REGISTRY, settings, spec.feature_service, features, entities)
            keys = rows[[c for c in entities.columns if c != "event_timestamp"]]
            scored = [("champion", champion)]
            in_shadow = (
                first_day is None or pd.isna(first_day) or (day - first_day).days < mon.shadow_days
            )
            if previous and in_shadow:
                shadow = load_version(settings, name, previous[-1])
                scored.append(("shadow", shadow))
                shadow_version = shadow.version
            for role, model in scored:
                prediction, score = predict(model, rows[features])
                table = log.to_log_table(
                    keys,
                    rows[features],
                    prediction,
                    score,
                    timestamp=day_start(day),
                    model_name=name,
                    model_version=str(model.version),
                    role=role,
                    source="batch",
                    run_id=context.run_id,
                )
                log.replace_batch(settings, table, name, role, day)
            day_problems: dict[str, int] = {}
            for issue in stats.check(rows[features]):
                label = issue_label(issue)
                day_problems[label] = day_problems.get(label, 0) + int(issue.get("rows", 1))
            for label, count in day_problems.items():
                problems[label] = problems.get(label, 0) + count
            context.add_asset_metadata(
                {
                    "dagster/row_count": len(rows),
                    "input_issues": dg.MetadataValue.json(day_problems),
                },
                partition_key=day.isoformat(),
            )
            total += len(rows)
        yield dg.MaterializeResult(
            metadata={
                "rows_in_run": total,
                "champion_version": champion.version,
                "shadow_version": shadow_version or "none",
            }
        )
        yield dg.AssetCheckResult(
            check_name="input_quality",
            passed=not problems,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"issues_by_feature_and_rule": dg.MetadataValue.json(problems)},
            description="; ".join(f"{k}: {v}" for k, v in problems.items())
            or "inputs within training ranges",
        )

    @dg.asset(
        name=monitoring_asset(name, "drift"),
        description=f"Evidently data drift of each day's {name} inputs against the rows the champion "
        "was evaluated on (sampled), with the HTML report and the drift-share trend.",
        deps=[predictions.key],
        kinds={"evidently"},
        # A day's report follows its predictions: no decision here, so no sensor.
        automation_condition=dg.AutomationCondition.eager(),
        **common,
    )
    def drift(context: dg.AssetExecutionContext, mlflow: MLflowResource):
        import json

        import pandas as pd

        from mallard.models.loading import load_version, resolve_version
        from mallard.monitoring import predictions as log
        from mallard.monitoring import results
        from mallard.monitoring.drift import DriftInputError, drift_report, report_path
        from mallard.monitoring.scoring import reference_rows

        settings = mlflow.settings()
        champion = load_version(settings, name, resolve_version(settings, name))
        reference = reference_rows(settings, champion)
        numerical = [f for f in features if f not in champion.categorical]
        for day in partition_days(context):
            logged = log.read_predictions(settings, name, day=day, role="champion")
            if logged.empty:
                results.record(
                    settings,
                    name,
                    day,
                    "drift",
                    str(champion.version),
                    None,
                    {"problem": f"no predictions logged for {day}"},
                )
                continue
            current = pd.DataFrame([json.loads(f) for f in logged["features"]])
            try:
                result = drift_report(
                    reference,
                    current,
                    numerical,
                    list(champion.categorical),
                    mon.drift,
                    html_path=report_path(settings.reports_dir, name, day),
                    summary=False,
                    drift_share=mon.policy.drift_share,
                    header=f"Mallard: {name} v{champion.version}, inputs of {day} against the "
                    f"rows it was evaluated on. Mallard requests a retrain when the share of "
                    f"drifted features reaches {mon.policy.drift_share:g} "
                    f"(RetrainPolicy.drift_share in catalog/monitoring.py), the threshold "
                    "this report's dataset-drift verdict uses.",
                )
            except DriftInputError as exc:
                results.record(
                    settings, name, day, "drift", str(champion.version), None, {"problem": str(exc)}
                )
                continue
            results.record(
                settings,
                name,
                day,
                "drift",
                str(champion.version),
                result.share_drifted,
                {
                    "drifted": result.drifted,
                    "problems": result.problems,
                    "report": result.html_path,
                },
            )
            context.log.info(
                f"{name} {day}: drift share {result.share_drifted:.2f} {sorted(result.drifted)}"
            )
            # Each day's partition carries that day's own result and report.
            context.add_asset_metadata(
                {
                    "day": day.isoformat(),
                    "drift_share": result.share_drifted,
                    "drifted_features": dg.MetadataValue.json(result.drifted),
                    "input_problems": dg.MetadataValue.json(result.problems),
                    "report": dg.MetadataValue.url(report_url(settings, result.html_path))
                    if result.html_path
                    else "none",
                    "drift_share_threshold": mon.policy.drift_share,
                    "per_feature": dg.MetadataValue.md(
                        markdown_table(
                            [
                                {
                                    "feature": c.column,
                                    "method": c.method,
                                    "score": round(c.score, 4),
                                    "threshold": c.threshold,
                                    "drifted": c.drifted,
                                }
                                for c in result.columns
                            ]
                        )
                    ),
                },
                partition_key=day.isoformat(),
            )
        history_rows = [r for r in results.read(settings, name, "drift") if r["value"] is not None]
        metadata: dict = {"days_in_run": len(partition_days(context))}
        if history_rows:
            metadata["drift_share_trend"] = dg.MetadataValue.md(
                trend_plot(
                    history_rows,
                    "drift share",
                    mon.policy.drift_share,
                    settings.reports_dir / "drift" / name / "trend.png",
                    settings,
                )
            )
        yield dg.MaterializeResult(metadata=metadata)

    @dg.asset(
        name=monitoring_asset(name, "outcomes"),
        description=f"{name} predictions joined with the labels that arrived "
        f"{mon.label_delay_days} days later; a day is filled once its labels are known.",
        deps=[predictions.key, training_set.label_source.name],
        kinds={"delta"},
        **common,
    )
    def outcomes(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        from mallard.monitoring import outcomes as out
        from mallard.monitoring import predictions as log
        from mallard.monitoring.scoring import day_start

        settings = lake.settings()
        days = partition_days(context)
        as_of = day_start(days[-1] + dt.timedelta(days=mon.label_delay_days + 1))
        keys = list(REGISTRY.views[mon.active_view].join_keys)
        joined = 0
        for day in days:
            logged = log.read_predictions(settings, name, day=day)
            frame = out.join_outcomes(
                settings, logged, training_set.label_source, spec.label, keys, as_of
            )
            if frame.empty:
                context.log.warning(f"{name}: no known outcomes for {day} yet")
                continue
            out.replace_outcomes(settings, frame, name, day)
            joined += len(frame)
        return dg.MaterializeResult(
            metadata={"dagster/row_count": joined, "labels_known_by": as_of.isoformat()}
        )

    @dg.asset(
        name=monitoring_asset(name, "performance"),
        description=f"{name}'s daily {spec.metric} on outcomes (champion and shadow), the trend, "
        "and Evidently's quality report of the latest day.",
        deps=[outcomes.key],
        automation_condition=dg.AutomationCondition.eager(),
        kinds={"evidently"},
        **common,
    )
    def performance(context: dg.AssetExecutionContext, mlflow: MLflowResource):
        from mallard.models.evaluation import EVALUATION_ARTIFACT
        from mallard.models.loading import load_json_artifact, load_version, resolve_version
        from mallard.monitoring import outcomes as out
        from mallard.monitoring import results
        from mallard.monitoring.performance import daily_metrics, quality_report

        settings = mlflow.settings()
        days = partition_days(context)
        frame = out.read_outcomes(settings, name, first_day=days[0], last_day=days[-1])
        metric = "auc" if spec.task == "classification" else "mae"
        baselines: dict[str, float | None] = {}

        def baseline_of(version: str) -> float | None:
            """A version's held-out metric from its own evaluation: what its drop is measured from."""
            if version not in baselines:
                run_id = load_version(settings, name, int(version)).run_id
                evaluation = load_json_artifact(settings, run_id, EVALUATION_ARTIFACT) or {}
                baselines[version] = evaluation.get("metrics", {}).get("candidate", {}).get(metric)
            return baselines[version]

        champion_version = str(resolve_version(settings, name))
        table = daily_metrics(frame, spec.task) if len(frame) else None
        latest_version = champion_version
        if table is not None:
            for row in table.to_dict("records"):
                version = str(row["model_version"])
                results.record(
                    settings,
                    name,
                    row["day"],
                    "performance",
                    version,
                    row.get(metric),
                    {**row, "baseline": baseline_of(version)},
                    role=row["role"],
                )
                if row["role"] == "champion":
                    context.add_asset_metadata(
                        {
                            metric: row.get(metric),
                            "model_version": version,
                            f"baseline_{metric}": baseline_of(version) or "unknown",
                            "rows": row.get("rows", 0),
                        },
                        partition_key=str(row["day"]),
                    )
            champion_rows = table[table["role"] == "champion"]
            if len(champion_rows):
                latest_version = str(champion_rows["model_version"].iloc[-1])
        # The latest day is judged against the baseline of the version that scored it.
        baseline = baseline_of(latest_version)
        metadata: dict = {
            "days_with_outcomes": 0 if table is None else int(table["day"].nunique()),
            f"baseline_{metric}": baseline if baseline is not None else "unknown",
        }
        trend = [r for r in results.read(settings, name, "performance") if r["value"] is not None]
        if trend:
            metadata[f"{metric}_trend"] = dg.MetadataValue.md(
                trend_plot(
                    trend,
                    metric,
                    baseline,
                    settings.reports_dir / "performance" / name / "trend.png",
                    settings,
                )
            )
        if table is not None and len(table):
            metadata["daily"] = dg.MetadataValue.md(
                markdown_table(
                    [
                        {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                        for r in table.tail(14).to_dict("records")
                    ]
                )
            )
            last_day = frame["day"].max()
            html = quality_report(
                frame[frame["day"] == last_day],
                None,
                spec.task,
                settings.reports_dir / "performance" / name / f"{last_day}.html",
            )
            metadata["report"] = dg.MetadataValue.url(report_url(settings, html))
        yield dg.MaterializeResult(metadata=metadata)

    return [predictions, drift, outcomes, performance]


def build_monitoring_checks(mon: MonitoringSpec) -> list[dg.AssetChecksDefinition]:
    """The drift and performance checks, standalone: they read the latest recorded result, so the
    UI's Execute button (or a job) runs them without recomputing the asset."""
    name = mon.model
    policy = mon.policy

    @dg.asset_check(
        asset=monitoring_asset(name, "drift"),
        name="drift_share_below_threshold",
        description=f"The latest day's drift share of {name}'s inputs is below "
        f"{policy.drift_share:.2f}, the share that requests a retrain.",
    )
    def drift_share_below_threshold(mlflow: MLflowResource) -> dg.AssetCheckResult:
        from mallard.monitoring import results

        rows = [r for r in results.read(mlflow.settings(), name, "drift") if r["value"] is not None]
        if not rows:
            return dg.AssetCheckResult(passed=True, description="no drift result yet")
        latest = rows[-1]
        return dg.AssetCheckResult(
            passed=latest["value"] < policy.drift_share,
            metadata={
                "day": latest["day"].isoformat(),
                "drift_share": latest["value"],
                "threshold": policy.drift_share,
                "drifted": dg.MetadataValue.json(sorted(latest["details"].get("drifted", {}))),
            },
            description=f"{latest['day']}: drift share {latest['value']:.2f} "
            f"(threshold {policy.drift_share:.2f})",
        )

    @dg.asset_check(
        asset=monitoring_asset(name, "performance"),
        name="metric_within_tolerance",
        description=f"The latest day's {name} champion metric on outcomes has not dropped by "
        f"more than {policy.max_auc_drop:.2f} AUC from the held-out baseline of the version "
        "that scored it (regressions: reported, not judged).",
    )
    def metric_within_tolerance(mlflow: MLflowResource) -> dg.AssetCheckResult:
        from mallard.monitoring import results

        rows = [
            r
            for r in results.read(mlflow.settings(), name, "performance")
            if r["value"] is not None
        ]
        if not rows:
            return dg.AssetCheckResult(passed=True, description="no outcomes yet")
        latest = rows[-1]
        baseline = latest["details"].get("baseline")
        metric = "auc" if "auc" in latest["details"] else "mae"
        drop = None if baseline is None else baseline - latest["value"]
        ok = drop is None or metric != "auc" or drop <= policy.max_auc_drop
        return dg.AssetCheckResult(
            passed=bool(ok),
            metadata={
                "day": latest["day"].isoformat(),
                "latest": latest["value"],
                "baseline": baseline if baseline is not None else -1.0,
                "model_version": latest["model_version"],
            },
            description=f"{latest['day']}, v{latest['model_version']}: {metric} {latest['value']:.3f}"
            + (f" vs its own baseline {baseline:.3f}" if baseline is not None else ""),
        )

    return [drift_share_below_threshold, metric_within_tolerance]


MONITORING_ASSETS = [a for mon in MONITORED for a in build_monitoring_assets(mon)]
MONITORING_CHECKS = [c for mon in MONITORED for c in build_monitoring_checks(mon)]
