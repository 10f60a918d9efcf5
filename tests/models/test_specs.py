"""Model declarations: the sample world's catalog, and bad declarations failing at load."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from catalog.features import REGISTRY, TRAINING_SETS
from catalog.models import MODELS, churn_classifier, customer_segments, minutes_forecast
from mallard.models.specs import (
    ESTIMATOR_PARAMS,
    DecisionThreshold,
    ModelCatalog,
    ModelSpec,
    NaiveBaseline,
    Preprocessing,
    PromotionRule,
)
from mallard.specs import DeclarationError

ROOT = Path(__file__).resolve().parents[2]


def _spec(**changes) -> ModelSpec:
    return dataclasses.replace(churn_classifier, **changes)


def test_sample_world_declares_three_tasks() -> None:
    assert MODELS.names == ["churn_classifier", "minutes_forecast", "customer_segments"]
    assert {m.task for m in MODELS} == {"classification", "regression", "clustering"}
    assert churn_classifier.label == "churned_14d" and churn_classifier.leaderboard_metric == "AUC"
    assert minutes_forecast.label == "minutes_next_14d" and not minutes_forecast.higher_is_better
    assert customer_segments.label is None
    # Features default to the whole service, in service order.
    assert MODELS.features("churn_classifier")[:2] == ["minutes_7d", "sessions_7d"]
    assert len(MODELS.features("churn_classifier")) == 14
    assert MODELS.features("customer_segments") == list(customer_segments.features)
    for model in MODELS:
        assert len(set(model.families.values())) >= 3


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task": "forecasting"}, r"ModelSpec 'churn_classifier': task='forecasting' is unknown"),
        ({"time_budget": 0}, r"time_budget=0 must be a number of seconds > 0"),
        ({"time_budget": -5.0}, r"time_budget=-5.0 must be a number of seconds > 0"),
        ({"metric": "mae"}, r"metric='mae' is not a classification metric"),
        ({"estimators": ["lr", "ridge", "dt"]}, r"estimators span 2 families"),
        ({"estimators": ["lr", "dt", "xgb"]}, r"estimators holds 'xgb'"),
        ({"label": None}, r"label is required for classification"),
        ({"folds": 1}, r"folds=1 must be an integer from 2 to 20"),
        ({"estimator_params": {"knn": {}}}, r"estimator_params sets 'knn'"),
        ({"name": "Churn Model"}, r"name='Churn Model' is not a safe identifier"),
        ({"promotion": PromotionRule(significance=0.7)}, r"promotion.significance=0.7"),
        ({"promotion": PromotionRule(test="mcnemar")}, None),
        ({"preprocessing": Preprocessing(numeric_imputation="knn")}, r"numeric_imputation='knn'"),
        (
            {"estimator_params": {"rf": {"n_estimatorz": 30}}},
            r"estimator_params\['rf'\] sets 'n_estimatorz', which RandomForestClassifier \('rf'\) "
            r"does not take \(did you mean 'n_estimators'\?\); valid parameters: .*max_depth",
        ),
        (
            {"estimator_params": {"lightgbm": {"n_estimators": 60, "verbose": -1}}},
            None,  # a LightGBM booster parameter beyond the signature
        ),
        ({"estimator_params": {"lr": {"alpha": 1.0}}}, r"which LogisticRegression \('lr'\)"),
        (
            {"threshold": DecisionThreshold(rule="contact_budget")},
            r"threshold.budget must be the share of rows to flag",
        ),
        ({"threshold": DecisionThreshold(rule="top_k")}, r"threshold.rule='top_k' is unknown"),
        ({"threshold": DecisionThreshold(rule="max_f1", budget=0.1)}, r"applies to rule="),
        ({"baseline": NaiveBaseline("minutes_7d")}, r"baseline applies to regression only"),
    ],
)
def test_bad_declarations_name_the_model_and_field(changes, message) -> None:
    if message is None:
        _spec(**changes)  # valid
        return
    with pytest.raises(DeclarationError, match=message):
        _spec(**changes)


def test_the_declared_models_say_how_they_are_used() -> None:
    assert churn_classifier.decision_threshold == DecisionThreshold("contact_budget", 0.10)
    assert dataclasses.replace(churn_classifier, threshold=None).decision_threshold == (
        DecisionThreshold("max_f1")
    )
    assert minutes_forecast.decision_threshold is None
    assert minutes_forecast.baseline == NaiveBaseline(
        "minutes_7d", (0, 7), description="the customer's minutes of the last 14 days"
    )
    with pytest.raises(DeclarationError, match="threshold applies to classification only"):
        dataclasses.replace(minutes_forecast, threshold=DecisionThreshold())
    with pytest.raises(DeclarationError, match="baseline.lags_days must list whole days"):
        dataclasses.replace(minutes_forecast, baseline=NaiveBaseline("minutes_7d", (-7,)))
    with pytest.raises(DeclarationError, match="baseline.feature='shoe_size' is not served"):
        ModelCatalog(
            [dataclasses.replace(minutes_forecast, baseline=NaiveBaseline("shoe_size"))],
            REGISTRY,
            TRAINING_SETS,
        )


def test_parameter_table_matches_the_installed_estimators() -> None:
    """The table estimator_params are checked against at load is PyCaret's classes' signatures."""
    import inspect
    import warnings

    import numpy as np
    import pandas as pd
    from pycaret.classification import ClassificationExperiment
    from pycaret.clustering import ClusteringExperiment
    from pycaret.containers.models import classification, clustering, regression
    from pycaret.regression import RegressionExperiment

    data = pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) % 7, "y": [0, 1] * 20})
    experiments = {
        "classification": (ClassificationExperiment, classification, {"target": "y"}),
        "regression": (RegressionExperiment, regression, {"target": "y"}),
        "clustering": (ClusteringExperiment, clustering, {}),
    }
    for task, (kind, containers, target) in experiments.items():
        experiment = kind()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            experiment.setup(data=data, session_id=1, verbose=False, html=False, **target)
        built = containers.get_all_model_containers(experiment)
        for estimator, (class_name, names) in ESTIMATOR_PARAMS[task].items():
            cls = built[estimator].class_def
            signature = [
                p.name
                for p in inspect.signature(cls.__init__).parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
            ]
            assert (cls.__name__, names.split()) == (class_name, signature), (task, estimator)


def test_mcnemar_is_for_classification_only() -> None:
    with pytest.raises(DeclarationError, match="'mcnemar' applies to classification only"):
        dataclasses.replace(minutes_forecast, promotion=PromotionRule(test="mcnemar"))


def test_clustering_takes_no_label() -> None:
    with pytest.raises(DeclarationError, match="label must be None for clustering"):
        dataclasses.replace(customer_segments, label="churned_14d")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"features": ["minutes_7d", "lifetime_value"]},
            r"features 'lifetime_value' not served by feature service 'churn_features'",
        ),
        ({"feature_service": "nope"}, r"feature_service='nope' is not a declared feature service"),
        ({"training_set": "nope"}, r"training_set='nope' is not a declared training set"),
        ({"label": "churned_30d"}, r"label='churned_30d' is not a label of training set"),
    ],
)
def test_catalog_checks_references(changes, message) -> None:
    with pytest.raises(DeclarationError, match=message):
        ModelCatalog([_spec(**changes)], REGISTRY, TRAINING_SETS)


def test_catalog_rejects_duplicates() -> None:
    with pytest.raises(DeclarationError, match="name is declared twice"):
        ModelCatalog([churn_classifier, churn_classifier], REGISTRY, TRAINING_SETS)


def test_a_bad_declaration_fails_at_import(tmp_path: Path) -> None:
    """A catalog module with a feature the service does not serve fails when it is imported."""
    module = tmp_path / "bad_models.py"
    module.write_text(
        textwrap.dedent(
            """
            from catalog.features import REGISTRY, TRAINING_SETS
            from mallard.models.specs import ModelCatalog, ModelSpec

            MODELS = ModelCatalog(
                [ModelSpec(name="m", task="classification", training_set="churn_training_set",
                           feature_service="churn_features", label="churned_14d", metric="auc",
                           estimators=["lr", "dt", "rf"], features=["minutes_7d", "shoe_size"])],
                REGISTRY, TRAINING_SETS)
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-c", "import bad_models"],
        cwd=ROOT,
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "DeclarationError: ModelSpec 'm': features 'shoe_size' not served" in proc.stderr


def test_describe_is_flat() -> None:
    params = churn_classifier.describe()
    assert params["metric"] == "auc" and params["promotion.significance"] == 0.05
    assert all(isinstance(v, str | int | float | bool | type(None)) for v in params.values())
