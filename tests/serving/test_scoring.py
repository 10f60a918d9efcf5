"""Scoring runs a pipeline's preprocessing once, with the results of predict and predict_proba.

`mallard.monitoring.scoring.predict` feeds one transform to both the estimator's `predict` and
its scores; these tests compare it with calling the pipeline's own `predict` and
`predict_proba` (each transforming again) on scikit-learn and PyCaret pipelines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mallard.models.training import _scores
from mallard.monitoring.scoring import predict

FEATURES = ["a", "b", "plan"]


@dataclass
class Model:
    """What scoring reads of a loaded model (mallard.models.loading.LoadedModel's shape)."""

    pipeline: Any
    task: str
    features: list[str] = field(default_factory=lambda: list(FEATURES))
    categorical: list[str] = field(default_factory=lambda: ["plan"])
    tags: dict[str, str] = field(default_factory=dict)

    def frame(self, rows: pd.DataFrame) -> pd.DataFrame:
        return rows[self.features]


def _rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.exponential(size=n),
            "plan": rng.choice(["basic", "plus", "pro"], size=n).astype(object),
        }
    )
    frame.loc[rng.random(n) < 0.1, "a"] = np.nan
    frame.loc[rng.random(n) < 0.1, "plan"] = np.nan
    return frame


def _sklearn_prep():
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    return ColumnTransformer(
        [
            ("num", SimpleImputer(strategy="median"), ["a", "b"]),
            (
                "cat",
                Pipeline(
                    [
                        ("fill", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                ["plan"],
            ),
        ],
        verbose_feature_names_out=False,
    )


def _expected(model: Model, rows: pd.DataFrame):
    x = model.frame(rows)
    prediction = np.asarray(model.pipeline.predict(x), dtype=float)
    scores = (
        np.asarray(_scores(model.pipeline, x), dtype=float)
        if model.task == "classification"
        else None
    )
    return prediction, scores


def _same(model: Model, rows: pd.DataFrame) -> None:
    prediction, scores = predict(model, rows)
    want_prediction, want_scores = _expected(model, rows)
    np.testing.assert_array_equal(prediction, want_prediction)
    if want_scores is None:
        assert scores is None
    else:
        assert scores is not None
        np.testing.assert_array_equal(scores, want_scores)


@pytest.mark.parametrize(
    "estimator",
    ["forest", "logistic", "boosting"],
)
def test_sklearn_classifiers_score_as_their_pipeline_does(estimator: str) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    final = {
        "forest": RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0),
        "logistic": LogisticRegression(max_iter=500),
        "boosting": HistGradientBoostingClassifier(max_iter=30, random_state=0),
    }[estimator]
    train = _rows(600, 1)
    label = ((train["b"] > 1) | (train["plan"] == "pro")).astype(int)
    pipeline = Pipeline([("prep", _sklearn_prep()), ("model", final)]).set_output(
        transform="pandas"
    )
    pipeline.fit(train[FEATURES], label)
    _same(Model(pipeline, "classification"), _rows(300, 2))
    _same(Model(pipeline, "classification"), _rows(1, 3))


def test_a_stored_decision_threshold_decides_instead_of_half() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from mallard.models.training import THRESHOLD_TAG

    train = _rows(600, 1)
    label = ((train["b"] > 1) | (train["plan"] == "pro")).astype(int)
    pipeline = Pipeline([("prep", _sklearn_prep()), ("model", LogisticRegression())])
    pipeline.set_output(transform="pandas").fit(train[FEATURES], label)
    rows = _rows(300, 2)
    half, scores = predict(Model(pipeline, "classification"), rows)
    assert scores is not None and np.array_equal(half, (scores >= 0.5).astype(float))
    strict = Model(pipeline, "classification", tags={THRESHOLD_TAG: "0.8"})
    decided, same_scores = predict(strict, rows)
    assert np.array_equal(same_scores, scores)
    assert np.array_equal(decided, (scores >= 0.8).astype(float))
    assert decided.sum() < half.sum()


def test_a_sklearn_regression_scores_as_its_pipeline_does() -> None:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline

    train = _rows(400, 4)
    target = 3 * train["b"] + (train["plan"] == "plus")
    pipeline = Pipeline([("prep", _sklearn_prep()), ("model", Ridge())]).set_output(
        transform="pandas"
    )
    pipeline.fit(train[FEATURES], target)
    _same(Model(pipeline, "regression"), _rows(200, 5))


def test_a_pycaret_pipeline_with_a_label_encoder_and_a_train_only_step() -> None:
    """PyCaret's Pipeline: the label encoder's inverse applies to predictions, and a train-only
    step (outlier removal) is skipped when scoring, as PyCaret's own predict does."""
    from pycaret.internal.pipeline import Pipeline
    from pycaret.internal.preprocess.transformers import (
        RemoveOutliers,
        TransformerWrapper,
        TransformerWrapperWithInverse,
    )
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import LabelEncoder, OneHotEncoder

    train = _rows(600, 6)
    # Labels 3 and 7: encoded to 0 and 1 for the estimator, decoded back by the pipeline.
    label = pd.Series(np.where((train["b"] > 1) | (train["plan"] == "pro"), 7, 3), name="y")
    pipeline = Pipeline(
        [
            ("label_encoding", TransformerWrapperWithInverse(LabelEncoder())),
            ("numeric", TransformerWrapper(SimpleImputer(strategy="mean"), include=["a", "b"])),
            (
                "categorical",
                TransformerWrapper(SimpleImputer(strategy="most_frequent"), include=["plan"]),
            ),
            (
                "onehot",
                TransformerWrapper(
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False), include=["plan"]
                ),
            ),
            ("outliers", TransformerWrapper(RemoveOutliers(threshold=0.05, random_state=0))),
            ("model", RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0)),
        ]
    )
    pipeline.fit(train[FEATURES], label)
    model = Model(pipeline, "classification")
    rows = _rows(300, 7)
    prediction, _ = predict(model, rows)
    assert set(np.unique(prediction)) <= {3.0, 7.0}
    _same(model, rows)
