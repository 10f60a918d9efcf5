"""Train a candidate: PyCaret compares the declared estimators, MLflow records and registers it.

Supervised models: `setup` on the training slice, `compare_models` over the declared estimators
within the time budget (k-fold CV), then `finalize_model` refits the winner on the whole
training slice (never on the held-out slice, which stays for the evaluation). Clustering:
`create_model` per estimator, ranked by silhouette. Either way the fitted pipeline is logged as
an MLflow model with a signature and input example, registered as a new version of the
model's name, and the `candidate` alias moves to it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mallard.config import Settings
from mallard.models import plots
from mallard.models.data import ModelData, TrainingDataError, load_model_data
from mallard.models.registry import CANDIDATE, DAGSTER_RUN_URL_TAG, client, ensure_experiment
from mallard.models.specs import DecisionThreshold, ModelSpec

if TYPE_CHECKING:
    import pandas as pd

Log = Callable[[str], None]
# Training rows stored with each version: the background SHAP's linear and permutation
# explainers integrate over when a single row is explained.
BACKGROUND_ROWS = 200
# The version tag holding a classifier's decision threshold (scores ≥ it are positive).
THRESHOLD_TAG = "mallard.threshold"


@dataclass
class CandidateResult:
    """What `train_candidate` produced and where it is recorded."""

    model: str
    version: int
    run_id: str
    experiment_id: str
    estimator: str
    estimator_name: str
    leaderboard: pd.DataFrame
    cv_metrics: dict[str, float]
    test_metrics: dict[str, float]
    plots: dict[str, Path]
    data: dict[str, Any]
    feature_versions: dict[str, str]
    seconds: float
    skipped: list[str] = field(default_factory=list)
    threshold: dict[str, Any] | None = None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence PyCaret's, LightGBM's and MLflow's chatter for the duration."""
    loggers = [logging.getLogger(n) for n in ("pycaret", "mlflow", "lightgbm", "alembic", "logs")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def reports_dir(settings: Settings, model: str, run_id: str) -> Path:
    path = settings.reports_dir / "models" / model / run_id[:12]
    path.mkdir(parents=True, exist_ok=True)
    return path


def metric_key(name: str) -> str:
    """A leaderboard column as an MLflow metric key: 'Prec.' → 'prec', 'TT (Sec)' → 'tt_sec'."""
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in name.lower())
    return "_".join(part for part in cleaned.split("_") if part)


def _experiment(task: str):
    if task == "classification":
        from pycaret.classification import ClassificationExperiment

        return ClassificationExperiment()
    if task == "regression":
        from pycaret.regression import RegressionExperiment

        return RegressionExperiment()
    from pycaret.clustering import ClusteringExperiment

    return ClusteringExperiment()


def _setup(spec: ModelSpec, data: ModelData):
    experiment = _experiment(spec.task)
    columns = data.features + ([spec.label] if spec.label else [])
    kwargs: dict[str, Any] = {
        "data": data.train[columns],
        "session_id": spec.seed,
        "n_jobs": 1,
        "verbose": False,
        "html": False,
        "log_experiment": False,
        "system_log": False,
        "memory": False,
        "numeric_features": data.numeric or None,
        "categorical_features": data.categorical or None,
        **spec.preprocessing.setup_kwargs(spec.task),
    }
    if spec.task != "clustering":
        kwargs.update(target=spec.label, fold=spec.folds, train_size=0.8)
    experiment.setup(**kwargs)
    return experiment


def _include(spec: ModelSpec, experiment) -> list[Any]:
    """The declared estimators, built with their overridden parameters where declared."""
    if spec.task == "classification":
        from pycaret.containers.models.classification import get_all_model_containers
    else:
        from pycaret.containers.models.regression import get_all_model_containers
    containers = get_all_model_containers(experiment)
    include: list[Any] = []
    for estimator in spec.estimators:
        params = dict(spec.estimator_params.get(estimator, {}))
        if params:
            container = containers[estimator]
            include.append(container.class_def(**{**container.args, **params}))
        else:
            include.append(estimator)
    return include


def _label_leaderboard(spec: ModelSpec, board: pd.DataFrame) -> pd.DataFrame:
    board = board.copy()
    index = [str(i) for i in board.index]
    ids = [spec.estimators[int(i)] for i in index] if all(i.isdigit() for i in index) else index
    board.insert(0, "id", ids)
    board.insert(2, "family", [spec.families.get(i, "") for i in ids])
    return board.reset_index(drop=True)


