"""Explanations: SHAP for classifiers and regressors, segment profiles for clusterings.

The explainer follows the fitted estimator: `TreeExplainer` for tree ensembles (exact and
fast), `LinearExplainer` for linear models, and a permutation explainer on a small background
for anything else. Contributions are computed in the pipeline's transformed space (one-hot
columns, scaled values) and summed back onto the declared features, so `current_plan_basic`
and `current_plan_premium` both count towards `current_plan`.

`explain_rows` is what the serving API calls for `/explain`; the champion's explainer is
built once per process and reused.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mallard.config import Settings, get_settings
from mallard.models import plots
from mallard.models.data import latest_delta_version, load_model_data
from mallard.models.loading import LoadedModel, load_version, resolve_version
from mallard.models.registry import client
from mallard.models.specs import ModelSpec
from mallard.models.training import quiet, reports_dir

if TYPE_CHECKING:
    import pandas as pd

TREE_MODELS = (
    "DecisionTree",
    "RandomForest",
    "ExtraTrees",
    "LGBM",
    "GradientBoosting",
    "HistGradientBoosting",
    "XGB",
    "CatBoost",
)
LINEAR_MODELS = (
    "LogisticRegression",
    "Ridge",
    "LinearRegression",
    "Lasso",
    "ElasticNet",
    "LinearDiscriminantAnalysis",
    "BayesianRidge",
    "HuberRegressor",
    "SGD",
    "Lars",
    "ARDRegression",
)
GLOBAL_ROWS = 500  # rows explained for global importance
PERMUTATION_ROWS = 100  # fewer when the explainer is model-agnostic (it costs far more)
BACKGROUND_ROWS = 50

_EXPLAINERS: dict[tuple[str, str, int], RowExplainer] = {}
_LOCK = threading.Lock()


def feature_map(columns: list[str], features: list[str]) -> dict[str, str]:
    """Transformed column → declared feature (exact name, else the longest `feature_` prefix)."""
    mapping = {}
    by_length = sorted(features, key=len, reverse=True)
    for column in columns:
        if column in features:
            mapping[column] = column
            continue
        owner = next((f for f in by_length if column.startswith(f + "_")), column)
        mapping[column] = owner
    return mapping


@dataclass
class RowExplainer:
    """A version's explainer over the pipeline's transformed inputs."""

    model: LoadedModel
    kind: str
    output: str
    explainer: Any
    columns: list[str] = field(default_factory=list)

    def transform(self, x: pd.DataFrame) -> pd.DataFrame:
        with quiet():
            transformed = self.model.preprocessor.transform(x)
        return transformed[self.columns] if self.columns else transformed

    def shap_values(self, x: pd.DataFrame):
        """A shap.Explanation for the rows, one output (the positive class for classifiers)."""
        import numpy as np

        transformed = self.transform(x)
        with quiet():
            if self.kind == "tree":
                explanation = self.explainer(transformed, check_additivity=False)
            else:
                explanation = self.explainer(transformed)
        values = np.asarray(explanation.values)
        base = np.asarray(explanation.base_values)
        if values.ndim == 3:
            values, base = values[:, :, -1], base[:, -1] if base.ndim == 2 else base
        explanation.values = values
        explanation.base_values = np.broadcast_to(base, (len(values),)).astype(float)
        explanation.feature_names = list(transformed.columns)
        return explanation

    def contributions(self, x: pd.DataFrame) -> pd.DataFrame:
        """Per-row contributions summed onto the declared features, plus base value."""
        import pandas as pd

        explanation = self.shap_values(x)
        columns = list(explanation.feature_names)
        mapping = feature_map(columns, self.model.features)
        frame = pd.DataFrame(explanation.values, columns=columns, index=x.index)
        summed = frame.T.groupby(pd.Series(mapping)).sum().T
        summed = summed.reindex(columns=self.model.features, fill_value=0.0)
        summed["base_value"] = explanation.base_values
        return summed


def _family(estimator: Any) -> str:
    name = type(estimator).__name__
    if any(name.startswith(prefix) for prefix in TREE_MODELS):
        return "tree"
    if any(name.startswith(prefix) for prefix in LINEAR_MODELS) and hasattr(estimator, "coef_"):
        return "linear"
    return "permutation"


def build_explainer(settings: Settings, model: LoadedModel) -> RowExplainer:
    """Pick the explainer that fits the model (and load its background sample if it needs one)."""
    import pandas as pd
    import shap

    if model.task == "clustering":
        raise ValueError(
            f"model {model.name!r} is a clustering: it has segment profiles, not SHAP values"
        )
    estimator = model.estimator
    kind = _family(estimator)
    classifier = model.task == "classification"
    if kind == "tree":
        with quiet():
            explainer = shap.TreeExplainer(estimator)
        name = type(estimator).__name__
        output = (
            "log_odds"
            if classifier and name.startswith(("LGBM", "XGB", "CatBoost", "GradientBoosting"))
            else ("probability" if classifier else "value")
        )
        return RowExplainer(model, kind, output, explainer)
    import mlflow.artifacts

    client(settings)
    local = mlflow.artifacts.download_artifacts(
        run_id=model.run_id, artifact_path="explain/background.parquet"
    )
    raw = pd.read_parquet(local)
    background = RowExplainer(model, kind, "", None).transform(model.frame(raw))
    background = background.sample(min(BACKGROUND_ROWS, len(background)), random_state=0)
    columns = list(background.columns)
    masker = shap.maskers.Independent(background, max_samples=BACKGROUND_ROWS)
    if kind == "linear":
        with quiet():
            explainer = shap.LinearExplainer(estimator, masker)
        output = "log_odds" if classifier else "value"
        return RowExplainer(model, kind, output, explainer, columns)

    def predict(values):
        frame = pd.DataFrame(values, columns=columns)
        with quiet():
            if classifier and hasattr(estimator, "predict_proba"):
                return estimator.predict_proba(frame)[:, 1]
            return estimator.predict(frame)

    explainer = shap.PermutationExplainer(predict, masker, max_evals=2 * len(columns) + 1)
    output = "probability" if classifier and hasattr(estimator, "predict_proba") else "value"
    return RowExplainer(model, kind, output, explainer, columns)


def _row_explainer(settings: Settings, name: str, version: int) -> RowExplainer:
    key = (settings.mlflow_tracking_uri, name, version)
    with _LOCK:
        if key in _EXPLAINERS:
            return _EXPLAINERS[key]
    explainer = build_explainer(settings, load_version(settings, name, version))
    with _LOCK:
        _EXPLAINERS[key] = explainer
    return explainer


def explain_rows(
    model_name: str,
    rows: pd.DataFrame | list[dict[str, Any]] | dict[str, Any],
    settings: Settings | None = None,
    version: int | str | None = None,
) -> pd.DataFrame:
    """Per-row SHAP contributions of each declared feature for the champion (or `version`).

    Returns one row per input row: a column per feature, `base_value` and `prediction` (the
    positive-class probability for classifiers, the value for regressions). Contributions
    plus `base_value` add up to the explainer's output, named in `.attrs["output"]`
    (`log_odds`, `probability` or `value`). Rows need every feature column; nulls are allowed
    (the pipeline imputes them).
    """
    import numpy as np

    from mallard.models.training import _scores

    settings = settings or get_settings()
    number = resolve_version(settings, model_name, version)
    explainer = _row_explainer(settings, model_name, number)
    model = explainer.model
    x = model.frame(rows)
    result = explainer.contributions(x)
    with quiet():
        if model.task == "classification":
            result["prediction"] = _scores(model.pipeline, x)
        else:
            result["prediction"] = np.asarray(model.pipeline.predict(x), dtype=float)
    result.attrs.update(
        model=model_name, version=number, output=explainer.output, explainer=explainer.kind
    )
    return result


@dataclass
class ExplanationResult:
    """Global explanation of a version: SHAP importance, or segment profiles."""

    model: str
    version: int
    kind: str  # shap | segments
    method: str  # tree | linear | permutation | segment profiles
    table: pd.DataFrame
    plots: dict[str, Path]
    rows: int
    output: str = ""
    seconds: float = 0.0


def _recent_rows(
    spec: ModelSpec, settings: Settings, model: LoadedModel, feature_types: dict[str, str]
) -> pd.DataFrame:
    """The latest held-out slice of the model's training set (the most recent customers)."""
    data = load_model_data(
        spec,
        settings,
        model.features,
        feature_types,
        delta_version=latest_delta_version(settings, spec.training_set),
    )
    return data.holdout


