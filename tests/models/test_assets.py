"""The model assets on a Dagster instance: the graph per declaration, materialization with
metadata, a failing candidate that leaves the champion alone, and the rollback job."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import dagster as dg

from catalog.models import MODELS, customer_segments, minutes_forecast
from mallard.models.specs import TrainingWindow

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("candidate", "training_statistics", "evaluation", "champion", "explanations")


def test_five_assets_per_declared_model_and_the_jobs() -> None:
    from assets.models import MODEL_ASSETS
    from pipelines.jobs import MODEL_JOBS

    keys = {a.key.to_user_string() for a in MODEL_ASSETS}
    assert keys == {f"{m.name}_{kind}" for m in MODELS for kind in KINDS}
    assert {a.group_names_by_key[a.key] for a in MODEL_ASSETS} == {"training"}
    candidate = next(
        a for a in MODEL_ASSETS if a.key.to_user_string() == "churn_classifier_candidate"
    )
    assert dg.AssetKey("churn_training_set") in candidate.dependency_keys
    champion = next(
        a for a in MODEL_ASSETS if a.key.to_user_string() == "churn_classifier_champion"
    )
    assert champion.dependency_keys == {
        dg.AssetKey("churn_classifier_evaluation"),
        dg.AssetKey("churn_classifier_training_statistics"),
    }
    assert [job.name for job in MODEL_JOBS] == [
        "train_models",
        *(f"retrain_{m.name}" for m in MODELS),
        "rollback",
    ]


def test_loading_the_model_modules_imports_no_heavy_library() -> None:
    code = (
        "import sys, assets.models, catalog.models, cli.models\n"
        "heavy = ('pycaret', 'mlflow', 'shap', 'sklearn', 'matplotlib', 'lightgbm', 'dagster_mlflow')\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert proc.stdout.strip() == ""


def _small(spec, **changes):
    return dataclasses.replace(spec, folds=2, time_budget=30, **changes)


def _metadata(result, key: str) -> dict:
    events = [
        e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == key
    ]
    assert events, f"{key} was not materialized"
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def test_materialize_train_evaluate_promote_explain_and_roll_back(model_home) -> None:
    from assets.models import build_model_assets
    from mallard.models.registry import client
    from pipelines.jobs import rollback_job
    from resources import resources_for_env

    settings = model_home
    regression = _small(
        minutes_forecast,
        estimators=["ridge", "dt", "lightgbm"],
        estimator_params={"lightgbm": {"n_estimators": 20}},
        window=TrainingWindow(
            holdout_days=21, train_days=28, max_train_rows=4_000, max_holdout_rows=4_000
        ),
    )
    segments = _small(
        customer_segments,
        window=TrainingWindow(holdout_days=21, max_train_rows=1_500, max_holdout_rows=1_500),
    )
    assets = [
        *build_model_assets(regression, MODELS.features("minutes_forecast")),
        *build_model_assets(segments, MODELS.features("customer_segments")),
    ]
    resources = resources_for_env()
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(assets, resources=resources, instance=instance)
        assert result.success
        candidate = _metadata(result, "minutes_forecast_candidate")
        assert candidate["leaderboard"].startswith("| estimator | MAE |")
        assert "family" not in candidate["leaderboard"]
        assert candidate["model_version"] == 1
        assert candidate["mlflow_run"].startswith("http://127.0.0.1:5000/#/experiments/")
        # Plots are images and a page on the reports server (`mallard serve`, /reports).
        assert "](http://127.0.0.1:8000/reports/models/minutes_forecast/" in candidate["plots"]
        assert len(candidate["plots"]) < 1000  # short enough for the asset page to show inline
        page = settings.reports_dir / candidate["plots_page"].split("/reports/", 1)[1]
        assert page.name == "index.html" and "model_comparison.png" in page.read_text()
        assert set(candidate["winning_metrics"]) >= {"MAE", "RMSE", "R2"}
        evaluation = _metadata(result, "minutes_forecast_evaluation")
        assert evaluation["rule_says"] == "promote" and "| mae |" in evaluation["metrics"]
        champion = _metadata(result, "minutes_forecast_champion")
        assert (champion["decision"], champion["champion_version"]) == ("promote", 1)
        explanations = _metadata(result, "minutes_forecast_explanations")
        assert explanations["method"] in ("tree", "linear") and explanations["output"] == "value"
        assert "| feature | mean_abs_shap | mean_shap |" in explanations["table"]
        stats = _metadata(result, "minutes_forecast_training_statistics")
        assert "| minutes_7d | numeric |" in stats["features"]
        assert 0 <= stats["holdout_ood_rate"] <= 1
        profiles = _metadata(result, "customer_segments_explanations")
        assert (
            profiles["method"] == "segment profiles"
            and "| segment | rows | share |" in profiles["table"]
        )
        seg_eval = _metadata(result, "customer_segments_evaluation")
        assert "| silhouette |" in seg_eval["metrics"] and "| stability |" in seg_eval["metrics"]

        # A candidate whose training data is unusable fails with the reason; champion untouched.
        broken = dataclasses.replace(
            regression, window=TrainingWindow(holdout_days=21, train_days=1, gap_days=1)
        )
        failed = dg.materialize(
            build_model_assets(broken, MODELS.features("minutes_forecast"))[:1],
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        assert not failed.success
        failure = next(e for e in failed.all_events if e.is_step_failure)
        assert "too few rows in the training slice" in failure.step_failure_data.error.message
        aliases = client(settings).get_registered_model("minutes_forecast").aliases
        assert {k: int(v) for k, v in aliases.items()} == {"candidate": 1, "champion": 1}

        # The rollback job: nothing to roll back to yet is a clear failure…
        config = {"ops": {"rollback_champion": {"config": {"model": "minutes_forecast"}}}}
        none = rollback_job.execute_in_process(
            run_config=config, resources=resources, instance=instance, raise_on_error=False
        )
        assert not none.success
        # …a second candidate, then rolling the champion to it and back is recorded each time.
        again = dg.materialize(
            build_model_assets(regression, MODELS.features("minutes_forecast"))[:1],
            resources=resources,
            instance=instance,
        )
        assert again.success
        to_two = {
            "ops": {"rollback_champion": {"config": {"model": "minutes_forecast", "to_version": 2}}}
        }
        moved = rollback_job.execute_in_process(
            run_config=to_two, resources=resources, instance=instance
        )
        assert moved.success
        event = moved.get_asset_materialization_events()[0]
        assert event.asset_key == dg.AssetKey("minutes_forecast_champion")
        assert event.materialization.metadata["decision"].value == "rollback"
        back = rollback_job.execute_in_process(
            run_config=config, resources=resources, instance=instance
        )
        assert back.success
        aliases = client(settings).get_registered_model("minutes_forecast").aliases
        assert int(aliases["champion"]) == 1