def _scores(model: Any, x: pd.DataFrame):
    """Positive-class scores: probabilities, else decision values, else labels."""
    import numpy as np

    if hasattr(model, "predict_proba"):
        try:
            return np.asarray(model.predict_proba(x))[:, 1]
        except (AttributeError, NotImplementedError):
            pass
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(x), dtype=float)
    return np.asarray(model.predict(x), dtype=float)


def choose_threshold(rule: DecisionThreshold, y: Any, scores: Any) -> dict[str, Any]:
    """The decision threshold `rule` picks from out-of-sample scores, with what it does there.

    Candidate thresholds are the distinct scores (flag rows scoring ≥ the threshold). A contact
    budget takes the lowest threshold that flags at most `budget` of the rows; `max_f1` the one
    with the highest F1 (the higher threshold on a tie).
    """
    import numpy as np

    y = np.asarray(y, dtype=float)
    scores = np.asarray(scores, dtype=float)
    if rule.rule == "fixed" or len(scores) == 0:
        value = float(rule.value)
    else:
        order = np.argsort(-scores, kind="mergesort")
        s, yy = scores[order], y[order]
        last = np.r_[s[1:] != s[:-1], True]  # the last row of each tie group
        flagged = np.arange(1, len(s) + 1)[last]
        tp = np.cumsum(yy)[last]
        candidates = s[last]
        if rule.rule == "contact_budget":
            within = np.flatnonzero(flagged <= (rule.budget or 0.0) * len(s))
            value = float(candidates[within[-1]] if len(within) else candidates[0])
        else:
            f1 = 2 * tp / (flagged + max(yy.sum(), 1e-12))
            value = float(candidates[int(np.argmax(f1))])
    decided = scores >= value
    tp_n = float((decided & (y == 1)).sum())
    precision = tp_n / decided.sum() if decided.sum() else 0.0
    recall = tp_n / (y == 1).sum() if (y == 1).sum() else 0.0
    return {
        "rule": rule.rule,
        "budget": rule.budget,
        "value": value,
        "chosen_on": "internal test rows of the training slice",
        "rows": int(len(scores)),
        "flagged_share": float(decided.mean()) if len(scores) else 0.0,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0,
    }


