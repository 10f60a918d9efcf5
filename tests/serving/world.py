"""A small served world for the API tests, built in a few seconds.

A sample world ending today (so the online values are fresh against their ttl), the last four
days of every feature view computed and written by the feature assets' writer, the online store
loaded, a live prompt, and a small scikit-learn churn model registered in MLflow as a real
version: pipeline, `model_inputs.json`, the feature versions it was trained on, training
statistics with their out-of-distribution detector, and the `champion` alias. The same model is
registered a second time as `churn_strict` (served with strictness `reject`).
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

CUSTOMERS = 400
DAYS = 4
STRICT = "churn_strict"
MODEL = "churn_classifier"
SCHEMA_MODEL = "churn_schema"  # its versions change their inputs (tests/serving/test_schema.py)
CANARY_MODEL = "churn_canary"  # served with a canary (tests/serving/test_canary.py)
OPTIONAL_FEATURE = "mean_resolution_hours_30d"  # null in training: an optional field
PROMPT = "support_assistant"
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class World:
    home: Path
    features: list[str]
    categorical: list[str]
    customer: int  # a customer with fresh online values
    sample_row: dict  # that customer's features, as the online store holds them
    stats: dict  # the training statistics as stored


def _train(frame, features: list[str], categorical: list[str]):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    numeric = [f for f in features if f not in categorical]
    prep = ColumnTransformer(
        [
            ("num", SimpleImputer(strategy="constant", fill_value=0.0), numeric),
            (
                "cat",
                Pipeline(
                    [
                        ("fill", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                categorical,
            ),
        ],
        verbose_feature_names_out=False,
    )
    pipeline = Pipeline(
        [
            ("prep", prep),
            ("model", RandomForestClassifier(n_estimators=15, max_depth=5, random_state=0)),
        ]
    ).set_output(transform="pandas")
    label = (frame["minutes_7d"].fillna(0) < frame["minutes_7d"].median()) | (
        frame["payment_failures_30d"].fillna(0) > 0
    )
    pipeline.fit(frame[features], label.astype(int))
    return pipeline


def _register(
    settings, name: str, pipeline, frame, features, categorical, versions, champion: bool = True
) -> dict:
    import joblib
    import mlflow
    import mlflow.sklearn

    from mallard.models.registry import client, ensure_experiment, set_champion
    from mallard.models.statistics import TrainingStatistics, describe_features, fit_detector
    from mallard.models.training import quiet

    c = client(settings)
    experiment = ensure_experiment(settings, name, c)
    numeric = [f for f in features if f not in categorical]
    with quiet(), mlflow.start_run(experiment_id=experiment, run_name=f"{name} test") as run:
        mlflow.set_tags({f"mallard.feature_version.{v}": label for v, label in versions.items()})
        mlflow.log_dict(
            {
                "features": features,
                "categorical": categorical,
                "label": "churned",
                "task": "classification",
            },
            "model_inputs.json",
        )
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            registered_model_name=name,
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn"],  # no requirement inference (a subprocess, seconds)
            await_registration_for=0,
        )
        run_id = run.info.run_id
    version = int(info.registered_model_version)
    stats = TrainingStatistics(
        name,
        version,
        len(frame),
        describe_features(frame, numeric, categorical),
        fit_detector(frame, numeric, 0, 7),
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "statistics.json").write_text(json.dumps(stats.as_dict()))
        joblib.dump(stats.detector, folder / "ood_detector.joblib")
        c.log_artifact(run_id, str(folder / "statistics.json"), "training_statistics")
        c.log_artifact(run_id, str(folder / "ood_detector.joblib"), "training_statistics")
    c.set_model_version_tag(name, str(version), "mallard.features", json.dumps(features))
    if champion:
        set_champion(settings, c, name, version, action="promote", reason="test world")
    return {**stats.as_dict(), "registered_version": version}


def build_world(home: Path) -> World:
    import pandas as pd

    from catalog.features import REGISTRY
    from mallard.config import load_settings
    from mallard.features.compute import compute_partition, open_sources
    from mallard.features.materialize import materialize_online
    from mallard.features.offline.store import write_view_partitions
    from mallard.features.online import open_online_store
    from mallard.features.versions import register_version
    from mallard.llm.prompts import PromptRegistry
    from mallard.llm.prompts.template import PromptTemplate
    from mallard.sample_world.generate import WorldSpec, generate_world

    today = dt.datetime.now(dt.UTC).date()
    generate_world(WorldSpec(end_date=today, customers=CUSTOMERS), home / "sample")
    settings = load_settings(home=home)
    settings.ensure_home()
    days = [today - dt.timedelta(days=i) for i in range(DAYS, 0, -1)]
    frames = []
    versions = {}
    for view in REGISTRY.views.values():
        version = register_version(settings, view)
        versions[view.name] = version.label
        con = open_sources(view, settings)
        parts = {day: compute_partition(view, settings, day, con) for day in days}
        con.close()
        write_view_partitions(version.table_path, parts, join_keys=list(view.join_keys))
        frames.append(
            pd.concat([p.to_pandas() for p in parts.values()]).drop(columns=["created_timestamp"])
        )
    with open_online_store("sqlite", path=str(settings.online_store_path)) as store:
        materialize_online(REGISTRY, settings, store)
    frame = frames[0]
    for other in frames[1:]:
        frame = frame.merge(other, on=["customer_id", "event_timestamp"], how="left")
    features = [ref.feature.name for ref in REGISTRY.resolve(["churn_features"])]
    categorical = [
        ref.feature.name
        for ref in REGISTRY.resolve(["churn_features"])
        if ref.feature.type == "string"
    ]
    frame = frame.reset_index(drop=True)
    for name in features:
        if name not in categorical:
            frame[name] = frame[name].astype("float64")
    pipeline = _train(frame, features, categorical)
    stats = _register(settings, MODEL, pipeline, frame, features, categorical, versions)
    _register(settings, STRICT, pipeline, frame, features, categorical, versions)
    _register(settings, CANARY_MODEL, pipeline, frame, features, categorical, versions)
    fewer = [f for f in features if f != OPTIONAL_FEATURE]
    _register(
        settings,
        SCHEMA_MODEL,
        _train(frame, fewer, categorical),
        frame,
        fewer,
        categorical,
        versions,
    )
    frame.to_parquet(home / "world_training_rows.parquet")
    (home / "world_feature_versions.json").write_text(json.dumps(versions))

    latest = frame[frame["event_timestamp"] == frame["event_timestamp"].max()]
    complete = latest.dropna(subset=features).reset_index(drop=True)
    from mallard.models.statistics import fit_detector

    # A row well inside the training data: the OOD detector (the same fit as stored) passes it.
    detector = fit_detector(frame, [f for f in features if f not in categorical], 0, 7)
    margin = detector.scores(complete) - detector.threshold
    row = complete.iloc[int(margin.argmax())]
    customer = int(row["customer_id"])
    sample_row = {f: (row[f] if f in categorical else float(row[f])) for f in features}

    prompts = PromptRegistry.default(settings)
    template = PromptTemplate.from_file(ROOT / "catalog" / "prompts" / PROMPT / "v1_grounded.toml")
    version, _ = prompts.register(template, actor="tests")
    prompts.promote(PROMPT, version.version, reason="test world", actor="tests")
    return World(home, features, categorical, customer, sample_row, stats)


def register_version(
    home: Path,
    name: str,
    features: list[str],
    categorical: list[str],
    transform=None,
    champion: bool = False,
) -> int:
    """Train and register one more version of `name` on the world's rows (`transform` reshapes
    them first: renamed or retyped columns); returns its number."""
    import pandas as pd

    from mallard.config import load_settings

    frame = pd.read_parquet(home / "world_training_rows.parquet")
    if transform is not None:
        frame = transform(frame)
    versions = json.loads((home / "world_feature_versions.json").read_text())
    settings = load_settings(home=home)
    pipeline = _train(frame, features, categorical)
    stats = _register(
        settings, name, pipeline, frame, features, categorical, versions, champion=champion
    )
    return int(stats["registered_version"])
