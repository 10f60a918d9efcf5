"""The rows a model trains and is judged on: a training slice and a later held-out slice.

Both come from one pinned Delta version of the model's training set, so the candidate, its
training statistics and its evaluation all see the same rows (sampling is seeded).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mallard.config import Settings

if TYPE_CHECKING:
    import pandas as pd

    from mallard.models.specs import ModelSpec, NaiveBaseline

MIN_TRAIN_ROWS = 100
MIN_HOLDOUT_ROWS = 30
MIN_CLASS_ROWS = 5
KEY_COLUMNS = ("customer_id", "event_timestamp")
# A regression's naive forecast (its declared `baseline`), kept beside the held-out rows.
BASELINE_COLUMN = "__naive_baseline__"


class TrainingDataError(ValueError):
    """The training set cannot train this model; the message says what is wrong and where."""


@dataclass
class ModelData:
    """A model's training and held-out slices, and where they came from."""

    model: str
    features: list[str]
    label: str | None
    categorical: list[str]
    train: pd.DataFrame
    holdout: pd.DataFrame
    training_set: str
    delta_version: int
    feature_versions: dict[str, str]
    train_days: tuple[dt.date, dt.date]
    holdout_days: tuple[dt.date, dt.date]
    rows_available: dict[str, int] = field(default_factory=dict)

    @property
    def numeric(self) -> list[str]:
        return [f for f in self.features if f not in self.categorical]

    def summary(self) -> dict[str, Any]:
        """Where the rows came from, for MLflow tags and Dagster metadata."""
        return {
            "training_set": self.training_set,
            "training_set_delta_version": self.delta_version,
            "train_rows": len(self.train),
            "holdout_rows": len(self.holdout),
            "train_first_day": self.train_days[0].isoformat(),
            "train_last_day": self.train_days[1].isoformat(),
            "holdout_first_day": self.holdout_days[0].isoformat(),
            "holdout_last_day": self.holdout_days[1].isoformat(),
            "train_rows_available": self.rows_available.get("train", len(self.train)),
            "holdout_rows_available": self.rows_available.get("holdout", len(self.holdout)),
        }


def parse_days(tag: str | None) -> tuple[dt.date, dt.date] | None:
    """'2026-03-07/2026-05-09' (as stored in a version's tags) → the two days, or None."""
    if not tag:
        return None
    first, last = tag.split("/")
    return dt.date.fromisoformat(first), dt.date.fromisoformat(last)