def _train_supervised(spec: ModelSpec, data: ModelData, out: Path, log: Log) -> dict[str, Any]:
    started = time.perf_counter()
    with quiet():
        experiment = _setup(spec, data)
    log(
        f"{spec.name}: PyCaret setup on {len(data.train):,} rows ({time.perf_counter() - started:.1f} s)"
    )
    budget_left = max(spec.time_budget - (time.perf_counter() - started), 1.0)
    with quiet():
        best = experiment.compare_models(
            include=_include(spec, experiment),
            sort=spec.leaderboard_metric,
            n_select=1,
            budget_time=budget_left / 60,
            turbo=True,
            errors="ignore",
            verbose=False,
        )
        board = experiment.pull()
    if best is None or (isinstance(best, list) and not best):
        raise TrainingDataError(
            f"model {spec.name!r}: no estimator finished within the time budget of "
            f"{spec.time_budget:g} s; raise time_budget or lower window.max_train_rows"
        )
    leaderboard = _label_leaderboard(spec, board)
    winner = leaderboard.iloc[0]
    skipped = [e for e in spec.estimators if e not in set(leaderboard["id"])]
    log(
        f"{spec.name}: compared {len(leaderboard)} estimator(s), best {winner['Model']} "
        f"{spec.leaderboard_metric}={winner[spec.leaderboard_metric]:.4f}"
        + (f"; not reached within the budget: {', '.join(skipped)}" if skipped else "")
    )
    with quiet():
        extra = {"raw_score": True} if spec.task == "classification" else {}
        scored = experiment.predict_model(best, verbose=False, **extra)
        test_metrics = experiment.pull()
        final = experiment.finalize_model(best)
    y_test = experiment.get_config("y_test").to_numpy()
    figures = {
        "model_comparison": plots.model_comparison(
            leaderboard, spec.leaderboard_metric, out / "model_comparison.png"
        )
    }
    threshold = None
    if spec.task == "classification":
        labels = scored["prediction_label"].to_numpy()
        rule = spec.decision_threshold
        if "prediction_score_1" in scored and rule is not None:
            score = scored["prediction_score_1"].to_numpy(dtype=float)
            threshold = choose_threshold(rule, y_test, score)
            labels = (score >= threshold["value"]).astype(int)
            log(
                f"{spec.name}: decision threshold {threshold['value']:.4f} ({rule.describe()}); "
                f"on {threshold['rows']:,} internal test rows it flags "
                f"{threshold['flagged_share']:.1%}, precision {threshold['precision']:.3f}, "
                f"recall {threshold['recall']:.3f}"
            )
        else:
            score = scored["prediction_label"].to_numpy(dtype=float)
            log(f"{spec.name}: the winner gives no probabilities; decisions are its labels")
        figures["confusion_matrix_roc"] = plots.confusion_and_roc(
            y_test,
            score,
            labels,
            out / "confusion_matrix_roc.png",
            threshold=threshold["value"] if threshold else None,
        )
    else:
        figures["residuals"] = plots.residuals(
            y_test.astype(float),
            scored["prediction_label"].to_numpy(dtype=float),
            out / "residuals.png",
        )
    numeric = {
        k: float(v) for k, v in test_metrics.iloc[0].items() if k != "Model" and _is_number(v)
    }
    return {
        "pipeline": final,
        "leaderboard": leaderboard,
        "estimator": str(winner["id"]),
        "estimator_name": str(winner["Model"]),
        "cv_metrics": {
            k: float(v)
            for k, v in winner.items()
            if k not in ("id", "Model", "family") and _is_number(v)
        },
        "test_metrics": numeric,
        "plots": figures,
        "skipped": skipped,
        "threshold": threshold,
    }


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _train_clustering(spec: ModelSpec, data: ModelData, out: Path, log: Log) -> dict[str, Any]:
    import copy

    import pandas as pd

    from mallard.models.clustering import ClusterModel

    started = time.perf_counter()
    with quiet():
        experiment = _setup(spec, data)
    x = experiment.get_config("X_transformed")
    rows: list[dict[str, Any]] = []
    fitted: dict[str, ClusterModel] = {}
    skipped: list[str] = []
    for estimator in spec.estimators:
        if time.perf_counter() - started > spec.time_budget and fitted:
            skipped.append(estimator)
            continue
        began = time.perf_counter()
        with quiet():
            model = experiment.create_model(
                estimator,
                num_clusters=spec.num_clusters,
                verbose=False,
                **dict(spec.estimator_params.get(estimator, {})),
            )
            scores = experiment.pull().iloc[0].to_dict()
        wrapped = ClusterModel(model, x)
        fitted[estimator] = wrapped
        rows.append(
            {
                "id": estimator,
                "Model": type(model).__name__,
                "family": spec.families[estimator],
                **{
                    k: float(v)
                    for k, v in scores.items()
                    if k in ("Silhouette", "Calinski-Harabasz", "Davies-Bouldin")
                },
                "clusters": wrapped.n_clusters,
                "TT (Sec)": round(time.perf_counter() - began, 2),
            }
        )
    leaderboard = (
        pd.DataFrame(rows).sort_values("Silhouette", ascending=False).reset_index(drop=True)
    )
    winner = leaderboard.iloc[0]
    best = fitted[str(winner["id"])]
    log(
        f"{spec.name}: compared {len(leaderboard)} clusterer(s), best {winner['Model']} "
        f"silhouette={winner['Silhouette']:.4f} with {best.n_clusters} clusters"
    )
    pipeline = copy.deepcopy(experiment.pipeline)
    pipeline.steps.append(("trained_model", best))
    figures = {
        "model_comparison": plots.model_comparison(
            leaderboard, "Silhouette", out / "model_comparison.png"
        ),
        "cluster_map": plots.cluster_map(x, best.labels_, out / "cluster_map.png"),
    }
    return {
        "pipeline": pipeline,
        "leaderboard": leaderboard,
        "estimator": str(winner["id"]),
        "estimator_name": str(winner["Model"]),
        "cv_metrics": {
            k: float(v)
            for k, v in winner.items()
            if k not in ("id", "Model", "family") and _is_number(v)
        },
        "test_metrics": {},
        "plots": figures,
        "skipped": skipped,
    }


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("pycaret", "scikit-learn", "lightgbm", "pandas", "numpy", "mallard"):
        with contextlib.suppress(PackageNotFoundError):
            pins.append(f"{package}=={version(package)}")
    return pins


