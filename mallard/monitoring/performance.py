"""Model performance on outcomes: per-day metrics and an Evidently quality report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def daily_metrics(outcomes: pd.DataFrame, task: str) -> pd.DataFrame:
    """One row per (day, role, model version): rows, positives and the task's metrics."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        mean_absolute_error,
        r2_score,
        roc_auc_score,
    )

    rows = []
    for (day, role, version), group in outcomes.groupby(
        ["day", "role", "model_version"], sort=True
    ):
        y = group["label"].to_numpy(dtype=float)
        row: dict[str, object] = {
            "day": day,
            "role": role,
            "model_version": version,
            "rows": len(group),
        }
        if task == "classification":
            score = group["score"].to_numpy(dtype=float)
            row["positives"] = int(y.sum())
            row["auc"] = float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan")
            row["accuracy"] = float(accuracy_score(y, group["prediction"]))
            row["f1"] = float(f1_score(y, group["prediction"], zero_division=0))
        else:
            prediction = group["prediction"].to_numpy(dtype=float)
            row["mae"] = float(mean_absolute_error(y, prediction))
            row["rmse"] = float(np.sqrt(np.mean((y - prediction) ** 2)))
            row["r2"] = float(r2_score(y, prediction)) if len(y) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def quality_report(
    outcomes: pd.DataFrame, reference: pd.DataFrame | None, task: str, html_path: Path
) -> str:
    """Evidently's classification or regression preset on the outcomes, saved as HTML."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Regression, Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    columns = ["label", "prediction"] + (["score"] if task == "classification" else [])
    frame = outcomes[columns].copy()
    if task == "classification":
        frame["label"] = frame["label"].astype(int)
        frame["prediction"] = frame["prediction"].astype(int)
        definition = DataDefinition(
            classification=[
                BinaryClassification(
                    target="label", prediction_labels="prediction", prediction_probas="score"
                )
            ],
            numerical_columns=["score"],
        )
        preset = ClassificationPreset()
    else:
        definition = DataDefinition(
            regression=[Regression(target="label", prediction="prediction")]
        )
        preset = RegressionPreset()
    current = Dataset.from_pandas(frame, data_definition=definition)
    ref = (
        Dataset.from_pandas(reference[columns], data_definition=definition)
        if reference is not None
        else None
    )
    snapshot = Report([preset]).run(current, ref)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(html_path))
    return str(html_path)
