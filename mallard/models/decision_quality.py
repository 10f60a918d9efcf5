"""How good are the gate's decisions? Measured on a real training set, not assumed.

- Null trials: the candidate and the champion are the same cheap estimator (a small random
  forest) trained on the same rows, differing only in the random seed. Neither is really
  better, so every promotion is a false one; over n independent trials the count must stay
  within the binomial upper bound for the declared significance level.
- Shift trials: the champion is trained before the sample world's day-60 shift, the candidate
  after it; both are judged on a held-out slice after the shift. The candidate is genuinely
  better, so the gate should promote it (the promotion rate is the gate's power).

The estimator is plain scikit-learn, not PyCaret: the object under test is the gate, and a
trial must cost well under a second.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mallard.models import gate
from mallard.models.data import conform_features
from mallard.models.specs import ModelSpec

if TYPE_CHECKING:
    import pandas as pd

    from mallard.features.specs import FeatureRegistry, TrainingSetSpec


@dataclass(frozen=True)
class TrialSummary:
    """Promotions over a set of trials, against the bound the significance level implies."""

    kind: str  # null | shift
    model: str
    metric: str
    trials: int
    promoted: int
    rate: float
    rate_ci: tuple[float, float]
    significance: float
    min_improvement: float
    upper_bound_count: int  # null trials: more promotions than this reject "rate ≤ α" (99 %)
    mean_improvement: float
    train_rows: int
    holdout_rows: int
    seconds: float

    @property
    def within_bound(self) -> bool:
        return self.promoted <= self.upper_bound_count

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "within_bound": self.within_bound}


def _design(frame: pd.DataFrame, features: list[str], categorical: list[str], fill: float):
    """A numeric matrix: numeric features imputed, categoricals one-hot encoded."""
    import pandas as pd

    x = conform_features(frame, features, categorical)
    numeric = [f for f in features if f not in categorical]
    parts = [x[numeric].fillna(fill)]
    for name in categorical:
        parts.append(pd.get_dummies(x[name], prefix=name, dtype=float))
    return pd.concat(parts, axis=1)


def _estimator(task: str, seed: int, trees: int):
    if task == "classification":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(
            n_estimators=trees, max_depth=6, min_samples_leaf=20, n_jobs=1, random_state=seed
        )
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(
        n_estimators=trees, max_depth=6, min_samples_leaf=20, n_jobs=1, random_state=seed
    )


def _predict(model: Any, task: str, metric: str, x: pd.DataFrame):
    if task == "classification":
        if metric == "auc":
            return model.predict_proba(x)[:, 1]
        return model.predict(x).astype(float)
    return model.predict(x)


def _days(frame: pd.DataFrame):
    import pandas as pd

    return pd.to_datetime(frame["event_timestamp"], utc=True).dt.date


def _slice(frame, days: tuple[dt.date, dt.date], max_rows: int, seed: int):
    label_day = _days(frame)
    rows = frame[((label_day >= days[0]) & (label_day <= days[1])).to_numpy()]
    if len(rows) > max_rows:
        rows = rows.sample(max_rows, random_state=seed)
    return rows


def run_trials(
    kind: str,
    spec: ModelSpec,
    frame: pd.DataFrame,
    features: list[str],
    categorical: list[str],
    *,
    trials: int,
    champion_days: tuple[dt.date, dt.date],
    candidate_days: tuple[dt.date, dt.date],
    holdout_days: tuple[dt.date, dt.date],
    trees: int = 20,
    n_bootstrap: int = 500,
    max_train_rows: int = 20_000,
    max_holdout_rows: int = 20_000,
    seed: int = 0,
) -> TrialSummary:
    """Run `trials` gate decisions; trial i pits seed 2i+1 (candidate) against 2i (champion).

    For null trials pass the same days for champion and candidate.
    """
    import numpy as np

    started = time.perf_counter()
    rule = spec.promotion
    metric = spec.metric
    fill = (
        float(spec.preprocessing.numeric_imputation)
        if isinstance(spec.preprocessing.numeric_imputation, int | float)
        else 0.0
    )
    champ_rows = _slice(frame, champion_days, max_train_rows, seed)
    cand_rows = (
        champ_rows
        if candidate_days == champion_days
        else _slice(frame, candidate_days, max_train_rows, seed + 1)
    )
    holdout = _slice(frame, holdout_days, max_holdout_rows, seed + 2)
    design = _design(pd_concat([champ_rows, cand_rows, holdout]), features, categorical, fill)
    x_champ = design.iloc[: len(champ_rows)]
    x_cand = design.iloc[len(champ_rows) : len(champ_rows) + len(cand_rows)]
    x_hold = design.iloc[len(champ_rows) + len(cand_rows) :]
    y_champ = champ_rows[spec.label].to_numpy()
    y_cand = cand_rows[spec.label].to_numpy()
    y_hold = holdout[spec.label].to_numpy(dtype=float)
    promoted = 0
    improvements = []
    for trial in range(trials):
        champion = _estimator(spec.task, seed + 2 * trial, trees).fit(x_champ, y_champ)
        candidate = _estimator(spec.task, seed + 2 * trial + 1, trees).fit(x_cand, y_cand)
        result = gate.paired_bootstrap(
            metric,
            y_hold,
            _predict(candidate, spec.task, metric, x_hold),
            _predict(champion, spec.task, metric, x_hold),
            n_bootstrap=n_bootstrap,
            alpha=rule.significance,
            threshold=rule.min_improvement,
            seed=seed + 10_000 + trial,
        )
        decision = gate.decide(
            metric=metric,
            min_improvement=rule.min_improvement,
            significance=rule.significance,
            bootstrap=result,
            champion_version=1,
        )
        promoted += decision.promote
        improvements.append(result.improvement)
    return TrialSummary(
        kind=kind,
        model=spec.name,
        metric=metric,
        trials=trials,
        promoted=promoted,
        rate=promoted / trials,
        rate_ci=gate.clopper_pearson(promoted, trials),
        significance=rule.significance,
        min_improvement=rule.min_improvement,
        upper_bound_count=gate.binomial_upper_count(trials, rule.significance, 0.99),
        mean_improvement=float(np.mean(improvements)),
        train_rows=len(cand_rows),
        holdout_rows=len(holdout),
        seconds=time.perf_counter() - started,
    )


def pd_concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def label_days(frame: pd.DataFrame) -> list[dt.date]:
    return sorted(set(_days(frame)))


def null_and_shift(
    spec: ModelSpec,
    frame: pd.DataFrame,
    features: list[str],
    categorical: list[str],
    *,
    shift_day: dt.date,
    null_trials: int = 200,
    shift_trials: int = 20,
    horizon_days: int = 14,
    holdout_days: int = 21,
    null_options: dict[str, Any] | None = None,
    shift_options: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[TrialSummary, TrialSummary]:
    """Both experiments on one training set.

    Null: both models train on every label day before the held-out slice. Shift: the champion
    trains on label days whose outcome window ends before `shift_day` (day < shift − horizon),
    the candidate on label days from `shift_day` to just before the held-out slice (the last
    `holdout_days` of label time, all after the shift). `null_options`/`shift_options`
    override `options` (passed to `run_trials`) for one experiment.
    """
    days = label_days(frame)
    last = days[-1]
    holdout = (last - dt.timedelta(days=holdout_days - 1), last)
    before_holdout = (days[0], holdout[0] - dt.timedelta(days=1))
    if holdout[0] <= shift_day:
        raise ValueError(
            f"the held-out slice ({holdout[0]} …) must start after the shift {shift_day}"
        )
    null = run_trials(
        "null",
        spec,
        frame,
        features,
        categorical,
        trials=null_trials,
        champion_days=before_holdout,
        candidate_days=before_holdout,
        holdout_days=holdout,
        **{**options, **(null_options or {})},
    )
    shift = run_trials(
        "shift",
        spec,
        frame,
        features,
        categorical,
        trials=shift_trials,
        champion_days=(days[0], shift_day - dt.timedelta(days=horizon_days + 1)),
        candidate_days=(shift_day, holdout[0] - dt.timedelta(days=1)),
        holdout_days=holdout,
        **{**options, **(shift_options or {})},
    )
    return null, shift


def build_sample_training_set(
    home: Path,
    customers: int,
    end_date: dt.date,
    registry: FeatureRegistry,
    training_set: TrainingSetSpec,
    seed: int = 7,
) -> tuple[pd.DataFrame, dt.date]:
    """Generate a sample world under `home` and build a training set of it, quickly.

    Feature views are computed only for the days the label rows read (the day before each
    label day of an `every_n_days` training set), which is all the training set needs.
    Returns the frame and the day of the world's shift.
    """
    from mallard.config import load_settings
    from mallard.features.compute import compute_partition, open_sources
    from mallard.features.offline.store import write_view_partitions
    from mallard.features.training import build_training_set, write_training_set
    from mallard.features.versions import register_version
    from mallard.sample_world.generate import WorldSpec, generate_world

    spec = WorldSpec(end_date=end_date, customers=customers, seed=seed)
    generate_world(spec, home / "sample")
    settings = load_settings(home=home)
    every = training_set.every_n_days
    days = [spec.start_date + dt.timedelta(days=i) for i in range(spec.days)]
    reads = [
        d - dt.timedelta(days=1)
        for d in days
        if (d - dt.date(2000, 1, 1)).days % every == 0 and d > spec.start_date
    ]
    for view in registry.views.values():
        version = register_version(settings, view)
        con = open_sources(view, settings)
        write_view_partitions(  # one commit per view, as the feature assets' backfills do
            version.table_path,
            {day: compute_partition(view, settings, day, con) for day in reads},
            join_keys=list(view.join_keys),
        )
        con.close()
    as_of = dt.datetime.combine(end_date + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    frame, versions = build_training_set(training_set, registry, settings, as_of)
    write_training_set(training_set, frame, versions, settings, as_of)
    return frame, spec.start_date + dt.timedelta(days=spec.shift_day)