def run_name(spec: ModelSpec, version: int, estimator: str, data: ModelData) -> str:
    """`churn_classifier v7 · lightgbm · 2026-05-03…2026-05-16`: the version, the winning
    estimator and the days it was trained on."""
    return f"{spec.name} v{version} · {estimator} · {data.train_days[0]}…{data.train_days[1]}"


def version_description(
    spec: ModelSpec,
    result: dict[str, Any],
    data: ModelData,
    threshold: dict[str, Any] | None,
    dagster_run_url: str | None = None,
) -> str:
    """What a registered version is, in a few sentences (the version's and its run's description)."""
    metric = spec.leaderboard_metric
    score = result["cv_metrics"].get(metric)
    how = "on the training rows" if spec.task == "clustering" else f"{spec.folds}-fold CV"
    measured = f" by {metric} ({score:.4f}, {how})" if score is not None else ""
    parts = [
        f"{result['estimator_name']} (`{result['estimator']}`), the best of "
        f"{len(result['leaderboard'])} estimator(s){measured}.",
        f"Trained on {len(data.train):,} rows of `{data.training_set}` v{data.delta_version} "
        f"({data.train_days[0]} … {data.train_days[1]}); held-out slice {data.holdout_days[0]} "
        f"… {data.holdout_days[1]} ({len(data.holdout):,} rows), kept for the evaluation.",
    ]
    if threshold is not None:
        rule = spec.decision_threshold
        parts.append(
            f"Decision threshold {threshold['value']:.4f}"
            + (f" ({rule.describe()})" if rule is not None else "")
            + f": flags {threshold['flagged_share']:.1%} of the internal test rows."
        )
    if dagster_run_url:
        parts.append(f"Trained by Dagster run {dagster_run_url}")
    return " ".join(parts)


