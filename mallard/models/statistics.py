"""Training statistics: what each feature looked like when the model learned, for input checks.

Per feature: count, nulls, min, max, mean, std, quantiles (numeric) or categories and their
frequencies (categorical), and one out-of-distribution detector (an IsolationForest on the
numeric features, imputed as the model imputes them) with the score threshold that flags the
lowest 1 % of training rows. Stored with the model version as MLflow artifacts
(`training_statistics/statistics.json`, `training_statistics/ood_detector.joblib`);
`TrainingStatistics.check` applies them to rows a caller wants predictions for.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mallard.config import Settings
from mallard.models.data import load_model_data, parse_days
from mallard.models.registry import CANDIDATE, RegistryError, client, run_id_of, version_for_alias
from mallard.models.specs import ModelSpec

if TYPE_CHECKING:
    import pandas as pd

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
OOD_TRAINING_RATE = 0.01
STATISTICS_ARTIFACT = "training_statistics/statistics.json"
DETECTOR_ARTIFACT = "training_statistics/ood_detector.joblib"


def _number(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def describe_features(
    frame: pd.DataFrame, numeric: list[str], categorical: list[str], top: int = 50
) -> dict[str, dict[str, Any]]:
    """Per-feature statistics of `frame` (JSON-friendly)."""
    import numpy as np

    stats: dict[str, dict[str, Any]] = {}
    rows = len(frame)
    for name in numeric:
        # cast: pandas-stubs types `.astype(float)` as Series[bool]
        column = cast("pd.Series[float]", frame[name].astype(float))
        finite = column[np.isfinite(column)]
        entry: dict[str, Any] = {
            "type": "numeric",
            "count": int(column.notna().sum()),
            "nulls": int(column.isna().sum()),
            "null_rate": float(column.isna().mean()) if rows else 0.0,
            "infinite": int(np.isinf(column).sum()),
        }
        if len(finite):
            entry.update(
                min=_number(finite.min()),
                max=_number(finite.max()),
                mean=_number(finite.mean()),
                std=_number(finite.std(ddof=0)),
                quantiles={str(q): _number(finite.quantile(q)) for q in QUANTILES},
            )
        stats[name] = entry
    for name in categorical:
        column = frame[name]
        counts = column.dropna().astype(str).value_counts()
        stats[name] = {
            "type": "categorical",
            "count": int(column.notna().sum()),
            "nulls": int(column.isna().sum()),
            "null_rate": float(column.isna().mean()) if rows else 0.0,
            "categories": {k: int(v) for k, v in counts.head(top).items()},
            "frequencies": {
                k: float(v / max(counts.sum(), 1)) for k, v in counts.head(top).items()
            },
            "distinct": int(len(counts)),
        }
    return stats


@dataclass
class OodDetector:
    """An IsolationForest over numeric features with its imputation and flagging threshold."""

    features: list[str]
    fill: dict[str, float]
    forest: Any
    threshold: float

    def _matrix(self, frame: pd.DataFrame):
        import numpy as np

        values = frame[self.features].astype(float).replace([np.inf, -np.inf], np.nan)
        return values.fillna(self.fill).to_numpy()

    def scores(self, frame: pd.DataFrame):
        """IsolationForest scores (lower = more anomalous)."""
        return self.forest.score_samples(self._matrix(frame))

    def flags(self, frame: pd.DataFrame):
        return self.scores(frame) < self.threshold


def fit_detector(
    frame: pd.DataFrame, numeric: list[str], imputation: str | float, seed: int
) -> OodDetector:
    """Fit the out-of-distribution detector on training rows."""
    import numpy as np
    from sklearn.ensemble import IsolationForest

    values = frame[numeric].astype(float).replace([np.inf, -np.inf], np.nan)
    if isinstance(imputation, int | float) and not isinstance(imputation, bool):
        fill = dict.fromkeys(numeric, float(imputation))
    elif imputation == "mean":
        fill = {str(k): float(v) for k, v in values.mean().fillna(0).items()}
    else:
        fill = {str(k): float(v) for k, v in values.median().fillna(0).items()}
    forest = IsolationForest(n_estimators=100, random_state=seed, n_jobs=1)
    matrix = values.fillna(fill).to_numpy()
    forest.fit(matrix)
    threshold = float(np.quantile(forest.score_samples(matrix), OOD_TRAINING_RATE))
    return OodDetector(list(numeric), fill, forest, threshold)


@dataclass
class TrainingStatistics:
    """A version's training statistics and detector, and the checks they support."""

    model: str
    version: int | None
    rows: int
    features: dict[str, dict[str, Any]]
    detector: OodDetector | None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "rows": self.rows,
            "features": self.features,
            "ood": {
                "method": "IsolationForest(n_estimators=100)",
                "features": self.detector.features if self.detector else [],
                "threshold": self.detector.threshold if self.detector else None,
                "training_flag_rate": OOD_TRAINING_RATE,
            },
            **self.extra,
        }

    def check(self, rows: pd.DataFrame) -> list[dict[str, Any]]:
        """Problems of each row against the training data: one dict per (row, feature, issue).

        Issues: `missing_column`, `null` (the feature was never null in training), `infinite`,
        `below_min`, `above_max`, `unknown_category`, `out_of_distribution` (the detector).
        """
        import numpy as np

        issues: list[dict[str, Any]] = []
        for name, stats in self.features.items():
            if name not in rows.columns:
                issues.append({"row": None, "feature": name, "issue": "missing_column"})
                continue
            column = rows[name]
            if stats["nulls"] == 0:
                for i in np.flatnonzero(column.isna().to_numpy()):
                    issues.append({"row": int(i), "feature": name, "issue": "null"})
            if stats["type"] == "numeric":
                values = column.astype(float).to_numpy()
                for i in np.flatnonzero(np.isinf(values)):
                    issues.append({"row": int(i), "feature": name, "issue": "infinite"})
                low, high = stats.get("min"), stats.get("max")
                finite = np.isfinite(values)
                if low is not None:
                    for i in np.flatnonzero(finite & (values < low)):
                        issues.append(
                            {
                                "row": int(i),
                                "feature": name,
                                "issue": "below_min",
                                "value": float(values[i]),
                                "min": low,
                            }
                        )
                if high is not None:
                    for i in np.flatnonzero(finite & (values > high)):
                        issues.append(
                            {
                                "row": int(i),
                                "feature": name,
                                "issue": "above_max",
                                "value": float(values[i]),
                                "max": high,
                            }
                        )
            else:
                known = set(stats["categories"])
                for i, value in enumerate(column.tolist()):
                    if value is not None and value == value and str(value) not in known:
                        issues.append(
                            {
                                "row": i,
                                "feature": name,
                                "issue": "unknown_category",
                                "value": str(value),
                            }
                        )
        if self.detector is not None and all(f in rows.columns for f in self.detector.features):
            for i in np.flatnonzero(self.detector.flags(rows)):
                issues.append({"row": int(i), "feature": None, "issue": "out_of_distribution"})
        return issues


