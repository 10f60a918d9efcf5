"""Measure the sample world's day-60 shift the way a model would feel it.

A logistic regression trained on trailing features of label days before the shift is scored on
a late pre-shift slice and on the post-shift days; the AUC it loses is the shift's size. The same
model retrained on early post-shift days and scored on later ones shows the loss is learnable
back from the same features (crashes are visible as errors), not noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = [
    "minutes_7d",
    "sessions_7d",
    "active_days_7d",
    "errors_7d",
    "payment_failures_30d",
    "payments_30d",
    "tickets_30d",
]


@dataclass(frozen=True)
class ShiftMeasurement:
    auc_before: float
    auc_after: float
    rows_train: int
    rows_before: int
    rows_after: int
    auc_retrained: float = float("nan")

    @property
    def auc_loss(self) -> float:
        return self.auc_before - self.auc_after


def _daily_matrix(
    frame: pd.DataFrame, column: str | None, start: pd.Timestamp, n_customers: int, days: int
) -> np.ndarray:
    day = ((frame["event_timestamp"] - start) // pd.Timedelta(days=1)).to_numpy()
    ok = (day >= 0) & (day < days)
    values = np.ones(len(frame)) if column is None else frame[column].to_numpy(dtype=float)
    matrix = np.zeros((n_customers + 1, days + 1))
    np.add.at(matrix, (frame["customer_id"].to_numpy()[ok], day[ok] + 1), values[ok])
    return np.cumsum(matrix, axis=1)  # cumulative[:, d] = sum over days < d


def trailing_features(sample_dir: Path) -> pd.DataFrame:
    """Each label row with trailing usage, error, billing and ticket features (days before it)."""
    from deltalake import DeltaTable

    sample_dir = Path(sample_dir)
    labels = pd.read_parquet(sample_dir / "churn_labels.parquet")
    usage = pd.read_parquet(sample_dir / "usage_events.parquet")
    billing = DeltaTable(str(sample_dir / "billing_events")).to_pandas()
    tickets = pd.read_parquet(sample_dir / "support_tickets.parquet")
    latest = billing.sort_values("created_timestamp").drop_duplicates("event_id", keep="last")
    failures = latest[latest["event_type"] == "payment_failed"]
    payments = latest[latest["event_type"] == "payment"]

    start = min(usage["event_timestamp"].min(), labels["label_timestamp"].min()).normalize()
    days = int((labels["known_at"].max() - start) / pd.Timedelta(days=1)) + 1
    n = int(max(labels["customer_id"].max(), usage["customer_id"].max()))
    active = usage.assign(active=1.0)
    cumulative = {
        "minutes_7d": (_daily_matrix(usage, "minutes_watched", start, n, days), 7),
        "sessions_7d": (_daily_matrix(usage, "sessions", start, n, days), 7),
        "active_days_7d": (_daily_matrix(active, "active", start, n, days), 7),
        "errors_7d": (_daily_matrix(usage, "errors", start, n, days), 7),
        "payment_failures_30d": (_daily_matrix(failures, None, start, n, days), 30),
        "payments_30d": (_daily_matrix(payments, None, start, n, days), 30),
        "tickets_30d": (_daily_matrix(tickets, None, start, n, days), 30),
    }
    day = ((labels["label_timestamp"] - start) // pd.Timedelta(days=1)).to_numpy()
    customer = labels["customer_id"].to_numpy()
    out = labels.assign(day=day)
    for name, (cum, window) in cumulative.items():
        out[name] = cum[customer, day] - cum[customer, np.maximum(day - window, 0)]
    return out


def measure_shift(sample_dir: Path, shift_day: int = 60, horizon: int = 14) -> ShiftMeasurement:
    """Train on label days whose outcome window ends before the shift; score the two weeks
    before it and the days from two weeks after it (crashes have built up); retrain on the
    first three post-shift weeks and score the days after those outcomes are known."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = trailing_features(sample_dir)
    data = data[data["day"] >= 7]
    train = data[data["day"] < shift_day - horizon]
    before = data[(data["day"] >= shift_day - horizon) & (data["day"] < shift_day)]
    after = data[data["day"] >= shift_day + horizon]
    later = data[data["day"] >= shift_day + 21 + horizon]
    recent = data[(data["day"] >= shift_day + 7) & (data["day"] < shift_day + 21)]

    def fit(rows: pd.DataFrame):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        return model.fit(np.log1p(rows[FEATURES]), rows["churned_14d"])

    def auc(model, frame: pd.DataFrame) -> float:
        scores = model.predict_proba(np.log1p(frame[FEATURES]))[:, 1]
        return float(roc_auc_score(frame["churned_14d"], scores))

    model = fit(train)
    return ShiftMeasurement(
        auc(model, before),
        auc(model, after),
        len(train),
        len(before),
        len(after),
        auc_retrained=auc(fit(recent), later),
    )