def log_datasets(spec: ModelSpec, settings: Settings, data: ModelData, features: list[str]) -> None:
    """The training slice (and the held-out slice) as the active run's dataset inputs."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    from mallard.features.training import training_set_path

    source = training_set_path(settings, data.training_set)
    columns = features + ([spec.label] if spec.label and spec.label in data.train else [])
    for context, frame, days in (
        ("training", data.train, data.train_days),
        ("evaluation", data.holdout, data.holdout_days),
    ):
        if frame is None or frame.empty:
            continue
        dataset = from_pandas(
            frame[[c for c in columns if c in frame.columns]],
            source=source,
            name=f"{data.training_set}@v{data.delta_version} {days[0]}…{days[1]}",
            targets=spec.label if spec.label in frame.columns else None,
        )
        mlflow.log_input(
            dataset,
            context=context,
            tags={
                "mallard.delta_version": str(data.delta_version),
                "mallard.days": f"{days[0]}/{days[1]}",
            },
        )


def train_candidate(
    spec: ModelSpec,
    settings: Settings,
    features: list[str],
    feature_types: dict[str, str],
    *,
    data: ModelData | None = None,
    log: Log | None = None,
) -> CandidateResult:
    """Train, log and register a new candidate version of `spec`; move `candidate` to it.

    Raises `TrainingDataError` (nothing is registered, no alias moves) when the training set
    lacks the label, has too few rows or a single class.
    """
    import mlflow
    from mlflow.models import infer_signature

    log = log or (lambda message: None)
    started = time.perf_counter()
    if data is None:
        data = load_model_data(spec, settings, features, feature_types)
    log(
        f"{spec.name}: training slice {data.train_days[0]} … {data.train_days[1]} "
        f"({len(data.train):,} of {data.rows_available.get('train', len(data.train)):,} rows), "
        f"held-out slice {data.holdout_days[0]} … {data.holdout_days[1]} "
        f"({len(data.holdout):,} rows), training set {data.training_set} v{data.delta_version}"
    )
    c = client(settings)
    experiment_id = ensure_experiment(settings, spec.name, c)
    with (
        quiet(),
        mlflow.start_run(experiment_id=experiment_id, run_name=f"{spec.name} candidate") as run,
    ):
        run_id = run.info.run_id
        out = reports_dir(settings, spec.name, run_id)
        mlflow.set_tags(
            {
                "mallard.kind": "candidate",
                "mallard.model": spec.name,
                "mallard.task": spec.task,
                "mallard.training_set": data.training_set,
                "mallard.training_set_delta_version": str(data.delta_version),
                **{
                    f"mallard.feature_version.{view}": label
                    for view, label in data.feature_versions.items()
                },
            }
        )
        mlflow.log_params({**spec.describe(), **data.summary(), "features": ",".join(features)})
        log_datasets(spec, settings, data, features)
        trainer = _train_clustering if spec.task == "clustering" else _train_supervised
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = trainer(spec, data, out, log)
        leaderboard: pd.DataFrame = result["leaderboard"]
        mlflow.log_metrics({f"cv_{metric_key(k)}": v for k, v in result["cv_metrics"].items()})
        mlflow.log_metrics({f"test_{metric_key(k)}": v for k, v in result["test_metrics"].items()})
        mlflow.log_metric("train_seconds", time.perf_counter() - started)
        mlflow.set_tags(
            {
                "mallard.estimator": result["estimator"],
                "mallard.estimator_name": result["estimator_name"],
            }
        )
        mlflow.log_text(leaderboard.to_csv(index=False), "leaderboard/leaderboard.csv")
        mlflow.log_text(
            leaderboard.to_markdown(index=False, floatfmt=".4f"), "leaderboard/leaderboard.md"
        )
        mlflow.log_table(leaderboard, "leaderboard/leaderboard.json")
        for path in result["plots"].values():
            mlflow.log_artifact(str(path), "plots")
        threshold = result.get("threshold")
        if threshold is not None:
            mlflow.log_metric("decision_threshold", threshold["value"])
            mlflow.log_dict(threshold, "threshold.json")
        mlflow.log_dict(
            {
                "features": features,
                "categorical": data.categorical,
                "label": spec.label,
                "task": spec.task,
                **({"threshold": threshold["value"]} if threshold else {}),
            },
            "model_inputs.json",
        )
        background = data.train[features].sample(
            n=min(BACKGROUND_ROWS, len(data.train)), random_state=spec.seed
        )
        background.to_parquet(out / "background.parquet")
        mlflow.log_artifact(str(out / "background.parquet"), "explain")
        example = data.train[features].head(5)
        signature = infer_signature(example, result["pipeline"].predict(example))
        info = mlflow.sklearn.log_model(
            result["pipeline"],
            name="model",
            serialization_format="cloudpickle",
            signature=signature,
            input_example=example,
            registered_model_name=spec.name,
            pip_requirements=_pip_requirements(),
            await_registration_for=0,
        )
    version = int(info.registered_model_version)
    # Each candidate run named for what it is, not one "<model> candidate" for all of them.
    c.update_run(run_id, name=run_name(spec, version, result["estimator"], data))
    description = version_description(
        spec, result, data, threshold, c.get_run(run_id).data.tags.get(DAGSTER_RUN_URL_TAG)
    )
    c.update_model_version(spec.name, str(version), description=description)
    c.set_tag(run_id, "mlflow.note.content", description)
    tags = {
        "mallard.run_id": run_id,
        "mallard.task": spec.task,
        "mallard.estimator": result["estimator"],
        "mallard.training_set": data.training_set,
        "mallard.training_set_delta_version": str(data.delta_version),
        "mallard.features": json.dumps(features),
        "mallard.metric": spec.metric,
        "mallard.train_days": f"{data.train_days[0]}/{data.train_days[1]}",
        "mallard.holdout_days": f"{data.holdout_days[0]}/{data.holdout_days[1]}",
    }
    if threshold is not None:
        tags[THRESHOLD_TAG] = repr(threshold["value"])
        tags["mallard.threshold_rule"] = threshold["rule"]
    for key, value in tags.items():
        c.set_model_version_tag(spec.name, str(version), key, value)
    c.set_registered_model_tag(spec.name, "mallard.task", spec.task)
    if spec.description:
        c.update_registered_model(spec.name, description=spec.description)
    c.set_registered_model_alias(spec.name, CANDIDATE, str(version))
    seconds = time.perf_counter() - started
    log(
        f"{spec.name}: registered version {version} (run {run_id}) as {CANDIDATE} in {seconds:.1f} s"
    )
    return CandidateResult(
        model=spec.name,
        version=version,
        run_id=run_id,
        experiment_id=experiment_id,
        estimator=result["estimator"],
        estimator_name=result["estimator_name"],
        leaderboard=leaderboard,
        cv_metrics=result["cv_metrics"],
        test_metrics=result["test_metrics"],
        plots=result["plots"],
        data=data.summary(),
        feature_versions=data.feature_versions,
        seconds=seconds,
        skipped=result["skipped"],
        threshold=threshold,
    )