def compute_training_statistics(
    spec: ModelSpec,
    settings: Settings,
    features: list[str],
    feature_types: dict[str, str],
    *,
    log=None,
) -> tuple[TrainingStatistics, str]:
    """Statistics of the `candidate` version's training rows, stored on its MLflow run.

    The rows are re-read from the candidate's pinned training-set version with the same window
    and seed, so they are exactly the rows it was trained on. Returns the statistics and the
    candidate's run id.
    """
    import tempfile

    import joblib

    log = log or (lambda message: None)
    started = time.perf_counter()
    c = client(settings)
    mv = version_for_alias(c, spec.name, CANDIDATE)
    if mv is None:
        raise RegistryError(
            f"model {spec.name!r} has no candidate yet; materialize {spec.name}_candidate first"
        )
    run_id = run_id_of(mv, spec.name)
    used = json.loads(mv.tags.get("mallard.features", "[]")) or features
    data = load_model_data(
        spec,
        settings,
        used,
        feature_types,
        delta_version=int(mv.tags["mallard.training_set_delta_version"]),
        train_range=parse_days(mv.tags.get("mallard.train_days")),
        holdout_range=parse_days(mv.tags.get("mallard.holdout_days")),
    )
    features_stats = describe_features(data.train, data.numeric, data.categorical)
    detector = (
        fit_detector(data.train, data.numeric, spec.preprocessing.numeric_imputation, spec.seed)
        if data.numeric
        else None
    )
    holdout_rate = float(detector.flags(data.holdout).mean()) if detector is not None else None
    stats = TrainingStatistics(
        model=spec.name,
        version=int(mv.version),
        rows=len(data.train),
        features=features_stats,
        detector=detector,
        extra={
            "training_days": [d.isoformat() for d in data.train_days],
            "holdout_ood_rate": holdout_rate,
            "training_set_delta_version": data.delta_version,
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "statistics.json").write_text(json.dumps(stats.as_dict(), indent=1))
        joblib.dump(detector, folder / "ood_detector.joblib")
        c.log_artifact(run_id, str(folder / "statistics.json"), "training_statistics")
        c.log_artifact(run_id, str(folder / "ood_detector.joblib"), "training_statistics")
    if holdout_rate is not None:
        c.log_metric(run_id, "holdout_ood_rate", holdout_rate)
    c.set_model_version_tag(
        spec.name, mv.version, "mallard.training_statistics", STATISTICS_ARTIFACT
    )
    log(
        f"{spec.name}: training statistics of v{mv.version} over {len(data.train):,} rows, "
        f"{len(features_stats)} features; held-out rows flagged out of distribution: "
        f"{holdout_rate:.1%} (training: {OOD_TRAINING_RATE:.0%}) in {time.perf_counter() - started:.1f} s"
        if holdout_rate is not None
        else f"{spec.name}: training statistics of v{mv.version}"
    )
    return stats, run_id


def load_training_statistics(
    settings: Settings, model: str, version: int | str | None = None
) -> TrainingStatistics:
    """The stored statistics (and detector) of a version (default: the champion)."""
    import tempfile

    import joblib
    import mlflow.artifacts

    from mallard.models.loading import resolve_version
    from mallard.models.registry import get_version

    c = client(settings)
    number = resolve_version(settings, model, version)
    mv = get_version(c, model, number)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=mv.run_id, artifact_path="training_statistics", dst_path=tmp
            )
        except Exception as exc:  # MLflow raises several types for a missing artifact
            raise RegistryError(
                f"model {model!r} v{number} has no training statistics; materialize "
                f"{model}_training_statistics"
            ) from exc
        payload = json.loads((Path(local) / "statistics.json").read_text())
        detector = joblib.load(Path(local) / "ood_detector.joblib")
    extra = {
        k: v for k, v in payload.items() if k not in ("model", "version", "rows", "features", "ood")
    }
    return TrainingStatistics(model, number, payload["rows"], payload["features"], detector, extra)
