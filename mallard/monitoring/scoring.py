"""Batch scoring: a day's active entities, their point-in-time features, the model's predictions."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from mallard.config import Settings
from mallard.features.specs import FeatureRegistry

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def day_start(day: dt.date) -> dt.datetime:
    """Predictions for day d are made as of d 00:00 UTC (the label timestamp of day d)."""
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def active_entities(
    registry: FeatureRegistry, settings: Settings, view_name: str, day: dt.date
) -> pd.DataFrame:
    """Entities with a row of `view_name` as of the start of `day` (its previous partition)."""
    from mallard.features.offline.duck import cursor
    from mallard.features.versions import register_version

    view = registry.views[view_name]
    version = register_version(settings, view)
    keys = ", ".join(f'"{k}"' for k in view.join_keys)
    start = day_start(day)
    if not version.table_path.exists():
        import pandas as pd

        return pd.DataFrame(columns=[*view.join_keys, "event_timestamp"])
    con = cursor()
    try:
        frame = con.execute(
            f"SELECT DISTINCT {keys} FROM delta_scan('{version.table_path}') "
            "WHERE _partition_date = $partition AND event_timestamp = $start ORDER BY ALL",
            {"partition": day - dt.timedelta(days=1), "start": start},
        ).fetch_df()
    finally:
        con.close()
    frame["event_timestamp"] = start
    return frame


def features_for(
    registry: FeatureRegistry,
    settings: Settings,
    service: str,
    features: list[str],
    entities: pd.DataFrame,
) -> pd.DataFrame:
    """Point-in-time values of `features` (names from `service`) for the entity rows."""
    from mallard.features.offline.engine import get_historical_features
    from mallard.features.training import view_reads

    refs = [
        f"{ref.view.name}:{ref.feature.name}"
        for ref in registry.resolve([service])
        if ref.feature.name in features
    ]
    reads, _versions = view_reads(registry, settings, refs)
    return get_historical_features(entities, reads)


def predict(model: Any, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
    """(predictions, positive-class scores or None) from a loaded model on feature rows.

    The pipeline's preprocessing runs once: its output feeds both the estimator and its scores,
    exactly as `pipeline.predict` and `pipeline.predict_proba` would each compute it. A binary
    classifier with a stored decision threshold predicts positive at scores ≥ that threshold.
    """
    import numpy as np

    from mallard.models.loading import decision_threshold
    from mallard.models.training import _scores, quiet

    x = model.frame(frame)
    threshold = decision_threshold(model) if model.task == "classification" else None
    with quiet():
        xt, estimator, inverse = _preprocessed(model.pipeline, x)
        scores = (
            np.asarray(_scores(estimator, xt), dtype=float)
            if model.task == "classification"
            else None
        )
        if scores is not None and threshold is not None and len(estimator.classes_) == 2:
            # The version's decision threshold (chosen for its declared use), not 0.5.
            chosen = estimator.classes_[(scores >= threshold).astype(int)]
            prediction = np.asarray(inverse(chosen), dtype=float)
        else:
            prediction = np.asarray(inverse(estimator.predict(xt)), dtype=float)
    return prediction, scores


def _preprocessed(pipeline: Any, x: pd.DataFrame) -> tuple[Any, Any, Any]:
    """(the rows through every step but the last, the final estimator, the target's inverse
    transform): what a pipeline's predict and predict_proba each do before the estimator."""
    from sklearn.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) < 2:
        return x, pipeline, lambda y: y
    estimator = pipeline.steps[-1][-1]
    full_transform = getattr(type(pipeline), "_memory_full_transform", None)
    if full_transform is not None:
        # PyCaret's Pipeline: predict transforms with its (cached) full transform, skips the
        # train-only steps, and inverse-transforms the target (label encoding) afterwards.
        xt, _ = pipeline._memory_full_transform(pipeline, x, None, with_final=False)
        return xt, estimator, pipeline.inverse_transform
    return pipeline[:-1].transform(x), estimator, lambda y: y


def reference_rows(
    settings: Settings, model: Any, limit: int = 20_000, seed: int = 0
) -> pd.DataFrame:
    """The drift reference: the held-out rows the champion was judged on, sampled.

    The held-out slice is the most recent data before the model went live, from the training-set
    version it was trained with; early training rows can carry start-up effects (30-day windows
    with less than 30 days of history) that would read as drift.
    """
    import pandas as pd

    from mallard.features.training import read_training_set
    from mallard.models.registry import client

    run = client(settings).get_run(model.run_id)
    params, tags = run.data.params, run.data.tags
    version = int(
        tags.get("mallard.training_set_delta_version", params.get("training_set_delta_version", 0))
    )
    frame, _ = read_training_set(
        settings, tags.get("mallard.training_set", params.get("training_set", "")), version
    )
    days = frame["event_timestamp"].dt.date
    first = params.get("holdout_first_day")
    last = params.get("holdout_last_day")
    if first and last:
        frame = frame[(days >= pd.Timestamp(first).date()) & (days <= pd.Timestamp(last).date())]
    if len(frame) > limit:
        frame = frame.sample(n=limit, random_state=seed)
    return frame[[c for c in model.features if c in frame.columns]]