def _most_common(values: pd.Series) -> Any:
    """The most common value of a segment's column, None when it has no values."""
    return values.mode().iat[0] if values.notna().any() else None


def _segment_profiles(model: LoadedModel, rows: pd.DataFrame) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    x = model.frame(rows)
    with quiet():
        segments = np.asarray(model.pipeline.predict(x))
    frame = x.assign(segment=segments)
    numeric = [f for f in model.features if f not in model.categorical]
    grouped = frame.groupby("segment")
    profile = grouped[numeric].mean() if numeric else pd.DataFrame(index=grouped.size().index)
    for name in model.categorical:
        profile[name] = grouped[name].agg(_most_common)
    profile.insert(0, "rows", grouped.size())
    profile.insert(1, "share", grouped.size() / len(frame))
    return profile


def explain_champion(
    spec: ModelSpec,
    settings: Settings,
    feature_types: dict[str, str],
    *,
    version: int | None = None,
    log=None,
) -> ExplanationResult:
    """Global explanation of the champion (or `version`), stored on its MLflow run."""
    log = log or (lambda message: None)
    started = time.perf_counter()
    number = resolve_version(settings, spec.name, version)
    model = load_version(settings, spec.name, number)
    recent = _recent_rows(spec, settings, model, feature_types)
    out = reports_dir(settings, spec.name, model.run_id) / "explanations"
    out.mkdir(parents=True, exist_ok=True)
    c = client(settings)
    if spec.task == "clustering":
        table = _segment_profiles(model, recent)
        numeric = [f for f in model.features if f not in model.categorical]
        figures = {
            "segment_profiles": plots.segment_profiles(table[numeric], out / "segment_profiles.png")
        }
        result = ExplanationResult(
            spec.name,
            number,
            "segments",
            "segment profiles",
            table.reset_index(),
            figures,
            len(recent),
        )
    else:
        explainer = _row_explainer(settings, spec.name, number)
        limit = PERMUTATION_ROWS if explainer.kind == "permutation" else GLOBAL_ROWS
        sample = recent.sample(min(limit, len(recent)), random_state=spec.seed)
        x = model.frame(sample)
        explanation = explainer.shap_values(x)
        contributions = explainer.contributions(x).drop(columns="base_value")
        import pandas as pd

        table = (
            pd.DataFrame(
                {
                    "feature": contributions.columns,
                    "mean_abs_shap": contributions.abs().mean().to_numpy(),
                    "mean_shap": contributions.mean().to_numpy(),
                }
            )
            .sort_values("mean_abs_shap", ascending=False)
            .reset_index(drop=True)
        )
        figures = {
            "shap_importance": plots.importance_bars(table, out / "shap_importance.png"),
            "shap_beeswarm": plots.beeswarm(explanation, out / "shap_beeswarm.png"),
        }
        result = ExplanationResult(
            spec.name, number, "shap", explainer.kind, table, figures, len(sample), explainer.output
        )
    result.table.to_csv(out / "table.csv", index=False)
    c.log_artifact(model.run_id, str(out / "table.csv"), "explanations")
    for path in result.plots.values():
        c.log_artifact(model.run_id, str(path), "explanations")
    c.set_model_version_tag(spec.name, str(number), "mallard.explained_with", result.method)
    c.log_dict(
        model.run_id,
        {
            "kind": result.kind,
            "method": result.method,
            "rows": result.rows,
            "output": result.output,
        },
        "explanations/summary.json",
    )
    result.seconds = time.perf_counter() - started
    log(
        f"{spec.name}: {result.method} explanation of champion v{number} over {result.rows} rows "
        f"in {result.seconds:.1f} s"
    )
    return result