def latest_delta_version(settings: Settings, training_set: str) -> int:
    """The newest Delta version of a stored training set, or a clear error if there is none."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    from mallard.features.training import training_set_path

    try:
        return DeltaTable(training_set_path(settings, training_set)).version()
    except TableNotFoundError:
        raise TrainingDataError(
            f"training set {training_set!r} has not been built under {settings.lake_dir}; "
            f"materialize the {training_set!r} asset (job build_training_sets) first"
        ) from None


def conform_features(
    frame: pd.DataFrame, features: list[str], categorical: list[str]
) -> pd.DataFrame:
    """Feature columns with plain dtypes: numeric → float64 (NaN for null), string → object."""
    import numpy as np
    import pandas as pd

    out = pd.DataFrame(index=frame.index)
    for name in features:
        column = frame[name]
        if name in categorical:
            out[name] = column.astype(object).where(column.notna(), np.nan)
        else:
            out[name] = pd.to_numeric(column, errors="coerce").astype("float64")
    return out


def naive_baseline(frame: pd.DataFrame, baseline: NaiveBaseline) -> pd.Series:
    """Per row, the declared naive forecast: `feature` summed over the same entity's rows
    `lags_days` earlier in the training set (a missing row counts 0), times `scale`."""
    import numpy as np
    import pandas as pd

    keys = [c for c in KEY_COLUMNS if c != "event_timestamp" and c in frame.columns]
    stamps = pd.to_datetime(frame["event_timestamp"], utc=True).dt.tz_localize(None)
    values = pd.to_numeric(frame[baseline.feature], errors="coerce").fillna(0.0)
    lookup = pd.DataFrame(
        {**{k: frame[k].to_numpy() for k in keys}, "_at": stamps.to_numpy(), "_value": values}
    ).drop_duplicates([*keys, "_at"], keep="last")
    total = np.zeros(len(frame))
    for lag in baseline.lags_days:
        probe = pd.DataFrame(
            {
                **{k: frame[k].to_numpy() for k in keys},
                "_at": (stamps - pd.Timedelta(days=lag)).to_numpy(),
            }
        )
        found = probe.merge(lookup, on=[*keys, "_at"], how="left")["_value"]
        total += found.fillna(0.0).to_numpy(dtype=float)
    return pd.Series(total * baseline.scale, index=frame.index)


def _days(frame: pd.DataFrame) -> pd.Series:
    import pandas as pd

    stamps = pd.to_datetime(frame["event_timestamp"], utc=True)
    return stamps.dt.tz_convert("UTC").dt.date


def split_frame(
    spec: ModelSpec,
    frame: pd.DataFrame,
    features: list[str],
    categorical: list[str],
    *,
    train_range: tuple[dt.date, dt.date] | None = None,
    holdout_range: tuple[dt.date, dt.date] | None = None,
    training_set: str = "",
    delta_version: int = -1,
    feature_versions: dict[str, str] | None = None,
) -> ModelData:
    """Split a training-set frame by label day into the declared (or given) slices and sample.

    Explicit `train_range`/`holdout_range` (inclusive days) override the declared window — the
    decision-quality benchmark uses them to train before and after the sample world's shift.
    """
    owner = f"model {spec.name!r}"
    needed = ["event_timestamp", *features] + ([spec.baseline.feature] if spec.baseline else [])
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        raise TrainingDataError(
            f"{owner}: training set {training_set!r} has no column(s) {', '.join(missing)}"
        )
    if spec.label is not None and spec.label not in frame.columns:
        raise TrainingDataError(
            f"{owner}: training set {training_set!r} has no label column {spec.label!r} "
            f"(columns: {', '.join(map(str, frame.columns))})"
        )
    if frame.empty:
        raise TrainingDataError(f"{owner}: training set {training_set!r} has no rows")
    days = _days(frame)
    window = spec.window
    last = max(days)
    if holdout_range is None:
        holdout_range = (last - dt.timedelta(days=window.holdout_days - 1), last)
    if train_range is None:
        train_last = holdout_range[0] - dt.timedelta(days=window.gap_days + 1)
        train_first = (
            min(days)
            if window.train_days is None
            else train_last - dt.timedelta(days=window.train_days - 1)
        )
        train_range = (train_first, train_last)
    if train_range[1] >= holdout_range[0]:
        raise TrainingDataError(
            f"{owner}: the training slice ({train_range[0]} … {train_range[1]}) must end before "
            f"the held-out slice starts ({holdout_range[0]})"
        )
    in_train = (days >= train_range[0]) & (days <= train_range[1])
    in_holdout = (days >= holdout_range[0]) & (days <= holdout_range[1])
    keep = [*KEY_COLUMNS] + ([spec.label] if spec.label else [])
    x = conform_features(frame, features, categorical)
    base = frame[[c for c in keep if c in frame.columns]].join(x)
    if spec.baseline is not None:
        base[BASELINE_COLUMN] = naive_baseline(frame, spec.baseline)
    train, holdout = base[in_train.to_numpy()], base[in_holdout.to_numpy()]
    if spec.label is not None:
        train = train[train[spec.label].notna()]
        holdout = holdout[holdout[spec.label].notna()]
    available = {"train": len(train), "holdout": len(holdout)}
    train = _sample(train, window.max_train_rows, spec.seed)
    holdout = _sample(holdout, window.max_holdout_rows, spec.seed + 1)
    data = ModelData(
        model=spec.name,
        features=list(features),
        label=spec.label,
        categorical=[c for c in features if c in categorical],
        train=train,
        holdout=holdout,
        training_set=training_set,
        delta_version=delta_version,
        feature_versions=dict(feature_versions or {}),
        train_days=train_range,
        holdout_days=holdout_range,
        rows_available=available,
    )
    check_trainable(spec, data)
    return data


def _sample(frame: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    if len(frame) <= limit:
        return frame.reset_index(drop=True)
    return frame.sample(n=limit, random_state=seed).sort_index().reset_index(drop=True)


def check_trainable(spec: ModelSpec, data: ModelData) -> None:
    """Enough rows, and for classification two classes in each slice, or a clear error."""
    owner = f"model {spec.name!r}"
    for name, rows, minimum, days in (
        ("training", data.train, MIN_TRAIN_ROWS, data.train_days),
        ("held-out", data.holdout, MIN_HOLDOUT_ROWS, data.holdout_days),
    ):
        if len(rows) < minimum:
            raise TrainingDataError(
                f"{owner}: too few rows in the {name} slice ({len(rows)} rows with label days "
                f"{days[0]} … {days[1]}; at least {minimum} needed) — build the training set "
                "over more days or shorten the declared window"
            )
    if spec.task == "classification":
        for name, rows in (("training", data.train), ("held-out", data.holdout)):
            counts = rows[spec.label].value_counts()
            if len(counts) < 2:
                only = counts.index[0] if len(counts) else None
                raise TrainingDataError(
                    f"{owner}: label {spec.label!r} has a single class ({only!r}) in the {name} "
                    f"slice ({len(rows)} rows); a classifier needs both classes"
                )
            if counts.min() < MIN_CLASS_ROWS:
                raise TrainingDataError(
                    f"{owner}: label {spec.label!r} has only {int(counts.min())} row(s) of class "
                    f"{counts.idxmin()!r} in the {name} slice; at least {MIN_CLASS_ROWS} needed"
                )
    if spec.task == "regression":
        for name, rows in (("training", data.train), ("held-out", data.holdout)):
            if rows[spec.label].nunique() < 2:
                raise TrainingDataError(
                    f"{owner}: label {spec.label!r} is constant in the {name} slice"
                )


def load_model_data(
    spec: ModelSpec,
    settings: Settings,
    features: list[str],
    feature_types: dict[str, str],
    *,
    delta_version: int | None = None,
    train_range: tuple[dt.date, dt.date] | None = None,
    holdout_range: tuple[dt.date, dt.date] | None = None,
) -> ModelData:
    """Read the model's training set (latest, or a pinned Delta version) and split it."""
    from mallard.features.training import read_training_set

    version = (
        latest_delta_version(settings, spec.training_set)
        if delta_version is None
        else delta_version
    )
    frame, feature_versions = read_training_set(settings, spec.training_set, version=version)
    categorical = [f for f in features if feature_types.get(f) == "string"]
    return split_frame(
        spec,
        frame,
        features,
        categorical,
        train_range=train_range,
        holdout_range=holdout_range,
        training_set=spec.training_set,
        delta_version=version,
        feature_versions=feature_versions,
    )
